//! Effects: reading, diffing and applying what Weft owns in one network namespace.
//!
//! The agent loop is `observe` → [`diff`](fn@diff) (pure) → `apply`. [`Kernel`] talks rtnetlink over
//! one socket bound to the target namespace, runs `nft` inside it and writes sysctls from a
//! thread inside it, so `--netns` works while the agent process itself stays put.
//!
//! Ownership is the safety rail: only links whose alias starts with
//! [`ALIAS_PREFIX`](crate::model::ALIAS_PREFIX), what sits on them, routes carrying
//! [`WEFT_RTPROT`], and the `weft` nft tables are ever read as ours or written.
//!
//! Named by its nouns, like rust-netlink's rtnetlink. The handle and its plumbing: `handle`
//! ([`Kernel`]: open, observe, apply), `netlink` (request/dump helpers, the ownership
//! check), `error` ([`KernelError`]), `changes` ([`Change`], [`ApplyReport`]) and `diff`
//! (pure). One file per kernel noun: `link`, `addr`, `route`, `fdb` (FDB + neighbours),
//! `sysctl`, `nft/` (a folder: planning and rendering apart from running), `endpoint`
//! (sandboxes). Plus `netns` (entering a namespace), `events` (multicast subscription), `sandbox_events` (the same inside a sandbox), `host_ports` (endpoints' veths on the node) and
//! `probe` (capabilities). Files import each other by noun; nothing imports this index.

mod addr;
mod changes;
mod diff;
mod endpoint;
mod error;
mod events;
mod fdb;
mod handle;
mod host_ports;
mod link;
mod mesh;
mod netlink;
mod netns;
mod nft;
mod probe;
mod route;
mod sandbox_events;
mod services;
mod sysctl;
mod wireguard;

pub use changes::{ApplyReport, Change};
pub use diff::diff;
pub use endpoint::{
    ENDPOINT_ALIAS_PREFIX, EndpointLink, Ensured, SandboxConfig, SandboxInterface, sandbox_missing,
};
pub use error::KernelError;
pub use events::KernelEvents;
pub use handle::{InterfaceInfo, Kernel};
pub use host_ports::{HostPort, HostPorts};
pub use mesh::{MESH_RULE_PRIORITY, MESH_TABLE, MeshDataplane};
pub use netlink::WEFT_RTPROT;
pub use nft::{base_chain, nft_tables_equivalent};
pub use probe::Capabilities;
pub use sandbox_events::{SandboxEvents, sandbox_events};
pub use services::{ServiceDataplane, ServiceWrites};
pub use sysctl::DEFAULT_KEYS as DEFAULT_SYSCTLS;
pub use wireguard::{WireguardConfig, WireguardDevice, WireguardPeerConfig};
