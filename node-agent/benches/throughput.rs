//! TCP throughput through Weft's dataplane against the same path built by hand without Weft
//! (plain bridge, plain routing, no nftables), with iperf3 (installed if missing).
//!
//! - between two endpoints on one Weft bridge vs two namespaces on a plain bridge;
//! - from outside the node through a published port (DNAT) vs the same hop routed to the
//!   container without any rule.
//!
//! Everything runs in throwaway namespaces. Needs KUBECONFIG (the API server is reset) and
//! release binaries: `cargo build --release --workspace --bins && cargo bench -p weft-agent
//! --bench throughput [-- SECONDS]` (default 5 per run, best of 3).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use weft_e2e::cluster::Cluster;
use weft_e2e::netns::Netns;

fn ensure_iperf3() -> anyhow::Result<()> {
    if Command::new("iperf3").arg("--version").output().is_ok() {
        return Ok(());
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "iperf3"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    if !ok {
        bail!("cannot install iperf3 (apt-get)");
    }
    Ok(())
}

/// Best of three `iperf3` runs from `client` to `host:port`, in Gbit/s.
fn gbits(client: &Netns, host: &str, port: u16, seconds: u32) -> anyhow::Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..3 {
        let out = client.exec(&[
            "iperf3",
            "-J",
            "-c",
            host,
            "-p",
            &port.to_string(),
            "-t",
            &seconds.to_string(),
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J output")?;
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("no bits_per_second")?;
        best = best.max(bps / 1e9);
    }
    Ok(best)
}

fn server(ns: &Netns, port: u16) -> anyhow::Result<()> {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "iperf3", "-s", "-D", "-p"])
        .arg(port.to_string())
        .status()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// The reference: a "node" with a plain bridge and two "containers", an "outside" namespace
/// routed to the node — the same hops as Weft's, with no nftables at all.
fn reference(seconds: u32) -> anyhow::Result<(f64, f64)> {
    let node = Netns::new("ref-node")?;
    let outside = Netns::new("ref-out")?;
    node.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
    node.exec(&["ip", "addr", "add", "10.9.0.1/24", "dev", "br0"])?;
    node.exec(&["ip", "link", "set", "br0", "up"])?;
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let mut containers = Vec::new();
    for i in 2..4 {
        let c = Netns::new("ref-c")?;
        let host = format!("rv{i}");
        node.veth_into(&host, &c, "eth0")?;
        node.exec(&["ip", "link", "set", &host, "master", "br0", "up"])?;
        c.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.9.0.{i}/24"),
            "dev",
            "eth0",
        ])?;
        c.exec(&["ip", "link", "set", "eth0", "up"])?;
        c.exec(&["ip", "route", "add", "default", "via", "10.9.0.1"])?;
        containers.push(c);
    }
    node.veth_into("eth0", &outside, "eth0")?;
    node.exec(&["ip", "addr", "add", "192.0.2.11/24", "dev", "eth0"])?;
    node.exec(&["ip", "link", "set", "eth0", "up"])?;
    outside.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"])?;
    outside.exec(&["ip", "link", "set", "eth0", "up"])?;
    outside.exec(&["ip", "route", "add", "10.9.0.0/24", "via", "192.0.2.11"])?;
    server(&containers[1], 5201)?;
    let bridge = gbits(&containers[0], "10.9.0.3", 5201, seconds)?;
    let routed = gbits(&outside, "10.9.0.3", 5201, seconds)?;
    Ok((bridge, routed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    ensure_iperf3()?;
    let (ref_bridge, ref_routed) = reference(seconds)?;

    let cluster = Cluster::start(1).await?;
    cluster
        .network(
            "web",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.0.0.0/24"]}}),
        )
        .await?;
    let a = cluster.container("a")?;
    let b = cluster.container("b")?;
    cluster.attach("a", "web", 0, &a, json!({})).await?;
    cluster
        .attach(
            "b",
            "web",
            0,
            &b,
            json!({"publish": [{"hostPort": 5000, "containerPort": 5201}]}),
        )
        .await?;
    let b_addr = cluster.endpoint_address("b").await?;
    cluster.endpoint_address("a").await?;
    server(&b, 5201)?;
    let weft_bridge = gbits(&a, &b_addr, 5201, seconds)?;
    let node = cluster.nodes[0].address.clone();
    // Published: wait until the rule is in (the endpoint is Ready once it is).
    let weft_published = gbits(&cluster.underlay, &node, 5000, seconds)?;

    println!("TCP throughput, best of 3 × {seconds} s (iperf3):");
    println!(
        "endpoint → endpoint on one bridge: Weft {weft_bridge:.2} Gbit/s, plain bridge {ref_bridge:.2} Gbit/s ({:.0} %)",
        100.0 * weft_bridge / ref_bridge
    );
    println!(
        "outside → published port (DNAT): Weft {weft_published:.2} Gbit/s, plain routing {ref_routed:.2} Gbit/s ({:.0} %)",
        100.0 * weft_published / ref_routed
    );
    Ok(())
}
