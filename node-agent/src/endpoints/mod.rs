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
//! plugin made it, released by [`gone`]. One whose objects drift (changed behind Weft's
//! back, on the node or in the sandbox) is repaired at once ([`drift`], `watch`). A CNI DEL answers once the endpoint is out of
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
pub mod drift;
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
mod watch;

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
/// The runtime's container name (CNI `K8S_POD_NAME`), one of the endpoint's DNS names.
pub const ANNOTATION_CONTAINER_NAME: &str = "weft.dev/container-name";
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

/// The host port of a published port that named none (`docker run -p 80`).
pub const ANY_HOST_PORT: u16 = 0;

/// The ports the agent chooses host ports from (`--host-port-range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPortRange {
    pub first: u16,
    pub last: u16,
}

/// Docker's range for the host ports it chooses (the upper part of Linux's ephemeral range).
impl Default for HostPortRange {
    fn default() -> Self {
        HostPortRange {
            first: 49153,
            last: 65535,
        }
    }
}

/// `FIRST-LAST`, such as `49153-65535`.
impl std::str::FromStr for HostPortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port range such as 49153-65535");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(HostPortRange { first, last })
    }
}

impl fmt::Display for HostPortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// One published port (or range), checked and in kernel-ready types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// [`ANY_HOST_PORT`] in a request that named none: the agent chooses one at admission
    /// (see [`plan::choose_host_ports`]); an attachment's are always chosen.
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
        let host_port = match p.host_port {
            Some(h) => u16::try_from(h).ok().filter(|p| *p > 0)?,
            None => ANY_HOST_PORT,
        };
        let host_port_end = match p.host_port_end {
            Some(e) if host_port != ANY_HOST_PORT => {
                u16::try_from(e).ok().filter(|e| *e >= host_port)?
            }
            Some(_) => return None,
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
            host_port: (self.host_port != ANY_HOST_PORT).then_some(i32::from(self.host_port)),
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
    /// Further DNS names the runtime gave (CNI): aliases, container name.
    pub names: DnsNames,
}

/// DNS names an endpoint has beside its object's name, as a CNI runtime passes them; a
/// ContainerEndpoint carries the same as `spec.aliases` and [`ANNOTATION_CONTAINER_NAME`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNames {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The runtime's container name (`K8S_POD_NAME`: Podman passes the container's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
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
    /// Names the runtime gave (CNI attachments; mirrored into the object).
    #[serde(default)]
    pub names: DnsNames,
    /// On a dual-stack network: the address of the other family, mirroring `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorAddress>,
}

/// An endpoint's address in the other family of a dual-stack network (see
/// [`crate::drivers::MirrorSpace`]), with that family's gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorAddress {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

impl Attachment {
    /// Every address with its family's gateway, the allocated one first.
    pub fn addresses(&self) -> impl Iterator<Item = (IpNet, Option<IpAddr>)> + '_ {
        self.address
            .map(|a| (a, self.gateway))
            .into_iter()
            .chain(self.mirror.as_ref().map(|m| (m.address, m.gateway)))
    }

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
    /// One address per family, with its prefix (10.0.0.2/24, fd00::2/64): each family's
    /// connections to a published port go to the address of that family.
    pub addresses: Vec<IpNet>,
    pub ports: Vec<PortSpec>,
    /// The sandbox is gone ([`gone`]): the ports keep their claims but get no DNAT rules.
    pub sandbox_gone: bool,
}
