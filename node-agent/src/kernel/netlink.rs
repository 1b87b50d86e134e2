//! Netlink plumbing the noun files share: one request and its acknowledgement, a query or
//! dump and its replies, and the ownership check every item write makes first.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

use crate::kernel::error::{KernelError, netlink_error};
use crate::kernel::netns;

/// Routing protocol number Weft stamps on the routes it adds (`proto 87` in `ip route`).
/// Observing filters on it, so kernel prefix routes and other daemons' routes through the
/// same links are never mistaken for Weft's. 87 is unassigned in `/etc/iproute2/rt_protos`.
pub const WEFT_RTPROT: u8 = 0x57;

/// One rtnetlink connection, opened from a thread inside a namespace; what the noun files
/// (`link`, `addr`, `route`, `fdb`) add their requests to.
pub(crate) struct Netlink {
    handle: rtnetlink::Handle,
    /// The netlink port of `handle`'s socket (see [`connect`]).
    port: u32,
    netns: Option<PathBuf>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Open an rtnetlink connection from a thread inside `netns` and run its I/O task on the
/// current tokio runtime. Also returns the socket's netlink port: the kernel stamps it on
/// the notifications of the changes this connection makes, so the event reader can tell
/// Weft's own writes from somebody else's.
async fn connect(
    ns: Option<&Path>,
) -> Result<(rtnetlink::Handle, tokio::task::JoinHandle<()>, u32), KernelError> {
    use rtnetlink::sys::AsyncSocket;
    let runtime = tokio::runtime::Handle::current();
    let (conn, handle, port) = netns::run_in(ns, move || {
        // The socket registers with the runtime's reactor, which needs the runtime context.
        let _guard = runtime.enter();
        let (mut conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::socket)?;
        // Bound now rather than on the first send, so the port is known from the start.
        let socket = conn.socket_mut().socket_mut();
        let port = socket
            .bind_auto()
            .map_err(KernelError::socket)?
            .port_number();
        // Strict checking lets a dump request filter in the kernel (routes by table and
        // protocol): only Weft's routes cross, not the kernel's three per bridge. Kernels
        // before 4.20 lack it; they send everything and the reader filters as before.
        if let Err(e) = socket.set_netlink_get_strict_chk(true) {
            tracing::debug!(error = %e, "no strict netlink checking; route dumps unfiltered");
        }
        Ok::<_, KernelError>((conn, handle, port))
    })
    .await?;
    Ok((handle, tokio::spawn(conn), port))
}

impl Netlink {
    /// `None` = the agent's own netns; `Some(path)` = e.g. `/var/run/netns/X`.
    pub(crate) async fn open(netns: Option<&Path>) -> Result<Self, KernelError> {
        let (handle, connection, port) = connect(netns).await?;
        Ok(Netlink {
            handle,
            port,
            netns: netns.map(Path::to_path_buf),
            connection,
        })
    }

    pub(crate) fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// The port the kernel stamps on notifications of this connection's own writes.
    pub(crate) fn port(&self) -> u32 {
        self.port
    }

    /// Send one request and wait for the kernel's acknowledgement.
    pub(crate) async fn ack(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<(), KernelError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|e| KernelError::Closed(e.to_string()))?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(err) = reply.payload
                && err.code.is_some()
            {
                return Err(netlink_error(op(), &err));
            }
        }
        Ok(())
    }

    /// Send a request (a dump when `dump`) and collect the replies.
    pub(crate) async fn query(
        &self,
        msg: RouteNetlinkMessage,
        dump: bool,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        self.query_map(msg, dump, op, Some).await
    }

    /// Like [`Netlink::query`], converting each reply as it arrives: a dump of thousands of
    /// links never holds thousands of fully parsed messages at once.
    pub(crate) async fn query_map<T>(
        &self,
        msg: RouteNetlinkMessage,
        dump: bool,
        op: impl FnOnce() -> String,
        mut convert: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>, KernelError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = if dump {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST
        };
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|e| KernelError::Closed(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.extend(convert(m)),
                NetlinkPayload::Error(err) if err.code.is_some() => {
                    return Err(netlink_error(op(), &err));
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
