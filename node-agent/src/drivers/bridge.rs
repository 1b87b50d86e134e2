//! `bridge`: Docker's default driver, local scope. One Linux bridge per network on every
//! node, holding the gateway address of each subnet; endpoints are veths on it; traffic
//! that leaves the subnet is routed by the node and masqueraded. The bridge has a MAC of its
//! own ([`gateway_mac`]): without one it takes its lowest port's MAC and changes it when that
//! port leaves, and the remaining endpoints lose their gateway until their ARP entry ages out.

use ipnet::IpNet;

use crate::kernel::EndpointLink;
use crate::model::{Address, KernelState, Link, LinkKind, Mac, alias_for};
use crate::names;
use crate::names::fnv1a64;

use super::common::{
    Scope, address_space, allocated_subnets, gateway_addresses, link_mtu, require, status_gateway,
};
use super::contract::{
    AddressSpace, Driver, EndpointShape, FirewallIntent, HostSide, NetworkInput, NodeFacts,
    Problem, SandboxLink, not_ready,
};

/// The bridge driver.
pub struct Bridge;

impl Driver for Bridge {
    fn plan(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        out: &mut KernelState,
    ) -> Result<FirewallIntent, Problem> {
        require(node.capabilities.bridge, || {
            "this kernel has no bridge support".to_string()
        })?;
        let options = net.spec.bridge.clone().unwrap_or_default();
        let mtu = link_mtu(net, node.underlay_mtu)?;
        let bridge = RoutedBridge::plan(net, mtu, Some(gateway_mac(&net.name)))?;

        let intent = FirewallIntent {
            network: net.name.clone(),
            interface: Some(bridge.link.name.clone()),
            subnets: bridge.subnets.clone(),
            masquerade: options.masquerade && !net.spec.internal,
            internal: net.spec.internal,
            isolation: options.isolation,
            icc: options.inter_container_traffic,
            published_only: options.inbound == weft_api::Inbound::Published,
            anycast_guard: None,
            tunnel_guard: false,
        };
        bridge.add_to(out);
        Ok(intent)
    }

    fn endpoint_shape(&self) -> EndpointShape {
        EndpointShape::Routed
    }

    fn address_space(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
    ) -> Result<Option<AddressSpace>, Problem> {
        address_space(net, node, Scope::Subnet, true).map(Some)
    }

    fn sandbox_link(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        desired_node: &KernelState,
        host: &HostSide,
    ) -> Result<SandboxLink, Problem> {
        routed_link(net, node, desired_node, host)
    }
}

/// A routed endpoint (bridge, overlay): a veth on the network's bridge, with the bridge's
/// MTU. The bridge must be in the node's desired state.
pub(crate) fn routed_link(
    net: &NetworkInput,
    node: &NodeFacts,
    desired_node: &KernelState,
    host: &HostSide,
) -> Result<SandboxLink, Problem> {
    let bridge = names::bridge(&net.name);
    let Some(planned) = desired_node.links.get(&bridge) else {
        return Err(not_ready(net, node));
    };
    Ok(SandboxLink {
        mtu: planned.mtu,
        link: EndpointLink::Veth {
            host: host.interface.clone(),
            host_alias: host.alias.clone(),
            bridge,
            hairpin: true,
        },
    })
}

/// The gateway MAC of a bridge network: fixed for the life of the network (and across agent
/// versions), so endpoints' ARP/ND entries for the gateway never go stale. Locally
/// administered unicast, `02:58:` + 4 bytes of the FNV-1a-64 hash of the network name: the
/// derivation of the overlay's anycast gateway MAC ([`super::overlay::anycast_gateway_mac`],
/// `02:57:`) with another second byte, so the two never collide for one name.
pub fn gateway_mac(network: &str) -> Mac {
    let h = fnv1a64(network.as_bytes()).to_be_bytes();
    Mac([0x02, 0x58, h[0], h[1], h[2], h[3]])
}

/// The part bridge and overlay networks share: a bridge with the gateway address of every
/// subnet. Built completely before anything is added to the state, so a problem adds
/// nothing.
pub(crate) struct RoutedBridge {
    pub link: Link,
    pub subnets: Vec<IpNet>,
    pub addresses: Vec<Address>,
}

impl RoutedBridge {
    pub fn plan(net: &NetworkInput, mtu: u32, mac: Option<Mac>) -> Result<Self, Problem> {
        let subnets = allocated_subnets(net)?;
        let gateway = status_gateway(net)?;
        let name = names::bridge(&net.name);
        let addresses = gateway_addresses(&subnets, gateway)
            .into_iter()
            .map(|address| Address {
                link: name.clone(),
                address,
            })
            .collect();
        Ok(RoutedBridge {
            link: Link {
                name,
                alias: alias_for(&net.name),
                kind: LinkKind::Bridge,
                mtu: Some(mtu),
                master: None,
                up: true,
                mac,
            },
            subnets,
            addresses,
        })
    }

    pub fn add_to(self, out: &mut KernelState) {
        out.addresses.extend(self.addresses);
        out.links.insert(self.link.name.clone(), self.link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::Reason;
    use crate::drivers::testutil::*;

    #[test]
    fn one_bridge_with_the_gateway_of_every_subnet() {
        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(
            &mut n,
            &["10.10.0.0/24", "10.10.1.0/24", "fd00:10::/64"],
            Some("10.10.0.1"),
        );
        let (state, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        let intent = intent.expect("planned");

        let name = names::bridge("web");
        assert_eq!(state.links.len(), 1);
        assert_eq!(
            state.links[&name],
            Link {
                name: name.clone(),
                alias: "weft:web".into(),
                kind: LinkKind::Bridge,
                mtu: Some(1500),
                master: None,
                up: true,
                mac: Some(gateway_mac("web")),
            }
        );
        assert_eq!(
            addresses(&state),
            vec![
                (name.clone(), cidr("10.10.0.1/24")),
                (name.clone(), cidr("10.10.1.1/24")),
                (name.clone(), cidr("fd00:10::1/64")),
            ]
        );
        assert!(state.routes.is_empty());
        assert!(state.fdb.is_empty());
        assert!(state.neighbours.is_empty());
        assert_eq!(
            intent,
            FirewallIntent {
                network: "web".into(),
                interface: Some(name),
                subnets: vec![
                    cidr("10.10.0.0/24"),
                    cidr("10.10.1.0/24"),
                    cidr("fd00:10::/64")
                ],
                masquerade: true,
                internal: false,
                isolation: true,
                icc: true,
                published_only: true,
                anycast_guard: None,
                tunnel_guard: false,
            }
        );
    }

    #[test]
    fn the_gateway_mac_is_fixed_per_network_and_not_the_overlays() {
        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(&mut n, &["10.10.0.0/24"], None);
        let (s1, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        let (s2, _) = plan_one(&n, &node("n2", "192.0.2.2"));
        let b = names::bridge("web");
        assert_eq!(s1.links[&b].mac, Some(gateway_mac("web")));
        assert_eq!(s1.links[&b].mac, s2.links[&b].mac);
        // Pinned across versions: locally administered unicast, 02:58 + the name's hash.
        let mac = gateway_mac("web");
        let h = fnv1a64(b"web").to_be_bytes();
        assert_eq!(mac, Mac([0x02, 0x58, h[0], h[1], h[2], h[3]]));
        assert_eq!(mac[0] & 0b11, 0b10);
        assert_ne!(gateway_mac("web"), gateway_mac("db"));
        // Same name as an overlay: a different MAC.
        assert_ne!(
            gateway_mac("web"),
            super::super::overlay::anycast_gateway_mac("web")
        );
    }

    #[test]
    fn the_gateway_goes_to_the_subnet_that_holds_it() {
        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(
            &mut n,
            &["10.10.0.0/24", "10.10.1.0/24"],
            Some("10.10.1.254"),
        );
        let (state, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        let b = names::bridge("web");
        assert_eq!(
            addresses(&state),
            vec![
                (b.clone(), cidr("10.10.0.1/24")),
                (b, cidr("10.10.1.254/24"))
            ]
        );
    }

    #[test]
    fn spec_mtu_and_options_reach_the_link_and_the_intent() {
        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(&mut n, &["10.10.0.0/24"], Some("10.10.0.1"));
        n.spec.mtu = Some(1400);
        n.spec.bridge = Some(weft_api::BridgeOptions {
            masquerade: false,
            host_binding: None,
            isolation: false,
            inter_container_traffic: false,
            inbound: weft_api::Inbound::Routed,
        });
        let (state, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        let intent = intent.expect("planned");
        assert_eq!(state.links[&names::bridge("web")].mtu, Some(1400));
        assert!(!intent.masquerade);
        assert!(!intent.isolation);
        assert!(!intent.icc);
        assert!(!intent.published_only);
    }

    #[test]
    fn internal_never_masquerades() {
        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(&mut n, &["10.10.0.0/24"], Some("10.10.0.1"));
        n.spec.internal = true;
        let (_, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        let intent = intent.expect("planned");
        assert!(intent.internal);
        assert!(!intent.masquerade);
    }

    #[test]
    fn no_subnet_yet_is_not_allocated_and_adds_nothing() {
        let n = network("web", weft_api::Driver::Bridge);
        let (state, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        assert_eq!(intent.map_err(|p| p.reason), Err(Reason::NotAllocated));
        assert_eq!(state, KernelState::default());
    }

    #[test]
    fn malformed_status_is_a_problem_not_a_panic() {
        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(&mut n, &["10.10.0.0/240"], None);
        let (state, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        assert_eq!(intent.map_err(|p| p.reason), Err(Reason::InvalidStatus));
        assert_eq!(state, KernelState::default());

        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(&mut n, &["10.10.0.0/24"], Some("ten"));
        assert_eq!(
            plan_one(&n, &node("n1", "192.0.2.1"))
                .1
                .map_err(|p| p.reason),
            Err(Reason::InvalidStatus)
        );

        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(&mut n, &["10.10.0.0/24"], None);
        n.spec.mtu = Some(-1);
        assert_eq!(
            plan_one(&n, &node("n1", "192.0.2.1"))
                .1
                .map_err(|p| p.reason),
            Err(Reason::InvalidSpec)
        );
    }

    #[test]
    fn without_a_gateway_every_subnet_gets_its_first_host() {
        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(&mut n, &["10.10.0.0/24", "fd00:10::/64"], None);
        let (state, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        let b = names::bridge("web");
        assert_eq!(
            addresses(&state),
            vec![
                (b.clone(), cidr("10.10.0.1/24")),
                (b, cidr("fd00:10::1/64"))
            ]
        );
    }

    #[test]
    fn no_bridge_support_is_unsupported() {
        let mut n = network("web", weft_api::Driver::Bridge);
        allocate(&mut n, &["10.10.0.0/24"], None);
        let mut facts = node("n1", "192.0.2.1");
        facts.capabilities.bridge = false;
        let (state, intent) = plan_one(&n, &facts);
        assert_eq!(intent.map_err(|p| p.reason), Err(Reason::Unsupported));
        assert_eq!(state, KernelState::default());
    }
}
