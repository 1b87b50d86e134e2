//! `NetworkAllocation`s whose network is gone, deleted level-triggered.
//!
//! `cleanup` deletes a network's allocation on the finalizer path, but that path never runs
//! for a network deleted before its finalizer landed: a reconcile that was in flight wrote the
//! allocation, the controller was killed, or the API server was cut off. Their owner reference
//! lets a cluster's garbage collector remove them eventually, but GC is asynchronous, can be
//! disabled by an orphaning delete, and is absent from bare API servers. So the controller
//! sweeps: at start, on every allocation event, and on a resync timer.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc::UnboundedReceiver;
use weft_api::{ContainerNetwork, NETWORK_FINALIZER, NetworkAllocation};

use super::Context;

/// The backstop: a network that vanished while the watch was down sends no event.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Is this allocation left over? Its network is gone, is another incarnation of the same
/// name, or is being deleted without our finalizer (so `cleanup` will never run for it).
pub fn orphaned(alloc: &NetworkAllocation, net: Option<&ContainerNetwork>) -> bool {
    let Some(net) = net else {
        return true;
    };
    if net.uid().as_deref() != Some(alloc.spec.network_uid.as_str()) {
        return true;
    }
    net.meta().deletion_timestamp.is_some()
        && !net.finalizers().iter().any(|f| f == NETWORK_FINALIZER)
}

/// Sweep once now, then on every wake-up or resync tick, until the wake-up channel closes.
pub async fn run(ctx: Arc<Context>, mut wake: UnboundedReceiver<()>) {
    // Never judge allocations against a network cache that has not listed yet. The store
    // wakes only one waiter (kube's DelayedInit keeps one waker, and the Controller waits
    // too), so ask again each second instead of waiting once.
    loop {
        match tokio::time::timeout(Duration::from_secs(1), ctx.networks.wait_until_ready()).await {
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => continue,
        }
    }
    loop {
        sweep(&ctx).await;
        match tokio::time::timeout(RESYNC, wake.recv()).await {
            Ok(None) => return,
            Ok(Some(())) | Err(_) => while wake.try_recv().is_ok() {},
        }
    }
}

/// Delete every orphaned allocation. The caches pick the candidates; a fresh read of the
/// network confirms each, so a cache that lags never costs a live network its blocks.
async fn sweep(ctx: &Context) {
    let networks: Api<ContainerNetwork> = Api::all(ctx.client.clone());
    let allocations: Api<NetworkAllocation> = Api::all(ctx.client.clone());
    for alloc in ctx.node_blocks.state() {
        let name = alloc.name_any();
        let cached = ctx.networks.get(&ObjectRef::new(&name));
        if !orphaned(&alloc, cached.as_deref()) {
            continue;
        }
        let current = match networks.get_opt(&name).await {
            Ok(n) => n,
            Err(error) => {
                tracing::debug!(allocation = %name, %error, "orphan check postponed");
                continue;
            }
        };
        if !orphaned(&alloc, current.as_ref()) {
            continue;
        }
        // Only the very object we judged: a network re-created meanwhile rewrites it (new
        // resourceVersion), and then it is no longer ours to delete.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: alloc.uid(),
                resource_version: alloc.resource_version(),
            }),
            ..DeleteParams::default()
        };
        match allocations.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(allocation = %name, "deleted the allocation of a deleted network");
                if current.is_none() {
                    // Its subnets too, if this controller still holds them (as `cleanup` would).
                    super::network::release_if_gone(ctx, &name).await;
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(error) => tracing::debug!(allocation = %name, %error, "orphan not deleted yet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(uid: &str, deleting: bool, finalizer: bool) -> ContainerNetwork {
        let mut n: ContainerNetwork = serde_json::from_value(serde_json::json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
            "metadata": {"name": "web", "uid": uid},
            "spec": {"driver": "overlay"},
        }))
        .expect("network");
        if deleting {
            n.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        if finalizer {
            n.metadata.finalizers = Some(vec![NETWORK_FINALIZER.into()]);
        }
        n
    }

    fn alloc(uid: &str) -> NetworkAllocation {
        NetworkAllocation::new(
            "web",
            weft_api::NetworkAllocationSpec {
                network: "web".into(),
                network_uid: uid.into(),
                block_prefix_length: 28,
                blocks: vec![],
            },
        )
    }

    #[test]
    fn an_allocation_is_orphaned_once_its_network_is_gone_or_past_cleanup() {
        let a = alloc("u1");
        assert!(orphaned(&a, None), "network gone");
        assert!(orphaned(&a, Some(&net("u2", false, true))), "re-created");
        assert!(
            orphaned(&a, Some(&net("u1", true, false))),
            "deleting, finalizer never landed or already removed"
        );
        assert!(
            !orphaned(&a, Some(&net("u1", false, false))),
            "finalizer not yet added"
        );
        assert!(!orphaned(&a, Some(&net("u1", false, true))), "live");
        assert!(
            !orphaned(&a, Some(&net("u1", true, true))),
            "cleanup still to run: it deletes the allocation itself"
        );
    }
}
