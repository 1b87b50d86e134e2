//! Real Podman (Debian's 4.x, CNI backend) driving the real `weft-cni` against a test node's
//! agent: the runtime's view of Weft.
//!
//! Everything Podman reads or writes is the test's own, in one temporary directory:
//! `containers.conf` (`CONTAINERS_CONF`: CNI backend, plugin and network-config directories,
//! runc, file locks instead of `/dev/shm/libpod_lock`, its own tmp dir and event log),
//! `storage.conf` (`CONTAINERS_STORAGE_CONF`: vfs under the directory), an empty
//! `registries.conf`, and a root filesystem built from busybox-static (`podman run --rootfs`;
//! no registry exists). `XDG_*` and `HOME` are not passed on, so no user configuration is read.
//! Containers get the cgroup parent `/weft-e2e-<pid>-<n>` instead of `/libpod_parent`.
//!
//! What Podman leaves outside that directory is removed by [`Podman::close`] (also on drop):
//! its containers, the cgroups above, its sandbox namespaces under `/run/netns`, and libcni's
//! cached results in `/var/lib/cni/results` — libcni 1.1 has no setting for that directory,
//! so only the files of this instance's networks (`weft-e2e-<pid>-<n>-*`) are removed, and the
//! directories only when this instance created them and they are empty.
//!
//! Podman runs in the host's namespaces; the sandboxes it makes are attached by the node's
//! agent (`--netns` the node namespace), which weft-cni reaches through the conflist's
//! `socket`, so containers sit on the node namespace's bridge like the harness's own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cluster::Node;
use crate::netns::workspace_binary;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// libcni's cache (results of ADD, kept until DEL succeeds).
pub const CNI_CACHE: &str = "/var/lib/cni";

/// The page `httpd` serves in [`Podman::web`] containers.
pub const PAGE: &str = "hello from a podman container";

/// The busybox applets the tests run inside containers.
const APPLETS: [&str; 9] = [
    "sh", "ping", "ip", "httpd", "sleep", "cat", "nc", "printf", "tail",
];

/// Variables that would make Podman read a configuration of the host or the user.
const FOREIGN_ENV: [&str; 9] = [
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_CONFIG_DIRS",
    "XDG_DATA_HOME",
    "XDG_DATA_DIRS",
    "CONTAINERS_CONF_OVERRIDE",
    "REGISTRIES_CONFIG_PATH",
    "CONTAINERS_REGISTRIES_CONF",
    "CONTAINER_HOST",
];

/// One private Podman installation.
pub struct Podman {
    dir: PathBuf,
    rootfs: PathBuf,
    /// `weft-e2e-<pid>-<n>`: prefix of its CNI network names and its cgroup parent.
    prefix: String,
    cni_cache_existed: bool,
    cni_results_existed: bool,
    /// Every sandbox path Podman reported, removed at the end if Podman left it.
    sandboxes: Mutex<BTreeSet<String>>,
    closed: bool,
}

/// `SKIP: <reason>` when a tool is missing (CI installs them all, see `.ci/run`).
fn missing_tool() -> Option<String> {
    for (tool, package) in [
        ("podman", "podman"),
        ("runc", "runc"),
        ("conmon", "conmon"),
        ("busybox", "busybox-static"),
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            return Some(format!(
                "{tool} is not installed (apt-get install {package})"
            ));
        }
    }
    None
}

impl Podman {
    /// A fresh installation, or `None` after printing `SKIP: …` when Podman, runc or
    /// busybox-static is not installed.
    pub fn new() -> Result<Option<Self>> {
        if let Some(reason) = missing_tool() {
            println!("SKIP: {reason}");
            return Ok(None);
        }
        let prefix = format!(
            "weft-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        let podman = Self {
            rootfs: dir.join("rootfs"),
            dir,
            cni_cache_existed: Path::new(CNI_CACHE).exists(),
            cni_results_existed: Path::new(CNI_CACHE).join("results").exists(),
            prefix,
            sandboxes: Mutex::new(BTreeSet::new()),
            closed: false,
        };
        podman.write_files()?;
        Ok(Some(podman))
    }

    fn write_files(&self) -> Result<()> {
        let dir = &self.dir;
        for sub in ["bin", "net", "storage", "run", "tmp", "hooks", "home"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // weft-cni installed under its CNI type, as the chart does.
        std::fs::copy(workspace_binary("weft-cni")?, dir.join("bin/weft"))
            .context("installing weft-cni as bin/weft")?;
        let d = dir.display();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
default_mounts_file = "{d}/mounts.conf"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{d}/bin"]
network_config_dir = "{d}/net"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"
hooks_dir = ["{d}/hooks"]
lock_type = "file"
"#
            ),
        )?;
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/run\"\ngraphroot = \"{d}/storage\"\n"
            ),
        )?;
        std::fs::write(dir.join("registries.conf"), "")?;
        std::fs::write(dir.join("mounts.conf"), "")?;

        // The root filesystem: busybox-static and the applets the tests call.
        let bin = self.rootfs.join("bin");
        std::fs::create_dir_all(&bin)?;
        for sub in ["etc", "proc", "sys", "dev", "tmp", "www"] {
            std::fs::create_dir_all(self.rootfs.join(sub))?;
        }
        let busybox = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("busybox"))
                    .find(|p| p.is_file())
            })
            .context("busybox")?;
        std::fs::copy(&busybox, bin.join("busybox")).context("copying busybox")?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
        std::fs::write(self.rootfs.join("www/index.html"), PAGE)?;
        Ok(())
    }

    /// A Podman network `name` (prefixed, see [`Podman::network_name`]) that attaches through
    /// `node`'s agent to the ContainerNetwork `weft_network`: the README's conflist.
    pub fn network(&self, name: &str, weft_network: &str, node: &Node) -> Result<String> {
        let full = self.network_name(name);
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": full,
            "plugins": [{
                "type": "weft",
                "network": weft_network,
                "socket": node.cni_socket().display().to_string(),
                "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true},
            }],
        });
        std::fs::write(
            self.dir.join("net").join(format!("{full}.conflist")),
            serde_json::to_string_pretty(&conflist)?,
        )?;
        Ok(full)
    }

    /// The Podman (and CNI) name of this instance's network `name`.
    pub fn network_name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// `podman ARGS` with this installation's configuration; the raw output.
    pub fn command(&self, args: &[&str]) -> Result<Output> {
        self.podman(args)
            .output()
            .with_context(|| format!("running podman {args:?}"))
    }

    /// `podman ARGS` started in the background (stdout and stderr piped), for something
    /// that must run while the test does other things, such as a ping.
    pub fn spawn(&self, args: &[&str]) -> Result<std::process::Child> {
        self.podman(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting podman {args:?}"))
    }

    fn podman(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        for var in FOREIGN_ENV {
            cmd.env_remove(var);
        }
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .env("HOME", self.dir.join("home"))
            .args(args);
        cmd
    }

    /// `podman ARGS`, failing with its stderr; stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args)?;
        if !out.status.success() {
            bail!(
                "podman {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `podman run -d --name NAME --network NETWORK EXTRA… --rootfs ROOTFS COMMAND…`; the
    /// container id. `--replace` makes a retry after a refused ADD (which leaves the
    /// container Created) start clean.
    pub fn run(
        &self,
        name: &str,
        network: &str,
        extra: &[&str],
        command: &[&str],
    ) -> Result<String> {
        let cgroup_parent = format!("/{}", self.prefix);
        let rootfs = self.rootfs.display().to_string();
        let mut args = vec![
            "run",
            "-d",
            "--replace",
            "--name",
            name,
            "--network",
            network,
            "--cgroup-parent",
            &cgroup_parent,
        ];
        args.extend_from_slice(extra);
        args.extend(["--rootfs", &rootfs]);
        args.extend_from_slice(command);
        let id = self.ok(&args)?;
        self.record_sandbox(name);
        Ok(id)
    }

    /// A container that only sleeps.
    pub fn idle(&self, name: &str, network: &str, extra: &[&str]) -> Result<String> {
        self.run(name, network, extra, &["sleep", "3600"])
    }

    /// A container serving [`PAGE`] over HTTP on port 80.
    pub fn web(&self, name: &str, network: &str, extra: &[&str]) -> Result<String> {
        self.run(
            name,
            network,
            extra,
            &["httpd", "-f", "-p", "80", "-h", "/www"],
        )
    }

    /// Like [`Podman::idle`], retried for up to `within` while the agent refuses (the network
    /// is not programmed yet: "try again later").
    pub async fn idle_when_ready(
        &self,
        name: &str,
        network: &str,
        extra: &[&str],
        within: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            match self.idle(name, network, extra) {
                Ok(id) => return Ok(id),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// `podman inspect NAME`, as JSON.
    pub fn inspect(&self, name: &str) -> Result<Value> {
        let text = self.ok(&["inspect", name])?;
        let mut list: Vec<Value> = serde_json::from_str(&text).context("podman inspect JSON")?;
        if list.len() != 1 {
            bail!("podman inspect {name}: {} objects", list.len());
        }
        Ok(list.remove(0))
    }

    /// The container's settings on `network` (`podman inspect`'s NetworkSettings.Networks).
    pub fn settings(&self, name: &str, network: &str) -> Result<Value> {
        let all = self.inspect(name)?;
        all["NetworkSettings"]["Networks"]
            .get(network)
            .cloned()
            .with_context(|| format!("{name} is not on {network}: {}", all["NetworkSettings"]))
    }

    /// The address Podman reports for the container on `network` ("" when it has none).
    pub fn address(&self, name: &str, network: &str) -> Result<String> {
        Ok(self.settings(name, network)?["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn id(&self, name: &str) -> Result<String> {
        self.ok(&["inspect", "--format", "{{.Id}}", name])
    }

    /// `podman exec --privileged NAME ARGS…` (privileged: ping needs NET_RAW, which Podman
    /// drops); stdout, or the failure.
    pub fn exec(&self, name: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["exec", "--privileged", name];
        full.extend_from_slice(args);
        self.ok(&full)
    }

    /// The IPv4 address with prefix on `eth0` inside the container, as the kernel has it.
    pub fn address_inside(&self, name: &str) -> Result<String> {
        let out = self.exec(name, &["ip", "-4", "-o", "addr", "show", "eth0"])?;
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no IPv4 address on eth0 in {name}: {out}"))
    }

    /// The MAC of `eth0` inside the container.
    pub fn mac_inside(&self, name: &str) -> Result<String> {
        let out = self.exec(name, &["cat", "/sys/class/net/eth0/address"])?;
        Ok(out.trim().to_string())
    }

    /// One ping from the container to `target`, retried for up to `within`.
    pub async fn reaches(&self, name: &str, target: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.exec(name, &["ping", "-c1", "-W1", target]).is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// HTTP GET `http://host:port/` from inside the container (busybox `nc`; its `wget`
    /// crashes in a bare root filesystem); the body, or `None`.
    pub fn http_get(&self, name: &str, host: &str, port: u16) -> Option<String> {
        let script =
            format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} {port} | tail -n 1");
        self.exec(name, &["sh", "-c", &script])
            .ok()
            .filter(|body| !body.is_empty())
    }

    /// The sandbox of a running container (Podman creates it under /run/netns).
    fn record_sandbox(&self, name: &str) {
        if let Ok(all) = self.inspect(name)
            && let Some(key) = all["NetworkSettings"]["SandboxKey"].as_str()
            && !key.is_empty()
            && let Ok(mut set) = self.sandboxes.lock()
        {
            set.insert(key.to_string());
        }
    }

    /// Re-reads a container's sandbox after `podman start`/`restart` made a new one.
    pub fn refresh_sandbox(&self, name: &str) {
        self.record_sandbox(name);
    }

    /// libcni's cached results of this instance's networks.
    pub fn cached_results(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(Path::new(CNI_CACHE).join("results")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{}-", self.prefix)))
            })
            .collect()
    }

    /// This instance's cgroup directories, in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        let root = Path::new("/sys/fs/cgroup");
        let mut found = vec![root.join(&self.prefix)];
        if let Ok(entries) = std::fs::read_dir(root) {
            found.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join(&self.prefix)),
            );
        }
        found.retain(|p| p.is_dir());
        found
    }

    /// What this instance left outside its directory (empty after [`Podman::close`]).
    pub fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .cached_results()
            .iter()
            .chain(&self.cgroups())
            .map(|p| p.display().to_string())
            .collect();
        if let Ok(set) = self.sandboxes.lock() {
            left.extend(set.iter().filter(|p| Path::new(p).exists()).cloned());
        }
        if self.dir.exists() {
            left.push(self.dir.display().to_string());
        }
        if !self.cni_results_existed && Path::new(CNI_CACHE).join("results").exists() {
            let empty = std::fs::read_dir(Path::new(CNI_CACHE).join("results"))
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty {
                left.push(format!("{CNI_CACHE}/results (created by this test, empty)"));
            }
        }
        left
    }

    /// Removes every container and everything this instance left on the host.
    pub fn close(&mut self) -> Result<()> {
        self.closed = true;
        let mut errors = Vec::new();
        if let Err(e) = self.ok(&["rm", "--all", "--force", "--time", "0"]) {
            errors.push(format!("{e:#}"));
        }
        for file in self.cached_results() {
            if let Err(e) = std::fs::remove_file(&file) {
                errors.push(format!("removing {}: {e}", file.display()));
            }
        }
        // Only what this instance created, and only when nobody else put anything there.
        if !self.cni_results_existed {
            let _ = std::fs::remove_dir(Path::new(CNI_CACHE).join("results"));
        }
        if !self.cni_cache_existed {
            let _ = std::fs::remove_dir(CNI_CACHE);
        }
        // conmon outlives `rm` briefly and then runs `podman container cleanup`, which would
        // re-create the directory and keeps the cgroups busy: wait for them, else end them.
        if let Err(e) = self.end_own_processes(Duration::from_secs(10)) {
            errors.push(format!("{e:#}"));
        }
        let sandboxes: Vec<String> = self
            .sandboxes
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for sandbox in sandboxes.iter().filter(|p| Path::new(p).exists()) {
            let _ = Command::new("umount").arg(sandbox).status();
            if let Err(e) = std::fs::remove_file(sandbox) {
                errors.push(format!("removing sandbox {sandbox}: {e}"));
            }
        }
        for cgroup in self.cgroups() {
            remove_cgroup(&cgroup);
        }
        unmount_under(&self.dir);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            errors.push(format!("removing {}: {e}", self.dir.display()));
        }
        let left = self.leftovers();
        if !left.is_empty() {
            errors.push(format!("left behind: {left:?}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("cleaning up Podman: {}", errors.join("; "))
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if !self.closed
            && let Err(e) = self.close()
        {
            eprintln!("{e:#}");
        }
    }
}

impl Podman {
    /// Processes working for this instance: their command line names its directory.
    fn own_processes(&self) -> Vec<u32> {
        let needle = self.dir.display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != std::process::id())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(&needle))
            })
            .collect()
    }

    /// Waits up to `grace` for [`Podman::own_processes`] to end, then SIGKILLs those left.
    fn end_own_processes(&self, grace: Duration) -> Result<()> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.own_processes().is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = self.own_processes();
        for pid in &left {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(200));
        bail!("Podman processes {left:?} still ran {grace:?} after `podman rm`; killed")
    }
}

/// Removes a cgroup directory tree, deepest first (a cgroup goes with rmdir once empty).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(|e| e.ok()) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Unmounts whatever is still mounted below `dir` (a container's shm), deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}

/// The host's own Podman and CNI setup, which a test must neither change nor depend on.
const HOST_SETUP: [&str; 8] = [
    "/etc/cni",
    "/etc/containers",
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
    "/dev/shm/libpod_lock",
    "/root/.config/containers",
    "/root/.local/share/containers",
];

/// Every path under [`HOST_SETUP`] (and the default cgroup parent `libpod_parent`) with its
/// size and modification time: equal before and after a test that changed none of it.
pub fn host_setup_snapshot() -> Vec<String> {
    fn walk(path: &Path, out: &mut Vec<String>) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        out.push(format!("{} {} {modified}", path.display(), meta.len()));
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(path)
        {
            let mut children: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            children.sort();
            for child in children {
                walk(&child, out);
            }
        }
    }
    let mut out = Vec::new();
    for path in HOST_SETUP {
        walk(Path::new(path), &mut out);
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for entry in entries.filter_map(|e| e.ok()) {
            let parent = entry.path().join("libpod_parent");
            if parent.exists() {
                out.push(parent.display().to_string());
            }
        }
    }
    out
}
