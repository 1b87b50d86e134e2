//! weft-agent: makes one node's kernel match the ContainerNetworks that select it.
//!
//! Data flows one way: API objects → [`plan`] (pure: composes the [`drivers`], one file per
//! driver behind one trait) → the desired [`model::KernelState`] → [`kernel`] reads back what
//! Weft owns, diffs, and applies the minimum → status. [`endpoints`] attaches sandboxes
//! (through the API or CNI) with the same drivers and the same kernel layer.

pub mod agent;
pub mod drivers;
pub mod endpoints;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod names;
pub mod plan;
pub mod services;
