//! One boot of the guest: build (or find) the image, lay out the shared run directory that
//! `init.sh` reads, and run QEMU until the guest powers off.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::GuestTest;
use crate::binaries::test_executables;

/// Per guest test; the API tests there take up to a minute under TCG.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(240);
/// How much longer the tests' waits are in the guest (`weft_e2e::patience`): TCG runs the
/// daemons several times slower than the host, more so on a busy host.
const PATIENCE: u32 = 3;
/// The whole boot: QEMU is killed after this.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const QEMU: &str = "qemu-system-x86_64";

pub enum Error {
    /// The VM cannot start on this machine at all (no QEMU).
    Unavailable(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Failed(e)
    }
}

/// Run `plan` in one boot, leaving `results/`, `timings`, `boot.log`, `console.log` and
/// `summary` in `dir`.
pub fn run(plan: &[GuestTest], dir: &Path) -> Result<(), Error> {
    if std::env::var("WEFT_VM_SKIP").is_ok_and(|v| v == "1") {
        return Err(Error::Unavailable("WEFT_VM_SKIP=1".into()));
    }
    if find_in_path(QEMU).is_none() {
        return Err(Error::Unavailable(format!(
            "{QEMU} not found (apt-get install qemu-system-x86 busybox-static cpio kmod)"
        )));
    }
    let mut summary = String::new();
    let started = Instant::now();
    let image = build_image()?;
    let _ = writeln!(
        summary,
        "image: {} ({:.1?})",
        image.display(),
        started.elapsed()
    );

    let workspace = workspace_dir()?;
    let started = Instant::now();
    let exes = test_executables(&workspace)?;
    let _ = writeln!(summary, "test executables: {:.1?}", started.elapsed());
    let mut lines = String::new();
    for t in plan {
        let exe = exes
            .get(t.binary)
            .ok_or_else(|| anyhow!("no test executable {} in this workspace", t.binary))?;
        let _ = writeln!(lines, "{} {} {}", t.id, exe.display(), t.test);
    }
    fs::write(dir.join("plan"), lines).context("writing the plan")?;

    // The workspace and the target directory, read-only at the host's own paths: test
    // executables find weft-agent and weft-controller beside them, and their sources.
    let mut shares = vec![workspace.clone()];
    let target = crate::target_dir()?;
    if !target.starts_with(&workspace) {
        shares.push(target);
    }
    let mounts: String = shares
        .iter()
        .enumerate()
        .map(|(i, p)| format!("ws{i} {}\n", p.display()))
        .collect();
    fs::write(dir.join("mounts"), mounts).context("writing mounts")?;

    let port = match std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        Some(kubeconfig) => {
            let kubeconfig = PathBuf::from(kubeconfig);
            fs::copy(&kubeconfig, dir.join("kubeconfig"))
                .with_context(|| format!("copying {}", kubeconfig.display()))?;
            loopback_port(&kubeconfig)?.unwrap_or(0)
        }
        None => 0,
    };
    let forward = forwarder()?;
    fs::write(
        dir.join("env"),
        format!(
            "WEFT_VM_APISERVER_PORT={port}\nWEFT_VM_FORWARD={}\nWEFT_VM_TEST_TIMEOUT={}\n\
             export WEFT_TEST_PATIENCE={PATIENCE}\n",
            forward.display(),
            TEST_TIMEOUT.as_secs()
        ),
    )
    .context("writing env")?;

    let started = Instant::now();
    boot(&image, dir, &shares)?;
    let _ = writeln!(summary, "boot and tests: {:.1?}", started.elapsed());
    fs::write(dir.join("summary"), summary).context("writing the summary")?;
    Ok(())
}

/// The last lines the guest wrote: why a run ended early.
pub fn console_tail(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["boot.log", "console.log"] {
        let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        let _ = writeln!(
            out,
            "--- {name} (last {} lines)\n{}",
            tail.len(),
            tail.join("\n")
        );
    }
    out
}

/// `vm/image.sh` with the cache in `WEFT_VM_CACHE` (default `/var/cache/weft-vm`).
fn build_image() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image.sh");
    let cache = std::env::var_os("WEFT_VM_CACHE").unwrap_or_else(|| "/var/cache/weft-vm".into());
    let out = Command::new(&script)
        .arg(&cache)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(PathBuf::from(dir))
}

fn boot(image: &Path, dir: &Path, shares: &[PathBuf]) -> Result<()> {
    let console = fs::File::create(dir.join("console.log")).context("creating console.log")?;
    let mut qemu = Command::new(QEMU);
    // Two vCPUs on two host threads (MTTCG): the API tests run a test process, a controller
    // and agents at once.
    qemu.args(["-accel", "tcg,thread=multi", "-smp", "2", "-m", "1024"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(image.join("vmlinux"))
        .arg("-initrd")
        .arg(image.join("initrd.img"))
        // no_timer_check: on a busy host TCG misses the IO-APIC timer check and panics.
        // cryptomgr.notests: the crypto self-tests cost seconds under TCG.
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 no_timer_check cryptomgr.notests",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=out,security_model=none",
            dir.display()
        ));
    for (i, share) in shares.iter().enumerate() {
        qemu.arg("-virtfs").arg(format!(
            "local,path={},mount_tag=ws{i},security_model=none,readonly=on",
            share.display()
        ));
    }
    // User networking: the guest reaches the host's loopback as 10.0.2.2. No option ROM:
    // iPXE would only delay the boot.
    qemu.args([
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
    ]);
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(console.try_clone().context("console.log")?)
        .stderr(console)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            if !status.success() {
                bail!("QEMU exited with {status}");
            }
            return Ok(());
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the guest did not power off within {BOOT_TIMEOUT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `weft-vm-forward`, built beside this test executable (`target/debug/deps/vm-…` →
/// `target/debug/weft-vm-forward`).
fn forwarder() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this test executable")?;
    let path = exe
        .ancestors()
        .nth(2)
        .map(|dir| dir.join("weft-vm-forward"))
        .context("test executable has no profile directory")?;
    if !path.is_file() {
        bail!(
            "{} is not built: run `cargo build -p weft-vm`",
            path.display()
        );
    }
    Ok(path)
}

/// The workspace this crate belongs to.
fn workspace_dir() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .context("finding the workspace")
}

/// The port of the kubeconfig's current server when it is on the host's loopback (the guest
/// forwards its own loopback port there); `None` for any other server, which the guest
/// reaches through QEMU's NAT as it is.
fn loopback_port(kubeconfig: &Path) -> Result<Option<u16>> {
    let text = fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config: Value = serde_saphyr::from_str(&text)
        .with_context(|| format!("parsing {}", kubeconfig.display()))?;
    let context = config["current-context"].as_str().unwrap_or_default();
    let cluster = config["contexts"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == context))
        .and_then(|c| c["context"]["cluster"].as_str())
        .unwrap_or_default();
    let server = config["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == cluster))
        .and_then(|c| c["cluster"]["server"].as_str())
        .with_context(|| {
            format!(
                "{}: no server for context {context:?}",
                kubeconfig.display()
            )
        })?;
    let Some(rest) = server
        .strip_prefix("https://127.0.0.1:")
        .or_else(|| server.strip_prefix("https://localhost:"))
    else {
        return Ok(None);
    };
    let port = rest
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("port of {server}"))?;
    Ok(Some(port))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port_of(kubeconfig: &str) -> Option<u16> {
        let path = std::env::temp_dir().join(format!("weft-vm-kubeconfig-{}", std::process::id()));
        fs::write(&path, kubeconfig).unwrap();
        let port = loopback_port(&path).unwrap();
        fs::remove_file(path).unwrap();
        port
    }

    #[test]
    fn the_current_contexts_server_on_loopback_is_forwarded() {
        let config = |server: &str| {
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {{server: 'https://127.0.0.1:1111'}}\n\
                 - name: k8s-test\n  cluster:\n    server: {server}\ncontexts:\n\
                 - name: k8s-test\n  context: {{cluster: k8s-test, user: admin}}\ncurrent-context: k8s-test\n"
            )
        };
        assert_eq!(port_of(&config("https://127.0.0.1:30683")), Some(30683));
        assert_eq!(port_of(&config("https://localhost:6443/")), Some(6443));
        assert_eq!(port_of(&config("https://10.1.2.3:6443")), None);
    }
}
