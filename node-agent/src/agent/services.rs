//! The services loop of the agent: its own watches (services, endpoints with their
//! readiness, networks), and on every relevant change one plan → apply of the services table.
//! Apart from the network pass so a burst of endpoint changes never delays the network's
//! kernel state, and the other way round. It feeds the services' DNS names too (`dns.rs`),
//! from the same inputs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use weft_api::condition::{is_true, types};
use weft_api::{ContainerEndpoint, ContainerNetwork, ContainerService, NetworkNode};

use super::caches::{digest, watch};
use super::dns::{ServiceFeed, desired_services};
use crate::kernel::{MeshDataplane, ServiceDataplane};
use crate::services::inputs::{mesh_peers, node_addresses, service_inputs};
use crate::services::mesh;
use crate::services::plan::plan;

/// Run until the process ends; `names` feeds this node's DNS server, if it has one.
pub(super) async fn run(
    client: Client,
    node: String,
    netns: Option<PathBuf>,
    mut names: Option<ServiceFeed>,
) {
    let notify = Arc::new(Notify::new());
    let services = watch::<ContainerService>(
        &client,
        notify.clone(),
        |s: &ContainerService| {
            Some(digest(&(
                serde_json::to_string(&s.spec).unwrap_or_default(),
                s.status.as_ref().map(|st| st.vip.clone()),
                s.metadata.deletion_timestamp.is_some(),
                s.uid(),
            )))
        },
        |_| {},
    );
    let endpoints = watch::<ContainerEndpoint>(
        &client,
        notify.clone(),
        |c: &ContainerEndpoint| {
            let s = c.status.as_ref();
            Some(digest(&(
                &c.spec.network,
                &c.spec.node,
                c.labels(),
                c.metadata.deletion_timestamp.is_some(),
                s.map(|s| (&s.address, is_true(&s.conditions, types::READY))),
            )))
        },
        |_| {},
    );
    let networks = watch::<ContainerNetwork>(
        &client,
        notify.clone(),
        |n: &ContainerNetwork| Some(digest(&n.status.as_ref().map(|s| &s.subnets))),
        |_| {},
    );
    // The other nodes' addresses: where the mesh routes connections to remote endpoints.
    let nodes = watch::<NetworkNode>(
        &client,
        notify.clone(),
        |n: &NetworkNode| Some(digest(&n.spec.underlay_address)),
        |_| {},
    );
    for ready in [
        services.wait_until_ready().await.is_ok(),
        endpoints.wait_until_ready().await.is_ok(),
        networks.wait_until_ready().await.is_ok(),
        nodes.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            tracing::warn!(
                "services: a watch ended before its first list; services not programmed"
            );
            return;
        }
    }
    let (mut dataplane, mut mesh_dataplane) = loop {
        let opened = async {
            Ok::<_, crate::kernel::KernelError>((
                ServiceDataplane::open(netns.as_deref()).await?,
                MeshDataplane::open(netns.as_deref()).await?,
            ))
        };
        match opened.await {
            Ok(d) => break d,
            Err(e) => {
                tracing::warn!(error = %e, "services: cannot open the namespace; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    loop {
        let objects = services.state();
        let addresses = node_addresses(&nodes.state());
        let inputs = service_inputs(
            &node,
            &objects,
            &networks.state(),
            &endpoints.state(),
            &addresses,
        );
        if let Some(names) = &mut names {
            names.update(desired_services(&inputs, &objects));
        }
        let desired = plan(&inputs);
        // The mesh first: a route to a remote endpoint exists before a VIP balances to it.
        if let Err(e) = mesh_dataplane
            .apply(&mesh::plan(&inputs, &mesh_peers(&node, &addresses)))
            .await
        {
            tracing::warn!(error = %e, "services: applying the mesh failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match dataplane.apply(&desired).await {
            Ok(w) if w.transactions > 0 || w.routes > 0 => {
                tracing::debug!(
                    bytes = w.script_bytes,
                    routes = w.routes,
                    "services programmed"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "services: applying failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // No debounce: the events of a burst that arrive while one apply runs are taken by
        // the next one together (the permit is one, not one per event); a fixed wait would
        // add to every change's latency.
        notify.notified().await;
    }
}
