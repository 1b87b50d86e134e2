//! Own-write tracking: which nftables transactions are the agent's, and the handles of the
//! rules they added, handed over by the kernel-event reader.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use crate::kernel::nft::plan::AddedRules;

/// The agent's own `nft` runs, and what their transactions added.
///
/// The kernel-event reader matches each committed transaction to the run that made it (the
/// NEWGEN message names the committing process) and hands over the handles of the rules it
/// added, read from the NEWRULE notifications. That is how an `nft` run learns its new
/// handles without `--echo`, which makes `nft` fetch the whole ruleset before it writes
/// anything (measured: ~7.5 ms per run instead of ~2.5 ms with 400 rules, and growing with
/// the ruleset). The notifications are queued to the reader's socket before `nft` gets the
/// kernel's answer, so they are there by the time the run has ended.
#[derive(Clone, Debug, Default)]
pub(crate) struct OwnNft(Arc<OwnNftInner>);

#[derive(Debug, Default)]
struct OwnNftInner {
    state: Mutex<OwnNftState>,
    committed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct OwnNftState {
    /// Process ids of recent runs.
    pids: VecDeque<u32>,
    /// The netlink port of the in-process libnftables session, once one is open: its
    /// transactions carry the port where a child's carry the child's pid.
    session_port: Option<u32>,
    /// An event reader is running: runs learn their handles from it.
    listening: bool,
    /// Recent own transactions not yet claimed by their run: pid → rules added.
    commits: VecDeque<(u32, AddedRules)>,
    /// How many times notifications were lost (the socket overran).
    overruns: u64,
}

impl OwnNft {
    /// How many recent runs (and unclaimed transactions) are remembered.
    const KEEP: usize = 32;
    /// How long a run waits for its transaction's notifications before the listing is
    /// treated as unknown (and read again by the next pass).
    const WAIT: Duration = Duration::from_millis(500);

    fn lock(&self) -> std::sync::MutexGuard<'_, OwnNftState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn remember(&self, pid: u32) {
        let mut s = self.lock();
        if s.pids.len() == Self::KEEP {
            s.pids.pop_front();
        }
        s.pids.push_back(pid);
        // A reused pid must not claim an old run's transaction.
        s.commits.retain(|(p, _)| *p != pid);
    }

    /// Whether `pid` (a process id or a netlink port) is one of the agent's nft writers.
    pub(crate) fn contains(&self, pid: u32) -> bool {
        let s = self.lock();
        s.session_port == Some(pid) || s.pids.contains(&pid)
    }

    /// The agent's libnftables session writes from netlink port `port` from now on.
    pub(crate) fn adopt_session(&self, port: u32) {
        self.lock().session_port = Some(port);
    }

    /// A transaction of the session with `port` is about to run: an unclaimed commit of an
    /// earlier one (whose notifications came after its run stopped waiting) must not be
    /// taken for this one's.
    pub(crate) fn begin(&self, port: u32) {
        self.lock().commits.retain(|(p, _)| *p != port);
    }

    /// An event reader now reports transactions (see [`OwnNft::committed`]).
    pub(crate) fn listen(&self) {
        self.lock().listening = true;
    }

    pub(crate) fn listening(&self) -> bool {
        self.lock().listening
    }

    /// The event reader saw the transaction of the agent's run `pid` commit.
    pub(crate) fn committed(&self, pid: u32, added: AddedRules) {
        {
            let mut s = self.lock();
            if s.commits.len() == Self::KEEP {
                s.commits.pop_front();
            }
            s.commits.push_back((pid, added));
        }
        self.0.committed.notify_waiters();
    }

    /// The event reader lost notifications: runs waiting for theirs stop waiting.
    pub(crate) fn overrun(&self) {
        self.lock().overruns += 1;
        self.0.committed.notify_waiters();
    }

    pub(crate) fn overruns(&self) -> u64 {
        self.lock().overruns
    }

    /// The rules that run `pid`'s transaction added; `None` when that cannot be known (its
    /// notifications were lost, or never came within [`OwnNft::WAIT`]).
    pub(crate) async fn added_by(&self, pid: u32, overruns_before: u64) -> Option<AddedRules> {
        let deadline = tokio::time::Instant::now() + Self::WAIT;
        loop {
            let notified = self.0.committed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(i) = s.commits.iter().position(|(p, _)| *p == pid) {
                    return s.commits.remove(i).map(|(_, added)| added);
                }
                if s.overruns != overruns_before {
                    return None;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::debug!(pid, "no notifications from an own nft transaction");
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NftFamily;

    /// A run whose transaction's notifications never come stops waiting after
    /// [`OwnNft::WAIT`] (and the listing then counts as unknown); a commit that does come is
    /// handed over at once, and so is an overrun (as "unknown").
    #[tokio::test]
    async fn a_run_waits_for_its_notifications_at_most_the_wait() {
        let own = OwnNft::default();
        own.remember(7);
        let started = std::time::Instant::now();
        assert!(own.added_by(7, own.overruns()).await.is_none());
        let waited = started.elapsed();
        assert!(
            waited >= OwnNft::WAIT && waited < OwnNft::WAIT * 3,
            "waited {waited:?}"
        );

        let mut added = AddedRules::new();
        added.insert((NftFamily::Inet, "forward".into(), "a1".into()), 42);
        let waiting = {
            let own = own.clone();
            tokio::spawn(async move { own.added_by(7, own.overruns()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        own.committed(7, added.clone());
        assert_eq!(waiting.await.unwrap(), Some(added));
        assert!(started.elapsed() < OwnNft::WAIT / 2);

        let waiting = {
            let own = own.clone();
            let before = own.overruns();
            tokio::spawn(async move { own.added_by(8, before).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        own.overrun();
        assert!(waiting.await.unwrap().is_none());
        assert!(started.elapsed() < OwnNft::WAIT / 2);
    }
}
