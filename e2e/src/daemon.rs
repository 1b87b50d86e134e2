//! Runs the real `weft-controller` and `weft-agent` binaries as child processes.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

/// A running Weft daemon. Dropping it kills the process (SIGKILL).
pub struct Daemon {
    child: Child,
}

impl Daemon {
    /// Start `binary` with the test's KUBECONFIG and extra arguments.
    pub fn start(binary: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_with_env(binary, extra_args, &[])
    }

    /// Like `start`, with extra environment (e.g. a KUBECONFIG that goes through a proxy).
    pub fn start_with_env(
        binary: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.envs(env.iter().copied());
        if !extra_args.contains(&"--metrics-addr") {
            cmd.args(["--metrics-addr", "127.0.0.1:0"]);
        }
        let child = cmd
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child })
    }

    /// SIGKILL and reap: no chance to clean up, as in a crash.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await.context("killing the daemon")
    }

    /// How the process ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process id, for tests that read /proc.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (for a daemon's `--metrics-addr`).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
