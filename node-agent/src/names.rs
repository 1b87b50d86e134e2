//! Kernel names of Weft's objects: a fixed prefix plus a short stable hash of the network
//! name, so they fit Linux's 15-byte limit and never collide with foreign interfaces.

/// Prefix of every link name Weft creates (besides `parent.VID` sub-interfaces, which Linux
/// users expect under that name and which Weft recognises by alias instead).
pub const LINK_PREFIX: &str = "wf";

/// 32-bit FNV-1a: tiny, stable across versions and platforms (std's hasher is neither).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Stable 8-hex-digit tag of a network.
pub fn network_tag(network: &str) -> String {
    format!("{:08x}", fnv1a(network))
}

/// The bridge of a network: `wfb-1a2b3c4d` (12 bytes).
pub fn bridge(network: &str) -> String {
    format!("{LINK_PREFIX}b-{}", network_tag(network))
}

/// The VXLAN device of an overlay network: `wfx-1a2b3c4d`.
pub fn vxlan(network: &str) -> String {
    format!("{LINK_PREFIX}x-{}", network_tag(network))
}

/// The host shim of a macvlan network: `wfs-1a2b3c4d`.
pub fn shim(network: &str) -> String {
    format!("{LINK_PREFIX}s-{}", network_tag(network))
}

/// The name a sandbox's macvlan/ipvlan child is created under before it is renamed to its
/// interface name there: `wft` + a hash of the sandbox and the name (11 bytes), which no node
/// interface carries (see `kernel/endpoint.rs` for why the detour).
pub fn temporary_child(sandbox: &str, if_name: &str) -> String {
    format!(
        "{LINK_PREFIX}t{:08x}",
        fnv1a(&format!("{sandbox}\0{if_name}"))
    )
}

/// An 802.1Q sub-interface, named the way Linux users expect: `eth0.10`.
pub fn vlan(parent: &str, id: u16) -> String {
    format!("{parent}.{id}")
}

/// 64-bit FNV-1a: tiny and stable across Rust versions and platforms (std's hasher is
/// neither). Used for nft rule ids and the overlay's anycast gateway MAC.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit_and_are_stable() {
        let long = "a-network-name-that-is-much-longer-than-fifteen-bytes";
        for n in [bridge(long), vxlan(long), shim(long)] {
            assert!(n.len() <= 15, "{n}");
            assert!(n.starts_with(LINK_PREFIX));
        }
        // Pinned: a change would orphan every bridge on every node after an upgrade.
        assert_eq!(bridge("frontend"), format!("wfb-{:08x}", fnv1a("frontend")));
        assert_eq!(network_tag("frontend"), network_tag("frontend"));
        assert_ne!(network_tag("frontend"), network_tag("backend"));
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
        assert_eq!(fnv1a("foobar"), 0xbf9c_f968);
    }
}
