//! Netlink plumbing the noun files share: one request and its acknowledgement, a query or
//! dump and its replies, and the ownership check every item write makes first.

use futures::StreamExt;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

use crate::kernel::error::{KernelError, netlink_error};
use crate::kernel::handle::Kernel;
use crate::kernel::link::LinkView;

/// Routing protocol number Weft stamps on the routes it adds (`proto 87` in `ip route`).
/// Observing filters on it, so kernel prefix routes and other daemons' routes through the
/// same links are never mistaken for Weft's. 87 is unassigned in `/etc/iproute2/rt_protos`.
pub const WEFT_RTPROT: u8 = 0x57;

impl Kernel {
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

    /// Like [`Kernel::query`], converting each reply as it arrives: a dump of thousands of
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

/// Index of an owned link, or why an item on it must not be touched.
pub(crate) fn owned_index(
    view: &LinkView,
    name: &str,
    op: impl FnOnce() -> String,
) -> Result<u32, KernelError> {
    match view.by_name(name) {
        None => Err(KernelError::NoSuchLink {
            op: op(),
            name: name.to_string(),
        }),
        Some(raw) if !raw.owned() => Err(KernelError::NotOwned(name.to_string())),
        Some(raw) => Ok(raw.index),
    }
}
