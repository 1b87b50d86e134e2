//! Reading links back: one [`RawLink`] per link the kernel reports, and a [`LinkView`] of a
//! whole dump that turns Weft's own into model [`Link`]s (pure: no I/O here).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoPortData, InfoVlan, InfoVxlan,
    IpVlanMode, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};

use crate::kernel::error::KernelError;
use crate::model::{ALIAS_PREFIX, IpvlanMode, Link, LinkKind, Mac, MacvlanMode};

/// One link as the kernel reports it, owned or not.
#[derive(Clone, Debug)]
pub(crate) struct RawLink {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub mac: Option<Mac>,
    pub master: Option<u32>,
    /// `IFLA_LINK`: the parent (macvlan, ipvlan, vlan) or the veth peer.
    pub link: Option<u32>,
    /// Set when `link` lives in another namespace (then the index means nothing here).
    pub link_netnsid: Option<i32>,
    pub kind: Option<InfoKind>,
    pub data: Option<InfoData>,
    /// Bridge port hairpin mode, when the link is a bridge port.
    pub hairpin: Option<bool>,
    /// `IFLA_GROUP` (0 unless someone set it).
    pub group: u32,
}

impl RawLink {
    pub(crate) fn parse(msg: LinkMessage) -> RawLink {
        let mut raw = RawLink {
            index: msg.header.index,
            name: String::new(),
            alias: None,
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            mac: None,
            master: None,
            link: None,
            link_netnsid: None,
            kind: None,
            data: None,
            hairpin: None,
            group: 0,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => raw.name = n,
                LinkAttribute::IfAlias(a) => raw.alias = Some(a),
                LinkAttribute::Mtu(m) => raw.mtu = Some(m),
                LinkAttribute::Address(a) => raw.mac = <Mac>::try_from(a.as_slice()).ok(),
                LinkAttribute::Controller(m) if m != 0 => raw.master = Some(m),
                LinkAttribute::Link(l) if l != 0 => raw.link = Some(l),
                LinkAttribute::LinkNetNsId(id) => raw.link_netnsid = Some(id),
                LinkAttribute::Group(g) => raw.group = g,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => raw.kind = Some(k),
                            // Only the kinds whose data Weft reads: a bridge's ~40
                            // attributes, kept for every bridge of a node with a thousand
                            // networks, were the agent's biggest allocation at start.
                            LinkInfo::Data(
                                d @ (InfoData::Vxlan(_)
                                | InfoData::MacVlan(_)
                                | InfoData::IpVlan(_)
                                | InfoData::Vlan(_)),
                            ) => raw.data = Some(d),
                            LinkInfo::PortData(InfoPortData::BridgePort(opts)) => {
                                raw.hairpin = opts.iter().find_map(|o| match o {
                                    InfoBridgePort::HairpinMode(h) => Some(*h),
                                    _ => None,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        raw
    }

    /// Weft's iff its alias carries the prefix.
    pub fn owned(&self) -> bool {
        self.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
    }

    pub fn kind_name(&self) -> Option<String> {
        self.kind.as_ref().map(|k| k.to_string())
    }

    fn is_vxlan(&self) -> bool {
        matches!(self.kind, Some(InfoKind::Vxlan))
    }
}

/// All links of the namespace, indexed both ways.
pub(crate) struct LinkView {
    by_index: HashMap<u32, RawLink>,
    by_name: HashMap<String, u32>,
}

impl LinkView {
    pub fn new(raws: Vec<RawLink>) -> LinkView {
        LinkView {
            by_name: raws.iter().map(|r| (r.name.clone(), r.index)).collect(),
            by_index: raws.into_iter().map(|r| (r.index, r)).collect(),
        }
    }

    /// The names of all links.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn by_name(&self, name: &str) -> Option<&RawLink> {
        self.by_name.get(name).and_then(|i| self.by_index.get(i))
    }

    pub fn name_of(&self, index: u32) -> Option<&str> {
        self.by_index.get(&index).map(|r| r.name.as_str())
    }

    /// Name of an owned link with this index.
    pub fn owned_name(&self, index: u32) -> Option<&str> {
        self.by_index
            .get(&index)
            .filter(|r| r.owned())
            .map(|r| r.name.as_str())
    }

    /// Name of an owned VXLAN link with this index.
    pub fn owned_vxlan_name(&self, index: u32) -> Option<&str> {
        self.by_index
            .get(&index)
            .filter(|r| r.owned() && r.is_vxlan())
            .map(|r| r.name.as_str())
    }

    /// The owned links as the model sees them. An owned link of a kind the model has no
    /// word for is left out (and logged): Weft never creates such links.
    pub fn owned_links(&self) -> BTreeMap<String, Link> {
        let mut out = BTreeMap::new();
        for raw in self.by_index.values().filter(|r| r.owned()) {
            match self.model_kind(raw) {
                Some(kind) => {
                    out.insert(
                        raw.name.clone(),
                        Link {
                            name: raw.name.clone(),
                            alias: raw.alias.clone().unwrap_or_default(),
                            kind,
                            mtu: raw.mtu,
                            master: raw.master.and_then(|m| self.name_of(m)).map(str::to_string),
                            up: raw.up,
                            mac: raw.mac,
                        },
                    );
                }
                None => tracing::warn!(
                    link = %raw.name,
                    kind = ?raw.kind,
                    "link carries a Weft alias but has a kind Weft does not manage; ignoring it"
                ),
            }
        }
        out
    }

    /// Name of the `IFLA_LINK` target when it is in this namespace; `""` when unknown.
    fn lower_name(&self, raw: &RawLink) -> String {
        match (raw.link, raw.link_netnsid) {
            (Some(i), None) => self.name_of(i).unwrap_or_default().to_string(),
            _ => String::new(),
        }
    }

    fn model_kind(&self, raw: &RawLink) -> Option<LinkKind> {
        Some(match raw.kind.as_ref()? {
            InfoKind::Bridge => LinkKind::Bridge,
            InfoKind::Vxlan => {
                let mut vni = 0;
                let mut port = 0;
                let mut local = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
                let mut underlay = None;
                let mut learning = true;
                let mut proxy = false;
                if let Some(InfoData::Vxlan(infos)) = &raw.data {
                    for info in infos {
                        match info {
                            InfoVxlan::Id(v) => vni = *v,
                            InfoVxlan::Port(p) => port = *p,
                            InfoVxlan::Local(a) => local = IpAddr::V4(*a),
                            InfoVxlan::Local6(a) => local = IpAddr::V6(*a),
                            InfoVxlan::Link(i) if *i != 0 => {
                                underlay = Some(self.name_of(*i).unwrap_or_default().to_string())
                            }
                            InfoVxlan::Learning(l) => learning = *l,
                            InfoVxlan::Proxy(p) => proxy = *p,
                            _ => {}
                        }
                    }
                }
                LinkKind::Vxlan {
                    vni,
                    port,
                    local,
                    underlay,
                    learning,
                    proxy,
                }
            }
            InfoKind::MacVlan => {
                let mut mode = None;
                if let Some(InfoData::MacVlan(infos)) = &raw.data {
                    for info in infos {
                        if let InfoMacVlan::Mode(m) = info {
                            mode = match m {
                                MacVlanMode::Private => Some(MacvlanMode::Private),
                                MacVlanMode::Vepa => Some(MacvlanMode::Vepa),
                                MacVlanMode::Bridge => Some(MacvlanMode::Bridge),
                                MacVlanMode::Passthrough => Some(MacvlanMode::Passthru),
                                _ => None,
                            };
                        }
                    }
                }
                LinkKind::Macvlan {
                    parent: self.lower_name(raw),
                    mode: mode?,
                }
            }
            InfoKind::IpVlan => {
                let mut mode = None;
                if let Some(InfoData::IpVlan(infos)) = &raw.data {
                    for info in infos {
                        if let InfoIpVlan::Mode(m) = info {
                            mode = match m {
                                IpVlanMode::L2 => Some(IpvlanMode::L2),
                                IpVlanMode::L3 => Some(IpvlanMode::L3),
                                IpVlanMode::L3S => Some(IpvlanMode::L3s),
                                _ => None,
                            };
                        }
                    }
                }
                LinkKind::Ipvlan {
                    parent: self.lower_name(raw),
                    mode: mode?,
                }
            }
            InfoKind::Vlan => {
                let mut id = None;
                if let Some(InfoData::Vlan(infos)) = &raw.data {
                    for info in infos {
                        if let InfoVlan::Id(v) = info {
                            id = Some(*v);
                        }
                    }
                }
                LinkKind::Vlan {
                    parent: self.lower_name(raw),
                    id: id?,
                }
            }
            // The kernel reports the peer only by index; across namespaces its name is not
            // knowable from here, which `""` says (the diff treats it as "any peer").
            InfoKind::Wireguard => LinkKind::Wireguard,
            InfoKind::Veth => LinkKind::Veth {
                peer: self.lower_name(raw),
            },
            _ => return None,
        })
    }
}

/// Index of an owned link, or why an item on it must not be touched.
/// Index of link `name`, owned or not: for routes, whose owner mark is their protocol
/// ([`crate::kernel::WEFT_RTPROT`]), not their link (ipvlan L3 routes to other nodes' blocks
/// go through the parent, which is never Weft's).
pub(crate) fn route_link_index(
    view: &LinkView,
    name: &str,
    op: impl FnOnce() -> String,
) -> Result<u32, KernelError> {
    view.by_name(name)
        .map(|raw| raw.index)
        .ok_or_else(|| KernelError::NoSuchLink {
            op: op(),
            name: name.to_string(),
        })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(index: u32, name: &str, alias: Option<&str>) -> RawLink {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(a) = alias {
            msg.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        RawLink::parse(msg)
    }

    /// An item is written only on a link that is there and Weft's; the error says which and
    /// names the operation once.
    #[test]
    fn items_go_only_on_owned_links() {
        let view = LinkView::new(vec![
            raw(3, "wfb-a", Some("weft:net-a")),
            raw(4, "eth0", None),
            raw(5, "br-x", Some("docker")),
        ]);
        let op = || "add route 10.1.0.0/24 dev x".to_string();
        assert_eq!(owned_index(&view, "wfb-a", op).ok(), Some(3));
        for foreign in ["eth0", "br-x"] {
            assert!(matches!(
                owned_index(&view, foreign, op),
                Err(KernelError::NotOwned(n)) if n == foreign
            ));
        }
        let missing = owned_index(&view, "wfb-gone", op).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "add route 10.1.0.0/24 dev x: no interface named \"wfb-gone\""
        );
        let names: Vec<&str> = view.names().collect();
        assert_eq!(names.len(), 3);
        assert_eq!(view.name_of(4), Some("eth0"));
        assert_eq!(view.owned_name(4), None);
        assert_eq!(view.owned_name(3), Some("wfb-a"));
    }
}
