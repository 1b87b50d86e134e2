//! Endpoints end to end: sandboxes attached through ContainerEndpoints and through the CNI
//! plugin, on nodes that are network namespaces on a shared underlay, with the real API
//! server, controller and agents. Traffic stays inside the test's namespaces.

use std::time::Duration;

use serde_json::json;
use weft_agent::endpoints::EndpointId;
use weft_agent::endpoints::plan::host_interface;
use weft_agent::names;
use weft_e2e::cluster::{Cluster, OUTSIDE, http_get, http_get_within, http_server, reachable};

const SETTLE: Duration = Duration::from_secs(20);

fn id(name: &str) -> EndpointId {
    EndpointId {
        namespace: "default".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn bridge_endpoints_talk_publish_ports_and_detach() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let node = &cluster.nodes[0];
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
        .attach(
            "a",
            "web",
            0,
            &a,
            json!({"publish": [{"hostPort": 5000, "containerPort": 80}]}),
        )
        .await
        .expect("attach a");
    cluster
        .attach("b", "web", 0, &b, json!({"address": "10.0.0.254"}))
        .await
        .expect("attach b");
    assert_eq!(cluster.endpoint_address("a").await.expect("a"), "10.0.0.2");
    assert_eq!(
        cluster.endpoint_address("b").await.expect("b"),
        "10.0.0.254"
    );

    // The kernel as Docker would leave it: a veth on the bridge, eth0 with a MAC derived
    // from the address, the default route via the gateway.
    let host = host_interface(&id("a"));
    let link = node
        .ns
        .exec(&["ip", "-d", "link", "show", &host])
        .expect("host veth");
    assert!(
        link.contains(&format!("master {}", names::bridge("web"))),
        "{link}"
    );
    // It publishes ports, so its bridge port hairpins (its own published port reaches it).
    assert!(link.contains("hairpin on"), "{link}");
    let eth0 = a.exec(&["ip", "-d", "addr", "show", "eth0"]).expect("eth0");
    assert!(eth0.contains("link/ether 02:42:0a:00:00:02"), "{eth0}");
    assert!(eth0.contains("inet 10.0.0.2/24"), "{eth0}");
    let routes = a.exec(&["ip", "route"]).expect("routes");
    assert!(routes.contains("default via 10.0.0.1 dev eth0"), "{routes}");

    assert!(
        reachable(&a, "10.0.0.254", SETTLE).await,
        "a cannot reach b"
    );
    assert!(reachable(&b, "10.0.0.2", SETTLE).await, "b cannot reach a");

    // Published port 5000 → a:80, from outside, from the node, and from its neighbour.
    http_server(&a, 80, "hello from a").expect("server");
    let url = format!("http://{}:5000/", node.address);
    // Hairpin from a neighbour on the same bridge is masqueraded so the answer comes back
    // through the node.
    cluster
        .assert_published(0, &url, "hello from a", &a, &b, SETTLE)
        .await;

    // A second claim on 5000 is refused, naming the first; nothing of it is published.
    let c = cluster.container("c").expect("c");
    cluster
        .attach(
            "c",
            "web",
            0,
            &c,
            json!({"publish": [{"hostPort": 5001, "containerPort": 80}, {"hostPort": 5000, "containerPort": 80}]}),
        )
        .await
        .expect("attach c");
    let refused = cluster
        .wait_endpoint("c", "False", SETTLE)
        .await
        .expect("c refused");
    let cond = &refused.status.expect("status").conditions[0];
    assert_eq!(cond.reason, "PortConflict");
    assert!(cond.message.contains("default/a"), "{}", cond.message);
    let rules = node
        .ns
        .exec(&["nft", "list", "table", "inet", "weft"])
        .expect("nft");
    assert!(!rules.contains("dport 5001"), "{rules}");

    // hostIP: bound to the node's underlay address only.
    let d = cluster.container("d").expect("d");
    cluster
        .attach(
            "d",
            "web",
            0,
            &d,
            json!({"publish": [{"hostPort": 6000, "containerPort": 80, "hostIP": node.address}]}),
        )
        .await
        .expect("attach d");
    cluster.endpoint_address("d").await.expect("d ready");
    http_server(&d, 80, "hello from d").expect("server d");
    let bound = format!("http://{}:6000/", node.address);
    assert_eq!(
        http_get_within(&cluster.underlay, &bound, SETTLE)
            .await
            .as_deref(),
        Some("hello from d")
    );
    assert_eq!(
        http_get(&node.ns, "http://10.0.0.1:6000/"),
        None,
        "the other address must refuse"
    );

    // Detach: the veth goes, the address is free again.
    let api: kube::Api<weft_api::ContainerEndpoint> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    api.delete("b", &Default::default())
        .await
        .expect("delete b");
    let host_b = host_interface(&id("b"));
    let gone = weft_e2e::wait_for(SETTLE, || {
        let ns = &node.ns;
        let host_b = host_b.clone();
        async move { Ok((!ns.try_exec(&["ip", "link", "show", &host_b])).then_some(())) }
    })
    .await;
    assert!(gone.is_ok(), "the veth of b is still there");
    let e = cluster.container("e").expect("e");
    cluster
        .attach("e", "web", 0, &e, json!({"address": "10.0.0.254"}))
        .await
        .expect("attach e");
    assert_eq!(
        cluster.endpoint_address("e").await.expect("e"),
        "10.0.0.254"
    );
}

#[tokio::test]
async fn overlay_endpoints_on_two_nodes_talk_through_static_entries() {
    let cluster = Cluster::start(2).await.expect("cluster");
    cluster
        .network(
            "ov",
            json!({"driver": "overlay", "ipam": {"subnets": ["10.40.0.0/24"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach("a", "ov", 0, &a, json!({}))
        .await
        .expect("a");
    cluster
        .attach("b", "ov", 1, &b, json!({}))
        .await
        .expect("b");
    let addr_a = cluster.endpoint_address("a").await.expect("a");
    let addr_b = cluster.endpoint_address("b").await.expect("b");
    assert!(
        reachable(&a, &addr_b, SETTLE).await,
        "a cannot reach b across nodes"
    );
    assert!(
        reachable(&b, &addr_a, SETTLE).await,
        "b cannot reach a across nodes"
    );

    // Node 1 knows b's MAC behind node 2's VTEP and answers ARP for it itself.
    let vx = names::vxlan("ov");
    let fdb = cluster.nodes[0]
        .ns
        .exec(&["bridge", "fdb", "show", "dev", &vx])
        .expect("fdb");
    let mac_b = b
        .exec(&["cat", "/sys/class/net/eth0/address"])
        .expect("mac")
        .trim()
        .to_string();
    assert!(
        fdb.lines()
            .any(|l| l.contains(&mac_b) && l.contains("dst 192.0.2.12")),
        "{fdb}"
    );
    let neigh = cluster.nodes[0]
        .ns
        .exec(&["ip", "neigh", "show", "dev", &vx])
        .expect("neigh");
    assert!(neigh.contains(&addr_b) && neigh.contains(&mac_b), "{neigh}");
    let details = cluster.nodes[0]
        .ns
        .exec(&["ip", "-d", "link", "show", &vx])
        .expect("vxlan");
    assert!(details.contains("nolearning"), "{details}");
    assert!(details.contains("proxy"), "{details}");
}

#[tokio::test]
async fn macvlan_endpoints_on_two_nodes_share_the_underlay() {
    let lan = LanPair::start(json!({"driver": "macvlan", "macvlan": {"parent": "eth0"}})).await;
    assert!(
        reachable(&lan.a, OUTSIDE, SETTLE).await,
        "a cannot reach the LAN"
    );
    let kind = lan
        .a
        .exec(&["ip", "-d", "link", "show", "eth0"])
        .expect("eth0");
    assert!(kind.contains("macvlan"), "{kind}");
}

/// Two nodes on the underlay LAN (192.0.2.0/24, gateway = the outside host), a network of
/// the given driver handing out 192.0.2.128/25, and one endpoint per node that reach each
/// other.
struct LanPair {
    _cluster: Cluster,
    a: weft_e2e::netns::Netns,
    _b: weft_e2e::netns::Netns,
}

impl LanPair {
    async fn start(driver: serde_json::Value) -> LanPair {
        let cluster = Cluster::start(2).await.expect("cluster");
        let mut spec = driver;
        spec["ipam"] =
            json!({"subnets": ["192.0.2.0/24"], "gateway": OUTSIDE, "ipRange": "192.0.2.128/25"});
        cluster.network("lan", spec).await.expect("network");
        let a = cluster.container("a").expect("a");
        let b = cluster.container("b").expect("b");
        cluster
            .attach("a", "lan", 0, &a, json!({}))
            .await
            .expect("a");
        cluster
            .attach("b", "lan", 1, &b, json!({}))
            .await
            .expect("b");
        let addr_a = cluster.endpoint_address("a").await.expect("a");
        let addr_b = cluster.endpoint_address("b").await.expect("b");
        assert_ne!(addr_a, addr_b);
        assert!(reachable(&a, &addr_b, SETTLE).await, "a cannot reach b");
        assert!(reachable(&b, &addr_a, SETTLE).await, "b cannot reach a");
        LanPair {
            _cluster: cluster,
            a,
            _b: b,
        }
    }
}

#[tokio::test]
async fn isolation_internal_and_icc() {
    let cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "one",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.1.0.0/24"]}}),
        )
        .await
        .expect("one");
    cluster
        .network(
            "two",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.2.0.0/24"]}}),
        )
        .await
        .expect("two");
    cluster
        .network(
            "inner",
            json!({"driver": "bridge", "internal": true, "ipam": {"subnets": ["10.3.0.0/24"]}}),
        )
        .await
        .expect("inner");
    cluster
        .network("quiet", json!({"driver": "bridge", "bridge": {"interContainerTraffic": false}, "ipam": {"subnets": ["10.4.0.0/24"]}}))
        .await
        .expect("quiet");
    let c1 = cluster.container("c1").expect("c");
    let c2 = cluster.container("c2").expect("c");
    let i1 = cluster.container("i1").expect("c");
    let i2 = cluster.container("i2").expect("c");
    let q1 = cluster.container("q1").expect("c");
    let q2 = cluster.container("q2").expect("c");
    for (name, net, ns) in [
        ("c1", "one", &c1),
        ("c2", "two", &c2),
        ("i1", "inner", &i1),
        ("i2", "inner", &i2),
        ("q1", "quiet", &q1),
        ("q2", "quiet", &q2),
    ] {
        cluster
            .attach(name, net, 0, ns, json!({}))
            .await
            .expect("attach");
    }
    let a_c2 = cluster.endpoint_address("c2").await.expect("c2");
    let a_i2 = cluster.endpoint_address("i2").await.expect("i2");
    let a_q2 = cluster.endpoint_address("q2").await.expect("q2");
    cluster.endpoint_address("c1").await.expect("c1");
    cluster.endpoint_address("i1").await.expect("i1");
    cluster.endpoint_address("q1").await.expect("q1");

    // Positive controls first, so a failure below means isolation, not a broken setup.
    assert!(
        reachable(&c1, OUTSIDE, SETTLE).await,
        "a normal network reaches outside"
    );
    assert!(reachable(&i1, &a_i2, SETTLE).await, "internal peers talk");
    assert!(
        reachable(&q1, "10.4.0.1", SETTLE).await,
        "ICC off still reaches the gateway"
    );

    assert!(
        !reachable(&c1, &a_c2, Duration::from_secs(2)).await,
        "two networks must not talk"
    );
    assert!(
        !reachable(&i1, OUTSIDE, Duration::from_secs(2)).await,
        "internal must not leave"
    );
    assert!(
        !reachable(&q1, &a_q2, Duration::from_secs(2)).await,
        "ICC off must block peers"
    );
}

/// Does this kernel create ipvlan links? (Asked in a throwaway namespace.)
fn kernel_has_ipvlan() -> bool {
    let Ok(ns) = weft_e2e::netns::Netns::new("probe") else {
        return false;
    };
    ns.try_exec(&[
        "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1",
    ]) && ns.try_exec(&[
        "ip", "link", "add", "link", "p0", "name", "iv0", "type", "ipvlan",
    ])
}

#[tokio::test]
async fn ipvlan_endpoints_on_two_nodes_where_the_kernel_has_ipvlan() {
    if !kernel_has_ipvlan() {
        eprintln!(
            "SKIP: ipvlan_endpoints_on_two_nodes_where_the_kernel_has_ipvlan: this kernel has no ipvlan support (Unknown device type)"
        );
        return;
    }
    LanPair::start(json!({"driver": "ipvlan", "ipvlan": {"parent": "eth0", "mode": "l2"}})).await;
}

#[tokio::test]
async fn refused_endpoints_say_why_and_leave_nothing_behind() {
    let cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "small",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.7.0.0/30"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    cluster
        .attach("a", "small", 0, &a, json!({}))
        .await
        .expect("a");
    assert_eq!(cluster.endpoint_address("a").await.expect("a"), "10.7.0.2");

    // (reason, endpoint, spec) — each refused with its reason and a message naming the cause.
    let cases = [
        ("AddressInUse", "taken", json!({"address": "10.7.0.2"})),
        ("OutsideSubnet", "outside", json!({"address": "10.9.9.9"})),
        ("NoFreeAddress", "full", json!({})),
    ];
    let mut sandboxes = Vec::new();
    for (reason, name, extra) in &cases {
        let ns = cluster.container(name).expect("sandbox");
        cluster
            .attach(name, "small", 0, &ns, extra.clone())
            .await
            .expect("attach");
        let cep = cluster
            .wait_endpoint(name, "False", SETTLE)
            .await
            .expect("refused");
        let status = cep.status.expect("status");
        assert_eq!(status.conditions[0].reason, *reason, "{name}");
        assert!(status.address.is_none(), "{name} got an address");
        assert!(
            !ns.try_exec(&["ip", "link", "show", "eth0"]),
            "{name}: nothing may be attached"
        );
        sandboxes.push(ns);
    }

    // A sandbox path that does not exist (on a network with room, so the address is not
    // what stops it; the endpoint attaches once the sandbox appears).
    cluster
        .network(
            "roomy",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.8.0.0/24"]}}),
        )
        .await
        .expect("network");
    cluster
        .apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
            "metadata": {"name": "ghost", "namespace": "default"},
            "spec": {"network": "roomy", "node": cluster.nodes[0].name,
                     "sandbox": "/var/run/netns/weft-no-such-sandbox"}}),
        )
        .await
        .expect("ghost");
    // NetworkNotReady first, while the new network is being programmed; then the sandbox.
    let api: kube::Api<weft_api::ContainerEndpoint> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    let cep = weft_e2e::wait_for(SETTLE, || {
        let api = api.clone();
        async move {
            let cep = api.get("ghost").await?;
            let missing = cep
                .status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "SandboxMissing"));
            Ok(missing.then_some(cep))
        }
    })
    .await
    .expect("ghost refused with SandboxMissing");
    let cond = &cep.status.expect("status").conditions[0];
    assert_eq!(cond.reason, "SandboxMissing");
    assert!(
        cond.message.contains("weft-no-such-sandbox"),
        "{}",
        cond.message
    );
    // The first endpoint is untouched by all of it.
    let inside = a.exec(&["ip", "-4", "addr", "show", "eth0"]).expect("eth0");
    assert!(inside.contains("10.7.0.2/30"), "{inside}");
}

/// The sandbox's IPv4 default routes, one line each.
fn default_routes(ns: &weft_e2e::netns::Netns) -> Vec<String> {
    ns.exec(&["ip", "-4", "route", "show", "default"])
        .expect("routes")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Wait until the sandbox's IPv4 default routes are exactly `want` (one line each, prefix).
async fn wait_default_routes(ns: &weft_e2e::netns::Netns, want: &[&str]) -> Vec<String> {
    let mut last = Vec::new();
    let ok = weft_e2e::wait_for(SETTLE, || {
        let got = default_routes(ns);
        let matches =
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| g.starts_with(w));
        last = got;
        async move { Ok(matches.then_some(())) }
    })
    .await;
    assert!(ok.is_ok(), "default routes {last:?}, want {want:?}");
    last
}

/// Several networks in one sandbox, as `docker run --network a,b` and `docker network
/// connect`: each its own interface, one default route from the highest gwPriority (a tie
/// goes to the earlier), handed over when its network is detached; an internal network
/// never gives one; a second endpoint on an interface name already taken is refused and
/// the first stays as it was.
#[tokio::test]
async fn a_sandbox_on_three_networks_has_one_default_route() {
    let cluster = Cluster::start(1).await.expect("cluster");
    for (name, subnet, internal) in [
        ("red", "10.11.0.0/24", false),
        ("green", "10.12.0.0/24", false),
        ("blue", "10.13.0.0/24", false),
        ("inner", "10.14.0.0/24", true),
    ] {
        cluster
            .network(
                name,
                json!({"driver": "bridge", "internal": internal, "ipam": {"subnets": [subnet]}}),
            )
            .await
            .expect("network");
    }
    let s = cluster.container("s").expect("s");
    let peer = cluster.container("peer").expect("peer");
    cluster
        .attach("peer", "red", 0, &peer, json!({}))
        .await
        .expect("peer");
    let peer_addr = cluster.endpoint_address("peer").await.expect("peer");
    let attach = |name: &'static str, net: &'static str, spec: serde_json::Value| {
        let cluster = &cluster;
        let s = &s;
        async move {
            cluster.attach(name, net, 0, s, spec).await.expect("attach");
            cluster.endpoint_address(name).await.expect("attached")
        }
    };
    let red_addr = attach("s-red", "red", json!({})).await;
    wait_default_routes(&s, &["default via 10.11.0.1 dev eth0"]).await;
    // A second network with a higher priority takes the default route; eth0 keeps only
    // its subnet (the kernel's prefix route).
    attach(
        "s-green",
        "green",
        json!({"interfaceName": "eth1", "gwPriority": 10}),
    )
    .await;
    wait_default_routes(&s, &["default via 10.12.0.1 dev eth1"]).await;
    // Same priority, later: green keeps it.
    attach(
        "s-blue",
        "blue",
        json!({"interfaceName": "eth2", "gwPriority": 10}),
    )
    .await;
    // Internal, even with the highest priority: never a default route.
    attach(
        "s-inner",
        "inner",
        json!({"interfaceName": "eth3", "gwPriority": 100}),
    )
    .await;
    wait_default_routes(&s, &["default via 10.12.0.1 dev eth1"]).await;
    let routes = s.exec(&["ip", "-4", "route"]).expect("routes");
    for (subnet, dev) in [
        ("10.11.0.0/24", "eth0"),
        ("10.12.0.0/24", "eth1"),
        ("10.13.0.0/24", "eth2"),
        ("10.14.0.0/24", "eth3"),
    ] {
        assert!(
            routes.contains(&format!("{subnet} dev {dev} proto kernel")),
            "{routes}"
        );
    }
    assert!(
        reachable(&s, &peer_addr, SETTLE).await,
        "the first network still reaches its peer"
    );

    // The same interface name again in this sandbox: refused, naming the holder.
    cluster
        .attach("s-dup", "blue", 0, &s, json!({"interfaceName": "eth0"}))
        .await
        .expect("attach dup");
    let refused = cluster
        .wait_endpoint("s-dup", "False", SETTLE)
        .await
        .expect("refused");
    let cond = &refused.status.expect("status").conditions[0];
    assert_eq!(cond.reason, "InterfaceNameInUse");
    assert!(cond.message.contains("default/s-red"), "{}", cond.message);
    let eth0 = s.exec(&["ip", "-4", "addr", "show", "eth0"]).expect("eth0");
    assert!(eth0.contains(&format!("{red_addr}/24")), "{eth0}");

    // Detaching the holder hands the route to the next: blue (priority 10), then red.
    let api: kube::Api<weft_api::ContainerEndpoint> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    api.delete("s-green", &Default::default())
        .await
        .expect("delete green");
    wait_default_routes(&s, &["default via 10.13.0.1 dev eth2"]).await;
    api.delete("s-blue", &Default::default())
        .await
        .expect("delete blue");
    wait_default_routes(&s, &["default via 10.11.0.1 dev eth0"]).await;
    // A changed priority moves the route without re-attaching anything.
    let before = s.exec(&["ip", "-o", "link", "show", "eth0"]).expect("eth0");
    cluster
        .attach("s-blue2", "blue", 0, &s, json!({"interfaceName": "eth2"}))
        .await
        .expect("attach blue2");
    cluster.endpoint_address("s-blue2").await.expect("blue2");
    wait_default_routes(&s, &["default via 10.11.0.1 dev eth0"]).await;
    cluster
        .attach(
            "s-blue2",
            "blue",
            0,
            &s,
            json!({"interfaceName": "eth2", "gwPriority": 1}),
        )
        .await
        .expect("raise blue2");
    wait_default_routes(&s, &["default via 10.13.0.1 dev eth2"]).await;
    let after = s.exec(&["ip", "-o", "link", "show", "eth0"]).expect("eth0");
    assert_eq!(before, after, "eth0 was re-created");
    assert!(reachable(&s, &peer_addr, SETTLE).await);
}

/// A sandbox that already has a default route Weft did not make (a stand-in for the
/// cluster's pod network, as under Multus): it stays, Weft adds none next to it.
#[tokio::test]
async fn a_foreign_default_route_stays() {
    let cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "lan",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.15.0.0/24"]}}),
        )
        .await
        .expect("network");
    let s = cluster.container("pod").expect("pod");
    for cmd in [
        &[
            "ip", "link", "add", "pod0", "type", "veth", "peer", "name", "pod0p",
        ][..],
        &["ip", "link", "set", "pod0", "up"],
        &["ip", "addr", "add", "192.168.50.2/24", "dev", "pod0"],
        &["ip", "route", "add", "default", "via", "192.168.50.1"],
    ] {
        s.exec(cmd).expect("pod network stand-in");
    }
    cluster
        .attach(
            "pod-lan",
            "lan",
            0,
            &s,
            json!({"interfaceName": "net1", "gwPriority": 100}),
        )
        .await
        .expect("attach");
    cluster.endpoint_address("pod-lan").await.expect("attached");
    let routes = wait_default_routes(&s, &["default via 192.168.50.1 dev pod0"]).await;
    assert_eq!(routes.len(), 1);
    let all = s.exec(&["ip", "-4", "route"]).expect("routes");
    assert!(all.contains("10.15.0.0/24 dev net1 proto kernel"), "{all}");
}
