//! `NetworkNode`: a node as its agent sees it. Name = node name. Spec and status are both
//! written by that node's weft-agent; the controller only reads them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Registration of one node. Labels on this object are what `nodeSelector` matches.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "NetworkNode",
    plural = "networknodes",
    status = "NetworkNodeStatus",
    category = "weft",
    printcolumn = r#"{"name":"Underlay","type":"string","jsonPath":".spec.underlayAddress"}"#,
    printcolumn = r#"{"name":"Interface","type":"string","jsonPath":".spec.underlayInterface"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.heartbeatTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "isIP(self.underlayAddress)",
     "fieldPath": ".underlayAddress", "message": "underlayAddress must be an IP address"}
]))]
pub struct NetworkNodeSpec {
    /// Address other nodes reach this one at (the VXLAN tunnel endpoint).
    #[schemars(length(max = 45))]
    pub underlay_address: String,
    /// Interface that carries the underlay address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub underlay_interface: Option<String>,
    /// MTU of the underlay interface (overlay MTU = this − 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 65535))]
    pub underlay_mtu: Option<i32>,
    /// Kernel features found by probing on this node.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// Kernel features the agent found by creating a throwaway object of each kind.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub bridge: bool,
    #[serde(default)]
    pub vxlan: bool,
    #[serde(default)]
    pub macvlan: bool,
    #[serde(default)]
    pub ipvlan: bool,
    #[serde(default)]
    pub vlan: bool,
    #[serde(default)]
    pub nftables: bool,
}

/// What the agent has made of each network on this node.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkNodeStatus {
    /// Last time the agent said it is alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<Time>,
    /// Ready (kstatus).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// One entry per network that has kernel objects on this node. An entry disappears only
    /// once every kernel object of that network is gone (the controller's finalizer waits on it).
    // An atomic list: the node's agent is its only writer, and the API server's per-item
    // bookkeeping of a list-map made every status write cost ~0.15 ms per network on a
    // small machine (three times the atomic list's), paid on every network change.
    #[serde(default)]
    #[schemars(length(max = 10000), extend("x-kubernetes-list-type" = "atomic"))]
    pub networks: Vec<NetworkRealization>,
}

/// Realization of one network on one node.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRealization {
    /// ContainerNetwork name.
    pub name: String,
    /// metadata.uid of the ContainerNetwork (a re-created network of the same name differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Generation of the network that was programmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub state: RealizationState,
    /// Machine-readable reason, such as ParentMissing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a person should know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RealizationState {
    /// The kernel matches the network.
    Programmed,
    /// Waiting for something outside Weft (say, the parent interface).
    Pending,
    /// Programming failed; see reason and message.
    Failed,
}
