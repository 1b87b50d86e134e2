//! Helpers for `metav1.Condition` lists (kstatus / Argo CD contract).

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Condition types used across Weft kinds.
pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const SUBNET_ALLOCATED: &str = "SubnetAllocated";
}

/// Find a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of that type has status "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}
