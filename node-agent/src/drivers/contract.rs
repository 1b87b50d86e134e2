//! The drivers' contract: what a driver is given ([`NetworkInput`], [`NodeFacts`]), what it
//! answers (kernel objects plus a [`FirewallIntent`] for the node; an [`AddressSpace`], an
//! [`EndpointShape`] and a [`SandboxLink`] for an endpoint) and how it says no ([`Problem`]).
//! Everything here is data; nothing here knows a particular driver.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use weft_api::RealizationState;
pub use weft_api::Reason;

use crate::kernel::EndpointLink;
use crate::model::{FdbEntry, KernelState, Mac, Neighbour};

/// What the agent knows about its own node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub node_name: String,
    /// The VXLAN tunnel endpoint: the address other nodes reach this one at.
    pub underlay_address: IpAddr,
    /// Interface that carries the underlay address (VXLAN devices are bound to it).
    pub underlay_interface: Option<String>,
    pub underlay_mtu: u32,
    /// Names of the host's existing non-Weft interfaces (parents for macvlan/ipvlan).
    pub interfaces: BTreeSet<String>,
    pub capabilities: weft_api::Capabilities,
    /// Its WireGuard key slots (which link sends; both during a key rotation).
    pub wireguard: super::wireguard::Slots,
}

/// Another node taking part in a cluster-scope network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    pub node: String,
    pub underlay_address: IpAddr,
    /// Its WireGuard link, when it has published one (encrypted overlays reach it only then).
    pub wireguard: Option<super::wireguard::PeerWireguard>,
}

/// One network as the agent sees it: spec + the controller's status (subnets, gateway, vni)
/// + its NetworkAllocation blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkInput {
    pub name: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub spec: weft_api::ContainerNetworkSpec,
    pub status: weft_api::ContainerNetworkStatus,
    /// node → block, from the NetworkAllocation (cluster-scope drivers only)
    pub blocks: BTreeMap<String, IpNet>,
    /// Other nodes taking part in this network (those with a block), with their underlay
    /// addresses. This node may appear too; it is skipped.
    pub peers: Vec<Peer>,
    /// The VIPs the controller gave this network's services (VIP → `namespace/name`): an
    /// endpoint may not ask for one (the node answers for it, and balances it elsewhere).
    pub service_vips: BTreeMap<IpAddr, String>,
}

/// One pass's networks, sorted by name, shared between the pass and the endpoint manager
/// (which answers CNI calls between passes) without copying them: with a thousand networks a
/// copy per pass was a few MiB of the agent's peak.
#[derive(Clone, Debug, Default)]
pub struct Networks(std::sync::Arc<[NetworkInput]>);

impl Networks {
    pub fn new(mut networks: Vec<NetworkInput>) -> Networks {
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Networks(networks.into())
    }

    pub fn get(&self, name: &str) -> Option<&NetworkInput> {
        let i = self
            .0
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()?;
        self.0.get(i)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl std::ops::Deref for Networks {
    type Target = [NetworkInput];

    fn deref(&self) -> &[NetworkInput] {
        &self.0
    }
}

/// Why a network cannot be realized on this node now. Becomes the network's entry in the
/// NetworkNode status (see [`Problem::state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Machine-readable: the API's reason.
    pub reason: Reason,
    /// What a person should know, naming the object and what will happen next.
    pub message: String,
}

impl Problem {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Problem {
            reason,
            message: message.into(),
        }
    }

    /// `Pending` when the network waits for something that is expected to happen by itself
    /// (an allocation by the controller, an interface to appear); `Failed` when a person has
    /// to act.
    pub fn state(&self) -> RealizationState {
        self.reason.state()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Problem {}

/// One network driver, its whole life on one node: the network's own kernel objects (node
/// side) and what each endpoint of the network gets (endpoint side). Pure: no I/O.
pub trait Driver: Sync {
    /// Add this network's objects to `out` (links, addresses, routes, fdb, neighbours) and
    /// return the firewall intent; Err = the network can't be realized on this node now
    /// (nothing added).
    fn plan(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        out: &mut KernelState,
    ) -> Result<FirewallIntent, Problem>;

    /// How the network's endpoints are attached (routed through the node, a child of a
    /// parent, or no interface at all).
    fn endpoint_shape(&self) -> EndpointShape;

    /// Where the network's endpoints get their addresses on this node; `None` for drivers
    /// without addresses.
    fn address_space(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
    ) -> Result<Option<AddressSpace>, Problem>;

    /// The interface one endpoint gets in its sandbox, given the node's desired state (the
    /// bridge or parent must be in it, else the network is not ready for endpoints yet).
    fn sandbox_link(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        desired_node: &KernelState,
        host: &HostSide,
    ) -> Result<SandboxLink, Problem>;

    /// Static FDB and neighbour entries for endpoints of this network on other nodes
    /// (`remote` holds only this network's; only the overlay needs any).
    fn remote_entries(
        &self,
        _net: &NetworkInput,
        _remote: &[RemoteEndpoint],
        _peers: &BTreeMap<String, IpAddr>,
        _desired_node: &KernelState,
    ) -> (Vec<FdbEntry>, Vec<Neighbour>) {
        (Vec::new(), Vec::new())
    }
}

/// How a driver's endpoints reach their network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointShape {
    /// A veth on the network's bridge: the node routes the endpoint (gateway, host-side
    /// interface, published ports). bridge, overlay.
    Routed,
    /// A child interface of a parent on the node; `own_mac` = it has a MAC of its own
    /// (macvlan) rather than the parent's (ipvlan).
    Child { own_mac: bool },
    /// No interface of its own: the sandbox's loopback only (none). No addresses.
    LoopbackOnly,
    /// The container shares the node's own namespace (host, Docker's `--network host`):
    /// its sandbox is the node's namespace, and Weft changes nothing there. The endpoint is
    /// a record of the membership (what `docker network inspect host` lists).
    SharesNode,
}

impl EndpointShape {
    /// Routed through the node: has a host-side interface and may publish ports.
    pub fn routed(self) -> bool {
        self == EndpointShape::Routed
    }

    /// The endpoint's interface has a MAC of its own (to derive, request and report).
    pub fn has_own_mac(self) -> bool {
        matches!(
            self,
            EndpointShape::Routed | EndpointShape::Child { own_mac: true }
        )
    }

    /// The endpoint has an interface (and addresses) in its sandbox.
    pub fn has_interface(self) -> bool {
        !matches!(
            self,
            EndpointShape::LoopbackOnly | EndpointShape::SharesNode
        )
    }
}

/// Where a network's endpoints get their addresses on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSpace {
    /// The subnet (addresses carry its prefix, so the whole subnet is on-link).
    pub subnet: IpNet,
    /// What this node hands out: the subnet (bridge, node-local like Docker's) or the
    /// node's block (cluster-scope drivers), narrowed by `ipam.ipRange`.
    pub range: IpNet,
    pub gateway: Option<IpAddr>,
    /// Never handed out: the gateway, excluded ranges, the macvlan host shim (and what
    /// stands for the other family's reserved addresses, see `mirror`).
    pub reserved: Vec<IpNet>,
    /// A dual-stack network's first subnet of the other address family.
    pub mirror: Option<MirrorSpace>,
}

/// The other address family of a dual-stack network. An endpoint's address there mirrors
/// its allocated one: the same offset into the subnet (10.0.0.5 in 10.0.0.0/24 ↔ fd00::5
/// in fd00::/64). No second allocator, no second journal record, and an address unique in
/// one family is unique in the other — also across nodes, whose blocks are of the first
/// family. The first family's `range` and `reserved` are narrowed so that every address
/// handed out has a usable mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorSpace {
    pub subnet: IpNet,
    pub gateway: Option<IpAddr>,
}

/// The node side of one endpoint, as its routed link needs it (named by the endpoints
/// module, which owns those names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSide {
    /// The host-side veth's name.
    pub interface: String,
    /// Its ownership alias.
    pub alias: String,
}

/// The link one endpoint gets in its sandbox, and its MTU (`None` = the kernel's choice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLink {
    pub link: EndpointLink,
    pub mtu: Option<u32>,
}

/// An endpoint on another node, for overlay networks: its MAC lives behind that node's VTEP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteEndpoint {
    pub network: String,
    pub node: String,
    pub address: IpAddr,
    pub mac: Mac,
}

/// Why endpoints of `net` cannot be attached on this node yet.
pub fn not_ready(net: &NetworkInput, node: &NodeFacts) -> Problem {
    Problem::new(
        Reason::NetworkNotReady,
        format!(
            "network {} is not programmed on node {} yet",
            net.name, node.node_name
        ),
    )
}

/// What one network needs from nftables on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirewallIntent {
    /// The network's name.
    pub network: String,
    /// The interface the network's endpoints are routed through on this node (its bridge).
    /// `None` = the network is not routed by this node (macvlan, ipvlan, host, none) and
    /// nothing is rendered for it.
    pub interface: Option<String>,
    /// The network's subnets (for masquerade and inter-container rules).
    pub subnets: Vec<IpNet>,
    /// Masquerade traffic from the subnets that leaves through another interface.
    pub masquerade: bool,
    /// Nothing is forwarded into or out of the network (Docker's `--internal`).
    pub internal: bool,
    /// Drop forwarding between this network and every other Weft network on the node.
    pub isolation: bool,
    /// Endpoints on the bridge may talk to each other (Docker's `enable_icc`).
    pub icc: bool,
    /// From outside the node only published ports (DNATed connections) and replies reach
    /// the endpoints (bridge `inbound: published`, Docker 28's default).
    pub published_only: bool,
    /// Overlay: drop frames that enter the bridge from the VXLAN port with the anycast
    /// gateway's MAC as source — another node's gateway, which must stay on its own node.
    pub anycast_guard: Option<AnycastGuard>,
    /// Encrypted overlay: nothing addressed into the WireGuard tunnel prefix leaves the node
    /// through any link but Weft's WireGuard links (its VXLAN devices are routed into them
    /// by one route; should that route be missing, the firewall keeps them from the wire).
    pub tunnel_guard: bool,
}

/// A bridge port on which frames from the (shared) gateway MAC are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnycastGuard {
    /// The VXLAN port of the overlay's bridge.
    pub port: String,
    /// The anycast gateway MAC.
    pub mac: Mac,
}

impl FirewallIntent {
    /// A network that needs nothing from the firewall.
    pub fn none(network: &str) -> Self {
        FirewallIntent {
            network: network.to_string(),
            icc: true,
            ..FirewallIntent::default()
        }
    }

    /// Whether anything would be rendered for this network (isolation counts, though it
    /// only renders once a second network is on the node).
    pub fn needs_nftables(&self) -> bool {
        self.interface.is_some()
            && (self.internal
                || self.isolation
                || !self.icc
                || self.published_only
                || self.anycast_guard.is_some()
                || self.tunnel_guard
                || (self.masquerade && !self.subnets.is_empty()))
    }
}
