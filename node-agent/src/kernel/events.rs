//! Change notifications from the kernel, so the agent can correct drift right away instead
//! of waiting for its periodic pass.
//!
//! A multicast rtnetlink socket opened inside the namespace joins the link, address,
//! neighbour/FDB and route groups; nftables changes travel over nfnetlink instead, so a
//! second socket joins NFNLGRP_NFTABLES and keeps only notifications about Weft's tables.
//! Messages are not parsed (the agent re-observes anyway); Weft's own link, address and
//! FDB writes notify too. Weft's own nftables transactions do not: each transaction's
//! notifications end with a NEWGEN message naming the process that committed it, and the
//! `nft` processes the agent starts are remembered ([`OwnPids`]), so only somebody else's
//! change to Weft's tables invalidates the agent's cached listing.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use futures::channel::mpsc::{Receiver, Sender, channel};
use rtnetlink::sys::{Socket, SocketAddr};

use super::KernelError;
use super::nft::OwnPids;
use crate::model::NFT_TABLE;

/// The notification stream: one `()` per burst of kernel notifications. Reader threads
/// coalesce into a channel of capacity one, so a burst of thousands of messages (Weft's own
/// writes at start) costs one buffer and wakes the agent once, not thousands of parsed
/// messages queued in memory.
pub struct KernelEvents {
    signals: Receiver<()>,
}

impl Stream for KernelEvents {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        Pin::new(&mut self.signals).poll_next(cx)
    }
}

/// rtnetlink multicast groups (RTNLGRP_*): link, neighbour/FDB, IPv4/IPv6 address and route.
const ROUTE_GROUPS: [u32; 6] = [1, 3, 5, 7, 9, 11];
const ENOBUFS: i32 = 105;

/// Subscribe inside `ns`. `nft_unchanged` is cleared whenever Weft's nftables tables may have
/// changed (a notification, or an overrun), before the signal goes out.
pub(crate) async fn subscribe(
    ns: Option<&Path>,
    nft_unchanged: Arc<AtomicBool>,
    own_nft: OwnPids,
) -> Result<KernelEvents, KernelError> {
    use rtnetlink::sys::protocols::NETLINK_ROUTE;
    let (tx, rx) = channel(1);
    spawn_reader(
        ns,
        NETLINK_ROUTE,
        &ROUTE_GROUPS,
        Box::new(|_| true),
        None,
        tx.clone(),
    )
    .await?;
    subscribe_nft(ns, nft_unchanged, own_nft, tx).await?;
    Ok(KernelEvents { signals: rx })
}

/// Decides, datagram by datagram, whether the agent should hear about it.
type DatagramFilter = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// Open a multicast socket inside the namespace and forward a signal for every datagram that
/// `relevant` accepts. An overrun (ENOBUFS: the kernel dropped notifications) is a signal
/// too: something changed, the pass will see what. The thread ends when the stream is gone.
async fn spawn_reader(
    ns: Option<&Path>,
    protocol: isize,
    groups: &[u32],
    mut relevant: DatagramFilter,
    clear_on_signal: Option<Arc<AtomicBool>>,
    mut tx: Sender<()>,
) -> Result<(), KernelError> {
    let groups = groups.to_vec();
    let socket = super::netns::run_in(ns, move || {
        let mut socket = Socket::new(protocol).map_err(KernelError::Socket)?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(KernelError::Socket)?;
        // Room for the notifications of a big transaction (a cold start writes thousands
        // of rules at once): an overrun would cost a needless re-listing. Best effort: the
        // FORCE variant needs CAP_NET_ADMIN, which the agent has.
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt on an open socket with a pointer to a live c_int of that size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        for g in groups {
            socket.add_membership(g).map_err(KernelError::Socket)?;
        }
        Ok(socket)
    })
    .await?;
    std::thread::Builder::new()
        .name("weft-kernel-events".into())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let signal = match socket.recv(&mut &mut buf[..], 0) {
                    Ok(n) => relevant(&buf[..n]),
                    Err(e) if e.raw_os_error() == Some(ENOBUFS) => true,
                    Err(_) => return,
                };
                if signal {
                    if let Some(flag) = &clear_on_signal {
                        flag.store(false, Ordering::SeqCst);
                    }
                    match tx.try_send(()) {
                        Ok(()) => {}
                        Err(e) if e.is_full() => {} // a signal is already pending
                        Err(_) => return,           // the stream was dropped
                    }
                }
            }
        })
        .map_err(|e| KernelError::Thread(e.to_string()))?;
    Ok(())
}

/// NFNLGRP_NFTABLES: table, chain, rule and set notifications.
const NFNLGRP_NFTABLES: u32 = 7;

/// nftables notifications: a signal when a transaction by someone else touched the tables
/// named [`NFT_TABLE`].
async fn subscribe_nft(
    ns: Option<&Path>,
    unchanged: Arc<AtomicBool>,
    own: OwnPids,
    tx: Sender<()>,
) -> Result<(), KernelError> {
    use rtnetlink::sys::protocols::NETLINK_NETFILTER;
    let groups = [NFNLGRP_NFTABLES];
    spawn_reader(
        ns,
        NETLINK_NETFILTER,
        &groups,
        Box::new(foreign_weft_changes(own)),
        Some(unchanged),
        tx,
    )
    .await
}

/// nlmsg_type of NFT_MSG_NEWGEN: (NFNL_SUBSYS_NFTABLES << 8) | 15. The kernel sends it after
/// the notifications of each committed transaction.
const NFT_NEWGEN: u16 = (10 << 8) | 15;
/// NEWGEN's NFTA_GEN_PROC_PID: the committing process (big endian).
const NFTA_GEN_PROC_PID: u16 = 2;

/// The nfnetlink messages in one datagram: (type, attributes).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        // nlmsghdr (16 bytes), then nfgenmsg (4 bytes), then attributes.
        let attrs = rest.get(20..len).unwrap_or_default();
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, attrs))
    })
}

/// The netlink attributes of one message: (type, payload).
fn attributes(mut attrs: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if attrs.len() < 4 {
            return None;
        }
        let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let atype = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if alen < 4 || alen > attrs.len() {
            return None;
        }
        let payload = &attrs[4..alen];
        attrs = attrs.get(alen.next_multiple_of(4)..).unwrap_or_default();
        Some((atype, payload))
    })
}

/// Does a table, chain, rule or set message name Weft's table? Attribute 1 is the table name
/// in all of them (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, ...).
fn mentions_weft_table(attrs: &[u8]) -> bool {
    let want = format!("{NFT_TABLE}\0");
    attributes(attrs).any(|(t, v)| t == 1 && v == want.as_bytes())
}

/// The process named by a NEWGEN message.
fn generation_pid(attrs: &[u8]) -> Option<u32> {
    attributes(attrs)
        .find(|(t, _)| *t == NFTA_GEN_PROC_PID)
        .and_then(|(_, v)| Some(u32::from_be_bytes(v.try_into().ok()?)))
}

/// A datagram filter, stateful across datagrams: true when a transaction that touched
/// Weft's tables has been committed by a process that is not one of the agent's own `nft`
/// runs (or by an unknown one).
fn foreign_weft_changes(own: OwnPids) -> impl FnMut(&[u8]) -> bool + Send {
    let mut touched = false;
    move |buf| {
        let mut foreign = false;
        for (kind, attrs) in messages(buf) {
            if kind == NFT_NEWGEN {
                if touched {
                    foreign |= generation_pid(attrs).is_none_or(|pid| !own.contains(pid));
                }
                touched = false;
            } else if mentions_weft_table(attrs) {
                touched = true;
            }
        }
        foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, attr_type: u16, payload: &[u8]) -> Vec<u8> {
        let alen = 4 + payload.len();
        let total = 16 + 4 + alen.next_multiple_of(4);
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]); // flags, seq, pid
        m.extend_from_slice(&[1, 0, 0, 0]); // nfgenmsg
        m.extend_from_slice(&(alen as u16).to_ne_bytes());
        m.extend_from_slice(&attr_type.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(total, 0);
        m
    }

    /// A NEWRULE (type 6) about `table`.
    fn rule(table: &str) -> Vec<u8> {
        message((10 << 8) | 6, 1, format!("{table}\0").as_bytes())
    }

    fn newgen(pid: u32) -> Vec<u8> {
        message(NFT_NEWGEN, NFTA_GEN_PROC_PID, &pid.to_be_bytes())
    }

    #[test]
    fn only_foreign_transactions_on_weft_tables_count() {
        let own = OwnPids::default();
        own.remember(42);
        let mut filter = foreign_weft_changes(own);
        // Somebody else's change to Weft's table, in one datagram or split over two.
        assert!(filter(&[rule("weft"), newgen(7)].concat()));
        assert!(!filter(&rule("weft")));
        assert!(filter(&newgen(7)));
        // The agent's own nft run, another table, a table with a similar name.
        assert!(!filter(&[rule("weft"), newgen(42)].concat()));
        assert!(!filter(&[rule("filter"), newgen(7)].concat()));
        assert!(!filter(&[rule("myweft"), newgen(7)].concat()));
        // Two tables in one transaction; a generation without a process counts as foreign.
        assert!(filter(&[rule("filter"), rule("weft"), newgen(7)].concat()));
        assert!(filter(
            &[rule("weft"), message(NFT_NEWGEN, 1, &[0, 0, 0, 9])].concat()
        ));
        assert!(!filter(&[1, 2, 3]));
    }
}
