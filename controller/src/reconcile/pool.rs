//! `AddressPool` status: how much of each pool is carved, and which pool is the default.
//! Runs as one task fed by "usage changed" notifications, so a burst of allocations costs
//! one status write per pool, not one per network.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use weft_api::{AddressPool, AddressPoolStatus};

use super::Context;
use crate::metrics::{Metrics, PoolLabels};
use crate::{MANAGER, allocations, status};

/// Rewrite pool statuses whenever usage may have changed (debounced) and every 30 s.
pub async fn run(ctx: Arc<Context>, mut changed: UnboundedReceiver<()>) {
    loop {
        if let Err(e) = write_all(&ctx).await {
            tracing::warn!(error = %e, "writing AddressPool status failed");
        }
        tokio::select! {
            got = changed.recv() => if got.is_none() { return },
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        // Let a burst of allocations settle into one write.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while changed.try_recv().is_ok() {}
    }
}

fn saturate(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn write_all(ctx: &Context) -> Result<(), kube::Error> {
    let pools = ctx.pools.state();
    let default = allocations::default_pool(&pools);
    let api: Api<AddressPool> = Api::all(ctx.client.clone());
    for pool in pools
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let name = pool.name_any();
        let usage = ctx
            .allocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pool_usage(&name);
        let (total, allocated, networks) = usage
            .map(|u| (u.total_addresses, u.allocated_addresses, u.networks))
            .unwrap_or_default();
        for (state, v) in [
            ("allocated", allocated),
            ("free", total.saturating_sub(allocated)),
        ] {
            ctx.metrics
                .pool_addresses
                .get_or_create(&PoolLabels {
                    pool: name.clone(),
                    state: state.into(),
                })
                .set(saturate(v));
        }
        let previous = pool.status.clone().unwrap_or_default();
        let stalled = pool.spec.default && default.as_deref() != Some(name.as_str());
        let (reason, message) = if stalled {
            (
                "MultipleDefaults",
                format!(
                    "pool {} is already the default; only the oldest pool with default: true is used",
                    default.clone().unwrap_or_default()
                ),
            )
        } else {
            (
                "Ready",
                format!("{networks} network(s) hold subnets from this pool"),
            )
        };
        let conditions = status::conditions(
            &previous.conditions,
            vec![
                status::Want {
                    type_: "Ready",
                    status: !stalled,
                    reason,
                    message: message.clone(),
                },
                status::Want {
                    type_: "Stalled",
                    status: stalled,
                    reason: if stalled { reason } else { "Healthy" },
                    message: if stalled { message } else { String::new() },
                },
            ],
            pool.metadata.generation,
        );
        let new = AddressPoolStatus {
            observed_generation: pool.metadata.generation,
            conditions,
            networks: i32::try_from(networks).unwrap_or(i32::MAX),
            total_addresses: saturate(total),
            allocated_addresses: saturate(allocated),
        };
        if pool.status.as_ref() == Some(&new) {
            continue;
        }
        let patch =
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "AddressPool", "status": new});
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics
            .status_writes
            .get_or_create(&Metrics::kind("AddressPool"))
            .inc();
    }
    Ok(())
}
