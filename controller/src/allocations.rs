//! The controller's picture of every allocation, kept in the pure `weft-ipam` allocators.
//!
//! It is rebuilt from the API on start ([`Allocations::seed`]): subnets and VNIs from each
//! network's status, node blocks from `NetworkAllocation` objects. While the controller runs
//! it is the only writer of those records, and every allocation goes through this one
//! structure under one lock, so two networks can never be handed the same subnet — also when
//! a hundred are created at once. An allocation reaches agents only after it is persisted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kube::ResourceExt;
use weft_api::{AddressPool, ContainerNetwork, Driver, NetworkAllocation, Reason};
use weft_ipam::{
    AllocError, BlockAllocator, BlockError, Claimant, Pool, Request, SubnetAllocator, VniAllocator,
    VniError, first_host,
};

/// Why a network cannot be allocated: becomes a `Stalled` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    pub message: String,
}

impl Problem {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Everything allocated to one network.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkAllocationView {
    pub subnets: Vec<IpNet>,
    pub gateway: Option<IpAddr>,
    pub vni: Option<u32>,
    pub block_prefix_len: Option<u8>,
    /// node → block, ordered by node name.
    pub blocks: BTreeMap<String, IpNet>,
    pub block_capacity: Option<usize>,
    pub addresses: i64,
}

/// Result of planning one network.
#[derive(Debug, Default)]
pub struct Outcome {
    pub view: NetworkAllocationView,
    pub problem: Option<Problem>,
    /// Other networks whose allocation changed because of this one (re-reconcile them).
    pub displaced: Vec<String>,
    /// Earliest moment a pending block release falls due.
    pub recheck_after: Option<Duration>,
    /// Pools whose usage changed.
    pub pools_touched: BTreeSet<String>,
}

/// All allocators of the cluster.
#[derive(Default)]
pub struct Allocations {
    subnets: SubnetAllocator,
    vnis: VniAllocator,
    blocks: HashMap<String, BlockAllocator>,
    /// (network, node) → when the node stopped being selected; its block is kept for the grace period.
    unselected_since: HashMap<(String, String), Instant>,
    /// network → pool its subnet came from (for usage metrics).
    pool_of: HashMap<String, String>,
    pools: Vec<Pool>,
    default_pool: Option<String>,
}

/// Conflicts are settled by age: older creationTimestamp, then name, keeps the subnet.
pub fn claimant(net: &ContainerNetwork) -> Claimant {
    Claimant {
        created: net
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(i64::MAX),
        name: net.name_any(),
    }
}

fn parse_nets(list: &[String], field: &str) -> Result<Vec<IpNet>, Problem> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>().map_err(|_| {
                Problem::new(
                    Reason::InvalidSpec,
                    format!("{field}: {s:?} is not a CIDR such as 10.0.0.0/24"),
                )
            })
        })
        .collect()
}

/// The default pool: the oldest pool marked default (others report MultipleDefaults).
pub fn default_pool(pools: &[std::sync::Arc<AddressPool>]) -> Option<String> {
    pools
        .iter()
        .filter(|p| p.spec.default && p.metadata.deletion_timestamp.is_none())
        .min_by_key(|p| {
            (
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
                p.name_any(),
            )
        })
        .map(|p| p.name_any())
}

fn to_pool(p: &AddressPool) -> Pool {
    let nets = |v: &[String]| {
        v.iter()
            .filter_map(|s| s.parse::<IpNet>().ok())
            .collect::<Vec<_>>()
    };
    Pool {
        name: p.name_any(),
        cidrs: nets(&p.spec.cidrs),
        prefix_len: u8::try_from(p.spec.prefix_length).unwrap_or(u8::MAX),
        excluded: nets(p.spec.excluded_ranges.as_deref().unwrap_or_default()),
    }
}

/// What the network asks for, in the allocator's terms.
fn request(net: &ContainerNetwork, default_pool: Option<&str>) -> Result<Request, Problem> {
    let ipam = net.spec.ipam.clone().unwrap_or_default();
    if let Some(subnets) = &ipam.subnets {
        return Ok(Request::Explicit(parse_nets(subnets, "spec.ipam.subnets")?));
    }
    let pool = match (ipam.pool, default_pool) {
        (Some(p), _) => p,
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            return Err(Problem::new(
                Reason::NoDefaultPool,
                "the network names no subnet and no pool, and no AddressPool has default: true; \
                 create one (see examples/default-address-pools.yaml) or set spec.ipam.subnets",
            ));
        }
    };
    let prefix_len = match ipam.prefix_length {
        Some(p) => Some(u8::try_from(p).map_err(|_| {
            Problem::new(Reason::InvalidSpec, "spec.ipam.prefixLength out of range")
        })?),
        None => None,
    };
    Ok(Request::FromPool { pool, prefix_len })
}

fn problem_from_alloc(e: AllocError) -> Problem {
    let reason = match &e {
        AllocError::SubnetOverlap { .. } => Reason::SubnetOverlap,
        AllocError::PoolExhausted { .. } => Reason::PoolExhausted,
        AllocError::PoolNotFound { .. } => Reason::PoolNotFound,
        AllocError::BadPrefixLength { .. } => Reason::BadPrefixLength,
        AllocError::UnknownNetwork { .. } => Reason::Internal,
    };
    Problem::new(reason, e.to_string())
}

/// Default block size: 6 bits longer than the subnet (64 nodes), at most /28 or /120.
pub fn default_block_prefix_len(subnet: &IpNet) -> u8 {
    match subnet {
        IpNet::V4(n) => (n.prefix_len() + 6).min(28).max(n.prefix_len()),
        IpNet::V6(n) => (n.prefix_len() + 6).min(120).max(n.prefix_len()),
    }
}

fn saturating_size(net: &IpNet) -> i64 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    if bits >= 63 { i64::MAX } else { 1i64 << bits }
}

/// Usable endpoint addresses: network/broadcast (v4) or subnet-router anycast (v6), the
/// gateway and excluded ranges are not usable; with an ipRange only it counts.
fn capacity(
    subnets: &[IpNet],
    ip_range: Option<IpNet>,
    excluded: &[IpNet],
    gateway: Option<IpAddr>,
) -> i64 {
    let spaces: Vec<IpNet> = match ip_range {
        Some(r) => vec![r],
        None => subnets.to_vec(),
    };
    let mut total: i64 = 0;
    for space in &spaces {
        let reserved = match space {
            IpNet::V4(_) => 2,
            IpNet::V6(_) => 1,
        };
        let mut n = saturating_size(space).saturating_sub(reserved);
        if gateway.is_some_and(|g| space.contains(&g)) {
            n = n.saturating_sub(1);
        }
        for ex in excluded.iter().filter(|ex| space.contains(*ex)) {
            n = n.saturating_sub(saturating_size(ex));
        }
        total = total.saturating_add(n.max(0));
    }
    total
}

impl Allocations {
    /// Rebuild the picture from what the API records. Networks are restored oldest first, so
    /// if the records ever conflict the older network keeps its subnet.
    pub fn seed(
        networks: &[ContainerNetwork],
        node_blocks: &[NetworkAllocation],
        pools: &[std::sync::Arc<AddressPool>],
    ) -> (Self, Vec<String>) {
        let mut me = Self::default();
        let mut warnings = Vec::new();
        me.sync_pools(pools);
        let mut sorted: Vec<&ContainerNetwork> = networks.iter().collect();
        sorted.sort_by_key(|n| claimant(n));
        for net in sorted {
            let name = net.name_any();
            let Ok(req) = request(net, me.default_pool.as_deref()) else {
                continue;
            };
            let recorded: Vec<IpNet> = net
                .status
                .as_ref()
                .map(|s| s.subnets.iter().filter_map(|s| s.parse().ok()).collect())
                .unwrap_or_default();
            if let Request::FromPool { pool, .. } = &req
                && !recorded.is_empty()
            {
                me.pool_of.insert(name.clone(), pool.clone());
            }
            if recorded.is_empty() {
                me.subnets.upsert_request(&name, claimant(net), req);
            } else if let Err(e) = me
                .subnets
                .restore(&name, claimant(net), req.clone(), recorded)
            {
                warnings.push(format!(
                    "network {name}: recorded subnets not restored: {e}"
                ));
                me.subnets.upsert_request(&name, claimant(net), req);
            }
            if let Some(vni) = net
                .status
                .as_ref()
                .and_then(|s| s.vni)
                .and_then(|v| u32::try_from(v).ok())
                && let Err(e) = me.vnis.restore(&name, vni)
            {
                warnings.push(format!("network {name}: recorded VNI not restored: {e}"));
            }
            let uid = net.uid();
            if let Some(rec) = node_blocks
                .iter()
                .find(|a| a.name_any() == name && Some(&a.spec.network_uid) == uid.as_ref())
                && let Some(alloc) = me.block_allocator(net)
            {
                for b in &rec.spec.blocks {
                    match b.cidr.parse::<IpNet>() {
                        Ok(cidr) => {
                            if let Err(e) = alloc.restore(&b.node, cidr) {
                                warnings.push(format!(
                                    "network {name}: block of node {} not restored: {e}",
                                    b.node
                                ));
                            }
                        }
                        Err(_) => warnings
                            .push(format!("network {name}: block {:?} is not a CIDR", b.cidr)),
                    }
                }
            }
        }
        (me, warnings)
    }

    /// Replace pool definitions when they changed (existing allocations are never taken away).
    pub fn sync_pools(&mut self, pools: &[std::sync::Arc<AddressPool>]) {
        let mut defs: Vec<Pool> = pools
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| to_pool(p))
            .collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        self.default_pool = default_pool(pools);
        if defs != self.pools {
            self.pools = defs.clone();
            self.subnets.set_pools(defs);
        }
    }

    /// The block allocator of a cluster-scope network, created once its subnets are known.
    fn block_allocator(&mut self, net: &ContainerNetwork) -> Option<&mut BlockAllocator> {
        let name = net.name_any();
        if !net.spec.driver.is_cluster_scope() {
            return None;
        }
        let subnets = self.subnets.allocated(&name)?.to_vec();
        let primary = *subnets.first()?;
        let ipam = net.spec.ipam.clone().unwrap_or_default();
        let block_len = ipam
            .block_prefix_length
            .and_then(|p| u8::try_from(p).ok())
            .unwrap_or_else(|| default_block_prefix_len(&primary));
        // Blocks come from the ipRange when there is one, else from the subnets of the
        // primary family (a block size is only meaningful within one family).
        let space: Vec<IpNet> = match ipam
            .ip_range
            .as_deref()
            .and_then(|r| r.parse::<IpNet>().ok())
        {
            Some(r) => vec![r],
            None => subnets
                .iter()
                .copied()
                .filter(|s| s.max_prefix_len() == primary.max_prefix_len())
                .collect(),
        };
        if !self.blocks.contains_key(&name) {
            let alloc = BlockAllocator::new(space, block_len).ok()?;
            self.blocks.insert(name.clone(), alloc);
        } else if let Some(alloc) = self.blocks.get_mut(&name) {
            alloc.extend_space(space);
        }
        self.blocks.get_mut(&name)
    }

    /// Allocate (or confirm) everything the network needs. `selected` are the nodes its
    /// nodeSelector picks; blocks of nodes gone or unselected are released after `grace`.
    pub fn plan(
        &mut self,
        net: &ContainerNetwork,
        selected: &BTreeSet<String>,
        grace: Duration,
        now: Instant,
    ) -> Outcome {
        let name = net.name_any();
        let mut out = Outcome::default();
        if !net.spec.driver.has_addresses() {
            return out;
        }
        let req = match request(net, self.default_pool.as_deref()) {
            Ok(r) => r,
            Err(p) => {
                out.problem = Some(p);
                return out;
            }
        };
        if let Request::FromPool { pool, .. } = &req {
            out.pools_touched.insert(pool.clone());
        }
        self.subnets
            .upsert_request(&name, claimant(net), req.clone());
        match self.subnets.allocate(&name) {
            Ok(a) => {
                out.displaced = a.displaced;
                if let Request::FromPool { pool, .. } = &req {
                    self.pool_of.insert(name.clone(), pool.clone());
                }
            }
            Err(e) => out.problem = Some(problem_from_alloc(e)),
        }
        // Whatever the network holds (also after a failed growth) is reported and used.
        let subnets = self
            .subnets
            .allocated(&name)
            .map(<[IpNet]>::to_vec)
            .unwrap_or_default();
        if subnets.is_empty() {
            return out;
        }
        let ipam = net.spec.ipam.clone().unwrap_or_default();
        let gateway = ipam
            .gateway
            .as_deref()
            .and_then(|g| g.parse::<IpAddr>().ok())
            .or_else(|| first_host(&subnets[0]));
        let excluded: Vec<IpNet> = ipam
            .excluded_ranges
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let ip_range = ipam
            .ip_range
            .as_deref()
            .and_then(|r| r.parse::<IpNet>().ok());
        out.view.addresses = capacity(&subnets, ip_range, &excluded, gateway);
        out.view.gateway = gateway;
        out.view.subnets = subnets;

        if net.spec.driver == Driver::Overlay {
            let requested = net
                .spec
                .overlay
                .as_ref()
                .and_then(|o| o.vni)
                .and_then(|v| u32::try_from(v).ok());
            match self.vnis.allocate(&name, requested) {
                Ok(v) => out.view.vni = Some(v),
                Err(e) => {
                    let reason = match e {
                        VniError::InUse { .. } => Reason::VniInUse,
                        VniError::Exhausted => Reason::VniExhausted,
                        VniError::OutOfRange { .. } => Reason::InvalidSpec,
                    };
                    out.problem
                        .get_or_insert(Problem::new(reason, e.to_string()));
                    return out;
                }
            }
        }

        if net.spec.driver.is_cluster_scope() {
            self.plan_blocks(net, selected, grace, now, &mut out);
        }
        out
    }

    fn plan_blocks(
        &mut self,
        net: &ContainerNetwork,
        selected: &BTreeSet<String>,
        grace: Duration,
        now: Instant,
        out: &mut Outcome,
    ) {
        let name = net.name_any();
        // Release blocks of nodes that have been gone (or unselected) for the grace period.
        let holders: Vec<String> = match self.block_allocator(net) {
            Some(a) => a.blocks().map(|(n, _)| n.to_string()).collect(),
            None => {
                out.problem.get_or_insert(Problem::new(
                    Reason::BadPrefixLength,
                    "spec.ipam.blockPrefixLength is larger than the network's subnets (or ipRange)",
                ));
                return;
            }
        };
        for node in holders.iter().filter(|n| !selected.contains(*n)) {
            let key = (name.clone(), node.clone());
            let since = *self.unselected_since.entry(key.clone()).or_insert(now);
            let due = since + grace;
            if now >= due {
                if let Some(a) = self.blocks.get_mut(&name) {
                    a.release(node);
                }
                self.unselected_since.remove(&key);
            } else {
                let wait = due - now;
                out.recheck_after = Some(out.recheck_after.map_or(wait, |w| w.min(wait)));
            }
        }
        for node in selected {
            self.unselected_since.remove(&(name.clone(), node.clone()));
        }
        let Some(alloc) = self.blocks.get_mut(&name) else {
            return;
        };
        let mut without = Vec::new();
        for node in selected {
            if let Err(e) = alloc.assign(node) {
                match e {
                    BlockError::Exhausted { .. } => without.push(node.clone()),
                    other => {
                        out.problem
                            .get_or_insert(Problem::new(Reason::BlockError, other.to_string()));
                    }
                }
            }
        }
        out.view.block_prefix_len = Some(alloc.block_prefix_len());
        out.view.block_capacity = Some(alloc.capacity());
        out.view.blocks = alloc.blocks().map(|(n, b)| (n.to_string(), b)).collect();
        if !without.is_empty() {
            out.problem.get_or_insert(Problem::new(
                Reason::BlocksExhausted,
                format!(
                    "the network has room for {} node blocks and all are taken; nodes without a block: {}. \
                     Set a longer spec.ipam.blockPrefixLength or append a subnet",
                    alloc.capacity(),
                    without.join(", ")
                ),
            ));
        }
    }

    /// The network is gone: free its subnets, VNI and blocks.
    pub fn release(&mut self, network: &str) -> Option<String> {
        self.subnets.release(network);
        self.vnis.release(network);
        self.blocks.remove(network);
        self.unselected_since.retain(|(n, _), _| n != network);
        self.pool_of.remove(network)
    }

    /// Addresses of a pool: (total, allocated, networks).
    pub fn pool_usage(&self, pool: &str) -> Option<weft_ipam::PoolUsage> {
        self.subnets.usage(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn net(name: &str, spec: serde_json::Value) -> ContainerNetwork {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec,
        }))
        .expect("network")
    }

    fn pool(name: &str, cidr: &str, prefix: i32, default: bool) -> Arc<AddressPool> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "weft.dev/v1alpha1", "kind": "AddressPool",
                "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"cidrs": [cidr], "prefixLength": prefix, "default": default},
            }))
            .expect("pool"),
        )
    }

    fn n(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn capacity_excludes_network_broadcast_gateway_and_excluded_ranges() {
        let gw = Some("10.0.0.1".parse().expect("ip"));
        assert_eq!(capacity(&[n("10.0.0.0/24")], None, &[], gw), 253);
        assert_eq!(
            capacity(&[n("10.0.0.0/24")], None, &[n("10.0.0.200/29")], gw),
            245
        );
        assert_eq!(
            capacity(&[n("10.0.0.0/24")], Some(n("10.0.0.128/25")), &[], gw),
            126
        );
        assert!(
            capacity(&[n("fd00::/64")], None, &[], None) > i64::MAX / 2,
            "saturates"
        );
        assert_eq!(
            capacity(&[n("10.0.0.0/24"), n("10.0.1.0/24")], None, &[], gw),
            253 + 254
        );
    }

    #[test]
    fn default_gateway_is_the_first_host_in_both_families() {
        assert_eq!(
            first_host(&n("10.0.0.0/24")),
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(
            first_host(&n("fd00:1::/64")),
            Some("fd00:1::1".parse().expect("ip"))
        );
    }

    #[test]
    fn default_block_is_six_bits_longer_within_bounds() {
        assert_eq!(default_block_prefix_len(&n("10.0.0.0/16")), 22);
        assert_eq!(default_block_prefix_len(&n("10.0.0.0/24")), 28);
        assert_eq!(
            default_block_prefix_len(&n("10.0.0.0/29")),
            29,
            "never larger than the subnet"
        );
        assert_eq!(default_block_prefix_len(&n("fd00::/64")), 70);
    }

    #[test]
    fn oldest_default_pool_wins() {
        let mut newer = (*pool("b", "10.1.0.0/16", 24, true)).clone();
        newer.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-02-01T00:00:00Z".parse().expect("time"),
            ));
        let pools = vec![
            Arc::new(newer),
            pool("a", "10.2.0.0/16", 24, true),
            pool("c", "10.3.0.0/16", 24, false),
        ];
        assert_eq!(default_pool(&pools).as_deref(), Some("a"));
    }

    #[test]
    fn plan_allocates_from_the_default_pool_and_stalls_without_one() {
        let mut a = Allocations::default();
        let none = BTreeSet::new();
        let now = Instant::now();
        let out = a.plan(
            &net("x", serde_json::json!({"driver": "bridge"})),
            &none,
            Duration::ZERO,
            now,
        );
        assert_eq!(out.problem.map(|p| p.reason), Some(Reason::NoDefaultPool));
        a.sync_pools(&[pool("default", "10.200.0.0/16", 24, true)]);
        let out = a.plan(
            &net("x", serde_json::json!({"driver": "bridge"})),
            &none,
            Duration::ZERO,
            now,
        );
        assert!(out.problem.is_none(), "{:?}", out.problem);
        assert_eq!(out.view.subnets, vec![n("10.200.0.0/24")]);
        assert_eq!(out.view.gateway, Some("10.200.0.1".parse().expect("ip")));
        // host and none have no addresses: nothing to allocate, no problem.
        let out = a.plan(
            &net("h", serde_json::json!({"driver": "host"})),
            &none,
            Duration::ZERO,
            now,
        );
        assert!(out.problem.is_none() && out.view.subnets.is_empty());
    }

    #[test]
    fn a_gone_node_keeps_its_block_for_the_grace_period() {
        let mut a = Allocations::default();
        let net = net(
            "ov",
            serde_json::json!({"driver": "overlay", "ipam": {"subnets": ["10.9.0.0/24"]}}),
        );
        let t0 = Instant::now();
        let both: BTreeSet<String> = ["n1".to_string(), "n2".to_string()].into();
        let out = a.plan(&net, &both, Duration::from_secs(10), t0);
        assert_eq!(out.view.blocks.len(), 2);
        assert!(out.view.vni.is_some_and(|v| v >= 4096));
        let only_n2: BTreeSet<String> = ["n2".to_string()].into();
        let out = a.plan(
            &net,
            &only_n2,
            Duration::from_secs(10),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(out.view.blocks.len(), 2, "kept during the grace period");
        // The grace period runs from when the controller noticed (t0 + 3 s).
        assert_eq!(out.recheck_after, Some(Duration::from_secs(10)));
        let out = a.plan(
            &net,
            &only_n2,
            Duration::from_secs(10),
            t0 + Duration::from_secs(9),
        );
        assert_eq!(out.view.blocks.len(), 2);
        let out = a.plan(
            &net,
            &only_n2,
            Duration::from_secs(10),
            t0 + Duration::from_secs(13),
        );
        assert_eq!(out.view.blocks.keys().collect::<Vec<_>>(), vec!["n2"]);
    }
}
