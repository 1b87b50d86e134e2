//! The ContainerEndpoint door: the state mirrored into the API — statuses of this node's
//! ContainerEndpoints, the objects of CNI attachments, and the deletion of CNI-detached
//! ones. (Requests come in through the pass: [`Endpoints::plan`].)

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use weft_api::{ContainerEndpoint, ContainerEndpointStatus};
use weft_cni::proto::AttachmentId;

use super::manager::Endpoints;
use super::plan;
use super::state::lock;
use super::translate::{missing_labels, nameserver, of_an_earlier_sandbox, status_of};
use super::{
    ANNOTATION_CONTAINER_ID, ANNOTATION_CONTAINER_NAME, ANNOTATION_IFNAME, Attachment, EndpointId,
    LABEL_NETWORK, LABEL_NODE, PortSpec,
};
use crate::drivers;

impl Endpoints {
    /// Mirror the state into the API: statuses of this node's ContainerEndpoints, the
    /// objects of CNI attachments, and the deletion of CNI-detached ones.
    pub async fn publish_status(
        &self,
        client: &Client,
        ceps: &[Arc<ContainerEndpoint>],
    ) -> kube::Result<usize> {
        let (attachments, problems, tombstones, routed, shapes) = {
            let st = lock(&self.state);
            let shapes: HashMap<String, drivers::EndpointShape> = st
                .networks
                .iter()
                .map(|n| (n.name.clone(), drivers::of(n).endpoint_shape()))
                .collect();
            let routed: BTreeSet<String> = st
                .networks
                .iter()
                .filter(|n| drivers::of(n).endpoint_shape().routed())
                .map(|n| n.name.clone())
                .collect();
            (
                st.attachments.clone(),
                st.problems.clone(),
                st.tombstones.clone(),
                routed,
                shapes,
            )
        };
        // Only veth endpoints have a host side.
        let host_if = |a: &Attachment| {
            routed
                .contains(&a.network)
                .then(|| plan::host_interface(&a.id))
        };
        // An attached endpoint's status names where its sandbox resolves names.
        let names = self.names;
        let with_nameserver = |mut status: ContainerEndpointStatus, att: Option<&Attachment>| {
            status.nameserver = att
                .filter(|_| names && status.address.is_some())
                .and_then(|a| nameserver(a, *shapes.get(&a.network)?))
                .map(|ns| ns.to_string());
            status
        };
        let mut writes = 0;
        let by_id: HashMap<EndpointId, &Arc<ContainerEndpoint>> = ceps
            .iter()
            .map(|c| {
                (
                    EndpointId {
                        namespace: c.namespace().unwrap_or_default(),
                        name: c.name_any(),
                    },
                    c,
                )
            })
            .collect();
        // CNI attachments without an object yet (or with a stale one of an earlier sandbox,
        // which is deleted first: its identity fields are immutable).
        for att in attachments.values() {
            if let Some(old) = by_id.get(&att.id)
                && of_an_earlier_sandbox(old, att)
            {
                writes += delete_object(client, &att.id, old).await?;
                continue;
            }
            if att.cni.is_none() || by_id.contains_key(&att.id) || att.in_api {
                continue;
            }
            // Detached since the snapshot (DEL/GC racing with this pass): do not resurrect.
            if !lock(&self.state).attachments.contains_key(&att.id) {
                continue;
            }
            let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), &att.id.namespace);
            let cni = att.cni.clone().unwrap_or_else(|| AttachmentId {
                container_id: String::new(),
                if_name: String::new(),
            });
            let mut spec = json!({
                "network": att.network,
                "node": self.node,
                "sandbox": att.sandbox,
                "interfaceName": att.if_name,
            });
            if let Some(a) = att.requested_address {
                spec["address"] = json!(a.to_string());
            }
            if let Some(m) = att.requested_mac {
                spec["mac"] = json!(m.to_string());
            }
            if att.gw_priority != 0 {
                // Else the pass would read priority 0 back and move the default route.
                spec["gwPriority"] = json!(att.gw_priority);
            }
            if !att.names.aliases.is_empty() {
                spec["aliases"] = json!(att.names.aliases);
            }
            if !att.publish.is_empty() {
                spec["publish"] =
                    json!(att.publish.iter().map(PortSpec::to_api).collect::<Vec<_>>());
            }
            let mut annotations =
                json!({ANNOTATION_CONTAINER_ID: cni.container_id, ANNOTATION_IFNAME: cni.if_name});
            if let Some(name) = &att.names.container_name {
                annotations[ANNOTATION_CONTAINER_NAME] = json!(name);
            }
            let obj = json!({
                "apiVersion": "weft.dev/v1alpha1",
                "kind": "ContainerEndpoint",
                "metadata": {
                    "name": att.id.name,
                    "namespace": att.id.namespace,
                    "labels": {LABEL_NODE: self.node, LABEL_NETWORK: att.network},
                    "annotations": annotations,
                },
                "spec": spec,
            });
            api.patch(
                &att.id.name,
                &PatchParams::apply(self.manager).force(),
                &Patch::Apply(&obj),
            )
            .await?;
            writes += 1;
            let status = with_nameserver(
                status_of(host_if(att), Some(att), problems.get(&att.id), None, None),
                Some(att),
            );
            writes += apply_status(client, self.manager, &att.id, &status).await?;
        }
        // Statuses of this node's objects.
        for (id, cep) in &by_id {
            if cep.spec.node != self.node || cep.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if attachments
                .get(id)
                .is_some_and(|att| of_an_earlier_sandbox(cep, att))
            {
                continue;
            }
            if tombstones.contains_key(id) {
                writes += delete_object(client, id, cep).await?;
                continue;
            }
            writes += label_object(client, id, cep, &self.node).await?;
            let status = with_nameserver(
                status_of(
                    attachments.get(id).and_then(&host_if),
                    attachments.get(id),
                    problems.get(id),
                    cep.metadata.generation,
                    cep.status.as_ref(),
                ),
                attachments.get(id),
            );
            if cep.status.as_ref() == Some(&status) {
                continue;
            }
            writes += apply_status(client, self.manager, id, &status).await?;
        }
        Ok(writes)
    }
}

/// Delete an endpoint's object, only that very object (uid precondition); already gone or
/// replaced counts as done. Returns the writes made.
async fn delete_object(
    client: &Client,
    id: &EndpointId,
    cep: &ContainerEndpoint,
) -> kube::Result<usize> {
    let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), &id.namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cep.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&id.name, &dp).await {
        Ok(_) => Ok(1),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(0),
        Err(e) => Err(e),
    }
}

/// Add the labels an endpoint lacks (a hand-written one), by a merge patch of those labels
/// alone: the object's other fields and owners are left as they are.
async fn label_object(
    client: &Client,
    id: &EndpointId,
    cep: &ContainerEndpoint,
    node: &str,
) -> kube::Result<usize> {
    let missing = missing_labels(cep);
    if missing.is_empty() || cep.spec.node != node {
        return Ok(0);
    }
    let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), &id.namespace);
    let patch = json!({"metadata": {"labels": missing}});
    match api
        .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(1),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(0),
        Err(e) => Err(e),
    }
}

/// Server-side apply an endpoint's status; an object deleted meanwhile is not an error.
async fn apply_status(
    client: &Client,
    manager: &str,
    id: &EndpointId,
    status: &ContainerEndpointStatus,
) -> kube::Result<usize> {
    let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), &id.namespace);
    let patch =
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint", "status": status});
    match api
        .patch_status(
            &id.name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(1),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(0),
        Err(e) => Err(e),
    }
}
