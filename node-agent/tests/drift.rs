//! Endpoint drift: what somebody changes behind Weft's back — in a sandbox (the interface,
//! its addresses, its default route) or on the node (the host veth off its bridge, the bridge
//! itself) — is repaired by events, well under a second, not by the periodic full check; a
//! drift that cannot be repaired is in the endpoint's status until it can; and existing
//! endpoints keep their traffic across an agent SIGKILL and restart. Real kernel, real API
//! server, real agent binaries.
//!
//! `WEFT_DRIFT_ROUNDS` (default 3) sets the rounds per drift kind; the figures (p50, p99, max
//! per kind) are printed — `docs/BENCHMARKS.md` has them with more rounds.

use std::time::{Duration, Instant};

use serde_json::json;
use weft_agent::endpoints::EndpointId;
use weft_agent::endpoints::plan::host_interface;
use weft_agent::names;
use weft_e2e::cluster::{Cluster, Pinger, reachable};
use weft_e2e::netns::Netns;

const SETTLE: Duration = Duration::from_secs(20);
/// Far below the test agents' 5 s full check: a repair slower than this did not come from
/// an event.
const EVENT_BOUND: Duration = Duration::from_secs(2);

fn id(name: &str) -> EndpointId {
    EndpointId {
        namespace: "default".into(),
        name: name.into(),
    }
}

/// The endpoint's interface is in place: eth0 up with its address and the default route.
fn sandbox_intact(ns: &Netns, address: &str, gateway: &str) -> bool {
    let addr = ns
        .exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .unwrap_or_default();
    let route = ns
        .exec(&["ip", "-4", "route", "show", "default"])
        .unwrap_or_default();
    addr.contains(&format!("inet {address}/24"))
        && route.contains(&format!("via {gateway} dev eth0"))
}

/// The host side is up on its bridge.
fn host_intact(node: &Netns, host: &str, bridge: &str) -> bool {
    let link = node
        .exec(&["ip", "-o", "link", "show", "dev", host])
        .unwrap_or_default();
    link.contains(&format!("master {bridge}")) && link.contains(",UP")
}

/// Time until `intact` holds again after `tamper`, polled every few milliseconds.
async fn repair_time(tamper: impl Fn(), intact: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    tamper();
    loop {
        if intact() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < weft_e2e::patience(SETTLE),
            "never repaired"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One way of changing an endpoint behind the agent's back.
type Tamper<'a> = Box<dyn Fn() + 'a>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The bridge network `web` (10.0.0.0/24) with containers `a` and `b` attached and Ready.
struct Web {
    a: Netns,
    b: Netns,
    /// `a`'s address and `b`'s (its peer).
    address: String,
    peer: String,
}

async fn two_on_web(cluster: &Cluster) -> Web {
    cluster
        .network(
            "web",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.0.0.0/24"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach("a", "web", 0, &a, json!({}))
        .await
        .expect("attach a");
    cluster
        .attach("b", "web", 0, &b, json!({}))
        .await
        .expect("attach b");
    let address = cluster.endpoint_address("a").await.expect("a ready");
    let peer = cluster.endpoint_address("b").await.expect("b ready");
    Web {
        a,
        b,
        address,
        peer,
    }
}

#[tokio::test]
async fn endpoint_drift_is_repaired_by_events_per_kind() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let node = &cluster.nodes[0];
    // `b` is held: dropping it would delete its namespace.
    let Web {
        a,
        b: _b,
        address,
        peer,
    } = two_on_web(&cluster).await;
    let gateway = "10.0.0.1";
    let host = host_interface(&id("a"));
    let bridge = names::bridge("web");
    assert!(reachable(&a, &peer, SETTLE).await, "a cannot reach b");

    let rounds: usize = std::env::var("WEFT_DRIFT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let intact = || sandbox_intact(&a, &address, gateway) && host_intact(&node.ns, &host, &bridge);
    let kinds: Vec<(&str, Tamper)> = vec![
        (
            "sandbox address flushed",
            Box::new(|| {
                a.exec(&["ip", "addr", "flush", "dev", "eth0"])
                    .expect("flush");
            }),
        ),
        (
            "sandbox default route deleted",
            Box::new(|| {
                a.exec(&["ip", "route", "del", "default"]).expect("route");
            }),
        ),
        (
            "sandbox interface deleted",
            Box::new(|| {
                a.exec(&["ip", "link", "del", "eth0"]).expect("del eth0");
            }),
        ),
        (
            "sandbox interface set down",
            Box::new(|| {
                a.exec(&["ip", "link", "set", "eth0", "down"])
                    .expect("down");
            }),
        ),
        (
            "host veth off its bridge",
            Box::new(|| {
                node.ns
                    .exec(&["ip", "link", "set", &host, "nomaster"])
                    .expect("nomaster");
            }),
        ),
        (
            "bridge deleted",
            Box::new(|| {
                node.ns
                    .exec(&["ip", "link", "del", &bridge])
                    .expect("del bridge");
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (kind, tamper) in &kinds {
        let mut times = Vec::new();
        for _ in 0..rounds {
            times.push(repair_time(tamper, intact).await);
            // Settled (the agent's own follow-up events) before the next round.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        times.sort();
        let (p50, p99, max) = (
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
        );
        println!(
            "drift repair: {kind}: rounds {rounds}, p50 {} ms, p99 {} ms, max {} ms",
            p50.as_millis(),
            p99.as_millis(),
            max.as_millis()
        );
        if max > weft_e2e::patience(EVENT_BOUND) {
            failures.push(format!("{kind}: {} ms", max.as_millis()));
        }
        // Repaired means traffic flows: to the gateway and to the peer.
        assert!(reachable(&a, gateway, SETTLE).await, "{kind}: no gateway");
        assert!(reachable(&a, &peer, SETTLE).await, "{kind}: no peer");
    }
    assert!(
        failures.is_empty(),
        "repairs slower than events allow: {failures:?}"
    );
    let ready = cluster.wait_endpoint("a", "True", SETTLE).await;
    assert!(ready.is_ok(), "a is not Ready after the repairs");
}

/// The reason and message of an endpoint's Ready condition once it has `status`.
async fn condition(cluster: &Cluster, name: &str, status: &str) -> (String, String) {
    let cep = cluster
        .wait_endpoint(name, status, SETTLE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let c = cep
        .status
        .and_then(|s| s.conditions.into_iter().next())
        .expect("a Ready condition");
    (c.reason, c.message)
}

/// Somebody deletes the endpoint's interface and takes its name with one of their own: the
/// agent cannot make it again, and the status says so (Ready=False, InterfaceMissing, what to
/// do) for as long as it lasts; when the name is free again the endpoint is repaired at once
/// and Ready again.
#[tokio::test]
async fn a_drift_that_cannot_be_repaired_is_in_the_status_until_it_can() {
    let cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "web",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.0.0.0/24"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    cluster
        .attach("a", "web", 0, &a, json!({}))
        .await
        .expect("attach a");
    let address = cluster.endpoint_address("a").await.expect("a ready");
    assert_eq!(condition(&cluster, "a", "True").await.0, "Attached");

    // The agent repairs within milliseconds, faster than a second command could take the
    // name: it is paused (SIGSTOP) while the name changes hands, and finds it so.
    let agent = cluster.nodes[0].agent_pid().expect("agent pid").to_string();
    weft_e2e::netns::sh(&["kill", "-STOP", &agent]).expect("pause the agent");
    let replaced = a.exec(&[
        "sh",
        "-c",
        "ip link del eth0 && ip link add eth0 type veth peer name x1 && ip link set eth0 up",
    ]);
    weft_e2e::netns::sh(&["kill", "-CONT", &agent]).expect("resume the agent");
    replaced.expect("replace eth0");
    let (reason, message) = condition(&cluster, "a", "False").await;
    assert_eq!(reason, "InterfaceMissing", "{message}");
    assert!(message.contains("not Weft's"), "{message}");
    // It stays so while the foreign interface holds the name (repairs keep failing).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        condition(&cluster, "a", "False").await.0,
        "InterfaceMissing"
    );

    let freed = Instant::now();
    a.exec(&["ip", "link", "del", "eth0"])
        .expect("free the name");
    while !sandbox_intact(&a, &address, "10.0.0.1") {
        assert!(
            freed.elapsed() < weft_e2e::patience(SETTLE),
            "never repaired"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let repaired = freed.elapsed();
    println!(
        "repaired {} ms after the name was freed",
        repaired.as_millis()
    );
    assert!(
        repaired < weft_e2e::patience(EVENT_BOUND),
        "repaired only after {repaired:?}: not by an event"
    );
    assert_eq!(condition(&cluster, "a", "True").await.0, "Attached");
    assert!(reachable(&a, "10.0.0.1", SETTLE).await, "no gateway");
}

/// Existing endpoints keep their traffic while their agent is SIGKILLed and restarted:
/// nothing of theirs is torn down or rewritten, so not one ping of a steady stream is lost.
#[tokio::test]
async fn endpoints_lose_no_ping_across_an_agent_sigkill_and_restart() {
    let mut cluster = Cluster::start(1).await.expect("cluster");
    let Web {
        a,
        b,
        peer,
        address: _,
    } = two_on_web(&cluster).await;
    assert!(reachable(&a, &peer, SETTLE).await, "a cannot reach b");

    let to_peer = Pinger::start(&a, &peer, 8).expect("ping b");
    let to_gateway = Pinger::start(&b, "10.0.0.1", 8).expect("ping gateway");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill_agent(0).await.expect("SIGKILL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_agent(0).expect("restart");
    let back = cluster.wait_endpoint("a", "True", SETTLE).await;
    assert!(back.is_ok(), "a not Ready after the restart");
    let (sent, received) = to_peer.finish().expect("ping b");
    let (gw_sent, gw_received) = to_gateway.finish().expect("ping gateway");
    println!(
        "across SIGKILL + restart: to the peer {received}/{sent}, to the gateway {gw_received}/{gw_sent}"
    );
    assert!(sent > 100, "too few pings: {sent}");
    assert_eq!(sent, received, "pings to the peer lost");
    assert_eq!(gw_sent, gw_received, "pings to the gateway lost");
}

/// A change made right after an attach — before the agent has subscribed to the new
/// sandbox's events — is repaired at once too, not at the next full check: the agent looks
/// at a sandbox once more when its subscription is open. Each round attaches a new sandbox
/// through CNI and flushes its address the moment ADD answers (an `ip -batch` already
/// running in the sandbox); without that look, the rounds whose flush beat the subscription
/// waited for the full check (5 s here).
#[tokio::test]
async fn a_drift_right_after_the_attach_is_repaired_by_events() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "web",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.0.0.0/24"]}}),
        )
        .await
        .expect("network");
    let plugin = weft_e2e::netns::workspace_binary("weft-cni").expect("weft-cni binary");
    let config = r#"{"cniVersion":"1.1.0","name":"web","type":"weft","network":"web"}"#;
    let rounds: usize = std::env::var("WEFT_DRIFT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let mut slow = Vec::new();
    for round in 0..rounds {
        let sandbox = cluster.container("fresh").expect("sandbox");
        let mut tamper = Command::new("ip")
            .args(["-n", sandbox.name(), "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ip -batch");
        // Retried while the agent is starting or does not know the network yet (CNI codes
        // 50, 11 and 100).
        let deadline = Instant::now() + weft_e2e::patience(SETTLE);
        let answer = loop {
            let mut add = Command::new(&plugin)
                .env_clear()
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", format!("fresh{round}"))
                .env("CNI_NETNS", sandbox.path())
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", "/opt/cni/bin")
                .env("WEFT_CNI_SOCKET", cluster.nodes[0].cni_socket())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn weft-cni");
            add.stdin
                .take()
                .expect("stdin")
                .write_all(config.as_bytes())
                .expect("write stdin");
            let answer = add.wait_with_output().expect("weft-cni");
            let code = serde_json::from_slice::<serde_json::Value>(&answer.stdout)
                .ok()
                .and_then(|v| v["code"].as_u64());
            let again = !answer.status.success() && matches!(code, Some(11 | 50 | 100));
            if !again || Instant::now() > deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut to_ip = tamper.stdin.take().expect("ip stdin");
        to_ip.write_all(b"address flush dev eth0\n").expect("flush");
        drop(to_ip);
        let flushed = Instant::now();
        assert!(answer.status.success(), "ADD failed: {answer:?}");
        assert!(tamper.wait().expect("ip").success(), "flush failed");
        let result: serde_json::Value =
            serde_json::from_slice(&answer.stdout).expect("ADD prints JSON");
        let address = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .expect("an address")
            .to_string();
        while !sandbox_intact(&sandbox, &address, "10.0.0.1") {
            assert!(
                flushed.elapsed() < weft_e2e::patience(SETTLE),
                "round {round}: never repaired"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = flushed.elapsed();
        if took > weft_e2e::patience(EVENT_BOUND) {
            slow.push(format!("round {round}: {} ms", took.as_millis()));
        }
    }
    println!("flushed right after ADD, {rounds} rounds; slower than events: {slow:?}");
    assert!(slow.is_empty(), "repaired only by the full check: {slow:?}");
}
