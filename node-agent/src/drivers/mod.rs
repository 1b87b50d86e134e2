//! One file per network driver, behind one trait ([`Driver`]) that covers the driver's
//! whole life on a node: the network's own kernel objects and what each endpoint gets (its
//! address space, its link in the sandbox, whether the node routes it). Adding a driver is
//! a file here and a line in [`driver_for`].
//!
//! [`contract`] holds what drivers are given and answer, [`common`] what several drivers
//! read the same way; this module is the registry. Driver files import from those two (and
//! from each other), never from here, so nothing points back up.

pub mod bridge;
pub mod common;
pub mod contract;
pub mod host;
pub mod ipvlan;
pub mod macvlan;
pub mod none;
pub mod overlay;
mod parent;
#[cfg(test)]
pub(crate) mod testutil;
pub mod wireguard;

pub use common::{MIN_MTU, gateway_addresses};
pub use contract::*;

/// The driver of a network: the one place that names every driver.
pub fn driver_for(driver: weft_api::Driver) -> &'static dyn Driver {
    match driver {
        weft_api::Driver::Bridge => &bridge::Bridge,
        weft_api::Driver::Overlay => &overlay::Overlay,
        weft_api::Driver::Macvlan => &macvlan::Macvlan,
        weft_api::Driver::Ipvlan => &ipvlan::Ipvlan,
        weft_api::Driver::Host => &host::Host,
        weft_api::Driver::None => &none::NoneDriver,
    }
}

/// The driver of `net`.
pub fn of(net: &NetworkInput) -> &'static dyn Driver {
    driver_for(net.spec.driver)
}

/// The endpoint side of every driver, from the same inputs the node side gets.
#[cfg(test)]
mod tests {
    use weft_api::Driver as ApiDriver;

    use super::testutil::*;
    use super::*;
    use crate::kernel::EndpointLink;
    use crate::model::{IpvlanMode, KernelState, MacvlanMode};

    fn host() -> HostSide {
        HostSide {
            interface: "wfe000000000001".into(),
            alias: "weft-ep:default/a".into(),
        }
    }

    /// The network allocated, with node n1's block for cluster-scope drivers.
    fn allocated(driver: ApiDriver) -> NetworkInput {
        let mut n = network("net", driver);
        if driver.has_addresses() {
            allocate(&mut n, &["10.1.0.0/24"], None);
        }
        if driver.is_cluster_scope() {
            give_blocks(&mut n, &[("n1", "192.0.2.1", "10.1.0.16/28")]);
        }
        n.status.vni = Some(42);
        n
    }

    fn planned(net: &NetworkInput) -> KernelState {
        let (state, intent) = plan_one(net, &node("n1", "192.0.2.1"));
        assert!(intent.is_ok(), "{intent:?}");
        state
    }

    #[test]
    fn shapes_say_who_is_routed_who_has_a_mac_and_who_has_nothing() {
        let shape = |d| driver_for(d).endpoint_shape();
        assert_eq!(shape(ApiDriver::Bridge), EndpointShape::Routed);
        assert_eq!(shape(ApiDriver::Overlay), EndpointShape::Routed);
        assert_eq!(
            shape(ApiDriver::Macvlan),
            EndpointShape::Child { own_mac: true }
        );
        assert_eq!(
            shape(ApiDriver::Ipvlan),
            EndpointShape::Child { own_mac: false }
        );
        assert_eq!(shape(ApiDriver::Host), EndpointShape::SharesNode);
        assert_eq!(shape(ApiDriver::None), EndpointShape::LoopbackOnly);
        for d in [
            ApiDriver::Bridge,
            ApiDriver::Overlay,
            ApiDriver::Macvlan,
            ApiDriver::Ipvlan,
            ApiDriver::Host,
            ApiDriver::None,
        ] {
            // The API's own notion of "has addresses" and the driver's shape agree.
            assert_eq!(shape(d).has_interface(), d.has_addresses(), "{d:?}");
            assert_eq!(
                shape(d).routed(),
                matches!(d, ApiDriver::Bridge | ApiDriver::Overlay)
            );
        }
    }

    #[test]
    fn address_spaces_per_driver() {
        let me = node("n1", "192.0.2.1");
        let space = |d| {
            let n = allocated(d);
            driver_for(d).address_space(&n, &me)
        };
        // bridge: the whole subnet, gateway = first host.
        let bridge = space(ApiDriver::Bridge).expect("ok").expect("some");
        assert_eq!(bridge.range, cidr("10.1.0.0/24"));
        assert_eq!(bridge.gateway, Some(ip("10.1.0.1")));
        assert_eq!(bridge.reserved, vec![cidr("10.1.0.1/32")]);
        // overlay: the node's block of the subnet, same gateway on every node.
        let overlay = space(ApiDriver::Overlay).expect("ok").expect("some");
        assert_eq!(
            (overlay.subnet, overlay.range, overlay.gateway),
            (
                cidr("10.1.0.0/24"),
                cidr("10.1.0.16/28"),
                Some(ip("10.1.0.1"))
            )
        );
        // macvlan/ipvlan: the node's block, no gateway unless the controller set one.
        for d in [ApiDriver::Macvlan, ApiDriver::Ipvlan] {
            let s = space(d).expect("ok").expect("some");
            assert_eq!((s.range, s.gateway), (cidr("10.1.0.16/28"), None), "{d:?}");
            assert!(s.reserved.is_empty());
        }
        // host/none: no addresses at all.
        assert_eq!(space(ApiDriver::Host), Ok(None));
        assert_eq!(space(ApiDriver::None), Ok(None));
        // Not allocated yet: the driver says so.
        let bare = network("net", ApiDriver::Bridge);
        let p = driver_for(ApiDriver::Bridge)
            .address_space(&bare, &me)
            .expect_err("not allocated");
        assert_eq!(p.reason, Reason::NotAllocated);
    }

    #[test]
    fn a_macvlan_host_shim_address_is_never_handed_out() {
        let mut n = allocated(ApiDriver::Macvlan);
        if let Some(m) = n.spec.macvlan.as_mut() {
            m.host_shim = true;
        }
        let s = driver_for(ApiDriver::Macvlan)
            .address_space(&n, &node("n1", "192.0.2.1"))
            .expect("ok")
            .expect("some");
        assert_eq!(s.reserved, vec![cidr("10.1.0.16/32")]);
    }

    #[test]
    fn sandbox_links_per_driver_once_the_node_side_is_planned() {
        let me = node("n1", "192.0.2.1");
        let link = |net: &NetworkInput, desired: &KernelState| {
            of(net).sandbox_link(net, &me, desired, &host())
        };
        for d in [ApiDriver::Bridge, ApiDriver::Overlay] {
            let n = allocated(d);
            let desired = planned(&n);
            let got = link(&n, &desired).expect("bridge planned");
            assert_eq!(
                got.link,
                EndpointLink::Veth {
                    host: host().interface,
                    host_alias: host().alias,
                    bridge: crate::names::bridge("net"),
                    hairpin: true,
                },
                "{d:?}"
            );
            assert_eq!(
                got.mtu,
                desired.links[&crate::names::bridge("net")].mtu,
                "the bridge's MTU"
            );
            // Before the node's bridge is planned: not ready.
            let p = link(&n, &KernelState::default()).expect_err("no bridge");
            assert_eq!(p.reason, Reason::NetworkNotReady);
        }
        let mut mac = allocated(ApiDriver::Macvlan);
        mac.spec.mtu = Some(1400);
        let got = link(&mac, &KernelState::default()).expect("eth1 exists");
        assert_eq!(
            got.link,
            EndpointLink::Macvlan {
                parent: "eth1".into(),
                mode: MacvlanMode::Bridge
            }
        );
        assert_eq!(got.mtu, Some(1400));
        let ipv = allocated(ApiDriver::Ipvlan);
        assert_eq!(
            link(&ipv, &KernelState::default()).expect("eth1").link,
            EndpointLink::Ipvlan {
                parent: "eth1".into(),
                mode: IpvlanMode::L2
            }
        );
        // A parent that is neither on the node nor planned: not ready.
        let mut gone = allocated(ApiDriver::Ipvlan);
        if let Some(o) = gone.spec.ipvlan.as_mut() {
            o.parent = "eth9".into();
        }
        assert_eq!(
            link(&gone, &KernelState::default()).map_err(|p| p.reason),
            Err(Reason::NetworkNotReady)
        );
        // A VLAN parent is the planned sub-interface.
        let mut tagged = allocated(ApiDriver::Macvlan);
        if let Some(o) = tagged.spec.macvlan.as_mut() {
            o.vlan = Some(10);
        }
        let desired = planned(&tagged);
        assert!(matches!(
            link(&tagged, &desired).expect("eth1.10 planned").link,
            EndpointLink::Macvlan { parent, .. } if parent == "eth1.10"
        ));
        for d in [ApiDriver::Host, ApiDriver::None] {
            let n = allocated(d);
            assert_eq!(
                link(&n, &KernelState::default())
                    .expect("nothing needed")
                    .link,
                EndpointLink::LoopbackOnly
            );
        }
    }

    #[test]
    fn only_the_overlay_needs_entries_for_other_nodes_endpoints() {
        let remote = [RemoteEndpoint {
            network: "net".into(),
            node: "n2".into(),
            address: ip("10.1.0.33"),
            mac: crate::model::Mac([2, 0x42, 10, 1, 0, 33]),
        }];
        let peers = [("n2".to_string(), ip("192.0.2.2"))].into();
        let overlay = allocated(ApiDriver::Overlay);
        let desired = planned(&overlay);
        let (fdb, neighbours) = of(&overlay).remote_entries(&overlay, &remote, &peers, &desired);
        assert_eq!(fdb.len(), 1);
        assert_eq!(fdb[0].dst, ip("192.0.2.2"));
        assert_eq!(neighbours[0].ip, ip("10.1.0.33"));
        // Without the VXLAN device planned, or for any other driver: nothing.
        let none = of(&overlay).remote_entries(&overlay, &remote, &peers, &KernelState::default());
        assert_eq!(none, (vec![], vec![]));
        let bridge = allocated(ApiDriver::Bridge);
        let desired = planned(&bridge);
        assert_eq!(
            of(&bridge).remote_entries(&bridge, &remote, &peers, &desired),
            (vec![], vec![])
        );
    }
}
