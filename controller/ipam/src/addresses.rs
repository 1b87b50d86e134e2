//! Single endpoint addresses inside one block or subnet (used by the node agent).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::occupancy::Occupancy;
use crate::range::{Family, Interval, canonical, u128_to_addr};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("no free address left in {range}")]
    Exhausted { range: IpNet },
    #[error("address {addr} is already in use by {owner}")]
    InUse { addr: IpAddr, owner: String },
    #[error("address {addr} is outside {range}")]
    OutsideRange { addr: IpAddr, range: IpNet },
    #[error("address {addr} is reserved (network, broadcast, gateway or excluded address)")]
    Reserved { addr: IpAddr },
}

/// Hands out addresses of one block or subnet, Docker-like: the lowest free one.
#[derive(Clone, Debug)]
pub struct AddressAllocator {
    /// As given, for messages.
    range: IpNet,
    /// `range` ∩ `subnet`; `None` when they do not meet (nothing to hand out).
    span: Option<Interval>,
    reserved: Occupancy,
    /// Handed out only when asked for by name, never as "the next free" one.
    only_on_request: Occupancy,
    by_addr: BTreeMap<u128, String>,
    by_owner: HashMap<String, u128>,
    /// No address of the span below this is free: a shortcut for the search,
    /// the answer is still "lowest free" whatever the history.
    lowest_maybe_free: u128,
    capacity: u128,
}

impl AddressAllocator {
    /// `range`: the block/subnet to hand out from; `reserved`: never handed out
    /// (gateway, excluded ranges as nets). The network and broadcast address of
    /// a v4 `subnet` and the subnet-router anycast address of a v6 one (its
    /// all-zero host) are never handed out either, except on point-to-point
    /// /31, /32, /127 and /128 subnets which have no such addresses.
    pub fn new(subnet: IpNet, range: IpNet, reserved: Vec<IpNet>) -> Self {
        let subnet = canonical(subnet);
        let span = Interval::of(&subnet).intersect(&Interval::of(&range));
        let mut reserved_space = Occupancy::new();
        if let Some(span) = span {
            let whole = Interval::of(&subnet);
            let point_to_point = subnet.max_prefix_len() - subnet.prefix_len() <= 1;
            if !point_to_point {
                reserved_space.add(Interval {
                    end: whole.start,
                    ..whole
                });
                if Family::of(&subnet) == Family::V4 {
                    reserved_space.add(Interval {
                        start: whole.end,
                        ..whole
                    });
                }
            }
            for net in &reserved {
                if let Some(part) = Interval::of(net).intersect(&span) {
                    reserved_space.add(part);
                }
            }
        }
        let capacity = span.map_or(0, |span| {
            span.size()
                .saturating_sub(reserved_space.covered_within(span))
        });
        AddressAllocator {
            range,
            span,
            reserved: reserved_space,
            only_on_request: Occupancy::new(),
            by_addr: BTreeMap::new(),
            by_owner: HashMap::new(),
            lowest_maybe_free: span.map_or(0, |span| span.start),
            capacity,
        }
    }

    /// Addresses handed out only to an owner that asks for them ([`request`](Self::request)),
    /// never by [`allocate`](Self::allocate): the service range of a subnet, which must stay
    /// free for VIPs without refusing `docker run --ip` of an address in it.
    pub fn only_on_request(mut self, nets: &[IpNet]) -> Self {
        if let Some(span) = self.span {
            for net in nets {
                if let Some(part) = Interval::of(net).intersect(&span) {
                    self.only_on_request.add(part);
                }
            }
        }
        self
    }

    /// The owner's address: the one it has, else the lowest free one.
    pub fn allocate(&mut self, owner: &str) -> Result<IpAddr, AddressError> {
        let exhausted = AddressError::Exhausted { range: self.range };
        let Some(span) = self.span else {
            return Err(exhausted);
        };
        if let Some(&value) = self.by_owner.get(owner) {
            return u128_to_addr(span.family, value).ok_or(exhausted);
        }
        let value = self.lowest_free(span).ok_or_else(|| exhausted.clone())?;
        let addr = u128_to_addr(span.family, value).ok_or(exhausted)?;
        self.lowest_maybe_free = value.saturating_add(1);
        self.hold(owner, value);
        Ok(addr)
    }

    /// Gives `owner` exactly `addr` (dropping any other address it had).
    pub fn request(&mut self, owner: &str, addr: IpAddr) -> Result<IpAddr, AddressError> {
        let value = self.check(owner, addr)?;
        if self.by_owner.get(owner) != Some(&value) {
            self.release(owner);
            self.hold(owner, value);
        }
        Ok(addr)
    }

    /// Loads a recorded address (agent restart); same checks as [`request`](Self::request).
    pub fn restore(&mut self, owner: &str, addr: IpAddr) -> Result<(), AddressError> {
        self.request(owner, addr).map(|_| ())
    }

    pub fn release(&mut self, owner: &str) {
        if let Some(value) = self.by_owner.remove(owner) {
            self.by_addr.remove(&value);
            self.lowest_maybe_free = self.lowest_maybe_free.min(value);
        }
    }

    /// The owner's address, if it has one.
    pub fn get(&self, owner: &str) -> Option<IpAddr> {
        let span = self.span?;
        let value = *self.by_owner.get(owner)?;
        u128_to_addr(span.family, value)
    }

    pub fn in_use(&self) -> usize {
        self.by_owner.len()
    }

    /// Every owner with its address, in address order.
    pub fn owners(&self) -> impl Iterator<Item = (String, IpAddr)> + '_ {
        self.by_addr.iter().filter_map(|(value, owner)| {
            let family = self.span?.family;
            Some((owner.clone(), u128_to_addr(family, *value)?))
        })
    }

    /// How many addresses can be handed out in total (reserved ones not counted).
    pub fn capacity(&self) -> u128 {
        self.capacity
    }

    /// Why `owner` may not have `addr`, if anything; else its number.
    fn check(&self, owner: &str, addr: IpAddr) -> Result<u128, AddressError> {
        let at = Interval::of_addr(addr);
        let outside = AddressError::OutsideRange {
            addr,
            range: self.range,
        };
        let span = self.span.ok_or_else(|| outside.clone())?;
        if !span.contains(&at) {
            return Err(outside);
        }
        if !self.reserved.is_free(at) {
            return Err(AddressError::Reserved { addr });
        }
        match self.by_addr.get(&at.start) {
            Some(holder) if holder != owner => Err(AddressError::InUse {
                addr,
                owner: holder.clone(),
            }),
            _ => Ok(at.start),
        }
    }

    fn lowest_free(&self, span: Interval) -> Option<u128> {
        let mut candidate = self.lowest_maybe_free.max(span.start);
        loop {
            if candidate > span.end {
                return None;
            }
            let here = Interval {
                start: candidate,
                end: candidate,
                ..span
            };
            if let Some(end) = self.reserved.last_overlap_end(here) {
                candidate = end.checked_add(1)?;
                continue;
            }
            if let Some(end) = self.only_on_request.last_overlap_end(here) {
                candidate = end.checked_add(1)?;
                continue;
            }
            let before = candidate;
            for (&taken, _) in self.by_addr.range(candidate..) {
                if taken != candidate {
                    break;
                }
                candidate = candidate.checked_add(1)?;
            }
            if candidate == before {
                return Some(candidate);
            }
        }
    }

    fn hold(&mut self, owner: &str, value: u128) {
        self.by_addr.insert(value, owner.to_owned());
        self.by_owner.insert(owner.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_kept_for_requests_are_never_the_next_free_but_can_be_asked_for() {
        let subnet = net("10.0.0.0/28");
        let mut addrs = AddressAllocator::new(subnet, subnet, vec![net("10.0.0.1/32")])
            .only_on_request(&[net("10.0.0.12/30")]);
        let got: Vec<IpAddr> = (0..9)
            .map(|i| addrs.allocate(&format!("ep{i}")).unwrap())
            .collect();
        assert_eq!(got.last(), Some(&ip("10.0.0.10")));
        assert_eq!(
            addrs.allocate("ep9"),
            Ok(ip("10.0.0.11")),
            "the last address below the kept range"
        );
        assert_eq!(
            addrs.allocate("ep10"),
            Err(AddressError::Exhausted { range: subnet })
        );
        assert_eq!(addrs.request("asks", ip("10.0.0.13")), Ok(ip("10.0.0.13")));
    }

    #[test]
    fn never_hands_out_network_broadcast_or_reserved() {
        let subnet = net("10.0.0.0/29");
        let mut addrs = AddressAllocator::new(subnet, subnet, vec![net("10.0.0.1/32")]);
        // 8 addresses - network - broadcast - gateway
        assert_eq!(addrs.capacity(), 5);
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(addrs.allocate(&format!("ep{i}")).unwrap());
        }
        let expected: Vec<IpAddr> = (2..=6).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        assert_eq!(got, expected);
        assert_eq!(
            addrs.allocate("ep5"),
            Err(AddressError::Exhausted { range: subnet })
        );
        assert_eq!(addrs.in_use(), 5);
    }

    #[test]
    fn allocate_is_idempotent_and_reuses_lowest() {
        let subnet = net("10.0.0.0/24");
        let mut addrs = AddressAllocator::new(subnet, subnet, vec![net("10.0.0.1/32")]);
        assert_eq!(addrs.allocate("a"), Ok(ip("10.0.0.2")));
        assert_eq!(addrs.allocate("b"), Ok(ip("10.0.0.3")));
        assert_eq!(addrs.allocate("a"), Ok(ip("10.0.0.2")));
        addrs.release("a");
        assert_eq!(addrs.get("a"), None);
        assert_eq!(addrs.allocate("c"), Ok(ip("10.0.0.2")));
        assert_eq!(addrs.allocate("d"), Ok(ip("10.0.0.4")));
    }

    #[test]
    fn range_inside_subnet() {
        // a node's block at the end of the subnet: the subnet's broadcast is in it
        let mut addrs = AddressAllocator::new(net("10.0.0.0/24"), net("10.0.0.252/30"), Vec::new());
        assert_eq!(addrs.capacity(), 3);
        assert_eq!(addrs.allocate("a"), Ok(ip("10.0.0.252")));
        assert_eq!(
            addrs.request("b", ip("10.0.0.255")),
            Err(AddressError::Reserved {
                addr: ip("10.0.0.255")
            })
        );
        assert_eq!(
            addrs.request("b", ip("10.0.0.1")),
            Err(AddressError::OutsideRange {
                addr: ip("10.0.0.1"),
                range: net("10.0.0.252/30")
            })
        );
    }

    #[test]
    fn request_and_restore() {
        let subnet = net("10.0.0.0/24");
        let mut addrs = AddressAllocator::new(subnet, subnet, vec![net("10.0.0.1/32")]);
        assert_eq!(addrs.request("a", ip("10.0.0.2")), Ok(ip("10.0.0.2")));
        assert_eq!(
            addrs.request("b", ip("10.0.0.2")),
            Err(AddressError::InUse {
                addr: ip("10.0.0.2"),
                owner: "a".into()
            })
        );
        assert_eq!(
            addrs.request("b", ip("10.0.0.1")),
            Err(AddressError::Reserved {
                addr: ip("10.0.0.1")
            })
        );
        assert_eq!(
            addrs.request("b", ip("10.0.0.0")),
            Err(AddressError::Reserved {
                addr: ip("10.0.0.0")
            })
        );
        assert!(matches!(
            addrs.request("b", ip("fd00::2")),
            Err(AddressError::OutsideRange { .. })
        ));
        addrs.restore("b", ip("10.0.0.3")).unwrap();
        assert_eq!(addrs.allocate("c"), Ok(ip("10.0.0.4")));
        // moving an owner frees its old address
        addrs.request("a", ip("10.0.0.9")).unwrap();
        assert_eq!(addrs.allocate("d"), Ok(ip("10.0.0.2")));
        assert_eq!(addrs.in_use(), 4);
    }

    #[test]
    fn ipv6_skips_subnet_router_anycast() {
        let subnet = net("fd00::/64");
        let mut addrs = AddressAllocator::new(subnet, subnet, vec![net("fd00::1/128")]);
        assert_eq!(addrs.capacity(), (1u128 << 64) - 2);
        assert_eq!(addrs.allocate("a"), Ok(ip("fd00::2")));
        assert_eq!(
            addrs.request("b", ip("fd00::")),
            Err(AddressError::Reserved { addr: ip("fd00::") })
        );
    }

    #[test]
    fn excluded_ranges_are_skipped() {
        let subnet = net("10.0.0.0/24");
        let mut addrs = AddressAllocator::new(
            subnet,
            subnet,
            vec![net("10.0.0.1/32"), net("10.0.0.0/29"), net("10.0.0.8/30")],
        );
        assert_eq!(addrs.capacity(), 256 - 12 - 1);
        assert_eq!(addrs.allocate("a"), Ok(ip("10.0.0.12")));
    }

    #[test]
    fn point_to_point_and_disjoint_range() {
        let mut p2p = AddressAllocator::new(net("10.0.0.0/31"), net("10.0.0.0/31"), Vec::new());
        assert_eq!(p2p.capacity(), 2);
        assert_eq!(p2p.allocate("a"), Ok(ip("10.0.0.0")));
        let mut none = AddressAllocator::new(net("10.0.0.0/24"), net("10.1.0.0/24"), Vec::new());
        assert_eq!(none.capacity(), 0);
        assert!(matches!(
            none.allocate("a"),
            Err(AddressError::Exhausted { .. })
        ));
    }
}
