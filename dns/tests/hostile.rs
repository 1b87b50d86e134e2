//! Hostile input: generated garbage and mutated queries into the handler (proptest), and
//! half-open TCP, oversized datagrams and floods against a running server.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;
use weft_dns::answer::{Reply, respond};
use weft_dns::model::{Change, Data, Index, Via};

fn index() -> Index {
    let mut net = common::network("blue", &["10.1.0.1"]);
    net.upstreams = Some(vec!["192.0.2.53:53".parse().unwrap()]);
    let mut d = Data::default();
    d.apply(Change::Snapshot {
        networks: vec![net],
        endpoints: vec![
            common::endpoint("a", "blue", &["10.1.0.2", "fd01::2"], &["alpha", "web"]),
            common::endpoint("b", "blue", &["10.1.0.3"], &["bravo", "web"]),
        ],
    })
    .unwrap();
    Index::build(&d)
}

fn valid_query(name: &str, t: u16, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::from(t),
    ));
    m.to_vec().unwrap()
}

/// Whatever came in, a reply is a well-formed response to the same id, within UDP's limit.
fn check(ix: &Index, packet: &[u8], tcp: bool) {
    let via = Via::Gateway("10.1.0.1".parse().unwrap());
    let source: IpAddr = "10.1.0.3".parse().unwrap();
    match respond(ix, &via, source, packet, 2, tcp) {
        Reply::Answer(bytes) => {
            let m = Message::from_vec(&bytes).expect("our answers parse");
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.id, u16::from_be_bytes([packet[0], packet[1]]));
            assert!(tcp || bytes.len() <= 1232, "{} bytes over UDP", bytes.len());
        }
        Reply::Forward(to) => assert!(to.is_some(), "blue has its own resolvers"),
        Reply::Drop => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics_and_replies_are_well_formed(
        packet in proptest::collection::vec(any::<u8>(), 0..700),
        tcp in any::<bool>(),
    ) {
        check(&index(), &packet, tcp);
    }

    #[test]
    fn mutated_queries_never_panic_and_replies_are_well_formed(
        name in prop::sample::select(vec!["alpha", "web", "bravo.blue.weft.internal",
            "2.0.1.10.in-addr.arpa", "example.com", "x.weft.internal"]),
        qtype in prop::sample::select(vec![1u16, 28, 12, 255, 16, 0, 65535]),
        id in any::<u16>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut packet = valid_query(name, qtype, id);
        for (at, byte) in flips {
            let i = at.index(packet.len());
            packet[i] = byte;
        }
        packet.extend_from_slice(&extra);
        let len = packet.len();
        packet.truncate(12.max(cut.index(len + 1)));
        check(&index(), &packet, false);
        check(&index(), &packet, true);
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

fn ask_udp(sock: &UdpSocket, name: &str, id: u16) -> Option<ResponseCode> {
    sock.send(&valid_query(name, 1, id)).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        let m = Message::from_vec(&buf[..n]).ok()?;
        if m.metadata.id == id {
            return Some(m.metadata.response_code);
        }
    }
}

#[test]
fn floods_half_open_connections_and_oversized_datagrams_do_not_stop_the_server() -> Result<()> {
    let mut node = common::Node::new()?;
    node.start_server("nameserver 192.0.2.53\n")?;
    // Loopback as a network: the test asks from 127.0.0.1, named `me` on network `local`;
    // other names go to a resolver that never answers (a socket nobody reads).
    let mut local = common::network("local", &["127.0.0.1"]);
    local.upstreams = Some(vec!["127.0.0.1:5999".parse()?]);
    node.feed(&[Change::Snapshot {
        networks: vec![local],
        endpoints: vec![common::endpoint("me", "local", &["127.0.0.1"], &["me"])],
    }])?;
    node.wait_listening("127.0.0.1")?;
    let pid = node.server_pid().context("server pid")?;
    let rss_before = rss_kib(pid)?;
    let server: SocketAddr = "127.0.0.1:53".parse()?;

    common::inside(&node.ns, || -> Result<()> {
        let _silent = UdpSocket::bind("127.0.0.1:5999")?;
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(Duration::from_secs(3)))?;
        assert_eq!(ask_udp(&sock, "me", 1), Some(ResponseCode::NoError));

        // 1,000 TCP connections that send half a length or half a query, and stay open.
        let mut held = Vec::new();
        for i in 0..1000u32 {
            let Ok(mut c) = TcpStream::connect_timeout(&server, Duration::from_millis(200)) else {
                continue;
            };
            let _ = if i % 2 == 0 {
                c.write_all(&[0])
            } else {
                c.write_all(&[0, 100, 1, 2, 3])
            };
            held.push(c);
        }
        // UDP still answers while they hang.
        assert_eq!(ask_udp(&sock, "me", 2), Some(ResponseCode::NoError));

        // Oversized and garbage datagrams, then 2,500 queries to forward to a dead resolver
        // (paced, so the socket buffers do not drop them).
        let raw = UdpSocket::bind("127.0.0.1:0")?;
        raw.connect(server)?;
        let _ = raw.send(&vec![0x41u8; 65_000]);
        for i in 0..20_000u32 {
            let _ = raw.send(&i.to_be_bytes().repeat(5));
        }
        // Answered once the garbage ahead is worked off (a flood overflows the socket buffer:
        // the kernel drops datagrams, this one too maybe, so ask until answered).
        assert!((4..10).any(|id| ask_udp(&sock, "me", id) == Some(ResponseCode::NoError)));
        let flood = UdpSocket::bind("127.0.0.1:0")?;
        flood.connect(server)?;
        flood.set_read_timeout(Some(Duration::from_millis(500)))?;
        // Read while sending (the client's own buffer holds only a few hundred replies);
        // count the SERVFAILs sent before any forward could have timed out (2 s).
        let reader = flood.try_clone()?;
        let start = Instant::now();
        let counting = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let mut servfails = 0;
            while start.elapsed() < Duration::from_secs(3) {
                let Ok(n) = reader.recv(&mut buf) else {
                    continue;
                };
                if start.elapsed() < Duration::from_millis(1900)
                    && Message::from_vec(&buf[..n])
                        .is_ok_and(|m| m.metadata.response_code == ResponseCode::ServFail)
                {
                    servfails += 1;
                }
            }
            servfails
        });
        for i in 0..2_500u16 {
            let _ = flood.send(&valid_query(&format!("n{i}.example"), 1, i));
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let fast_servfail = counting
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        // Beyond the 1,024 waiting forwards, the rest are answered SERVFAIL at once.
        assert!(
            fast_servfail >= 1000,
            "only {fast_servfail} immediate SERVFAILs"
        );
        assert_eq!(ask_udp(&sock, "me", 3), Some(ResponseCode::NoError));

        // The half-open connections are closed after the idle time (1 s here): TCP answers again.
        let deadline = Instant::now() + Duration::from_secs(5);
        let answered = loop {
            let mut c = TcpStream::connect(server)?;
            c.set_read_timeout(Some(Duration::from_secs(1)))?;
            let q = valid_query("me", 1, 7);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            c.write_all(&framed)?;
            let mut len = [0u8; 2];
            if c.read_exact(&mut len).is_ok() {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            answered,
            "TCP never answered again after the half-open flood"
        );
        drop(held);
        Ok(())
    })??;

    let rss_after = rss_kib(pid)?;
    println!("server RSS before the floods {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + 24 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    Ok(())
}
