//! A watch cache that is never behind the event that triggered a reconcile.
//!
//! kube's Controller delivers events of related kinds (pools, nodes) through its own watch,
//! separate from the reflector store a reconcile reads. A reconcile triggered by "pool
//! created" could therefore read a store that has not seen the pool yet, conclude nothing
//! changed, and wait for the next resync. The trigger records what it saw here first; reads
//! overlay those records on the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::Store;

pub struct FreshStore<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    /// name → the latest object the trigger saw, or `None` once it was deleted.
    seen: Mutex<HashMap<String, Option<Arc<K>>>>,
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> FreshStore<K> {
    pub fn new(store: Store<K>) -> Self {
        Self {
            store,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Called by the trigger before it returns the objects to reconcile.
    pub fn record(&self, obj: &K) {
        let latest = obj
            .meta()
            .deletion_timestamp
            .is_none()
            .then(|| Arc::new(obj.clone()));
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(obj.name_any(), latest);
    }

    /// Every live object: the store overlaid with what the trigger saw last.
    pub fn state(&self) -> Vec<Arc<K>> {
        let mut all: HashMap<String, Arc<K>> = self
            .store
            .state()
            .into_iter()
            .map(|o| (o.name_any(), o))
            .collect();
        for (name, seen) in self.seen.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            match seen {
                Some(obj) => all.insert(name.clone(), obj.clone()),
                None => all.remove(name),
            };
        }
        let mut live: Vec<Arc<K>> = all
            .into_values()
            .filter(|o| o.meta().deletion_timestamp.is_none())
            .collect();
        live.sort_by_key(|o| o.name_any());
        live
    }
}
