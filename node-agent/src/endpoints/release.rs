//! The loop that finds endpoints whose sandbox is gone and releases the CNI ones after the
//! grace period (what "gone" means and why: [`super::gone`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::time::Instant;

use super::EndpointId;
use super::gone::{PROBE_PERIOD, Round, fold_round, presence};
use super::manager::Endpoints;
use super::state::lock;

impl Endpoints {
    /// Look at every endpoint's sandbox, forever: every [`PROBE_PERIOD`], at once when
    /// asked ([`Endpoints::check_sandboxes`]), and at each release deadline. Spawn once,
    /// after [`Endpoints::restore`].
    pub async fn release_gone_sandboxes(self: Arc<Self>) {
        loop {
            let round = self.probe_sandboxes().await;
            if !round.changed.is_empty() {
                self.wake.notify_one();
            }
            for id in &round.due {
                let gone_for = {
                    let st = lock(&self.state);
                    // Replaced by a new ADD since the probe: that one is not gone.
                    st.gone
                        .get(id)
                        .filter(|g| {
                            st.attachments
                                .get(id)
                                .is_some_and(|a| a.sandbox == g.sandbox)
                        })
                        .map(|g| (g.since.elapsed(), g.sandbox.clone()))
                };
                let Some((gone_for, sandbox)) = gone_for else {
                    continue;
                };
                tracing::info!(endpoint = %id, sandbox, gone_for_ms = gone_for.as_millis() as u64, "releasing an endpoint whose sandbox is gone");
                if let Err(f) = self.remove_via_cni(id).await {
                    tracing::warn!(endpoint = %id, error = %f.msg, "releasing an endpoint whose sandbox is gone failed; will retry");
                }
            }
            let mut until = Instant::now() + PROBE_PERIOD;
            if let Some(next) = round.next {
                until = until.min(next);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = self.sandbox_check.notified() => {}
            }
        }
    }

    /// Probe now (an attach just found its sandbox missing).
    pub(super) fn check_sandboxes(&self) {
        self.sandbox_check.notify_one();
    }

    async fn probe_sandboxes(&self) -> Round {
        let targets: Vec<(EndpointId, String, bool)> = lock(&self.state)
            .attachments
            .values()
            .map(|a| (a.id.clone(), a.sandbox.clone(), a.cni.is_some()))
            .collect();
        // statfs on tmpfs or procfs does not block, but it is a syscall per endpoint: off
        // the async workers.
        let probed = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|(id, sandbox, cni)| {
                    let p = presence(Path::new(&sandbox));
                    (id, (sandbox, cni, p))
                })
                .collect::<BTreeMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        let mut st = lock(&self.state);
        let round = fold_round(&mut st.gone, &probed, self.gone_grace, Instant::now());
        for id in &round.changed {
            // Attach again (back: the interface is re-created) or find out (gone: status
            // says SandboxMissing).
            st.ensured.remove(id);
        }
        round
    }
}
