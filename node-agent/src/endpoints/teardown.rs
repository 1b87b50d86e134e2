//! CNI DEL in two steps: out of service at once, deleted in the background.
//!
//! Deleting a veth costs ~20 ms of the kernel's RCU grace periods, almost all of a DEL. So a
//! DEL of a veth endpoint only takes it out of service — host end down (the sandbox end loses
//! its carrier), out of its bridge, into [`crate::kernel::endpoint::RELEASE_GROUP`] — moves
//! the attachment to [`State::releasing`](super::state::State) and answers. The endpoint can
//! no longer carry traffic; its host ports are free at once (its DNAT rules have nowhere to
//! send to, and a new ADD's publish transaction or the next pass replaces them).
//!
//! [`Endpoints::finish_teardowns`] then deletes the pending interfaces, several in one
//! request, and only then frees the address and removes the journal record. It first waits
//! for DELs to stop arriving ([`super::manager::DEFAULT_TEARDOWN_QUIET`], at most [`MAX_WAIT_IN_QUIETS`] times that): a deletion holds the RTNL
//! lock through its RCU waits, so one started between two DELs of a burst makes the next
//! DEL's cheap request wait ~20 ms for it; deleted after the burst, all of it goes in one
//! request. Until then:
//! - an ADD for the same endpoint, the same sandbox and interface name, or the same
//!   requested address finishes the teardown itself first ([`Endpoints::settle_teardowns`]);
//! - the agent stopping leaves the journal record and the DEL's tombstone behind, and the
//!   first pass after the restart detaches that attachment (see `State::plan`);
//! - the runtime deleting the sandbox deletes the pair itself: gone counts as deleted.

use std::sync::Arc;
use std::time::Duration;

use super::Attachment;
use super::EndpointId;
use super::manager::Endpoints;
use super::plan;
use super::state::lock;

/// How long a failed deletion waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// ... but no later than this many quiet windows after the first pending DEL was noticed:
/// under an endless stream of DELs the interfaces (and their addresses, freed only after
/// the deletion) are still released within about a second by default.
const MAX_WAIT_IN_QUIETS: u32 = 5;

impl Endpoints {
    /// Take a veth endpoint out of service and leave its deletion to
    /// [`Self::finish_teardowns`]; any other endpoint is detached and forgotten at once.
    /// Caller holds the endpoint's claim.
    pub(super) async fn take_down(&self, att: &Attachment) -> Result<(), String> {
        let disconnected = self
            .kernel
            .disconnect_endpoint(&plan::host_interface(&att.id), &plan::host_alias(&att.id))
            .await
            .map_err(|e| e.to_string())?;
        if !disconnected {
            self.detach_now(att).await?;
            self.forget(&att.id);
            return Ok(());
        }
        {
            let mut st = lock(&self.state);
            if let Some(att) = st.attachments.remove(&att.id) {
                st.ensured.remove(&att.id);
                st.problems.remove(&att.id);
                st.replan_sandbox(&att.sandbox);
                st.releasing.insert(att.id.clone(), att);
            }
        }
        self.teardowns.notify_one();
        Ok(())
    }

    /// Delete the interfaces of endpoints taken down by DEL, forever: whatever is pending
    /// once DELs pause (see [`Self::until_dels_pause`]), in one batch. Spawn once.
    pub async fn finish_teardowns(self: Arc<Self>) {
        loop {
            self.teardowns.notified().await;
            self.until_dels_pause().await;
            let pending: Vec<EndpointId> = lock(&self.state).releasing.keys().cloned().collect();
            if !pending.is_empty() && !self.finish(&pending).await {
                tokio::time::sleep(RETRY).await;
                self.teardowns.notify_one();
            }
        }
    }

    /// Wait until no DEL has taken an endpoint down for `teardown_quiet` (each one notifies
    /// `teardowns`), or [`MAX_WAIT_IN_QUIETS`] times that has passed.
    async fn until_dels_pause(&self) {
        let quiet = self.teardown_quiet;
        let latest = tokio::time::Instant::now() + quiet * MAX_WAIT_IN_QUIETS;
        loop {
            let quiet_until = (tokio::time::Instant::now() + quiet).min(latest);
            match tokio::time::timeout_at(quiet_until, self.teardowns.notified()).await {
                Ok(()) if tokio::time::Instant::now() < latest => continue,
                _ => return,
            }
        }
    }

    /// Before an ADD: finish the pending teardowns that stand in its way (same endpoint,
    /// same interface in the same sandbox, or the address it asks for).
    pub(super) async fn settle_teardowns(&self, req: &super::EndpointRequest) {
        let blocking: Vec<EndpointId> = lock(&self.state)
            .releasing
            .values()
            .filter(|a| {
                a.id == req.id
                    || (a.sandbox == req.sandbox && a.if_name == req.if_name)
                    || req
                        .address
                        .is_some_and(|want| a.address.is_some_and(|have| have.addr() == want))
            })
            .map(|a| a.id.clone())
            .collect();
        if !blocking.is_empty() {
            self.finish(&blocking).await;
        }
    }

    /// Delete the interfaces of `ids` (those still pending: another task may have finished
    /// some), then free their addresses and journal records. Returns false if the deletion
    /// failed (they stay pending).
    async fn finish(&self, ids: &[EndpointId]) -> bool {
        // Claims in one order (ids come sorted), one at a time: an ADD settling waits here
        // for a batch in flight rather than deleting the same links beside it.
        let mut claims = Vec::with_capacity(ids.len());
        for id in ids {
            match self.claim(id).await {
                Ok(c) => claims.push(c),
                Err(e) => {
                    tracing::warn!(endpoint = %id, error = %e, "cannot finish a teardown now")
                }
            }
        }
        let pending: Vec<Attachment> = {
            let st = lock(&self.state);
            ids.iter()
                .filter_map(|id| st.releasing.get(id).cloned())
                .collect()
        };
        if pending.is_empty() {
            return true;
        }
        let hosts: Vec<(String, String)> = pending
            .iter()
            .map(|a| (plan::host_interface(&a.id), plan::host_alias(&a.id)))
            .collect();
        let started = std::time::Instant::now();
        if let Err(e) = self.kernel.delete_released(&hosts).await {
            tracing::warn!(endpoints = pending.len(), error = %e, "deleting released endpoint interfaces failed; will retry");
            return false;
        }
        {
            let mut st = lock(&self.state);
            for att in &pending {
                st.releasing.remove(&att.id);
                // Attached again meanwhile (it cannot be through CNI, which settles first):
                // the address and record are the new attachment's.
                if st.attachments.contains_key(&att.id) {
                    continue;
                }
                st.free_address(&self.journal, att);
                if let Err(e) = self.journal.remove(&att.id) {
                    tracing::warn!(endpoint = %att.id, error = %e, "cannot remove the endpoint's journal record");
                }
            }
        }
        tracing::debug!(
            endpoints = pending.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "released endpoint interfaces deleted"
        );
        drop(claims);
        // A ContainerEndpoint waiting for one of these addresses is admitted again.
        self.wake.notify_one();
        true
    }
}
