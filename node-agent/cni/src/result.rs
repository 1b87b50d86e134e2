//! What the plugin prints: the CNI result of ADD, the CNI error object, the VERSION answer,
//! each in the shape of the `cniVersion` the runtime asked for.

use serde_json::{Map, Value, json};

use crate::proto::{Attachment, Failure};

/// The newest spec this plugin speaks; also the version of replies given before the
/// configuration (and so the runtime's version) is known.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Every spec version with the result shape of 0.3.0 or later; older ones (`ip4`/`ip6`
/// results) are not spoken.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Shorthand for a [`Failure`] without details.
pub fn failure(code: u32, msg: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
        details: String::new(),
    }
}

/// VERSION's answer, in `version` (the one the runtime gave on input, if supported).
pub fn version_json(version: &str) -> String {
    json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

/// The CNI error object (the runtime shows `msg`, so it is written for a person).
pub fn error_json(version: &str, failure: &Failure) -> String {
    let mut error = Map::new();
    error.insert("cniVersion".into(), version.into());
    error.insert("code".into(), failure.code.into());
    error.insert("msg".into(), failure.msg.as_str().into());
    if !failure.details.is_empty() {
        error.insert("details".into(), failure.details.as_str().into());
    }
    Value::Object(error).to_string()
}

/// Spec 0.3.0 through 0.4.0 tag every `ips[]` entry with `"version": "4"|"6"`; 1.0.0 dropped
/// the field (libcni's `convertTo04x` adds it for exactly these three).
pub fn needs_ip_version(version: &str) -> bool {
    matches!(version, "0.3.0" | "0.3.1" | "0.4.0")
}

/// ADD's result for `version`, from the agent's [`Attachment`].
pub fn success_json(version: &str, attachment: &Attachment) -> String {
    let tag_ip_version = needs_ip_version(version);
    let interfaces: Vec<Value> = attachment
        .interfaces
        .iter()
        .map(|interface| {
            let mut entry = Map::new();
            entry.insert("name".into(), interface.name.as_str().into());
            if let Some(mac) = &interface.mac {
                entry.insert("mac".into(), mac.as_str().into());
            }
            if let Some(sandbox) = &interface.sandbox {
                entry.insert("sandbox".into(), sandbox.as_str().into());
            }
            Value::Object(entry)
        })
        .collect();
    let ips: Vec<Value> = attachment
        .ips
        .iter()
        .map(|ip| {
            let mut entry = Map::new();
            if tag_ip_version {
                entry.insert("version".into(), ip_version(&ip.address).into());
            }
            entry.insert("address".into(), ip.address.as_str().into());
            if let Some(gateway) = &ip.gateway {
                entry.insert("gateway".into(), gateway.as_str().into());
            }
            if let Some(index) = ip.interface {
                entry.insert("interface".into(), index.into());
            }
            Value::Object(entry)
        })
        .collect();
    let routes: Vec<Value> = attachment
        .routes
        .iter()
        .map(|route| {
            let mut entry = Map::new();
            entry.insert("dst".into(), route.dst.as_str().into());
            if let Some(gw) = &route.gw {
                entry.insert("gw".into(), gw.as_str().into());
            }
            Value::Object(entry)
        })
        .collect();
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": attachment.dns.clone().unwrap_or_default(),
    })
    .to_string()
}

/// Every IPv6 text form has a ':' and no IPv4 form does, prefix or not.
fn ip_version(address: &str) -> &'static str {
    if address.contains(':') { "6" } else { "4" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Interface, IpConfig, RouteConfig};

    fn attachment() -> Attachment {
        Attachment {
            interfaces: vec![
                Interface {
                    name: "weft-1a2b".into(),
                    mac: Some("02:aa:00:00:00:01".into()),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:42:0a:00:00:07".into()),
                    sandbox: Some("/run/netns/pod".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.0.0.7/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::7/64".into(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![RouteConfig {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.0.0.1".into()),
            }],
            dns: None,
        }
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("the plugin prints JSON")
    }

    #[test]
    fn result_1_1_has_no_ip_version() {
        let result = parse(&success_json("1.1.0", &attachment()));
        assert_eq!(
            result,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "weft-1a2b", "mac": "02:aa:00:00:00:01"},
                    {"name": "eth0", "mac": "02:42:0a:00:00:07", "sandbox": "/run/netns/pod"},
                ],
                "ips": [
                    {"address": "10.0.0.7/24", "gateway": "10.0.0.1", "interface": 1},
                    {"address": "fd00::7/64", "interface": 1},
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
                "dns": {},
            })
        );
    }

    #[test]
    fn the_agents_dns_is_the_results_dns() {
        let mut with_dns = attachment();
        with_dns.dns = Some(crate::proto::Dns {
            nameservers: vec!["10.0.0.1".into()],
            search: vec!["blue.weft.internal".into()],
            ..Default::default()
        });
        let result = parse(&success_json("1.0.0", &with_dns));
        assert_eq!(
            result["dns"],
            json!({"nameservers": ["10.0.0.1"], "search": ["blue.weft.internal"]})
        );
    }

    #[test]
    fn results_before_1_0_tag_ip_versions() {
        for version in ["0.3.0", "0.3.1", "0.4.0"] {
            let result = parse(&success_json(version, &attachment()));
            assert_eq!(result["cniVersion"], version);
            assert_eq!(result["ips"][0]["version"], "4", "{version}");
            assert_eq!(result["ips"][1]["version"], "6", "{version}");
        }
        let v1 = parse(&success_json("1.0.0", &attachment()));
        assert!(v1["ips"][0].get("version").is_none());
    }

    #[test]
    fn an_empty_attachment_still_has_every_list() {
        let result = parse(&success_json("1.1.0", &Attachment::default()));
        assert_eq!(
            result,
            json!({"cniVersion": "1.1.0", "interfaces": [], "ips": [], "routes": [], "dns": {}})
        );
    }

    #[test]
    fn errors_omit_empty_details() {
        let bare = parse(&error_json("1.0.0", &failure(50, "down")));
        assert_eq!(
            bare,
            json!({"cniVersion": "1.0.0", "code": 50, "msg": "down"})
        );
        let detailed = Failure {
            code: 104,
            msg: "kernel said no".into(),
            details: "EBUSY".into(),
        };
        assert_eq!(parse(&error_json("1.1.0", &detailed))["details"], "EBUSY");
    }

    #[test]
    fn version_lists_every_supported_version() {
        assert_eq!(
            parse(&version_json("1.1.0")),
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }
}
