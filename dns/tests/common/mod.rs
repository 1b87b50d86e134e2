//! A tiny node for DNS tests, all in throwaway namespaces: a "node" namespace with one bridge
//! per network (its gateway address on it), "sandbox" namespaces on the bridges by veth, a
//! weft-dns server in the node, and `dig` run inside the sandboxes.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_dns::model::{Change, Endpoint, Network};
use weft_e2e::netns::Netns;
// Each test binary uses some of them.
#[allow(unused_imports)]
pub use weft_e2e::names::{Dug, dig, inside, keep_asking};

/// Print a SKIP line and return from the test when a needed tool is missing.
#[macro_export]
macro_rules! require {
    ($($tool:literal),+) => {
        $(if !common::have($tool) {
            println!("SKIP: `{}` is not installed (.ci/run installs it)", $tool);
            return Ok(());
        })+
    };
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Node {
    pub ns: Netns,
    pub sandboxes: Vec<Netns>,
    servers: Vec<Child>,
    links: u32,
}

pub fn network(name: &str, gateways: &[&str]) -> Network {
    Network {
        name: name.into(),
        internal: false,
        gateways: gateways
            .iter()
            .map(|g| g.parse().expect("test address"))
            .collect(),
        upstreams: None,
        zone: None,
    }
}

pub fn endpoint(id: &str, network: &str, addresses: &[&str], names: &[&str]) -> Endpoint {
    Endpoint {
        id: id.into(),
        network: network.into(),
        sandbox: None,
        addresses: addresses
            .iter()
            .map(|a| a.parse().expect("test address"))
            .collect(),
        names: names.iter().map(|n| n.to_string()).collect(),
        netns: None,
    }
}

impl Node {
    pub fn new() -> Result<Self> {
        Ok(Self {
            ns: Netns::new("dns")?,
            sandboxes: Vec::new(),
            servers: Vec::new(),
            links: 0,
        })
    }

    /// A bridge with gateway addresses (CIDR, v4 and/or v6).
    pub fn bridge(&self, name: &str, gateways: &[&str]) -> Result<()> {
        self.ns
            .exec(&["ip", "link", "add", name, "type", "bridge"])?;
        for g in gateways {
            self.ns
                .exec(&["ip", "addr", "add", g, "dev", name, "nodad"])?;
        }
        self.ns.exec(&["ip", "link", "set", name, "up"]).map(drop)
    }

    /// A new sandbox namespace attached to `bridge` with `addresses` (CIDR), default route
    /// via `gateway`; returns its index in `sandboxes`.
    pub fn sandbox(&mut self, bridge: &str, addresses: &[&str], gateway: &str) -> Result<usize> {
        let sb = Netns::new("dns-sb")?;
        self.attach(&sb, bridge, "eth0", addresses, Some(gateway))?;
        self.sandboxes.push(sb);
        Ok(self.sandboxes.len() - 1)
    }

    /// One more interface of an existing namespace on `bridge`.
    pub fn attach(
        &mut self,
        sb: &Netns,
        bridge: &str,
        ifname: &str,
        addresses: &[&str],
        gateway: Option<&str>,
    ) -> Result<()> {
        self.links += 1;
        let host = format!("v{}", self.links);
        self.ns.veth_into(&host, sb, ifname)?;
        self.ns
            .exec(&["ip", "link", "set", &host, "master", bridge, "up"])?;
        for a in addresses {
            sb.exec(&["ip", "addr", "add", a, "dev", ifname, "nodad"])?;
        }
        sb.exec(&["ip", "link", "set", ifname, "up"])?;
        if let Some(gw) = gateway {
            sb.exec(&["ip", "route", "add", "default", "via", gw])?;
        }
        Ok(())
    }

    pub fn feed_path(&self) -> PathBuf {
        self.ns.state_dir().join("dns.sock")
    }

    pub fn state_file(&self) -> PathBuf {
        self.ns.state_dir().join("dns.json")
    }

    /// Start a weft-dns in the node, forwarding to the resolvers in `resolv_conf` (text).
    pub fn start_server(&mut self, resolv_conf: &str) -> Result<()> {
        self.start_server_with(resolv_conf, &[])
    }

    /// [`Node::start_server`] with more flags.
    pub fn start_server_with(&mut self, resolv_conf: &str, flags: &[&str]) -> Result<()> {
        let resolv = self.ns.state_dir().join("resolv.conf");
        std::fs::write(&resolv, resolv_conf)?;
        let _ = std::fs::remove_file(self.feed_path());
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .arg(env!("CARGO_BIN_EXE_weft-dns"))
            .arg("--feed")
            .arg(self.feed_path())
            .arg("--state-file")
            .arg(self.state_file())
            .arg("--resolv-conf")
            .arg(&resolv)
            .args(["--tcp-idle", "1s"])
            .args(flags)
            .env("RUST_LOG", "warn")
            .spawn()
            .context("starting weft-dns")?;
        self.servers.push(child);
        wait_for(|| self.feed_path().exists(), "the feed socket")
    }

    /// SIGKILL the oldest server still running.
    pub fn kill_oldest_server(&mut self) -> Result<()> {
        let mut child = self.servers.remove(0);
        let killed = child.kill();
        child.wait()?;
        Ok(killed?)
    }

    /// SIGTERM the oldest server still running (an upgrade's last step) and reap it.
    pub fn terminate_oldest_server(&mut self) -> Result<()> {
        let mut child = self.servers.remove(0);
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait()?;
        if sent != 0 {
            bail!("SIGTERM: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn server_pid(&self) -> Option<u32> {
        // `ip netns exec` execs the program: the child's pid is the server's.
        self.servers.last().map(Child::id)
    }

    /// Feed changes over one connection (closed afterwards, as an agent's restart would).
    pub fn feed(&self, changes: &[Change]) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut conn = weft_dns::feed::FeedConnection::connect(&self.feed_path()).await?;
            for c in changes {
                conn.send(c).await?;
            }
            anyhow::Ok(())
        })
    }

    /// Wait until something listens on UDP `addr`:53 in the node (listeners follow the feed).
    pub fn wait_listening(&self, addr: &str) -> Result<()> {
        let want = format!("{}:53", bracket(addr));
        wait_for(
            || {
                self.ns
                    .exec(&["ss", "-Hlun"])
                    .is_ok_and(|out| out.contains(&want))
            },
            &format!("a listener on {want}"),
        )
    }
}

fn bracket(addr: &str) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{addr}]"),
        _ => addr.to_owned(),
    }
}

pub fn wait_for(mut ok: impl FnMut() -> bool, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out waiting for {what}")
}

impl Drop for Node {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
