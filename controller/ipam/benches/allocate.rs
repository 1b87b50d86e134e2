//! Rough timings of the allocators at cluster scale. `cargo bench -p weft-ipam`
//! prints one line per figure; no statistics, it only has to show the order of
//! magnitude (10,000 pool allocations must stay well under 100 ms).

use std::hint::black_box;
use std::time::{Duration, Instant};

use weft_ipam::{
    AddressAllocator, BlockAllocator, Claimant, IpNet, Pool, Request, SubnetAllocator,
};

fn net(s: &str) -> IpNet {
    s.parse().expect("valid net")
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

fn main() {
    const NETWORKS: usize = 10_000;
    let mut subnets = SubnetAllocator::new();
    subnets.set_pools(vec![Pool {
        name: "default".into(),
        cidrs: vec![net("10.0.0.0/8")],
        prefix_len: 24,
        excluded: Vec::new(),
    }]);
    let names: Vec<String> = (0..NETWORKS).map(|i| format!("network-{i:05}")).collect();
    let started = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let created = i64::try_from(i).expect("small index");
        subnets.upsert_request(
            name,
            Claimant::new(created, name.clone()),
            Request::FromPool {
                pool: "default".into(),
                prefix_len: None,
            },
        );
        black_box(
            subnets
                .allocate(name)
                .expect("the /8 has room for 65536 /24s"),
        );
    }
    println!(
        "ipam: {NETWORKS} allocations from a /8 pool in {:.1} ms",
        ms(started.elapsed())
    );

    let started = Instant::now();
    for name in &names {
        subnets.release(name);
    }
    println!(
        "ipam: {NETWORKS} releases in {:.1} ms",
        ms(started.elapsed())
    );
    assert_eq!(subnets.allocations().count(), 0);

    const NODES: usize = 1_000;
    let nodes: Vec<String> = (0..NODES).map(|i| format!("node-{i:04}")).collect();
    let mut blocks = BlockAllocator::new(vec![net("10.0.0.0/8")], 24).expect("/24 fits a /8");
    let started = Instant::now();
    for node in &nodes {
        black_box(blocks.assign(node).expect("room for 65536 blocks"));
    }
    println!(
        "ipam: {NODES} nodes' blocks in {:.1} ms",
        ms(started.elapsed())
    );

    const ENDPOINTS: usize = 1_000_000;
    let owners: Vec<String> = (0..ENDPOINTS).map(|i| format!("endpoint-{i:07}")).collect();
    let subnet = net("10.0.0.0/12");
    let mut addresses = AddressAllocator::new(subnet, subnet, vec![net("10.0.0.1/32")]);
    let started = Instant::now();
    for owner in &owners {
        black_box(
            addresses
                .allocate(owner)
                .expect("a /12 holds 1048573 endpoints"),
        );
    }
    println!(
        "ipam: {ENDPOINTS} addresses filled in {:.1} ms",
        ms(started.elapsed())
    );
}
