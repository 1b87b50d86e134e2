//! API objects → the planner's [`ServiceInput`]s for one node (pure).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use weft_api::condition::{is_true, types};
use weft_api::{
    ContainerEndpoint, ContainerNetwork, ContainerService, Driver, EndpointMode, NetworkNode,
};

use crate::services::plan::{EndpointInput, PortInput, ServiceInput};

fn v4_subnets(net: &ContainerNetwork) -> Vec<Ipv4Net> {
    net.status
        .iter()
        .flat_map(|s| s.subnets.iter())
        .filter_map(|s| match s.parse::<IpNet>() {
            Ok(IpNet::V4(n)) => Some(n),
            _ => None,
        })
        .collect()
}

fn endpoint_address(ep: &ContainerEndpoint) -> Option<Ipv4Addr> {
    let addr = ep.status.as_ref()?.address.as_deref()?;
    match addr.split('/').next()?.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// A service's key, the same in the dataplane's chain names and the names feed.
pub fn service_id(svc: &ContainerService) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

/// Every node's IPv4 underlay address, by node name.
pub fn node_addresses(nodes: &[Arc<NetworkNode>]) -> BTreeMap<String, Ipv4Addr> {
    nodes
        .iter()
        .filter_map(|n| Some((n.name_any(), n.spec.underlay_address.parse().ok()?)))
        .collect()
}

/// The other nodes' addresses: the peers of this node's routing mesh.
pub fn mesh_peers(node: &str, addresses: &BTreeMap<String, Ipv4Addr>) -> BTreeSet<Ipv4Addr> {
    addresses
        .iter()
        .filter(|(name, _)| name.as_str() != node)
        .map(|(_, a)| *a)
        .collect()
}

/// The services this node programs: those whose network exists with an IPv4 subnet; a
/// `vip` service once the controller gave it its VIP. Endpoints without an address are left
/// out; `ready` is their Ready condition. An endpoint on another node of a plain overlay is
/// reached through that node's address in `addresses` (the mesh; none on an encrypted one).
pub fn service_inputs(
    node: &str,
    services: &[Arc<ContainerService>],
    networks: &[Arc<ContainerNetwork>],
    endpoints: &[Arc<ContainerEndpoint>],
    addresses: &BTreeMap<String, Ipv4Addr>,
) -> Vec<ServiceInput> {
    // Indexed once, so each service looks only at its own network's endpoints in its own
    // namespace: O(services + endpoints) to find them, not O(services × endpoints).
    let by_name: HashMap<String, &Arc<ContainerNetwork>> =
        networks.iter().map(|n| (n.name_any(), n)).collect();
    let mut members: HashMap<(Option<String>, &str), Vec<&Arc<ContainerEndpoint>>> = HashMap::new();
    for ep in endpoints {
        if ep.metadata.deletion_timestamp.is_none() {
            members
                .entry((ep.namespace(), ep.spec.network.as_str()))
                .or_default()
                .push(ep);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        if svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(net) = by_name.get(&svc.spec.network) else {
            continue;
        };
        let subnets = v4_subnets(net);
        let meshed = net.spec.driver == Driver::Overlay
            && !net.spec.overlay.as_ref().is_some_and(|o| o.encrypted);
        if subnets.is_empty() {
            continue;
        }
        let vip = match svc.spec.endpoint_mode {
            EndpointMode::Dnsrr => None,
            EndpointMode::Vip => {
                match svc
                    .status
                    .as_ref()
                    .and_then(|s| s.vip.as_deref())
                    .and_then(|v| v.parse::<Ipv4Addr>().ok())
                {
                    Some(v) if subnets.iter().any(|s| s.contains(&v)) => Some(v),
                    _ => continue,
                }
            }
        };
        let Ok(selector) = Selector::try_from(svc.spec.selector.clone()) else {
            continue;
        };
        let mut eps: Vec<EndpointInput> = members
            .get(&(svc.namespace(), svc.spec.network.as_str()))
            .into_iter()
            .flatten()
            .filter(|ep| selector.matches(ep.labels()))
            .filter_map(|ep| {
                Some(EndpointInput {
                    address: endpoint_address(ep)?,
                    ready: ep
                        .status
                        .as_ref()
                        .is_some_and(|s| is_true(&s.conditions, types::READY)),
                    local: ep.spec.node == node,
                    via: if meshed && ep.spec.node != node {
                        addresses.get(&ep.spec.node).copied()
                    } else {
                        None
                    },
                })
            })
            .collect();
        // The order decides the numgen arms: keep it stable whatever the cache's order.
        eps.sort_by_key(|e| e.address);
        eps.dedup_by_key(|e| e.address);
        let ports = svc
            .spec
            .ports
            .iter()
            .filter_map(|p| {
                Some(PortInput {
                    protocol: p.protocol,
                    port: u16::try_from(p.port).ok()?,
                    target: u16::try_from(p.target()).ok()?,
                    publish: p
                        .publish
                        .as_ref()
                        .and_then(|pb| Some((pb.mode, u16::try_from(pb.published_port).ok()?))),
                })
            })
            .collect();
        out.push(ServiceInput {
            id: service_id(svc),
            vip,
            subnets,
            ports,
            affinity: svc
                .spec
                .session_affinity
                .as_ref()
                .and_then(|a| u32::try_from(a.timeout_seconds).ok()),
            ingress_policy: svc.spec.ingress_traffic_policy,
            endpoints: eps,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).expect("object"))
    }

    #[test]
    fn services_take_selected_endpoints_with_readiness_and_locality() {
        let net: Arc<ContainerNetwork> = obj(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
            "metadata": {"name": "web"}, "spec": {"driver": "bridge"},
            "status": {"subnets": ["10.0.0.0/24"]}}));
        let svc: Arc<ContainerService> = obj(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"network": "web", "selector": {"matchLabels": {"app": "web"}},
                     "ports": [{"port": 80, "targetPort": 8080}],
                     "sessionAffinity": {"timeoutSeconds": 60}},
            "status": {"vip": "10.0.0.241", "readyEndpoints": 1}}));
        let ep = |name: &str,
                  node: &str,
                  app: &str,
                  addr: &str,
                  ready: &str|
         -> Arc<ContainerEndpoint> {
            obj(
                json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
                "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
                "spec": {"network": "web", "node": node, "sandbox": "/var/run/netns/x"},
                "status": {"address": addr, "conditions": [{"type": "Ready", "status": ready,
                    "reason": "x", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
            )
        };
        let eps = vec![
            ep("b", "n2", "web", "10.0.0.3/24", "True"),
            ep("a", "n1", "web", "10.0.0.2/24", "False"),
            ep("c", "n1", "db", "10.0.0.4/24", "True"),
        ];
        let got = service_inputs("n1", &[svc], &[net], &eps, &BTreeMap::new());
        assert_eq!(got.len(), 1);
        let s = &got[0];
        assert_eq!(s.id, "default/web");
        assert_eq!(s.vip, Some("10.0.0.241".parse().unwrap()));
        assert_eq!(s.affinity, Some(60));
        assert_eq!(s.ports[0].target, 8080);
        assert_eq!(
            s.endpoints,
            vec![
                EndpointInput {
                    address: "10.0.0.2".parse().unwrap(),
                    ready: false,
                    local: true,
                    via: None
                },
                EndpointInput {
                    address: "10.0.0.3".parse().unwrap(),
                    ready: true,
                    local: false,
                    via: None
                },
            ]
        );
    }

    #[test]
    fn a_remote_endpoint_of_a_plain_overlay_is_reached_through_its_nodes_address() {
        let net = |encrypted: bool| -> Arc<ContainerNetwork> {
            obj(json!({
                "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
                "metadata": {"name": "web"},
                "spec": {"driver": "overlay", "overlay": {"encrypted": encrypted}},
                "status": {"subnets": ["10.0.0.0/24"]}}))
        };
        let svc: Arc<ContainerService> = obj(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"network": "web", "selector": {"matchLabels": {"app": "web"}},
                     "ports": [{"port": 80}]},
            "status": {"vip": "10.0.0.241"}}));
        let ep = |name: &str, node: &str, addr: &str| -> Arc<ContainerEndpoint> {
            obj(
                json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                "spec": {"network": "web", "node": node, "sandbox": "/var/run/netns/x"},
                "status": {"address": addr}}),
            )
        };
        let eps = vec![ep("a", "n1", "10.0.0.2/24"), ep("b", "n2", "10.0.0.3/24")];
        let nodes: BTreeMap<String, Ipv4Addr> = [
            ("n1".to_string(), "192.0.2.11".parse().unwrap()),
            ("n2".to_string(), "192.0.2.12".parse().unwrap()),
        ]
        .into();
        let via = |encrypted: bool| -> Vec<Option<Ipv4Addr>> {
            service_inputs(
                "n1",
                std::slice::from_ref(&svc),
                &[net(encrypted)],
                &eps,
                &nodes,
            )[0]
            .endpoints
            .iter()
            .map(|e| e.via)
            .collect()
        };
        assert_eq!(via(false), vec![None, Some("192.0.2.12".parse().unwrap())]);
        // Encrypted: never over the clear underlay.
        assert_eq!(via(true), vec![None, None]);
        assert_eq!(
            mesh_peers("n1", &nodes),
            BTreeSet::from(["192.0.2.12".parse().unwrap()])
        );
    }
}
