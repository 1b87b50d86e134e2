//! How Weft's daemons retry their watches of the API server.
//!
//! kube-runtime's default watch backoff grows to 30 s and adds up to as much again as jitter:
//! after an API outage of half a minute, a watch could stay asleep for most of another minute,
//! so an agent kept programming a peer's endpoint from a stale cache long after the API server
//! was back. Weft caps the wait at [`WatchBackoff::MAX`]: a refused connection is cheap for an
//! API server, and a node that resyncs within seconds of the outage is what users expect.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use kube::runtime::utils::Backoff;

/// Exponential backoff from [`WatchBackoff::MIN`] doubling to [`WatchBackoff::MAX`], each
/// wait drawn from its upper half so that many agents retrying at once spread out. A watch
/// that delivers an event again resets it (kube-runtime's `StreamBackoff` does that).
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    pub const MIN: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(8);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (base * 2).min(Self::MAX);
        Some(base.mul_f64(0.5 + 0.5 * unit_random()))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// A number in [0, 1) from the standard library's randomly keyed hasher: jitter needs no
/// more than that, and no extra crate.
fn unit_random() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_never_beyond() {
        let waits: Vec<Duration> = WatchBackoff::default().take(12).collect();
        assert!(waits[0] >= WatchBackoff::MIN / 2 && waits[0] <= WatchBackoff::MIN);
        assert!(waits.iter().all(|w| *w <= WatchBackoff::MAX), "{waits:?}");
        // From the fifth try on the base is the cap; every wait is in its upper half.
        assert!(
            waits[5..].iter().all(|w| *w >= WatchBackoff::MAX / 2),
            "{waits:?}"
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = WatchBackoff::default();
        for _ in 0..6 {
            b.next();
        }
        b.reset();
        assert!(b.next().is_some_and(|w| w <= WatchBackoff::MIN));
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let first: Vec<Duration> = (0..20)
            .filter_map(|_| WatchBackoff::default().nth(5))
            .collect();
        let distinct: std::collections::BTreeSet<_> = first.iter().collect();
        assert!(distinct.len() > 1, "{first:?}");
    }
}
