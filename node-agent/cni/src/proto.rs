//! The agent's CNI socket protocol: one JSON [`Request`] line from the plugin, one JSON
//! [`Response`] line back, then the connection closes. Versioned by [`PROTOCOL`] so an
//! agent and a plugin from different releases refuse each other clearly.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of the types below.
pub const PROTOCOL: u32 = 1;

/// Where the agent listens unless told otherwise (`--cni-socket`, plugin config `socket`).
pub const DEFAULT_SOCKET: &str = "/run/weft/cni.sock";

/// CNI operations the agent performs (VERSION is answered by the plugin alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

/// One attachment as CNI names it: container id + interface name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentId {
    pub container_id: String,
    pub if_name: String,
}

/// A port mapping (CNI `portMappings` capability; Docker's `-p`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// tcp, udp or sctp.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Bind to this node address only; empty or absent = every address.
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// What the plugin sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub protocol: u32,
    pub command: Command,
    /// The network configuration's `name`.
    #[serde(default)]
    pub config_name: String,
    /// The ContainerNetwork to attach to (config key `network`; defaults to `name`).
    #[serde(default)]
    pub network: String,
    /// CNI_CONTAINERID (empty for STATUS and GC).
    #[serde(default)]
    pub container_id: String,
    /// CNI_NETNS (may be empty on DEL: the sandbox can be gone already).
    #[serde(default)]
    pub netns: String,
    /// CNI_IFNAME.
    #[serde(default)]
    pub if_name: String,
    /// K8S_POD_NAMESPACE / K8S_POD_NAME from CNI_ARGS, which name the ContainerEndpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// A requested address (CNI_ARGS `IP=`, or runtimeConfig `ips`), without prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A requested MAC (CNI_ARGS `MAC=`, or runtimeConfig `mac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// runtimeConfig `portMappings`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// GC: every attachment the runtime still knows (`cni.dev/valid-attachments`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_attachments: Vec<AttachmentId>,
    /// CHECK: the result ADD returned, as the runtime passes it (`prevResult`), verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<serde_json::Value>,
}

/// A CNI result's `interfaces[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path for interfaces inside the sandbox; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// A CNI result's `ips[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// With prefix: 10.0.0.2/24.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A CNI result's `routes[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The agent's answer to ADD (and to CHECK/DEL/STATUS/GC: all fields empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// A failure, worded for a person, with the CNI error code the plugin reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// CNI error code: 3 unknown container, 4 invalid env, 7 invalid network config, 11 try
    /// again later, 50 plugin not available, 100+ Weft's own (see [`codes`]).
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// Weft's CNI error codes (the spec reserves 0–99 for itself).
pub mod codes {
    /// The configuration's `cniVersion` is one the plugin does not speak.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The ContainerNetwork does not exist, or does not select this node.
    pub const UNKNOWN_NETWORK: u32 = 100;
    /// The network has no free address left on this node.
    pub const NO_FREE_ADDRESS: u32 = 101;
    /// The requested address is taken or outside the network.
    pub const ADDRESS_REFUSED: u32 = 102;
    /// A published host port is taken by another endpoint.
    pub const PORT_CONFLICT: u32 = 103;
    /// The kernel refused a change.
    pub const KERNEL: u32 = 104;
    /// The interface CHECK looked for is missing or not as ADD left it.
    pub const CHECK_FAILED: u32 = 105;
}

/// What the agent sends back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    Ok(Attachment),
    Error(Failure),
}
