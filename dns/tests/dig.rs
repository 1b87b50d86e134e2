//! weft-dns in a real kernel, asked by real `dig` from sandbox namespaces.
//!
//! Topology of [`lab`]: node namespace with bridges `blue` (10.10.0.1/24, fd10::1/64),
//! `red` (10.20.0.1/24) and `sealed` (10.30.0.1/24, internal); sandboxes a, b on blue,
//! c on red, d on sealed; an `upstream` namespace with dnsmasq at 192.0.2.53 answering
//! `outside.test` (the node's "resolv.conf" names only it) with 198.51.100.7, and a second one
//! at 192.0.2.53:5353 (no resolv.conf names it) answering it with 198.51.100.8.

mod common;

use std::process::{Command, Stdio};

use anyhow::Result;
use common::{Dug, Node, dig, endpoint, network};
use weft_dns::model::{Change, Endpoint, Network};
use weft_e2e::netns::Netns;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;

fn networks() -> Vec<Network> {
    let mut sealed = network("sealed", &["10.30.0.1"]);
    sealed.internal = true;
    vec![
        network("blue", &["10.10.0.1", "fd10::1"]),
        network("red", &["10.20.0.1"]),
        sealed,
    ]
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            "a",
            "blue",
            &["10.10.0.2", "fd10::2"],
            &["alpha", "web", "ctr-alpha"],
        ),
        endpoint("b", "blue", &["10.10.0.3"], &["bravo", "web"]),
        endpoint("c", "red", &["10.20.0.2"], &["charlie"]),
        endpoint("d", "sealed", &["10.30.0.2"], &["delta"]),
    ]
}

struct Lab {
    node: Node,
    _upstream: Option<Netns>,
}

/// The topology above with a running server fed with [`networks`] and [`endpoints`].
fn lab(with_upstream: bool) -> Result<Lab> {
    lab_with(with_upstream, &[])
}

fn lab_with(with_upstream: bool, flags: &[&str]) -> Result<Lab> {
    let mut node = Node::new()?;
    node.bridge("blue", &["10.10.0.1/24", "fd10::1/64"])?;
    node.bridge("red", &["10.20.0.1/24"])?;
    node.bridge("sealed", &["10.30.0.1/24"])?;
    node.sandbox("blue", &["10.10.0.2/24", "fd10::2/64"], "10.10.0.1")?;
    node.sandbox("blue", &["10.10.0.3/24"], "10.10.0.1")?;
    node.sandbox("red", &["10.20.0.2/24"], "10.20.0.1")?;
    node.sandbox("sealed", &["10.30.0.2/24"], "10.30.0.1")?;
    let upstream = if with_upstream {
        let up = Netns::new("dns-up")?;
        node.ns.veth_into("up0", &up, "eth0")?;
        node.ns
            .exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"])?;
        node.ns.exec(&["ip", "link", "set", "up0", "up"])?;
        up.exec(&["ip", "addr", "add", "192.0.2.53/24", "dev", "eth0"])?;
        up.exec(&["ip", "link", "set", "eth0", "up"])?;
        for (port, answer) in [("53", "198.51.100.7"), ("5353", "198.51.100.8")] {
            // Killed with its namespace.
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    up.name(),
                    "dnsmasq",
                    "--keep-in-foreground",
                ])
                .args([
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                ])
                .arg("--listen-address=192.0.2.53")
                .arg(format!("--port={port}"))
                .arg(format!("--address=/outside.test/{answer}"))
                .args(["--pid-file=", "--user=root"])
                .stdout(Stdio::null())
                .spawn()?;
        }
        Some(up)
    } else {
        None
    };
    node.start_server_with("nameserver 192.0.2.53\n", flags)?;
    node.feed(&[Change::Snapshot {
        networks: networks(),
        endpoints: endpoints(),
    }])?;
    for gw in ["10.10.0.1", "fd10::1", "10.20.0.1", "10.30.0.1"] {
        node.wait_listening(gw)?;
    }
    Ok(Lab {
        node,
        _upstream: upstream,
    })
}

/// `name` no longer resolves on blue: NXDOMAIN in the zone, and no address when asked bare
/// (a bare name that is no Weft name is forwarded, as Docker does; no upstream answers here).
fn assert_gone(sb: &Netns, name: &str) -> Result<()> {
    let qualified = format!("{name}.blue.weft.internal");
    assert_eq!(
        dig(sb, "10.10.0.1", &qualified, "A", &[])?,
        answer("NXDOMAIN", &[])
    );
    assert_eq!(
        dig(sb, "10.10.0.1", name, "A", &[])?.answers,
        Vec::<String>::new()
    );
    Ok(())
}

fn answer(status: &str, answers: &[&str]) -> Dug {
    Dug {
        status: status.into(),
        answers: answers.iter().map(|a| a.to_string()).collect(),
    }
}

#[test]
fn a_sandbox_resolves_the_names_of_its_own_networks_only() -> Result<()> {
    require!("dig");
    let lab = lab(false)?;
    let sb = &lab.node.sandboxes;
    let ask = |who: usize, server: &str, name: &str, t: &str| dig(&sb[who], server, name, t, &[]);

    // Endpoint name, alias, container name, `<name>.<network>`, `<name>.<network>.<zone>`.
    assert_eq!(
        ask(B, "10.10.0.1", "alpha", "A")?,
        answer("NOERROR", &["10.10.0.2"])
    );
    assert_eq!(
        ask(B, "10.10.0.1", "ctr-alpha", "A")?,
        answer("NOERROR", &["10.10.0.2"])
    );
    assert_eq!(
        ask(A, "10.10.0.1", "bravo.blue", "A")?,
        answer("NOERROR", &["10.10.0.3"])
    );
    assert_eq!(
        ask(A, "10.10.0.1", "bravo.blue.weft.internal", "A")?,
        answer("NOERROR", &["10.10.0.3"])
    );
    // A name shared by two endpoints: both addresses.
    assert_eq!(
        ask(C, "10.20.0.1", "web", "A").map(|d| d.status)?,
        "NXDOMAIN",
        "c is not on blue"
    );
    assert_eq!(
        ask(B, "10.10.0.1", "web", "A")?,
        answer("NOERROR", &["10.10.0.2", "10.10.0.3"])
    );
    // AAAA, asked over IPv6 too.
    assert_eq!(
        ask(B, "10.10.0.1", "alpha", "AAAA")?,
        answer("NOERROR", &["fd10::2"])
    );
    assert_eq!(
        ask(A, "fd10::1", "bravo", "A")?,
        answer("NOERROR", &["10.10.0.3"])
    );
    // A name without an address of the asked family: no data, not NXDOMAIN.
    assert_eq!(
        ask(A, "10.10.0.1", "bravo", "AAAA")?,
        answer("NOERROR", &[])
    );
    // PTR: the first name, fully qualified.
    assert_eq!(
        ask(A, "10.10.0.1", "3.0.10.10.in-addr.arpa", "PTR")?,
        answer("NOERROR", &["bravo.blue.weft.internal."])
    );
    assert_eq!(
        dig(&sb[B], "10.10.0.1", "-x", "fd10::2", &[])?.answers,
        vec!["alpha.blue.weft.internal.".to_string()]
    );
    // Across networks: NXDOMAIN, for names and addresses.
    assert_eq!(
        ask(A, "10.10.0.1", "charlie", "A")?,
        answer("NXDOMAIN", &[])
    );
    assert_eq!(
        ask(C, "10.20.0.1", "alpha.blue", "A")?,
        answer("NXDOMAIN", &[])
    );
    assert_eq!(
        ask(C, "10.20.0.1", "2.0.10.10.in-addr.arpa", "PTR")?,
        answer("NXDOMAIN", &[])
    );
    assert_eq!(
        ask(C, "10.20.0.1", "charlie", "A")?,
        answer("NOERROR", &["10.20.0.2"])
    );
    // Asking another network's gateway does not make c a member of it.
    assert_eq!(ask(C, "10.10.0.1", "alpha", "A")?.status, "REFUSED");
    Ok(())
}

#[test]
fn a_sandbox_on_two_networks_sees_both_at_either_gateway() -> Result<()> {
    require!("dig");
    let mut lab = lab(false)?;
    // Sandbox a joins red as well (same sandbox id on both endpoints).
    let a = Netns::new("dns-sb")?;
    lab.node
        .attach(&a, "blue", "eth0", &["10.10.0.9/24"], Some("10.10.0.1"))?;
    lab.node
        .attach(&a, "red", "eth1", &["10.20.0.9/24"], None)?;
    let mut on_blue = endpoint("x-blue", "blue", &["10.10.0.9"], &["xray"]);
    on_blue.sandbox = Some("ctr-x".into());
    let mut on_red = endpoint("x-red", "red", &["10.20.0.9"], &["xray"]);
    on_red.sandbox = Some("ctr-x".into());
    lab.node.feed(&[
        Change::UpsertEndpoint(on_blue),
        Change::UpsertEndpoint(on_red),
    ])?;

    for gateway in ["10.10.0.1", "10.20.0.1"] {
        assert_eq!(
            dig(&a, gateway, "charlie", "A", &[])?,
            answer("NOERROR", &["10.20.0.2"])
        );
        assert_eq!(
            dig(&a, gateway, "bravo", "A", &[])?,
            answer("NOERROR", &["10.10.0.3"])
        );
        assert_eq!(
            dig(&a, gateway, "xray", "A", &[])?,
            answer("NOERROR", &["10.10.0.9", "10.20.0.9"])
        );
    }
    Ok(())
}

#[test]
fn other_names_are_forwarded_except_for_internal_networks() -> Result<()> {
    require!("dig", "dnsmasq");
    let lab = lab(true)?;
    let sb = &lab.node.sandboxes;
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "outside.test", "A", &[])?,
        answer("NOERROR", &["198.51.100.7"])
    );
    assert_eq!(
        dig(&sb[C], "10.20.0.1", "outside.test", "A", &["+tcp"])?,
        answer("NOERROR", &["198.51.100.7"])
    );
    // Not on the internal network, from the internal network: refused, not asked upstream.
    assert_eq!(
        dig(&sb[D], "10.30.0.1", "outside.test", "A", &[])?,
        answer("REFUSED", &[])
    );
    assert_eq!(
        dig(&sb[D], "10.30.0.1", "delta", "A", &[])?,
        answer("NOERROR", &["10.30.0.2"])
    );
    Ok(())
}

#[test]
fn a_networks_own_upstreams_replace_the_nodes() -> Result<()> {
    require!("dig", "dnsmasq");
    let lab = lab(true)?;
    let sb = &lab.node.sandboxes;
    let mut red = network("red", &["10.20.0.1"]);
    // Red's own resolver (on a port no resolv.conf could name) answers red's sandboxes;
    // blue's still get the node's.
    red.upstreams = Some(vec!["192.0.2.53:5353".parse()?]);
    lab.node.feed(&[Change::UpsertNetwork(red.clone())])?;
    assert_eq!(
        dig(&sb[C], "10.20.0.1", "outside.test", "A", &[])?,
        answer("NOERROR", &["198.51.100.8"])
    );
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "outside.test", "A", &[])?,
        answer("NOERROR", &["198.51.100.7"])
    );
    // Nothing answers there: red's sandboxes get SERVFAIL, never the node's resolver.
    red.upstreams = Some(vec!["192.0.2.99:53".parse()?]);
    lab.node.feed(&[Change::UpsertNetwork(red)])?;
    assert_eq!(
        dig(&sb[C], "10.20.0.1", "outside.test", "A", &["+time=5"])?.status,
        "SERVFAIL"
    );
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "outside.test", "A", &[])?,
        answer("NOERROR", &["198.51.100.7"])
    );
    Ok(())
}

#[test]
fn a_removed_endpoints_name_is_gone_at_once() -> Result<()> {
    require!("dig");
    let lab = lab(false)?;
    let sb = &lab.node.sandboxes;
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "bravo", "A", &[])?.status,
        "NOERROR"
    );
    lab.node
        .feed(&[Change::RemoveEndpoint { id: "b".into() }])?;
    assert_gone(&sb[A], "bravo")?;
    // The shared name keeps the endpoint that is left.
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "web", "A", &[])?,
        answer("NOERROR", &["10.10.0.2"])
    );
    Ok(())
}

#[test]
fn tcp_queries_are_answered() -> Result<()> {
    require!("dig");
    let lab = lab(false)?;
    let sb = &lab.node.sandboxes;
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "web", "A", &["+tcp"])?,
        answer("NOERROR", &["10.10.0.2", "10.10.0.3"])
    );
    assert_eq!(
        dig(&sb[A], "fd10::1", "charlie", "A", &["+tcp"])?,
        answer("NXDOMAIN", &[])
    );
    Ok(())
}

#[test]
fn the_server_keeps_answering_after_its_feeder_is_killed_and_takes_the_next_snapshot() -> Result<()>
{
    require!("dig");
    let lab = lab(false)?;
    let sb = &lab.node.sandboxes;
    // Continuous load from sandbox a for a name that exists throughout.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<()> {
        let load = scope.spawn(|| common::keep_asking(&sb[A], "10.10.0.1", "alpha", &stop));
        // The load runs before, during and after the kill (on a busy CI machine the kill and
        // the next snapshot alone took 0.7 s, which left too few queries to say anything).
        std::thread::sleep(std::time::Duration::from_millis(500));
        let outcome = feeder_killed_then_snapshot(&lab, sb);
        std::thread::sleep(std::time::Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (asked, failed) = load
            .join()
            .map_err(|_| anyhow::anyhow!("load panicked"))??;
        outcome?;
        assert!(asked > 50, "only {asked} queries under load");
        assert_eq!(failed, 0, "{failed} of {asked} queries failed");
        Ok(())
    })
}

fn feeder_killed_then_snapshot(lab: &Lab, sb: &[Netns]) -> Result<()> {
    // A feeder process, SIGKILLed while connected (as an agent would be).
    let mut feeder = Command::new(env!("CARGO_BIN_EXE_weft-dns-feed"))
        .arg("--feed")
        .arg(lab.node.feed_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    {
        use std::io::{BufRead, Write};
        let extra = Change::UpsertEndpoint(endpoint("e", "blue", &["10.10.0.5"], &["echo"]));
        let stdin = feeder.stdin.as_mut().expect("piped");
        writeln!(stdin, "{}", serde_json::to_string(&extra)?)?;
        let mut ack = String::new();
        std::io::BufReader::new(feeder.stdout.as_mut().expect("piped")).read_line(&mut ack)?;
        assert_eq!(ack.trim(), "applied");
    }
    feeder.kill()?;
    feeder.wait()?;
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "echo", "A", &[])?,
        answer("NOERROR", &["10.10.0.5"])
    );
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "bravo", "A", &[])?,
        answer("NOERROR", &["10.10.0.3"])
    );

    // The agent comes back with a snapshot: it replaces everything (echo and bravo are gone).
    let mut endpoints = endpoints();
    endpoints.retain(|e| e.id != "b");
    lab.node.feed(&[Change::Snapshot {
        networks: networks(),
        endpoints,
    }])?;
    assert_gone(&sb[A], "echo")?;
    assert_gone(&sb[A], "bravo")?;
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "alpha", "A", &[])?.status,
        "NOERROR"
    );
    Ok(())
}

#[test]
fn a_new_server_process_takes_over_from_the_state_file_without_a_gap() -> Result<()> {
    require!("dig");
    let mut lab = lab(false)?;
    // Let the state file catch up (written at most every 500 ms).
    common::wait_for(
        || std::fs::read_to_string(lab.node.state_file()).is_ok_and(|s| s.contains("bravo")),
        "the state file",
    )?;
    // The upgrade, under continuous queries: the new process binds beside the old one
    // (SO_REUSEPORT) with the old one's data, then the old one is told to go.
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Held apart while the node is changed under them.
    let sandboxes = std::mem::take(&mut lab.node.sandboxes);
    let (asked, failed) = std::thread::scope(|scope| -> Result<(u32, u32)> {
        let sandbox = &sandboxes[A];
        let load = scope.spawn(|| common::keep_asking(sandbox, "10.10.0.1", "bravo", &stop));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let upgraded = (|| {
            lab.node.start_server("nameserver 192.0.2.53\n")?;
            std::thread::sleep(std::time::Duration::from_millis(300));
            lab.node.terminate_oldest_server()
        })();
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let counts = load
            .join()
            .map_err(|_| anyhow::anyhow!("load panicked"))??;
        upgraded?;
        Ok(counts)
    })?;
    lab.node.sandboxes = sandboxes;
    assert!(asked > 50, "only {asked} queries");
    assert_eq!(
        failed, 0,
        "{failed} of {asked} queries failed across the upgrade"
    );
    let sb = &lab.node.sandboxes;
    lab.node.wait_listening("10.10.0.1")?;
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "bravo", "A", &[])?,
        answer("NOERROR", &["10.10.0.3"])
    );
    assert_eq!(
        dig(&sb[A], "10.10.0.1", "web", "A", &["+tcp"])?
            .answers
            .len(),
        2
    );
    // The feed socket is the new server's now, and root's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(lab.node.feed_path())?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    lab.node
        .feed(&[Change::RemoveEndpoint { id: "b".into() }])?;
    assert_gone(&sb[A], "bravo")?;
    Ok(())
}

#[test]
fn a_sandbox_that_cannot_reach_its_node_asks_inside_its_own_namespace() -> Result<()> {
    require!("dig");
    let lab = lab(false)?;
    // Sandbox c is told to ask 127.0.0.11 inside its namespace (as for macvlan).
    let c = &lab.node.sandboxes[C];
    let mut on_red = endpoint("c", "red", &["10.20.0.2"], &["charlie"]);
    on_red.sandbox = Some("ctr-c".into());
    on_red.netns = Some(c.path());
    lab.node.feed(&[Change::UpsertEndpoint(on_red)])?;
    common::wait_for(
        || {
            c.exec(&["ss", "-Hlun"])
                .is_ok_and(|o| o.contains("127.0.0.11:53"))
        },
        "the listener inside the sandbox",
    )?;
    assert_eq!(
        dig(c, "127.0.0.11", "charlie", "A", &[])?,
        answer("NOERROR", &["10.20.0.2"])
    );
    assert_eq!(
        dig(c, "127.0.0.11", "alpha", "A", &["+tcp"])?,
        answer("NXDOMAIN", &[])
    );
    // Gone from the data: the listener closes.
    lab.node
        .feed(&[Change::RemoveEndpoint { id: "c".into() }])?;
    common::wait_for(
        || {
            c.exec(&["ss", "-Hlun"])
                .is_ok_and(|o| !o.contains("127.0.0.11:53"))
        },
        "the listener inside the sandbox to close",
    )?;
    Ok(())
}

#[test]
fn cluster_dns_resolves_zone_names_of_every_network_and_nothing_else() -> Result<()> {
    require!("dig");
    // CoreDNS would forward `weft.internal` to this address; here dig asks from the node.
    let lab = lab_with(false, &["--cluster-listen", "127.0.0.1"])?;
    lab.node.wait_listening("127.0.0.1")?;
    let ns = &lab.node.ns;
    assert_eq!(
        dig(ns, "127.0.0.1", "web.blue.weft.internal", "A", &[])?,
        answer("NOERROR", &["10.10.0.2", "10.10.0.3"])
    );
    assert_eq!(
        dig(ns, "127.0.0.1", "charlie.red.weft.internal", "A", &["+tcp"])?,
        answer("NOERROR", &["10.20.0.2"])
    );
    assert_eq!(
        dig(ns, "127.0.0.1", "nobody.red.weft.internal", "A", &[])?,
        answer("NXDOMAIN", &[])
    );
    // Bare names are the sandboxes' view, and cluster DNS has resolvers of its own.
    assert_eq!(
        dig(ns, "127.0.0.1", "charlie", "A", &[])?,
        answer("REFUSED", &[])
    );
    assert_eq!(
        dig(ns, "127.0.0.1", "example.com", "A", &[])?,
        answer("REFUSED", &[])
    );
    Ok(())
}

#[test]
fn a_gateway_fed_before_its_address_exists_answers_once_it_does() -> Result<()> {
    require!("dig");
    let mut lab = lab(false)?;
    // The feed names network green before the agent has configured its bridge (IP_FREEBIND).
    lab.node.feed(&[
        Change::UpsertNetwork(network("green", &["10.40.0.1"])),
        Change::UpsertEndpoint(endpoint("g", "green", &["10.40.0.2"], &["golf"])),
    ])?;
    lab.node.wait_listening("10.40.0.1")?;
    lab.node.bridge("green", &["10.40.0.1/24"])?;
    let g = lab.node.sandbox("green", &["10.40.0.2/24"], "10.40.0.1")?;
    assert_eq!(
        dig(&lab.node.sandboxes[g], "10.40.0.1", "golf", "A", &[])?,
        answer("NOERROR", &["10.40.0.2"])
    );
    // And a network that goes takes its listener with it.
    lab.node.feed(&[Change::RemoveNetwork {
        name: "green".into(),
    }])?;
    common::wait_for(
        || {
            lab.node
                .ns
                .exec(&["ss", "-Hlun"])
                .is_ok_and(|o| !o.contains("10.40.0.1:53"))
        },
        "the green listener to close",
    )?;
    Ok(())
}
