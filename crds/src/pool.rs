//! `AddressPool`: CIDRs that networks without explicit subnets are carved from —
//! Docker's `default-address-pools`, as an object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pool of address space, carved into subnets of `prefixLength`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "AddressPool",
    plural = "addresspools",
    status = "AddressPoolStatus",
    category = "weft",
    printcolumn = r#"{"name":"CIDRs","type":"string","jsonPath":".spec.cidrs"}"#,
    printcolumn = r#"{"name":"Prefix","type":"integer","jsonPath":".spec.prefixLength"}"#,
    printcolumn = r#"{"name":"Default","type":"boolean","jsonPath":".spec.default"}"#,
    printcolumn = r#"{"name":"Networks","type":"integer","jsonPath":".status.networks"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.cidrs.all(c, isCIDR(c))",
     "fieldPath": ".cidrs", "message": "every entry of cidrs must be a CIDR such as 10.200.0.0/16"},
    {"rule": "self.cidrs.all(c, !isCIDR(c) || cidr(c) == cidr(c).masked())",
     "fieldPath": ".cidrs", "message": "cidrs entries must be network addresses: write 10.200.0.0/16, not 10.200.0.1/16"},
    {"rule": "self.cidrs.all(c, !isCIDR(c) || self.prefixLength >= cidr(c).prefixLength())",
     "fieldPath": ".prefixLength", "message": "prefixLength must be at least as long as the prefix of every entry of cidrs (a /24 cannot be carved from a /25)"},
    {"rule": "self.cidrs.all(c, !isCIDR(c) || self.prefixLength <= (cidr(c).ip().family() == 4 ? 30 : 124))",
     "fieldPath": ".prefixLength", "message": "prefixLength must leave room for a gateway and endpoints: at most 30 for IPv4 pools, 124 for IPv6"},
    {"rule": "!has(self.excludedRanges) || self.excludedRanges.all(r, isCIDR(r))",
     "fieldPath": ".excludedRanges", "message": "every entry of excludedRanges must be a CIDR such as 10.200.0.0/24"}
]))]
pub struct AddressPoolSpec {
    /// Address space of the pool, carved in this order, lowest address first.
    #[schemars(length(min = 1, max = 32), inner(length(max = 43)))]
    pub cidrs: Vec<String>,
    /// Size of each subnet carved from the pool.
    #[schemars(range(min = 8, max = 124))]
    pub prefix_length: i32,
    /// The pool for networks that name none. At most one pool may be the default; when
    /// several say so, the oldest wins and the others report Stalled/MultipleDefaults.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// Ranges inside the pool that are never carved (say, the LAN the nodes sit on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 43)))]
    pub excluded_ranges: Option<Vec<String>>,
}

/// Pool usage, written by the controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressPoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Stalled (kstatus).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Networks holding a subnet carved from this pool.
    #[serde(default)]
    pub networks: i32,
    /// Addresses in the pool (saturating).
    #[serde(default)]
    pub total_addresses: i64,
    /// Addresses in subnets carved from the pool (saturating).
    #[serde(default)]
    pub allocated_addresses: i64,
}
