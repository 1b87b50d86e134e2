//! The CNI door: ADD, DEL, CHECK, GC and STATUS from the runtime (through
//! [`super::socket`]), served on the spot against the same state as the API door.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;

use weft_cni::proto::{self, AttachmentId, Failure, codes};

use super::manager::Endpoints;
use super::plan;
use super::state::{lock, publications};
use super::translate::{cni_dns, cni_request, cni_result, failure, nameserver, problem_failure};
use super::{Attachment, EndpointId};
use crate::drivers::{self, EndpointShape};
use crate::kernel::Kernel;

impl Endpoints {
    /// CNI ADD: attach on the spot and answer; the API learns about it on the next pass.
    pub async fn cni_add(&self, req: &proto::Request) -> Result<proto::Attachment, Failure> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err(failure(
                codes::TRY_AGAIN_LATER,
                "the Weft agent is starting; try again shortly",
            ));
        }
        let _permit = self
            .adds
            .acquire()
            .await
            .map_err(|_| failure(codes::NOT_AVAILABLE, "the Weft agent is shutting down"))?;
        let request = cni_request(req)?;
        self.settle_teardowns(&request).await;
        let cni_id = request.cni.clone();
        let (stale, id, admitted) = {
            let mut st = lock(&self.state);
            let st = &mut *st;
            // The same ADD again: same answer. The same container in a new sandbox (started
            // again after a stop whose DEL never reached the agent) is a new attachment.
            let existing = st
                .attachments
                .values()
                .find(|a| a.cni == cni_id && a.sandbox == request.sandbox)
                .map(|a| a.id.clone());
            let mut stale = None;
            let mut admitted = Ok(());
            if existing.is_none() {
                // Refused before anything is taken apart.
                if !st.networks.contains(&request.network) {
                    return Err(failure(
                        codes::UNKNOWN_NETWORK,
                        format!(
                            "network {:?} does not exist or does not select node {} (kubectl get cnet {})",
                            request.network, self.node, request.network
                        ),
                    ));
                }
                if st
                    .networks
                    .get(&request.network)
                    .is_some_and(|n| drivers::of(n).endpoint_shape() == EndpointShape::SharesNode)
                {
                    return Err(failure(
                        codes::INVALID_CONFIG,
                        format!(
                            "network {:?} is a host network: a container joins it by sharing the node's namespace                              (docker/podman --network host, hostNetwork: true), which needs no CNI call",
                            request.network
                        ),
                    ));
                }
                st.sandboxes
                    .refuse_node_namespace(&request.sandbox)
                    .map_err(|p| problem_failure(&p))?;
                // Another sandbox under the same name (a pod re-created without DEL).
                if let Some(old) = st.attachments.remove(&request.id) {
                    st.ipam.release(&old.network_uid, &old.id.to_string());
                    st.ensured.remove(&old.id);
                    stale = Some(old);
                }
                st.drop_tombstone(&self.journal, &request.id);
                admitted = st.admit(&self.node, &self.journal, &request);
            }
            (stale, existing.unwrap_or(request.id.clone()), admitted)
        };
        // The replaced sandbox is detached even when this ADD is refused.
        if let Some(old) = stale
            && let Err(e) = self.detach(&old).await
        {
            tracing::warn!(endpoint = %old.id, error = %e, "detaching the previous sandbox failed");
        }
        admitted.map_err(|p| problem_failure(&p))?;
        // A network not programmed here yet comes back as NetworkNotReady: try again later.
        let ensured = match self.ensure(&id).await {
            Ok(e) => e,
            Err(p) => {
                // Nothing half-applied: whatever the failed attempt created goes too.
                if let Some(att) = self.forget(&id) {
                    let _ = self.detach(&att).await;
                }
                return Err(problem_failure(&p));
            }
        };
        if !request.publish.is_empty() {
            // Publish now rather than after the next pass: the node's inet table as the last
            // pass planned it, with the publish chains of every endpoint including this one,
            // in one atomic nft transaction. The next pass plans the very same table (zero
            // writes); a pass racing with this one re-plans it right after.
            let (table, conflict) = {
                let st = lock(&self.state);
                let (chains, conflicts) = plan::publish_rules(&publications(&st));
                let mut nft = st.desired_node.nft.clone();
                plan::add_publish_chains(&mut nft, chains);
                (
                    nft.get(&crate::model::NftFamily::Inet).cloned(),
                    conflicts.get(&id).cloned(),
                )
            };
            if conflict.is_none()
                && let Some(table) = table
            {
                let report = self
                    .kernel
                    .apply(&[crate::kernel::Change::SetNftTable(
                        crate::model::NftFamily::Inet,
                        table,
                    )])
                    .await;
                if let Some((_, err)) = report.failed.first() {
                    tracing::warn!(endpoint = %id, error = %err, "publishing in the ADD path failed; the pass will retry");
                    self.next_pass().await;
                }
            }
            self.wake.notify_one();
            if let Some(p) = conflict {
                if let Some(att) = self.forget(&id) {
                    let _ = self.detach(&att).await;
                }
                self.wake.notify_one();
                return Err(problem_failure(&p));
            }
        } else {
            self.wake.notify_one();
        }
        let (att, planned, nameserver) = {
            let st = lock(&self.state);
            let att = st.attachments.get(&id).cloned().ok_or_else(|| {
                failure(
                    codes::TRY_AGAIN_LATER,
                    "the endpoint was removed while being added",
                )
            })?;
            // The result claims the default route only where the sandbox gets it from this
            // attachment (not on an internal network, not when another has a higher
            // priority)...
            let planned = st
                .networks
                .get(&att.network)
                .map(|net| {
                    plan::holds_default_route_among(&att, net, &st.attachments, &st.networks)
                })
                .unwrap_or_default();
            let nameserver = st
                .networks
                .get(&att.network)
                .filter(|_| self.names)
                .and_then(|net| nameserver(&att, drivers::of(net).endpoint_shape()));
            (att, planned, nameserver)
        };
        // ...and the attach installed it: a default route that is not Weft's keeps the
        // sandbox unless the config says `"defaultRoute": "replace"` (the attach saw it; no
        // second look into the sandbox).
        let default_routes = plan::DefaultRoutes {
            v4: planned.v4 && !ensured.default_route_yielded.v4,
            v6: planned.v6 && !ensured.default_route_yielded.v6,
        };
        let mut result = cni_result(&att, default_routes);
        result.dns = nameserver.map(|ns| cni_dns(&att, ns));
        Ok(result)
    }

    /// CNI DEL: detach if known; an unknown container is fine (DEL must be idempotent).
    /// Returns what was detached.
    pub async fn cni_del(&self, req: &proto::Request) -> Result<Option<Attachment>, Failure> {
        let target = AttachmentId {
            container_id: req.container_id.clone(),
            if_name: req.if_name.clone(),
        };
        let found = {
            let mut st = lock(&self.state);
            let found = st
                .attachments
                .values()
                .find(|a| a.cni.as_ref() == Some(&target))
                .map(|a| a.id.clone());
            // No attachment, but its object: the network was deleted under the container,
            // which took the attachment. The object still leaves with the container.
            if found.is_none()
                && let Some(id) = st.cni_objects.get(&target).cloned()
                && req
                    .pod_namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == id.namespace)
            {
                st.put_tombstone(&self.journal, &id);
                self.wake.notify_one();
            }
            found
        };
        let Some(id) = found else { return Ok(None) };
        self.remove_via_cni(&id).await
    }

    /// Detach and forget an endpoint as DEL does; its object leaves the API on the next pass.
    pub(super) async fn remove_via_cni(
        &self,
        id: &EndpointId,
    ) -> Result<Option<Attachment>, Failure> {
        {
            lock(&self.state).put_tombstone(&self.journal, id);
        }
        // Held until the attachment is forgotten: a pass repairing it in between would
        // bring the interface back after DEL answered.
        let claim = self
            .claim(id)
            .await
            .map_err(|m| failure(codes::KERNEL, m))?;
        let att = lock(&self.state).attachments.get(id).cloned();
        if let Some(att) = &att {
            // Out of service now; the interface's deletion follows in the background.
            self.take_down(att)
                .await
                .map_err(|e| failure(codes::KERNEL, format!("removing endpoint {id}: {e}")))?;
            drop(claim);
            // The default route moves to the next holder before DEL answers.
            self.ensure_sandbox(&att.sandbox).await;
        }
        self.wake.notify_one();
        Ok(att)
    }

    /// CNI CHECK: the interface must be in the sandbox as ADD left it.
    pub async fn cni_check(&self, req: &proto::Request) -> Result<(), Failure> {
        let target = AttachmentId {
            container_id: req.container_id.clone(),
            if_name: req.if_name.clone(),
        };
        let att = {
            let st = lock(&self.state);
            st.attachments
                .values()
                .find(|a| a.cni.as_ref() == Some(&target))
                .cloned()
        }
        .ok_or_else(|| {
            failure(
                codes::UNKNOWN_CONTAINER,
                format!(
                    "container {} has no Weft attachment {}",
                    req.container_id, req.if_name
                ),
            )
        })?;
        // Nothing to look at in a sandbox that only has its loopback.
        let has_interface = lock(&self.state)
            .networks
            .get(&att.network)
            .is_none_or(|n| drivers::of(n).endpoint_shape().has_interface());
        if !has_interface {
            return Ok(());
        }
        let check_failed = |m: String| failure(codes::CHECK_FAILED, m);
        let found = Kernel::inspect_endpoint(Path::new(&att.sandbox), &att.if_name)
            .await
            .map_err(|e| check_failed(format!("cannot look into sandbox {}: {e}", att.sandbox)))?
            .ok_or_else(|| {
                check_failed(format!(
                    "interface {} is missing from sandbox {} (endpoint {})",
                    att.if_name, att.sandbox, att.id
                ))
            })?;
        if !found.owned {
            return Err(check_failed(format!(
                "interface {} is missing from sandbox {} (endpoint {}): the one there is not Weft's",
                att.if_name, att.sandbox, att.id
            )));
        }
        if let Some((addr, _)) = att
            .addresses()
            .find(|(addr, _)| !found.addresses.contains(addr))
        {
            return Err(check_failed(format!(
                "interface {} in sandbox {} lacks its address {addr}",
                att.if_name, att.sandbox
            )));
        }
        if att.mac.is_some() && found.mac != att.mac {
            return Err(check_failed(format!(
                "interface {} in sandbox {} has MAC {}, not {}",
                att.if_name,
                att.sandbox,
                found.mac.map(|m| m.to_string()).unwrap_or_default(),
                att.mac.map(|m| m.to_string()).unwrap_or_default()
            )));
        }
        if !found.up {
            return Err(check_failed(format!(
                "interface {} in sandbox {} is down",
                att.if_name, att.sandbox
            )));
        }
        Ok(())
    }

    /// CNI GC: every CNI attachment the runtime no longer lists goes. Returns how many.
    pub async fn cni_gc(&self, req: &proto::Request) -> Result<usize, Failure> {
        let valid: BTreeSet<AttachmentId> = req.valid_attachments.iter().cloned().collect();
        let stale: Vec<EndpointId> = {
            let st = lock(&self.state);
            st.attachments
                .values()
                .filter(|a| a.cni.as_ref().is_some_and(|c| !valid.contains(c)))
                .map(|a| a.id.clone())
                .collect()
        };
        for id in &stale {
            self.remove_via_cni(id).await?;
        }
        Ok(stale.len())
    }

    /// CNI STATUS: ready once the agent has its picture and has run a pass.
    pub fn cni_status(&self) -> Result<(), Failure> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(failure(
                codes::NOT_AVAILABLE,
                "the Weft agent is starting and cannot attach pods yet",
            ))
        }
    }
}
