//! Leader election on a coordination.k8s.io/v1 Lease, so only one replica allocates.
//!
//! The allocator's safety rests on a single writer: a replica that cannot renew its lease
//! within the deadline exits rather than risk two allocators.

use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

pub struct LeaderSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

/// Fail with a clear message when the API server does not serve Leases.
pub async fn ensure_leases_served(client: &Client) -> anyhow::Result<()> {
    match client
        .list_api_group_resources("coordination.k8s.io/v1")
        .await
    {
        Ok(list) if list.resources.iter().any(|r| r.name == "leases") => Ok(()),
        Ok(_) | Err(kube::Error::Api(_)) => bail!(
            "--leader-elect needs coordination.k8s.io/v1 Leases, which this API server does not serve \
             (a standalone CRD API server, for instance). Run a single replica without --leader-elect, \
             or point the controller at a full Kubernetes API server"
        ),
        Err(e) => Err(e).context("asking the API server whether it serves Leases"),
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed + SignedDuration::from_secs(secs) < now
}

/// Block until this replica holds the lease, then keep renewing it in the background; the
/// process exits if renewal fails for longer than the lease duration.
pub async fn acquire(client: Client, s: LeaderSettings) -> anyhow::Result<()> {
    ensure_leases_served(&client).await?;
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    loop {
        if try_take(&api, &s).await? {
            break;
        }
        tokio::time::sleep(s.renew_interval).await;
    }
    tracing::info!(lease = %s.name, identity = %s.identity, "became leader");
    tokio::spawn(async move {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(s.renew_interval).await;
            match try_take(&api, &s).await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) | Err(_) if last_ok.elapsed() > s.lease_duration => {
                    tracing::error!(
                        "lost the leader lease; exiting so that only one allocator runs"
                    );
                    std::process::exit(1);
                }
                _ => {}
            }
        }
    });
    Ok(())
}

/// Create, renew or take over an expired lease. Optimistic concurrency (resourceVersion)
/// makes two replicas racing for it end with one winner.
async fn try_take(api: &Api<Lease>, s: &LeaderSettings) -> anyhow::Result<bool> {
    let now = Timestamp::now();
    let spec = LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(s.lease_duration.as_secs()).unwrap_or(15)),
        renew_time: Some(MicroTime(now)),
        acquire_time: Some(MicroTime(now)),
        ..Default::default()
    };
    match api.get_opt(&s.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            Ok(api.create(&PostParams::default(), &lease).await.is_ok())
        }
        Some(mut lease) => {
            let current = lease.spec.clone().unwrap_or_default();
            let mine = current.holder_identity.as_deref() == Some(s.identity.as_str());
            if !mine && !expired(&current, now) {
                return Ok(false);
            }
            let mut next = spec;
            if mine {
                next.acquire_time = current.acquire_time;
            }
            lease.spec = Some(next);
            Ok(api
                .replace(&s.name, &PostParams::default(), &lease)
                .await
                .is_ok())
        }
    }
}
