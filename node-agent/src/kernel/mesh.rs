//! Effects of the routing mesh ([`crate::services::mesh`]) in one namespace: the `ip
//! weft-mesh` nft table, one /32 route per remote service endpoint in routing table
//! [`MESH_TABLE`] (`proto` Weft's), and the one rule that looks that table up.
//!
//! The writer remembers what it last wrote; its first apply replaces the table whole, and
//! removes the routes of the table it does not want (left by an earlier agent).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::kernel::error::{KernelError, already_gone};
use crate::kernel::netlink::{Netlink, WEFT_RTPROT};
use crate::kernel::nft::run_program;
use crate::services::mesh::{self, Mesh};

/// The routing table of the mesh routes: 87 (0x57, Weft's route protocol number). It holds
/// only /32 routes of remote service endpoints; a packet to anything else finds no route
/// there and goes on to `main`.
pub const MESH_TABLE: u8 = 0x57;

/// The rule's priority: before `main` (32766).
pub const MESH_RULE_PRIORITY: u32 = 32_000;

fn route(dst: Ipv4Addr, via: Option<Ipv4Addr>) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 32;
    msg.header.table = MESH_TABLE;
    msg.header.protocol = RouteProtocol::from(WEFT_RTPROT);
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    match via {
        Some(via) => {
            msg.header.scope = RouteScope::Universe;
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
        }
        // A deletion matches any scope.
        None => msg.header.scope = RouteScope::NoWhere,
    }
    msg
}

fn rule() -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.table = MESH_TABLE;
    msg.header.action = RuleAction::ToTable;
    msg.attributes
        .push(RuleAttribute::Priority(MESH_RULE_PRIORITY));
    msg.attributes
        .push(RuleAttribute::Table(u32::from(MESH_TABLE)));
    msg.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(WEFT_RTPROT)));
    msg
}

/// The mesh of one namespace.
pub struct MeshDataplane {
    ns: Option<PathBuf>,
    netlink: Netlink,
    /// What the kernel holds, as far as this writer knows (`None`: not written yet).
    applied: Option<Mesh>,
}

impl MeshDataplane {
    pub async fn open(ns: Option<&Path>) -> Result<Self, KernelError> {
        Ok(MeshDataplane {
            ns: ns.map(Path::to_path_buf),
            netlink: Netlink::open(ns).await?,
            applied: None,
        })
    }

    /// Make the kernel hold `desired`; returns the number of writes (0: nothing changed).
    pub async fn apply(&mut self, desired: &Mesh) -> Result<usize, KernelError> {
        let mut writes = 0;
        let old_routes = match &self.applied {
            Some(old) => old.routes.clone(),
            None => self.routes_in_table().await?,
        };
        if !desired.routes.is_empty() && (self.applied.is_none() || old_routes.is_empty()) {
            match self
                .netlink
                .ack(
                    RouteNetlinkMessage::NewRule(rule()),
                    NLM_F_CREATE | NLM_F_EXCL,
                    || "add the mesh's routing rule".into(),
                )
                .await
            {
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                res => res?,
            }
            writes += 1;
        }
        for (dst, via) in &desired.routes {
            if old_routes.get(dst) != Some(via) {
                self.netlink
                    .ack(
                        RouteNetlinkMessage::NewRoute(route(*dst, Some(*via))),
                        NLM_F_CREATE | NLM_F_REPLACE,
                        || format!("add mesh route {dst} via {via}"),
                    )
                    .await?;
                writes += 1;
            }
        }
        let script = match &self.applied {
            Some(old) => mesh::update(old, desired),
            None => mesh::full(desired),
        };
        if !script.is_empty() {
            let out = run_program(self.ns.as_deref(), &["-f", "-"], Some(&script), None).await?;
            if !out.ok {
                self.applied = None;
                return Err(KernelError::Nft(format!("mesh table: {}", out.stderr)));
            }
            writes += 1;
        }
        for dst in old_routes
            .keys()
            .filter(|d| !desired.routes.contains_key(d))
        {
            match self
                .netlink
                .ack(RouteNetlinkMessage::DelRoute(route(*dst, None)), 0, || {
                    format!("delete mesh route {dst}")
                })
                .await
            {
                Err(e) if already_gone(&e) => {}
                res => res?,
            }
            writes += 1;
        }
        if desired.routes.is_empty() && (self.applied.is_none() || !old_routes.is_empty()) {
            match self
                .netlink
                .ack(RouteNetlinkMessage::DelRule(rule()), 0, || {
                    "delete the mesh's routing rule".into()
                })
                .await
            {
                Err(e) if already_gone(&e) => {}
                Ok(()) => writes += 1,
                res => res?,
            }
        }
        self.applied = Some(desired.clone());
        Ok(writes)
    }

    /// The routes of [`MESH_TABLE`], as an earlier writer left them.
    async fn routes_in_table(&self) -> Result<BTreeMap<Ipv4Addr, Ipv4Addr>, KernelError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        req.header.table = MESH_TABLE;
        let found = self
            .netlink
            .query_map(
                RouteNetlinkMessage::GetRoute(req),
                true,
                || "list mesh routes".into(),
                |m| match m {
                    RouteNetlinkMessage::NewRoute(r) if r.header.table == MESH_TABLE => {
                        let mut dst = None;
                        let mut via = None;
                        for a in r.attributes {
                            match a {
                                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(d),
                                RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(g),
                                _ => {}
                            }
                        }
                        Some((dst?, via?))
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(found.into_iter().collect())
    }
}
