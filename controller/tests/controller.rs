//! The controller against a real API server, run as the real binary.
//! These tests share one API server and run one at a time (`.config/nextest.toml`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use weft_api::condition::{find, is_true};
use weft_api::{AddressPool, ContainerNetwork, NetworkAllocation, NetworkNode};
use weft_e2e::daemon::Daemon;
use weft_e2e::{connect, reset, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_weft-controller");

async fn fresh_cluster() -> Client {
    let client = connect().await.expect("API server");
    reset(&client).await.expect("reset");
    client
}

fn start(args: &[&str]) -> Daemon {
    Daemon::start(Path::new(BIN), args).expect("start weft-controller")
}

async fn apply<K>(client: &Client, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let name = value["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&value),
    )
    .await
    .expect("apply")
}

async fn pool(
    client: &Client,
    name: &str,
    cidrs: &[&str],
    prefix: u8,
    default: bool,
) -> AddressPool {
    apply(
        client,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "AddressPool", "metadata": {"name": name},
        "spec": {"cidrs": cidrs, "prefixLength": prefix, "default": default}}),
    )
    .await
}

async fn network(client: &Client, name: &str, spec: serde_json::Value) -> ContainerNetwork {
    apply(client, json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork", "metadata": {"name": name}, "spec": spec}))
        .await
}

async fn node(client: &Client, name: &str, labels: serde_json::Value) -> NetworkNode {
    apply(
        client,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "NetworkNode",
        "metadata": {"name": name, "labels": labels}, "spec": {"underlayAddress": "192.0.2.10"}}),
    )
    .await
}

/// Wait until the network's status satisfies `check`.
async fn wait_network(
    client: &Client,
    name: &str,
    timeout: Duration,
    check: impl Fn(&ContainerNetwork) -> bool,
) -> ContainerNetwork {
    let api: Api<ContainerNetwork> = Api::all(client.clone());
    let name = name.to_string();
    wait_for(timeout, || {
        let api = api.clone();
        let name = name.clone();
        let check = &check;
        async move {
            let n = api.get(&name).await?;
            Ok(check(&n).then_some(n))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("network {name}: {e}"))
}

fn conditions(
    n: &ContainerNetwork,
) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
    n.status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

fn allocated(n: &ContainerNetwork) -> bool {
    is_true(conditions(n), "SubnetAllocated")
}

fn ready(n: &ContainerNetwork) -> bool {
    is_true(conditions(n), "Ready")
}

fn stalled_with(reason: &'static str) -> impl Fn(&ContainerNetwork) -> bool {
    move |n| {
        find(conditions(n), "Stalled").is_some_and(|c| c.status == "True" && c.reason == reason)
    }
}

fn subnets(n: &ContainerNetwork) -> Vec<String> {
    n.status
        .as_ref()
        .map(|s| s.subnets.clone())
        .unwrap_or_default()
}

/// The controller is up once it has written the status of a pool.
async fn wait_controller_up(client: &Client, pool_name: &str) {
    let api: Api<AddressPool> = Api::all(client.clone());
    let name = pool_name.to_string();
    wait_for(Duration::from_secs(20), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            Ok(api
                .get(&name)
                .await?
                .status
                .filter(|s| !s.conditions.is_empty())
                .map(|_| ()))
        }
    })
    .await
    .expect("controller writes pool status");
}

#[tokio::test]
async fn pool_network_is_allocated_and_ready_within_one_second() {
    let client = fresh_cluster().await;
    pool(&client, "default", &["10.200.0.0/16"], 24, true).await;
    let _ctl = start(&[]);
    wait_controller_up(&client, "default").await;

    let created = Instant::now();
    network(&client, "frontend", json!({"driver": "bridge"})).await;
    let n = wait_network(&client, "frontend", Duration::from_secs(1), ready).await;
    let took = created.elapsed();
    let status = n.status.clone().expect("status");
    assert_eq!(status.subnets, vec!["10.200.0.0/24"]);
    assert_eq!(status.gateway.as_deref(), Some("10.200.0.1"));
    assert_eq!(status.observed_generation, n.metadata.generation);
    assert!(allocated(&n));
    for c in &status.conditions {
        assert_eq!(
            c.observed_generation, n.metadata.generation,
            "condition {} carries observedGeneration",
            c.type_
        );
    }
    assert_eq!(
        find(&status.conditions, "Stalled").map(|c| c.status.as_str()),
        Some("False")
    );
    assert_eq!(
        find(&status.conditions, "Reconciling").map(|c| c.status.as_str()),
        Some("False")
    );
    assert_eq!(status.capacity.as_ref().map(|c| c.addresses), Some(253));
    assert!(
        n.finalizers()
            .iter()
            .any(|f| f == weft_api::NETWORK_FINALIZER)
    );
    assert!(took < Duration::from_secs(1), "allocated in {took:?}");
}

#[tokio::test]
async fn overlapping_explicit_subnets_stall_the_newer_network_naming_the_older() {
    let client = fresh_cluster().await;
    pool(&client, "p", &["10.201.0.0/16"], 24, true).await;
    let _ctl = start(&[]);
    network(
        &client,
        "older",
        json!({"driver": "bridge", "ipam": {"subnets": ["10.50.0.0/24"]}}),
    )
    .await;
    wait_network(&client, "older", Duration::from_secs(10), ready).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has 1 s resolution
    network(
        &client,
        "newer",
        json!({"driver": "bridge", "ipam": {"subnets": ["10.50.0.128/25"]}}),
    )
    .await;
    let n = wait_network(
        &client,
        "newer",
        Duration::from_secs(10),
        stalled_with("SubnetOverlap"),
    )
    .await;
    let stalled = find(conditions(&n), "Stalled").expect("Stalled");
    assert!(
        stalled.message.contains("network older"),
        "message names the other network: {}",
        stalled.message
    );
    assert!(
        stalled.message.contains("10.50.0.0/24"),
        "message names the other subnet: {}",
        stalled.message
    );
    assert!(!ready(&n));
    assert!(subnets(&n).is_empty(), "the newer network holds nothing");
    // The older one is untouched.
    let api: Api<ContainerNetwork> = Api::all(client.clone());
    let older = api.get("older").await.expect("older");
    assert!(ready(&older));
    assert_eq!(subnets(&older), vec!["10.50.0.0/24"]);
}

#[tokio::test]
async fn exhausted_pool_stalls_with_a_message_naming_the_pool() {
    let client = fresh_cluster().await;
    pool(&client, "tiny", &["10.202.0.0/23"], 24, false).await;
    let _ctl = start(&[]);
    for name in ["a", "b"] {
        network(
            &client,
            name,
            json!({"driver": "bridge", "ipam": {"pool": "tiny"}}),
        )
        .await;
        wait_network(&client, name, Duration::from_secs(10), ready).await;
    }
    network(
        &client,
        "c",
        json!({"driver": "bridge", "ipam": {"pool": "tiny"}}),
    )
    .await;
    let n = wait_network(
        &client,
        "c",
        Duration::from_secs(10),
        stalled_with("PoolExhausted"),
    )
    .await;
    let msg = &find(conditions(&n), "Stalled").expect("Stalled").message;
    assert!(msg.contains("tiny"), "message names the pool: {msg}");
}

#[tokio::test]
async fn missing_pool_and_missing_default_pool_are_reported() {
    let client = fresh_cluster().await;
    let _ctl = start(&[]);
    network(&client, "nodefault", json!({"driver": "bridge"})).await;
    let n = wait_network(
        &client,
        "nodefault",
        Duration::from_secs(10),
        stalled_with("NoDefaultPool"),
    )
    .await;
    assert!(
        find(conditions(&n), "Stalled")
            .expect("Stalled")
            .message
            .contains("default: true")
    );
    network(
        &client,
        "named",
        json!({"driver": "bridge", "ipam": {"pool": "nope"}}),
    )
    .await;
    wait_network(
        &client,
        "named",
        Duration::from_secs(10),
        stalled_with("PoolNotFound"),
    )
    .await;
    // Creating the pools later un-stalls both.
    pool(&client, "nope", &["10.203.0.0/16"], 24, false).await;
    pool(&client, "default", &["10.204.0.0/16"], 24, true).await;
    wait_network(&client, "named", Duration::from_secs(10), ready).await;
    wait_network(&client, "nodefault", Duration::from_secs(10), ready).await;
}

#[tokio::test]
async fn deleting_a_network_removes_the_finalizer_and_frees_the_subnet_for_the_next() {
    let client = fresh_cluster().await;
    pool(&client, "one", &["10.205.0.0/24"], 24, true).await;
    let _ctl = start(&[]);
    network(&client, "first", json!({"driver": "bridge"})).await;
    let first = wait_network(&client, "first", Duration::from_secs(10), ready).await;
    assert_eq!(subnets(&first), vec!["10.205.0.0/24"]);
    network(&client, "second", json!({"driver": "bridge"})).await;
    wait_network(
        &client,
        "second",
        Duration::from_secs(10),
        stalled_with("PoolExhausted"),
    )
    .await;

    let api: Api<ContainerNetwork> = Api::all(client.clone());
    api.delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(Duration::from_secs(10), || {
        let api = api.clone();
        async move { Ok(api.get_opt("first").await?.is_none().then_some(())) }
    })
    .await
    .expect("finalizer removed and object gone");
    let second = wait_network(&client, "second", Duration::from_secs(10), ready).await;
    assert_eq!(
        subnets(&second),
        vec!["10.205.0.0/24"],
        "the freed subnet is reused"
    );
}

/// Seed 19 of the chaos soak, operation 8719: a deleted network's subnet was handed to a new
/// network while the old object still existed and recorded it (the controller was killed, and
/// the API cut off, before the finalizer came off). The restarted controller restored the old
/// network first and moved the new one to another subnet under its running endpoints. Here
/// another controller's finalizer keeps the deleted network, as long as a kill would.
#[tokio::test]
async fn a_subnet_is_reused_only_once_no_deleted_network_records_it_across_a_restart() {
    let client = fresh_cluster().await;
    pool(&client, "one", &["10.215.0.0/24"], 24, true).await;
    let ctl = start(&[]);
    network(&client, "first", json!({"driver": "bridge"})).await;
    let first = wait_network(&client, "first", Duration::from_secs(10), ready).await;
    assert_eq!(subnets(&first), vec!["10.215.0.0/24"]);
    let api: Api<ContainerNetwork> = Api::all(client.clone());
    const HOLD: &str = "test.weft.dev/hold";
    api.patch(
        "first",
        &PatchParams::apply("other-controller"),
        &Patch::Apply(
            &json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
            "metadata": {"name": "first", "finalizers": [HOLD]}}),
        ),
    )
    .await
    .expect("another finalizer");
    network(&client, "second", json!({"driver": "bridge"})).await;
    wait_network(
        &client,
        "second",
        Duration::from_secs(10),
        stalled_with("PoolExhausted"),
    )
    .await;

    api.delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    let second = wait_network(&client, "second", Duration::from_secs(10), ready).await;
    assert_eq!(
        subnets(&second),
        vec!["10.215.0.0/24"],
        "the freed subnet is reused"
    );
    let first = api
        .get("first")
        .await
        .expect("still held by the other finalizer");
    assert_eq!(
        first.finalizers(),
        [HOLD.to_string()],
        "only the other finalizer is left"
    );
    assert!(
        subnets(&first).is_empty(),
        "a deleted network that still exists must not record the subnet handed to another: {:?}",
        first.status
    );

    ctl.kill().await.expect("SIGKILL");
    let _ctl = start(&[]);
    wait_controller_up(&client, "one").await;
    // Give the restarted controller time to act on what it restored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = wait_network(&client, "second", Duration::from_secs(10), ready).await;
    assert_eq!(
        subnets(&second),
        vec!["10.215.0.0/24"],
        "a restart keeps the subnet where the running network has it"
    );

    api.patch(
        "first",
        &PatchParams::apply("other-controller"),
        &Patch::Apply(
            &json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
            "metadata": {"name": "first", "finalizers": []}}),
        ),
    )
    .await
    .expect("other finalizer off");
    wait_for(Duration::from_secs(10), || {
        let api = api.clone();
        async move { Ok(api.get_opt("first").await?.is_none().then_some(())) }
    })
    .await
    .expect("first gone");
}

#[tokio::test]
async fn deletion_waits_until_no_node_reports_the_network() {
    let client = fresh_cluster().await;
    pool(&client, "default", &["10.206.0.0/16"], 24, true).await;
    let _ctl = start(&[]);
    node(&client, "node-a", json!({})).await;
    let net = network(&client, "busy", json!({"driver": "bridge"})).await;
    let nodes: Api<NetworkNode> = Api::all(client.clone());
    let report = |status: serde_json::Value| json!({"apiVersion": "weft.dev/v1alpha1", "kind": "NetworkNode", "status": status});
    // The agent reports the network programmed: the rollup says 1/1 and Ready.
    nodes
        .patch_status(
            "node-a",
            &PatchParams::apply("agent").force(),
            &Patch::Apply(&report(json!({"programmed": ["busy"]}))),
        )
        .await
        .expect("report");
    let n = wait_network(&client, "busy", Duration::from_secs(10), |n| {
        ready(n) && n.status.as_ref().is_some_and(|s| s.nodes_ready == 1)
    })
    .await;
    assert_eq!(
        n.status.as_ref().and_then(|s| s.nodes.clone()).as_deref(),
        Some("1/1")
    );

    let api: Api<ContainerNetwork> = Api::all(client.clone());
    api.delete("busy", &DeleteParams::default())
        .await
        .expect("delete");
    let n = wait_network(&client, "busy", Duration::from_secs(10), |n| {
        find(conditions(n), "Ready").is_some_and(|c| c.reason == "Terminating")
    })
    .await;
    assert!(
        find(conditions(&n), "Ready")
            .expect("Ready")
            .message
            .contains("node-a")
    );
    // Removing: no longer programmed, but kernel objects of it are still on the node.
    nodes
        .patch_status(
            "node-a",
            &PatchParams::apply("agent").force(),
            &Patch::Apply(&report(json!({"programmed": [], "notProgrammed": [
                {"name": "busy", "uid": net.uid(), "state": "Pending", "reason": "Removing"}]}))),
        )
        .await
        .expect("report");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        api.get_opt("busy").await.expect("get").is_some(),
        "blocked while a node still has it"
    );

    // The agent removed its kernel objects and says so: the finalizer completes.
    nodes
        .patch_status(
            "node-a",
            &PatchParams::apply("agent").force(),
            &Patch::Apply(&report(json!({"programmed": []}))),
        )
        .await
        .expect("report");
    wait_for(Duration::from_secs(10), || {
        let api = api.clone();
        async move { Ok(api.get_opt("busy").await?.is_none().then_some(())) }
    })
    .await
    .expect("network deleted once no node reports it");
}

#[tokio::test]
async fn cluster_scope_networks_get_a_vni_and_one_block_per_selected_node() {
    let client = fresh_cluster().await;
    pool(&client, "default", &["10.207.0.0/16"], 22, true).await;
    node(&client, "n1", json!({"zone": "a"})).await;
    node(&client, "n2", json!({"zone": "a"})).await;
    node(&client, "n3", json!({"zone": "b"})).await;
    let _ctl = start(&["--node-grace-period", "1s"]);
    network(
        &client,
        "ov",
        json!({"driver": "overlay", "nodeSelector": {"zone": "a"}}),
    )
    .await;
    network(
        &client,
        "ov2",
        json!({"driver": "overlay", "overlay": {"vni": 5000}}),
    )
    .await;
    let ov = wait_network(&client, "ov", Duration::from_secs(10), allocated).await;
    let ov2 = wait_network(&client, "ov2", Duration::from_secs(10), allocated).await;
    let vni = ov.status.as_ref().and_then(|s| s.vni).expect("vni");
    assert!(vni >= 4096, "auto VNIs start at 4096 like Docker's");
    assert_eq!(
        ov2.status.as_ref().and_then(|s| s.vni),
        Some(5000),
        "a requested VNI is honoured"
    );
    assert_eq!(ov.status.as_ref().map(|s| s.nodes_selected), Some(2));

    let allocs: Api<NetworkAllocation> = Api::all(client.clone());
    let blocks_of = |name: &'static str| {
        let allocs = allocs.clone();
        async move {
            allocs
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .map(|a| {
                    a.spec
                        .blocks
                        .iter()
                        .map(|b| (b.node.clone(), b.cidr.clone()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    let blocks = wait_for(Duration::from_secs(10), || async {
        let b = blocks_of("ov").await;
        Ok((b.len() == 2).then_some(b))
    })
    .await
    .expect("two blocks");
    assert_eq!(
        blocks.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
        vec!["n1", "n2"]
    );
    // Blocks are /22 + 6 = /28, carved lowest first from the network's subnet.
    let base: ipnet::Ipv4Net = subnets(&ov)[0].parse().expect("subnet");
    let block = |i: u32| {
        format!(
            "{}/28",
            std::net::Ipv4Addr::from(u32::from(base.network()) + 16 * i)
        )
    };
    assert_eq!(blocks[0].1, block(0));
    assert_eq!(blocks[1].1, block(1));

    // A node leaves: its block is released after the grace period, the other stays put.
    let nodes: Api<NetworkNode> = Api::all(client.clone());
    nodes
        .delete("n1", &DeleteParams::default())
        .await
        .expect("delete node");
    let blocks = wait_for(Duration::from_secs(10), || async {
        let b = blocks_of("ov").await;
        Ok((b.len() == 1).then_some(b))
    })
    .await
    .expect("block released");
    assert_eq!(blocks, vec![("n2".to_string(), block(1))]);
    // A new node gets the lowest free block.
    node(&client, "n4", json!({"zone": "a"})).await;
    let blocks = wait_for(Duration::from_secs(10), || async {
        let b = blocks_of("ov").await;
        Ok((b.len() == 2).then_some(b))
    })
    .await
    .expect("new block");
    assert!(blocks.contains(&("n4".to_string(), block(0))), "{blocks:?}");
}

#[tokio::test]
async fn hundred_networks_created_at_once_get_distinct_subnets() {
    let client = fresh_cluster().await;
    pool(&client, "default", &["10.100.0.0/16"], 24, true).await;
    let _ctl = start(&[]);
    let api: Api<ContainerNetwork> = Api::all(client.clone());
    let creates = (0..100).map(|i| {
        let api = api.clone();
        async move {
            let n: ContainerNetwork = serde_json::from_value(json!({"apiVersion": "weft.dev/v1alpha1",
                "kind": "ContainerNetwork", "metadata": {"name": format!("burst-{i}")}, "spec": {"driver": "bridge"}}))
            .expect("object");
            api.create(&PostParams::default(), &n).await
        }
    });
    for r in futures::future::join_all(creates).await {
        r.expect("create");
    }
    let all = wait_for(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await?.items;
            Ok(list.iter().all(ready).then_some(list))
        }
    })
    .await
    .expect("all 100 ready");
    let distinct: BTreeSet<String> = all.iter().flat_map(subnets).collect();
    assert_eq!(all.len(), 100);
    assert_eq!(distinct.len(), 100, "no subnet handed out twice");
}

#[tokio::test]
async fn killed_and_restarted_controller_reproduces_identical_allocations() {
    let client = fresh_cluster().await;
    pool(&client, "default", &["10.208.0.0/16"], 24, true).await;
    node(&client, "n1", json!({})).await;
    node(&client, "n2", json!({})).await;
    let ctl = start(&[]);
    for i in 0..10 {
        network(&client, &format!("pool-{i}"), json!({"driver": "bridge"})).await;
    }
    network(
        &client,
        "explicit",
        json!({"driver": "bridge", "ipam": {"subnets": ["10.208.3.0/24"]}}),
    )
    .await;
    network(&client, "ov", json!({"driver": "overlay"})).await;
    network(&client, "mv", json!({"driver": "macvlan", "macvlan": {"parent": "eth0"}, "ipam": {"subnets": ["192.168.50.0/24"]}})).await;
    let api: Api<ContainerNetwork> = Api::all(client.clone());
    let allocs: Api<NetworkAllocation> = Api::all(client.clone());
    let picture = || {
        let api = api.clone();
        let allocs = allocs.clone();
        async move {
            let nets = api.list(&ListParams::default()).await.expect("list");
            let blocks = allocs.list(&ListParams::default()).await.expect("list");
            let nets: Vec<_> = nets
                .items
                .iter()
                .map(|n| {
                    (
                        n.name_any(),
                        n.resource_version(),
                        n.status
                            .as_ref()
                            .map(|s| (s.subnets.clone(), s.gateway.clone(), s.vni)),
                    )
                })
                .collect();
            let blocks: Vec<_> = blocks
                .items
                .iter()
                .map(|a| (a.name_any(), a.resource_version(), a.spec.blocks.clone()))
                .collect();
            (nets, blocks)
        }
    };
    wait_for(Duration::from_secs(20), || async {
        let list = api.list(&ListParams::default()).await?.items;
        Ok((list.len() == 13 && list.iter().all(allocated)).then_some(()))
    })
    .await
    .expect("all allocated");
    tokio::time::sleep(Duration::from_millis(500)).await; // let rollups settle
    let before = picture().await;
    assert_eq!(before.1.len(), 2, "overlay and macvlan have node blocks");

    ctl.kill().await.expect("SIGKILL");
    let _ctl = start(&[]);
    network(&client, "after", json!({"driver": "bridge"})).await;
    let after_net = wait_network(&client, "after", Duration::from_secs(10), allocated).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = picture().await;
    after.0.retain(|(name, _, _)| name != "after");
    assert_eq!(
        before, after,
        "same subnets, gateways, VNIs and blocks; not even a status rewrite"
    );
    let taken: BTreeSet<String> = before
        .0
        .iter()
        .filter_map(|(_, _, s)| s.clone())
        .flat_map(|s| s.0)
        .collect();
    for s in subnets(&after_net) {
        assert!(!taken.contains(&s), "{s} handed out twice");
    }
    // 11 pool networks (10 bridges and the overlay) around the explicit 10.208.3.0/24: .0-.2, .4-.11.
    assert_eq!(
        subnets(&after_net),
        vec!["10.208.12.0/24"],
        "lowest free /24"
    );
}

/// Names of the NetworkAllocations in the API server.
async fn allocation_names(client: &Client) -> BTreeSet<String> {
    let allocs: Api<NetworkAllocation> = Api::all(client.clone());
    allocs
        .list(&ListParams::default())
        .await
        .expect("list allocations")
        .items
        .iter()
        .map(|a| a.name_any())
        .collect()
}

/// A NetworkAllocation written by hand, as a controller would have left it.
async fn allocation(client: &Client, name: &str, network_uid: &str) {
    let _: NetworkAllocation = apply(
        client,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "NetworkAllocation",
        "metadata": {"name": name},
        "spec": {"network": name, "networkUid": network_uid, "blockPrefixLength": 28,
                 "blocks": [{"node": "n1", "cidr": "10.209.99.0/28"}]}}),
    )
    .await;
}

async fn wait_allocations(client: &Client, want: &[&str], what: &str) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let got = wait_for(Duration::from_secs(10), || async {
        let got = allocation_names(client).await;
        Ok((got == want).then_some(got))
    })
    .await;
    assert!(
        got.is_ok(),
        "{what}: want {want:?}, have {:?}",
        allocation_names(client).await
    );
}

#[tokio::test]
async fn allocations_of_deleted_networks_are_deleted_even_without_the_finalizer_path() {
    let client = fresh_cluster().await;
    pool(&client, "default", &["10.209.0.0/16"], 24, true).await;
    node(&client, "n1", json!({})).await;
    let nets: Api<ContainerNetwork> = Api::all(client.clone());
    let ctl = start(&[]);
    network(&client, "ov", json!({"driver": "overlay"})).await;
    network(&client, "keep", json!({"driver": "overlay"})).await;
    wait_network(&client, "ov", Duration::from_secs(10), allocated).await;
    wait_network(&client, "keep", Duration::from_secs(10), allocated).await;
    wait_allocations(&client, &["keep", "ov"], "one allocation per overlay").await;

    // The controller is killed, and the network deleted before its finalizer path ran
    // (here: the finalizer stripped, as if it had never landed). No garbage collector runs.
    ctl.kill().await.expect("SIGKILL");
    nets.patch(
        "ov",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("strip finalizer");
    nets.delete("ov", &DeleteParams::default())
        .await
        .expect("delete");
    // Left by an earlier incarnation of a network of the same name, and by a network that
    // never existed: neither belongs to a live network.
    let keep_uid = nets.get("keep").await.expect("keep").uid().expect("uid");
    network(&client, "bridge", json!({"driver": "bridge"})).await;
    allocation(&client, "bridge", "uid-of-an-earlier-bridge").await;
    allocation(&client, "ghost", "uid-of-a-deleted-network").await;
    assert_eq!(
        allocation_names(&client).await,
        ["bridge", "ghost", "keep", "ov"]
            .into_iter()
            .map(String::from)
            .collect(),
        "left over while no controller runs"
    );

    let _ctl = start(&[]);
    wait_allocations(&client, &["keep"], "swept at start").await;
    let keep: Api<NetworkAllocation> = Api::all(client.clone());
    assert_eq!(
        keep.get("keep").await.expect("keep").spec.network_uid,
        keep_uid,
        "the live network's allocation is untouched"
    );

    // While the controller runs, an orphan written later (a reconcile in flight while its
    // network went) is swept on its own event, without any network event.
    allocation(&client, "late", "uid-of-a-deleted-network").await;
    wait_allocations(&client, &["keep"], "swept on the allocation's event").await;

    // Networks deleted while their first reconcile is in flight, finalizer or not.
    for i in 0..10 {
        let name = format!("flash-{i}");
        network(&client, &name, json!({"driver": "overlay"})).await;
        tokio::time::sleep(Duration::from_millis(5 * i)).await;
        nets.delete(&name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    wait_for(Duration::from_secs(10), || async {
        let left = nets.list(&ListParams::default()).await?.items;
        Ok(left
            .iter()
            .all(|n| !n.name_any().starts_with("flash-"))
            .then_some(()))
    })
    .await
    .expect("flash networks gone");
    wait_allocations(&client, &["keep"], "no allocation outlives its network").await;
}

#[tokio::test]
async fn leader_election_without_lease_support_fails_with_a_clear_message() {
    let _client = fresh_cluster().await;
    let out = tokio::process::Command::new(BIN)
        .args(["--leader-elect", "--metrics-addr", "127.0.0.1:0"])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not serve"),
        "clear message, got: {stderr}"
    );
    assert!(
        stderr.contains("without --leader-elect"),
        "says what to do, got: {stderr}"
    );
}

#[tokio::test]
async fn metrics_and_probes_are_served() {
    let client = fresh_cluster().await;
    pool(&client, "default", &["10.209.0.0/16"], 24, true).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _ctl = start(&["--metrics-addr", &addr]);
    network(&client, "m", json!({"driver": "bridge"})).await;
    wait_network(&client, "m", Duration::from_secs(10), ready).await;
    let get = |path: &'static str| {
        let addr = addr.clone();
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sf", &format!("http://{addr}{path}")])
                .output()
                .await
                .expect("curl");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
            )
        }
    };
    assert_eq!(get("/healthz").await, (true, "ok".to_string()));
    assert_eq!(get("/readyz").await, (true, "ok".to_string()));
    let (ok, metrics) = wait_for(Duration::from_secs(5), || async {
        let m = get("/metrics").await;
        Ok(m.1
            .contains("weft_controller_pool_addresses{pool=\"default\",state=\"allocated\"} 256")
            .then_some(m))
    })
    .await
    .expect("pool gauge");
    assert!(ok);
    assert!(metrics.contains("weft_controller_reconciles_total{kind=\"ContainerNetwork\"}"));
    assert!(metrics.contains("weft_controller_reconcile_duration_seconds_bucket"));
}
