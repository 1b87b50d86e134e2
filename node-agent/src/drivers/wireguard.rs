//! The node's WireGuard link for encrypted overlays (pure planning; the keys and peers are
//! set by [`crate::kernel::wireguard`]).
//!
//! One link per node, `weft-wg`, whatever the number of encrypted networks (as flannel,
//! Calico and Cilium do): it carries the VXLAN traffic of every encrypted overlay. Each node
//! has a fixed address inside the tunnel, [`tunnel_address`] (a ULA /64 shared by all
//! nodes, the interface id from the node's name), on `weft-wg` with the /64, so the kernel
//! routes the whole tunnel prefix into WireGuard. An encrypted overlay's VXLAN device uses
//! that address as its local endpoint, the peers' tunnel addresses as its FDB destinations,
//! and is *bound* to `weft-wg` (IFLA_VXLAN_LINK): it can send nowhere else, and the kernel
//! deletes it with `weft-wg`. WireGuard sends a packet only to the peer whose allowed-ips
//! hold its destination (each peer's tunnel address /128) and drops it otherwise, so a
//! tunnel address without a keyed peer gets nothing: fail closed by construction.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

use crate::model::{Address, KernelState, Link, LinkKind, alias_for};
use crate::names::fnv1a64;

/// The node's WireGuard link.
pub const LINK: &str = "weft-wg";
/// Default UDP port `weft-wg` listens on (flannel's is 51820, Calico's 51820; a distinct
/// one lets Weft run beside them).
pub const DEFAULT_PORT: u16 = 51871;
/// The tunnel prefix: a ULA /64 (`fd77:6566:7400::/64`, "weft" in its global id).
pub const TUNNEL_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x6566, 0x7400, 0, 0, 0, 0, 0);
/// WireGuard's overhead over an IPv4 underlay: outer IPv4 20 + UDP 8 + WireGuard header 16
/// + authentication tag 16.
pub const WIREGUARD_OVERHEAD_V4: u32 = 60;
/// The same over an IPv6 underlay (outer header 40).
pub const WIREGUARD_OVERHEAD_V6: u32 = 80;

/// What another node publishes about its WireGuard link (from its `NetworkNode`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerWireguard {
    pub public_key: [u8; 32],
    pub port: u16,
    pub address: Ipv6Addr,
}

impl PeerWireguard {
    /// Parse a node's published identity; `None` for anything malformed (the node is then
    /// treated as one that cannot encrypt: nothing is sent to it).
    pub fn parse(identity: &weft_api::WireguardIdentity) -> Option<Self> {
        let key = decode_key(&identity.public_key)?;
        let port = u16::try_from(identity.port).ok().filter(|p| *p != 0)?;
        let address: Ipv6Addr = identity.address.parse().ok()?;
        Some(Self {
            public_key: key,
            port,
            address,
        })
    }
}

/// The address of node `node` inside the tunnel: [`TUNNEL_PREFIX`] + 64 bits of the
/// FNV-1a-64 hash of its name (stable across restarts and key rotations).
pub fn tunnel_address(node: &str) -> Ipv6Addr {
    let prefix = u128::from(TUNNEL_PREFIX);
    Ipv6Addr::from(prefix | u128::from(fnv1a64(node.as_bytes())))
}

/// WireGuard's overhead on this underlay.
pub fn overhead(underlay: IpAddr) -> u32 {
    match underlay {
        IpAddr::V4(_) => WIREGUARD_OVERHEAD_V4,
        IpAddr::V6(_) => WIREGUARD_OVERHEAD_V6,
    }
}

/// `weft-wg` with the node's tunnel address, added to `out`. The link belongs to no network
/// (alias `weft:`): it exists while some encrypted overlay is planned on the node.
pub fn add_link(out: &mut KernelState, node: &str, underlay: IpAddr, underlay_mtu: u32) {
    out.links.insert(
        LINK.to_string(),
        Link {
            name: LINK.to_string(),
            alias: alias_for(""),
            kind: LinkKind::Wireguard,
            mtu: Some(underlay_mtu.saturating_sub(overhead(underlay))),
            master: None,
            up: true,
            mac: None,
        },
    );
    let prefix = Ipv6Net::new(tunnel_address(node), 64).expect("64 is a valid IPv6 prefix");
    out.addresses.insert(Address {
        link: LINK.to_string(),
        address: IpNet::V6(prefix),
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
    fn tunnel_addresses_are_stable_distinct_and_in_the_prefix() {
        let a = tunnel_address("n1");
        assert_eq!(a, tunnel_address("n1"));
        assert_ne!(a, tunnel_address("n2"));
        assert_eq!(a.segments()[..4], TUNNEL_PREFIX.segments()[..4]);
        assert_eq!(
            u128::from(a) & u128::from(u64::MAX),
            u128::from(fnv1a64(b"n1"))
        );
    }

    #[test]
    fn peers_publishing_garbage_are_not_peers() {
        let good = weft_api::WireguardIdentity {
            public_key: encode_key(&[7; 32]),
            port: 51871,
            address: tunnel_address("n2").to_string(),
        };
        assert_eq!(
            PeerWireguard::parse(&good),
            Some(PeerWireguard {
                public_key: [7; 32],
                port: 51871,
                address: tunnel_address("n2"),
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
    fn the_link_carries_the_tunnel_prefix_and_the_reduced_mtu() {
        let mut out = KernelState::default();
        add_link(&mut out, "n1", "192.0.2.1".parse().unwrap(), 1500);
        assert_eq!(out.links[LINK].mtu, Some(1440));
        assert_eq!(out.links[LINK].kind, LinkKind::Wireguard);
        let addr: Vec<_> = out.addresses.iter().map(|a| a.address).collect();
        assert_eq!(
            addr,
            vec![IpNet::V6(Ipv6Net::new(tunnel_address("n1"), 64).unwrap())]
        );
        let mut v6 = KernelState::default();
        add_link(&mut v6, "n1", "2001:db8::1".parse().unwrap(), 1500);
        assert_eq!(v6.links[LINK].mtu, Some(1420));
    }
}
