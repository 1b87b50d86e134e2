//! A [`Ruleset`] as nft script text (pure): the whole table, or the difference between two
//! rulesets, which touches only the map elements, chains and sets that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::services::plan::{MASQUERADE_MARK, NodePort, Ruleset, VipPort, proto};

/// The table's name (family `ip`): its own table, so the services never rewrite `inet weft`.
pub const TABLE: &str = "weft-svc";

/// Before `dstnat` (-100), so a service port is taken before any other DNAT.
const NAT_PRIORITY: i32 = -110;

/// The chain postrouting sends balanced connections to (see [`masquerade_rules`]).
const MASQUERADE_CHAIN: &str = "svc-masquerade";

/// The table's maps and sets, as declared; their elements come from [`element_diffs`].
const DECLARATIONS: &str =
    "  map services { type ipv4_addr . inet_proto . inet_service : verdict; }
  map backends { typeof ip daddr . numgen random mod 1 : ip daddr; }
  map targets { type ipv4_addr . inet_proto . inet_service : inet_service; }
  map ingress { type inet_proto . inet_service : verdict; }
  map ingress-backends { typeof meta l4proto . th dport . numgen random mod 1 : ip daddr; }
  map ingress-targets { type inet_proto . inet_service : inet_service; }
  set vips { type ipv4_addr; }
  set remote-endpoints { type ipv4_addr; }
";

fn vip_port(k: &VipPort) -> String {
    format!("{} . {} . {}", k.0, proto(k.1), k.2)
}

fn node_port(k: &NodePort) -> String {
    format!("{} . {}", proto(k.0), k.1)
}

fn goto(chain: &String) -> String {
    format!("goto {chain}")
}

/// The elements of one map or set that go (their keys) and that come (whole).
struct Diff {
    gone: Vec<String>,
    added: Vec<String>,
}

fn diff_map<K: Ord, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    key: impl Fn(&K) -> String,
    value: impl Fn(&V) -> String,
) -> Diff {
    Diff {
        gone: old
            .iter()
            .filter(|(k, v)| new.get(k) != Some(v))
            .map(|(k, _)| key(k))
            .collect(),
        added: new
            .iter()
            .filter(|(k, v)| old.get(k) != Some(v))
            .map(|(k, v)| format!("{} : {}", key(k), value(v)))
            .collect(),
    }
}

fn diff_set<K: Ord + ToString>(old: &BTreeSet<K>, new: &BTreeSet<K>) -> Diff {
    Diff {
        gone: old.difference(new).map(K::to_string).collect(),
        added: new.difference(old).map(K::to_string).collect(),
    }
}

/// Every map and set of the table: what changes from `old` to `new`, by name.
fn element_diffs(old: &Ruleset, new: &Ruleset) -> [(&'static str, Diff); 8] {
    [
        (
            "services",
            diff_map(&old.services, &new.services, vip_port, goto),
        ),
        (
            "backends",
            diff_map(
                &old.backends,
                &new.backends,
                |(vip, bucket)| format!("{vip} . {bucket}"),
                ToString::to_string,
            ),
        ),
        (
            "targets",
            diff_map(&old.targets, &new.targets, vip_port, ToString::to_string),
        ),
        (
            "ingress",
            diff_map(&old.ingress, &new.ingress, node_port, goto),
        ),
        (
            "ingress-backends",
            diff_map(
                &old.ingress_backends,
                &new.ingress_backends,
                |(p, port, bucket)| format!("{} . {port} . {bucket}", proto(*p)),
                ToString::to_string,
            ),
        ),
        (
            "ingress-targets",
            diff_map(
                &old.ingress_targets,
                &new.ingress_targets,
                node_port,
                ToString::to_string,
            ),
        ),
        ("vips", diff_set(&old.vips, &new.vips)),
        (
            "remote-endpoints",
            diff_set(&old.remote_endpoints, &new.remote_endpoints),
        ),
    ]
}

/// Postrouting's decision for a balanced connection: clear the mark, then masquerade when
/// the endpoint is on another node or the client is inside the endpoint's subnet.
fn masquerade_rules(r: &Ruleset) -> Vec<String> {
    let mut rules = vec![
        format!("meta mark set meta mark & {:#x}", !MASQUERADE_MARK),
        "ip daddr @remote-endpoints masquerade".to_string(),
    ];
    rules.extend(
        r.client_subnets
            .iter()
            .map(|s| format!("ip saddr {s} ip daddr {s} masquerade")),
    );
    rules
}

fn set_decl(name: &str, timeout: u32) -> String {
    format!("set {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}")
}

/// The whole table, replacing whatever is there in the same transaction (a restarted agent
/// writes this once: conntrack keeps established connections meanwhile, and new ones find
/// the new table, so no connection fails).
pub fn full(r: &Ruleset) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "add table ip {TABLE}\ndelete table ip {TABLE}");
    let _ = writeln!(s, "table ip {TABLE} {{");
    s.push_str(DECLARATIONS);
    for (name, timeout) in &r.affinity_sets {
        let _ = writeln!(s, "  {}", set_decl(name, *timeout));
    }
    let lookup = "ip daddr . meta l4proto . th dport vmap @services";
    let _ = writeln!(
        s,
        "  chain prerouting {{ type nat hook prerouting priority {NAT_PRIORITY}; policy accept;\n    {lookup}\n    fib daddr type local meta l4proto . th dport vmap @ingress\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain output {{ type nat hook output priority {NAT_PRIORITY}; policy accept;\n    {lookup}\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain postrouting {{ type nat hook postrouting priority 90; policy accept;\n    meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} jump {MASQUERADE_CHAIN}\n  }}"
    );
    // A VIP port that no service port took (no such port, no ready endpoint).
    let _ = writeln!(
        s,
        "  chain input {{ type filter hook input priority 0; policy accept;\n    ip daddr @vips meta l4proto tcp reject with tcp reset\n    ip daddr @vips reject\n  }}"
    );
    let chains = std::iter::once((MASQUERADE_CHAIN, masquerade_rules(r))).chain(
        r.chains
            .iter()
            .map(|(n, rules)| (n.as_str(), rules.clone())),
    );
    for (name, rules) in chains {
        let _ = writeln!(s, "  chain {name} {{");
        for rule in rules {
            let _ = writeln!(s, "    {rule}");
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    for (name, diff) in element_diffs(&Ruleset::default(), r) {
        add_elements(&mut s, name, &diff.added);
    }
    s
}

/// Delete the table (whether it exists or not, in one transaction).
pub fn remove() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

fn add_elements(s: &mut String, map: &str, elems: &[String]) {
    // In slices: one huge element list makes nft's parser slow.
    for chunk in elems.chunks(1000) {
        let _ = writeln!(s, "add element ip {TABLE} {map} {{ {} }}", chunk.join(", "));
    }
}

fn delete_elements(s: &mut String, map: &str, elems: &[String]) {
    for chunk in elems.chunks(1000) {
        let _ = writeln!(
            s,
            "delete element ip {TABLE} {map} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The difference from `old` (what the kernel holds) to `new`; empty when they are equal.
/// Order inside the one transaction: new sets and chains exist before anything jumps to
/// them; elements and rules that go are removed before the chains they name are deleted.
pub fn update(old: &Ruleset, new: &Ruleset) -> String {
    let mut s = String::new();
    // Affinity sets are named after their timeout too (`plan`): a set is added or deleted,
    // never changed.
    for (name, timeout) in &new.affinity_sets {
        if !old.affinity_sets.contains_key(name) {
            let _ = writeln!(
                s,
                "add {}",
                set_decl(name, *timeout).replacen("set ", &format!("set ip {TABLE} "), 1)
            );
        }
    }
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(s, "add chain ip {TABLE} {name}");
    }
    let diffs = element_diffs(old, new);
    // Elements whose key goes or whose value changes (added back below).
    for (name, diff) in &diffs {
        delete_elements(&mut s, name, &diff.gone);
    }
    // Changed chains: flushed and written again; chains that go: flushed first (a chain may
    // jump to another that goes too).
    let changed = new
        .chains
        .iter()
        .filter(|(name, rules)| old.chains.get(*name) != Some(rules))
        .map(|(name, rules)| (name.as_str(), rules.clone()));
    let masquerade = (old.client_subnets != new.client_subnets)
        .then(|| (MASQUERADE_CHAIN, masquerade_rules(new)));
    for (name, rules) in changed.chain(masquerade) {
        if old.chains.contains_key(name) || name == MASQUERADE_CHAIN {
            let _ = writeln!(s, "flush chain ip {TABLE} {name}");
        }
        for rule in rules {
            let _ = writeln!(s, "add rule ip {TABLE} {name} {rule}");
        }
    }
    let removed: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &removed {
        let _ = writeln!(s, "flush chain ip {TABLE} {name}");
    }
    for name in &removed {
        let _ = writeln!(s, "delete chain ip {TABLE} {name}");
    }
    for name in old
        .affinity_sets
        .keys()
        .filter(|n| !new.affinity_sets.contains_key(*n))
    {
        // Only its users' rules name it, and those went above.
        let _ = writeln!(s, "delete set ip {TABLE} {name}");
    }
    for (name, diff) in &diffs {
        add_elements(&mut s, name, &diff.added);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::plan::{EndpointInput, PortInput, ServiceInput, plan};
    use weft_api::{ServiceProtocol, TrafficPolicy};

    fn svc(id: &str, vip: &str, eps: &[&str]) -> ServiceInput {
        ServiceInput {
            id: id.into(),
            vip: Some(vip.parse().unwrap()),
            subnets: vec!["10.0.0.0/24".parse().unwrap()],
            ports: vec![PortInput {
                protocol: ServiceProtocol::Tcp,
                port: 80,
                target: 80,
                publish: None,
            }],
            affinity: None,
            ingress_policy: TrafficPolicy::Cluster,
            endpoints: eps
                .iter()
                .map(|a| EndpointInput {
                    address: a.parse().unwrap(),
                    ready: true,
                    local: true,
                    via: None,
                })
                .collect(),
        }
    }

    #[test]
    fn equal_rulesets_need_no_update() {
        let r = plan(&[svc("a", "10.0.0.241", &["10.0.0.2"])]);
        assert_eq!(update(&r, &r), "");
    }

    #[test]
    fn an_endpoint_change_rewrites_its_service_elements_only() {
        let other = svc("b", "10.0.0.242", &["10.0.0.9", "10.0.0.8"]);
        let old = plan(&[svc("a", "10.0.0.241", &["10.0.0.2"]), other.clone()]);
        let new = plan(&[svc("a", "10.0.0.241", &["10.0.0.2", "10.0.0.3"]), other]);
        let script = update(&old, &new);
        assert_eq!(
            script,
            "delete element ip weft-svc services { 10.0.0.241 . tcp . 80 }\n\
             add element ip weft-svc services { 10.0.0.241 . tcp . 80 : goto lb-2 }\n\
             add element ip weft-svc backends { 10.0.0.241 . 1 : 10.0.0.3 }\n"
        );
    }

    #[test]
    fn the_whole_table_has_chains_per_endpoint_count_not_per_service() {
        let many: Vec<ServiceInput> = (0..1000u32)
            .map(|i| {
                let vip =
                    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 1, 0, 0)) + i);
                svc(
                    &format!("s{i}"),
                    &vip.to_string(),
                    &["10.0.0.2", "10.0.0.3", "10.0.0.4"],
                )
            })
            .collect();
        let script = full(&plan(&many));
        // lb-1..lb-3 and the masquerade decision, whatever the number of services.
        assert_eq!(
            script.matches("\n  chain ").count(),
            4 + 4,
            "{}",
            &script[..2000]
        );
        assert!(script.contains("add element ip weft-svc backends { 10.1.0.0 . 0 : 10.0.0.2, "));
    }

    #[test]
    fn a_service_that_goes_loses_its_element_before_its_chains() {
        let old = plan(&[svc("a", "10.0.0.241", &["10.0.0.2"])]);
        let new = plan(&[]);
        let script = update(&old, &new);
        let del_elem = script.find("delete element").expect("element deleted");
        let del_chain = script.find("delete chain").expect("chain deleted");
        assert!(del_elem < del_chain, "{script}");
        assert!(script.contains("delete element ip weft-svc vips { 10.0.0.241 }"));
    }
}
