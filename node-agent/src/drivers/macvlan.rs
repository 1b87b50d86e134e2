//! `macvlan`: Docker's macvlan driver, cluster scope. Endpoints are macvlan interfaces on a
//! parent (each with its own MAC), so they sit directly on the parent's L2 network; the
//! node routes nothing and the firewall has nothing to do.
//!
//! Per network and node the planner creates at most:
//! - the 802.1Q sub-interface `parent.VID`, if `vlan` is set (see [`super::parent`]);
//! - with `hostShim: true`, the host shim: a macvlan interface of the host (bridge mode) on
//!   the same parent with one address of this node's block, and a route to the block
//!   through it. Linux never delivers frames between a parent and its macvlan children, so
//!   without a shim the node cannot reach its own containers; Docker documents this as a
//!   manual recipe, Weft makes it a switch. The shim reaches endpoints in `bridge` mode (the
//!   default); `private` endpoints talk to nobody on the node, `vepa` ones only through an
//!   external switch that hairpins, and `passthru` allows no second macvlan at all.
//!
//! Endpoints themselves are created later, per endpoint.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::kernel::EndpointLink;
use crate::model::{
    Address, KernelState, Link, LinkKind, MacvlanMode as KernelMacvlanMode, Route, alias_for,
};
use crate::names;

use super::common::{
    Scope, address_space, allocated_subnets, endpoint_mtu, excluded_ranges, node_block,
    offset_addr, optional_mtu, require, status_gateway,
};
use super::contract::{
    AddressSpace, Driver, EndpointShape, FirewallIntent, HostSide, NetworkInput, NodeFacts,
    Problem, Reason, SandboxLink,
};
use super::parent;

/// The macvlan driver.
pub struct Macvlan;

impl Driver for Macvlan {
    fn plan(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        out: &mut KernelState,
    ) -> Result<FirewallIntent, Problem> {
        require(node.capabilities.macvlan, || {
            "this kernel has no macvlan support".to_string()
        })?;
        let options = net.spec.macvlan.as_ref().ok_or_else(|| {
            Problem::new(
                Reason::InvalidSpec,
                format!(
                    "network {} has driver macvlan but no spec.macvlan",
                    net.name
                ),
            )
        })?;
        if options.host_shim && options.mode == weft_api::MacvlanMode::Passthru {
            return Err(Problem::new(
                Reason::InvalidSpec,
                format!(
                    "network {} asks for hostShim in passthru mode, which allows a single macvlan on the parent",
                    net.name
                ),
            ));
        }
        let mtu = optional_mtu(net)?;
        let parent = parent::resolve(net, node, &options.parent, options.vlan, mtu)?;

        let shim = if options.host_shim {
            Some(HostShim::plan(
                net,
                node,
                mtu,
                LinkKind::Macvlan {
                    parent: parent.name.clone(),
                    mode: KernelMacvlanMode::Bridge,
                },
            )?)
        } else {
            None
        };

        if let Some(link) = parent.vlan_link {
            out.links.insert(link.name.clone(), link);
        }
        if let Some(shim) = shim {
            shim.add_to(out);
        }
        Ok(FirewallIntent::none(&net.name))
    }

    fn endpoint_shape(&self) -> EndpointShape {
        EndpointShape::Child { own_mac: true }
    }

    /// This node's block, without a default gateway (the LAN has its own router), with the
    /// host shim's address reserved.
    fn address_space(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
    ) -> Result<Option<AddressSpace>, Problem> {
        let shim = net.spec.macvlan.as_ref().is_some_and(|m| m.host_shim);
        space_with_shim(net, node, shim).map(Some)
    }

    fn sandbox_link(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        desired_node: &KernelState,
        _host: &HostSide,
    ) -> Result<SandboxLink, Problem> {
        let options = net.spec.macvlan.as_ref();
        let parent = parent::for_endpoint(
            net,
            node,
            desired_node,
            options.map(|o| (o.parent.as_str(), o.vlan)),
        )?;
        let mode = match options.map(|m| m.mode) {
            Some(weft_api::MacvlanMode::Private) => KernelMacvlanMode::Private,
            Some(weft_api::MacvlanMode::Vepa) => KernelMacvlanMode::Vepa,
            Some(weft_api::MacvlanMode::Passthru) => KernelMacvlanMode::Passthru,
            _ => KernelMacvlanMode::Bridge,
        };
        Ok(SandboxLink {
            link: EndpointLink::Macvlan { parent, mode },
            mtu: endpoint_mtu(net),
        })
    }
}

/// The host's own interface on a macvlan network (a macvlan child in bridge mode) or an
/// ipvlan L3 network (an ipvlan child in L3 mode): `kind`, with the first free address of
/// the node's block and a route to the block.
pub(super) struct HostShim {
    link: Link,
    address: Address,
    route: Route,
}

impl HostShim {
    pub(super) fn plan(
        net: &NetworkInput,
        node: &NodeFacts,
        mtu: Option<u32>,
        kind: LinkKind,
    ) -> Result<Self, Problem> {
        let subnets = allocated_subnets(net)?;
        let block = node_block(net, node)?;
        let gateway = status_gateway(net)?;
        let excluded = excluded_ranges(net)?;
        let addr = shim_address(block, &subnets, gateway, &excluded).ok_or_else(|| {
            Problem::new(
                Reason::NoAddress,
                format!(
                    "block {block} of network {} on node {} has no address left for the host shim",
                    net.name, node.node_name
                ),
            )
        })?;
        let name = names::shim(&net.name);
        Ok(HostShim {
            link: Link {
                name: name.clone(),
                alias: alias_for(&net.name),
                kind,
                mtu,
                master: None,
                up: true,
                mac: None,
            },
            address: Address {
                link: name.clone(),
                address: IpNet::from(addr),
            },
            route: Route {
                destination: block,
                link: name,
                gateway: None,
            },
        })
    }

    pub(super) fn add_to(self, out: &mut KernelState) {
        out.addresses.insert(self.address);
        out.routes.insert(self.route);
        out.links.insert(self.link.name.clone(), self.link);
    }
}

/// This node's block without a default gateway, with the host shim's address reserved when
/// there is one (macvlan `hostShim`, ipvlan L3).
pub(super) fn space_with_shim(
    net: &NetworkInput,
    node: &NodeFacts,
    shim: bool,
) -> Result<AddressSpace, Problem> {
    let mut space = address_space(net, node, Scope::NodeBlock, false)?;
    if shim
        && let Some(a) = shim_address(
            space.range,
            &allocated_subnets(net)?,
            status_gateway(net)?,
            &excluded_ranges(net)?,
        )
    {
        space.reserved.push(IpNet::from(a));
    }
    Ok(space)
}

/// The host shim's address on a node: the first address of the node's block that an
/// endpoint could have, skipping the gateway and the excluded ranges (hosts already on the
/// LAN). The node's endpoint allocator must reserve it too.
///
/// Not usable: the subnet's network address (IPv4; for IPv6 the subnet-router anycast
/// address), the IPv4 broadcast address, the gateway, anything in `excluded`. Without a
/// subnet holding the block, the block's own bounds count as the subnet's.
pub fn shim_address(
    block: IpNet,
    subnets: &[IpNet],
    gateway: Option<IpAddr>,
    excluded: &[IpNet],
) -> Option<IpAddr> {
    let block = block.trunc();
    let subnet = subnets
        .iter()
        .map(IpNet::trunc)
        .find(|s| s.contains(&block))
        .unwrap_or(block);
    let point_to_point = subnet.max_prefix_len() - subnet.prefix_len() <= 1;
    let reserved_single = |a: IpAddr| {
        Some(a) == gateway
            || (!point_to_point
                && (a == subnet.network() || (a.is_ipv4() && a == subnet.broadcast())))
    };
    let mut candidate = block.network();
    // Each step passes one reserved address or one whole excluded range, so this ends.
    while block.contains(&candidate) {
        if let Some(range) = excluded.iter().find(|r| r.contains(&candidate)) {
            candidate = offset_addr(range.broadcast(), 1)?;
        } else if reserved_single(candidate) {
            candidate = offset_addr(candidate, 1)?;
        } else {
            return Some(candidate);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::testutil::*;

    fn lan(shim: bool, vlan: Option<i32>) -> NetworkInput {
        let mut n = network("lan", weft_api::Driver::Macvlan);
        n.spec.macvlan = Some(weft_api::MacvlanOptions {
            parent: "eth1".into(),
            mode: weft_api::MacvlanMode::Bridge,
            vlan,
            host_shim: shim,
        });
        allocate(&mut n, &["192.168.50.0/24"], Some("192.168.50.1"));
        give_blocks(
            &mut n,
            &[
                ("n1", "192.0.2.1", "192.168.50.0/28"),
                ("n2", "192.0.2.2", "192.168.50.16/28"),
            ],
        );
        n
    }

    #[test]
    fn without_shim_or_vlan_nothing_is_created() {
        let (state, intent) = plan_one(&lan(false, None), &node("n1", "192.0.2.1"));
        assert_eq!(intent, Ok(FirewallIntent::none("lan")));
        assert_eq!(state, KernelState::default());
        assert!(crate::plan::firewall::render(&[FirewallIntent::none("lan")]).is_empty());
    }

    #[test]
    fn vlan_sub_interface() {
        let (state, intent) = plan_one(&lan(false, Some(10)), &node("n1", "192.0.2.1"));
        assert!(intent.is_ok());
        assert_eq!(state.links.len(), 1);
        assert_eq!(
            state.links["eth1.10"],
            Link {
                name: "eth1.10".into(),
                alias: "weft:lan".into(),
                kind: LinkKind::Vlan {
                    parent: "eth1".into(),
                    id: 10
                },
                mtu: None,
                master: None,
                up: true,
                mac: None,
            }
        );
        assert!(state.addresses.is_empty() && state.routes.is_empty());
    }

    #[test]
    fn host_shim_on_the_vlan_with_an_address_of_the_block_and_a_route() {
        let mut n = lan(true, Some(10));
        n.spec.mtu = Some(1400);
        let (state, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        assert!(intent.is_ok());
        let shim = names::shim("lan");
        assert_eq!(state.links.len(), 2);
        assert_eq!(
            state.links[&shim],
            Link {
                name: shim.clone(),
                alias: "weft:lan".into(),
                kind: LinkKind::Macvlan {
                    parent: "eth1.10".into(),
                    mode: KernelMacvlanMode::Bridge,
                },
                mtu: Some(1400),
                master: None,
                up: true,
                mac: None,
            }
        );
        assert_eq!(state.links["eth1.10"].mtu, Some(1400));
        // .0 is the subnet's network address, .1 the gateway: .2 is the first usable.
        assert_eq!(
            addresses(&state),
            vec![(shim.clone(), cidr("192.168.50.2/32"))]
        );
        assert_eq!(
            state.routes.iter().cloned().collect::<Vec<_>>(),
            vec![Route {
                destination: cidr("192.168.50.0/28"),
                link: shim,
                gateway: None,
            }]
        );
    }

    #[test]
    fn host_shim_on_another_node_uses_that_nodes_block() {
        let (state, _) = plan_one(&lan(true, None), &node("n2", "192.0.2.2"));
        let shim = names::shim("lan");
        assert_eq!(
            addresses(&state),
            vec![(shim.clone(), cidr("192.168.50.16/32"))]
        );
        assert_eq!(
            state.links[&shim].kind,
            LinkKind::Macvlan {
                parent: "eth1".into(),
                mode: KernelMacvlanMode::Bridge,
            }
        );
    }

    #[test]
    fn shim_address_rules() {
        let s = [cidr("10.0.0.0/24")];
        assert_eq!(
            shim_address(cidr("10.0.0.0/28"), &s, Some(ip("10.0.0.1")), &[]),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            shim_address(cidr("10.0.0.16/28"), &s, Some(ip("10.0.0.1")), &[]),
            Some(ip("10.0.0.16"))
        );
        assert_eq!(
            shim_address(
                cidr("10.0.0.16/28"),
                &s,
                Some(ip("10.0.0.16")),
                &[cidr("10.0.0.17/32"), cidr("10.0.0.18/31")]
            ),
            Some(ip("10.0.0.20"))
        );
        // The last block: broadcast is never the shim's.
        assert_eq!(
            shim_address(cidr("10.0.0.252/30"), &s, None, &[cidr("10.0.0.252/31")]),
            Some(ip("10.0.0.254"))
        );
        assert_eq!(
            shim_address(
                cidr("10.0.0.252/30"),
                &s,
                None,
                &[cidr("10.0.0.252/31"), cidr("10.0.0.254/32")]
            ),
            None
        );
        // IPv6: the subnet-router anycast address is skipped.
        assert_eq!(
            shim_address(cidr("fd00:50::/120"), &[cidr("fd00:50::/64")], None, &[]),
            Some(ip("fd00:50::1"))
        );
        // Excluding the whole block: nothing, and no endless loop.
        assert_eq!(
            shim_address(cidr("10.0.0.16/28"), &s, None, &[cidr("10.0.0.0/24")]),
            None
        );
    }

    #[test]
    fn v6_shim_is_a_slash_128() {
        let mut n = lan(true, None);
        allocate(&mut n, &["fd00:50::/64"], Some("fd00:50::1"));
        n.blocks.insert("n1".into(), cidr("fd00:50::/120"));
        let (state, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        assert_eq!(
            addresses(&state),
            vec![(names::shim("lan"), cidr("fd00:50::2/128"))]
        );
    }

    #[test]
    fn problems_add_nothing() {
        let me = node("n1", "192.0.2.1");
        let check = |n: &NetworkInput, me: &NodeFacts, want: Reason| {
            let (state, intent) = plan_one(n, me);
            assert_eq!(intent.map_err(|p| p.reason), Err(want), "{n:?}");
            assert_eq!(state, KernelState::default());
        };

        let mut missing = lan(true, Some(10));
        missing.spec.macvlan.as_mut().expect("macvlan").parent = "eth7".into();
        let (_, intent) = plan_one(&missing, &me);
        assert_eq!(
            intent,
            Err(Problem::new(
                Reason::ParentMissing,
                "parent interface eth7 does not exist on node n1; the network is programmed as soon as it appears"
            ))
        );
        check(&missing, &me, Reason::ParentMissing);

        let mut no_block = lan(true, Some(10));
        no_block.blocks.remove("n1");
        check(&no_block, &me, Reason::NoBlock);
        // Without a shim, no block is needed.
        no_block.spec.macvlan.as_mut().expect("macvlan").host_shim = false;
        assert!(plan_one(&no_block, &me).1.is_ok());

        let mut unallocated = lan(true, None);
        unallocated.status.subnets.clear();
        check(&unallocated, &me, Reason::NotAllocated);

        let mut no_vlan = me.clone();
        no_vlan.capabilities.vlan = false;
        check(&lan(true, Some(10)), &no_vlan, Reason::Unsupported);

        let mut no_macvlan = me.clone();
        no_macvlan.capabilities.macvlan = false;
        check(&lan(false, None), &no_macvlan, Reason::Unsupported);

        let mut passthru = lan(true, None);
        passthru.spec.macvlan.as_mut().expect("macvlan").mode = weft_api::MacvlanMode::Passthru;
        check(&passthru, &me, Reason::InvalidSpec);

        let mut no_options = lan(false, None);
        no_options.spec.macvlan = None;
        check(&no_options, &me, Reason::InvalidSpec);

        let mut full = lan(true, None);
        full.spec.ipam = Some(weft_api::IpamSpec {
            excluded_ranges: Some(vec!["192.168.50.0/28".into()]),
            ..Default::default()
        });
        check(&full, &me, Reason::NoAddress);

        let mut bad_excluded = lan(true, None);
        bad_excluded.spec.ipam = Some(weft_api::IpamSpec {
            excluded_ranges: Some(vec!["nope".into()]),
            ..Default::default()
        });
        check(&bad_excluded, &me, Reason::InvalidSpec);
    }
}
