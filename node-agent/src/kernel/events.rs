//! Change notifications from the kernel, so the agent can correct drift right away instead
//! of waiting for its periodic pass.
//!
//! A multicast rtnetlink socket opened inside the namespace joins the link, address,
//! neighbour/FDB and route groups. Every notification becomes one `()`; the content is not
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

/// The notification stream; dropping it closes the socket.
pub struct KernelEvents {
    messages: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    connection: tokio::task::JoinHandle<()>,
    /// Keeps the connection's request side open (the connection ends when all handles go).
    _handle: rtnetlink::Handle,
}

impl Stream for KernelEvents {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
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
    Ok(KernelEvents {
        messages,
        connection,
        _handle: handle,
    })
}
