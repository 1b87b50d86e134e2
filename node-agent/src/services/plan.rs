//! Services → the nftables objects that implement them on one node (pure).
//!
//! One verdict-map lookup per packet however many services exist
//! (`ip daddr . meta l4proto . th dport vmap @services`), as kube-proxy's nftables mode: each
//! element jumps to the chain of one service port, which balances over the ready endpoints
//! with `numgen random mod N vmap`, after the per-endpoint affinity sets (dynamic, with a
//! timeout) had their say. Each endpoint of a service port has a chain of its own that marks
//! the connection for masquerade when needed and DNATs. Ingress-published ports have a second
//! map keyed by `meta l4proto . th dport` for packets to the node's own addresses.
//!
//! Masquerade (the mark, applied in postrouting), and why:
//! - a client inside the service's subnet (hairpin included): the endpoint would answer it
//!   directly over the bridge, past the node's conntrack, with the wrong source address;
//! - an endpoint on another node: its reply would leave through its own node, which never saw
//!   the connection. On an overlay the connection is routed to that node over the underlay
//!   ([`crate::services::mesh`]), so the masquerade address is this node's own underlay
//!   address, unique per node. The client's address is lost there; the `Local` ingress policy
//!   keeps it by never crossing nodes.
//!   An endpoint on this node reached from outside the subnet keeps the client's address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_api::{PublishMode, ServiceProtocol, TrafficPolicy};

use crate::names::fnv1a64;

/// The mark bit that asks postrouting to masquerade.
pub const MASQUERADE_MARK: u32 = 0x0200_0000;

/// One service as the node sees it (built from the API objects by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInput {
    /// Stable identity (namespace/name or uid): names the chains.
    pub id: String,
    pub vip: Option<Ipv4Addr>,
    /// The service network's subnets: clients inside are masqueraded.
    pub subnets: Vec<Ipv4Net>,
    pub ports: Vec<PortInput>,
    /// Affinity timeout in seconds.
    pub affinity: Option<u32>,
    pub ingress_policy: TrafficPolicy,
    pub endpoints: Vec<EndpointInput>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInput {
    pub protocol: ServiceProtocol,
    pub port: u16,
    pub target: u16,
    pub publish: Option<(PublishMode, u16)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInput {
    pub address: Ipv4Addr,
    pub ready: bool,
    /// On this node (no masquerade needed to get the reply back).
    pub local: bool,
    /// On another node of an overlay: that node's underlay address, which the connection is
    /// routed to (the routing mesh, [`crate::services::mesh`]).
    pub via: Option<Ipv4Addr>,
}

/// The desired content of table `ip weft-svc`, in the parts the writer updates one by one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// `vip . proto . port` → chain.
    pub services: BTreeMap<(Ipv4Addr, ServiceProtocol, u16), String>,
    /// `proto . published port` → chain (node addresses).
    pub ingress: BTreeMap<(ServiceProtocol, u16), String>,
    /// Regular chains: name → rule bodies, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity sets: name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// The VIPs this node answers for (ARP, a local /32 route each); packets to them that no
    /// service port took are refused. Only VIPs, not the whole service range: an endpoint
    /// that asked for an address of the range by name must stay reachable.
    pub vips: BTreeSet<Ipv4Addr>,
}

pub fn proto(p: ServiceProtocol) -> &'static str {
    match p {
        ServiceProtocol::Tcp => "tcp",
        ServiceProtocol::Udp => "udp",
    }
}

fn short_hash(parts: &[&str]) -> String {
    format!(
        "{:012x}",
        fnv1a64(parts.join("\u{1f}").as_bytes()) & 0xffff_ffff_ffff
    )
}

/// Plan the table for every service on this node.
pub fn plan(services: &[ServiceInput]) -> Ruleset {
    let mut out = Ruleset::default();
    for svc in services {
        out.vips.extend(svc.vip);
        for port in &svc.ports {
            plan_port(svc, port, &mut out);
        }
    }
    out
}

fn plan_port(svc: &ServiceInput, port: &PortInput, out: &mut Ruleset) {
    let p = proto(port.protocol);
    let port_id = format!("{p}-{}", port.port);
    let ready: Vec<&EndpointInput> = svc.endpoints.iter().filter(|e| e.ready).collect();
    // One chain per (service port, endpoint): the DNAT target differs per port.
    let ep_chain = |e: &EndpointInput| {
        format!(
            "ep-{}",
            short_hash(&[&svc.id, &port_id, &e.address.to_string()])
        )
    };
    let aff_set = |e: &EndpointInput| {
        format!(
            "aff-{}",
            short_hash(&[&svc.id, &port_id, &e.address.to_string()])
        )
    };
    for e in &ready {
        let mut rules = Vec::new();
        if !e.local {
            rules.push(format!("meta mark set meta mark or {MASQUERADE_MARK:#x}"));
        }
        if let Some(timeout) = svc.affinity {
            out.affinity_sets.insert(aff_set(e), timeout);
            rules.push(format!("update @{} {{ ip saddr }}", aff_set(e)));
        }
        rules.push(format!(
            "meta l4proto {p} dnat to {}:{}",
            e.address, port.target
        ));
        out.chains.insert(ep_chain(e), rules);
    }
    let balance = |eps: &[&EndpointInput], masquerade_subnets: &[Ipv4Net]| {
        let mut rules: Vec<String> = masquerade_subnets
            .iter()
            .map(|s| format!("ip saddr {s} meta mark set meta mark or {MASQUERADE_MARK:#x}"))
            .collect();
        if svc.affinity.is_some() {
            for e in eps {
                rules.push(format!("ip saddr @{} goto {}", aff_set(e), ep_chain(e)));
            }
        }
        let arms: Vec<String> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i} : goto {}", ep_chain(e)))
            .collect();
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            eps.len(),
            arms.join(", ")
        ));
        rules
    };
    if let (Some(vip), false) = (svc.vip, ready.is_empty()) {
        let chain = format!("svc-{}", short_hash(&[&svc.id, &port_id]));
        out.chains
            .insert(chain.clone(), balance(&ready, &svc.subnets));
        out.services.insert((vip, port.protocol, port.port), chain);
    }
    if let Some((mode, published)) = port.publish {
        // Host mode and the Local policy: this node's endpoints only (client address kept).
        let local_only = mode == PublishMode::Host || svc.ingress_policy == TrafficPolicy::Local;
        let eps: Vec<&EndpointInput> = ready
            .iter()
            .copied()
            .filter(|e| e.local || !local_only)
            .collect();
        if !eps.is_empty() {
            let chain = format!("ing-{}", short_hash(&[&svc.id, &port_id]));
            out.chains.insert(chain.clone(), balance(&eps, &[]));
            out.ingress.insert((port.protocol, published), chain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ep(a: &str, ready: bool, local: bool) -> EndpointInput {
        EndpointInput {
            address: ip(a),
            ready,
            local,
            via: None,
        }
    }

    fn web(endpoints: Vec<EndpointInput>) -> ServiceInput {
        ServiceInput {
            id: "default/web".into(),
            vip: Some(ip("10.0.0.241")),
            subnets: vec!["10.0.0.0/24".parse().unwrap()],
            ports: vec![PortInput {
                protocol: ServiceProtocol::Tcp,
                port: 80,
                target: 8080,
                publish: Some((PublishMode::Ingress, 8000)),
            }],
            affinity: None,
            ingress_policy: TrafficPolicy::Cluster,
            endpoints,
        }
    }

    #[test]
    fn one_map_element_per_vip_port_and_balance_over_ready_endpoints_only() {
        let r = plan(&[web(vec![
            ep("10.0.0.2", true, true),
            ep("10.0.0.3", false, true),
            ep("10.0.0.4", true, false),
        ])]);
        assert_eq!(r.services.len(), 1);
        let chain = &r.services[&(ip("10.0.0.241"), ServiceProtocol::Tcp, 80)];
        let rules = &r.chains[chain];
        assert_eq!(
            rules[0],
            "ip saddr 10.0.0.0/24 meta mark set meta mark or 0x2000000"
        );
        assert!(rules[1].starts_with("numgen random mod 2 vmap { 0 : goto ep-"));
        // Two endpoint chains; the remote one masquerades, the local one does not.
        let eps: Vec<&Vec<String>> = r
            .chains
            .iter()
            .filter(|(n, _)| n.starts_with("ep-"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(eps.len(), 2);
        let local = eps
            .iter()
            .find(|v| v.last().unwrap().contains("10.0.0.2:8080"))
            .unwrap();
        assert_eq!(local.len(), 1);
        let remote = eps
            .iter()
            .find(|v| v.last().unwrap().contains("10.0.0.4:8080"))
            .unwrap();
        assert_eq!(remote[0], "meta mark set meta mark or 0x2000000");
        assert_eq!(r.vips.iter().next().unwrap().to_string(), "10.0.0.241");
    }

    #[test]
    fn no_ready_endpoint_means_no_element_so_the_vip_refuses() {
        let r = plan(&[web(vec![ep("10.0.0.2", false, true)])]);
        assert!(r.services.is_empty());
        assert!(r.ingress.is_empty());
        assert!(r.chains.is_empty());
        assert_eq!(
            r.vips.len(),
            1,
            "the VIP is still answered for (and refused)"
        );
    }

    #[test]
    fn local_policy_and_host_mode_use_local_endpoints_only_without_masquerade() {
        let mut svc = web(vec![
            ep("10.0.0.2", true, true),
            ep("10.0.0.4", true, false),
        ]);
        let cluster = plan(std::slice::from_ref(&svc));
        let ing = &cluster.chains[&cluster.ingress[&(ServiceProtocol::Tcp, 8000)]];
        assert!(ing[0].starts_with("numgen random mod 2"), "{ing:?}");
        svc.ingress_policy = TrafficPolicy::Local;
        let local = plan(std::slice::from_ref(&svc));
        let ing = &local.chains[&local.ingress[&(ServiceProtocol::Tcp, 8000)]];
        assert_eq!(ing.len(), 1);
        assert!(ing[0].starts_with("numgen random mod 1"), "{ing:?}");
        svc.ingress_policy = TrafficPolicy::Cluster;
        svc.ports[0].publish = Some((PublishMode::Host, 8000));
        let host = plan(std::slice::from_ref(&svc));
        assert_eq!(
            host.chains[&host.ingress[&(ServiceProtocol::Tcp, 8000)]],
            local.chains[&local.ingress[&(ServiceProtocol::Tcp, 8000)]]
        );
        // A node without a local endpoint does not publish a Local port at all.
        svc.ports[0].publish = Some((PublishMode::Ingress, 8000));
        svc.ingress_policy = TrafficPolicy::Local;
        svc.endpoints = vec![ep("10.0.0.4", true, false)];
        assert!(plan(&[svc]).ingress.is_empty());
    }

    #[test]
    fn affinity_checks_every_endpoint_set_before_balancing_and_records_the_client() {
        let mut svc = web(vec![ep("10.0.0.2", true, true), ep("10.0.0.3", true, true)]);
        svc.affinity = Some(60);
        let r = plan(&[svc]);
        assert_eq!(r.affinity_sets.len(), 2);
        assert!(r.affinity_sets.values().all(|t| *t == 60));
        let chain = &r.chains[&r.services[&(ip("10.0.0.241"), ServiceProtocol::Tcp, 80)]];
        assert!(chain[1].starts_with("ip saddr @aff-") && chain[1].contains(" goto ep-"));
        assert!(chain[2].starts_with("ip saddr @aff-"));
        for (name, rules) in r.chains.iter().filter(|(n, _)| n.starts_with("ep-")) {
            assert!(rules[0].starts_with("update @aff-"), "{name}: {rules:?}");
        }
    }

    #[test]
    fn one_endpoint_change_touches_only_that_service() {
        let mut other = ServiceInput {
            id: "default/db".into(),
            vip: Some(ip("10.0.0.242")),
            ..web(vec![ep("10.0.0.9", true, true)])
        };
        other.ports[0].publish = None;
        let before = plan(&[web(vec![ep("10.0.0.2", true, true)]), other.clone()]);
        let after = plan(&[
            web(vec![ep("10.0.0.2", true, true), ep("10.0.0.3", true, true)]),
            other,
        ]);
        let changed: Vec<&String> = after
            .chains
            .iter()
            .filter(|(n, v)| before.chains.get(*n) != Some(v))
            .map(|(n, _)| n)
            .collect();
        // The web VIP chain, its ingress chain and the new endpoint's chain.
        assert_eq!(changed.len(), 3, "{changed:?}");
        assert_eq!(before.services, after.services);
    }
}
