//! Event-driven repair inside sandboxes: one netlink event socket per attached sandbox
//! ([`crate::kernel::sandbox_events`]), opened when its first endpoint is attached (or has
//! failed) and closed when its last one goes (or its path does). A notification there — the interface deleted,
//! an address or a route removed — re-ensures that sandbox's endpoints after a short
//! debounce, under their claims, like any repair; the pass is woken only when an endpoint's
//! problem changed, to write its status. A new subscription starts with one such look: a
//! change made between the attach and the subscription sent no event to it. The node side
//! (a host veth off its bridge) is the pass's, woken by the node's own link events
//! ([`super::drift::host_side_drifted`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::EndpointId;
use super::drift::repair_problem;
use super::manager::Endpoints;
use super::state::lock;
use crate::drivers::Problem;
use crate::kernel::{EndpointLink, Kernel, SandboxConfig, sandbox_events};

/// Notifications of one burst (a flush of several addresses, a deleted interface taking its
/// addresses and routes along) are gathered this long into one repair.
pub const DEBOUNCE: Duration = Duration::from_millis(5);

/// How often the watched sandboxes are compared with the attachments even without a
/// change (a sandbox whose socket could not be opened is tried again then).
const RECHECK: Duration = Duration::from_secs(1);

impl Endpoints {
    /// Watch every attached sandbox and repair its endpoints when something changes there.
    /// Runs for the life of the agent.
    pub async fn watch_sandboxes(self: Arc<Self>) {
        let (tx, mut rx) = mpsc::channel::<String>(1024);
        let mut watched: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            tokio::select! {
                _ = self.watches_changed.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                Some(first) = rx.recv() => {
                    let mut due = BTreeSet::from([first]);
                    tokio::time::sleep(DEBOUNCE).await;
                    while let Ok(s) = rx.try_recv() {
                        due.insert(s);
                    }
                    let repairs = due.iter().map(|s| self.repair_sandbox(s));
                    futures::future::join_all(repairs).await;
                }
            }
            let wanted: BTreeSet<String> = {
                let st = lock(&self.state);
                // Attached, or failing (a drift not repaired yet is retried on the next
                // change there); not while a first attach is under way (its own writes).
                st.attachments
                    .values()
                    .filter(|a| st.ensured.contains(&a.id) || st.problems.contains_key(&a.id))
                    .map(|a| a.sandbox.clone())
                    .collect()
            };
            watched.retain(|sandbox, task| {
                let keep = wanted.contains(sandbox) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for sandbox in wanted {
                if watched.contains_key(&sandbox) {
                    continue;
                }
                let tx = tx.clone();
                let path = sandbox.clone();
                let task = tokio::spawn(async move {
                    let mut events = match sandbox_events(Path::new(&path)).await {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::debug!(sandbox = %path, error = %e, "cannot watch the sandbox");
                            return;
                        }
                    };
                    // A change between the attach's last write and this subscription sent
                    // no event to anyone: look once now that the next one will be seen.
                    if tx.send(path.clone()).await.is_err() {
                        return;
                    }
                    while events.next().await.is_some() {
                        if tx.send(path.clone()).await.is_err() {
                            return;
                        }
                    }
                    // The path is gone or names another namespace: look once more (the
                    // repair reports SandboxMissing, or attaches to the new namespace).
                    let _ = tx.send(path).await;
                });
                watched.insert(sandbox, task);
            }
        }
    }

    /// Ensure again every endpoint of one sandbox; wake the pass if a problem came or went.
    async fn repair_sandbox(&self, sandbox: &str) {
        let ids: Vec<EndpointId> = lock(&self.state)
            .attachments
            .values()
            .filter(|a| a.sandbox == sandbox)
            .map(|a| a.id.clone())
            .collect();
        let mut changed = false;
        for id in ids {
            let before = lock(&self.state).problems.get(&id).cloned();
            let _ = self.ensure(&id).await;
            changed |= lock(&self.state).problems.get(&id) != before.as_ref();
        }
        if changed {
            self.wake.notify_one();
        }
    }

    /// What a failed repair of `cfg` found: the interface in the sandbox and the host side,
    /// looked at now, name the problem ([`repair_problem`]).
    pub(super) async fn repair_problem(&self, cfg: &SandboxConfig, failure: &Problem) -> Problem {
        let sandbox = Kernel::inspect_endpoint(&cfg.sandbox, &cfg.if_name)
            .await
            .ok()
            .flatten();
        let host = match &cfg.link {
            EndpointLink::Veth { host, .. } => match self.kernel.host_port(host).await {
                Ok(port) => Some(port),
                Err(_) => return failure.clone(),
            },
            _ => None,
        };
        repair_problem(
            cfg,
            sandbox.as_ref(),
            host.as_ref().map(Option::as_ref),
            failure,
        )
    }
}
