//! Fault injection: a TCP proxy in front of the API server that a test can cut, so a daemon
//! sees an API outage while the real API server stays up for everyone else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy to the API server of `KUBECONFIG`, and a kubeconfig pointing at the proxy.
pub struct ApiProxy {
    kubeconfig: PathBuf,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiProxy {
    /// Start the proxy; `dir` receives the proxied kubeconfig.
    pub async fn start(dir: &Path) -> Result<Self> {
        let original = std::env::var("KUBECONFIG").context("KUBECONFIG")?;
        let text = std::fs::read_to_string(&original)?;
        let server_line = text
            .lines()
            .find(|l| l.trim_start().starts_with("server:"))
            .context("no server in kubeconfig")?;
        let url = server_line
            .trim_start()
            .trim_start_matches("server:")
            .trim();
        let upstream = url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let kubeconfig = dir.join("kubeconfig-via-proxy");
        std::fs::write(
            &kubeconfig,
            text.replace(url, &format!("https://127.0.0.1:{port}")),
        )?;
        let down = Arc::new(AtomicBool::new(false));
        let (cut, cuts) = watch::channel(0u64);
        let flag = down.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let upstream = upstream.clone();
                let mut cuts = cuts.clone();
                // Only cuts after this connection was accepted end it.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {} // the outage starts: drop live connections too
                    }
                });
            }
        });
        Ok(Self {
            kubeconfig,
            down,
            cut,
            task,
        })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Start an outage: live connections are dropped and new ones refused.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// End the outage.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
