//! Services → the nftables objects that implement them on one node (pure).
//!
//! Built for scale as kube-proxy's nftables mode is, with fewer chains still: a service is
//! map elements, not chains, so 10,000 services are one transaction of elements and one
//! endpoint change rewrites that service's elements only.
//! - One verdict-map lookup per packet however many services exist
//!   (`ip daddr . meta l4proto . th dport vmap @services`) jumps to `lb-N`, the balancing
//!   chain for N ready endpoints, shared by every service with N of them.
//! - `lb-N` draws a bucket with `numgen random mod N` and DNATs through two maps:
//!   `@backends` (`vip . bucket` → the bucket's ready endpoint) and `@targets`
//!   (`vip . proto . port` → target port).
//! - Ingress-published ports do the same for packets to the node's own addresses:
//!   `@ingress` (`proto . published port`) → `ingress-lb-N`, `@ingress-backends`,
//!   `@ingress-targets`.
//! - The balancing chains exist for every count up to the largest in use, so a service that
//!   loses or gains an endpoint changes elements, never chains.
//!
//! Session affinity needs state per endpoint (a dynamic set of its recent clients, with a
//! timeout), so a service with affinity keeps chains of its own: per service port, the
//! endpoints' sets are checked before balancing with `numgen … vmap` to one chain per
//! endpoint, which records the client and DNATs.
//!
//! Masquerade: every balanced connection's first packet carries [`MASQUERADE_MARK`] to
//! postrouting, which masquerades it (and clears the bit) when
//! - the client is inside the endpoint's subnet (`client_subnets`; hairpin included): the
//!   endpoint would answer it directly over the bridge, past the node's conntrack, with the
//!   wrong source address;
//! - the endpoint is on another node (`remote_endpoints`): its reply would leave through its
//!   own node, which never saw the connection. On an overlay the connection is routed to that
//!   node over the underlay ([`crate::services::mesh`]), so the masquerade address is this
//!   node's own underlay address, unique per node. The client's address is lost there; the
//!   `Local` ingress policy keeps it by never crossing nodes.
//!
//! An endpoint on this node reached from outside the subnet keeps the client's address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weft_api::{PublishMode, ServiceProtocol, TrafficPolicy};

use crate::names::fnv1a64;

/// The mark bit of a balanced connection's first packet: postrouting decides masquerade.
pub const MASQUERADE_MARK: u32 = 0x0200_0000;

/// One service as the node sees it (built from the API objects by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInput {
    /// Stable identity (namespace/name or uid): names the chains of an affinity service.
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

/// A VIP's service port: `vip . proto . port`.
pub type VipPort = (Ipv4Addr, ServiceProtocol, u16);
/// A published port on the node's addresses: `proto . port`.
pub type NodePort = (ServiceProtocol, u16);

/// The desired content of table `ip weft-svc`, in the parts the writer updates one by one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// `vip . proto . port` → chain (`lb-N`, or an affinity service's own).
    pub services: BTreeMap<VipPort, String>,
    /// `vip . bucket` → endpoint address, buckets `0..N` over the ready endpoints.
    pub backends: BTreeMap<(Ipv4Addr, u32), Ipv4Addr>,
    /// `vip . proto . port` → the endpoints' port.
    pub targets: BTreeMap<VipPort, u16>,
    /// `proto . published port` → chain (node addresses).
    pub ingress: BTreeMap<NodePort, String>,
    /// `proto . published port . bucket` → endpoint address.
    pub ingress_backends: BTreeMap<(ServiceProtocol, u16, u32), Ipv4Addr>,
    /// `proto . published port` → the endpoints' port.
    pub ingress_targets: BTreeMap<NodePort, u16>,
    /// Regular chains: name → rule bodies, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity sets: name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// The VIPs this node answers for (ARP, a local /32 route each); packets to them that no
    /// service port took are refused. Only VIPs, not the whole service range: an endpoint
    /// that asked for an address of the range by name must stay reachable.
    pub vips: BTreeSet<Ipv4Addr>,
    /// Ready endpoints on other nodes: connections balanced to them are masqueraded.
    pub remote_endpoints: BTreeSet<Ipv4Addr>,
    /// The services' subnets: a balanced connection from inside its endpoint's subnet is
    /// masqueraded.
    pub client_subnets: BTreeSet<Ipv4Net>,
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

/// The shared chain that balances a VIP over `n` ready endpoints.
pub fn vip_balancer(n: usize) -> String {
    format!("lb-{n}")
}

/// The shared chain that balances a published port over `n` endpoints.
pub fn ingress_balancer(n: usize) -> String {
    format!("ingress-lb-{n}")
}

/// Plan the table for every service on this node.
pub fn plan(services: &[ServiceInput]) -> Ruleset {
    let mut out = Ruleset::default();
    let (mut vip_max, mut ingress_max) = (0, 0);
    for svc in services {
        out.vips.extend(svc.vip);
        let ready: Vec<&EndpointInput> = svc.endpoints.iter().filter(|e| e.ready).collect();
        let published: Vec<(&PortInput, Vec<&EndpointInput>)> = svc
            .ports
            .iter()
            .filter_map(|p| Some((p, ingress_endpoints(svc, p.publish?.0, &ready))))
            .filter(|(_, eps)| !eps.is_empty())
            .collect();
        let vip = svc.vip.filter(|_| !ready.is_empty());
        if vip.is_none() && published.is_empty() {
            continue;
        }
        out.client_subnets.extend(svc.subnets.iter().copied());
        out.remote_endpoints.extend(
            published
                .iter()
                .flat_map(|(_, eps)| eps.iter())
                .chain(vip.iter().flat_map(|_| ready.iter()))
                .filter(|e| !e.local)
                .map(|e| e.address),
        );
        match svc.affinity {
            None => {
                if let Some(vip) = vip {
                    plan_vip(vip, svc, &ready, &mut out);
                    vip_max = vip_max.max(ready.len());
                }
                for (port, eps) in &published {
                    plan_ingress(port, eps, &mut out);
                    ingress_max = ingress_max.max(eps.len());
                }
            }
            Some(timeout) => {
                for port in &svc.ports {
                    let eps = published
                        .iter()
                        .find(|(p, _)| p == &port)
                        .map(|(_, eps)| eps.as_slice());
                    plan_affinity_port(svc, port, timeout, vip.map(|_| &ready[..]), eps, &mut out);
                }
            }
        }
    }
    for n in 1..=vip_max {
        out.chains.insert(
            vip_balancer(n),
            vec![format!(
                "meta l4proto {{ tcp, udp }} meta mark set meta mark or {MASQUERADE_MARK:#x} dnat to ip daddr . numgen random mod {n} map @backends : ip daddr . meta l4proto . th dport map @targets"
            )],
        );
    }
    for n in 1..=ingress_max {
        out.chains.insert(
            ingress_balancer(n),
            vec![format!(
                "meta l4proto {{ tcp, udp }} meta mark set meta mark or {MASQUERADE_MARK:#x} dnat to meta l4proto . th dport . numgen random mod {n} map @ingress-backends : meta l4proto . th dport map @ingress-targets"
            )],
        );
    }
    out
}

/// The endpoints a published port balances over: host mode and the `Local` policy take this
/// node's only (the client's address is kept).
fn ingress_endpoints<'a>(
    svc: &ServiceInput,
    mode: PublishMode,
    ready: &[&'a EndpointInput],
) -> Vec<&'a EndpointInput> {
    let local_only = mode == PublishMode::Host || svc.ingress_policy == TrafficPolicy::Local;
    ready
        .iter()
        .copied()
        .filter(|e| e.local || !local_only)
        .collect()
}

fn plan_vip(vip: Ipv4Addr, svc: &ServiceInput, ready: &[&EndpointInput], out: &mut Ruleset) {
    for (bucket, e) in (0u32..).zip(ready) {
        out.backends.insert((vip, bucket), e.address);
    }
    for port in &svc.ports {
        let key = (vip, port.protocol, port.port);
        out.services.insert(key, vip_balancer(ready.len()));
        out.targets.insert(key, port.target);
    }
}

fn plan_ingress(port: &PortInput, eps: &[&EndpointInput], out: &mut Ruleset) {
    let Some((_, published)) = port.publish else {
        return;
    };
    for (bucket, e) in (0u32..).zip(eps) {
        out.ingress_backends
            .insert((port.protocol, published, bucket), e.address);
    }
    let key = (port.protocol, published);
    out.ingress.insert(key, ingress_balancer(eps.len()));
    out.ingress_targets.insert(key, port.target);
}

/// One port of an affinity service: its own chains. `vip_eps`: the VIP's endpoints (none
/// without a VIP or a ready endpoint); `ingress_eps`: the published port's.
fn plan_affinity_port(
    svc: &ServiceInput,
    port: &PortInput,
    timeout: u32,
    vip_eps: Option<&[&EndpointInput]>,
    ingress_eps: Option<&[&EndpointInput]>,
    out: &mut Ruleset,
) {
    let p = proto(port.protocol);
    let port_id = format!("{p}-{}", port.port);
    // The sets' names carry the timeout: a new timeout is a new set, and the rules naming
    // it change with it.
    let named = |kind: &str, e: &EndpointInput| {
        let timeout = if kind == "aff" {
            timeout.to_string()
        } else {
            String::new()
        };
        format!(
            "{kind}-{}",
            short_hash(&[&svc.id, &port_id, &e.address.to_string(), &timeout])
        )
    };
    let endpoint_chains = |eps: &[&EndpointInput], out: &mut Ruleset| {
        for e in eps {
            out.affinity_sets.insert(named("aff", e), timeout);
            out.chains.insert(
                named("ep", e),
                vec![
                    format!("update @{} {{ ip saddr }}", named("aff", e)),
                    format!("meta l4proto {p} dnat to {}:{}", e.address, port.target),
                ],
            );
        }
    };
    let balance = |eps: &[&EndpointInput]| {
        let mut rules = vec![format!("meta mark set meta mark or {MASQUERADE_MARK:#x}")];
        for e in eps {
            rules.push(format!(
                "ip saddr @{} goto {}",
                named("aff", e),
                named("ep", e)
            ));
        }
        let arms: Vec<String> = (0..)
            .zip(eps)
            .map(|(i, e)| format!("{i} : goto {}", named("ep", e)))
            .collect();
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            eps.len(),
            arms.join(", ")
        ));
        rules
    };
    if let (Some(vip), Some(eps)) = (svc.vip, vip_eps) {
        endpoint_chains(eps, out);
        let chain = format!("svc-{}", short_hash(&[&svc.id, &port_id]));
        out.chains.insert(chain.clone(), balance(eps));
        out.services.insert((vip, port.protocol, port.port), chain);
    }
    if let (Some((_, published)), Some(eps)) = (port.publish, ingress_eps) {
        endpoint_chains(eps, out);
        let chain = format!("ing-{}", short_hash(&[&svc.id, &port_id]));
        out.chains.insert(chain.clone(), balance(eps));
        out.ingress.insert((port.protocol, published), chain);
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
    fn a_service_is_elements_balanced_over_its_ready_endpoints_only() {
        let r = plan(&[web(vec![
            ep("10.0.0.2", true, true),
            ep("10.0.0.3", false, true),
            ep("10.0.0.4", true, false),
        ])]);
        let key = (ip("10.0.0.241"), ServiceProtocol::Tcp, 80);
        assert_eq!(r.services[&key], "lb-2");
        assert_eq!(r.targets[&key], 8080);
        assert_eq!(
            r.backends,
            BTreeMap::from([
                ((ip("10.0.0.241"), 0), ip("10.0.0.2")),
                ((ip("10.0.0.241"), 1), ip("10.0.0.4")),
            ])
        );
        assert_eq!(r.ingress[&(ServiceProtocol::Tcp, 8000)], "ingress-lb-2");
        assert_eq!(r.ingress_targets[&(ServiceProtocol::Tcp, 8000)], 8080);
        assert_eq!(r.ingress_backends.len(), 2);
        // The balancing chains for every count up to the largest, one rule each.
        assert_eq!(
            r.chains.keys().collect::<Vec<_>>(),
            ["ingress-lb-1", "ingress-lb-2", "lb-1", "lb-2"]
        );
        assert_eq!(
            r.chains["lb-2"],
            [
                "meta l4proto { tcp, udp } meta mark set meta mark or 0x2000000 dnat to ip daddr . numgen random mod 2 map @backends : ip daddr . meta l4proto . th dport map @targets"
            ]
        );
        // The remote endpoint is masqueraded, and so are clients inside the subnet.
        assert_eq!(r.remote_endpoints, BTreeSet::from([ip("10.0.0.4")]));
        assert_eq!(
            r.client_subnets,
            BTreeSet::from(["10.0.0.0/24".parse().unwrap()])
        );
        assert_eq!(r.vips.iter().next().unwrap().to_string(), "10.0.0.241");
    }

    #[test]
    fn services_with_as_many_endpoints_share_their_chains() {
        let many: Vec<ServiceInput> = (0..100u8)
            .map(|i| ServiceInput {
                id: format!("default/s{i}"),
                vip: Some(Ipv4Addr::new(10, 0, 1, i)),
                ..web(vec![ep("10.0.0.2", true, true), ep("10.0.0.3", true, true)])
            })
            .collect();
        let r = plan(&many);
        assert_eq!(r.services.len(), 100);
        assert_eq!(r.backends.len(), 200);
        assert_eq!(r.chains.len(), 4, "{:?}", r.chains.keys());
    }

    #[test]
    fn no_ready_endpoint_means_no_element_so_the_vip_refuses() {
        let r = plan(&[web(vec![ep("10.0.0.2", false, true)])]);
        assert!(r.services.is_empty());
        assert!(r.backends.is_empty());
        assert!(r.ingress.is_empty());
        assert!(r.chains.is_empty());
        assert!(r.client_subnets.is_empty());
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
        let port = (ServiceProtocol::Tcp, 8000);
        let cluster = plan(std::slice::from_ref(&svc));
        assert_eq!(cluster.ingress[&port], "ingress-lb-2");
        svc.ingress_policy = TrafficPolicy::Local;
        let local = plan(std::slice::from_ref(&svc));
        assert_eq!(local.ingress[&port], "ingress-lb-1");
        assert_eq!(
            local.ingress_backends,
            BTreeMap::from([((ServiceProtocol::Tcp, 8000, 0), ip("10.0.0.2"))])
        );
        svc.ingress_policy = TrafficPolicy::Cluster;
        svc.ports[0].publish = Some((PublishMode::Host, 8000));
        let host = plan(std::slice::from_ref(&svc));
        assert_eq!(host.ingress, local.ingress);
        assert_eq!(host.ingress_backends, local.ingress_backends);
        // A node without a local endpoint does not publish a Local port at all; its VIP still
        // reaches the remote endpoint, masqueraded.
        svc.ports[0].publish = Some((PublishMode::Ingress, 8000));
        svc.ingress_policy = TrafficPolicy::Local;
        svc.endpoints = vec![ep("10.0.0.4", true, false)];
        let r = plan(&[svc]);
        assert!(r.ingress.is_empty());
        assert!(r.ingress_backends.is_empty());
        assert_eq!(r.remote_endpoints, BTreeSet::from([ip("10.0.0.4")]));
    }

    #[test]
    fn affinity_checks_every_endpoint_set_before_balancing_and_records_the_client() {
        let mut svc = web(vec![ep("10.0.0.2", true, true), ep("10.0.0.3", true, true)]);
        svc.affinity = Some(60);
        let r = plan(&[svc]);
        assert_eq!(r.affinity_sets.len(), 2);
        assert!(r.affinity_sets.values().all(|t| *t == 60));
        assert!(
            r.backends.is_empty(),
            "an affinity service has chains of its own"
        );
        let chain = &r.chains[&r.services[&(ip("10.0.0.241"), ServiceProtocol::Tcp, 80)]];
        assert_eq!(chain[0], "meta mark set meta mark or 0x2000000");
        assert!(chain[1].starts_with("ip saddr @aff-") && chain[1].contains(" goto ep-"));
        assert!(chain[2].starts_with("ip saddr @aff-"));
        assert!(chain[3].starts_with("numgen random mod 2 vmap { 0 : goto ep-"));
        for (name, rules) in r.chains.iter().filter(|(n, _)| n.starts_with("ep-")) {
            assert!(rules[0].starts_with("update @aff-"), "{name}: {rules:?}");
        }
        let ing = &r.chains[&r.ingress[&(ServiceProtocol::Tcp, 8000)]];
        assert_eq!(ing, chain, "the published port balances the same way");
    }

    #[test]
    fn one_endpoint_change_touches_only_that_service() {
        let mut other = ServiceInput {
            id: "default/db".into(),
            vip: Some(ip("10.0.0.242")),
            ..web(vec![ep("10.0.0.9", true, true), ep("10.0.0.8", true, true)])
        };
        other.ports[0].publish = None;
        let two = vec![ep("10.0.0.2", true, true), ep("10.0.0.3", true, true)];
        let before = plan(&[web(two.clone()), other.clone()]);
        let mut three = two;
        three.push(ep("10.0.0.4", true, true));
        let after = plan(&[web(three), other]);
        let web_vip = ip("10.0.0.241");
        let changed_backends: Vec<_> = after
            .backends
            .iter()
            .filter(|(k, v)| before.backends.get(k) != Some(v))
            .collect();
        assert_eq!(changed_backends, [(&(web_vip, 2), &ip("10.0.0.4"))]);
        let changed_services: Vec<_> = after
            .services
            .iter()
            .filter(|(k, v)| before.services.get(k) != Some(v))
            .map(|(k, _)| k.0)
            .collect();
        assert_eq!(changed_services, [web_vip]);
        // The chains for three endpoints are new; none changed.
        assert!(
            before
                .chains
                .iter()
                .all(|(n, rules)| after.chains.get(n) == Some(rules))
        );
        assert_eq!(before.targets, after.targets);
    }
}
