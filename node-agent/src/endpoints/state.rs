//! The endpoints' state — attachments, the node's address allocators, problems, tombstones —
//! and the pass's planning over it: which endpoints exist, which get an address, what the
//! node needs for them (publish rules, other nodes' endpoints) and what kernel work follows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use kube::ResourceExt;
use weft_api::ContainerEndpoint;

use super::drift;
use super::ipam::NodeIpam;
use super::journal::{HeldAddress, Journal, TombstoneRecord};
use super::plan::{self, address_problem, derive_mac};
use super::sandbox::SandboxPolicy;
use super::translate::{cni_id_of, of_an_earlier_sandbox, remote_endpoints, request_of};
use super::{
    Attachment, EndpointId, EndpointRequest, HostPortRange, MirrorAddress, PortSpec, Publication,
};
use crate::drivers::{self, AddressSpace, EndpointShape, Networks, NodeFacts, Problem, Reason};
use crate::kernel::HostPorts;
use crate::model::{FdbEntry, KernelState, Neighbour, NftChain};

/// What the pass gets back from [`State::plan`] for the node's desired state.
#[derive(Default)]
pub struct NodeAdditions {
    pub publish_chains: BTreeMap<String, NftChain>,
    pub fdb: Vec<FdbEntry>,
    pub neighbours: Vec<Neighbour>,
}

/// Work for [`super::manager::Endpoints::converge`] after the node is applied.
#[derive(Default)]
pub struct Work {
    pub(super) detach: Vec<Attachment>,
    pub(super) ensure: Vec<EndpointId>,
    pub(super) garbage: Vec<String>,
}

#[derive(Clone, Debug)]
pub(super) struct Tombstone {
    seen: bool,
    since: std::time::Instant,
    /// The address the endpoint had, kept from other endpoints while its object (which
    /// may still show it: the API unreachable) has not left.
    held: Option<HeldAddress>,
}

impl Tombstone {
    pub(super) fn now() -> Self {
        Tombstone {
            seen: false,
            since: std::time::Instant::now(),
            held: None,
        }
    }

    fn record(&self, id: &EndpointId) -> TombstoneRecord {
        TombstoneRecord {
            id: id.clone(),
            held: self.held.clone(),
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub attachments: BTreeMap<EndpointId, Attachment>,
    pub ipam: NodeIpam,
    pub next_since: u64,
    /// Why an endpoint is not (fully) attached, for its status and for CNI answers.
    pub problems: BTreeMap<EndpointId, Problem>,
    /// Attachments whose kernel objects were checked since they last changed.
    pub ensured: BTreeSet<EndpointId>,
    /// Endpoints detached through CNI whose ContainerEndpoint must still leave the API.
    /// Kept until the object has been seen gone from the store after being there (or for
    /// a minute if it never showed up), so a ContainerEndpoint created by a late status
    /// write cannot bring the attachment back.
    pub tombstones: BTreeMap<EndpointId, Tombstone>,
    /// Endpoints a CNI DEL took out of service whose interface is still being deleted
    /// ([`super::teardown`]): out of `attachments`, but their address and journal record
    /// stay until the deletion completes.
    pub releasing: BTreeMap<EndpointId, Attachment>,
    /// Endpoints whose sandbox is certainly gone, since when ([`super::gone`]).
    pub gone: BTreeMap<EndpointId, super::gone::Gone>,
    /// The last pass's picture, for CNI calls between passes.
    pub networks: Networks,
    pub desired_node: Arc<KernelState>,
    pub facts: Option<NodeFacts>,
    /// This node's ContainerEndpoints made for CNI attachments, by container and interface,
    /// as of the last pass: a DEL finds by it an object whose attachment is already gone
    /// (its network was deleted), so the object leaves with the container.
    pub cni_objects: BTreeMap<weft_cni::proto::AttachmentId, EndpointId>,
    /// Who may attach which sandbox.
    pub sandboxes: SandboxPolicy,
    /// Where host ports are chosen for published ports that name none.
    pub host_ports: HostPortRange,
}

pub(super) fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// Rebuild the allocations from the journal, then from the statuses of this node's
    /// ContainerEndpoints (for records the journal lacks). Call once, before the first pass.
    pub(super) fn restore(
        &mut self,
        node: &str,
        journal: &Journal,
        ceps: &[Arc<ContainerEndpoint>],
        networks: &Networks,
        facts: &NodeFacts,
    ) {
        let st = self;
        for record in journal.load_tombstones() {
            if let Some(held) = &record.held
                && let Some(net) = networks
                    .get(&held.network)
                    .filter(|n| n.uid == held.network_uid)
                && let Ok(Some(space)) = drivers::of(net).address_space(net, facts)
                && let Err(e) =
                    st.ipam
                        .restore(&net.uid, &space, &record.id.to_string(), held.address)
            {
                tracing::warn!(endpoint = %record.id, error = %e, "could not hold a detached endpoint's address again");
            }
            st.tombstones.insert(
                record.id,
                Tombstone {
                    held: record.held,
                    ..Tombstone::now()
                },
            );
        }
        let mut records = journal.load();
        let journaled: BTreeSet<EndpointId> = records.iter().map(|a| a.id.clone()).collect();
        for cep in ceps.iter().filter(|c| c.spec.node == node) {
            let Ok(req) = request_of(cep) else { continue };
            if journaled.contains(&req.id) || st.tombstones.contains_key(&req.id) {
                continue;
            }
            let Some(status) = &cep.status else { continue };
            let Some(net) = networks.get(&req.network) else {
                continue;
            };
            let address: Option<IpNet> = status.address.as_deref().and_then(|a| a.parse().ok());
            if drivers::of(net).endpoint_shape().has_interface() && address.is_none() {
                continue;
            }
            records.push(Attachment {
                id: req.id.clone(),
                network: req.network.clone(),
                network_uid: net.uid.clone(),
                sandbox: req.sandbox.clone(),
                if_name: req.if_name.clone(),
                address,
                gateway: status.gateway.as_deref().and_then(|g| g.parse().ok()),
                mac: status.mac.as_deref().and_then(|m| m.parse().ok()),
                // The ports as they were served (host ports chosen by the agent included).
                publish: if status.ports.is_empty() {
                    req.publish.clone()
                } else {
                    status.ports.iter().filter_map(PortSpec::from_api).collect()
                },
                cni: cni_id_of(cep),
                since: 0,
                requested_address: req.address,
                requested_mac: req.mac,
                in_api: true,
                gw_priority: req.gw_priority,
                replace_default_route: false,
                mirror: None,
                names: req.names.clone(),
            });
        }
        for mut att in records {
            let net = networks
                .get(&att.network)
                .filter(|n| n.uid == att.network_uid);
            if let (Some(net), Some(addr)) = (net, att.address)
                && let Ok(Some(space)) = drivers::of(net).address_space(net, facts)
            {
                if let Err(e) = st
                    .ipam
                    .restore(&net.uid, &space, &att.id.to_string(), addr.addr())
                {
                    tracing::warn!(endpoint = %att.id, error = %e, "could not restore an endpoint's address; it will get a new one");
                    continue;
                }
                // The mirror follows from the address (also for a record from a status).
                att.mirror = mirror_address(&space, addr.addr());
            }
            // A record without its chosen host ports (a status written before they were
            // chosen) gets them now, clear of every endpoint restored before it.
            if att
                .publish
                .iter()
                .any(|p| p.host_port == super::ANY_HOST_PORT)
            {
                match plan::choose_host_ports(
                    &att.publish,
                    None,
                    st.attachments.values(),
                    st.host_ports,
                ) {
                    Ok(chosen) => att.publish = chosen,
                    Err(e) => {
                        tracing::warn!(endpoint = %att.id, error = %e, "no host port for a restored endpoint");
                        att.publish.retain(|p| p.host_port != super::ANY_HOST_PORT);
                    }
                }
            }
            st.next_since = st.next_since.max(att.since + 1);
            st.attachments.insert(att.id.clone(), att);
        }
        tracing::info!(
            endpoints = st.attachments.len(),
            "endpoint allocations restored"
        );
    }

    /// Decide, for this pass, which endpoints exist and what the node needs for them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan(
        &mut self,
        node: &str,
        journal: &Journal,
        networks: &Networks,
        facts: &NodeFacts,
        desired_node: &KernelState,
        ceps: &[Arc<ContainerEndpoint>],
        peers: &BTreeMap<String, IpAddr>,
        host_ports: &HostPorts,
        full_check: bool,
    ) -> (NodeAdditions, Work) {
        let st = self;
        st.networks = networks.clone();
        // The old picture goes before the new copy is made (a thousand networks' worth).
        st.desired_node = Arc::default();
        st.desired_node = Arc::new(desired_node.clone());
        st.facts = Some(facts.clone());
        let mut work = Work::default();

        // Requests from the API, for this node.
        let mut wanted: BTreeMap<EndpointId, Result<EndpointRequest, Problem>> = BTreeMap::new();
        let mut remote = Vec::new();
        let mut in_store: BTreeSet<EndpointId> = BTreeSet::new();
        st.cni_objects.clear();
        for cep in ceps {
            let id = EndpointId {
                namespace: cep.namespace().unwrap_or_default(),
                name: cep.name_any(),
            };
            in_store.insert(id.clone());
            if cep.spec.node != node {
                remote.extend(remote_endpoints(cep, &st.networks));
                continue;
            }
            if let Some(cni) = cni_id_of(cep) {
                st.cni_objects.insert(cni, id.clone());
            }
            if let Some(t) = st.tombstones.get_mut(&id) {
                t.seen = true;
                continue;
            }
            if cep.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // The object of an earlier sandbox under the same pod name (DEL, then ADD again
            // before the old object left the API): the current attachment wins; the stale
            // object is replaced by publish_status.
            if st
                .attachments
                .get(&id)
                .is_some_and(|att| of_an_earlier_sandbox(cep, att))
            {
                continue;
            }
            wanted.insert(id, request_of(cep));
        }
        let dropped: Vec<EndpointId> = st
            .tombstones
            .iter()
            .filter(|(id, t)| {
                if t.seen {
                    !in_store.contains(*id)
                } else {
                    t.since.elapsed() >= std::time::Duration::from_secs(60)
                }
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dropped {
            st.drop_tombstone(journal, id);
        }

        // Attachments no longer wanted go (CNI ones not yet mirrored into the API stay).
        let ids: Vec<EndpointId> = st.attachments.keys().cloned().collect();
        // Each network's space once per pass (by uid), not once per endpoint.
        let mut spaces: BTreeMap<String, Option<(IpNet, u8)>> = BTreeMap::new();
        for id in ids {
            let Some(att) = st.attachments.get(&id) else {
                continue;
            };
            let keep = match wanted.get(&id) {
                Some(Ok(req)) => {
                    att.matches(req)
                        && st
                            .networks
                            .get(&att.network)
                            .filter(|n| n.uid == att.network_uid)
                            .is_some_and(|n| {
                                let space = spaces
                                    .entry(n.uid.clone())
                                    .or_insert_with(|| space_on_node(n, facts));
                                still_fits(att, *space)
                            })
                }
                Some(Err(_)) => false,
                // A tombstone on a journaled attachment is a DEL whose teardown did not
                // finish before the agent stopped: finish it. One whose network has gone is
                // detached, not mirrored into the API.
                None => {
                    att.cni.is_some()
                        && !att.in_api
                        && !st.tombstones.contains_key(&id)
                        && st
                            .networks
                            .get(&att.network)
                            .is_some_and(|n| n.uid == att.network_uid)
                }
            };
            if keep {
                // A changed gwPriority moves the default route, not the attachment.
                if let Some(Ok(req)) = wanted.get(&id)
                    && req.gw_priority != att.gw_priority
                    && let Some(a) = st.attachments.get_mut(&id)
                {
                    a.gw_priority = req.gw_priority;
                    let _ = journal.save(a);
                    let sandbox = a.sandbox.clone();
                    st.replan_sandbox(&sandbox);
                }
                let Some(att) = st.attachments.get(&id) else {
                    continue;
                };
                if wanted.contains_key(&id)
                    && !att.in_api
                    && let Some(a) = st.attachments.get_mut(&id)
                {
                    a.in_api = true;
                    let _ = journal.save(a);
                }
                continue;
            }
            if let Some(att) = st.attachments.remove(&id) {
                st.free_address(journal, &att);
                st.ensured.remove(&id);
                st.replan_sandbox(&att.sandbox);
                work.detach.push(att);
            }
        }

        // New or changed requests get an address and an attachment.
        for (id, req) in &wanted {
            let req = match req {
                Ok(r) => r,
                Err(p) => {
                    st.problems.insert(id.clone(), p.clone());
                    continue;
                }
            };
            if st.attachments.contains_key(id) {
                continue;
            }
            // Admitted by the pass = written by hand, whatever its annotations claim: the
            // CNI door admits its own before their objects exist.
            let shares_node = st
                .networks
                .get(&req.network)
                .is_some_and(|n| drivers::of(n).endpoint_shape() == EndpointShape::SharesNode);
            let allowed = if shares_node {
                st.sandboxes.authorize_node_sharing(req)
            } else {
                st.sandboxes.authorize(req, &st.attachments)
            };
            if let Err(p) = allowed {
                st.problems.insert(id.clone(), p);
                continue;
            }
            match st.admit(node, journal, req) {
                Ok(()) => {
                    st.problems.remove(id);
                }
                Err(p) => {
                    st.problems.insert(id.clone(), p);
                }
            }
        }
        st.problems
            .retain(|id, _| wanted.contains_key(id) || st.attachments.contains_key(id));

        // Publish rules, from every attachment on a routed network.
        // Host-port claims are settled afresh every pass, so a conflict whose holder left is
        // lifted.
        let (publish_chains, conflicts) = plan::publish_rules(&publications(st));
        st.problems
            .retain(|id, p| p.reason != Reason::PortConflict || conflicts.contains_key(id));
        st.problems.extend(conflicts);

        remote.sort();
        let (fdb, neighbours) = plan::remote_entries(&remote, &st.networks, peers, desired_node);

        // Kernel work: new/changed attachments, all of them on a full check, and any whose
        // host side is missing, on no bridge or another one, or down (the node's link dump
        // shows them): a bridge deleted and made again leaves its ports on none.
        let mut expected_hosts: BTreeSet<String> = BTreeSet::new();
        for (id, att) in &st.attachments {
            let net = st.networks.get(&att.network);
            let routed = net.is_some_and(|n| drivers::of(n).endpoint_shape().routed());
            let host = plan::host_interface(id);
            let host_drifted = routed
                && net.is_some_and(|n| {
                    drift::host_side_drifted(att, n, facts, desired_node, host_ports.get(&host))
                });
            if routed {
                expected_hosts.insert(host);
            }
            if full_check || host_drifted || !st.ensured.contains(id) {
                work.ensure.push(id.clone());
            }
        }
        // Interfaces being deleted by a DEL's teardown are its business, not garbage.
        expected_hosts.extend(st.releasing.keys().map(plan::host_interface));
        let prefix = format!("{}e", crate::names::LINK_PREFIX);
        work.garbage = facts
            .interfaces
            .iter()
            .filter(|n| n.starts_with(&prefix) && n.len() == 15 && !expected_hosts.contains(*n))
            .cloned()
            .collect();

        (
            NodeAdditions {
                publish_chains,
                fdb,
                neighbours,
            },
            work,
        )
    }

    /// Give a request an address and record it (journal first). Caller holds the lock.
    pub(super) fn admit(
        &mut self,
        node: &str,
        journal: &Journal,
        req: &EndpointRequest,
    ) -> Result<(), Problem> {
        let st = self;
        let facts = st.facts.clone().ok_or_else(|| {
            Problem::new(Reason::NetworkNotReady, "the agent has not planned yet")
        })?;
        let net = st.networks.get(&req.network).ok_or_else(|| {
            Problem::new(
                Reason::NetworkNotReady,
                format!(
                    "network {} does not exist or does not select node {}",
                    req.network, node
                ),
            )
        })?;
        let space = drivers::of(net)
            .address_space(net, &facts)
            .map_err(|p| Problem::new(Reason::NetworkNotReady, p.message))?;
        if let Some(p) = plan::interface_name_problem(req, st.attachments.values()) {
            return Err(p);
        }
        let publish = plan::choose_host_ports(
            &req.publish,
            st.attachments.get(&req.id).map(|a| a.publish.as_slice()),
            st.attachments.values().filter(|a| a.id != req.id),
            st.host_ports,
        )?;
        if let Some(svc) = req.address.and_then(|a| net.service_vips.get(&a)) {
            return Err(Problem::new(
                Reason::AddressInUse,
                format!(
                    "network {}: {} is the VIP of service {svc}; ask for another address",
                    net.name,
                    req.address.map(|a| a.to_string()).unwrap_or_default()
                ),
            ));
        }
        let owner = req.id.to_string();
        let (address, gateway, mirror) = match &space {
            Some(space) => {
                let requested = req.address.map(|r| space.in_allocated_family(r));
                if let Some(want) = requested {
                    give_up_held(&mut st.tombstones, &mut st.ipam, journal, &net.uid, want);
                }
                let addr = st
                    .ipam
                    .allocate(&net.uid, space, &owner, requested)
                    .map_err(|e| address_problem(&e, &net.name))?;
                let with_prefix = IpNet::new(addr, space.subnet.prefix_len())
                    .map_err(|e| Problem::new(Reason::InvalidSpec, e.to_string()))?;
                (
                    Some(with_prefix),
                    space.gateway,
                    mirror_address(space, addr),
                )
            }
            None => {
                if req.address.is_some() {
                    return Err(Problem::new(
                        Reason::OutsideSubnet,
                        format!(
                            "network {} ({:?}) has no addresses to give",
                            net.name, net.spec.driver
                        ),
                    ));
                }
                (None, None, None)
            }
        };
        let mac = req.mac.or_else(|| address.map(|a| derive_mac(a.addr())));
        let since = st.next_since;
        st.next_since += 1;
        let att = Attachment {
            id: req.id.clone(),
            network: net.name.clone(),
            network_uid: net.uid.clone(),
            sandbox: req.sandbox.clone(),
            if_name: req.if_name.clone(),
            address,
            gateway,
            mac: if drivers::of(net).endpoint_shape().has_own_mac() {
                mac
            } else {
                None
            },
            publish,
            cni: req.cni.clone(),
            since,
            requested_address: req.address,
            requested_mac: req.mac,
            in_api: req.cni.is_none(),
            gw_priority: req.gw_priority,
            replace_default_route: req.replace_default_route,
            mirror,
            names: req.names.clone(),
        };
        if let Err(e) = journal.save(&att) {
            st.ipam.release(&net.uid, &owner);
            return Err(Problem::new(
                Reason::KernelError,
                format!("cannot record the endpoint in the node's journal: {e}"),
            ));
        }
        st.ensured.remove(&att.id);
        st.replan_sandbox(&att.sandbox);
        st.attachments.insert(att.id.clone(), att);
        Ok(())
    }

    /// Free a detached endpoint's address, unless a CNI DEL's tombstone stands for it: its
    /// object may still show the address (the API unreachable when DEL came), and another
    /// endpoint given it meanwhile would be a second object with that address. The
    /// tombstone then holds it (on disk too, for a restart) until the object has left.
    pub(super) fn free_address(&mut self, journal: &Journal, att: &Attachment) {
        let owner = att.id.to_string();
        match (self.tombstones.get_mut(&att.id), att.address) {
            (Some(t), Some(addr)) if self.ipam.holds(&att.network_uid, &owner, addr.addr()) => {
                t.held = Some(HeldAddress {
                    network: att.network.clone(),
                    network_uid: att.network_uid.clone(),
                    address: addr.addr(),
                });
                if let Err(e) = journal.save_tombstone(&t.record(&att.id)) {
                    tracing::warn!(endpoint = %att.id, error = %e, "cannot record the held address in the journal");
                }
            }
            _ => self.ipam.release(&att.network_uid, &owner),
        }
    }

    /// A CNI DEL's tombstone for `id` (a new one, or a DEL again: what it holds stays).
    pub(super) fn put_tombstone(&mut self, journal: &Journal, id: &EndpointId) {
        let held = self.tombstones.get(id).and_then(|t| t.held.clone());
        let t = Tombstone {
            held,
            ..Tombstone::now()
        };
        if let Err(e) = journal.save_tombstone(&t.record(id)) {
            tracing::warn!(endpoint = %id, error = %e, "cannot record the detach in the journal");
        }
        self.tombstones.insert(id.clone(), t);
    }

    /// The object is gone (or an ADD takes the name again): the tombstone goes, and with it
    /// the address it held.
    pub(super) fn drop_tombstone(&mut self, journal: &Journal, id: &EndpointId) {
        if let Some(t) = self.tombstones.remove(id) {
            if let Some(held) = t.held {
                self.ipam.release(&held.network_uid, &id.to_string());
            }
            let _ = journal.remove_tombstone(id);
        }
    }

    /// An attachment came to or left `sandbox`, or changed its priority: the others there
    /// are checked again (the default route may move to or from them).
    pub(super) fn replan_sandbox(&mut self, sandbox: &str) {
        for (id, a) in &self.attachments {
            if a.sandbox == sandbox {
                self.ensured.remove(id);
            }
        }
    }
}

/// The other family's address of a dual-stack network's endpoint (see
/// [`drivers::MirrorSpace`]).
fn mirror_address(space: &AddressSpace, addr: IpAddr) -> Option<MirrorAddress> {
    space
        .mirror_of(addr)
        .map(|(address, gateway)| MirrorAddress { address, gateway })
}

/// The ports with the network's `bridge.hostBinding` (Docker's `host_binding_ipv4`) as the
/// host address of those that name none.
fn with_host_binding(ports: &[PortSpec], net: Option<&drivers::NetworkInput>) -> Vec<PortSpec> {
    let binding: Option<IpAddr> = net
        .and_then(|n| n.spec.bridge.as_ref())
        .and_then(|b| b.host_binding.as_deref())
        .and_then(|b| b.trim().parse().ok());
    ports
        .iter()
        .map(|p| PortSpec {
            host_ip: p.host_ip.or(binding),
            ..p.clone()
        })
        .collect()
}

/// Published ports of every attachment on a routed network (bridge, overlay).
pub(super) fn publications(st: &State) -> Vec<Publication> {
    st.attachments
        .values()
        .filter(|a| !a.publish.is_empty())
        .filter(|a| {
            st.networks
                .get(&a.network)
                .is_some_and(|n| drivers::of(n).endpoint_shape().routed())
        })
        .filter(|a| a.address.is_some())
        .map(|a| Publication {
            id: a.id.clone(),
            since: a.since,
            addresses: a.addresses().map(|(addr, _)| addr).collect(),
            ports: with_host_binding(&a.publish, st.networks.get(&a.network)),
            sandbox_gone: st.gone.get(&a.id).is_some_and(|g| g.sandbox == a.sandbox),
        })
        .collect()
}

/// A network's range on this node and its subnet's prefix length, if it has addresses.
fn space_on_node(net: &drivers::NetworkInput, facts: &NodeFacts) -> Option<(IpNet, u8)> {
    match drivers::of(net).address_space(net, facts) {
        Ok(Some(space)) => Some((space.range, space.subnet.prefix_len())),
        // No space to compare with (not allocated yet, a spec problem): the network's own
        // status says why; its endpoints are not moved for it.
        _ => None,
    }
}

/// Whether an attachment's address is still in its network's space on this node
/// (`space_on_node`). It can leave it: the node's block or the network's subnet moved (a
/// controller restored from statuses after a crash), or `ipRange` was narrowed. An
/// endpoint outside is attached again with a new address rather than left `Ready` without
/// a gateway on its link.
fn still_fits(att: &Attachment, space: Option<(IpNet, u8)>) -> bool {
    match (att.address, space) {
        (Some(addr), Some((range, prefix))) => {
            range.contains(&addr.addr()) && addr.prefix_len() == prefix
        }
        _ => true,
    }
}

/// An address asked for by name is given even while a tombstone holds it (a container
/// started again with its fixed address must not wait for its old object to leave).
fn give_up_held(
    tombstones: &mut BTreeMap<EndpointId, Tombstone>,
    ipam: &mut NodeIpam,
    journal: &Journal,
    network_uid: &str,
    address: IpAddr,
) {
    let holder = tombstones.iter_mut().find(|(_, t)| {
        t.held
            .as_ref()
            .is_some_and(|h| h.network_uid == network_uid && h.address == address)
    });
    if let Some((id, t)) = holder {
        t.held = None;
        ipam.release(network_uid, &id.to_string());
        let _ = journal.save_tombstone(&t.record(id));
    }
}
