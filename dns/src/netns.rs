//! Sockets inside a sandbox's network namespace, for sandboxes that cannot reach their node
//! (macvlan): a short-lived thread enters the namespace, binds, and hands the sockets back.
//! A socket stays in the namespace it was created in, whatever thread uses it later.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::server::{tcp_socket, udp_socket};

/// UDP and TCP sockets bound to `addr` inside the namespace at `netns`.
pub fn bind_inside(netns: &Path, addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let ns = File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace fd we own; only this thread changes namespace,
            // and it ends right after binding.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok((udp_socket(addr)?, tcp_socket(addr)?))
        })
        .join()
        .map_err(|_| std::io::Error::other("namespace thread panicked"))?
    })
}
