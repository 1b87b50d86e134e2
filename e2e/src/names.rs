//! Names through real `dig` and a real `weft-dns` process: what the DNS tests of `weft-dns`
//! (fed by hand) and the agent's (fed by the agent) ask with, in one place.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::netns::{Netns, sh};

/// A `weft-dns` process inside a node's namespace. Dropping it kills it (SIGKILL).
pub struct NameServer {
    child: Child,
    pub feed: PathBuf,
}

impl NameServer {
    /// Start `binary` in `ns` with its feed socket and state file in `dir`, forwarding to
    /// the resolvers of `resolv_conf` (text of a resolv.conf); returns once the feed listens.
    pub async fn start(binary: &Path, ns: &Netns, dir: &Path, resolv_conf: &str) -> Result<Self> {
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, resolv_conf)?;
        let feed = dir.join("dns.sock");
        let _ = std::fs::remove_file(&feed);
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(binary)
            .arg("--feed")
            .arg(&feed)
            .arg("--state-file")
            .arg(dir.join("dns.json"))
            .arg("--resolv-conf")
            .arg(&resolv)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting weft-dns")?;
        crate::wait_for(Duration::from_secs(10), || {
            let up = feed.exists();
            async move { Ok(up.then_some(())) }
        })
        .await
        .context("weft-dns never opened its feed socket")?;
        Ok(Self { child, feed })
    }

    /// SIGKILL it and wait until it is gone (its sockets and addresses free again).
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await.context("killing weft-dns")
    }
}

/// What `dig` saw: the status and the answer data (last field of each answer line).
#[derive(Debug, PartialEq, Eq)]
pub struct Dug {
    pub status: String,
    pub answers: Vec<String>,
}

/// `dig @server name type` from inside `ns` (extra flags such as `+tcp` in `flags`).
pub fn dig(ns: &Netns, server: &str, name: &str, qtype: &str, flags: &[&str]) -> Result<Dug> {
    let at = format!("@{server}");
    let mut args = vec![
        "ip",
        "netns",
        "exec",
        ns.name(),
        "dig",
        &at,
        name,
        qtype,
        "+tries=1",
        "+time=2",
        "+noall",
        "+comments",
        "+answer",
    ];
    args.extend_from_slice(flags);
    let out = sh(&args)?;
    let status = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .with_context(|| format!("no status in dig's output:\n{out}"))?
        .to_owned();
    let mut answers: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    answers.sort();
    Ok(Dug { status, answers })
}

/// Run `f` on a thread inside `ns` (sockets it opens stay there).
pub fn inside<R: Send>(ns: &Netns, f: impl FnOnce() -> R + Send) -> Result<R> {
    let file = std::fs::File::open(ns.path())?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on an fd we own; only this scoped thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread inside {} panicked", ns.name()))?
    })
}

/// Ask `name` (A) from `ns` every 5 ms until `stop`; returns (asked, failed): a failure is no
/// answer within 1 s or an answer that is not NOERROR with at least one address.
pub fn keep_asking(
    ns: &Netns,
    server: &str,
    name: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(u32, u32)> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    let server: std::net::SocketAddr = format!("{server}:53").parse()?;
    let qname = Name::from_ascii(name)?;
    inside(ns, || -> Result<(u32, u32)> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(Duration::from_secs(1)))?;
        let (mut asked, mut failed) = (0u32, 0u32);
        let mut buf = [0u8; 1500];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            asked += 1;
            let id = asked as u16;
            let mut q = Message::new(id, MessageType::Query, OpCode::Query);
            q.add_query(Query::query(qname.clone(), RecordType::A));
            sock.send(&q.to_vec()?)?;
            let sent = std::time::Instant::now();
            let failure = loop {
                match sock.recv(&mut buf) {
                    Ok(n) => match Message::from_vec(&buf[..n]) {
                        Ok(m) if m.metadata.id != id => continue,
                        Ok(m)
                            if m.metadata.response_code == ResponseCode::NoError
                                && !m.answers.is_empty() =>
                        {
                            break None;
                        }
                        Ok(m) => {
                            break Some(format!(
                                "{:?}, {} answers",
                                m.metadata.response_code,
                                m.answers.len()
                            ));
                        }
                        Err(e) => break Some(format!("undecodable answer: {e}")),
                    },
                    Err(e) => break Some(format!("no answer: {e}")),
                }
            };
            let ok = failure.is_none();
            if let Some(why) = failure {
                // Which query and when, for the reader of a failed test.
                eprintln!("query {asked} failed after {:?}: {why}", sent.elapsed());
            }
            failed += u32::from(!ok);
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((asked, failed))
    })?
}

/// Ask `name` (A) from `ns` every 2 ms until an answer with an address comes; the instant
/// it came, or an error after `within`.
pub fn wait_resolvable(
    ns: &Netns,
    server: &str,
    name: &str,
    within: Duration,
) -> Result<std::time::Instant> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    let server: std::net::SocketAddr = format!("{server}:53").parse()?;
    let qname = Name::from_ascii(name)?;
    inside(ns, || -> Result<std::time::Instant> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(Duration::from_millis(2)))?;
        let deadline = std::time::Instant::now() + within;
        let mut buf = [0u8; 1500];
        let mut id = 0u16;
        while std::time::Instant::now() < deadline {
            id = id.wrapping_add(1);
            let mut q = Message::new(id, MessageType::Query, OpCode::Query);
            q.add_query(Query::query(qname.clone(), RecordType::A));
            // Refused (port closed for a moment) or lost: ask again.
            let _ = sock.send(&q.to_vec()?);
            while let Ok(n) = sock.recv(&mut buf) {
                if let Ok(m) = Message::from_vec(&buf[..n])
                    && m.metadata.id == id
                    && m.metadata.response_code == ResponseCode::NoError
                    && !m.answers.is_empty()
                {
                    return Ok(std::time::Instant::now());
                }
            }
        }
        anyhow::bail!("{name} never resolved at {server} within {within:?}")
    })?
}
