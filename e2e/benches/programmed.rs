//! Apply → programmed on every node: how long from a `ContainerNetwork`'s server-side apply
//! until its status says Ready on all nodes (each node's agent has programmed its kernel and
//! reported it, and the controller has rolled that up).
//!
//! A lab of N node namespaces, each with its own `weft-agent`, and one `weft-controller`
//! (release binaries: `cargo build --release --workspace --bins` first). Overlay networks,
//! so every node programs every network (bridge, VXLAN, FDB to every peer). Two runs: one
//! network at a time, then all of them in one burst, as a GitOps sync applies a folder.
//! Ready is observed through a watch, not polling. Needs KUBECONFIG (the API server is reset).
//!
//! `cargo bench -p weft-e2e --bench programmed [-- NETWORKS NODES]` (default 50 and 10).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::mpsc;
use weft_api::ContainerNetwork;
use weft_e2e::cluster::Cluster;
use weft_e2e::stats::Stats;

/// Names of networks as they become Ready on `nodes` nodes, with the instant seen.
fn watch_ready(cluster: &Cluster, nodes: i32) -> mpsc::UnboundedReceiver<(String, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let api: Api<ContainerNetwork> = Api::all(cluster.client.clone());
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(net)) = events.next().await {
            let ready = net.status.as_ref().is_some_and(|s| {
                s.nodes_ready == nodes
                    && weft_api::condition::find(&s.conditions, "Ready")
                        .is_some_and(|c| c.status == "True")
            });
            if ready && tx.send((net.name_any(), Instant::now())).is_err() {
                break;
            }
        }
    });
    rx
}

/// Names of networks as the last of `nodes` NetworkNodes reports them Programmed.
fn watch_programmed(cluster: &Cluster, nodes: usize) -> mpsc::UnboundedReceiver<(String, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let api: Api<weft_api::NetworkNode> = Api::all(cluster.client.clone());
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        let mut by_network: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
        while let Some(Ok(node)) = events.next().await {
            for name in node.status.iter().flat_map(|s| s.programmed.iter()) {
                let set = by_network.entry(name.clone()).or_default();
                if set.insert(node.name_any())
                    && set.len() == nodes
                    && tx.send((name.clone(), Instant::now())).is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

fn overlay(i: usize) -> serde_json::Value {
    json!({"driver": "overlay", "ipam": {"subnets": [format!("10.{}.{}.0/24", 100 + i / 256, i % 256)]}})
}

async fn wait_all(
    rx: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    applied: &HashMap<String, Instant>,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let mut pending: HashMap<String, Instant> = applied.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        let (name, at) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("{} networks never became Ready", pending.len()))?
            .context("watch ended")?;
        if let Some(start) = pending.remove(&name) {
            stats.samples.push(at.saturating_duration_since(start));
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    weft_e2e::bench::main(run)
}

async fn run() -> anyhow::Result<()> {
    let args = weft_e2e::bench::numeric_args();
    let networks = args.first().copied().unwrap_or(50);
    let nodes = args.get(1).copied().unwrap_or(10);
    let started = Instant::now();
    let cluster = Cluster::start(nodes).await?;
    // Every agent registered and ready before the clock starts.
    weft_e2e::wait_for(Duration::from_secs(60), || async {
        let api: Api<weft_api::NetworkNode> = Api::all(cluster.client.clone());
        let n = api.list(&Default::default()).await?.items.len();
        Ok((n == nodes).then_some(()))
    })
    .await?;
    println!(
        "lab of {nodes} nodes up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut rx = watch_ready(&cluster, nodes as i32);
    let mut programmed_rx = watch_programmed(&cluster, nodes);
    let mut programmed = Stats::new("  of which: all nodes programmed");

    let mut one_by_one = Stats::new("one at a time");
    for i in 0..networks {
        let name = format!("seq-{i}");
        let t = Instant::now();
        cluster.network(&name, overlay(i)).await?;
        let applied = HashMap::from([(name, t)]);
        wait_all(&mut rx, &applied, &mut one_by_one).await?;
        wait_all(&mut programmed_rx, &applied, &mut programmed).await?;
    }

    let mut burst = Stats::new("burst (all applied at once)");
    let mut burst_programmed = Stats::new("  of which: all nodes programmed");
    let mut applied = HashMap::new();
    for i in 0..networks {
        let name = format!("burst-{i}");
        applied.insert(name.clone(), Instant::now());
        cluster.network(&name, overlay(networks + i)).await?;
    }
    wait_all(&mut rx, &applied, &mut burst).await?;
    wait_all(&mut programmed_rx, &applied, &mut burst_programmed).await?;

    println!("apply → Ready on all {nodes} nodes, {networks} overlay networks:");
    one_by_one.row();
    programmed.row();
    burst.row();
    burst_programmed.row();
    Ok(())
}
