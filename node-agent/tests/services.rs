//! The services dataplane against a real kernel, in throwaway network namespaces (run as
//! root): a node with a bridge, three endpoints answering their name over TCP, a client on
//! the bridge and a client outside the node. Balance, affinity, hairpin, draining, source
//! addresses, ingress and idempotence are measured with real connections.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use weft_agent::kernel::ServiceDataplane;
use weft_agent::services::plan::{EndpointInput, PortInput, ServiceInput, plan};
use weft_api::{PublishMode, ServiceProtocol, TrafficPolicy};
use weft_e2e::cluster::{Cluster, OUTSIDE};
use weft_e2e::netns::Netns;
use weft_e2e::topology::BridgeNode;

/// Run `f` on a thread inside the namespace.
fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).expect("open netns");
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {}", ns.display());
        f()
    })
    .join()
    .expect("thread in netns")
}

/// A TCP server in the namespace: for every line it reads, it answers `<name> <peer ip>`.
fn serve(ns: &Path, name: &'static str, port: u16) {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).expect("open netns");
        // SAFETY: as above.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0);
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let peer = conn
                    .peer_addr()
                    .map(|p| p.ip().to_string())
                    .unwrap_or_default();
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut conn = conn;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if conn
                        .write_all(format!("{name} {peer}\n").as_bytes())
                        .is_err()
                    {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
}

/// One connection: ask once, return `(server name, source it saw)`.
fn ask(to: SocketAddr) -> std::io::Result<(String, String)> {
    let conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut w = conn.try_clone()?;
    w.write_all(b"hi\n")?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    Ok((
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    ))
}

/// `n` connections from inside `ns`; the answers, failures counted as "FAILED".
fn ask_many(ns: &Path, to: SocketAddr, n: usize) -> Vec<(String, String)> {
    in_ns(ns, move || {
        (0..n)
            .map(|_| ask(to).unwrap_or_else(|e| ("FAILED".into(), e.to_string())))
            .collect()
    })
}

fn count(answers: &[(String, String)], name: &str) -> usize {
    answers.iter().filter(|(n, _)| n == name).count()
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 241);
const NAMES: [&str; 3] = ["e0", "e1", "e2"];

/// node (bridge 10.30.0.1/24, 192.168.77.1 towards `outside`), e0..e2 = 10.30.0.2-4
/// serving :8080, `client` = 10.30.0.10 on the bridge, `outside` = 192.168.77.2.
struct Lab {
    node: BridgeNode,
    eps: Vec<Netns>,
    client: Netns,
    outside: Netns,
}

fn lab() -> Option<Lab> {
    if Command::new("nft").arg("--version").output().is_err() {
        let _ = writeln!(std::io::stderr(), "SKIP: the nft program is not installed");
        return None;
    }
    let node = BridgeNode::new("10.30.0.1", 24).expect("node");
    let mut eps = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let ns = Netns::new(name).expect("sandbox");
        node.plug(&ns, &format!("10.30.0.{}", i + 2)).expect("plug");
        serve(&ns.path(), name, 8080);
        eps.push(ns);
    }
    let client = Netns::new("client").expect("client");
    node.plug(&client, "10.30.0.10").expect("plug");
    let outside = node
        .uplink("up0", "192.168.77.1", "192.168.77.2")
        .expect("outside");
    std::thread::sleep(Duration::from_millis(300));
    Some(Lab {
        node,
        eps,
        client,
        outside,
    })
}

/// A shell command in the node.
fn node_sh(lab: &Lab, cmd: &str) -> String {
    lab.node.ns.exec(&["sh", "-c", cmd]).expect(cmd)
}

fn web(ready: [bool; 3], affinity: Option<u32>) -> ServiceInput {
    ServiceInput {
        id: "default/web".into(),
        vip: Some(VIP),
        subnets: vec!["10.30.0.0/24".parse().unwrap()],
        ports: vec![PortInput {
            protocol: ServiceProtocol::Tcp,
            port: 80,
            target: 8080,
            publish: Some((PublishMode::Ingress, 8000)),
        }],
        affinity,
        ingress_policy: TrafficPolicy::Cluster,
        endpoints: ready
            .iter()
            .enumerate()
            .map(|(i, r)| EndpointInput {
                address: Ipv4Addr::new(10, 30, 0, 2 + i as u8),
                ready: *r,
                local: true,
                via: None,
            })
            .collect(),
    }
}

fn vip() -> SocketAddr {
    SocketAddr::from((VIP, 80))
}

#[tokio::test(flavor = "multi_thread")]
async fn three_thousand_connections_spread_evenly_over_three_endpoints() {
    let Some(lab) = lab() else { return };
    let mut dp = ServiceDataplane::open(Some(&lab.node.ns.path()))
        .await
        .expect("open");
    dp.apply(&plan(&[web([true; 3], None)]))
        .await
        .expect("apply");
    let answers = ask_many(&lab.client.path(), vip(), 3000);
    for name in NAMES {
        let n = count(&answers, name);
        assert!(
            (900..=1100).contains(&n),
            "{name} got {n} of 3000 (want 1000 ± 10 %); failed: {}",
            count(&answers, "FAILED")
        );
    }
    // A client on the bridge is masqueraded to the gateway, so the reply comes back through
    // the node (it would otherwise go straight over the bridge from the wrong address).
    assert!(
        answers.iter().all(|(_, src)| src == "10.30.0.1"),
        "{:?}",
        &answers[..3]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_outside_the_subnet_keep_their_address_through_the_vip_and_the_ingress_port() {
    let Some(lab) = lab() else { return };
    let mut dp = ServiceDataplane::open(Some(&lab.node.ns.path()))
        .await
        .expect("open");
    dp.apply(&plan(&[web([true; 3], None)]))
        .await
        .expect("apply");
    for to in [vip(), "192.168.77.1:8000".parse().unwrap()] {
        let answers = ask_many(&lab.outside.path(), to, 60);
        assert_eq!(count(&answers, "FAILED"), 0, "{to}: {answers:?}");
        assert!(
            answers.iter().all(|(_, src)| src == "192.168.77.2"),
            "{to}: the endpoint must see the client's own address: {answers:?}"
        );
        assert!(
            NAMES.iter().all(|n| count(&answers, n) > 0),
            "{to}: {answers:?}"
        );
    }
    // A port no service offers on a VIP is refused at once (not left to time out).
    let refused = in_ns(&lab.outside.path(), || {
        TcpStream::connect_timeout(&SocketAddr::from((VIP, 81)), Duration::from_secs(2))
            .map(|_| ())
            .map_err(|e| e.kind())
    });
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
}

#[tokio::test(flavor = "multi_thread")]
async fn session_affinity_sends_a_client_to_one_endpoint() {
    let Some(lab) = lab() else { return };
    let mut dp = ServiceDataplane::open(Some(&lab.node.ns.path()))
        .await
        .expect("open");
    dp.apply(&plan(&[web([true; 3], Some(60))]))
        .await
        .expect("apply");
    let answers = ask_many(&lab.client.path(), vip(), 300);
    let first = answers[0].0.clone();
    assert!(NAMES.contains(&first.as_str()), "{answers:?}");
    assert_eq!(count(&answers, &first), 300, "every connection to {first}");
    // The outside client is another client: it may land elsewhere, but sticks too.
    let outside = ask_many(&lab.outside.path(), vip(), 100);
    assert_eq!(count(&outside, &outside[0].0), 100);
}

/// An endpoint reaching its own VIP, balanced to itself too: with `br_netfilter` the DNAT'd
/// packet is bridged back out the port it came in on, which needs the port's hairpin mode.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_reaches_its_own_service_hairpin() {
    let Some(lab) = lab() else { return };
    let mut dp = ServiceDataplane::open(Some(&lab.node.ns.path()))
        .await
        .expect("open");
    dp.apply(&plan(&[web([true; 3], None)]))
        .await
        .expect("apply");
    let answers = ask_many(&lab.eps[0].path(), vip(), 300);
    assert_eq!(count(&answers, "FAILED"), 0, "{answers:?}");
    assert!(
        count(&answers, "e0") > 0,
        "e0 reached itself through the VIP"
    );
    assert!(count(&answers, "e1") > 0 && count(&answers, "e2") > 0);
    // Masqueraded: the reply must come back through the node, not straight from itself.
    assert!(
        answers.iter().all(|(_, src)| src == "10.30.0.1"),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_not_ready_endpoint_drains_while_established_connections_live_on() {
    let Some(lab) = lab() else { return };
    let mut dp = ServiceDataplane::open(Some(&lab.node.ns.path()))
        .await
        .expect("open");
    dp.apply(&plan(&[web([true; 3], None)]))
        .await
        .expect("apply");
    // Hold one connection to each endpoint open.
    let held = in_ns(&lab.client.path(), || {
        let mut held = std::collections::BTreeMap::new();
        for _ in 0..200 {
            let conn = TcpStream::connect_timeout(&vip(), Duration::from_secs(2)).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut w = conn.try_clone().expect("clone");
            w.write_all(b"hi\n").expect("write");
            let mut line = String::new();
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            r.read_line(&mut line).expect("read");
            let name = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            held.entry(name).or_insert(conn);
            if held.len() == 3 {
                break;
            }
        }
        held
    });
    assert_eq!(held.len(), 3, "one connection to each endpoint");
    let writes = dp
        .apply(&plan(&[web([true, false, true], None)]))
        .await
        .expect("apply");
    assert_eq!(writes.transactions, 1);
    let answers = ask_many(&lab.client.path(), vip(), 300);
    assert_eq!(
        count(&answers, "e1"),
        0,
        "no new connection to the not-ready e1"
    );
    assert_eq!(count(&answers, "FAILED"), 0);
    // Every held connection still answers, e1's included (conntrack keeps its DNAT).
    let still = in_ns(&lab.client.path(), move || {
        held.into_iter()
            .map(|(name, conn)| {
                let mut w = conn.try_clone().expect("clone");
                w.write_all(b"again\n").expect("write on a held connection");
                let mut line = String::new();
                BufReader::new(conn).read_line(&mut line).expect("read");
                (
                    name,
                    line.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect::<Vec<_>>()
    });
    for (was, now) in still {
        assert_eq!(was, now);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_apply_writes_nothing_and_a_restarted_writer_replaces_the_table_whole() {
    let Some(lab) = lab() else { return };
    // Fifty other services besides web, so "the whole table" and "one service" differ.
    let others: Vec<ServiceInput> = (0..50u8)
        .map(|i| ServiceInput {
            id: format!("default/other-{i}"),
            vip: Some(Ipv4Addr::new(10, 31, 0, i + 1)),
            ..web([true; 3], None)
        })
        .collect();
    let with = |web_ready: [bool; 3]| {
        let mut all = others.clone();
        all.push(web(web_ready, None));
        plan(&all)
    };
    let desired = with([true; 3]);
    let mut dp = ServiceDataplane::open(Some(&lab.node.ns.path()))
        .await
        .expect("open");
    let first = dp.apply(&desired).await.expect("apply");
    assert_eq!((first.transactions, first.routes), (1, 51));
    let listed = node_sh(&lab, "nft list table ip weft-svc");
    let again = dp.apply(&desired).await.expect("apply");
    assert_eq!(again, Default::default(), "nothing written the second time");
    assert_eq!(node_sh(&lab, "nft list table ip weft-svc"), listed);
    // An agent restart: a new writer replaces the table in one transaction; same content,
    // and the service answers right after.
    let mut restarted = ServiceDataplane::open(Some(&lab.node.ns.path()))
        .await
        .expect("open");
    restarted.apply(&desired).await.expect("apply");
    assert_eq!(node_sh(&lab, "nft list table ip weft-svc"), listed);
    // One endpoint change writes that service's chain, not the table.
    let changed = restarted
        .apply(&with([true, true, false]))
        .await
        .expect("apply");
    assert_eq!(changed.transactions, 1);
    assert!(
        changed.script_bytes * 20 < first.script_bytes,
        "{changed:?} against a full table of {} bytes",
        first.script_bytes
    );
    assert_eq!(changed.routes, 0);
    let answers = ask_many(&lab.client.path(), vip(), 60);
    assert_eq!(count(&answers, "e2"), 0);
    assert_eq!(count(&answers, "FAILED"), 0);
    // No service left: the table goes (a node without services carries nothing of them),
    // and a fresh writer with nothing to program writes nothing.
    restarted.apply(&plan(&[])).await.expect("apply");
    assert!(!node_sh(&lab, "nft list tables").contains("weft-svc"));
    let mut idle = ServiceDataplane::open(Some(&lab.node.ns.path()))
        .await
        .expect("open");
    assert_eq!(
        idle.apply(&plan(&[])).await.expect("apply"),
        Default::default()
    );
    restarted.apply(&desired).await.expect("apply");
    // Removing everything leaves no table and no route behind.
    restarted.remove().await.expect("remove");
    assert!(!node_sh(&lab, "nft list tables").contains("weft-svc"));
    assert!(!node_sh(&lab, "ip route show table local").contains("10.30.0.240"));
}

// ---- The routing mesh: real agents and controller on two nodes of an overlay ----

const SETTLE: Duration = Duration::from_secs(30);

/// A ContainerEndpoint labelled `app: <app>` for `sandbox` on node `index`.
async fn member(cluster: &Cluster, name: &str, app: &str, index: usize, sandbox: &Netns) {
    cluster
        .apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"network": "mesh", "node": cluster.nodes[index].name,
                     "sandbox": sandbox.path().display().to_string()}}),
        )
        .await
        .expect("endpoint");
}

/// A `vip` service over `app`: port 80 → 8080, published in ingress mode on `published`.
async fn service(
    cluster: &Cluster,
    name: &str,
    app: &str,
    published: u16,
    policy: &str,
) -> Ipv4Addr {
    cluster
        .apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"network": "mesh", "selector": {"matchLabels": {"app": app}},
                     "ingressTrafficPolicy": policy,
                     "ports": [{"port": 80, "targetPort": 8080,
                                "publish": {"mode": "ingress", "publishedPort": published}}]}}),
        )
        .await
        .expect("service");
    let vip = weft_e2e::wait_for(SETTLE, || async {
        let svc = cluster.get_raw("ContainerService", name).await?;
        Ok(svc["status"]["vip"].as_str().map(str::to_string))
    })
    .await
    .expect("the controller gives the service its VIP");
    vip.parse().expect("a VIP")
}

/// Ask `to` from `ns` until an answer comes (the agents program asynchronously).
fn first_answer(ns: &Path, to: SocketAddr) -> (String, String) {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let got = in_ns(ns, move || ask(to));
        match got {
            Ok(a) => return a,
            Err(e) if std::time::Instant::now() > deadline => panic!("{to} never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Overlay `mesh` on two nodes: e0 on node 1, e1 and e2 on node 2, a client on node 1.
struct Mesh {
    cluster: Cluster,
    client: Netns,
    members: Vec<Netns>,
}

async fn mesh() -> Mesh {
    let cluster = Cluster::start(2).await.expect("cluster");
    cluster
        .network(
            "mesh",
            json!({"driver": "overlay", "ipam": {"subnets": ["10.80.0.0/24"]}}),
        )
        .await
        .expect("network");
    let client = cluster.container("client").expect("client");
    cluster
        .attach("client", "mesh", 0, &client, json!({}))
        .await
        .expect("client");
    let mut members = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let sandbox = cluster.container(name).expect("sandbox");
        member(&cluster, name, "web", usize::from(i > 0), &sandbox).await;
        members.push(sandbox);
    }
    for name in NAMES.iter().chain(&["client"]) {
        cluster
            .wait_endpoint(name, "True", SETTLE)
            .await
            .expect("ready");
    }
    for (sandbox, name) in members.iter().zip(NAMES) {
        serve(&sandbox.path(), name, 8080);
    }
    Mesh {
        cluster,
        client,
        members,
    }
}

/// Balance across nodes: 3,000 connections from node 1 spread over e0 (node 1) and e1, e2
/// (node 2), each 1/3 ± 10 %. The remote endpoints see node 1's own underlay address (unique
/// per node, so their replies come back to it), not the overlay's anycast gateway, which
/// every node holds; the local one sees the gateway (a client in the subnet is masqueraded).
/// From node 2 the other way round.
#[tokio::test(flavor = "multi_thread")]
async fn mesh_a_vip_balances_across_two_nodes_and_replies_come_back_to_the_balancing_node() {
    let m = mesh().await;
    let vip = service(&m.cluster, "web", "web", 8000, "Cluster").await;
    let to = SocketAddr::from((vip, 80));
    // Every endpoint answers once (both agents programmed the service and the mesh).
    let client = m.client.path();
    weft_e2e::wait_for(SETTLE, || {
        let client = client.clone();
        async move {
            let answers = ask_many(&client, to, 30);
            Ok(NAMES.iter().all(|n| count(&answers, n) > 0).then_some(()))
        }
    })
    .await
    .expect("every endpoint answers through the VIP");
    let answers = ask_many(&client, to, 3000);
    assert_eq!(count(&answers, "FAILED"), 0, "{:?}", &answers[..5]);
    for name in NAMES {
        let n = count(&answers, name);
        assert!((900..=1100).contains(&n), "{name} got {n} of 3000");
    }
    let node1 = m.cluster.nodes[0].address.clone();
    for (name, src) in &answers {
        let want = if name == "e0" {
            "10.80.0.1"
        } else {
            node1.as_str()
        };
        assert_eq!(src, want, "the source {name} saw");
    }
    // From node 2: e0 is the remote one now, and sees node 2's address.
    let other = m.cluster.container("other").expect("other");
    m.cluster
        .attach("other", "mesh", 1, &other, json!({}))
        .await
        .expect("other");
    m.cluster
        .wait_endpoint("other", "True", SETTLE)
        .await
        .expect("ready");
    let answers = ask_many(&other.path(), to, 300);
    assert_eq!(count(&answers, "FAILED"), 0);
    let node2 = m.cluster.nodes[1].address.clone();
    for (name, src) in &answers {
        let want = if name == "e0" {
            node2.as_str()
        } else {
            "10.80.0.1"
        };
        assert_eq!(src, want, "the source {name} saw from node 2");
    }
    assert!(count(&answers, "e0") > 0);
}

/// Ingress: a port published in ingress mode answers on a node with no endpoint of the
/// service (node 1 forwards to node 2; the endpoint sees node 1's address: the client's is
/// lost, as documented); with `ingressTrafficPolicy: Local` the endpoint sees the outside
/// client's own address, and a node without a local endpoint does not answer the port.
#[tokio::test(flavor = "multi_thread")]
async fn mesh_ingress_answers_on_a_node_without_an_endpoint_and_local_keeps_the_client_address() {
    let m = mesh().await;
    // Only e2 (node 2) serves "solo"; "kept" is the same with the Local policy.
    member(&m.cluster, "e2", "solo", 1, &m.members[2]).await;
    service(&m.cluster, "solo", "solo", 8001, "Cluster").await;
    service(&m.cluster, "kept", "solo", 8002, "Local").await;
    let underlay = m.cluster.underlay.path();
    let node1 = m.cluster.nodes[0].address.clone();
    let node2 = m.cluster.nodes[1].address.clone();
    let at = |node: &str, port: u16| -> SocketAddr {
        format!("{node}:{port}").parse().expect("address")
    };
    // Cluster policy, through node 1, which has no endpoint of "solo".
    let (name, src) = first_answer(&underlay, at(&node1, 8001));
    assert_eq!((name.as_str(), src.as_str()), ("e2", node1.as_str()));
    let answers = ask_many(&underlay, at(&node1, 8001), 100);
    assert!(
        answers.iter().all(|(n, s)| n == "e2" && *s == node1),
        "{answers:?}"
    );
    // Through node 2, which has it: the client's address is kept.
    let answers = ask_many(&underlay, at(&node2, 8001), 100);
    assert!(
        answers.iter().all(|(n, s)| n == "e2" && s == OUTSIDE),
        "{answers:?}"
    );
    // Local policy: node 2 answers with the client's address kept …
    let (name, src) = first_answer(&underlay, at(&node2, 8002));
    assert_eq!((name.as_str(), src.as_str()), ("e2", OUTSIDE));
    // … node 1 has no local endpoint, so it does not publish the port at all.
    let refused = in_ns(&underlay, move || ask(at(&node1, 8002)));
    assert!(refused.is_err(), "{refused:?}");
}

/// The agent on node 1 is SIGKILLed and restarted while a client connects through the VIP
/// every 10 ms: not one connection fails (the kernel keeps the tables while no agent runs,
/// and the restarted one replaces them in one transaction each).
#[tokio::test(flavor = "multi_thread")]
async fn mesh_services_survive_an_agent_restart_without_a_failed_connection() {
    let mut m = mesh().await;
    let vip = service(&m.cluster, "web", "web", 8000, "Cluster").await;
    let to = SocketAddr::from((vip, 80));
    let client = m.client.path();
    weft_e2e::wait_for(SETTLE, || {
        let client = client.clone();
        async move {
            let answers = ask_many(&client, to, 30);
            Ok(NAMES.iter().all(|n| count(&answers, n) > 0).then_some(()))
        }
    })
    .await
    .expect("every endpoint answers through the VIP");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        let client = client.clone();
        std::thread::spawn(move || {
            in_ns(&client, move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(ask(to).unwrap_or_else(|e| ("FAILED".into(), e.to_string())));
                    std::thread::sleep(Duration::from_millis(10));
                }
                answers
            })
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    m.cluster.kill_agent(0).await.expect("kill");
    std::thread::sleep(Duration::from_millis(500));
    m.cluster.start_agent(0).expect("start");
    // Until the restarted agent has programmed again (its table listed whole once more).
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = probe.join().expect("probe");
    let failed: Vec<_> = answers.iter().filter(|(n, _)| n == "FAILED").collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert!(answers.len() > 100, "{} connections", answers.len());
    assert!(NAMES.iter().all(|n| count(&answers, n) > 0));
}

/// An endpoint that asks for a service's VIP is refused by the agent with a condition naming
/// the service (the node answers for that address and balances it elsewhere; the schema
/// cannot know the VIPs). Once the service is gone, the same request is admitted.
#[tokio::test(flavor = "multi_thread")]
async fn api_an_endpoint_asking_for_a_service_vip_is_refused_with_a_condition() {
    let cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "mesh",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.81.0.0/24"]}}),
        )
        .await
        .expect("network");
    let vip = service(&cluster, "web", "web", 8000, "Cluster").await;
    // Once the agent knows the VIP (its route is there): before that, an endpoint may be
    // given the address, and then the controller moves the VIP instead.
    let node = &cluster.nodes[0].ns;
    weft_e2e::wait_for(SETTLE, || async {
        let routes = node.exec(&["ip", "route", "show", "table", "local"])?;
        Ok(routes.contains(&format!("local {vip} ")).then_some(()))
    })
    .await
    .expect("the agent programs the VIP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let thief = cluster.container("thief").expect("sandbox");
    cluster
        .attach(
            "thief",
            "mesh",
            0,
            &thief,
            json!({"address": vip.to_string()}),
        )
        .await
        .expect("endpoint");
    let refused = cluster
        .wait_endpoint("thief", "False", SETTLE)
        .await
        .expect("refused");
    let ready = refused
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .expect("a Ready condition");
    assert_eq!(ready.reason, "AddressInUse", "{ready:?}");
    assert!(
        ready
            .message
            .contains(&format!("{vip} is the VIP of service default/web")),
        "{}",
        ready.message
    );
    let addrs = thief.exec(&["ip", "-4", "addr"]).expect("ip");
    assert!(
        !addrs.contains(&format!("inet {vip}/")),
        "nothing of it is in the sandbox: {addrs}"
    );
    // The controller keeps the VIP: the endpoint only asked for it.
    let svc = cluster
        .get_raw("ContainerService", "web")
        .await
        .expect("web");
    assert_eq!(
        svc["status"]["vip"].as_str(),
        Some(vip.to_string().as_str())
    );
    // The service goes: the same request is admitted.
    let api: kube::Api<weft_api::ContainerService> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    api.delete("web", &Default::default())
        .await
        .expect("delete");
    cluster
        .wait_endpoint("thief", "True", SETTLE)
        .await
        .expect("admitted once the VIP is free");
    assert_eq!(
        cluster.endpoint_address("thief").await.expect("address"),
        vip.to_string()
    );
}
