//! Claims: one endpoint is worked on by one task at a time. Attach, repair and detach all
//! hold the endpoint's claim, and CNI DEL/GC keep it until the attachment is forgotten, so
//! a pass repairing an endpoint cannot bring back an interface that a DEL has just removed
//! and answered for.
//!
//! A claim is an async mutex per endpoint: a waiter sleeps until the holder lets go (no
//! polling) and waiters are served in arrival order. The map only holds endpoints that are
//! claimed or waited for; the last one out removes the entry.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use super::EndpointId;

/// How long a task waits for another to finish with an endpoint before giving up (a kernel
/// call stuck that long is an error of its own).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

type Slot = Arc<tokio::sync::Mutex<()>>;

/// The claims of every endpoint on the node (or of anything else named by a `K`: the
/// agent also claims whole sandboxes, see `Endpoints::ensure`).
pub struct Claims<K = EndpointId> {
    slots: Mutex<HashMap<K, Slot>>,
}

impl<K> Default for Claims<K> {
    fn default() -> Self {
        Claims {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

/// One endpoint held by one task; released when dropped.
pub struct Claim<'a, K: Eq + Hash + Clone = EndpointId> {
    claims: &'a Claims<K>,
    id: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone + Display> Claims<K> {
    /// Wait (without polling) until nobody else holds `id`, then hold it. Gives up after
    /// `timeout`.
    pub async fn claim(&self, id: &K, timeout: Duration) -> Result<Claim<'_, K>, String> {
        let slot = self.slot(id);
        // The claim exists before the wait, so a waiter that gives up still tidies the map.
        let mut claim = Claim {
            claims: self,
            id: id.clone(),
            guard: None,
        };
        let guard = tokio::time::timeout(timeout, slot.lock_owned())
            .await
            .map_err(|_| format!("{id} is still being worked on by another request"))?;
        claim.guard = Some(guard);
        Ok(claim)
    }

    /// Is anybody holding or waiting for `id`?
    pub fn is_claimed(&self, id: &K) -> bool {
        lock(&self.slots).contains_key(id)
    }

    fn slot(&self, id: &K) -> Slot {
        lock(&self.slots).entry(id.clone()).or_default().clone()
    }
}

impl<K: Eq + Hash + Clone> Drop for Claim<'_, K> {
    fn drop(&mut self) {
        let mut slots = lock(&self.claims.slots);
        // Let go first; then, if nobody else holds or waits for the slot (the map's copy is
        // the only one left), forget it.
        drop(self.guard.take());
        if slots
            .get(&self.id)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            slots.remove(&self.id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn id(name: &str) -> EndpointId {
        EndpointId {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_the_claim_is_released_without_polling() {
        let claims = Arc::new(Claims::default());
        let held = claims.claim(&id("a"), CLAIM_TIMEOUT).await.expect("free");
        let got = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (claims, got) = (claims.clone(), got.clone());
            tokio::spawn(async move {
                let _c = claims
                    .claim(&id("a"), CLAIM_TIMEOUT)
                    .await
                    .expect("released");
                got.store(true, Ordering::SeqCst);
            })
        };
        // The clock is paused: a poller would need time to pass to look again. Nothing
        // advances it, and the waiter still does not get the claim while it is held…
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!got.load(Ordering::SeqCst));
        // …and gets it as soon as it is released, with no time passing at all.
        let before = tokio::time::Instant::now();
        drop(held);
        waiter.await.expect("waiter");
        assert!(got.load(Ordering::SeqCst));
        assert_eq!(tokio::time::Instant::now(), before);
        assert!(!claims.is_claimed(&id("a")), "the slot is forgotten");
    }

    /// What the manager does: attach holds the claim across its kernel work; a detach that
    /// arrives meanwhile starts only after the attach has finished.
    #[tokio::test]
    async fn a_detach_waits_for_an_attach_in_flight() {
        let claims = Arc::new(Claims::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let attach = {
            let (claims, log) = (claims.clone(), log.clone());
            tokio::spawn(async move {
                let _c = claims.claim(&id("a"), CLAIM_TIMEOUT).await.expect("free");
                lock(&log).push("attach started");
                let _ = started_tx.send(());
                // The kernel work, still in flight when the detach arrives.
                let _ = finish_rx.await;
                lock(&log).push("attach done");
            })
        };
        started_rx.await.expect("attach started");
        let detach = {
            let (claims, log) = (claims.clone(), log.clone());
            tokio::spawn(async move {
                let _c = claims
                    .claim(&id("a"), CLAIM_TIMEOUT)
                    .await
                    .expect("released");
                lock(&log).push("detach");
            })
        };
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*lock(&log), vec!["attach started"]);
        let _ = finish_tx.send(());
        attach.await.expect("attach");
        detach.await.expect("detach");
        assert_eq!(*lock(&log), vec!["attach started", "attach done", "detach"]);
        assert!(!claims.is_claimed(&id("a")));
    }

    #[tokio::test]
    async fn different_endpoints_do_not_wait_for_each_other() {
        let claims = Claims::default();
        let _a = claims.claim(&id("a"), CLAIM_TIMEOUT).await.expect("a");
        let b = tokio::time::timeout(
            Duration::from_secs(1),
            claims.claim(&id("b"), CLAIM_TIMEOUT),
        )
        .await;
        assert!(matches!(b, Ok(Ok(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_held_too_long_is_an_error_and_leaves_nothing_behind() {
        let claims = Claims::default();
        let held = claims.claim(&id("a"), CLAIM_TIMEOUT).await.expect("free");
        let late = claims.claim(&id("a"), Duration::from_secs(1)).await;
        assert!(late.is_err_and(|e| e.contains("default/a")));
        drop(held);
        assert!(!claims.is_claimed(&id("a")));
    }
}
