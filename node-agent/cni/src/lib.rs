//! Weft's CNI plugin and the wire protocol it shares with the node agent.
//!
//! The plugin (`weft-cni`) does no networking itself: it turns the runtime's CNI call
//! (environment + stdin) into one [`proto::Request`], sends it to the agent over a unix
//! socket, and turns the [`proto::Response`] into a CNI result or CNI error on stdout.
//!
//! [`run`] is the whole plugin; `main` only gathers the process's environment and stdin.

pub mod client;
pub mod config;
pub mod env;
pub mod proto;
pub mod result;

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use config::NetConfig;
use env::CniCommand;
use proto::{Failure, Request, Response, codes};
use result::{CURRENT_VERSION, failure};

/// Environment variable that overrides the socket path (tests, unusual installs).
pub const SOCKET_ENV: &str = "WEFT_CNI_SOCKET";

/// How long the agent may take: ADD can wait on the API server and the kernel; STATUS is a
/// readiness probe and must answer quickly.
const TIMEOUT: Duration = Duration::from_secs(60);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The network configuration is a few KiB; the cap only bounds a broken runtime.
const MAX_STDIN_BYTES: u64 = 16 << 20;

/// What the process prints on stdout and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: u8,
}

/// Runs one CNI invocation. VERSION reads `stdin` too (its answer carries the `cniVersion`
/// given there); `main` hands it an empty reader when stdin is a terminal.
pub fn run(env: &HashMap<String, String>, stdin: impl Read) -> Outcome {
    match invoke(env, stdin) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err((version, failure)) => Outcome {
            stdout: result::error_json(&version, &failure),
            // The spec asks for non-zero; 1 is what libcni's plugins use.
            exit_code: 1,
        },
    }
}

/// The error side carries the `cniVersion` to answer in.
type Failed = (String, Failure);

fn invoke(env: &HashMap<String, String>, stdin: impl Read) -> Result<String, Failed> {
    let newest = |f: Failure| (CURRENT_VERSION.to_owned(), f);
    let command = env::command(env).map_err(newest)?;
    let mut bytes = Vec::new();
    stdin
        .take(MAX_STDIN_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            newest(Failure {
                code: codes::IO_FAILURE,
                msg: "cannot read the network configuration from stdin".into(),
                details: e.to_string(),
            })
        })?;
    let Some(agent_command) = command.to_proto() else {
        // The spec: VERSION answers in the `cniVersion` given on input. A runtime probing
        // with no or a foreign version still learns what is supported, in the newest version.
        let version = config::parse_json(&bytes)
            .map(|json| config::reply_version(&json))
            .unwrap_or_else(|_| CURRENT_VERSION.to_owned());
        return Ok(result::version_json(&version));
    };
    let json = config::parse_json(&bytes).map_err(newest)?;
    let version = config::reply_version(&json);
    let with_version = |f: Failure| (version.clone(), f);

    let attachment = env::attachment(command, env).map_err(with_version)?;
    let config = NetConfig::from_json(&json).map_err(with_version)?;
    check_command_allowed(command, &config.cni_version).map_err(with_version)?;
    let request = build_request(agent_command, &config, attachment).map_err(with_version)?;

    let socket = socket_path(env, &config);
    let timeout = if command == CniCommand::Status {
        STATUS_TIMEOUT
    } else {
        TIMEOUT
    };
    match client::round_trip(&socket, &request, timeout).map_err(with_version)? {
        Response::Error(f) => Err(with_version(f)),
        Response::Ok(attachment) if command == CniCommand::Add => {
            Ok(result::success_json(&config.cni_version, &attachment))
        }
        // DEL, CHECK, STATUS and GC succeed silently.
        Response::Ok(_) => Ok(String::new()),
    }
}

/// CHECK arrived with spec 0.4.0, STATUS and GC with 1.1.0; like libcni's skel, refuse them
/// under an older `cniVersion` instead of guessing what the runtime means.
fn check_command_allowed(command: CniCommand, version: &str) -> Result<(), Failure> {
    let since = match command {
        CniCommand::Check => "0.4.0",
        CniCommand::Status | CniCommand::Gc => "1.1.0",
        _ => return Ok(()),
    };
    let order = |v: &str| result::SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    if order(version) < order(since) {
        return Err(failure(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "{} needs cniVersion {since} or newer; the configuration says {version}",
                command.name()
            ),
        ));
    }
    Ok(())
}

/// Turns the CNI call into the agent's request. Requested address and MAC: runtimeConfig
/// (`ips`, `mac`) wins over `CNI_ARGS` (`IP=`, `MAC=`), being the structured, newer form.
pub fn build_request(
    command: proto::Command,
    config: &NetConfig,
    attachment: env::Attachment,
) -> Result<Request, Failure> {
    let mut request = Request {
        protocol: proto::PROTOCOL,
        command,
        config_name: config.name.clone(),
        network: config.network.clone(),
        container_id: attachment.container_id,
        netns: attachment.netns,
        if_name: attachment.if_name,
        pod_namespace: attachment.args.pod_namespace,
        pod_name: attachment.args.pod_name,
        address: None,
        mac: None,
        port_mappings: Vec::new(),
        valid_attachments: Vec::new(),
        prev_result: None,
        gw_priority: None,
        replace_default_route: false,
        aliases: Vec::new(),
    };
    match command {
        proto::Command::Add | proto::Command::Del | proto::Command::Check => {
            request.address =
                match config.runtime.requested_address()? {
                    Some(address) => Some(address),
                    None => match &attachment.args.ip {
                        Some(ip) => Some(config::plain_address(ip, "CNI_ARGS IP").map_err(
                            |f| Failure {
                                code: codes::INVALID_ENVIRONMENT,
                                ..f
                            },
                        )?),
                        None => None,
                    },
                };
            request.mac = config.runtime.mac.clone().or(attachment.args.mac);
            request.port_mappings = config.runtime.port_mappings.clone();
            request.gw_priority = match (config.gw_priority, &attachment.args.gw_priority) {
                (Some(p), _) => Some(p),
                (None, Some(raw)) => Some(raw.trim().parse::<i32>().map_err(|_| {
                    failure(
                        codes::INVALID_ENVIRONMENT,
                        format!("CNI_ARGS GW_PRIORITY={raw:?} is not an integer"),
                    )
                })?),
                (None, None) => None,
            };
            request.replace_default_route = config.replace_default_route;
            // Podman keys them by its network name, which is the configuration's name.
            request.aliases = config
                .runtime
                .aliases
                .get(&config.name)
                .cloned()
                .unwrap_or_default();
        }
        proto::Command::Status => {}
        proto::Command::Gc => {
            // An absent list must not reach the agent as "nothing is valid".
            let Some(valid) = &config.valid_attachments else {
                return Err(failure(
                    codes::INVALID_CONFIG,
                    "GC needs \"cni.dev/valid-attachments\" in the configuration; without it \
                     weft would remove every attachment on this node, so it does nothing",
                ));
            };
            request.valid_attachments = valid.clone();
        }
    }
    if command == proto::Command::Check {
        let Some(prev) = &config.prev_result else {
            return Err(failure(
                codes::INVALID_CONFIG,
                "CHECK needs \"prevResult\" (the result of ADD) in the configuration",
            ));
        };
        request.prev_result = Some(prev.clone());
    }
    Ok(request)
}

/// `WEFT_CNI_SOCKET`, else the config's `socket`, else [`proto::DEFAULT_SOCKET`].
fn socket_path(env: &HashMap<String, String>, config: &NetConfig) -> PathBuf {
    env.get(SOCKET_ENV)
        .filter(|s| !s.is_empty())
        .or(config.socket.as_ref())
        .map_or_else(|| PathBuf::from(proto::DEFAULT_SOCKET), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config(extra: Value) -> NetConfig {
        let mut base =
            json!({"cniVersion": "1.1.0", "name": "pods", "type": "weft", "network": "frontend"});
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        let map = config::parse_json(base.to_string().as_bytes()).expect("object");
        NetConfig::from_json(&map).expect("valid config")
    }

    fn add_attachment(args: &str) -> env::Attachment {
        env::attachment(
            CniCommand::Add,
            &env(&[
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/run/netns/c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", args),
            ]),
        )
        .expect("valid env")
    }

    #[test]
    fn version_needs_no_stdin() {
        let outcome = run(&env(&[("CNI_COMMAND", "VERSION")]), std::io::empty());
        assert_eq!(outcome.exit_code, 0);
        let reply: Value = serde_json::from_str(&outcome.stdout).expect("json");
        assert_eq!(reply["cniVersion"], "1.1.0");
    }

    #[test]
    fn version_answers_in_the_version_asked() {
        let ask = |stdin: &str| {
            let outcome = run(&env(&[("CNI_COMMAND", "VERSION")]), stdin.as_bytes());
            assert_eq!(outcome.exit_code, 0, "{}", outcome.stdout);
            let reply: Value = serde_json::from_str(&outcome.stdout).expect("json");
            reply["cniVersion"].as_str().unwrap_or_default().to_owned()
        };
        assert_eq!(ask(r#"{"cniVersion":"1.0.0"}"#), "1.0.0");
        assert_eq!(ask(r#"{"cniVersion":"0.3.1"}"#), "0.3.1");
        assert_eq!(ask(r#"{"cniVersion":"0.2.0"}"#), "1.1.0");
        assert_eq!(ask("not json"), "1.1.0");
    }

    #[test]
    fn no_command_is_an_error_in_the_newest_version() {
        let outcome = run(&env(&[]), std::io::empty());
        assert_eq!(outcome.exit_code, 1);
        let reply: Value = serde_json::from_str(&outcome.stdout).expect("json");
        assert_eq!(reply["code"], 4);
        assert_eq!(reply["cniVersion"], "1.1.0");
    }

    #[test]
    fn add_request_carries_the_attachment_and_runtime_config() {
        let cfg = config(json!({"runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "ips": ["10.0.0.9/24"], "mac": "02:00:00:00:00:09"
        }}));
        let request = build_request(
            proto::Command::Add,
            &cfg,
            add_attachment(
                "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;IP=10.0.0.5;MAC=02:00:00:00:00:05",
            ),
        )
        .expect("request");
        assert_eq!(request.protocol, proto::PROTOCOL);
        assert_eq!(
            (request.config_name.as_str(), request.network.as_str()),
            ("pods", "frontend")
        );
        assert_eq!(
            (
                request.container_id.as_str(),
                request.netns.as_str(),
                request.if_name.as_str()
            ),
            ("c1", "/run/netns/c1", "eth0")
        );
        assert_eq!(request.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(request.pod_name.as_deref(), Some("web-0"));
        // runtimeConfig wins over CNI_ARGS.
        assert_eq!(request.address.as_deref(), Some("10.0.0.9"));
        assert_eq!(request.mac.as_deref(), Some("02:00:00:00:00:09"));
        assert_eq!(request.port_mappings.len(), 1);
        assert_eq!(request.prev_result, None);
        assert!(request.valid_attachments.is_empty());
    }

    #[test]
    fn cni_args_address_is_used_without_runtime_config() {
        let request = build_request(
            proto::Command::Add,
            &config(json!({})),
            add_attachment("IP=10.0.0.5;MAC=02:00:00:00:00:05"),
        )
        .expect("request");
        assert_eq!(request.address.as_deref(), Some("10.0.0.5"));
        assert_eq!(request.mac.as_deref(), Some("02:00:00:00:00:05"));
        let bad = build_request(
            proto::Command::Add,
            &config(json!({})),
            add_attachment("IP=nope"),
        )
        .expect_err("not an address");
        assert_eq!(bad.code, codes::INVALID_ENVIRONMENT);
        assert!(bad.msg.contains("CNI_ARGS IP"), "{}", bad.msg);
    }

    #[test]
    fn gw_priority_from_the_config_or_cni_args_and_default_route_from_the_config() {
        let from_args = build_request(
            proto::Command::Add,
            &config(json!({})),
            add_attachment("GW_PRIORITY=7"),
        )
        .expect("request");
        assert_eq!(from_args.gw_priority, Some(7));
        assert!(!from_args.replace_default_route);
        let from_config = build_request(
            proto::Command::Add,
            &config(json!({"gwPriority": -2, "defaultRoute": "replace"})),
            add_attachment("GW_PRIORITY=7"),
        )
        .expect("request");
        assert_eq!(from_config.gw_priority, Some(-2), "the config key wins");
        assert!(from_config.replace_default_route);
        let bad = build_request(
            proto::Command::Add,
            &config(json!({})),
            add_attachment("GW_PRIORITY=high"),
        )
        .expect_err("not an integer");
        assert_eq!(bad.code, codes::INVALID_ENVIRONMENT);
        assert!(bad.msg.contains("GW_PRIORITY"), "{}", bad.msg);
    }

    #[test]
    fn gc_without_a_list_is_refused_but_an_empty_list_is_sent() {
        let err = build_request(
            proto::Command::Gc,
            &config(json!({})),
            env::Attachment::default(),
        )
        .expect_err("no list");
        assert_eq!(err.code, codes::INVALID_CONFIG);
        let empty = build_request(
            proto::Command::Gc,
            &config(json!({"cni.dev/valid-attachments": []})),
            env::Attachment::default(),
        )
        .expect("explicitly nothing is valid");
        assert!(empty.valid_attachments.is_empty());
    }

    #[test]
    fn check_needs_prev_result() {
        let attachment = add_attachment("");
        let err = build_request(
            proto::Command::Check,
            &config(json!({})),
            attachment.clone(),
        )
        .expect_err("no prevResult");
        assert_eq!(err.code, codes::INVALID_CONFIG);
        let prev = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.5/24"}]});
        let request = build_request(
            proto::Command::Check,
            &config(json!({"prevResult": prev})),
            attachment,
        )
        .expect("request");
        assert_eq!(request.prev_result, Some(prev));
    }

    #[test]
    fn new_commands_need_new_versions() {
        assert!(check_command_allowed(CniCommand::Check, "0.3.1").is_err());
        assert!(check_command_allowed(CniCommand::Check, "0.4.0").is_ok());
        assert!(check_command_allowed(CniCommand::Gc, "1.0.0").is_err());
        assert!(check_command_allowed(CniCommand::Status, "1.1.0").is_ok());
        assert!(check_command_allowed(CniCommand::Add, "0.3.0").is_ok());
    }

    #[test]
    fn socket_path_precedence() {
        let with_socket = config(json!({"socket": "/etc/weft.sock"}));
        assert_eq!(
            socket_path(&env(&[]), &config(json!({}))),
            PathBuf::from(proto::DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_path(&env(&[]), &with_socket),
            PathBuf::from("/etc/weft.sock")
        );
        assert_eq!(
            socket_path(&env(&[(SOCKET_ENV, "/tmp/t.sock")]), &with_socket),
            PathBuf::from("/tmp/t.sock")
        );
    }
}
