//! Change notifications from the kernel, so the agent can correct drift right away instead
//! of waiting for its periodic pass.
//!
//! A multicast rtnetlink socket opened inside the namespace joins the link, address,
//! neighbour/FDB and route groups; nftables changes travel over nfnetlink instead, so a
//! second socket joins NFNLGRP_NFTABLES and keeps only notifications about Weft's tables.
//! Of the rtnetlink messages only the fixed headers are read (the agent re-observes
//! anyway), enough to drop what cannot concern Weft's objects and what the agent's own
//! socket wrote ([`weft_route_changes`]); some of Weft's own writes still notify (the
//! kernel stamps no writer on most link messages, nor on VXLAN FDB entries). Weft's own
//! nftables transactions do not: each
//! transaction's notifications end with a NEWGEN message naming the process that committed
//! it, and the `nft` processes the agent starts are remembered ([`OwnNft`]), so only
//! somebody else's change to Weft's tables invalidates the agent's cached listing. For the
//! agent's own transactions the reader hands the handles of the rules added (from the
//! NEWRULE notifications) to the run that wrote them.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use futures::channel::mpsc::{Receiver, Sender, channel};
use rtnetlink::sys::{Socket, SocketAddr};

use crate::kernel::error::KernelError;
use crate::kernel::netlink::WEFT_RTPROT;
use crate::kernel::netns;
use crate::kernel::nft::{AddedRules, OwnNft};
use crate::model::{NFT_TABLE, NftFamily};

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
    own_port: u32,
    nft_unchanged: Arc<AtomicBool>,
    own_nft: OwnNft,
) -> Result<KernelEvents, KernelError> {
    use rtnetlink::sys::protocols::NETLINK_ROUTE;
    let (tx, rx) = channel(1);
    spawn_reader(
        ns,
        NETLINK_ROUTE,
        &ROUTE_GROUPS,
        Box::new(weft_route_changes(own_port)),
        None,
        tx.clone(),
    )
    .await?;
    subscribe_nft(ns, nft_unchanged, own_nft, tx).await?;
    Ok(KernelEvents { signals: rx })
}

/// Decides, datagram by datagram, whether the agent should hear about it. `None` = the
/// socket overran and notifications were lost (the agent always hears about that).
type DatagramFilter = Box<dyn FnMut(Option<&[u8]>) -> bool + Send>;

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
    let socket = netns::run_in(ns, move || {
        let mut socket = Socket::new(protocol).map_err(KernelError::socket)?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(KernelError::socket)?;
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
            socket.add_membership(g).map_err(KernelError::socket)?;
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
                    Ok(n) => relevant(Some(&buf[..n])),
                    Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                        relevant(None);
                        true
                    }
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

/// rtnetlink message types (RTM_*) the reader looks into.
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
/// ndmsg states: NUD_FAILED, NUD_NOARP, NUD_PERMANENT.
const NUD_FAILED: u16 = 0x20;
const NUD_STATIC: u16 = 0x40 | 0x80;
/// NDA_DST: the neighbour's IP address (on a VXLAN FDB entry, the remote VTEP).
const NDA_DST: u16 = 1;
/// ifaddrmsg scope RT_SCOPE_LINK.
const RT_SCOPE_LINK: u8 = 253;
const AF_INET6: u8 = 10;

/// A datagram filter for rtnetlink notifications: true when one of its messages may concern
/// an object Weft owns and was not written through the agent's own socket (`own_port`).
///
/// Left out, because Weft owns none of them and they would wake a pass for nothing:
/// neighbours and FDB entries the kernel learns (only static entries with a destination
/// are Weft's — a static one deleted reads FAILED), IPv6 link-local addresses, and routes
/// of any protocol but Weft's (the kernel's prefix routes follow addresses, which do
/// notify). On an overlay those learned entries and IPv6 addresses trickle in for seconds
/// after a network is created, on every node. Links always count, whoever changed them: a
/// parent appearing, or a link the kernel removed with its parent.
pub(crate) fn weft_route_changes(own_port: u32) -> impl FnMut(Option<&[u8]>) -> bool + Send {
    move |buf| {
        let Some(buf) = buf else {
            return true; // lost notifications
        };
        netlink_messages(buf).any(|(kind, port, body)| {
            if own_port != 0 && port == own_port {
                return false;
            }
            match kind {
                RTM_NEWADDR | RTM_DELADDR => {
                    // ifaddrmsg: family, prefix length, flags, scope, index.
                    !(body.first() == Some(&AF_INET6) && body.get(3) == Some(&RT_SCOPE_LINK))
                }
                // rtmsg: family, dst_len, src_len, tos, table, protocol, ...
                RTM_NEWROUTE | RTM_DELROUTE => body.get(5) == Some(&WEFT_RTPROT),
                RTM_NEWNEIGH | RTM_DELNEIGH => {
                    // ndmsg: family, 3 bytes padding, ifindex, state (u16), flags, type.
                    let Some(state) = body.get(8..10) else {
                        return true;
                    };
                    let state = u16::from_ne_bytes([state[0], state[1]]);
                    let has_destination =
                        attributes(body.get(12..).unwrap_or_default()).any(|(t, _)| t == NDA_DST);
                    let static_entry = state & NUD_STATIC != 0
                        || (kind == RTM_DELNEIGH && state & NUD_FAILED != 0);
                    static_entry && has_destination
                }
                _ => true,
            }
        })
    }
}

/// NFNLGRP_NFTABLES: table, chain, rule and set notifications.
const NFNLGRP_NFTABLES: u32 = 7;

/// nftables notifications: a signal when a transaction by someone else touched the tables
/// named [`NFT_TABLE`].
async fn subscribe_nft(
    ns: Option<&Path>,
    unchanged: Arc<AtomicBool>,
    own: OwnNft,
    tx: Sender<()>,
) -> Result<(), KernelError> {
    use rtnetlink::sys::protocols::NETLINK_NETFILTER;
    let groups = [NFNLGRP_NFTABLES];
    spawn_reader(
        ns,
        NETLINK_NETFILTER,
        &groups,
        Box::new(weft_transactions(own.clone())),
        Some(unchanged),
        tx,
    )
    .await?;
    own.listen();
    Ok(())
}

/// nlmsg_type of NFT_MSG_NEWGEN: (NFNL_SUBSYS_NFTABLES << 8) | 15. The kernel sends it after
/// the notifications of each committed transaction.
const NFT_NEWGEN: u16 = (10 << 8) | 15;
/// NEWGEN's NFTA_GEN_PROC_PID: the committing process (big endian).
const NFTA_GEN_PROC_PID: u16 = 2;
/// nlmsg_type of NFT_MSG_NEWRULE.
const NFT_NEWRULE: u16 = (10 << 8) | 6;
/// NEWRULE attributes: NFTA_RULE_CHAIN, NFTA_RULE_HANDLE (u64, big endian),
/// NFTA_RULE_USERDATA (where `nft` keeps a rule's comment).
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_USERDATA: u16 = 7;
/// nfgen_family values (NFPROTO_*) of Weft's tables.
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;

/// One nfnetlink message.
struct Message<'a> {
    kind: u16,
    /// nlmsg_pid: the netlink port of the socket that made the change (a process's pid in
    /// its own pid namespace, as `nft`'s socket is bound).
    port: u32,
    /// nfgenmsg.nfgen_family.
    family: u8,
    attrs: &'a [u8],
}

/// The netlink messages in one datagram: (nlmsg_type, nlmsg_pid, body after the header).
fn netlink_messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
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
        let port = u32::from_ne_bytes([rest[12], rest[13], rest[14], rest[15]]);
        let body = &rest[16..len];
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, port, body))
    })
}

/// The nfnetlink messages in one datagram.
fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    // After the header: nfgenmsg (4 bytes), then attributes.
    netlink_messages(buf).filter_map(|(kind, port, body)| {
        Some(Message {
            kind,
            port,
            family: *body.first()?,
            attrs: body.get(4..)?,
        })
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

/// A netlink string attribute without its terminating NUL.
fn attr_str(v: &[u8]) -> Option<&str> {
    std::str::from_utf8(v.strip_suffix(&[0]).unwrap_or(v)).ok()
}

/// The rule id in a rule's userdata: `nft` stores the comment as a TLV of type 0
/// (NFTNL_UDATA_RULE_COMMENT), and Weft's comments read `weft:<id>`.
fn comment_id(mut udata: &[u8]) -> Option<&str> {
    while let [kind, len, rest @ ..] = udata {
        let value = rest.get(..usize::from(*len))?;
        if *kind == 0 {
            return attr_str(value)?.strip_prefix("weft:");
        }
        udata = &rest[usize::from(*len)..];
    }
    None
}

/// (family, chain, rule id) and handle of a NEWRULE message about a Weft rule.
fn added_rule(m: &Message) -> Option<((NftFamily, String, String), u64)> {
    let family = match m.family {
        NFPROTO_INET => NftFamily::Inet,
        NFPROTO_BRIDGE => NftFamily::Bridge,
        _ => return None,
    };
    let (mut chain, mut handle, mut id) = (None, None, None);
    for (t, v) in attributes(m.attrs) {
        match t {
            NFTA_RULE_CHAIN => chain = attr_str(v),
            NFTA_RULE_HANDLE => handle = Some(u64::from_be_bytes(v.try_into().ok()?)),
            NFTA_RULE_USERDATA => id = comment_id(v),
            _ => {}
        }
    }
    Some(((family, chain?.to_string(), id?.to_string()), handle?))
}

/// A datagram filter, stateful across datagrams (a transaction's notifications may span
/// several): true when a transaction that touched Weft's tables has been committed by a
/// process that is not one of the agent's own `nft` runs (or by an unknown one). The
/// agent's own transactions are handed to `own` with the rules they added.
fn weft_transactions(own: OwnNft) -> impl FnMut(Option<&[u8]>) -> bool + Send {
    let mut touched = false;
    let mut added = AddedRules::new();
    move |buf| {
        let Some(buf) = buf else {
            // Lost notifications: whatever was being collected is incomplete.
            touched = false;
            added.clear();
            own.overrun();
            return true;
        };
        let mut foreign = false;
        for m in messages(buf) {
            if m.kind == NFT_NEWGEN {
                // The committing socket's port: a child `nft`'s pid as the agent sees it
                // (also when the agent runs in a pid namespace of its own, where the
                // generation's process id is the pid outside it), or the port of the
                // agent's in-process libnftables session.
                let mine = [Some(m.port), generation_pid(m.attrs)]
                    .into_iter()
                    .flatten()
                    .find(|pid| *pid != 0 && own.contains(*pid));
                match mine {
                    Some(pid) => own.committed(pid, std::mem::take(&mut added)),
                    None => {
                        foreign |= touched;
                        added.clear();
                    }
                }
                touched = false;
            } else if mentions_weft_table(m.attrs) {
                touched = true;
                if m.kind == NFT_NEWRULE
                    && let Some((key, handle)) = added_rule(&m)
                {
                    added.insert(key, handle);
                }
            }
        }
        foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An nfnetlink message from netlink port `port` with the given attributes.
    fn message_from(kind: u16, port: u32, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, payload) in attrs {
            let alen = 4 + payload.len();
            body.extend_from_slice(&(alen as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(payload);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let total = 16 + 4 + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 6]); // flags, seq
        m.extend_from_slice(&port.to_ne_bytes());
        m.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg
        m.extend_from_slice(&body);
        m
    }

    fn message(kind: u16, attr_type: u16, payload: &[u8]) -> Vec<u8> {
        message_from(kind, 0, NFPROTO_INET, &[(attr_type, payload)])
    }

    /// A NEWRULE about `table`.
    fn rule(table: &str) -> Vec<u8> {
        message(NFT_NEWRULE, 1, format!("{table}\0").as_bytes())
    }

    /// A NEWRULE as the kernel sends it for a Weft rule.
    fn weft_rule(family: u8, chain: &str, id: &str, handle: u64) -> Vec<u8> {
        let comment = format!("weft:{id}\0");
        // Userdata TLVs: something else first, then the comment (type 0).
        let udata = [&[9u8, 1, 7, 0, comment.len() as u8][..], comment.as_bytes()].concat();
        message_from(
            NFT_NEWRULE,
            0,
            family,
            &[
                (1, b"weft\0"),
                (NFTA_RULE_CHAIN, format!("{chain}\0").as_bytes()),
                (NFTA_RULE_HANDLE, &handle.to_be_bytes()),
                (NFTA_RULE_USERDATA, &udata),
            ],
        )
    }

    fn newgen(pid: u32) -> Vec<u8> {
        message(NFT_NEWGEN, NFTA_GEN_PROC_PID, &pid.to_be_bytes())
    }

    #[test]
    fn only_foreign_transactions_on_weft_tables_count() {
        let own = OwnNft::default();
        own.remember(42);
        let mut filter = weft_transactions(own);
        let mut filter = |b: &[u8]| filter(Some(b));
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
        // The agent in a pid namespace: the generation names the pid outside, the netlink
        // port the pid the agent knows.
        let outside = message_from(
            NFT_NEWGEN,
            42,
            NFPROTO_INET,
            &[(NFTA_GEN_PROC_PID, &[0, 0, 3, 232])],
        );
        assert!(!filter(&[rule("weft"), outside].concat()));
    }

    /// An rtnetlink message: header from `port`, a fixed body, then attributes.
    fn rtnl(kind: u16, port: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = fixed.to_vec();
        body.resize(body.len().next_multiple_of(4), 0);
        for (t, payload) in attrs {
            body.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(payload);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 6]); // flags, seq
        m.extend_from_slice(&port.to_ne_bytes());
        m.extend_from_slice(&body);
        m
    }

    const AF_INET: u8 = 2;
    const AF_BRIDGE: u8 = 7;
    const RTM_NEWLINK: u16 = 16;

    fn address(kind: u16, family: u8, scope: u8) -> Vec<u8> {
        rtnl(kind, 0, &[family, 64, 0, scope, 9, 0, 0, 0], &[])
    }

    fn route(protocol: u8) -> Vec<u8> {
        rtnl(
            RTM_NEWROUTE,
            0,
            &[AF_INET, 24, 0, 0, 254, protocol, 0, 1, 0, 0, 0, 0],
            &[],
        )
    }

    fn neighbour(kind: u16, family: u8, state: u16, destination: bool) -> Vec<u8> {
        let mut fixed = vec![family, 0, 0, 0, 9, 0, 0, 0];
        fixed.extend_from_slice(&state.to_ne_bytes());
        fixed.extend_from_slice(&[0, 0]);
        let dst: &[(u16, &[u8])] = if destination {
            &[(NDA_DST, &[192, 0, 2, 7])]
        } else {
            &[]
        };
        rtnl(
            kind,
            0,
            &fixed,
            &[&[(2u16, &[2u8, 0, 0, 0, 0, 1][..])][..], dst].concat(),
        )
    }

    #[test]
    fn route_notifications_count_only_what_may_be_weft_s() {
        const OWN: u32 = 4242;
        const PERMANENT: u16 = 0x80;
        const REACHABLE: u16 = 0x02;
        const STALE: u16 = 0x04;
        let mut filter = weft_route_changes(OWN);
        let mut relevant = |b: Vec<u8>| filter(Some(&b));
        // Links: always, unless the agent's own socket changed them.
        assert!(relevant(rtnl(RTM_NEWLINK, 0, &[0; 16], &[])));
        assert!(relevant(rtnl(RTM_NEWLINK, 77, &[0; 16], &[])));
        assert!(!relevant(rtnl(RTM_NEWLINK, OWN, &[0; 16], &[])));
        // Addresses, except IPv6 link-local ones.
        assert!(relevant(address(RTM_DELADDR, AF_INET, 0)));
        assert!(relevant(address(RTM_NEWADDR, AF_INET6, 0)));
        assert!(!relevant(address(RTM_NEWADDR, AF_INET6, RT_SCOPE_LINK)));
        // Routes: Weft's protocol only, not the kernel's prefix routes.
        assert!(relevant(route(crate::kernel::WEFT_RTPROT)));
        assert!(!relevant(route(2)));
        // Neighbours and FDB entries: static ones with a destination (and such an entry's
        // deletion, which reads FAILED); not what the kernel learns, not the bridge's local
        // entries.
        assert!(relevant(neighbour(
            RTM_NEWNEIGH,
            AF_BRIDGE,
            PERMANENT,
            true
        )));
        assert!(relevant(neighbour(
            RTM_DELNEIGH,
            AF_BRIDGE,
            PERMANENT,
            true
        )));
        assert!(relevant(neighbour(RTM_NEWNEIGH, AF_INET, PERMANENT, true)));
        assert!(relevant(neighbour(RTM_DELNEIGH, AF_INET, NUD_FAILED, true)));
        assert!(!relevant(neighbour(
            RTM_NEWNEIGH,
            AF_BRIDGE,
            REACHABLE,
            false
        )));
        assert!(!relevant(neighbour(
            RTM_NEWNEIGH,
            AF_BRIDGE,
            PERMANENT,
            false
        )));
        assert!(!relevant(neighbour(RTM_NEWNEIGH, AF_INET, STALE, true)));
        // One relevant message in a datagram is enough; an overrun always counts.
        assert!(relevant(
            [route(2), address(RTM_DELADDR, AF_INET, 0)].concat()
        ));
        assert!(!relevant([route(2), route(3)].concat()));
        assert!(filter(None));
    }

    #[tokio::test]
    async fn own_transactions_hand_over_the_handles_they_added() {
        let own = OwnNft::default();
        own.remember(42);
        let mut filter = weft_transactions(own.clone());
        let transaction = [
            weft_rule(NFPROTO_INET, "forward", "a1", 17),
            weft_rule(NFPROTO_BRIDGE, "forward", "b2", 4),
            rule("filter"),
        ]
        .concat();
        // Split over two datagrams, as a big transaction is.
        assert!(!filter(Some(&transaction)));
        assert!(!filter(Some(&newgen(42))));
        let added = own.added_by(42, 0).await.expect("handed over");
        assert_eq!(
            added,
            AddedRules::from([
                ((NftFamily::Inet, "forward".into(), "a1".into()), 17),
                ((NftFamily::Bridge, "forward".into(), "b2".into()), 4),
            ])
        );
        // Claimed once; a lost datagram ends the wait of a run still waiting.
        own.remember(43);
        assert!(filter(None));
        assert_eq!(own.added_by(43, 0).await, None);
        // Somebody else's rules are not handed to anyone.
        assert!(filter(Some(
            &[weft_rule(NFPROTO_INET, "forward", "x", 9), newgen(7)].concat()
        )));
        own.remember(44);
        assert!(!filter(Some(&newgen(44))));
        assert_eq!(own.added_by(44, 1).await, Some(AddedRules::new()));
    }
}
