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

/// One node built by hand with `ip`, for the services dataplane tests and bench (no agent):
/// namespace `ns` with bridge `br0` holding the gateway, a veth port per plugged sandbox
/// (hairpin on, as the agent's bridge driver sets every endpoint port), and uplinks to
/// "outside" namespaces.
pub struct BridgeNode {
    pub ns: crate::netns::Netns,
    gateway: String,
    prefix: u8,
    ports: std::sync::atomic::AtomicUsize,
}

impl BridgeNode {
    /// The node, forwarding, with `br0` = `gateway`/`prefix`.
    pub fn new(gateway: &str, prefix: u8) -> Result<BridgeNode> {
        let ns = crate::netns::Netns::new("node")?;
        let cidr = format!("{gateway}/{prefix}");
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        ns.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        ns.exec(&["ip", "addr", "add", &cidr, "dev", "br0"])?;
        ns.exec(&["ip", "link", "set", "br0", "up"])?;
        Ok(BridgeNode {
            ns,
            gateway: gateway.to_string(),
            prefix,
            ports: Default::default(),
        })
    }

    /// Plug `sandbox` into the bridge: its `eth0` gets `address` and a default route via the
    /// gateway.
    pub fn plug(&self, sandbox: &crate::netns::Netns, address: &str) -> Result<()> {
        let i = self
            .ports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = format!("v{i}");
        self.veth_to(&port, sandbox)?;
        self.ns
            .exec(&["ip", "link", "set", &port, "master", "br0", "up"])?;
        self.ns.exec(&[
            "ip",
            "link",
            "set",
            &port,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ])?;
        let cidr = format!("{address}/{}", self.prefix);
        sandbox.exec(&["ip", "addr", "add", &cidr, "dev", "eth0"])?;
        sandbox.exec(&["ip", "link", "set", "eth0", "up"])?;
        sandbox
            .exec(&["ip", "route", "add", "default", "via", &self.gateway])
            .map(drop)
    }

    /// A veth pair: `port` in the node, `eth0` in `other`.
    fn veth_to(&self, port: &str, other: &crate::netns::Netns) -> Result<()> {
        sh(&[
            "ip",
            "link",
            "add",
            port,
            "netns",
            self.ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            other.name(),
        ])
        .map(drop)
    }

    /// A new "outside" namespace on uplink `name` of the node: the node has `node`/24 there,
    /// the outside `outside`/24 and its default route via the node.
    pub fn uplink(&self, name: &str, node: &str, outside: &str) -> Result<crate::netns::Netns> {
        let out = crate::netns::Netns::new("out")?;
        self.veth_to(name, &out)?;
        let cidr = format!("{node}/24");
        self.ns.exec(&["ip", "addr", "add", &cidr, "dev", name])?;
        self.ns.exec(&["ip", "link", "set", name, "up"])?;
        let cidr = format!("{outside}/24");
        out.exec(&["ip", "addr", "add", &cidr, "dev", "eth0"])?;
        out.exec(&["ip", "link", "set", "eth0", "up"])?;
        out.exec(&["ip", "route", "add", "default", "via", node])?;
        Ok(out)
    }
}
