//! Pure translations between the endpoints' state and the outside: a ContainerEndpoint's
//! spec or a CNI ADD → a request; an attachment → a CNI result or a ContainerEndpoint
//! status; a problem → a CNI failure. No I/O, unit-tested below.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use weft_api::{ContainerEndpoint, ContainerEndpointStatus};
use weft_cni::proto::{self, AttachmentId, Failure, codes};

use super::plan::{format_mac, parse_mac};
use super::{
    ANNOTATION_CONTAINER_ID, ANNOTATION_IFNAME, Attachment, EndpointId, EndpointRequest, PortSpec,
};
use crate::drivers::{Networks, Problem, RemoteEndpoint, reason};
use crate::kernel::{KernelError, sandbox_missing};

/// Turn a ContainerEndpoint's spec into a request; a malformed one becomes a problem.
pub(super) fn request_of(cep: &ContainerEndpoint) -> Result<EndpointRequest, Problem> {
    let invalid = |m: String| Problem::new(reason::INVALID_SPEC, m);
    let address = match cep.spec.address.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(a) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| invalid(format!("spec.address {a:?} is not an IP address")))?,
        ),
    };
    let mac = match cep.spec.mac.as_deref() {
        None => None,
        Some(m) => {
            Some(parse_mac(m).ok_or_else(|| invalid(format!("spec.mac {m:?} is not a MAC")))?)
        }
    };
    let publish = cep
        .spec
        .publish
        .iter()
        .map(|p| {
            PortSpec::from_api(p)
                .ok_or_else(|| invalid(format!("spec.publish entry {p:?} is out of range")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EndpointRequest {
        id: EndpointId {
            namespace: cep.namespace().unwrap_or_default(),
            name: cep.name_any(),
        },
        network: cep.spec.network.clone(),
        sandbox: cep.spec.sandbox.clone(),
        if_name: cep.spec.interface_name.clone(),
        address,
        mac,
        publish,
        cni: None,
    })
}

pub(super) fn kernel_problem(e: &KernelError, sandbox: &Path) -> Problem {
    if sandbox_missing(e) {
        Problem::new(
            reason::SANDBOX_MISSING,
            format!("sandbox {} does not exist on this node", sandbox.display()),
        )
    } else {
        Problem::new(reason::KERNEL_ERROR, e.to_string())
    }
}

pub(super) fn failure(code: u32, msg: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
        details: String::new(),
    }
}

pub(super) fn problem_failure(p: &Problem) -> Failure {
    let code = match p.reason {
        reason::NO_FREE_ADDRESS => codes::NO_FREE_ADDRESS,
        reason::ADDRESS_IN_USE | reason::OUTSIDE_SUBNET => codes::ADDRESS_REFUSED,
        reason::PORT_CONFLICT => codes::PORT_CONFLICT,
        reason::NETWORK_NOT_READY => codes::TRY_AGAIN_LATER,
        reason::INVALID_SPEC => codes::INVALID_CONFIG,
        reason::SANDBOX_MISSING => codes::INVALID_ENVIRONMENT,
        _ => codes::KERNEL,
    };
    Failure {
        code,
        msg: p.message.clone(),
        details: p.reason.to_string(),
    }
}

/// A Kubernetes object name from free text: lowercase alphanumerics and `-`.
fn object_name(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(253);
    out.trim_matches(|c: char| c == '-' || c == '.').to_string()
}

/// The endpoint a CNI ADD asks for: named after the pod (plus the interface when it is not
/// `eth0`, as for a Multus delegate), else after the container.
pub(super) fn cni_request(req: &proto::Request) -> Result<EndpointRequest, Failure> {
    if req.container_id.is_empty() || req.if_name.is_empty() || req.netns.is_empty() {
        return Err(failure(
            codes::INVALID_ENVIRONMENT,
            "ADD needs CNI_CONTAINERID, CNI_IFNAME and CNI_NETNS",
        ));
    }
    let network = if req.network.is_empty() {
        req.config_name.clone()
    } else {
        req.network.clone()
    };
    if network.is_empty() {
        return Err(failure(
            codes::INVALID_CONFIG,
            "the network configuration names no network",
        ));
    }
    let (namespace, base) = match (&req.pod_namespace, &req.pod_name) {
        (Some(ns), Some(pod)) if !ns.is_empty() && !pod.is_empty() => (ns.clone(), pod.clone()),
        _ => (
            "default".to_string(),
            format!(
                "cni-{}",
                req.container_id.chars().take(16).collect::<String>()
            ),
        ),
    };
    let name = if req.if_name == "eth0" {
        base
    } else {
        format!("{base}-{}", req.if_name)
    };
    let address = match req
        .address
        .as_deref()
        .map(|a| a.split('/').next().unwrap_or(a).trim())
    {
        None | Some("") => None,
        Some(a) => Some(a.parse().map_err(|_| {
            failure(
                codes::INVALID_CONFIG,
                format!("requested address {a:?} is not an IP address"),
            )
        })?),
    };
    let mac = match req.mac.as_deref() {
        None | Some("") => None,
        Some(m) => Some(parse_mac(m).ok_or_else(|| {
            failure(
                codes::INVALID_CONFIG,
                format!("requested MAC {m:?} is not a MAC address"),
            )
        })?),
    };
    let publish = req
        .port_mappings
        .iter()
        .map(|p| {
            let protocol = match p.protocol.to_ascii_lowercase().as_str() {
                "tcp" | "" => weft_api::Protocol::Tcp,
                "udp" => weft_api::Protocol::Udp,
                "sctp" => weft_api::Protocol::Sctp,
                other => {
                    return Err(failure(
                        codes::INVALID_CONFIG,
                        format!("port mapping protocol {other:?} is not tcp, udp or sctp"),
                    ));
                }
            };
            let host_ip = match p.host_ip.as_deref().map(str::trim) {
                None | Some("") | Some("0.0.0.0") | Some("::") => None,
                Some(ip) => Some(ip.parse().map_err(|_| {
                    failure(
                        codes::INVALID_CONFIG,
                        format!("hostIP {ip:?} is not an IP address"),
                    )
                })?),
            };
            if p.host_port == 0 || p.container_port == 0 {
                return Err(failure(
                    codes::INVALID_CONFIG,
                    "port mappings need hostPort and containerPort above 0",
                ));
            }
            Ok(PortSpec {
                host_port: p.host_port,
                host_port_end: p.host_port,
                container_port: p.container_port,
                protocol,
                host_ip,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EndpointRequest {
        id: EndpointId {
            namespace: object_name(&namespace),
            name: object_name(&name),
        },
        network,
        sandbox: req.netns.clone(),
        if_name: req.if_name.clone(),
        address,
        mac,
        publish,
        cni: Some(AttachmentId {
            container_id: req.container_id.clone(),
            if_name: req.if_name.clone(),
        }),
    })
}

pub(super) fn cni_result(att: &Attachment) -> proto::Attachment {
    let mut out = proto::Attachment::default();
    if att.address.is_none() && att.mac.is_none() {
        return out;
    }
    out.interfaces.push(proto::Interface {
        name: att.if_name.clone(),
        mac: att.mac.map(|m| format_mac(&m)),
        sandbox: Some(att.sandbox.clone()),
    });
    if let Some(addr) = att.address {
        out.ips.push(proto::IpConfig {
            address: addr.to_string(),
            gateway: att.gateway.map(|g| g.to_string()),
            interface: Some(0),
        });
        if let Some(gw) = att.gateway {
            out.routes.push(proto::RouteConfig {
                dst: if addr.addr().is_ipv4() {
                    "0.0.0.0/0"
                } else {
                    "::/0"
                }
                .into(),
                gw: Some(gw.to_string()),
            });
        }
    }
    out
}

pub(super) fn cni_id_of(cep: &ContainerEndpoint) -> Option<AttachmentId> {
    let a = cep.metadata.annotations.as_ref()?;
    Some(AttachmentId {
        container_id: a.get(ANNOTATION_CONTAINER_ID)?.clone(),
        if_name: a.get(ANNOTATION_IFNAME)?.clone(),
    })
}

/// Another node's endpoint, from its status (its network's driver decides whether this
/// node needs entries for it).
pub(super) fn remote_endpoint(
    cep: &ContainerEndpoint,
    networks: &Networks,
) -> Option<RemoteEndpoint> {
    let net = networks.get(&cep.spec.network)?;
    let status = cep.status.as_ref()?;
    let address: IpNet = status.address.as_deref()?.parse().ok()?;
    let mac = parse_mac(status.mac.as_deref()?)?;
    Some(RemoteEndpoint {
        network: net.name.clone(),
        node: cep.spec.node.clone(),
        address: address.addr(),
        mac,
    })
}

/// The status an endpoint should have. Conditions keep their transition time while their
/// status does not change, so an unchanged endpoint compares equal and is not rewritten.
pub(super) fn status_of(
    host_interface: Option<String>,
    att: Option<&Attachment>,
    problem: Option<&Problem>,
    generation: Option<i64>,
    current: Option<&ContainerEndpointStatus>,
) -> ContainerEndpointStatus {
    let (ready, reason, message) = match (att, problem) {
        (_, Some(p)) => ("False", p.reason.to_string(), p.message.clone()),
        (Some(a), None) => (
            "True",
            "Attached".to_string(),
            match a.address {
                Some(addr) => format!("attached to network {} as {addr}", a.network),
                None => format!("attached to network {}", a.network),
            },
        ),
        (None, None) => (
            "False",
            "Pending".to_string(),
            "waiting for the agent".to_string(),
        ),
    };
    let previous = current.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let transition = previous
        .filter(|c| c.status == ready)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    let attached = att
        .filter(|_| ready == "True" || problem.is_some_and(|p| p.reason == reason::PORT_CONFLICT));
    ContainerEndpointStatus {
        observed_generation: generation.or(current.and_then(|s| s.observed_generation)),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason,
            message,
            observed_generation: generation,
            last_transition_time: transition,
        }],
        address: attached.and_then(|a| a.address).map(|a| a.to_string()),
        mac: attached.and_then(|a| a.mac).map(|m| format_mac(&m)),
        gateway: attached.and_then(|a| a.gateway).map(|g| g.to_string()),
        host_interface: attached.and(host_interface),
    }
}
