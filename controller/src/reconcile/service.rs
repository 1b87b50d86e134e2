//! ContainerService: gives a `vip` service its virtual IP and reports what it found (VIP,
//! ready endpoint count, one `Ready` condition with a reason). Never writes a spec.
//!
//! VIPs come from the network's service range ([`weft_ipam::service_range`], the top
//! sixteenth of each subnet), which the agents' endpoint IPAM never hands out by itself; an
//! address in it that an endpoint asked for by name is skipped. The VIPs in use are the
//! services' statuses plus what this process handed out and has not seen written yet (two
//! services reconciled at once never get the same address).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use weft_api::service::reasons;
use weft_api::{
    ContainerEndpoint, ContainerNetwork, ContainerService, ContainerServiceStatus, EndpointMode,
    PublishMode, ServiceProtocol,
};

use crate::metrics::{ErrorLabels, Metrics};
use crate::{Error, MANAGER, Result, status};

/// What every service reconcile shares.
pub struct ServiceContext {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub networks: Store<ContainerNetwork>,
    pub endpoints: Store<ContainerEndpoint>,
    pub services: Store<ContainerService>,
    /// network → VIP → service uid, as handed out by this process.
    pub vips: Mutex<HashMap<String, BTreeMap<IpAddr, String>>>,
}

/// What the controller concluded about one service.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub vip: Option<IpAddr>,
    pub ready_endpoints: i32,
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Everything the decision reads, as plain data (the function below is pure).
pub struct Inputs<'a> {
    pub service: &'a ContainerService,
    pub network: Option<&'a ContainerNetwork>,
    pub endpoints: &'a [Arc<ContainerEndpoint>],
    pub services: &'a [Arc<ContainerService>],
    /// VIPs of the service's network taken by other services (uid → VIP).
    pub taken_vips: &'a BTreeMap<IpAddr, String>,
}

fn ep_status_addr(ep: &ContainerEndpoint) -> Option<IpAddr> {
    ep.status
        .as_ref()
        .and_then(|s| s.address.as_deref())
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
}

fn ep_addr(ep: &ContainerEndpoint) -> Option<IpAddr> {
    ep_status_addr(ep).or_else(|| ep.spec.address.as_deref().and_then(|a| a.parse().ok()))
}

fn is_ready(ep: &ContainerEndpoint) -> bool {
    ep.status.as_ref().is_some_and(|s| {
        weft_api::condition::is_true(&s.conditions, weft_api::condition::types::READY)
    })
}

/// Endpoints the service's selector picks: same namespace, same network, labels match.
pub fn selected<'a>(
    svc: &ContainerService,
    endpoints: &'a [Arc<ContainerEndpoint>],
) -> Result<Vec<&'a Arc<ContainerEndpoint>>, String> {
    let selector =
        Selector::try_from(svc.spec.selector.clone()).map_err(|e| format!("spec.selector: {e}"))?;
    let ns = svc.namespace();
    Ok(endpoints
        .iter()
        .filter(|ep| ep.namespace() == ns && ep.spec.network == svc.spec.network)
        .filter(|ep| selector.matches(ep.labels()))
        .collect())
}

fn older(a: &ContainerService, b: &ContainerService) -> bool {
    let key = |s: &ContainerService| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            s.namespace(),
            s.name_any(),
        )
    };
    key(a) < key(b)
}

fn proto_str(p: ServiceProtocol) -> &'static str {
    match p {
        ServiceProtocol::Tcp => "tcp",
        ServiceProtocol::Udp => "udp",
    }
}

/// The decision: VIP, ready count and the one reason, first problem first.
pub fn decide(inputs: &Inputs<'_>) -> Verdict {
    let svc = inputs.service;
    let fail = |vip, reason, message: String| Verdict {
        vip,
        ready_endpoints: 0,
        ready: false,
        reason,
        message,
    };
    let Some(net) = inputs.network else {
        return fail(
            None,
            reasons::NETWORK_NOT_READY,
            format!("network {} does not exist", svc.spec.network),
        );
    };
    let subnets: Vec<IpNet> = net
        .status
        .iter()
        .flat_map(|s| s.subnets.iter())
        .filter_map(|s| s.parse::<IpNet>().ok())
        .collect();
    if subnets.is_empty() {
        return fail(
            None,
            reasons::NETWORK_NOT_READY,
            format!("network {} has no subnet allocated yet", svc.spec.network),
        );
    }
    let ingress: Vec<_> = svc
        .spec
        .ports
        .iter()
        .filter_map(|p| p.publish.as_ref().map(|pb| (p, pb)))
        .filter(|(_, pb)| pb.mode == PublishMode::Ingress)
        .collect();
    if net.spec.internal && !ingress.is_empty() {
        return fail(
            None,
            reasons::INGRESS_ON_INTERNAL_NETWORK,
            format!(
                "network {} is internal (nothing from outside reaches it): remove the ingress publish of port {}",
                svc.spec.network, ingress[0].0.port
            ),
        );
    }
    let selected = match selected(svc, inputs.endpoints) {
        Ok(s) => s,
        Err(message) => return fail(None, reasons::NO_ENDPOINTS, message),
    };
    let held: BTreeSet<IpAddr> = inputs
        .endpoints
        .iter()
        .filter(|ep| ep.spec.network == svc.spec.network)
        .filter_map(|ep| ep_addr(ep))
        .collect();
    // Given to an endpoint (its status), not only asked for: a VIP already given stays when
    // an endpoint asks for it later (the agent refuses that endpoint), and moves only if an
    // endpoint was admitted with it before its agent knew it was a VIP.
    let given: BTreeSet<IpAddr> = inputs
        .endpoints
        .iter()
        .filter(|ep| ep.spec.network == svc.spec.network)
        .filter_map(|ep| ep_status_addr(ep))
        .collect();
    let me = svc.uid().unwrap_or_default();
    let taken_by_other = |a: &IpAddr| inputs.taken_vips.get(a).is_some_and(|u| *u != me);
    let vip = match svc.spec.endpoint_mode {
        EndpointMode::Dnsrr => None,
        EndpointMode::Vip => {
            let ranges: Vec<IpNet> = subnets
                .iter()
                .filter_map(weft_ipam::service_range)
                .collect();
            match svc.spec.vip.as_deref().map(str::parse::<IpAddr>) {
                Some(Err(_)) => {
                    return fail(
                        None,
                        reasons::VIP_OUTSIDE_SUBNET,
                        "spec.vip is not an address".into(),
                    );
                }
                Some(Ok(asked)) => {
                    if !subnets.iter().any(|s| s.contains(&asked)) {
                        return fail(
                            None,
                            reasons::VIP_OUTSIDE_SUBNET,
                            format!(
                                "spec.vip {asked} is outside the subnets of network {} ({})",
                                svc.spec.network,
                                subnets
                                    .iter()
                                    .map(|s| s.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                    let excluded = net
                        .spec
                        .ipam
                        .as_ref()
                        .and_then(|i| i.excluded_ranges.as_ref())
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.parse::<IpNet>().ok());
                    let reserved = ranges
                        .iter()
                        .copied()
                        .chain(excluded)
                        .any(|r| r.contains(&asked));
                    if !reserved {
                        return fail(
                            None,
                            reasons::VIP_IN_USE,
                            format!(
                                "spec.vip {asked} is neither in the service range ({}) nor in spec.ipam.excludedRanges of network {}: an endpoint could be given it",
                                ranges
                                    .iter()
                                    .map(|s| s.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                svc.spec.network
                            ),
                        );
                    }
                    if held.contains(&asked) || taken_by_other(&asked) {
                        return fail(
                            None,
                            reasons::VIP_IN_USE,
                            format!("spec.vip {asked} is held by an endpoint or another service"),
                        );
                    }
                    Some(asked)
                }
                None => {
                    let current = svc
                        .status
                        .as_ref()
                        .and_then(|s| s.vip.as_deref())
                        .and_then(|v| v.parse::<IpAddr>().ok())
                        .filter(|v| ranges.iter().any(|r| r.contains(v)))
                        .filter(|v| !taken_by_other(v) && !given.contains(v));
                    let free = || {
                        ranges.iter().find_map(|r| {
                            r.hosts()
                                .find(|a| !held.contains(a) && !inputs.taken_vips.contains_key(a))
                        })
                    };
                    match current.or_else(free) {
                        Some(v) => Some(v),
                        None => {
                            return fail(
                                None,
                                reasons::NO_FREE_VIP,
                                format!(
                                    "the service range of network {} ({}) has no free address",
                                    svc.spec.network,
                                    ranges
                                        .iter()
                                        .map(|s| s.to_string())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            );
                        }
                    }
                }
            }
        }
    };
    // Published ports: an ingress port answers on every node, a host port where the
    // service's endpoints run; either clashes with an endpoint publishing the same port,
    // and with an older service publishing it.
    for port in &svc.spec.ports {
        let Some(publish) = &port.publish else {
            continue;
        };
        let nodes: BTreeSet<&str> = selected.iter().map(|e| e.spec.node.as_str()).collect();
        let clash_ep = inputs.endpoints.iter().find(|ep| {
            (publish.mode == PublishMode::Ingress || nodes.contains(ep.spec.node.as_str()))
                && ep.spec.publish.iter().any(|p| {
                    // A publish without a host port gets one from the agent's range, which
                    // published service ports should stay out of.
                    let Some(start) = p.host_port else {
                        return false;
                    };
                    let end = p.host_port_end.unwrap_or(start);
                    weft_api::Protocol::from(port.protocol) == p.protocol
                        && (start..=end).contains(&publish.published_port)
                })
        });
        if let Some(ep) = clash_ep {
            return fail(
                vip,
                reasons::PORT_CONFLICT,
                format!(
                    "published port {}/{} is also published by endpoint {}/{} on node {}",
                    publish.published_port,
                    proto_str(port.protocol),
                    ep.namespace().unwrap_or_default(),
                    ep.name_any(),
                    ep.spec.node
                ),
            );
        }
        let clash_svc = inputs.services.iter().find(|other| {
            other.uid() != svc.uid()
                && older(other, svc)
                && other.spec.ports.iter().any(|q| {
                    q.protocol == port.protocol
                        && q.publish
                            .as_ref()
                            .is_some_and(|qp| qp.published_port == publish.published_port)
                })
        });
        if let Some(other) = clash_svc {
            return fail(
                vip,
                reasons::PORT_CONFLICT,
                format!(
                    "published port {}/{} is already published by service {}/{}",
                    publish.published_port,
                    proto_str(port.protocol),
                    other.namespace().unwrap_or_default(),
                    other.name_any()
                ),
            );
        }
    }
    let ready_endpoints = selected.iter().filter(|ep| is_ready(ep)).count() as i32;
    if ready_endpoints == 0 {
        return Verdict {
            vip,
            ready_endpoints,
            ready: false,
            reason: reasons::NO_ENDPOINTS,
            message: if selected.is_empty() {
                "the selector matches no endpoint of the network in this namespace".into()
            } else {
                format!("none of the {} selected endpoints is ready", selected.len())
            },
        };
    }
    Verdict {
        vip,
        ready_endpoints,
        ready: true,
        reason: reasons::READY,
        message: format!("{ready_endpoints} of {} endpoints ready", selected.len()),
    }
}

/// Reconcile one service: decide, remember its VIP, write the status if it changed.
pub async fn reconcile(svc: Arc<ContainerService>, ctx: Arc<ServiceContext>) -> Result<Action> {
    let uid = svc.uid().ok_or(Error::MissingMetadata)?;
    let ns = svc.namespace().ok_or(Error::MissingMetadata)?;
    let network = ctx
        .networks
        .get(&kube::runtime::reflector::ObjectRef::new(&svc.spec.network));
    let endpoints = ctx.endpoints.state();
    let services = ctx.services.state();
    let verdict = {
        let mut vips = ctx.vips.lock().unwrap_or_else(|p| p.into_inner());
        let live: BTreeSet<String> = services.iter().filter_map(|s| s.uid()).collect();
        let mine = vips.entry(svc.spec.network.clone()).or_default();
        // Forget services that are gone; add what the other services' statuses say.
        mine.retain(|_, owner| live.contains(owner));
        for other in services
            .iter()
            .filter(|s| s.spec.network == svc.spec.network)
        {
            let (Some(owner), Some(vip)) = (
                other.uid(),
                other.status.as_ref().and_then(|s| s.vip.as_deref()),
            ) else {
                continue;
            };
            if let Ok(vip) = vip.parse() {
                mine.entry(vip).or_insert(owner);
            }
        }
        mine.retain(|_, owner| *owner != uid);
        let verdict = decide(&Inputs {
            service: &svc,
            network: network.as_deref(),
            endpoints: &endpoints,
            services: &services,
            taken_vips: mine,
        });
        if let Some(vip) = verdict.vip {
            mine.insert(vip, uid.clone());
        }
        verdict
    };
    let previous = svc.status.clone().unwrap_or_default();
    let new = ContainerServiceStatus {
        observed_generation: svc.metadata.generation,
        conditions: status::conditions(
            &previous.conditions,
            vec![status::Want {
                type_: weft_api::condition::types::READY,
                status: verdict.ready,
                reason: verdict.reason,
                message: verdict.message,
            }],
            svc.metadata.generation,
        ),
        vip: verdict.vip.map(|v| v.to_string()),
        ready_endpoints: verdict.ready_endpoints,
    };
    if new != previous {
        let api: Api<ContainerService> = Api::namespaced(ctx.client.clone(), &ns);
        let patch =
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerService", "status": new});
        api.patch_status(
            &svc.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics
            .status_writes
            .get_or_create(&Metrics::kind("ContainerService"))
            .inc();
    }
    // Conflicts and a full range clear up when another object changes; look again now and then.
    Ok(if verdict.ready {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(30))
    })
}

pub fn error_policy(
    _svc: Arc<ContainerService>,
    error: &Error,
    ctx: Arc<ServiceContext>,
) -> Action {
    tracing::warn!(%error, "service reconcile failed");
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels {
            kind: "ContainerService".into(),
            error: error.metric_label().into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(2))
}
