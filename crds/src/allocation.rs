//! `NetworkAllocation`: the per-node blocks of one cluster-scope network (overlay, macvlan,
//! ipvlan). Name = network name; written only by the controller.
//!
//! Why a separate object rather than the network's status: node joins and leaves would
//! otherwise churn the object users and GitOps tools watch. One entry per node is ~60 bytes,
//! so 1,000 nodes stay far below etcd's 1.5 MiB object limit, and nothing in it changes
//! with traffic (no per-address records: nodes hand out addresses from their block locally).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Per-node address blocks of one network.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "NetworkAllocation",
    plural = "networkallocations",
    category = "weft",
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.network"}"#,
    printcolumn = r#"{"name":"Block","type":"integer","jsonPath":".spec.blockPrefixLength"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAllocationSpec {
    /// The ContainerNetwork these blocks belong to.
    pub network: String,
    /// Its metadata.uid, so a re-created network of the same name never inherits blocks.
    pub network_uid: String,
    /// Prefix length of every block.
    pub block_prefix_length: i32,
    /// One block per selected node.
    #[serde(default)]
    #[schemars(length(max = 5000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub blocks: Vec<NodeBlock>,
}

/// The block one node hands endpoint addresses out from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeBlock {
    /// NetworkNode name.
    pub node: String,
    /// CIDR inside the network's subnets.
    pub cidr: String,
}
