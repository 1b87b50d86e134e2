//! weft-controller: turns `ContainerNetwork` intent into allocations.
//!
//! Data flows one way: API objects → [`allocations::Allocations`] (the pure `weft-ipam`
//! allocators, seeded from what the API already records) → status and `NetworkAllocation`
//! objects written by server-side apply. The spec is never written.

pub mod allocations;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod status;

use std::time::Duration;

/// Field manager of every write the controller makes.
pub const MANAGER: &str = "weft-controller";

/// The one error type of the crate. Each variant names its metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("object has no name or uid")]
    MissingMetadata,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
            Error::MissingMetadata => "metadata",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Controller settings (the binary's flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a node's block survives after its NetworkNode disappears or stops matching.
    pub node_grace_period: Duration,
    /// Minimum time between two status writes that only change node rollup counts.
    pub rollup_interval: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_grace_period: Duration::from_secs(60),
            rollup_interval: Duration::from_secs(5),
            concurrency: 16,
        }
    }
}
