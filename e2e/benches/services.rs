//! One endpoint change → the services table updated on every node: from the server-side apply
//! that moves a ContainerEndpoint into (or out of) a ContainerService's selector until each
//! node's `ip weft-svc` table balances over the new endpoint count. Each node's
//! `nft monitor` reports the moment: the VIP's element now jumps to `lb-4` (or back to
//! `lb-3`). Every agent sees the label change through its own watch, plans and applies.
//!
//! A lab of N node namespaces with their agents (release binaries: `cargo build --release
//! -p weft-agent -p weft-controller --bins` first), one overlay network, SERVICES services
//! over the same 3 endpoints (the first is `web`), and a fourth endpoint that moves in and
//! out of `web`. Needs KUBECONFIG (the API server is reset).
//!
//! `cargo bench -p weft-e2e --bench services [-- ROUNDS NODES SERVICES]` (default 100, 10
//! and 100).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use weft_e2e::cluster::Cluster;
use weft_e2e::netns::Netns;
use weft_e2e::stats::Stats;
use weft_e2e::wait_for;

const NETWORK: &str = "svc";

/// `nft monitor` of one node's elements, each line sent with the moment it arrived.
struct Monitor(Child);

impl Monitor {
    fn start(
        node: usize,
        ns: &Netns,
        lines: mpsc::Sender<(usize, Instant, String)>,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "stdbuf",
                "-oL",
                "nft",
                "monitor",
                "elements",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nft monitor")?;
        let out = child.stdout.take().context("nft monitor has no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if lines.send((node, Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Monitor(child))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn endpoint(name: &str, node: &str, sandbox: &Netns, labels: Value) -> Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"network": NETWORK, "node": node,
                 "sandbox": sandbox.path().display().to_string()}})
}

fn service(name: &str, selector: Value) -> Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"network": NETWORK, "selector": {"matchLabels": selector},
                 "ports": [{"port": 80, "targetPort": 8080}]}})
}

fn main() -> anyhow::Result<()> {
    weft_e2e::bench::main(run)
}

async fn run() -> anyhow::Result<()> {
    let args = weft_e2e::bench::numeric_args();
    let rounds = args.first().copied().unwrap_or(100);
    let nodes = args.get(1).copied().unwrap_or(10);
    let services = args.get(2).copied().unwrap_or(100).max(1);
    let started = Instant::now();
    let cluster = Cluster::start(nodes).await?;
    cluster
        .network(
            NETWORK,
            json!({"driver": "overlay", "ipam": {"subnets": ["10.71.0.0/16"]}}),
        )
        .await?;
    let mut sandboxes = Vec::new();
    for i in 0..4 {
        let name = format!("ep-{i}");
        let sandbox = cluster.container(&name)?;
        let labels = if i < 3 {
            json!({"app": "web", "role": "fill"})
        } else {
            json!({"app": "off"})
        };
        cluster
            .apply(endpoint(
                &name,
                &cluster.nodes[i % nodes].name,
                &sandbox,
                labels,
            ))
            .await?;
        sandboxes.push(sandbox);
    }
    for i in 0..4 {
        cluster
            .wait_endpoint(&format!("ep-{i}"), "True", Duration::from_secs(60))
            .await?;
    }
    cluster.apply(service("web", json!({"app": "web"}))).await?;
    for i in 1..services {
        cluster
            .apply(service(&format!("fill-{i}"), json!({"role": "fill"})))
            .await?;
    }
    let vip = wait_for(Duration::from_secs(60), || async {
        let svc = cluster.get_raw("ContainerService", "web").await?;
        Ok(svc["status"]["vip"].as_str().map(str::to_string))
    })
    .await
    .context("the controller never gave `web` its VIP")?;
    let element = |n: usize| format!("{vip} . tcp . 80 : goto lb-{n}");
    // Every node balances web over its 3 endpoints before the clock starts.
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(60), || async {
            let listed = node
                .ns
                .exec(&["nft", "list", "map", "ip", "weft-svc", "services"])
                .unwrap_or_default();
            Ok(listed.contains(&element(3)).then_some(()))
        })
        .await
        .with_context(|| format!("{} never programmed web", node.name))?;
    }
    println!(
        "lab of {nodes} nodes, {services} services programmed in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (tx, rx) = mpsc::channel();
    let _monitors = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| Monitor::start(i, &node.ns, tx.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Time for the monitors to subscribe; round 0 is a warm-up, not counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mover = &cluster.nodes[3 % nodes].name;
    let mut all = Stats::new("label patch → every node updated");
    let mut first = Stats::new("  of which: the first node");
    let mut applied = Stats::new("  of which: the apply's answer");
    for round in 0..=rounds {
        let (app, n) = if round % 2 == 0 {
            ("web", 4)
        } else {
            ("off", 3)
        };
        while rx.try_recv().is_ok() {}
        let t = Instant::now();
        cluster
            .apply(endpoint("ep-3", mover, &sandboxes[3], json!({"app": app})))
            .await?;
        let answered = t.elapsed();
        let wanted = format!("add element ip weft-svc services {{ {} }}", element(n));
        let mut seen: Vec<Option<Instant>> = vec![None; nodes];
        while seen.iter().any(Option::is_none) {
            let (node, at, line) = rx
                .recv_timeout(Duration::from_secs(30))
                .with_context(|| format!("round {round}: nodes not updated: {seen:?}"))?;
            if line.contains(&wanted) {
                seen[node].get_or_insert(at);
            }
        }
        if round == 0 {
            continue;
        }
        let seen: Vec<Instant> = seen.into_iter().flatten().collect();
        let (Some(last), Some(earliest)) = (seen.iter().max(), seen.iter().min()) else {
            bail!("no node");
        };
        all.samples.push(last.saturating_duration_since(t));
        first.samples.push(earliest.saturating_duration_since(t));
        applied.samples.push(answered);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "one endpoint into/out of a service's selector → its element on every node, {nodes} nodes, {services} services, {rounds} rounds:"
    );
    all.row();
    first.row();
    applied.row();
    Ok(())
}
