//! Side-by-side DNS benchmark: weft-dns vs dnsmasq (hosts file) vs Podman's aardvark-dns
//! (its config directory), each serving the same 10,000 names, each pinned to one core, asked
//! by dnsperf pinned to the other, all on loopback inside a throwaway namespace.
//!
//! Figures: queries/s at full load (dnsperf, 100 outstanding queries), p99 latency at half of
//! weft-dns's peak, weft-dns's RSS before/after the 10,000 names (and the peers' RSS).
//! `cargo bench -p weft-dns --bench dns` (WEFT_DNS_BENCH_SECS=N for longer runs; default 10).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weft_dns::model::{Change, Endpoint, Network};
use weft_e2e::netns::{Netns, sh};

const NAMES: u32 = 10_000;

/// Counts live heap bytes, to split the server's memory into fed data and index.
struct Counting;
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
// SAFETY: forwards to the system allocator, only counting.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same layout, as the caller promised.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: p came from alloc with this layout.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}
#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}
const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
/// Cores: servers on one, dnsperf on the other.
const SERVER_CPU: &str = "1";
const CLIENT_CPU: &str = "0";

fn name(i: u32) -> String {
    format!("name{i:05}")
}

fn address(i: u32) -> String {
    format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256)
}

fn main() -> Result<()> {
    require!("dnsperf", "taskset", "ss");
    let secs: u64 = std::env::var("WEFT_DNS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    index_build();
    let ns = Netns::new("dnsbench")?;
    let dir = ns.state_dir();
    // dnsperf's input: every name once, in a scrambled order.
    let mut queries = String::new();
    for k in 0..NAMES {
        writeln!(queries, "{} A", name((k * 7919) % NAMES))?;
    }
    let query_file = dir.join("queries");
    std::fs::write(&query_file, queries)?;

    // Start all three, then take turns (rounds), so a burst of load from elsewhere on the
    // machine hits every server alike; each server's best round counts.
    let weft = weft(&ns)?;
    println!(
        "weft-dns RSS: {} KiB before the names, {} KiB after: +{} KiB for {NAMES} names",
        weft.rss_before,
        weft.rss_after,
        weft.rss_after.saturating_sub(weft.rss_before)
    );
    let mut servers = vec![Server {
        name: "weft-dns",
        port: 5301,
        pid: weft.pid,
        runs: vec![],
    }];
    if common::have("dnsmasq") {
        servers.push(Server {
            name: "dnsmasq",
            port: 5302,
            pid: dnsmasq(&ns)?,
            runs: vec![],
        });
    } else {
        println!("SKIP: dnsmasq is not installed (.ci/run installs it)");
    }
    if std::path::Path::new(AARDVARK).exists() {
        servers.push(Server {
            name: "aardvark-dns",
            port: 5303,
            pid: aardvark(&ns)?,
            runs: vec![],
        });
    } else {
        println!("SKIP: {AARDVARK} is missing (Debian package aardvark-dns; .ci/run installs it)");
    }
    let rounds: usize = std::env::var("WEFT_DNS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for _ in 0..rounds {
        for s in &mut servers {
            let run = measured(s.pid, || dnsperf(&ns, s.port, &query_file, secs, None))?;
            s.runs.push(run);
        }
    }
    let peak = |s: &Server| s.runs.iter().map(|r| r.qps).fold(0.0, f64::max);
    let weft_peak = peak(&servers[0]);
    // p99 with every server asked at half of weft-dns's peak (or its own peak, if lower).
    let mut p99 = Vec::new();
    for s in &servers {
        let rate = (weft_peak / 2.0).min(peak(s));
        p99.push(dnsperf(
            &ns,
            s.port,
            &query_file,
            secs.div_ceil(2),
            Some(rate),
        )?);
    }

    println!(
        "\n{NAMES} names; servers pinned to cpu {SERVER_CPU}, dnsperf (4 clients, 100 outstanding \
         each) to cpu {CLIENT_CPU}; {rounds} rounds of {secs} s, best round counts"
    );
    println!(
        "| server | queries/s (best) | weft-dns is | CPU per query (median) | p99 at {:.0} q/s | RSS |",
        weft_peak / 2.0
    );
    println!("|---|---|---|---|---|---|");
    for (s, half) in servers.iter().zip(&p99) {
        let mut cpu: Vec<f64> = s.runs.iter().map(|r| r.cpu_us_per_query).collect();
        cpu.sort_by(f64::total_cmp);
        println!(
            "| {} | {:.0} | {:.2}x | {:.1} µs | {:.3} ms{} | {} KiB |",
            s.name,
            peak(s),
            weft_peak / peak(s),
            cpu[cpu.len() / 2],
            half.p99_ms,
            if half.asked < weft_peak / 2.0 - 1.0 {
                format!(" (at {:.0} q/s)", half.asked)
            } else {
                String::new()
            },
            rss_kib(s.pid)?
        );
    }
    println!(
        "CPU per query is the server's user+system time over the queries it answered: \
         the least noisy figure on a shared machine (1e6 / it = one core's ceiling)."
    );
    Ok(())
}

/// The in-process cost of what each feed change costs the server: rebuilding the index.
fn index_build() {
    let before = live();
    let mut data = weft_dns::model::Data::default();
    let endpoints = (0..NAMES)
        .map(|i| endpoint(&format!("ep{i}"), &address(i), &name(i)))
        .collect();
    let network = Network {
        name: "bench".into(),
        internal: false,
        gateways: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        upstreams: None,
        zone: None,
    };
    let _ = data.apply(Change::Snapshot {
        networks: vec![network],
        endpoints,
    });
    let with_data = live();
    let index = weft_dns::model::Index::build(&data);
    println!(
        "heap for {NAMES} names: fed data {} KiB, index {} KiB",
        (with_data - before) / 1024,
        (live() - with_data) / 1024
    );
    drop(index);
    let mut took: Vec<Duration> = (0..10)
        .map(|_| {
            let start = std::time::Instant::now();
            std::hint::black_box(weft_dns::model::Index::build(&data));
            start.elapsed()
        })
        .collect();
    took.sort();
    println!(
        "Index::build with {NAMES} names (in process): median {:?}",
        took[took.len() / 2]
    );
}

struct Server {
    name: &'static str,
    port: u16,
    pid: u32,
    runs: Vec<Measured>,
}

struct Measured {
    qps: f64,
    cpu_us_per_query: f64,
}

/// Run dnsperf and charge the server's CPU time (from /proc) to the queries answered.
fn measured(pid: u32, run: impl FnOnce() -> Result<Run>) -> Result<Measured> {
    let before = cpu_ticks(pid)?;
    let r = run()?;
    let ticks = cpu_ticks(pid)? - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(Measured {
        qps: r.qps,
        cpu_us_per_query: ticks as f64 / hz * 1e6 / r.completed.max(1) as f64,
    })
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}

struct WeftRun {
    pid: u32,
    rss_before: u64,
    rss_after: u64,
}

/// weft-dns on 127.0.0.1:5301 as network `bench`, whose member at 127.0.0.1 is dnsperf.
fn weft(ns: &Netns) -> Result<WeftRun> {
    let dir = ns.state_dir();
    let feed = dir.join("dns.sock");
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "")?;
    let child = Command::new("taskset")
        .args(["-c", SERVER_CPU, "ip", "netns", "exec", ns.name()])
        .arg(env!("CARGO_BIN_EXE_weft-dns"))
        .arg("--feed")
        .arg(&feed)
        .arg("--resolv-conf")
        .arg(&resolv)
        .args(["--port", "5301"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    common::wait_for(|| feed.exists(), "the feed socket")?;
    let network = Network {
        name: "bench".into(),
        internal: false,
        gateways: vec!["127.0.0.1".parse()?],
        upstreams: None,
        zone: None,
    };
    let client = endpoint("client", "127.0.0.1", "dnsperf");
    send(
        &feed,
        Change::Snapshot {
            networks: vec![network.clone()],
            endpoints: vec![client.clone()],
        },
    )?;
    wait_port(ns, 5301)?;
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(pid)?;
    let mut endpoints = vec![client];
    endpoints.extend((0..NAMES).map(|i| endpoint(&format!("ep{i}"), &address(i), &name(i))));
    send(
        &feed,
        Change::Snapshot {
            networks: vec![network],
            endpoints,
        },
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = rss_kib(pid)?;
    // One delta with 10,000 names loaded: the whole index is rebuilt before the ack.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut took: Vec<Duration> = rt.block_on(async {
        let mut conn = weft_dns::feed::FeedConnection::connect(&feed).await?;
        let mut took = Vec::new();
        for i in 0..20 {
            let start = std::time::Instant::now();
            conn.send(&Change::UpsertEndpoint(endpoint(
                "extra",
                &address(NAMES + i),
                "extra",
            )))
            .await?;
            took.push(start.elapsed());
        }
        anyhow::Ok(took)
    })?;
    took.sort();
    println!(
        "one feed delta → applied, with {NAMES} names: median {:?}",
        took[took.len() / 2]
    );
    // The namespace's end kills it.
    std::mem::forget(child);
    Ok(WeftRun {
        pid,
        rss_before,
        rss_after,
    })
}

fn endpoint(id: &str, address: &str, name: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        network: "bench".into(),
        sandbox: None,
        addresses: vec![address.parse().expect("bench address")],
        names: vec![name.into()],
        netns: None,
    }
}

fn send(feed: &std::path::Path, change: Change) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        weft_dns::feed::FeedConnection::connect(feed)
            .await?
            .send(&change)
            .await?;
        anyhow::Ok(())
    })
}

/// dnsmasq on 127.0.0.1:5302 with the names in a hosts file; returns its pid.
fn dnsmasq(ns: &Netns) -> Result<u32> {
    let dir = ns.state_dir();
    let mut hosts = String::new();
    for i in 0..NAMES {
        writeln!(hosts, "{} {}", address(i), name(i))?;
    }
    let hosts_file = dir.join("hosts");
    std::fs::write(&hosts_file, hosts)?;
    let pid_file = dir.join("dnsmasq.pid");
    sh(&[
        "taskset",
        "-c",
        SERVER_CPU,
        "ip",
        "netns",
        "exec",
        ns.name(),
        "dnsmasq",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--port=5302",
        "--local-ttl=2",
        "--user=root",
        &format!("--addn-hosts={}", hosts_file.display()),
        &format!("--pid-file={}", pid_file.display()),
    ])?;
    wait_port(ns, 5302)?;
    read_pid(&pid_file)
}

/// aardvark-dns on 127.0.0.1:5303, the names in its config directory (network file `bench`:
/// listen addresses, then `<container id> <v4> <v6> <names>` lines); returns its pid.
fn aardvark(ns: &Netns) -> Result<u32> {
    let config = ns.state_dir().join("aardvark");
    std::fs::create_dir_all(&config)?;
    let mut file = String::from("127.0.0.1\n");
    writeln!(file, "{:064x} 127.0.0.1  dnsperf", u32::MAX)?;
    for i in 0..NAMES {
        writeln!(file, "{:064x} {}  {}", i, address(i), name(i))?;
    }
    std::fs::write(config.join("bench"), file)?;
    // `run` forks; the parent returns once the server is up and its pid file is written.
    let config_arg = config.display().to_string();
    sh(&[
        "taskset",
        "-c",
        SERVER_CPU,
        "ip",
        "netns",
        "exec",
        ns.name(),
        AARDVARK,
        "--config",
        &config_arg,
        "-p",
        "5303",
        "run",
    ])?;
    wait_port(ns, 5303)?;
    read_pid(&config.join("aardvark.pid"))
}

fn read_pid(path: &std::path::Path) -> Result<u32> {
    let mut pid = None;
    common::wait_for(
        || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        },
        "a pid file",
    )?;
    pid.context("no pid")
}

fn wait_port(ns: &Netns, port: u16) -> Result<()> {
    let want = format!("127.0.0.1:{port}");
    common::wait_for(
        || ns.exec(&["ss", "-Hlun"]).is_ok_and(|o| o.contains(&want)),
        &format!("a listener on {want}"),
    )
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

struct Run {
    qps: f64,
    completed: u64,
    asked: f64,
    p99_ms: f64,
}

/// dnsperf against 127.0.0.1:`port` for `secs` (at `rate` queries/s if given, then with
/// per-query latencies); fails if any query went unanswered or was not NOERROR.
fn dnsperf(
    ns: &Netns,
    port: u16,
    queries: &std::path::Path,
    secs: u64,
    rate: Option<f64>,
) -> Result<Run> {
    let port = port.to_string();
    let secs = secs.to_string();
    let file = queries.display().to_string();
    let mut args = vec![
        "taskset",
        "-c",
        CLIENT_CPU,
        "ip",
        "netns",
        "exec",
        ns.name(),
        "dnsperf",
        "-s",
        "127.0.0.1",
        "-p",
        &port,
        "-d",
        &file,
        "-l",
        &secs,
        "-c",
        "4",
        "-q",
        "100",
        "-t",
        "2",
    ];
    let rate_arg;
    if let Some(r) = rate {
        rate_arg = format!("{r:.0}");
        args.extend_from_slice(&["-Q", &rate_arg, "-v"]);
    }
    let out = sh(&args)?;
    let field = |label: &str| -> Option<&str> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(str::trim)
    };
    let qps: f64 = field("Queries per second:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no qps in dnsperf's output:\n{out}"))?;
    let lost = field("Queries lost:").unwrap_or("?");
    let codes = field("Response codes:").unwrap_or("?");
    if !codes.starts_with("NOERROR") || codes.contains(',') {
        bail!("port {port}: answers were not all NOERROR: {codes}");
    }
    let mut latencies: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("> NOERROR "))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let p99_ms = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .map_or(f64::NAN, |s| s * 1000.0);
    println!(
        "port {port}: {qps:.0} queries/s{}, lost {lost}{}",
        rate.map_or(String::new(), |r| format!(" (asked {r:.0}/s)")),
        if latencies.is_empty() {
            String::new()
        } else {
            format!(", p99 {p99_ms:.3} ms")
        }
    );
    let completed = field("Queries completed:")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok(Run {
        qps,
        completed,
        asked: rate.unwrap_or(f64::NAN),
        p99_ms,
    })
}
