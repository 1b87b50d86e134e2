//! Builders for the planner's tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use weft_api::{Capabilities, ContainerNetworkSpec, ContainerNetworkStatus, Driver as ApiDriver};

use crate::drivers::{FirewallIntent, NetworkInput, NodeFacts, Peer, Problem, driver_for};
use crate::model::KernelState;

pub fn cidr(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// Every capability present.
pub fn all_capabilities() -> Capabilities {
    Capabilities {
        bridge: true,
        vxlan: true,
        macvlan: true,
        ipvlan: true,
        vlan: true,
        nftables: true,
        wireguard: true,
    }
}

/// A node with interfaces lo, eth0 and eth1, MTU 1500, every capability.
pub fn node(name: &str, underlay: &str) -> NodeFacts {
    NodeFacts {
        node_name: name.to_string(),
        underlay_address: ip(underlay),
        underlay_interface: Some("eth0".to_string()),
        underlay_mtu: 1500,
        interfaces: ["lo", "eth0", "eth1"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>(),
        capabilities: all_capabilities(),
        wireguard: Default::default(),
    }
}

/// A network of the driver with the smallest valid spec (macvlan/ipvlan on parent eth1)
/// and no status yet.
pub fn network(name: &str, driver: ApiDriver) -> NetworkInput {
    let spec = ContainerNetworkSpec {
        driver,
        bridge: None,
        overlay: None,
        macvlan: (driver == ApiDriver::Macvlan).then(|| weft_api::MacvlanOptions {
            parent: "eth1".into(),
            mode: weft_api::MacvlanMode::Bridge,
            vlan: None,
            host_shim: false,
        }),
        ipvlan: (driver == ApiDriver::Ipvlan).then(|| weft_api::IpvlanOptions {
            parent: "eth1".into(),
            mode: weft_api::IpvlanMode::L2,
            vlan: None,
        }),
        ipam: None,
        mtu: None,
        internal: false,
        node_selector: None,
        dns: None,
    };
    NetworkInput {
        name: name.to_string(),
        uid: format!("uid-{name}"),
        generation: Some(1),
        spec,
        status: ContainerNetworkStatus::default(),
        blocks: BTreeMap::new(),
        peers: Vec::new(),
        service_vips: BTreeMap::new(),
    }
}

/// Give the network subnets and a gateway, as the controller does.
pub fn allocate(net: &mut NetworkInput, subnets: &[&str], gateway: Option<&str>) {
    net.status.subnets = subnets.iter().map(|s| s.to_string()).collect();
    net.status.gateway = gateway.map(String::from);
}

/// Give nodes blocks; every node with a block becomes a peer at the given address.
pub fn give_blocks(net: &mut NetworkInput, blocks: &[(&str, &str, &str)]) {
    for (node, underlay, block) in blocks {
        net.blocks.insert(node.to_string(), cidr(block));
        net.peers.push(Peer {
            node: node.to_string(),
            underlay_address: ip(underlay),
            wireguard: None,
        });
    }
}

/// One network's driver on its own.
pub fn plan_one(
    net: &NetworkInput,
    node: &NodeFacts,
) -> (KernelState, Result<FirewallIntent, Problem>) {
    let mut state = KernelState::default();
    let intent = driver_for(net.spec.driver).plan(net, node, &mut state);
    (state, intent)
}

/// (link, address) pairs, sorted.
pub fn addresses(state: &KernelState) -> Vec<(String, IpNet)> {
    state
        .addresses
        .iter()
        .map(|a| (a.link.clone(), a.address))
        .collect()
}
