//! `ContainerNetwork` (short name `cnet`): one network, as a user writes it.
//!
//! The spec is a discriminated union on `driver`: exactly the matching driver block may be
//! present. Every rule the API server can check by itself is a CEL rule here, with a message
//! written for the person who ran `kubectl apply`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a container network.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "ContainerNetwork",
    plural = "containernetworks",
    shortname = "cnet",
    status = "ContainerNetworkStatus",
    category = "weft",
    printcolumn = r#"{"name":"Driver","type":"string","jsonPath":".spec.driver"}"#,
    printcolumn = r#"{"name":"Subnet","type":"string","jsonPath":".status.subnets[0]"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".status.scope","priority":1}"#,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".status.gateway","priority":1}"#,
    printcolumn = r#"{"name":"Subnet6","type":"string","jsonPath":".status.subnets[1]","priority":1}"#,
    printcolumn = r#"{"name":"VNI","type":"integer","jsonPath":".status.vni","priority":1}"#,
    printcolumn = r#"{"name":"MTU","type":"integer","jsonPath":".spec.mtu","priority":1}"#,
    printcolumn = r#"{"name":"Internal","type":"boolean","jsonPath":".spec.internal","priority":1}"#,
    printcolumn = r#"{"name":"Endpoints","type":"integer","jsonPath":".status.endpoints","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.driver == oldSelf.driver",
     "fieldPath": ".driver", "message": "driver is immutable: create a new network to use another driver"},
    {"rule": "!has(self.bridge) || self.driver == 'bridge'",
     "fieldPath": ".bridge", "message": "spec.bridge is only allowed when driver is bridge"},
    {"rule": "!has(self.overlay) || self.driver == 'overlay'",
     "fieldPath": ".overlay", "message": "spec.overlay is only allowed when driver is overlay"},
    {"rule": "!has(self.macvlan) || self.driver == 'macvlan'",
     "fieldPath": ".macvlan", "message": "spec.macvlan is only allowed when driver is macvlan"},
    {"rule": "!has(self.ipvlan) || self.driver == 'ipvlan'",
     "fieldPath": ".ipvlan", "message": "spec.ipvlan is only allowed when driver is ipvlan"},
    {"rule": "self.driver != 'macvlan' || has(self.macvlan)",
     "message": "driver macvlan needs spec.macvlan.parent: the host interface the containers attach to"},
    {"rule": "self.driver != 'ipvlan' || has(self.ipvlan)",
     "message": "driver ipvlan needs spec.ipvlan.parent: the host interface the containers attach to"},
    {"rule": "!(self.driver in ['host', 'none']) || !has(self.ipam)",
     "fieldPath": ".ipam", "message": "drivers host and none have no addresses of their own: remove spec.ipam"},
    {"rule": "has(self.ipam) == has(oldSelf.ipam)",
     "message": "spec.ipam cannot be added or removed once the network exists"},
    {"rule": "!(has(self.internal) && self.internal) || !has(self.dns) || !has(self.dns.upstreams)",
     "fieldPath": ".dns.upstreams", "message": "an internal network never forwards names out: remove spec.dns.upstreams (or internal)"},
    {"rule": "!has(self.mtu) || self.mtu >= 1280 || !has(self.ipam) || !has(self.ipam.subnets) || self.ipam.subnets.all(s, !isCIDR(s) || cidr(s).ip().family() == 4)",
     "fieldPath": ".mtu", "message": "mtu must be at least 1280 on a network with an IPv6 subnet (RFC 8200)"}
]))]
pub struct ContainerNetworkSpec {
    /// Network driver, as in `docker network create -d`. Immutable.
    pub driver: Driver,

    /// Options of the bridge driver (local scope: one Linux bridge per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeOptions>,

    /// Options of the overlay driver (cluster scope: VXLAN between nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayOptions>,

    /// Options of the macvlan driver (cluster scope: containers on the parent's L2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan: Option<MacvlanOptions>,

    /// Options of the ipvlan driver (cluster scope: containers share the parent's MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan: Option<IpvlanOptions>,

    /// Address management. Without it the network gets a subnet from the default AddressPool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamSpec>,

    /// MTU of the network's interfaces. Default: the underlay MTU (overlay: minus 50 for VXLAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 9216))]
    pub mtu: Option<i32>,

    /// Like `docker network create --internal`: nothing leaves the subnet, no default route.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,

    /// Only nodes whose NetworkNode carries these labels get the network. Default: all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Names on this network (answered by weft-dns on each node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<NetworkDns>,
}

/// How the network's sandboxes resolve names.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkDns {
    /// Resolvers for names that are not Weft's, instead of the node's resolv.conf (Docker's
    /// `--dns`, per network): `IP` (port 53), `IPv4:port` or `[IPv6]:port`, asked in order.
    /// A sandbox on several networks uses those of the network it asked through (else its
    /// first non-internal one). Not allowed on an internal network, which forwards nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 3), inner(length(min = 2, max = 47)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(u, isIP(u) || (u.matches('^[0-9.]+:[0-9]{1,5}$') && isIP(u.substring(0, u.lastIndexOf(':'))) && int(u.substring(u.lastIndexOf(':') + 1)) >= 1 && int(u.substring(u.lastIndexOf(':') + 1)) <= 65535) || (u.matches('^\\\\[[0-9A-Fa-f:.]+\\\\]:[0-9]{1,5}$') && isIP(u.substring(1, u.lastIndexOf(']'))) && ip(u.substring(1, u.lastIndexOf(']'))).family() == 6 && int(u.substring(u.lastIndexOf(':') + 1)) >= 1 && int(u.substring(u.lastIndexOf(':') + 1)) <= 65535))",
         "message": "each upstream must be an IP address, optionally with a port 1-65535: 192.0.2.53, 192.0.2.53:5353, 2001:db8::53 or [2001:db8::53]:5353"}
    ]))]
    pub upstreams: Vec<String>,
}

impl NetworkDns {
    /// The upstreams as socket addresses (port 53 unless given); `None` when unset, which
    /// means the node's own resolvers. Entries that do not parse (the API server's rule
    /// refuses them) are left out.
    pub fn upstream_addresses(&self) -> Option<Vec<std::net::SocketAddr>> {
        let parsed: Vec<std::net::SocketAddr> = self
            .upstreams
            .iter()
            .filter_map(|u| parse_upstream(u))
            .collect();
        (!parsed.is_empty()).then_some(parsed)
    }
}

/// `IP`, `IPv4:port` or `[IPv6]:port` as a socket address (port 53 by default).
pub fn parse_upstream(s: &str) -> Option<std::net::SocketAddr> {
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(std::net::SocketAddr::new(ip, 53)),
        Err(_) => s
            .parse()
            .ok()
            .filter(|a: &std::net::SocketAddr| a.port() != 0),
    }
}

/// Network driver, as in `docker network create -d`.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Overlay,
    Macvlan,
    Ipvlan,
    Host,
    None,
}

impl Driver {
    /// Cluster-scope drivers need addresses unique across nodes, so each node gets a block.
    pub fn is_cluster_scope(self) -> bool {
        matches!(self, Driver::Overlay | Driver::Macvlan | Driver::Ipvlan)
    }

    /// Drivers that own addresses (host and none do not).
    pub fn has_addresses(self) -> bool {
        !matches!(self, Driver::Host | Driver::None)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Overlay => "overlay",
            Driver::Macvlan => "macvlan",
            Driver::Ipvlan => "ipvlan",
            Driver::Host => "host",
            Driver::None => "none",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options of the bridge driver. Every field has a default, so the block may be omitted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.hostBinding) || isIP(self.hostBinding)",
     "fieldPath": ".hostBinding", "message": "bridge.hostBinding must be an IP address of the node, such as 192.0.2.10"}
]))]
pub struct BridgeOptions {
    /// Masquerade traffic that leaves the subnet (ignored on internal networks).
    #[serde(default = "default_true")]
    pub masquerade: bool,
    /// Default host address that published ports bind to (Docker's host_binding_ipv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub host_binding: Option<String>,
    /// Drop traffic between this network and other Weft networks on the node.
    #[serde(default = "default_true")]
    pub isolation: bool,
    /// Let endpoints on this bridge reach each other (Docker's enable_icc).
    #[serde(default = "default_true")]
    pub inter_container_traffic: bool,
    /// What reaches the network's endpoints from outside the node (Docker 28's gateway
    /// modes `nat` and `routed`).
    #[serde(default)]
    pub inbound: Inbound,
}

/// Which connections from outside the node reach a bridge network's endpoints. Endpoints
/// of the same bridge, the node itself and replies to the endpoints' own connections are
/// never affected.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Inbound {
    /// Only published ports (connections the node DNATs to an endpoint): a host with a
    /// route to the subnet through the node reaches nothing else (Docker 28's default).
    #[default]
    Published,
    /// Every port of every endpoint, for setups that route the subnet to the node on
    /// purpose (Docker's `gateway_mode_ipv4=routed`).
    Routed,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            masquerade: true,
            host_binding: None,
            isolation: true,
            inter_container_traffic: true,
            inbound: Inbound::Published,
        }
    }
}

/// Options of the overlay driver. Every field has a default, so the block may be omitted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.vni) == has(oldSelf.vni) && (!has(self.vni) || self.vni == oldSelf.vni)",
     "fieldPath": ".vni", "message": "overlay.vni is immutable"},
    {"rule": "(has(self.encrypted) && self.encrypted) == (has(oldSelf.encrypted) && oldSelf.encrypted)",
     "fieldPath": ".encrypted", "message": "overlay.encrypted is immutable: create a new network to turn encryption on or off"}
]))]
pub struct OverlayOptions {
    /// VXLAN network identifier. Default: allocated by the controller, unique in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16_777_215))]
    pub vni: Option<i32>,
    /// UDP port of the VXLAN tunnel.
    #[serde(default = "default_vxlan_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub udp_port: i32,
    /// Encrypt the tunnel between nodes (Docker's `--opt encrypted`): the VXLAN traffic runs
    /// inside WireGuard between the nodes' WireGuard links (`weft-wg0`/`weft-wg1`). A node that cannot encrypt (no
    /// WireGuard in its kernel) reports `EncryptionUnavailable` and sends nothing of the
    /// network; no node sends it to a peer that has published no WireGuard key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        Self {
            vni: None,
            udp_port: default_vxlan_port(),
            encrypted: false,
        }
    }
}

/// Options of the macvlan driver.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.vlan) || size(self.parent) + size(string(self.vlan)) < 15",
     "fieldPath": ".vlan", "message": "parent.vlan (such as eth0.10) must fit the 15-character limit of Linux interface names"}
]))]
pub struct MacvlanOptions {
    /// Host interface the containers attach to, such as eth0.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
    )]
    pub parent: String,
    /// macvlan mode.
    #[serde(default)]
    pub mode: MacvlanMode,
    /// 802.1Q VLAN ID: Weft creates and owns the sub-interface parent.VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan: Option<i32>,
    /// Give the host a macvlan interface on the subnet, so the node reaches its containers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_shim: bool,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    #[default]
    Bridge,
    Private,
    Vepa,
    Passthru,
}

/// Options of the ipvlan driver.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.vlan) || size(self.parent) + size(string(self.vlan)) < 15",
     "fieldPath": ".vlan", "message": "parent.vlan (such as eth0.10) must fit the 15-character limit of Linux interface names"}
]))]
pub struct IpvlanOptions {
    /// Host interface the containers attach to, such as eth0.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
    )]
    pub parent: String,
    /// ipvlan mode.
    #[serde(default)]
    pub mode: IpvlanMode,
    /// 802.1Q VLAN ID: Weft creates and owns the sub-interface parent.VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanMode {
    #[default]
    L2,
    L3,
    L3s,
}

/// Address management: explicit subnets, or one subnet carved from an AddressPool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.subnets) && has(self.pool))",
     "fieldPath": ".pool", "message": "set either ipam.subnets or ipam.pool, not both"},
    {"rule": "!(has(self.subnets) && has(self.prefixLength))",
     "fieldPath": ".prefixLength", "message": "ipam.prefixLength applies to pool allocation only; with ipam.subnets the prefix is part of each CIDR"},
    {"rule": "!has(self.subnets) || self.subnets.all(s, isCIDR(s))",
     "fieldPath": ".subnets", "message": "every entry of ipam.subnets must be a CIDR such as 10.0.0.0/24 or fd00:1::/64"},
    {"rule": "!has(self.subnets) || self.subnets.all(s, !isCIDR(s) || cidr(s) == cidr(s).masked())",
     "fieldPath": ".subnets", "message": "ipam.subnets entries must be network addresses: write 10.0.0.0/24, not 10.0.0.1/24"},
    {"rule": "!has(self.subnets) || self.subnets.all(s, !isCIDR(s) || cidr(s).prefixLength() <= (cidr(s).ip().family() == 4 ? 30 : 124))",
     "fieldPath": ".subnets", "message": "a subnet must leave room for a gateway and endpoints: at most /30 for IPv4, /124 for IPv6"},
    {"rule": "!has(self.subnets) || self.subnets.all(s, !isCIDR(s) || cidr(s).prefixLength() >= (cidr(s).ip().family() == 4 ? 8 : 32))",
     "fieldPath": ".subnets", "message": "a subnet this large is a mistake: at least /8 for IPv4, /32 for IPv6"},
    {"rule": "!has(self.gateway) || isIP(self.gateway)",
     "fieldPath": ".gateway", "message": "ipam.gateway must be an IP address such as 10.0.0.1"},
    {"rule": "!has(self.gateway) || has(self.subnets)",
     "fieldPath": ".gateway", "message": "ipam.gateway needs ipam.subnets; a pool network's gateway is the first address of its allocated subnet"},
    {"rule": "!has(self.gateway) || !isIP(self.gateway) || !has(self.subnets) || self.subnets.exists(s, isCIDR(s) && cidr(s).containsIP(self.gateway) && string(cidr(s).ip()) != self.gateway)",
     "fieldPath": ".gateway", "message": "ipam.gateway must be a host address inside one of ipam.subnets"},
    {"rule": "!has(self.ipRange) || isCIDR(self.ipRange)",
     "fieldPath": ".ipRange", "message": "ipam.ipRange must be a CIDR such as 10.0.0.128/25"},
    {"rule": "!has(self.ipRange) || has(self.subnets)",
     "fieldPath": ".ipRange", "message": "ipam.ipRange needs ipam.subnets"},
    {"rule": "!has(self.ipRange) || !isCIDR(self.ipRange) || !has(self.subnets) || self.subnets.exists(s, isCIDR(s) && cidr(s).containsCIDR(self.ipRange))",
     "fieldPath": ".ipRange", "message": "ipam.ipRange must lie inside one of ipam.subnets"},
    {"rule": "!has(self.excludedRanges) || self.excludedRanges.all(r, isCIDR(r))",
     "fieldPath": ".excludedRanges", "message": "every entry of ipam.excludedRanges must be a CIDR such as 10.0.0.200/29 (a single address is /32)"},
    {"rule": "!has(self.excludedRanges) || !has(self.subnets) || self.excludedRanges.all(r, !isCIDR(r) || self.subnets.exists(s, isCIDR(s) && cidr(s).containsCIDR(r)))",
     "fieldPath": ".excludedRanges", "message": "every entry of ipam.excludedRanges must lie inside one of ipam.subnets"},
    {"rule": "!has(oldSelf.subnets) || (has(self.subnets) && oldSelf.subnets.all(s, s in self.subnets))",
     "fieldPath": ".subnets", "message": "ipam.subnets is append-only: existing entries cannot be changed or removed, new ones may be added"},
    {"rule": "has(self.pool) == has(oldSelf.pool) && (!has(self.pool) || self.pool == oldSelf.pool)",
     "fieldPath": ".pool", "message": "ipam.pool is immutable"},
    {"rule": "has(self.prefixLength) == has(oldSelf.prefixLength) && (!has(self.prefixLength) || self.prefixLength == oldSelf.prefixLength)",
     "fieldPath": ".prefixLength", "message": "ipam.prefixLength is immutable"}
]))]
pub struct IpamSpec {
    /// Explicit subnets (`docker network create --subnet`). Append-only: entries may be added
    /// to grow the network, never changed or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(max = 43)))]
    pub subnets: Option<Vec<String>>,
    /// AddressPool to carve the subnet from. Default: the pool marked `default: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pool: Option<String>,
    /// Size of the subnet carved from the pool. Default: the pool's prefixLength.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 124))]
    pub prefix_length: Option<i32>,
    /// Gateway address. Default: the first host address of the first subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub gateway: Option<String>,
    /// Hand out endpoint addresses only from this sub-range (`--ip-range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 43))]
    pub ip_range: Option<String>,
    /// Addresses never handed out to endpoints (`--aux-address`, or hosts already on the LAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(max = 43)))]
    pub excluded_ranges: Option<Vec<String>>,
    /// Cluster-scope drivers: size of the block each node hands addresses out from.
    /// Default: 6 bits longer than the subnet, at most /28 (IPv4) or /120 (IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 126))]
    pub block_prefix_length: Option<i32>,
}

/// What the controller has allocated and observed. Written only by weft-controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerNetworkStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled and SubnetAllocated (kstatus).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Subnets allocated to the network, in allocation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Gateway address of the first subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// VXLAN network identifier (overlay only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<i32>,
    /// Nodes that the nodeSelector picks.
    #[serde(default)]
    pub nodes_selected: i32,
    /// Selected nodes whose agent reports the network programmed.
    #[serde(default)]
    pub nodes_ready: i32,
    /// "ready/selected", for `kubectl get cnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// Endpoint address capacity (saturates at 2^63-1 for large IPv6 subnets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<AddressCapacity>,
    /// `local` (bridge, host, none: each node on its own) or `cluster` (overlay, macvlan,
    /// ipvlan: one address space across nodes; Docker's `swarm`), as `docker network ls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// ContainerEndpoints attached to the network, on every node (`docker network inspect`'s
    /// Containers, counted).
    #[serde(default)]
    pub endpoints: i32,
}

/// How many endpoint addresses the network can hold.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressCapacity {
    /// Usable endpoint addresses in all subnets (network, broadcast and gateway excluded).
    pub addresses: i64,
    /// Cluster-scope networks: the per-node block size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_prefix_length: Option<i32>,
    /// Cluster-scope networks: how many node blocks fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<i32>,
}

fn default_true() -> bool {
    true
}

fn default_vxlan_port() -> i32 {
    4789
}

#[cfg(test)]
mod dns_tests {
    use super::parse_upstream;

    #[test]
    fn upstreams_are_an_address_with_port_53_unless_one_is_given() {
        let parsed = |s: &str| parse_upstream(s).map(|a| a.to_string());
        assert_eq!(parsed("192.0.2.53").as_deref(), Some("192.0.2.53:53"));
        assert_eq!(
            parsed("192.0.2.53:5353").as_deref(),
            Some("192.0.2.53:5353")
        );
        assert_eq!(parsed("2001:db8::53").as_deref(), Some("[2001:db8::53]:53"));
        assert_eq!(
            parsed("[2001:db8::53]:5353").as_deref(),
            Some("[2001:db8::53]:5353")
        );
        for bad in [
            "",
            "dns.example",
            "192.0.2.53:0",
            "192.0.2.53:70000",
            "[2001:db8::53]",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }
}
