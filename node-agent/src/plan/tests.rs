//! The whole node: several networks together, the firewall across them, sysctls.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use weft_api::{Driver as ApiDriver, RealizationState};

use super::*;
use crate::drivers::testutil::*;
use crate::drivers::{NetworkInput, NodeFacts, Peer, Problem};
use crate::model::{FdbEntry, Mac, NftFamily};
use crate::names;
use crate::plan::firewall::{CHAIN_FORWARD, CHAIN_POSTROUTING, CHAIN_PREROUTING, to_nft_script};

fn bridge(name: &str, subnet: &str) -> NetworkInput {
    let mut n = network(name, ApiDriver::Bridge);
    allocate(&mut n, &[subnet], None);
    n
}

fn overlay(name: &str, subnet: &str, vni: i32) -> NetworkInput {
    let mut n = network(name, ApiDriver::Overlay);
    allocate(&mut n, &[subnet], None);
    n.status.vni = Some(vni);
    let base: IpNet = cidr(subnet);
    let blocks: Vec<IpNet> = base
        .subnets(base.prefix_len() + 4)
        .expect("test blocks")
        .take(2)
        .collect();
    n.blocks.insert("n1".into(), blocks[0]);
    n.blocks.insert("n2".into(), blocks[1]);
    n.peers = vec![
        Peer {
            node: "n1".into(),
            underlay_address: ip("192.0.2.1"),
            wireguard: None,
        },
        Peer {
            node: "n2".into(),
            underlay_address: ip("192.0.2.2"),
            wireguard: None,
        },
    ];
    n
}

fn macvlan(name: &str, parent: &str, vlan: Option<i32>) -> NetworkInput {
    let mut n = network(name, ApiDriver::Macvlan);
    n.spec.macvlan = Some(weft_api::MacvlanOptions {
        parent: parent.into(),
        mode: weft_api::MacvlanMode::Bridge,
        vlan,
        host_shim: false,
    });
    allocate(&mut n, &["192.168.50.0/24"], Some("192.168.50.1"));
    n
}

fn me() -> NodeFacts {
    node("n1", "192.0.2.1")
}

/// A node with a bit of everything on it.
fn mixed() -> Vec<NetworkInput> {
    let mut quiet = bridge("quiet", "10.1.2.0/24");
    quiet.spec.bridge = Some(weft_api::BridgeOptions {
        inter_container_traffic: false,
        ..Default::default()
    });
    let mut vault = bridge("vault", "10.1.3.0/24");
    vault.spec.internal = true;
    let mut dual = bridge("dual", "10.1.4.0/24");
    allocate(&mut dual, &["10.1.4.0/24", "fd00:4::/64"], Some("10.1.4.1"));
    vec![
        bridge("web", "10.1.1.0/24"),
        quiet,
        vault,
        dual,
        overlay("front", "10.40.0.0/24", 100),
        macvlan("lan", "eth1", Some(10)),
        network("hostnet", ApiDriver::Host),
        network("nonet", ApiDriver::None),
    ]
}

fn outcome_reasons(o: &BTreeMap<String, Result<(), Problem>>) -> BTreeMap<String, Option<Reason>> {
    o.iter()
        .map(|(k, v)| (k.clone(), v.as_ref().err().map(|p| p.reason)))
        .collect()
}

fn rules(state: &KernelState, family: NftFamily, chain: &str) -> Vec<String> {
    state
        .nft
        .get(&family)
        .and_then(|t| t.chains.get(chain))
        .map(|c| c.rules.iter().map(|r| r.body.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn an_empty_node_has_no_state_at_all() {
    let (state, outcomes) = plan_node(&[], &me());
    assert_eq!(state, KernelState::default());
    assert!(outcomes.is_empty());
    // Networks that create nothing do not create tables either.
    let (state, outcomes) = plan_node(
        &[network("h", ApiDriver::Host), macvlan("lan", "eth1", None)],
        &me(),
    );
    assert_eq!(state, KernelState::default());
    assert!(outcomes.values().all(Result::is_ok));
}

#[test]
fn every_network_of_a_mixed_node() {
    let (state, outcomes) = plan_node(&mixed(), &me());
    assert!(outcomes.values().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(outcomes.len(), 8);

    let mut want_links: Vec<String> = ["web", "quiet", "vault", "dual", "front"]
        .iter()
        .map(|n| names::bridge(n))
        .chain([names::vxlan("front"), "eth1.10".to_string()])
        .collect();
    want_links.sort();
    assert_eq!(state.links.keys().cloned().collect::<Vec<_>>(), want_links);
    assert_eq!(state.addresses.len(), 6);
    assert_eq!(
        state.fdb.iter().cloned().collect::<Vec<_>>(),
        vec![FdbEntry {
            link: names::vxlan("front"),
            mac: Mac([0; 6]),
            dst: ip("192.0.2.2"),
        }]
    );
    // Forwarding, and route_localnet on every routed IPv4 bridge but the internal one.
    let mut want = BTreeMap::from([
        ("net/ipv4/ip_forward".to_string(), "1".to_string()),
        ("net/ipv6/conf/all/forwarding".to_string(), "1".to_string()),
    ]);
    for n in ["web", "quiet", "dual", "front"] {
        want.insert(
            format!("net/ipv4/conf/{}/route_localnet", names::bridge(n)),
            "1".to_string(),
        );
    }
    assert_eq!(state.sysctls, want);

    // Firewall: both families, every feature.
    let web = names::bridge("web");
    let masq = rules(&state, NftFamily::Inet, CHAIN_POSTROUTING);
    assert!(masq.contains(&format!(
        "ip saddr 10.1.1.0/24 oifname != \"{web}\" masquerade"
    )));
    assert!(masq.contains(&format!(
        "ip6 saddr fd00:4::/64 oifname != \"{}\" masquerade",
        names::bridge("dual")
    )));
    assert!(
        !masq.iter().any(|r| r.contains("10.1.3.0/24")),
        "internal masqueraded: {masq:?}"
    );
    let forward = rules(&state, NftFamily::Inet, CHAIN_FORWARD);
    let vault = names::bridge("vault");
    assert!(forward.contains(&format!("iifname \"{vault}\" oifname != \"{vault}\" drop")));
    assert!(forward.contains(&format!("iifname != \"{vault}\" oifname \"{vault}\" drop")));
    // web is cut off from every other Weft bridge, both ways, by two prefix rules.
    assert!(
        forward.contains(&format!(
            "iifname \"{web}\" oifname != \"{web}\" oifname \"wfb-*\" drop"
        )),
        "{forward:?}"
    );
    assert!(
        forward.contains(&format!(
            "oifname \"{web}\" iifname != \"{web}\" iifname \"wfb-*\" drop"
        )),
        "{forward:?}"
    );
    assert_eq!(
        rules(&state, NftFamily::Bridge, CHAIN_FORWARD),
        vec!["ip daddr 10.1.2.0/24 drop".to_string()]
    );
    assert_eq!(
        rules(&state, NftFamily::Bridge, CHAIN_PREROUTING),
        vec![format!(
            "iifname \"{}\" ether saddr {} drop",
            names::vxlan("front"),
            drivers::overlay::anycast_gateway_mac("front")
        )]
    );
}

#[test]
fn plan_node_is_deterministic_and_independent_of_input_order() {
    let nets = mixed();
    let first = plan_node(&nets, &me());
    assert_eq!(plan_node(&nets, &me()), first);
    let mut reversed = nets.clone();
    reversed.reverse();
    assert_eq!(plan_node(&reversed, &me()), first);
    // A few rotations too.
    for k in 1..nets.len() {
        let mut rotated = nets.clone();
        rotated.rotate_left(k);
        assert_eq!(plan_node(&rotated, &me()), first, "rotation {k}");
    }
}

#[test]
fn a_network_with_a_problem_adds_nothing_and_changes_nothing_else() {
    let good = mixed();
    let (without, _) = plan_node(&good, &me());

    let mut with_bad = good.clone();
    let mut no_parent = macvlan("zz-missing", "eth7", None);
    no_parent.spec.macvlan.as_mut().expect("macvlan").host_shim = true;
    let mut no_block = overlay("aa-noblock", "10.50.0.0/24", 200);
    no_block.blocks.remove("n1");
    let unallocated = network("mm-unallocated", ApiDriver::Bridge);
    let mut no_vlan_support = macvlan("vv-vlan", "eth1", Some(30));
    no_vlan_support.spec.mtu = Some(-5);
    with_bad.extend([no_parent, no_block, unallocated, no_vlan_support]);

    let (with, outcomes) = plan_node(&with_bad, &me());
    assert_eq!(with, without);
    let reasons = outcome_reasons(&outcomes);
    assert_eq!(reasons["zz-missing"], Some(Reason::ParentMissing));
    assert_eq!(reasons["aa-noblock"], Some(Reason::NoBlock));
    assert_eq!(reasons["mm-unallocated"], Some(Reason::NotAllocated));
    assert_eq!(reasons["vv-vlan"], Some(Reason::InvalidSpec));
    assert_eq!(reasons.values().filter(|r| r.is_none()).count(), 8);
    assert_eq!(
        outcomes["zz-missing"].as_ref().map_err(Problem::state),
        Err(RealizationState::Pending)
    );
    assert_eq!(
        outcomes["vv-vlan"].as_ref().map_err(Problem::state),
        Err(RealizationState::Failed)
    );
}

#[test]
fn unsupported_features_fail_only_their_networks() {
    let mut facts = me();
    facts.capabilities.vxlan = false;
    facts.capabilities.vlan = false;
    let (state, outcomes) = plan_node(&mixed(), &facts);
    let reasons = outcome_reasons(&outcomes);
    assert_eq!(reasons["front"], Some(Reason::Unsupported));
    assert_eq!(reasons["lan"], Some(Reason::Unsupported));
    assert_eq!(reasons.values().filter(|r| r.is_none()).count(), 6);
    assert!(!state.links.contains_key(&names::bridge("front")));
    assert!(!state.links.contains_key("eth1.10"));
    // The failed overlay is not part of anybody's isolation set.
    assert!(
        !rules(&state, NftFamily::Inet, CHAIN_FORWARD)
            .iter()
            .any(|r| r.contains(&names::bridge("front")))
    );
}

#[test]
fn without_nftables_only_networks_that_need_it_fail() {
    let mut facts = me();
    facts.capabilities.nftables = false;
    let mut plain = bridge("plain", "10.9.0.0/24");
    plain.spec.bridge = Some(weft_api::BridgeOptions {
        masquerade: false,
        host_binding: None,
        isolation: false,
        inter_container_traffic: true,
        inbound: weft_api::Inbound::Routed,
    });
    let (state, outcomes) = plan_node(
        &[
            bridge("web", "10.1.1.0/24"),
            plain,
            macvlan("lan", "eth1", None),
        ],
        &facts,
    );
    let reasons = outcome_reasons(&outcomes);
    assert_eq!(reasons["web"], Some(Reason::Unsupported));
    assert_eq!(reasons["plain"], None);
    assert_eq!(reasons["lan"], None);
    assert!(state.nft.is_empty());
    assert!(state.links.contains_key(&names::bridge("plain")));
}

#[test]
fn two_networks_wanting_one_vlan_sub_interface_conflict() {
    let a = macvlan("a-lan", "eth1", Some(10));
    let b = macvlan("b-lan", "eth1", Some(10));
    let (state, outcomes) = plan_node(&[b.clone(), a.clone()], &me());
    assert_eq!(outcomes["a-lan"], Ok(()));
    let problem = outcomes["b-lan"].clone().expect_err("conflict");
    assert_eq!(problem.reason, Reason::Conflict);
    assert!(
        problem.message.contains("eth1.10") && problem.message.contains("a-lan"),
        "{problem}"
    );
    assert_eq!(state.links["eth1.10"].alias, "weft:a-lan");
    assert_eq!(plan_node(&[a, b], &me()).0, state);
}

#[test]
fn a_foreign_interface_with_weft_name_is_never_taken_over() {
    let mut facts = me();
    facts.interfaces.insert(names::bridge("web"));
    let (state, outcomes) = plan_node(&[bridge("web", "10.1.1.0/24")], &facts);
    assert_eq!(
        outcomes["web"].as_ref().map_err(|p| p.reason),
        Err(Reason::NameInUse)
    );
    assert_eq!(state, KernelState::default());
}

#[test]
fn overlapping_addresses_conflict() {
    let (state, outcomes) = plan_node(
        &[bridge("a", "10.1.1.0/24"), bridge("b", "10.1.1.0/25")],
        &me(),
    );
    assert_eq!(outcomes["a"], Ok(()));
    assert_eq!(
        outcomes["b"].as_ref().map_err(|p| p.reason),
        Err(Reason::Conflict)
    );
    assert_eq!(state.links.len(), 1);
}

#[test]
fn duplicate_names_are_planned_once() {
    let a = bridge("web", "10.1.1.0/24");
    let mut b = bridge("web", "10.1.9.0/24");
    b.uid = "uid-zzz".into();
    let (state, outcomes) = plan_node(&[b.clone(), a.clone()], &me());
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes["web"], Ok(()));
    assert_eq!(
        addresses(&state),
        vec![(names::bridge("web"), cidr("10.1.1.1/24"))]
    );
    assert_eq!(plan_node(&[a, b], &me()).0, state);
}

#[test]
fn forwarding_sysctls_follow_routed_non_internal_networks() {
    let (state, _) = plan_node(&[bridge("v4", "10.1.1.0/24")], &me());
    let localnet = format!("net/ipv4/conf/{}/route_localnet", names::bridge("v4"));
    assert_eq!(
        state.sysctls,
        BTreeMap::from([
            ("net/ipv4/ip_forward".to_string(), "1".to_string()),
            (localnet, "1".to_string())
        ])
    );
    let (state, _) = plan_node(&[bridge("v6", "fd00:1::/64")], &me());
    assert_eq!(
        state.sysctls,
        BTreeMap::from([("net/ipv6/conf/all/forwarding".to_string(), "1".to_string())])
    );
    let mut internal = bridge("vault", "10.1.3.0/24");
    internal.spec.internal = true;
    let (state, _) = plan_node(&[internal.clone()], &me());
    assert!(state.sysctls.is_empty());
    let (state, _) = plan_node(&[macvlan("lan", "eth1", Some(10))], &me());
    assert!(state.sysctls.is_empty());
    let (state, _) = plan_node(&[internal, overlay("front", "10.40.0.0/24", 7)], &me());
    assert_eq!(state.sysctls.len(), 2);
    assert!(state.sysctls.contains_key("net/ipv4/ip_forward"));
}

/// route_localnet comes only with the guard that makes it safe, never without nftables.
#[test]
fn localhost_publishing_comes_with_its_guard() {
    let (state, _) = plan_node(&[bridge("v4", "10.1.1.0/24")], &me());
    let localnet = format!("net/ipv4/conf/{}/route_localnet", names::bridge("v4"));
    assert_eq!(state.sysctls.get(&localnet).map(String::as_str), Some("1"));
    assert_eq!(
        rules(&state, NftFamily::Inet, firewall::CHAIN_LOCALHOST_GUARD),
        vec![
            r#"iifname != "lo" ip daddr 127.0.0.0/8 drop"#,
            r#"iifname != "lo" ip saddr 127.0.0.0/8 drop"#,
        ]
    );
    assert_eq!(
        rules(
            &state,
            NftFamily::Inet,
            firewall::CHAIN_LOCALHOST_POSTROUTING
        ),
        vec![r#"ip saddr 127.0.0.0/8 oifname "wfb-*" masquerade"#]
    );

    let mut bare = bridge("v4", "10.1.1.0/24");
    bare.spec.bridge = Some(weft_api::BridgeOptions {
        masquerade: false,
        host_binding: None,
        isolation: false,
        inter_container_traffic: true,
        inbound: weft_api::Inbound::Routed,
    });
    let mut no_nft = me();
    no_nft.capabilities.nftables = false;
    let (state, outcomes) = plan_node(&[bare], &no_nft);
    assert!(outcomes.values().all(Result::is_ok));
    assert!(!state.sysctls.contains_key(&localnet));
    assert!(state.nft.is_empty());
}

#[test]
fn peers_joining_and_leaving_change_only_fdb_on_the_node() {
    let nets = mixed();
    let (before, _) = plan_node(&nets, &me());
    let mut joined = nets.clone();
    for n in &mut joined {
        if n.name == "front" {
            n.blocks.insert("n3".into(), cidr("10.40.0.32/28"));
            n.peers.push(Peer {
                node: "n3".into(),
                underlay_address: ip("192.0.2.3"),
                wireguard: None,
            });
        }
    }
    let (after, _) = plan_node(&joined, &me());
    assert_eq!(after.fdb.len(), 2);
    assert_eq!(
        KernelState {
            fdb: Default::default(),
            ..after
        },
        KernelState {
            fdb: Default::default(),
            ..before
        }
    );
}

#[test]
fn rule_ids_are_stable_when_unrelated_networks_change() {
    let nets = mixed();
    let (before, _) = plan_node(&nets, &me());
    let mut changed = nets.clone();
    for n in &mut changed {
        if n.name == "front" {
            n.peers.pop();
        }
    }
    let (after, _) = plan_node(&changed, &me());
    assert_eq!(after.nft, before.nft);
}

/// Render every chain to nft text and let nft 1.0.6 check it, in a throwaway network
/// namespace so nothing touches the host.
#[test]
fn rendered_rules_pass_nft_check() {
    // With an encrypted overlay too, for its guard of the tunnel prefix.
    let mut networks = mixed();
    let mut secret = overlay("secret", "10.41.0.0/24", 101);
    secret.spec.overlay = Some(weft_api::OverlayOptions {
        encrypted: true,
        ..Default::default()
    });
    networks.push(secret);
    let (state, outcomes) = plan_node(&networks, &me());
    assert!(outcomes.values().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(state.nft.len(), 2, "both families");
    assert_eq!(
        rules(&state, NftFamily::Inet, "output"),
        vec![r#"ip6 daddr fd77:6566:7400::/64 oifname != "weft-wg*" drop"#]
    );
    let (plain, _) = plan_node(&mixed(), &me());
    assert!(rules(&plain, NftFamily::Inet, "output").is_empty());
    let script = to_nft_script(&state.nft);

    let nft_present = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !nft_present {
        // Straight to the process's stderr: visible even when the test harness captures.
        let _ = writeln!(std::io::stderr(), "SKIP: nft not installed");
        return;
    }
    let netns_ok = Command::new("unshare")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !netns_ok {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: cannot create a network namespace (unshare -n) to check nft rules"
        );
        return;
    }
    let mut child = Command::new("unshare")
        .args(["-n", "nft", "--check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare -n nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let output = child.wait_with_output().expect("nft ran");
    assert!(
        output.status.success(),
        "nft --check refused:\n{}\n--- script ---\n{script}",
        String::from_utf8_lossy(&output.stderr)
    );
}
