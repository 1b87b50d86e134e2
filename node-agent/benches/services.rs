//! The services dataplane on one node (throwaway namespaces, real kernel, no API server):
//!
//! 1. 10,000 services × 3 endpoints programmed from cold: plan + one transaction.
//! 2. Connection rate and latency through one VIP with 10 and with 10,000 services.
//! 3. TCP throughput to an endpoint directly, through its VIP and through an ingress port.
//!
//! ```text
//! cargo bench -p weft-agent --bench services [-- SERVICES CONNECTIONS]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use weft_agent::kernel::ServiceDataplane;
use weft_agent::services::plan::{EndpointInput, PortInput, ServiceInput, plan};
use weft_api::{PublishMode, ServiceProtocol, TrafficPolicy};
use weft_e2e::netns::Netns;
use weft_e2e::topology::BridgeNode;

fn enter(ns: &Path) {
    let file = std::fs::File::open(ns).expect("open netns");
    // SAFETY: setns on a valid namespace fd changes only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0);
}

fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("thread")
}

/// :8080 answers one line per line; :9000 swallows everything.
fn serve(ns: &Path) {
    for port in [8080u16, 9000] {
        let ns = ns.to_path_buf();
        std::thread::spawn(move || {
            enter(&ns);
            let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut conn = conn;
                    if port == 9000 {
                        let mut buf = vec![0u8; 1 << 16];
                        while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
                        return;
                    }
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if conn.write_all(b"ok\n").is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
    }
}

fn service(i: u32, endpoints: &[Ipv4Addr]) -> ServiceInput {
    // VIPs from the service range of 10.64.0.0/12 (10.79.0.0/16).
    let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 79, 0, 1)) + i);
    ServiceInput {
        id: format!("bench/s{i}"),
        vip: Some(vip),
        subnets: vec!["10.64.0.0/12".parse().expect("subnet")],
        ports: vec![
            PortInput {
                protocol: ServiceProtocol::Tcp,
                port: 80,
                target: 8080,
                publish: (i == 0).then_some((PublishMode::Ingress, 8000)),
            },
            PortInput {
                protocol: ServiceProtocol::Tcp,
                port: 90,
                target: 9000,
                publish: (i == 0).then_some((PublishMode::Ingress, 9000)),
            },
        ],
        affinity: None,
        ingress_policy: TrafficPolicy::Cluster,
        endpoints: endpoints
            .iter()
            .map(|a| EndpointInput {
                address: *a,
                ready: true,
                local: true,
                via: None,
            })
            .collect(),
    }
}

/// CPU time used so far (user + system) by this process and by its waited-for children
/// (the `nft` runs): on a loaded machine the wall clock measures the other tenants too.
fn cpu_time() -> (Duration, Duration) {
    let used = |who| {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    (used(libc::RUSAGE_SELF), used(libc::RUSAGE_CHILDREN))
}

/// `n` connections one after the other: (connections per second, p50, p99 in µs).
fn connections(client: &Path, to: SocketAddr, n: usize) -> (f64, u128, u128) {
    in_ns(client, move || {
        let started = Instant::now();
        let mut lat: Vec<u128> = (0..n)
            .map(|_| {
                let t = Instant::now();
                let conn = TcpStream::connect(to).expect("connect");
                let mut w = conn.try_clone().expect("clone");
                w.write_all(b"hi\n").expect("write");
                let mut line = String::new();
                BufReader::new(conn).read_line(&mut line).expect("read");
                t.elapsed().as_micros()
            })
            .collect();
        let rate = n as f64 / started.elapsed().as_secs_f64();
        lat.sort_unstable();
        (rate, lat[n / 2], lat[n * 99 / 100])
    })
}

/// Bytes per second written to `to` for `secs` seconds.
fn throughput(client: &Path, to: SocketAddr, secs: u64) -> f64 {
    in_ns(client, move || {
        let mut conn = TcpStream::connect(to).expect("connect");
        let buf = vec![0u8; 1 << 17];
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(secs) {
            conn.write_all(&buf).expect("write");
            sent += buf.len() as u64;
        }
        sent as f64 / started.elapsed().as_secs_f64()
    })
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let conns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let node = BridgeNode::new("10.64.0.1", 12).expect("node");
    let mut eps = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3u8 {
        let ns = Netns::new(&format!("e{i}")).expect("sandbox");
        let a = Ipv4Addr::new(10, 64, 0, 2 + i);
        node.plug(&ns, &a.to_string()).expect("plug");
        serve(&ns.path());
        eps.push(ns);
        addrs.push(a);
    }
    let client = node
        .uplink("up0", "192.168.78.1", "192.168.78.2")
        .expect("outside");
    std::thread::sleep(Duration::from_millis(300));

    let many: Vec<ServiceInput> = (0..n).map(|i| service(i, &addrs)).collect();
    let few: Vec<ServiceInput> = many.iter().take(10).cloned().collect();
    let few_desired = plan(&few);
    let vip = SocketAddr::from((Ipv4Addr::new(10, 79, 0, 1), 80));

    rt.block_on(async {
        // 1. Cold start.
        let mut dp = ServiceDataplane::open(Some(&node.ns.path())).await.expect("open");
        let (self_before, children_before) = cpu_time();
        let t = Instant::now();
        let desired = plan(&many);
        let planned = t.elapsed();
        let w = dp.apply(&desired).await.expect("apply");
        let total = t.elapsed();
        let (self_after, children_after) = cpu_time();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "cold start: {n} services x 3 endpoints (x 2 ports): plan {:.0} ms, total {:.0} ms, script {:.1} MiB, {} routes",
            ms(planned),
            ms(total),
            w.script_bytes as f64 / 1048576.0,
            w.routes
        );
        println!(
            "  CPU time: this process (plan, render, routes) {:.0} ms, nft {:.0} ms",
            ms(self_after - self_before),
            ms(children_after - children_before)
        );
        // One endpoint change with everything programmed.
        let mut changed = many.clone();
        changed[n as usize / 2].endpoints[1].ready = false;
        let t = Instant::now();
        let w = dp.apply(&plan(&changed)).await.expect("apply");
        println!(
            "one endpoint change among {n} services: {:.1} ms, script {} bytes",
            t.elapsed().as_secs_f64() * 1e3,
            w.script_bytes
        );
        dp.apply(&desired).await.expect("apply");

        // 2. Per-packet cost: the same VIP with 10,000 and with 10 services, in alternating
        //    rounds (the machine's load drifts; a round of each side by side cancels it).
        let rounds = 6;
        let per_round = (conns / rounds).max(1);
        let (mut many_runs, mut few_runs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Which side goes first alternates too.
            for many_side in [round % 2 == 0, round % 2 == 1] {
                let table = if many_side { &desired } else { &few_desired };
                dp.apply(table).await.expect("apply");
                let run = connections(&client.path(), vip, per_round);
                if many_side {
                    many_runs.push(run);
                } else {
                    few_runs.push(run);
                }
            }
        }
        let median = |runs: &[(f64, u128, u128)], f: fn(&(f64, u128, u128)) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (rate_few, p50_few, p99_few) = (
            median(&few_runs, |r| r.0),
            median(&few_runs, |r| r.1 as f64),
            median(&few_runs, |r| r.2 as f64),
        );
        let (rate_many, p50_many, p99_many) = (
            median(&many_runs, |r| r.0),
            median(&many_runs, |r| r.1 as f64),
            median(&many_runs, |r| r.2 as f64),
        );
        println!(
            "connections through one VIP ({} rounds of {per_round} sequential each side, new connection + one request each; medians of the rounds):",
            rounds
        );
        println!("  {:>6} services: {rate_few:.0}/s, p50 {p50_few:.0} µs, p99 {p99_few:.0} µs", few.len());
        println!("  {:>6} services: {rate_many:.0}/s, p50 {p50_many:.0} µs, p99 {p99_many:.0} µs", n);
        println!(
            "  rate ratio {:.3}, p50 ratio {:.3}",
            rate_many / rate_few,
            p50_many / p50_few
        );

        // 3. Throughput, one endpoint behind the VIP.
        let single = vec![service(0, &addrs[..1])];
        dp.apply(&plan(&single)).await.expect("apply");
        let direct = throughput(&client.path(), SocketAddr::from((addrs[0], 9000)), 3);
        let via_vip = throughput(&client.path(), SocketAddr::from((Ipv4Addr::new(10, 79, 0, 1), 90)), 3);
        let via_ingress = throughput(&client.path(), "192.168.78.1:9000".parse().expect("addr"), 3);
        let g = |b: f64| b * 8.0 / 1e9;
        println!("TCP throughput, 3 s each, from a client outside the node:");
        println!("  direct to the endpoint: {:.2} Gbit/s", g(direct));
        println!("  through the VIP:        {:.2} Gbit/s ({:.0} %)", g(via_vip), via_vip / direct * 100.0);
        println!("  through ingress :9000:  {:.2} Gbit/s ({:.0} %)", g(via_ingress), via_ingress / direct * 100.0);
        dp.remove().await.expect("remove");
    });
    drop(eps);
}
