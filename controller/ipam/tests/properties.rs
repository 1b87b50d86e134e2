//! Property tests: random sequences of what the controller does, checked
//! against brute force after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use weft_ipam::{
    AddressAllocator, AddressError, AllocError, BlockAllocator, BlockError, Claimant, IpNet, Pool,
    Request, SubnetAllocator, VniAllocator, VniError,
};

const NETWORKS: usize = 14;
const NODES: usize = 5;

fn v4(offset: u32, prefix: u8) -> IpNet {
    IpNet::V4(
        Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + offset), prefix)
            .unwrap()
            .trunc(),
    )
}

fn v6(offset: u16, prefix: u8) -> IpNet {
    let addr = Ipv6Addr::from((0xfd00u128 << 112) | u128::from(offset));
    IpNet::V6(Ipv6Net::new(addr, prefix).unwrap().trunc())
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Independent of the crate's interval arithmetic on purpose.
fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn pools() -> Vec<Pool> {
    vec![
        Pool {
            name: "p".into(),
            cidrs: vec![net("10.0.0.0/20")],
            prefix_len: 24,
            excluded: vec![net("10.0.3.0/24"), net("10.0.8.128/25")],
        },
        Pool {
            name: "q".into(),
            cidrs: vec![net("fd00::/116"), net("10.0.16.0/22")],
            prefix_len: 122,
            excluded: vec![net("fd00::100/120")],
        },
    ]
}

#[derive(Clone, Debug)]
enum Op {
    CreateExplicit {
        network: usize,
        created: i64,
        subnets: Vec<IpNet>,
    },
    CreateFromPool {
        network: usize,
        created: i64,
        pool: &'static str,
        prefix_len: Option<u8>,
    },
    Delete {
        network: usize,
    },
    Grow {
        network: usize,
        subnet: IpNet,
    },
    NodeJoin {
        network: usize,
        node: usize,
    },
    NodeLeave {
        network: usize,
        node: usize,
    },
    Restart {
        order: usize,
    },
}

fn subnet() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        4 => (0u32..8192, 22u8..=26).prop_map(|(offset, prefix)| v4(offset, prefix)),
        1 => (0u16..4096, 118u8..=124).prop_map(|(offset, prefix)| v6(offset, prefix)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let network = 0..NETWORKS;
    prop_oneof![
        3 => (network.clone(), 0i64..4, proptest::collection::vec(subnet(), 0..3)).prop_map(
            |(network, created, subnets)| Op::CreateExplicit { network, created, subnets }
        ),
        5 => (
            network.clone(),
            0i64..4,
            prop_oneof![8 => Just("p"), 3 => Just("q"), 1 => Just("missing")],
            prop_oneof![
                4 => Just(None), 2 => Just(Some(23)), 2 => Just(Some(25)), 2 => Just(Some(26)),
                1 => Just(Some(22)), 1 => Just(Some(122)), 1 => Just(Some(124)),
                1 => Just(Some(8)), 1 => Just(Some(31)),
            ],
        )
            .prop_map(|(network, created, pool, prefix_len)| Op::CreateFromPool {
                network, created, pool, prefix_len
            }),
        2 => network.clone().prop_map(|network| Op::Delete { network }),
        2 => (network.clone(), subnet()).prop_map(|(network, subnet)| Op::Grow { network, subnet }),
        3 => (network.clone(), 0..NODES).prop_map(|(network, node)| Op::NodeJoin { network, node }),
        1 => (network, 0..NODES).prop_map(|(network, node)| Op::NodeLeave { network, node }),
        1 => any::<usize>().prop_map(|order| Op::Restart { order }),
    ]
}

fn name(network: usize) -> String {
    format!("n{network}")
}

struct World {
    alloc: SubnetAllocator,
    /// The allocator from before the last restart, fed the same calls: it must answer alike.
    shadow: Option<SubnetAllocator>,
    requests: BTreeMap<String, (Claimant, Request)>,
    blocks: BTreeMap<String, BlockAllocator>,
}

impl World {
    fn new() -> Self {
        let mut alloc = SubnetAllocator::new();
        alloc.set_pools(pools());
        World {
            alloc,
            shadow: None,
            requests: BTreeMap::new(),
            blocks: BTreeMap::new(),
        }
    }

    /// Runs `f` on the allocator (and its shadow) and checks both agree.
    fn call<T: PartialEq + std::fmt::Debug>(&mut self, f: impl Fn(&mut SubnetAllocator) -> T) -> T {
        let got = f(&mut self.alloc);
        if let Some(shadow) = &mut self.shadow {
            assert_eq!(f(shadow), got, "restarted allocator diverged");
        }
        got
    }

    fn allocated(&self, network: &str) -> Vec<IpNet> {
        self.alloc
            .allocated(network)
            .map(<[IpNet]>::to_vec)
            .unwrap_or_default()
    }

    /// Whether an explicit request of `network` by `claimant` must conflict, by the rules
    /// spelled out naively; and whom it would displace.
    fn expected_explicit(
        &self,
        network: &str,
        claimant: &Claimant,
        subnets: &[IpNet],
    ) -> (bool, BTreeSet<String>) {
        let mut conflict = false;
        let mut displaced = BTreeSet::new();
        for (other, (other_claimant, other_request)) in &self.requests {
            if other == network {
                continue;
            }
            let other_explicit = match other_request {
                Request::Explicit(list) => Some(list),
                Request::FromPool { .. } => None,
            };
            for s in subnets {
                for t in self.allocated(other) {
                    if overlap(s, &t) {
                        if other_explicit.is_some() && other_claimant > claimant {
                            displaced.insert(other.clone());
                        } else {
                            conflict = true;
                        }
                    }
                }
                if let Some(list) = other_explicit
                    && other_claimant < claimant
                    && list.iter().any(|t| overlap(s, t))
                {
                    conflict = true;
                }
            }
        }
        (conflict, displaced)
    }

    fn explicit(&mut self, network: &str, claimant: Claimant, subnets: Vec<IpNet>) {
        let before = self.allocated(network);
        let (conflict, displaced) = self.expected_explicit(network, &claimant, &subnets);
        let request = Request::Explicit(subnets.clone());
        self.requests
            .insert(network.to_owned(), (claimant.clone(), request.clone()));
        self.call(|a| a.upsert_request(network, claimant.clone(), request.clone()));
        let got = self.call(|a| a.allocate(network));
        match got {
            Ok(allocation) => {
                assert!(!conflict, "expected a conflict, got {allocation:?}");
                let mut unique = Vec::new();
                for s in subnets {
                    if !unique.contains(&s) {
                        unique.push(s);
                    }
                }
                assert_eq!(allocation.subnets, unique);
                assert_eq!(
                    allocation.displaced.into_iter().collect::<BTreeSet<_>>(),
                    displaced
                );
            }
            Err(AllocError::SubnetOverlap {
                subnet,
                other,
                other_subnet,
            }) => {
                assert!(conflict, "unexpected conflict with {other}");
                assert!(overlap(&subnet, &other_subnet));
                assert_ne!(other, network);
                assert!(self.requests.contains_key(&other));
                assert_eq!(
                    self.allocated(network),
                    before,
                    "a failed allocation changed what was held"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    /// The lowest free aligned block, by enumerating every candidate.
    fn brute_force_carve(&self, pool: &str, prefix_len: Option<u8>) -> Result<IpNet, AllocError> {
        let Some(pool) = pools().into_iter().find(|p| p.name == pool) else {
            return Err(AllocError::PoolNotFound { pool: pool.into() });
        };
        let prefix_len = prefix_len.unwrap_or(pool.prefix_len);
        let mut taken: Vec<IpNet> = pool.excluded.clone();
        for (name, (_, request)) in &self.requests {
            taken.extend(self.allocated(name));
            if let Request::Explicit(list) = request {
                taken.extend(list.iter().copied());
            }
        }
        let mut fitted = false;
        for cidr in &pool.cidrs {
            let max = if matches!(cidr, IpNet::V4(_)) {
                30
            } else {
                124
            };
            if prefix_len < cidr.prefix_len() || prefix_len > max {
                continue;
            }
            fitted = true;
            if let Some(free) = cidr
                .subnets(prefix_len)
                .unwrap()
                .find(|candidate| !taken.iter().any(|t| overlap(candidate, t)))
            {
                return Ok(free);
            }
        }
        if fitted {
            Err(AllocError::PoolExhausted {
                pool: pool.name,
                prefix_len,
            })
        } else {
            Err(AllocError::BadPrefixLength {
                pool: pool.name,
                prefix_len,
            })
        }
    }

    fn delete(&mut self, network: &str) {
        self.requests.remove(network);
        self.call(|a| a.release(network));
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::CreateExplicit {
                network,
                created,
                subnets,
            } => {
                let network = name(network);
                self.delete(&network);
                self.explicit(&network, Claimant::new(created, network.clone()), subnets);
            }
            Op::CreateFromPool {
                network,
                created,
                pool,
                prefix_len,
            } => {
                let network = name(network);
                self.delete(&network);
                let expected = self.brute_force_carve(pool, prefix_len);
                let claimant = Claimant::new(created, network.clone());
                let request = Request::FromPool {
                    pool: pool.into(),
                    prefix_len,
                };
                self.requests
                    .insert(network.clone(), (claimant.clone(), request.clone()));
                self.call(|a| a.upsert_request(&network, claimant.clone(), request.clone()));
                let got = self.call(|a| a.allocate(&network));
                assert_eq!(got.map(|a| a.subnets), expected.map(|s| vec![s]));
                // stable
                let again = self.call(|a| a.allocate(&network));
                assert_eq!(
                    again.ok().map(|a| a.subnets),
                    self.alloc.allocated(&network).map(<[IpNet]>::to_vec)
                );
            }
            Op::Delete { network } => self.delete(&name(network)),
            Op::Grow { network, subnet } => {
                let network = name(network);
                if let Some((claimant, Request::Explicit(list))) =
                    self.requests.get(&network).cloned()
                {
                    let mut list = list;
                    list.push(subnet);
                    self.explicit(&network, claimant, list);
                }
            }
            Op::NodeJoin { network, node } => {
                let network = name(network);
                let space = self.allocated(&network);
                if space.is_empty() {
                    return;
                }
                if !self.blocks.contains_key(&network) {
                    // big enough blocks that 5 nodes can exhaust a small network
                    let prefix = if matches!(space[0], IpNet::V4(_)) {
                        25
                    } else {
                        122
                    };
                    match BlockAllocator::new(space.clone(), prefix) {
                        Ok(blocks) => {
                            self.blocks.insert(network.clone(), blocks);
                        }
                        Err(BlockError::BadPrefixLength { .. }) => {
                            assert!(space.iter().all(|s| s.prefix_len() > prefix || s.max_prefix_len() < prefix));
                            return;
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                let Some(blocks) = self.blocks.get_mut(&network) else {
                    return;
                };
                let node = format!("node{node}");
                let before = blocks.block(&node);
                let held: Vec<IpNet> = blocks.blocks().map(|(_, b)| b).collect();
                let prefix = blocks.block_prefix_len();
                let lowest_free = blocks
                    .space()
                    .iter()
                    .filter(|s| s.prefix_len() <= prefix && prefix <= s.max_prefix_len())
                    .find_map(|s| {
                        s.subnets(prefix)
                            .unwrap()
                            .find(|c| !held.iter().any(|h| overlap(c, h)))
                    });
                match blocks.assign(&node) {
                    Ok(block) => {
                        match before {
                            Some(before) => assert_eq!(block, before),
                            None => assert_eq!(Some(block), lowest_free),
                        }
                        assert_eq!(blocks.assign(&node), Ok(block));
                    }
                    Err(BlockError::Exhausted { capacity }) => {
                        assert_eq!(lowest_free, None, "Exhausted although a block is free");
                        let fitting: Vec<&IpNet> = blocks
                            .space()
                            .iter()
                            .filter(|s| s.prefix_len() <= prefix && prefix <= s.max_prefix_len())
                            .collect();
                        let mut all: BTreeSet<IpNet> = BTreeSet::new();
                        for s in fitting {
                            all.extend(s.subnets(prefix).unwrap());
                        }
                        assert_eq!(capacity, all.len());
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::NodeLeave { network, node } => {
                if let Some(blocks) = self.blocks.get_mut(&name(network)) {
                    blocks.release(&format!("node{node}"));
                }
            }
            Op::Restart { order } => self.restart(order),
        }
        self.sync_blocks();
    }

    /// A new controller process: rebuild everything from what was recorded.
    fn restart(&mut self, order: usize) {
        let mut recorded: Vec<(String, Vec<IpNet>)> = self
            .alloc
            .allocations()
            .map(|(n, s)| (n.to_owned(), s.to_vec()))
            .collect();
        let len = recorded.len();
        if len > 0 {
            recorded.rotate_left(order % len);
        }
        if order % 2 == 1 {
            recorded.reverse();
        }
        let mut fresh = SubnetAllocator::new();
        fresh.set_pools(pools());
        for (network, subnets) in &recorded {
            let (claimant, request) = self.requests[network].clone();
            fresh
                .restore(network, claimant, request, subnets.clone())
                .unwrap();
        }
        for (network, (claimant, request)) in &self.requests {
            if fresh.allocated(network).is_none() {
                fresh.upsert_request(network, claimant.clone(), request.clone());
            }
        }
        assert!(
            fresh.allocations().eq(self.alloc.allocations()),
            "restart changed the allocations"
        );
        self.shadow = Some(std::mem::replace(&mut self.alloc, fresh));

        for blocks in self.blocks.values_mut() {
            let mut recorded: Vec<(String, IpNet)> =
                blocks.blocks().map(|(n, b)| (n.to_owned(), b)).collect();
            if order.is_multiple_of(2) {
                recorded.reverse();
            }
            let mut fresh =
                BlockAllocator::new(blocks.space().to_vec(), blocks.block_prefix_len()).unwrap();
            for (node, block) in recorded {
                fresh.restore(&node, block).unwrap();
            }
            assert!(fresh.blocks().eq(blocks.blocks()));
            *blocks = fresh;
        }
    }

    /// What the controller does when a network's subnets change: grow the
    /// block space, or rebuild it keeping the blocks that still fit.
    fn sync_blocks(&mut self) {
        let networks: Vec<String> = self.blocks.keys().cloned().collect();
        for network in networks {
            let space = self.allocated(&network);
            let Some(blocks) = self.blocks.get_mut(&network) else {
                continue;
            };
            if space.is_empty() {
                self.blocks.remove(&network);
                continue;
            }
            if blocks.space() == space.as_slice() {
                continue;
            }
            if blocks.space().iter().all(|s| space.contains(s)) {
                blocks.extend_space(space.clone());
                continue;
            }
            match BlockAllocator::new(space, blocks.block_prefix_len()) {
                Ok(mut fresh) => {
                    for (node, block) in blocks.blocks() {
                        match fresh.restore(node, block) {
                            Ok(()) | Err(BlockError::OutsideSpace { .. }) => {}
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                    *blocks = fresh;
                }
                Err(_) => {
                    self.blocks.remove(&network);
                }
            }
        }
    }

    fn check_invariants(&self) {
        let all: Vec<(String, Vec<IpNet>)> = self
            .alloc
            .allocations()
            .map(|(n, s)| (n.to_owned(), s.to_vec()))
            .collect();
        if let Some(shadow) = &self.shadow {
            assert!(shadow.allocations().eq(self.alloc.allocations()));
        }
        // ordered by name, and only known networks
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        for (network, subnets) in &all {
            let (_, request) = self
                .requests
                .get(network)
                .expect("allocation of an unknown network");
            match request {
                Request::Explicit(list) => assert!(subnets.iter().all(|s| list.contains(s))),
                Request::FromPool { pool, prefix_len } => {
                    let pool = pools().into_iter().find(|p| &p.name == pool).unwrap();
                    assert_eq!(subnets.len(), 1);
                    let s = subnets[0];
                    assert_eq!(s.prefix_len(), prefix_len.unwrap_or(pool.prefix_len));
                    assert!(
                        pool.cidrs.iter().any(|c| c.contains(&s)),
                        "{s} outside pool"
                    );
                    assert!(
                        !pool.excluded.iter().any(|x| overlap(x, &s)),
                        "{s} overlaps an excluded range"
                    );
                }
            }
        }
        // no two networks' allocations overlap
        for (i, (a, sa)) in all.iter().enumerate() {
            for (b, sb) in &all[i + 1..] {
                for s in sa {
                    for t in sb {
                        assert!(!overlap(s, t), "{a} {s} overlaps {b} {t}");
                    }
                }
            }
        }
        // usage agrees with the allocations
        for pool in pools() {
            let usage = self.alloc.usage(&pool.name).unwrap();
            let holders = self
                .requests
                .iter()
                .filter(|(n, (_, r))| {
                    matches!(r, Request::FromPool { pool: p, .. } if *p == pool.name)
                        && self.alloc.allocated(n).is_some()
                })
                .count();
            assert_eq!(usage.networks, holders);
        }
        // blocks: disjoint, inside the network's space
        for (network, blocks) in &self.blocks {
            let mut space = self.allocated(network);
            space.sort();
            assert_eq!(
                blocks.space(),
                space.as_slice(),
                "the space is kept in address order"
            );
            let held: Vec<IpNet> = blocks.blocks().map(|(_, b)| b).collect();
            for (i, b) in held.iter().enumerate() {
                assert!(
                    space.iter().any(|s| s.contains(b)),
                    "block {b} outside {network}"
                );
                for c in &held[i + 1..] {
                    assert!(!overlap(b, c), "blocks {b} and {c} overlap");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn subnets_and_blocks(ops in proptest::collection::vec(op(), 1..80)) {
        let mut world = World::new();
        for op in ops {
            world.apply(op);
            world.check_invariants();
        }
    }

    #[test]
    fn addresses_match_a_brute_force_model(
        ops in proptest::collection::vec((0usize..4, 0usize..12, 0u8..32), 1..80),
        restart_at in 0usize..80,
    ) {
        let subnet = net("10.0.0.0/27");
        let reserved = vec![net("10.0.0.1/32"), net("10.0.0.8/30")];
        let forbidden = |a: u8| a == 0 || a == 31 || a == 1 || (8..12).contains(&a);
        let mut addrs = AddressAllocator::new(subnet, subnet, reserved.clone());
        prop_assert_eq!(addrs.capacity(), 32 - 2 - 1 - 4);
        let mut model: BTreeMap<String, u8> = BTreeMap::new();
        let ip = |a: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, a));
        for (i, (kind, owner, at)) in ops.into_iter().enumerate() {
            let owner = format!("ep{owner}");
            match kind {
                0 | 1 => {
                    let expected = model.get(&owner).copied().or_else(|| {
                        (0..32u8).find(|a| !forbidden(*a) && !model.values().any(|v| v == a))
                    });
                    let got = addrs.allocate(&owner);
                    match expected {
                        Some(a) => {
                            prop_assert_eq!(got, Ok(ip(a)));
                            model.insert(owner, a);
                        }
                        None => prop_assert_eq!(got, Err(AddressError::Exhausted { range: subnet })),
                    }
                }
                2 => {
                    let got = addrs.request(&owner, ip(at));
                    let holder = model.iter().find(|(o, v)| **v == at && **o != owner).map(|(o, _)| o.clone());
                    if forbidden(at) {
                        prop_assert_eq!(got, Err(AddressError::Reserved { addr: ip(at) }));
                    } else if let Some(holder) = holder {
                        prop_assert_eq!(got, Err(AddressError::InUse { addr: ip(at), owner: holder }));
                    } else {
                        prop_assert_eq!(got, Ok(ip(at)));
                        model.insert(owner, at);
                    }
                }
                _ => {
                    addrs.release(&owner);
                    model.remove(&owner);
                }
            }
            prop_assert_eq!(addrs.in_use(), model.len());
            if i == restart_at {
                let mut fresh = AddressAllocator::new(subnet, subnet, reserved.clone());
                for (owner, a) in model.iter().rev() {
                    fresh.restore(owner, ip(*a)).unwrap();
                }
                addrs = fresh;
            }
        }
    }

    #[test]
    fn vnis_match_a_brute_force_model(
        ops in proptest::collection::vec((0usize..6, proptest::option::of(0u32..24), any::<bool>()), 1..60),
    ) {
        let mut vnis = VniAllocator::with_range(10, 20);
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        for (network, requested, release) in ops {
            let network = format!("n{network}");
            if release {
                vnis.release(&network);
                model.remove(&network);
                continue;
            }
            let got = vnis.allocate(&network, requested);
            match requested {
                Some(0) => prop_assert_eq!(got, Err(VniError::OutOfRange { vni: 0 })),
                Some(v) => match model.iter().find(|(n, x)| **x == v && **n != network) {
                    Some((other, _)) => prop_assert_eq!(got, Err(VniError::InUse { vni: v, other: other.clone() })),
                    None => {
                        prop_assert_eq!(got, Ok(v));
                        model.insert(network, v);
                    }
                },
                None => match model.get(&network) {
                    Some(&v) => prop_assert_eq!(got, Ok(v)),
                    None => match (10..=20).find(|v| !model.values().any(|x| x == v)) {
                        Some(v) => {
                            prop_assert_eq!(got, Ok(v));
                            model.insert(network, v);
                        }
                        None => prop_assert_eq!(got, Err(VniError::Exhausted)),
                    },
                },
            }
        }
    }
}
