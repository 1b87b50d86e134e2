//! Effects of the services dataplane in one namespace: the `ip weft-svc` nft table and one
//! local /32 route per VIP (table `local`, `proto` Weft's), which makes the node answer ARP
//! for the VIP on the network's bridge, so sandboxes that see the VIP as on-link send it to
//! the node.
//!
//! The writer remembers what it last wrote: the first apply replaces the table whole in one
//! transaction (after an agent restart; established connections live in conntrack and new
//! ones find the new table), every later one writes only the difference
//! ([`crate::services::render::update`]), and an unchanged ruleset writes nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::Ipv4Addr;

use crate::kernel::error::{KernelError, already_gone};
use crate::kernel::netlink::{Netlink, WEFT_RTPROT};
use crate::kernel::nft::{MAX_IN_PROCESS_SCRIPT, NftSession, run_program};
use crate::services::plan::Ruleset;
use crate::services::render;

/// What one apply wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceWrites {
    /// nft transactions run (0 or 1).
    pub transactions: usize,
    /// Bytes of nft script written.
    pub script_bytes: usize,
    /// Routes added or removed.
    pub routes: usize,
}

/// The services dataplane of one namespace.
pub struct ServiceDataplane {
    ns: Option<PathBuf>,
    netlink: Netlink,
    /// What the kernel holds, as far as this writer knows (`None`: not written yet).
    applied: Option<Ruleset>,
    /// libnftables in this process, for small scripts (an endpoint change): starting `nft`
    /// costs more than the change. `None`: the library is not installed.
    library: Option<Arc<NftSession>>,
}

/// The kernel's `local` routing table.
const RT_TABLE_LOCAL: u8 = 255;

/// `lo` is interface 1 in every namespace.
const LOOPBACK_INDEX: u32 = 1;

fn local_route(vip: &Ipv4Addr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 32;
    msg.header.table = RT_TABLE_LOCAL;
    msg.header.protocol = RouteProtocol::from(WEFT_RTPROT);
    msg.header.scope = RouteScope::Host;
    msg.header.kind = RouteType::Local;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(*vip)));
    msg.attributes.push(RouteAttribute::Oif(LOOPBACK_INDEX));
    msg
}

impl ServiceDataplane {
    pub async fn open(ns: Option<&Path>) -> Result<Self, KernelError> {
        Ok(ServiceDataplane {
            ns: ns.map(Path::to_path_buf),
            netlink: Netlink::open(ns).await?,
            applied: None,
            library: NftSession::open(ns).await?.map(Arc::new),
        })
    }

    /// Make the kernel hold `desired`, writing the least that gets it there.
    pub async fn apply(&mut self, desired: &Ruleset) -> Result<ServiceWrites, KernelError> {
        let mut writes = ServiceWrites::default();
        // No service: no table at all (a node without services carries nothing of them).
        let empty = Ruleset::default();
        let script = match &self.applied {
            _ if *desired == empty => match &self.applied {
                Some(old) if *old == empty => String::new(),
                Some(_) => render::remove(),
                None if self.table_exists().await? => render::remove(),
                None => String::new(),
            },
            Some(old) if *old != empty => render::update(old, desired),
            _ => render::full(desired),
        };
        let old_vips: BTreeSet<Ipv4Addr> = self
            .applied
            .as_ref()
            .map(|r| r.vips.clone())
            .unwrap_or_default();
        // Routes first: an address the table answers for must be local before it is mapped.
        let first = self.applied.is_none();
        let new_vips = desired
            .vips
            .iter()
            .filter(|v| first || !old_vips.contains(*v));
        writes.routes += self.local_routes(new_vips, true).await?;
        if !script.is_empty() {
            if let Err(e) = self.run(&script).await {
                // Unknown what holds now: the next apply replaces the table whole.
                self.applied = None;
                return Err(KernelError::Nft(format!(
                    "services table: {e} (script of {} bytes)",
                    script.len()
                )));
            }
            writes.transactions = 1;
            writes.script_bytes = script.len();
        }
        writes.routes += self
            .local_routes(old_vips.difference(&desired.vips), false)
            .await?;
        self.applied = Some(desired.clone());
        Ok(writes)
    }

    /// One transaction: in this process when the script is small, else in a child `nft`
    /// (a cold start's whole table: the child gives back the memory of parsing it).
    async fn run(&self, script: &str) -> Result<(), KernelError> {
        match &self.library {
            Some(library) if script.len() <= MAX_IN_PROCESS_SCRIPT => {
                let (library, text) = (library.clone(), script.to_string());
                tokio::task::spawn_blocking(move || library.run(&text))
                    .await
                    .map_err(|e| KernelError::Nft(format!("libnftables: {e}")))?
            }
            _ => {
                let out = run_program(self.ns.as_deref(), &["-f", "-"], Some(script), None).await?;
                if out.ok {
                    Ok(())
                } else {
                    Err(KernelError::Nft(out.stderr))
                }
            }
        }
    }

    /// Add (or delete) the VIPs' local routes; returns how many. Many requests are in flight
    /// on the one socket at a time: 10,000 VIPs one round trip after the other took longer
    /// than the whole nft transaction. A route already gone is not an error.
    async fn local_routes(
        &self,
        vips: impl IntoIterator<Item = &Ipv4Addr>,
        add: bool,
    ) -> Result<usize, KernelError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        const IN_FLIGHT: usize = 128;
        let vips: Vec<Ipv4Addr> = vips.into_iter().copied().collect();
        let count = vips.len();
        let netlink = &self.netlink;
        stream::iter(vips)
            .map(move |vip| async move {
                let res = if add {
                    netlink
                        .ack(
                            RouteNetlinkMessage::NewRoute(local_route(&vip)),
                            NLM_F_CREATE | NLM_F_REPLACE,
                            || format!("add local route {vip}"),
                        )
                        .await
                } else {
                    netlink
                        .ack(RouteNetlinkMessage::DelRoute(local_route(&vip)), 0, || {
                            format!("delete local route {vip}")
                        })
                        .await
                };
                match res {
                    Err(e) if !add && already_gone(&e) => Ok(()),
                    res => res,
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(count)
    }

    async fn table_exists(&self) -> Result<bool, KernelError> {
        let out = run_program(self.ns.as_deref(), &["list", "tables"], None, None).await?;
        if !out.ok {
            return Err(KernelError::Nft(out.stderr));
        }
        let wanted = format!("table ip {}", render::TABLE);
        Ok(out.stdout.lines().any(|l| l.trim() == wanted))
    }

    /// Remove the table and the routes (the node no longer runs services).
    pub async fn remove(&mut self) -> Result<(), KernelError> {
        let vips = self.applied.take().map(|r| r.vips).unwrap_or_default();
        self.local_routes(&vips, false).await?;
        self.run(&render::remove()).await
    }
}
