//! Pure planning of the whole node: API objects + facts about the node → the desired kernel
//! state. This module only composes: each network's driver ([`crate::drivers`], behind
//! [`Driver`]) plans its own objects; firewalling is kept apart from the drivers
//! ([`firewall`]), as flannel keeps its `trafficmngr` apart from its backends: a driver only
//! says what a network needs ([`FirewallIntent`]), and [`firewall::render`] turns the intents
//! of every network on the node into Weft's nftables tables at once (isolation is a relation
//! *between* networks).
//!
//! No I/O, no clock, no randomness: the same inputs give the same [`KernelState`], whatever
//! order the networks come in. Malformed API data never panics; it becomes a [`Problem`] for
//! that network alone, and the other networks are planned as if it did not exist.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::drivers::{self, FirewallIntent, NetworkInput, NodeFacts, Problem, Reason};
use crate::model::{KernelState, network_of_alias, route_localnet_key};

pub mod firewall;

#[cfg(test)]
mod tests;

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
    let intent = drivers::of(net).plan(net, node, &mut planned)?;
    check_claims(&planned, node, claimed)?;
    if intent.needs_nftables() && !node.capabilities.nftables {
        return Err(Problem::new(
            Reason::Unsupported,
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
/// network holds. Node-level objects that several networks plan alike (the WireGuard links
/// of encrypted overlays, their addresses and the tunnel route) are shared, not claimed.
fn check_claims(
    planned: &KernelState,
    node: &NodeFacts,
    claimed: &KernelState,
) -> Result<(), Problem> {
    for (name, link) in &planned.links {
        if let Some(other) = claimed.links.get(name).filter(|other| *other != link) {
            let owner = network_of_alias(&other.alias).unwrap_or("another network");
            return Err(Problem::new(
                Reason::Conflict,
                format!(
                    "interface {name} is already used by network {owner} on node {}",
                    node.node_name
                ),
            ));
        }
        if node.interfaces.contains(name) {
            return Err(Problem::new(
                Reason::NameInUse,
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
            .find(|a| a.address.addr() == address.address.addr() && *a != address)
        {
            return Err(Problem::new(
                Reason::Conflict,
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
            .find(|r| r.destination == route.destination && *r != route)
        {
            return Err(Problem::new(
                Reason::Conflict,
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
