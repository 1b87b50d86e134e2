//! `ContainerService` (short name `csvc`): a name, a virtual IP and published ports in front
//! of the ContainerEndpoints its selector picks on one network — Docker swarm's service
//! (`docker service create --network … --publish …`) for Weft networks.
//!
//! The controller gives a `vip` service an address from the network's service range (see
//! `weft_ipam::service_range`) and reports what it found in the status; every node's agent programs
//! the VIP and published ports into nftables.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Protocol;

/// Label every endpoint the agent creates carries: the network it attaches to.
pub const LABEL_NETWORK: &str = "weft.dev/network";

/// A load-balanced service on one ContainerNetwork.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "ContainerService",
    plural = "containerservices",
    shortname = "csvc",
    namespaced,
    status = "ContainerServiceStatus",
    category = "weft",
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.network"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.endpointMode"}"#,
    printcolumn = r#"{"name":"VIP","type":"string","jsonPath":".status.vip"}"#,
    printcolumn = r#"{"name":"Endpoints","type":"integer","jsonPath":".status.readyEndpoints"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.network == oldSelf.network", "fieldPath": ".network",
     "message": "network is immutable: create another service for another network"},
    {"rule": "self.ports.all(p, self.ports.exists_one(q, q.port == p.port && q.protocol == p.protocol))",
     "fieldPath": ".ports", "message": "ports must be unique per protocol: two entries have the same port and protocol"},
    {"rule": "self.ports.all(p, !has(p.name) || self.ports.exists_one(q, has(q.name) && q.name == p.name))",
     "fieldPath": ".ports", "message": "port names must be unique"},
    {"rule": "self.ports.all(p, !has(p.publish) || self.ports.exists_one(q, has(q.publish) && q.publish.publishedPort == p.publish.publishedPort && q.protocol == p.protocol))",
     "fieldPath": ".ports", "message": "published ports must be unique per protocol"},
    {"rule": "self.endpointMode != 'dnsrr' || !has(self.vip)", "fieldPath": ".vip",
     "message": "a dnsrr service has no virtual IP: remove spec.vip or use endpointMode vip"},
    {"rule": "self.endpointMode != 'dnsrr' || !has(self.sessionAffinity)", "fieldPath": ".sessionAffinity",
     "message": "sessionAffinity needs a virtual IP (endpointMode vip)"},
    {"rule": "self.endpointMode != 'dnsrr' || self.ports.all(p, !has(p.publish) || p.publish.mode == 'host')",
     "fieldPath": ".ports", "message": "a dnsrr service cannot publish in ingress mode (Docker: use --publish mode=host)"},
    {"rule": "!has(self.vip) || isIP(self.vip)", "fieldPath": ".vip",
     "message": "vip must be an IP address such as 10.0.0.250"},
    {"rule": "has(self.vip) == has(oldSelf.vip) && (!has(self.vip) || self.vip == oldSelf.vip)",
     "fieldPath": ".vip", "message": "vip is immutable"},
    {"rule": "self.endpointMode == oldSelf.endpointMode", "fieldPath": ".endpointMode",
     "message": "endpointMode is immutable"}
]))]
pub struct ContainerServiceSpec {
    /// The ContainerNetwork the service lives on. Immutable.
    #[schemars(length(min = 1, max = 253))]
    pub network: String,
    /// Which ContainerEndpoints of the network (in the service's namespace) serve it, by
    /// their labels. Endpoints the agent creates carry `weft.dev/network`; add your own
    /// labels (such as `app: web`) to pick a subset.
    pub selector: LabelSelector,
    /// Ports the service answers on.
    #[schemars(length(min = 1, max = 64))]
    pub ports: Vec<ServicePort>,
    /// `vip`: one virtual IP balanced over the ready endpoints (Docker's default); `dnsrr`:
    /// the service name resolves to the ready endpoints' addresses, no VIP. Immutable.
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// The virtual IP, inside the network's service range (or an excluded range). Default:
    /// the next free address of the service range. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub vip: Option<String>,
    /// Send a client (by source address) to the same endpoint while it keeps talking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Ingress-published ports: `Cluster` (default) balances over every ready endpoint of the
    /// cluster; a connection that crosses to another node is masqueraded to that node's
    /// address so the reply returns. `Local` balances over this node's endpoints only and keeps
    /// the client's address; a node without one drops the connection.
    #[serde(default)]
    pub ingress_traffic_policy: TrafficPolicy,
}

/// One port of a service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Name (for DNS SRV records and status), unique within the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: Option<String>,
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: ServiceProtocol,
    /// Port on the VIP.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Port in the endpoints. Default: `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
    /// Publish the port on the nodes (`docker service create --publish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<ServicePublish>,
}

impl ServicePort {
    pub fn target(&self) -> i32 {
        self.target_port.unwrap_or(self.port)
    }
}

/// TCP or UDP (a service port balances connections; SCTP is not offered).
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    #[default]
    Tcp,
    Udp,
}

impl From<ServiceProtocol> for Protocol {
    fn from(p: ServiceProtocol) -> Protocol {
        match p {
            ServiceProtocol::Tcp => Protocol::Tcp,
            ServiceProtocol::Udp => Protocol::Udp,
        }
    }
}

/// A port published on the nodes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePublish {
    /// `ingress`: every node answers (the routing mesh); `host`: only nodes with a ready
    /// endpoint answer, each to its own endpoints.
    #[serde(default)]
    pub mode: PublishMode,
    /// Port on the nodes.
    #[schemars(range(min = 1, max = 65535))]
    pub published_port: i32,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// Session affinity by client address.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// Only `ClientIP` exists.
    #[serde(default)]
    pub kind: AffinityKind,
    /// How long a client sticks to its endpoint after its last new connection. Default 10800
    /// (3 hours, as Kubernetes).
    #[serde(default = "default_affinity_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i32,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AffinityKind {
    #[default]
    ClientIP,
}

fn default_affinity_timeout() -> i32 {
    10800
}

/// What the controller made of the service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, with reasons such as NoEndpoints, PortConflict, VIPOutsideSubnet,
    /// IngressOnInternalNetwork.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The virtual IP (vip services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// Endpoints the selector picks whose Ready condition is True.
    #[serde(default)]
    pub ready_endpoints: i32,
}

/// Reasons of a service's `Ready` condition (API strings: never change them).
pub mod reasons {
    /// Every check passed and at least one endpoint is ready.
    pub const READY: &str = "EndpointsReady";
    /// The selector picks no ready endpoint (yet).
    pub const NO_ENDPOINTS: &str = "NoEndpoints";
    /// The network does not exist or is not allocated yet.
    pub const NETWORK_NOT_READY: &str = "NetworkNotReady";
    /// A published port is also published by an endpoint of the network, or another service.
    pub const PORT_CONFLICT: &str = "PortConflict";
    /// spec.vip is not inside the network's subnets.
    pub const VIP_OUTSIDE_SUBNET: &str = "VIPOutsideSubnet";
    /// spec.vip is inside the subnet but the endpoint IPAM may hand it out (neither in the
    /// service range nor in an excluded range), or an endpoint or service holds it.
    pub const VIP_IN_USE: &str = "VIPInUse";
    /// The service range is full.
    pub const NO_FREE_VIP: &str = "NoFreeVIP";
    /// An `internal` network cannot be reached from outside: no ingress publishing.
    pub const INGRESS_ON_INTERNAL_NETWORK: &str = "IngressOnInternalNetwork";
}
