//! One round trip to the agent: connect, one JSON line out, one JSON line back.
//!
//! Every failure becomes a [`Failure`] whose message tells the person reading the pod's
//! events what is wrong with the node, not which syscall failed.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::proto::{Failure, Request, Response, codes};
use crate::result::failure;

/// An answer is a few KiB; the cap only stops a broken peer from filling memory.
const MAX_RESPONSE_BYTES: u64 = 4 << 20;

/// Sends `request` to the agent at `socket` and returns its answer, waiting at most
/// `timeout` for each read and write.
pub fn round_trip(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, Failure> {
    let shown = socket.display();
    let stream = UnixStream::connect(socket).map_err(|e| connect_failure(socket, &e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| io_failure(format!("cannot set a timeout on {shown}"), &e))?;

    let mut line = serde_json::to_vec(request)
        .map_err(|e| io_failure("cannot encode the request to weft-agent".into(), &e.into()))?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .and_then(|()| (&stream).flush())
        .map_err(|e| transfer_failure(socket, timeout, "sending the request", &e))?;

    let mut answer = String::new();
    BufReader::new((&stream).take(MAX_RESPONSE_BYTES))
        .read_line(&mut answer)
        .map_err(|e| transfer_failure(socket, timeout, "waiting for its answer", &e))?;
    if answer.trim().is_empty() {
        return Err(failure(
            codes::IO_FAILURE,
            format!(
                "weft-agent closed the connection on {shown} without answering; see its log on this node"
            ),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| Failure {
        code: codes::DECODE_FAILURE,
        msg: "weft-agent's answer cannot be read by this weft-cni; are the agent and the plugin \
              from the same release?"
            .into(),
        details: e.to_string(),
    })
}

/// A missing socket or a refused connection means no agent runs here: code 50, which
/// tells the runtime the plugin is not available (and STATUS reports not ready).
fn connect_failure(socket: &Path, error: &io::Error) -> Failure {
    let shown = socket.display();
    match error.kind() {
        ErrorKind::NotFound => failure(
            codes::NOT_AVAILABLE,
            format!("weft-agent is not running on this node (no socket at {shown})"),
        ),
        ErrorKind::ConnectionRefused => failure(
            codes::NOT_AVAILABLE,
            format!("weft-agent is not running on this node (nothing listens on {shown})"),
        ),
        ErrorKind::PermissionDenied => io_failure(
            format!("weft-cni may not connect to {shown}; the runtime must run it as root"),
            error,
        ),
        _ => io_failure(format!("cannot connect to weft-agent at {shown}"), error),
    }
}

/// A timeout means the agent is alive but busy: try again later (code 11).
fn transfer_failure(socket: &Path, timeout: Duration, doing: &str, error: &io::Error) -> Failure {
    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        return failure(
            codes::TRY_AGAIN_LATER,
            format!(
                "weft-agent did not answer within {} s ({doing} on {})",
                timeout.as_secs(),
                socket.display()
            ),
        );
    }
    io_failure(
        format!(
            "lost the connection to weft-agent at {} while {doing}",
            socket.display()
        ),
        error,
    )
}

fn io_failure(msg: String, error: &io::Error) -> Failure {
    Failure {
        code: codes::IO_FAILURE,
        msg,
        details: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Attachment, Command, PROTOCOL};
    use std::os::unix::net::UnixListener;

    fn request() -> Request {
        Request {
            protocol: PROTOCOL,
            command: Command::Status,
            config_name: "n".into(),
            network: "n".into(),
            container_id: String::new(),
            netns: String::new(),
            if_name: String::new(),
            pod_namespace: None,
            pod_name: None,
            address: None,
            mac: None,
            port_mappings: Vec::new(),
            valid_attachments: Vec::new(),
            prev_result: None,
            gw_priority: None,
            replace_default_route: false,
            aliases: Vec::new(),
        }
    }

    /// A socket path in a fresh temp dir, removed when the returned guard drops.
    fn socket_path() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cni.sock");
        (dir, path)
    }

    /// Answers one connection with `reply` (raw bytes) after reading the request line.
    fn serve_once(path: &Path, reply: &'static [u8]) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(path).expect("bind");
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(&stream)
                .read_line(&mut line)
                .expect("request line");
            (&stream).write_all(reply).expect("reply");
            line
        })
    }

    #[test]
    fn missing_socket_is_not_available() {
        let (_dir, path) = socket_path();
        let err = round_trip(&path, &request(), Duration::from_secs(1)).expect_err("no agent");
        assert_eq!(err.code, codes::NOT_AVAILABLE);
        assert_eq!(
            err.msg,
            format!(
                "weft-agent is not running on this node (no socket at {})",
                path.display()
            )
        );
    }

    #[test]
    fn stale_socket_is_not_available() {
        let (_dir, path) = socket_path();
        drop(UnixListener::bind(&path).expect("bind"));
        let err =
            round_trip(&path, &request(), Duration::from_secs(1)).expect_err("nobody listens");
        assert_eq!(err.code, codes::NOT_AVAILABLE);
        assert!(err.msg.contains("nothing listens on"), "{}", err.msg);
    }

    #[test]
    fn sends_one_line_and_reads_the_answer() {
        let (_dir, path) = socket_path();
        let agent = serve_once(
            &path,
            b"{\"ok\":{\"interfaces\":[],\"ips\":[],\"routes\":[]}}\n",
        );
        let response = round_trip(&path, &request(), Duration::from_secs(5)).expect("answer");
        assert_eq!(response, Response::Ok(Attachment::default()));
        let line = agent.join().expect("agent thread");
        assert!(line.ends_with('\n'));
        let sent: Request = serde_json::from_str(&line).expect("a Request");
        assert_eq!(sent, request());
    }

    #[test]
    fn hang_up_and_garbage_are_reported() {
        let (_dir, path) = socket_path();
        let agent = serve_once(&path, b"");
        let err = round_trip(&path, &request(), Duration::from_secs(5)).expect_err("no answer");
        assert_eq!(err.code, codes::IO_FAILURE);
        assert!(err.msg.contains("without answering"), "{}", err.msg);
        agent.join().expect("agent thread");

        let (_dir, path) = socket_path();
        let agent = serve_once(&path, b"{\"maybe\":1}\n");
        let err = round_trip(&path, &request(), Duration::from_secs(5)).expect_err("unreadable");
        assert_eq!(err.code, codes::DECODE_FAILURE);
        agent.join().expect("agent thread");
    }

    #[test]
    fn a_silent_agent_times_out_as_try_again_later() {
        let (_dir, path) = socket_path();
        let listener = UnixListener::bind(&path).expect("bind");
        let err = round_trip(&path, &request(), Duration::from_millis(200)).expect_err("timeout");
        assert_eq!(err.code, codes::TRY_AGAIN_LATER);
        assert!(err.msg.contains("did not answer"), "{}", err.msg);
        drop(listener);
    }

    #[test]
    fn response_wire_shape_is_externally_tagged() {
        let error: Response =
            serde_json::from_str(r#"{"error":{"code":100,"msg":"no such network"}}"#)
                .expect("error");
        assert_eq!(
            error,
            Response::Error(Failure {
                code: 100,
                msg: "no such network".into(),
                details: String::new()
            })
        );
    }
}
