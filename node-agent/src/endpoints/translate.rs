//! Pure translations between the endpoints' state and the outside: a ContainerEndpoint's
//! spec or a CNI ADD → a request; an attachment → a CNI result or a ContainerEndpoint
//! status; a problem → a CNI failure. No I/O, unit-tested below.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use weft_api::{ContainerEndpoint, ContainerEndpointStatus, EndpointAddress};
use weft_cni::proto::{self, AttachmentId, Failure, codes};

use super::plan::{DefaultRoutes, default_destination};
use super::{
    ANNOTATION_CONTAINER_ID, ANNOTATION_CONTAINER_NAME, ANNOTATION_IFNAME, Attachment, DnsNames,
    EndpointId, EndpointRequest, LABEL_NETWORK, LABEL_NODE, PortSpec,
};
use crate::drivers::{EndpointShape, Networks, Problem, Reason, RemoteEndpoint};
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
        names: DnsNames {
            aliases: cep.spec.aliases.clone(),
            container_name: cep.annotations().get(ANNOTATION_CONTAINER_NAME).cloned(),
        },
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
        | Reason::EncryptionUnavailable
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
        names: DnsNames {
            aliases: req.aliases.clone(),
            container_name: req.pod_name.clone().filter(|n| !n.is_empty()),
        },
    })
}

/// The CNI result of an attachment: its interface, every address (one per family) and a
/// default route in each family of `default_routes`, where it gives the sandbox its
/// default route (see [`super::plan::holds_default_route`]).
pub(super) fn cni_result(att: &Attachment, default_routes: DefaultRoutes) -> proto::Attachment {
    let mut out = proto::Attachment::default();
    if att.address.is_none() && att.mac.is_none() {
        return out;
    }
    out.interfaces.push(proto::Interface {
        name: att.if_name.clone(),
        mac: att.mac.map(|m| m.to_string()),
        sandbox: Some(att.sandbox.clone()),
    });
    for (addr, gateway) in att.addresses() {
        out.ips.push(proto::IpConfig {
            address: addr.to_string(),
            gateway: gateway.map(|g| g.to_string()),
            interface: Some(0),
        });
        if let Some(gw) = gateway.filter(|_| default_routes.covers(addr.addr())) {
            out.routes.push(proto::RouteConfig {
                dst: default_destination(addr.addr().is_ipv4()).to_string(),
                gw: Some(gw.to_string()),
            });
        }
    }
    out
}

/// Where a sandbox on a Weft network asks for names when the node runs weft-dns.
pub const SANDBOX_NAMESERVER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));

/// The node's name server as the endpoint's sandbox reaches it: the gateway for routed
/// endpoints (bridge, overlay), 127.0.0.11 inside the sandbox for macvlan/ipvlan ones (their
/// parent does not talk to its children, so the node's addresses are out of reach); none
/// without an interface of its own (none; host, whose sandbox is the node's namespace and
/// keeps the node's resolv.conf, as Docker's `--network host` does).
pub fn nameserver(att: &Attachment, shape: EndpointShape) -> Option<IpAddr> {
    match shape {
        EndpointShape::Routed => att.gateway,
        EndpointShape::Child { .. } => att.address.map(|_| SANDBOX_NAMESERVER),
        EndpointShape::LoopbackOnly | EndpointShape::SharesNode => None,
    }
}

/// The CNI result's `dns`: the name server and `<network>.<zone>` as search domain, so a
/// bare name is first tried as the network's own (answered by weft-dns either way). No
/// `options`: runtimes (Podman, containerd) carry only nameservers and search domains into
/// resolv.conf, and the resolver's defaults (ndots:1) already send dotted names out as they are.
pub(super) fn cni_dns(att: &Attachment, nameserver: IpAddr) -> proto::Dns {
    proto::Dns {
        nameservers: vec![nameserver.to_string()],
        search: vec![format!("{}.{}", att.network, weft_dns::model::DEFAULT_ZONE)],
        ..proto::Dns::default()
    }
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

/// Another node's endpoint, from its status, once per address (its network's driver
/// decides whether this node needs entries for it).
pub(super) fn remote_endpoints(
    cep: &ContainerEndpoint,
    networks: &Networks,
) -> Vec<RemoteEndpoint> {
    let (Some(net), Some(status)) = (networks.get(&cep.spec.network), cep.status.as_ref()) else {
        return Vec::new();
    };
    let Some(mac) = status.mac.as_deref().and_then(|m| m.parse::<Mac>().ok()) else {
        return Vec::new();
    };
    let mut addresses: Vec<IpAddr> = status
        .address
        .iter()
        .chain(status.addresses.iter().map(|a| &a.address))
        .filter_map(|a| a.parse::<IpNet>().ok())
        .map(|a| a.addr())
        .collect();
    addresses.dedup();
    addresses.sort();
    addresses.dedup();
    addresses
        .into_iter()
        .map(|address| RemoteEndpoint {
            network: net.name.clone(),
            node: cep.spec.node.clone(),
            address,
            mac,
        })
        .collect()
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
        addresses: attached
            .into_iter()
            .flat_map(Attachment::addresses)
            .map(|(address, gateway)| EndpointAddress {
                address: address.to_string(),
                gateway: gateway.map(|g| g.to_string()),
            })
            .collect(),
        ports: attached
            .into_iter()
            .flat_map(|a| a.publish.iter().map(PortSpec::to_api))
            .collect(),
        // Set by the caller, which knows the network's shape and whether weft-dns runs.
        nameserver: None,
    }
}

/// The labels every endpoint carries, whoever wrote it (`kubectl get cep -l
/// weft.dev/network=web`): its network and node, where they are valid label values.
pub(super) fn missing_labels(
    cep: &ContainerEndpoint,
) -> std::collections::BTreeMap<&'static str, String> {
    let valid = |v: &str| {
        v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    let have = cep.metadata.labels.as_ref();
    [
        (LABEL_NETWORK, cep.spec.network.as_str()),
        (LABEL_NODE, cep.spec.node.as_str()),
    ]
    .into_iter()
    .filter(|(k, v)| valid(v) && have.and_then(|l| l.get(*k)).map(String::as_str) != Some(*v))
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::NetworkInput;
    use crate::endpoints::MirrorAddress;
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
            mirror: None,
            names: DnsNames::default(),
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

    const ALL: DefaultRoutes = DefaultRoutes { v4: true, v6: true };

    #[test]
    fn a_cni_result_lists_interface_address_and_default_route() {
        let r = cni_result(&attachment(Some("10.0.0.2/24"), Some("10.0.0.1")), ALL);
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.interfaces[0].mac.as_deref(), Some("02:42:0a:00:00:02"));
        assert_eq!(r.ips[0].address, "10.0.0.2/24");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.0.0.1"));
        assert_eq!(r.ips[0].interface, Some(0));
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
        assert_eq!(r.routes[0].gw.as_deref(), Some("10.0.0.1"));
        let v6 = cni_result(&attachment(Some("fd00::2/64"), Some("fd00::1")), ALL);
        assert_eq!(v6.routes[0].dst, "::/0");
        let no_gateway = cni_result(&attachment(Some("10.0.0.2/24"), None), ALL);
        assert!(no_gateway.routes.is_empty());
        // Not the sandbox's default-route holder (internal, or a lower gwPriority): no route.
        let not_holder = cni_result(
            &attachment(Some("10.0.0.2/24"), Some("10.0.0.1")),
            DefaultRoutes::default(),
        );
        assert!(not_holder.routes.is_empty());
        assert_eq!(not_holder.ips[0].gateway.as_deref(), Some("10.0.0.1"));
        // host and none: nothing to report.
        assert_eq!(
            cni_result(&attachment(None, None), ALL),
            proto::Attachment::default()
        );
    }

    /// A dual-stack endpoint: both addresses with their gateways, a default route in each
    /// family it holds one in.
    #[test]
    fn a_dual_stack_cni_result_lists_both_families() {
        let mut att = attachment(Some("10.0.0.2/24"), Some("10.0.0.1"));
        att.mirror = Some(MirrorAddress {
            address: "fd00::2/64".parse().expect("addr"),
            gateway: Some("fd00::1".parse().expect("gw")),
        });
        let r = cni_result(&att, ALL);
        let ips: Vec<(&str, Option<&str>)> = r
            .ips
            .iter()
            .map(|i| (i.address.as_str(), i.gateway.as_deref()))
            .collect();
        assert_eq!(
            ips,
            vec![
                ("10.0.0.2/24", Some("10.0.0.1")),
                ("fd00::2/64", Some("fd00::1"))
            ]
        );
        let routes: Vec<(&str, Option<&str>)> = r
            .routes
            .iter()
            .map(|r| (r.dst.as_str(), r.gw.as_deref()))
            .collect();
        assert_eq!(
            routes,
            vec![("0.0.0.0/0", Some("10.0.0.1")), ("::/0", Some("fd00::1"))]
        );
        // The v6 default route is another attachment's: only the v4 one is listed.
        let v4_only = cni_result(
            &att,
            DefaultRoutes {
                v4: true,
                v6: false,
            },
        );
        assert_eq!(v4_only.ips.len(), 2);
        assert_eq!(v4_only.routes.len(), 1);
        assert_eq!(v4_only.routes[0].dst, "0.0.0.0/0");
        // The status lists both too; `address` stays the first.
        let s = status_of(None, Some(&att), None, Some(1), None);
        assert_eq!(s.address.as_deref(), Some("10.0.0.2/24"));
        let listed: Vec<(&str, Option<&str>)> = s
            .addresses
            .iter()
            .map(|a| (a.address.as_str(), a.gateway.as_deref()))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("10.0.0.2/24", Some("10.0.0.1")),
                ("fd00::2/64", Some("fd00::1"))
            ]
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
        let seven = RemoteEndpoint {
            network: "lan".into(),
            node: "n2".into(),
            address: "10.0.0.7".parse().expect("ip"),
            mac: Mac([0x02, 0x42, 0x0a, 0, 0, 7]),
        };
        assert_eq!(remote_endpoints(&other, &networks), vec![seven.clone()]);
        assert_eq!(remote_endpoints(&other, &Networks::default()), vec![]);
        // A dual-stack endpoint: one entry per address, the same MAC.
        if let Some(s) = other.status.as_mut() {
            s.addresses = vec![
                EndpointAddress {
                    address: "10.0.0.7/24".into(),
                    gateway: None,
                },
                EndpointAddress {
                    address: "fd00::7/64".into(),
                    gateway: None,
                },
            ];
        }
        let six = RemoteEndpoint {
            address: "fd00::7".parse().expect("ip"),
            ..seven.clone()
        };
        assert_eq!(remote_endpoints(&other, &networks), vec![seven, six]);
        other.status = None;
        assert_eq!(remote_endpoints(&other, &networks), vec![]);
    }

    #[test]
    fn every_endpoint_is_labelled_with_its_network_and_node() {
        let mut c = cep(json!({
            "network": "web", "node": "n1", "sandbox": "/var/run/netns/a", "interfaceName": "eth0",
        }));
        let missing = missing_labels(&c);
        assert_eq!(missing.get(LABEL_NETWORK).map(String::as_str), Some("web"));
        assert_eq!(missing.get(LABEL_NODE).map(String::as_str), Some("n1"));
        c.metadata.labels = Some(
            [
                (LABEL_NETWORK.to_string(), "web".to_string()),
                (LABEL_NODE.to_string(), "n1".to_string()),
            ]
            .into(),
        );
        assert!(missing_labels(&c).is_empty());
        // A name that is no label value (too long) is left out, not sent to be refused.
        c.spec.network = "n".repeat(64);
        assert!(missing_labels(&c).is_empty());
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
