//! The routing mesh across nodes of an overlay (pure): how a connection this node balanced to
//! an endpoint on another node gets there and back, and how this node takes the connections
//! other nodes balanced to its own endpoints.
//!
//! Why not through the overlay: every node's bridge holds the same anycast gateway (address
//! and MAC). A connection masqueraded to the gateway address would be answered to the
//! endpoint's own node, which never saw it; and frames from the gateway MAC that come in over
//! VXLAN are dropped by the peer's anycast guard. So the connection is DNATed and marked for
//! masquerade here as before ([`crate::services::plan`]), then **routed to the endpoint's node
//! over the underlay** (a /32 route per remote endpoint in Weft's services routing table). It
//! leaves with this node's own underlay address as source, unique per node, so the endpoint
//! answers this node, where conntrack undoes both NATs.
//!
//! The endpoint's node takes it as a service connection: from a peer node's address, to one
//! of its endpoints on a service's target port. It sets [`MESH_CT_MARK`] on the connection,
//! which the overlay's "published ports only" inbound rule lets in like a DNATed one (any
//! other new connection from outside into the network is still dropped). A DNAT to the same
//! address would not do: the kernel marks a connection DNATed only when the tuple changes.
//!
//! Encrypted overlays get no route: the underlay would carry the connection in clear. Their
//! remote endpoints stay unreachable through a VIP (fail closed) until the mesh runs inside
//! WireGuard.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use weft_api::ServiceProtocol;

use crate::services::plan::{ServiceInput, proto};

/// The table's name (family `ip`), apart from `weft-svc`: it changes with endpoints placed
/// on this node, not with every service.
pub const TABLE: &str = "weft-mesh";

/// The conntrack mark bit of a connection taken from a peer node (see the module's text).
pub const MESH_CT_MARK: u32 = 0x0400_0000;

/// Before the network's forward rule looks at the connection (any prerouting priority is).
const PRIORITY: i32 = -105;

/// What this node holds of the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mesh {
    /// An endpoint on another node → that node's underlay address.
    pub routes: BTreeMap<Ipv4Addr, Ipv4Addr>,
    /// The other nodes' underlay addresses (only they may reach a target).
    pub peers: BTreeSet<Ipv4Addr>,
    /// This node's service endpoints, with each service port's target.
    pub targets: BTreeSet<(Ipv4Addr, ServiceProtocol, u16)>,
}

/// The mesh of this node: `services` as planned, `peers` the other nodes' addresses.
/// Endpoints that are not Ready keep their route and target: their established connections
/// live on (no new one is balanced to them).
pub fn plan(services: &[ServiceInput], peers: &BTreeSet<Ipv4Addr>) -> Mesh {
    let mut mesh = Mesh::default();
    for svc in services {
        for e in &svc.endpoints {
            if let Some(via) = e.via {
                mesh.routes.insert(e.address, via);
            }
        }
        for e in svc.endpoints.iter().filter(|e| e.local) {
            for p in &svc.ports {
                mesh.targets.insert((e.address, p.protocol, p.target));
            }
        }
    }
    // No peer, no one to take connections from (a single node has no mesh table).
    if peers.is_empty() {
        mesh.targets.clear();
    } else if !mesh.targets.is_empty() {
        mesh.peers = peers.clone();
    }
    mesh
}

fn target(t: &(Ipv4Addr, ServiceProtocol, u16)) -> String {
    format!("{} . {} . {}", t.0, proto(t.1), t.2)
}

fn elements(s: &mut String, verb: &str, set: &str, elems: &[String]) {
    for chunk in elems.chunks(1000) {
        let _ = writeln!(
            s,
            "{verb} element ip {TABLE} {set} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The whole table, replacing whatever is there, in one transaction; nothing when the mesh
/// has no target (the table is removed).
pub fn full(m: &Mesh) -> String {
    let mut s = remove();
    if m.targets.is_empty() {
        return s;
    }
    let _ = writeln!(s, "table ip {TABLE} {{");
    let _ = writeln!(s, "  set peers {{ type ipv4_addr; }}");
    let _ = writeln!(
        s,
        "  set targets {{ type ipv4_addr . inet_proto . inet_service; }}"
    );
    let _ = writeln!(
        s,
        "  chain prerouting {{ type filter hook prerouting priority {PRIORITY}; policy accept;\n    ct state new ip saddr @peers ip daddr . meta l4proto . th dport @targets ct mark set ct mark or {MESH_CT_MARK:#x}\n  }}"
    );
    let _ = writeln!(s, "}}");
    let peers: Vec<String> = m.peers.iter().map(|p| p.to_string()).collect();
    elements(&mut s, "add", "peers", &peers);
    let targets: Vec<String> = m.targets.iter().map(target).collect();
    elements(&mut s, "add", "targets", &targets);
    s
}

/// Delete the table (whether it exists or not).
pub fn remove() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// From `old` (what the kernel holds) to `new`: element changes only, or the whole table when
/// it comes or goes; empty when nothing changes.
pub fn update(old: &Mesh, new: &Mesh) -> String {
    if old.targets.is_empty() != new.targets.is_empty() {
        return full(new);
    }
    let mut s = String::new();
    if new.targets.is_empty() {
        return s;
    }
    let diff = |a: &BTreeSet<Ipv4Addr>, b: &BTreeSet<Ipv4Addr>| -> Vec<String> {
        a.difference(b).map(|p| p.to_string()).collect()
    };
    elements(&mut s, "delete", "peers", &diff(&old.peers, &new.peers));
    elements(&mut s, "add", "peers", &diff(&new.peers, &old.peers));
    let gone: Vec<String> = old.targets.difference(&new.targets).map(target).collect();
    elements(&mut s, "delete", "targets", &gone);
    let added: Vec<String> = new.targets.difference(&old.targets).map(target).collect();
    elements(&mut s, "add", "targets", &added);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::plan::{EndpointInput, PortInput};
    use weft_api::TrafficPolicy;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn svc(endpoints: Vec<EndpointInput>) -> ServiceInput {
        ServiceInput {
            id: "default/web".into(),
            vip: Some(ip("10.0.0.241")),
            subnets: vec!["10.0.0.0/24".parse().unwrap()],
            ports: vec![PortInput {
                protocol: ServiceProtocol::Tcp,
                port: 80,
                target: 8080,
                publish: None,
            }],
            affinity: None,
            ingress_policy: TrafficPolicy::Cluster,
            endpoints,
        }
    }

    fn ep(a: &str, local: bool, via: Option<&str>) -> EndpointInput {
        EndpointInput {
            address: ip(a),
            ready: true,
            local,
            via: via.map(ip),
        }
    }

    #[test]
    fn remote_endpoints_are_routed_to_their_node_and_local_ones_are_targets() {
        let peers = BTreeSet::from([ip("192.0.2.12")]);
        let m = plan(
            &[svc(vec![
                ep("10.0.0.2", true, None),
                ep("10.0.0.3", false, Some("192.0.2.12")),
            ])],
            &peers,
        );
        assert_eq!(
            m.routes,
            BTreeMap::from([(ip("10.0.0.3"), ip("192.0.2.12"))])
        );
        assert_eq!(
            m.targets,
            BTreeSet::from([(ip("10.0.0.2"), ServiceProtocol::Tcp, 8080)])
        );
        assert_eq!(m.peers, peers);
        let script = full(&m);
        assert!(script.contains("add element ip weft-mesh targets { 10.0.0.2 . tcp . 8080 }"));
        assert!(script.contains("add element ip weft-mesh peers { 192.0.2.12 }"));
    }

    #[test]
    fn a_single_node_has_no_mesh() {
        let m = plan(&[svc(vec![ep("10.0.0.2", true, None)])], &BTreeSet::new());
        assert_eq!(m, Mesh::default());
        assert_eq!(full(&m), remove());
        assert_eq!(update(&m, &m), "");
    }

    #[test]
    fn updates_touch_elements_only() {
        let peers = BTreeSet::from([ip("192.0.2.12")]);
        let old = plan(&[svc(vec![ep("10.0.0.2", true, None)])], &peers);
        let new = plan(
            &[svc(vec![
                ep("10.0.0.2", true, None),
                ep("10.0.0.4", true, None),
            ])],
            &peers,
        );
        assert_eq!(update(&old, &old), "");
        assert_eq!(
            update(&old, &new),
            "add element ip weft-mesh targets { 10.0.0.4 . tcp . 8080 }\n"
        );
        assert_eq!(update(&new, &Mesh::default()), remove());
    }
}
