//! `ContainerNetwork`: allocate, publish the allocation, roll up node readiness, and on
//! deletion wait for every node to remove the network before releasing its addresses.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use weft_api::{
    ContainerNetwork, ContainerNetworkStatus, NETWORK_FINALIZER, NetworkAllocation,
    NetworkAllocationSpec, NetworkNode, NodeBlock, RealizationState, network::AddressCapacity,
};

use super::Context;
use crate::allocations::Outcome;
use crate::metrics::{ErrorLabels, Metrics};
use crate::{Error, MANAGER, Result, status};

/// Field manager that owns only the finalizer, so adding and removing it never touches
/// anything else and needs no read-modify-write.
const FINALIZER_MANAGER: &str = "weft-controller-finalizer";

/// Entry point for kube's Controller.
pub async fn reconcile(net: Arc<ContainerNetwork>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics
        .reconciles
        .get_or_create(&Metrics::kind("ContainerNetwork"))
        .inc();
    let has_finalizer = net.finalizers().iter().any(|f| f == NETWORK_FINALIZER);
    let result = if net.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            cleanup(&net, &ctx).await
        } else {
            // Our finalizer never landed (or cleanup is done): `cleanup` will not run, so
            // the orphan sweep deletes an allocation an earlier reconcile may have written.
            let _ = ctx.orphans.send(());
            Ok(Action::await_change())
        }
    } else {
        apply(&net, &ctx, !has_finalizer).await
    };
    ctx.metrics
        .duration
        .get_or_create(&Metrics::kind("ContainerNetwork"))
        .observe(started.elapsed().as_secs_f64());
    result
}

/// A network deleted before its finalizer landed never comes back to `cleanup`: release
/// what `apply` allocated for it (agents remove its kernel objects by garbage collection).
pub(super) async fn release_if_gone(ctx: &Context, name: &str) {
    let api: Api<ContainerNetwork> = Api::all(ctx.client.clone());
    if let Ok(None) = api.get_opt(name).await {
        release_allocation(ctx, name);
    }
}

/// Give the network's subnets and VNI back, and wake what waits for them (pool status,
/// networks that could not be allocated).
fn release_allocation(ctx: &Context, name: &str) {
    let pool = ctx
        .allocations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .release(name);
    if pool.is_some() {
        let _ = ctx.pools_changed.send(());
    }
    ctx.wake_unallocated();
}

/// Add or remove our finalizer by server-side apply of just that list entry.
async fn set_finalizer(net: &ContainerNetwork, ctx: &Context, present: bool) -> Result<()> {
    let api: Api<ContainerNetwork> = Api::all(ctx.client.clone());
    let name = net.name_any();
    let finalizers: Vec<&str> = if present {
        vec![NETWORK_FINALIZER]
    } else {
        vec![]
    };
    let patch = json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "ContainerNetwork",
        "metadata": {"name": name, "uid": net.uid(), "finalizers": finalizers},
    });
    match api
        .patch(
            &name,
            &PatchParams::apply(FINALIZER_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone (or replaced by a new object of the same name): nothing left to do.
        Err(kube::Error::Api(s)) if !present && (s.code == 404 || s.code == 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Requeue with backoff-free delay; errors are counted by label.
pub fn error_policy(_net: Arc<ContainerNetwork>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels {
            kind: "ContainerNetwork".into(),
            error: error.metric_label().into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(2))
}

/// Does a NetworkNode's labels satisfy the network's nodeSelector?
fn selects(net: &ContainerNetwork, node: &NetworkNode) -> bool {
    let labels = node.labels();
    net.spec
        .node_selector
        .as_ref()
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Why the node failed to program this network, if it reports that it did.
fn node_failure(net: &ContainerNetwork, node: &NetworkNode) -> Option<String> {
    let uid = net.uid();
    let (state, entry) = node
        .status
        .as_ref()?
        .network(&net.name_any(), uid.as_deref())?;
    if state != RealizationState::Failed {
        return None;
    }
    Some(
        entry
            .and_then(|r| r.message.clone().or_else(|| r.reason.clone()))
            .unwrap_or_else(|| "failed".into()),
    )
}

/// Does the node report (some of) this network programmed in its kernel?
fn node_has(net: &ContainerNetwork, node: &NetworkNode) -> Option<RealizationState> {
    let uid = net.uid();
    node.status
        .as_ref()?
        .network(&net.name_any(), uid.as_deref())
        .map(|(state, _)| state)
}

/// Allocate and write the status; with `add_finalizer`, also put the finalizer in place.
async fn apply(net: &ContainerNetwork, ctx: &Context, add_finalizer: bool) -> Result<Action> {
    let name = net.name_any();
    let nodes = ctx.nodes.state();
    let live_nodes = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none());
    let selected: BTreeSet<String> = live_nodes
        .filter(|n| selects(net, n))
        .map(|n| n.name_any())
        .collect();
    let nodes_ready = nodes
        .iter()
        .filter(|n| {
            selected.contains(&n.name_any())
                && node_has(net, n) == Some(RealizationState::Programmed)
        })
        .count();
    // A node that failed (not merely waiting, e.g. for a parent interface) stalls the
    // network: kstatus and Argo CD then say Failed with the node's reason instead of
    // Progressing forever.
    let node_failures: Vec<String> = nodes
        .iter()
        .filter(|n| selected.contains(&n.name_any()))
        .filter_map(|n| node_failure(net, n).map(|why| format!("{}: {why}", n.name_any())))
        .collect();

    let outcome = {
        let mut alloc = ctx.allocations.lock().unwrap_or_else(|p| p.into_inner());
        alloc.sync_pools(&ctx.pools.state());
        alloc.plan(
            net,
            &selected,
            ctx.settings.node_grace_period,
            Instant::now(),
        )
    };
    for other in &outcome.displaced {
        let _ = ctx.requeue.send(ObjectRef::new(other));
    }
    if !outcome.pools_touched.is_empty() {
        let _ = ctx.pools_changed.send(());
    }
    if net.spec.driver.is_cluster_scope() && !outcome.view.subnets.is_empty() {
        write_node_blocks(net, &outcome, ctx).await?;
    }

    let previous = net.status.clone().unwrap_or_default();
    let mut new_status = network_status(
        net,
        &outcome,
        &previous,
        nodes_ready as i32,
        selected.len() as i32,
        &node_failures,
        None,
    );
    new_status.endpoints = endpoints_of(&name, ctx);
    let held_back = if !add_finalizer {
        write_status(net, &previous, new_status, ctx).await?
    } else if weft_api::condition::is_true(&new_status.conditions, "Ready") {
        // Nobody sees the network Ready (and deletes it) before its deletion is guarded.
        if let Err(e) = set_finalizer(net, ctx, true).await {
            release_if_gone(ctx, &name).await;
            // The allocation written above may now have no network.
            let _ = ctx.orphans.send(());
            return Err(e);
        }
        write_status(net, &previous, new_status, ctx).await?
    } else {
        // Agents act on the allocation in the status, so it goes out first, the finalizer
        // right after. Not both at once: two writes to one object contend in the API server,
        // and sent together the status landed ~4 ms later in the node bench (9 instead of
        // 5 ms after the reconcile started).
        let status = write_status(net, &previous, new_status, ctx).await;
        let finalizer = set_finalizer(net, ctx, true).await;
        if finalizer.is_err() {
            release_if_gone(ctx, &name).await;
            let _ = ctx.orphans.send(());
        }
        finalizer?;
        status?
    };

    if let Some(p) = &outcome.problem {
        let was =
            weft_api::condition::find(&previous.conditions, "Stalled").map(|c| c.reason.as_str());
        if was != Some(p.reason.as_str()) {
            ctx.event(
                net,
                EventType::Warning,
                p.reason.as_str(),
                p.message.clone(),
            )
            .await;
        }
        tracing::info!(network = %name, reason = p.reason.as_str(), message = %p.message, "network stalled");
    } else if previous.subnets.is_empty() && !outcome.view.subnets.is_empty() {
        let subnets: Vec<String> = outcome.view.subnets.iter().map(|s| s.to_string()).collect();
        ctx.event(
            net,
            EventType::Normal,
            "Allocated",
            format!("subnets {}", subnets.join(", ")),
        )
        .await;
    }
    let next = [outcome.recheck_after, held_back]
        .into_iter()
        .flatten()
        .min();
    Ok(match next {
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

fn network_status(
    net: &ContainerNetwork,
    outcome: &Outcome,
    previous: &ContainerNetworkStatus,
    nodes_ready: i32,
    nodes_selected: i32,
    node_failures: &[String],
    terminating: Option<String>,
) -> ContainerNetworkStatus {
    let v = &outcome.view;
    let needs_addresses = net.spec.driver.has_addresses();
    let allocated = !needs_addresses || (!v.subnets.is_empty() && outcome.problem.is_none());
    let failed = format!(
        "{} of {nodes_selected} selected nodes failed: {}",
        node_failures.len(),
        node_failures.join("; ")
    );
    let problem = match &outcome.problem {
        Some(p) => Some((p.reason.as_str(), p.message.as_str())),
        None if !node_failures.is_empty() => Some(("NodesFailed", failed.as_str())),
        None => None,
    };
    ContainerNetworkStatus {
        observed_generation: net.metadata.generation,
        conditions: status::network_conditions(
            &previous.conditions,
            net.metadata.generation,
            allocated,
            problem,
            nodes_ready,
            nodes_selected,
            terminating,
        ),
        subnets: v.subnets.iter().map(|s| s.to_string()).collect(),
        gateway: v.gateway.map(|g| g.to_string()),
        vni: v.vni.and_then(|x| i32::try_from(x).ok()),
        nodes_selected,
        nodes_ready,
        nodes: Some(format!("{nodes_ready}/{nodes_selected}")),
        scope: Some(
            if net.spec.driver.is_cluster_scope() {
                "cluster"
            } else {
                "local"
            }
            .into(),
        ),
        endpoints: previous.endpoints,
        capacity: needs_addresses.then(|| AddressCapacity {
            addresses: v.addresses,
            block_prefix_length: v.block_prefix_len.map(i32::from),
            blocks: v.block_capacity.and_then(|c| i32::try_from(c).ok()),
        }),
    }
}

/// The network's ContainerEndpoints (not being deleted), from the controller's watch.
fn endpoints_of(network: &str, ctx: &Context) -> i32 {
    let n = ctx
        .endpoints
        .state()
        .iter()
        .filter(|e| e.spec.network == network && e.metadata.deletion_timestamp.is_none())
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Only rollup counts differ (nodes, endpoints): such writes are rate-limited per network.
fn rollup_only(a: &ContainerNetworkStatus, b: &ContainerNetworkStatus) -> bool {
    let strip = |s: &ContainerNetworkStatus| ContainerNetworkStatus {
        nodes_ready: 0,
        nodes_selected: 0,
        nodes: None,
        endpoints: 0,
        conditions: s
            .conditions
            .iter()
            .map(
                |c| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    message: String::new(),
                    last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ),
                    ..c.clone()
                },
            )
            .collect(),
        ..s.clone()
    };
    strip(a) == strip(b)
}

/// Server-side apply of the status, only when it says something new. A change of node
/// counts alone is held back to one write per rollup interval; the returned delay says when
/// to look again so the held-back counts still get written.
async fn write_status(
    net: &ContainerNetwork,
    previous: &ContainerNetworkStatus,
    new: ContainerNetworkStatus,
    ctx: &Context,
) -> Result<Option<Duration>> {
    if net.status.as_ref() == Some(&new) {
        return Ok(None);
    }
    let name = net.name_any();
    // Our own write of this very status may simply not have reached the cache yet.
    const ECHO_WINDOW: Duration = Duration::from_secs(2);
    if ctx
        .last_written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .is_some_and(|(s, at)| *s == new && at.elapsed() < ECHO_WINDOW)
    {
        return Ok(None);
    }
    if net.status.is_some() && rollup_only(previous, &new) {
        let mut last = ctx
            .last_rollup_write
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(at) = last.get(&name) {
            let since = now.duration_since(*at);
            if since < ctx.settings.rollup_interval {
                return Ok(Some(ctx.settings.rollup_interval - since));
            }
        }
        last.insert(name.clone(), now);
    }
    let api: Api<ContainerNetwork> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "ContainerNetwork",
        "status": new,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .status_writes
        .get_or_create(&Metrics::kind("ContainerNetwork"))
        .inc();
    ctx.last_written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name, (new, Instant::now()));
    Ok(None)
}

/// Publish the per-node blocks of a cluster-scope network, only when they changed.
async fn write_node_blocks(net: &ContainerNetwork, outcome: &Outcome, ctx: &Context) -> Result<()> {
    let name = net.name_any();
    let uid = net.uid().ok_or(Error::MissingMetadata)?;
    let Some(block_len) = outcome.view.block_prefix_len else {
        return Ok(());
    };
    let spec = NetworkAllocationSpec {
        network: name.clone(),
        network_uid: uid,
        block_prefix_length: i32::from(block_len),
        blocks: outcome
            .view
            .blocks
            .iter()
            .map(|(node, cidr)| NodeBlock {
                node: node.clone(),
                cidr: cidr.to_string(),
            })
            .collect(),
    };
    let current = ctx.node_blocks.get(&ObjectRef::new(&name));
    if current.as_ref().is_some_and(|c| c.spec == spec) {
        return Ok(());
    }
    let mut obj = NetworkAllocation::new(&name, spec);
    if let Some(owner) = net.controller_owner_ref(&()) {
        obj.metadata.owner_references = Some(vec![owner]);
    }
    let api: Api<NetworkAllocation> = Api::all(ctx.client.clone());
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(())
}

async fn cleanup(net: &ContainerNetwork, ctx: &Context) -> Result<Action> {
    let name = net.name_any();
    // The endpoint cache is filled by a watch the controller runs; never release a network
    // on an empty cache that has not listed yet.
    if tokio::time::timeout(Duration::from_secs(5), ctx.endpoints.wait_until_ready())
        .await
        .is_err()
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Like `docker network rm`, a network in use is not removed: its endpoints go first
    // (the agents keep it programmed meanwhile), then every node removes it.
    let mut attached: Vec<String> = ctx
        .endpoints
        .state()
        .iter()
        .filter(|e| e.spec.network == name)
        .map(|e| format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any()))
        .collect();
    attached.sort();
    let still: Vec<String> = ctx
        .nodes
        .state()
        .iter()
        .filter(|n| node_has(net, n).is_some())
        .map(|n| n.name_any())
        .collect();
    let waiting = if !attached.is_empty() {
        Some(format!(
            "deleting: waiting for {} endpoint(s) to detach: {}",
            attached.len(),
            attached.join(", ")
        ))
    } else if !still.is_empty() {
        Some(format!(
            "deleting: waiting for {} node(s) to remove the network: {}",
            still.len(),
            still.join(", ")
        ))
    } else {
        None
    };
    if let Some(msg) = waiting {
        let previous = net.status.clone().unwrap_or_default();
        let outcome = Outcome {
            view: crate::allocations::NetworkAllocationView {
                subnets: previous
                    .subnets
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                gateway: previous.gateway.as_deref().and_then(|g| g.parse().ok()),
                vni: previous.vni.and_then(|v| u32::try_from(v).ok()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut new = network_status(
            net,
            &outcome,
            &previous,
            previous.nodes_ready,
            previous.nodes_selected,
            &[],
            Some(msg),
        );
        new.capacity = previous.capacity.clone();
        write_status(net, &previous, new, ctx).await?;
        // Endpoint and node changes trigger a reconcile at once; this is the backstop.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    // The subnets are free only once no API object records them. Until the finalizer is
    // off and the object gone (a kill, an API outage or another finalizer can keep it), the
    // status still names them, and a restarted controller restores them from it, oldest
    // network first: it would take them back from a newer network handed them meanwhile,
    // whose agents and endpoints already use them. So the record goes before the memory.
    let previous = net.status.clone().unwrap_or_default();
    let mut released = network_status(
        net,
        &Outcome::default(),
        &previous,
        0,
        0,
        &[],
        Some("deleting: subnets released".into()),
    );
    released.endpoints = 0;
    write_status(net, &previous, released, ctx).await?;
    release_allocation(ctx, &name);
    ctx.last_rollup_write
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&name);
    ctx.last_written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&name);
    let api: Api<NetworkAllocation> = Api::all(ctx.client.clone());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    set_finalizer(net, ctx, false).await?;
    tracing::info!(network = %name, "released");
    Ok(Action::await_change())
}
