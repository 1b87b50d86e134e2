//! The agent's API caches: one reflector per kind, waking the agent only for changes it reads.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use weft_api::ContainerNetwork;
use weft_daemon::watch::WatchBackoff;

/// Start a reflector whose every event pokes `notify` (filtered by `relevant`).
/// Cache every `K` and wake the agent when one changes in a way that matters to it:
/// `relevant` digests the parts the agent reads, so status churn it does not read (condition
/// timestamps, node counts) costs no pass. Deletions always wake it. `None` from `relevant`
/// means "never concerns this agent".
pub(super) fn watch<K>(
    client: &Client,
    notify: Arc<Notify>,
    relevant: impl Fn(&K) -> Option<u64> + Send + 'static,
    trim: fn(&mut K),
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    // Watched for the agent's whole life: the task is never stopped.
    watch_selected(client, notify, relevant, trim, None, |_| {}).0
}

/// [`watch`] of the objects matching a field selector (`None`: all), with the task that
/// feeds the cache (aborting it ends the watch). `on_event` sees every event as it comes,
/// after the cache took it (for what must not wait for a pass: names, `endpoint_watch.rs`).
pub(super) fn watch_selected<K>(
    client: &Client,
    notify: Arc<Notify>,
    relevant: impl Fn(&K) -> Option<u64> + Send + 'static,
    trim: fn(&mut K),
    fields: Option<String>,
    mut on_event: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
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
    // Cached objects lose their managedFields and what `trim` removes: the agent never
    // reads them, and as JSON trees they would be most of the cache's memory.
    // Small pages: a page of the initial list is parsed whole (managedFields included)
    // before `trim` runs, and the agent's peak memory is set by the biggest page, not by
    // what it keeps (500 networks a page cost ~8 MiB at start).
    let mut config = watcher::Config::default().page_size(50);
    if let Some(fields) = fields {
        config = config.fields(&fields);
    }
    let events = watcher(api, config)
        .backoff(WatchBackoff::default())
        .modify(move |o: &mut K| {
            o.managed_fields_mut().clear();
            trim(o);
        });
    let mut seen: HashMap<String, u64> = HashMap::new();
    let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
    let stream = reflector::reflector(writer, events).for_each(move |event| {
        if let Ok(event) = &event {
            on_event(event);
        }
        match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let changed = match relevant(&o) {
                    Some(d) => seen.insert(key(&o), d) != Some(d),
                    // It concerned the agent before and no longer does: that is a change.
                    None => seen.remove(&key(&o)).is_some(),
                };
                if changed {
                    notify.notify_one();
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key(&o));
                notify.notify_one();
            }
            Ok(watcher::Event::InitDone) => notify.notify_one(),
            Ok(watcher::Event::Init) => {}
            // The reflector retries with backoff; the dataplane is left as it is meanwhile.
            Err(e) => tracing::debug!(error = %e, "watch error (retrying)"),
        }
        futures::future::ready(())
    });
    (reader, tokio::spawn(stream))
}

pub(super) fn digest<T: Hash>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Does the network's nodeSelector pick this node?
pub(super) fn selects(net: &ContainerNetwork, labels: &BTreeMap<String, String>) -> bool {
    net.spec
        .node_selector
        .as_ref()
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}
