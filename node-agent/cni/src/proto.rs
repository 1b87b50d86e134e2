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
    /// ADD: the attachment's `gwPriority` (config key, or CNI_ARGS `GW_PRIORITY=`): the
    /// sandbox's attachment with the highest one gives the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw_priority: Option<i32>,
    /// ADD: config key `defaultRoute` is `"replace"`: a default route in the sandbox that is
    /// not Weft's is replaced by Weft's (otherwise it stays and Weft adds none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_default_route: bool,
    /// ADD: more DNS names of the endpoint on its network (runtimeConfig `aliases` for the
    /// configuration's network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
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
    /// Where the sandbox resolves names (the runtime writes its resolv.conf from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// A CNI result's `dns`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A failure, worded for a person, with the CNI error code the plugin reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// One of [`ErrorCode`] (the [`codes`] constants).
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// Every CNI error code `weft-cni` or the agent reports, with what it means for the person
/// reading it. The one table: [`codes`] derives from it, and the README's "CNI error codes"
/// table must say the same (a test compares them). 1–99 are the spec's, 100+ Weft's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodeFailure = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    UnknownNetwork = 100,
    NoFreeAddress = 101,
    AddressRefused = 102,
    PortConflict = 103,
    Kernel = 104,
    CheckFailed = 105,
    InterfaceNameInUse = 106,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 15] = [
        Self::IncompatibleVersion,
        Self::UnknownContainer,
        Self::InvalidEnvironment,
        Self::IoFailure,
        Self::DecodeFailure,
        Self::InvalidConfig,
        Self::TryAgainLater,
        Self::NotAvailable,
        Self::UnknownNetwork,
        Self::NoFreeAddress,
        Self::AddressRefused,
        Self::PortConflict,
        Self::Kernel,
        Self::CheckFailed,
        Self::InterfaceNameInUse,
    ];

    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The code for a number, if it is one of Weft's.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// What the code means and what to do about it (one line, as in the README).
    pub const fn meaning(self) -> &'static str {
        match self {
            Self::IncompatibleVersion => {
                "The configuration's `cniVersion` is one weft-cni does not speak (or the command \
                 needs a newer one: CHECK 0.4.0, STATUS and GC 1.1.0), or weft-cni and weft-agent \
                 are from releases that cannot talk to each other."
            }
            Self::UnknownContainer => {
                "CHECK for a container and interface the agent never attached."
            }
            Self::InvalidEnvironment => {
                "A `CNI_*` variable is missing or malformed, or the sandbox (`CNI_NETNS`) is gone."
            }
            Self::IoFailure => {
                "weft-cni could not read its input or lost the connection to the agent; see the \
                 agent's log on the node."
            }
            Self::DecodeFailure => {
                "The configuration on stdin, or the agent's answer, is not the JSON expected."
            }
            Self::InvalidConfig => {
                "The network configuration or the endpoint it asks for is invalid; the message \
                 names the key."
            }
            Self::TryAgainLater => {
                "The network is not programmed on this node yet, or the agent is busy: retry."
            }
            Self::NotAvailable => {
                "weft-agent is not running on this node, not ready yet, or shutting down."
            }
            Self::UnknownNetwork => {
                "The ContainerNetwork does not exist or does not select this node."
            }
            Self::NoFreeAddress => "The network has no free address left on this node.",
            Self::AddressRefused => {
                "The requested address (`--ip`, `IP=`, `ips`) is in use or outside the network."
            }
            Self::PortConflict => {
                "A published host port is held by another endpoint; the message names it."
            }
            Self::Kernel => {
                "The node could not make the attachment (the kernel refused a change, or the \
                 endpoint belongs to another node); the message says which."
            }
            Self::CheckFailed => {
                "CHECK found the interface missing, down, or without its address or MAC."
            }
            Self::InterfaceNameInUse => {
                "Another endpoint already has this interface name (`CNI_IFNAME`) in the sandbox; \
                 the message names it."
            }
        }
    }
}

/// The codes as the numbers [`Failure::code`] carries.
pub mod codes {
    use super::ErrorCode;

    pub const INCOMPATIBLE_VERSION: u32 = ErrorCode::IncompatibleVersion.code();
    pub const UNKNOWN_CONTAINER: u32 = ErrorCode::UnknownContainer.code();
    pub const INVALID_ENVIRONMENT: u32 = ErrorCode::InvalidEnvironment.code();
    pub const IO_FAILURE: u32 = ErrorCode::IoFailure.code();
    pub const DECODE_FAILURE: u32 = ErrorCode::DecodeFailure.code();
    pub const INVALID_CONFIG: u32 = ErrorCode::InvalidConfig.code();
    pub const TRY_AGAIN_LATER: u32 = ErrorCode::TryAgainLater.code();
    pub const NOT_AVAILABLE: u32 = ErrorCode::NotAvailable.code();
    pub const UNKNOWN_NETWORK: u32 = ErrorCode::UnknownNetwork.code();
    pub const NO_FREE_ADDRESS: u32 = ErrorCode::NoFreeAddress.code();
    pub const ADDRESS_REFUSED: u32 = ErrorCode::AddressRefused.code();
    pub const PORT_CONFLICT: u32 = ErrorCode::PortConflict.code();
    pub const KERNEL: u32 = ErrorCode::Kernel.code();
    pub const CHECK_FAILED: u32 = ErrorCode::CheckFailed.code();
    pub const INTERFACE_NAME_IN_USE: u32 = ErrorCode::InterfaceNameInUse.code();
}

/// What the agent sends back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    Ok(Attachment),
    Error(Failure),
}
