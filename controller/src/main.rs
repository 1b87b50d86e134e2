//! `weft-controller`: allocates subnets, VNIs and per-node blocks for ContainerNetworks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use weft_controller::{Settings, leader, metrics::Metrics, run};
use weft_daemon::http::{self, Probes};
use weft_daemon::log::{self, LogFormat};

/// Weft's cluster controller.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address of /metrics, /healthz and /readyz (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:8080", env = "WEFT_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value = "human", env = "WEFT_LOG_FORMAT")]
    log_format: LogFormat,
    /// Run only while holding a coordination.k8s.io Lease (for more than one replica).
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "weft-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "weft-controller")]
    lease_name: String,
    /// How long a node's block outlives its NetworkNode (or its match of the nodeSelector).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    node_grace_period: Duration,
    /// Minimum time between status writes that only change node counts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    rollup_interval: Duration,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    log::init(args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API: set KUBECONFIG or run inside a cluster")?;
    let probes = Probes {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(false)),
        not_ready: "allocations not rebuilt yet",
    };
    let bound = http::serve(args.metrics_addr, probes.clone())
        .await
        .context("binding --metrics-addr")?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    if args.leader_elect {
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("weft-controller-{}", std::process::id()));
        leader::acquire(
            client.clone(),
            leader::LeaderSettings {
                namespace: args.lease_namespace,
                name: args.lease_name,
                identity,
                lease_duration: Duration::from_secs(15),
                renew_interval: Duration::from_secs(2),
            },
        )
        .await?;
    }
    let settings = Settings {
        node_grace_period: args.node_grace_period,
        rollup_interval: args.rollup_interval,
        concurrency: args.concurrency,
    };
    run::run(client, settings, probes).await
}
