//! The agent's end of the CNI socket: one JSON request line in, one JSON response line out
//! (see [`weft_cni::proto`]). The socket is only reachable by root on the node (mode 0600).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use weft_cni::proto::{self, Command, Failure, Response, codes};

use super::manager::Endpoints;

/// Largest request accepted (a GC with thousands of valid attachments fits easily).
const MAX_REQUEST: u64 = 4 << 20;

/// Bind the socket (replacing a stale one from an earlier run) and serve until the process
/// ends.
pub async fn serve(path: &Path, endpoints: Arc<Endpoints>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %path.display(), "serving CNI requests");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let endpoints = endpoints.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, endpoints).await {
                            tracing::debug!(error = %e, "CNI connection ended early");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a CNI connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn handle(stream: tokio::net::UnixStream, endpoints: Arc<Endpoints>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    // Bytes, not a String: a line that is not UTF-8 is answered as undecodable rather than
    // dropped without an answer (found by the socket fuzz test).
    let mut line = Vec::new();
    BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST))
        .read_until(b'\n', &mut line)
        .await?;
    let response = match serde_json::from_slice::<proto::Request>(&line) {
        Err(e) => Response::Error(Failure {
            code: codes::DECODE_FAILURE,
            msg: format!("the agent could not read the plugin's request: {e}"),
            details: String::new(),
        }),
        Ok(req) if req.protocol != proto::PROTOCOL => Response::Error(Failure {
            code: codes::INCOMPATIBLE_VERSION,
            msg: format!(
                "weft-cni speaks protocol {} but this agent speaks {}: install the weft-cni binary of the agent's release",
                req.protocol,
                proto::PROTOCOL
            ),
            details: String::new(),
        }),
        Ok(req) => {
            let started = std::time::Instant::now();
            let r = dispatch(&req, &endpoints).await;
            log_call(&req, &r, started.elapsed());
            match r {
                Ok(done) => Response::Ok(done.answer),
                Err(f) => Response::Error(f),
            }
        }
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// What a call did: the answer, and for its log line what it touched.
#[derive(Default)]
struct Done {
    answer: proto::Attachment,
    /// The address added (ADD) or released (DEL).
    address: Option<String>,
    /// Attachments GC removed.
    released: Option<usize>,
}

/// One info line per ADD, DEL and GC (and per failed CHECK), so an operator sees every
/// attachment come and go; STATUS and passing CHECKs only at debug.
fn log_call(req: &proto::Request, r: &Result<Done, Failure>, took: std::time::Duration) {
    let command = match req.command {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Gc => "GC",
        Command::Status => "STATUS",
    };
    let network = if req.network.is_empty() {
        &req.config_name
    } else {
        &req.network
    };
    let (result, address, released) = match r {
        Ok(d) => ("ok".to_string(), d.address.as_deref(), d.released),
        Err(f) => (format!("error {}", f.code), None, None),
    };
    let took_ms = took.as_secs_f64() * 1000.0;
    let quiet =
        matches!(req.command, Command::Status) || (req.command == Command::Check && r.is_ok());
    if quiet {
        tracing::debug!(command, container = %req.container_id, network, result, took_ms, "CNI call");
        return;
    }
    let error = r.as_ref().err().map(|f| f.msg.as_str());
    tracing::info!(
        command,
        container = %req.container_id,
        network,
        interface = %req.if_name,
        address = address.unwrap_or("-"),
        released,
        result,
        error,
        took_ms = (took_ms * 10.0).round() / 10.0,
        "CNI call"
    );
}

async fn dispatch(req: &proto::Request, endpoints: &Endpoints) -> Result<Done, Failure> {
    match req.command {
        Command::Add => endpoints.cni_add(req).await.map(|answer| Done {
            address: answer.ips.first().map(|ip| ip.address.clone()),
            answer,
            ..Done::default()
        }),
        Command::Del => endpoints.cni_del(req).await.map(|att| Done {
            address: att.and_then(|a| a.address).map(|a| a.to_string()),
            ..Done::default()
        }),
        Command::Check => endpoints.cni_check(req).await.map(|()| Done::default()),
        Command::Gc => endpoints.cni_gc(req).await.map(|n| Done {
            released: Some(n),
            ..Done::default()
        }),
        Command::Status => endpoints.cni_status().map(|()| Done::default()),
    }
}
