//! `ipvlan`: Docker's ipvlan driver, cluster scope. Endpoints are ipvlan interfaces on a
//! parent and share its MAC. Like macvlan, the node routes nothing; the planner creates
//! only the 802.1Q sub-interface when `vlan` is set (see [`super::parent`]). There is no
//! host shim: in L2 mode the parent cannot reach its children either, but the usual
//! ipvlan answer (an ipvlan of the host in L3 mode) is left for later.

use crate::kernel::EndpointLink;
use crate::model::{IpvlanMode, KernelState};

use super::common::{Scope, address_space, endpoint_mtu, optional_mtu, require};
use super::contract::{
    AddressSpace, Driver, EndpointShape, FirewallIntent, HostSide, NetworkInput, NodeFacts,
    Problem, Reason, SandboxLink,
};
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
        if let Some(link) = parent.vlan_link {
            out.links.insert(link.name.clone(), link);
        }
        Ok(FirewallIntent::none(&net.name))
    }

    /// Children share the parent's MAC.
    fn endpoint_shape(&self) -> EndpointShape {
        EndpointShape::Child { own_mac: false }
    }

    /// This node's block, without a default gateway (the LAN has its own router).
    fn address_space(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
    ) -> Result<Option<AddressSpace>, Problem> {
        address_space(net, node, Scope::NodeBlock, false).map(Some)
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
        let mode = match options.map(|m| m.mode) {
            Some(weft_api::IpvlanMode::L3) => IpvlanMode::L3,
            Some(weft_api::IpvlanMode::L3s) => IpvlanMode::L3s,
            _ => IpvlanMode::L2,
        };
        Ok(SandboxLink {
            link: EndpointLink::Ipvlan { parent, mode },
            mtu: endpoint_mtu(net),
        })
    }
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
