//! What can go wrong talking to the kernel, worded for the person reading logs.
//!
//! Each error names its operation once: the layer that sends a request says what it was
//! (`add route 10.1.0.0/24 dev wfb-x: File exists`), and layers above add only where it
//! happened ([`KernelError::InSandbox`]), never the operation again.

use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong talking to the kernel. Cheap to clone (I/O errors are
/// shared), so one cause can be recorded against every change it stopped.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("cannot open a netlink socket: {0}")]
    Socket(Arc<std::io::Error>),
    #[error("cannot start a helper thread: {0}")]
    Thread(String),
    #[error("the netlink connection is closed: {0}")]
    Closed(String),
    /// The kernel refused a request; `errno` allows callers to treat "already gone" as done.
    #[error("{op}: {message}")]
    Netlink {
        op: String,
        errno: i32,
        message: String,
    },
    #[error("{op}: no interface named {name:?}")]
    NoSuchLink { op: String, name: String },
    #[error("refusing to touch {0:?}: it is not Weft's (its alias does not start with \"weft:\")")]
    NotOwned(String),
    #[error("nft: {0}")]
    Nft(String),
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        source: Arc<std::io::Error>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("unexpected kernel reply: {0}")]
    Unexpected(String),
    /// A change inside a container's sandbox failed; the cause names the operation.
    #[error("in the sandbox: {0}")]
    InSandbox(Box<KernelError>),
}

impl KernelError {
    /// A netlink socket could not be opened or used.
    pub(crate) fn socket(e: std::io::Error) -> Self {
        KernelError::Socket(Arc::new(e))
    }

    /// The errno of a refused netlink request, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { errno, .. } => Some(*errno),
            KernelError::InSandbox(cause) => cause.errno(),
            _ => None,
        }
    }
}

/// The error for a netlink request `op` the kernel refused.
pub(crate) fn netlink_error(op: String, err: &netlink_packet_core::ErrorMessage) -> KernelError {
    let errno = err.raw_code().abs();
    KernelError::Netlink {
        op,
        errno,
        message: std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

/// `errno` values that mean "it is already gone", which a delete treats as done.
pub(crate) fn already_gone(e: &KernelError) -> bool {
    matches!(
        e.errno(),
        Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
    )
}
