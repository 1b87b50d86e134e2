//! Attach/detach and publish latency: `weft-cni` against the CNI reference plugins
//! (`bridge` + `host-local`, and `portmap`) doing the same work, side by side in one run.
//!
//! Every call is a fresh process driven like a runtime drives it (environment + stdin).
//! The reference plugins run inside a throwaway "node" namespace (`nsenter --net`), so
//! their bridge and iptables rules never touch the host; Weft's agent programs its own
//! node namespace. Needs KUBECONFIG (the API server is reset) and Debian's
//! `containernetworking-plugins` (installed if missing).
//!
//! `cargo bench -p weft-agent --bench attach [-- N]` (N sandboxes, default 100).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use weft_e2e::cluster::Cluster;
use weft_e2e::netns::{Netns, workspace_binary};
use weft_e2e::stats::{Stats, ms};

const REF_DIR: &str = "/usr/lib/cni";

fn call(
    program: &Path,
    netns_prefix: Option<&str>,
    env: &[(&str, String)],
    stdin: &str,
) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let mut cmd = match netns_prefix {
        Some(node) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{node}")).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}", program.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout)?
    };
    Ok((took, value))
}

fn env(command: &str, id: &str, ns: &Netns) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.into()),
        ("CNI_CONTAINERID", id.into()),
        ("CNI_NETNS", ns.path().display().to_string()),
        ("CNI_IFNAME", "eth0".into()),
        ("CNI_PATH", REF_DIR.into()),
        (
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={id}"),
        ),
    ]
}

fn ensure_reference_plugins() -> anyhow::Result<()> {
    if Path::new(REF_DIR).join("bridge").exists() {
        return Ok(());
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "containernetworking-plugins"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    if !ok {
        bail!("cannot install containernetworking-plugins (apt-get)");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    ensure_reference_plugins()?;
    let plugin = workspace_binary("weft-cni")?;

    // --- Weft ---
    let cluster = Cluster::start(1).await?;
    cluster
        .network(
            "bench",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.99.0.0/16"]}}),
        )
        .await?;
    let socket = cluster.nodes[0].cni_socket();
    let config = r#"{"cniVersion":"1.1.0","name":"bench","type":"weft","network":"bench"}"#;
    let with_env = |mut e: Vec<(&'static str, String)>| {
        e.push(("WEFT_CNI_SOCKET", socket.display().to_string()));
        e
    };
    let warm = Netns::new("bw")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(&plugin, None, &with_env(env("ADD", "warm", &warm)), config).is_err() {
        if Instant::now() > deadline {
            bail!("the bench network never became attachable");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    call(&plugin, None, &with_env(env("DEL", "warm", &warm)), config)?;

    let sandboxes: Vec<Netns> = (0..n)
        .map(|i| Netns::new(&format!("b{i}")))
        .collect::<Result<_, _>>()?;
    let mut weft_add = Stats::new("weft-cni ADD");
    let mut weft_del = Stats::new("weft-cni DEL");
    let mut weft_add_port = Stats::new("weft-cni ADD + 1 published port");
    for (i, ns) in sandboxes.iter().enumerate() {
        let (t, _) = call(
            &plugin,
            None,
            &with_env(env("ADD", &format!("w{i}"), ns)),
            config,
        )?;
        weft_add.samples.push(t);
    }
    for (i, ns) in sandboxes.iter().enumerate() {
        let (t, _) = call(
            &plugin,
            None,
            &with_env(env("DEL", &format!("w{i}"), ns)),
            config,
        )?;
        weft_del.samples.push(t);
    }
    for (i, ns) in sandboxes.iter().enumerate() {
        let with_port = json!({"cniVersion": "1.1.0", "name": "bench", "type": "weft", "network": "bench",
            "runtimeConfig": {"portMappings": [{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]}})
        .to_string();
        let (t, _) = call(
            &plugin,
            None,
            &with_env(env("ADD", &format!("p{i}"), ns)),
            &with_port,
        )?;
        weft_add_port.samples.push(t);
    }
    for (i, ns) in sandboxes.iter().enumerate() {
        call(
            &plugin,
            None,
            &with_env(env("DEL", &format!("p{i}"), ns)),
            config,
        )?;
    }
    drop(cluster);

    // --- CNI reference plugins, in a node namespace of their own ---
    let node = Netns::new("refnode")?;
    let data = node.state_dir().join("host-local");
    let bridge_conf =
        json!({"cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "cni-ref0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": "10.98.0.0/16", "dataDir": data}})
        .to_string();
    let bridge = Path::new(REF_DIR).join("bridge");
    let portmap = Path::new(REF_DIR).join("portmap");
    let mut ref_add = Stats::new("bridge+host-local ADD");
    let mut ref_del = Stats::new("bridge+host-local DEL");
    let mut pm_add = Stats::new("portmap ADD (1 port)");
    let mut pm_del = Stats::new("portmap DEL");
    let refs: Vec<Netns> = (0..n)
        .map(|i| Netns::new(&format!("r{i}")))
        .collect::<Result<_, _>>()?;
    for (i, ns) in refs.iter().enumerate() {
        let id = format!("r{i}");
        let (t, result) = call(
            &bridge,
            Some(node.name()),
            &env("ADD", &id, ns),
            &bridge_conf,
        )?;
        ref_add.samples.push(t);
        let pm_conf = json!({"cniVersion": "1.0.0", "name": "ref", "type": "portmap",
            "capabilities": {"portMappings": true}, "snat": true,
            "runtimeConfig": {"portMappings": [{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": result})
        .to_string();
        let (t, _) = call(&portmap, Some(node.name()), &env("ADD", &id, ns), &pm_conf)?;
        pm_add.samples.push(t);
        let (t, _) = call(&portmap, Some(node.name()), &env("DEL", &id, ns), &pm_conf)?;
        pm_del.samples.push(t);
    }
    for (i, ns) in refs.iter().enumerate() {
        let (t, _) = call(
            &bridge,
            Some(node.name()),
            &env("DEL", &format!("r{i}"), ns),
            &bridge_conf,
        )?;
        ref_del.samples.push(t);
    }

    println!("\nattach/detach over {n} sandboxes (one process per call, as a runtime does)\n");
    for s in [
        &weft_add,
        &ref_add,
        &weft_del,
        &ref_del,
        &weft_add_port,
        &pm_add,
        &pm_del,
    ] {
        s.row();
    }
    let publish = weft_add_port.pct(0.5).saturating_sub(weft_add.pct(0.5));
    println!(
        "\nratios (p50): ADD {:.2}x  DEL {:.2}x  publish one port (ADD+port − ADD) {:.2} ms = {:.2}x portmap ADD",
        ms(weft_add.pct(0.5)) / ms(ref_add.pct(0.5)),
        ms(weft_del.pct(0.5)) / ms(ref_del.pct(0.5)),
        ms(publish),
        ms(publish) / ms(pm_add.pct(0.5))
    );
    Ok(())
}
