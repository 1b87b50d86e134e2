//! The agent's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// Kernel write operations (netlink requests, nft transactions, sysctl writes).
    pub kernel_writes: Counter,
    /// Changes made because the kernel drifted from a desired state that had not changed.
    pub drift_corrections: Family<KindLabel, Counter>,
    pub pass_seconds: Histogram,
    pub status_writes: Counter,
    /// Set after the first full pass: `/readyz` answers 200 from then on.
    pub ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Metrics {
    fn default() -> Self {
        // Unprefixed registry: the issue names the drift metric `weft_drift_corrections_total`.
        let mut registry = Registry::default();
        let kernel_writes = Counter::default();
        let drift_corrections = Family::<KindLabel, Counter>::default();
        let pass_seconds = Histogram::new(exponential_buckets(0.0002, 2.0, 16));
        let status_writes = Counter::default();
        registry.register(
            "weft_agent_kernel_writes",
            "Kernel write operations",
            kernel_writes.clone(),
        );
        registry.register(
            "weft_drift_corrections",
            "Kernel objects put back after something outside Weft changed them",
            drift_corrections.clone(),
        );
        registry.register(
            "weft_agent_pass_seconds",
            "Time of one plan/observe/apply pass",
            pass_seconds.clone(),
        );
        registry.register(
            "weft_agent_status_writes",
            "NetworkNode status writes",
            status_writes.clone(),
        );
        Self {
            registry,
            kernel_writes,
            drift_corrections,
            pass_seconds,
            status_writes,
            ready: Default::default(),
        }
    }
}

impl Metrics {
    pub fn drift(&self, kind: &str) {
        self.drift_corrections
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }
}

impl weft_daemon::http::Exposed for Metrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }
}
