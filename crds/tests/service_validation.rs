//! ContainerService: bad input the API server refuses by itself (schema + CEL), each case
//! created on a real API server with the refusal message read back.

use serde_json::{Value, json};
use weft_api::ContainerService;
use weft_e2e::{connect, create_raw_namespaced, patch_spec_raw_namespaced};

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService",
           "metadata": {"name": name}, "spec": spec})
}

fn spec_with(ports: Value, extra: Value) -> Value {
    let mut spec = json!({"network": "web", "selector": {"matchLabels": {"app": "web"}},
                          "ports": ports});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    spec
}

async fn rejected(spec: Value) -> String {
    let client = connect().await.expect("API server");
    match create_raw_namespaced::<ContainerService>(
        &client,
        "default",
        service(&unique("bad"), spec.clone()),
    )
    .await
    {
        Ok(_) => panic!("the API server accepted an invalid service: {spec}"),
        Err(msg) => msg,
    }
}

fn assert_mentions(msg: &str, expected: &str) {
    assert!(
        msg.contains(expected),
        "error message should contain {expected:?}, got: {msg}"
    );
}

#[tokio::test]
async fn a_good_service_is_accepted_with_defaults() {
    let client = connect().await.expect("API server");
    let name = unique("good");
    let created = create_raw_namespaced::<ContainerService>(
        &client,
        "default",
        service(
            &name,
            spec_with(
                json!([{"name": "http", "port": 80, "targetPort": 8080,
                        "publish": {"publishedPort": 8080}},
                       {"name": "dns", "protocol": "udp", "port": 53}]),
                json!({"sessionAffinity": {}}),
            ),
        ),
    )
    .await
    .expect("accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["endpointMode"], "vip");
    assert_eq!(spec["ingressTrafficPolicy"], "Cluster");
    assert_eq!(spec["ports"][0]["protocol"], "tcp");
    assert_eq!(spec["ports"][0]["publish"]["mode"], "ingress");
    assert_eq!(spec["sessionAffinity"]["timeoutSeconds"], 10800);
}

#[tokio::test]
async fn duplicate_ports_are_refused() {
    let msg = rejected(spec_with(json!([{"port": 80}, {"port": 80}]), json!({}))).await;
    assert_mentions(&msg, "spec.ports");
    assert_mentions(&msg, "ports must be unique per protocol");
    // The same number over TCP and UDP is two ports.
    let client = connect().await.expect("API server");
    create_raw_namespaced::<ContainerService>(
        &client,
        "default",
        service(
            &unique("tcpudp"),
            spec_with(
                json!([{"port": 53}, {"port": 53, "protocol": "udp"}]),
                json!({}),
            ),
        ),
    )
    .await
    .expect("tcp and udp on one port number");
}

#[tokio::test]
async fn duplicate_port_names_and_published_ports_are_refused() {
    let msg = rejected(spec_with(
        json!([{"name": "a", "port": 80}, {"name": "a", "port": 81}]),
        json!({}),
    ))
    .await;
    assert_mentions(&msg, "port names must be unique");
    let msg = rejected(spec_with(
        json!([{"port": 80, "publish": {"publishedPort": 8080}},
               {"port": 81, "publish": {"publishedPort": 8080}}]),
        json!({}),
    ))
    .await;
    assert_mentions(&msg, "published ports must be unique per protocol");
}

#[tokio::test]
async fn ports_out_of_range_and_unknown_protocols_are_refused() {
    let msg = rejected(spec_with(json!([{"port": 70000}]), json!({}))).await;
    assert_mentions(&msg, "spec.ports[0].port");
    let msg = rejected(spec_with(
        json!([{"port": 80, "protocol": "sctp"}]),
        json!({}),
    ))
    .await;
    assert_mentions(&msg, r#"supported values: "tcp", "udp""#);
    let msg = rejected(spec_with(json!([]), json!({}))).await;
    assert_mentions(&msg, "spec.ports");
}

#[tokio::test]
async fn dnsrr_has_no_vip_affinity_or_ingress() {
    let msg = rejected(spec_with(
        json!([{"port": 80}]),
        json!({"endpointMode": "dnsrr", "vip": "10.0.0.250"}),
    ))
    .await;
    assert_mentions(&msg, "a dnsrr service has no virtual IP");
    let msg = rejected(spec_with(
        json!([{"port": 80}]),
        json!({"endpointMode": "dnsrr", "sessionAffinity": {}}),
    ))
    .await;
    assert_mentions(&msg, "sessionAffinity needs a virtual IP");
    let msg = rejected(spec_with(
        json!([{"port": 80, "publish": {"publishedPort": 80}}]),
        json!({"endpointMode": "dnsrr"}),
    ))
    .await;
    assert_mentions(&msg, "cannot publish in ingress mode");
}

#[tokio::test]
async fn vip_must_be_an_address_and_is_immutable_as_are_network_and_mode() {
    let msg = rejected(spec_with(
        json!([{"port": 80}]),
        json!({"vip": "10.0.0.0/24"}),
    ))
    .await;
    assert_mentions(&msg, "vip must be an IP address");
    let client = connect().await.expect("API server");
    let name = unique("immutable");
    create_raw_namespaced::<ContainerService>(
        &client,
        "default",
        service(
            &name,
            spec_with(json!([{"port": 80}]), json!({"vip": "10.0.0.250"})),
        ),
    )
    .await
    .expect("created");
    for (patch, expected) in [
        (json!({"vip": "10.0.0.251"}), "vip is immutable"),
        (json!({"network": "other"}), "network is immutable"),
        (
            json!({"endpointMode": "dnsrr"}),
            "endpointMode is immutable",
        ),
    ] {
        let msg = patch_spec_raw_namespaced::<ContainerService>(&client, "default", &name, patch)
            .await
            .expect_err("immutable field changed");
        assert_mentions(&msg, expected);
    }
}

#[tokio::test]
async fn affinity_timeout_is_bounded() {
    let msg = rejected(spec_with(
        json!([{"port": 80}]),
        json!({"sessionAffinity": {"timeoutSeconds": 0}}),
    ))
    .await;
    assert_mentions(&msg, "spec.sessionAffinity.timeoutSeconds");
}
