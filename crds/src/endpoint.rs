//! `ContainerEndpoint` (short name `cep`): one attachment of a sandbox (a network namespace)
//! to a network, with the ports it publishes on its node. Written by the CNI plugin (through
//! the agent) or by a user; its status is written by the node's agent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One sandbox attached to one network.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "ContainerEndpoint",
    plural = "containerendpoints",
    shortname = "cep",
    namespaced,
    status = "ContainerEndpointStatus",
    category = "weft",
    // Agents watch only what concerns them: their node's endpoints and those of the
    // cluster-scope networks they program (`--field-selector spec.network=NAME`).
    selectable = ".spec.node",
    selectable = ".spec.network",
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.network"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".status.address"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"MAC","type":"string","jsonPath":".status.mac","priority":1}"#,
    printcolumn = r#"{"name":"Address6","type":"string","jsonPath":".status.addresses[1].address","priority":1}"#,
    printcolumn = r#"{"name":"Interface","type":"string","jsonPath":".spec.interfaceName","priority":1}"#,
    printcolumn = r#"{"name":"Sandbox","type":"string","jsonPath":".spec.sandbox","priority":1}"#,
    printcolumn = r#"{"name":"Ports","type":"string","jsonPath":".status.ports[*].hostPort","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.network == oldSelf.network", "fieldPath": ".network",
     "message": "network is immutable: an endpoint is one attachment; create another to attach elsewhere"},
    {"rule": "self.node == oldSelf.node", "fieldPath": ".node",
     "message": "node is immutable: an endpoint lives where its sandbox is"},
    {"rule": "self.sandbox == oldSelf.sandbox", "fieldPath": ".sandbox",
     "message": "sandbox is immutable"},
    {"rule": "self.interfaceName == oldSelf.interfaceName", "fieldPath": ".interfaceName",
     "message": "interfaceName is immutable"},
    {"rule": "has(self.address) == has(oldSelf.address) && (!has(self.address) || self.address == oldSelf.address)",
     "fieldPath": ".address", "message": "address is immutable: create a new endpoint for another address"},
    {"rule": "!has(self.address) || isIP(self.address)", "fieldPath": ".address",
     "message": "address must be an IP address such as 10.0.0.254"}
]))]
pub struct ContainerEndpointSpec {
    /// The ContainerNetwork to attach to.
    #[schemars(length(min = 1, max = 253))]
    pub network: String,
    /// The node (NetworkNode name) whose agent performs the attachment.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// The sandbox: a network namespace path on that node, such as /var/run/netns/web-1.
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/"))]
    pub sandbox: String,
    /// Name of the interface inside the sandbox.
    #[serde(default = "default_interface")]
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub interface_name: String,
    /// Requested address (`docker run --ip`). Default: the next free address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub address: Option<String>,
    /// Requested MAC (unicast). Default: derived from the address, as Docker does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F][02468aAcCeE](:[0-9a-fA-F]{2}){5}$"))]
    pub mac: Option<String>,
    /// Ports published on the node (`docker run -p`), by nftables DNAT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub publish: Vec<PublishedPort>,
    /// Which of the sandbox's networks gives it its default route (Docker's `gw-priority`):
    /// the attachment with the highest value, per address family; ties go to the one
    /// attached first on the node, then to the lower namespace/name. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw_priority: Option<i32>,
    /// More names this endpoint answers to on its network's DNS, beside its own name
    /// (`docker network connect --alias`): per network, as each endpoint is one network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(a, a.matches('^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?([.][A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$'))",
         "message": "each alias must be a DNS name: dot-separated labels of 1-63 letters, digits, '-' or '_', not starting or ending with '-'"}
    ]))]
    pub aliases: Vec<String>,
}

/// One published port or port range: `hostIP:hostPort[-hostPortEnd] → containerPort`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.hostPortEnd) || (has(self.hostPort) && self.hostPortEnd >= self.hostPort)", "fieldPath": ".hostPortEnd",
     "message": "hostPortEnd must not be below hostPort (and needs hostPort)"},
    {"rule": "!has(self.hostPortEnd) || !has(self.hostPort) || self.containerPort + (self.hostPortEnd - self.hostPort) <= 65535",
     "fieldPath": ".containerPort", "message": "the container port range would end above 65535"},
    {"rule": "!has(self.hostIP) || isIP(self.hostIP)", "fieldPath": ".hostIP",
     "message": "hostIP must be an IP address of the node, such as 192.0.2.10"}
]))]
pub struct PublishedPort {
    /// Port on the node. Default: a free port of the agent's `--host-port-range` (Docker's
    /// `-p 80`), kept while the endpoint lives and shown in `status.ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<i32>,
    /// Last port of a range (`-p 8000-8010:80-90`); the container range has the same length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host_port_end: Option<i32>,
    /// Port in the sandbox (first of the range).
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    #[serde(default)]
    pub protocol: Protocol,
    /// Bind to this node address only. Default: every address of the node.
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub host_ip: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// What the agent made of the endpoint.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEndpointStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, plus reasons such as AddressInUse, OutsideSubnet, PortConflict, SandboxMissing, SandboxNotAllowed,
    /// NetworkNotReady.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The endpoint's address with its prefix, such as 10.0.0.2/24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The host side of the attachment (veth) on the node, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_interface: Option<String>,
    /// Where the sandbox resolves names (the node's weft-dns): the gateway on bridge and
    /// overlay networks, 127.0.0.11 inside the sandbox on macvlan and ipvlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
    /// Every address of the endpoint, one per address family of its network (a dual-stack
    /// network gives two), each with its family's gateway; the first is `address`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub addresses: Vec<EndpointAddress>,
    /// The published ports as the node serves them: a port that named no `hostPort` with
    /// the one chosen for it (`docker port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ports: Vec<PublishedPort>,
}

/// One address of an endpoint (Docker's IPAddress / GlobalIPv6Address with their gateways).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddress {
    /// With its prefix, such as fd00:1::2/64.
    pub address: String,
    /// The gateway of this address's family, if the network has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

fn default_interface() -> String {
    "eth0".into()
}
