//! The agent's clocks: the full check and the heartbeat each have one, and a tick *marks*
//! its work due (a flag the next pass takes) and wakes a pass. Comparing the time since the
//! last full check with the period, at a tick of that same period, found it a hair short
//! every other time (the check was stamped inside the pass, after the tick), so the 30 s
//! full check ran every 60 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Mark `due` and wake `notify` every `every`, the first time one period from now.
pub(super) fn spawn_clock(every: Duration, due: Arc<AtomicBool>, notify: Arc<Notify>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            due.store(true, Ordering::SeqCst);
            notify.notify_one();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Due once per period, every period, on time — a pass that takes its time in between
    /// does not push the next one back.
    #[tokio::test(start_paused = true)]
    async fn work_is_due_every_period_not_every_other() {
        let due = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(Notify::new());
        let start = tokio::time::Instant::now();
        spawn_clock(Duration::from_secs(30), due.clone(), notify.clone());
        for period in 1..=4u32 {
            let tick = start + Duration::from_secs(30) * period;
            tokio::time::sleep_until(tick - Duration::from_millis(10)).await;
            assert!(!due.load(Ordering::SeqCst), "due early in period {period}");
            tokio::time::sleep_until(tick + Duration::from_millis(10)).await;
            assert!(
                due.swap(false, Ordering::SeqCst),
                "not due after period {period}"
            );
            // The pass woken by it (taking 2 s here).
            tokio::time::timeout(Duration::from_millis(1), notify.notified())
                .await
                .expect("a pass is woken");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
