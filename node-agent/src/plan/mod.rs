//! Pure planning: API objects + facts about the node → the desired kernel state.
//!
//! One module per network driver ([`crate::drivers`]) behind one small trait ([`Driver`]);
//! firewalling is kept apart from the drivers ([`firewall`]), as flannel keeps its
//! `trafficmngr` apart from its backends: a driver only says what a network needs
//! ([`FirewallIntent`]), and [`firewall::render`] turns the intents of every network on the
//! node into Weft's nftables tables at once (isolation is a relation *between* networks).
//!
//! No I/O, no clock, no randomness: the same inputs give the same [`KernelState`], whatever
//! order the networks come in. Malformed API data never panics; it becomes a [`Problem`] for
//! that network alone, and the other networks are planned as if it did not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use weft_api::RealizationState;

use crate::drivers;
use crate::model::{KernelState, network_of_alias, route_localnet_key};

pub mod firewall;

pub use firewall::FirewallIntent;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

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
}

/// Another node taking part in a cluster-scope network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    pub node: String,
    pub underlay_address: IpAddr,
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
    /// Machine-readable, one of [`reason`].
    pub reason: &'static str,
    /// What a person should know, naming the object and what will happen next.
    pub message: String,
}

/// The reasons a [`Problem`] can carry.
pub mod reason {
    /// The controller has not allocated the network's subnets (or VNI) yet. Pending.
    pub const NOT_ALLOCATED: &str = "NotAllocated";
    /// The controller has not given this node an address block of the network yet. Pending.
    pub const NO_BLOCK: &str = "NoBlock";
    /// The macvlan/ipvlan parent interface does not exist on the node (yet). Pending.
    pub const PARENT_MISSING: &str = "ParentMissing";
    /// The node's kernel lacks a feature the network needs. Failed.
    pub const UNSUPPORTED: &str = "Unsupported";
    /// The spec holds something the schema should have refused. Failed.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The controller's status or allocation holds something unusable. Failed.
    pub const INVALID_STATUS: &str = "InvalidStatus";
    /// Another network on this node already uses the same kernel object. Failed.
    pub const CONFLICT: &str = "Conflict";
    /// A foreign (non-Weft) interface already has the name Weft needs. Failed.
    pub const NAME_IN_USE: &str = "NameInUse";
    /// The node's block has no address left for the host shim. Failed.
    pub const NO_ADDRESS: &str = "NoAddress";
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Problem {
            reason,
            message: message.into(),
        }
    }

    /// `Pending` when the network waits for something that is expected to happen by itself
    /// (an allocation by the controller, an interface to appear); `Failed` when a person has
    /// to act.
    pub fn state(&self) -> RealizationState {
        match self.reason {
            reason::NOT_ALLOCATED | reason::NO_BLOCK | reason::PARENT_MISSING => {
                RealizationState::Pending
            }
            _ => RealizationState::Failed,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Problem {}

/// One network driver: what a network of that driver needs on one node.
pub trait Driver {
    /// Add this network's objects to `out` (links, addresses, routes, fdb, neighbours) and
    /// return the firewall intent; Err = the network can't be realized on this node now
    /// (nothing added).
    fn plan(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        out: &mut KernelState,
    ) -> Result<FirewallIntent, Problem>;
}

/// The driver of a network.
pub fn driver_for(driver: weft_api::Driver) -> &'static dyn Driver {
    match driver {
        weft_api::Driver::Bridge => &drivers::bridge::Bridge,
        weft_api::Driver::Overlay => &drivers::overlay::Overlay,
        weft_api::Driver::Macvlan => &drivers::macvlan::Macvlan,
        weft_api::Driver::Ipvlan => &drivers::ipvlan::Ipvlan,
        weft_api::Driver::Host => &drivers::host::Host,
        weft_api::Driver::None => &drivers::none::NoneDriver,
    }
}

/// The whole node: every network's driver, then the firewall (nft tables) for all of them
/// together, then sysctls. Returns the desired state and a per-network outcome (Ok =
/// programmable).
///
/// Networks are planned in name order (then uid), so the result does not depend on the
/// order of `networks`; when two networks want the same kernel object (say, both a VLAN
/// sub-interface `eth1.10`), the first by name keeps it and the other gets a `Conflict`.
/// Of several inputs with the same name only the first (by uid) is planned.
pub fn plan_node(
    networks: &[NetworkInput],
    node: &NodeFacts,
) -> (KernelState, BTreeMap<String, Result<(), Problem>>) {
    let mut sorted: Vec<&NetworkInput> = networks.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.uid).cmp(&(&b.name, &b.uid)));
    sorted.dedup_by(|later, earlier| later.name == earlier.name);

    let mut out = KernelState::default();
    let mut outcomes = BTreeMap::new();
    let mut intents = Vec::new();
    for net in sorted {
        let outcome = plan_network(net, node, &out).map(|(planned, intent)| {
            merge(&mut out, planned);
            intents.push(intent);
        });
        outcomes.insert(net.name.clone(), outcome);
    }
    out.nft = firewall::render(&intents);
    out.sysctls.extend(forwarding_sysctls(&intents));
    add_localhost_publishing(&mut out, &intents, node);
    (out, outcomes)
}

/// One network on its own, checked against what earlier networks already claimed.
fn plan_network(
    net: &NetworkInput,
    node: &NodeFacts,
    claimed: &KernelState,
) -> Result<(KernelState, FirewallIntent), Problem> {
    let mut planned = KernelState::default();
    let intent = driver_for(net.spec.driver).plan(net, node, &mut planned)?;
    check_claims(&planned, node, claimed)?;
    if intent.needs_nftables() && !node.capabilities.nftables {
        return Err(Problem::new(
            reason::UNSUPPORTED,
            format!(
                "network {} needs nftables (masquerade, isolation or internal rules), which node {} does not support",
                net.name, node.node_name
            ),
        ));
    }
    Ok((planned, intent))
}

/// A network may only add kernel objects nobody else has: not a link name a foreign
/// interface or an earlier network holds, not an address or a route destination an earlier
/// network holds.
fn check_claims(
    planned: &KernelState,
    node: &NodeFacts,
    claimed: &KernelState,
) -> Result<(), Problem> {
    for name in planned.links.keys() {
        if let Some(other) = claimed.links.get(name) {
            let owner = network_of_alias(&other.alias).unwrap_or("another network");
            return Err(Problem::new(
                reason::CONFLICT,
                format!(
                    "interface {name} is already used by network {owner} on node {}",
                    node.node_name
                ),
            ));
        }
        if node.interfaces.contains(name) {
            return Err(Problem::new(
                reason::NAME_IN_USE,
                format!(
                    "interface {name} already exists on node {} and is not Weft's; Weft never changes foreign interfaces: rename or remove it",
                    node.node_name
                ),
            ));
        }
    }
    for address in &planned.addresses {
        if let Some(other) = claimed
            .addresses
            .iter()
            .find(|a| a.address.addr() == address.address.addr())
        {
            return Err(Problem::new(
                reason::CONFLICT,
                format!(
                    "address {} is already on interface {} on node {}",
                    address.address.addr(),
                    other.link,
                    node.node_name
                ),
            ));
        }
    }
    for route in &planned.routes {
        if let Some(other) = claimed
            .routes
            .iter()
            .find(|r| r.destination == route.destination)
        {
            return Err(Problem::new(
                reason::CONFLICT,
                format!(
                    "route to {} already goes through {} on node {}",
                    route.destination, other.link, node.node_name
                ),
            ));
        }
    }
    Ok(())
}

fn merge(out: &mut KernelState, planned: KernelState) {
    out.links.extend(planned.links);
    out.addresses.extend(planned.addresses);
    out.routes.extend(planned.routes);
    out.fdb.extend(planned.fdb);
    out.neighbours.extend(planned.neighbours);
    out.sysctls.extend(planned.sysctls);
}

/// `net/ipv4/ip_forward`: the kernel's forwarding switch for IPv4.
pub const SYSCTL_IPV4_FORWARD: &str = "net/ipv4/ip_forward";
/// `net/ipv6/conf/all/forwarding`: the same for IPv6. Note that it makes the kernel ignore
/// router advertisements on every interface (as Docker's IPv6 networks do).
pub const SYSCTL_IPV6_FORWARD: &str = "net/ipv6/conf/all/forwarding";

/// Forwarding is switched on, per address family, when a routed (bridge or overlay) network
/// that is not internal has a subnet of that family. Weft only ever turns it on: an
/// internal-only node leaves the kernel's setting alone.
fn forwarding_sysctls(intents: &[FirewallIntent]) -> BTreeMap<String, String> {
    let mut sysctls = BTreeMap::new();
    for intent in intents {
        if intent.interface.is_none() || intent.internal {
            continue;
        }
        for subnet in &intent.subnets {
            let key = match subnet {
                IpNet::V4(_) => SYSCTL_IPV4_FORWARD,
                IpNet::V6(_) => SYSCTL_IPV6_FORWARD,
            };
            sysctls.insert(key.to_string(), "1".to_string());
        }
    }
    sysctls
}

/// Localhost publishing (see [`firewall::localhost_chains`]): `route_localnet` on every
/// routed, not internal bridge with an IPv4 subnet, and the chains that make that safe. Only
/// together: without nftables (no guard possible) no bridge gets `route_localnet`. IPv6 has
/// no `route_localnet` (the kernel never lets `::1` leave `lo`), so `[::1]` is not served;
/// Docker serves it with a userspace proxy.
fn add_localhost_publishing(out: &mut KernelState, intents: &[FirewallIntent], node: &NodeFacts) {
    if !node.capabilities.nftables {
        return;
    }
    let chains = firewall::localhost_chains(intents);
    if chains.is_empty() {
        return;
    }
    for intent in intents {
        if let Some(link) = &intent.interface
            && !intent.internal
            && intent.subnets.iter().any(|s| s.addr().is_ipv4())
        {
            out.sysctls
                .insert(route_localnet_key(link), "1".to_string());
        }
    }
    out.nft
        .entry(crate::model::NftFamily::Inet)
        .or_default()
        .chains
        .extend(chains);
}

/// 64-bit FNV-1a: tiny and stable across Rust versions and platforms (std's hasher is
/// neither). Used for nft rule ids and the overlay's anycast gateway MAC.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
