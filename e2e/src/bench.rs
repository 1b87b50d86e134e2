//! What the e2e benches share: their entry point and their arguments.

use std::future::Future;

/// Run a bench's `run` on a tokio runtime, with the daemons' logs kept to warnings (they
/// would drown the figures) unless `RUST_LOG` says otherwise.
pub fn main<F: Future<Output = anyhow::Result<()>>>(run: impl FnOnce() -> F) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: called first in `main`, before any other thread exists.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    tokio::runtime::Runtime::new()?.block_on(run())
}

/// The bench's numeric command-line arguments, in order (cargo's own flags are skipped).
pub fn numeric_args() -> Vec<usize> {
    std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect()
}
