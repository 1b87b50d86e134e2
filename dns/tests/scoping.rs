//! The pure query handler: who sees which names, and what is forwarded (no sockets).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use weft_dns::answer::{Reply, respond};
use weft_dns::model::{Change, Data, Endpoint, Index, InvalidChange, Network, Via};

fn network(name: &str, gateway: &str) -> Network {
    Network {
        name: name.into(),
        internal: false,
        gateways: vec![gateway.parse().unwrap()],
        upstreams: None,
        zone: None,
    }
}

fn endpoint(
    id: &str,
    net: &str,
    addrs: &[&str],
    names: &[&str],
    sandbox: Option<&str>,
) -> Endpoint {
    Endpoint {
        id: id.into(),
        network: net.into(),
        sandbox: sandbox.map(Into::into),
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        names: names.iter().map(|n| n.to_string()).collect(),
        netns: None,
    }
}

/// blue (10.1.0.1): a, b (share `web`); red (10.2.0.1): c; sandbox s on blue and red.
fn data() -> Data {
    let mut d = Data::default();
    d.apply(Change::Snapshot {
        networks: vec![network("blue", "10.1.0.1"), network("red", "10.2.0.1")],
        endpoints: vec![
            endpoint(
                "a",
                "blue",
                &["10.1.0.2", "fd01::2"],
                &["Alpha", "web"],
                None,
            ),
            endpoint("b", "blue", &["10.1.0.3"], &["bravo", "web"], None),
            endpoint("c", "red", &["10.2.0.2"], &["charlie"], None),
            endpoint("s1", "blue", &["10.1.0.9"], &["sierra"], Some("ctr-s")),
            endpoint("s2", "red", &["10.2.0.9"], &["sierra"], Some("ctr-s")),
        ],
    })
    .unwrap();
    d
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

/// Ask `name` from `source` at `gateway`: the rcode and the answers as text.
fn ask(
    ix: &Index,
    gateway: &str,
    source: &str,
    name: &str,
    t: RecordType,
) -> (ResponseCode, Vec<String>) {
    let via = Via::Gateway(gateway.parse().unwrap());
    let packet = query(name, t).to_vec().unwrap();
    match respond(ix, &via, source.parse().unwrap(), &packet, 2, false) {
        Reply::Answer(bytes) => decode(&bytes),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn decode(bytes: &[u8]) -> (ResponseCode, Vec<String>) {
    let m = Message::from_vec(bytes).unwrap();
    assert_eq!(m.metadata.id, 4242);
    let mut answers: Vec<String> = m
        .answers
        .iter()
        .map(|r| {
            assert_eq!(r.ttl, 2);
            match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::PTR(p) => p.0.to_ascii(),
                other => format!("{other:?}"),
            }
        })
        .collect();
    answers.sort();
    (m.metadata.response_code, answers)
}

fn ok(answers: &[&str]) -> (ResponseCode, Vec<String>) {
    (
        ResponseCode::NoError,
        answers.iter().map(|a| a.to_string()).collect(),
    )
}

fn nx() -> (ResponseCode, Vec<String>) {
    (ResponseCode::NXDomain, vec![])
}

use RecordType::{A, AAAA, PTR};

#[test]
fn names_are_answered_to_sandboxes_on_the_same_network_in_every_form() {
    let ix = Index::build(&data());
    let from_b = |name: &str, t| ask(&ix, "10.1.0.1", "10.1.0.3", name, t);
    assert_eq!(from_b("alpha", A), ok(&["10.1.0.2"]));
    assert_eq!(
        from_b("ALPHA.", A),
        ok(&["10.1.0.2"]),
        "names are case-insensitive"
    );
    assert_eq!(from_b("alpha.blue", A), ok(&["10.1.0.2"]));
    assert_eq!(from_b("alpha.blue.weft.internal", A), ok(&["10.1.0.2"]));
    assert_eq!(from_b("alpha", AAAA), ok(&["fd01::2"]));
    assert_eq!(
        from_b("bravo", AAAA),
        ok(&[]),
        "a name without v6: no data, no error"
    );
    assert_eq!(from_b("web", A), ok(&["10.1.0.2", "10.1.0.3"]));
    assert_eq!(
        from_b("2.0.1.10.in-addr.arpa", PTR),
        ok(&["alpha.blue.weft.internal."])
    );
}

#[test]
fn names_and_addresses_of_other_networks_are_nxdomain() {
    let ix = Index::build(&data());
    let from_c = |name: &str, t| ask(&ix, "10.2.0.1", "10.2.0.2", name, t);
    assert_eq!(from_c("alpha", A), nx());
    assert_eq!(from_c("alpha.blue", A), nx());
    assert_eq!(from_c("alpha.blue.weft.internal", A), nx());
    assert_eq!(
        from_c("anything.weft.internal", A),
        nx(),
        "the zone is never forwarded"
    );
    assert_eq!(from_c("2.0.1.10.in-addr.arpa", PTR), nx());
    assert_eq!(from_c("charlie", A), ok(&["10.2.0.2"]));
}

#[test]
fn a_sandbox_on_several_networks_sees_all_of_them_whichever_gateway_it_asks() {
    let ix = Index::build(&data());
    for (gateway, source) in [("10.1.0.1", "10.1.0.9"), ("10.2.0.1", "10.2.0.9")] {
        assert_eq!(ask(&ix, gateway, source, "charlie", A), ok(&["10.2.0.2"]));
        assert_eq!(ask(&ix, gateway, source, "bravo", A), ok(&["10.1.0.3"]));
        assert_eq!(
            ask(&ix, gateway, source, "sierra", A),
            ok(&["10.1.0.9", "10.2.0.9"])
        );
    }
}

#[test]
fn strangers_are_refused_even_at_a_gateway() {
    let ix = Index::build(&data());
    let refused = (ResponseCode::Refused, vec![]);
    assert_eq!(ask(&ix, "10.1.0.1", "192.0.2.7", "alpha", A), refused);
    assert_eq!(
        ask(&ix, "10.1.0.1", "10.2.0.2", "alpha", A),
        refused,
        "c asks blue's gateway"
    );
    assert_eq!(
        ask(&ix, "10.9.9.9", "10.1.0.3", "alpha", A),
        refused,
        "no network there"
    );
}

#[test]
fn the_listener_inside_a_sandbox_answers_for_that_sandbox() {
    let ix = Index::build(&data());
    let packet = query("charlie", A).to_vec().unwrap();
    let via = Via::Sandbox("ctr-s".into());
    let Reply::Answer(bytes) = respond(&ix, &via, "127.0.0.1".parse().unwrap(), &packet, 2, false)
    else {
        panic!("no answer")
    };
    assert_eq!(decode(&bytes), ok(&["10.2.0.2"]));
}

fn forwarded(ix: &Index, gateway: &str, source: &str, name: &str) -> Reply {
    let packet = query(name, A).to_vec().unwrap();
    respond(
        ix,
        &Via::Gateway(gateway.parse().unwrap()),
        source.parse().unwrap(),
        &packet,
        2,
        false,
    )
}

#[test]
fn other_names_are_forwarded_to_the_networks_or_the_nodes_resolvers() {
    let mut d = data();
    assert_eq!(
        forwarded(&Index::build(&d), "10.1.0.1", "10.1.0.3", "example.com"),
        Reply::Forward(None)
    );
    let mut red = network("red", "10.2.0.1");
    red.upstreams = Some(vec!["192.0.2.53:53".parse().unwrap()]);
    d.apply(Change::UpsertNetwork(red)).unwrap();
    let ix = Index::build(&d);
    assert_eq!(
        forwarded(&ix, "10.2.0.1", "10.2.0.2", "example.com"),
        Reply::Forward(Some(vec!["192.0.2.53:53".parse().unwrap()]))
    );
    // A bare name on no network at all is not ours either (Docker forwards it too).
    assert_eq!(
        forwarded(&ix, "10.1.0.1", "10.1.0.3", "zulu"),
        Reply::Forward(None)
    );
    assert_eq!(
        forwarded(&ix, "10.1.0.1", "10.1.0.3", "1.2.0.192.in-addr.arpa"),
        Reply::Forward(None)
    );
}

#[test]
fn sandboxes_only_on_internal_networks_are_refused_other_names() {
    let mut d = data();
    let mut red = network("red", "10.2.0.1");
    red.internal = true;
    d.apply(Change::UpsertNetwork(red)).unwrap();
    let ix = Index::build(&d);
    assert_eq!(
        ask(&ix, "10.2.0.1", "10.2.0.2", "example.com", A),
        (ResponseCode::Refused, vec![])
    );
    assert_eq!(
        ask(&ix, "10.2.0.1", "10.2.0.2", "charlie", A),
        ok(&["10.2.0.2"])
    );
    // Sandbox s is also on blue, which is not internal: it may go out.
    assert_eq!(
        forwarded(&ix, "10.2.0.1", "10.2.0.9", "example.com"),
        Reply::Forward(None)
    );
}

#[test]
fn the_zone_is_per_network_configurable() {
    let mut d = data();
    let mut blue = network("blue", "10.1.0.1");
    blue.zone = Some("cluster.example".into());
    d.apply(Change::UpsertNetwork(blue)).unwrap();
    let ix = Index::build(&d);
    assert_eq!(
        ask(&ix, "10.1.0.1", "10.1.0.3", "alpha.blue.cluster.example", A),
        ok(&["10.1.0.2"])
    );
    assert_eq!(
        ask(&ix, "10.1.0.1", "10.1.0.3", "2.0.1.10.in-addr.arpa", PTR),
        ok(&["alpha.blue.cluster.example."])
    );
}

#[test]
fn an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() {
    let mut d = data();
    for i in 0..100u32 {
        let addr = format!("10.1.1.{i}");
        d.apply(Change::UpsertEndpoint(endpoint(
            &format!("m{i}"),
            "blue",
            &[&addr],
            &["many"],
            None,
        )))
        .unwrap();
    }
    let ix = Index::build(&d);
    let via = Via::Gateway("10.1.0.1".parse().unwrap());
    let source: IpAddr = "10.1.0.3".parse().unwrap();
    let packet = query("many", A).to_vec().unwrap();
    let Reply::Answer(udp) = respond(&ix, &via, source, &packet, 2, false) else {
        panic!()
    };
    let udp = Message::from_vec(&udp).unwrap();
    assert!(udp.metadata.truncation);
    assert!(udp.answers.is_empty());
    let Reply::Answer(tcp) = respond(&ix, &via, source, &packet, 2, true) else {
        panic!()
    };
    assert_eq!(Message::from_vec(&tcp).unwrap().answers.len(), 100);
    // With EDNS the client may take up to 1232 bytes: 100 A records (~1.6 kB) still do not fit,
    // 40 do.
    let mut edns_query = query("many", A);
    edns_query.set_edns(Edns::new());
    let Reply::Answer(big) = respond(&ix, &via, source, &edns_query.to_vec().unwrap(), 2, false)
    else {
        panic!()
    };
    assert!(Message::from_vec(&big).unwrap().metadata.truncation);
}

#[test]
fn requests_that_are_not_plain_queries_get_errors_or_nothing() {
    let ix = Index::build(&data());
    let via = Via::Gateway("10.1.0.1".parse().unwrap());
    let source: IpAddr = "10.1.0.3".parse().unwrap();
    let code = |packet: &[u8]| match respond(&ix, &via, source, packet, 2, false) {
        Reply::Answer(b) => Some(Message::from_vec(&b).unwrap().metadata.response_code),
        _ => None,
    };
    let mut chaos = query("version.bind", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(code(&chaos.to_vec().unwrap()), Some(ResponseCode::Refused));
    let mut update = query("alpha", A);
    update.metadata.op_code = OpCode::Update;
    assert_eq!(code(&update.to_vec().unwrap()), Some(ResponseCode::NotImp));
    let mut two = query("alpha", A);
    two.add_query(Query::query(Name::from_ascii("bravo").unwrap(), A));
    assert_eq!(code(&two.to_vec().unwrap()), Some(ResponseCode::FormErr));
    assert_eq!(
        code(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff]),
        Some(ResponseCode::FormErr)
    );
    // A response (it could bounce between two servers for ever) and a runt: no reply.
    let mut response = query("alpha", A);
    response.metadata.message_type = MessageType::Response;
    assert_eq!(code(&response.to_vec().unwrap()), None);
    assert_eq!(code(&[1, 2, 3]), None);
}

#[test]
fn a_change_with_one_bad_part_is_refused_whole() {
    let mut d = data();
    let before = d.clone();
    let bad = Change::Snapshot {
        networks: vec![network("blue", "10.1.0.1")],
        endpoints: vec![
            endpoint("a", "blue", &["10.1.0.2"], &["fine"], None),
            endpoint("b", "blue", &["10.1.0.3"], &["not a name"], None),
        ],
    };
    assert_eq!(d.apply(bad), Err(InvalidChange::Name("not a name".into())));
    let nameless = endpoint("x", "blue", &[], &["x"], None);
    assert_eq!(
        d.apply(Change::UpsertEndpoint(nameless)),
        Err(InvalidChange::NoAddress("x".into()))
    );
    let long = "a".repeat(64);
    assert!(
        d.apply(Change::UpsertEndpoint(endpoint(
            "y",
            "blue",
            &["10.1.0.7"],
            &[&long],
            None
        )))
        .is_err()
    );
    assert_eq!(d, before);
}

#[test]
fn an_endpoint_of_a_network_not_fed_yet_names_nothing_until_it_is() {
    let mut d = data();
    d.apply(Change::UpsertEndpoint(endpoint(
        "g",
        "green",
        &["10.3.0.2"],
        &["golf"],
        None,
    )))
    .unwrap();
    d.apply(Change::UpsertEndpoint(endpoint(
        "g2",
        "green",
        &["10.3.0.3"],
        &["hotel"],
        None,
    )))
    .unwrap();
    assert_eq!(
        ask(&Index::build(&d), "10.3.0.1", "10.3.0.3", "golf", A).0,
        ResponseCode::Refused
    );
    d.apply(Change::UpsertNetwork(network("green", "10.3.0.1")))
        .unwrap();
    assert_eq!(
        ask(&Index::build(&d), "10.3.0.1", "10.3.0.3", "golf", A),
        ok(&["10.3.0.2"])
    );
}

#[test]
fn cluster_dns_gets_zone_names_of_every_network_and_nothing_else() {
    let ix = Index::build(&data());
    let via = Via::Cluster("192.0.2.10".parse().unwrap());
    let ask = |name: &str, t| {
        let packet = query(name, t).to_vec().unwrap();
        match respond(&ix, &via, "10.244.3.7".parse().unwrap(), &packet, 2, false) {
            Reply::Answer(b) => decode(&b),
            other => panic!("expected an answer, got {other:?}"),
        }
    };
    assert_eq!(
        ask("web.blue.weft.internal", A),
        ok(&["10.1.0.2", "10.1.0.3"])
    );
    assert_eq!(ask("charlie.red.weft.internal", A), ok(&["10.2.0.2"]));
    assert_eq!(ask("nobody.red.weft.internal", A), nx());
    assert_eq!(
        ask("2.0.2.10.in-addr.arpa", PTR),
        ok(&["charlie.red.weft.internal."])
    );
    let refused = (ResponseCode::Refused, vec![]);
    assert_eq!(ask("charlie", A), refused);
    assert_eq!(ask("charlie.red", A), refused);
    assert_eq!(ask("example.com", A), refused);
    assert_eq!(ask("1.2.0.192.in-addr.arpa", PTR), refused);
}
