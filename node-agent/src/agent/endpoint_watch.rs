//! The ContainerEndpoints an agent caches: not every endpoint in the cluster, but its own
//! node's (`spec.node=ME`) and, for each cluster-scope network it programs (overlay,
//! macvlan, ipvlan), that network's (`spec.network=NAME`) — what its overlay entries and
//! names need. Both are CRD `selectableFields`, so the API server filters: an agent is sent
//! the endpoints of its networks only (1,000 nodes × 100,000 endpoints: each change goes to
//! the agents of that one network, not to all 1,000). A network's watch opens when the node
//! starts programming it and closes when it stops. See ARCHITECTURE.md, "Names across nodes".

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use weft_api::ContainerEndpoint;

use super::caches::{digest, watch_selected};

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

fn open(client: &Client, notify: &Arc<Notify>, fields: String) -> Watch {
    let (store, task) = watch_selected(client, notify.clone(), relevant, |_| {}, Some(fields));
    Watch { store, task }
}

pub(super) struct EndpointWatches {
    client: Client,
    notify: Arc<Notify>,
    mine: Watch,
    networks: BTreeMap<String, Watch>,
}

impl EndpointWatches {
    /// Start with this node's own endpoints; networks follow ([`EndpointWatches::follow`]).
    pub(super) fn start(client: &Client, notify: Arc<Notify>, node: &str) -> Self {
        Self {
            mine: open(client, &notify, format!("spec.node={node}")),
            client: client.clone(),
            notify,
            networks: BTreeMap::new(),
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
        for name in networks {
            if !self.networks.contains_key(&name) {
                tracing::debug!(network = %name, "watching the network's endpoints");
                let w = open(&self.client, &self.notify, format!("spec.network={name}"));
                self.networks.insert(name, w);
            }
        }
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
