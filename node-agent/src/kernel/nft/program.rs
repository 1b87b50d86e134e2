//! The `nft` program, run as a child inside the namespace (the agent itself stays put).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::kernel::error::KernelError;
use crate::kernel::netns;
use crate::kernel::nft::own::OwnNft;

/// Exit status, stdout, stderr of one `nft` run inside the namespace.
pub(crate) struct Output {
    /// The process id `nft` ran as.
    pub(crate) pid: Option<u32>,
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Run `nft args…` inside `ns`, feeding `stdin` if given; the agent itself stays where it
/// is. A run that may write is remembered in `own` before it reads its script, so the notifications of its
/// transaction are known to be the agent's.
pub(crate) async fn run(
    ns: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
    own: Option<&OwnNft>,
) -> Result<Output, KernelError> {
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Spawned from a thread inside the namespace, which the child inherits: no code has to
    // run between fork and exec, so the standard library can use posix_spawn (a vfork)
    // instead of copying the agent's address space for every run.
    let runtime = tokio::runtime::Handle::current();
    let mut child = netns::run_in(ns, move || {
        // The child's pipes register with the runtime's reactor.
        let _guard = runtime.enter();
        cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                KernelError::Nft(
                    "the nft program is not installed (apt-get install nftables)".into(),
                )
            } else {
                KernelError::Nft(format!("cannot start nft: {e}"))
            }
        })
    })
    .await?;
    let pid = child.id();
    if let (Some(own), Some(pid)) = (own, pid) {
        own.remember(pid);
    }
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| KernelError::Nft(format!("cannot feed nft: {e}")))?;
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .map_err(|_| KernelError::Nft("nft did not finish within 20 s".into()))?
        .map_err(|e| KernelError::Nft(format!("cannot collect its output: {e}")))?;
    Ok(Output {
        pid,
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Whether `nft list tables` works in the namespace (nftables usable).
pub(crate) async fn available(ns: Option<&Path>) -> bool {
    matches!(run(ns, &["list", "tables"], None, None).await, Ok(o) if o.ok)
}
