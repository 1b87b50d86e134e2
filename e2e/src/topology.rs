//! The underlay every multi-node setup stands on, built the same way for the tests'
//! [`crate::cluster::Cluster`] and for `weft-lab`: namespace `underlay` holds bridge `ul0`
//! with [`GATEWAY`]/24 — the nodes' default gateway and, for tests, the "outside" host — and
//! node i (1-based) is a namespace whose `eth0` (peer `ul-<i>` on the bridge) has
//! [`node_address`]`(i)`/24 and a default route via the gateway.
//!
//! Namespaces are passed by name: who creates and removes them (a [`crate::netns::Netns`]
//! guard, or the lab's state file) is up to the caller.

use anyhow::Result;

use crate::netns::sh;

/// The underlay bridge's address: the nodes' default gateway.
pub const GATEWAY: &str = "192.0.2.1";
/// The bridge inside the underlay namespace.
pub const BRIDGE: &str = "ul0";

/// Node `i`'s underlay address (1-based), without prefix.
pub fn node_address(i: usize) -> String {
    format!("192.0.2.{}", 10 + i)
}

/// Make the bridge inside namespace `underlay`.
pub fn build_underlay(underlay: &str) -> Result<()> {
    sh(&[
        "ip", "-n", underlay, "link", "add", BRIDGE, "type", "bridge",
    ])?;
    let address = format!("{GATEWAY}/24");
    sh(&["ip", "-n", underlay, "addr", "add", &address, "dev", BRIDGE])?;
    sh(&["ip", "-n", underlay, "link", "set", BRIDGE, "up"]).map(drop)
}

/// Plug namespace `node` into the underlay as node `i`; returns its address.
pub fn join_underlay(underlay: &str, i: usize, node: &str) -> Result<String> {
    let port = format!("ul-{i}");
    sh(&[
        "ip", "-n", underlay, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
        "netns", node,
    ])?;
    sh(&[
        "ip", "-n", underlay, "link", "set", &port, "master", BRIDGE, "up",
    ])?;
    let address = node_address(i);
    let cidr = format!("{address}/24");
    sh(&["ip", "-n", node, "addr", "add", &cidr, "dev", "eth0"])?;
    sh(&["ip", "-n", node, "link", "set", "eth0", "up"])?;
    sh(&["ip", "-n", node, "route", "add", "default", "via", GATEWAY])?;
    Ok(address)
}
