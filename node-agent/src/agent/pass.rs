//! One pass: inputs from the caches → plan (pure) → observe → diff → apply → report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::{Client, ResourceExt};
use serde_json::json;
use weft_api::{
    ContainerNetwork, ContainerService, NetworkAllocation, NetworkNode, NetworkNodeStatus,
    NetworkRealization, RealizationState,
};

use crate::drivers::wireguard::{self, PeerWireguard};
use crate::drivers::{NetworkInput, Networks, NodeFacts, Peer, Problem, Reason};
use crate::endpoints::manager::Endpoints;
use crate::kernel::{self, Kernel};
use crate::metrics::Metrics;
use crate::model::{KernelState, network_of_alias};
use crate::plan;

use super::caches::selects;
use super::config::{Config, MANAGER};

fn encrypted(net: &NetworkInput) -> bool {
    net.spec.overlay.as_ref().is_some_and(|o| o.encrypted)
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
pub(super) struct Agent {
    pub(super) client: Client,
    pub(super) cfg: Config,
    pub(super) kernel: Arc<Kernel>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) facts: NodeFacts,
    pub(super) endpoints: Arc<Endpoints>,
    /// Set by the resync clock: the next pass checks every endpoint.
    pub(super) resync_due: Arc<AtomicBool>,
    /// Set by the heartbeat clock: the next pass writes the NetworkNode status.
    pub(super) heartbeat_due: Arc<AtomicBool>,
    pub(super) networks: Store<ContainerNetwork>,
    pub(super) ceps: super::endpoint_watch::EndpointWatches,
    pub(super) allocations: Store<NetworkAllocation>,
    pub(super) nodes: Store<NetworkNode>,
    /// Services, for their VIPs (no endpoint may ask for one).
    pub(super) services: Store<ContainerService>,
    pub(super) last_desired: Option<KernelState>,
    pub(super) last_status: Option<(Vec<NetworkRealization>, bool)>,
    pub(super) underlay: super::node::Underlay,
    pub(super) wireguard: super::wireguard::Identity,
    /// The node's weft-dns, when it runs.
    pub(super) names: Option<Arc<super::dns::Names>>,
    /// Wakes the agent for another pass (a key rotation's next step needs one).
    pub(super) wake: Arc<tokio::sync::Notify>,
}

impl Agent {
    pub(super) fn inputs(&self) -> Networks {
        self.inputs_with(&self.nodes.state())
    }

    /// The networks as `nodes` (one snapshot of the NetworkNodes) has the peers.
    fn inputs_with(&self, nodes: &[Arc<NetworkNode>]) -> Networks {
        let mut inputs = Vec::new();
        let peers_underlay: HashMap<String, (IpAddr, Option<PeerWireguard>)> = nodes
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .filter_map(|n| {
                let underlay = n.spec.underlay_address.parse().ok()?;
                let wireguard = n.spec.wireguard.as_ref().and_then(PeerWireguard::parse);
                Some((n.name_any(), (underlay, wireguard)))
            })
            .collect();
        let ceps = self.ceps.state();
        let mut service_vips = services_vips(&self.services.state());
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
                    let (underlay, wireguard) = peers_underlay.get(n)?;
                    Some(Peer {
                        node: n.clone(),
                        underlay_address: *underlay,
                        wireguard: wireguard.clone(),
                    })
                })
                .collect();
            let service_vips = service_vips.remove(&name).unwrap_or_default();
            inputs.push(NetworkInput {
                name,
                uid,
                generation: net.metadata.generation,
                spec: net.spec.clone(),
                status: net.status.clone().unwrap_or_default(),
                blocks,
                peers,
                service_vips,
            });
        }
        Networks::new(inputs)
    }

    /// Cache the endpoints of the cluster-scope networks in `inputs` (overlay entries and
    /// names need other nodes' endpoints there; a bridge is node-local).
    pub(super) fn follow_endpoints(&mut self, inputs: &Networks) {
        self.ceps.follow(
            inputs
                .iter()
                .filter(|n| n.spec.driver.is_cluster_scope())
                .map(|n| n.name.clone())
                .collect(),
        );
    }

    /// One pass, numbered for CNI calls that wait for their ports to be published.
    pub(super) async fn pass(&mut self) -> anyhow::Result<PassReport> {
        let n = self.endpoints.pass_started();
        let result = self.pass_inner(n).await;
        // Also when the pass failed early: nobody waits forever.
        self.endpoints.pass_applied(n);
        result
    }

    async fn pass_inner(&mut self, n: u64) -> anyhow::Result<PassReport> {
        // A WireGuard rotation file that could not be read may have been mended by hand.
        self.wireguard.reread(&self.cfg.state_dir);
        // One snapshot of the nodes for the whole pass: the WireGuard acknowledgements it
        // publishes must describe the FDB entries it applied (a peer retires a key on them).
        let nodes = self.nodes.state();
        let inputs = self.inputs_with(&nodes);
        self.follow_endpoints(&inputs);
        let t = Instant::now();
        let (observed, foreign, host_ports) = self.kernel.observe_with_foreign().await?;
        let observe = t.elapsed();
        let facts = NodeFacts {
            interfaces: foreign,
            wireguard: self.wireguard.slots(),
            ..self.facts.clone()
        };
        let (mut desired, mut outcomes) = plan::plan_node(&inputs, &facts);
        // Endpoints: their publish rules and other nodes' overlay endpoints belong to the
        // node's state; their sandboxes are converged after the node is applied.
        let full_check = self.resync_due.swap(false, Ordering::SeqCst);
        let ceps = self.ceps.state();
        let peers: BTreeMap<String, IpAddr> = nodes
            .iter()
            .filter_map(|n| Some((n.name_any(), n.spec.underlay_address.parse().ok()?)))
            .collect();
        let (additions, work) = self.endpoints.plan(
            &inputs,
            &facts,
            &desired,
            &ceps,
            &peers,
            &host_ports,
            full_check,
        );
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
        if wireguard::planned(&desired)
            && let Err(e) = self
                .converge_wireguard(&nodes, report.failed.is_empty())
                .await
        {
            // Fail closed all the same: the encrypted networks' VXLAN traffic is routed
            // into the WireGuard links, which without keys and peers send nothing.
            tracing::warn!(error = format!("{e:#}"), "WireGuard not configured");
            for input in inputs.iter().filter(|i| encrypted(i)) {
                if let Some(outcome @ Ok(())) = outcomes.get_mut(&input.name) {
                    *outcome = Err(Problem::new(
                        Reason::EncryptionUnavailable,
                        format!("node {}: {e:#}", self.cfg.node_name),
                    ));
                }
            }
        }
        let endpoint_writes = self.endpoints.converge(work).await;
        if let Some(names) = &self.names {
            names.pass(super::dns::desired(
                &self.cfg.node_name,
                &inputs,
                &facts,
                &self.endpoints.attachments(),
                &self.ceps.mine(),
            ));
        }
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

    /// The WireGuard links' keys and peers, the key rotation's next step (another pass
    /// follows when it moves), and this node's published identity when it changed.
    /// `nodes`: the snapshot the pass planned from; `applied`: its kernel changes all
    /// succeeded (otherwise the acknowledgements stay as they were).
    async fn converge_wireguard(
        &mut self,
        nodes: &[Arc<NetworkNode>],
        applied: bool,
    ) -> anyhow::Result<()> {
        let (identity, moved) = self
            .wireguard
            .converge(
                &self.kernel,
                &self.cfg.state_dir,
                &self.cfg.node_name,
                nodes,
                applied,
            )
            .await?;
        if moved {
            self.wake.notify_one();
        }
        if self.wireguard.published.as_ref() != Some(&identity) {
            super::node::register(
                &self.client,
                &self.cfg,
                &self.underlay,
                &self.facts.capabilities,
                Some(&identity),
            )
            .await
            .context("publishing the WireGuard key")?;
            tracing::info!(public_key = %identity.public_key, "WireGuard key published");
            self.wireguard.published = Some(identity);
        }
        Ok(())
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
        let heartbeat_due = self.heartbeat_due.swap(false, Ordering::SeqCst);
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
        if let Err(e) = api
            .patch_status(
                &self.cfg.node_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            // Not written: the heartbeat is still due.
            if heartbeat_due {
                self.heartbeat_due.store(true, Ordering::SeqCst);
            }
            return Err(e.into());
        }
        self.metrics.status_writes.inc();
        self.last_status = Some((entries, healthy));
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
        AddRoute(r) | ReplaceRoute(r) | DeleteRoute(r) => Some(&r.link),
        AddFdb(f) | DeleteFdb(f) => Some(&f.link),
        AddNeighbour(n) | DeleteNeighbour(n) => Some(&n.link),
        SetNftTable(..) | DeleteNftTable(_) | SetSysctl { .. } => None,
    }
}

/// Every service's VIP, by network: VIP → `namespace/name`.
fn services_vips(services: &[Arc<ContainerService>]) -> HashMap<String, BTreeMap<IpAddr, String>> {
    let mut out: HashMap<String, BTreeMap<IpAddr, String>> = HashMap::new();
    for svc in services {
        let Some(vip) = svc
            .status
            .as_ref()
            .and_then(|s| s.vip.as_deref())
            .and_then(|v| v.parse::<IpAddr>().ok())
        else {
            continue;
        };
        out.entry(svc.spec.network.clone()).or_default().insert(
            vip,
            format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any()),
        );
    }
    out
}
