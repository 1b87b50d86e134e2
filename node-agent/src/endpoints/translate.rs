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

use super::{
    ANNOTATION_CONTAINER_ID, ANNOTATION_IFNAME, Attachment, EndpointId, EndpointRequest, PortSpec,
};
use crate::drivers::{Networks, Problem, Reason, RemoteEndpoint};
use crate::kernel::{KernelError, sandbox_missing};
use crate::model::Mac;

/// Turn a ContainerEndpoint's spec into a request; a malformed one becomes a problem.
pub(super) fn request_of(cep: &ContainerEndpoint) -> Result<EndpointRequest, Problem> {
    let invalid = |m: String| Problem::new(Reason::InvalidSpec, m);
    let address = match cep.spec.address.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(a) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| invalid(format!("spec.address {a:?} is not an IP address")))?,
        ),
    };
    let mac = match cep.spec.mac.as_deref() {
        None => None,
        Some(m) => Some(
            m.parse::<Mac>()
                .map_err(|_| invalid(format!("spec.mac {m:?} is not a MAC")))?,
        ),
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
        gw_priority: cep.spec.gw_priority.unwrap_or(0),
        replace_default_route: false,
    })
}

pub(super) fn kernel_problem(e: &KernelError, sandbox: &Path) -> Problem {
    if sandbox_missing(e) {
        Problem::new(
            Reason::SandboxMissing,
            format!("sandbox {} does not exist on this node", sandbox.display()),
        )
    } else {
        Problem::new(Reason::KernelError, e.to_string())
    }
}

pub(super) fn failure(code: u32, msg: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
        details: String::new(),
    }
}

/// The CNI error code of a reason an endpoint can be refused with. Exhaustive: a new
/// reason is given its code here or the build fails.
pub(super) fn cni_code(reason: Reason) -> u32 {
    match reason {
        Reason::NoFreeAddress => codes::NO_FREE_ADDRESS,
        Reason::AddressInUse | Reason::OutsideSubnet => codes::ADDRESS_REFUSED,
        Reason::PortConflict => codes::PORT_CONFLICT,
        Reason::NetworkNotReady => codes::TRY_AGAIN_LATER,
        Reason::InvalidSpec => codes::INVALID_CONFIG,
        Reason::SandboxMissing | Reason::SandboxNotAllowed => codes::INVALID_ENVIRONMENT,
        Reason::KernelError
        | Reason::InterfaceMissing
        | Reason::AddressMissing
        | Reason::RouteMissing
        | Reason::HostSideDetached => codes::KERNEL,
        Reason::InterfaceNameInUse => codes::INTERFACE_NAME_IN_USE,
        // Not endpoint reasons: should one reach a CNI answer, it is the agent's fault.
        Reason::NotAllocated
        | Reason::NoBlock
        | Reason::ParentMissing
        | Reason::Unsupported
        | Reason::InvalidStatus
        | Reason::Conflict
        | Reason::NameInUse
        | Reason::NoAddress
        | Reason::SubnetOverlap
        | Reason::PoolExhausted
        | Reason::PoolNotFound
        | Reason::NoDefaultPool
        | Reason::BadPrefixLength
        | Reason::VniInUse
        | Reason::VniExhausted
        | Reason::BlocksExhausted
        | Reason::BlockError
        | Reason::Internal => codes::KERNEL,
    }
}

/// A refusal as the CNI plugin reports it: the reason's code, the message, the reason.
pub(super) fn problem_failure(p: &Problem) -> Failure {
    let code = cni_code(p.reason);
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
        Some(m) => Some(m.parse::<Mac>().map_err(|_| {
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
        gw_priority: req.gw_priority.unwrap_or(0),
        replace_default_route: req.replace_default_route,
    })
}

/// The CNI result of an attachment; `default_route`: it gives the sandbox its default route
/// (see [`super::plan::holds_default_route`]), so the result lists it.
pub(super) fn cni_result(att: &Attachment, default_route: bool) -> proto::Attachment {
    let mut out = proto::Attachment::default();
    if att.address.is_none() && att.mac.is_none() {
        return out;
    }
    out.interfaces.push(proto::Interface {
        name: att.if_name.clone(),
        mac: att.mac.map(|m| m.to_string()),
        sandbox: Some(att.sandbox.clone()),
    });
    if let Some(addr) = att.address {
        out.ips.push(proto::IpConfig {
            address: addr.to_string(),
            gateway: att.gateway.map(|g| g.to_string()),
            interface: Some(0),
        });
        if let Some(gw) = att.gateway.filter(|_| default_route) {
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

/// Is `cep` the object of an earlier sandbox under the same name as the CNI attachment
/// `att` — another container, or the same container id in a new sandbox (`podman restart`:
/// DEL, then ADD with a new namespace before the old object left the API)? The attachment
/// wins; the object is replaced.
pub(super) fn of_an_earlier_sandbox(cep: &ContainerEndpoint, att: &Attachment) -> bool {
    match (&att.cni, cni_id_of(cep)) {
        (Some(cni), Some(seen)) => *cni != seen || cep.spec.sandbox != att.sandbox,
        _ => false,
    }
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
    let mac: Mac = status.mac.as_deref()?.parse().ok()?;
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
        .filter(|_| ready == "True" || problem.is_some_and(|p| p.reason == Reason::PortConflict));
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
        mac: attached.and_then(|a| a.mac).map(|m| m.to_string()),
        gateway: attached.and_then(|a| a.gateway).map(|g| g.to_string()),
        host_interface: attached.and(host_interface),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::NetworkInput;
    use serde_json::json;

    fn id(name: &str) -> EndpointId {
        EndpointId {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn cni_add(extra: serde_json::Value) -> proto::Request {
        let mut req = json!({
            "protocol": proto::PROTOCOL,
            "command": "ADD",
            "configName": "lan",
            "containerId": "0123456789abcdef0123",
            "netns": "/var/run/netns/pod",
            "ifName": "eth0",
        });
        if let (Some(r), Some(e)) = (req.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        serde_json::from_value(req).expect("test request")
    }

    fn cep(spec: serde_json::Value) -> ContainerEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "ContainerEndpoint",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": spec,
        }))
        .expect("test object")
    }

    fn attachment(address: Option<&str>, gateway: Option<&str>) -> Attachment {
        Attachment {
            id: id("web"),
            network: "lan".into(),
            network_uid: "uid".into(),
            sandbox: "/var/run/netns/pod".into(),
            if_name: "eth0".into(),
            address: address.map(|a| a.parse().expect("test address")),
            gateway: gateway.map(|g| g.parse().expect("test gateway")),
            mac: address.map(|_| Mac([0x02, 0x42, 10, 0, 0, 2])),
            publish: Vec::new(),
            cni: None,
            since: 0,
            requested_address: None,
            requested_mac: None,
            in_api: true,
            gw_priority: 0,
            replace_default_route: false,
        }
    }

    #[test]
    fn a_cni_add_names_its_endpoint_after_the_pod_and_the_interface() {
        let r = cni_request(&cni_add(json!({
            "podNamespace": "Shop", "podName": "web_1", "network": "blue",
        })))
        .expect("valid");
        assert_eq!(r.id.namespace, "shop");
        assert_eq!(r.id.name, "web-1");
        assert_eq!(r.network, "blue", "network wins over the config name");
        assert_eq!(r.sandbox, "/var/run/netns/pod");
        assert_eq!(
            r.cni,
            Some(AttachmentId {
                container_id: "0123456789abcdef0123".into(),
                if_name: "eth0".into()
            })
        );
        let second = cni_request(&cni_add(json!({
            "podNamespace": "shop", "podName": "web", "ifName": "net1",
        })))
        .expect("valid");
        assert_eq!(second.id.name, "web-net1");
        assert_eq!(second.network, "lan");
        let bare = cni_request(&cni_add(json!({}))).expect("valid");
        assert_eq!(bare.id, id("cni-0123456789abcdef"));
    }

    #[test]
    fn a_cni_add_carries_its_address_mac_and_ports() {
        let r = cni_request(&cni_add(json!({
            "address": "10.0.0.9/24",
            "mac": "02:42:0a:00:00:09",
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "UDP", "hostIP": "0.0.0.0"},
                {"hostPort": 8443, "containerPort": 443, "hostIP": "192.0.2.1"},
            ],
        })))
        .expect("valid");
        assert_eq!(r.address, Some("10.0.0.9".parse().expect("ip")));
        assert_eq!(r.mac, Some(Mac([0x02, 0x42, 0x0a, 0, 0, 9])));
        assert_eq!(r.publish.len(), 2);
        assert_eq!(r.publish[0].protocol, weft_api::Protocol::Udp);
        assert_eq!(r.publish[0].host_ip, None, "0.0.0.0 binds every address");
        assert_eq!(r.publish[1].protocol, weft_api::Protocol::Tcp);
        assert_eq!(r.publish[1].host_ip, Some("192.0.2.1".parse().expect("ip")));
    }

    #[test]
    fn a_bad_cni_add_is_refused_with_the_matching_code() {
        let code = |extra| cni_request(&cni_add(extra)).map(|_| ()).map_err(|f| f.code);
        assert_eq!(code(json!({"netns": ""})), Err(codes::INVALID_ENVIRONMENT));
        assert_eq!(
            code(json!({"configName": "", "network": ""})),
            Err(codes::INVALID_CONFIG)
        );
        assert_eq!(code(json!({"address": "ten"})), Err(codes::INVALID_CONFIG));
        assert_eq!(code(json!({"mac": "02:42"})), Err(codes::INVALID_CONFIG));
        assert_eq!(
            code(
                json!({"portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]})
            ),
            Err(codes::INVALID_CONFIG)
        );
        assert_eq!(
            code(json!({"portMappings": [{"hostPort": 0, "containerPort": 1}]})),
            Err(codes::INVALID_CONFIG)
        );
        assert_eq!(
            code(json!({"portMappings": [{"hostPort": 1, "containerPort": 1, "hostIP": "x"}]})),
            Err(codes::INVALID_CONFIG)
        );
    }

    #[test]
    fn a_container_endpoint_becomes_a_request_or_an_invalid_spec() {
        let r = request_of(&cep(json!({
            "network": "lan", "node": "n1", "sandbox": "/run/netns/a", "interfaceName": "eth0",
            "address": " 10.0.0.5 ", "mac": "02:42:0a:00:00:05",
            "publish": [{"hostPort": 8080, "containerPort": 80}],
        })))
        .expect("valid");
        assert_eq!(
            r.id,
            EndpointId {
                namespace: "shop".into(),
                name: "web".into()
            }
        );
        assert_eq!(r.address, Some("10.0.0.5".parse().expect("ip")));
        assert_eq!(r.mac, Some(Mac([0x02, 0x42, 0x0a, 0, 0, 5])));
        assert_eq!(r.publish[0].host_port, 8080);
        assert_eq!(r.cni, None);
        let bad = request_of(&cep(json!({
            "network": "lan", "node": "n1", "sandbox": "/run/netns/a", "interfaceName": "eth0",
            "mac": "not-a-mac",
        })));
        let p = bad.expect_err("invalid");
        assert_eq!(p.reason, Reason::InvalidSpec);
        assert!(p.message.contains("spec.mac"), "{}", p.message);
    }

    #[test]
    fn a_cni_result_lists_interface_address_and_default_route() {
        let r = cni_result(&attachment(Some("10.0.0.2/24"), Some("10.0.0.1")), true);
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.interfaces[0].mac.as_deref(), Some("02:42:0a:00:00:02"));
        assert_eq!(r.ips[0].address, "10.0.0.2/24");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.0.0.1"));
        assert_eq!(r.ips[0].interface, Some(0));
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
        assert_eq!(r.routes[0].gw.as_deref(), Some("10.0.0.1"));
        let v6 = cni_result(&attachment(Some("fd00::2/64"), Some("fd00::1")), true);
        assert_eq!(v6.routes[0].dst, "::/0");
        let no_gateway = cni_result(&attachment(Some("10.0.0.2/24"), None), true);
        assert!(no_gateway.routes.is_empty());
        // Not the sandbox's default-route holder (internal, or a lower gwPriority): no route.
        let not_holder = cni_result(&attachment(Some("10.0.0.2/24"), Some("10.0.0.1")), false);
        assert!(not_holder.routes.is_empty());
        assert_eq!(not_holder.ips[0].gateway.as_deref(), Some("10.0.0.1"));
        // host and none: nothing to report.
        assert_eq!(
            cni_result(&attachment(None, None), true),
            proto::Attachment::default()
        );
    }

    #[test]
    fn every_endpoint_reason_has_its_cni_code() {
        let code = |r: Reason| problem_failure(&Problem::new(r, "m")).code;
        assert_eq!(code(Reason::NoFreeAddress), codes::NO_FREE_ADDRESS);
        assert_eq!(code(Reason::AddressInUse), codes::ADDRESS_REFUSED);
        assert_eq!(code(Reason::OutsideSubnet), codes::ADDRESS_REFUSED);
        assert_eq!(code(Reason::PortConflict), codes::PORT_CONFLICT);
        assert_eq!(code(Reason::NetworkNotReady), codes::TRY_AGAIN_LATER);
        assert_eq!(code(Reason::InvalidSpec), codes::INVALID_CONFIG);
        assert_eq!(code(Reason::SandboxMissing), codes::INVALID_ENVIRONMENT);
        assert_eq!(code(Reason::KernelError), codes::KERNEL);
        assert_eq!(
            code(Reason::InterfaceNameInUse),
            codes::INTERFACE_NAME_IN_USE
        );
        let f = problem_failure(&Problem::new(Reason::PortConflict, "taken"));
        assert_eq!(
            (f.msg.as_str(), f.details.as_str()),
            ("taken", "PortConflict")
        );
    }

    #[test]
    fn status_says_attached_with_the_address_or_why_not() {
        let att = attachment(Some("10.0.0.2/24"), Some("10.0.0.1"));
        let s = status_of(Some("wfe0123".into()), Some(&att), None, Some(3), None);
        let ready = &s.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "True", "Attached")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.address.as_deref(), Some("10.0.0.2/24"));
        assert_eq!(s.mac.as_deref(), Some("02:42:0a:00:00:02"));
        assert_eq!(s.gateway.as_deref(), Some("10.0.0.1"));
        assert_eq!(s.host_interface.as_deref(), Some("wfe0123"));

        // The same status again keeps its transition time: nothing to write.
        assert_eq!(
            status_of(Some("wfe0123".into()), Some(&att), None, Some(3), Some(&s)),
            s
        );

        // A port conflict keeps the address (the endpoint is attached, its ports are not).
        let conflict = Problem::new(Reason::PortConflict, "taken");
        let c = status_of(None, Some(&att), Some(&conflict), Some(3), Some(&s));
        assert_eq!(c.conditions[0].status, "False");
        assert_eq!(c.conditions[0].reason, "PortConflict");
        assert_eq!(c.address.as_deref(), Some("10.0.0.2/24"));

        // Any other problem: no address.
        let kernel = Problem::new(Reason::KernelError, "refused");
        let k = status_of(None, Some(&att), Some(&kernel), Some(3), None);
        assert_eq!(k.conditions[0].reason, "KernelError");
        assert_eq!(k.address, None);

        let pending = status_of(None, None, None, None, None);
        assert_eq!(pending.conditions[0].reason, "Pending");
    }

    #[test]
    fn remote_endpoints_come_from_statuses_of_known_networks() {
        let mut other = cep(json!({
            "network": "lan", "node": "n2", "sandbox": "/run/netns/b", "interfaceName": "eth0",
        }));
        other.status = Some(ContainerEndpointStatus {
            address: Some("10.0.0.7/24".into()),
            mac: Some("02:42:0a:00:00:07".into()),
            ..ContainerEndpointStatus::default()
        });
        let lan: NetworkInput = crate::drivers::testutil::network("lan", weft_api::Driver::Overlay);
        let networks = Networks::new(vec![lan]);
        assert_eq!(
            remote_endpoint(&other, &networks),
            Some(RemoteEndpoint {
                network: "lan".into(),
                node: "n2".into(),
                address: "10.0.0.7".parse().expect("ip"),
                mac: Mac([0x02, 0x42, 0x0a, 0, 0, 7]),
            })
        );
        assert_eq!(remote_endpoint(&other, &Networks::default()), None);
        other.status = None;
        assert_eq!(remote_endpoint(&other, &networks), None);
    }

    #[test]
    fn an_object_of_an_earlier_sandbox_is_told_apart() {
        let mut c = cep(json!({
            "network": "lan", "node": "n1", "sandbox": "/var/run/netns/pod", "interfaceName": "eth0",
        }));
        let mut att = attachment(Some("10.0.0.2/24"), None);
        assert!(!of_an_earlier_sandbox(&c, &att), "hand-written");
        c.metadata.annotations = Some(
            [
                (ANNOTATION_CONTAINER_ID.to_string(), "abc".to_string()),
                (ANNOTATION_IFNAME.to_string(), "eth0".to_string()),
            ]
            .into(),
        );
        att.cni = Some(AttachmentId {
            container_id: "abc".into(),
            if_name: "eth0".into(),
        });
        assert!(!of_an_earlier_sandbox(&c, &att), "its own object");
        att.sandbox = "/var/run/netns/after-restart".into();
        assert!(
            of_an_earlier_sandbox(&c, &att),
            "same container, new sandbox"
        );
        att.sandbox = "/var/run/netns/pod".into();
        att.cni = Some(AttachmentId {
            container_id: "other".into(),
            if_name: "eth0".into(),
        });
        assert!(of_an_earlier_sandbox(&c, &att), "another container");
    }

    #[test]
    fn cni_attachments_are_known_by_their_annotations() {
        let mut c = cep(json!({
            "network": "lan", "node": "n1", "sandbox": "/run/netns/a", "interfaceName": "eth0",
        }));
        assert_eq!(cni_id_of(&c), None);
        c.metadata.annotations = Some(
            [
                (ANNOTATION_CONTAINER_ID.to_string(), "abc".to_string()),
                (ANNOTATION_IFNAME.to_string(), "eth0".to_string()),
            ]
            .into(),
        );
        assert_eq!(
            cni_id_of(&c),
            Some(AttachmentId {
                container_id: "abc".into(),
                if_name: "eth0".into()
            })
        );
    }
}
