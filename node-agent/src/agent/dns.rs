//! The names feed: what this node's `weft-dns` should know, derived in every pass from the
//! same inputs as the kernel (networks, this node's attachments, other nodes' endpoints),
//! and sent to the server as the difference from what it was sent last.
//!
//! The server is its own process ([`weft_dns::feed::Feeder`] reconnects and resends a
//! snapshot whenever it comes back); the agent's restart costs nothing either: its first
//! pass sends a snapshot that replaces whatever the server had.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kube::ResourceExt;
use weft_api::ContainerEndpoint;
use weft_dns::feed::Feeder;
use weft_dns::model::{Change, Data, Endpoint, Network, is_dns_name};

use crate::drivers::{self, EndpointShape, Networks, NodeFacts};
use crate::endpoints::{ANNOTATION_CONTAINER_NAME, Attachment, DnsNames, EndpointId};

/// The agent's side of the feed: what was sent last, to send only what changed.
pub(super) struct NameFeed {
    feeder: Feeder,
    fed: Option<Data>,
}

impl NameFeed {
    /// Feed the server at `path` (reconnecting in the background while it is away).
    pub(super) fn spawn(path: PathBuf) -> Self {
        Self {
            feeder: Feeder::spawn(path),
            fed: None,
        }
    }

    /// Bring the server to `want`: everything at once the first time, then the changes.
    pub(super) fn update(&mut self, want: Data) {
        match &self.fed {
            None => self.feeder.replace_all(
                want.networks.values().cloned().collect(),
                want.endpoints.values().cloned().collect(),
            ),
            Some(fed) => {
                for change in changes(fed, &want) {
                    match change {
                        Change::UpsertNetwork(n) => self.feeder.upsert_network(n),
                        Change::RemoveNetwork { name } => self.feeder.remove_network(&name),
                        Change::UpsertEndpoint(e) => self.feeder.upsert_endpoint(e),
                        Change::RemoveEndpoint { id } => self.feeder.remove_endpoint(&id),
                        Change::Snapshot {
                            networks,
                            endpoints,
                        } => self.feeder.replace_all(networks, endpoints),
                        // `changes` compares networks and endpoints only: service names are
                        // not fed by the agent yet.
                        Change::ReplaceServices { .. }
                        | Change::UpsertService(_)
                        | Change::RemoveService { .. } => {}
                    }
                }
            }
        }
        self.fed = Some(want);
    }
}

/// The deltas that turn `old` into `new`: networks before the endpoints on them, endpoints
/// removed before their networks (the server takes any order, but queries in between see
/// fewer half states this way).
pub(super) fn changes(old: &Data, new: &Data) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, n) in &new.networks {
        if old.networks.get(name) != Some(n) {
            out.push(Change::UpsertNetwork(n.clone()));
        }
    }
    for (id, e) in &new.endpoints {
        if old.endpoints.get(id) != Some(e) {
            out.push(Change::UpsertEndpoint(e.clone()));
        }
    }
    for id in old.endpoints.keys() {
        if !new.endpoints.contains_key(id) {
            out.push(Change::RemoveEndpoint { id: id.clone() });
        }
    }
    for name in old.networks.keys() {
        if !new.networks.contains_key(name) {
            out.push(Change::RemoveNetwork { name: name.clone() });
        }
    }
    out
}

/// The endpoint's DNS names: its object's name, its aliases, the runtime's container name;
/// each once, and only what the server accepts as a name (one bad name would get the
/// whole endpoint refused).
pub fn endpoint_names(name: &str, extra: &DnsNames) -> Vec<String> {
    let mut seen = BTreeSet::new();
    std::iter::once(name)
        .chain(extra.aliases.iter().map(String::as_str))
        .chain(extra.container_name.as_deref())
        .filter(|n| is_dns_name(n) && seen.insert(n.to_ascii_lowercase()))
        .map(str::to_string)
        .collect()
}

fn names_of_object(cep: &ContainerEndpoint) -> Vec<String> {
    endpoint_names(
        &cep.name_any(),
        &DnsNames {
            aliases: cep.spec.aliases.clone(),
            container_name: cep.annotations().get(ANNOTATION_CONTAINER_NAME).cloned(),
        },
    )
}

/// One sandbox's key, the same on all its endpoints and unique in the cluster.
fn sandbox_key(node: &str, sandbox: &str) -> String {
    format!("{node}:{sandbox}")
}

/// What this node's server should know. Networks: those this node programs, served at their
/// gateway on routed drivers (bridge, overlay). Endpoints: this node's attachments (names
/// from their object once it is in the cache, which follows alias edits, else from the CNI
/// call) and, on cluster-scope networks (overlay, macvlan, ipvlan), every other node's
/// endpoint with an address. A bridge network is node-local (each node has its own subnet
/// space), so other nodes' endpoints on it are not ours to name. macvlan/ipvlan sandboxes
/// get the listener inside their namespace (`netns`).
pub(super) fn desired(
    node: &str,
    networks: &Networks,
    facts: &NodeFacts,
    local: &[Attachment],
    ceps: &[Arc<ContainerEndpoint>],
) -> Data {
    let mut data = Data::default();
    for net in networks.iter() {
        let driver = drivers::of(net);
        let shape = driver.endpoint_shape();
        if !shape.has_interface() {
            continue;
        }
        let mut gateways: Vec<IpAddr> = Vec::new();
        if shape.routed() {
            let planned = driver
                .address_space(net, facts)
                .ok()
                .flatten()
                .and_then(|s| s.gateway);
            let used = local
                .iter()
                .filter(|a| a.network == net.name)
                .filter_map(|a| a.gateway);
            for g in planned.into_iter().chain(used) {
                if !gateways.contains(&g) {
                    gateways.push(g);
                }
            }
        }
        data.networks.insert(
            net.name.clone(),
            Network {
                name: net.name.clone(),
                internal: net.spec.internal,
                gateways,
                upstreams: None,
                zone: None,
            },
        );
    }
    let objects: HashMap<EndpointId, &ContainerEndpoint> = ceps
        .iter()
        .filter(|c| c.spec.node == node)
        .map(|c| {
            let id = EndpointId {
                namespace: c.namespace().unwrap_or_default(),
                name: c.name_any(),
            };
            (id, &**c)
        })
        .collect();
    for att in local {
        let Some(net) = networks.get(&att.network) else {
            continue;
        };
        // Every family's address: a dual-stack endpoint answers A and AAAA.
        let addresses: Vec<IpAddr> = att.addresses().map(|(a, _)| a.addr()).collect();
        if addresses.is_empty() {
            continue;
        }
        if !data.networks.contains_key(&att.network) {
            continue;
        }
        let names = match objects.get(&att.id) {
            Some(cep) if cep.metadata.deletion_timestamp.is_some() => continue,
            Some(cep) => names_of_object(cep),
            None => endpoint_names(&att.id.name, &att.names),
        };
        let child = matches!(
            drivers::of(net).endpoint_shape(),
            EndpointShape::Child { .. }
        );
        let id = att.id.to_string();
        data.endpoints.insert(
            id.clone(),
            Endpoint {
                id,
                network: att.network.clone(),
                sandbox: Some(sandbox_key(node, &att.sandbox)),
                addresses,
                names,
                netns: child.then(|| PathBuf::from(&att.sandbox)),
            },
        );
    }
    for cep in ceps {
        if cep.spec.node == node || cep.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(net) = networks.get(&cep.spec.network) else {
            continue;
        };
        if !net.spec.driver.is_cluster_scope() || !data.networks.contains_key(&net.name) {
            continue;
        }
        let addresses = status_addresses(cep);
        if addresses.is_empty() {
            continue;
        }
        let id = format!("{}/{}", cep.namespace().unwrap_or_default(), cep.name_any());
        data.endpoints.insert(
            id.clone(),
            Endpoint {
                id,
                network: net.name.clone(),
                sandbox: Some(sandbox_key(&cep.spec.node, &cep.spec.sandbox)),
                addresses,
                names: names_of_object(cep),
                netns: None,
            },
        );
    }
    data
}

/// The addresses another node's agent reports for an endpoint: every family's
/// (`status.addresses`), or `status.address` from an agent that predates dual-stack.
fn status_addresses(cep: &ContainerEndpoint) -> Vec<IpAddr> {
    let Some(status) = cep.status.as_ref() else {
        return Vec::new();
    };
    let parse = |a: &str| a.split('/').next().and_then(|a| a.parse::<IpAddr>().ok());
    if status.addresses.is_empty() {
        status
            .address
            .as_deref()
            .and_then(parse)
            .into_iter()
            .collect()
    } else {
        status
            .addresses
            .iter()
            .filter_map(|a| parse(&a.address))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, gateway: &str) -> Network {
        Network {
            name: name.into(),
            internal: false,
            gateways: vec![gateway.parse().expect("ip")],
            upstreams: None,
            zone: None,
        }
    }

    fn ep(id: &str, network: &str, address: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            network: network.into(),
            sandbox: None,
            addresses: vec![address.parse().expect("ip")],
            names: vec![id.into()],
            netns: None,
        }
    }

    fn data(networks: Vec<Network>, endpoints: Vec<Endpoint>) -> Data {
        Data {
            networks: networks.into_iter().map(|n| (n.name.clone(), n)).collect(),
            endpoints: endpoints.into_iter().map(|e| (e.id.clone(), e)).collect(),
            services: Default::default(),
        }
    }

    #[test]
    fn only_what_changed_is_sent_networks_first_and_removals_last() {
        let old = data(
            vec![net("blue", "10.0.0.1"), net("red", "10.1.0.1")],
            vec![ep("a", "blue", "10.0.0.2"), ep("b", "red", "10.1.0.2")],
        );
        assert_eq!(
            changes(&old, &old),
            Vec::new(),
            "nothing changed, nothing sent"
        );
        let new = data(
            vec![net("blue", "10.0.0.1"), net("green", "10.2.0.1")],
            vec![ep("a", "blue", "10.0.0.9"), ep("c", "green", "10.2.0.2")],
        );
        assert_eq!(
            changes(&old, &new),
            vec![
                Change::UpsertNetwork(net("green", "10.2.0.1")),
                Change::UpsertEndpoint(ep("a", "blue", "10.0.0.9")),
                Change::UpsertEndpoint(ep("c", "green", "10.2.0.2")),
                Change::RemoveEndpoint { id: "b".into() },
                Change::RemoveNetwork { name: "red".into() },
            ]
        );
        // Applied in that order, the deltas give exactly the new data.
        let mut applied = old.clone();
        for c in changes(&old, &new) {
            applied.apply(c).expect("valid change");
        }
        assert_eq!(applied, new);
    }

    #[test]
    fn names_are_the_object_name_aliases_and_container_name_once_each_and_valid() {
        let extra = DnsNames {
            aliases: vec![
                "web".into(),
                "Web".into(),
                "bad name".into(),
                "db.v2".into(),
            ],
            container_name: Some("c1".into()),
        };
        assert_eq!(
            endpoint_names("cni-0123", &extra),
            vec!["cni-0123", "web", "db.v2", "c1"]
        );
        assert_eq!(
            endpoint_names("web", &DnsNames::default()),
            vec!["web"],
            "no extra names"
        );
    }

    #[test]
    fn another_nodes_dual_stack_endpoint_answers_in_both_families() {
        let cep = |status: serde_json::Value| -> ContainerEndpoint {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"network": "ovnet", "node": "n2", "sandbox": "/var/run/netns/x"},
                "status": status,
            }))
            .expect("endpoint")
        };
        let both = cep(serde_json::json!({
            "address": "10.1.0.5/24",
            "addresses": [{"address": "10.1.0.5/24"}, {"address": "fd00:1::5/64"}],
        }));
        let want: Vec<IpAddr> = vec![
            "10.1.0.5".parse().expect("v4"),
            "fd00:1::5".parse().expect("v6"),
        ];
        assert_eq!(status_addresses(&both), want);
        // An agent that predates dual-stack reports `address` only.
        let old = cep(serde_json::json!({"address": "10.1.0.6/24"}));
        assert_eq!(
            status_addresses(&old),
            vec!["10.1.0.6".parse::<IpAddr>().expect("v4")]
        );
        assert!(status_addresses(&cep(serde_json::json!({}))).is_empty());
    }
}
