//! The agent loop: watch the API and the kernel, and on any change run one pass —
//! plan (pure) → observe → diff → apply the minimum → report.
//!
//! Level-triggered: a pass never looks at what changed, only at what should be. Passes run
//! one at a time; triggers that arrive during a pass coalesce into one more pass.
//!
//! `mod.rs` wires it up ([`run`]); `caches` keeps the API caches and says when a change
//! matters, `node` finds the underlay and registers the NetworkNode, `pass` is one pass, `clock`
//! marks the full check and the heartbeat due.

mod caches;
mod clock;
mod config;
pub mod dns;
mod endpoint_watch;
mod node;
mod pass;
mod services;
mod wireguard;

pub use config::{Config, MANAGER};
pub use pass::PassReport;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use weft_api::{ContainerNetwork, ContainerService, NetworkAllocation, NetworkNode};

use crate::drivers::NodeFacts;
use crate::endpoints::manager::Endpoints;
use crate::endpoints::sandbox::SandboxPolicy;
use crate::kernel::Kernel;
use crate::metrics::Metrics;

use caches::{digest, watch};
use endpoint_watch::EndpointWatches;
use node::{find_underlay, register};
use pass::Agent;

/// Run the agent until the process ends.
pub async fn run(client: Client, cfg: Config, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let kernel = Kernel::open(cfg.netns.as_deref())
        .await
        .context("opening the network namespace")?;
    let caps = kernel.probe().await;
    let capabilities = weft_api::Capabilities {
        bridge: caps.bridge,
        vxlan: caps.vxlan,
        macvlan: caps.macvlan,
        ipvlan: caps.ipvlan,
        vlan: caps.vlan,
        nftables: caps.nftables,
        wireguard: caps.wireguard,
    };
    let underlay = find_underlay(&kernel, &cfg).await?;
    tracing::info!(node = %cfg.node_name, underlay = %underlay.address, mtu = underlay.mtu, ?capabilities, "starting");
    // The API may be down: keep trying; the dataplane is not touched until we have the picture.
    let mut backoff = Duration::from_millis(200);
    // The identity published before a restart stays until this run has configured its link.
    let published = Api::<weft_api::NetworkNode>::all(client.clone())
        .get_opt(&cfg.node_name)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.spec.wireguard);
    while let Err(e) = register(&client, &cfg, &underlay, &capabilities, published.as_ref()).await {
        tracing::warn!(error = %e, "registering the NetworkNode failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }

    let notify = Arc::new(Notify::new());
    // Networks matter for their spec and allocation, not for the controller's rollup of
    // node counts and conditions (which changes as every node reports). Before the
    // controller's allocation there is nothing to program (nor to report), so a new network
    // wakes the agent once, when allocated, instead of a useless pass first that the one
    // that matters would queue behind.
    let networks = watch::<ContainerNetwork>(
        &client,
        notify.clone(),
        |n: &ContainerNetwork| {
            let s = n.status.as_ref();
            let unallocated = n.spec.driver.has_addresses()
                && s.is_none_or(|s| s.subnets.is_empty())
                && n.metadata.deletion_timestamp.is_none();
            (!unallocated).then(|| {
                digest(&(
                    serde_json::to_string(&n.spec).unwrap_or_default(),
                    n.metadata.deletion_timestamp.is_some(),
                    n.uid(),
                    s.map(|s| (&s.subnets, &s.gateway, s.vni)),
                ))
            })
        },
        |_| {},
    );
    let allocations = watch::<NetworkAllocation>(
        &client,
        notify.clone(),
        |a: &NetworkAllocation| {
            Some(digest(&(
                serde_json::to_string(&a.spec).unwrap_or_default(),
                a.uid(),
            )))
        },
        |_| {},
    );
    // The node's names: other nodes' endpoints from the endpoint watches (held until the
    // first pass), the networks and this node's endpoints from every pass (see dns.rs).
    let names = cfg
        .dns_feed
        .clone()
        .map(|path| Arc::new(dns::Names::spawn(path, &cfg.node_name)));
    // Endpoints: this node's, and those of the cluster-scope networks it programs (opened
    // by the first pass, see endpoint_watch.rs).
    let ceps = EndpointWatches::start(&client, notify.clone(), &cfg.node_name, names.clone());
    // Peers matter for their underlay address and existence, not for their heartbeats.
    // Their statuses (one entry per network, on every node) are not kept at all.
    let me = cfg.node_name.clone();
    let nodes = watch::<NetworkNode>(
        &client,
        notify.clone(),
        move |n: &NetworkNode| {
            // This node's own object matters only for a key rotation request.
            Some(if n.name_any() == me {
                digest(&n.annotations().get(wireguard::ROTATE_ANNOTATION))
            } else {
                digest(&(
                    serde_json::to_string(&n.spec).unwrap_or_default(),
                    n.metadata.deletion_timestamp.is_some(),
                ))
            })
        },
        |n| n.status = None,
    );
    // Services matter for their VIPs only: an endpoint may not ask for one.
    let services = watch::<ContainerService>(
        &client,
        notify.clone(),
        |s: &ContainerService| {
            let vip = s.status.as_ref().and_then(|st| st.vip.clone());
            vip.map(|v| digest(&(&s.spec.network, v)))
        },
        |_| {},
    );
    // Never plan from an incomplete picture: an empty store would garbage-collect everything.
    networks.wait_until_ready().await?;
    services.wait_until_ready().await?;
    allocations.wait_until_ready().await?;
    nodes.wait_until_ready().await?;
    ceps.wait_until_ready().await?;
    let kernel = Arc::new(kernel);
    let endpoints = Arc::new(
        Endpoints::new(
            cfg.node_name.clone(),
            MANAGER,
            kernel.clone(),
            &cfg.state_dir,
            notify.clone(),
        )
        .with_context(|| format!("opening the state directory {}", cfg.state_dir.display()))?
        .with_gone_sandbox_grace(cfg.gone_sandbox_grace)
        .with_teardown_quiet(cfg.teardown_quiet)
        .with_host_port_range(cfg.host_port_range)
        .with_names(cfg.dns_feed.is_some())
        .with_sandbox_policy(
            SandboxPolicy::for_node(cfg.netns.as_deref(), &cfg.sandbox_dir)
                .context("reading the node's network namespaces")?,
        ),
    );

    let mut events = kernel
        .events()
        .await
        .context("subscribing to kernel events")?;
    {
        let notify = notify.clone();
        tokio::spawn(async move {
            while events.next().await.is_some() {
                notify.notify_one();
            }
        });
    }
    // The full check and the heartbeat each have their own clock (see `clock`).
    let resync_due = Arc::new(AtomicBool::new(true));
    let heartbeat_due = Arc::new(AtomicBool::new(true));
    clock::spawn_clock(cfg.resync, resync_due.clone(), notify.clone());
    clock::spawn_clock(cfg.heartbeat, heartbeat_due.clone(), notify.clone());

    let facts = NodeFacts {
        node_name: cfg.node_name.clone(),
        underlay_address: underlay.address,
        underlay_interface: underlay.interface.clone(),
        underlay_mtu: underlay.mtu,
        interfaces: BTreeSet::new(),
        capabilities,
        wireguard: Default::default(),
    };
    let service_names = names.as_deref().map(dns::Names::services);
    let wireguard = wireguard::Identity::load(&cfg.state_dir, published);
    let mut agent = Agent {
        names,
        client,
        cfg,
        kernel,
        metrics,
        facts,
        endpoints: endpoints.clone(),
        resync_due,
        heartbeat_due,
        networks,
        ceps,
        allocations,
        nodes,
        services,
        last_desired: None,
        last_status: None,
        underlay,
        wireguard,
        wake: notify.clone(),
    };
    {
        let inputs = agent.inputs();
        // The first pass must see other nodes' endpoints already: planned without them it
        // would remove their overlay entries and names until the next.
        agent.follow_endpoints(&inputs);
        agent.ceps.wait_until_ready().await?;
        let facts = NodeFacts {
            interfaces: agent.kernel.observe_with_foreign().await?.1,
            wireguard: agent.wireguard.slots(),
            ..agent.facts.clone()
        };
        endpoints.restore(&agent.ceps.state(), &inputs, &facts);
    }
    tokio::spawn(endpoints.clone().release_gone_sandboxes());
    tokio::spawn(endpoints.clone().watch_sandboxes());
    tokio::spawn(services::run(
        agent.client.clone(),
        agent.cfg.node_name.clone(),
        agent.cfg.netns.clone(),
        service_names,
    ));
    tokio::spawn(endpoints.clone().finish_teardowns());
    if let Some(path) = agent.cfg.cni_socket.clone() {
        crate::endpoints::socket::serve(&path, endpoints.clone())
            .await
            .with_context(|| format!("listening on the CNI socket {}", path.display()))?;
    }
    let mut first = true;
    loop {
        let started = Instant::now();
        let result = agent.pass().await;
        if first {
            first = false;
            endpoints.set_ready();
            agent.metrics.ready.store(true, Ordering::SeqCst);
        }
        match result {
            Ok(r) => {
                tracing::debug!(changes = r.changes, writes = r.writes, failed = r.failed, took = ?started.elapsed(), observe = ?r.observe, apply = ?r.apply, report = ?r.report, "pass")
            }
            Err(e) => tracing::warn!(error = %e, "pass failed"),
        }
        agent
            .metrics
            .pass_seconds
            .observe(started.elapsed().as_secs_f64());
        notify.notified().await;
    }
}
