//! The names feed: what this node's `weft-dns` should know, sent to the server as changes.
//!
//! Two sources share one [`Names`]: the pass (networks and this node's endpoints, derived
//! from the same inputs as the kernel, sent as the difference from what it sent last), and
//! the per-network endpoint watches (other nodes' endpoints, each sent on its watch event:
//! no pass in between, and nothing recomputed for the endpoints that did not change).
//!
//! Service names come from the services loop (`services.rs`), which computes them with the
//! services it programs and feeds them through a [`ServiceFeed`] on the same connection:
//! the snapshot of one part never touches the other.
//!
//! The server is its own process ([`weft_dns::feed::Feeder`] reconnects and resends a
//! snapshot whenever it comes back); the agent's restart costs nothing either: its first
//! pass sends a snapshot that replaces whatever the server had.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use weft_api::{ContainerEndpoint, ContainerService, NetworkDns};
use weft_dns::feed::Feeder;
use weft_dns::model::{Change, Data, Endpoint, Network, is_dns_name};
use weft_dns::services::Service;

use crate::drivers::{self, EndpointShape, Networks, NodeFacts};
use crate::endpoints::{ANNOTATION_CONTAINER_NAME, Attachment, DnsNames, EndpointId};
use crate::services::inputs::service_id;
use crate::services::plan::ServiceInput;

/// The names part of the node's server: networks and endpoints.
pub(super) struct Names {
    feeder: Feeder,
    node: String,
    fed: Mutex<Fed>,
}

#[derive(Default)]
struct Fed {
    /// What the pass sent last (networks, this node's endpoints); `None` before its first.
    local: Option<Data>,
    /// Other nodes' endpoints on the followed networks, by id, as sent (or to be sent with
    /// the pass's first snapshot).
    remote: BTreeMap<String, Endpoint>,
    /// The networks whose endpoint watches are open: an event of a closed one is late.
    followed: BTreeSet<String>,
}

impl Names {
    /// Feed the server at `path` (reconnecting in the background while it is away) with the
    /// names `node` serves.
    pub(super) fn spawn(path: PathBuf, node: &str) -> Self {
        Self {
            feeder: Feeder::spawn(path),
            node: node.to_string(),
            fed: Mutex::default(),
        }
    }

    /// The feed of service names, on the same connection.
    pub(super) fn services(&self) -> ServiceFeed {
        ServiceFeed {
            feeder: self.feeder.clone(),
            fed: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fed> {
        self.fed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pass's part (`want`: networks and this node's endpoints, see [`desired`]): all
    /// at once the first time, with the other nodes' endpoints the watches have seen so far,
    /// then the changes.
    pub(super) fn pass(&self, want: Data) {
        let mut fed = self.lock();
        match &fed.local {
            None => self.feeder.replace_all(
                want.networks.values().cloned().collect(),
                want.endpoints
                    .values()
                    .chain(fed.remote.values())
                    .cloned()
                    .collect(),
            ),
            Some(old) => {
                for change in changes(old, &want) {
                    send(&self.feeder, change);
                }
            }
        }
        fed.local = Some(want);
    }

    /// The endpoint watches open now: the other nodes' endpoints of the networks left are
    /// no longer named.
    pub(super) fn follow(&self, networks: &BTreeSet<String>) {
        let mut fed = self.lock();
        fed.followed = networks.clone();
        let left: Vec<String> = fed
            .remote
            .values()
            .filter(|e| !networks.contains(&e.network))
            .map(|e| e.id.clone())
            .collect();
        for id in left {
            self.remove_remote(&mut fed, &id);
        }
    }

    /// `network`'s watch saw `cep` (added or changed).
    pub(super) fn seen(&self, network: &str, cep: &ContainerEndpoint) {
        let mut fed = self.lock();
        if !fed.followed.contains(network) {
            return;
        }
        let id = endpoint_id(cep);
        match remote_endpoint(&self.node, network, cep) {
            Some(e) if fed.remote.get(&id) == Some(&e) => {}
            Some(e) => {
                if fed.local.is_some() {
                    self.feeder.upsert_endpoint(e.clone());
                }
                fed.remote.insert(id, e);
            }
            None => self.remove_remote(&mut fed, &id),
        }
    }

    /// A network's watch saw `cep` deleted.
    pub(super) fn gone(&self, cep: &ContainerEndpoint) {
        let mut fed = self.lock();
        self.remove_remote(&mut fed, &endpoint_id(cep));
    }

    /// `network`'s watch listed its endpoints again (after a gap): those not in `ids` went
    /// meanwhile.
    pub(super) fn relisted(&self, network: &str, ids: &HashSet<String>) {
        let mut fed = self.lock();
        let gone: Vec<String> = fed
            .remote
            .values()
            .filter(|e| e.network == network && !ids.contains(&e.id))
            .map(|e| e.id.clone())
            .collect();
        for id in gone {
            self.remove_remote(&mut fed, &id);
        }
    }

    fn remove_remote(&self, fed: &mut Fed, id: &str) {
        if fed.remote.remove(id).is_some() && fed.local.is_some() {
            self.feeder.remove_endpoint(id);
        }
    }
}

/// The services loop's part: what it sent last, to send only what changed.
pub(super) struct ServiceFeed {
    feeder: Feeder,
    fed: Option<Data>,
}

impl ServiceFeed {
    /// Bring the server's services to `want`'s: all at once the first time, then the changes.
    pub(super) fn update(&mut self, want: Data) {
        match &self.fed {
            None => self
                .feeder
                .replace_services(want.services.values().cloned().collect()),
            Some(fed) => {
                for change in changes(fed, &want) {
                    send(&self.feeder, change);
                }
            }
        }
        self.fed = Some(want);
    }
}

fn send(feeder: &Feeder, change: Change) {
    match change {
        Change::UpsertNetwork(n) => feeder.upsert_network(n),
        Change::RemoveNetwork { name } => feeder.remove_network(&name),
        Change::UpsertEndpoint(e) => feeder.upsert_endpoint(e),
        Change::RemoveEndpoint { id } => feeder.remove_endpoint(&id),
        Change::Snapshot {
            networks,
            endpoints,
        } => feeder.replace_all(networks, endpoints),
        Change::ReplaceServices { services } => feeder.replace_services(services),
        Change::UpsertService(s) => feeder.upsert_service(s),
        Change::RemoveService { id } => feeder.remove_service(&id),
    }
}

/// The deltas that turn `old` into `new`: networks before the endpoints and services on
/// them, removals the other way round (the server takes any order, but queries in between
/// see fewer half states this way).
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
    for (id, s) in &new.services {
        if old.services.get(id) != Some(s) {
            out.push(Change::UpsertService(s.clone()));
        }
    }
    for id in old.services.keys() {
        if !new.services.contains_key(id) {
            out.push(Change::RemoveService { id: id.clone() });
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

/// The service names of the services this node programs (`inputs`, from `objects`): a `vip`
/// service's name answers its VIP, a `dnsrr` service's its Ready endpoints, and
/// `tasks.<name>` always the Ready endpoints. A service whose names the server would refuse
/// is left out (one would get the whole change refused). The server answers them only on
/// networks it was fed, i.e. those this node programs.
pub(super) fn desired_services(inputs: &[ServiceInput], objects: &[Arc<ContainerService>]) -> Data {
    let by_id: HashMap<String, &ContainerService> =
        objects.iter().map(|s| (service_id(s), &**s)).collect();
    let mut data = Data::default();
    for input in inputs {
        let Some(svc) = by_id.get(&input.id) else {
            continue;
        };
        let name = svc.name_any();
        if !is_dns_name(&name) || !is_dns_name(&format!("tasks.{name}")) {
            continue;
        }
        data.services.insert(
            input.id.clone(),
            Service {
                id: input.id.clone(),
                network: svc.spec.network.clone(),
                name,
                vip: input.vip.map(IpAddr::V4),
                endpoints: input
                    .endpoints
                    .iter()
                    .filter(|e| e.ready)
                    .map(|e| IpAddr::V4(e.address))
                    .collect(),
            },
        );
    }
    data
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

/// The pass's part of what this node's server should know. Networks: those this node
/// programs, served at their gateway on routed drivers (bridge, overlay). Endpoints: this
/// node's attachments, names from their object (`mine`: this node's endpoint objects) once
/// it is in the cache, which follows alias edits, else from the CNI call. macvlan/ipvlan
/// sandboxes get the listener inside their namespace (`netns`). Other nodes' endpoints come
/// from the watches ([`remote_endpoint`]).
pub(super) fn desired(
    node: &str,
    networks: &Networks,
    facts: &NodeFacts,
    local: &[Attachment],
    mine: &[Arc<ContainerEndpoint>],
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
                upstreams: net
                    .spec
                    .dns
                    .as_ref()
                    .and_then(NetworkDns::upstream_addresses),
                zone: None,
            },
        );
    }
    let objects: HashMap<EndpointId, &ContainerEndpoint> = mine
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
    data
}

/// Another node's endpoint as this node's server names it, seen by the watch of `network`
/// (a cluster-scope network this node programs: overlay, macvlan, ipvlan; a bridge is
/// node-local, each node has its own subnet space, so other nodes' endpoints on it are not
/// ours to name). `None`: not named (this node's own, being deleted, no address yet).
pub(super) fn remote_endpoint(
    node: &str,
    network: &str,
    cep: &ContainerEndpoint,
) -> Option<Endpoint> {
    if cep.spec.node == node
        || cep.spec.network != network
        || cep.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    let addresses = status_addresses(cep);
    if addresses.is_empty() {
        return None;
    }
    Some(Endpoint {
        id: endpoint_id(cep),
        network: network.to_string(),
        sandbox: Some(sandbox_key(&cep.spec.node, &cep.spec.sandbox)),
        addresses,
        names: names_of_object(cep),
        netns: None,
    })
}

/// The feed's key of an endpoint object (the same as its attachment's, `namespace/name`).
pub(super) fn endpoint_id(cep: &ContainerEndpoint) -> String {
    format!("{}/{}", cep.namespace().unwrap_or_default(), cep.name_any())
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

    fn svc(id: &str, vip: Option<&str>, endpoints: &[&str]) -> Service {
        Service {
            id: id.into(),
            network: "blue".into(),
            name: id.into(),
            vip: vip.map(|v| v.parse().expect("ip")),
            endpoints: endpoints.iter().map(|a| a.parse().expect("ip")).collect(),
        }
    }

    fn services(list: Vec<Service>) -> Data {
        Data {
            services: list.into_iter().map(|s| (s.id.clone(), s)).collect(),
            ..Data::default()
        }
    }

    #[test]
    fn only_the_services_that_changed_are_sent_between_the_endpoint_upserts_and_removals() {
        let old = Data {
            services: services(vec![
                svc("web", Some("10.0.0.241"), &["10.0.0.2", "10.0.0.3"]),
                svc("cache", None, &["10.0.0.4"]),
                svc("db", Some("10.0.0.242"), &[]),
            ])
            .services,
            ..data(
                vec![net("blue", "10.0.0.1")],
                vec![ep("a", "blue", "10.0.0.2"), ep("b", "blue", "10.0.0.3")],
            )
        };
        assert_eq!(changes(&old, &old), Vec::new(), "nothing changed");
        // An endpoint goes away: `web`'s tasks lose it, `cache` is gone, `api` is new.
        let new = Data {
            services: services(vec![
                svc("web", Some("10.0.0.241"), &["10.0.0.2"]),
                svc("db", Some("10.0.0.242"), &[]),
                svc("api", None, &["10.0.0.2"]),
            ])
            .services,
            ..data(
                vec![net("blue", "10.0.0.1")],
                vec![ep("a", "blue", "10.0.0.2")],
            )
        };
        assert_eq!(
            changes(&old, &new),
            vec![
                Change::UpsertService(svc("api", None, &["10.0.0.2"])),
                Change::UpsertService(svc("web", Some("10.0.0.241"), &["10.0.0.2"])),
                Change::RemoveService { id: "cache".into() },
                Change::RemoveEndpoint { id: "b".into() },
            ]
        );
        let mut applied = old.clone();
        for c in changes(&old, &new) {
            applied.apply(c).expect("valid change");
        }
        assert_eq!(applied, new);
    }

    #[test]
    fn service_names_carry_the_vip_or_none_and_only_the_ready_endpoints() {
        use crate::services::plan::EndpointInput;
        let object = |name: &str, mode: &str| -> Arc<ContainerService> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"network": "blue", "selector": {"matchLabels": {"app": "web"}},
                             "endpointMode": mode, "ports": []},
                }))
                .expect("service"),
            )
        };
        let input = |name: &str, vip: Option<&str>| ServiceInput {
            id: format!("default/{name}"),
            vip: vip.map(|v| v.parse().expect("ip")),
            subnets: vec!["10.0.0.0/24".parse().expect("net")],
            ports: Vec::new(),
            affinity: None,
            ingress_policy: Default::default(),
            endpoints: vec![
                EndpointInput {
                    address: "10.0.0.2".parse().expect("ip"),
                    ready: true,
                    local: true,
                    via: None,
                },
                EndpointInput {
                    address: "10.0.0.3".parse().expect("ip"),
                    ready: false,
                    local: false,
                    via: None,
                },
                EndpointInput {
                    address: "10.0.0.4".parse().expect("ip"),
                    ready: true,
                    local: false,
                    via: None,
                },
            ],
        };
        // A name the server would refuse (`tasks.` + 250 characters is too long) is left out.
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(62),
            "b".repeat(62),
            "c".repeat(62),
            "d".repeat(62)
        );
        let got = desired_services(
            &[
                input("web", Some("10.0.0.241")),
                input("cache", None),
                input(&long, Some("10.0.0.242")),
                input("orphan", None),
            ],
            &[
                object("web", "vip"),
                object("cache", "dnsrr"),
                object(&long, "vip"),
            ],
        );
        let mut want = services(vec![
            svc("web", Some("10.0.0.241"), &["10.0.0.2", "10.0.0.4"]),
            svc("cache", None, &["10.0.0.2", "10.0.0.4"]),
        ]);
        want.services = want
            .services
            .into_values()
            .map(|mut s| {
                s.id = format!("default/{}", s.name);
                (s.id.clone(), s)
            })
            .collect();
        assert_eq!(got, want);
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

    fn remote(name: &str, node: &str, address: Option<&str>) -> ContainerEndpoint {
        let mut cep = serde_json::json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"network": "ovnet", "node": node, "sandbox": format!("/run/netns/{name}")},
        });
        if let Some(a) = address {
            cep["status"] = serde_json::json!({"address": a});
        }
        serde_json::from_value(cep).expect("endpoint")
    }

    /// The names a real server (fed through a real socket) answers on `ovnet`.
    fn served(store: &weft_dns::store::Store) -> BTreeSet<String> {
        store
            .index()
            .networks
            .iter()
            .filter(|n| &*n.name == "ovnet")
            .flat_map(|n| n.names.keys().map(|k| k.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn other_nodes_names_go_on_the_watch_event_and_with_the_network_they_are_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("dns.sock");
        let store = weft_dns::store::Store::new(Data::default());
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        tokio::spawn(weft_dns::store::serve_feed(listener, store.clone()));
        let names = Names::spawn(sock, "n1");
        let followed: BTreeSet<String> = ["ovnet".to_string()].into();
        names.follow(&followed);
        // Seen before the first pass: kept for its snapshot, nothing sent yet.
        names.seen("ovnet", &remote("a", "n2", Some("10.0.0.2/24")));
        names.seen("ovnet", &remote("unaddressed", "n2", None));
        names.seen("ovnet", &remote("mine", "n1", Some("10.0.0.9/24")));
        names.seen("other", &remote("late", "n2", Some("10.0.0.8/24")));
        assert!(served(&store).is_empty());
        let pass = data(vec![net("ovnet", "10.0.0.1")], vec![]);
        names.pass(pass.clone());
        names.feeder.synced().await;
        assert_eq!(served(&store), ["a".to_string()].into());
        // After it, each event is sent on its own; a pass that changed nothing sends nothing
        // and removes none of them.
        names.seen("ovnet", &remote("b", "n3", Some("10.0.0.3/24")));
        names.pass(pass.clone());
        names.feeder.synced().await;
        assert_eq!(served(&store), ["a".to_string(), "b".to_string()].into());
        // Deleted, being deleted, or gone while the watch was away (a relist without it).
        let mut deleting = remote("a", "n2", Some("10.0.0.2/24"));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        names.seen("ovnet", &deleting);
        names.feeder.synced().await;
        assert_eq!(served(&store), ["b".to_string()].into());
        names.seen("ovnet", &remote("c", "n3", Some("10.0.0.4/24")));
        names.gone(&remote("c", "n3", Some("10.0.0.4/24")));
        names.relisted("ovnet", &HashSet::new());
        names.feeder.synced().await;
        assert!(served(&store).is_empty());
        // The network no longer followed: its other nodes' endpoints go.
        names.seen("ovnet", &remote("d", "n3", Some("10.0.0.5/24")));
        names.feeder.synced().await;
        assert_eq!(served(&store), ["d".to_string()].into());
        names.follow(&BTreeSet::new());
        names.feeder.synced().await;
        assert_eq!(names.lock().remote.len(), 0);
        names.pass(data(vec![], vec![]));
        names.feeder.synced().await;
        assert!(served(&store).is_empty());
    }

    /// The names step's cost with 100,000 other nodes' endpoints cached. Before it was
    /// incremental, every pass recomputed and compared all of them (a debug build: `desired`
    /// 1.84 s + `changes` 0.71 s per pass). Now a pass touches its own node's endpoints only,
    /// and one remote change is one entry.
    #[tokio::test]
    #[ignore = "a measurement: cargo test -p weft-agent --lib names_step -- --ignored --nocapture"]
    async fn names_step_at_100000_endpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = Names::spawn(dir.path().join("dns.sock"), "n1");
        names.follow(&["ovnet".to_string()].into());
        let cep = |i: u32| {
            remote(
                &format!("ep-{i}"),
                &format!("n{}", 2 + i % 999),
                Some(&format!("10.{}.{}.{}/8", i >> 16, (i >> 8) & 255, i & 255)),
            )
        };
        let ceps: Vec<ContainerEndpoint> = (0..100_000).map(cep).collect();
        let t = std::time::Instant::now();
        for c in &ceps {
            names.seen("ovnet", c);
        }
        eprintln!("100,000 watch events (the first list): {:?}", t.elapsed());
        let pass = data(vec![net("ovnet", "10.0.0.1")], vec![]);
        let t = std::time::Instant::now();
        names.pass(pass.clone());
        eprintln!("first pass (snapshot of 100,000): {:?}", t.elapsed());
        let t = std::time::Instant::now();
        names.pass(pass.clone());
        eprintln!("a pass with nothing changed: {:?}", t.elapsed());
        let changed = cep(100_001);
        let t = std::time::Instant::now();
        names.seen("ovnet", &changed);
        eprintln!("one endpoint's event: {:?}", t.elapsed());
        assert_eq!(names.lock().remote.len(), 100_001);
    }

    #[test]
    fn a_networks_own_upstreams_are_fed_and_unset_means_the_nodes() {
        use crate::drivers::testutil::{allocate, network, node};
        let mut own = network("own", weft_api::Driver::Bridge);
        allocate(&mut own, &["10.5.0.0/24"], Some("10.5.0.1"));
        own.spec.dns = Some(NetworkDns {
            upstreams: vec![
                "192.0.2.53".into(),
                "192.0.2.54:5353".into(),
                "[2001:db8::53]:5353".into(),
            ],
        });
        let mut nodes = network("nodes", weft_api::Driver::Bridge);
        allocate(&mut nodes, &["10.6.0.0/24"], Some("10.6.0.1"));
        let networks = Networks::new(vec![own, nodes]);
        let data = desired("n1", &networks, &node("n1", "192.0.2.1"), &[], &[]);
        let upstreams = |name: &str| data.networks[name].upstreams.clone();
        assert_eq!(
            upstreams("own"),
            Some(vec![
                "192.0.2.53:53".parse().expect("addr"),
                "192.0.2.54:5353".parse().expect("addr"),
                "[2001:db8::53]:5353".parse().expect("addr"),
            ])
        );
        assert_eq!(upstreams("nodes"), None, "unset: the node's resolv.conf");
    }
}
