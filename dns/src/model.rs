//! The name data: what the agent feeds (networks and endpoints) and the index queries read.
//!
//! [`Data`] is the fed state, changed only by [`Data::apply`]; [`Index`] is built from it in
//! one go and never changed, so a query reads one consistent version while the next is built.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::services::{Service, check_service, index_services};

/// The zone under which `<name>.<network>.<zone>` answers when a network names none.
pub const DEFAULT_ZONE: &str = "weft.internal";

/// One network whose endpoints this node's server names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// No way out: queries for other names are never forwarded for its sandboxes.
    #[serde(default)]
    pub internal: bool,
    /// Addresses on this node its sandboxes reach the server at (bridge/overlay gateways).
    #[serde(default)]
    pub gateways: Vec<IpAddr>,
    /// Resolvers for names outside Weft; `None` = the node's (its resolv.conf).
    #[serde(default)]
    pub upstreams: Option<Vec<SocketAddr>>,
    /// Cluster zone for `<name>.<network>.<zone>`; `None` = [`DEFAULT_ZONE`].
    #[serde(default)]
    pub zone: Option<String>,
}

/// One attachment of a sandbox to a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Unique key of the endpoint (e.g. `namespace/name`).
    pub id: String,
    pub network: String,
    /// Same value on every endpoint of one sandbox (container id), so a sandbox on several
    /// networks sees the names of all of them whichever gateway it asks.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// Its addresses on `network` (v4 and v6).
    pub addresses: Vec<IpAddr>,
    /// Endpoint name, aliases and container name; the first one is what PTR answers.
    pub names: Vec<String>,
    /// The sandbox's network namespace on this node, for a listener at 127.0.0.11 inside it
    /// (macvlan sandboxes cannot reach their node's addresses). Needs `sandbox`, which keys
    /// the listener.
    #[serde(default)]
    pub netns: Option<PathBuf>,
}

/// Everything the agent has fed, keyed for replacement by deltas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub networks: BTreeMap<String, Network>,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Service names (`services.rs`); a snapshot leaves them alone, `ReplaceServices` sets all.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
}

/// A change the agent sends: a full snapshot first, then deltas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Snapshot {
        networks: Vec<Network>,
        endpoints: Vec<Endpoint>,
    },
    UpsertNetwork(Network),
    RemoveNetwork {
        name: String,
    },
    UpsertEndpoint(Endpoint),
    RemoveEndpoint {
        id: String,
    },
    ReplaceServices {
        services: Vec<Service>,
    },
    UpsertService(Service),
    RemoveService {
        id: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidChange {
    #[error("{0:?} is not a DNS name (labels of 1-63 letters, digits, '-' or '_', 253 at most)")]
    Name(String),
    #[error("endpoint {0:?} has no address")]
    NoAddress(String),
}

/// Longest name accepted, as RFC 1035 has it without the final dot.
const MAX_NAME: usize = 253;

/// Whether the server takes `name` (what a feeder filters names with before sending).
pub fn is_dns_name(name: &str) -> bool {
    check_name(name).is_ok()
}

pub(crate) fn check_name(name: &str) -> Result<(), InvalidChange> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > MAX_NAME || !name.split('.').all(label_ok) {
        return Err(InvalidChange::Name(name.to_owned()));
    }
    Ok(())
}

fn check_network(n: &Network) -> Result<(), InvalidChange> {
    check_name(&n.name)?;
    n.zone.as_deref().map_or(Ok(()), check_name)
}

/// Parsed lists come with room for more (JSON gives no length up front); 10,000 endpoints
/// carry ~1 MiB of that room for ever unless it is given back.
fn compact(mut e: Endpoint) -> Endpoint {
    e.addresses.shrink_to_fit();
    e.names.shrink_to_fit();
    e
}

fn check_endpoint(e: &Endpoint) -> Result<(), InvalidChange> {
    if e.addresses.is_empty() {
        return Err(InvalidChange::NoAddress(e.id.clone()));
    }
    e.names.iter().try_for_each(|n| check_name(n))
}

impl Data {
    /// Apply one change whole, or not at all when any part of it is invalid.
    pub fn apply(&mut self, change: Change) -> Result<(), InvalidChange> {
        match change {
            Change::Snapshot {
                networks,
                endpoints,
            } => {
                networks.iter().try_for_each(check_network)?;
                endpoints.iter().try_for_each(check_endpoint)?;
                self.networks = networks.into_iter().map(|n| (n.name.clone(), n)).collect();
                self.endpoints = endpoints
                    .into_iter()
                    .map(|e| (e.id.clone(), compact(e)))
                    .collect();
            }
            Change::UpsertNetwork(n) => {
                check_network(&n)?;
                self.networks.insert(n.name.clone(), n);
            }
            Change::RemoveNetwork { name } => {
                self.networks.remove(&name);
            }
            Change::UpsertEndpoint(e) => {
                check_endpoint(&e)?;
                self.endpoints.insert(e.id.clone(), compact(e));
            }
            Change::RemoveEndpoint { id } => {
                self.endpoints.remove(&id);
            }
            Change::ReplaceServices { services } => {
                services.iter().try_for_each(check_service)?;
                self.services = services.into_iter().map(|s| (s.id.clone(), s)).collect();
            }
            Change::UpsertService(svc) => {
                check_service(&svc)?;
                self.services.insert(svc.id.clone(), svc);
            }
            Change::RemoveService { id } => {
                self.services.remove(&id);
            }
        }
        Ok(())
    }

    /// The whole data as the change that recreates it.
    pub fn snapshot(&self) -> Change {
        Change::Snapshot {
            networks: self.networks.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
        }
    }
}

/// Position of a network in [`Index::networks`].
pub type NetId = u32;

/// The sandbox an endpoint belongs to, when the feed says.
type Sandbox = Option<Box<str>>;

/// One network, as queries read it.
#[derive(Debug)]
pub struct NetNames {
    pub name: Box<str>,
    pub zone: Box<str>,
    pub internal: bool,
    pub upstreams: Option<Vec<SocketAddr>>,
    /// Lower-case name → addresses of every endpoint carrying it. The key is shared with the
    /// PTR entries of the endpoints it is the first name of.
    pub names: HashMap<Arc<str>, Box<[IpAddr]>>,
}

/// How an asking sandbox is known: by the address it asks from (gateway listeners), or by
/// the listener inside its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// Arrived at this local (gateway) address.
    Gateway(IpAddr),
    /// Arrived at the listener inside this sandbox's namespace.
    Sandbox(Box<str>),
    /// Arrived at an address for cluster DNS (CoreDNS forwarding the zone): any asker, but
    /// only `<name>.<network>.<zone>` is answered, for every network, and nothing forwarded.
    Cluster(IpAddr),
}

/// An endpoint holding an address.
#[derive(Debug)]
struct Holder {
    network: NetId,
    sandbox: Sandbox,
    /// Its first name (lower case, the key in its network's names), qualified when PTR
    /// answers: one string per name, not two.
    pointer: Option<Arc<str>>,
}

/// The read-only lookup tables built from [`Data`].
#[derive(Debug, Default)]
pub struct Index {
    pub networks: Vec<NetNames>,
    by_network: HashMap<Box<str>, NetId>,
    /// Gateway address → networks served there.
    gateways: HashMap<IpAddr, Vec<NetId>>,
    /// Endpoint address → who has it (askers are found here, and PTR answered).
    addresses: HashMap<IpAddr, Box<[Holder]>>,
    /// Sandbox → every network it is on (on this node's data).
    sandboxes: HashMap<Box<str>, Vec<NetId>>,
    /// Sandboxes with a namespace, for the listeners at 127.0.0.11 inside them.
    pub sandbox_netns: BTreeMap<Box<str>, PathBuf>,
}

impl Index {
    pub fn build(data: &Data) -> Self {
        let mut ix = Index::default();
        for n in data.networks.values() {
            let id = ix.networks.len() as NetId;
            ix.by_network.insert(n.name.as_str().into(), id);
            for g in &n.gateways {
                ix.gateways.entry(*g).or_default().push(id);
            }
            ix.networks.push(NetNames {
                name: n.name.to_ascii_lowercase().into(),
                zone: n
                    .zone
                    .as_deref()
                    .unwrap_or(DEFAULT_ZONE)
                    .to_ascii_lowercase()
                    .into(),
                internal: n.internal,
                upstreams: n.upstreams.clone(),
                names: HashMap::new(),
            });
        }
        for e in data.endpoints.values() {
            // An endpoint of a network not (yet) fed names nothing: deltas may come in any order.
            let Some(&id) = ix.by_network.get(e.network.as_str()) else {
                continue;
            };
            let sandbox: Sandbox = e.sandbox.as_deref().map(Into::into);
            if let Some(s) = &sandbox {
                let nets = ix.sandboxes.entry(s.clone()).or_default();
                if !nets.contains(&id) {
                    nets.push(id);
                }
                if let Some(path) = &e.netns {
                    ix.sandbox_netns.insert(s.clone(), path.clone());
                }
            }
            let net = &mut ix.networks[id as usize];
            let mut ptr_name: Option<Arc<str>> = None;
            for name in &e.names {
                let key = net.add(name, &e.addresses);
                ptr_name.get_or_insert(key);
            }
            for a in &e.addresses {
                let holders = ix.addresses.entry(*a).or_default();
                append(
                    holders,
                    std::iter::once(Holder {
                        network: id,
                        sandbox: sandbox.clone(),
                        pointer: ptr_name.clone(),
                    }),
                );
            }
        }
        index_services(&mut ix, data.services.values());
        ix
    }

    /// Let `name` on `network` answer `addrs` too (service names, `services.rs`).
    pub(crate) fn add_names(&mut self, network: &str, name: &str, addrs: &[IpAddr]) {
        if let Some(&id) = self.by_network.get(network) {
            self.networks[id as usize].add(name, addrs);
        }
    }

    /// Addresses the gateway listeners bind.
    pub fn gateway_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.gateways.keys().copied()
    }

    /// The networks of the sandbox asking from `source` via `via`; empty when it is none of
    /// ours (the server is no open resolver). The first one is the network asked through.
    pub fn asker_networks(&self, via: &Via, source: IpAddr) -> Vec<NetId> {
        let mut nets: Vec<NetId> = Vec::new();
        let add = |id: NetId, nets: &mut Vec<NetId>| {
            if !nets.contains(&id) {
                nets.push(id);
            }
        };
        match via {
            Via::Gateway(local) => {
                let served = self.gateways.get(local).map(Vec::as_slice).unwrap_or(&[]);
                let Some(holders) = self.addresses.get(&source) else {
                    return nets;
                };
                for h in holders.iter().filter(|h| served.contains(&h.network)) {
                    add(h.network, &mut nets);
                    if let Some(others) = h.sandbox.as_ref().and_then(|s| self.sandboxes.get(s)) {
                        others.iter().for_each(|o| add(*o, &mut nets));
                    }
                }
            }
            Via::Sandbox(s) => {
                if let Some(all) = self.sandboxes.get(s) {
                    all.iter().for_each(|o| add(*o, &mut nets));
                }
            }
            Via::Cluster(_) => (0..self.networks.len() as NetId).for_each(|o| add(o, &mut nets)),
        }
        nets
    }

    /// `qname` as cluster DNS may ask it: only `<name>.<network>.<zone>`, on any network.
    pub fn lookup_qualified(&self, qname: &str) -> Lookup<&[IpAddr]> {
        let found: Vec<&[IpAddr]> = self
            .networks
            .iter()
            .filter_map(|n| {
                let name = strip(qname, &n.zone).and_then(|p| strip(p, &n.name))?;
                n.names.get(name).map(|a| &**a)
            })
            .collect();
        if !found.is_empty() {
            Lookup::Found(found)
        } else if self
            .networks
            .iter()
            .any(|n| strip(qname, &n.zone).is_some() || qname == &*n.zone)
        {
            Lookup::NotOnAskersNetworks
        } else {
            Lookup::Elsewhere
        }
    }

    /// What `qname` (lower case, no final dot) means to a sandbox on `nets`.
    pub fn lookup(&self, nets: &[NetId], qname: &str) -> Lookup<&[IpAddr]> {
        let mut found: Vec<&[IpAddr]> = Vec::new();
        for &id in nets {
            let net = &self.networks[id as usize];
            let bare = strip_suffix(qname, &net.name, &net.zone);
            if let Some(addrs) = net.names.get(bare) {
                found.push(&**addrs);
            }
        }
        if !found.is_empty() {
            return Lookup::Found(found);
        }
        if self.is_ours(qname) {
            Lookup::NotOnAskersNetworks
        } else {
            Lookup::Elsewhere
        }
    }

    /// Whether `qname` is a Weft name at all: under a zone, a name on some network, or
    /// `<name>.<network>`.
    fn is_ours(&self, qname: &str) -> bool {
        // One look per network (a handful per node) instead of a set of every name: this path
        // only runs for names that are not the asker's, and the set cost 50 bytes a name.
        if self.is_a_name(qname) {
            return true;
        }
        self.networks.iter().any(|n| {
            qname == &*n.zone
                || qname.ends_with(&*n.zone) && qname[..qname.len() - n.zone.len()].ends_with('.')
                || qname
                    .strip_suffix(&*n.name)
                    .and_then(|p| p.strip_suffix('.'))
                    .is_some_and(|p| self.is_a_name(p))
        })
    }

    /// Whether some endpoint on some network is called `name`.
    fn is_a_name(&self, name: &str) -> bool {
        self.networks.iter().any(|n| n.names.contains_key(name))
    }

    /// PTR names for `addr` as seen from `nets`, fully qualified.
    pub fn pointer(&self, nets: &[NetId], addr: IpAddr) -> Lookup<String> {
        let Some(holders) = self.addresses.get(&addr) else {
            return Lookup::Elsewhere;
        };
        let named: Vec<(NetId, &str)> = holders
            .iter()
            .filter_map(|h| Some((h.network, h.pointer.as_deref()?)))
            .collect();
        if named.is_empty() {
            return Lookup::Elsewhere;
        }
        let visible: Vec<String> = named
            .iter()
            .filter(|(id, _)| nets.contains(id))
            .map(|&(id, name)| {
                let net = &self.networks[id as usize];
                format!("{name}.{}.{}.", net.name, net.zone)
            })
            .collect();
        if visible.is_empty() {
            Lookup::NotOnAskersNetworks
        } else {
            Lookup::Found(visible)
        }
    }

    /// Resolvers to forward to for a sandbox on `nets`: the first non-internal network's
    /// override, `Some(None)` for the node's own, `None` when every network is internal.
    pub fn upstreams(&self, nets: &[NetId]) -> Option<Option<&[SocketAddr]>> {
        nets.iter()
            .map(|&id| &self.networks[id as usize])
            .find(|n| !n.internal)
            .map(|n| n.upstreams.as_deref())
    }
}

impl NetNames {
    /// Let `name` (any case) answer `addrs` too; returns its key.
    fn add(&mut self, name: &str, addrs: &[IpAddr]) -> Arc<str> {
        let lower = name.to_ascii_lowercase();
        let key = match self.names.get_key_value(lower.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(lower),
        };
        let entry = self.names.entry(key.clone()).or_default();
        let new: Vec<IpAddr> = addrs
            .iter()
            .enumerate()
            .filter(|&(i, a)| !entry.contains(a) && !addrs[..i].contains(a))
            .map(|(_, a)| *a)
            .collect();
        append(entry, new);
        key
    }
}

/// Add `more` to the end of `list`, which stays exactly as long as it is: most lists hold one
/// item, and a Vec's first push reserves four (half the index's memory, when they were Vecs).
fn append<T>(list: &mut Box<[T]>, more: impl IntoIterator<Item = T>) {
    let mut items = std::mem::take(list).into_vec();
    items.extend(more);
    *list = items.into_boxed_slice();
}

/// `prefix` of `prefix.suffix`, if it is that.
fn strip<'q>(s: &'q str, suffix: &str) -> Option<&'q str> {
    s.strip_suffix(suffix)
        .and_then(|p| p.strip_suffix('.'))
        .filter(|p| !p.is_empty())
}

/// `name.<network>.<zone>` and `name.<network>` → `name`; anything else as it is.
fn strip_suffix<'q>(qname: &'q str, network: &str, zone: &str) -> &'q str {
    strip(qname, zone)
        .and_then(|p| strip(p, network))
        .or_else(|| strip(qname, network))
        .unwrap_or(qname)
}

/// What a name means to the asker.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// On the asker's networks: these records (for addresses, one slice per network
    /// carrying the name).
    Found(Vec<T>),
    /// A Weft name, but on none of the asker's networks: NXDOMAIN.
    NotOnAskersNetworks,
    /// Not a Weft name: forward.
    Elsewhere,
}
