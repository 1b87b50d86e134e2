//! nftables transactions inside the agent's process, through libnftables — the library the
//! `nft` program is a thin front end of, installed with it.
//!
//! Why: starting `nft` costs more than the work it does. Measured here with 300 rules in the
//! table, `nft -f` adding three rules takes ~3 ms, of which ~2.2 ms is starting the program
//! (`nft -f /dev/null`); the same script through the library in a long-lived process takes
//! ~0.3 ms. A pass that adds one network pays this once, on every node.
//!
//! The library is loaded with `dlopen` when first needed, so the agent builds without its
//! headers and still runs (spawning `nft`) where only the program is installed. Big scripts
//! (a cold start's whole table) keep going to a child `nft`: parsing thousands of rules
//! takes several MiB that the child gives back when it exits, while this process would keep
//! them (the agent's memory budget is 32 MiB at 1,000 networks).
//!
//! The context's netlink socket is opened on a thread inside the target namespace, so it acts
//! there from any thread afterwards (see `netns`). Its netlink port is read back from the
//! socket: the kernel's notifications of a transaction carry the committing socket's port,
//! which is how the event reader recognises the agent's own transactions.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Mutex;

use crate::kernel::error::KernelError;
use crate::kernel::netns;

/// Scripts up to this size run in-process; bigger ones in a child `nft`.
pub(crate) const MAX_IN_PROCESS_SCRIPT: usize = 16 * 1024;

/// One call into the library at a time, process-wide: libnftables does not document its
/// contexts as independent of one another across threads (an agent has one, tests several).
static LIBRARY: Mutex<()> = Mutex::new(());

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

struct Api {
    ctx_free: CtxFree,
    get_output: CtxGetBuffer,
    get_error: CtxGetBuffer,
    run_cmd: RunCmd,
}

/// One libnftables context, bound to one network namespace.
pub(crate) struct Session {
    ctx: Context,
    port: u32,
}

struct Context {
    ptr: *mut c_void,
    api: Api,
}

// SAFETY: every call through a context holds `LIBRARY`, so no two threads use one (or any two)
// at the same time, and nothing in a context is tied to the thread that created it (its
// socket is a plain file descriptor).
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        let _library = LIBRARY.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `ptr` came from `nft_ctx_new` and is freed exactly once, here.
        unsafe { (self.api.ctx_free)(self.ptr) }
    }
}

impl Session {
    /// Load libnftables and open a context in `ns`. `Ok(None)` when the library is not
    /// installed or its socket cannot be identified: the caller then spawns `nft`.
    pub(crate) async fn open(ns: Option<&Path>) -> Result<Option<Session>, KernelError> {
        netns::run_in(ns, || Ok(Self::open_here())).await
    }

    fn open_here() -> Option<Session> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the
        // signature libnftables(3) documents for it.
        let (ctx_new, buffer_output, buffer_error, api) = unsafe {
            let lib = libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW);
            if lib.is_null() {
                tracing::info!("libnftables not found; nftables changes run the nft program");
                return None;
            }
            let sym = |name: &CStr| {
                let p = libc::dlsym(lib, name.as_ptr());
                (!p.is_null()).then_some(p)
            };
            (
                std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
                std::mem::transmute::<*mut c_void, CtxBuffer>(sym(c"nft_ctx_buffer_output")?),
                std::mem::transmute::<*mut c_void, CtxBuffer>(sym(c"nft_ctx_buffer_error")?),
                Api {
                    ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(sym(c"nft_ctx_free")?),
                    get_output: std::mem::transmute::<*mut c_void, CtxGetBuffer>(sym(
                        c"nft_ctx_get_output_buffer",
                    )?),
                    get_error: std::mem::transmute::<*mut c_void, CtxGetBuffer>(sym(
                        c"nft_ctx_get_error_buffer",
                    )?),
                    run_cmd: std::mem::transmute::<*mut c_void, RunCmd>(sym(
                        c"nft_run_cmd_from_buffer",
                    )?),
                },
            )
        };
        let (ctx, buffered, before) = {
            let _library = LIBRARY.lock().unwrap_or_else(|p| p.into_inner());
            let before = netfilter_sockets();
            // SAFETY: documented constructor; 0 = NFT_CTX_DEFAULT.
            let ptr = unsafe { ctx_new(0) };
            if ptr.is_null() {
                return None;
            }
            // Output and errors go to buffers read after each run, not to the agent's stdout.
            // SAFETY: valid context.
            let buffered = unsafe { buffer_output(ptr) == 0 && buffer_error(ptr) == 0 };
            // Built last: dropping it takes the library lock, so it must not be dropped
            // while this block holds it.
            (Context { ptr, api }, buffered, before)
        };
        if !buffered {
            return None;
        }
        let opened: Vec<RawFd> = netfilter_sockets()
            .into_iter()
            .filter(|s| !before.contains(s))
            .map(|(fd, _)| fd)
            .collect();
        // libnftables leaves its socket unbound until it first sends, when the kernel picks a
        // port; bind it now (port 0 = the kernel picks) so the port is known before the first
        // transaction's notifications arrive.
        let port = match opened[..] {
            [fd] => bind_any(fd)
                .and_then(|()| netlink_port(fd))
                .filter(|p| *p != 0),
            _ => None,
        };
        let Some(port) = port else {
            tracing::info!(
                sockets = opened.len(),
                "cannot tell libnftables' netlink port; nftables changes run the nft program"
            );
            return None;
        };
        Some(Session { ctx, port })
    }

    /// The netlink port the kernel's notifications of this session's transactions carry.
    pub(crate) fn port(&self) -> u32 {
        self.port
    }

    /// Run `script` as one transaction (blocking; ~0.3 ms for a few rules). The error is
    /// libnftables' message, as `nft` would print it.
    pub(crate) fn run(&self, script: &str) -> Result<(), KernelError> {
        let text = CString::new(script)
            .map_err(|_| KernelError::Nft("an nft script contains a NUL byte".into()))?;
        let ctx = &self.ctx;
        let _library = LIBRARY.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: valid context, NUL-terminated script; the buffers returned stay valid until
        // the next call on this context, which `LIBRARY` excludes, and are copied at once.
        let (rc, error) = unsafe {
            let rc = (ctx.api.run_cmd)(ctx.ptr, text.as_ptr());
            let _ = (ctx.api.get_output)(ctx.ptr); // drained, unused
            let err = (ctx.api.get_error)(ctx.ptr);
            let error = if err.is_null() {
                String::new()
            } else {
                CStr::from_ptr(err).to_string_lossy().trim().to_string()
            };
            (rc, error)
        };
        if rc == 0 {
            Ok(())
        } else if error.is_empty() {
            Err(KernelError::Nft(format!(
                "nftables transaction failed ({rc})"
            )))
        } else {
            Err(KernelError::Nft(error))
        }
    }
}

/// The agent's open NETLINK_NETFILTER sockets: (descriptor, netlink port).
fn netfilter_sockets() -> Vec<(RawFd, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| {
            sockopt(fd, libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
                && sockopt(fd, libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
        })
        .filter_map(|fd| Some((fd, netlink_port(fd)?)))
        .collect()
}

fn sockopt(fd: RawFd, opt: c_int) -> Option<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`; a descriptor that is not
    // a socket just fails.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// Bind an unbound netlink socket to a port of the kernel's choosing; a bound one is left.
fn bind_any(fd: RawFd) -> Option<()> {
    if netlink_port(fd)? != 0 {
        return Some(());
    }
    // SAFETY: an all-zero sockaddr_nl with the family set is the "any port" address.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_nl of `len` bytes.
    let rc = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_nl).cast(), len) };
    (rc == 0).then_some(())
}

fn netlink_port(fd: RawFd) -> Option<u32> {
    // SAFETY: an all-zero sockaddr_nl is valid; getsockname writes at most `len` bytes.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let rc =
        unsafe { libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) };
    (rc == 0 && addr.nl_family as c_int == libc::AF_NETLINK).then_some(addr.nl_pid)
}
