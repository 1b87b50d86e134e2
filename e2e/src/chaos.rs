//! A seeded chaos run: random operations with faults against a real cluster (API server,
//! controller, agents on nodes that are namespaces), with invariants checked at quiet
//! points. The same seed gives the same operations; a violation names the seed and the
//! index of the operation before it, to replay (`WEFT_CHAOS_SEED`, `WEFT_CHAOS_OPS`).
//!
//! Operations: networks created and deleted (bridge and overlay from a default pool, one
//! macvlan network on the underlay LAN), ContainerEndpoints attached and deleted, CNI ADD and
//! DEL through the real `weft-cni`, agent and controller SIGKILL + restart, API outages (a
//! proxy in front of the API server cut for 1–3 s), tampering on nodes (a host veth off its
//! bridge, a bridge deleted) and in sandboxes (interface deleted, addresses flushed, default
//! route deleted).
//!
//! Invariants at quiet points (every [`ChaosConfig::quiet_every`] operations, after the
//! cluster has settled): no overlapping subnets; no address given twice in a network; every
//! `Ready` endpoint has its address in its sandbox and reaches its gateway and, where the
//! network spans nodes, an endpoint on another node. After teardown: no Weft links, no
//! nftables rules naming a network's bridge or DNATing a port, no journal records, no API
//! objects, no stuck finalizer, the pool back at zero.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube::Api;
use serde_json::json;
use weft_api::{AddressPool, ContainerEndpoint, ContainerNetwork, NetworkAllocation};

use crate::cluster::{Cluster, OUTSIDE, reachable};
use crate::netns::{Netns, workspace_binary};
use crate::outage::ApiProxy;

/// What one run does.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub seed: u64,
    pub ops: usize,
    pub nodes: usize,
    /// Invariants are checked after this many operations (and at the end).
    pub quiet_every: usize,
}

impl ChaosConfig {
    /// From `WEFT_CHAOS_SEED` and `WEFT_CHAOS_OPS`, with these defaults.
    pub fn from_env(default_ops: usize) -> ChaosConfig {
        let seed = std::env::var("WEFT_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        let ops = std::env::var("WEFT_CHAOS_OPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_ops);
        ChaosConfig::seeded(seed, ops)
    }

    /// A fixed seed and number of operations (a seed that once found a violation, replayed
    /// on every run).
    pub fn seeded(seed: u64, ops: usize) -> ChaosConfig {
        ChaosConfig {
            seed,
            ops,
            nodes: 2,
            quiet_every: 40,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub ops: usize,
    /// Operations by kind (faults among them).
    pub done: BTreeMap<&'static str, usize>,
    pub quiet_points: usize,
    /// Ready endpoints whose address, gateway (and peer) were checked, over all quiet points.
    pub checked: usize,
    /// Each names the seed and the operation index after which it was seen.
    pub violations: Vec<String>,
    pub elapsed: Duration,
}

impl ChaosReport {
    pub fn faults(&self) -> usize {
        self.done
            .iter()
            .filter(|(k, _)| FAULTS.contains(k))
            .map(|(_, n)| n)
            .sum()
    }
}

const FAULTS: [&str; 9] = [
    "kill-agent",
    "kill-controller",
    "api-outage",
    "tamper-flush-address",
    "tamper-delete-route",
    "tamper-delete-interface",
    "tamper-host-nomaster",
    "tamper-delete-bridge",
    "cni-del-unknown",
];

/// SplitMix64: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// One endpoint the run made: hand-written or through CNI.
struct Endpoint {
    name: String,
    network: String,
    node: usize,
    sandbox: Netns,
    cni: bool,
}

struct Run {
    cluster: Cluster,
    proxy: ApiProxy,
    _proxy_dir: Netns,
    rng: Rng,
    networks: BTreeMap<String, &'static str>,
    endpoints: Vec<Endpoint>,
    next: usize,
    /// The operation under way (for the operation log).
    op: usize,
    report: ChaosReport,
    /// When the last API outage ended.
    outage_ended: Option<Instant>,
}

/// How long after an API outage an agent's watches may still be reconnecting: their backoff
/// is capped at 8 s (`weft_daemon::watch::WatchBackoff::MAX`), so one that slept through the
/// outage's end learns what changed meanwhile within that — another node's endpoint attached
/// during the outage included. A quiet point is not quiet before then.
const WATCH_RECONNECT: Duration = Duration::from_secs(8);

const SETTLE: Duration = Duration::from_secs(30);
/// At most this many networks and endpoints at a time.
const MAX_NETWORKS: usize = 8;
const MAX_ENDPOINTS: usize = 30;
const CNI_CONFIG: &str = r#"{"cniVersion":"1.1.0","name":"NET","type":"weft","network":"NET"}"#;

/// Run the whole thing: set up, `ops` operations with quiet points, teardown and the final
/// checks.
pub async fn run(cfg: &ChaosConfig) -> Result<ChaosReport> {
    let started = Instant::now();
    let proxy_dir = Netns::new("chaosproxy")?;
    let proxy = ApiProxy::start(&proxy_dir.state_dir()).await?;
    let mut cluster = Cluster::start(0).await?;
    cluster.kubeconfig_override = Some(proxy.kubeconfig().to_path_buf());
    cluster.kill_controller().await?;
    cluster.start_controller()?;
    for _ in 0..cfg.nodes {
        cluster.add_node()?;
    }
    cluster.wait_registered().await?;
    cluster
        .apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "AddressPool",
            "metadata": {"name": "chaos"},
            "spec": {"cidrs": ["10.200.0.0/16"], "prefixLength": 26, "default": true}}),
        )
        .await?;
    let mut run = Run {
        cluster,
        proxy,
        _proxy_dir: proxy_dir,
        outage_ended: None,
        rng: Rng(cfg.seed),
        networks: BTreeMap::new(),
        endpoints: Vec::new(),
        next: 0,
        op: 0,
        report: ChaosReport {
            seed: cfg.seed,
            ops: cfg.ops,
            ..ChaosReport::default()
        },
    };
    for i in 0..cfg.ops {
        run.op = i;
        let kind = run
            .step()
            .await
            .with_context(|| format!("seed {} operation {i}", cfg.seed))?;
        *run.report.done.entry(kind).or_default() += 1;
        if (i + 1) % cfg.quiet_every == 0 || i + 1 == cfg.ops {
            run.quiet_point(i).await?;
        }
    }
    run.teardown(cfg.ops).await?;
    run.report.elapsed = started.elapsed();
    Ok(run.report)
}

impl Run {
    /// One line of the operation log: what operation `op` did, to read beside a violation.
    fn note(&self, what: std::fmt::Arguments) {
        eprintln!("chaos op {} at {}: {what}", self.op, clock_now());
    }

    fn violation(&mut self, op: usize, what: String) {
        let v = format!("seed {} after operation {op}: {what}", self.report.seed);
        eprintln!("CHAOS VIOLATION: {v}");
        self.report.violations.push(v);
    }

    /// One random operation; returns its kind.
    async fn step(&mut self) -> Result<&'static str> {
        let roll = self.rng.below(100);
        // Bounded, so a long soak churns instead of piling up (its quiet points would slow
        // down with every endpoint they ping).
        let networks_full = self.networks.len() >= MAX_NETWORKS;
        let endpoints_full = self.endpoints.len() >= MAX_ENDPOINTS;
        Ok(match roll {
            0..=9 if networks_full => self.delete_network().await?,
            0..=9 => self.create_network().await?,
            10..=13 => self.delete_network().await?,
            14..=49 if endpoints_full => self.detach().await?,
            14..=37 => self.attach(false).await?,
            38..=49 => self.attach(true).await?,
            50..=63 => self.detach().await?,
            64..=67 => {
                let node = self.rng.below(self.cluster.nodes.len());
                self.note(format_args!("kill-agent node {node}"));
                self.cluster.kill_agent(node).await?;
                tokio::time::sleep(Duration::from_millis(200 + self.rng.below(800) as u64)).await;
                self.cluster.start_agent(node)?;
                "kill-agent"
            }
            68..=69 => {
                self.note(format_args!("kill-controller"));
                self.cluster.kill_controller().await?;
                tokio::time::sleep(Duration::from_millis(200 + self.rng.below(800) as u64)).await;
                self.cluster.start_controller()?;
                "kill-controller"
            }
            70..=72 => {
                self.note(format_args!("api-outage"));
                self.proxy.cut();
                tokio::time::sleep(Duration::from_millis(1000 + self.rng.below(2000) as u64)).await;
                self.proxy.restore();
                self.outage_ended = Some(Instant::now());
                "api-outage"
            }
            73..=76 => self.tamper_sandbox(
                "tamper-flush-address",
                &["ip", "addr", "flush", "dev", "eth0"],
            ),
            77..=80 => {
                self.tamper_sandbox("tamper-delete-route", &["ip", "route", "del", "default"])
            }
            81..=84 => {
                self.tamper_sandbox("tamper-delete-interface", &["ip", "link", "del", "eth0"])
            }
            85..=88 => self.tamper_host_nomaster(),
            89..=90 => self.tamper_delete_bridge(),
            91 => {
                // DEL of a container nobody knows succeeds and changes nothing.
                let node = self.rng.below(self.cluster.nodes.len());
                self.cni_del(node, "nobody", "", "pods").await?;
                "cni-del-unknown"
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(self.rng.below(300) as u64)).await;
                "pause"
            }
        })
    }

    async fn create_network(&mut self) -> Result<&'static str> {
        self.next += 1;
        let macvlan_free = !self.networks.values().any(|d| *d == "macvlan");
        let (driver, spec) = match self.rng.below(5) {
            0 if macvlan_free => (
                "macvlan",
                json!({"driver": "macvlan", "macvlan": {"parent": "eth0"},
                    "ipam": {"subnets": ["192.0.2.0/24"], "gateway": OUTSIDE, "ipRange": "192.0.2.128/25"}}),
            ),
            0..=2 => ("bridge", json!({"driver": "bridge"})),
            _ => ("overlay", json!({"driver": "overlay"})),
        };
        let name = format!("n{}", self.next);
        self.note(format_args!("create-network {name} ({driver})"));
        self.cluster.network(&name, spec).await?;
        self.networks.insert(name, driver);
        Ok("create-network")
    }

    async fn delete_network(&mut self) -> Result<&'static str> {
        let names: Vec<String> = self.networks.keys().cloned().collect();
        let Some(name) = self.rng.pick(&names).cloned() else {
            return Ok("delete-network-none");
        };
        self.note(format_args!("delete-network {name}"));
        let api: Api<ContainerNetwork> = Api::all(self.cluster.client.clone());
        match api.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        self.networks.remove(&name);
        Ok("delete-network")
    }

    async fn attach(&mut self, cni: bool) -> Result<&'static str> {
        let candidates: Vec<String> = self
            .networks
            .iter()
            .filter(|(_, d)| !cni || **d == "bridge")
            .map(|(n, _)| n.clone())
            .collect();
        let Some(network) = self.rng.pick(&candidates).cloned() else {
            return Ok("attach-none");
        };
        let node = self.rng.below(self.cluster.nodes.len());
        self.next += 1;
        let name = format!("e{}", self.next);
        let sandbox = Netns::new("cx")?;
        self.note(format_args!(
            "{} {name} to {network} on node {node} in {}",
            if cni { "cni-add" } else { "attach" },
            sandbox.path().display()
        ));
        if cni {
            let path = sandbox.path().display().to_string();
            let code = self.cni(node, "ADD", &name, &path, &network)?;
            if code != 0 {
                // Not programmed yet ("try again later"), refused, or the agent restarting:
                // the runtime calls DEL, and nothing must remain.
                self.note(format_args!("cni-add {name} refused ({code}): DEL"));
                self.cni_del(node, &name, &path, &network).await?;
                return Ok("cni-add-refused");
            }
        } else {
            self.cluster
                .attach(&name, &network, node, &sandbox, json!({}))
                .await?;
        }
        self.endpoints.push(Endpoint {
            name,
            network,
            node,
            sandbox,
            cni,
        });
        Ok(if cni { "cni-add" } else { "attach" })
    }

    async fn detach(&mut self) -> Result<&'static str> {
        if self.endpoints.is_empty() {
            return Ok("detach-none");
        }
        let i = self.rng.below(self.endpoints.len());
        let ep = self.endpoints.remove(i);
        self.note(format_args!(
            "{} {} from {} on node {}",
            if ep.cni { "cni-del" } else { "detach" },
            ep.name,
            ep.network,
            ep.node
        ));
        if ep.cni {
            let path = ep.sandbox.path().display().to_string();
            self.cni_del(ep.node, &ep.name, &path, &ep.network).await?;
            Ok("cni-del")
        } else {
            match self.cluster.detach(&ep.name).await {
                Ok(()) => {}
                Err(e) if format!("{e:#}").contains("404") => {}
                Err(e) => return Err(e),
            }
            Ok("detach")
        }
    }

    fn tamper_sandbox(&mut self, kind: &'static str, cmd: &[&str]) -> &'static str {
        if let Some(i) = (!self.endpoints.is_empty()).then(|| self.rng.below(self.endpoints.len()))
        {
            // May fail (not attached yet): tampering is best effort.
            let r = self.endpoints[i].sandbox.try_exec(cmd);
            self.note(format_args!(
                "{kind} in {} ({}): {}",
                self.endpoints[i].name,
                self.endpoints[i].network,
                if r { "done" } else { "failed" }
            ));
        }
        kind
    }

    fn tamper_host_nomaster(&mut self) -> &'static str {
        let node = self.rng.below(self.cluster.nodes.len());
        let hosts: Vec<String> = link_names(&self.cluster.nodes[node].ns)
            .into_iter()
            .filter(|n| n.starts_with("wfe"))
            .collect();
        if let Some(h) = self.rng.pick(&hosts).cloned() {
            self.note(format_args!("tamper-host-nomaster {h} on node {node}"));
            let _ = self.cluster.nodes[node]
                .ns
                .try_exec(&["ip", "link", "set", &h, "nomaster"]);
        }
        "tamper-host-nomaster"
    }

    fn tamper_delete_bridge(&mut self) -> &'static str {
        let node = self.rng.below(self.cluster.nodes.len());
        let bridges: Vec<String> = link_names(&self.cluster.nodes[node].ns)
            .into_iter()
            .filter(|n| n.starts_with("wfb-"))
            .collect();
        if let Some(b) = self.rng.pick(&bridges).cloned() {
            self.note(format_args!("tamper-delete-bridge {b} on node {node}"));
            let _ = self.cluster.nodes[node]
                .ns
                .try_exec(&["ip", "link", "del", &b]);
        }
        "tamper-delete-bridge"
    }

    /// CNI DEL as a runtime does it: retried while the agent cannot answer (restarting, or
    /// cut off from the API); a DEL that keeps failing is an error.
    async fn cni_del(
        &self,
        node: usize,
        container: &str,
        netns: &str,
        network: &str,
    ) -> Result<()> {
        let deadline = Instant::now() + crate::patience(SETTLE);
        loop {
            let code = self.cni(node, "DEL", container, netns, network)?;
            if code == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "CNI DEL of {container} on node {node} kept failing: {code}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One call of the real `weft-cni` on node `node`; returns its exit code.
    fn cni(
        &self,
        node: usize,
        command: &str,
        container: &str,
        netns: &str,
        network: &str,
    ) -> Result<i32> {
        let mut child = Command::new(workspace_binary("weft-cni")?)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}"),
            )
            .env("WEFT_CNI_SOCKET", self.cluster.nodes[node].cni_socket())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("spawn weft-cni")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(CNI_CONFIG.replace("NET", network).as_bytes())?;
        Ok(child.wait()?.code().unwrap_or(-1))
    }

    /// Settle, then check the invariants.
    async fn quiet_point(&mut self, op: usize) -> Result<()> {
        self.report.quiet_points += 1;
        let api: Api<ContainerEndpoint> = Api::namespaced(self.cluster.client.clone(), "default");
        let nets: Api<ContainerNetwork> = Api::all(self.cluster.client.clone());
        if let Some(ended) = self.outage_ended {
            let reconnected = ended + WATCH_RECONNECT + Duration::from_millis(500);
            tokio::time::sleep_until(reconnected.into()).await;
        }
        // Settled: every endpoint we hold has a Ready condition that has not changed for a
        // while (Ready or a stable reason) — repairs are event-driven, so a second is plenty.
        let deadline = Instant::now() + crate::patience(SETTLE);
        let mut last = String::new();
        let mut stable_since = Instant::now();
        loop {
            let ceps = api.list(&Default::default()).await?;
            let picture: String = ceps
                .items
                .iter()
                .map(|c| format!("{}={};", kube::ResourceExt::name_any(c), ready_of(c).0))
                .collect();
            if picture != last {
                last = picture;
                stable_since = Instant::now();
            } else if stable_since.elapsed() > Duration::from_secs(2) {
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.note(format_args!(
            "quiet point: settled {:.1} s after the last operation",
            (Instant::now() + crate::patience(SETTLE) - deadline).as_secs_f64()
        ));
        let ceps = api.list(&Default::default()).await?.items;
        let networks = nets.list(&Default::default()).await?.items;

        // No overlapping subnets.
        let subnets: Vec<(String, ipnet::IpNet)> = networks
            .iter()
            .flat_map(|n| {
                let name = kube::ResourceExt::name_any(n);
                n.status
                    .iter()
                    .flat_map(|s| s.subnets.clone())
                    .filter_map(move |s| Some((name.clone(), s.parse().ok()?)))
            })
            .collect();
        for (i, (a, sa)) in subnets.iter().enumerate() {
            for (b, sb) in &subnets[i + 1..] {
                if sa.contains(&sb.network()) || sb.contains(&sa.network()) {
                    self.violation(op, format!("subnets overlap: {a} {sa} and {b} {sb}"));
                }
            }
        }
        // No address twice in a network: bridge networks are node-local (the whole subnet on
        // every node, as Docker's), cluster-scope ones span the nodes.
        let mut seen: BTreeMap<(String, String, String), String> = BTreeMap::new();
        for c in &ceps {
            let Some(addr) = c.status.as_ref().and_then(|s| s.address.clone()) else {
                continue;
            };
            let name = kube::ResourceExt::name_any(c);
            let scope = match self.networks.get(&c.spec.network) {
                Some(&"bridge") | None => c.spec.node.clone(),
                Some(_) => String::new(),
            };
            let key = (c.spec.network.clone(), scope, addr.clone());
            if let Some(other) = seen.insert(key, name.clone()) {
                self.violation(op, format!("address {addr} given to {name} and {other}"));
            }
        }
        // Every Ready endpoint: its address in place, its gateway and a peer on another
        // node reachable.
        let ready: BTreeMap<String, (String, String, Option<String>)> = ceps
            .iter()
            .filter(|c| ready_of(c).0 == "True")
            .filter_map(|c| {
                let s = c.status.as_ref()?;
                Some((
                    kube::ResourceExt::name_any(c),
                    (
                        c.spec.network.clone(),
                        s.address.clone()?,
                        s.gateway.clone(),
                    ),
                ))
            })
            .collect();
        let mut problems = Vec::new();
        let mut broken = Vec::new();
        let mut checked = 0;
        for (index, ep) in self.endpoints.iter().enumerate() {
            let Some((network, address, gateway)) = ready.get(&ep.name) else {
                continue;
            };
            checked += 1;
            let plain = address.split('/').next().unwrap_or(address);
            let addrs = ep
                .sandbox
                .exec(&["ip", "-o", "addr", "show"])
                .unwrap_or_default();
            if !addrs.contains(&format!("inet {plain}/")) {
                problems.push(format!(
                    "{} is Ready but {plain} is not in its sandbox",
                    ep.name
                ));
                broken.push(Broken {
                    index,
                    target: None,
                    peer: None,
                });
                continue;
            }
            if let Some(gw) = gateway
                && !reachable(&ep.sandbox, gw, Duration::from_secs(3)).await
            {
                problems.push(format!(
                    "{} is Ready but cannot reach its gateway {gw}",
                    ep.name
                ));
                broken.push(Broken {
                    index,
                    target: Some(gw.clone()),
                    peer: None,
                });
                continue;
            }
            let driver = self.networks.get(network).copied().unwrap_or("bridge");
            if driver != "bridge"
                && let Some((peer_index, (_, peer, _))) = self
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.network == *network && o.node != ep.node)
                    .find_map(|(i, o)| Some((i, ready.get(&o.name)?)))
                && !reachable(
                    &ep.sandbox,
                    peer.split('/').next().unwrap_or(peer),
                    Duration::from_secs(3),
                )
                .await
            {
                problems.push(format!(
                    "{} is Ready but cannot reach {peer} ({}) on another node",
                    ep.name, self.endpoints[peer_index].name
                ));
                broken.push(Broken {
                    index,
                    target: Some(peer.split('/').next().unwrap_or(peer).to_string()),
                    peer: Some(peer_index),
                });
            }
        }
        self.report.checked += checked;
        if !problems.is_empty() {
            // What the kernel and the API show for each, to tell a slow repair from a lost
            // one: now, and again a few seconds later.
            for when in ["now", "5 s later"] {
                if when != "now" {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                let ceps = api.list(&Default::default()).await?.items;
                for b in &broken {
                    let ep = &self.endpoints[b.index];
                    let mut picture = self.picture_of(ep, &ceps);
                    if let Some(target) = &b.target {
                        let node = &self.cluster.nodes[ep.node].ns;
                        let reached = reachable(&ep.sandbox, target, Duration::from_secs(1)).await;
                        let neigh = node
                            .exec(&["ip", "neigh", "show", "to", target])
                            .unwrap_or_default();
                        picture.push_str(&format!(
                            "\n  {target} reachable: {reached}; node's neighbour entry: {}",
                            neigh.trim()
                        ));
                    }
                    if let Some(p) = b.peer {
                        let peer = &self.endpoints[p];
                        let mac = ceps
                            .iter()
                            .find(|c| kube::ResourceExt::name_any(*c) == peer.name)
                            .and_then(|c| c.status.as_ref()?.mac.clone())
                            .unwrap_or_default();
                        let fdb = self.cluster.nodes[ep.node]
                            .ns
                            .exec(&["bridge", "fdb", "show"])
                            .unwrap_or_default();
                        let entries: Vec<&str> = fdb
                            .lines()
                            .filter(|l| !mac.is_empty() && l.contains(&mac))
                            .collect();
                        picture.push_str(&format!(
                            "\n  peer {mac}: fdb on this node {entries:?}\n  peer: {}",
                            self.picture_of(peer, &ceps)
                        ));
                    }
                    eprintln!("chaos: {when}: {picture}");
                }
            }
        }
        for p in problems {
            self.violation(op, p);
        }
        Ok(())
    }

    /// One endpoint as the API and the kernel show it (for a violation's log).
    fn picture_of(&self, ep: &Endpoint, ceps: &[ContainerEndpoint]) -> String {
        let cep = ceps
            .iter()
            .find(|c| kube::ResourceExt::name_any(*c) == ep.name);
        let condition = cep
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| {
                format!(
                    "{} {} since {}: {}",
                    c.status, c.reason, c.last_transition_time.0, c.message
                )
            })
            .unwrap_or_default();
        let host = cep
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.host_interface.clone())
            .unwrap_or_default();
        let node = &self.cluster.nodes[ep.node].ns;
        let host_link = if host.is_empty() {
            String::new()
        } else {
            node.exec(&["ip", "-d", "-o", "link", "show", &host])
                .unwrap_or_else(|e| format!("{e:#}"))
        };
        let sandbox = ep
            .sandbox
            .exec(&["ip", "-o", "addr", "show"])
            .unwrap_or_default();
        let routes = ep.sandbox.exec(&["ip", "route"]).unwrap_or_default();
        format!(
            "{} on node {} ({}): Ready {condition}\n  host {host}: {}\n  sandbox addresses: {}\n  sandbox routes: {}",
            ep.name,
            ep.node,
            if ep.cni { "cni" } else { "object" },
            host_link.trim(),
            sandbox.trim().replace('\n', "\n    "),
            routes.trim().replace('\n', "; ")
        )
    }

    /// Delete everything and check that nothing is left.
    async fn teardown(&mut self, op: usize) -> Result<()> {
        while !self.endpoints.is_empty() {
            self.detach().await?;
        }
        let nets: Api<ContainerNetwork> = Api::all(self.cluster.client.clone());
        for name in self.networks.keys().cloned().collect::<Vec<_>>() {
            let _ = nets.delete(&name, &Default::default()).await;
        }
        self.networks.clear();
        let client = self.cluster.client.clone();
        let gone = crate::wait_for(crate::patience(Duration::from_secs(60)), || {
            let client = client.clone();
            async move {
                let ceps: Api<ContainerEndpoint> = Api::all(client.clone());
                let nets: Api<ContainerNetwork> = Api::all(client.clone());
                let allocs: Api<NetworkAllocation> = Api::all(client.clone());
                let empty = ceps.list(&Default::default()).await?.items.is_empty()
                    && nets.list(&Default::default()).await?.items.is_empty()
                    && allocs.list(&Default::default()).await?.items.is_empty();
                Ok(empty.then_some(()))
            }
        })
        .await;
        if gone.is_err() {
            let nets: Vec<String> = Api::<ContainerNetwork>::all(client.clone())
                .list(&Default::default())
                .await?
                .items
                .iter()
                .map(|n| {
                    format!(
                        "{} (finalizers {:?})",
                        kube::ResourceExt::name_any(n),
                        n.metadata.finalizers
                    )
                })
                .collect();
            let ceps: Vec<String> = Api::<ContainerEndpoint>::all(client.clone())
                .list(&Default::default())
                .await?
                .items
                .iter()
                .map(kube::ResourceExt::name_any)
                .collect();
            let allocs: Vec<String> = Api::<NetworkAllocation>::all(client.clone())
                .list(&Default::default())
                .await?
                .items
                .iter()
                .map(kube::ResourceExt::name_any)
                .collect();
            self.violation(
                op,
                format!(
                    "API objects left after teardown: networks {nets:?}, endpoints {ceps:?}, allocations {allocs:?}"
                ),
            );
        }
        // Pools back at zero.
        let pools: Api<AddressPool> = Api::all(client.clone());
        let zero = crate::wait_for(crate::patience(Duration::from_secs(20)), || {
            let pools = pools.clone();
            async move {
                let p = pools.get("chaos").await?;
                Ok(p.status
                    .filter(|s| s.networks == 0 && s.allocated_addresses == 0)
                    .map(|_| ()))
            }
        })
        .await;
        if zero.is_err() {
            self.violation(op, "the pool is not back at zero after teardown".into());
        }
        // No Weft links, no journal records on any node.
        let mut left = Vec::new();
        for i in 0..self.cluster.nodes.len() {
            let node = &self.cluster.nodes[i];
            let seen = std::sync::Mutex::new(BTreeSet::new());
            let leftover = crate::wait_for(crate::patience(Duration::from_secs(20)), || {
                let ns = &node.ns;
                let seen = &seen;
                async move {
                    let left: BTreeSet<String> = link_names(ns)
                        .into_iter()
                        .filter(|n| n.starts_with("wf"))
                        .collect();
                    let empty = left.is_empty();
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = left;
                    Ok(empty.then_some(()))
                }
            })
            .await;
            if leftover.is_err() {
                let seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
                let links = node
                    .ns
                    .exec(&["ip", "-d", "-o", "link", "show"])
                    .unwrap_or_default();
                let details: Vec<&str> = links
                    .lines()
                    .filter(|l| seen.iter().any(|n| l.contains(&format!(": {n}"))))
                    .collect();
                left.push(format!(
                    "{}: Weft links left 20 s after teardown: {seen:?}; now: {details:?}",
                    node.name
                ));
            }
            // No nftables rule naming a network's bridge or DNATing a published port.
            let ruleset = node
                .ns
                .exec(&["nft", "list", "ruleset"])
                .unwrap_or_default();
            let leaked: Vec<&str> = ruleset
                .lines()
                .filter(|l| names_a_bridge(l) || l.contains("dnat"))
                .collect();
            if !leaked.is_empty() {
                left.push(format!("{}: nftables rules left: {leaked:?}", node.name));
            }
            let journal = node.ns.state_dir().join("endpoints");
            let records: Vec<String> = std::fs::read_dir(&journal)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".json"))
                        .collect()
                })
                .unwrap_or_default();
            if !records.is_empty() {
                left.push(format!("{}: journal records left: {records:?}", node.name));
            }
        }
        for what in left {
            self.violation(op, what);
        }
        Ok(())
    }
}

/// The UTC time of day, `HH:MM:SS.mmm`, to read the operation log beside the daemons' logs.
fn clock_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    )
}

/// A Ready endpoint that failed a check: which, what it could not reach (its gateway or a
/// peer's address) and the peer (an index into the run's endpoints).
struct Broken {
    index: usize,
    target: Option<String>,
    peer: Option<usize>,
}

/// (status, reason) of an endpoint's Ready condition.
fn ready_of(c: &ContainerEndpoint) -> (String, String) {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

/// Does an nft rule name one network's bridge (`wfb-` and its hex tag, not the `wfb-*`
/// wildcard of the isolation rules)?
fn names_a_bridge(line: &str) -> bool {
    line.match_indices("wfb-")
        .any(|(i, m)| line[i + m.len()..].starts_with(|c: char| c.is_ascii_hexdigit()))
}

/// The names of a namespace's links.
fn link_names(ns: &Netns) -> Vec<String> {
    ns.exec(&["ip", "-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}
