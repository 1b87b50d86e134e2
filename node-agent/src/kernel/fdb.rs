//! FDB entries on owned VXLAN links, and permanent neighbour (ARP/NDP) entries.
//!
//! rtnetlink 0.24 has no FDB-append helper, so the `RTM_NEWNEIGH` is built here:
//! `AF_BRIDGE`, `NTF_SELF` (the VXLAN device's own table, not a bridge's), `NUD_PERMANENT`,
//! `NDA_LLADDR` + `NDA_DST`, with `NLM_F_APPEND` so several flood entries (all-zero MAC) to
//! different peers coexist instead of replacing one another. Only permanent entries that
//! carry `NDA_DST` are Weft's; the entries the kernel makes itself have no destination.

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::kernel::error::{KernelError, already_gone};
use crate::kernel::link::{LinkView, owned_index};
use crate::kernel::netlink::Netlink;
use crate::model::{FdbEntry, Mac, Neighbour};

struct RawNeighbour {
    index: u32,
    state: NeighbourState,
    ip: Option<IpAddr>,
    mac: Option<Mac>,
}

fn parse(msg: NeighbourMessage) -> RawNeighbour {
    let mut raw = RawNeighbour {
        index: msg.header.ifindex,
        state: msg.header.state,
        ip: None,
        mac: None,
    };
    for attr in msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                raw.ip = Some(IpAddr::V4(a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                raw.ip = Some(IpAddr::V6(a))
            }
            // In AF_BRIDGE messages the parser cannot know NDA_DST's family: go by length.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                raw.ip = match b.len() {
                    4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            NeighbourAttribute::LinkLayerAddress(l) => raw.mac = <Mac>::try_from(l.as_slice()).ok(),
            _ => {}
        }
    }
    raw
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn fdb_message(index: u32, e: &FdbEntry) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(e.dst)));
    msg
}

fn neighbour_message(index: u32, n: &Neighbour) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = match n.ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(n.ip)));
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
    msg
}

impl Netlink {
    async fn dump_neighbours(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<RawNeighbour>, KernelError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        self.query_map(
            RouteNetlinkMessage::GetNeighbour(msg),
            true,
            || {
                format!(
                    "list {} entries",
                    if family == AddressFamily::Bridge {
                        "FDB"
                    } else {
                        "neighbour"
                    }
                )
            },
            |m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Some(parse(n)),
                _ => None,
            },
        )
        .await
    }

    pub(crate) async fn observe_fdb(
        &self,
        view: &LinkView,
    ) -> Result<BTreeSet<FdbEntry>, KernelError> {
        let mut out = BTreeSet::new();
        for raw in self.dump_neighbours(AddressFamily::Bridge).await? {
            let (Some(link), Some(mac), Some(dst)) =
                (view.owned_vxlan_name(raw.index), raw.mac, raw.ip)
            else {
                continue;
            };
            if raw.state == NeighbourState::Permanent {
                out.insert(FdbEntry {
                    link: link.to_string(),
                    mac,
                    dst,
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn observe_neighbours(
        &self,
        view: &LinkView,
    ) -> Result<BTreeSet<Neighbour>, KernelError> {
        // One dump at a time per netlink socket (a concurrent second dump gets EBUSY).
        let v4 = self.dump_neighbours(AddressFamily::Inet).await;
        let v6 = self.dump_neighbours(AddressFamily::Inet6).await;
        let mut out = BTreeSet::new();
        for raw in v4?.into_iter().chain(v6?) {
            let (Some(link), Some(ip), Some(mac)) = (view.owned_name(raw.index), raw.ip, raw.mac)
            else {
                continue;
            };
            if raw.state == NeighbourState::Permanent {
                out.insert(Neighbour {
                    link: link.to_string(),
                    ip,
                    mac,
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn add_fdb(
        &self,
        e: &FdbEntry,
        view: &LinkView,
    ) -> (usize, Result<(), KernelError>) {
        // The flood (all-zero) and multicast MACs take several destinations: appended. A
        // unicast MAC has one: replaced, in one request, when it moves to another VTEP.
        let flags = if e.mac.is_unicast() {
            NLM_F_CREATE | NLM_F_REPLACE
        } else {
            NLM_F_CREATE | NLM_F_APPEND
        };
        let op = || format!("add fdb {} dst {} dev {}", e.mac, e.dst, e.link);
        let index = match owned_index(view, &e.link, op) {
            Ok(i) => i,
            Err(err) => return (0, Err(err)),
        };
        let r = self
            .ack(
                RouteNetlinkMessage::NewNeighbour(fdb_message(index, e)),
                flags,
                op,
            )
            .await;
        (1, r)
    }

    pub(crate) async fn delete_fdb(
        &self,
        e: &FdbEntry,
        view: &LinkView,
    ) -> (usize, Result<(), KernelError>) {
        let op = || format!("delete fdb {} dst {} dev {}", e.mac, e.dst, e.link);
        let index = match owned_index(view, &e.link, op) {
            Ok(i) => i,
            Err(KernelError::NoSuchLink { .. }) => return (0, Ok(())),
            Err(err) => return (0, Err(err)),
        };
        // With NDA_DST the kernel removes only that destination of the MAC's entry.
        match self
            .ack(
                RouteNetlinkMessage::DelNeighbour(fdb_message(index, e)),
                0,
                op,
            )
            .await
        {
            Err(err) if already_gone(&err) => (1, Ok(())),
            r => (1, r),
        }
    }

    pub(crate) async fn add_neighbour(
        &self,
        n: &Neighbour,
        view: &LinkView,
    ) -> (usize, Result<(), KernelError>) {
        let op = || format!("add neighbour {} lladdr {} dev {}", n.ip, n.mac, n.link);
        let index = match owned_index(view, &n.link, op) {
            Ok(i) => i,
            Err(err) => return (0, Err(err)),
        };
        // REPLACE: a learned (non-permanent) entry for the same address may already exist.
        let r = self
            .ack(
                RouteNetlinkMessage::NewNeighbour(neighbour_message(index, n)),
                NLM_F_CREATE | NLM_F_REPLACE,
                op,
            )
            .await;
        (1, r)
    }

    pub(crate) async fn delete_neighbour(
        &self,
        n: &Neighbour,
        view: &LinkView,
    ) -> (usize, Result<(), KernelError>) {
        let op = || format!("delete neighbour {} dev {}", n.ip, n.link);
        let index = match owned_index(view, &n.link, op) {
            Ok(i) => i,
            Err(KernelError::NoSuchLink { .. }) => return (0, Ok(())),
            Err(err) => return (0, Err(err)),
        };
        match self
            .ack(
                RouteNetlinkMessage::DelNeighbour(neighbour_message(index, n)),
                0,
                op,
            )
            .await
        {
            Err(err) if already_gone(&err) => (1, Ok(())),
            r => (1, r),
        }
    }
}
