//! Runs the built `weft-cni` the way a container runtime does (CNI_* variables, config JSON
//! on stdin, result on stdout, exit code) against a fake agent: a thread on a unix socket in
//! a temp dir that records each request and answers a canned response. The real agent is
//! tested end to end elsewhere; here the subject is the plugin's half of the contract.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_cni::proto::{
    Attachment, AttachmentId, Command, Dns, Failure, Interface, IpConfig, PROTOCOL, PortMapping,
    Request, Response, RouteConfig, codes,
};

const RESULT_SCHEMA: &str = include_str!("cni-result-1.1.schema.json");
const ERROR_SCHEMA: &str = include_str!("cni-error-1.1.schema.json");

/// A fake agent answering `responses`, one per connection, in order.
struct FakeAgent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    thread: JoinHandle<Vec<Request>>,
}

impl FakeAgent {
    fn start(responses: Vec<Response>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("cni.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake agent's socket");
        // Polled accept, so a plugin that never connects fails the test instead of hanging it.
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let thread = std::thread::spawn(move || {
            let mut received = Vec::new();
            for response in responses {
                let Some(stream) = accept_within(&listener, Duration::from_secs(20)) else {
                    break;
                };
                stream.set_nonblocking(false).expect("blocking stream");
                let mut line = String::new();
                BufReader::new(&stream)
                    .read_line(&mut line)
                    .expect("read the request line");
                received
                    .push(serde_json::from_str(&line).expect("the plugin sends a proto::Request"));
                let mut answer = serde_json::to_vec(&response).expect("encode the response");
                answer.push(b'\n');
                (&stream).write_all(&answer).expect("write the response");
            }
            received
        });
        Self {
            _dir: dir,
            socket,
            thread,
        }
    }

    /// Every request the agent received, after the plugin is done.
    fn requests(self) -> Vec<Request> {
        self.thread.join().expect("fake agent thread")
    }

    /// The only request; fails if the plugin sent none or several.
    fn request(self) -> Request {
        let mut requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one request: {requests:?}"
        );
        requests.remove(0)
    }
}

fn accept_within(
    listener: &UnixListener,
    limit: Duration,
) -> Option<std::os::unix::net::UnixStream> {
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

/// What one plugin run printed and returned.
struct Run {
    stdout: String,
    code: i32,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs the binary with exactly `vars` (nothing inherited) and `stdin`.
fn plugin(vars: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Process::new(env!("CARGO_BIN_EXE_weft-cni"))
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weft-cni");
    if let Some(mut input) = child.stdin.take() {
        // VERSION exits without reading; a broken pipe then is expected.
        let _ = input.write_all(stdin.as_bytes());
    }
    let output = child.wait_with_output().expect("wait for weft-cni");
    Run {
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        code: output.status.code().expect("weft-cni exited, not killed"),
    }
}

fn socket_var(socket: &Path) -> (&'static str, &str) {
    ("WEFT_CNI_SOCKET", socket.to_str().expect("UTF-8 temp path"))
}

/// ADD's variables as kubelet (via containerd) sets them.
fn add_vars<'a>(socket: &'a Path, command: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "3f6940ab5ab4"),
        ("CNI_NETNS", "/var/run/netns/cni-1234"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=3f6940ab5ab4;K8S_POD_UID=0f3c",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
        socket_var(socket),
    ]
}

fn config(version: &str, extra: Value) -> String {
    let mut config =
        json!({"cniVersion": version, "name": "pods", "type": "weft", "network": "frontend"});
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    config.to_string()
}

fn assert_valid(schema_text: &str, instance: &Value) {
    let schema: Value = serde_json::from_str(schema_text).expect("the schema is JSON");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema is a valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{instance} does not match the schema: {errors:#?}"
    );
}

/// The plugin failed with `code`, printed a spec error object, and exited non-zero.
fn assert_cni_error(run: &Run, version: &str, code: u32) -> Value {
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    let error = run.json();
    assert_valid(ERROR_SCHEMA, &error);
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(error["cniVersion"], version, "{error}");
    error
}

fn dual_stack_attachment() -> Attachment {
    Attachment {
        interfaces: vec![
            Interface {
                name: "weft-3f6940ab".into(),
                mac: Some("02:aa:3f:69:40:ab".into()),
                sandbox: None,
            },
            Interface {
                name: "eth0".into(),
                mac: Some("02:42:0a:c8:00:07".into()),
                sandbox: Some("/var/run/netns/cni-1234".into()),
            },
        ],
        ips: vec![
            IpConfig {
                address: "10.200.0.7/24".into(),
                gateway: Some("10.200.0.1".into()),
                interface: Some(1),
            },
            IpConfig {
                address: "fd00:200::7/64".into(),
                gateway: Some("fd00:200::1".into()),
                interface: Some(1),
            },
        ],
        routes: vec![
            RouteConfig {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.200.0.1".into()),
            },
            RouteConfig {
                dst: "::/0".into(),
                gw: None,
            },
        ],
        dns: Some(Dns {
            nameservers: vec!["10.200.0.1".into()],
            search: vec!["frontend.weft.internal".into()],
            ..Dns::default()
        }),
    }
}

#[test]
fn version_is_answered_without_the_agent() {
    let run = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.json(),
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn add_prints_a_cni_1_1_result_and_sends_the_whole_attachment() {
    let agent = FakeAgent::start(vec![Response::Ok(dual_stack_attachment())]);
    let stdin = config(
        "1.1.0",
        json!({
            // WEFT_CNI_SOCKET must win over this.
            "socket": "/nonexistent/weft/cni.sock",
            "runtimeConfig": {
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.10"}
                ],
                "ips": ["10.200.0.7/24"],
                "mac": "02:42:0a:c8:00:07",
                // Podman's network aliases, keyed by its network (the configuration's name).
                "aliases": {"pods": ["web", "shop-web"], "other": ["not-this-one"]}
            }
        }),
    );
    let run = plugin(&add_vars(&agent.socket, "ADD"), &stdin);
    assert_eq!(run.code, 0, "stdout: {}", run.stdout);
    let result = run.json();
    assert_valid(RESULT_SCHEMA, &result);
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "weft-3f6940ab", "mac": "02:aa:3f:69:40:ab"},
                {"name": "eth0", "mac": "02:42:0a:c8:00:07", "sandbox": "/var/run/netns/cni-1234"}
            ],
            "ips": [
                {"address": "10.200.0.7/24", "gateway": "10.200.0.1", "interface": 1},
                {"address": "fd00:200::7/64", "gateway": "fd00:200::1", "interface": 1}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"}, {"dst": "::/0"}],
            "dns": {"nameservers": ["10.200.0.1"], "search": ["frontend.weft.internal"]}
        })
    );

    let request = agent.request();
    assert_eq!(request.aliases, ["web", "shop-web"]);
    assert_eq!(request.protocol, PROTOCOL);
    assert_eq!(request.command, Command::Add);
    assert_eq!(request.config_name, "pods");
    assert_eq!(request.network, "frontend");
    assert_eq!(request.container_id, "3f6940ab5ab4");
    assert_eq!(request.netns, "/var/run/netns/cni-1234");
    assert_eq!(request.if_name, "eth0");
    assert_eq!(request.pod_namespace.as_deref(), Some("shop"));
    assert_eq!(request.pod_name.as_deref(), Some("web-0"));
    assert_eq!(request.address.as_deref(), Some("10.200.0.7"));
    assert_eq!(request.mac.as_deref(), Some("02:42:0a:c8:00:07"));
    assert_eq!(
        request.port_mappings,
        vec![
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None
            },
            PortMapping {
                host_port: 5353,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: Some("192.0.2.10".into()),
            },
        ]
    );
    assert_eq!(request.prev_result, None);
    assert!(request.valid_attachments.is_empty());
}

#[test]
fn add_with_a_0_3_1_config_tags_ip_versions() {
    let agent = FakeAgent::start(vec![Response::Ok(dual_stack_attachment())]);
    let run = plugin(&add_vars(&agent.socket, "ADD"), &config("0.3.1", json!({})));
    assert_eq!(run.code, 0, "stdout: {}", run.stdout);
    let result = run.json();
    assert_eq!(result["cniVersion"], "0.3.1");
    assert_eq!(result["ips"][0]["version"], "4");
    assert_eq!(result["ips"][1]["version"], "6");
    assert_eq!(result["ips"][0]["address"], "10.200.0.7/24");
    // Apart from the version tags, the shape is the one the 1.1 schema describes.
    let mut untagged = result.clone();
    untagged["cniVersion"] = json!("1.1.0");
    for ip in untagged["ips"].as_array_mut().expect("ips") {
        ip.as_object_mut().expect("ip object").remove("version");
    }
    assert_valid(RESULT_SCHEMA, &untagged);
    assert_eq!(agent.request().command, Command::Add);
}

#[test]
fn an_agent_error_is_passed_through() {
    let agent = FakeAgent::start(vec![Response::Error(Failure {
        code: codes::NO_FREE_ADDRESS,
        msg: "network frontend has no free address left on node-a".into(),
        details: "block 10.200.0.0/28: 14 of 14 addresses in use".into(),
    })]);
    let run = plugin(&add_vars(&agent.socket, "ADD"), &config("1.0.0", json!({})));
    let error = assert_cni_error(&run, "1.0.0", codes::NO_FREE_ADDRESS);
    assert_eq!(
        error["msg"],
        "network frontend has no free address left on node-a"
    );
    assert_eq!(
        error["details"],
        "block 10.200.0.0/28: 14 of 14 addresses in use"
    );
    assert_eq!(agent.request().command, Command::Add);
}

#[test]
fn a_missing_agent_socket_is_plugin_not_available() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("cni.sock");
    let run = plugin(&add_vars(&socket, "ADD"), &config("1.1.0", json!({})));
    let error = assert_cni_error(&run, "1.1.0", codes::NOT_AVAILABLE);
    assert_eq!(
        error["msg"],
        format!(
            "weft-agent is not running on this node (no socket at {})",
            socket.display()
        )
    );
}

#[test]
fn stdin_that_is_not_json_is_a_decode_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("cni.sock");
    let run = plugin(&add_vars(&socket, "ADD"), "cniVersion: 1.1.0\nname: pods\n");
    let error = assert_cni_error(&run, "1.1.0", codes::DECODE_FAILURE);
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("not valid JSON")),
        "{error}"
    );
}

#[test]
fn add_without_ifname_names_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("cni.sock");
    let vars: Vec<_> = add_vars(&socket, "ADD")
        .into_iter()
        .filter(|(k, _)| *k != "CNI_IFNAME")
        .collect();
    let run = plugin(&vars, &config("1.1.0", json!({})));
    let error = assert_cni_error(&run, "1.1.0", codes::INVALID_ENVIRONMENT);
    assert_eq!(
        error["msg"],
        "CNI_IFNAME is not set, but ADD needs it (the interface name inside the container)"
    );
}

#[test]
fn a_config_without_name_or_of_another_type_is_invalid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("cni.sock");
    let no_name = plugin(
        &add_vars(&socket, "ADD"),
        r#"{"cniVersion":"1.1.0","type":"weft"}"#,
    );
    assert_cni_error(&no_name, "1.1.0", codes::INVALID_CONFIG);
    let bridge = plugin(
        &add_vars(&socket, "ADD"),
        r#"{"cniVersion":"1.1.0","name":"pods","type":"bridge"}"#,
    );
    let error = assert_cni_error(&bridge, "1.1.0", codes::INVALID_CONFIG);
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("\"bridge\"")),
        "{error}"
    );
}

#[test]
fn an_unsupported_cni_version_is_code_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("cni.sock");
    let run = plugin(&add_vars(&socket, "ADD"), &config("0.2.0", json!({})));
    let error = assert_cni_error(&run, "1.1.0", codes::INCOMPATIBLE_VERSION);
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("\"0.2.0\"")),
        "{error}"
    );
}

#[test]
fn del_without_a_netns_still_reaches_the_agent() {
    let agent = FakeAgent::start(vec![Response::Ok(Attachment::default())]);
    let mut vars = add_vars(&agent.socket, "DEL");
    for (key, value) in &mut vars {
        if *key == "CNI_NETNS" {
            *value = "";
        }
    }
    let run = plugin(&vars, &config("1.1.0", json!({})));
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));
    let request = agent.request();
    assert_eq!(request.command, Command::Del);
    assert_eq!(request.netns, "");
    assert_eq!(request.container_id, "3f6940ab5ab4");
    assert_eq!(request.if_name, "eth0");
    assert_eq!(request.pod_name.as_deref(), Some("web-0"));
}

#[test]
fn check_sends_prev_result_verbatim() {
    let agent = FakeAgent::start(vec![Response::Ok(Attachment::default())]);
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/cni-1234"}],
        "ips": [{"address": "10.200.0.7/24", "interface": 0}],
        "dns": {}
    });
    let run = plugin(
        &add_vars(&agent.socket, "CHECK"),
        &config("1.1.0", json!({"prevResult": prev})),
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));
    let request = agent.request();
    assert_eq!(request.command, Command::Check);
    assert_eq!(request.prev_result, Some(prev));
    assert_eq!(request.netns, "/var/run/netns/cni-1234");
}

#[test]
fn check_failure_is_reported() {
    let agent = FakeAgent::start(vec![Response::Error(Failure {
        code: codes::CHECK_FAILED,
        msg: "eth0 in /var/run/netns/cni-1234 has no address 10.200.0.7/24".into(),
        details: String::new(),
    })]);
    let run = plugin(
        &add_vars(&agent.socket, "CHECK"),
        &config("1.1.0", json!({"prevResult": {"cniVersion": "1.1.0"}})),
    );
    let error = assert_cni_error(&run, "1.1.0", codes::CHECK_FAILED);
    assert!(error.get("details").is_none(), "{error}");
    agent.request();
}

#[test]
fn gc_sends_the_valid_attachments_to_the_socket_from_the_config() {
    let agent = FakeAgent::start(vec![Response::Ok(Attachment::default())]);
    let socket = agent.socket.to_str().expect("UTF-8").to_owned();
    let stdin = config(
        "1.1.0",
        json!({
            "socket": socket,
            "cni.dev/valid-attachments": [
                {"containerID": "3f6940ab5ab4", "ifname": "eth0"},
                {"containerID": "3f6940ab5ab4", "ifname": "net1"},
                {"containerID": "9c1e", "ifname": "eth0"}
            ],
            "cni.dev/attachments": [{"containerID": "ignored", "ifname": "eth0"}]
        }),
    );
    // GC needs no container variables; the socket comes from the config this time.
    let run = plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &stdin,
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));
    let request = agent.request();
    assert_eq!(request.command, Command::Gc);
    assert_eq!(request.network, "frontend");
    assert_eq!(request.container_id, "");
    let id = |container: &str, ifname: &str| AttachmentId {
        container_id: container.into(),
        if_name: ifname.into(),
    };
    assert_eq!(
        request.valid_attachments,
        vec![
            id("3f6940ab5ab4", "eth0"),
            id("3f6940ab5ab4", "net1"),
            id("9c1e", "eth0")
        ]
    );
}

#[test]
fn gc_without_a_list_does_not_reach_the_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("cni.sock");
    let run = plugin(
        &[("CNI_COMMAND", "GC"), socket_var(&socket)],
        &config("1.1.0", json!({})),
    );
    let error = assert_cni_error(&run, "1.1.0", codes::INVALID_CONFIG);
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("cni.dev/valid-attachments")),
        "{error}"
    );
}

#[test]
fn status_reports_the_agents_readiness() {
    let agent = FakeAgent::start(vec![
        Response::Ok(Attachment::default()),
        Response::Error(Failure {
            code: codes::NOT_AVAILABLE,
            msg: "weft-agent has not synced with the API server yet".into(),
            details: String::new(),
        }),
    ]);
    let vars = [("CNI_COMMAND", "STATUS"), socket_var(&agent.socket)];
    let ready = plugin(&vars, &config("1.1.0", json!({})));
    assert_eq!((ready.code, ready.stdout.as_str()), (0, ""));
    let not_ready = plugin(&vars, &config("1.1.0", json!({})));
    let error = assert_cni_error(&not_ready, "1.1.0", codes::NOT_AVAILABLE);
    assert_eq!(
        error["msg"],
        "weft-agent has not synced with the API server yet"
    );
    let requests = agent.requests();
    assert_eq!(requests.len(), 2);
    for request in requests {
        assert_eq!(request.command, Command::Status);
        assert_eq!(
            (request.container_id.as_str(), request.if_name.as_str()),
            ("", "")
        );
    }
}

#[test]
fn status_without_an_agent_is_not_available() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("cni.sock");
    let run = plugin(
        &[("CNI_COMMAND", "STATUS"), socket_var(&socket)],
        &config("1.1.0", json!({})),
    );
    assert_cni_error(&run, "1.1.0", codes::NOT_AVAILABLE);
}

/// The schemas themselves must reject what they exist to catch.
#[test]
fn the_schemas_reject_misspelled_and_missing_fields() {
    let schema = |text: &str| {
        let schema: Value = serde_json::from_str(text).expect("JSON");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("valid schema")
    };
    let result = schema(RESULT_SCHEMA);
    for bad in [
        json!({"cniVersion": "1.0.0"}),
        json!({"cniVersion": "1.1.0", "interfaces": [{"mac": "02:00:00:00:00:01"}]}),
        json!({"cniVersion": "1.1.0", "ips": [{"version": "4", "address": "10.0.0.1/24"}]}),
        json!({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.1"}]}),
        json!({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.1/24", "gateway": "gw"}]}),
        json!({"cniVersion": "1.1.0", "routes": [{"gw": "10.0.0.1"}]}),
        json!({"cniVersion": "1.1.0", "dns": {"nameserver": ["10.0.0.1"]}}),
    ] {
        assert!(!result.is_valid(&bad), "result schema accepted {bad}");
    }
    assert!(result.is_valid(&json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mtu": 1450, "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"}],
        "routes": [{"dst": "10.0.0.0/8", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 0}],
        "dns": {"nameservers": ["10.0.0.10", "fd00::a"], "domain": "cluster.local", "search": ["svc"], "options": ["ndots:5"]}
    })));
    let error = schema(ERROR_SCHEMA);
    assert!(!error.is_valid(&json!({"cniVersion": "1.1.0", "code": 7})));
    assert!(!error.is_valid(&json!({"cniVersion": "1.1.0", "code": 7, "message": "x"})));
    assert!(error.is_valid(&json!({"cniVersion": "1.1.0", "code": 7, "msg": "x", "details": "y"})));
}

/// The ADD result schema of `version`, derived from the 1.1 one: results before 1.1.0 have
/// no interface `mtu`/`socketPath`/`pciID` and no route `mtu`/`advmss`/`priority`/`table`/
/// `scope`; results before 1.0.0 tag each `ips[]` entry with a required `"version"`.
fn result_schema_for(version: &str) -> Value {
    let mut schema: Value = serde_json::from_str(RESULT_SCHEMA).expect("the schema is JSON");
    schema["properties"]["cniVersion"] = json!({"const": version});
    if version != "1.1.0" {
        let defs = &mut schema["$defs"];
        for (def, keys) in [
            ("interface", &["mtu", "socketPath", "pciID"][..]),
            (
                "route",
                &["mtu", "advmss", "priority", "table", "scope"][..],
            ),
        ] {
            let properties = defs[def]["properties"]
                .as_object_mut()
                .expect("properties object");
            for key in keys {
                assert!(properties.remove(*key).is_some(), "{def}.{key}");
            }
        }
    }
    if matches!(version, "0.3.0" | "0.3.1" | "0.4.0") {
        let ip = &mut schema["$defs"]["ipConfig"];
        ip["properties"]["version"] = json!({"enum": ["4", "6"]});
        ip["required"] = json!(["version", "address"]);
    }
    schema
}

/// Spec order: CHECK came with 0.4.0, STATUS and GC with 1.1.0.
fn at_least(version: &str, since: &str) -> bool {
    let order = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    order(version) >= order(since)
}

#[test]
fn every_advertised_version_gets_answers_in_its_own_shape() {
    let advertised = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#).json()
        ["supportedVersions"]
        .as_array()
        .expect("supportedVersions")
        .iter()
        .map(|v| v.as_str().expect("a version string").to_owned())
        .collect::<Vec<_>>();
    assert_eq!(advertised, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);

    for version in &advertised {
        let version = version.as_str();
        let ok = || Response::Ok(Attachment::default());
        let mut responses = vec![Response::Ok(dual_stack_attachment())];
        let mut expected = vec![Command::Add];
        if at_least(version, "0.4.0") {
            responses.push(ok());
            expected.push(Command::Check);
        }
        responses.push(ok());
        expected.push(Command::Del);
        if at_least(version, "1.1.0") {
            responses.extend([ok(), ok()]);
            expected.extend([Command::Status, Command::Gc]);
        }
        let agent = FakeAgent::start(responses);

        // VERSION answers in the version asked, listing the same versions.
        let probe = plugin(
            &[("CNI_COMMAND", "VERSION")],
            &json!({"cniVersion": version}).to_string(),
        );
        assert_eq!(probe.code, 0, "{version}: {}", probe.stdout);
        assert_eq!(
            probe.json(),
            json!({"cniVersion": version, "supportedVersions": advertised}),
            "{version}"
        );

        // ADD: the result is in the config's version, with that version's shape.
        let add = plugin(&add_vars(&agent.socket, "ADD"), &config(version, json!({})));
        assert_eq!(add.code, 0, "{version}: {}", add.stdout);
        let result = add.json();
        assert_valid(&result_schema_for(version).to_string(), &result);
        let tagged = !at_least(version, "1.0.0");
        for (ip, family) in result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .zip(["4", "6"])
        {
            if tagged {
                assert_eq!(ip["version"], family, "{version}: {ip}");
            } else {
                assert!(ip.get("version").is_none(), "{version}: {ip}");
            }
        }

        // CHECK from 0.4.0 on; before, refused in the config's version without asking.
        let check_config = config(version, json!({"prevResult": result}));
        let check = plugin(&add_vars(&agent.socket, "CHECK"), &check_config);
        if at_least(version, "0.4.0") {
            assert_eq!((check.code, check.stdout.as_str()), (0, ""), "{version}");
        } else {
            assert_cni_error(&check, version, codes::INCOMPATIBLE_VERSION);
        }

        let del = plugin(&add_vars(&agent.socket, "DEL"), &config(version, json!({})));
        assert_eq!((del.code, del.stdout.as_str()), (0, ""), "{version}");

        // STATUS and GC only at 1.1.0.
        let socket = [socket_var(&agent.socket)];
        let status = plugin(
            &[[("CNI_COMMAND", "STATUS")], socket].concat(),
            &config(version, json!({})),
        );
        let gc = plugin(
            &[[("CNI_COMMAND", "GC")], socket].concat(),
            &config(version, json!({"cni.dev/valid-attachments": []})),
        );
        for run in [&status, &gc] {
            if at_least(version, "1.1.0") {
                assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{version}");
            } else {
                assert_cni_error(run, version, codes::INCOMPATIBLE_VERSION);
            }
        }

        let commands: Vec<Command> = agent.requests().iter().map(|r| r.command).collect();
        assert_eq!(commands, expected, "{version}: what reached the agent");
    }
}
