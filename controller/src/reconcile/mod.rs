//! Reconcilers, one file per kind, sharing one [`Context`].

pub mod fresh;
pub mod network;
pub mod orphans;
pub mod pool;
pub mod service;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc::UnboundedSender;
use weft_api::{AddressPool, ContainerNetwork, NetworkAllocation, NetworkNode};

use crate::Settings;
use crate::allocations::Allocations;
use crate::metrics::Metrics;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// The single allocation state; held only for in-memory work, never across an await.
    pub allocations: Mutex<Allocations>,
    /// Pools and nodes as fresh as the events that trigger reconciles (see [`fresh`]).
    pub pools: fresh::FreshStore<AddressPool>,
    pub nodes: fresh::FreshStore<NetworkNode>,
    pub node_blocks: Store<NetworkAllocation>,
    /// The controller's own view of every network.
    pub networks: Store<ContainerNetwork>,
    /// Every ContainerEndpoint: a network is not released while one still uses it.
    pub endpoints: Store<weft_api::ContainerEndpoint>,
    pub recorder: Recorder,
    /// Last status write per network, to rate-limit rollup-only writes.
    pub last_rollup_write: Mutex<HashMap<String, Instant>>,
    /// The status we last wrote per network and when: a reconcile that runs before the
    /// watch delivers our own write sees a stale status and must not write it again.
    pub last_written: Mutex<HashMap<String, (weft_api::ContainerNetworkStatus, Instant)>>,
    /// Networks to reconcile again (an older network displaced their subnet).
    pub requeue: UnboundedSender<ObjectRef<ContainerNetwork>>,
    /// Something may have left a `NetworkAllocation` without its network: sweep now.
    pub orphans: UnboundedSender<()>,
    /// Pool usage changed: rewrite AddressPool status.
    pub pools_changed: UnboundedSender<()>,
    /// Set once the API server answered that it does not serve Events: stop asking.
    pub events_unsupported: std::sync::atomic::AtomicBool,
}

impl Context {
    /// Space was freed: give every network still waiting for an allocation another try.
    pub fn wake_unallocated(&self) {
        for net in self.networks.state() {
            let allocated = net.status.as_ref().is_some_and(|s| {
                weft_api::condition::is_true(
                    &s.conditions,
                    weft_api::condition::types::SUBNET_ALLOCATED,
                )
            });
            if !allocated && net.metadata.deletion_timestamp.is_none() {
                let _ = self.requeue.send(ObjectRef::from_obj(&*net));
            }
        }
    }

    /// Events are best-effort: an API server without Events costs a debug line, never an error.
    pub async fn event(
        &self,
        net: &ContainerNetwork,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        use kube::Resource;
        use std::sync::atomic::Ordering;
        if self.events_unsupported.load(Ordering::Relaxed) {
            return;
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Allocate".into(),
            secondary: None,
        };
        match self.recorder.publish(&ev, &net.object_ref(&())).await {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tracing::debug!("the API server does not serve Events; not recording any");
                self.events_unsupported.store(true, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "event not recorded"),
        }
    }
}
