//! The node's endpoints: one state behind both doors (ContainerEndpoints from the API, CNI
//! calls from the runtime).
//!
//! The agent's pass calls [`Endpoints::plan`] (after the networks are planned: publish rules
//! and overlay entries go into the node's desired state), applies the node, then calls
//! [`Endpoints::converge`] (sandboxes) and [`Endpoints::publish_status`] (API). CNI calls
//! go through [`Endpoints::cni_add`] and friends at any time; they change the same state
//! under the same lock and ask for a pass to mirror the result into the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use weft_api::{ContainerEndpoint, ContainerEndpointStatus, Driver};
use weft_cni::proto::{self, AttachmentId, Failure, codes};

use super::ipam::NodeIpam;
use super::journal::Journal;
use super::plan::{
    self, RemoteEndpoint, address_problem, derive_mac, endpoint_reason, format_mac, parse_mac,
};
use super::{Attachment, EndpointId, EndpointRequest, PortSpec, Publication};
use crate::kernel::{Kernel, KernelError, sandbox_missing};
use crate::model::{FdbEntry, KernelState, Neighbour, NftChain};
use crate::plan::{Networks, NodeFacts, Problem};

/// Annotations on ContainerEndpoints the agent creates for CNI attachments.
pub const ANNOTATION_CONTAINER_ID: &str = "weft.dev/cni-container-id";
pub const ANNOTATION_IFNAME: &str = "weft.dev/cni-ifname";
pub const LABEL_NODE: &str = "weft.dev/node";
pub const LABEL_NETWORK: &str = "weft.dev/network";

/// CNI ADDs handled at once; more wait their turn (a burst of pods cannot exhaust the agent).
pub const MAX_CONCURRENT_ADDS: usize = 16;

/// What the pass gets back from [`Endpoints::plan`] for the node's desired state.
#[derive(Default)]
pub struct NodeAdditions {
    pub publish_chains: BTreeMap<String, NftChain>,
    pub fdb: Vec<FdbEntry>,
    pub neighbours: Vec<Neighbour>,
}

/// Work for [`Endpoints::converge`] after the node is applied.
#[derive(Default)]
pub struct Work {
    detach: Vec<Attachment>,
    ensure: Vec<EndpointId>,
    garbage: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
struct Tombstone {
    seen: bool,
    since: std::time::Instant,
}

impl Tombstone {
    fn now() -> Self {
        Tombstone {
            seen: false,
            since: std::time::Instant::now(),
        }
    }
}

#[derive(Default)]
struct State {
    attachments: BTreeMap<EndpointId, Attachment>,
    ipam: NodeIpam,
    next_since: u64,
    /// Why an endpoint is not (fully) attached, for its status and for CNI answers.
    problems: BTreeMap<EndpointId, Problem>,
    /// Attachments whose kernel objects were checked since they last changed.
    ensured: BTreeSet<EndpointId>,
    /// Attachments being ensured right now (a CNI ADD and a pass never work on the same
    /// endpoint at once).
    in_flight: BTreeSet<EndpointId>,
    /// Endpoints detached through CNI whose ContainerEndpoint must still leave the API.
    /// Kept until the object has been seen gone from the store after being there (or for
    /// a minute if it never showed up), so a ContainerEndpoint created by a late status
    /// write cannot bring the attachment back.
    tombstones: BTreeMap<EndpointId, Tombstone>,
    /// The last pass's picture, for CNI calls between passes.
    networks: Networks,
    desired_node: Arc<KernelState>,
    facts: Option<NodeFacts>,
}

/// An endpoint held by one worker (see [`Endpoints::claim`]).
struct Claim<'a> {
    endpoints: &'a Endpoints,
    id: EndpointId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.endpoints.state).in_flight.remove(&self.id);
    }
}

pub struct Endpoints {
    node: String,
    kernel: Arc<Kernel>,
    journal: Journal,
    state: Mutex<State>,
    wake: Arc<Notify>,
    ready: AtomicBool,
    passes_started: AtomicU64,
    passes_applied: tokio::sync::watch::Sender<u64>,
    adds: Semaphore,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Turn a ContainerEndpoint's spec into a request; a malformed one becomes a problem.
fn request_of(cep: &ContainerEndpoint) -> Result<EndpointRequest, Problem> {
    let invalid = |m: String| Problem::new(endpoint_reason::INVALID_SPEC, m);
    let address = match cep.spec.address.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(a) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| invalid(format!("spec.address {a:?} is not an IP address")))?,
        ),
    };
    let mac = match cep.spec.mac.as_deref() {
        None => None,
        Some(m) => {
            Some(parse_mac(m).ok_or_else(|| invalid(format!("spec.mac {m:?} is not a MAC")))?)
        }
    };
    let publish = cep
        .spec
        .publish
        .iter()
        .map(|p| {
            PortSpec::from_api(p)
                .ok_or_else(|| invalid(format!("spec.publish entry {p:?} is out of range")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EndpointRequest {
        id: EndpointId {
            namespace: cep.namespace().unwrap_or_default(),
            name: cep.name_any(),
        },
        network: cep.spec.network.clone(),
        sandbox: cep.spec.sandbox.clone(),
        if_name: cep.spec.interface_name.clone(),
        address,
        mac,
        publish,
        cni: None,
    })
}

impl Endpoints {
    pub fn new(
        node: String,
        kernel: Arc<Kernel>,
        state_dir: &Path,
        wake: Arc<Notify>,
    ) -> std::io::Result<Self> {
        Ok(Endpoints {
            node,
            kernel,
            journal: Journal::open(state_dir)?,
            state: Mutex::new(State::default()),
            wake,
            ready: AtomicBool::new(false),
            passes_started: AtomicU64::new(0),
            passes_applied: tokio::sync::watch::channel(0).0,
            adds: Semaphore::new(MAX_CONCURRENT_ADDS),
        })
    }

    /// Rebuild the allocations from the journal, then from the statuses of this node's
    /// ContainerEndpoints (for records the journal lacks). Call once, before the first pass.
    pub fn restore(&self, ceps: &[Arc<ContainerEndpoint>], networks: &Networks, facts: &NodeFacts) {
        let mut st = lock(&self.state);
        for id in self.journal.load_tombstones() {
            st.tombstones.insert(id, Tombstone::now());
        }
        let mut records = self.journal.load();
        let journaled: BTreeSet<EndpointId> = records.iter().map(|a| a.id.clone()).collect();
        for cep in ceps.iter().filter(|c| c.spec.node == self.node) {
            let Ok(req) = request_of(cep) else { continue };
            if journaled.contains(&req.id) || st.tombstones.contains_key(&req.id) {
                continue;
            }
            let Some(status) = &cep.status else { continue };
            let Some(net) = networks.get(&req.network) else {
                continue;
            };
            let address: Option<IpNet> = status.address.as_deref().and_then(|a| a.parse().ok());
            if net.spec.driver.has_addresses() && address.is_none() {
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
                mac: status.mac.as_deref().and_then(parse_mac),
                publish: req.publish.clone(),
                cni: cni_id_of(cep),
                since: 0,
                requested_address: req.address,
                requested_mac: req.mac,
                in_api: true,
            });
        }
        for att in records {
            let net = networks
                .get(&att.network)
                .filter(|n| n.uid == att.network_uid);
            if let (Some(net), Some(addr)) = (net, att.address)
                && let Ok(Some(space)) = plan::address_space(net, facts)
                && let Err(e) = st
                    .ipam
                    .restore(&net.uid, &space, &att.id.to_string(), addr.addr())
            {
                tracing::warn!(endpoint = %att.id, error = %e, "could not restore an endpoint's address; it will get a new one");
                continue;
            }
            st.next_since = st.next_since.max(att.since + 1);
            st.attachments.insert(att.id.clone(), att);
        }
        tracing::info!(
            endpoints = st.attachments.len(),
            "endpoint allocations restored"
        );
    }

    /// CNI calls are served from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Mark the start of a pass; returns its number.
    pub fn pass_started(&self) -> u64 {
        self.passes_started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The pass numbered `n` has applied the kernel (its API writes may still follow).
    pub fn pass_applied(&self, n: u64) {
        self.passes_applied.send_if_modified(|v| {
            let newer = n > *v;
            if newer {
                *v = n;
            }
            newer
        });
    }

    /// Wait until a pass that starts after this call has applied the kernel.
    async fn next_pass(&self) {
        let after = self.passes_started.load(Ordering::SeqCst);
        let mut rx = self.passes_applied.subscribe();
        self.wake.notify_one();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            rx.wait_for(|done| *done > after),
        )
        .await;
    }

    /// Decide, for this pass, which endpoints exist and what the node needs for them.
    pub fn plan(
        &self,
        networks: &Networks,
        facts: &NodeFacts,
        desired_node: &KernelState,
        ceps: &[Arc<ContainerEndpoint>],
        peers: &BTreeMap<String, IpAddr>,
        full_check: bool,
    ) -> (NodeAdditions, Work) {
        let mut st = lock(&self.state);
        let st = &mut *st;
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
        for cep in ceps {
            let id = EndpointId {
                namespace: cep.namespace().unwrap_or_default(),
                name: cep.name_any(),
            };
            in_store.insert(id.clone());
            if cep.spec.node != self.node {
                if let Some(r) = remote_endpoint(cep, &st.networks) {
                    remote.push(r);
                }
                continue;
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
            if let (Some(att), Some(cni)) = (st.attachments.get(&id), cni_id_of(cep))
                && att.cni.as_ref().is_some_and(|c| *c != cni)
            {
                continue;
            }
            wanted.insert(id, request_of(cep));
        }
        let journal = &self.journal;
        st.tombstones.retain(|id, t| {
            let keep = if t.seen {
                in_store.contains(id)
            } else {
                t.since.elapsed() < std::time::Duration::from_secs(60)
            };
            if !keep {
                let _ = journal.remove_tombstone(id);
            }
            keep
        });

        // Attachments no longer wanted go (CNI ones not yet mirrored into the API stay).
        let ids: Vec<EndpointId> = st.attachments.keys().cloned().collect();
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
                            .is_some_and(|n| n.uid == att.network_uid)
                }
                Some(Err(_)) => false,
                None => att.cni.is_some() && !att.in_api,
            };
            if keep {
                if wanted.contains_key(&id)
                    && !att.in_api
                    && let Some(a) = st.attachments.get_mut(&id)
                {
                    a.in_api = true;
                    let _ = self.journal.save(a);
                }
                continue;
            }
            if let Some(att) = st.attachments.remove(&id) {
                st.ipam.release(&att.network_uid, &id.to_string());
                st.ensured.remove(&id);
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
            match self.admit(st, req) {
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
        st.problems.retain(|id, p| {
            p.reason != endpoint_reason::PORT_CONFLICT || conflicts.contains_key(id)
        });
        st.problems.extend(conflicts);

        let (fdb, neighbours) = plan::remote_entries(&remote, peers, desired_node);

        // Kernel work: new/changed attachments, all of them on a full check, and any whose
        // host interface is missing (the node's link dump lists those names).
        let mut expected_hosts: BTreeSet<String> = BTreeSet::new();
        for (id, att) in &st.attachments {
            let routed = st
                .networks
                .get(&att.network)
                .is_some_and(|n| matches!(n.spec.driver, Driver::Bridge | Driver::Overlay));
            let host = plan::host_interface(id);
            let host_missing = routed && !facts.interfaces.contains(&host);
            if routed {
                expected_hosts.insert(host);
            }
            if full_check || host_missing || !st.ensured.contains(id) {
                work.ensure.push(id.clone());
            }
        }
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
    fn admit(&self, st: &mut State, req: &EndpointRequest) -> Result<(), Problem> {
        let facts = st.facts.clone().ok_or_else(|| {
            Problem::new(
                endpoint_reason::NETWORK_NOT_READY,
                "the agent has not planned yet",
            )
        })?;
        let net = st.networks.get(&req.network).ok_or_else(|| {
            Problem::new(
                endpoint_reason::NETWORK_NOT_READY,
                format!(
                    "network {} does not exist or does not select node {}",
                    req.network, self.node
                ),
            )
        })?;
        let space = plan::address_space(net, &facts)
            .map_err(|p| Problem::new(endpoint_reason::NETWORK_NOT_READY, p.message))?;
        let owner = req.id.to_string();
        let (address, gateway) = match &space {
            Some(space) => {
                let addr = st
                    .ipam
                    .allocate(&net.uid, space, &owner, req.address)
                    .map_err(|e| address_problem(&e, &net.name))?;
                let with_prefix = IpNet::new(addr, space.subnet.prefix_len())
                    .map_err(|e| Problem::new(endpoint_reason::INVALID_SPEC, e.to_string()))?;
                (Some(with_prefix), space.gateway)
            }
            None => {
                if req.address.is_some() {
                    return Err(Problem::new(
                        endpoint_reason::OUTSIDE_SUBNET,
                        format!(
                            "network {} ({:?}) has no addresses to give",
                            net.name, net.spec.driver
                        ),
                    ));
                }
                (None, None)
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
            mac: if matches!(
                net.spec.driver,
                Driver::Ipvlan | Driver::None | Driver::Host
            ) {
                None
            } else {
                mac
            },
            publish: req.publish.clone(),
            cni: req.cni.clone(),
            since,
            requested_address: req.address,
            requested_mac: req.mac,
            in_api: req.cni.is_none(),
        };
        if let Err(e) = self.journal.save(&att) {
            st.ipam.release(&net.uid, &owner);
            return Err(Problem::new(
                endpoint_reason::KERNEL_ERROR,
                format!("cannot record the endpoint in the node's journal: {e}"),
            ));
        }
        st.ensured.remove(&att.id);
        st.attachments.insert(att.id.clone(), att);
        Ok(())
    }

    /// The kernel side of one attachment, as it should be now.
    fn config_of(&self, id: &EndpointId) -> Result<crate::kernel::SandboxConfig, Problem> {
        let st = lock(&self.state);
        let att = st.attachments.get(id).ok_or_else(|| {
            Problem::new(
                endpoint_reason::NETWORK_NOT_READY,
                format!("endpoint {id} is gone"),
            )
        })?;
        let net = st.networks.get(&att.network).ok_or_else(|| {
            Problem::new(
                endpoint_reason::NETWORK_NOT_READY,
                format!("network {} does not exist", att.network),
            )
        })?;
        let facts = st.facts.clone().ok_or_else(|| {
            Problem::new(
                endpoint_reason::NETWORK_NOT_READY,
                "the agent has not planned yet",
            )
        })?;
        plan::sandbox_config(att, net, &facts, &st.desired_node)
    }

    /// Hold one endpoint's kernel objects alone: a CNI call and a pass never work on the
    /// same endpoint at once (a pass repairing what a DEL is removing would bring it back).
    /// Waits for whoever holds it; released when the claim is dropped.
    async fn claim(&self, id: &EndpointId) -> Result<Claim<'_>, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !lock(&self.state).in_flight.insert(id.clone()) {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "endpoint {id} is still being worked on by another request"
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        Ok(Claim {
            endpoints: self,
            id: id.clone(),
        })
    }

    /// Make one attachment real (or repair it); records the outcome.
    async fn ensure(&self, id: &EndpointId) -> Result<usize, Problem> {
        // Whoever held it before us may have changed it: check again ourselves (cheap when
        // it is all in place; an endpoint detached meanwhile is reported gone).
        let _claim = self
            .claim(id)
            .await
            .map_err(|m| Problem::new(endpoint_reason::KERNEL_ERROR, m))?;
        self.ensure_now(id).await
    }

    async fn ensure_now(&self, id: &EndpointId) -> Result<usize, Problem> {
        let result = match self.config_of(id) {
            Ok(cfg) => self
                .kernel
                .ensure_endpoint(&cfg)
                .await
                .map_err(|e| kernel_problem(&e, &cfg.sandbox)),
            Err(p) => Err(p),
        };
        let mut st = lock(&self.state);
        match &result {
            Ok(_) => {
                st.ensured.insert(id.clone());
                if st
                    .problems
                    .get(id)
                    .is_some_and(|p| p.reason != endpoint_reason::PORT_CONFLICT)
                {
                    st.problems.remove(id);
                }
            }
            Err(p) => {
                st.ensured.remove(id);
                // An endpoint detached while this waited for its claim has nothing to report.
                if st.attachments.contains_key(id) {
                    st.problems.insert(id.clone(), p.clone());
                }
            }
        }
        result
    }

    /// Remove one attachment's kernel objects and its journal record.
    async fn detach(&self, att: &Attachment) -> Result<usize, String> {
        let _claim = self.claim(&att.id).await?;
        self.detach_now(att).await
    }

    /// [`Self::detach`] for a caller holding the endpoint's claim.
    async fn detach_now(&self, att: &Attachment) -> Result<usize, String> {
        let writes = self
            .kernel
            .remove_endpoint(
                Path::new(&att.sandbox),
                &att.if_name,
                &plan::host_interface(&att.id),
                &plan::host_alias(&att.id),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.journal.remove(&att.id) {
            tracing::warn!(endpoint = %att.id, error = %e, "cannot remove the endpoint's journal record");
        }
        Ok(writes)
    }

    /// After the node is applied: detach, attach/repair, collect garbage. Returns writes.
    pub async fn converge(&self, work: Work) -> usize {
        let mut writes = 0;
        for att in &work.detach {
            match self.detach(att).await {
                Ok(w) => writes += w,
                Err(e) => tracing::warn!(endpoint = %att.id, error = %e, "detaching failed"),
            }
        }
        for name in &work.garbage {
            match self.kernel.remove_host_endpoint_link(name).await {
                Ok(w) => writes += w,
                Err(KernelError::NotOwned(_)) => {}
                Err(e) => {
                    tracing::warn!(link = %name, error = %e, "removing a leftover endpoint interface failed")
                }
            }
        }
        let pending: Vec<_> = work
            .ensure
            .iter()
            .map(|id| Box::pin(self.ensure(id)))
            .collect();
        let results: Vec<Result<usize, Problem>> = futures::stream::iter(pending)
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(w) => writes += w,
                Err(p) => tracing::debug!(problem = %p, "endpoint not attached"),
            }
        }
        writes
    }

    /// Mirror the state into the API: statuses of this node's ContainerEndpoints, the
    /// objects of CNI attachments, and the deletion of CNI-detached ones.
    pub async fn publish_status(
        &self,
        client: &Client,
        ceps: &[Arc<ContainerEndpoint>],
    ) -> kube::Result<usize> {
        let (attachments, problems, tombstones, routed) = {
            let st = lock(&self.state);
            let routed: BTreeSet<String> = st
                .networks
                .iter()
                .filter(|n| matches!(n.spec.driver, Driver::Bridge | Driver::Overlay))
                .map(|n| n.name.clone())
                .collect();
            (
                st.attachments.clone(),
                st.problems.clone(),
                st.tombstones.clone(),
                routed,
            )
        };
        // Only veth endpoints have a host side.
        let host_if = |a: &Attachment| {
            routed
                .contains(&a.network)
                .then(|| plan::host_interface(&a.id))
        };
        let mut writes = 0;
        let by_id: HashMap<EndpointId, &Arc<ContainerEndpoint>> = ceps
            .iter()
            .map(|c| {
                (
                    EndpointId {
                        namespace: c.namespace().unwrap_or_default(),
                        name: c.name_any(),
                    },
                    c,
                )
            })
            .collect();
        // CNI attachments without an object yet (or with a stale one of an earlier sandbox,
        // which is deleted first: its identity fields are immutable).
        for att in attachments.values() {
            if let Some(old) = by_id.get(&att.id)
                && let (Some(cni), Some(seen)) = (&att.cni, cni_id_of(old))
                && *cni != seen
            {
                writes += delete_object(client, &att.id, old).await?;
                continue;
            }
            if att.cni.is_none() || by_id.contains_key(&att.id) || att.in_api {
                continue;
            }
            // Detached since the snapshot (DEL/GC racing with this pass): do not resurrect.
            if !lock(&self.state).attachments.contains_key(&att.id) {
                continue;
            }
            let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), &att.id.namespace);
            let cni = att.cni.clone().unwrap_or_else(|| AttachmentId {
                container_id: String::new(),
                if_name: String::new(),
            });
            let mut spec = json!({
                "network": att.network,
                "node": self.node,
                "sandbox": att.sandbox,
                "interfaceName": att.if_name,
            });
            if let Some(a) = att.requested_address {
                spec["address"] = json!(a.to_string());
            }
            if let Some(m) = att.requested_mac {
                spec["mac"] = json!(format_mac(&m));
            }
            if !att.publish.is_empty() {
                spec["publish"] =
                    json!(att.publish.iter().map(PortSpec::to_api).collect::<Vec<_>>());
            }
            let obj = json!({
                "apiVersion": "weft.dev/v1alpha1",
                "kind": "ContainerEndpoint",
                "metadata": {
                    "name": att.id.name,
                    "namespace": att.id.namespace,
                    "labels": {LABEL_NODE: self.node, LABEL_NETWORK: att.network},
                    "annotations": {ANNOTATION_CONTAINER_ID: cni.container_id, ANNOTATION_IFNAME: cni.if_name},
                },
                "spec": spec,
            });
            api.patch(
                &att.id.name,
                &PatchParams::apply(crate::agent::MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await?;
            writes += 1;
            let status = status_of(host_if(att), Some(att), problems.get(&att.id), None, None);
            writes += apply_status(client, &att.id, &status).await?;
        }
        // Statuses of this node's objects.
        for (id, cep) in &by_id {
            if cep.spec.node != self.node || cep.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let (Some(att), Some(seen)) = (attachments.get(id), cni_id_of(cep))
                && att.cni.as_ref().is_some_and(|c| *c != seen)
            {
                continue;
            }
            if tombstones.contains_key(id) {
                writes += delete_object(client, id, cep).await?;
                continue;
            }
            let status = status_of(
                attachments.get(id).and_then(&host_if),
                attachments.get(id),
                problems.get(id),
                cep.metadata.generation,
                cep.status.as_ref(),
            );
            if cep.status.as_ref() == Some(&status) {
                continue;
            }
            writes += apply_status(client, id, &status).await?;
        }
        Ok(writes)
    }

    // ---- CNI ----

    /// CNI ADD: attach on the spot and answer; the API learns about it on the next pass.
    pub async fn cni_add(&self, req: &proto::Request) -> Result<proto::Attachment, Failure> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err(failure(
                codes::TRY_AGAIN_LATER,
                "the Weft agent is starting; try again shortly",
            ));
        }
        let _permit = self
            .adds
            .acquire()
            .await
            .map_err(|_| failure(codes::NOT_AVAILABLE, "the Weft agent is shutting down"))?;
        let request = cni_request(req)?;
        let cni_id = request.cni.clone();
        let (stale, id, admitted) = {
            let mut st = lock(&self.state);
            let st = &mut *st;
            // The same ADD again: same answer.
            let existing = st
                .attachments
                .values()
                .find(|a| a.cni == cni_id)
                .map(|a| a.id.clone());
            let mut stale = None;
            let mut admitted = Ok(());
            if existing.is_none() {
                // Refused before anything is taken apart.
                if !st.networks.contains(&request.network) {
                    return Err(failure(
                        codes::UNKNOWN_NETWORK,
                        format!(
                            "network {:?} does not exist or does not select node {} (kubectl get cnet {})",
                            request.network, self.node, request.network
                        ),
                    ));
                }
                // Another sandbox under the same name (a pod re-created without DEL).
                if let Some(old) = st.attachments.remove(&request.id) {
                    st.ipam.release(&old.network_uid, &old.id.to_string());
                    st.ensured.remove(&old.id);
                    stale = Some(old);
                }
                if st.tombstones.remove(&request.id).is_some() {
                    let _ = self.journal.remove_tombstone(&request.id);
                }
                admitted = self.admit(st, &request);
            }
            (stale, existing.unwrap_or(request.id.clone()), admitted)
        };
        // The replaced sandbox is detached even when this ADD is refused.
        if let Some(old) = stale
            && let Err(e) = self.detach(&old).await
        {
            tracing::warn!(endpoint = %old.id, error = %e, "detaching the previous sandbox failed");
        }
        admitted.map_err(|p| problem_failure(&p))?;
        // A network not programmed here yet comes back as NetworkNotReady: try again later.
        if let Err(p) = self.ensure(&id).await {
            // Nothing half-applied: whatever the failed attempt created goes too.
            if let Some(att) = self.forget(&id) {
                let _ = self.detach(&att).await;
            }
            return Err(problem_failure(&p));
        }
        if !request.publish.is_empty() {
            // Publish now rather than after the next pass: the node's inet table as the last
            // pass planned it, with the publish chains of every endpoint including this one,
            // in one atomic nft transaction. The next pass plans the very same table (zero
            // writes); a pass racing with this one re-plans it right after.
            let (table, conflict) = {
                let st = lock(&self.state);
                let (chains, conflicts) = plan::publish_rules(&publications(&st));
                let mut nft = st.desired_node.nft.clone();
                plan::add_publish_chains(&mut nft, chains);
                (
                    nft.get(&crate::model::NftFamily::Inet).cloned(),
                    conflicts.get(&id).cloned(),
                )
            };
            if conflict.is_none()
                && let Some(table) = table
            {
                let report = self
                    .kernel
                    .apply(&[crate::kernel::Change::SetNftTable(
                        crate::model::NftFamily::Inet,
                        table,
                    )])
                    .await;
                if let Some((_, err)) = report.failed.first() {
                    tracing::warn!(endpoint = %id, error = %err, "publishing in the ADD path failed; the pass will retry");
                    self.next_pass().await;
                }
            }
            self.wake.notify_one();
            if let Some(p) = conflict {
                if let Some(att) = self.forget(&id) {
                    let _ = self.detach(&att).await;
                }
                self.wake.notify_one();
                return Err(problem_failure(&p));
            }
        } else {
            self.wake.notify_one();
        }
        let st = lock(&self.state);
        let att = st.attachments.get(&id).ok_or_else(|| {
            failure(
                codes::TRY_AGAIN_LATER,
                "the endpoint was removed while being added",
            )
        })?;
        Ok(cni_result(att))
    }

    /// Drop an attachment from the state (address freed, journal record removed).
    fn forget(&self, id: &EndpointId) -> Option<Attachment> {
        let mut st = lock(&self.state);
        let att = st.attachments.remove(id)?;
        st.ipam.release(&att.network_uid, &id.to_string());
        st.ensured.remove(id);
        st.problems.remove(id);
        let _ = self.journal.remove(id);
        Some(att)
    }

    /// CNI DEL: detach if known; an unknown container is fine (DEL must be idempotent).
    pub async fn cni_del(&self, req: &proto::Request) -> Result<(), Failure> {
        let target = AttachmentId {
            container_id: req.container_id.clone(),
            if_name: req.if_name.clone(),
        };
        let found = {
            let st = lock(&self.state);
            st.attachments
                .values()
                .find(|a| a.cni.as_ref() == Some(&target))
                .map(|a| a.id.clone())
        };
        let Some(id) = found else { return Ok(()) };
        self.remove_via_cni(&id).await
    }

    async fn remove_via_cni(&self, id: &EndpointId) -> Result<(), Failure> {
        {
            let mut st = lock(&self.state);
            st.tombstones.insert(id.clone(), Tombstone::now());
            if let Err(e) = self.journal.save_tombstone(id) {
                tracing::warn!(endpoint = %id, error = %e, "cannot record the detach in the journal");
            }
        }
        // Held until the attachment is forgotten: a pass repairing it in between would
        // bring the interface back after DEL answered.
        let claim = self
            .claim(id)
            .await
            .map_err(|m| failure(codes::KERNEL, m))?;
        let att = lock(&self.state).attachments.get(id).cloned();
        if let Some(att) = att {
            self.detach_now(&att)
                .await
                .map_err(|e| failure(codes::KERNEL, format!("removing endpoint {id}: {e}")))?;
            self.forget(id);
        }
        drop(claim);
        self.wake.notify_one();
        Ok(())
    }

    /// CNI CHECK: the interface must be in the sandbox as ADD left it.
    pub async fn cni_check(&self, req: &proto::Request) -> Result<(), Failure> {
        let target = AttachmentId {
            container_id: req.container_id.clone(),
            if_name: req.if_name.clone(),
        };
        let att = {
            let st = lock(&self.state);
            st.attachments
                .values()
                .find(|a| a.cni.as_ref() == Some(&target))
                .cloned()
        }
        .ok_or_else(|| {
            failure(
                codes::UNKNOWN_CONTAINER,
                format!(
                    "container {} has no Weft attachment {}",
                    req.container_id, req.if_name
                ),
            )
        })?;
        let driver = st_driver(&lock(&self.state), &att.network);
        if matches!(driver, Some(Driver::Host | Driver::None)) {
            return Ok(());
        }
        let check_failed = |m: String| failure(codes::CHECK_FAILED, m);
        let found = Kernel::inspect_endpoint(Path::new(&att.sandbox), &att.if_name)
            .await
            .map_err(|e| check_failed(format!("cannot look into sandbox {}: {e}", att.sandbox)))?
            .ok_or_else(|| {
                check_failed(format!(
                    "interface {} is missing from sandbox {} (endpoint {})",
                    att.if_name, att.sandbox, att.id
                ))
            })?;
        if let Some(addr) = att.address
            && !found.addresses.contains(&addr)
        {
            return Err(check_failed(format!(
                "interface {} in sandbox {} lacks its address {addr}",
                att.if_name, att.sandbox
            )));
        }
        if att.mac.is_some() && found.mac != att.mac {
            return Err(check_failed(format!(
                "interface {} in sandbox {} has MAC {}, not {}",
                att.if_name,
                att.sandbox,
                found.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                att.mac.map(|m| format_mac(&m)).unwrap_or_default()
            )));
        }
        if !found.up {
            return Err(check_failed(format!(
                "interface {} in sandbox {} is down",
                att.if_name, att.sandbox
            )));
        }
        Ok(())
    }

    /// CNI GC: every CNI attachment the runtime no longer lists goes.
    pub async fn cni_gc(&self, req: &proto::Request) -> Result<(), Failure> {
        let valid: BTreeSet<AttachmentId> = req.valid_attachments.iter().cloned().collect();
        let stale: Vec<EndpointId> = {
            let st = lock(&self.state);
            st.attachments
                .values()
                .filter(|a| a.cni.as_ref().is_some_and(|c| !valid.contains(c)))
                .map(|a| a.id.clone())
                .collect()
        };
        for id in stale {
            self.remove_via_cni(&id).await?;
        }
        Ok(())
    }

    /// CNI STATUS: ready once the agent has its picture and has run a pass.
    pub fn cni_status(&self) -> Result<(), Failure> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(failure(
                codes::NOT_AVAILABLE,
                "the Weft agent is starting and cannot attach pods yet",
            ))
        }
    }
}

/// Delete an endpoint's object, only that very object (uid precondition); already gone or
/// replaced counts as done. Returns the writes made.
async fn delete_object(
    client: &Client,
    id: &EndpointId,
    cep: &ContainerEndpoint,
) -> kube::Result<usize> {
    let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), &id.namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cep.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&id.name, &dp).await {
        Ok(_) => Ok(1),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(0),
        Err(e) => Err(e),
    }
}

/// Server-side apply an endpoint's status; an object deleted meanwhile is not an error.
async fn apply_status(
    client: &Client,
    id: &EndpointId,
    status: &ContainerEndpointStatus,
) -> kube::Result<usize> {
    let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), &id.namespace);
    let patch =
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint", "status": status});
    match api
        .patch_status(
            &id.name,
            &PatchParams::apply(crate::agent::MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(1),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(0),
        Err(e) => Err(e),
    }
}

/// Published ports of every attachment on a routed network (bridge, overlay).
fn publications(st: &State) -> Vec<Publication> {
    st.attachments
        .values()
        .filter(|a| !a.publish.is_empty())
        .filter(|a| {
            st.networks
                .get(&a.network)
                .is_some_and(|n| matches!(n.spec.driver, Driver::Bridge | Driver::Overlay))
        })
        .filter_map(|a| {
            let addr = a.address?;
            Some(Publication {
                id: a.id.clone(),
                since: a.since,
                address: addr.addr(),
                subnet: addr.trunc(),
                ports: a.publish.clone(),
            })
        })
        .collect()
}

fn st_driver(st: &State, network: &str) -> Option<Driver> {
    st.networks.get(network).map(|n| n.spec.driver)
}

fn kernel_problem(e: &KernelError, sandbox: &Path) -> Problem {
    if sandbox_missing(e) {
        Problem::new(
            endpoint_reason::SANDBOX_MISSING,
            format!("sandbox {} does not exist on this node", sandbox.display()),
        )
    } else {
        Problem::new(endpoint_reason::KERNEL_ERROR, e.to_string())
    }
}

fn failure(code: u32, msg: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
        details: String::new(),
    }
}

fn problem_failure(p: &Problem) -> Failure {
    let code = match p.reason {
        endpoint_reason::NO_FREE_ADDRESS => codes::NO_FREE_ADDRESS,
        endpoint_reason::ADDRESS_IN_USE | endpoint_reason::OUTSIDE_SUBNET => codes::ADDRESS_REFUSED,
        endpoint_reason::PORT_CONFLICT => codes::PORT_CONFLICT,
        endpoint_reason::NETWORK_NOT_READY => codes::TRY_AGAIN_LATER,
        endpoint_reason::INVALID_SPEC => codes::INVALID_CONFIG,
        endpoint_reason::SANDBOX_MISSING => codes::INVALID_ENVIRONMENT,
        _ => codes::KERNEL,
    };
    Failure {
        code,
        msg: p.message.clone(),
        details: p.reason.to_string(),
    }
}

/// A Kubernetes object name from free text: lowercase alphanumerics and `-`.
fn object_name(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(253);
    out.trim_matches(|c: char| c == '-' || c == '.').to_string()
}

/// The endpoint a CNI ADD asks for: named after the pod (plus the interface when it is not
/// `eth0`, as for a Multus delegate), else after the container.
fn cni_request(req: &proto::Request) -> Result<EndpointRequest, Failure> {
    if req.container_id.is_empty() || req.if_name.is_empty() || req.netns.is_empty() {
        return Err(failure(
            codes::INVALID_ENVIRONMENT,
            "ADD needs CNI_CONTAINERID, CNI_IFNAME and CNI_NETNS",
        ));
    }
    let network = if req.network.is_empty() {
        req.config_name.clone()
    } else {
        req.network.clone()
    };
    if network.is_empty() {
        return Err(failure(
            codes::INVALID_CONFIG,
            "the network configuration names no network",
        ));
    }
    let (namespace, base) = match (&req.pod_namespace, &req.pod_name) {
        (Some(ns), Some(pod)) if !ns.is_empty() && !pod.is_empty() => (ns.clone(), pod.clone()),
        _ => (
            "default".to_string(),
            format!(
                "cni-{}",
                req.container_id.chars().take(16).collect::<String>()
            ),
        ),
    };
    let name = if req.if_name == "eth0" {
        base
    } else {
        format!("{base}-{}", req.if_name)
    };
    let address = match req
        .address
        .as_deref()
        .map(|a| a.split('/').next().unwrap_or(a).trim())
    {
        None | Some("") => None,
        Some(a) => Some(a.parse().map_err(|_| {
            failure(
                codes::INVALID_CONFIG,
                format!("requested address {a:?} is not an IP address"),
            )
        })?),
    };
    let mac = match req.mac.as_deref() {
        None | Some("") => None,
        Some(m) => Some(parse_mac(m).ok_or_else(|| {
            failure(
                codes::INVALID_CONFIG,
                format!("requested MAC {m:?} is not a MAC address"),
            )
        })?),
    };
    let publish = req
        .port_mappings
        .iter()
        .map(|p| {
            let protocol = match p.protocol.to_ascii_lowercase().as_str() {
                "tcp" | "" => weft_api::Protocol::Tcp,
                "udp" => weft_api::Protocol::Udp,
                "sctp" => weft_api::Protocol::Sctp,
                other => {
                    return Err(failure(
                        codes::INVALID_CONFIG,
                        format!("port mapping protocol {other:?} is not tcp, udp or sctp"),
                    ));
                }
            };
            let host_ip = match p.host_ip.as_deref().map(str::trim) {
                None | Some("") | Some("0.0.0.0") | Some("::") => None,
                Some(ip) => Some(ip.parse().map_err(|_| {
                    failure(
                        codes::INVALID_CONFIG,
                        format!("hostIP {ip:?} is not an IP address"),
                    )
                })?),
            };
            if p.host_port == 0 || p.container_port == 0 {
                return Err(failure(
                    codes::INVALID_CONFIG,
                    "port mappings need hostPort and containerPort above 0",
                ));
            }
            Ok(PortSpec {
                host_port: p.host_port,
                host_port_end: p.host_port,
                container_port: p.container_port,
                protocol,
                host_ip,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EndpointRequest {
        id: EndpointId {
            namespace: object_name(&namespace),
            name: object_name(&name),
        },
        network,
        sandbox: req.netns.clone(),
        if_name: req.if_name.clone(),
        address,
        mac,
        publish,
        cni: Some(AttachmentId {
            container_id: req.container_id.clone(),
            if_name: req.if_name.clone(),
        }),
    })
}

fn cni_result(att: &Attachment) -> proto::Attachment {
    let mut out = proto::Attachment::default();
    if att.address.is_none() && att.mac.is_none() {
        return out;
    }
    out.interfaces.push(proto::Interface {
        name: att.if_name.clone(),
        mac: att.mac.map(|m| format_mac(&m)),
        sandbox: Some(att.sandbox.clone()),
    });
    if let Some(addr) = att.address {
        out.ips.push(proto::IpConfig {
            address: addr.to_string(),
            gateway: att.gateway.map(|g| g.to_string()),
            interface: Some(0),
        });
        if let Some(gw) = att.gateway {
            out.routes.push(proto::RouteConfig {
                dst: if addr.addr().is_ipv4() {
                    "0.0.0.0/0"
                } else {
                    "::/0"
                }
                .into(),
                gw: Some(gw.to_string()),
            });
        }
    }
    out
}

fn cni_id_of(cep: &ContainerEndpoint) -> Option<AttachmentId> {
    let a = cep.metadata.annotations.as_ref()?;
    Some(AttachmentId {
        container_id: a.get(ANNOTATION_CONTAINER_ID)?.clone(),
        if_name: a.get(ANNOTATION_IFNAME)?.clone(),
    })
}

/// Another node's endpoint on an overlay network, from its status.
fn remote_endpoint(cep: &ContainerEndpoint, networks: &Networks) -> Option<RemoteEndpoint> {
    let net = networks.get(&cep.spec.network)?;
    if net.spec.driver != Driver::Overlay {
        return None;
    }
    let status = cep.status.as_ref()?;
    let address: IpNet = status.address.as_deref()?.parse().ok()?;
    let mac = parse_mac(status.mac.as_deref()?)?;
    Some(RemoteEndpoint {
        network: net.name.clone(),
        node: cep.spec.node.clone(),
        address: address.addr(),
        mac,
    })
}

/// The status an endpoint should have. Conditions keep their transition time while their
/// status does not change, so an unchanged endpoint compares equal and is not rewritten.
fn status_of(
    host_interface: Option<String>,
    att: Option<&Attachment>,
    problem: Option<&Problem>,
    generation: Option<i64>,
    current: Option<&ContainerEndpointStatus>,
) -> ContainerEndpointStatus {
    let (ready, reason, message) = match (att, problem) {
        (_, Some(p)) => ("False", p.reason.to_string(), p.message.clone()),
        (Some(a), None) => (
            "True",
            "Attached".to_string(),
            match a.address {
                Some(addr) => format!("attached to network {} as {addr}", a.network),
                None => format!("attached to network {}", a.network),
            },
        ),
        (None, None) => (
            "False",
            "Pending".to_string(),
            "waiting for the agent".to_string(),
        ),
    };
    let previous = current.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let transition = previous
        .filter(|c| c.status == ready)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    let attached = att.filter(|_| {
        ready == "True" || problem.is_some_and(|p| p.reason == endpoint_reason::PORT_CONFLICT)
    });
    ContainerEndpointStatus {
        observed_generation: generation.or(current.and_then(|s| s.observed_generation)),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason,
            message,
            observed_generation: generation,
            last_transition_time: transition,
        }],
        address: attached.and_then(|a| a.address).map(|a| a.to_string()),
        mac: attached.and_then(|a| a.mac).map(|m| format_mac(&m)),
        gateway: attached.and_then(|a| a.gateway).map(|g| g.to_string()),
        host_interface: attached.and(host_interface),
    }
}
