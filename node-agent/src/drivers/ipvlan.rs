//! `ipvlan`: Docker's ipvlan driver, cluster scope. Endpoints are ipvlan interfaces on a
//! parent and share its MAC. The planner creates the 802.1Q sub-interface when `vlan` is
//! set (see [`super::parent`]).
//!
//! - **L2**: the children are on the parent's LAN; the node routes nothing and, as with
//!   Docker, cannot reach its own children.
//! - **L3** (and L3s): the children are NOARP devices whose packets the *node's* routing
//!   table forwards out of the parent (the kernel routes an L3 child's egress in the
//!   parent's namespace, with the parent as output interface), and the parent hands them
//!   incoming packets by destination address. So the node needs: a host shim (an ipvlan of
//!   its own in L3 mode on the same parent, with the first free address of its block and a
//!   route to the block, as Docker's and Cilium's ipvlan L3 setups have), through which it
//!   reaches its children and they reach it; and, for the other nodes' blocks, a route via
//!   that node's underlay address out of the parent — only when the parent is the node's
//!   underlay interface (the peers' underlay addresses are on that segment then; on another
//!   parent the LAN's router has to carry the blocks, as Docker documents). An L3 child
//!   never answers ARP, so without those routes children on two nodes do not meet even
//!   inside one subnet.

use ipnet::IpNet;

use crate::kernel::EndpointLink;
use crate::model::{IpvlanMode, KernelState, LinkKind, Route};

use super::common::{endpoint_mtu, optional_mtu, require};
use super::contract::{
    AddressSpace, Driver, EndpointShape, FirewallIntent, HostSide, NetworkInput, NodeFacts,
    Problem, Reason, SandboxLink,
};
use super::macvlan::{HostShim, space_with_shim};
use super::parent;

/// The ipvlan driver.
pub struct Ipvlan;

impl Driver for Ipvlan {
    fn plan(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        out: &mut KernelState,
    ) -> Result<FirewallIntent, Problem> {
        require(node.capabilities.ipvlan, || {
            "this kernel has no ipvlan support".to_string()
        })?;
        let options = net.spec.ipvlan.as_ref().ok_or_else(|| {
            Problem::new(
                Reason::InvalidSpec,
                format!("network {} has driver ipvlan but no spec.ipvlan", net.name),
            )
        })?;
        let mtu = optional_mtu(net)?;
        let parent = parent::resolve(net, node, &options.parent, options.vlan, mtu)?;
        let mode = kernel_mode(options.mode);
        let l3 = mode != IpvlanMode::L2;
        // The shim in the children's own mode: the kernel keeps one mode per parent and a
        // new child of another mode would switch every child to it.
        let shim = if l3 {
            Some(HostShim::plan(
                net,
                node,
                mtu,
                LinkKind::Ipvlan {
                    parent: parent.name.clone(),
                    mode,
                },
            )?)
        } else {
            None
        };
        if l3 && node.underlay_interface.as_deref() == Some(parent.name.as_str()) {
            out.routes.extend(peer_routes(net, node, &parent.name));
        }
        if let Some(link) = parent.vlan_link {
            out.links.insert(link.name.clone(), link);
        }
        if let Some(shim) = shim {
            shim.add_to(out);
        }
        Ok(FirewallIntent::none(&net.name))
    }

    /// Children share the parent's MAC.
    fn endpoint_shape(&self) -> EndpointShape {
        EndpointShape::Child { own_mac: false }
    }

    /// This node's block, without a default gateway (the LAN has its own router); in L3
    /// mode with the host shim's address reserved.
    fn address_space(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
    ) -> Result<Option<AddressSpace>, Problem> {
        let l3 = net
            .spec
            .ipvlan
            .as_ref()
            .is_some_and(|o| kernel_mode(o.mode) != IpvlanMode::L2);
        space_with_shim(net, node, l3).map(Some)
    }

    fn sandbox_link(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        desired_node: &KernelState,
        _host: &HostSide,
    ) -> Result<SandboxLink, Problem> {
        let options = net.spec.ipvlan.as_ref();
        let parent = parent::for_endpoint(
            net,
            node,
            desired_node,
            options.map(|o| (o.parent.as_str(), o.vlan)),
        )?;
        let mode = options.map_or(IpvlanMode::L2, |o| kernel_mode(o.mode));
        Ok(SandboxLink {
            link: EndpointLink::Ipvlan { parent, mode },
            mtu: endpoint_mtu(net),
        })
    }
}

fn kernel_mode(mode: weft_api::IpvlanMode) -> IpvlanMode {
    match mode {
        weft_api::IpvlanMode::L3 => IpvlanMode::L3,
        weft_api::IpvlanMode::L3s => IpvlanMode::L3s,
        weft_api::IpvlanMode::L2 => IpvlanMode::L2,
    }
}

/// L3: each other node's block via that node's underlay address, out of `parent`.
fn peer_routes(net: &NetworkInput, node: &NodeFacts, parent: &str) -> Vec<Route> {
    net.peers
        .iter()
        .filter(|p| p.node != node.node_name && p.underlay_address != node.underlay_address)
        .filter_map(|p| {
            let block: IpNet = *net.blocks.get(&p.node)?;
            (block.addr().is_ipv4() == p.underlay_address.is_ipv4()).then(|| Route {
                destination: block.trunc(),
                link: parent.to_string(),
                gateway: Some(p.underlay_address),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::testutil::*;
    use crate::model::{Link, LinkKind};

    fn l2(vlan: Option<i32>) -> NetworkInput {
        let mut n = network("l2", weft_api::Driver::Ipvlan);
        n.spec.ipvlan = Some(weft_api::IpvlanOptions {
            parent: "eth1".into(),
            mode: weft_api::IpvlanMode::L2,
            vlan,
        });
        allocate(&mut n, &["192.168.60.0/24"], Some("192.168.60.1"));
        n
    }

    #[test]
    fn nothing_without_vlan() {
        let (state, intent) = plan_one(&l2(None), &node("n1", "192.0.2.1"));
        assert_eq!(intent, Ok(FirewallIntent::none("l2")));
        assert_eq!(state, KernelState::default());
    }

    #[test]
    fn vlan_sub_interface_only() {
        let (state, intent) = plan_one(&l2(Some(20)), &node("n1", "192.0.2.1"));
        assert!(intent.is_ok());
        assert_eq!(
            state.links.values().cloned().collect::<Vec<_>>(),
            vec![Link {
                name: "eth1.20".into(),
                alias: "weft:l2".into(),
                kind: LinkKind::Vlan {
                    parent: "eth1".into(),
                    id: 20
                },
                mtu: None,
                master: None,
                up: true,
                mac: None,
            }]
        );
        assert!(state.addresses.is_empty() && state.routes.is_empty() && state.fdb.is_empty());
    }

    fn l3(parent: &str) -> NetworkInput {
        let mut n = l2(None);
        n.spec.ipvlan = Some(weft_api::IpvlanOptions {
            parent: parent.into(),
            mode: weft_api::IpvlanMode::L3,
            vlan: None,
        });
        give_blocks(
            &mut n,
            &[
                ("n1", "192.0.2.1", "192.168.60.0/28"),
                ("n2", "192.0.2.2", "192.168.60.16/28"),
                ("n3", "192.0.2.3", "192.168.60.32/28"),
            ],
        );
        n
    }

    #[test]
    fn l3_gets_a_host_shim_and_routes_to_the_other_nodes_blocks() {
        let (state, intent) = plan_one(&l3("eth0"), &node("n1", "192.0.2.1"));
        assert!(intent.is_ok(), "{intent:?}");
        let shim = crate::names::shim("l2");
        assert_eq!(
            state.links[&shim].kind,
            LinkKind::Ipvlan {
                parent: "eth0".into(),
                mode: IpvlanMode::L3
            }
        );
        assert_eq!(
            state
                .addresses
                .iter()
                .map(|a| (a.link.clone(), a.address))
                .collect::<Vec<_>>(),
            // The block's first address: .0 is the subnet's own, .1 the gateway.
            vec![(shim.clone(), cidr("192.168.60.2/32"))]
        );
        let route = |dst: &str, link: &str, via: Option<&str>| Route {
            destination: cidr(dst),
            link: link.into(),
            gateway: via.map(ip),
        };
        assert_eq!(
            state.routes.iter().cloned().collect::<Vec<_>>(),
            vec![
                route("192.168.60.0/28", &shim, None),
                route("192.168.60.16/28", "eth0", Some("192.0.2.2")),
                route("192.168.60.32/28", "eth0", Some("192.0.2.3")),
            ]
        );
        // The shim's address is never handed out.
        let space = Ipvlan
            .address_space(&l3("eth0"), &node("n1", "192.0.2.1"))
            .expect("space")
            .expect("some");
        assert!(space.reserved.contains(&cidr("192.168.60.2/32")));

        // On a parent that is not the underlay, the LAN's router carries the blocks.
        let (state, _) = plan_one(&l3("eth1"), &node("n1", "192.0.2.1"));
        assert_eq!(state.routes.len(), 1);
        // L2 gets neither.
        let (state, _) = plan_one(&l2(None), &node("n1", "192.0.2.1"));
        assert!(state.links.is_empty() && state.routes.is_empty());
    }

    #[test]
    fn l3s_shim_keeps_the_childrens_mode() {
        let mut n = l3("eth0");
        n.spec.ipvlan.as_mut().expect("ipvlan").mode = weft_api::IpvlanMode::L3s;
        let (state, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        assert_eq!(
            state.links[&crate::names::shim("l2")].kind,
            LinkKind::Ipvlan {
                parent: "eth0".into(),
                mode: IpvlanMode::L3s
            }
        );
    }

    #[test]
    fn problems_add_nothing() {
        let me = node("n1", "192.0.2.1");
        let mut no_ipvlan = me.clone();
        no_ipvlan.capabilities.ipvlan = false;
        let (state, intent) = plan_one(&l2(Some(20)), &no_ipvlan);
        assert_eq!(
            intent,
            Err(Problem::new(
                Reason::Unsupported,
                "this kernel has no ipvlan support"
            ))
        );
        assert_eq!(state, KernelState::default());

        let mut missing = l2(Some(20));
        missing.spec.ipvlan.as_mut().expect("ipvlan").parent = "bond0".into();
        let (state, intent) = plan_one(&missing, &me);
        assert_eq!(intent.map_err(|p| p.reason), Err(Reason::ParentMissing));
        assert_eq!(state, KernelState::default());

        let mut no_vlan = me.clone();
        no_vlan.capabilities.vlan = false;
        let (state, intent) = plan_one(&l2(Some(20)), &no_vlan);
        assert_eq!(intent.map_err(|p| p.reason), Err(Reason::Unsupported));
        assert_eq!(state, KernelState::default());
    }
}
