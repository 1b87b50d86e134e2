//! The node's WireGuard links for encrypted overlays (pure planning; the keys and peers are
//! set by [`crate::kernel::wireguard`], the rotation is driven by `agent::wireguard`).
//!
//! One link per node and key *generation*, whatever the number of encrypted networks (as
//! flannel, Calico and Cilium have one): it carries the VXLAN traffic of every encrypted
//! overlay. Generations alternate between two slots, `weft-wg0` and `weft-wg1`, each with its
//! own UDP port ([`port`]) and its own address inside the tunnel ([`tunnel_address`]: a ULA
//! /64 shared by all nodes, the interface id from the node's name, its last bit the slot).
//! Outside a key rotation a node has one of them; during one, both (see ARCHITECTURE.md,
//! "Key rotation"). The node's tunnel address of each slot is on that slot's link as a /128,
//! and one route sends the whole tunnel prefix into the *active* slot's link, whose address
//! the kernel then picks as the source (the outgoing interface's address). An encrypted
//! overlay's VXLAN device has no fixed local address and no lower link, so switching the
//! active slot is that one route, replaced in one request; its FDB destinations are the
//! peers' current tunnel addresses. WireGuard sends a packet only to the peer whose allowed
//! IPs hold its destination (each peer key's tunnel address /128) and drops it otherwise,
//! and only the route into a WireGuard link leads to the tunnel prefix: a tunnel address
//! without a keyed peer gets nothing (fail closed).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

use crate::model::{Address, KernelState, Link, LinkKind, Route, alias_for};
use crate::names::fnv1a64;

/// The links of the two key slots.
pub const LINKS: [&str; 2] = ["weft-wg0", "weft-wg1"];
/// What their names start with (and no other link's).
pub const LINK_PREFIX: &str = "weft-wg";
/// UDP port of slot 0's link; slot 1's is the next one (flannel's and Calico's are 51820; a
/// distinct one lets Weft run beside them).
pub const DEFAULT_PORT: u16 = 51871;
/// The tunnel prefix: a ULA /64 (`fd77:6566:7400::/64`, "weft" in its global id).
pub const TUNNEL_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x6566, 0x7400, 0, 0, 0, 0, 0);
/// WireGuard's overhead over an IPv4 underlay: outer IPv4 20 + UDP 8 + WireGuard header 16
/// + authentication tag 16.
pub const WIREGUARD_OVERHEAD_V4: u32 = 60;
/// The same over an IPv6 underlay (outer header 40).
pub const WIREGUARD_OVERHEAD_V6: u32 = 80;

/// Which key slots this node has: the active one (it sends with it) and, during a rotation,
/// the other one too (being introduced, or retiring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    /// 0 or 1.
    pub active: usize,
    pub rotating: bool,
}

impl Slots {
    /// The slots whose links exist, the active one first.
    pub fn present(&self) -> Vec<usize> {
        let mut out = vec![self.active & 1];
        if self.rotating {
            out.push(other(self.active));
        }
        out
    }
}

/// The other slot.
pub fn other(slot: usize) -> usize {
    (slot & 1) ^ 1
}

/// The link of `slot`.
pub fn link(slot: usize) -> &'static str {
    LINKS[slot & 1]
}

/// The UDP port of `slot`'s link.
pub fn port(slot: usize) -> u16 {
    DEFAULT_PORT + (slot & 1) as u16
}

/// Does `desired` hold a WireGuard link of this node?
pub fn planned(desired: &KernelState) -> bool {
    LINKS.iter().any(|l| desired.links.contains_key(*l))
}

/// One WireGuard key another node publishes (from its `NetworkNode`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey {
    pub public_key: [u8; 32],
    pub port: u16,
    pub address: Ipv6Addr,
}

impl PeerKey {
    fn parse(public_key: &str, port: i32, address: &str) -> Option<Self> {
        let public_key = decode_key(public_key)?;
        let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
        let address: Ipv6Addr = address.parse().ok()?;
        Some(Self {
            public_key,
            port,
            address,
        })
    }
}

/// What another node publishes about its WireGuard links (from its `NetworkNode`): the key
/// it sends with (`current`, whose address is its VXLAN endpoint), and during a rotation the
/// key it introduces or the one it retires, and the rotating peers' keys it has configured.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerWireguard {
    pub current: PeerKey,
    pub next: Option<PeerKey>,
    pub retiring: Option<[u8; 32]>,
    pub acknowledged: Vec<[u8; 32]>,
}

impl PeerWireguard {
    /// Parse a node's published identity; `None` for a malformed current key (the node is
    /// then treated as one that cannot encrypt: nothing is sent to it). A malformed `next`
    /// is ignored (the node's rotation then waits), as are malformed acknowledgements.
    pub fn parse(identity: &weft_api::WireguardIdentity) -> Option<Self> {
        let current = PeerKey::parse(&identity.public_key, identity.port, &identity.address)?;
        let next = identity
            .next
            .as_ref()
            .and_then(|n| PeerKey::parse(&n.public_key, n.port, &n.address));
        Some(Self {
            current,
            next,
            retiring: identity.retiring.as_deref().and_then(decode_key),
            acknowledged: identity
                .acknowledged
                .iter()
                .filter_map(|k| decode_key(k))
                .collect(),
        })
    }

    /// In the middle of a key rotation: its peers must acknowledge it.
    pub fn rotating(&self) -> bool {
        self.next.is_some() || self.retiring.is_some()
    }

    /// The keys peers configure for it: the current one and the one being introduced (a
    /// retiring key is no longer sent to, see ARCHITECTURE.md).
    pub fn keys(&self) -> impl Iterator<Item = &PeerKey> {
        std::iter::once(&self.current).chain(self.next.as_ref())
    }
}

/// The address of node `node`'s key slot `slot` inside the tunnel: [`TUNNEL_PREFIX`] + the
/// FNV-1a-64 hash of its name with the last bit replaced by the slot (stable across restarts,
/// alternating across key generations).
pub fn tunnel_address(node: &str, slot: usize) -> Ipv6Addr {
    let prefix = u128::from(TUNNEL_PREFIX);
    let id = (fnv1a64(node.as_bytes()) & !1) | (slot & 1) as u64;
    Ipv6Addr::from(prefix | u128::from(id))
}

/// The whole tunnel prefix.
pub fn tunnel_net() -> Ipv6Net {
    Ipv6Net::new(TUNNEL_PREFIX, 64).expect("64 is a valid IPv6 prefix")
}

/// WireGuard's overhead on this underlay.
pub fn overhead(underlay: IpAddr) -> u32 {
    match underlay {
        IpAddr::V4(_) => WIREGUARD_OVERHEAD_V4,
        IpAddr::V6(_) => WIREGUARD_OVERHEAD_V6,
    }
}

/// The links of `slots`, each with its tunnel address, and the route of the tunnel prefix
/// into the active one, added to `out`. The links belong to no network (alias `weft:`):
/// they exist while some encrypted overlay is planned on the node.
pub fn add_links(
    out: &mut KernelState,
    node: &str,
    underlay: IpAddr,
    underlay_mtu: u32,
    slots: Slots,
) {
    for slot in slots.present() {
        let name = link(slot).to_string();
        out.links.insert(
            name.clone(),
            Link {
                name: name.clone(),
                alias: alias_for(""),
                kind: LinkKind::Wireguard,
                mtu: Some(underlay_mtu.saturating_sub(overhead(underlay))),
                master: None,
                up: true,
                mac: None,
            },
        );
        let host = Ipv6Net::new(tunnel_address(node, slot), 128).expect("128 is a valid prefix");
        out.addresses.insert(Address {
            link: name,
            address: IpNet::V6(host),
        });
    }
    out.routes.insert(Route {
        destination: IpNet::V6(tunnel_net()),
        link: link(slots.active).to_string(),
        gateway: None,
    });
}

/// A WireGuard key in `wg`'s base64 form.
pub fn encode_key(key: &[u8; 32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(44);
    for chunk in key.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The 32 bytes of a base64 WireGuard key; `None` unless it is exactly 44 characters of
/// standard base64 ending in one `=`.
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 44 || bytes[43] != b'=' {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(33);
    for &c in &bytes[..43] {
        bits = (bits << 6) | u64::from(value(c)?);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    // 43 characters = 258 bits: 32 bytes and 2 bits that must be zero.
    if bits != 0 {
        return None;
    }
    out.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_wg_base64() {
        let key = [0u8; 32];
        assert_eq!(
            encode_key(&key),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let text = encode_key(&k);
        assert_eq!(text.len(), 44);
        assert_eq!(decode_key(&text), Some(k));
        // Known vector: bytes 0xff… encode as '/' runs ending in "8=".
        assert_eq!(
            encode_key(&[0xff; 32]),
            "//////////////////////////////////////////8="
        );
        for bad in [
            "",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*=",
            // Non-zero trailing bits.
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=",
        ] {
            assert_eq!(decode_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tunnel_addresses_are_stable_distinct_per_node_and_slot_and_in_the_prefix() {
        let a = tunnel_address("n1", 0);
        assert_eq!(a, tunnel_address("n1", 0));
        assert_ne!(a, tunnel_address("n2", 0));
        assert_ne!(a, tunnel_address("n1", 1));
        assert_eq!(a.segments()[..4], TUNNEL_PREFIX.segments()[..4]);
        assert_eq!(
            u128::from(a) & u128::from(u64::MAX) & !1,
            u128::from(fnv1a64(b"n1")) & !1
        );
        assert_eq!(u128::from(tunnel_address("n1", 1)) & 1, 1);
        assert_eq!(u128::from(tunnel_address("n1", 0)) & 1, 0);
    }

    fn identity(key: u8) -> weft_api::WireguardIdentity {
        weft_api::WireguardIdentity {
            public_key: encode_key(&[key; 32]),
            port: 51871,
            address: tunnel_address("n2", 0).to_string(),
            next: None,
            retiring: None,
            acknowledged: Vec::new(),
        }
    }

    #[test]
    fn peers_publishing_garbage_are_not_peers() {
        let good = identity(7);
        assert_eq!(
            PeerWireguard::parse(&good),
            Some(PeerWireguard {
                current: PeerKey {
                    public_key: [7; 32],
                    port: 51871,
                    address: tunnel_address("n2", 0),
                },
                next: None,
                retiring: None,
                acknowledged: Vec::new(),
            })
        );
        for bad in [
            weft_api::WireguardIdentity {
                public_key: "short".into(),
                ..good.clone()
            },
            weft_api::WireguardIdentity {
                port: 0,
                ..good.clone()
            },
            weft_api::WireguardIdentity {
                port: 70000,
                ..good.clone()
            },
            weft_api::WireguardIdentity {
                address: "10.0.0.1".into(),
                ..good.clone()
            },
        ] {
            assert_eq!(PeerWireguard::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_rotating_peer_offers_its_next_key_and_its_acknowledgements() {
        let mut id = identity(7);
        id.next = Some(weft_api::WireguardKey {
            public_key: encode_key(&[8; 32]),
            port: 51872,
            address: tunnel_address("n2", 1).to_string(),
        });
        id.acknowledged = vec![encode_key(&[3; 32]), "garbage".into()];
        let peer = PeerWireguard::parse(&id).expect("parsed");
        assert!(peer.rotating());
        assert_eq!(peer.acknowledged, vec![[3; 32]]);
        let keys: Vec<_> = peer.keys().map(|k| (k.public_key[0], k.port)).collect();
        assert_eq!(keys, vec![(7, 51871), (8, 51872)]);
        // A malformed next key is no key (the peer's rotation waits), the current one stays.
        id.next.as_mut().expect("next").port = 0;
        let peer = PeerWireguard::parse(&id).expect("parsed");
        assert_eq!(peer.keys().count(), 1);
        // Retiring: rotating, and the retired key is not offered.
        let mut id = identity(7);
        id.retiring = Some(encode_key(&[6; 32]));
        let peer = PeerWireguard::parse(&id).expect("parsed");
        assert!(peer.rotating());
        assert_eq!(peer.keys().count(), 1);
    }

    #[test]
    fn one_link_per_present_slot_and_the_prefix_routed_into_the_active_one() {
        let mut out = KernelState::default();
        add_links(
            &mut out,
            "n1",
            "192.0.2.1".parse().unwrap(),
            1500,
            Slots::default(),
        );
        assert_eq!(out.links.len(), 1);
        assert_eq!(out.links["weft-wg0"].mtu, Some(1440));
        assert_eq!(out.links["weft-wg0"].kind, LinkKind::Wireguard);
        let addr: Vec<_> = out
            .addresses
            .iter()
            .map(|a| (a.link.as_str(), a.address))
            .collect();
        assert_eq!(
            addr,
            vec![(
                "weft-wg0",
                IpNet::V6(Ipv6Net::new(tunnel_address("n1", 0), 128).unwrap())
            )]
        );
        let routes: Vec<_> = out.routes.iter().cloned().collect();
        assert_eq!(
            routes,
            vec![Route {
                destination: "fd77:6566:7400::/64".parse().unwrap(),
                link: "weft-wg0".into(),
                gateway: None,
            }]
        );

        // Rotating to slot 1: both links, each with its own address; the route follows the
        // active slot.
        let mut out = KernelState::default();
        let slots = Slots {
            active: 1,
            rotating: true,
        };
        add_links(&mut out, "n1", "2001:db8::1".parse().unwrap(), 1500, slots);
        assert_eq!(out.links.len(), 2);
        assert_eq!(out.links["weft-wg1"].mtu, Some(1420));
        assert_eq!(out.addresses.len(), 2);
        assert!(out.addresses.contains(&Address {
            link: "weft-wg1".into(),
            address: IpNet::V6(Ipv6Net::new(tunnel_address("n1", 1), 128).unwrap()),
        }));
        let routes: Vec<_> = out.routes.iter().map(|r| r.link.as_str()).collect();
        assert_eq!(routes, vec!["weft-wg1"]);
        assert!(planned(&out));
        assert_eq!(port(0), 51871);
        assert_eq!(port(1), 51872);
        assert_eq!(slots.present(), vec![1, 0]);
    }
}
