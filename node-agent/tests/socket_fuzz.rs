//! The agent's CNI socket fed generated garbage and mutated valid requests: every
//! connection gets one well-formed response line (an error for anything it cannot serve),
//! the agent never panics, and nothing is left behind — no journal record, no tombstone, no
//! interface in the namespace the agent programs (a throwaway one).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::sync::Notify;
use weft_agent::endpoints::journal::Journal;
use weft_agent::endpoints::manager::Endpoints;
use weft_agent::endpoints::socket;
use weft_agent::kernel::Kernel;
use weft_cni::proto::{self, Response};
use weft_e2e::netns::Netns;

fn valid_request(command: &str) -> Value {
    json!({
        "protocol": proto::PROTOCOL, "command": command, "configName": "pods", "network": "pods",
        "containerId": "c1", "netns": "/var/run/netns/nowhere", "ifName": "eth0",
        "podNamespace": "default", "podName": "p1", "address": "10.0.0.7",
        "mac": "02:00:00:00:00:07",
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "validAttachments": [{"containerId": "c1", "ifName": "eth0"}],
        "prevResult": {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}]}
    })
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
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

/// One request line: bytes, or a valid request (any command) with one field replaced or
/// its text cut and spliced.
fn request_line() -> impl Strategy<Value = Vec<u8>> {
    let command = prop_oneof![
        Just("ADD"),
        Just("DEL"),
        Just("CHECK"),
        Just("GC"),
        Just("STATUS"),
        Just("add"),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (command.clone(), any::<prop::sample::Index>(), any_json()).prop_map(|(c, at, v)| {
            let mut req = valid_request(c);
            let keys: Vec<String> = req
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let key = keys[at.index(keys.len())].clone();
            req[key.as_str()] = v;
            req.to_string().into_bytes()
        }),
        (
            command,
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(c, cut, keep, splice)| {
                let text = valid_request(c).to_string().into_bytes();
                let (a, b) = (cut.index(text.len()), keep.index(text.len()));
                let (a, b) = (a.min(b), a.max(b));
                let mut out = text[..a].to_vec();
                out.extend(splice);
                out.extend(&text[b..]);
                out
            }),
    ]
}

#[test]
fn garbage_on_the_socket_gets_an_answer_and_leaves_nothing_behind() {
    let node = match Netns::new("fuzz") {
        Ok(ns) => ns,
        Err(e) => {
            println!("SKIP: garbage_on_the_socket: cannot create a network namespace ({e})");
            return;
        }
    };
    let state = tempfile::tempdir().expect("state dir");
    let sock = state.path().join("cni.sock");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let endpoints = rt.block_on(async {
        let kernel = Arc::new(Kernel::open(Some(&node.path())).await.expect("kernel"));
        let endpoints = Arc::new(
            Endpoints::new(
                "fuzz-node".into(),
                "weft-fuzz",
                kernel,
                state.path(),
                Arc::new(Notify::new()),
            )
            .expect("endpoints"),
        );
        socket::serve(&sock, endpoints.clone())
            .await
            .expect("serve");
        endpoints
    });
    // The mutations start from requests the agent reads (and would serve).
    for c in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
        let req: proto::Request = serde_json::from_value(valid_request(c)).expect("valid");
        assert_eq!(req.protocol, proto::PROTOCOL);
    }
    let links_before = node.exec(&["ip", "-o", "link"]).expect("links");

    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 400,
        failure_persistence: None,
        ..Default::default()
    });
    runner
        .run(&request_line(), |line| {
            let mut stream = UnixStream::connect(&sock).expect("connect");
            // A line with a newline inside is answered (and closed) at that newline, so the
            // rest may meet a closed socket: only the answer matters.
            let _ = stream
                .write_all(&line)
                .and_then(|()| stream.write_all(b"\n"));
            let mut answer = String::new();
            BufReader::new(&stream)
                .read_line(&mut answer)
                .expect("read");
            let decoded: Result<Response, _> = serde_json::from_str(&answer);
            prop_assert!(decoded.is_ok(), "not a response: {answer:?} to {line:?}");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));

    // The agent still serves, and nothing was recorded or created.
    let journal = Journal::open(state.path()).expect("journal");
    assert!(journal.load().is_empty(), "attachments recorded");
    assert!(journal.load_tombstones().is_empty(), "tombstones recorded");
    assert_eq!(
        node.exec(&["ip", "-o", "link"]).expect("links"),
        links_before
    );
    drop(endpoints);
}
