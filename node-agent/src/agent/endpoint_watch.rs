//! The ContainerEndpoints an agent caches: not every endpoint in the cluster, but its own
//! node's (`spec.node=ME`) and, for each cluster-scope network it programs (overlay,
//! macvlan, ipvlan), that network's (`spec.network=NAME`) — what its overlay entries and
//! names need. Both are CRD `selectableFields`, so the API server filters: an agent is sent
//! the endpoints of its networks only (1,000 nodes × 100,000 endpoints: each change goes to
//! the agents of that one network, not to all 1,000). A network's watch opens when the node
//! starts programming it and closes when it stops. See ARCHITECTURE.md, "Names across nodes".
//!
//! A network's watch also feeds the names of other nodes' endpoints on it, on the event
//! itself ([`super::dns::Names`]): a name needs no pass.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use kube::runtime::reflector::Store;
use kube::runtime::watcher::Event;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use weft_api::ContainerEndpoint;

use super::caches::{digest, watch_selected};
use super::dns::{Names, endpoint_id};

/// One field-selected watch; dropping it ends the watch.
struct Watch {
    store: Store<ContainerEndpoint>,
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Endpoints matter for their spec and, on overlays, the address and MAC they got.
fn relevant(c: &ContainerEndpoint) -> Option<u64> {
    let s = c.status.as_ref();
    Some(digest(&(
        serde_json::to_string(&c.spec).unwrap_or_default(),
        c.metadata.deletion_timestamp.is_some(),
        c.uid(),
        c.finalizers(),
        c.annotations()
            .get(crate::endpoints::ANNOTATION_CONTAINER_NAME),
        s.map(|s| (&s.address, &s.mac)),
    )))
}

fn open(
    client: &Client,
    notify: &Arc<Notify>,
    fields: String,
    on_event: impl FnMut(&Event<ContainerEndpoint>) + Send + 'static,
) -> Watch {
    let (store, task) = watch_selected(
        client,
        notify.clone(),
        relevant,
        |_| {},
        Some(fields),
        on_event,
    );
    Watch { store, task }
}

/// `network`'s watch events, as `names` takes them. A (re)list is followed to its end, so
/// what was deleted while the watch was away goes too.
fn feed_names(
    names: Arc<Names>,
    network: String,
) -> impl FnMut(&Event<ContainerEndpoint>) + Send + 'static {
    let mut listed: Option<HashSet<String>> = None;
    move |event: &Event<ContainerEndpoint>| match event {
        Event::Init => listed = Some(HashSet::new()),
        Event::InitApply(c) => {
            if let Some(ids) = &mut listed {
                ids.insert(endpoint_id(c));
            }
            names.seen(&network, c);
        }
        Event::InitDone => {
            if let Some(ids) = listed.take() {
                names.relisted(&network, &ids);
            }
        }
        Event::Apply(c) => names.seen(&network, c),
        Event::Delete(c) => names.gone(c),
    }
}

pub(super) struct EndpointWatches {
    client: Client,
    notify: Arc<Notify>,
    mine: Watch,
    networks: BTreeMap<String, Watch>,
    /// The node's names, when it serves them.
    names: Option<Arc<Names>>,
}

impl EndpointWatches {
    /// Start with this node's own endpoints; networks follow ([`EndpointWatches::follow`]).
    pub(super) fn start(
        client: &Client,
        notify: Arc<Notify>,
        node: &str,
        names: Option<Arc<Names>>,
    ) -> Self {
        Self {
            mine: open(client, &notify, format!("spec.node={node}"), |_| {}),
            client: client.clone(),
            notify,
            networks: BTreeMap::new(),
            names,
        }
    }

    /// Until every open watch has its first list.
    pub(super) async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.mine.store.wait_until_ready().await?;
        for w in self.networks.values() {
            w.store.wait_until_ready().await?;
        }
        Ok(())
    }

    /// Watch the endpoints of exactly these networks (besides the node's own). A newly
    /// opened watch wakes the agent when its first list is in.
    pub(super) fn follow(&mut self, networks: BTreeSet<String>) {
        self.networks.retain(|name, _| networks.contains(name));
        if let Some(names) = &self.names {
            names.follow(&networks);
        }
        for name in networks {
            if !self.networks.contains_key(&name) {
                tracing::debug!(network = %name, "watching the network's endpoints");
                let fields = format!("spec.network={name}");
                let w = match &self.names {
                    Some(names) => open(
                        &self.client,
                        &self.notify,
                        fields,
                        feed_names(names.clone(), name.clone()),
                    ),
                    None => open(&self.client, &self.notify, fields, |_| {}),
                };
                self.networks.insert(name, w);
            }
        }
    }

    /// This node's own endpoints.
    pub(super) fn mine(&self) -> Vec<Arc<ContainerEndpoint>> {
        self.mine.store.state()
    }

    /// Every cached endpoint once: a node's own endpoint on a watched network is in both.
    pub(super) fn state(&self) -> Vec<Arc<ContainerEndpoint>> {
        let mut seen: HashSet<(String, String)> = HashSet::new();
        std::iter::once(&self.mine)
            .chain(self.networks.values())
            .flat_map(|w| w.store.state())
            .filter(|c| seen.insert((c.namespace().unwrap_or_default(), c.name_any())))
            .collect()
    }
}
