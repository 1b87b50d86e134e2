//! Names through the agent: the real API server, controller and agents (one per "node"
//! namespace), each node's `weft-dns` process fed by its agent over the feed socket, and
//! real `dig` asked from the containers. What `dns/tests/dig.rs` shows with a hand-fed
//! server, here with the agent deciding what is fed.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use weft_api::ContainerEndpoint;
use weft_e2e::cluster::Cluster;
use weft_e2e::names::{Dug, dig, keep_asking};
use weft_e2e::netns::Netns;

const SETTLE: Duration = Duration::from_secs(20);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

macro_rules! require_dig {
    () => {
        if !have("dig") {
            println!("SKIP: `dig` is not installed (.ci/run installs dnsutils)");
            return Ok(());
        }
    };
}

/// Address (no prefix) and name server of a Ready endpoint.
fn address_and_nameserver(cep: &ContainerEndpoint) -> Result<(String, String)> {
    let status = cep.status.as_ref().context("no status")?;
    let address = status.address.as_deref().context("no address")?;
    let address = address.split('/').next().unwrap_or(address).to_string();
    let nameserver = status
        .nameserver
        .clone()
        .context("the status names no nameserver")?;
    Ok((address, nameserver))
}

/// Ask until the answer is `want` (the feed is asynchronous to the API), then return it.
async fn dig_until(ns: &Netns, server: &str, name: &str, qtype: &str, want: &Dug) -> Result<()> {
    let started = Instant::now();
    loop {
        // Until the server listens on the gateway (a new network, a restarted server),
        // `dig` finds no server: asked again like a wrong answer.
        let got = dig(ns, server, name, qtype, &[]);
        if got.as_ref().is_ok_and(|got| got == want) {
            return Ok(());
        }
        if started.elapsed() > SETTLE {
            anyhow::bail!("{name} {qtype} @{server}: {got:?}, wanted {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`dig_until`] for answers in any order (round robin): `want` sorted.
async fn dig_all_until(ns: &Netns, server: &str, name: &str, want: &[&str]) -> Result<()> {
    let mut want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
    want.sort();
    let started = Instant::now();
    loop {
        let mut got = dig(ns, server, name, "A", &[]);
        if let Ok(got) = &mut got {
            got.answers.sort();
            if got.status == "NOERROR" && got.answers == want {
                return Ok(());
            }
        }
        if started.elapsed() > SETTLE {
            anyhow::bail!("{name} A @{server}: {got:?}, wanted {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `d.c.b.a.in-addr.arpa` of an IPv4 address.
fn reverse(addr: &str) -> Result<String> {
    let ip: std::net::Ipv4Addr = addr.parse()?;
    let [a, b, c, d] = ip.octets();
    Ok(format!("{d}.{c}.{b}.{a}.in-addr.arpa"))
}

fn dug(status: &str, answers: &[&str]) -> Dug {
    Dug {
        status: status.into(),
        answers: answers.iter().map(|a| a.to_string()).collect(),
    }
}

/// Two nodes: overlay `blue` with alpha (node 1, aliases `web`, `db.v2`) and bravo (node 2);
/// bridge `red` with charlie and internal bridge `sealed` with delta on node 1. (No
/// one-letter names: `dig @gw a A` takes `a` for the type.)
#[tokio::test]
async fn names_resolve_through_the_agent_by_network_and_across_nodes() -> Result<()> {
    require_dig!();
    let mut cluster = Cluster::start(2).await?;
    cluster.start_names(0).await?;
    cluster.start_names(1).await?;
    cluster
        .network(
            "blue",
            json!({"driver": "overlay", "ipam": {"subnets": ["10.40.0.0/24"]}}),
        )
        .await?;
    cluster
        .network(
            "red",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.50.0.0/24"]}}),
        )
        .await?;
    cluster
        .network(
            "sealed",
            json!({"driver": "bridge", "internal": true, "ipam": {"subnets": ["10.60.0.0/24"]}}),
        )
        .await?;
    let a = cluster.container("alpha")?;
    let b = cluster.container("bravo")?;
    let c = cluster.container("charlie")?;
    let d = cluster.container("delta")?;
    cluster
        .attach("alpha", "blue", 0, &a, json!({"aliases": ["web", "db.v2"]}))
        .await?;
    cluster.attach("bravo", "blue", 1, &b, json!({})).await?;
    cluster.attach("charlie", "red", 0, &c, json!({})).await?;
    cluster.attach("delta", "sealed", 0, &d, json!({})).await?;
    let mut found = Vec::new();
    for name in ["alpha", "bravo", "charlie", "delta"] {
        let cep = cluster.wait_endpoint(name, "True", SETTLE).await?;
        found.push(address_and_nameserver(&cep)?);
        // The status's nameserver is the endpoint's gateway (bridge and overlay).
        let status = cep.status.as_ref().context("status")?;
        assert_eq!(
            status.gateway.as_deref(),
            Some(found.last().context("just pushed")?.1.as_str()),
            "{name}"
        );
    }
    let [(addr_a, ns_a), (addr_b, ns_b), (_, ns_c), (_, ns_d)] =
        <[_; 4]>::try_from(found).map_err(|_| anyhow::anyhow!("four endpoints"))?;

    // a asks its gateway: b on the other node, its own aliases, PTR of b.
    dig_until(&a, &ns_a, "bravo", "A", &dug("NOERROR", &[&addr_b])).await?;
    assert_eq!(
        dig(&a, &ns_a, "bravo.blue.weft.internal", "A", &[])?,
        dug("NOERROR", &[&addr_b])
    );
    assert_eq!(dig(&a, &ns_a, "web", "A", &[])?, dug("NOERROR", &[&addr_a]));
    assert_eq!(
        dig(&a, &ns_a, "db.v2.blue", "A", &[])?,
        dug("NOERROR", &[&addr_a])
    );
    assert_eq!(
        dig(&a, &ns_a, &reverse(&addr_b)?, "PTR", &[])?.answers,
        vec!["bravo.blue.weft.internal.".to_string()]
    );
    // b, on the other node, sees a and a's alias through its own node's server.
    dig_until(&b, &ns_b, "web", "A", &dug("NOERROR", &[&addr_a])).await?;
    // c is on red only: NXDOMAIN for a, and a does not see c.
    assert_eq!(dig(&c, &ns_c, "alpha", "A", &[])?, dug("NXDOMAIN", &[]));
    assert_eq!(dig(&a, &ns_a, "charlie", "A", &[])?, dug("NXDOMAIN", &[]));
    assert_eq!(
        dig(&a, &ns_a, "charlie.red.weft.internal", "A", &[])?,
        dug("NXDOMAIN", &[])
    );
    // d is on an internal network only: names outside Weft are never forwarded.
    assert_eq!(dig(&d, &ns_d, "example.com", "A", &[])?.status, "REFUSED");
    assert_eq!(dig(&d, &ns_d, "delta", "A", &[])?.answers.len(), 1);

    // b's endpoint is deleted: its name goes on node 1 too.
    cluster.detach("bravo").await?;
    dig_until(
        &a,
        &ns_a,
        "bravo.blue.weft.internal",
        "A",
        &dug("NXDOMAIN", &[]),
    )
    .await?;
    Ok(())
}

/// The agent is SIGKILLed and restarted while a container asks a name every 5 ms: weft-dns
/// is another process and keeps answering; the restarted agent's snapshot changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn no_query_fails_across_an_agent_sigkill_and_restart() -> Result<()> {
    require_dig!();
    let mut cluster = Cluster::start(1).await?;
    cluster.start_names(0).await?;
    cluster
        .network(
            "blue",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.40.0.0/24"]}}),
        )
        .await?;
    let a = cluster.container("alpha")?;
    let b = cluster.container("bravo")?;
    cluster.attach("alpha", "blue", 0, &a, json!({})).await?;
    cluster.attach("bravo", "blue", 0, &b, json!({})).await?;
    let (_, ns_a) = address_and_nameserver(&cluster.wait_endpoint("alpha", "True", SETTLE).await?)?;
    let (addr_b, _) =
        address_and_nameserver(&cluster.wait_endpoint("bravo", "True", SETTLE).await?)?;
    dig_until(&a, &ns_a, "bravo", "A", &dug("NOERROR", &[&addr_b])).await?;

    let stop = AtomicBool::new(false);
    let (asked, failed) = tokio::task::block_in_place(|| {
        std::thread::scope(|s| -> Result<(u32, u32)> {
            let load = s.spawn(|| keep_asking(&a, &ns_a, "bravo", &stop));
            let restart = tokio::runtime::Handle::current().block_on(async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                cluster.kill_agent(0).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                cluster.start_agent(0)?;
                // Its first pass sends a snapshot: the queries keep going through it.
                tokio::time::sleep(Duration::from_secs(3)).await;
                anyhow::Ok(())
            });
            stop.store(true, Ordering::Relaxed);
            let counts = load
                .join()
                .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
            restart?;
            Ok(counts)
        })
    })?;
    eprintln!("asked {asked}, failed {failed} across the agent's SIGKILL and restart");
    assert!(asked > 100, "the load ran ({asked} queries)");
    assert_eq!(failed, 0, "of {asked} queries");
    // And the restarted agent still feeds: a new endpoint's name arrives.
    let c = cluster.container("charlie")?;
    cluster.attach("charlie", "blue", 0, &c, json!({})).await?;
    let (addr_c, _) =
        address_and_nameserver(&cluster.wait_endpoint("charlie", "True", SETTLE).await?)?;
    dig_until(&a, &ns_a, "charlie", "A", &dug("NOERROR", &[&addr_c])).await?;
    Ok(())
}

/// macvlan sandboxes cannot reach their node, so they are answered inside their namespace at
/// 127.0.0.11: the agent feeds their `netns`, the status names 127.0.0.11, and a name on the
/// other node resolves there.
#[tokio::test]
async fn macvlan_sandboxes_resolve_at_127_0_0_11_across_nodes() -> Result<()> {
    require_dig!();
    let mut cluster = Cluster::start(2).await?;
    cluster.start_names(0).await?;
    cluster.start_names(1).await?;
    cluster
        .network(
            "pub-net",
            json!({"driver": "macvlan", "macvlan": {"parent": "eth0"},
                "ipam": {"subnets": ["192.0.2.0/24"], "gateway": "192.0.2.1", "ipRange": "192.0.2.128/25"}}),
        )
        .await?;
    let m1 = cluster.container("mone")?;
    let m2 = cluster.container("mtwo")?;
    cluster.attach("mone", "pub-net", 0, &m1, json!({})).await?;
    cluster.attach("mtwo", "pub-net", 1, &m2, json!({})).await?;
    let (addr_1, ns_1) =
        address_and_nameserver(&cluster.wait_endpoint("mone", "True", SETTLE).await?)?;
    let (addr_2, ns_2) =
        address_and_nameserver(&cluster.wait_endpoint("mtwo", "True", SETTLE).await?)?;
    assert_eq!((ns_1.as_str(), ns_2.as_str()), ("127.0.0.11", "127.0.0.11"));
    dig_until(&m1, "127.0.0.11", "mtwo", "A", &dug("NOERROR", &[&addr_2])).await?;
    dig_until(
        &m2,
        "127.0.0.11",
        "mone.pub-net",
        "A",
        &dug("NOERROR", &[&addr_1]),
    )
    .await?;
    Ok(())
}

/// Services by name (issue 18), fed by the agent's services loop: a `vip` service's name
/// answers its VIP, `tasks.<name>` and a `dnsrr` service's name the Ready endpoints; a
/// restarted weft-dns (whose state file keeps no services) gets them again from the agent,
/// and an endpoint going away leaves `tasks.<name>` and the `dnsrr` name.
#[tokio::test]
async fn service_names_resolve_through_the_agent_and_survive_a_weft_dns_restart() -> Result<()> {
    require_dig!();
    let mut cluster = Cluster::start(1).await?;
    cluster.start_names(0).await?;
    cluster
        .network(
            "app",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.70.0.0/24"]}}),
        )
        .await?;
    let client = cluster.container("client")?;
    cluster
        .attach("client", "app", 0, &client, json!({}))
        .await?;
    let node = cluster.nodes.first().context("one node")?.name.clone();
    let members = [cluster.container("wone")?, cluster.container("wtwo")?];
    for (name, sandbox) in ["wone", "wtwo"].iter().zip(&members) {
        cluster
            .apply(
                json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                "spec": {"network": "app", "node": node,
                         "sandbox": sandbox.path().display().to_string()}}),
            )
            .await?;
    }
    for (name, mode) in [("web", "vip"), ("cache", "dnsrr")] {
        cluster
            .apply(
                json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"network": "app", "endpointMode": mode,
                         "selector": {"matchLabels": {"app": "web"}},
                         "ports": [{"port": 80}]}}),
            )
            .await?;
    }
    let (_, ns) = address_and_nameserver(&cluster.wait_endpoint("client", "True", SETTLE).await?)?;
    let (addr_1, _) =
        address_and_nameserver(&cluster.wait_endpoint("wone", "True", SETTLE).await?)?;
    let (addr_2, _) =
        address_and_nameserver(&cluster.wait_endpoint("wtwo", "True", SETTLE).await?)?;
    let vip = weft_e2e::wait_for(SETTLE, || async {
        let svc = cluster.get_raw("ContainerService", "web").await?;
        Ok(svc["status"]["vip"].as_str().map(str::to_string))
    })
    .await
    .context("the controller never gave `web` its VIP")?;

    dig_until(&client, &ns, "web", "A", &dug("NOERROR", &[&vip])).await?;
    dig_all_until(&client, &ns, "tasks.web", &[&addr_1, &addr_2]).await?;
    dig_all_until(&client, &ns, "cache", &[&addr_1, &addr_2]).await?;
    dig_all_until(&client, &ns, "tasks.cache", &[&addr_1, &addr_2]).await?;
    assert_eq!(
        dig(&client, &ns, "web.app.weft.internal", "A", &[])?,
        dug("NOERROR", &[&vip]),
        "qualified by its network too"
    );

    // weft-dns is SIGKILLed and restarted: the endpoints come back from its state file, the
    // services only from the agent's feed, which reconnects and resends them.
    cluster.restart_names(0).await?;
    dig_until(&client, &ns, "web", "A", &dug("NOERROR", &[&vip])).await?;
    dig_all_until(&client, &ns, "cache", &[&addr_1, &addr_2]).await?;

    // An endpoint goes away: it leaves the service's tasks and the dnsrr name; the VIP stays.
    cluster.detach("wtwo").await?;
    dig_all_until(&client, &ns, "tasks.web", &[&addr_1]).await?;
    dig_all_until(&client, &ns, "cache", &[&addr_1]).await?;
    assert_eq!(dig(&client, &ns, "web", "A", &[])?, dug("NOERROR", &[&vip]));
    Ok(())
}
