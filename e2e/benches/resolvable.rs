//! Endpoint created → its name resolvable on every node: from a `ContainerEndpoint`'s
//! server-side apply until a container on each node of the lab gets its address from that
//! node's `weft-dns` (owner agent attaches and reports the address; every other agent sees it
//! through its per-network watch, feeds its server; the query is answered).
//!
//! A lab of N node namespaces, each with `weft-agent` and `weft-dns` (release binaries:
//! `cargo build --release -p weft-agent -p weft-controller -p weft-dns --bins` first), one
//! overlay network, one asking container per node that queries its gateway every 2 ms.
//! Needs KUBECONFIG (the API server is reset).
//!
//! `cargo bench -p weft-e2e --bench resolvable [-- ENDPOINTS NODES]` (default 50 and 10).
//!
//! Besides the total, where the time goes: the owning node's own answer (its agent's pass:
//! attach, then feed), the address in the object's status as a watch sees it (the owner's
//! status write; what the other agents wait for), and from there to the last other node's
//! answer (their watch event, feed, index).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::json;
use weft_api::ContainerEndpoint;
use weft_e2e::cluster::Cluster;
use weft_e2e::names::wait_resolvable;
use weft_e2e::stats::Stats;

fn main() -> anyhow::Result<()> {
    weft_e2e::bench::main(run)
}

async fn run() -> anyhow::Result<()> {
    let args = weft_e2e::bench::numeric_args();
    let endpoints = args.first().copied().unwrap_or(50);
    let nodes = args.get(1).copied().unwrap_or(10);
    let started = Instant::now();
    let mut cluster = Cluster::start(nodes).await?;
    for i in 0..nodes {
        cluster.start_names(i).await?;
    }
    cluster
        .network(
            "names",
            json!({"driver": "overlay", "ipam": {"subnets": ["10.70.0.0/16"]}}),
        )
        .await?;
    // One asking container per node, Ready before the clock starts.
    let mut askers = Vec::new();
    for i in 0..nodes {
        let name = format!("asker-{i}");
        let ns = cluster.container(&name)?;
        cluster.attach(&name, "names", i, &ns, json!({})).await?;
        let cep = cluster
            .wait_endpoint(&name, "True", Duration::from_secs(60))
            .await?;
        let server = cep
            .status
            .and_then(|s| s.nameserver)
            .context("no nameserver in the asker's status")?;
        askers.push((ns, server));
    }
    // Every server answers its own asker before the clock starts.
    for (i, (ns, server)) in askers.iter().enumerate() {
        wait_resolvable(ns, server, &format!("asker-{i}"), Duration::from_secs(30))?;
    }
    println!(
        "lab of {nodes} nodes with weft-dns up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut all = Stats::new("apply → resolvable on every node");
    let mut first = Stats::new("  of which: on the first node");
    let mut owner = Stats::new("apply → resolvable on the owner");
    let mut status = Stats::new("apply → status address watched");
    let mut rest = Stats::new("status watched → all others");
    let api: Api<ContainerEndpoint> = Api::namespaced(cluster.client.clone(), "default");
    for k in 0..endpoints {
        let name = format!("ep-{k}");
        let sandbox = cluster.container(&name)?;
        let addressed = address_seen(&api, &name).await?;
        let t = Instant::now();
        cluster
            .attach(&name, "names", k % nodes, &sandbox, json!({}))
            .await?;
        let seen: Vec<Instant> = std::thread::scope(|s| {
            let asks: Vec<_> = askers
                .iter()
                .map(|(ns, server)| {
                    let name = name.as_str();
                    s.spawn(move || wait_resolvable(ns, server, name, Duration::from_secs(30)))
                })
                .collect();
            asks.into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("an asking thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<Instant>>>()
        })?;
        let last = seen.iter().max().context("no node")?;
        let earliest = seen.iter().min().context("no node")?;
        all.samples.push(last.saturating_duration_since(t));
        first.samples.push(earliest.saturating_duration_since(t));
        owner
            .samples
            .push(seen[k % nodes].saturating_duration_since(t));
        let watched = addressed.await??;
        status.samples.push(watched.saturating_duration_since(t));
        let others = seen
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k % nodes)
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(watched);
        rest.samples.push(others.saturating_duration_since(watched));
    }
    println!("ContainerEndpoint apply → name resolvable, {nodes} nodes, {endpoints} endpoints:");
    all.row();
    first.row();
    owner.row();
    status.row();
    rest.row();
    Ok(())
}

/// The instant a watch (open before this returns, so before the apply) first sees `name`
/// with an address in its status.
async fn address_seen(
    api: &Api<ContainerEndpoint>,
    name: &str,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Instant>>> {
    let mut events = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .boxed();
    let (open, opened) = tokio::sync::oneshot::channel();
    let seen = tokio::spawn(async move {
        let mut open = Some(open);
        while let Some(event) = events.next().await {
            match event? {
                watcher::Event::InitDone => {
                    if let Some(open) = open.take() {
                        let _ = open.send(());
                    }
                }
                watcher::Event::Apply(c) | watcher::Event::InitApply(c)
                    if c.status.as_ref().is_some_and(|s| s.address.is_some()) =>
                {
                    return Ok(Instant::now());
                }
                _ => {}
            }
        }
        anyhow::bail!("the watch ended")
    });
    opened.await.context("the watch never opened")?;
    Ok(seen)
}
