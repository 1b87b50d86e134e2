//! Building kstatus-shaped status: `observedGeneration` plus `Ready`, `Reconciling`,
//! `Stalled` and `SubnetAllocated` conditions, each with its own observedGeneration.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use weft_api::condition::types;

/// One condition the controller wants to state.
pub struct Want<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

/// Build the condition list, keeping `lastTransitionTime` of conditions whose status did not
/// change, so a status that says the same thing twice is byte-for-byte the same (no churn).
pub fn conditions(
    previous: &[Condition],
    wants: Vec<Want<'_>>,
    generation: Option<i64>,
) -> Vec<Condition> {
    wants
        .into_iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason.to_string(),
                message: w.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The four conditions for a network that is either stalled, still rolling out, or ready.
pub fn network_conditions(
    previous: &[Condition],
    generation: Option<i64>,
    allocated: bool,
    problem: Option<(&str, &str)>,
    nodes_ready: i32,
    nodes_selected: i32,
    terminating: Option<String>,
) -> Vec<Condition> {
    let (ready, reconciling, stalled, reason, message) = if let Some(msg) = terminating {
        (false, true, false, "Terminating", msg)
    } else if let Some((reason, message)) = problem {
        (false, false, true, reason, message.to_string())
    } else if nodes_ready < nodes_selected {
        (
            false,
            true,
            false,
            "NodesPending",
            format!(
                "{nodes_ready} of {nodes_selected} selected nodes report the network programmed"
            ),
        )
    } else {
        (
            true,
            false,
            false,
            "Ready",
            format!("allocated; programmed on {nodes_ready} of {nodes_selected} selected nodes"),
        )
    };
    let alloc_reason = if allocated {
        "Allocated"
    } else {
        problem.map(|p| p.0).unwrap_or("Pending")
    };
    let alloc_message = if allocated {
        "addresses are allocated".to_string()
    } else {
        problem
            .map(|p| p.1.to_string())
            .unwrap_or_else(|| "waiting for allocation".into())
    };
    conditions(
        previous,
        vec![
            Want {
                type_: types::READY,
                status: ready,
                reason,
                message: message.clone(),
            },
            Want {
                type_: types::RECONCILING,
                status: reconciling,
                reason: if reconciling { reason } else { "Idle" },
                message: if reconciling {
                    message.clone()
                } else {
                    String::new()
                },
            },
            Want {
                type_: types::STALLED,
                status: stalled,
                reason: if stalled { reason } else { "Healthy" },
                message: if stalled { message } else { String::new() },
            },
            Want {
                type_: types::SUBNET_ALLOCATED,
                status: allocated,
                reason: alloc_reason,
                message: alloc_message,
            },
        ],
        generation,
    )
}
