//! Bad input is refused by the API server itself (OpenAPI bounds + CEL), with a message a
//! person understands. Each case creates the object on a real API server and reads the error.

use serde_json::{Value, json};
use weft_api::{AddressPool, ContainerEndpoint, ContainerNetwork, NetworkNode};
use weft_e2e::{
    connect, create_raw, create_raw_namespaced, patch_spec_raw, patch_spec_raw_namespaced,
};

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A name no other test uses, so the cases never collide on the shared API server.
fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

fn network(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork", "metadata": {"name": name}, "spec": spec})
}

/// Create a ContainerNetwork with this spec and return the API server's refusal message.
async fn rejected_network(spec: Value) -> String {
    let client = connect().await.expect("API server");
    match create_raw::<ContainerNetwork>(&client, network(&unique("bad"), spec.clone())).await {
        Ok(_) => panic!("the API server accepted an invalid network: {spec}"),
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
async fn unknown_driver_is_refused_with_the_supported_list() {
    let msg = rejected_network(json!({"driver": "vxlan"})).await;
    assert_mentions(&msg, "spec.driver");
    assert_mentions(
        &msg,
        r#"supported values: "bridge", "overlay", "macvlan", "ipvlan", "host", "none""#,
    );
}

#[tokio::test]
async fn bridge_inbound_is_published_or_routed() {
    let msg = rejected_network(json!({"driver": "bridge", "bridge": {"inbound": "open"}})).await;
    assert_mentions(&msg, "spec.bridge.inbound");
    assert_mentions(&msg, r#"supported values: "published", "routed""#);
    let client = connect().await.expect("API server");
    for inbound in ["published", "routed"] {
        create_raw::<ContainerNetwork>(
            &client,
            network(
                &unique("inbound"),
                json!({"driver": "bridge", "bridge": {"inbound": inbound}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("inbound {inbound} refused: {e}"));
    }
}

#[tokio::test]
async fn driver_block_of_another_driver_is_refused() {
    let msg = rejected_network(json!({"driver": "overlay", "macvlan": {"parent": "eth0"}})).await;
    assert_mentions(&msg, "spec.macvlan is only allowed when driver is macvlan");
}

#[tokio::test]
async fn macvlan_without_parent_is_refused() {
    let msg = rejected_network(json!({"driver": "macvlan"})).await;
    assert_mentions(&msg, "driver macvlan needs spec.macvlan.parent");
}

#[tokio::test]
async fn ipvlan_without_parent_is_refused() {
    let msg = rejected_network(json!({"driver": "ipvlan", "ipvlan": {"mode": "l3"}})).await;
    assert_mentions(&msg, "spec.ipvlan.parent");
    assert_mentions(&msg, "Required value");
}

#[tokio::test]
async fn malformed_subnet_is_refused() {
    let msg =
        rejected_network(json!({"driver": "bridge", "ipam": {"subnets": ["10.0.0.0/33"]}})).await;
    assert_mentions(&msg, "every entry of ipam.subnets must be a CIDR");
}

#[tokio::test]
async fn subnet_with_host_bits_is_refused() {
    let msg =
        rejected_network(json!({"driver": "bridge", "ipam": {"subnets": ["10.0.0.1/24"]}})).await;
    assert_mentions(&msg, "write 10.0.0.0/24, not 10.0.0.1/24");
}

#[tokio::test]
async fn subnet_too_small_for_a_gateway_is_refused() {
    let msg =
        rejected_network(json!({"driver": "bridge", "ipam": {"subnets": ["10.0.0.0/31"]}})).await;
    assert_mentions(&msg, "at most /30 for IPv4");
}

#[tokio::test]
async fn gateway_outside_the_subnet_is_refused() {
    let msg = rejected_network(json!({"driver": "bridge",
        "ipam": {"subnets": ["10.0.0.0/24"], "gateway": "10.0.1.1"}}))
    .await;
    assert_mentions(&msg, "spec.ipam.gateway");
    assert_mentions(
        &msg,
        "ipam.gateway must be a host address inside one of ipam.subnets",
    );
}

#[tokio::test]
async fn gateway_that_is_not_an_address_is_refused() {
    let msg = rejected_network(json!({"driver": "bridge",
        "ipam": {"subnets": ["10.0.0.0/24"], "gateway": "gateway.local"}}))
    .await;
    assert_mentions(&msg, "ipam.gateway must be an IP address");
}

#[tokio::test]
async fn ip_range_outside_the_subnet_is_refused() {
    let msg = rejected_network(json!({"driver": "bridge",
        "ipam": {"subnets": ["10.0.0.0/24"], "ipRange": "10.0.2.0/25"}}))
    .await;
    assert_mentions(&msg, "ipam.ipRange must lie inside one of ipam.subnets");
}

#[tokio::test]
async fn excluded_range_outside_the_subnet_is_refused() {
    let msg = rejected_network(json!({"driver": "bridge",
        "ipam": {"subnets": ["10.0.0.0/24"], "excludedRanges": ["192.168.1.0/29"]}}))
    .await;
    assert_mentions(
        &msg,
        "ipam.excludedRanges must lie inside one of ipam.subnets",
    );
}

#[tokio::test]
async fn subnets_and_pool_together_are_refused() {
    let msg = rejected_network(json!({"driver": "bridge",
        "ipam": {"subnets": ["10.0.0.0/24"], "pool": "default"}}))
    .await;
    assert_mentions(&msg, "set either ipam.subnets or ipam.pool, not both");
}

#[tokio::test]
async fn vlan_above_4094_is_refused() {
    let msg =
        rejected_network(json!({"driver": "macvlan", "macvlan": {"parent": "eth0", "vlan": 4095}}))
            .await;
    assert_mentions(&msg, "spec.macvlan.vlan");
    assert_mentions(&msg, "less than or equal to 4094");
}

#[tokio::test]
async fn vlan_zero_is_refused() {
    let msg =
        rejected_network(json!({"driver": "ipvlan", "ipvlan": {"parent": "eth0", "vlan": 0}}))
            .await;
    assert_mentions(&msg, "spec.ipvlan.vlan");
    assert_mentions(&msg, "greater than or equal to 1");
}

#[tokio::test]
async fn parent_with_vlan_over_the_interface_name_limit_is_refused() {
    let msg = rejected_network(json!({"driver": "macvlan",
        "macvlan": {"parent": "enp129s0f1np1", "vlan": 100}}))
    .await;
    assert_mentions(&msg, "15-character limit of Linux interface names");
}

#[tokio::test]
async fn mtu_below_576_is_refused() {
    let msg = rejected_network(json!({"driver": "bridge", "mtu": 500})).await;
    assert_mentions(&msg, "spec.mtu");
    assert_mentions(&msg, "greater than or equal to 576");
}

#[tokio::test]
async fn mtu_above_9216_is_refused() {
    let msg = rejected_network(json!({"driver": "bridge", "mtu": 9500})).await;
    assert_mentions(&msg, "less than or equal to 9216");
}

#[tokio::test]
async fn ipv6_network_with_mtu_below_1280_is_refused() {
    let msg = rejected_network(json!({"driver": "bridge", "mtu": 1000,
        "ipam": {"subnets": ["fd00:10::/64"]}}))
    .await;
    assert_mentions(
        &msg,
        "mtu must be at least 1280 on a network with an IPv6 subnet",
    );
}

#[tokio::test]
async fn host_network_with_ipam_is_refused() {
    let msg =
        rejected_network(json!({"driver": "host", "ipam": {"subnets": ["10.0.0.0/24"]}})).await;
    assert_mentions(&msg, "drivers host and none have no addresses of their own");
}

#[tokio::test]
async fn vni_out_of_range_is_refused() {
    let msg = rejected_network(json!({"driver": "overlay", "overlay": {"vni": 16777216}})).await;
    assert_mentions(&msg, "spec.overlay.vni");
    assert_mentions(&msg, "less than or equal to 16777215");
}

// --- changes to an existing network (CEL transition rules) ---

async fn create_network(spec: Value) -> (kube::Client, String) {
    let client = connect().await.expect("API server");
    let name = unique("upd");
    create_raw::<ContainerNetwork>(&client, network(&name, spec))
        .await
        .expect("valid network is accepted");
    (client, name)
}

#[tokio::test]
async fn driver_is_immutable() {
    let (client, name) = create_network(json!({"driver": "bridge"})).await;
    let msg = patch_spec_raw::<ContainerNetwork>(&client, &name, json!({"driver": "none"}))
        .await
        .expect_err("driver change must be refused");
    assert_mentions(&msg, "driver is immutable");
}

#[tokio::test]
async fn subnets_may_grow_but_never_change_or_shrink() {
    let (client, name) =
        create_network(json!({"driver": "bridge", "ipam": {"subnets": ["10.90.0.0/24"]}})).await;
    patch_spec_raw::<ContainerNetwork>(
        &client,
        &name,
        json!({"ipam": {"subnets": ["10.90.0.0/24", "10.90.1.0/24"]}}),
    )
    .await
    .expect("appending a subnet is allowed");
    let msg = patch_spec_raw::<ContainerNetwork>(
        &client,
        &name,
        json!({"ipam": {"subnets": ["10.90.0.0/24"]}}),
    )
    .await
    .expect_err("removing a subnet must be refused");
    assert_mentions(&msg, "ipam.subnets is append-only");
    let msg = patch_spec_raw::<ContainerNetwork>(
        &client,
        &name,
        json!({"ipam": {"subnets": ["10.90.0.0/23", "10.90.1.0/24"]}}),
    )
    .await
    .expect_err("changing a subnet must be refused");
    assert_mentions(&msg, "ipam.subnets is append-only");
}

#[tokio::test]
async fn pool_is_immutable() {
    let (client, name) = create_network(json!({"driver": "bridge", "ipam": {"pool": "a"}})).await;
    let msg = patch_spec_raw::<ContainerNetwork>(&client, &name, json!({"ipam": {"pool": "b"}}))
        .await
        .expect_err("pool change must be refused");
    assert_mentions(&msg, "ipam.pool is immutable");
}

#[tokio::test]
async fn vni_is_immutable() {
    let (client, name) =
        create_network(json!({"driver": "overlay", "overlay": {"vni": 4242}})).await;
    let msg = patch_spec_raw::<ContainerNetwork>(&client, &name, json!({"overlay": {"vni": 4243}}))
        .await
        .expect_err("vni change must be refused");
    assert_mentions(&msg, "overlay.vni is immutable");
}

// --- good input is accepted, with defaults filled in by the API server ---

#[tokio::test]
async fn every_driver_accepts_a_minimal_spec_and_gets_defaults() {
    let client = connect().await.expect("API server");
    let cases = [
        json!({"driver": "bridge", "bridge": {}}),
        json!({"driver": "overlay", "overlay": {}}),
        json!({"driver": "macvlan", "macvlan": {"parent": "eth0", "vlan": 10, "hostShim": true}}),
        json!({"driver": "ipvlan", "ipvlan": {"parent": "eth0", "mode": "l3"}}),
        json!({"driver": "host"}),
        json!({"driver": "none"}),
        json!({"driver": "bridge", "mtu": 1400, "internal": true,
               "ipam": {"subnets": ["10.0.0.0/24", "fd00:1::/64"], "gateway": "10.0.0.254",
                        "ipRange": "10.0.0.128/25", "excludedRanges": ["10.0.0.200/29"]}}),
    ];
    for spec in cases {
        let created = create_raw::<ContainerNetwork>(&client, network(&unique("ok"), spec.clone()))
            .await
            .unwrap_or_else(|e| panic!("valid spec {spec} refused: {e}"));
        let stored = &created.data["spec"];
        match spec["driver"].as_str() {
            Some("bridge") if spec.get("bridge").is_some() => {
                assert_eq!(stored["bridge"]["masquerade"], json!(true));
                assert_eq!(stored["bridge"]["interContainerTraffic"], json!(true));
            }
            Some("overlay") => assert_eq!(stored["overlay"]["udpPort"], json!(4789)),
            Some("macvlan") => assert_eq!(stored["macvlan"]["mode"], json!("bridge")),
            _ => {}
        }
    }
}

// --- AddressPool and NetworkNode ---

fn pool(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "AddressPool", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn pool_prefix_length_shorter_than_its_cidr_is_refused() {
    let client = connect().await.expect("API server");
    let msg = create_raw::<AddressPool>(
        &client,
        pool(
            &unique("pool"),
            json!({"cidrs": ["10.10.0.0/16"], "prefixLength": 12}),
        ),
    )
    .await
    .expect_err("must be refused");
    assert_mentions(
        &msg,
        "prefixLength must be at least as long as the prefix of every entry of cidrs",
    );
}

#[tokio::test]
async fn pool_with_malformed_cidr_is_refused() {
    let client = connect().await.expect("API server");
    let msg = create_raw::<AddressPool>(
        &client,
        pool(
            &unique("pool"),
            json!({"cidrs": ["10.10.0.0"], "prefixLength": 24}),
        ),
    )
    .await
    .expect_err("must be refused");
    assert_mentions(&msg, "every entry of cidrs must be a CIDR");
}

#[tokio::test]
async fn pool_prefix_length_too_long_for_ipv4_is_refused() {
    let client = connect().await.expect("API server");
    let msg = create_raw::<AddressPool>(
        &client,
        pool(
            &unique("pool"),
            json!({"cidrs": ["10.10.0.0/16"], "prefixLength": 31}),
        ),
    )
    .await
    .expect_err("must be refused");
    assert_mentions(&msg, "at most 30 for IPv4 pools");
}

#[tokio::test]
async fn network_node_with_bad_underlay_address_is_refused() {
    let client = connect().await.expect("API server");
    let node = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "NetworkNode", "metadata": {"name": unique("node")},
                      "spec": {"underlayAddress": "node-1"}});
    let msg = create_raw::<NetworkNode>(&client, node)
        .await
        .expect_err("must be refused");
    assert_mentions(&msg, "underlayAddress must be an IP address");
}

#[tokio::test]
async fn examples_are_accepted_by_the_api_server() {
    let client = connect().await.expect("API server (CRDs installed)");
    // A dry-run apply is checked against what exists: an object of the same name left by
    // another test (a ContainerService `web` on another network, say) would be refused as a
    // change of an immutable field. The examples are judged on an empty cluster.
    weft_e2e::reset(&client).await.expect("reset");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let out = tokio::process::Command::new("kubectl")
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&dir)
        .output()
        .await
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "examples refused: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let files = std::fs::read_dir(&dir).expect("examples/").filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
    });
    assert_eq!(
        stdout.lines().count(),
        files.count(),
        "one object per example file: {stdout}"
    );
}

// --- ContainerEndpoint ---

const NS: &str = "validation";

fn endpoint(name: &str, extra: Value) -> Value {
    let mut spec = json!({"network": "web", "node": "node-1", "sandbox": "/var/run/netns/web-1"});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint", "metadata": {"name": name}, "spec": spec})
}

async fn rejected_endpoint(extra: Value) -> String {
    let client = connect().await.expect("API server");
    match create_raw_namespaced::<ContainerEndpoint>(
        &client,
        NS,
        endpoint(&unique("bad-ep"), extra.clone()),
    )
    .await
    {
        Ok(_) => panic!("the API server accepted an invalid endpoint: {extra}"),
        Err(msg) => msg,
    }
}

#[tokio::test]
async fn endpoint_with_port_out_of_range_is_refused() {
    let msg =
        rejected_endpoint(json!({"publish": [{"hostPort": 70000, "containerPort": 80}]})).await;
    assert_mentions(&msg, "spec.publish[0].hostPort");
    assert_mentions(&msg, "less than or equal to 65535");
    let msg = rejected_endpoint(json!({"publish": [{"hostPort": 8080, "containerPort": 0}]})).await;
    assert_mentions(&msg, "greater than or equal to 1");
}

#[tokio::test]
async fn endpoint_with_unknown_protocol_is_refused() {
    let msg = rejected_endpoint(
        json!({"publish": [{"hostPort": 53, "containerPort": 53, "protocol": "icmp"}]}),
    )
    .await;
    assert_mentions(&msg, r#"supported values: "tcp", "udp", "sctp""#);
}

#[tokio::test]
async fn endpoint_port_range_must_be_ordered_and_fit() {
    let msg = rejected_endpoint(
        json!({"publish": [{"hostPort": 8010, "hostPortEnd": 8000, "containerPort": 80}]}),
    )
    .await;
    assert_mentions(&msg, "hostPortEnd must not be below hostPort");
    let msg = rejected_endpoint(
        json!({"publish": [{"hostPort": 8000, "hostPortEnd": 8010, "containerPort": 65530}]}),
    )
    .await;
    assert_mentions(&msg, "the container port range would end above 65535");
    // A range needs its first host port (a chosen port is a single one).
    let msg =
        rejected_endpoint(json!({"publish": [{"hostPortEnd": 8010, "containerPort": 80}]})).await;
    assert_mentions(
        &msg,
        "hostPortEnd must not be below hostPort (and needs hostPort)",
    );
}

/// `docker run -p 80`: no hostPort is fine (the node's agent chooses one).
#[tokio::test]
async fn endpoint_without_host_port_is_accepted() {
    let client = connect().await.expect("API server");
    let name = unique("ep-any-port");
    create_raw_namespaced::<ContainerEndpoint>(
        &client,
        NS,
        endpoint(&name, json!({"publish": [{"containerPort": 80}]})),
    )
    .await
    .expect("accepted");
}

#[tokio::test]
async fn endpoint_with_malformed_addresses_is_refused() {
    let msg = rejected_endpoint(json!({"address": "10.0.0.300"})).await;
    assert_mentions(&msg, "address must be an IP address");
    let msg = rejected_endpoint(
        json!({"publish": [{"hostPort": 80, "containerPort": 80, "hostIP": "localhost"}]}),
    )
    .await;
    assert_mentions(&msg, "hostIP must be an IP address");
}

#[tokio::test]
async fn endpoint_with_multicast_or_malformed_mac_is_refused() {
    let msg = rejected_endpoint(json!({"mac": "01:00:5e:00:00:01"})).await;
    assert_mentions(&msg, "spec.mac");
    let msg = rejected_endpoint(json!({"mac": "02:42:ac:11:00"})).await;
    assert_mentions(&msg, "spec.mac");
}

#[tokio::test]
async fn endpoint_aliases_must_be_dns_names() {
    for bad in [
        "has space",
        "-leading",
        "trailing-",
        "a..b",
        "under.",
        "x/y",
    ] {
        let msg = rejected_endpoint(json!({"aliases": [bad]})).await;
        assert_mentions(&msg, "each alias must be a DNS name");
    }
    let msg = rejected_endpoint(json!({"aliases": [""]})).await;
    assert_mentions(&msg, "spec.aliases[0]");
    let client = connect().await.expect("API server");
    create_raw_namespaced::<ContainerEndpoint>(
        &client,
        NS,
        endpoint(
            &unique("aliased"),
            json!({"aliases": ["web", "db.v2", "_srv", "a-1.B_2"]}),
        ),
    )
    .await
    .expect("DNS names are accepted");
}

#[tokio::test]
async fn endpoint_sandbox_must_be_a_path() {
    let msg = rejected_endpoint(json!({"sandbox": "web-1"})).await;
    assert_mentions(&msg, "spec.sandbox");
}

#[tokio::test]
async fn endpoint_identity_is_immutable_and_defaults_are_filled() {
    let client = connect().await.expect("API server");
    let name = unique("ep");
    let created = create_raw_namespaced::<ContainerEndpoint>(
        &client,
        NS,
        endpoint(&name, json!({"address": "10.0.0.254", "mac": "02:42:0a:00:00:fe", "publish": [{"hostPort": 5000, "containerPort": 80}]})),
    )
    .await
    .expect("valid endpoint is accepted");
    assert_eq!(created.data["spec"]["interfaceName"], json!("eth0"));
    assert_eq!(created.data["spec"]["publish"][0]["protocol"], json!("tcp"));
    for (change, message) in [
        (json!({"network": "other"}), "network is immutable"),
        (json!({"node": "node-2"}), "node is immutable"),
        (json!({"address": "10.0.0.253"}), "address is immutable"),
    ] {
        let msg =
            patch_spec_raw_namespaced::<ContainerEndpoint>(&client, NS, &name, change.clone())
                .await
                .expect_err("identity change must be refused");
        assert_mentions(&msg, message);
    }
    patch_spec_raw_namespaced::<ContainerEndpoint>(
        &client,
        NS,
        &name,
        json!({"publish": [{"hostPort": 5001, "containerPort": 80}]}),
    )
    .await
    .expect("published ports may change");
}

// --- encrypted overlays ---

#[tokio::test]
async fn encryption_is_only_for_overlays_and_is_immutable() {
    let msg = rejected_network(json!({"driver": "bridge", "overlay": {"encrypted": true}})).await;
    assert_mentions(&msg, "spec.overlay is only allowed when driver is overlay");

    let (client, name) =
        create_network(json!({"driver": "overlay", "overlay": {"encrypted": true}})).await;
    let msg = patch_spec_raw::<ContainerNetwork>(
        &client,
        &name,
        json!({"overlay": {"encrypted": false}}),
    )
    .await
    .expect_err("turning encryption off must be refused");
    assert_mentions(&msg, "overlay.encrypted is immutable");

    // Unset and false are the same: a plain overlay may spell it out.
    let (client, name) = create_network(json!({"driver": "overlay"})).await;
    patch_spec_raw::<ContainerNetwork>(&client, &name, json!({"overlay": {"encrypted": false}}))
        .await
        .expect("false on a plain overlay is no change");
    let msg =
        patch_spec_raw::<ContainerNetwork>(&client, &name, json!({"overlay": {"encrypted": true}}))
            .await
            .expect_err("turning encryption on must be refused");
    assert_mentions(&msg, "overlay.encrypted is immutable");
}

#[tokio::test]
async fn a_node_publishes_only_a_well_formed_wireguard_identity() {
    let client = connect().await.expect("API server");
    let node = |wireguard: Value| {
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "NetworkNode", "metadata": {"name": unique("node")},
               "spec": {"underlayAddress": "192.0.2.1", "wireguard": wireguard}})
    };
    let good = json!({"publicKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "port": 51871,
                      "address": "fd77:6566:7400::1"});
    create_raw::<NetworkNode>(&client, node(good.clone()))
        .await
        .expect("a well-formed identity is accepted");
    let mut v4 = good.clone();
    v4["address"] = json!("10.0.0.1");
    let msg = create_raw::<NetworkNode>(&client, node(v4))
        .await
        .expect_err("an IPv4 tunnel address must be refused");
    assert_mentions(&msg, "wireguard.address must be an IPv6 address");
    let mut short = good.clone();
    short["publicKey"] = json!("abc");
    let msg = create_raw::<NetworkNode>(&client, node(short))
        .await
        .expect_err("a short key must be refused");
    assert_mentions(&msg, "spec.wireguard.publicKey");
}

#[tokio::test]
async fn dns_upstreams_are_addresses_with_an_optional_port_and_not_on_internal_networks() {
    let client = connect().await.expect("API server");
    create_raw::<ContainerNetwork>(
        &client,
        network(
            &unique("upstreams"),
            json!({"driver": "bridge", "dns": {"upstreams":
                ["192.0.2.53", "192.0.2.54:5353", "[2001:db8::53]:5353"]}}),
        ),
    )
    .await
    .expect("well-formed upstreams are accepted");
    create_raw::<ContainerNetwork>(
        &client,
        network(
            &unique("upstreams6"),
            json!({"driver": "bridge", "dns": {"upstreams": ["2001:db8::53"]}}),
        ),
    )
    .await
    .expect("a bare IPv6 address is accepted");
    for bad in [
        "dns.example",
        "192.0.2.53:0",
        "192.0.2.53:70000",
        "192.0.2.300",
        "2001:db8::53:5353x",
        "[2001:db8::53]",
        "[192.0.2.53]:53",
    ] {
        let msg = rejected_network(json!({"driver": "bridge", "dns": {"upstreams": [bad]}})).await;
        assert_mentions(&msg, "each upstream must be an IP address");
    }
    let msg = rejected_network(json!({"driver": "bridge", "dns": {"upstreams": []}})).await;
    assert_mentions(&msg, "spec.dns.upstreams");
    let msg = rejected_network(
        json!({"driver": "bridge", "internal": true, "dns": {"upstreams": ["192.0.2.53"]}}),
    )
    .await;
    assert_mentions(&msg, "an internal network never forwards names out");
}
