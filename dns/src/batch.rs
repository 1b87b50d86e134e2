//! Datagrams in batches: one `recvmmsg(2)` takes up to [`BATCH`] queries waiting on a socket
//! and one `sendmmsg(2)` sends their answers, so a busy server pays two system calls per
//! batch instead of two (and an epoll wait) per query. The buffers live as long as the
//! listener: nothing is allocated per query.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Datagrams per system call at most (what a burst from many clients fills; more buys
/// little). Each costs 4.5 KiB of buffers for the listener's life.
pub const BATCH: usize = 32;
/// A larger query is cut to this (and then answered FORMERR).
const QUERY_MAX: usize = 4096;

pub struct Batch {
    queries: Vec<[u8; QUERY_MAX]>,
    lens: [usize; BATCH],
    peers: [libc::sockaddr_storage; BATCH],
    peer_lens: [libc::socklen_t; BATCH],
    received: usize,
    /// One answer per received query; empty: nothing to send for it.
    pub answers: Vec<Vec<u8>>,
}

impl Batch {
    /// Room for `size` datagrams per call (at most [`BATCH`]).
    pub fn new(size: usize) -> Self {
        let size = size.clamp(1, BATCH);
        Self {
            queries: vec![[0; QUERY_MAX]; size],
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) one.
            peers: unsafe { MaybeUninit::zeroed().assume_init() },
            peer_lens: [0; BATCH],
            received: 0,
            answers: (0..size).map(|_| Vec::with_capacity(512)).collect(),
        }
    }

    /// Take the datagrams waiting on `fd` (at least one, or `WouldBlock`).
    pub fn receive(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received = 0;
        let size = self.queries.len();
        let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.queries[i % size].as_mut_ptr().cast(),
            iov_len: QUERY_MAX,
        });
        // SAFETY: mmsghdr is plain data; the fields used are set below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for (i, m) in msgs.iter_mut().take(size).enumerate() {
            m.msg_hdr.msg_name = (&raw mut self.peers[i]).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &raw mut iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `size` entries of msgs point into self or iovecs, alive for the
        // call, with the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                size as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs.iter().take(n).enumerate() {
            self.lens[i] = (m.msg_len as usize).min(QUERY_MAX);
            self.peer_lens[i] = m.msg_hdr.msg_namelen;
        }
        self.received = n;
        self.answers.iter_mut().for_each(Vec::clear);
        Ok(n)
    }

    /// The `i`th datagram received and its sender (`None`: not an IP sender).
    pub fn query(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.queries[i][..self.lens[i]], self.peer(i))
    }

    fn peer(&self, i: usize) -> Option<SocketAddr> {
        let storage = &self.peers[i];
        match i32::from(storage.ss_family) {
            libc::AF_INET if self.peer_lens[i] as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a sockaddr_in here (family and length say so).
                let a = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if self.peer_lens[i] as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: the kernel wrote a sockaddr_in6 here (family and length say so).
                let a = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Send every non-empty answer to the sender of its query, from answer `from` on;
    /// returns how many answers (empty ones included) are done, or `WouldBlock`.
    pub fn send(&mut self, fd: BorrowedFd<'_>, from: usize) -> io::Result<usize> {
        let mut order = [0usize; BATCH];
        let mut count = 0;
        for i in from..self.received {
            if !self.answers[i].is_empty() {
                order[count] = i;
                count += 1;
            }
        }
        if count == 0 {
            return Ok(self.received - from);
        }
        let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|k| {
            let answer = &mut self.answers[order[k]];
            libc::iovec {
                iov_base: answer.as_mut_ptr().cast(),
                iov_len: answer.len(),
            }
        });
        // SAFETY: mmsghdr is plain data; the fields used are set below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for (k, m) in msgs.iter_mut().take(count).enumerate() {
            m.msg_hdr.msg_name = (&raw mut self.peers[order[k]]).cast();
            m.msg_hdr.msg_namelen = self.peer_lens[order[k]];
            m.msg_hdr.msg_iov = &raw mut iovecs[k];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `count` entries point into self or iovecs, alive for the call.
        let sent = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        // Done up to the last answer sent (and the empty ones before it); or all of them.
        let sent = sent as usize;
        Ok(if sent == count {
            self.received - from
        } else {
            order[sent] - from
        })
    }
}
