//! `weft-agent`: makes this node's kernel match the ContainerNetworks that select it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use weft_agent::{agent, metrics::Metrics};
use weft_daemon::http::{self, Probes};
use weft_daemon::log::{self, LogFormat};

/// Weft's node agent.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Name of this node (its NetworkNode object).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Program this network namespace instead of the agent's own (the API is still reached from here).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Directory of named network namespaces: a hand-written ContainerEndpoint's sandbox must
    /// lie in it (CNI attachments are the runtime's choice).
    #[arg(long, default_value = weft_agent::endpoints::sandbox::DEFAULT_SANDBOX_DIR)]
    sandbox_dir: PathBuf,
    /// Interface carrying the underlay (default: the interface of the default route).
    #[arg(long)]
    underlay_interface: Option<String>,
    /// Underlay (VTEP) address (default: the underlay interface's first address).
    #[arg(long)]
    underlay_address: Option<IpAddr>,
    /// Labels of this node for nodeSelectors, as key=value (repeatable or comma-separated).
    #[arg(long = "node-label", value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Full pass at least this often, even without events.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    resync_period: Duration,
    /// NetworkNode heartbeat interval.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Address of /metrics, /healthz (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
    /// Directory for the node's endpoint journal (addresses handed out on this node).
    #[arg(long, default_value = "/var/lib/weft")]
    state_dir: PathBuf,
    /// Unix socket the weft-cni plugin talks to; "none" disables CNI.
    #[arg(long, default_value = weft_cni::proto::DEFAULT_SOCKET)]
    cni_socket: PathBuf,
    /// Release an endpoint the CNI plugin made once its sandbox (network namespace) has been
    /// gone this long (a container removed while the agent was down or without CNI DEL).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    gone_sandbox_grace: Duration,
    /// Interfaces that CNI DEL took out of service are deleted once no DEL has come for this
    /// long (at most five times this after the first), a burst of them in one request.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    teardown_quiet: Duration,
    /// Host ports for published ports that name none (`docker run -p 80`) are chosen from
    /// this range (Docker's default: the upper part of the Linux ephemeral range).
    #[arg(long, default_value = "49153-65535")]
    host_port_range: weft_agent::endpoints::HostPortRange,
    /// Unix socket of this node's weft-dns, fed with the names of the node's networks;
    /// empty (or "none") disables names (and the CNI result's `dns`).
    #[arg(long, default_value = "/run/weft/dns.sock")]
    dns_feed: String,
}

/// `--dns-feed`: the socket, or `None` for "" and "none" (names off).
fn dns_feed(raw: &str) -> Option<PathBuf> {
    (!raw.is_empty() && raw != "none").then(|| PathBuf::from(raw))
}

fn parse_labels(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--node-label {kv:?}: expected key=value"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The agent is I/O-bound; glibc's default of one malloc arena per thread (tokio workers,
/// blocking threads, namespace threads) only adds fragmentation: measured at 1,000 networks,
/// two arenas take peak RSS from 83 to 50 MiB.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called once, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    log::init(args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API: set KUBECONFIG or run inside a cluster")?;
    let metrics = Arc::new(Metrics::default());
    let probes = Probes {
        metrics: metrics.clone(),
        ready: metrics.ready.clone(),
        not_ready: "starting",
    };
    let bound = http::serve(args.metrics_addr, probes)
        .await
        .context("binding --metrics-addr")?;
    tracing::info!(addr = %bound, "serving /metrics and /healthz");
    let cfg = agent::Config {
        node_name: args.node_name,
        netns: args.netns,
        sandbox_dir: args.sandbox_dir,
        underlay_interface: args.underlay_interface,
        underlay_address: args.underlay_address,
        labels: parse_labels(&args.node_labels)?,
        resync: args.resync_period,
        heartbeat: args.heartbeat,
        state_dir: args.state_dir,
        cni_socket: (args.cni_socket.as_os_str() != "none").then_some(args.cni_socket),
        gone_sandbox_grace: args.gone_sandbox_grace,
        teardown_quiet: args.teardown_quiet,
        host_port_range: args.host_port_range,
        dns_feed: dns_feed(&args.dns_feed),
    };
    agent::run(client, cfg, metrics).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_dns_feed_turns_names_off_and_the_default_is_the_charts_socket() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["weft-agent", "--node-name", "n"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).expect("valid flags")
        };
        assert_eq!(
            dns_feed(&parse(&[]).dns_feed),
            Some(PathBuf::from("/run/weft/dns.sock"))
        );
        assert_eq!(dns_feed(&parse(&["--dns-feed="]).dns_feed), None);
        assert_eq!(dns_feed(&parse(&["--dns-feed", "none"]).dns_feed), None);
        assert_eq!(
            dns_feed(&parse(&["--dns-feed", "/tmp/x.sock"]).dns_feed),
            Some(PathBuf::from("/tmp/x.sock"))
        );
    }
}
