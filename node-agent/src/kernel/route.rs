//! Routes in the main table marked with [`WEFT_RTPROT`], through owned links and, for
//! ipvlan L3's routes to other nodes' blocks, through a parent.
//!
//! The protocol mark is what makes a route Weft's: the kernel's own prefix routes on the
//! same links (`proto kernel`) and anything another daemon adds are never touched.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::kernel::changes::describe_route;
use crate::kernel::error::{KernelError, already_gone};
use crate::kernel::link::{LinkView, route_link_index};
use crate::kernel::netlink::{Netlink, WEFT_RTPROT};
use crate::model::Route;

/// One route as the kernel reports it (only what Weft looks at).
struct RawRoute {
    table: u32,
    protocol: u8,
    kind: RouteType,
    destination: Option<IpNet>,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    priority: u32,
}

/// A default route of the main table as found, whoever made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DefaultRoute {
    pub v4: bool,
    pub protocol: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub priority: u32,
}

impl DefaultRoute {
    /// Made by Weft (its protocol mark).
    pub fn is_weft(&self) -> bool {
        self.protocol == WEFT_RTPROT
    }
}

fn addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn parse(msg: RouteMessage) -> RawRoute {
    let family = msg.header.address_family;
    let len = msg.header.destination_prefix_length;
    let mut raw = RawRoute {
        table: u32::from(msg.header.table),
        protocol: u8::from(msg.header.protocol),
        kind: msg.header.kind,
        destination: None,
        gateway: None,
        oif: None,
        priority: 0,
    };
    for attr in msg.attributes {
        match attr {
            RouteAttribute::Table(t) => raw.table = t,
            RouteAttribute::Destination(d) => {
                raw.destination = addr(&d).and_then(|ip| IpNet::new(ip, len).ok())
            }
            RouteAttribute::Gateway(g) => raw.gateway = addr(&g),
            RouteAttribute::Oif(o) => raw.oif = Some(o),
            RouteAttribute::Priority(p) => raw.priority = p,
            _ => {}
        }
    }
    if raw.destination.is_none() && len == 0 {
        // A default route carries no RTA_DST.
        raw.destination = match family {
            AddressFamily::Inet => "0.0.0.0/0".parse().ok(),
            AddressFamily::Inet6 => "::/0".parse().ok(),
            _ => None,
        };
    }
    raw
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// The message for adding (`scope` = link or universe) or deleting (`scope` = nowhere,
/// which matches any) one of Weft's routes.
fn message(r: &Route, index: u32, scope: RouteScope) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match r.destination {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = r.destination.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(WEFT_RTPROT);
    msg.header.scope = scope;
    msg.header.kind = RouteType::Unicast;
    if r.destination.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(route_address(
                r.destination.network(),
            )));
    }
    if let Some(g) = r.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(route_address(g)));
    }
    msg.attributes.push(RouteAttribute::Oif(index));
    msg
}

impl Netlink {
    /// The main table's routes of `family`; only Weft's when `weft_only` (filtered by the
    /// kernel: the socket checks strictly, see `connect`).
    async fn dump_routes(
        &self,
        family: AddressFamily,
        weft_only: bool,
    ) -> Result<Vec<RawRoute>, KernelError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        if weft_only {
            msg.header.protocol = RouteProtocol::from(WEFT_RTPROT);
        }
        self.query_map(
            RouteNetlinkMessage::GetRoute(msg),
            true,
            || "list routes".into(),
            |m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(parse(r)),
                _ => None,
            },
        )
        .await
    }

    pub(crate) async fn observe_routes(
        &self,
        view: &LinkView,
    ) -> Result<BTreeSet<Route>, KernelError> {
        // One dump at a time per netlink socket (a concurrent second dump gets EBUSY).
        let v4 = self.dump_routes(AddressFamily::Inet, true).await;
        let v6 = self.dump_routes(AddressFamily::Inet6, true).await;
        let mut out = BTreeSet::new();
        for raw in v4?.into_iter().chain(v6?) {
            // Checked again here: a kernel without strict checking sends every route.
            if raw.table != u32::from(RouteHeader::RT_TABLE_MAIN)
                || raw.protocol != WEFT_RTPROT
                || raw.kind != RouteType::Unicast
            {
                continue;
            }
            let (Some(dst), Some(link)) = (raw.destination, raw.oif.and_then(|o| view.name_of(o)))
            else {
                continue;
            };
            out.insert(Route {
                destination: dst,
                link: link.to_string(),
                gateway: raw.gateway,
            });
        }
        Ok(out)
    }

    /// Output interface of the lowest-metric IPv4 default route in the main table.
    pub(crate) async fn default_route_oif(&self) -> Result<Option<u32>, KernelError> {
        let routes = self.dump_routes(AddressFamily::Inet, false).await?;
        Ok(routes
            .into_iter()
            .filter(|r| {
                r.table == u32::from(RouteHeader::RT_TABLE_MAIN)
                    && r.kind == RouteType::Unicast
                    && r.destination.is_some_and(|d| d.prefix_len() == 0)
                    && r.oif.is_some()
            })
            .min_by_key(|r| r.priority)
            .and_then(|r| r.oif))
    }

    /// The main table's default routes of one family, whoever made them (a sandbox's
    /// default route is one per family: Weft must see the others before adding its own).
    pub(crate) async fn default_routes(&self, v4: bool) -> Result<Vec<DefaultRoute>, KernelError> {
        let family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let routes = self.dump_routes(family, false).await?;
        Ok(routes
            .into_iter()
            .filter(|r| {
                r.table == u32::from(RouteHeader::RT_TABLE_MAIN)
                    && r.kind == RouteType::Unicast
                    && r.destination.is_some_and(|d| d.prefix_len() == 0)
            })
            .map(|r| DefaultRoute {
                v4,
                protocol: r.protocol,
                gateway: r.gateway,
                oif: r.oif,
                priority: r.priority,
            })
            .collect())
    }

    /// Delete exactly this default route (its protocol, gateway, device and metric).
    pub(crate) async fn delete_default_route(&self, r: &DefaultRoute) -> Result<(), KernelError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if r.v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::from(r.protocol);
        msg.header.scope = RouteScope::NoWhere;
        msg.header.kind = RouteType::Unicast;
        if let Some(g) = r.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(route_address(g)));
        }
        if let Some(o) = r.oif {
            msg.attributes.push(RouteAttribute::Oif(o));
        }
        msg.attributes.push(RouteAttribute::Priority(r.priority));
        let family = if r.v4 { "0.0.0.0/0" } else { "::/0" };
        match self
            .ack(RouteNetlinkMessage::DelRoute(msg), 0, || {
                format!("delete default route {family} (protocol {})", r.protocol)
            })
            .await
        {
            Err(e) if already_gone(&e) => Ok(()),
            res => res,
        }
    }

    /// Add `r`, or with `replace`, make the main table's route of its destination (and
    /// metric) this one in one request (the diff asks for that only where it observed a
    /// route of Weft's there).
    pub(crate) async fn add_route(
        &self,
        r: &Route,
        view: &LinkView,
        replace: bool,
    ) -> (usize, Result<(), KernelError>) {
        let verb = if replace { "replace" } else { "add" };
        let op = || format!("{verb} route {}", describe_route(r));
        let index = match route_link_index(view, &r.link, op) {
            Ok(i) => i,
            Err(e) => return (0, Err(e)),
        };
        let scope = if r.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        // EXCL, not REPLACE, for an addition: an equal route that is not Weft's must not be
        // taken over.
        let flags = if replace {
            NLM_F_CREATE | NLM_F_REPLACE
        } else {
            NLM_F_CREATE | NLM_F_EXCL
        };
        let res = self
            .ack(
                RouteNetlinkMessage::NewRoute(message(r, index, scope)),
                flags,
                op,
            )
            .await;
        (1, res)
    }

    pub(crate) async fn delete_route(
        &self,
        r: &Route,
        view: &LinkView,
    ) -> (usize, Result<(), KernelError>) {
        let op = || format!("delete route {}", describe_route(r));
        let index = match route_link_index(view, &r.link, op) {
            Ok(i) => i,
            Err(KernelError::NoSuchLink { .. }) => return (0, Ok(())),
            Err(e) => return (0, Err(e)),
        };
        // The protocol in the request makes the kernel delete only a route carrying it.
        match self
            .ack(
                RouteNetlinkMessage::DelRoute(message(r, index, RouteScope::NoWhere)),
                0,
                op,
            )
            .await
        {
            Err(e) if already_gone(&e) => (1, Ok(())),
            res => (1, res),
        }
    }
}
