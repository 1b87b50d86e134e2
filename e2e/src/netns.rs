//! Throwaway network namespaces for tests: created with `ip netns add`, removed (with every
//! process still inside) when the guard drops — also when the test panics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists as long as this value does.
pub struct Netns {
    name: String,
}

/// Run a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Netns {
    /// A new namespace named `weft-<prefix>-<pid>-<n>`, with loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = format!(
            "weft-{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A "node": a namespace whose underlay is `eth0` (one end of a veth pair kept inside,
    /// so it is up) with `address` (CIDR) and a default route via `gateway`.
    pub fn node(prefix: &str, address: &str, gateway: &str) -> Result<Self> {
        let ns = Self::new(prefix)?;
        ns.exec(&[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0-peer",
        ])?;
        ns.exec(&["ip", "addr", "add", address, "dev", "eth0"])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        ns.exec(&["ip", "link", "set", "eth0-peer", "up"])?;
        ns.exec(&["ip", "route", "add", "default", "via", gateway])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mount path (what `weft-agent --netns` takes).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Run a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// A veth pair: `name` here, `peer` (named `peer_name`) inside `peer`.
    pub fn veth_into(&self, name: &str, peer: &Netns, peer_name: &str) -> Result<()> {
        self.exec(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns",
            &peer.name,
        ])
        .map(drop)
    }

    /// Like `exec`, but returns whether it succeeded instead of failing.
    pub fn try_exec(&self, args: &[&str]) -> bool {
        self.exec(args).is_ok()
    }

    /// A private directory for an agent working on this namespace (its journal and CNI
    /// socket), so tests never touch the host's `/var/lib/weft` or `/run/weft`. Removed
    /// with the namespace.
    pub fn state_dir(&self) -> PathBuf {
        let dir = std::env::temp_dir().join(&self.name);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    /// The agent flags that keep its state inside [`Netns::state_dir`] (its names feed too:
    /// a test that wants names starts a weft-dns on `dns.sock` there).
    pub fn agent_state_args(&self) -> Vec<String> {
        let dir = self.state_dir();
        vec![
            "--state-dir".into(),
            dir.display().to_string(),
            "--cni-socket".into(),
            dir.join("cni.sock").display().to_string(),
            "--dns-feed".into(),
            dir.join("dns.sock").display().to_string(),
        ]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = delete(&self.name);
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&self.name));
    }
}

/// Names of all network namespaces (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    Ok(sh(&["ip", "netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Whether the network namespace `name` exists.
pub fn exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

/// Kill everything still running inside namespace `name` (servers, pings, daemons), then
/// delete it.
pub fn delete(name: &str) -> Result<()> {
    if let Ok(pids) = sh(&["ip", "netns", "pids", name]) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    sh(&["ip", "netns", "del", name]).map(drop)
}

/// A binary of this workspace, next to the test executable's `deps/` directory
/// (`cargo nextest run --workspace` and `cargo test --workspace` build them all first).
///
/// A test of one package (`cargo nextest run -p weft-e2e`) does not rebuild the daemons, so
/// one left from an older build would be tested instead of the code at hand: refused (see
/// [`stale_because`]).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable has no target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run `cargo build -p {}` (or the whole workspace) first",
            path.display(),
            name
        );
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the e2e crate has no workspace directory")?;
    if let Some(why) = stale_because(&path, workspace) {
        bail!(
            "{} is out of date ({why}): run `cargo build --workspace --bins` first (a test of \
             one package does not rebuild the daemons it runs)",
            path.display()
        );
    }
    Ok(path)
}

/// Why the binary at `path` was not built from the sources in `workspace` as they are now,
/// by its dep-info file (`<path>.d`, cargo's list of the workspace sources it was built
/// from): a source newer than the binary, gone, or in another checkout. `None` when it is
/// current, or when there is no dep-info to tell.
pub fn stale_because(path: &Path, workspace: &Path) -> Option<String> {
    let depinfo = std::fs::read_to_string(path.with_extension("d")).ok()?;
    let built = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    // `target: dep dep ...`, spaces in names escaped as `\ `.
    let (_, deps) = depinfo.lines().next()?.split_once(": ")?;
    let deps = deps.replace("\\ ", "\0");
    for dep in deps.split_whitespace().map(|d| d.replace('\0', " ")) {
        let dep = Path::new(&dep);
        if !dep.starts_with(workspace) {
            return Some(format!(
                "built from {}, not from {}",
                dep.display(),
                workspace.display()
            ));
        }
        match std::fs::metadata(dep).and_then(|m| m.modified()) {
            Ok(changed) if changed > built => {
                return Some(format!("{} changed since it was built", dep.display()));
            }
            Ok(_) => {}
            Err(_) => return Some(format!("{} is gone", dep.display())),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::stale_because;
    use std::time::{Duration, SystemTime};

    /// A fake checkout: `src.rs` and `target/debug/bin` with its dep-info naming `src.rs`.
    fn checkout(name: &str, source_age: u64, binary_age: u64) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("weft-stale-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("target/debug")).unwrap();
        let at = |age: u64| SystemTime::now() - Duration::from_secs(age);
        let src = std::fs::File::create(root.join("my src.rs")).unwrap();
        src.set_modified(at(source_age)).unwrap();
        let bin = root.join("target/debug/bin");
        std::fs::write(
            root.join("target/debug/bin.d"),
            format!(
                "{}: {}\n",
                bin.display(),
                root.join("my src.rs")
                    .display()
                    .to_string()
                    .replace(' ', "\\ ")
            ),
        )
        .unwrap();
        std::fs::File::create(&bin)
            .unwrap()
            .set_modified(at(binary_age))
            .unwrap();
        root
    }

    #[test]
    fn a_binary_built_after_its_sources_is_current() {
        let root = checkout("current", 100, 10);
        assert_eq!(stale_because(&root.join("target/debug/bin"), &root), None);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_source_changed_since_the_build_makes_it_stale() {
        let root = checkout("changed", 10, 100);
        let why = stale_because(&root.join("target/debug/bin"), &root).unwrap();
        assert!(
            why.contains("my src.rs changed since it was built"),
            "{why}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_binary_built_in_another_checkout_is_stale() {
        let root = checkout("other", 100, 10);
        let elsewhere = std::env::temp_dir().join("weft-stale-elsewhere");
        let why = stale_because(&root.join("target/debug/bin"), &elsewhere).unwrap();
        assert!(why.starts_with("built from"), "{why}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn without_dep_info_nothing_is_claimed() {
        let root = checkout("nodepinfo", 10, 100);
        std::fs::remove_file(root.join("target/debug/bin.d")).unwrap();
        assert_eq!(stale_because(&root.join("target/debug/bin"), &root), None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
