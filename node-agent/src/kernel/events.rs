//! Change notifications from the kernel, so the agent can correct drift right away instead
//! of waiting for its periodic pass.
//!
//! A multicast rtnetlink socket opened inside the namespace joins the link, address,
//! neighbour/FDB and route groups; nftables changes travel over nfnetlink instead, so a
//! second socket joins NFNLGRP_NFTABLES and keeps only notifications about Weft's tables.
//! Messages are not parsed (the agent re-observes anyway); Weft's own writes notify too.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use futures::channel::mpsc::{Receiver, Sender, channel};
use rtnetlink::sys::{Socket, SocketAddr};

use super::KernelError;
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
) -> Result<KernelEvents, KernelError> {
    use rtnetlink::sys::protocols::NETLINK_ROUTE;
    let (tx, rx) = channel(1);
    spawn_reader(ns, NETLINK_ROUTE, &ROUTE_GROUPS, |_| true, None, tx.clone()).await?;
    subscribe_nft(ns, nft_unchanged, tx).await?;
    Ok(KernelEvents { signals: rx })
}

/// Open a multicast socket inside the namespace and forward a signal for every datagram that
/// `relevant` accepts. An overrun (ENOBUFS: the kernel dropped notifications) is a signal
/// too: something changed, the pass will see what. The thread ends when the stream is gone.
async fn spawn_reader(
    ns: Option<&Path>,
    protocol: isize,
    groups: &[u32],
    relevant: fn(&[u8]) -> bool,
    clear_on_signal: Option<Arc<AtomicBool>>,
    mut tx: Sender<()>,
) -> Result<(), KernelError> {
    let groups = groups.to_vec();
    let socket = super::netns::run_in(ns, move || {
        let mut socket = Socket::new(protocol).map_err(KernelError::Socket)?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(KernelError::Socket)?;
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

/// nftables notifications about the tables named [`NFT_TABLE`] only.
async fn subscribe_nft(
    ns: Option<&Path>,
    unchanged: Arc<AtomicBool>,
    tx: Sender<()>,
) -> Result<(), KernelError> {
    use rtnetlink::sys::protocols::NETLINK_NETFILTER;
    let groups = [NFNLGRP_NFTABLES];
    spawn_reader(
        ns,
        NETLINK_NETFILTER,
        &groups,
        mentions_weft_table,
        Some(unchanged),
        tx,
    )
    .await
}

/// Does any nfnetlink message in `buf` name Weft's table? In table, chain, rule and set
/// messages attribute 1 is the table name (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, ...).
fn mentions_weft_table(buf: &[u8]) -> bool {
    let want = format!("{NFT_TABLE}\0");
    let mut msg = buf;
    while msg.len() >= 16 {
        let len = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
        if len < 16 || len > msg.len() {
            return false;
        }
        // nlmsghdr (16 bytes), then nfgenmsg (4 bytes), then attributes.
        let mut attrs = msg.get(20..len).unwrap_or_default();
        while attrs.len() >= 4 {
            let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let atype = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
            if alen < 4 || alen > attrs.len() {
                break;
            }
            if atype == 1 && &attrs[4..alen] == want.as_bytes() {
                return true;
            }
            attrs = attrs.get(alen.next_multiple_of(4)..).unwrap_or_default();
        }
        msg = msg.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::mentions_weft_table;

    fn message(table: &str) -> Vec<u8> {
        let name = format!("{table}\0");
        let alen = 4 + name.len();
        let total = 16 + 4 + alen.next_multiple_of(4);
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_ne_bytes());
        m.extend_from_slice(&[0u8; 12]); // type, flags, seq, pid
        m.extend_from_slice(&[1, 0, 0, 0]); // nfgenmsg
        m.extend_from_slice(&(alen as u16).to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(name.as_bytes());
        m.resize(total, 0);
        m
    }

    #[test]
    fn only_weft_tables_count() {
        assert!(mentions_weft_table(&message("weft")));
        assert!(!mentions_weft_table(&message("foreign")));
        assert!(!mentions_weft_table(&message("myweft")));
        let mut two = message("filter");
        two.extend(message("weft"));
        assert!(mentions_weft_table(&two));
        assert!(!mentions_weft_table(&[1, 2, 3]));
    }
}
