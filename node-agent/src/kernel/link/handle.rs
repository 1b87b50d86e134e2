//! Writing links (create in up to three writes, set in place, delete) and dumping them.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoVeth, InfoVlan, InfoVxlan, IpVlanMode,
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};

use crate::kernel::error::{KernelError, already_gone, netlink_error};
use crate::kernel::netlink::Netlink;
use crate::kernel::netns;
use crate::model::{ALIAS_PREFIX, IpvlanMode, Link, LinkKind, Mac, MacvlanMode};

use crate::kernel::link::view::RawLink;

pub(crate) fn macvlan_mode(m: MacvlanMode) -> MacVlanMode {
    match m {
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

pub(crate) fn ipvlan_mode(m: IpvlanMode) -> IpVlanMode {
    match m {
        IpvlanMode::L2 => IpVlanMode::L2,
        IpvlanMode::L3 => IpVlanMode::L3,
        IpvlanMode::L3s => IpVlanMode::L3S,
    }
}

/// The rtnetlink kind name of a model kind (for messages).
pub(crate) fn kind_word(kind: &LinkKind) -> &'static str {
    match kind {
        LinkKind::Bridge => "bridge",
        LinkKind::Vxlan { .. } => "vxlan",
        LinkKind::Macvlan { .. } => "macvlan",
        LinkKind::Ipvlan { .. } => "ipvlan",
        LinkKind::Vlan { .. } => "802.1q vlan",
        LinkKind::Veth { .. } => "veth",
        LinkKind::Wireguard => "wireguard",
    }
}

/// A `RTM_SETLINK` for an existing link: only the given fields change.
fn set_message(
    index: u32,
    mtu: Option<u32>,
    master: Option<Option<u32>>,
    up: Option<bool>,
    alias: Option<&str>,
    mac: Option<Mac>,
) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if let Some(up) = up {
        if up {
            msg.header.flags |= LinkFlags::Up;
        }
        msg.header.change_mask |= LinkFlags::Up;
    }
    if let Some(a) = alias {
        msg.attributes.push(LinkAttribute::IfAlias(a.to_string()));
    }
    if let Some(m) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(m));
    }
    if let Some(m) = mac {
        msg.attributes.push(LinkAttribute::Address(m.to_vec()));
    }
    if let Some(m) = master {
        msg.attributes
            .push(LinkAttribute::Controller(m.unwrap_or(0)));
    }
    msg
}

impl Netlink {
    /// Every link in the namespace. The dump runs on a socket of its own, read one datagram
    /// and parsed one message at a time: through the shared connection, netlink-proto would
    /// decode the whole dump ahead of the reader, and a full `LinkMessage` is ~13 KB — with a
    /// thousand bridges that queue was most of the agent's peak memory.
    pub(crate) async fn dump_links(&self) -> Result<Vec<RawLink>, KernelError> {
        netns::run_in(self.netns(), dump_links_here).await
    }

    /// One link by name; `None` if there is none.
    pub(crate) async fn get_link(&self, name: &str) -> Result<Option<RawLink>, KernelError> {
        if name.is_empty() || name.len() > 15 {
            return Ok(None);
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self
            .query(RouteNetlinkMessage::GetLink(msg), false, || {
                format!("look up link {name}")
            })
            .await
        {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(RawLink::parse(l)),
                _ => None,
            })),
            Err(e) if already_gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn index_of(&self, name: &str, op: impl Fn() -> String) -> Result<u32, KernelError> {
        match self.get_link(name).await? {
            Some(raw) => Ok(raw.index),
            None => Err(KernelError::NoSuchLink {
                op: op(),
                name: name.to_string(),
            }),
        }
    }

    /// Create a link and make it Weft's. Returns the number of writes sent.
    pub(crate) async fn create_link(&self, link: &Link) -> (usize, Result<(), KernelError>) {
        let op = || format!("create {} {}", kind_word(&link.kind), link.name);
        if !link.alias.starts_with(ALIAS_PREFIX) {
            return (
                0,
                Err(KernelError::Invalid(format!(
                    "{}: alias {:?} does not mark it as Weft's",
                    op(),
                    link.alias
                ))),
            );
        }
        if link.name.is_empty() || link.name.len() > 15 || link.name.contains(['/', ' ', ':']) {
            return (
                0,
                Err(KernelError::Invalid(format!(
                    "{}: {:?} is not a valid interface name",
                    op(),
                    link.name
                ))),
            );
        }
        // Resolve the master first: failing after the creation would leave a link that is
        // not marked as Weft's yet.
        let master = match &link.master {
            Some(m) => match self.index_of(m, op).await {
                Ok(i) => Some(Some(i)),
                Err(e) => return (0, Err(e)),
            },
            None => None,
        };
        let existing = match self.get_link(&link.name).await {
            Ok(e) => e,
            Err(e) => return (0, Err(e)),
        };
        if let Some(raw) = existing {
            // Already there: fine if it is ours, or if it is the still unmarked far end of
            // a veth pair Weft just created through its owned peer. Then bring it in line.
            let adoptable = raw.owned()
                || (matches!(raw.kind, Some(InfoKind::Veth))
                    && raw.link_netnsid.is_none()
                    && match (&link.kind, raw.link) {
                        (LinkKind::Veth { peer }, Some(peer_index)) => {
                            matches!(self.get_link(peer).await, Ok(Some(p)) if p.index == peer_index && p.owned())
                        }
                        _ => false,
                    });
            if !adoptable {
                return (
                    0,
                    Err(KernelError::Invalid(format!(
                        "{}: a link with that name already exists and is not Weft's; refusing to take it over",
                        op()
                    ))),
                );
            }
            let msg = set_message(
                raw.index,
                link.mtu,
                master,
                Some(link.up),
                Some(&link.alias),
                link.mac,
            );
            let r = self.ack(RouteNetlinkMessage::SetLink(msg), 0, op).await;
            return (1, r);
        }

        // 1. The link itself, with everything the kernel takes at creation (an invalid MAC
        //    or MTU fails here, before anything exists).
        let msg = match self.create_message(link, &op).await {
            Ok(m) => m,
            Err(e) => return (0, Err(e)),
        };
        if let Err(e) = self
            .ack(
                RouteNetlinkMessage::NewLink(msg),
                NLM_F_CREATE | NLM_F_EXCL,
                op,
            )
            .await
        {
            let e = match e {
                KernelError::Netlink {
                    errno: libc::EOPNOTSUPP,
                    ..
                } => KernelError::Netlink {
                    op: op(),
                    errno: libc::EOPNOTSUPP,
                    message: format!(
                        "this kernel has no {} support (Unknown device type)",
                        kind_word(&link.kind)
                    ),
                },
                other => other,
            };
            return (1, Err(e));
        }
        // 2. The alias alone, right away: it cannot fail for a reason of its own, and from
        //    then on the link is Weft's (garbage-collectable) whatever happens next.
        let index = match self.index_of(&link.name, op).await {
            Ok(i) => i,
            Err(e) => return (1, Err(e)),
        };
        let msg = set_message(index, None, None, None, Some(&link.alias), None);
        if let Err(e) = self
            .ack(RouteNetlinkMessage::SetLink(msg), 0, || {
                format!("{} (set alias)", op())
            })
            .await
        {
            return (2, Err(e));
        }
        // 3. Master, up, and a bridge's MTU (see `create_message`), when there is any.
        let mtu = link.mtu.filter(|_| matches!(link.kind, LinkKind::Bridge));
        let up = link.up.then_some(true);
        if mtu.is_none() && master.is_none() && up.is_none() {
            return (2, Ok(()));
        }
        let msg = set_message(index, mtu, master, up, None, None);
        let r = self
            .ack(RouteNetlinkMessage::SetLink(msg), 0, || {
                format!("{} (set master, up, mtu)", op())
            })
            .await;
        (3, r)
    }

    async fn create_message(
        &self,
        link: &Link,
        op: &impl Fn() -> String,
    ) -> Result<LinkMessage, KernelError> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(link.name.clone()));
        // A bridge's MTU goes in the follow-up set instead: only an MTU set through
        // ndo_change_mtu marks it as chosen by the user, which stops the bridge from
        // lowering it to its smallest port's MTU whenever a port joins.
        if let Some(m) = link.mtu.filter(|_| !matches!(link.kind, LinkKind::Bridge)) {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        if let Some(m) = link.mac {
            msg.attributes.push(LinkAttribute::Address(m.to_vec()));
        }
        let (kind, data, lower) = match &link.kind {
            LinkKind::Bridge => (InfoKind::Bridge, None, None),
            LinkKind::Vxlan {
                vni,
                port,
                local,
                underlay,
                learning,
                proxy,
            } => {
                let mut d = vec![
                    InfoVxlan::Id(*vni),
                    InfoVxlan::Port(*port),
                    InfoVxlan::Learning(*learning),
                    InfoVxlan::Proxy(*proxy),
                ];
                match local {
                    IpAddr::V4(a) => d.push(InfoVxlan::Local(*a)),
                    IpAddr::V6(a) => d.push(InfoVxlan::Local6(*a)),
                }
                if let Some(u) = underlay {
                    d.push(InfoVxlan::Link(self.index_of(u, op).await?));
                }
                (InfoKind::Vxlan, Some(InfoData::Vxlan(d)), None)
            }
            LinkKind::Macvlan { parent, mode } => (
                InfoKind::MacVlan,
                Some(InfoData::MacVlan(vec![InfoMacVlan::Mode(macvlan_mode(
                    *mode,
                ))])),
                Some(self.index_of(parent, op).await?),
            ),
            LinkKind::Ipvlan { parent, mode } => (
                InfoKind::IpVlan,
                Some(InfoData::IpVlan(vec![InfoIpVlan::Mode(ipvlan_mode(*mode))])),
                Some(self.index_of(parent, op).await?),
            ),
            LinkKind::Vlan { parent, id } => (
                InfoKind::Vlan,
                Some(InfoData::Vlan(vec![InfoVlan::Id(*id)])),
                Some(self.index_of(parent, op).await?),
            ),
            LinkKind::Wireguard => (InfoKind::Wireguard, None, None),
            LinkKind::Veth { peer } => {
                let mut p = LinkMessage::default();
                p.attributes.push(LinkAttribute::IfName(peer.clone()));
                (
                    InfoKind::Veth,
                    Some(InfoData::Veth(InfoVeth::Peer(p))),
                    None,
                )
            }
        };
        if let Some(l) = lower {
            msg.attributes.push(LinkAttribute::Link(l));
        }
        let mut info = vec![LinkInfo::Kind(kind)];
        if let Some(d) = data {
            info.push(LinkInfo::Data(d));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        Ok(msg)
    }

    /// Look a link up and make sure it is Weft's before writing to it.
    async fn owned_link(&self, name: &str) -> Result<Option<RawLink>, KernelError> {
        match self.get_link(name).await? {
            None => Ok(None),
            Some(raw) if !raw.owned() => Err(KernelError::NotOwned(name.to_string())),
            Some(raw) => Ok(Some(raw)),
        }
    }

    /// Delete an owned link; one that is already gone counts as deleted.
    pub(crate) async fn delete_link(&self, name: &str) -> (usize, Result<(), KernelError>) {
        let op = || format!("delete link {name}");
        let raw = match self.owned_link(name).await {
            Ok(Some(raw)) => raw,
            Ok(None) => return (0, Ok(())),
            Err(e) => return (0, Err(e)),
        };
        let mut msg = LinkMessage::default();
        msg.header.index = raw.index;
        match self.ack(RouteNetlinkMessage::DelLink(msg), 0, op).await {
            Err(e) if already_gone(&e) => (1, Ok(())),
            r => (1, r),
        }
    }

    /// Change an owned link in place.
    pub(crate) async fn set_link(
        &self,
        name: &str,
        mtu: Option<u32>,
        master: Option<Option<&str>>,
        up: Option<bool>,
        alias: Option<&str>,
        mac: Option<Mac>,
    ) -> (usize, Result<(), KernelError>) {
        let op = || format!("set link {name}");
        if let Some(a) = alias
            && !a.starts_with(ALIAS_PREFIX)
        {
            return (
                0,
                Err(KernelError::Invalid(format!(
                    "{}: alias {a:?} would give the link away",
                    op()
                ))),
            );
        }
        let raw = match self.owned_link(name).await {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                return (
                    0,
                    Err(KernelError::NoSuchLink {
                        op: op(),
                        name: name.to_string(),
                    }),
                );
            }
            Err(e) => return (0, Err(e)),
        };
        let master = match master {
            Some(Some(m)) => match self.index_of(m, op).await {
                Ok(i) => Some(Some(i)),
                Err(e) => return (0, Err(e)),
            },
            Some(None) => Some(None),
            None => None,
        };
        let msg = set_message(raw.index, mtu, master, up, alias, mac);
        (1, self.ack(RouteNetlinkMessage::SetLink(msg), 0, op).await)
    }
}

/// Dump the links of the calling thread's network namespace (see [`Netlink::dump_links`]).
fn dump_links_here() -> Result<Vec<RawLink>, KernelError> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
    use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

    let mut socket = Socket::new(NETLINK_ROUTE).map_err(KernelError::socket)?;
    socket.bind_auto().map_err(KernelError::socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(KernelError::socket)?;
    // Statistics are most of each link message and Weft reads none of them (as `ip link`).
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(request));
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut out_buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out_buf);
    socket.send(&out_buf, 0).map_err(KernelError::socket)?;

    let mut links = Vec::new();
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(KernelError::socket)?;
        let mut rest = &buf[..n];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len < 16 || len > rest.len() {
                return Err(KernelError::Unexpected(format!(
                    "link dump: bad message length {len}"
                )));
            }
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
                .map_err(|e| KernelError::Unexpected(format!("link dump: {e}")))?;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(links),
                NetlinkPayload::Error(err) if err.code.is_some() => {
                    return Err(netlink_error("list links".into(), &err));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    links.push(RawLink::parse(l))
                }
                _ => {}
            }
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        }
    }
}
