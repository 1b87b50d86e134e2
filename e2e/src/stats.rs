//! Latency samples for the benchmarks.

use std::time::Duration;

/// Latency samples of one operation, reported as mean, p50 and p99.
pub struct Stats {
    pub name: &'static str,
    pub samples: Vec<Duration>,
}

impl Stats {
    pub fn new(name: &'static str) -> Self {
        Stats {
            name,
            samples: Vec::new(),
        }
    }
    pub fn pct(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        if s.is_empty() {
            return Duration::ZERO;
        }
        s[((s.len() as f64 - 1.0) * p).round() as usize]
    }
    pub fn mean(&self) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }
    pub fn row(&self) {
        println!(
            "{:<34} n={:<4} mean {:>7.2} ms  p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.name,
            self.samples.len(),
            ms(self.mean()),
            ms(self.pct(0.5)),
            ms(self.pct(0.99))
        );
    }
}

/// A duration in milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
