//! Acting inside a network namespace while the agent process stays where it is.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling *thread* only, so every
//! namespaced action runs on a short-lived dedicated OS thread (never a tokio worker, which
//! would carry the namespace into unrelated tasks). Netlink sockets stay bound to the
//! namespace they were created in, so a socket opened on such a thread keeps acting there
//! after the thread is gone; `/proc/sys/net` files likewise resolve against the namespace of
//! the thread that opens them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::kernel::error::KernelError;

/// Open a namespace file such as `/var/run/netns/X`.
pub(crate) fn open(path: &Path) -> Result<File, KernelError> {
    File::open(path).map_err(|source| KernelError::Netns {
        path: path.to_path_buf(),
        source: source.into(),
    })
}

/// Move the calling thread into the network namespace `file` refers to.
pub(crate) fn enter(file: &File, path: &Path) -> Result<(), KernelError> {
    // SAFETY: plain syscall on a valid, open descriptor.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(KernelError::Netns {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error().into(),
        })
    }
}

/// Run `f` on a fresh OS thread that is inside `netns` (or in the agent's own netns for
/// `None`) and hand its result back to the async caller. The thread ends with `f`, so the
/// namespace switch never leaks.
pub(crate) async fn run_in<T, F>(netns: Option<&Path>, f: F) -> Result<T, KernelError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, KernelError> + Send + 'static,
{
    // Open the file here so a wrong path is reported before a thread is spawned.
    let target = match netns {
        Some(path) => Some((open(path)?, path.to_path_buf())),
        None => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("weft-netns".into())
        .spawn(move || {
            let result = match &target {
                Some((file, path)) => enter(file, path).and_then(|()| f()),
                None => f(),
            };
            // The receiver only disappears if the caller was cancelled; nothing to do then.
            let _ = tx.send(result);
        })
        .map_err(|e| KernelError::Thread(e.to_string()))?;
    rx.await
        .map_err(|_| KernelError::Thread("namespace thread ended without an answer".into()))?
}
