//! `/metrics` (Prometheus' OpenMetrics text), `/healthz` (the process runs) and `/readyz`
//! (the daemon has done what it must do before it is of use; each daemon says what).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// A daemon's metrics: whatever holds the registry they are registered in.
pub trait Exposed: Send + Sync + 'static {
    fn registry(&self) -> &Registry;
}

/// The text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// What the probes read.
pub struct Probes<M> {
    pub metrics: Arc<M>,
    /// `/readyz` answers 200 once this is set.
    pub ready: Arc<AtomicBool>,
    /// What `/readyz` answers (503) before that.
    pub not_ready: &'static str,
}

// By hand: a derive would ask `M: Clone`, and only the `Arc` is cloned.
impl<M> Clone for Probes<M> {
    fn clone(&self) -> Self {
        Self {
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            not_ready: self.not_ready,
        }
    }
}

/// Bind `addr` and serve in the background until the process ends. Returns the bound
/// address (port 0 picks one).
pub async fn serve<M: Exposed>(addr: SocketAddr, probes: Probes<M>) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics::<M>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<M>))
        .with_state(probes);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}

async fn metrics<M: Exposed>(
    State(p): State<Probes<M>>,
) -> ([(HeaderName, &'static str); 1], String) {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(p.metrics.registry()),
    )
}

async fn readyz<M: Exposed>(State(p): State<Probes<M>>) -> (StatusCode, &'static str) {
    if p.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, p.not_ready)
    }
}
