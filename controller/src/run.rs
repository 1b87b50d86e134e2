//! Wiring: rebuild allocations from the API, then run the controllers until shutdown.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio_stream_shim::UnboundedReceiverStream;
use weft_api::{
    AddressPool, ContainerEndpoint, ContainerNetwork, ContainerService, NetworkAllocation,
    NetworkNode,
};
use weft_daemon::http::Probes;
use weft_daemon::watch::WatchBackoff;

use crate::allocations::Allocations;
use crate::metrics::Metrics;
use crate::reconcile::fresh::FreshStore;
use crate::reconcile::service::ServiceContext;
use crate::reconcile::{Context, network, orphans, pool, service};
use crate::{MANAGER, Settings};

mod tokio_stream_shim {
    //! A receiver as a Stream, without pulling in tokio-stream for one adapter.
    pub struct UnboundedReceiverStream<T>(pub tokio::sync::mpsc::UnboundedReceiver<T>);
    impl<T> futures::Stream for UnboundedReceiverStream<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

/// Start a reflector for `K` and wait until its first list is in.
async fn store<K>(client: &Client) -> anyhow::Result<reflector::Store<K>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    store_calling(client, || {}).await
}

/// [`store`], calling `on_event` after every object the watch applies or deletes.
async fn store_calling<K>(
    client: &Client,
    on_event: impl Fn() + Send + 'static,
) -> anyhow::Result<reflector::Store<K>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    // The controller never reads managedFields; as JSON trees they are most of a cache.
    let events = watcher(api, watcher::Config::default())
        .backoff(WatchBackoff::default())
        .modify(|o: &mut K| o.managed_fields_mut().clear());
    let stream = reflector::reflector(writer, events)
        .touched_objects()
        .for_each(move |_| {
            on_event();
            futures::future::ready(())
        });
    tokio::spawn(stream);
    reader.wait_until_ready().await?;
    Ok(reader)
}

/// Every object the watcher touches, with deletions marked by a deletionTimestamp: an object
/// deleted without finalizers arrives looking exactly as it did, and the mappers below must
/// be able to tell its deletion from a no-op update.
fn touched_marking_deletes<K>(
    api: Api<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    marking_deletes(watcher(api, watcher::Config::default()).backoff(WatchBackoff::default()))
}

/// The objects of a stream of watch events, deletions marked (see [`touched_marking_deletes`]).
fn marking_deletes<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send
where
    K: kube::Resource + Clone + Send + 'static,
{
    events.flat_map(|event| {
        let touched: Vec<Result<K, watcher::Error>> = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![Ok(o)],
            Ok(watcher::Event::Delete(mut o)) => {
                let meta = o.meta_mut();
                if meta.deletion_timestamp.is_none() {
                    meta.deletion_timestamp =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::now(),
                        ));
                }
                vec![Ok(o)]
            }
            Ok(_) => vec![],
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(touched)
    })
}

/// What makes an AddressPool matter to networks: its spec and whether it is going away.
fn pool_digest(pool: &AddressPool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&pool.spec)
        .unwrap_or_default()
        .hash(&mut h);
    pool.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// What the controller remembers of a NetworkNode, to tell which networks an event concerns.
#[derive(PartialEq)]
struct NodeSeen {
    /// Labels, spec and whether it is going away: a change concerns every network (selection).
    identity: u64,
    /// network name → its realization entry as JSON: a change concerns that network only.
    entries: HashMap<String, String>,
}

fn node_seen(node: &NetworkNode) -> NodeSeen {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.labels().hash(&mut h);
    serde_json::to_string(&node.spec)
        .unwrap_or_default()
        .hash(&mut h);
    node.metadata.deletion_timestamp.is_some().hash(&mut h);
    let entries = node
        .status
        .iter()
        .flat_map(|s| {
            let programmed = s.programmed.iter().map(|n| (n.clone(), String::new()));
            let others = s
                .not_programmed
                .iter()
                .map(|e| (e.name.clone(), serde_json::to_string(e).unwrap_or_default()));
            programmed.chain(others)
        })
        .collect();
    NodeSeen {
        identity: h.finish(),
        entries,
    }
}

/// The networks a NetworkNode event concerns: none for a heartbeat, the networks whose
/// realization entry changed, or all of them when the node's identity changed. So a node
/// reporting one network does not re-queue a thousand.
fn networks_concerned(before: Option<&NodeSeen>, now: &NodeSeen) -> Option<Vec<String>> {
    match before {
        Some(b) if b.identity == now.identity => {
            let mut changed: Vec<String> = now
                .entries
                .iter()
                .filter(|(k, v)| b.entries.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .collect();
            changed.extend(
                b.entries
                    .keys()
                    .filter(|k| !now.entries.contains_key(*k))
                    .cloned(),
            );
            Some(changed)
        }
        _ => None,
    }
}

/// Run until the process is told to stop.
pub async fn run(
    client: Client,
    settings: Settings,
    probes: Probes<Metrics>,
) -> anyhow::Result<()> {
    let pools = store::<AddressPool>(&client).await?;
    let nodes = store::<NetworkNode>(&client).await?;
    // Every allocation event wakes the orphan sweep (`reconcile::orphans`).
    let (orphans_tx, orphans_rx) = tokio::sync::mpsc::unbounded_channel();
    let node_blocks = {
        let orphans_tx = orphans_tx.clone();
        store_calling::<NetworkAllocation>(&client, move || {
            let _ = orphans_tx.send(());
        })
        .await?
    };
    // Endpoints keep a network that is being deleted alive; the cache is filled by the
    // watch that also wakes such a network when its endpoints go (below).
    let (endpoints, endpoints_writer) = reflector::store::<ContainerEndpoint>();

    // Rebuild allocations from the records before anything can allocate.
    let networks: Api<ContainerNetwork> = Api::all(client.clone());
    let listed = networks.list(&ListParams::default()).await?.items;
    let (allocations, warnings) = Allocations::seed(
        &listed,
        &node_blocks
            .state()
            .iter()
            .map(|a| (**a).clone())
            .collect::<Vec<_>>(),
        &pools.state(),
    );
    for w in &warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(networks = listed.len(), "allocations rebuilt from the API");

    let (requeue_tx, requeue_rx) = tokio::sync::mpsc::unbounded_channel();
    let (pools_tx, pools_rx) = tokio::sync::mpsc::unbounded_channel();
    let controller = Controller::new(networks, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .trigger_backoff(WatchBackoff::default());
    let all_networks = controller.store();
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: settings.clone(),
        metrics: probes.metrics.clone(),
        allocations: Mutex::new(allocations),
        pools: FreshStore::new(pools.clone()),
        nodes: FreshStore::new(nodes.clone()),
        node_blocks,
        networks: all_networks.clone(),
        endpoints,
        recorder: Recorder::new(client.clone(), reporter),
        last_rollup_write: Mutex::new(HashMap::new()),
        last_written: Mutex::new(HashMap::new()),
        requeue: requeue_tx,
        orphans: orphans_tx,
        pools_changed: pools_tx.clone(),
        events_unsupported: Default::default(),
    });
    tokio::spawn(pool::run(ctx.clone(), pools_rx));
    tokio::spawn(orphans::run(ctx.clone(), orphans_rx));

    // Only a pool's spec (or its appearance/removal) matters to networks; its status is our
    // own usage report and must not re-queue every network on each write.
    let on_pool = {
        let all = all_networks.clone();
        let pools_tx = pools_tx.clone();
        let ctx = ctx.clone();
        let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        move |pool: AddressPool| {
            // Record it first: the reconciles this event triggers must see it.
            ctx.pools.record(&pool);
            let digest = pool_digest(&pool);
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.insert(pool.name_any(), digest) == Some(digest) {
                return Vec::new();
            }
            let _ = pools_tx.send(());
            all.state()
                .iter()
                .map(|n| ObjectRef::from_obj(&**n))
                .collect::<Vec<_>>()
        }
    };
    let on_node = {
        let all = all_networks.clone();
        let ctx = ctx.clone();
        let seen: Arc<Mutex<HashMap<String, NodeSeen>>> = Arc::default();
        move |node: NetworkNode| {
            // Record it first: the reconciles this event triggers must see it.
            ctx.nodes.record(&node);
            let now = node_seen(&node);
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            let concerned = networks_concerned(seen.get(&node.name_any()), &now);
            seen.insert(node.name_any(), now);
            match concerned {
                Some(names) => names.iter().map(|n| ObjectRef::new(n)).collect::<Vec<_>>(),
                None => all
                    .state()
                    .iter()
                    .map(|n| ObjectRef::from_obj(&**n))
                    .collect::<Vec<_>>(),
            }
        }
    };
    // An endpoint matters to a network when it comes or goes (the network counts its
    // endpoints) and, while the network waits to be deleted, whenever it changes. Status
    // writes by the agents (most endpoint events) concern no network.
    let on_endpoint = {
        let all = all_networks.clone();
        let seen: Mutex<std::collections::HashSet<(String, String)>> = Mutex::default();
        move |ep: ContainerEndpoint| {
            let net = ObjectRef::<ContainerNetwork>::new(&ep.spec.network);
            let key = (ep.namespace().unwrap_or_default(), ep.name_any());
            let came_or_went = {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if ep.metadata.deletion_timestamp.is_some() {
                    seen.remove(&key)
                } else {
                    seen.insert(key)
                }
            };
            (came_or_went
                || all
                    .get(&net)
                    .is_some_and(|n| n.metadata.deletion_timestamp.is_some()))
            .then_some(net)
        }
    };
    let endpoint_events = watcher(
        Api::<ContainerEndpoint>::all(client.clone()),
        watcher::Config::default(),
    )
    .backoff(WatchBackoff::default())
    .modify(|o: &mut ContainerEndpoint| o.managed_fields_mut().clear())
    .reflect(endpoints_writer);
    let services = services_controller(&client, probes.metrics.clone());
    probes.ready.store(true, Ordering::Relaxed);
    let networks_done = controller
        .owns(
            Api::<NetworkAllocation>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches_stream(
            touched_marking_deletes(Api::<AddressPool>::all(client.clone())),
            on_pool,
        )
        .watches_stream(
            touched_marking_deletes(Api::<NetworkNode>::all(client.clone())),
            on_node,
        )
        .watches_stream(marking_deletes(endpoint_events), on_endpoint)
        .reconcile_on(UnboundedReceiverStream(requeue_rx))
        .shutdown_on_signal()
        .run(network::reconcile, network::error_policy, ctx)
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile error");
            }
            futures::future::ready(())
        });
    futures::future::join(networks_done, services).await;
    Ok(())
}

/// The ContainerService controller: re-run a service when it changes, when an endpoint of
/// its network in its namespace changes, or when its network changes.
/// It keeps its own caches of networks and endpoints, filled by the very watches that
/// trigger it, so a reconcile never reads a cache older than the event that caused it.
fn services_controller(
    client: &Client,
    metrics: Arc<Metrics>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let controller = Controller::new(
        Api::<ContainerService>::all(client.clone()),
        watcher::Config::default(),
    )
    .trigger_backoff(WatchBackoff::default());
    let services = controller.store();
    let (networks, networks_writer) = reflector::store::<ContainerNetwork>();
    let (endpoints, endpoints_writer) = reflector::store::<ContainerEndpoint>();
    let network_events = watcher(
        Api::<ContainerNetwork>::all(client.clone()),
        watcher::Config::default(),
    )
    .backoff(WatchBackoff::default())
    .modify(|o: &mut ContainerNetwork| o.managed_fields_mut().clear())
    .reflect(networks_writer);
    let endpoint_events = watcher(
        Api::<ContainerEndpoint>::all(client.clone()),
        watcher::Config::default(),
    )
    .backoff(WatchBackoff::default())
    .modify(|o: &mut ContainerEndpoint| o.managed_fields_mut().clear())
    .reflect(endpoints_writer);
    let sctx = Arc::new(ServiceContext {
        client: client.clone(),
        metrics,
        networks,
        endpoints,
        services: services.clone(),
        vips: Mutex::default(),
    });
    let on_endpoint = {
        let services = services.clone();
        move |ep: ContainerEndpoint| {
            services
                .state()
                .iter()
                .filter(|s| s.namespace() == ep.namespace() && s.spec.network == ep.spec.network)
                .map(|s| ObjectRef::from_obj(&**s))
                .collect::<Vec<_>>()
        }
    };
    let on_network = {
        let services = services.clone();
        move |net: ContainerNetwork| {
            services
                .state()
                .iter()
                .filter(|s| s.spec.network == net.name_any())
                .map(|s| ObjectRef::from_obj(&**s))
                .collect::<Vec<_>>()
        }
    };
    controller
        .watches_stream(marking_deletes(endpoint_events), on_endpoint)
        .watches_stream(marking_deletes(network_events), on_network)
        .shutdown_on_signal()
        .run(service::reconcile, service::error_policy, sctx)
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "service reconcile error");
            }
            futures::future::ready(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)], entries: &[(&str, &str)]) -> NetworkNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "NetworkNode",
            "metadata": {"name": "n1", "labels": labels.iter().cloned().collect::<HashMap<_, _>>()},
            "spec": {"underlayAddress": "192.0.2.1"},
        }))
        .map(|n: NetworkNode| NetworkNode {
            status: Some(
                weft_api::NetworkNodeStatus::default().with_networks(
                    entries
                        .iter()
                        .map(|(n, s)| {
                            serde_json::from_value(serde_json::json!({"name": n, "state": s}))
                                .expect("entry")
                        })
                        .collect(),
                ),
            ),
            ..n
        })
        .expect("node")
    }

    #[test]
    fn a_node_event_concerns_only_the_networks_it_changed() {
        let a = node_seen(&node(&[], &[("web", "Programmed"), ("app", "Pending")]));
        // Heartbeat only: nothing.
        assert_eq!(
            networks_concerned(
                Some(&a),
                &node_seen(&node(&[], &[("web", "Programmed"), ("app", "Pending")]))
            ),
            Some(vec![])
        );
        // One entry changed, one removed: just those two.
        let mut got = networks_concerned(
            Some(&a),
            &node_seen(&node(&[], &[("web", "Programmed"), ("db", "Programmed")])),
        )
        .expect("some");
        got.sort();
        assert_eq!(got, vec!["app", "db"]);
        // New node or new labels: every network (selection may change).
        assert_eq!(networks_concerned(None, &a), None);
        assert_eq!(
            networks_concerned(Some(&a), &node_seen(&node(&[("zone", "b")], &[]))),
            None
        );
    }
}
