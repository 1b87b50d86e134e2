//! The node's endpoints: one state behind both doors (ContainerEndpoints from the API, CNI
//! calls from the runtime), and the kernel work on it.
//!
//! The agent's pass calls [`Endpoints::plan`] (after the networks are planned: publish rules
//! and overlay entries go into the node's desired state, see [`super::state`]), applies the
//! node, then calls [`Endpoints::converge`] (sandboxes, here) and
//! [`Endpoints::publish_status`] (API, see [`super::api`]). CNI calls go through
//! [`Endpoints::cni_add`] and friends ([`super::cni`]) at any time; they change the same
//! state under the same lock and ask for a pass to mirror the result into the API. One
//! endpoint's kernel objects are worked on by one task at a time ([`super::claims`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};
use weft_api::ContainerEndpoint;

use super::claims::{CLAIM_TIMEOUT, Claim, Claims};
use super::drift::is_drift;
use super::journal::Journal;
use super::plan;
use super::sandbox::{DEFAULT_SANDBOX_DIR, SandboxPolicy};
use super::state::{NodeAdditions, State, Work, lock};
use super::translate::kernel_problem;
use super::{Attachment, EndpointId};

use crate::drivers::{self, EndpointShape, Networks, NodeFacts, Problem, Reason};
use crate::kernel::{Ensured, HostPorts, Kernel, KernelError};
use crate::model::KernelState;

/// CNI ADDs handled at once; more wait their turn (a burst of pods cannot exhaust the agent).
pub const MAX_CONCURRENT_ADDS: usize = 16;

/// The background deletion starts once no DEL has come for this long (`--teardown-quiet`).
/// Back-to-back DELs come a few ms apart, but on a loaded node a runtime's burst of them
/// (one plugin process each) arrives 50–150 ms apart, so 200 ms sees such a burst through.
/// Waiting costs nothing but the address being free later, and an ADD that needs it settles
/// the teardown itself.
pub(super) const DEFAULT_TEARDOWN_QUIET: std::time::Duration =
    std::time::Duration::from_millis(200);

pub struct Endpoints {
    pub(super) node: String,
    /// Field manager of the agent's API writes.
    pub(super) manager: &'static str,
    pub(super) kernel: Arc<Kernel>,
    pub(super) journal: Journal,
    pub(super) state: Mutex<State>,
    pub(super) claims: Claims,
    /// One sandbox's attachments are ensured one at a time: which of them holds the default
    /// route is decided and applied under this, so two cannot act on different pictures.
    sandboxes: Claims<String>,
    pub(super) wake: Arc<Notify>,
    pub(super) ready: AtomicBool,
    passes_started: AtomicU64,
    passes_applied: tokio::sync::watch::Sender<u64>,
    pub(super) adds: Semaphore,
    /// How long a CNI endpoint's sandbox stays gone before it is released.
    pub(super) gone_grace: std::time::Duration,
    /// Asks [`Endpoints::release_gone_sandboxes`] to look now.
    pub(super) sandbox_check: Notify,
    /// The node runs weft-dns: CNI results and statuses name its address.
    pub(super) names: bool,
    /// Asks [`Endpoints::watch_sandboxes`] to compare its watches with the attachments.
    pub(super) watches_changed: Notify,
    /// Asks [`Endpoints::finish_teardowns`] to delete what DEL took down.
    pub(super) teardowns: Notify,
    /// How long DELs must pause before [`Endpoints::finish_teardowns`] deletes.
    pub(super) teardown_quiet: std::time::Duration,
}

impl Endpoints {
    /// `manager` is the field manager of the agent's API writes; `wake` asks for a pass.
    pub fn new(
        node: String,
        manager: &'static str,
        kernel: Arc<Kernel>,
        state_dir: &Path,
        wake: Arc<Notify>,
    ) -> std::io::Result<Self> {
        Ok(Endpoints {
            node,
            manager,
            kernel,
            journal: Journal::open(state_dir)?,
            state: Mutex::new(State {
                sandboxes: SandboxPolicy::for_node(None, Path::new(DEFAULT_SANDBOX_DIR))?,
                ..State::default()
            }),
            claims: Claims::default(),
            sandboxes: Claims::default(),
            wake,
            ready: AtomicBool::new(false),
            passes_started: AtomicU64::new(0),
            passes_applied: tokio::sync::watch::channel(0).0,
            adds: Semaphore::new(MAX_CONCURRENT_ADDS),
            gone_grace: super::gone::DEFAULT_GRACE,
            sandbox_check: Notify::new(),
            names: false,
            watches_changed: Notify::new(),
            teardowns: Notify::new(),
            teardown_quiet: DEFAULT_TEARDOWN_QUIET,
        })
    }

    /// Release CNI endpoints whose sandbox has been gone this long (see [`super::gone`]).
    pub fn with_gone_sandbox_grace(mut self, grace: std::time::Duration) -> Self {
        self.gone_grace = grace;
        self
    }

    /// Delete what DELs took down once they pause this long (see [`super::teardown`]).
    pub fn with_teardown_quiet(mut self, quiet: std::time::Duration) -> Self {
        self.teardown_quiet = quiet;
        self
    }

    /// Choose host ports for published ports that name none from this range.
    pub fn with_host_port_range(self, range: super::HostPortRange) -> Self {
        lock(&self.state).host_ports = range;
        self
    }

    /// The node's weft-dns is fed: tell sandboxes where it answers (CNI result `dns`,
    /// status `nameserver`).
    pub fn with_names(mut self, on: bool) -> Self {
        self.names = on;
        self
    }

    /// Every attachment of this node as it stands (for the names feed).
    pub fn attachments(&self) -> Vec<Attachment> {
        lock(&self.state).attachments.values().cloned().collect()
    }

    /// Replace the sandbox policy (the node's own namespaces, the directory of named
    /// namespaces); [`Endpoints::new`] starts with the agent's own namespace refused.
    pub fn with_sandbox_policy(self, policy: SandboxPolicy) -> Self {
        lock(&self.state).sandboxes = policy;
        self
    }

    /// Rebuild the allocations from the journal, then from the statuses of this node's
    /// ContainerEndpoints (for records the journal lacks). Call once, before the first pass.
    pub fn restore(&self, ceps: &[Arc<ContainerEndpoint>], networks: &Networks, facts: &NodeFacts) {
        lock(&self.state).restore(&self.node, &self.journal, ceps, networks, facts);
    }

    /// Decide, for this pass, which endpoints exist and what the node needs for them.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        networks: &Networks,
        facts: &NodeFacts,
        desired_node: &KernelState,
        ceps: &[Arc<ContainerEndpoint>],
        peers: &BTreeMap<String, IpAddr>,
        host_ports: &HostPorts,
        full_check: bool,
    ) -> (NodeAdditions, Work) {
        lock(&self.state).plan(
            &self.node,
            &self.journal,
            networks,
            facts,
            desired_node,
            ceps,
            peers,
            host_ports,
            full_check,
        )
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
    pub(super) async fn next_pass(&self) {
        let after = self.passes_started.load(Ordering::SeqCst);
        let mut rx = self.passes_applied.subscribe();
        self.wake.notify_one();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            rx.wait_for(|done| *done > after),
        )
        .await;
    }

    /// The kernel side of one attachment, as it should be now.
    fn config_of(&self, id: &EndpointId) -> Result<crate::kernel::SandboxConfig, Problem> {
        let st = lock(&self.state);
        let att = st.attachments.get(id).ok_or_else(|| {
            Problem::new(Reason::NetworkNotReady, format!("endpoint {id} is gone"))
        })?;
        let net = st.networks.get(&att.network).ok_or_else(|| {
            Problem::new(
                Reason::NetworkNotReady,
                format!("network {} does not exist", att.network),
            )
        })?;
        let facts = st.facts.clone().ok_or_else(|| {
            Problem::new(Reason::NetworkNotReady, "the agent has not planned yet")
        })?;
        let default_route =
            plan::holds_default_route_among(att, net, &st.attachments, &st.networks);
        plan::sandbox_config(att, net, &facts, &st.desired_node, default_route)
    }

    /// Hold one endpoint's kernel objects alone (see [`super::claims`]).
    pub(super) async fn claim(&self, id: &EndpointId) -> Result<Claim<'_>, String> {
        self.claims.claim(id, CLAIM_TIMEOUT).await
    }

    /// Make one attachment real (or repair it); records the outcome.
    pub(super) async fn ensure(&self, id: &EndpointId) -> Result<Ensured, Problem> {
        // Whoever held it before us may have changed it: check again ourselves (cheap when
        // it is all in place; an endpoint detached meanwhile is reported gone).
        let _claim = self
            .claim(id)
            .await
            .map_err(|m| Problem::new(Reason::KernelError, m))?;
        self.ensure_now(id).await
    }

    async fn ensure_now(&self, id: &EndpointId) -> Result<Ensured, Problem> {
        let (sandbox, shares_node) = {
            let st = lock(&self.state);
            let att = st.attachments.get(id);
            (
                att.map(|a| format!("sandbox {}", a.sandbox)),
                att.and_then(|a| st.networks.get(&a.network))
                    .is_some_and(|n| drivers::of(n).endpoint_shape() == EndpointShape::SharesNode),
            )
        };
        if shares_node {
            // A host network's endpoint is the node's namespace itself: nothing to make.
            let mut st = lock(&self.state);
            st.ensured.insert(id.clone());
            st.problems.remove(id);
            return Ok(Ensured::default());
        }
        let _sandbox = match &sandbox {
            Some(s) => Some(
                self.sandboxes
                    .claim(s, CLAIM_TIMEOUT)
                    .await
                    .map_err(|m| Problem::new(Reason::KernelError, m))?,
            ),
            None => None,
        };
        // A repair (it was attached, or its last repair failed): a failure is named by what
        // drifted, not by the kernel's error alone.
        let repairing = {
            let st = lock(&self.state);
            st.ensured.contains(id) || st.problems.get(id).is_some_and(|p| is_drift(p.reason))
        };
        let started = std::time::Instant::now();
        let cfg = self.config_of(id);
        let result = match &cfg {
            Ok(cfg) => match self.kernel.ensure_endpoint(cfg).await {
                Ok(w) => Ok(w),
                Err(e) => {
                    let p = kernel_problem(&e, &cfg.sandbox);
                    if repairing && p.reason != Reason::SandboxMissing {
                        Err(self.repair_problem(cfg, &p).await)
                    } else {
                        Err(p)
                    }
                }
            },
            Err(p) => Err(p.clone()),
        };
        if repairing
            && let Ok(ensured) = &result
            && ensured.writes > 0
        {
            tracing::info!(endpoint = %id, writes = ensured.writes, took_us = started.elapsed().as_micros() as u64, "endpoint drift repaired");
        }
        let mut st = lock(&self.state);
        match &result {
            Ok(_) => {
                if st.ensured.insert(id.clone()) {
                    // Newly attached: its sandbox is watched from now on.
                    self.watches_changed.notify_one();
                }
                if st
                    .problems
                    .get(id)
                    .is_some_and(|p| p.reason != Reason::PortConflict)
                {
                    st.problems.remove(id);
                }
            }
            Err(p) => {
                st.ensured.remove(id);
                if p.reason == Reason::SandboxMissing {
                    self.check_sandboxes();
                }
                // An endpoint detached while this waited for its claim has nothing to report.
                if st.attachments.contains_key(id)
                    && st.problems.insert(id.clone(), p.clone()).is_none()
                {
                    // Retried on the next change in its sandbox.
                    self.watches_changed.notify_one();
                }
            }
        }
        result
    }

    /// Check every attachment of `sandbox` again now (after one left it: the default route
    /// may move to another). Failures are recorded as the endpoints' problems.
    pub(super) async fn ensure_sandbox(&self, sandbox: &str) {
        let ids: Vec<EndpointId> = lock(&self.state)
            .attachments
            .values()
            .filter(|a| a.sandbox == sandbox)
            .map(|a| a.id.clone())
            .collect();
        for id in ids {
            if let Err(p) = self.ensure(&id).await {
                tracing::debug!(endpoint = %id, problem = %p, "re-checking after a sibling left failed");
            }
        }
    }

    /// Remove one attachment's kernel objects and its journal record.
    pub(super) async fn detach(&self, att: &Attachment) -> Result<usize, String> {
        let _claim = self.claim(&att.id).await?;
        self.detach_now(att).await
    }

    /// [`Self::detach`] for a caller holding the endpoint's claim.
    pub(super) async fn detach_now(&self, att: &Attachment) -> Result<usize, String> {
        // A host network's endpoint (the only one admitted with the node's own namespace as
        // its sandbox) made nothing there, and nothing there is an endpoint's to remove.
        let in_node = lock(&self.state)
            .sandboxes
            .refuse_node_namespace(&att.sandbox)
            .is_err();
        let writes = if in_node {
            0
        } else {
            self.kernel
                .remove_endpoint(
                    Path::new(&att.sandbox),
                    &att.if_name,
                    &plan::host_interface(&att.id),
                    &plan::host_alias(&att.id),
                )
                .await
                .map_err(|e| e.to_string())?
        };
        if let Err(e) = self.journal.remove(&att.id) {
            tracing::warn!(endpoint = %att.id, error = %e, "cannot remove the endpoint's journal record");
        }
        self.watches_changed.notify_one();
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
        let results: Vec<Result<Ensured, Problem>> = futures::stream::iter(pending)
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(e) => writes += e.writes,
                Err(p) => tracing::debug!(problem = %p, "endpoint not attached"),
            }
        }
        writes
    }

    /// Drop an attachment from the state (address freed, journal record removed).
    pub(super) fn forget(&self, id: &EndpointId) -> Option<Attachment> {
        let mut st = lock(&self.state);
        let att = st.attachments.remove(id)?;
        st.free_address(&self.journal, &att);
        st.ensured.remove(id);
        st.replan_sandbox(&att.sandbox);
        st.problems.remove(id);
        let _ = self.journal.remove(id);
        self.watches_changed.notify_one();
        Some(att)
    }
}
