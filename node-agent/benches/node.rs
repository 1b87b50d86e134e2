//! Benchmarks of one node (a throwaway netns) against the real API server in KUBECONFIG,
//! with the real controller and agent binaries:
//!
//! 1. M networks (default 100) applied one at a time: apply → Programmed on the node, p50/p99.
//! 2. N bridge networks (default 1,000) exist before a second node's agent starts: time from
//!    agent start to all N reported Programmed, kernel writes, agent peak RSS (VmHWM).
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
use weft_api::{ContainerNetwork, NetworkNode};
use weft_e2e::daemon::{Daemon, free_port};
use weft_e2e::netns::{Netns, workspace_binary};
use weft_e2e::{connect, reset};

const NODE: &str = "bench-node";

/// A field of /proc/PID/status in KiB (`VmHWM`: peak RSS; `RssAnon`, `RssFile`: now).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// Where the resident memory is now: heap and stacks, and pages of the binary and libraries.
fn rss_split(pid: u32) -> String {
    let mib = |f| status_kib(pid, f) as f64 / 1024.0;
    format!(
        "now {:.1} anonymous + {:.1} file-backed",
        mib("RssAnon"),
        mib("RssFile")
    )
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
async fn programmed(nodes: &Api<NetworkNode>, node: &str) -> (usize, Vec<String>) {
    let Ok(Some(node)) = nodes.get_opt(node).await else {
        return (0, vec![]);
    };
    let names = node.status.unwrap_or_default().programmed;
    (names.len(), names)
}

/// Each network the node reports Programmed for the first time, with when the watch saw it.
fn watch_programmed(
    nodes: Api<NetworkNode>,
    node: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Instant)> {
    use kube::runtime::{WatchStreamExt, watcher};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    tokio::spawn(async move {
        let mut events = watcher(nodes, config).applied_objects().boxed();
        let mut seen = std::collections::HashSet::new();
        while let Some(Ok(node)) = events.next().await {
            for name in node.status.iter().flat_map(|s| s.programmed.iter()) {
                if seen.insert(name.clone()) && tx.send((name.clone(), Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// When each network first carried the controller's allocation (status.subnets), as a
/// watch saw it: splits apply → programmed into the controller's part and the agent's.
fn watch_allocated(
    api: Api<ContainerNetwork>,
) -> std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> {
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(net)) = events.next().await {
            if net.status.as_ref().is_some_and(|s| !s.subnets.is_empty())
                && let Ok(mut seen) = seen.lock()
            {
                seen.entry(net.metadata.name.clone().unwrap_or_default())
                    .or_insert_with(Instant::now);
            }
        }
    });
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn start_agent(node: &str, ns: &Netns, port: u16) -> anyhow::Result<Daemon> {
    let netns = ns.path();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--node-name".to_string(),
        node.into(),
        "--netns".into(),
        netns.display().to_string(),
        "--metrics-addr".into(),
        addr,
    ];
    args.extend(ns.agent_state_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(Path::new(env!("CARGO_BIN_EXE_weft-agent")), &args)
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
    let controller = Daemon::start(
        &workspace_binary("weft-controller")?,
        &["--rollup-interval", "1s"],
    )?;
    let api: Api<ContainerNetwork> = Api::all(client.clone());
    let nodes: Api<NetworkNode> = Api::all(client.clone());

    // 1. One network at a time on a running node: apply → programmed on the node.
    let ns = Netns::node("bench", "192.0.2.10/24", "192.0.2.1")?;
    let agent = start_agent(NODE, &ns, free_port()?)?;
    while nodes.get_opt(NODE).await?.and_then(|n| n.status).is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node's reports come from a watch (as a client of the API would see them), not
    // from polling, which would load the API server the agent is writing to.
    let mut programmed_at = watch_programmed(nodes.clone(), NODE);
    let allocated_at = watch_allocated(api.clone());
    let mut latencies = Vec::with_capacity(m);
    let mut until_allocated = Vec::with_capacity(m);
    for i in 0..m {
        let name = format!("one-{i:03}");
        let t = Instant::now();
        api.patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(network(&name, i)),
        )
        .await?;
        let at = loop {
            let (seen, at) = tokio::time::timeout(Duration::from_secs(30), programmed_at.recv())
                .await
                .map_err(|_| anyhow::anyhow!("{name} not programmed after 30 s"))?
                .ok_or_else(|| anyhow::anyhow!("the NetworkNode watch ended"))?;
            if seen == name {
                break at;
            }
        };
        latencies.push(at.saturating_duration_since(t));
        if let Some(allocated) = allocated_at.lock().ok().and_then(|s| s.get(&name).copied()) {
            until_allocated.push(allocated.saturating_duration_since(t));
        }
    }
    latencies.sort();
    until_allocated.sort();
    println!(
        "agent: one network applied → programmed on the node, over {m} networks: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    if !until_allocated.is_empty() {
        println!(
            "  of which apply → allocated by the controller (as a watch sees it): p50 {:.0} ms, p99 {:.0} ms",
            ms(percentile(&until_allocated, 0.5)),
            ms(percentile(&until_allocated, 0.99)),
        );
    }
    println!(
        "agent: peak RSS {:.1} MiB ({} MiB)",
        peak_rss_kib(agent.pid().unwrap_or(0)) as f64 / 1024.0,
        rss_split(agent.pid().unwrap_or(0))
    );
    agent.kill().await?;
    drop(ns);

    // 2. Cold start: n networks exist (m of them from above) before a new node's agent starts.
    let total = n.max(m);
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(m..total)
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
    let cold_node = "bench-cold";
    let ns = Netns::node("cold", "192.0.2.11/24", "192.0.2.1")?;
    let port = free_port()?;
    let start = Instant::now();
    let agent = start_agent(cold_node, &ns, port)?;
    let pid = agent.pid().unwrap_or(0);
    while programmed(&nodes, cold_node).await.0 < total {
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
    println!(
        "agent: {total} bridge networks, cold start → all programmed: {:.2} s, {writes} kernel writes, {bridges} bridges in the netns, peak RSS {:.1} MiB ({} MiB)",
        cold.as_secs_f64(),
        peak_rss_kib(pid) as f64 / 1024.0,
        rss_split(pid)
    );
    agent.kill().await?;
    controller.kill().await?;
    drop(ns);
    reset(&client).await?;

    // 3. Docker doing the same work.
    match docker_bridge_creates(m).await? {
        None => println!(
            "SKIP: docker comparison: dockerd is not installed (apt-get install docker.io)"
        ),
        Some(mut docker) => {
            docker.sort();
            let (dp50, dp99) = (percentile(&docker, 0.5), percentile(&docker, 0.99));
            println!(
                "docker 20.10: `docker network create -d bridge`, over {m} networks: p50 {:.0} ms, p99 {:.0} ms",
                ms(dp50),
                ms(dp99)
            );
            println!(
                "ratio Weft / Docker: p50 {:.2}, p99 {:.2}",
                percentile(&latencies, 0.5).as_secs_f64() / dp50.as_secs_f64(),
                percentile(&latencies, 0.99).as_secs_f64() / dp99.as_secs_f64()
            );
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Time `docker network create -d bridge` m times against a dockerd that lives in its own
/// network namespace (its bridges and iptables rules stay there) with a private data root.
async fn docker_bridge_creates(m: usize) -> anyhow::Result<Option<Vec<Duration>>> {
    if std::process::Command::new("dockerd")
        .arg("--version")
        .output()
        .is_err()
    {
        return Ok(None);
    }
    let ns = Netns::new("docker")?;
    let dir = std::env::temp_dir().join(format!("weft-bench-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = format!("unix://{}/docker.sock", dir.display());
    let sub = |name: &str| dir.join(name).display().to_string();
    // Its own mount namespace too: dockerd bind-mounts its data root, and those mounts must
    // vanish with it instead of staying on the host.
    let mut dockerd = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "nsenter"])
        .arg(format!("--net={}", ns.path().display()))
        .args([
            "dockerd",
            "--bridge=none",
            "--storage-driver=vfs",
            "--host",
            &sock,
        ])
        .args([
            "--data-root",
            &sub("data"),
            "--exec-root",
            &sub("exec"),
            "--pidfile",
            &sub("docker.pid"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("dockerd.log"))?)
        .kill_on_drop(true)
        .spawn()?;
    let docker = |args: &[&str]| {
        let mut cmd = std::process::Command::new("docker");
        cmd.args(["-H", &sock]).args(args);
        cmd
    };
    let up = Instant::now();
    while !docker(&["info"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(60),
            "dockerd did not start; see {}",
            dir.join("dockerd.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut times = Vec::with_capacity(m);
    for i in 0..m {
        let subnet = format!("10.{}.{}.0/24", 200 + i / 256, i % 256);
        let t = Instant::now();
        let out = docker(&[
            "network",
            "create",
            "-d",
            "bridge",
            "--subnet",
            &subnet,
            &format!("dn{i}"),
        ])
        .output()?;
        anyhow::ensure!(
            out.status.success(),
            "docker network create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        times.push(t.elapsed());
    }
    // SIGTERM for a clean shutdown (containerd too), then make sure.
    if let Some(pid) = dockerd.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(15), dockerd.wait()).await;
    }
    let _ = dockerd.start_kill();
    let _ = dockerd.wait().await;
    drop(ns); // kills containerd and anything else still in the namespace
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(times))
}
