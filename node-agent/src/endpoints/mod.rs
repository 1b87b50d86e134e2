//! Endpoints: sandboxes (pods, containers, any network namespace) attached to networks on
//! this node, their addresses, and the ports they publish.
//!
//! Two doors lead in, one state behind them ([`manager::Endpoints`], [`state`]):
//! - a `ContainerEndpoint` written by a person or a GitOps tool, picked up by the agent's
//!   pass like any other object ([`state`] plans it, [`api`] writes its status);
//! - a CNI ADD from the runtime ([`socket`] → [`cni`]), served on the spot — address from the
//!   node's own allocator, interface created in the sandbox, answer given — and mirrored
//!   into a `ContainerEndpoint` right after, so every attachment is visible in the API.
//!
//! What an endpoint gets in the kernel comes from its network's driver
//! ([`crate::drivers::Driver`]); [`plan`] adds what every endpoint gets alike. One endpoint
//! is worked on by one task at a time ([`claims`]). An endpoint whose sandbox vanished
//! without a DEL (the runtime removed it while the agent was down) is found and, if the CNI
//! plugin made it, released by [`gone`]. A CNI DEL answers once the endpoint is out of
//! service; its interface is deleted right after ([`teardown`]). [`translate`] holds the pure mappings
//! between the state and the API and CNI shapes.
//!
//! Addresses are allocated here, on the node, with no API round trip: bridge networks are
//! node-local (the whole subnet, like Docker's), cluster-scope networks hand out the node's
//! block from the controller. Every allocation is written to the node's journal
//! ([`journal`]) before the kernel is touched and to the endpoint's status after, and both
//! are read back on start, so a restart rebuilds exactly the same allocations.

pub mod api;
pub mod claims;
pub mod cni;
pub mod gone;
pub mod ipam;
pub mod journal;
pub mod manager;
pub mod plan;
mod release;
pub mod sandbox;
pub mod socket;
pub mod state;
mod teardown;
mod translate;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_api::Protocol;
use weft_cni::proto::AttachmentId;

use crate::model::Mac;

/// Annotations on ContainerEndpoints the agent creates for CNI attachments.
pub const ANNOTATION_CONTAINER_ID: &str = "weft.dev/cni-container-id";
pub const ANNOTATION_IFNAME: &str = "weft.dev/cni-ifname";
pub const LABEL_NODE: &str = "weft.dev/node";
pub const LABEL_NETWORK: &str = "weft.dev/network";

/// A ContainerEndpoint's identity: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One published port (or range), checked and in kernel-ready types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub host_port: u16,
    /// Equal to `host_port` for a single port.
    pub host_port_end: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
}

impl PortSpec {
    /// From the API type; `None` if the values are out of range (the schema prevents it).
    pub fn from_api(p: &weft_api::PublishedPort) -> Option<PortSpec> {
        let host_port = u16::try_from(p.host_port).ok().filter(|p| *p > 0)?;
        let host_port_end = match p.host_port_end {
            Some(e) => u16::try_from(e).ok().filter(|e| *e >= host_port)?,
            None => host_port,
        };
        let container_port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
        container_port.checked_add(host_port_end - host_port)?;
        let host_ip = match p.host_ip.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(s.parse().ok()?),
        };
        Some(PortSpec {
            host_port,
            host_port_end,
            container_port,
            protocol: p.protocol,
            host_ip,
        })
    }

    pub fn to_api(&self) -> weft_api::PublishedPort {
        weft_api::PublishedPort {
            host_port: i32::from(self.host_port),
            host_port_end: (self.host_port_end != self.host_port)
                .then_some(i32::from(self.host_port_end)),
            container_port: i32::from(self.container_port),
            protocol: self.protocol,
            host_ip: self.host_ip.map(|a| a.to_string()),
        }
    }
}

/// What an endpoint asks for, from a ContainerEndpoint spec or a CNI ADD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRequest {
    pub id: EndpointId,
    pub network: String,
    pub sandbox: String,
    pub if_name: String,
    pub address: Option<IpAddr>,
    pub mac: Option<Mac>,
    pub publish: Vec<PortSpec>,
    /// Set for attachments made through CNI (what DEL, CHECK and GC look for).
    pub cni: Option<AttachmentId>,
    /// Docker's `gw-priority`: the sandbox's attachment with the highest one gives the
    /// default route (see [`plan::default_route_holders`]).
    pub gw_priority: i32,
    /// A default route in the sandbox that is not Weft's is replaced (CNI `defaultRoute:
    /// "replace"`); otherwise it stays and this attachment adds none.
    pub replace_default_route: bool,
}

/// An endpoint attached (or being attached) on this node: the request plus what was
/// decided for it. This is what the journal stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: EndpointId,
    pub network: String,
    pub network_uid: String,
    pub sandbox: String,
    pub if_name: String,
    /// With the subnet's prefix (10.0.0.2/24); `None` for host and none networks.
    pub address: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub mac: Option<Mac>,
    pub publish: Vec<PortSpec>,
    pub cni: Option<AttachmentId>,
    /// Order of arrival on this node: the first of two endpoints claiming a host port
    /// keeps it.
    pub since: u64,
    /// The request as it was (so a changed ContainerEndpoint is noticed).
    pub requested_address: Option<IpAddr>,
    pub requested_mac: Option<Mac>,
    /// The endpoint's ContainerEndpoint has been seen in the API (CNI attachments start
    /// without one; once seen, its deletion detaches the endpoint).
    #[serde(default)]
    pub in_api: bool,
    #[serde(default)]
    pub gw_priority: i32,
    #[serde(default)]
    pub replace_default_route: bool,
}

impl Attachment {
    /// Does this attachment still answer `req`?
    pub fn matches(&self, req: &EndpointRequest) -> bool {
        self.network == req.network
            && self.sandbox == req.sandbox
            && self.if_name == req.if_name
            && self.requested_address == req.address
            && self.requested_mac == req.mac
    }
}

/// An endpoint's published ports, for the node's DNAT rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub id: EndpointId,
    pub since: u64,
    pub address: IpAddr,
    pub subnet: IpNet,
    pub ports: Vec<PortSpec>,
    /// The sandbox is gone ([`gone`]): the ports keep their claims but get no DNAT rules.
    pub sandbox_gone: bool,
}
