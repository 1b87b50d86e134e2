//! Networks' subnets: explicit ones (the older claimant wins a conflict) and
//! ones carved from address pools.
//!
//! Everything the allocator decides is a function of its current state (pools,
//! and per network: claimant, request, allocation), never of the order in which
//! that state was reached. That is what lets a restarted controller `restore`
//! the recorded allocations and carry on with exactly the same picture.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::occupancy::{CidrIndex, Occupancy, lowest_free_block};
use crate::range::{Family, Interval, canonical_list, host_mask, net_at, overlaps};

/// Who wins a conflict: the older claimant (smaller value) keeps the subnet.
/// Ordered by (created, name), so two networks created in the same second
/// still have a fixed winner.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Claimant {
    /// Creation time, unix seconds.
    pub created: i64,
    pub name: String,
}

impl Claimant {
    pub fn new(created: i64, name: impl Into<String>) -> Self {
        Claimant {
            created,
            name: name.into(),
        }
    }
}

/// An address pool networks can get their subnet from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    /// Carved in this order; may mix IPv4 and IPv6.
    pub cidrs: Vec<IpNet>,
    /// Default size of a carved subnet.
    pub prefix_len: u8,
    /// Never carved (may overlap anything).
    pub excluded: Vec<IpNet>,
}

/// What a network asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// spec.ipam.subnets: exactly these (append-only: a later request may add entries, never removes)
    Explicit(Vec<IpNet>),
    /// carve ONE subnet of `prefix_len` (None = the pool's prefix_len) from the named pool
    FromPool {
        pool: String,
        prefix_len: Option<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("subnet {subnet} overlaps {other_subnet} of network {other}")]
    SubnetOverlap {
        subnet: IpNet,
        other: String,
        other_subnet: IpNet,
    },
    #[error("address pool {pool} is exhausted: no free /{prefix_len} left")]
    PoolExhausted { pool: String, prefix_len: u8 },
    #[error("address pool {pool} does not exist")]
    PoolNotFound { pool: String },
    #[error(
        "prefix length /{prefix_len} does not fit address pool {pool}: it must be at least as long \
         as one of the pool's CIDRs and at most /30 for IPv4 or /124 for IPv6"
    )]
    BadPrefixLength { pool: String, prefix_len: u8 },
    #[error("network {network} is not known to the allocator")]
    UnknownNetwork { network: String },
}

/// The outcome of a successful [`SubnetAllocator::allocate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    pub subnets: Vec<IpNet>,
    /// networks that lost (part of) their explicit allocation to this older claimant; the caller re-reconciles them
    pub displaced: Vec<String>,
}

/// How much of a pool is handed out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Addresses in the pool's CIDRs (excluded ranges included).
    pub total_addresses: u128,
    /// Addresses in subnets carved for networks that ask this pool.
    pub allocated_addresses: u128,
    /// Networks holding a subnet carved from this pool.
    pub networks: usize,
}

#[derive(Clone, Debug)]
struct NetworkState {
    claimant: Claimant,
    request: Request,
    allocated: Vec<IpNet>,
}

/// How a network holds a subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hold {
    Allocated,
    /// Listed in an explicit request (allocated or not): carving keeps clear of it.
    Requested,
}

#[derive(Clone, Debug)]
struct PoolState {
    pool: Pool,
    excluded: Occupancy,
}

/// Allocates networks' subnets.
///
/// - Explicit requests get exactly the requested list, or nothing new. A
///   requested subnet conflicts with another network's allocated subnet
///   (unless that network is an explicit one of a newer claimant: it is
///   displaced) and with any explicit request of an older claimant, allocated
///   or not. Pool-carved subnets are never displaced.
/// - Pool requests get the lowest free aligned block, walking the pool's CIDRs
///   in order, clear of every allocation, every explicit request and the
///   pool's excluded ranges; once allocated it never moves.
#[derive(Clone, Debug, Default)]
pub struct SubnetAllocator {
    pools: BTreeMap<String, PoolState>,
    networks: BTreeMap<String, NetworkState>,
    /// Per subnet, who holds it, sorted so conflict reports do not depend on history.
    holders: CidrIndex<Vec<(String, Hold)>>,
    /// Every allocated or explicitly requested subnet of every network.
    occupied: Occupancy,
}

impl SubnetAllocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the pool definitions. Existing allocations are never taken
    /// away, even when a pool shrinks or disappears; only future carving sees the change.
    pub fn set_pools(&mut self, pools: Vec<Pool>) {
        self.pools = pools
            .into_iter()
            .map(|pool| {
                let pool = Pool {
                    cidrs: canonical_list(pool.cidrs),
                    excluded: canonical_list(pool.excluded),
                    ..pool
                };
                let mut excluded = Occupancy::new();
                for net in &pool.excluded {
                    excluded.add(Interval::of(net));
                }
                (pool.name.clone(), PoolState { pool, excluded })
            })
            .collect();
    }

    /// Registers or refreshes a network's intent. Explicit subnets are kept
    /// clear of carving from now on, even before (or without) being allocated.
    pub fn upsert_request(&mut self, network: &str, claimant: Claimant, request: Request) {
        let request = canonical_request(request);
        let allocated = self
            .networks
            .get(network)
            .map(|state| state.allocated.clone())
            .unwrap_or_default();
        self.replace(
            network,
            Some(NetworkState {
                claimant,
                request,
                allocated,
            }),
        );
    }

    /// Loads a recorded allocation (controller restart). Fails with
    /// `SubnetOverlap`, loading nothing for `network`, if a subnet overlaps one
    /// already allocated to another network.
    pub fn restore(
        &mut self,
        network: &str,
        claimant: Claimant,
        request: Request,
        allocated: Vec<IpNet>,
    ) -> Result<(), AllocError> {
        let allocated = canonical_list(allocated);
        for subnet in &allocated {
            for (other_subnet, holders) in self.holders.overlapping(subnet) {
                if let Some((other, _)) = holders
                    .iter()
                    .find(|(name, hold)| *hold == Hold::Allocated && name != network)
                {
                    return Err(AllocError::SubnetOverlap {
                        subnet: *subnet,
                        other: other.clone(),
                        other_subnet,
                    });
                }
            }
        }
        self.replace(
            network,
            Some(NetworkState {
                claimant,
                request: canonical_request(request),
                allocated,
            }),
        );
        Ok(())
    }

    /// Gives the network what its request asks for, or says why not.
    /// Idempotent: calling it again without other changes returns the same.
    pub fn allocate(&mut self, network: &str) -> Result<Allocation, AllocError> {
        let state = self
            .networks
            .get(network)
            .ok_or_else(|| AllocError::UnknownNetwork {
                network: network.to_owned(),
            })?;
        match &state.request {
            Request::Explicit(subnets) => {
                let (subnets, claimant) = (subnets.clone(), state.claimant.clone());
                self.allocate_explicit(network, &claimant, subnets)
            }
            Request::FromPool { .. } if !state.allocated.is_empty() => Ok(Allocation {
                subnets: state.allocated.clone(),
                displaced: Vec::new(),
            }),
            Request::FromPool { pool, prefix_len } => {
                let subnet = self.carve(pool, *prefix_len)?;
                let mut state = state.clone();
                state.allocated = vec![subnet];
                self.replace(network, Some(state));
                Ok(Allocation {
                    subnets: vec![subnet],
                    displaced: Vec::new(),
                })
            }
        }
    }

    /// The network is deleted: its subnets go back and its request is forgotten.
    pub fn release(&mut self, network: &str) {
        self.replace(network, None);
    }

    /// The network's allocated subnets; `None` if it is unknown or holds nothing.
    pub fn allocated(&self, network: &str) -> Option<&[IpNet]> {
        self.networks
            .get(network)
            .map(|state| state.allocated.as_slice())
            .filter(|subnets| !subnets.is_empty())
    }

    /// Every network holding subnets, by network name.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, &[IpNet])> {
        self.networks
            .iter()
            .filter(|(_, state)| !state.allocated.is_empty())
            .map(|(name, state)| (name.as_str(), state.allocated.as_slice()))
    }

    /// The request and claimant registered for `network`.
    pub fn request(&self, network: &str) -> Option<(&Claimant, &Request)> {
        self.networks
            .get(network)
            .map(|state| (&state.claimant, &state.request))
    }

    /// How much of `pool` is handed out; `None` if there is no such pool.
    pub fn usage(&self, pool: &str) -> Option<PoolUsage> {
        let state = self.pools.get(pool)?;
        let cidrs = &state.pool.cidrs;
        // Count a CIDR nested in another one of the same pool only once.
        let total_addresses = cidrs
            .iter()
            .enumerate()
            .filter(|&(i, cidr)| {
                !cidrs.iter().enumerate().any(|(j, other)| {
                    j != i && crate::range::contains(other, cidr) && (other != cidr || j < i)
                })
            })
            .fold(0u128, |sum, (_, cidr)| {
                sum.saturating_add(Interval::of(cidr).size())
            });
        let mut usage = PoolUsage {
            total_addresses,
            ..PoolUsage::default()
        };
        for state in self.networks.values() {
            if matches!(&state.request, Request::FromPool { pool: p, .. } if p == pool)
                && !state.allocated.is_empty()
            {
                usage.networks += 1;
                for subnet in &state.allocated {
                    usage.allocated_addresses = usage
                        .allocated_addresses
                        .saturating_add(Interval::of(subnet).size());
                }
            }
        }
        Some(usage)
    }

    fn allocate_explicit(
        &mut self,
        network: &str,
        claimant: &Claimant,
        subnets: Vec<IpNet>,
    ) -> Result<Allocation, AllocError> {
        // Decide everything before changing anything: on a conflict the
        // network keeps what it had and nobody is displaced.
        let mut losers = BTreeSet::new();
        for subnet in &subnets {
            for (other_subnet, holders) in self.holders.overlapping(subnet) {
                for (other, hold) in holders {
                    if other == network {
                        continue;
                    }
                    let Some(other_state) = self.networks.get(other) else {
                        continue;
                    };
                    let conflict = match hold {
                        Hold::Allocated => {
                            let newer_explicit =
                                matches!(other_state.request, Request::Explicit(_))
                                    && other_state.claimant > *claimant;
                            if newer_explicit {
                                losers.insert(other.clone());
                            }
                            !newer_explicit
                        }
                        Hold::Requested => other_state.claimant < *claimant,
                    };
                    if conflict {
                        return Err(AllocError::SubnetOverlap {
                            subnet: *subnet,
                            other: other.clone(),
                            other_subnet,
                        });
                    }
                }
            }
        }
        for loser in &losers {
            if let Some(mut state) = self.networks.get(loser).cloned() {
                state
                    .allocated
                    .retain(|held| !subnets.iter().any(|subnet| overlaps(subnet, held)));
                self.replace(loser, Some(state));
            }
        }
        if let Some(mut state) = self.networks.get(network).cloned() {
            state.allocated = subnets.clone();
            self.replace(network, Some(state));
        }
        Ok(Allocation {
            subnets,
            displaced: losers.into_iter().collect(),
        })
    }

    /// The lowest free aligned `/prefix_len` of the pool, walking its CIDRs in order.
    fn carve(&self, pool_name: &str, prefix_len: Option<u8>) -> Result<IpNet, AllocError> {
        let state = self
            .pools
            .get(pool_name)
            .ok_or_else(|| AllocError::PoolNotFound {
                pool: pool_name.to_owned(),
            })?;
        let prefix_len = prefix_len.unwrap_or(state.pool.prefix_len);
        let mut fits_some_cidr = false;
        for cidr in &state.pool.cidrs {
            let family = Family::of(cidr);
            if prefix_len < cidr.prefix_len() || prefix_len > family.max_subnet_prefix() {
                continue;
            }
            fits_some_cidr = true;
            let found = lowest_free_block(
                Interval::of(cidr),
                host_mask(family, prefix_len),
                &[&self.occupied, &state.excluded],
            );
            if let Some(subnet) = found.and_then(|block| net_at(family, block.start, prefix_len)) {
                return Ok(subnet);
            }
        }
        if fits_some_cidr || state.pool.cidrs.is_empty() {
            Err(AllocError::PoolExhausted {
                pool: pool_name.to_owned(),
                prefix_len,
            })
        } else {
            Err(AllocError::BadPrefixLength {
                pool: pool_name.to_owned(),
                prefix_len,
            })
        }
    }

    /// Swaps a network's state, keeping the holder index and occupancy in step.
    fn replace(&mut self, network: &str, new: Option<NetworkState>) {
        if let Some(old) = self.networks.remove(network) {
            for (subnet, hold) in held(&old) {
                if let Some(holders) = self.holders.get_mut(&subnet) {
                    if let Ok(at) = holders
                        .binary_search_by(|(name, h)| (name.as_str(), *h).cmp(&(network, hold)))
                    {
                        holders.remove(at);
                    }
                    if holders.is_empty() {
                        self.holders.remove(&subnet);
                    }
                }
                self.occupied.remove(Interval::of(&subnet));
            }
        }
        if let Some(new) = new {
            for (subnet, hold) in held(&new) {
                let holders = self.holders.entry_or_insert_with(subnet, Vec::new);
                let at = holders
                    .binary_search_by(|(name, h)| (name.as_str(), *h).cmp(&(network, hold)))
                    .unwrap_or_else(|at| at);
                holders.insert(at, (network.to_owned(), hold));
                self.occupied.add(Interval::of(&subnet));
            }
            self.networks.insert(network.to_owned(), new);
        }
    }
}

/// Everything a network keeps others away from.
fn held(state: &NetworkState) -> impl Iterator<Item = (IpNet, Hold)> + '_ {
    let requested = match &state.request {
        Request::Explicit(subnets) => subnets.as_slice(),
        Request::FromPool { .. } => &[],
    };
    state
        .allocated
        .iter()
        .map(|subnet| (*subnet, Hold::Allocated))
        .chain(requested.iter().map(|subnet| (*subnet, Hold::Requested)))
}

fn canonical_request(request: Request) -> Request {
    match request {
        Request::Explicit(subnets) => Request::Explicit(canonical_list(subnets)),
        from_pool => from_pool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| net(s)).collect()
    }

    fn explicit(list: &[&str]) -> Request {
        Request::Explicit(nets(list))
    }

    fn from_pool(pool: &str, prefix_len: Option<u8>) -> Request {
        Request::FromPool {
            pool: pool.into(),
            prefix_len,
        }
    }

    fn pool(name: &str, cidrs: &[&str], prefix_len: u8, excluded: &[&str]) -> Pool {
        Pool {
            name: name.into(),
            cidrs: nets(cidrs),
            prefix_len,
            excluded: nets(excluded),
        }
    }

    /// Registers and allocates; `created` doubles as age (smaller = older).
    fn create(
        alloc: &mut SubnetAllocator,
        name: &str,
        created: i64,
        request: Request,
    ) -> Result<Allocation, AllocError> {
        alloc.upsert_request(name, Claimant::new(created, name), request);
        alloc.allocate(name)
    }

    #[test]
    fn explicit_gets_exactly_the_request_and_is_idempotent() {
        let mut alloc = SubnetAllocator::new();
        let got = create(
            &mut alloc,
            "a",
            1,
            explicit(&["10.1.0.0/24", "fd00:1::/64"]),
        )
        .unwrap();
        assert_eq!(got.subnets, nets(&["10.1.0.0/24", "fd00:1::/64"]));
        assert!(got.displaced.is_empty());
        assert_eq!(alloc.allocate("a").unwrap(), got);
        assert_eq!(alloc.allocated("a"), Some(got.subnets.as_slice()));
    }

    #[test]
    fn older_claimant_wins_and_displaces_the_newer() {
        let mut alloc = SubnetAllocator::new();
        create(
            &mut alloc,
            "new",
            20,
            explicit(&["10.1.0.0/16", "10.9.0.0/24"]),
        )
        .unwrap();
        let got = create(&mut alloc, "old", 10, explicit(&["10.1.2.0/24"])).unwrap();
        assert_eq!(got.subnets, nets(&["10.1.2.0/24"]));
        assert_eq!(got.displaced, vec!["new".to_string()]);
        // the newer one keeps what did not overlap, and now conflicts
        assert_eq!(
            alloc.allocated("new"),
            Some(nets(&["10.9.0.0/24"]).as_slice())
        );
        let err = alloc.allocate("new").unwrap_err();
        assert_eq!(
            err,
            AllocError::SubnetOverlap {
                subnet: net("10.1.0.0/16"),
                other: "old".into(),
                other_subnet: net("10.1.2.0/24"),
            }
        );
        assert_eq!(
            err.to_string(),
            "subnet 10.1.0.0/16 overlaps 10.1.2.0/24 of network old"
        );
        // once the older one is gone, the newer one gets everything back
        alloc.release("old");
        let got = alloc.allocate("new").unwrap();
        assert_eq!(got.subnets, nets(&["10.1.0.0/16", "10.9.0.0/24"]));
    }

    #[test]
    fn newer_claimant_conflicts_with_older_allocation() {
        let mut alloc = SubnetAllocator::new();
        create(&mut alloc, "old", 10, explicit(&["10.1.0.0/24"])).unwrap();
        let err = create(&mut alloc, "new", 20, explicit(&["10.1.0.128/25"])).unwrap_err();
        assert_eq!(
            err,
            AllocError::SubnetOverlap {
                subnet: net("10.1.0.128/25"),
                other: "old".into(),
                other_subnet: net("10.1.0.0/24"),
            }
        );
        assert_eq!(alloc.allocated("new"), None);
    }

    #[test]
    fn older_unallocated_request_blocks_a_newer_one() {
        let mut alloc = SubnetAllocator::new();
        alloc.upsert_request("old", Claimant::new(10, "old"), explicit(&["10.1.0.0/24"]));
        let err = create(&mut alloc, "new", 20, explicit(&["10.1.0.0/24"])).unwrap_err();
        assert!(matches!(err, AllocError::SubnetOverlap { ref other, .. } if other == "old"));
    }

    #[test]
    fn same_created_time_is_decided_by_name() {
        let mut alloc = SubnetAllocator::new();
        create(&mut alloc, "b", 10, explicit(&["10.1.0.0/24"])).unwrap();
        let got = create(&mut alloc, "a", 10, explicit(&["10.1.0.0/24"])).unwrap();
        assert_eq!(got.displaced, vec!["b".to_string()]);
        assert_eq!(alloc.allocated("b"), None);
    }

    #[test]
    fn growth_with_a_conflicting_appended_subnet_keeps_the_old_ones() {
        let mut alloc = SubnetAllocator::new();
        create(&mut alloc, "other", 1, explicit(&["10.2.0.0/24"])).unwrap();
        create(&mut alloc, "net", 5, explicit(&["10.1.0.0/24"])).unwrap();
        alloc.upsert_request(
            "net",
            Claimant::new(5, "net"),
            explicit(&["10.1.0.0/24", "10.2.0.0/25"]),
        );
        let err = alloc.allocate("net").unwrap_err();
        assert!(matches!(err, AllocError::SubnetOverlap { ref other, .. } if other == "other"));
        assert_eq!(
            alloc.allocated("net"),
            Some(nets(&["10.1.0.0/24"]).as_slice())
        );
        // a non-conflicting growth goes through
        alloc.upsert_request(
            "net",
            Claimant::new(5, "net"),
            explicit(&["10.1.0.0/24", "10.3.0.0/24"]),
        );
        assert_eq!(
            alloc.allocate("net").unwrap().subnets,
            nets(&["10.1.0.0/24", "10.3.0.0/24"])
        );
    }

    #[test]
    fn pool_carved_subnet_is_never_displaced() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool("default", &["10.0.0.0/16"], 24, &[])]);
        let carved = create(&mut alloc, "carved", 50, from_pool("default", None)).unwrap();
        assert_eq!(carved.subnets, nets(&["10.0.0.0/24"]));
        let err = create(&mut alloc, "older", 1, explicit(&["10.0.0.0/25"])).unwrap_err();
        assert!(matches!(err, AllocError::SubnetOverlap { ref other, .. } if other == "carved"));
        assert_eq!(alloc.allocated("carved"), Some(carved.subnets.as_slice()));
    }

    #[test]
    fn from_pool_is_stable_and_lowest_first() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool("default", &["10.0.0.0/16"], 24, &[])]);
        let a = create(&mut alloc, "a", 1, from_pool("default", None)).unwrap();
        let b = create(&mut alloc, "b", 2, from_pool("default", Some(25))).unwrap();
        let c = create(&mut alloc, "c", 3, from_pool("default", Some(23))).unwrap();
        assert_eq!(a.subnets, nets(&["10.0.0.0/24"]));
        assert_eq!(b.subnets, nets(&["10.0.1.0/25"]));
        assert_eq!(c.subnets, nets(&["10.0.2.0/23"]));
        assert_eq!(alloc.allocate("b").unwrap(), b);
        alloc.release("a");
        assert_eq!(alloc.allocated("a"), None);
        let d = create(&mut alloc, "d", 4, from_pool("default", Some(25))).unwrap();
        assert_eq!(d.subnets, nets(&["10.0.0.0/25"]));
    }

    #[test]
    fn pool_exhaustion_names_the_pool() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool("small", &["10.0.0.0/23"], 24, &[])]);
        create(&mut alloc, "a", 1, from_pool("small", None)).unwrap();
        create(&mut alloc, "b", 2, from_pool("small", None)).unwrap();
        let err = create(&mut alloc, "c", 3, from_pool("small", None)).unwrap_err();
        assert_eq!(
            err,
            AllocError::PoolExhausted {
                pool: "small".into(),
                prefix_len: 24
            }
        );
        assert_eq!(
            err.to_string(),
            "address pool small is exhausted: no free /24 left"
        );
        assert_eq!(alloc.allocated("c"), None);
        alloc.release("a");
        assert_eq!(alloc.allocate("c").unwrap().subnets, nets(&["10.0.0.0/24"]));
    }

    #[test]
    fn excluded_ranges_are_skipped() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool(
            "p",
            &["10.0.0.0/22"],
            24,
            &["10.0.0.0/24", "10.0.1.200/29"],
        )]);
        assert_eq!(
            create(&mut alloc, "a", 1, from_pool("p", None))
                .unwrap()
                .subnets,
            nets(&["10.0.2.0/24"])
        );
        assert_eq!(
            create(&mut alloc, "b", 1, from_pool("p", Some(25)))
                .unwrap()
                .subnets,
            nets(&["10.0.1.0/25"])
        );
    }

    #[test]
    fn explicit_requests_are_skipped_by_carving_even_unallocated() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool("p", &["10.0.0.0/22"], 24, &[])]);
        alloc.upsert_request(
            "manual",
            Claimant::new(1, "manual"),
            explicit(&["10.0.0.0/24"]),
        );
        create(&mut alloc, "blocker", 0, explicit(&["10.0.1.0/25"])).unwrap();
        assert_eq!(
            create(&mut alloc, "a", 2, from_pool("p", None))
                .unwrap()
                .subnets,
            nets(&["10.0.2.0/24"])
        );
        // forgetting the request gives the space back
        alloc.release("manual");
        assert_eq!(
            create(&mut alloc, "b", 3, from_pool("p", None))
                .unwrap()
                .subnets,
            nets(&["10.0.0.0/24"])
        );
    }

    #[test]
    fn release_puts_space_back_when_an_explicit_subnet_overlapped_an_excluded_range() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool("p", &["10.0.0.0/22"], 24, &["10.0.1.0/24"])]);
        create(
            &mut alloc,
            "x",
            1,
            explicit(&["10.0.1.128/25", "10.0.0.0/24"]),
        )
        .unwrap();
        assert_eq!(
            create(&mut alloc, "a", 2, from_pool("p", None))
                .unwrap()
                .subnets,
            nets(&["10.0.2.0/24"])
        );
        alloc.release("x");
        assert_eq!(
            create(&mut alloc, "b", 3, from_pool("p", None))
                .unwrap()
                .subnets,
            nets(&["10.0.0.0/24"])
        );
        assert_eq!(
            create(&mut alloc, "c", 4, from_pool("p", None))
                .unwrap()
                .subnets,
            nets(&["10.0.3.0/24"])
        );
        assert!(create(&mut alloc, "d", 5, from_pool("p", Some(25))).is_err());
    }

    #[test]
    fn mixed_family_pool() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool("dual", &["fd00::/120", "10.0.0.0/24"], 26, &[])]);
        // /26 does not fit the v6 /120 (shorter than it): taken from the v4 cidr
        assert_eq!(
            create(&mut alloc, "a", 1, from_pool("dual", None))
                .unwrap()
                .subnets,
            nets(&["10.0.0.0/26"])
        );
        // /122 is too long for v4: taken from the v6 cidr
        assert_eq!(
            create(&mut alloc, "b", 2, from_pool("dual", Some(122)))
                .unwrap()
                .subnets,
            nets(&["fd00::/122"])
        );
        // /31 is too long for v4 (max /30) but fine for v6 (max /124)
        assert_eq!(
            create(&mut alloc, "c", 3, from_pool("dual", Some(124)))
                .unwrap()
                .subnets,
            nets(&["fd00::40/124"])
        );
        let err = create(&mut alloc, "d", 4, from_pool("dual", Some(20))).unwrap_err();
        assert_eq!(
            err,
            AllocError::BadPrefixLength {
                pool: "dual".into(),
                prefix_len: 20
            }
        );
        assert!(err.to_string().contains("pool dual"));
        assert!(matches!(
            create(&mut alloc, "e", 5, from_pool("dual", Some(125))),
            Err(AllocError::BadPrefixLength { .. })
        ));
        // a v6 net never blocks the v4 space with the same numbers
        create(&mut alloc, "f", 0, explicit(&["::a00:0/104"])).unwrap();
        assert_eq!(
            create(&mut alloc, "g", 6, from_pool("dual", None))
                .unwrap()
                .subnets,
            nets(&["10.0.0.64/26"])
        );
    }

    #[test]
    fn unknown_network_and_pool() {
        let mut alloc = SubnetAllocator::new();
        assert_eq!(
            alloc.allocate("ghost"),
            Err(AllocError::UnknownNetwork {
                network: "ghost".into()
            })
        );
        assert_eq!(
            create(&mut alloc, "a", 1, from_pool("nope", None)),
            Err(AllocError::PoolNotFound {
                pool: "nope".into()
            })
        );
    }

    #[test]
    fn set_pools_never_takes_allocations_away() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool("p", &["10.0.0.0/16"], 24, &[])]);
        let a = create(&mut alloc, "a", 1, from_pool("p", None)).unwrap();
        alloc.set_pools(vec![pool("p", &["10.1.0.0/16"], 24, &[])]);
        assert_eq!(alloc.allocate("a").unwrap(), a);
        alloc.set_pools(Vec::new());
        assert_eq!(alloc.allocate("a").unwrap(), a);
        assert_eq!(alloc.allocated("a"), Some(a.subnets.as_slice()));
    }

    #[test]
    fn restore_rejects_overlap_and_reproduces_the_picture() {
        let mut original = SubnetAllocator::new();
        let pools = vec![pool("p", &["10.0.0.0/20"], 24, &["10.0.1.0/24"])];
        original.set_pools(pools.clone());
        create(&mut original, "a", 1, from_pool("p", None)).unwrap();
        create(&mut original, "b", 2, explicit(&["10.0.2.0/24"])).unwrap();
        create(&mut original, "c", 3, from_pool("p", Some(26))).unwrap();
        original.release("a");

        let mut restarted = SubnetAllocator::new();
        restarted.set_pools(pools);
        let recorded: Vec<(String, Vec<IpNet>)> = original
            .allocations()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect();
        for (name, subnets) in recorded.iter().rev() {
            let (claimant, request) = original.request(name).unwrap();
            restarted
                .restore(name, claimant.clone(), request.clone(), subnets.clone())
                .unwrap();
        }
        let err = restarted
            .restore(
                "x",
                Claimant::new(0, "x"),
                explicit(&["10.0.2.0/25"]),
                nets(&["10.0.2.0/25"]),
            )
            .unwrap_err();
        assert!(matches!(err, AllocError::SubnetOverlap { ref other, .. } if other == "b"));
        assert_eq!(restarted.request("x"), None);

        for (name, created) in [("d", 4), ("e", 5)] {
            assert_eq!(
                create(&mut original, name, created, from_pool("p", Some(25))),
                create(&mut restarted, name, created, from_pool("p", Some(25)))
            );
        }
        assert!(original.allocations().eq(restarted.allocations()));
    }

    #[test]
    fn usage_counts_pool_networks() {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(vec![pool(
            "p",
            &["10.0.0.0/16", "10.0.0.0/20", "fd00::/120"],
            24,
            &[],
        )]);
        create(&mut alloc, "a", 1, from_pool("p", None)).unwrap();
        create(&mut alloc, "b", 2, from_pool("p", Some(25))).unwrap();
        create(&mut alloc, "c", 3, explicit(&["10.0.9.0/24"])).unwrap();
        assert_eq!(
            alloc.usage("p"),
            Some(PoolUsage {
                total_addresses: 65536 + 256,
                allocated_addresses: 256 + 128,
                networks: 2
            })
        );
        assert_eq!(alloc.usage("q"), None);
    }

    #[test]
    fn host_bits_are_ignored() {
        let mut alloc = SubnetAllocator::new();
        let got = create(
            &mut alloc,
            "a",
            1,
            explicit(&["10.1.0.5/24", "10.1.0.0/24"]),
        )
        .unwrap();
        assert_eq!(got.subnets, nets(&["10.1.0.0/24"]));
    }
}
