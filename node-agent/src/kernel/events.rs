//! Change notifications from the kernel, so the agent can correct drift right away instead
//! of waiting for its periodic pass.
//!
//! A multicast rtnetlink socket opened inside the namespace joins the link, address,
//! neighbour/FDB and route groups. nftables changes travel over nfnetlink instead, so a
//! second socket joins NFNLGRP_NFTABLES and passes on notifications about Weft's tables. Every notification becomes one `()`; the content is not
//! interpreted (the agent re-observes anyway). Weft's own writes notify too, and one change
//! can notify several times, so the consumer should debounce.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;

use super::{KernelError, connect};
use crate::model::NFT_TABLE;

/// The notification stream; dropping it closes the socket.
pub struct KernelEvents {
    messages: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    connection: tokio::task::JoinHandle<()>,
    /// Keeps the connection's request side open (the connection ends when all handles go).
    _handle: rtnetlink::Handle,
    /// Notifications about Weft's nftables tables.
    nft: UnboundedReceiver<()>,
}

impl Stream for KernelEvents {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        if let Poll::Ready(Some(())) = Pin::new(&mut self.nft).poll_next(cx) {
            return Poll::Ready(Some(()));
        }
        Pin::new(&mut self.messages)
            .poll_next(cx)
            .map(|m| m.map(|_| ()))
    }
}

impl Drop for KernelEvents {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

pub(crate) async fn subscribe(ns: Option<&Path>) -> Result<KernelEvents, KernelError> {
    let groups = vec![
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let (handle, messages, connection) = connect(ns, groups).await?;
    let nft = subscribe_nft(ns).await?;
    Ok(KernelEvents {
        messages,
        connection,
        _handle: handle,
        nft,
    })
}

/// NFNLGRP_NFTABLES: table, chain, rule and set notifications.
const NFNLGRP_NFTABLES: u32 = 7;

/// Join the nftables notification group inside the namespace; a blocking reader thread
/// forwards a `()` for every notification about a table named [`NFT_TABLE`]. The thread
/// ends when the receiver is dropped (at the next notification) or the socket fails.
async fn subscribe_nft(ns: Option<&Path>) -> Result<UnboundedReceiver<()>, KernelError> {
    use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
    let socket = super::netns::run_in(ns, || {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(KernelError::Socket)?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(KernelError::Socket)?;
        socket
            .add_membership(NFNLGRP_NFTABLES)
            .map_err(KernelError::Socket)?;
        Ok(socket)
    })
    .await?;
    let (tx, rx) = futures::channel::mpsc::unbounded();
    std::thread::Builder::new()
        .name("weft-nft-events".into())
        .spawn(move || {
            while let Ok((buf, _)) = socket.recv_from_full() {
                if mentions_weft_table(&buf) && tx.unbounded_send(()).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| KernelError::Thread(e.to_string()))?;
    Ok(rx)
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
