//! Generated garbage and mutated valid inputs for the plugin's stdin, environment and the
//! agent's answer: never a panic, always a CNI error object (VERSION excepted, which
//! answers anything). Nothing reaches an agent here (the socket path leads nowhere, or to
//! a fake agent answering garbage), so nothing can be left behind either.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;

use proptest::prelude::*;
use serde_json::{Value, json};
use weft_cni::proto::{self, Attachment, Response};
use weft_cni::{SOCKET_ENV, config, env, run};

const ERROR_SCHEMA: &str = include_str!("cni-error-1.1.schema.json");

fn valid_config() -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "pods", "type": "weft", "network": "pods",
        "runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "192.0.2.1"}],
            "ips": ["10.0.0.7/24"], "mac": "02:00:00:00:00:07"
        },
        "prevResult": {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
                       "ips": [{"address": "10.0.0.7/24", "gateway": "10.0.0.1", "interface": 0}]},
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]
    })
}

/// Where a mutation may land in the valid configuration.
const POINTERS: [&str; 14] = [
    "/cniVersion",
    "/name",
    "/type",
    "/network",
    "/socket",
    "/runtimeConfig",
    "/runtimeConfig/ips",
    "/runtimeConfig/ips/0",
    "/runtimeConfig/mac",
    "/runtimeConfig/portMappings",
    "/runtimeConfig/portMappings/0",
    "/runtimeConfig/portMappings/0/hostPort",
    "/prevResult",
    "/cni.dev/valid-attachments/0",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
        "[0-9a-f:./]{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes on stdin: garbage, or the valid configuration with one field replaced by any JSON
/// or its text cut and spliced.
fn stdin() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (0..POINTERS.len(), any_json()).prop_map(|(at, v)| {
            let mut cfg = valid_config();
            if let Some(slot) = cfg.pointer_mut(POINTERS[at]) {
                *slot = v;
            }
            cfg.to_string().into_bytes()
        }),
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(cut, keep, splice)| {
                let text = valid_config().to_string().into_bytes();
                let (a, b) = (cut.index(text.len()), keep.index(text.len()));
                let (a, b) = (a.min(b), a.max(b));
                let mut out = text[..a].to_vec();
                out.extend(splice);
                out.extend(&text[b..]);
                out
            }),
    ]
}

fn env_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        Just(String::new()),
        Just("eth0".to_string()),
        Just("/var/run/netns/x".to_string()),
        "[a-zA-Z0-9_]{1,12}".prop_map(|s| "x".repeat(300) + &s),
    ]
}

/// `CNI_ARGS`: known and unknown keys, odd separators.
fn cni_args() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("IgnoreUnknown".to_string()),
        Just("K8S_POD_NAMESPACE".to_string()),
        Just("K8S_POD_NAME".to_string()),
        Just("IP".to_string()),
        Just("MAC".to_string()),
        "[ -~]{0,8}",
    ];
    prop::collection::vec(
        (
            key,
            env_text(),
            prop_oneof![Just("="), Just(""), Just("==")],
        ),
        0..6,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v, eq)| format!("{k}{eq}{v}"))
            .collect::<Vec<_>>()
            .join(";")
    })
}

fn environment(socket: String) -> impl Strategy<Value = HashMap<String, String>> {
    let command = prop_oneof![
        Just("ADD".to_string()),
        Just("DEL".to_string()),
        Just("CHECK".to_string()),
        Just("GC".to_string()),
        Just("STATUS".to_string()),
        Just("VERSION".to_string()),
        env_text(),
    ];
    (
        prop::option::weighted(0.9, command),
        prop::option::weighted(0.8, env_text()),
        prop::option::weighted(0.8, env_text()),
        prop::option::weighted(0.8, env_text()),
        prop::option::weighted(0.8, cni_args()),
        prop::option::of(env_text()),
    )
        .prop_map(move |(cmd, id, netns, ifname, args, path)| {
            let mut env = HashMap::new();
            for (k, v) in [
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", args),
                ("CNI_PATH", path),
            ] {
                if let Some(v) = v {
                    env.insert(k.to_string(), v);
                }
            }
            env.insert(SOCKET_ENV.to_string(), socket.clone());
            env
        })
}

/// What the plugin printed is a CNI 1.1 error object (exit 1) or, for VERSION, an answer.
fn assert_cni_answer(env: &HashMap<String, String>, out: &weft_cni::Outcome) {
    let version = env.get("CNI_COMMAND").is_some_and(|c| c == "VERSION");
    if out.exit_code == 0 {
        assert!(version, "success without an agent: {out:?}");
        let v: Value = serde_json::from_str(&out.stdout).expect("VERSION prints JSON");
        assert!(v["supportedVersions"].is_array(), "{v}");
        return;
    }
    assert_eq!(out.exit_code, 1, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("an error prints JSON");
    let schema = jsonschema::validator_for(&serde_json::from_str(ERROR_SCHEMA).expect("schema"))
        .expect("schema");
    assert!(schema.is_valid(&v), "not a CNI error object: {v}");
    assert!(v["code"].as_u64().is_some_and(|c| c > 0), "{v}");
    assert!(!v["msg"].as_str().unwrap_or_default().is_empty(), "{v}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_stdin_and_environment_gives_a_cni_error_object_never_a_panic(
        env in environment("/nonexistent/weft-fuzz/cni.sock".into()),
        input in stdin(),
    ) {
        let out = run(&env, input.as_slice());
        assert_cni_answer(&env, &out);
    }

    #[test]
    fn the_parsers_alone_refuse_cleanly(input in stdin(), args in cni_args(), text in env_text()) {
        if let Ok(map) = config::parse_json(&input) {
            let _ = config::reply_version(&map);
            if let Ok(cfg) = config::NetConfig::from_json(&map) {
                let _ = cfg.runtime.requested_address();
            }
        }
        let _ = env::parse_args(&args);
        let _ = env::check_if_name(&text);
        let _ = config::plain_address(&text, "fuzz");
    }

    #[test]
    fn garbage_from_the_agent_is_a_cni_error_object(
        answer in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            (0..3usize, any_json()).prop_map(|(at, v)| {
                let mut ok = serde_json::to_value(Response::Ok(Attachment::default())).expect("json");
                let keys: Vec<String> = ok.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
                if let Some(k) = keys.get(at % keys.len().max(1)) {
                    ok[k.as_str()] = v;
                }
                ok.to_string().into_bytes()
            }),
        ],
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("cni.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let server = std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                let mut w = &stream;
                let _ = w.write_all(&answer);
                let _ = w.write_all(b"\n");
            }
        });
        let mut env = HashMap::new();
        for (k, v) in [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        env.insert(SOCKET_ENV.to_string(), socket.display().to_string());
        let out = run(&env, valid_config().to_string().as_bytes());
        server.join().expect("fake agent");
        // A garbage answer may happen to decode as a (minimal) success; otherwise an error.
        if out.exit_code != 0 {
            assert_cni_answer(&env, &out);
        } else {
            let _: Value = serde_json::from_str(&out.stdout).expect("a result prints JSON");
        }
        let _ = proto::PROTOCOL;
    }
}
