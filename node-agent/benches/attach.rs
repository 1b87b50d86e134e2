//! Attach/detach and publish latency: `weft-cni` against the CNI reference plugins
//! (`bridge` + `host-local`, and `portmap`) and against Podman's own network backend,
//! netavark (`netavark setup`/`teardown`, called directly as Podman calls it), doing the
//! same work — a bridge network with an address, with and without one published port — side
//! by side in one run.
//!
//! Every call is a fresh process driven like a runtime drives it (environment or arguments,
//! and stdin). The peers run inside throwaway "node" namespaces (`nsenter --net`), so their
//! bridges and iptables rules never touch the host; Weft's agent programs its own node
//! namespace. Netavark gets its addresses from the caller (Podman does the IPAM), so its
//! setup does less than an ADD of the others. Then the gateway check: a sandbox pings its
//! gateway every 20 ms while 50 others come and go on its network; the loss is reported
//! (it must be zero: the gateway's MAC never changes). Needs KUBECONFIG (the API server is
//! reset) and Debian's `containernetworking-plugins` and `netavark` (installed if missing).
//!
//! `cargo build --release --workspace --bins`, then
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
const NETAVARK: &str = "/usr/lib/podman/netavark";
/// Sandboxes that come and go while one pings its gateway.
const CHURN: usize = 50;

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

fn ensure_peers() -> anyhow::Result<()> {
    for (present, package) in [
        (
            Path::new(REF_DIR).join("bridge"),
            "containernetworking-plugins",
        ),
        (Path::new(NETAVARK).to_path_buf(), "netavark"),
    ] {
        if present.exists() {
            continue;
        }
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
        if !ok {
            bail!("cannot install {package} (apt-get)");
        }
    }
    Ok(())
}

/// Netavark's input for one container on a bridge network with an address (Podman's
/// network-options JSON), with one published port or none.
fn netavark_options(i: usize, port: Option<usize>) -> String {
    let address = format!("10.97.{}.{}", (i + 2) / 256, (i + 2) % 256);
    let ports: Vec<Value> = port
        .into_iter()
        .map(|p| json!({"host_ip": "", "container_port": 80, "host_port": p, "range": 1, "protocol": "tcp"}))
        .collect();
    json!({
        "container_id": format!("{i:064x}"),
        "container_name": format!("c{i}"),
        "port_mappings": ports,
        "networks": {"nv": {"static_ips": [address], "interface_name": "eth0"}},
        "network_info": {"nv": {
            "name": "nv", "id": format!("{:064x}", 0x97), "driver": "bridge",
            "network_interface": "nv0",
            "subnets": [{"subnet": "10.97.0.0/16", "gateway": "10.97.0.1"}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
            "ipam_options": {"driver": "host-local"}}}
    })
    .to_string()
}

/// `netavark --config DIR setup|teardown NETNS < options`, inside the node namespace.
fn netavark(
    node: &Netns,
    config: &Path,
    command: &str,
    ns: &Netns,
    options: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.name()))
        .arg(NETAVARK)
        .arg("--config")
        .arg(config)
        .arg(command)
        .arg(ns.path())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning netavark")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(options.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "netavark {command} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// A continuous ping (every 20 ms) from `ns` to `target` until [`GatewayPing::stop`].
struct GatewayPing(std::process::Child);

impl GatewayPing {
    fn start(ns: &Netns, target: &str) -> anyhow::Result<Self> {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "ping",
                "-n",
                "-q",
                "-i",
                "0.02",
                target,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")?;
        Ok(Self(child))
    }

    /// Interrupt the ping (it then prints its summary) and return (sent, received).
    fn stop(self) -> anyhow::Result<(u64, u64)> {
        let pid = i32::try_from(self.0.id()).context("pid")?;
        // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let out = self.0.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .with_context(|| format!("no ping summary in {text:?}"))?;
        let number = |word: &str| -> anyhow::Result<u64> {
            let before = line.split(word).next().unwrap_or_default();
            let n = before.split_whitespace().last().unwrap_or_default();
            n.parse().with_context(|| format!("parsing {line:?}"))
        };
        Ok((number("packets transmitted")?, number("received")?))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    ensure_peers()?;
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
    let mut weft_del_port = Stats::new("weft-cni DEL + 1 published port");
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
        let (t, _) = call(
            &plugin,
            None,
            &with_env(env("DEL", &format!("p{i}"), ns)),
            config,
        )?;
        weft_del_port.samples.push(t);
    }

    // The gateway while CHURN sandboxes come and go on its network.
    let watcher = Netns::new("bwatch")?;
    call(
        &plugin,
        None,
        &with_env(env("ADD", "watch", &watcher)),
        config,
    )?;
    let ping = GatewayPing::start(&watcher, "10.99.0.1")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let churn_started = Instant::now();
    for (i, ns) in sandboxes.iter().take(CHURN).enumerate() {
        call(
            &plugin,
            None,
            &with_env(env("ADD", &format!("c{i}"), ns)),
            config,
        )?;
    }
    for (i, ns) in sandboxes.iter().take(CHURN).enumerate() {
        call(
            &plugin,
            None,
            &with_env(env("DEL", &format!("c{i}"), ns)),
            config,
        )?;
    }
    let churn_took = churn_started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, received) = ping.stop()?;
    call(
        &plugin,
        None,
        &with_env(env("DEL", "watch", &watcher)),
        config,
    )?;
    drop(cluster);

    // --- netavark, in a node namespace of its own ---
    let nv_node = Netns::new("nvnode")?;
    let nv_config = nv_node.state_dir().join("netavark");
    std::fs::create_dir_all(&nv_config)?;
    let mut nv_setup = Stats::new("netavark setup");
    let mut nv_teardown = Stats::new("netavark teardown");
    let mut nv_setup_port = Stats::new("netavark setup + 1 published port");
    let mut nv_teardown_port = Stats::new("netavark teardown + 1 port");
    for (i, ns) in sandboxes.iter().enumerate() {
        let opts = netavark_options(i, None);
        nv_setup
            .samples
            .push(netavark(&nv_node, &nv_config, "setup", ns, &opts)?);
    }
    for (i, ns) in sandboxes.iter().enumerate() {
        let opts = netavark_options(i, None);
        nv_teardown
            .samples
            .push(netavark(&nv_node, &nv_config, "teardown", ns, &opts)?);
    }
    for (i, ns) in sandboxes.iter().enumerate() {
        let opts = netavark_options(i, Some(20000 + i));
        nv_setup_port
            .samples
            .push(netavark(&nv_node, &nv_config, "setup", ns, &opts)?);
    }
    for (i, ns) in sandboxes.iter().enumerate() {
        let opts = netavark_options(i, Some(20000 + i));
        nv_teardown_port
            .samples
            .push(netavark(&nv_node, &nv_config, "teardown", ns, &opts)?);
    }

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
        &nv_setup,
        &ref_add,
        &weft_del,
        &nv_teardown,
        &ref_del,
        &weft_add_port,
        &nv_setup_port,
        &pm_add,
        &weft_del_port,
        &nv_teardown_port,
        &pm_del,
    ] {
        s.row();
    }
    let p50 = |s: &Stats| ms(s.pct(0.5));
    println!(
        "\nratios (p50), goal ADD <= 0.5x netavark and <= 0.25x bridge, DEL <= 0.5x both:\n  \
         ADD {:.2}x netavark setup, {:.2}x bridge\n  \
         DEL {:.2}x netavark teardown, {:.2}x bridge\n  \
         ADD + port {:.2}x netavark setup + port, {:.2}x bridge + portmap ADD\n  \
         DEL + port {:.2}x netavark teardown + port, {:.2}x bridge + portmap DEL",
        p50(&weft_add) / p50(&nv_setup),
        p50(&weft_add) / p50(&ref_add),
        p50(&weft_del) / p50(&nv_teardown),
        p50(&weft_del) / p50(&ref_del),
        p50(&weft_add_port) / p50(&nv_setup_port),
        p50(&weft_add_port) / (p50(&ref_add) + p50(&pm_add)),
        p50(&weft_del_port) / p50(&nv_teardown_port),
        p50(&weft_del_port) / (p50(&ref_del) + p50(&pm_del)),
    );
    let publish = weft_add_port.pct(0.5).saturating_sub(weft_add.pct(0.5));
    println!(
        "  publish one port (ADD+port - ADD) {:.2} ms = {:.2}x portmap ADD",
        ms(publish),
        ms(publish) / ms(pm_add.pct(0.5))
    );
    println!(
        "\ngateway while {CHURN} sandboxes came and went ({:.1} s): {sent} pings, {} lost",
        churn_took.as_secs_f64(),
        sent.saturating_sub(received)
    );
    if received < sent {
        bail!("pings to the gateway were lost while sandboxes came and went");
    }
    Ok(())
}
