//! A [`Ruleset`] as nft script text (pure): the whole table, or the difference between two
//! rulesets, which touches only the map elements, chains and sets that changed.

use std::fmt::Write as _;

use crate::services::plan::{MASQUERADE_MARK, Ruleset, proto};

/// The table's name (family `ip`): its own table, so the services never rewrite `inet weft`.
pub const TABLE: &str = "weft-svc";

/// Before `dstnat` (-100), so a service port is taken before any other DNAT.
const NAT_PRIORITY: i32 = -110;

fn service_element(
    key: &(std::net::Ipv4Addr, weft_api::ServiceProtocol, u16),
    chain: &str,
) -> String {
    format!("{} . {} . {} : goto {chain}", key.0, proto(key.1), key.2)
}

fn ingress_element(key: &(weft_api::ServiceProtocol, u16), chain: &str) -> String {
    format!("{} . {} : goto {chain}", proto(key.0), key.1)
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
    let _ = writeln!(
        s,
        "  map services {{ type ipv4_addr . inet_proto . inet_service : verdict; }}"
    );
    let _ = writeln!(
        s,
        "  map ingress {{ type inet_proto . inet_service : verdict; }}"
    );
    let _ = writeln!(s, "  set vips {{ type ipv4_addr; }}");
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
        "  chain postrouting {{ type nat hook postrouting priority 90; policy accept;\n    meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} meta mark set meta mark & {:#x} masquerade\n  }}",
        !MASQUERADE_MARK
    );
    // A VIP port that no service port took (no such port, no ready endpoint).
    let _ = writeln!(
        s,
        "  chain input {{ type filter hook input priority 0; policy accept;\n    ip daddr @vips meta l4proto tcp reject with tcp reset\n    ip daddr @vips reject\n  }}"
    );
    for (name, rules) in &r.chains {
        let _ = writeln!(s, "  chain {name} {{");
        for rule in rules {
            let _ = writeln!(s, "    {rule}");
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    let elems: Vec<String> = r
        .services
        .iter()
        .map(|(k, c)| service_element(k, c))
        .collect();
    add_elements(&mut s, "services", &elems);
    let elems: Vec<String> = r
        .ingress
        .iter()
        .map(|(k, c)| ingress_element(k, c))
        .collect();
    add_elements(&mut s, "ingress", &elems);
    let elems: Vec<String> = r.vips.iter().map(|n| n.to_string()).collect();
    add_elements(&mut s, "vips", &elems);
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
    for (name, timeout) in &new.affinity_sets {
        if old.affinity_sets.get(name) != Some(timeout) {
            if old.affinity_sets.contains_key(name) {
                // A changed timeout: the set is replaced below, after its users are flushed.
            } else {
                let _ = writeln!(
                    s,
                    "add {}",
                    set_decl(name, *timeout).replacen("set ", &format!("set ip {TABLE} "), 1)
                );
            }
        }
    }
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(s, "add chain ip {TABLE} {name}");
    }
    // Map elements whose key goes or whose chain changes name.
    let gone: Vec<String> = old
        .services
        .iter()
        .filter(|(k, c)| new.services.get(k) != Some(c))
        .map(|(k, c)| service_element(k, c))
        .collect();
    let gone_keys: Vec<String> = gone
        .iter()
        .map(|e| e.split(" : ").next().unwrap_or_default().to_string())
        .collect();
    delete_elements(&mut s, "services", &gone_keys);
    let gone: Vec<String> = old
        .ingress
        .iter()
        .filter(|(k, c)| new.ingress.get(k) != Some(c))
        .map(|(k, _)| format!("{} . {}", proto(k.0), k.1))
        .collect();
    delete_elements(&mut s, "ingress", &gone);
    let gone: Vec<String> = old
        .vips
        .difference(&new.vips)
        .map(|n| n.to_string())
        .collect();
    delete_elements(&mut s, "vips", &gone);
    // Changed chains: flushed and written again; chains that go: flushed first (a chain may
    // jump to another that goes too).
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(was) if was == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain ip {TABLE} {name}");
            }
            None => {}
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
    for (name, timeout) in &old.affinity_sets {
        match new.affinity_sets.get(name) {
            Some(t) if t == timeout => {}
            Some(t) => {
                // Only its users' rules name it, and those were rewritten above.
                let _ = writeln!(s, "delete set ip {TABLE} {name}");
                let _ = writeln!(
                    s,
                    "add {}",
                    set_decl(name, *t).replacen("set ", &format!("set ip {TABLE} "), 1)
                );
            }
            None => {
                let _ = writeln!(s, "delete set ip {TABLE} {name}");
            }
        }
    }
    let added: Vec<String> = new
        .services
        .iter()
        .filter(|(k, c)| old.services.get(k) != Some(c))
        .map(|(k, c)| service_element(k, c))
        .collect();
    add_elements(&mut s, "services", &added);
    let added: Vec<String> = new
        .ingress
        .iter()
        .filter(|(k, c)| old.ingress.get(k) != Some(c))
        .map(|(k, c)| ingress_element(k, c))
        .collect();
    add_elements(&mut s, "ingress", &added);
    let added: Vec<String> = new
        .vips
        .difference(&old.vips)
        .map(|n| n.to_string())
        .collect();
    add_elements(&mut s, "vips", &added);
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
    fn an_endpoint_change_rewrites_its_service_chain_only() {
        let other = svc("b", "10.0.0.242", &["10.0.0.9"]);
        let old = plan(&[svc("a", "10.0.0.241", &["10.0.0.2"]), other.clone()]);
        let new = plan(&[svc("a", "10.0.0.241", &["10.0.0.2", "10.0.0.3"]), other]);
        let script = update(&old, &new);
        let lines: Vec<&str> = script.lines().collect();
        // A new endpoint chain, the service chain flushed and rewritten; no element touched.
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("add chain")).count(),
            1
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("flush chain"))
                .count(),
            1
        );
        assert!(!script.contains("element"), "{script}");
        assert!(!script.contains("10.0.0.9"), "{script}");
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
