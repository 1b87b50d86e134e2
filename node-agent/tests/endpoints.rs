//! Endpoints end to end: sandboxes attached through ContainerEndpoints and through the CNI
//! plugin, on nodes that are network namespaces on a shared underlay, with the real API
//! server, controller and agents. Traffic stays inside the test's namespaces.

use std::time::Duration;

use serde_json::json;
use weft_agent::endpoints::EndpointId;
use weft_agent::endpoints::plan::host_interface;
use weft_agent::names;
use weft_e2e::cluster::{
    Cluster, OUTSIDE, http_get, http_get_within, http_server, reachable, stays_unreachable,
};

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
    // Its bridge port hairpins (its own published port reaches it), and so does every
    // endpoint's, publishing or not: any of them may be balanced to itself behind a service VIP.
    assert!(link.contains("hairpin on"), "{link}");
    let b_link = node
        .ns
        .exec(&["ip", "-d", "link", "show", &host_interface(&id("b"))])
        .expect("b's host veth");
    assert!(b_link.contains("hairpin on"), "{b_link}");
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
        stays_unreachable(&c1, &a_c2, Duration::from_secs(2)).await,
        "two networks must not talk"
    );
    assert!(
        stays_unreachable(&i1, OUTSIDE, Duration::from_secs(2)).await,
        "internal must not leave"
    );
    assert!(
        stays_unreachable(&q1, &a_q2, Duration::from_secs(2)).await,
        "ICC off must block peers"
    );
}

/// A neighbour on the underlay with a route to the bridge subnets through the node: only
/// published ports answer it, unless the network is `inbound: routed`.
#[tokio::test]
async fn inbound_from_outside_reaches_published_ports_only_unless_routed() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let node = &cluster.nodes[0];
    cluster
        .network(
            "shut",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.5.0.0/24"]}}),
        )
        .await
        .expect("shut");
    cluster
        .network(
            "open",
            json!({"driver": "bridge", "bridge": {"inbound": "routed"}, "ipam": {"subnets": ["10.6.0.0/24"]}}),
        )
        .await
        .expect("open");
    let s1 = cluster.container("s1").expect("s1");
    let s2 = cluster.container("s2").expect("s2");
    let o1 = cluster.container("o1").expect("o1");
    cluster
        .attach(
            "s1",
            "shut",
            0,
            &s1,
            json!({"publish": [{"hostPort": 7000, "containerPort": 80}]}),
        )
        .await
        .expect("attach s1");
    cluster
        .attach("s2", "shut", 0, &s2, json!({}))
        .await
        .expect("attach s2");
    cluster
        .attach("o1", "open", 0, &o1, json!({}))
        .await
        .expect("attach o1");
    let a_s1 = cluster.endpoint_address("s1").await.expect("s1");
    let a_s2 = cluster.endpoint_address("s2").await.expect("s2");
    let a_o1 = cluster.endpoint_address("o1").await.expect("o1");
    for (ns, body) in [(&s1, "s1"), (&s2, "s2"), (&o1, "o1")] {
        http_server(ns, 80, body).expect("server");
    }
    for subnet in ["10.5.0.0/24", "10.6.0.0/24"] {
        cluster
            .underlay
            .exec(&["ip", "route", "replace", subnet, "via", &node.address])
            .expect("route via the node");
    }

    // Positive controls: the routed network answers directly, the published port answers
    // through the host port, so the route and the servers are fine.
    assert_eq!(
        http_get_within(&cluster.underlay, &format!("http://{a_o1}/"), SETTLE)
            .await
            .as_deref(),
        Some("o1"),
        "inbound: routed must let the neighbour in"
    );
    assert_eq!(
        http_get_within(
            &cluster.underlay,
            &format!("http://{}:7000/", node.address),
            SETTLE
        )
        .await
        .as_deref(),
        Some("s1"),
        "the published port from outside"
    );
    // Unpublished, and the published container port asked for directly (not DNATed).
    for target in [&a_s2, &a_s1] {
        assert_eq!(
            http_get(&cluster.underlay, &format!("http://{target}/")),
            None,
            "{target} must not answer a routed neighbour"
        );
    }
    // Unaffected: the node itself, a peer on the same bridge, and egress.
    assert_eq!(
        http_get(&node.ns, &format!("http://{a_s2}/")).as_deref(),
        Some("s2")
    );
    assert_eq!(
        http_get(&s1, &format!("http://{a_s2}/")).as_deref(),
        Some("s2")
    );
    assert!(reachable(&s2, OUTSIDE, SETTLE).await, "egress");
}

/// A hand-written endpoint reaches only the named namespaces in the node's directory, never
/// the node's own namespace or a /proc path, however the path is spelled.
#[tokio::test]
async fn hand_written_sandboxes_are_named_namespaces_never_the_node() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let node = &cluster.nodes[0];
    cluster
        .network(
            "web",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.7.0.0/24"]}}),
        )
        .await
        .expect("network");
    let ok = cluster.container("ok").expect("ok");
    let hidden = cluster.container("hidden").expect("hidden");
    let tag = std::process::id();
    // `hidden`'s namespace bind-mounted outside the directory; a link in the directory
    // into /proc.
    let outside = std::env::temp_dir().join(format!("weft-sandbox-outside-{tag}"));
    std::fs::write(&outside, b"").expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["--bind"])
        .arg(hidden.path())
        .arg(&outside)
        .status()
        .expect("mount")
        .success();
    assert!(mounted, "bind-mounting a namespace outside /var/run/netns");
    let link = std::path::PathBuf::from(format!("/var/run/netns/weft-sandbox-link-{tag}"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/proc/1/ns/net", &link).expect("symlink");

    // Positive control: `..` that stays inside the directory is fine.
    let ok_name = ok
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let dotted = format!("/var/run/netns/../netns/./{ok_name}");
    let api: kube::Api<weft_api::ContainerEndpoint> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    let cep = |name: &str, sandbox: &str| {
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"network": "web", "node": node.name, "sandbox": sandbox}})
    };
    cluster.apply(cep("ok", &dotted)).await.expect("ok");
    assert_eq!(
        cluster.endpoint_address("ok").await.expect("ok"),
        "10.7.0.2"
    );

    let node_ns = node.ns.path().display().to_string();
    let outside_s = outside.display().to_string();
    let link_s = link.display().to_string();
    let refused = [
        ("node", node_ns.as_str(), "node's own"),
        ("agent", "/proc/self/ns/net", "/proc"),
        ("init", "/proc/1/ns/net", "/proc"),
        ("dots", "/var/run/netns/../../proc/1/ns/net", "/proc"),
        ("link", link_s.as_str(), "does not resolve"),
        ("outside", outside_s.as_str(), "outside"),
    ];
    for (name, sandbox, _) in refused {
        cluster.apply(cep(name, sandbox)).await.expect("apply");
    }
    for (name, sandbox, why) in refused {
        let cep = cluster
            .wait_endpoint(name, "False", SETTLE)
            .await
            .unwrap_or_else(|e| panic!("{name} ({sandbox}) not refused: {e}"));
        let cond = &cep.status.expect("status").conditions[0];
        assert_eq!(cond.reason, "SandboxNotAllowed", "{name}: {}", cond.message);
        assert!(cond.message.contains(why), "{name}: {}", cond.message);
        // Nothing of it anywhere: no host side, no journal record of an address.
        assert!(
            !node
                .ns
                .try_exec(&["ip", "link", "show", &host_interface(&id(name))]),
            "{name} got a host side"
        );
        assert!(cep_status_address(&api, name).await.is_none(), "{name}");
    }
    // The node's namespace got no eth0 of Weft's (the fight the issue saw).
    let links = node.ns.exec(&["ip", "-o", "link"]).expect("links");
    assert!(!links.contains("02:42:0a:07"), "{links}");

    let _ = std::process::Command::new("umount").arg(&outside).status();
    let _ = std::fs::remove_file(&outside);
    let _ = std::fs::remove_file(&link);
}

async fn cep_status_address(
    api: &kube::Api<weft_api::ContainerEndpoint>,
    name: &str,
) -> Option<String> {
    api.get(name).await.ok()?.status?.address
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

/// ipvlan L3 (issue 20): endpoints on two nodes reach each other through the routes the
/// agents program to each other's blocks (an L3 child answers no ARP, so without them they
/// would not), and each node reaches its own endpoint through its L3 host shim.
#[tokio::test]
async fn ipvlan_l3_endpoints_reach_each_other_and_their_node_where_the_kernel_has_ipvlan() {
    if !kernel_has_ipvlan() {
        eprintln!(
            "SKIP: ipvlan_l3_endpoints_reach_each_other_and_their_node_where_the_kernel_has_ipvlan: this kernel has no ipvlan support (Unknown device type)"
        );
        return;
    }
    let cluster = Cluster::start(2).await.expect("cluster");
    cluster
        .network(
            "l3",
            json!({"driver": "ipvlan", "ipvlan": {"parent": "eth0", "mode": "l3"},
                   "ipam": {"subnets": ["10.60.0.0/24"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach("a", "l3", 0, &a, json!({}))
        .await
        .expect("a");
    cluster
        .attach("b", "l3", 1, &b, json!({}))
        .await
        .expect("b");
    let addr_a = cluster.endpoint_address("a").await.expect("a");
    let addr_b = cluster.endpoint_address("b").await.expect("b");
    assert!(reachable(&a, &addr_b, SETTLE).await, "a cannot reach b");
    assert!(reachable(&b, &addr_a, SETTLE).await, "b cannot reach a");
    assert!(
        reachable(&cluster.nodes[0].ns, &addr_a, SETTLE).await,
        "node 1 cannot reach its endpoint a"
    );
    let routes = cluster.nodes[0]
        .ns
        .exec(&["ip", "route", "show", "proto", "87"])
        .unwrap_or_default();
    assert!(
        routes.contains(&format!("via {}", cluster.nodes[1].address)),
        "{routes}"
    );
    // The network goes: so do the shim and the routes through the parent.
    kube::Api::<weft_api::ContainerEndpoint>::namespaced(cluster.client.clone(), "default")
        .delete_collection(&Default::default(), &Default::default())
        .await
        .expect("delete endpoints");
    kube::Api::<weft_api::ContainerNetwork>::all(cluster.client.clone())
        .delete("l3", &Default::default())
        .await
        .expect("delete network");
    let gone = weft_e2e::wait_for(SETTLE, || async {
        let routes = cluster.nodes[0]
            .ns
            .exec(&["ip", "route", "show", "proto", "87"])
            .unwrap_or_default();
        Ok((!routes.contains("via")).then_some(()))
    })
    .await;
    assert!(
        gone.is_ok(),
        "the routes to node 2's block stay after the network is gone"
    );
}

/// Two VLANs on one parent (issue 20): macvlan networks on `eth0.10` and `eth0.20`, both
/// created and owned by Weft on two nodes. Traffic within each VLAN flows across the nodes;
/// between them nothing does, even when a sandbox of VLAN 10 treats VLAN 20's subnet as
/// on-link (its ARP requests stay on VLAN 10).
#[tokio::test]
async fn two_vlans_on_one_parent_are_isolated_where_the_kernel_has_vlan() {
    if !weft_e2e::cluster::kernel_has("vlan") {
        eprintln!(
            "SKIP: two_vlans_on_one_parent_are_isolated_where_the_kernel_has_vlan: this kernel has no 802.1q vlan support (Unknown device type)"
        );
        return;
    }
    let cluster = Cluster::start(2).await.expect("cluster");
    // The networks as examples/vlan-trunk/ writes them (the seeds' macvlan10/20).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vlan-trunk");
    let examples = weft_e2e::objects::read_examples(&dir).expect("examples/");
    for name in ["macvlan10", "macvlan20"] {
        let example = examples
            .iter()
            .find(|o| o["kind"] == "ContainerNetwork" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("examples/vlan-trunk/{name}.yaml"));
        cluster
            .network(name, example["spec"].clone())
            .await
            .expect("network");
    }
    let mut sandboxes = std::collections::BTreeMap::new();
    for (ep, net, node) in [
        ("a10", "macvlan10", 0),
        ("b10", "macvlan10", 1),
        ("a20", "macvlan20", 0),
        ("b20", "macvlan20", 1),
    ] {
        let ns = cluster.container(ep).expect("sandbox");
        cluster
            .attach(ep, net, node, &ns, json!({}))
            .await
            .expect("attach");
        let addr = cluster.endpoint_address(ep).await.expect("address");
        sandboxes.insert(ep, (ns, addr));
    }
    for node in &cluster.nodes {
        for vid in ["10", "20"] {
            let link = node
                .ns
                .exec(&["ip", "-d", "link", "show", &format!("eth0.{vid}")])
                .expect("the VLAN sub-interface exists");
            assert!(
                link.contains(&format!("id {vid}")) && link.contains("alias weft:"),
                "{link}"
            );
        }
    }
    let (a10, b10, a20, b20) = (
        &sandboxes["a10"],
        &sandboxes["b10"],
        &sandboxes["a20"],
        &sandboxes["b20"],
    );
    assert!(
        reachable(&a10.0, &b10.1, SETTLE).await,
        "VLAN 10 across nodes"
    );
    assert!(
        reachable(&a20.0, &b20.1, SETTLE).await,
        "VLAN 20 across nodes"
    );
    // VLAN 10's sandbox asks for VLAN 20's addresses on its own segment: no answer.
    a10.0
        .exec(&["ip", "route", "add", "172.16.20.0/24", "dev", "eth0"])
        .expect("on-link route");
    assert!(
        stays_unreachable(&a10.0, &b20.1, Duration::from_secs(3)).await,
        "VLAN 10 reached VLAN 20"
    );
    assert!(
        stays_unreachable(&a10.0, &a20.1, Duration::from_secs(3)).await,
        "VLAN 10 reached VLAN 20 on the same node"
    );
    // VLAN 10 still works after that (the failures above are isolation, not a broken a10).
    assert!(reachable(&b10.0, &a10.1, SETTLE).await);
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

/// The bridge's MAC in the node namespace (`aa:bb:...`), or of any link there.
fn link_mac(ns: &weft_e2e::netns::Netns, link: &str) -> String {
    let out = ns
        .exec(&["cat", &format!("/sys/class/net/{link}/address")])
        .unwrap_or_default();
    out.trim().to_string()
}

/// The gateway keeps its MAC for the life of the network: the bridge would otherwise take
/// its lowest port's MAC and change it when that endpoint leaves, and the others would lose
/// their gateway until their ARP entry aged out. Also repaired when changed by hand.
#[tokio::test]
async fn the_gateway_mac_survives_the_lowest_port_leaving() {
    use weft_agent::drivers::bridge::gateway_mac;

    let cluster = Cluster::start(1).await.expect("cluster");
    let node = &cluster.nodes[0];
    cluster
        .network(
            "gw",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.5.0.0/24"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    for (name, ns) in [("a", &a), ("b", &b)] {
        cluster
            .attach(name, "gw", 0, ns, json!({}))
            .await
            .expect("attach");
        cluster.endpoint_address(name).await.expect("ready");
    }
    let bridge = names::bridge("gw");
    let want = gateway_mac("gw").to_string();
    assert_eq!(link_mac(&node.ns, &bridge), want, "the bridge's own MAC");

    // The endpoint whose host-side port has the lowest MAC leaves; the other one pings the
    // gateway all along.
    let (ha, hb) = (host_interface(&id("a")), host_interface(&id("b")));
    let (leaver, stayer, leaver_port) = if link_mac(&node.ns, &ha) < link_mac(&node.ns, &hb) {
        ("a", &b, ha)
    } else {
        ("b", &a, hb)
    };
    assert!(reachable(stayer, "10.5.0.1", SETTLE).await, "gateway");
    let neigh = stayer
        .exec(&["ip", "neigh", "show", "10.5.0.1"])
        .expect("neigh");
    assert!(neigh.contains(&want), "{neigh}");

    let stayer_ns = stayer.name().to_string();
    let ping = move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &stayer_ns, "ping", "-n", "-q"])
            .args(["-i", "0.02", "-c", "250", "-W", "2", "10.5.0.1"])
            .output()
    };
    let leave = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.detach(leaver).await.expect("detach");
        weft_e2e::wait_for(SETTLE, || {
            let gone = !node.ns.try_exec(&["ip", "link", "show", &leaver_port]);
            async move { Ok(gone.then_some(())) }
        })
        .await
        .expect("the leaver's port is removed");
    };
    let (ping, ()) = tokio::join!(tokio::task::spawn_blocking(ping), leave);
    let ping = ping.expect("join").expect("ping ran");
    let summary = String::from_utf8_lossy(&ping.stdout);
    assert!(
        summary.contains("250 packets transmitted, 250 received"),
        "pings to the gateway were lost while an endpoint left: {summary}"
    );
    assert_eq!(link_mac(&node.ns, &bridge), want, "after the port left");
    let neigh = stayer
        .exec(&["ip", "neigh", "show", "10.5.0.1"])
        .expect("neigh");
    assert!(neigh.contains(&want), "{neigh}");

    // Changed by hand: put back.
    node.ns
        .exec(&["ip", "link", "set", &bridge, "address", "02:00:00:00:00:99"])
        .expect("tamper");
    let repaired = weft_e2e::wait_for(SETTLE, || {
        let back = link_mac(&node.ns, &bridge) == want;
        async move { Ok(back.then_some(())) }
    })
    .await;
    assert!(repaired.is_ok(), "the gateway MAC was not repaired");
}

/// Route `127.0.0.1` out of `dev` via `gateway` inside `ns`, as an attacker on that link
/// would: the local table's rule moved behind a rule of its own, and `route_localnet` on, so
/// answers from 127.0.0.1 are accepted.
fn route_loopback_away(ns: &weft_e2e::netns::Netns, dev: &str, gateway: &str) {
    for cmd in [
        vec!["ip", "rule", "add", "pref", "1000", "lookup", "local"],
        vec!["ip", "rule", "del", "pref", "0"],
        vec![
            "ip",
            "rule",
            "add",
            "pref",
            "10",
            "to",
            "127.0.0.1/32",
            "lookup",
            "100",
        ],
        vec![
            "ip",
            "route",
            "add",
            "127.0.0.1/32",
            "via",
            gateway,
            "dev",
            dev,
            "table",
            "100",
        ],
        // /proc/sys rather than sysctl(8): procps is not on every machine.
        vec![
            "sh",
            "-c",
            &format!(
                "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet && echo 1 > /proc/sys/net/ipv4/conf/{dev}/route_localnet"
            ),
        ],
    ] {
        ns.exec(&cmd).expect("routing 127.0.0.1 away");
    }
}

/// A UDP listener on 127.0.0.1:`port` in `ns` that writes the first datagram it gets to
/// the returned file, then exits.
fn udp_listener(
    ns: &weft_e2e::netns::Netns,
    port: u16,
) -> (std::path::PathBuf, std::process::Child) {
    let dir = ns.state_dir();
    std::fs::create_dir_all(&dir).expect("state dir");
    let file = dir.join(format!("udp-{port}"));
    let _ = std::fs::remove_file(&file);
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('127.0.0.1',{port}))\nd=s.recvfrom(100)[0]\nopen('{}','wb').write(d)\n",
        file.display()
    );
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "python3", "-c", &script])
        .spawn()
        .expect("udp listener");
    (file, child)
}

fn udp_send(ns: &weft_e2e::netns::Netns, port: u16) {
    let script = format!(
        "import socket\nsocket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'x',('127.0.0.1',{port}))\n"
    );
    ns.exec(&["python3", "-c", &script]).expect("udp send");
}

/// A published port answers on the node's 127.0.0.1 (as with Docker and portmap), with no
/// proxy, while neither a neighbour on the underlay nor a container on the bridge gets
/// through 127.0.0.1 to anything — kube-proxy's route_localnet exposure (CVE-2020-8558).
#[tokio::test]
async fn localhost_publishing_opens_loopback_to_nobody_else() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let node = &cluster.nodes[0];
    cluster
        .network(
            "loc",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.6.0.0/24"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach(
            "a",
            "loc",
            0,
            &a,
            json!({"publish": [{"hostPort": 5000, "containerPort": 80},
                               {"hostPort": 5001, "containerPort": 80, "hostIP": "127.0.0.1"}]}),
        )
        .await
        .expect("attach a");
    cluster
        .attach("b", "loc", 0, &b, json!({}))
        .await
        .expect("attach b");
    cluster.endpoint_address("a").await.expect("a");
    cluster.endpoint_address("b").await.expect("b");
    http_server(&a, 80, "hello from a").expect("server");

    // From the node: 127.0.0.1, on the wildcard binding and on a 127.0.0.1-only one.
    for url in ["http://127.0.0.1:5000/", "http://127.0.0.1:5001/"] {
        assert_eq!(
            http_get_within(&node.ns, url, SETTLE).await.as_deref(),
            Some("hello from a"),
            "{url} from the node"
        );
    }
    // route_localnet on Weft's bridge only.
    let bridge = names::bridge("loc");
    let sysctl = |key: &str| {
        node.ns
            .exec(&["cat", &format!("/proc/sys/{key}")])
            .expect("sysctl")
            .trim()
            .to_string()
    };
    assert_eq!(
        sysctl(&format!("net/ipv4/conf/{bridge}/route_localnet")),
        "1"
    );
    assert_eq!(sysctl("net/ipv4/conf/all/route_localnet"), "0");
    assert_eq!(sysctl("net/ipv4/conf/eth0/route_localnet"), "0");

    // A neighbour on the underlay that routes 127.0.0.1 to the node reaches the port through
    // the node's address (positive control), never through 127.0.0.1.
    let neighbour = weft_e2e::netns::Netns::new("nb").expect("neighbour");
    cluster
        .underlay
        .veth_into("ul-nb", &neighbour, "eth0")
        .expect("veth");
    cluster
        .underlay
        .exec(&["ip", "link", "set", "ul-nb", "master", "ul0", "up"])
        .expect("port");
    neighbour
        .exec(&["ip", "addr", "add", "192.0.2.99/24", "dev", "eth0"])
        .expect("addr");
    neighbour
        .exec(&["ip", "link", "set", "eth0", "up"])
        .expect("up");
    let via_address = format!("http://{}:5000/", node.address);
    assert_eq!(
        http_get_within(&neighbour, &via_address, SETTLE)
            .await
            .as_deref(),
        Some("hello from a"),
        "positive control: the neighbour reaches the node's address"
    );
    route_loopback_away(&neighbour, "eth0", &node.address);
    for port in [5000, 5001] {
        assert_eq!(
            http_get(&neighbour, &format!("http://127.0.0.1:{port}/")),
            None,
            "a neighbour reached published port {port} through 127.0.0.1"
        );
    }

    // A container on the bridge that routes 127.0.0.1 to its gateway reaches none of the
    // node's loopback-only services.
    let (seen, mut listener) = udp_listener(&node.ns, 7000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    route_loopback_away(&b, "eth0", "10.6.0.1");
    udp_send(&b, 7000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !seen.exists(),
        "a container reached the node's 127.0.0.1:7000"
    );
    // Positive control: the listener was there.
    udp_send(&node.ns, 7000);
    let heard = weft_e2e::wait_for(Duration::from_secs(5), || {
        let there = seen.exists();
        async move { Ok(there.then_some(())) }
    })
    .await;
    assert!(heard.is_ok(), "the node's own datagram never arrived");
    listener
        .wait()
        .expect("the listener exits after its datagram");
}

/// The reason of an endpoint's Ready condition.
async fn reason_of(cluster: &Cluster, name: &str, status: &str) -> String {
    cluster
        .wait_endpoint(name, status, SETTLE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .status
        .and_then(|s| s.conditions.into_iter().next())
        .map(|c| c.reason)
        .unwrap_or_default()
}

/// A hand-written endpoint is never released by Weft: past the gone-sandbox grace its object,
/// its address and its host-port claim stay (only the DNAT rule goes, so the node refuses
/// the port instead of forwarding it to nobody), and when a namespace comes back under the
/// same path it is attached again with the same address and its port answers.
#[tokio::test]
async fn a_hand_written_endpoint_keeps_object_address_and_port_while_its_sandbox_is_gone() {
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
    cluster
        .attach(
            "a",
            "web",
            0,
            &a,
            json!({"publish": [{"hostPort": 6100, "containerPort": 80}]}),
        )
        .await
        .expect("attach a");
    let address = cluster.endpoint_address("a").await.expect("a ready");
    let publish = || {
        node.ns
            .exec(&["nft", "list", "chain", "inet", "weft", "publish"])
            .unwrap_or_default()
    };
    assert!(publish().contains("dport 6100"), "{}", publish());

    // The namespace goes (the guard keeps its name for later).
    weft_e2e::netns::delete(a.name()).expect("delete the namespace");
    assert_eq!(reason_of(&cluster, "a", "False").await, "SandboxMissing");
    // Longer than the agent's default --gone-sandbox-grace (5 s) and one probe period.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(reason_of(&cluster, "a", "False").await, "SandboxMissing");
    assert!(!publish().contains("dport 6100"), "{}", publish());
    let b = cluster.container("b").expect("b");
    cluster
        .attach("b", "web", 0, &b, json!({"address": address}))
        .await
        .expect("attach b");
    assert_eq!(reason_of(&cluster, "b", "False").await, "AddressInUse");
    let c = cluster.container("c").expect("c");
    cluster
        .attach(
            "c",
            "web",
            0,
            &c,
            json!({"publish": [{"hostPort": 6100, "containerPort": 80}]}),
        )
        .await
        .expect("attach c");
    assert_eq!(reason_of(&cluster, "c", "False").await, "PortConflict");

    // Back under the same path: the same address, the port answers again.
    weft_e2e::netns::sh(&["ip", "netns", "add", a.name()]).expect("namespace again");
    a.exec(&["ip", "link", "set", "lo", "up"]).expect("lo");
    assert_eq!(
        cluster.endpoint_address("a").await.expect("a back"),
        address
    );
    http_server(&a, 80, "a is back").expect("server");
    let url = format!("http://{}:6100/", node.address);
    assert_eq!(
        http_get_within(&cluster.underlay, &url, SETTLE)
            .await
            .as_deref(),
        Some("a is back")
    );
}

/// An endpoint whose address leaves its network's space on the node (here `ipRange`
/// narrowed; in the chaos soak a subnet the controller moved after a crash, op 8719) is
/// attached again with an address inside it — not left `Ready` on a link without its
/// gateway — and reaches its gateway and a peer.
#[tokio::test]
async fn an_endpoint_whose_address_left_the_networks_range_is_given_a_new_one() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let spec = |range: &str| json!({"driver": "bridge", "ipam": {"subnets": ["10.0.0.0/24"], "ipRange": range}});
    cluster
        .network("web", spec("10.0.0.0/25"))
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach("a", "web", 0, &a, json!({}))
        .await
        .expect("attach a");
    let before = cluster.endpoint_address("a").await.expect("a ready");
    assert!(
        before.starts_with("10.0.0.") && before != "10.0.0.1",
        "{before}"
    );

    cluster
        .network("web", spec("10.0.0.128/25"))
        .await
        .expect("narrowed");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let after = loop {
        let now = cluster.endpoint_address("a").await.expect("a ready");
        if now != before {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a kept {before}, outside 10.0.0.128/25"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last: u8 = after.rsplit('.').next().unwrap_or("0").parse().unwrap_or(0);
    assert!(last >= 128, "{after} is outside 10.0.0.128/25");
    let inside = a
        .exec(&["ip", "-4", "-o", "addr", "show"])
        .unwrap_or_default();
    assert!(inside.contains(&format!("{after}/24")), "{inside}");
    assert!(!inside.contains(&format!("{before}/")), "{inside}");
    cluster
        .attach("b", "web", 0, &b, json!({}))
        .await
        .expect("attach b");
    cluster.endpoint_address("b").await.expect("b ready");
    assert!(reachable(&a, "10.0.0.1", SETTLE).await, "a: gateway");
    let b_address = cluster.endpoint_address("b").await.expect("b");
    assert!(reachable(&a, &b_address, SETTLE).await, "a: peer b");
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

/// Every frame any interface of namespace `ns` sees for `duration`, through an AF_PACKET
/// socket (no tcpdump in the VM tier's guest): what a wire tap on the underlay gets.
fn capture(
    ns: &weft_e2e::netns::Netns,
    duration: Duration,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    use std::os::fd::AsRawFd as _;
    let path = ns.path();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("underlay netns");
        // SAFETY: plain syscalls on descriptors this thread owns; the thread ends with them.
        unsafe {
            assert_eq!(
                libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET),
                0,
                "setns"
            );
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            );
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            let _ = ready_tx.send(());
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            let end = std::time::Instant::now() + duration;
            while std::time::Instant::now() < end {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n > 0 {
                    frames.push(buf[..n as usize].to_vec());
                }
            }
            libc::close(fd);
            frames
        }
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    handle
}

/// "WeftSecretPing", the payload pattern the pings below carry.
const SECRET: &[u8] = b"WeftSecretPing";

fn carries_secret(frames: &[Vec<u8>]) -> usize {
    frames
        .iter()
        .filter(|f| f.windows(SECRET.len()).any(|w| w == SECRET))
        .count()
}

/// UDP payloads (IPv4 over Ethernet, as the underlay is) to or from `port`.
fn udp_payloads(frames: &[Vec<u8>], port: u16) -> Vec<&[u8]> {
    frames
        .iter()
        .filter(|f| f.len() > 42 && f[12..14] == [0x08, 0x00] && f[23] == 17)
        .filter_map(|f| {
            let udp = &f[14 + usize::from(f[14] & 0x0f) * 4..];
            let (src, dst) = (
                u16::from_be_bytes([*udp.first()?, *udp.get(1)?]),
                u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]),
            );
            (src == port || dst == port).then(|| udp.get(8..)).flatten()
        })
        .collect()
}

/// VXLAN frames of network identifier `vni` on the underlay.
fn vxlan_frames(frames: &[Vec<u8>], vni: i32) -> usize {
    udp_payloads(frames, 4789)
        .iter()
        .filter(|v| {
            v.len() >= 8 && i64::from(u32::from_be_bytes([0, v[4], v[5], v[6]])) == i64::from(vni)
        })
        .count()
}

/// Pings carrying [`SECRET`] from `from` to `to` while the underlay is tapped.
async fn tapped_pings(cluster: &Cluster, from: &weft_e2e::netns::Netns, to: &str) -> Vec<Vec<u8>> {
    let tap = capture(&cluster.underlay, Duration::from_secs(4));
    let pattern: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            from.name(),
            "ping",
            "-n",
            "-c",
            "10",
            "-i",
            "0.2",
        ])
        .args(["-p", &pattern, to])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tap.join().expect("capture")
}

/// An encrypted overlay between two nodes (issue 20): endpoints reach each other, and a tap
/// on the underlay sees WireGuard and neither VXLAN nor the pings' payload; keys rotate on
/// one node, the other, then both, with no ping (every 10 ms) lost. The same tap on
/// a plain overlay beside it does see the payload (the capture works). Needs WireGuard in
/// the kernel: the VM tier runs it.
#[tokio::test]
async fn encrypted_overlay_endpoints_on_two_nodes_where_the_kernel_has_wireguard() {
    if !weft_e2e::cluster::kernel_has("wireguard") {
        eprintln!(
            "SKIP: encrypted_overlay_endpoints_on_two_nodes_where_the_kernel_has_wireguard: this kernel has no WireGuard (Unknown device type)"
        );
        return;
    }
    let cluster = Cluster::start(2).await.expect("cluster");
    for (name, subnet, encrypted) in [
        ("plain", "10.45.0.0/24", false),
        ("secret", "10.44.0.0/24", true),
    ] {
        cluster
            .network(
                name,
                json!({"driver": "overlay", "overlay": {"encrypted": encrypted}, "ipam": {"subnets": [subnet]}}),
            )
            .await
            .expect("network");
    }
    let mut sandboxes = Vec::new();
    for (ep, net, node) in [
        ("pa", "plain", 0),
        ("pb", "plain", 1),
        ("sa", "secret", 0),
        ("sb", "secret", 1),
    ] {
        let ns = cluster.container(ep).expect("sandbox");
        cluster
            .attach(ep, net, node, &ns, json!({}))
            .await
            .expect("attach");
        sandboxes.push(ns);
    }
    let sb = cluster.endpoint_address("sb").await.expect("sb");
    let sa = cluster.endpoint_address("sa").await.expect("sa");
    let pb = cluster.endpoint_address("pb").await.expect("pb");
    assert!(
        reachable(&sandboxes[2], &sb, SETTLE).await,
        "sa cannot reach sb"
    );
    assert!(
        reachable(&sandboxes[3], &sa, SETTLE).await,
        "sb cannot reach sa"
    );
    assert!(
        reachable(&sandboxes[0], &pb, SETTLE).await,
        "pa cannot reach pb"
    );

    // The control: on the plain overlay the tap sees the payload inside VXLAN.
    let plain = tapped_pings(&cluster, &sandboxes[0], &pb).await;
    let networks: kube::Api<weft_api::ContainerNetwork> = kube::Api::all(cluster.client.clone());
    let mut vnis = Vec::new();
    for name in ["plain", "secret"] {
        let status = networks.get(name).await.expect("network").status;
        vnis.push(status.and_then(|s| s.vni).expect("a VNI"));
    }
    let (plain_vni, secret_vni) = (vnis[0], vnis[1]);
    assert!(carries_secret(&plain) >= 10, "the tap saw no plain payload");
    assert!(vxlan_frames(&plain, plain_vni) >= 10);

    let secret = tapped_pings(&cluster, &sandboxes[2], &sb).await;
    assert_eq!(
        carries_secret(&secret),
        0,
        "payload in clear on the underlay"
    );
    // (The plain overlay's own VXLAN, such as its neighbour discovery, may pass meanwhile.)
    assert_eq!(
        vxlan_frames(&secret, secret_vni),
        0,
        "the encrypted network's VXLAN in clear on the underlay"
    );
    assert!(
        udp_payloads(&secret, 51871).len() >= 20,
        "no WireGuard on the underlay"
    );

    // The MTU accounts for WireGuard: 1500 − 60 − 70 (VXLAN over the IPv6 tunnel).
    let mtu = sandboxes[2]
        .exec(&["cat", "/sys/class/net/eth0/mtu"])
        .expect("mtu");
    assert_eq!(mtu.trim(), "1370");
    // Full-size packets pass (no silent fragmentation black hole).
    let big = sandboxes[2]
        .exec(&["ping", "-n", "-c", "3", "-M", "do", "-s", "1342", &sb])
        .expect("full-size pings");
    assert!(big.contains(" 0% packet loss"), "{big}");

    // Each node published its public key, never its private one.
    let api: kube::Api<weft_api::NetworkNode> = kube::Api::all(cluster.client.clone());
    for node in &cluster.nodes {
        let published = api.get(&node.name).await.expect("node").spec.wireguard;
        let published = published.expect("a WireGuard identity");
        let key = std::fs::read_to_string(node.ns.state_dir().join("wireguard.key"))
            .expect("the private key file");
        assert_ne!(key.trim(), published.public_key);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(node.ns.state_dir().join("wireguard.key"))
                .expect("key file")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    // Key rotation: pings every 10 ms from sa to sb while the key rotates on one node, then
    // on both at once. None is lost, and afterwards the tap still sees no payload. (In the
    // same test, so the VM tier starts no more daemons for it.)
    let pinger = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            sandboxes[2].name(),
            "ping",
            "-n",
            "-i",
            "0.01",
        ])
        .arg(&sb)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ping");
    let pinging_since = std::time::Instant::now();
    let first: Vec<String> = {
        let mut keys = Vec::new();
        for node in &cluster.nodes {
            keys.push(published_wireguard(&api, &node.name).await.public_key);
        }
        keys
    };
    let mut seen = first.clone();
    let mut rotations = Vec::new();
    for (round, nodes) in [vec![0], vec![0, 1]].into_iter().enumerate() {
        let t = std::time::Instant::now();
        for &i in &nodes {
            let patch = json!({"metadata": {"annotations": {
                "weft.dev/rotate-wireguard-key": format!("round-{round}"),
            }}});
            api.patch(
                &cluster.nodes[i].name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("annotate");
        }
        for &i in &nodes {
            let name = &cluster.nodes[i].name;
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            loop {
                let wg = published_wireguard(&api, name).await;
                if wg.public_key != seen[i] && wg.next.is_none() && wg.retiring.is_none() {
                    seen[i] = wg.public_key;
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: {name}'s rotation did not finish: {wg:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        rotations.push(t.elapsed());
    }
    // The last replies come in, then the summary — after at least 5 s of pings (500 at
    // 10 ms, fewer under emulation): rotations faster than that would leave too few to tell.
    let at_least = Duration::from_secs(5).saturating_sub(pinging_since.elapsed());
    tokio::time::sleep(at_least.max(Duration::from_millis(500))).await;
    std::process::Command::new("kill")
        .args(["-INT", &pinger.id().to_string()])
        .status()
        .expect("kill");
    let out = pinger.wait_with_output().expect("ping ended");
    let text = String::from_utf8_lossy(&out.stdout);
    let (sent, lost) = lost_pings(&text);
    eprintln!(
        "key rotations took {rotations:?}; {sent} pings, {} lost",
        lost.len()
    );
    assert!(sent >= 300, "too few pings to tell: {text}");
    assert!(lost.is_empty(), "pings lost during the rotations: {lost:?}");
    // Node 1 rotated twice (slots 0 → 1 → 0), node 2 once (0 → 1): only the active slot's
    // link is left, and the retired key's file is gone.
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert_ne!(seen[i], first[i], "{} kept its key", node.name);
        let (active, retired) = if i == 0 {
            (
                ("weft-wg0", "wireguard.key"),
                ("weft-wg1", "wireguard.1.key"),
            )
        } else {
            (
                ("weft-wg1", "wireguard.1.key"),
                ("weft-wg0", "wireguard.key"),
            )
        };
        let links = node
            .ns
            .exec(&["ip", "-o", "link", "show", "type", "wireguard"])
            .expect("links");
        assert!(
            links.contains(active.0) && !links.contains(retired.0),
            "{}: {links}",
            node.name
        );
        assert!(node.ns.state_dir().join(active.1).exists());
        assert!(!node.ns.state_dir().join(retired.1).exists());
    }
    let after = tapped_pings(&cluster, &sandboxes[2], &sb).await;
    assert_eq!(
        carries_secret(&after),
        0,
        "payload in clear after the rotations"
    );
    assert_eq!(vxlan_frames(&after, secret_vni), 0);
    // Each node sends to the other's current port: node 1's is 51871, node 2's 51872.
    assert!(
        udp_payloads(&after, 51871).len() >= 10 && udp_payloads(&after, 51872).len() >= 10,
        "no WireGuard after the rotations"
    );
}

async fn published_wireguard(
    api: &kube::Api<weft_api::NetworkNode>,
    node: &str,
) -> weft_api::WireguardIdentity {
    api.get(node)
        .await
        .expect("node")
        .spec
        .wireguard
        .expect("a WireGuard identity")
}

/// `ping`'s output → (packets sent, the sequence numbers up to the last answered one that got
/// no answer). Those after the last answer were still in flight when it was stopped.
fn lost_pings(text: &str) -> (u64, Vec<u64>) {
    let answered: std::collections::BTreeSet<u64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            l.split("icmp_seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let sent = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let last = answered.last().copied().unwrap_or(0);
    let lost = (1..=last).filter(|s| !answered.contains(s)).collect();
    (sent, lost)
}

/// A dual-stack endpoint's addresses (with their gateways) from its status.
async fn status_addresses(cluster: &Cluster, name: &str) -> Vec<(String, Option<String>)> {
    let cep = cluster
        .wait_endpoint(name, "True", SETTLE)
        .await
        .expect("ready");
    cep.status
        .map(|s| {
            s.addresses
                .into_iter()
                .map(|a| (a.address, a.gateway))
                .collect()
        })
        .unwrap_or_default()
}

fn pair(address: &str, gateway: &str) -> (String, Option<String>) {
    (address.to_string(), Some(gateway.to_string()))
}

/// An HTTP server on both families (`--bind ::` makes python's server dual-stack); killed
/// with the namespace, like [`http_server`]'s.
#[allow(clippy::zombie_processes)]
fn http_server_dual(ns: &weft_e2e::netns::Netns, port: u16, body: &str) {
    let dir = ns.state_dir().join("www6");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("index.html"), body).expect("body");
    std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "python3", "-m", "http.server"])
        .arg(port.to_string())
        .args(["--bind", "::", "--directory"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
}

/// `curl -g` (an IPv6 literal in brackets is not a glob), retried for up to `within`.
async fn http_get6(ns: &weft_e2e::netns::Netns, url: &str, within: Duration) -> Option<String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(body) = ns.exec(&["curl", "-g", "-s", "--max-time", "2", url]) {
            return Some(body);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No global (Weft's) IPv6 address of `dev` in `ns` is tentative or failed duplicate
/// address detection: usable at once. (The kernel's own link-local one may be.)
fn assert_no_dad(ns: &weft_e2e::netns::Netns, dev: &str) {
    let addrs = ns
        .exec(&["ip", "-6", "addr", "show", "dev", dev, "scope", "global"])
        .expect("addr");
    assert!(addrs.contains("inet6 "), "{addrs}");
    assert!(
        !addrs.contains("tentative") && !addrs.contains("dadfailed"),
        "{addrs}"
    );
}

/// A dual-stack bridge: each endpoint gets an address per family, both in its status; the
/// sandbox has a default route per family and reaches the gateway and its neighbour over
/// IPv6 at once (no DAD wait); a published port answers on the node's IPv6 address too,
/// from outside and from a neighbour (hairpin).
#[tokio::test]
async fn dual_stack_bridge_endpoints_ping6_and_publish_in_both_families() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let node = &cluster.nodes[0];
    cluster
        .network(
            "ds",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.50.0.0/24", "fd00:50::/64"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach(
            "a",
            "ds",
            0,
            &a,
            json!({"publish": [{"hostPort": 5000, "containerPort": 80}]}),
        )
        .await
        .expect("attach a");
    // `docker run --ip6`: an address of the second family is honoured (its v4 mirror follows).
    cluster
        .attach("b", "ds", 0, &b, json!({"address": "fd00:50::9"}))
        .await
        .expect("attach b");
    assert_eq!(
        status_addresses(&cluster, "a").await,
        vec![
            pair("10.50.0.2/24", "10.50.0.1"),
            pair("fd00:50::2/64", "fd00:50::1")
        ]
    );
    assert_eq!(
        status_addresses(&cluster, "b").await,
        vec![
            pair("10.50.0.9/24", "10.50.0.1"),
            pair("fd00:50::9/64", "fd00:50::1")
        ]
    );
    let eth0 = a.exec(&["ip", "addr", "show", "eth0"]).expect("eth0");
    assert!(eth0.contains("inet 10.50.0.2/24"), "{eth0}");
    assert!(eth0.contains("inet6 fd00:50::2/64"), "{eth0}");
    assert_no_dad(&a, "eth0");
    assert_no_dad(&node.ns, &names::bridge("ds"));
    let routes6 = a.exec(&["ip", "-6", "route"]).expect("routes");
    assert!(
        routes6.contains("default via fd00:50::1 dev eth0"),
        "{routes6}"
    );
    let routes4 = a.exec(&["ip", "route"]).expect("routes");
    assert!(
        routes4.contains("default via 10.50.0.1 dev eth0"),
        "{routes4}"
    );
    // At once: one try each, no settling time for DAD.
    assert!(
        a.try_exec(&["ping", "-6", "-c1", "-W2", "fd00:50::1"]),
        "a cannot ping6 its gateway"
    );
    assert!(
        reachable(&a, "fd00:50::9", SETTLE).await,
        "a cannot ping6 b"
    );
    assert!(
        reachable(&b, "fd00:50::2", SETTLE).await,
        "b cannot ping6 a"
    );
    assert!(reachable(&a, "10.50.0.9", SETTLE).await, "a cannot ping b");

    // The node and the outside host get IPv6 on the underlay (inside the test's
    // namespaces); the published port answers there.
    cluster
        .underlay
        .exec(&[
            "ip",
            "addr",
            "add",
            "2001:db8:50::1/64",
            "dev",
            "ul0",
            "nodad",
        ])
        .expect("underlay v6");
    node.ns
        .exec(&[
            "ip",
            "addr",
            "add",
            "2001:db8:50::11/64",
            "dev",
            "eth0",
            "nodad",
        ])
        .expect("node v6");
    http_server_dual(&a, 80, "hello from a");
    let url6 = "http://[2001:db8:50::11]:5000/";
    assert_eq!(
        http_get6(&cluster.underlay, url6, SETTLE).await.as_deref(),
        Some("hello from a"),
        "v6 published port from outside"
    );
    assert_eq!(
        http_get6(&b, url6, SETTLE).await.as_deref(),
        Some("hello from a"),
        "v6 published port from a neighbour (hairpin)"
    );
    let url4 = format!("http://{}:5000/", node.address);
    assert_eq!(
        http_get_within(&cluster.underlay, &url4, SETTLE)
            .await
            .as_deref(),
        Some("hello from a"),
        "v4 published port from outside"
    );
    let rules = node
        .ns
        .exec(&["nft", "list", "table", "inet", "weft"])
        .expect("nft");
    assert!(rules.contains("dnat ip6 to [fd00:50::2]:80"), "{rules}");
    assert!(rules.contains("dnat ip to 10.50.0.2:80"), "{rules}");
}

/// A dual-stack overlay across two nodes: static neighbour entries for the other node's
/// IPv6 addresses too, and TCP over IPv6 between the nodes' endpoints.
#[tokio::test]
async fn dual_stack_overlay_carries_tcp_over_ipv6_between_nodes() {
    let cluster = Cluster::start(2).await.expect("cluster");
    cluster
        .network(
            "ov6",
            json!({"driver": "overlay", "ipam": {"subnets": ["10.41.0.0/24", "fd00:41::/64"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach("a", "ov6", 0, &a, json!({}))
        .await
        .expect("a");
    cluster
        .attach("b", "ov6", 1, &b, json!({}))
        .await
        .expect("b");
    let of = |list: Vec<(String, Option<String>)>, v6: bool| -> String {
        list.into_iter()
            .map(|(a, _)| a.split('/').next().unwrap_or_default().to_string())
            .find(|a| a.contains(':') == v6)
            .expect("address of the family")
    };
    let b_all = status_addresses(&cluster, "b").await;
    let a_all = status_addresses(&cluster, "a").await;
    assert_eq!(a_all.len(), 2, "{a_all:?}");
    let (b4, b6) = (of(b_all.clone(), false), of(b_all, true));
    let a6 = of(a_all, true);
    // The node blocks are of IPv4; the IPv6 address mirrors the IPv4 one.
    let offset: u8 = b4
        .rsplit('.')
        .next()
        .and_then(|o| o.parse().ok())
        .expect("octet");
    assert_eq!(b6, format!("fd00:41::{offset:x}"));
    assert!(reachable(&a, &b6, SETTLE).await, "a cannot ping6 b");
    assert!(reachable(&b, &a6, SETTLE).await, "b cannot ping6 a");
    assert!(reachable(&a, &b4, SETTLE).await, "a cannot ping b");

    let vx = names::vxlan("ov6");
    let neigh = cluster.nodes[0]
        .ns
        .exec(&["ip", "-6", "neigh", "show", "dev", &vx])
        .expect("neigh");
    assert!(
        neigh.contains(&b6) && neigh.contains("PERMANENT"),
        "{neigh}"
    );

    http_server_dual(&b, 8080, "hello over v6");
    assert_eq!(
        http_get6(&a, &format!("http://[{b6}]:8080/"), SETTLE)
            .await
            .as_deref(),
        Some("hello over v6"),
        "TCP over IPv6 across nodes"
    );
}

/// An IPv6-only network: one address, its gateway and a `::/0` route; no IPv4 at all.
#[tokio::test]
async fn an_ipv6_only_network_gives_ipv6_only() {
    let cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "six",
            json!({"driver": "bridge", "ipam": {"subnets": ["fd00:60::/64"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach("a", "six", 0, &a, json!({}))
        .await
        .expect("a");
    cluster
        .attach("b", "six", 0, &b, json!({}))
        .await
        .expect("b");
    assert_eq!(
        status_addresses(&cluster, "a").await,
        vec![pair("fd00:60::2/64", "fd00:60::1")]
    );
    assert_eq!(
        cluster.endpoint_address("b").await.expect("b"),
        "fd00:60::3"
    );
    let v4 = a.exec(&["ip", "-4", "addr", "show", "eth0"]).expect("addr");
    assert!(!v4.contains("inet "), "{v4}");
    assert_no_dad(&a, "eth0");
    let routes6 = a.exec(&["ip", "-6", "route"]).expect("routes");
    assert!(
        routes6.contains("default via fd00:60::1 dev eth0"),
        "{routes6}"
    );
    assert!(
        a.try_exec(&["ping", "-6", "-c1", "-W2", "fd00:60::1"]),
        "a cannot ping6 its gateway"
    );
    assert!(
        reachable(&a, "fd00:60::3", SETTLE).await,
        "a cannot ping6 b"
    );
}

/// The ports an endpoint's status says it publishes, as `hostPort→containerPort`.
async fn status_ports(cluster: &Cluster, name: &str) -> Vec<String> {
    let cep = cluster
        .wait_endpoint(name, "True", SETTLE)
        .await
        .expect("ready");
    cep.status
        .map(|s| {
            s.ports
                .iter()
                .map(|p| format!("{}→{}", p.host_port.unwrap_or(0), p.container_port))
                .collect()
        })
        .unwrap_or_default()
}

/// `docker run -p 80`: a published port without `hostPort` gets the lowest free port of the
/// agent's range (49153-65535 by default), shown in the status and served; the choice
/// survives an agent restart (the journal), and later endpoints get other ports.
#[tokio::test]
async fn a_port_published_without_host_port_gets_one_from_the_range_and_keeps_it() {
    let mut cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "rp",
            json!({"driver": "bridge", "ipam": {"subnets": ["10.51.0.0/24"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach(
            "a",
            "rp",
            0,
            &a,
            json!({"publish": [{"containerPort": 80}]}),
        )
        .await
        .expect("attach a");
    assert_eq!(status_ports(&cluster, "a").await, ["49153→80"]);
    cluster
        .attach(
            "b",
            "rp",
            0,
            &b,
            json!({"publish": [{"containerPort": 80}, {"hostPort": 49154, "containerPort": 81}]}),
        )
        .await
        .expect("attach b");
    // 49154 is b's own explicit port, so its chosen one skips it.
    assert_eq!(status_ports(&cluster, "b").await, ["49155→80", "49154→81"]);
    http_server(&a, 80, "hello from a").expect("server a");
    http_server(&b, 80, "hello from b").expect("server b");
    let node = cluster.nodes[0].address.clone();
    let get = |port: u16| format!("http://{node}:{port}/");
    assert_eq!(
        http_get_within(&cluster.underlay, &get(49153), SETTLE)
            .await
            .as_deref(),
        Some("hello from a")
    );
    assert_eq!(
        http_get_within(&cluster.underlay, &get(49155), SETTLE)
            .await
            .as_deref(),
        Some("hello from b")
    );

    // A restarted agent keeps every choice: the same ports, still served, and a newcomer
    // gets the next free one.
    cluster.kill_agent(0).await.expect("kill");
    cluster.start_agent(0).expect("start");
    let c = cluster.container("c").expect("c");
    cluster
        .attach(
            "c",
            "rp",
            0,
            &c,
            json!({"publish": [{"containerPort": 80}]}),
        )
        .await
        .expect("attach c");
    assert_eq!(status_ports(&cluster, "c").await, ["49156→80"]);
    assert_eq!(status_ports(&cluster, "a").await, ["49153→80"]);
    assert_eq!(status_ports(&cluster, "b").await, ["49155→80", "49154→81"]);
    assert_eq!(
        http_get_within(&cluster.underlay, &get(49153), SETTLE)
            .await
            .as_deref(),
        Some("hello from a")
    );
    // The spec still names no host port: the choice is the agent's, in the status only.
    let api: kube::Api<weft_api::ContainerEndpoint> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    let spec = api.get("a").await.expect("a").spec;
    assert_eq!(spec.publish[0].host_port, None);
}

/// `bridge.hostBinding` (Docker's `host_binding_ipv4`): ports that name no `hostIP` bind to
/// that node address only; an explicit `hostIP` still wins.
#[tokio::test]
async fn host_binding_is_the_default_host_address_of_published_ports() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let node = cluster.nodes[0].address.clone();
    cluster
        .network(
            "hb",
            json!({"driver": "bridge", "bridge": {"hostBinding": node},
                   "ipam": {"subnets": ["10.52.0.0/24"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    cluster
        .attach(
            "a",
            "hb",
            0,
            &a,
            json!({"publish": [{"hostPort": 7000, "containerPort": 80},
                               {"hostPort": 7001, "containerPort": 80, "hostIP": "10.52.0.1"}]}),
        )
        .await
        .expect("attach a");
    cluster.endpoint_address("a").await.expect("a ready");
    http_server(&a, 80, "hello from a").expect("server");
    assert_eq!(
        http_get_within(&cluster.underlay, &format!("http://{node}:7000/"), SETTLE)
            .await
            .as_deref(),
        Some("hello from a")
    );
    let ns = &cluster.nodes[0].ns;
    assert_eq!(
        http_get(ns, "http://10.52.0.1:7000/"),
        None,
        "7000 must be bound to the hostBinding address only"
    );
    assert_eq!(
        http_get(ns, "http://10.52.0.1:7001/").as_deref(),
        Some("hello from a"),
        "an explicit hostIP wins"
    );
    let rules = ns
        .exec(&["nft", "list", "table", "inet", "weft"])
        .expect("nft");
    assert!(
        rules.contains(&format!("ip daddr {node} tcp dport 7000")),
        "{rules}"
    );
}

/// What the node's namespace looks like: links, addresses, routes (not the kernel's own
/// link-local IPv6 addresses, whose DAD state changes by itself).
fn node_picture(ns: &weft_e2e::netns::Netns) -> String {
    [
        &["ip", "-o", "link", "show"][..],
        &["ip", "-o", "-4", "addr", "show"],
        &["ip", "-o", "-6", "addr", "show", "scope", "global"],
        &["ip", "-o", "route", "show"],
        &["ip", "-o", "-6", "route", "show"],
    ]
    .iter()
    .map(|cmd| ns.exec(cmd).expect("ip"))
    .collect::<Vec<_>>()
    .join("\n")
}

/// `host` as Docker's `--network host`: the endpoint is the node's own namespace, attached
/// without a single change there (and detached the same way); another namespace cannot be a
/// host endpoint. `none` as Docker's `--network none`: a namespace with loopback only, up.
#[tokio::test]
async fn host_endpoints_share_the_node_namespace_and_none_endpoints_get_loopback_only() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let node = &cluster.nodes[0];
    cluster
        .network("host", json!({"driver": "host"}))
        .await
        .expect("host network");
    cluster
        .network("none", json!({"driver": "none"}))
        .await
        .expect("none network");
    let before = node_picture(&node.ns);
    cluster
        .attach("h1", "host", 0, &node.ns, json!({}))
        .await
        .expect("attach h1");
    let h1 = cluster
        .wait_endpoint("h1", "True", SETTLE)
        .await
        .expect("h1 attached");
    let status = h1.status.expect("status");
    assert_eq!(status.address, None);
    assert_eq!(status.host_interface, None);
    assert!(status.addresses.is_empty());
    assert_eq!(
        node_picture(&node.ns),
        before,
        "the node's namespace changed"
    );

    // A container in a namespace of its own does not share the node's.
    let c = cluster.container("c").expect("c");
    cluster
        .attach("h2", "host", 0, &c, json!({}))
        .await
        .expect("attach h2");
    let refused = cluster
        .wait_endpoint("h2", "False", SETTLE)
        .await
        .expect("h2 refused");
    let cond = &refused.status.expect("status").conditions[0];
    assert_eq!(cond.reason, "SandboxNotAllowed");
    assert!(cond.message.contains("host network"), "{}", cond.message);

    // none: loopback only, up; nothing else in the namespace.
    let d = cluster.container("d").expect("d");
    cluster
        .attach("n1", "none", 0, &d, json!({}))
        .await
        .expect("attach n1");
    let n1 = cluster
        .wait_endpoint("n1", "True", SETTLE)
        .await
        .expect("n1 attached");
    assert_eq!(n1.status.expect("status").address, None);
    let links = d.exec(&["ip", "-o", "link", "show"]).expect("links");
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    assert!(
        d.try_exec(&["ping", "-c1", "-W1", "127.0.0.1"]),
        "loopback does not answer"
    );

    // Detaching the host endpoint touches nothing either.
    cluster.detach("h1").await.expect("detach h1");
    let api: kube::Api<weft_api::ContainerEndpoint> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    let gone = weft_e2e::wait_for(SETTLE, || {
        let api = api.clone();
        async move { Ok(api.get_opt("h1").await?.is_none().then_some(())) }
    })
    .await;
    assert!(gone.is_ok(), "h1 never left");
    // A pass later (the resync is 5 s; a new endpoint wakes the agent at once).
    cluster
        .attach("n2", "none", 0, &c, json!({}))
        .await
        .expect("attach n2");
    cluster
        .wait_endpoint("n2", "True", SETTLE)
        .await
        .expect("n2 attached");
    assert_eq!(node_picture(&node.ns), before, "detaching changed the node");
}

/// `kubectl get … -o wide` from inside the test (the API server of `KUBECONFIG`).
fn kubectl_wide(args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .args(["-o", "wide"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The network's endpoint count in its status, once it is `want`.
async fn wait_endpoint_count(cluster: &Cluster, network: &str, want: i32) -> i32 {
    let api: kube::Api<weft_api::ContainerNetwork> = kube::Api::all(cluster.client.clone());
    let got = weft_e2e::wait_for(SETTLE, || {
        let api = api.clone();
        let network = network.to_string();
        async move {
            let n = api
                .get(&network)
                .await?
                .status
                .map(|s| s.endpoints)
                .unwrap_or(-1);
            Ok((n == want).then_some(n))
        }
    })
    .await;
    got.unwrap_or(-1)
}

/// `docker network ls` / `inspect` parity: `-o wide` shows scope, gateway, VNI, MTU,
/// internal and the endpoint count of networks, MAC, interface and sandbox of endpoints; a
/// hand-written endpoint gets its network and node labels; the network counts its endpoints
/// as they come and go.
#[tokio::test]
async fn inspect_parity_wide_columns_labels_and_endpoint_counts() {
    let cluster = Cluster::start(1).await.expect("cluster");
    cluster
        .network(
            "ovnet",
            json!({"driver": "overlay", "mtu": 1400, "internal": true,
                   "overlay": {"vni": 4100}, "ipam": {"subnets": ["10.60.0.0/24", "fd00:61::/64"]}}),
        )
        .await
        .expect("network");
    let a = cluster.container("a").expect("a");
    let b = cluster.container("b").expect("b");
    cluster
        .attach("a", "ovnet", 0, &a, json!({}))
        .await
        .expect("a");
    cluster
        .attach("b", "ovnet", 0, &b, json!({}))
        .await
        .expect("b");
    cluster.endpoint_address("a").await.expect("a ready");
    assert_eq!(wait_endpoint_count(&cluster, "ovnet", 2).await, 2);

    let nets = kubectl_wide(&["get", "cnet", "ovnet"]);
    let header: Vec<&str> = nets
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    for col in [
        "SCOPE",
        "GATEWAY",
        "SUBNET6",
        "VNI",
        "MTU",
        "INTERNAL",
        "ENDPOINTS",
    ] {
        assert!(header.contains(&col), "{nets}");
    }
    let row: Vec<&str> = nets
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let cell = |col: &str| {
        header
            .iter()
            .position(|h| *h == col)
            .and_then(|i| row.get(i).copied())
            .unwrap_or_default()
    };
    assert_eq!(cell("SCOPE"), "cluster", "{nets}");
    assert_eq!(cell("GATEWAY"), "10.60.0.1", "{nets}");
    assert_eq!(cell("SUBNET6"), "fd00:61::/64", "{nets}");
    assert_eq!(cell("VNI"), "4100", "{nets}");
    assert_eq!(cell("MTU"), "1400", "{nets}");
    assert_eq!(cell("INTERNAL"), "true", "{nets}");
    assert_eq!(cell("ENDPOINTS"), "2", "{nets}");

    let eps = kubectl_wide(&["get", "cep", "a", "-n", "default"]);
    for col in ["MAC", "INTERFACE", "SANDBOX", "NODE"] {
        assert!(
            eps.lines().next().unwrap_or_default().contains(col),
            "{eps}"
        );
    }
    assert!(eps.contains("02:42:0a:3c:00:"), "{eps}");
    assert!(eps.contains(&a.path().display().to_string()), "{eps}");

    // Hand-written endpoints are labelled like the CNI plugin's.
    let api: kube::Api<weft_api::ContainerEndpoint> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    let labelled = weft_e2e::wait_for(SETTLE, || {
        let api = api.clone();
        async move {
            let l = api
                .list(
                    &kube::api::ListParams::default()
                        .labels("weft.dev/network=ovnet,weft.dev/node=node-1"),
                )
                .await?;
            Ok((l.items.len() == 2).then_some(()))
        }
    })
    .await;
    assert!(labelled.is_ok(), "hand-written endpoints were not labelled");

    cluster.detach("b").await.expect("detach b");
    assert_eq!(wait_endpoint_count(&cluster, "ovnet", 1).await, 1);
}

/// `examples/endpoints/` — the seeds' `docker run --network`, `--ip`, `-p 8080:80`, `-p 80`
/// and `docker network connect` as ContainerEndpoints — applied as written (only each
/// sandbox path becomes a test namespace), with traffic: the published ports answer from
/// outside, `--ip` is honoured and reached, the connected network's interface is there.
#[tokio::test]
async fn the_endpoint_examples_apply_and_carry_traffic() {
    let cluster = Cluster::start(1).await.expect("cluster");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/endpoints");
    let objects = weft_e2e::objects::read_examples(&dir).expect("examples/endpoints");
    let mut sandboxes: std::collections::BTreeMap<String, weft_e2e::netns::Netns> =
        std::collections::BTreeMap::new();
    // `docker network connect` comes after `docker run`: the connected endpoint is applied
    // once the others are attached (so, like Docker's, it does not take the default route).
    let (connect, objects): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|o| o["metadata"]["name"] == "web-ovnet");
    let mut applied = 0;
    for mut obj in objects.into_iter().chain(connect) {
        if obj["metadata"]["name"] == "web-ovnet" {
            cluster
                .wait_endpoint("web", "True", SETTLE)
                .await
                .expect("web before the connect");
        }
        applied += 1;
        if obj["kind"] == "ContainerEndpoint" {
            assert_eq!(obj["spec"]["node"], cluster.nodes[0].name, "{obj}");
            let path = obj["spec"]["sandbox"]
                .as_str()
                .expect("sandbox")
                .to_string();
            let base = path.rsplit('/').next().unwrap_or("c").to_string();
            let ns = sandboxes
                .entry(path)
                .or_insert_with(|| cluster.container(&base).expect("container"));
            obj["spec"]["sandbox"] = json!(ns.path().display().to_string());
        }
        cluster.apply(obj).await.expect("apply example");
    }
    let web = &sandboxes["/var/run/netns/web"];
    let db = &sandboxes["/var/run/netns/db"];
    let api = &sandboxes["/var/run/netns/api"];
    for name in ["web", "db", "api", "web-ovnet"] {
        cluster
            .wait_endpoint(name, "True", SETTLE)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    // --ip
    assert_eq!(
        cluster.endpoint_address("db").await.expect("db"),
        "172.25.3.3"
    );
    assert!(reachable(web, "172.25.3.3", SETTLE).await, "web → db");
    // network connect: a second interface in web's sandbox.
    let ov = cluster
        .endpoint_address("web-ovnet")
        .await
        .expect("web-ovnet");
    assert!(ov.starts_with("10.44.0."), "{ov}");
    let eth1 = web
        .exec(&["ip", "-4", "addr", "show", "eth1"])
        .expect("eth1");
    assert!(eth1.contains(&format!("inet {ov}/24")), "{eth1}");
    // -p 8080:80 and -p 80.
    http_server(web, 80, "hello from web").expect("web server");
    http_server(api, 80, "hello from api").expect("api server");
    let node = cluster.nodes[0].address.clone();
    assert_eq!(
        http_get_within(&cluster.underlay, &format!("http://{node}:8080/"), SETTLE)
            .await
            .as_deref(),
        Some("hello from web"),
        "routes of web: {}\nnft: {}",
        web.exec(&["ip", "route"]).unwrap_or_default(),
        cluster.nodes[0]
            .ns
            .exec(&["nft", "list", "table", "inet", "weft"])
            .unwrap_or_default()
    );
    let chosen = status_ports(&cluster, "api").await;
    assert_eq!(chosen, ["49153→80"]);
    assert_eq!(
        http_get_within(&cluster.underlay, &format!("http://{node}:49153/"), SETTLE)
            .await
            .as_deref(),
        Some("hello from api")
    );
    let web_address = cluster.endpoint_address("web").await.expect("web");
    assert!(reachable(db, &web_address, SETTLE).await, "db → web");
    assert_eq!(applied, 6, "every example file applied");
}
