//! The agent loop: watch the API and the kernel, and on any change run one pass —
//! plan (pure) → observe → diff → apply the minimum → report.
//!
//! Level-triggered: a pass never looks at what changed, only at what should be. Passes run
//! one at a time; triggers that arrive during a pass coalesce into one more pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use weft_api::{
    ContainerEndpoint, ContainerNetwork, NetworkAllocation, NetworkNode, NetworkNodeStatus,
    NetworkRealization, RealizationState,
};
use weft_daemon::watch::WatchBackoff;

use crate::drivers::{NetworkInput, Networks, NodeFacts, Peer, Problem, Reason};
use crate::endpoints::manager::Endpoints;
use crate::endpoints::sandbox::SandboxPolicy;
use crate::kernel::{self, Kernel};
use crate::metrics::Metrics;
use crate::model::{KernelState, network_of_alias};
use crate::plan;

/// Field manager of everything the agent writes.
pub const MANAGER: &str = "weft-agent";

/// The agent's flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub netns: Option<PathBuf>,
    /// Hand-written ContainerEndpoints' sandboxes must lie in this directory.
    pub sandbox_dir: PathBuf,
    pub underlay_interface: Option<String>,
    pub underlay_address: Option<IpAddr>,
    /// Labels put on the NetworkNode (what nodeSelectors match).
    pub labels: BTreeMap<String, String>,
    /// Full pass even when nothing was signalled.
    pub resync: Duration,
    /// How often the NetworkNode's heartbeat is refreshed.
    pub heartbeat: Duration,
    /// Where the node's endpoint journal lives.
    pub state_dir: PathBuf,
    /// The CNI plugin's unix socket; `None` = no CNI.
    pub cni_socket: Option<PathBuf>,
    /// How long a CNI endpoint's sandbox must stay gone before the endpoint is released.
    pub gone_sandbox_grace: Duration,
}

/// The underlay as found on the node.
#[derive(Clone, Debug)]
struct Underlay {
    interface: Option<String>,
    address: IpAddr,
    mtu: u32,
}

/// What one pass did.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    pub changes: usize,
    pub writes: usize,
    pub failed: usize,
    /// Where the pass spent its time: reading the kernel, writing it, writing the API.
    pub observe: Duration,
    pub apply: Duration,
    pub report: Duration,
}

/// Why a pass ran; a pass whose desired state did not change but still had to correct the
/// kernel counts its changes as drift corrections.
struct Agent {
    client: Client,
    cfg: Config,
    kernel: Arc<Kernel>,
    metrics: Arc<Metrics>,
    facts: NodeFacts,
    endpoints: Arc<Endpoints>,
    last_full_check: Option<Instant>,
    networks: Store<ContainerNetwork>,
    ceps: Store<ContainerEndpoint>,
    allocations: Store<NetworkAllocation>,
    nodes: Store<NetworkNode>,
    last_desired: Option<KernelState>,
    last_status: Option<(Vec<NetworkRealization>, bool)>,
    last_heartbeat: Option<Instant>,
}

/// Start a reflector whose every event pokes `notify` (filtered by `relevant`).
/// Cache every `K` and wake the agent when one changes in a way that matters to it:
/// `relevant` digests the parts the agent reads, so status churn it does not read (condition
/// timestamps, node counts) costs no pass. Deletions always wake it. `None` from `relevant`
/// means "never concerns this agent".
fn watch<K>(
    client: &Client,
    notify: Arc<Notify>,
    relevant: impl Fn(&K) -> Option<u64> + Send + 'static,
    trim: fn(&mut K),
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    // Cached objects lose their managedFields and what `trim` removes: the agent never
    // reads them, and as JSON trees they would be most of the cache's memory.
    // Small pages: a page of the initial list is parsed whole (managedFields included)
    // before `trim` runs, and the agent's peak memory is set by the biggest page, not by
    // what it keeps (500 networks a page cost ~8 MiB at start).
    let events = watcher(api, watcher::Config::default().page_size(50))
        .backoff(WatchBackoff::default())
        .modify(move |o: &mut K| {
            o.managed_fields_mut().clear();
            trim(o);
        });
    let mut seen: HashMap<String, u64> = HashMap::new();
    let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
    let stream = reflector::reflector(writer, events).for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let changed = match relevant(&o) {
                    Some(d) => seen.insert(key(&o), d) != Some(d),
                    // It concerned the agent before and no longer does: that is a change.
                    None => seen.remove(&key(&o)).is_some(),
                };
                if changed {
                    notify.notify_one();
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key(&o));
                notify.notify_one();
            }
            Ok(watcher::Event::InitDone) => notify.notify_one(),
            Ok(watcher::Event::Init) => {}
            // The reflector retries with backoff; the dataplane is left as it is meanwhile.
            Err(e) => tracing::debug!(error = %e, "watch error (retrying)"),
        }
        futures::future::ready(())
    });
    tokio::spawn(stream);
    reader
}

fn digest<T: Hash>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Does the network's nodeSelector pick this node?
fn selects(net: &ContainerNetwork, labels: &BTreeMap<String, String>) -> bool {
    net.spec
        .node_selector
        .as_ref()
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

async fn find_underlay(kernel: &Kernel, cfg: &Config) -> anyhow::Result<Underlay> {
    let interface = match &cfg.underlay_interface {
        Some(i) => Some(i.clone()),
        None => kernel.default_route_interface().await?,
    };
    let info = match &interface {
        Some(name) => kernel.interface(name).await?,
        None => None,
    };
    if interface.is_some() && info.is_none() {
        anyhow::bail!("underlay interface {:?} does not exist", interface);
    }
    let address = match (cfg.underlay_address, &info) {
        (Some(a), _) => a,
        (None, Some(i)) => i
            .addresses
            .iter()
            .map(|n: &IpNet| n.addr())
            .find(|a| a.is_ipv4())
            .or_else(|| i.addresses.first().map(|n| n.addr()))
            .with_context(|| {
                format!(
                    "underlay interface {:?} has no address; set --underlay-address",
                    interface
                )
            })?,
        (None, None) => anyhow::bail!(
            "no default route to find the underlay: set --underlay-interface or --underlay-address"
        ),
    };
    let mtu = info.as_ref().and_then(|i| i.mtu).unwrap_or(1500);
    Ok(Underlay {
        interface,
        address,
        mtu,
    })
}

/// Create or update this node's NetworkNode spec and labels.
async fn register(
    client: &Client,
    cfg: &Config,
    underlay: &Underlay,
    caps: &weft_api::Capabilities,
) -> kube::Result<()> {
    let api: Api<NetworkNode> = Api::all(client.clone());
    let patch = json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "NetworkNode",
        "metadata": {"name": cfg.node_name, "labels": cfg.labels},
        "spec": {
            "underlayAddress": underlay.address.to_string(),
            "underlayInterface": underlay.interface,
            "underlayMtu": underlay.mtu,
            "capabilities": caps,
        },
    });
    api.patch(
        &cfg.node_name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Run the agent until the process ends.
pub async fn run(client: Client, cfg: Config, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let kernel = Kernel::open(cfg.netns.as_deref())
        .await
        .context("opening the network namespace")?;
    let caps = kernel.probe().await;
    let capabilities = weft_api::Capabilities {
        bridge: caps.bridge,
        vxlan: caps.vxlan,
        macvlan: caps.macvlan,
        ipvlan: caps.ipvlan,
        vlan: caps.vlan,
        nftables: caps.nftables,
    };
    let underlay = find_underlay(&kernel, &cfg).await?;
    tracing::info!(node = %cfg.node_name, underlay = %underlay.address, mtu = underlay.mtu, ?capabilities, "starting");
    // The API may be down: keep trying; the dataplane is not touched until we have the picture.
    let mut backoff = Duration::from_millis(200);
    while let Err(e) = register(&client, &cfg, &underlay, &capabilities).await {
        tracing::warn!(error = %e, "registering the NetworkNode failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }

    let notify = Arc::new(Notify::new());
    // Networks matter for their spec and allocation, not for the controller's rollup of
    // node counts and conditions (which changes as every node reports). Before the
    // controller's allocation there is nothing to program (nor to report), so a new network
    // wakes the agent once, when allocated, instead of a useless pass first that the one
    // that matters would queue behind.
    let networks = watch::<ContainerNetwork>(
        &client,
        notify.clone(),
        |n: &ContainerNetwork| {
            let s = n.status.as_ref();
            let unallocated = n.spec.driver.has_addresses()
                && s.is_none_or(|s| s.subnets.is_empty())
                && n.metadata.deletion_timestamp.is_none();
            (!unallocated).then(|| {
                digest(&(
                    serde_json::to_string(&n.spec).unwrap_or_default(),
                    n.metadata.deletion_timestamp.is_some(),
                    n.uid(),
                    s.map(|s| (&s.subnets, &s.gateway, s.vni)),
                ))
            })
        },
        |_| {},
    );
    let allocations = watch::<NetworkAllocation>(
        &client,
        notify.clone(),
        |a: &NetworkAllocation| {
            Some(digest(&(
                serde_json::to_string(&a.spec).unwrap_or_default(),
                a.uid(),
            )))
        },
        |_| {},
    );
    // Endpoints matter for their spec and, on overlays, the address and MAC they got.
    let ceps = watch::<ContainerEndpoint>(
        &client,
        notify.clone(),
        |c: &ContainerEndpoint| {
            let s = c.status.as_ref();
            Some(digest(&(
                serde_json::to_string(&c.spec).unwrap_or_default(),
                c.metadata.deletion_timestamp.is_some(),
                c.uid(),
                c.finalizers(),
                s.map(|s| (&s.address, &s.mac)),
            )))
        },
        |_| {},
    );
    // Peers matter for their underlay address and existence, not for their heartbeats.
    // Their statuses (one entry per network, on every node) are not kept at all.
    let me = cfg.node_name.clone();
    let nodes = watch::<NetworkNode>(
        &client,
        notify.clone(),
        move |n: &NetworkNode| {
            (n.name_any() != me).then(|| {
                digest(&(
                    serde_json::to_string(&n.spec).unwrap_or_default(),
                    n.metadata.deletion_timestamp.is_some(),
                ))
            })
        },
        |n| n.status = None,
    );
    // Never plan from an incomplete picture: an empty store would garbage-collect everything.
    networks.wait_until_ready().await?;
    allocations.wait_until_ready().await?;
    nodes.wait_until_ready().await?;
    ceps.wait_until_ready().await?;
    let kernel = Arc::new(kernel);
    let endpoints = Arc::new(
        Endpoints::new(
            cfg.node_name.clone(),
            MANAGER,
            kernel.clone(),
            &cfg.state_dir,
            notify.clone(),
        )
        .with_context(|| format!("opening the state directory {}", cfg.state_dir.display()))?
        .with_gone_sandbox_grace(cfg.gone_sandbox_grace)
        .with_sandbox_policy(
            SandboxPolicy::for_node(cfg.netns.as_deref(), &cfg.sandbox_dir)
                .context("reading the node's network namespaces")?,
        ),
    );

    let mut events = kernel
        .events()
        .await
        .context("subscribing to kernel events")?;
    {
        let notify = notify.clone();
        tokio::spawn(async move {
            while events.next().await.is_some() {
                notify.notify_one();
            }
        });
    }
    {
        let notify = notify.clone();
        let every = cfg.resync.min(cfg.heartbeat);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify.notify_one();
            }
        });
    }

    let facts = NodeFacts {
        node_name: cfg.node_name.clone(),
        underlay_address: underlay.address,
        underlay_interface: underlay.interface.clone(),
        underlay_mtu: underlay.mtu,
        interfaces: BTreeSet::new(),
        capabilities,
    };
    let mut agent = Agent {
        client,
        cfg,
        kernel,
        metrics,
        facts,
        endpoints: endpoints.clone(),
        last_full_check: None,
        networks,
        ceps,
        allocations,
        nodes,
        last_desired: None,
        last_status: None,
        last_heartbeat: None,
    };
    {
        let inputs = agent.inputs();
        let facts = NodeFacts {
            interfaces: agent.kernel.observe_with_foreign().await?.1,
            ..agent.facts.clone()
        };
        endpoints.restore(&agent.ceps.state(), &inputs, &facts);
    }
    tokio::spawn(endpoints.clone().release_gone_sandboxes());
    if let Some(path) = agent.cfg.cni_socket.clone() {
        crate::endpoints::socket::serve(&path, endpoints.clone())
            .await
            .with_context(|| format!("listening on the CNI socket {}", path.display()))?;
    }
    let mut first = true;
    loop {
        let started = Instant::now();
        let result = agent.pass().await;
        if first {
            first = false;
            endpoints.set_ready();
            agent
                .metrics
                .ready
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        match result {
            Ok(r) => {
                tracing::debug!(changes = r.changes, writes = r.writes, failed = r.failed, took = ?started.elapsed(), observe = ?r.observe, apply = ?r.apply, report = ?r.report, "pass")
            }
            Err(e) => tracing::warn!(error = %e, "pass failed"),
        }
        agent
            .metrics
            .pass_seconds
            .observe(started.elapsed().as_secs_f64());
        notify.notified().await;
    }
}

impl Agent {
    fn inputs(&self) -> Networks {
        let mut inputs = Vec::new();
        let peers_underlay: HashMap<String, IpAddr> = self
            .nodes
            .state()
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .filter_map(|n| Some((n.name_any(), n.spec.underlay_address.parse().ok()?)))
            .collect();
        let ceps = self.ceps.state();
        for net in self.networks.state() {
            // A network being deleted stays programmed while endpoints still use it (the
            // controller holds its deletion until they are gone), so traffic is not cut
            // under them.
            let deleting = net.metadata.deletion_timestamp.is_some()
                && !ceps.iter().any(|c| c.spec.network == net.name_any());
            if deleting || !selects(&net, &self.cfg.labels) {
                continue;
            }
            let name = net.name_any();
            let uid = net.uid().unwrap_or_default();
            let alloc = self
                .allocations
                .get(&reflector::ObjectRef::new(&name))
                .filter(|a| a.spec.network_uid == uid);
            let blocks: BTreeMap<String, IpNet> = alloc
                .iter()
                .flat_map(|a| a.spec.blocks.iter())
                .filter_map(|b| Some((b.node.clone(), b.cidr.parse().ok()?)))
                .collect();
            let peers = blocks
                .keys()
                .filter(|n| **n != self.cfg.node_name)
                .filter_map(|n| {
                    Some(Peer {
                        node: n.clone(),
                        underlay_address: *peers_underlay.get(n)?,
                    })
                })
                .collect();
            inputs.push(NetworkInput {
                name,
                uid,
                generation: net.metadata.generation,
                spec: net.spec.clone(),
                status: net.status.clone().unwrap_or_default(),
                blocks,
                peers,
            });
        }
        Networks::new(inputs)
    }

    /// One pass, numbered for CNI calls that wait for their ports to be published.
    async fn pass(&mut self) -> anyhow::Result<PassReport> {
        let n = self.endpoints.pass_started();
        let result = self.pass_inner(n).await;
        // Also when the pass failed early: nobody waits forever.
        self.endpoints.pass_applied(n);
        result
    }

    async fn pass_inner(&mut self, n: u64) -> anyhow::Result<PassReport> {
        let inputs = self.inputs();
        let t = Instant::now();
        let (observed, foreign) = self.kernel.observe_with_foreign().await?;
        let observe = t.elapsed();
        let facts = NodeFacts {
            interfaces: foreign,
            ..self.facts.clone()
        };
        let (mut desired, outcomes) = plan::plan_node(&inputs, &facts);
        // Endpoints: their publish rules and other nodes' overlay endpoints belong to the
        // node's state; their sandboxes are converged after the node is applied.
        let full_check = self
            .last_full_check
            .is_none_or(|t| t.elapsed() >= self.cfg.resync);
        if full_check {
            self.last_full_check = Some(Instant::now());
        }
        let ceps = self.ceps.state();
        let peers: BTreeMap<String, IpAddr> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| Some((n.name_any(), n.spec.underlay_address.parse().ok()?)))
            .collect();
        let (additions, work) = self
            .endpoints
            .plan(&inputs, &facts, &desired, &ceps, &peers, full_check);
        crate::endpoints::plan::add_publish_chains(&mut desired.nft, additions.publish_chains);
        desired.fdb.extend(additions.fdb);
        desired.neighbours.extend(additions.neighbours);
        let changes = kernel::diff(&desired, &observed);
        // Not needed any more; gone before the apply, where a cold start peaks.
        drop(observed);
        let drift = self.last_desired.as_ref() == Some(&desired);
        let t = Instant::now();
        let report = if changes.is_empty() {
            kernel::ApplyReport::default()
        } else {
            self.kernel.apply(&changes).await
        };
        self.metrics.kernel_writes.inc_by(report.writes as u64);
        if drift {
            for c in &changes {
                self.metrics.drift(c.kind());
            }
        }
        for (change, err) in &report.failed {
            tracing::warn!(?change, error = %err, "kernel change failed");
        }
        // Networks that still have kernel objects here (the finalizer waits for them to go).
        let still_present: BTreeSet<String> = if report.failed.is_empty() {
            desired
                .links
                .values()
                .filter_map(|l| network_of_alias(&l.alias).map(str::to_string))
                .collect()
        } else {
            self.kernel
                .observe()
                .await?
                .links
                .values()
                .filter_map(|l| network_of_alias(&l.alias).map(str::to_string))
                .collect()
        };
        let endpoint_writes = self.endpoints.converge(work).await;
        let apply = t.elapsed();
        let t = Instant::now();
        // The kernel side is done: CNI calls waiting for their ports can answer now, before
        // the API writes below.
        self.endpoints.pass_applied(n);
        self.metrics.kernel_writes.inc_by(endpoint_writes as u64);
        let reported = self
            .report_status(&inputs, &outcomes, &desired, &still_present, &report)
            .await;
        if report.failed.is_empty() {
            // Moved, not copied: it is only compared with the next pass's plan.
            self.last_desired = Some(desired);
        }
        reported?;
        let ceps = self.ceps.state();
        let status_writes = self.endpoints.publish_status(&self.client, &ceps).await?;
        self.metrics.status_writes.inc_by(status_writes as u64);
        Ok(PassReport {
            changes: changes.len(),
            writes: report.writes,
            failed: report.failed.len(),
            observe,
            apply,
            report: t.elapsed(),
        })
    }

    /// Write per-network realization (and the heartbeat) into this node's NetworkNode status,
    /// only when it changed or the heartbeat is due.
    async fn report_status(
        &mut self,
        inputs: &[NetworkInput],
        outcomes: &BTreeMap<String, Result<(), Problem>>,
        desired: &KernelState,
        still_present: &BTreeSet<String>,
        report: &kernel::ApplyReport,
    ) -> anyhow::Result<()> {
        // Networks whose kernel changes failed, found through the alias of the link involved.
        let failed_networks: BTreeSet<&str> = report
            .failed
            .iter()
            .filter_map(|(c, _)| change_link(c))
            .filter_map(|l| desired.links.get(l))
            .filter_map(|l| network_of_alias(&l.alias))
            .collect();
        let mut entries: Vec<NetworkRealization> = Vec::new();
        for input in inputs {
            let (state, reason, message) = match outcomes.get(&input.name) {
                Some(Ok(())) if failed_networks.contains(input.name.as_str()) => (
                    RealizationState::Failed,
                    Some(Reason::KernelError.to_string()),
                    Some("a kernel change failed; see the agent's log".to_string()),
                ),
                Some(Ok(())) => (RealizationState::Programmed, None, None),
                // Nothing of it can be on the node yet, and the controller knows it is not
                // allocated: no entry (and no status write on every new network's path).
                Some(Err(p)) if p.reason == Reason::NotAllocated => continue,
                Some(Err(p)) => (
                    p.state(),
                    Some(p.reason.to_string()),
                    Some(p.message.clone()),
                ),
                None => continue,
            };
            entries.push(NetworkRealization {
                name: input.name.clone(),
                uid: Some(input.uid.clone()),
                observed_generation: input.generation,
                state,
                reason,
                message,
            });
        }
        // Networks no longer wanted whose objects are still here keep an entry until gone.
        for name in still_present {
            if !entries.iter().any(|e| &e.name == name) {
                entries.push(NetworkRealization {
                    name: name.clone(),
                    uid: None,
                    observed_generation: None,
                    state: RealizationState::Pending,
                    reason: Some("Removing".into()),
                    message: Some("kernel objects of a deleted network are being removed".into()),
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let healthy = report.failed.is_empty();
        let heartbeat_due = self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= self.cfg.heartbeat);
        if !heartbeat_due && self.last_status.as_ref() == Some(&(entries.clone(), healthy)) {
            return Ok(());
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = NetworkNodeStatus {
            heartbeat_time: Some(now.clone()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if healthy { "True" } else { "False" }.into(),
                reason: if healthy { "Programmed" } else { "KernelError" }.into(),
                message: if healthy {
                    "the kernel matches every network".into()
                } else {
                    "some kernel changes failed".into()
                },
                observed_generation: None,
                last_transition_time: now,
            }],
            ..NetworkNodeStatus::default()
        }
        .with_networks(entries.clone());
        let api: Api<NetworkNode> = Api::all(self.client.clone());
        let patch =
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "NetworkNode", "status": status});
        api.patch_status(
            &self.cfg.node_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        self.metrics.status_writes.inc();
        self.last_status = Some((entries, healthy));
        self.last_heartbeat = Some(Instant::now());
        Ok(())
    }
}

/// The link a kernel change is about, if any.
fn change_link(c: &kernel::Change) -> Option<&str> {
    use kernel::Change::*;
    match c {
        CreateLink(l) | RecreateLink(l) => Some(&l.name),
        DeleteLink(n) | SetLink { name: n, .. } => Some(n),
        AddAddress(a) | DeleteAddress(a) => Some(&a.link),
        AddRoute(r) | DeleteRoute(r) => Some(&r.link),
        AddFdb(f) | DeleteFdb(f) => Some(&f.link),
        AddNeighbour(n) | DeleteNeighbour(n) => Some(&n.link),
        SetNftTable(..) | DeleteNftTable(_) | SetSysctl { .. } => None,
    }
}
