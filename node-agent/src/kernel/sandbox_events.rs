//! Change notifications from inside one sandbox, so an endpoint whose interface, address or
//! route is removed there is repaired at once, as the node's own objects are ([`super::events`]).
//!
//! The socket is opened on a thread inside the sandbox (a netlink socket stays bound to the
//! namespace it was created in) and then read from the runtime (`AsyncFd`): no thread per
//! sandbox. It joins the link, address and route groups and keeps, with the node's filter
//! ([`weft_route_changes`]), what may be Weft's.
//!
//! A socket holds a reference to its namespace: while it is open, a namespace whose path was
//! removed lives on (and with it the veth, whose host side would otherwise vanish). So the
//! stream looks at the path every [`PATH_CHECK`] and ends — closing the socket — as soon as
//! the path is gone or names another namespace; dropping the stream closes it at once.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::channel::mpsc::{Receiver, channel};
use rtnetlink::sys::{Socket, SocketAddr};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::kernel::error::KernelError;
use crate::kernel::events::weft_route_changes;
use crate::kernel::netns;

/// rtnetlink groups inside a sandbox: link, IPv4 address, IPv4 route, IPv6 address, IPv6
/// route (no neighbours: Weft puts none there).
const SANDBOX_GROUPS: [u32; 5] = [1, 5, 7, 9, 11];

/// Read buffer: one notification per datagram, a link's is a few KiB at most.
const DATAGRAM: usize = 16 << 10;

/// How often the stream checks that the sandbox's path still names the namespace it
/// listens to.
pub const PATH_CHECK: Duration = Duration::from_millis(500);

/// One `()` per burst of relevant notifications in the sandbox; ends when the sandbox's path
/// is gone or names another namespace (the socket is closed by then).
pub struct SandboxEvents {
    signals: Receiver<()>,
    reader: JoinHandle<()>,
}

impl Stream for SandboxEvents {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        Pin::new(&mut self.signals).poll_next(cx)
    }
}

impl Drop for SandboxEvents {
    fn drop(&mut self) {
        // The reader owns the socket: ending it closes the socket (and lets the namespace go).
        self.reader.abort();
    }
}

/// The namespace a path names: nsfs (device, inode).
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Subscribe to the sandbox at `path`.
pub async fn sandbox_events(path: &Path) -> Result<SandboxEvents, KernelError> {
    let missing = |source: std::io::Error| KernelError::Netns {
        path: path.to_path_buf(),
        source: source.into(),
    };
    let before = identity(path).ok_or_else(|| missing(std::io::ErrorKind::NotFound.into()))?;
    let socket = netns::run_in(Some(path), move || {
        let mut socket =
            Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE).map_err(KernelError::socket)?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(KernelError::socket)?;
        for g in SANDBOX_GROUPS {
            socket.add_membership(g).map_err(KernelError::socket)?;
        }
        socket.set_non_blocking(true).map_err(KernelError::socket)?;
        Ok(socket)
    })
    .await?;
    // The path may have been swapped while the socket was being opened: then it listens to
    // a namespace that is not the sandbox's.
    if identity(path) != Some(before) {
        return Err(missing(std::io::ErrorKind::NotFound.into()));
    }
    // SAFETY: the Socket owns its descriptor, keeps it open until dropped and always
    // returns the same one from as_raw_fd; the AsyncFd owns the Socket.
    let socket = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(|e| KernelError::socket(e.into_parts().1))?;
    let (tx, signals) = channel(1);
    let reader = tokio::spawn(read(socket, path.to_path_buf(), before, tx));
    Ok(SandboxEvents { signals, reader })
}

/// Read until the path stops naming the namespace or the stream is dropped.
async fn read(
    socket: AsyncFd<Socket>,
    path: PathBuf,
    identity_then: (u64, u64),
    mut tx: futures::channel::mpsc::Sender<()>,
) {
    let mut relevant = weft_route_changes(0);
    let mut check = tokio::time::interval(PATH_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = socket.readable() => {
                let Ok(mut guard) = ready else { return };
                let mut signal = false;
                // Only while reading: a thousand idle sandboxes hold no buffers. A datagram
                // that fills it may be cut short, and counts (its headers cannot be read).
                let mut buf = vec![0u8; DATAGRAM];
                // Drain what is there: one signal per burst.
                loop {
                    match guard.try_io(|s| s.get_ref().recv(&mut &mut buf[..], 0)) {
                        Ok(Ok(n)) => signal |= n >= DATAGRAM || relevant(Some(&buf[..n])),
                        Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            signal = true;
                        }
                        Ok(Err(_)) => return,
                        Err(_would_block) => break,
                    }
                }
                if signal {
                    match tx.try_send(()) {
                        Ok(()) => {}
                        Err(e) if e.is_full() => {}
                        Err(_) => return,
                    }
                }
            }
            _ = check.tick() => {
                if tx.is_closed() || identity(&path) != Some(identity_then) {
                    return;
                }
            }
        }
    }
}
