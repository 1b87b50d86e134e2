//! The ContainerService controller against a real API server, run as the real binary:
//! VIPs from the service range, ready endpoint counts and every reason of `Ready`.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use weft_api::condition::find;
use weft_api::{ContainerEndpoint, ContainerNetwork, ContainerService};
use weft_e2e::daemon::Daemon;
use weft_e2e::{connect, reset, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_weft-controller");
const NS: &str = "default";

async fn fresh_cluster() -> Client {
    let client = connect().await.expect("API server");
    reset(&client).await.expect("reset");
    let api: Api<ContainerService> = Api::namespaced(client.clone(), NS);
    for s in api.list(&ListParams::default()).await.expect("list") {
        api.delete(&s.name_any(), &DeleteParams::default())
            .await
            .ok();
    }
    client
}

fn start() -> Daemon {
    Daemon::start(Path::new(BIN), &[]).expect("start weft-controller")
}

async fn network(client: &Client, name: &str, spec: serde_json::Value) {
    let api: Api<ContainerNetwork> = Api::all(client.clone());
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
                             "metadata": {"name": name}, "spec": spec}),
        ),
    )
    .await
    .expect("network");
}

/// An endpoint as the agent would report it: labelled, with an address and Ready.
async fn endpoint(
    client: &Client,
    name: &str,
    net: &str,
    labels: serde_json::Value,
    address: &str,
    ready: bool,
    publish: serde_json::Value,
) {
    let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), NS);
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
            "metadata": {"name": name, "labels": labels},
            "spec": {"network": net, "node": "n1", "sandbox": format!("/var/run/netns/{name}"),
                     "publish": publish}}),
        ),
    )
    .await
    .expect("endpoint");
    let status = if ready { "True" } else { "False" };
    api.patch_status(
        name,
        &PatchParams::apply("test-agent").force(),
        &Patch::Apply(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
            "status": {"address": format!("{address}/24"),
                "conditions": [{"type": "Ready", "status": status, "reason": if ready {"Ready"} else {"SandboxMissing"},
                                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
    )
    .await
    .expect("endpoint status");
}

async fn service(client: &Client, name: &str, spec: serde_json::Value) {
    let api: Api<ContainerService> = Api::namespaced(client.clone(), NS);
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService",
                             "metadata": {"name": name}, "spec": spec}),
        ),
    )
    .await
    .expect("service");
}

fn web(net: &str, ports: serde_json::Value) -> serde_json::Value {
    json!({"network": net, "selector": {"matchLabels": {"app": "web"}}, "ports": ports})
}

/// Wait until the service's Ready condition has `reason` (and `check` holds), return it.
async fn wait_reason(
    client: &Client,
    name: &str,
    reason: &str,
    check: impl Fn(&ContainerService) -> bool,
) -> ContainerService {
    let api: Api<ContainerService> = Api::namespaced(client.clone(), NS);
    let found = wait_for(Duration::from_secs(20), || {
        let api = api.clone();
        let check = &check;
        async move {
            let s = api.get(name).await?;
            let ok = s.status.as_ref().is_some_and(|st| {
                find(&st.conditions, "Ready").is_some_and(|c| c.reason == reason)
            }) && check(&s);
            Ok(ok.then_some(s))
        }
    })
    .await;
    match found {
        Ok(s) => s,
        Err(e) => {
            let now = api.get(name).await.ok().and_then(|s| s.status);
            panic!("service {name} never reached {reason}: {e}; status now: {now:?}")
        }
    }
}

fn vip(s: &ContainerService) -> Option<String> {
    s.status.as_ref().and_then(|st| st.vip.clone())
}

fn ready_count(s: &ContainerService) -> i32 {
    s.status.as_ref().map_or(-1, |st| st.ready_endpoints)
}

#[tokio::test]
async fn a_vip_service_gets_an_address_of_the_service_range_and_counts_ready_endpoints() {
    let client = fresh_cluster().await;
    let _controller = start();
    network(
        &client,
        "web",
        json!({"driver": "bridge", "ipam": {"subnets": ["10.20.0.0/24"]}}),
    )
    .await;
    // An endpoint that asked for the first address of the service range keeps it: the VIP
    // skips it.
    endpoint(
        &client,
        "a",
        "web",
        json!({"app": "web"}),
        "10.20.0.2",
        true,
        json!([]),
    )
    .await;
    endpoint(
        &client,
        "b",
        "web",
        json!({"app": "web"}),
        "10.20.0.241",
        true,
        json!([]),
    )
    .await;
    endpoint(
        &client,
        "c",
        "web",
        json!({"app": "db"}),
        "10.20.0.3",
        true,
        json!([]),
    )
    .await;
    service(&client, "web", web("web", json!([{"port": 80}]))).await;
    let s = wait_reason(&client, "web", "EndpointsReady", |s| ready_count(s) == 2).await;
    assert_eq!(vip(&s).as_deref(), Some("10.20.0.242"));

    // A second service gets another address; the first keeps its own.
    service(&client, "api", web("web", json!([{"port": 8080}]))).await;
    let api_svc = wait_reason(&client, "api", "EndpointsReady", |s| vip(s).is_some()).await;
    assert_eq!(vip(&api_svc).as_deref(), Some("10.20.0.243"));

    // An endpoint going not-Ready leaves the count; the last one makes it NoEndpoints.
    endpoint(
        &client,
        "a",
        "web",
        json!({"app": "web"}),
        "10.20.0.2",
        false,
        json!([]),
    )
    .await;
    wait_reason(&client, "web", "EndpointsReady", |s| ready_count(s) == 1).await;
    endpoint(
        &client,
        "b",
        "web",
        json!({"app": "web"}),
        "10.20.0.241",
        false,
        json!([]),
    )
    .await;
    let s = wait_reason(&client, "web", "NoEndpoints", |s| ready_count(s) == 0).await;
    assert_eq!(vip(&s).as_deref(), Some("10.20.0.242"), "the VIP stays");
    let ready = find(&s.status.as_ref().expect("status").conditions, "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains("none of the 2 selected endpoints is ready"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn bad_services_are_reported_with_a_reason_each() {
    let client = fresh_cluster().await;
    let _controller = start();
    network(
        &client,
        "web",
        json!({"driver": "bridge", "ipam": {"subnets": ["10.21.0.0/24"]}}),
    )
    .await;
    network(
        &client,
        "back",
        json!({"driver": "bridge", "internal": true, "ipam": {"subnets": ["10.22.0.0/24"]}}),
    )
    .await;
    endpoint(
        &client,
        "pub",
        "web",
        json!({"app": "other"}),
        "10.21.0.5",
        true,
        json!([{"hostPort": 8080, "containerPort": 80}]),
    )
    .await;

    service(
        &client,
        "nothing",
        json!({"network": "web", "selector": {"matchLabels": {"app": "nobody"}}, "ports": [{"port": 80}]}),
    )
    .await;
    let s = wait_reason(&client, "nothing", "NoEndpoints", |_| true).await;
    let msg = &find(&s.status.as_ref().expect("status").conditions, "Ready")
        .expect("Ready")
        .message;
    assert!(msg.contains("matches no endpoint"), "{msg}");

    let mut outside = web("web", json!([{"port": 80}]));
    outside["vip"] = json!("10.99.0.250");
    service(&client, "outside", outside).await;
    let s = wait_reason(&client, "outside", "VIPOutsideSubnet", |_| true).await;
    assert_eq!(vip(&s), None);

    let mut unreserved = web("web", json!([{"port": 80}]));
    unreserved["vip"] = json!("10.21.0.7");
    service(&client, "unreserved", unreserved).await;
    wait_reason(&client, "unreserved", "VIPInUse", |_| true).await;

    let mut chosen = web("web", json!([{"port": 80}]));
    chosen["vip"] = json!("10.21.0.250");
    service(&client, "chosen", chosen).await;
    let s = wait_reason(&client, "chosen", "NoEndpoints", |_| true).await;
    assert_eq!(vip(&s).as_deref(), Some("10.21.0.250"));

    service(
        &client,
        "internal",
        web(
            "back",
            json!([{"port": 80, "publish": {"publishedPort": 9000}}]),
        ),
    )
    .await;
    wait_reason(&client, "internal", "IngressOnInternalNetwork", |_| true).await;
    // Host mode is fine on an internal network.
    service(
        &client,
        "internal-host",
        web(
            "back",
            json!([{"port": 80, "publish": {"mode": "host", "publishedPort": 9001}}]),
        ),
    )
    .await;
    wait_reason(&client, "internal-host", "NoEndpoints", |_| true).await;

    service(
        &client,
        "clash",
        web(
            "web",
            json!([{"port": 80, "publish": {"publishedPort": 8080}}]),
        ),
    )
    .await;
    let s = wait_reason(&client, "clash", "PortConflict", |_| true).await;
    let msg = &find(&s.status.as_ref().expect("status").conditions, "Ready")
        .expect("Ready")
        .message;
    assert!(msg.contains("endpoint default/pub"), "{msg}");

    service(&client, "missing", web("nonet", json!([{"port": 80}]))).await;
    wait_reason(&client, "missing", "NetworkNotReady", |_| true).await;
}
