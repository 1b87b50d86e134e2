//! Address arithmetic: a CIDR seen as a closed interval of integers.
//!
//! IPv4 and IPv6 addresses both map to `u128`, so the family travels with every
//! interval: a v4 net and a v6 net never overlap even when their numbers do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The address family of a net or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_addr(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub const fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// Longest prefix a network's subnet may have. A v4 /30 still leaves room
    /// for a gateway and one endpoint next to the network and broadcast
    /// addresses; /124 is the IPv6 equivalent Docker also stops at.
    pub const fn max_subnet_prefix(self) -> u8 {
        match self {
            Family::V4 => 30,
            Family::V6 => 124,
        }
    }
}

/// A closed interval `[start, end]` of addresses of one family.
///
/// Ordered by (family, start, end), which is what the allocators' maps rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    pub family: Family,
    pub start: u128,
    pub end: u128,
}

impl Interval {
    /// The addresses of `net`, host bits of its address ignored.
    pub fn of(net: &IpNet) -> Self {
        let family = Family::of(net);
        let start = addr_to_u128(net.network());
        Interval {
            family,
            start,
            end: start | host_mask(family, net.prefix_len()),
        }
    }

    /// The single address `addr`.
    pub fn of_addr(addr: IpAddr) -> Self {
        let value = addr_to_u128(addr);
        Interval {
            family: Family::of_addr(&addr),
            start: value,
            end: value,
        }
    }

    pub fn overlaps(&self, other: &Interval) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }

    pub fn contains(&self, other: &Interval) -> bool {
        self.family == other.family && self.start <= other.start && other.end <= self.end
    }

    /// Number of addresses; saturates for the whole IPv6 space (2^128 does not fit).
    pub fn size(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// The intersection, if any.
    pub fn intersect(&self, other: &Interval) -> Option<Interval> {
        self.overlaps(other).then(|| Interval {
            family: self.family,
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        })
    }

    /// The CIDRs strictly containing this CIDR-shaped interval, largest first.
    /// Two CIDRs either nest or are disjoint, so these plus the CIDRs starting
    /// inside `self` are all the CIDRs that can overlap it.
    pub(crate) fn supernets(self) -> impl Iterator<Item = Interval> {
        let span = self.end - self.start;
        (0..self.family.bits())
            .map(move |prefix_len| host_mask(self.family, prefix_len))
            .take_while(move |&mask| mask > span)
            .map(move |mask| Interval {
                family: self.family,
                start: self.start & !mask,
                end: (self.start & !mask) | mask,
            })
    }
}

pub fn addr_to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address `value` of `family`; `None` if it does not fit the family.
pub fn u128_to_addr(family: Family, value: u128) -> Option<IpAddr> {
    match family {
        Family::V4 => u32::try_from(value)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        Family::V6 => Some(IpAddr::V6(Ipv6Addr::from(value))),
    }
}

/// The host-bit mask of a `/prefix_len` (block size minus one).
pub fn host_mask(family: Family, prefix_len: u8) -> u128 {
    let host_bits = u32::from(family.bits().saturating_sub(prefix_len));
    if host_bits >= u128::BITS {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// The smallest multiple of `mask + 1` that is `>= value`; `None` past the end of the space.
pub fn align_up(value: u128, mask: u128) -> Option<u128> {
    Some(value.checked_add(mask)? & !mask)
}

/// The net `/prefix_len` starting at `start`; `None` if that is no valid net of `family`.
pub fn net_at(family: Family, start: u128, prefix_len: u8) -> Option<IpNet> {
    match u128_to_addr(family, start)? {
        IpAddr::V4(v4) => Ipv4Net::new(v4, prefix_len).ok().map(IpNet::V4),
        IpAddr::V6(v6) => Ipv6Net::new(v6, prefix_len).ok().map(IpNet::V6),
    }
}

/// Whether two nets share at least one address (never across families).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    Interval::of(a).overlaps(&Interval::of(b))
}

/// Whether every address of `inner` is in `outer`.
pub fn contains(outer: &IpNet, inner: &IpNet) -> bool {
    Interval::of(outer).contains(&Interval::of(inner))
}

/// `net` with its host bits cleared, e.g. 10.0.0.5/24 -> 10.0.0.0/24.
pub fn canonical(net: IpNet) -> IpNet {
    net.trunc()
}

/// Canonical nets, duplicates dropped, first occurrence order kept.
pub(crate) fn canonical_list(nets: Vec<IpNet>) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::with_capacity(nets.len());
    for net in nets.into_iter().map(canonical) {
        if !out.contains(&net) {
            out.push(net);
        }
    }
    out
}

/// How many `/inner` blocks fit in a `/outer` net, saturating at `usize::MAX`.
pub fn block_count(outer: u8, inner: u8) -> usize {
    let shift = u32::from(inner.saturating_sub(outer));
    if shift >= usize::BITS {
        usize::MAX
    } else {
        1usize << shift
    }
}

/// The first host address of a net — the default gateway, for the controller and the
/// agents alike: network + 1 (for IPv6 the network address itself is the subnet-router
/// anycast address), except on point-to-point nets, where every address is a host: /31
/// (RFC 3021) and /127 (RFC 6164) start at the network address, /32 and /128 are the
/// address. `None` only if network + 1 would overflow the family (it cannot).
pub fn first_host(net: &IpNet) -> Option<IpAddr> {
    let net = net.trunc();
    let family = Family::of(&net);
    let point_to_point = net.max_prefix_len() - net.prefix_len() <= 1;
    let offset = u128::from(!point_to_point);
    u128_to_addr(family, addr_to_u128(net.network()).checked_add(offset)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn interval_of_v4_and_v6() {
        let v4 = Interval::of(&net("10.0.1.7/24"));
        assert_eq!(v4.family, Family::V4);
        assert_eq!(v4.start, 0x0a00_0100);
        assert_eq!(v4.end, 0x0a00_01ff);
        assert_eq!(v4.size(), 256);

        let v6 = Interval::of(&net("fd00::/120"));
        assert_eq!(v6.family, Family::V6);
        assert_eq!(v6.size(), 256);
        assert_eq!(Interval::of(&net("::/0")).size(), u128::MAX);
    }

    #[test]
    fn families_never_overlap() {
        // ::a00:0/104 has the same numbers as 10.0.0.0/8
        assert!(!overlaps(&net("10.0.0.0/8"), &net("::a00:0/104")));
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.0.0/16")));
        assert!(!overlaps(&net("10.0.0.0/16"), &net("10.1.0.0/16")));
    }

    #[test]
    fn contains_and_intersect() {
        assert!(contains(&net("10.0.0.0/16"), &net("10.0.3.0/24")));
        assert!(!contains(&net("10.0.3.0/24"), &net("10.0.0.0/16")));
        let i = Interval::of(&net("10.0.0.0/16"))
            .intersect(&Interval::of(&net("10.0.3.0/24")))
            .unwrap();
        assert_eq!(i, Interval::of(&net("10.0.3.0/24")));
    }

    #[test]
    fn alignment() {
        let mask = host_mask(Family::V4, 24);
        assert_eq!(mask, 255);
        assert_eq!(align_up(0x0a00_0001, mask), Some(0x0a00_0100));
        assert_eq!(align_up(0x0a00_0100, mask), Some(0x0a00_0100));
        assert_eq!(host_mask(Family::V6, 0), u128::MAX);
        assert_eq!(align_up(1, u128::MAX), None);
        assert_eq!(align_up(u128::MAX, 0xff), None);
    }

    #[test]
    fn net_at_round_trips() {
        assert_eq!(
            net_at(Family::V4, 0x0a00_0100, 24),
            Some(net("10.0.1.0/24"))
        );
        assert_eq!(net_at(Family::V4, 1 << 40, 24), None);
        assert_eq!(net_at(Family::V4, 0, 33), None);
        assert_eq!(
            net_at(Family::V6, 0xfd00 << 112, 64),
            Some(net("fd00::/64"))
        );
    }

    #[test]
    fn supernets_largest_first() {
        let all: Vec<_> = Interval::of(&net("10.0.0.0/30")).supernets().collect();
        assert_eq!(all.len(), 30);
        assert_eq!(all[0], Interval::of(&net("0.0.0.0/0")));
        assert_eq!(all[29], Interval::of(&net("10.0.0.0/29")));
        assert_eq!(Interval::of(&net("::/0")).supernets().count(), 0);
    }

    #[test]
    fn canonical_list_dedupes() {
        let list = canonical_list(vec![
            net("10.0.0.5/24"),
            net("10.0.1.0/24"),
            net("10.0.0.0/24"),
        ]);
        assert_eq!(list, vec![net("10.0.0.0/24"), net("10.0.1.0/24")]);
    }

    #[test]
    fn first_hosts_of_every_size() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("test IP");
        assert_eq!(first_host(&net("10.0.0.0/24")), Some(ip("10.0.0.1")));
        assert_eq!(first_host(&net("10.0.0.7/24")), Some(ip("10.0.0.1")));
        assert_eq!(first_host(&net("10.0.0.4/30")), Some(ip("10.0.0.5")));
        assert_eq!(first_host(&net("10.0.0.4/31")), Some(ip("10.0.0.4")));
        assert_eq!(first_host(&net("10.0.0.4/32")), Some(ip("10.0.0.4")));
        assert_eq!(first_host(&net("fd00:1::/64")), Some(ip("fd00:1::1")));
        assert_eq!(first_host(&net("fd00::/126")), Some(ip("fd00::1")));
        assert_eq!(first_host(&net("fd00::/127")), Some(ip("fd00::")));
        assert_eq!(first_host(&net("fd00::5/128")), Some(ip("fd00::5")));
    }

    #[test]
    fn block_counts() {
        assert_eq!(block_count(16, 24), 256);
        assert_eq!(block_count(24, 24), 1);
        assert_eq!(block_count(0, 128), usize::MAX);
    }
}
