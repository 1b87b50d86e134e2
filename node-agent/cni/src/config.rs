//! The network configuration the runtime streams on stdin.
//!
//! Decoded key by key rather than into one struct, so an error names the key that is wrong
//! (`runtimeConfig.portMappings: invalid value ...`) instead of a byte offset.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::proto::{AttachmentId, Failure, PortMapping, codes};
use crate::result::{CURRENT_VERSION, SUPPORTED_VERSIONS, failure, is_supported};

/// The config `type`s that name this plugin: the installed executable is `weft`; `weft-cni`
/// is accepted too so a config naming the binary as built also works.
pub const PLUGIN_TYPES: [&str; 2] = ["weft", "weft-cni"];

/// The parts of the configuration Weft uses; every other key is ignored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetConfig {
    pub cni_version: String,
    pub name: String,
    /// The ContainerNetwork (`network`, defaulting to `name`).
    pub network: String,
    /// The agent's socket (`socket`), if the config names one.
    pub socket: Option<String>,
    pub runtime: RuntimeConfig,
    /// CHECK (and DEL): the runtime's cached ADD result, verbatim.
    pub prev_result: Option<Value>,
    /// GC: `cni.dev/valid-attachments`; `None` when the key is absent.
    pub valid_attachments: Option<Vec<AttachmentId>>,
    /// `gwPriority`: the sandbox's attachment with the highest one gives the default route.
    pub gw_priority: Option<i32>,
    /// `defaultRoute`: `"keep"` (default: a default route in the sandbox that is not Weft's
    /// stays and Weft adds none) or `"replace"` (Weft's replaces it).
    pub replace_default_route: bool,
}

/// The capabilities Weft declares (`portMappings`, `ips`, `mac`, `aliases`), as the runtime
/// filled them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub port_mappings: Vec<PortMapping>,
    /// Requested addresses, as given (CIDR or plain).
    pub ips: Vec<String>,
    pub mac: Option<String>,
    /// DNS aliases per network name (Podman's `--network-alias` through its CNI backend:
    /// `{"<network>": ["alias", ...]}`, the dnsname plugin's convention).
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
}

/// A `cni.dev/valid-attachments` entry as the spec spells it.
#[derive(serde::Deserialize)]
struct GcAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    #[serde(rename = "ifname")]
    if_name: String,
}

/// Parses stdin as a JSON object; anything else is a decode failure (code 6).
pub fn parse_json(stdin: &[u8]) -> Result<Map<String, Value>, Failure> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(failure(
            codes::DECODE_FAILURE,
            "no network configuration on stdin: the runtime must pass it as JSON",
        ));
    }
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(failure(
            codes::DECODE_FAILURE,
            format!(
                "the network configuration on stdin must be a JSON object, not {}",
                kind(&other)
            ),
        )),
        Err(e) => Err(Failure {
            code: codes::DECODE_FAILURE,
            msg: "the network configuration on stdin is not valid JSON".into(),
            details: e.to_string(),
        }),
    }
}

/// The version to answer in: the config's own if this plugin speaks it, else the newest.
pub fn reply_version(map: &Map<String, Value>) -> String {
    match map.get("cniVersion").and_then(Value::as_str) {
        Some(version) if is_supported(version) => version.to_owned(),
        _ => CURRENT_VERSION.to_owned(),
    }
}

impl NetConfig {
    pub fn from_json(map: &Map<String, Value>) -> Result<Self, Failure> {
        let cni_version = check_version(map)?;
        let name: String = field(map, "name")?.unwrap_or_default();
        if name.is_empty() {
            return Err(failure(
                codes::INVALID_CONFIG,
                "the network configuration has no \"name\"",
            ));
        }
        let plugin_type: String = field(map, "type")?.unwrap_or_default();
        if !PLUGIN_TYPES.contains(&plugin_type.as_str()) {
            return Err(failure(
                codes::INVALID_CONFIG,
                format!(
                    "the network configuration's \"type\" is {plugin_type:?}, expected \"weft\""
                ),
            ));
        }
        let network = field::<String>(map, "network")?
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| name.clone());
        let socket = field::<String>(map, "socket")?.filter(|s| !s.is_empty());
        let runtime = match map.get("runtimeConfig") {
            None | Some(Value::Null) => RuntimeConfig::default(),
            Some(Value::Object(runtime)) => RuntimeConfig::from_json(runtime)?,
            Some(other) => {
                return Err(failure(
                    codes::INVALID_CONFIG,
                    format!("\"runtimeConfig\" must be an object, not {}", kind(other)),
                ));
            }
        };
        let prev_result = map.get("prevResult").filter(|v| !v.is_null()).cloned();
        // libcni sends the list under both names (the spec misspelled it once, cni#1101).
        let gc_key = if map.contains_key("cni.dev/valid-attachments") {
            "cni.dev/valid-attachments"
        } else {
            "cni.dev/attachments"
        };
        let valid_attachments = field::<Vec<GcAttachment>>(map, gc_key)?.map(|list| {
            list.into_iter()
                .map(|a| AttachmentId {
                    container_id: a.container_id,
                    if_name: a.if_name,
                })
                .collect()
        });
        let gw_priority = field::<i32>(map, "gwPriority")?;
        let replace_default_route = match field::<String>(map, "defaultRoute")?.as_deref() {
            None | Some("keep") => false,
            Some("replace") => true,
            Some(other) => {
                return Err(failure(
                    codes::INVALID_CONFIG,
                    format!("\"defaultRoute\" is {other:?}; it must be \"keep\" or \"replace\""),
                ));
            }
        };
        Ok(Self {
            cni_version,
            name,
            network,
            socket,
            runtime,
            prev_result,
            valid_attachments,
            gw_priority,
            replace_default_route,
        })
    }
}

impl RuntimeConfig {
    fn from_json(map: &Map<String, Value>) -> Result<Self, Failure> {
        let mut port_mappings: Vec<PortMapping> =
            field_at(map, "runtimeConfig.", "portMappings")?.unwrap_or_default();
        // Runtimes differ in case ("TCP" vs "tcp"); the agent compares lower case.
        for mapping in &mut port_mappings {
            mapping.protocol.make_ascii_lowercase();
        }
        let ips: Vec<String> = field_at(map, "runtimeConfig.", "ips")?.unwrap_or_default();
        let mac = field_at::<String>(map, "runtimeConfig.", "mac")?.filter(|m| !m.is_empty());
        let aliases = field_at(map, "runtimeConfig.", "aliases")?.unwrap_or_default();
        Ok(Self {
            port_mappings,
            ips,
            mac,
            aliases,
        })
    }

    /// The one requested address (without prefix) the agent is asked for, if any.
    pub fn requested_address(&self) -> Result<Option<String>, Failure> {
        match self.ips.as_slice() {
            [] => Ok(None),
            [one] => plain_address(one, "runtimeConfig.ips").map(Some),
            many => Err(failure(
                codes::INVALID_CONFIG,
                format!(
                    "runtimeConfig.ips asks for {} addresses ({}); weft assigns one per interface",
                    many.len(),
                    many.join(", ")
                ),
            )),
        }
    }
}

/// `10.0.0.7/24` or `10.0.0.7` → `10.0.0.7`, refusing what is not an address.
pub fn plain_address(text: &str, source: &str) -> Result<String, Failure> {
    let address = text
        .split_once('/')
        .map_or(text, |(address, _prefix)| address);
    address
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| {
            failure(
                codes::INVALID_CONFIG,
                format!("{source}: {text:?} is not an IP address"),
            )
        })
}

/// `cniVersion` must be one this plugin speaks (code 1, as the spec asks).
fn check_version(map: &Map<String, Value>) -> Result<String, Failure> {
    let supported = SUPPORTED_VERSIONS.join(", ");
    match map.get("cniVersion") {
        Some(Value::String(version)) if is_supported(version) => Ok(version.clone()),
        Some(Value::String(version)) => Err(failure(
            codes::INCOMPATIBLE_VERSION,
            format!("cniVersion {version:?} is not supported by weft-cni (supported: {supported})"),
        )),
        None | Some(Value::Null) => Err(failure(
            codes::INCOMPATIBLE_VERSION,
            format!("the network configuration has no \"cniVersion\" (supported: {supported})"),
        )),
        Some(other) => Err(failure(
            codes::INVALID_CONFIG,
            format!("\"cniVersion\" must be a string, not {}", kind(other)),
        )),
    }
}

fn field<T: DeserializeOwned>(map: &Map<String, Value>, key: &str) -> Result<Option<T>, Failure> {
    field_at(map, "", key)
}

/// Decodes `map[key]`; absent or null is `None`; a wrong shape names `prefix` + `key`.
fn field_at<T: DeserializeOwned>(
    map: &Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Result<Option<T>, Failure> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value).map(Some).map_err(|e| {
            failure(
                codes::INVALID_CONFIG,
                format!("\"{prefix}{key}\" in the network configuration is invalid: {e}"),
            )
        }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> Result<NetConfig, Failure> {
        let text = value.to_string();
        NetConfig::from_json(&parse_json(text.as_bytes())?)
    }

    #[test]
    fn minimal_config_defaults_network_to_name() {
        let cfg = config(json!({"cniVersion": "1.1.0", "name": "frontend", "type": "weft"}))
            .expect("valid");
        assert_eq!(cfg.network, "frontend");
        assert_eq!(cfg.socket, None);
        assert_eq!(cfg.runtime, RuntimeConfig::default());
        assert_eq!(cfg.valid_attachments, None);
        assert_eq!(cfg.gw_priority, None);
        assert!(!cfg.replace_default_route);
    }

    #[test]
    fn gw_priority_and_default_route() {
        let cfg = config(json!({"cniVersion": "1.0.0", "name": "n", "type": "weft",
            "gwPriority": 20, "defaultRoute": "replace"}))
        .expect("valid");
        assert_eq!(cfg.gw_priority, Some(20));
        assert!(cfg.replace_default_route);
        let keep = config(json!({"cniVersion": "1.0.0", "name": "n", "type": "weft",
            "defaultRoute": "keep"}))
        .expect("valid");
        assert!(!keep.replace_default_route);
        let bad = config(json!({"cniVersion": "1.0.0", "name": "n", "type": "weft",
            "defaultRoute": "always"}))
        .expect_err("refused");
        assert_eq!(bad.code, codes::INVALID_CONFIG);
        assert!(bad.msg.contains("defaultRoute"), "{}", bad.msg);
        let bad = config(json!({"cniVersion": "1.0.0", "name": "n", "type": "weft",
            "gwPriority": "high"}))
        .expect_err("refused");
        assert!(bad.msg.contains("gwPriority"), "{}", bad.msg);
    }

    #[test]
    fn reads_every_key_weft_uses() {
        let cfg = config(json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "weft",
            "network": "frontend", "socket": "/tmp/x.sock",
            "runtimeConfig": {
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
                    {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.1"},
                    {"hostPort": 9000, "containerPort": 9000},
                ],
                "ips": ["10.0.0.7/24"], "mac": "02:00:00:00:00:07",
                "bandwidth": {"ingressRate": 1}
            },
            "prevResult": {"cniVersion": "1.0.0", "ips": []},
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
        }))
        .expect("valid");
        assert_eq!(cfg.network, "frontend");
        assert_eq!(cfg.socket.as_deref(), Some("/tmp/x.sock"));
        let ports: Vec<_> = cfg
            .runtime
            .port_mappings
            .iter()
            .map(|p| {
                (
                    p.host_port,
                    p.container_port,
                    p.protocol.as_str(),
                    p.host_ip.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (8080, 80, "tcp", None),
                (53, 53, "udp", Some("192.0.2.1")),
                (9000, 9000, "tcp", None)
            ]
        );
        assert_eq!(
            cfg.runtime.requested_address().expect("one address"),
            Some("10.0.0.7".into())
        );
        assert_eq!(cfg.runtime.mac.as_deref(), Some("02:00:00:00:00:07"));
        assert_eq!(
            cfg.prev_result,
            Some(json!({"cniVersion": "1.0.0", "ips": []}))
        );
        assert_eq!(
            cfg.valid_attachments,
            Some(vec![AttachmentId {
                container_id: "c1".into(),
                if_name: "eth0".into()
            }])
        );
    }

    #[test]
    fn accepts_the_old_gc_key() {
        let cfg = config(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "weft",
            "cni.dev/attachments": [{"containerID": "c2", "ifname": "net1"}],
        }))
        .expect("valid");
        assert_eq!(cfg.valid_attachments.map(|v| v.len()), Some(1));
    }

    #[test]
    fn bad_json_is_a_decode_failure() {
        for stdin in [&b"{not json"[..], b"", b"  \n", b"[1,2]"] {
            let err = parse_json(stdin).expect_err("not an object");
            assert_eq!(err.code, codes::DECODE_FAILURE);
        }
    }

    #[test]
    fn name_and_type_are_checked() {
        let no_name = config(json!({"cniVersion": "1.1.0", "type": "weft"})).expect_err("no name");
        assert_eq!(no_name.code, codes::INVALID_CONFIG);
        assert!(no_name.msg.contains("no \"name\""), "{}", no_name.msg);
        let wrong = config(json!({"cniVersion": "1.1.0", "name": "n", "type": "bridge"}))
            .expect_err("type");
        assert_eq!(wrong.code, codes::INVALID_CONFIG);
        assert!(wrong.msg.contains("\"bridge\""), "{}", wrong.msg);
        let numeric =
            config(json!({"cniVersion": "1.1.0", "name": 5, "type": "weft"})).expect_err("number");
        assert_eq!(numeric.code, codes::INVALID_CONFIG);
    }

    #[test]
    fn unsupported_versions_are_code_1() {
        for version in [json!("0.2.0"), json!("2.0.0"), Value::Null] {
            let err = config(json!({"cniVersion": version, "name": "n", "type": "weft"}))
                .expect_err("version");
            assert_eq!(err.code, codes::INCOMPATIBLE_VERSION, "{version}");
        }
    }

    #[test]
    fn reply_version_falls_back_to_the_newest() {
        let map =
            |v: Value| parse_json(json!({"cniVersion": v}).to_string().as_bytes()).expect("object");
        assert_eq!(reply_version(&map(json!("0.3.1"))), "0.3.1");
        assert_eq!(reply_version(&map(json!("9.9.9"))), "1.1.0");
        assert_eq!(reply_version(&map(json!(1))), "1.1.0");
    }

    #[test]
    fn bad_port_mappings_name_the_key() {
        let err = config(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "weft",
            "runtimeConfig": {"portMappings": [{"hostPort": 70000, "containerPort": 80}]},
        }))
        .expect_err("port out of range");
        assert_eq!(err.code, codes::INVALID_CONFIG);
        assert!(
            err.msg.contains("runtimeConfig.portMappings"),
            "{}",
            err.msg
        );
    }

    #[test]
    fn gc_entries_need_both_fields() {
        let err = config(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "weft",
            "cni.dev/valid-attachments": [{"containerID": "c1"}],
        }))
        .expect_err("no ifname");
        assert!(err.msg.contains("cni.dev/valid-attachments"), "{}", err.msg);
    }

    #[test]
    fn requested_addresses() {
        let runtime = |ips: &[&str]| RuntimeConfig {
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(runtime(&[]).requested_address().expect("none"), None);
        assert_eq!(
            runtime(&["fd00::7/64"]).requested_address().expect("v6"),
            Some("fd00::7".into())
        );
        assert_eq!(
            runtime(&["10.0.0.7"]).requested_address().expect("plain"),
            Some("10.0.0.7".into())
        );
        assert!(
            runtime(&["10.0.0.7/24", "fd00::7/64"])
                .requested_address()
                .is_err()
        );
        assert!(runtime(&["ten"]).requested_address().is_err());
    }
}
