//! weft-dns: the per-node DNS server for Weft networks; fed by the agent over a unix socket.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::UnixListener;

use weft_dns::server::{Limits, Server};
use weft_dns::store::{self, Store};
use weft_dns::upstream::NodeResolvers;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Unix socket the agent feeds names through.
    #[arg(long, env = "WEFT_DNS_FEED", default_value = "/run/weft/dns.sock")]
    feed: PathBuf,
    /// Last known names, reloaded at start (so a new process answers before the agent
    /// reconnects); none if unset.
    #[arg(long, env = "WEFT_DNS_STATE")]
    state_file: Option<PathBuf>,
    /// Where the node's own resolvers are (for names that are not Weft's).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    #[arg(long, default_value_t = 53)]
    port: u16,
    /// Seconds answers may be cached: short, so a moved endpoint is not served stale.
    #[arg(long, default_value_t = 2)]
    ttl: u32,
    /// Listen here for cluster DNS (CoreDNS forwarding the zone): any asker may resolve
    /// `<name>.<network>.<zone>`, nothing else, nothing forwarded.
    #[arg(long)]
    cluster_listen: Vec<IpAddr>,
    #[arg(long, default_value_t = 256)]
    max_tcp: usize,
    #[arg(long, default_value_t = 1024)]
    max_forwards: usize,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    tcp_idle: Duration,
}

// One thread: a node's DNS load is light, and one core answers well over 10^5 queries/s.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // The index is built on a blocking thread; one malloc arena for all threads keeps its
    // memory where the next build reuses it (per-thread arenas added ~1 MiB at 10,000 names).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let data = match &args.state_file {
        Some(path) => store::load(path).with_context(|| format!("reading {}", path.display()))?,
        None => Default::default(),
    };
    let store = Store::new(data);
    if let Some(path) = args.state_file.clone() {
        tokio::spawn(store::persist(store.clone(), path));
    }
    // Bound aside, then renamed over the path: whoever connects to the path finds a listening
    // socket. A previous server's socket file is taken over this way: it keeps the
    // connections it has, the agent's next connection comes here.
    if let Some(dir) = args.feed.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let aside = args
        .feed
        .with_extension(format!("new-{}", std::process::id()));
    let _ = std::fs::remove_file(&aside);
    let feed = UnixListener::bind(&aside)
        .with_context(|| format!("binding the feed socket {}", aside.display()))?;
    // Whoever can connect decides what names resolve to: root (the agent) only.
    std::fs::set_permissions(&aside, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&aside, &args.feed)
        .with_context(|| format!("moving the feed socket to {}", args.feed.display()))?;
    tokio::spawn(store::serve_feed(feed, store.clone()));

    let limits = Limits {
        port: args.port,
        ttl: args.ttl,
        max_tcp: args.max_tcp,
        tcp_idle: args.tcp_idle,
    };
    let resolvers = NodeResolvers::watch(args.resolv_conf.clone());
    let server = Server::new(store, limits, resolvers, args.max_forwards);
    tracing::info!(feed = %args.feed.display(), "weft-dns started");
    let retirer = server.retirer();
    let running = tokio::spawn(server.run(args.cluster_listen));
    tokio::select! {
        _ = running => return Ok(()),
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated() => {}
    }
    // An upgrade's successor is already bound beside us: hand the port over, answer what is
    // queued, then go.
    retirer.send_replace(true);
    tokio::time::sleep(RETIRE_DRAIN).await;
    Ok(())
}

/// How long a retiring server keeps answering the queries queued before it left its ports.
const RETIRE_DRAIN: std::time::Duration = std::time::Duration::from_millis(200);

async fn terminated() -> std::io::Result<()> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?
        .recv()
        .await;
    Ok(())
}
