//! `overlay`: Docker's overlay driver, cluster scope. On every node that takes part: a bridge
//! (the subnet's L2 segment on this node) with a VXLAN port that carries the segment to the
//! other nodes.
//!
//! - **Head-end replication**: the VXLAN device learns nothing (`learning: false`); for each
//!   peer node it gets one flood FDB entry (all-zero MAC → the peer's underlay address), so
//!   broadcast, unknown unicast and multicast reach every peer, and no multicast underlay
//!   is needed. Peers joining or leaving change only these entries.
//! - **Anycast gateway**: like EVPN's distributed anycast gateway, every node's bridge holds
//!   the *same* gateway address and the *same* MAC ([`anycast_gateway_mac`]), so an endpoint
//!   keeps a working gateway (and a valid ARP/ND cache entry for it) wherever it runs, and
//!   traffic leaves the overlay at the node the endpoint runs on. Frames that carry the
//!   gateway MAC as source and come in through the VXLAN port are another node's gateway
//!   speaking (ARP replies, ARP/ND requests, IPv6 DAD probes that would otherwise mark the
//!   shared address duplicate): the firewall drops them ([`FirewallIntent::anycast_guard`]),
//!   so each node's gateway stays on its node. The consequence, as with Docker's overlay: a
//!   node reaches the endpoints it hosts through the bridge, not those on other nodes.
//! - **MTU**: the underlay's minus the VXLAN overhead (50 bytes over an IPv4 underlay, 70
//!   over IPv6), unless `spec.mtu` is set; the bridge and the VXLAN device get the same MTU.
//! - **Encrypted** (`spec.overlay.encrypted`): the VXLAN device runs over the node's
//!   WireGuard links ([`super::wireguard`]): no fixed local address and no lower link (the
//!   route of the tunnel prefix into the active key slot's link chooses both, so a key
//!   rotation switches it in one route change), FDB destinations = the peers' current tunnel
//!   addresses, and only peers that published a WireGuard key get any. A node whose kernel has no WireGuard plans nothing of the
//!   network and reports `EncryptionUnavailable` (fail closed: Docker's encrypted overlay
//!   sent clear text in that case, CVE-2023-28840). MTU: underlay − WireGuard (60/80) −
//!   VXLAN over the IPv6 tunnel (70).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use crate::model::{FdbEntry, KernelState, Link, LinkKind, Mac, Neighbour, alias_for};
use crate::names::{self, fnv1a64};

use super::bridge::{RoutedBridge, routed_link};
use super::common::{Scope, address_space, link_mtu, node_block, require};
use super::contract::{
    AddressSpace, AnycastGuard, Driver, EndpointShape, FirewallIntent, HostSide, NetworkInput,
    NodeFacts, Peer, Problem, Reason, RemoteEndpoint, SandboxLink,
};
use super::wireguard;

/// Default UDP port of VXLAN (IANA).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;
/// VXLAN overhead over an IPv4 underlay: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same over an IPv6 underlay (outer IPv6 header 40).
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// The overlay driver.
pub struct Overlay;

impl Driver for Overlay {
    fn plan(
        &self,
        net: &NetworkInput,
        node: &NodeFacts,
        out: &mut KernelState,
    ) -> Result<FirewallIntent, Problem> {
        require(node.capabilities.vxlan, || {
            "this kernel has no VXLAN support".to_string()
        })?;
        require(node.capabilities.bridge, || {
            "this kernel has no bridge support".to_string()
        })?;
        let options = net.spec.overlay.clone().unwrap_or_default();
        let port = u16::try_from(options.udp_port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Problem::new(
                    Reason::InvalidSpec,
                    format!(
                        "spec.overlay.udpPort of network {} is {}; it must be between 1 and 65535",
                        net.name, options.udp_port
                    ),
                )
            })?;
        if options.encrypted && !node.capabilities.wireguard {
            return Err(Problem::new(
                Reason::EncryptionUnavailable,
                format!(
                    "network {} is encrypted and node {} has no WireGuard in its kernel; nothing of the network is sent from or to this node",
                    net.name, node.node_name
                ),
            ));
        }
        let mtu = link_mtu(net, overlay_mtu(node, options.encrypted))?;
        let mac = anycast_gateway_mac(&net.name);
        let bridge = RoutedBridge::plan(net, mtu, Some(mac))?;
        let vni = vni(net)?;
        node_block(net, node)?;

        let vxlan_name = names::vxlan(&net.name);
        // Encrypted: no fixed local address and no lower link; the route of the tunnel
        // prefix picks the active key slot's link, and its address as the source.
        let (local, underlay) = if options.encrypted {
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), None)
        } else {
            (node.underlay_address, node.underlay_interface.clone())
        };
        let vxlan = Link {
            name: vxlan_name.clone(),
            alias: alias_for(&net.name),
            kind: LinkKind::Vxlan {
                vni,
                port,
                local,
                underlay,
                learning: false,
                proxy: true,
            },
            mtu: Some(mtu),
            master: Some(bridge.link.name.clone()),
            up: true,
            mac: None,
        };
        let fdb: Vec<FdbEntry> = net
            .peers
            .iter()
            .filter(|p| p.node != node.node_name && is_reachable(p.underlay_address, node))
            .filter_map(|p| tunnel_destination(net, p))
            .map(|dst| FdbEntry {
                link: vxlan_name.clone(),
                mac: FLOOD_MAC,
                dst,
            })
            .collect();

        let intent = FirewallIntent {
            network: net.name.clone(),
            interface: Some(bridge.link.name.clone()),
            subnets: bridge.subnets.clone(),
            masquerade: !net.spec.internal,
            internal: net.spec.internal,
            isolation: true,
            icc: true,
            // Other nodes' endpoints arrive bridged over VXLAN, not routed: unaffected.
            published_only: true,
            anycast_guard: Some(AnycastGuard {
                port: vxlan_name.clone(),
                mac,
            }),
            tunnel_guard: options.encrypted,
        };
        bridge.add_to(out);
        if options.encrypted {
            wireguard::add_links(
                out,
                &node.node_name,
                node.underlay_address,
                node.underlay_mtu,
                node.wireguard,
            );
        }
        out.links.insert(vxlan_name, vxlan);
        out.fdb.extend(fdb);
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
        address_space(net, node, Scope::NodeBlock, true).map(Some)
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

    /// Static FDB (MAC → peer VTEP) and neighbour (IP → MAC, answered by the VXLAN device's
    /// ARP proxy) entries for other nodes' endpoints.
    fn remote_entries(
        &self,
        net: &NetworkInput,
        remote: &[RemoteEndpoint],
        peers: &BTreeMap<String, IpAddr>,
        desired_node: &KernelState,
    ) -> (Vec<FdbEntry>, Vec<Neighbour>) {
        let mut fdb = Vec::new();
        let mut neighbours = Vec::new();
        let vxlan = names::vxlan(&net.name);
        if !desired_node.links.contains_key(&vxlan) {
            return (fdb, neighbours);
        }
        for r in remote {
            let dst = if is_encrypted(net) {
                net.peers
                    .iter()
                    .find(|p| p.node == r.node)
                    .and_then(|p| tunnel_destination(net, p))
            } else {
                peers.get(&r.node).copied()
            };
            let Some(dst) = dst else {
                continue;
            };
            fdb.push(FdbEntry {
                link: vxlan.clone(),
                mac: r.mac,
                dst,
            });
            neighbours.push(Neighbour {
                link: vxlan.clone(),
                ip: r.address,
                mac: r.mac,
            });
        }
        (fdb, neighbours)
    }
}

/// The all-zero MAC of a flood (head-end replication) FDB entry.
pub const FLOOD_MAC: Mac = Mac([0; 6]);

/// The gateway MAC of an overlay network: the same on every node (and across agent
/// versions), locally administered unicast: `02:57:` + 4 bytes of the FNV-1a-64 hash of
/// the network name.
pub fn anycast_gateway_mac(network: &str) -> Mac {
    let h = fnv1a64(network.as_bytes()).to_be_bytes();
    Mac([0x02, 0x57, h[0], h[1], h[2], h[3]])
}

/// The overlay's default MTU on this node; encrypted, VXLAN runs over the IPv6 tunnel
/// inside WireGuard.
pub fn overlay_mtu(node: &NodeFacts, encrypted: bool) -> u32 {
    let overhead = match (encrypted, node.underlay_address) {
        (true, underlay) => wireguard::overhead(underlay) + VXLAN_OVERHEAD_V6,
        (false, IpAddr::V4(_)) => VXLAN_OVERHEAD_V4,
        (false, IpAddr::V6(_)) => VXLAN_OVERHEAD_V6,
    };
    node.underlay_mtu.saturating_sub(overhead)
}

fn is_encrypted(net: &NetworkInput) -> bool {
    net.spec.overlay.as_ref().is_some_and(|o| o.encrypted)
}

/// Where VXLAN frames for `peer` go: its underlay address, or, encrypted, its tunnel
/// address, and nowhere when it has published no WireGuard key (it cannot decrypt).
fn tunnel_destination(net: &NetworkInput, peer: &Peer) -> Option<IpAddr> {
    if is_encrypted(net) {
        peer.wireguard
            .as_ref()
            .map(|w| IpAddr::V6(w.current.address))
    } else {
        Some(peer.underlay_address)
    }
}

/// A peer is reachable over the tunnel if its address is of the tunnel's family and is
/// not this node's own (nor unspecified).
fn is_reachable(peer: IpAddr, node: &NodeFacts) -> bool {
    peer.is_ipv4() == node.underlay_address.is_ipv4()
        && peer != node.underlay_address
        && !peer.is_unspecified()
}

fn vni(net: &NetworkInput) -> Result<u32, Problem> {
    let vni = net.status.vni.ok_or_else(|| {
        Problem::new(
            Reason::NotAllocated,
            format!(
                "the controller has not allocated a VNI to network {} yet",
                net.name
            ),
        )
    })?;
    u32::try_from(vni)
        .ok()
        .filter(|v| (1..=VNI_MAX).contains(v))
        .ok_or_else(|| {
            Problem::new(
                Reason::InvalidStatus,
                format!(
                    "status.vni of network {} is {vni}; a VNI is between 1 and {VNI_MAX}",
                    net.name
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::testutil::*;
    use crate::model::Address;

    fn overlay(name: &str) -> NetworkInput {
        let mut n = network(name, weft_api::Driver::Overlay);
        allocate(&mut n, &["10.40.0.0/24"], Some("10.40.0.1"));
        n.status.vni = Some(4242);
        give_blocks(
            &mut n,
            &[
                ("n1", "192.0.2.1", "10.40.0.0/28"),
                ("n2", "192.0.2.2", "10.40.0.16/28"),
                ("n3", "192.0.2.3", "10.40.0.32/28"),
            ],
        );
        n
    }

    #[test]
    fn bridge_vxlan_and_one_flood_entry_per_peer() {
        let n = overlay("front");
        let (state, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        let intent = intent.expect("planned");
        let (b, x) = (names::bridge("front"), names::vxlan("front"));
        let mac = anycast_gateway_mac("front");

        assert_eq!(state.links.len(), 2);
        assert_eq!(
            state.links[&b],
            Link {
                name: b.clone(),
                alias: "weft:front".into(),
                kind: LinkKind::Bridge,
                mtu: Some(1450),
                master: None,
                up: true,
                mac: Some(mac),
            }
        );
        assert_eq!(
            state.links[&x],
            Link {
                name: x.clone(),
                alias: "weft:front".into(),
                kind: LinkKind::Vxlan {
                    vni: 4242,
                    port: 4789,
                    local: ip("192.0.2.1"),
                    underlay: Some("eth0".into()),
                    learning: false,
                    proxy: true,
                },
                mtu: Some(1450),
                master: Some(b.clone()),
                up: true,
                mac: None,
            }
        );
        assert_eq!(addresses(&state), vec![(b.clone(), cidr("10.40.0.1/24"))]);
        assert_eq!(
            state.fdb.iter().cloned().collect::<Vec<_>>(),
            vec![
                FdbEntry {
                    link: x.clone(),
                    mac: Mac([0; 6]),
                    dst: ip("192.0.2.2"),
                },
                FdbEntry {
                    link: x.clone(),
                    mac: Mac([0; 6]),
                    dst: ip("192.0.2.3"),
                },
            ]
        );
        assert!(state.routes.is_empty());
        assert_eq!(intent.interface.as_deref(), Some(b.as_str()));
        assert!(intent.masquerade && intent.isolation && intent.icc && !intent.internal);
        assert_eq!(intent.anycast_guard, Some(AnycastGuard { port: x, mac }));
    }

    #[test]
    fn anycast_gateway_is_identical_on_every_node_and_every_call() {
        let n = overlay("front");
        let (s1, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        let (s2, _) = plan_one(&n, &node("n2", "192.0.2.2"));
        let (s1again, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        let b = names::bridge("front");
        assert_eq!(s1.links[&b].mac, s2.links[&b].mac);
        assert_eq!(s1.links[&b].mac, s1again.links[&b].mac);
        let gw = |s: &KernelState| s.addresses.iter().cloned().collect::<Vec<Address>>();
        assert_eq!(gw(&s1), gw(&s2));
        // Locally administered unicast, Weft's 02:57 prefix, pinned across versions.
        let mac = anycast_gateway_mac("front");
        assert_eq!(mac[0] & 0b11, 0b10);
        assert_eq!(mac[..2], [0x02, 0x57]);
        let h = fnv1a64(b"front").to_be_bytes();
        assert_eq!(mac[2..], h[..4]);
        assert_ne!(anycast_gateway_mac("front"), anycast_gateway_mac("back"));
        // Only the local VTEP and the flood list differ between nodes.
        assert_ne!(s1.fdb, s2.fdb);
    }

    #[test]
    fn peers_joining_and_leaving_change_only_fdb() {
        let n = overlay("front");
        let me = node("n1", "192.0.2.1");
        let (before, _) = plan_one(&n, &me);
        let mut joined = n.clone();
        give_blocks(&mut joined, &[("n4", "192.0.2.4", "10.40.0.48/28")]);
        let (after, _) = plan_one(&joined, &me);
        assert_eq!(after.fdb.len(), before.fdb.len() + 1);
        assert_eq!(
            KernelState {
                fdb: Default::default(),
                ..after
            },
            KernelState {
                fdb: Default::default(),
                ..before.clone()
            }
        );

        let mut left = n.clone();
        left.peers.retain(|p| p.node != "n3");
        left.blocks.remove("n3");
        let (after, _) = plan_one(&left, &me);
        assert_eq!(after.fdb.len(), before.fdb.len() - 1);
        assert_eq!(
            KernelState {
                fdb: Default::default(),
                ..after
            },
            KernelState {
                fdb: Default::default(),
                ..before
            }
        );
    }

    #[test]
    fn own_and_foreign_family_peers_are_skipped() {
        let mut n = overlay("front");
        n.peers.push(crate::drivers::Peer {
            node: "n1-again".into(),
            underlay_address: ip("192.0.2.1"),
            wireguard: None,
        });
        n.peers.push(crate::drivers::Peer {
            node: "v6".into(),
            underlay_address: ip("2001:db8::9"),
            wireguard: None,
        });
        n.peers.push(crate::drivers::Peer {
            node: "n2".into(),
            underlay_address: ip("192.0.2.2"),
            wireguard: None,
        });
        let (state, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        let dsts: Vec<IpAddr> = state.fdb.iter().map(|f| f.dst).collect();
        assert_eq!(dsts, vec![ip("192.0.2.2"), ip("192.0.2.3")]);
    }

    #[test]
    fn mtu_is_underlay_minus_overhead_unless_set() {
        let n = overlay("front");
        let mut me = node("n1", "192.0.2.1");
        me.underlay_mtu = 9000;
        let (state, _) = plan_one(&n, &me);
        assert_eq!(state.links[&names::bridge("front")].mtu, Some(8950));
        assert_eq!(state.links[&names::vxlan("front")].mtu, Some(8950));

        let mut v6 = node("n1", "2001:db8::1");
        v6.underlay_mtu = 1500;
        let (state, _) = plan_one(&n, &v6);
        assert_eq!(state.links[&names::vxlan("front")].mtu, Some(1430));

        let mut set = overlay("front");
        set.spec.mtu = Some(1400);
        let (state, _) = plan_one(&set, &me);
        assert_eq!(state.links[&names::bridge("front")].mtu, Some(1400));
        assert_eq!(state.links[&names::vxlan("front")].mtu, Some(1400));
    }

    #[test]
    fn udp_port_from_spec() {
        let mut n = overlay("front");
        n.spec.overlay = Some(weft_api::OverlayOptions {
            vni: None,
            udp_port: 8472,
            encrypted: false,
        });
        let (state, _) = plan_one(&n, &node("n1", "192.0.2.1"));
        match &state.links[&names::vxlan("front")].kind {
            LinkKind::Vxlan { port, .. } => assert_eq!(*port, 8472),
            other => panic!("not vxlan: {other:?}"),
        }
        n.spec.overlay = Some(weft_api::OverlayOptions {
            vni: None,
            udp_port: 70000,
            encrypted: false,
        });
        let (state, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        assert_eq!(intent.map_err(|p| p.reason), Err(Reason::InvalidSpec));
        assert_eq!(state, KernelState::default());
    }

    fn encrypted(name: &str) -> NetworkInput {
        let mut n = overlay(name);
        n.spec.overlay = Some(weft_api::OverlayOptions {
            encrypted: true,
            ..Default::default()
        });
        // n2 has published its WireGuard key, n3 has not (its kernel cannot encrypt).
        for p in &mut n.peers {
            if p.node == "n2" {
                p.wireguard = Some(wireguard::PeerWireguard {
                    current: wireguard::PeerKey {
                        public_key: [2; 32],
                        port: wireguard::DEFAULT_PORT,
                        address: wireguard::tunnel_address("n2", 0),
                    },
                    next: None,
                    retiring: None,
                    acknowledged: Vec::new(),
                });
            }
        }
        n
    }

    #[test]
    fn encrypted_overlay_runs_vxlan_inside_wireguard_and_only_to_keyed_peers() {
        let n = encrypted("secret");
        let (state, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        intent.expect("planned");
        let x = names::vxlan("secret");
        assert_eq!(
            state.links[&x].kind,
            LinkKind::Vxlan {
                vni: 4242,
                port: 4789,
                local: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                underlay: None,
                learning: false,
                proxy: true,
            }
        );
        assert_eq!(state.links["weft-wg0"].kind, LinkKind::Wireguard);
        // The tunnel prefix goes into the active slot's link, nowhere else.
        let routes: Vec<_> = state.routes.iter().map(|r| r.link.as_str()).collect();
        assert_eq!(routes, vec!["weft-wg0"]);
        // 1500 − WireGuard over IPv4 (60) − VXLAN over the IPv6 tunnel (70).
        assert_eq!(state.links[&x].mtu, Some(1370));
        assert_eq!(state.links[&names::bridge("secret")].mtu, Some(1370));
        assert_eq!(state.links["weft-wg0"].mtu, Some(1440));
        // n3 published no key: no flood entry towards it, in clear text or otherwise.
        let dsts: Vec<IpAddr> = state.fdb.iter().map(|f| f.dst).collect();
        assert_eq!(dsts, vec![IpAddr::V6(wireguard::tunnel_address("n2", 0))]);

        let remote = [
            RemoteEndpoint {
                network: "secret".into(),
                node: "n2".into(),
                address: ip("10.40.0.17"),
                mac: Mac([2, 0, 0, 0, 0, 17]),
            },
            RemoteEndpoint {
                network: "secret".into(),
                node: "n3".into(),
                address: ip("10.40.0.33"),
                mac: Mac([2, 0, 0, 0, 0, 33]),
            },
        ];
        let underlays = [
            ("n2".to_string(), ip("192.0.2.2")),
            ("n3".to_string(), ip("192.0.2.3")),
        ]
        .into();
        let (fdb, neighbours) = Overlay.remote_entries(&n, &remote, &underlays, &state);
        assert_eq!(
            fdb,
            vec![FdbEntry {
                link: x.clone(),
                mac: Mac([2, 0, 0, 0, 0, 17]),
                dst: IpAddr::V6(wireguard::tunnel_address("n2", 0)),
            }]
        );
        assert_eq!(neighbours.len(), 1);
    }

    #[test]
    fn encrypted_overlay_on_a_node_without_wireguard_fails_closed() {
        let mut me = node("n1", "192.0.2.1");
        me.capabilities.wireguard = false;
        let (state, intent) = plan_one(&encrypted("secret"), &me);
        assert_eq!(
            intent.map_err(|p| p.reason),
            Err(Reason::EncryptionUnavailable)
        );
        // Nothing of the network: no VXLAN device, no FDB entry, no bridge.
        assert_eq!(state, KernelState::default());
        // A plain overlay on the same node is unaffected.
        let (_, plain) = plan_one(&overlay("front"), &me);
        assert!(plain.is_ok());
    }

    #[test]
    fn two_encrypted_overlays_share_the_wireguard_link() {
        let me = node("n1", "192.0.2.1");
        let mut b = encrypted("secret2");
        b.status.vni = Some(4243);
        b.status.subnets = vec!["10.41.0.0/24".into()];
        b.status.gateway = Some("10.41.0.1".into());
        b.blocks = [("n1".to_string(), cidr("10.41.0.0/28"))].into();
        let (state, outcomes) = crate::plan::plan_node(&[encrypted("secret"), b], &me);
        assert!(outcomes.values().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(
            state
                .links
                .values()
                .filter(|l| l.kind == LinkKind::Wireguard)
                .count(),
            1
        );
    }

    #[test]
    fn internal_overlay_does_not_masquerade() {
        let mut n = overlay("front");
        n.spec.internal = true;
        let (_, intent) = plan_one(&n, &node("n1", "192.0.2.1"));
        let intent = intent.expect("planned");
        assert!(intent.internal && !intent.masquerade);
    }

    #[test]
    fn problems_add_nothing() {
        let me = node("n1", "192.0.2.1");
        let check = |n: &NetworkInput, me: &NodeFacts, want: Reason| {
            let (state, intent) = plan_one(n, me);
            assert_eq!(intent.map_err(|p| p.reason), Err(want));
            assert_eq!(state, KernelState::default());
        };

        let mut no_block = overlay("front");
        no_block.blocks.remove("n1");
        check(&no_block, &me, Reason::NoBlock);

        let mut no_vni = overlay("front");
        no_vni.status.vni = None;
        check(&no_vni, &me, Reason::NotAllocated);

        let mut bad_vni = overlay("front");
        bad_vni.status.vni = Some(1 << 24);
        check(&bad_vni, &me, Reason::InvalidStatus);

        let mut no_subnet = overlay("front");
        no_subnet.status.subnets.clear();
        check(&no_subnet, &me, Reason::NotAllocated);

        let mut no_vxlan = me.clone();
        no_vxlan.capabilities.vxlan = false;
        let (_, intent) = plan_one(&overlay("front"), &no_vxlan);
        assert_eq!(
            intent,
            Err(Problem::new(
                Reason::Unsupported,
                "this kernel has no VXLAN support"
            ))
        );
        check(&overlay("front"), &no_vxlan, Reason::Unsupported);

        let mut tiny = me.clone();
        tiny.underlay_mtu = 600;
        check(&overlay("front"), &tiny, Reason::Unsupported);

        let mut no_wireguard = me.clone();
        no_wireguard.capabilities.wireguard = false;
        check(
            &encrypted("secret"),
            &no_wireguard,
            Reason::EncryptionUnavailable,
        );
    }
}
