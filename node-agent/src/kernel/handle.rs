//! The [`Kernel`] handle on one network namespace: opening it, and its two doors —
//! `observe` (everything Weft owns) and `apply` (a list of [`Change`]s), which it composes
//! from the noun files: `link`, `addr`, `route`, `fdb` (requests on the rtnetlink connection
//! in `netlink`), `sysctl` and `nft`. `endpoint` and `probe` build on this handle.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use futures::StreamExt;
use ipnet::IpNet;

use crate::kernel::changes::{ApplyReport, Change};
use crate::kernel::error::KernelError;
use crate::kernel::events;
use crate::kernel::host_ports::{HostPorts, host_ports};
use crate::kernel::link::LinkView;
use crate::kernel::netlink::Netlink;
use crate::kernel::nft::NftTables;
use crate::kernel::sysctl;
use crate::model::{KernelState, Mac};

/// How many netlink requests are kept in flight at once when a batch of independent
/// changes (addresses, routes, FDB, neighbours) is sent: enough to hide round trips, few
/// enough that the replies never overflow the socket's receive buffer.
const PIPELINE: usize = 64;

/// Facts about any interface (owned or not), for parents and the underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub mtu: Option<u32>,
    pub up: bool,
    pub mac: Option<Mac>,
    pub addresses: Vec<IpNet>,
    /// rtnetlink kind (`bridge`, `veth`, …); `None` for physical devices.
    pub kind: Option<String>,
    pub alias: Option<String>,
}

/// A handle on one network namespace.
pub struct Kernel {
    /// The rtnetlink connection the noun files speak through.
    pub(crate) netlink: Netlink,
    /// Sysctl keys written through this handle, so `observe` reads them back too and a
    /// second pass sees them as already set.
    sysctl_keys: Mutex<BTreeSet<String>>,
    /// Weft's nftables tables here: the cached listing, the writers' turn, how scripts run.
    nft: NftTables,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("netns", &self.netns())
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// `None` = the agent's own netns; `Some(path)` = e.g. `/var/run/netns/X`.
    pub async fn open(netns: Option<&Path>) -> Result<Self, KernelError> {
        Ok(Kernel {
            netlink: Netlink::open(netns).await?,
            sysctl_keys: Mutex::new(BTreeSet::new()),
            nft: NftTables::new(netns),
        })
    }

    pub fn netns(&self) -> Option<&Path> {
        self.netlink.netns()
    }

    /// A stream that yields `()` whenever something that may be Weft's changes in the
    /// namespace: a link, an address, a static neighbour/FDB entry, a route of Weft's, one of
    /// Weft's nftables tables. What the kernel learns by itself (dynamic neighbours, IPv6
    /// link-local addresses, its own prefix routes) and Weft's own writes through this
    /// handle stay silent (see `events.rs`).
    pub async fn events(
        &self,
    ) -> Result<impl futures::Stream<Item = ()> + Send + Unpin + 'static, KernelError> {
        let events = events::subscribe(
            self.netns(),
            self.netlink.port(),
            self.nft.unchanged_flag(),
            self.nft.own().clone(),
        )
        .await?;
        Ok(events)
    }

    /// How many nft transactions ran in the agent's process (libnftables) so far.
    pub fn nft_in_process_transactions(&self) -> u64 {
        self.nft.in_process_transactions()
    }

    /// How many times Weft's nftables tables were listed from the kernel so far.
    pub fn nft_listings(&self) -> u64 {
        self.nft.listings()
    }

    /// Everything Weft owns in the namespace.
    pub async fn observe(&self) -> Result<KernelState, KernelError> {
        Ok(self.observe_with_foreign().await?.0)
    }

    /// [`Kernel::observe`], plus the names of every link that is not Weft's (parents, the
    /// underlay, foreign bridges) from the same link dump: the planner needs them to find
    /// parents and to refuse names already taken; and the endpoints' host sides, whose
    /// bridge the endpoints' planning checks.
    pub async fn observe_with_foreign(
        &self,
    ) -> Result<(KernelState, BTreeSet<String>, HostPorts), KernelError> {
        let started = std::time::Instant::now();
        let view = LinkView::new(self.netlink.dump_links().await?);
        let links_took = started.elapsed();
        let mut keys: BTreeSet<String> =
            sysctl::DEFAULT_KEYS.iter().map(|k| k.to_string()).collect();
        if let Ok(written) = self.sysctl_keys.lock() {
            keys.extend(written.iter().cloned());
        }
        let owned = view.owned_links();
        keys.extend(sysctl::link_keys(&owned));
        // The kernel runs one dump at a time per netlink socket (a second one gets EBUSY), so
        // the netlink dumps go one after the other; nft and sysctl reads overlap with them.
        let netlink_dumps = async {
            let t = std::time::Instant::now();
            let addresses = self.netlink.observe_addresses(&view).await;
            let t1 = t.elapsed();
            let routes = self.netlink.observe_routes(&view).await;
            let t2 = t.elapsed();
            let fdb = self.netlink.observe_fdb(&view).await;
            let t3 = t.elapsed();
            let neighbours = self.netlink.observe_neighbours(&view).await;
            let t4 = t.elapsed();
            tracing::debug!(links = ?links_took, addresses = ?t1, routes = ?(t2 - t1), fdb = ?(t3 - t2), neighbours = ?(t4 - t3), "netlink dumps");
            (addresses, routes, fdb, neighbours)
        };
        let ((addresses, routes, fdb, neighbours), nft, sysctls) = futures::join!(
            netlink_dumps,
            self.nft.observe(),
            sysctl::read(self.netns(), keys.into_iter().collect()),
        );
        let hosts = host_ports(&view);
        let foreign = view
            .names()
            .filter(|n| !owned.contains_key(*n))
            .map(str::to_string)
            .collect();
        let state = KernelState {
            links: owned,
            addresses: addresses?,
            routes: routes?,
            fdb: fdb?,
            neighbours: neighbours?,
            nft: nft?,
            sysctls: sysctls?.into_iter().collect(),
        };
        Ok((state, foreign, hosts))
    }

    /// Apply changes. The nft changes go together in one atomic `nft -f -` run, alongside
    /// the netlink changes (rules name interfaces by string, so they need no link to exist
    /// first); the netlink changes are applied in order, with runs of independent
    /// address/route/FDB/neighbour changes pipelined. A failing change is recorded and the
    /// rest still applied, so one bad network cannot block the others.
    pub async fn apply(&self, changes: &[Change]) -> ApplyReport {
        let nft: Vec<&Change> = changes.iter().filter(|c| c.is_nft()).collect();
        let netlink: Vec<&Change> = changes.iter().filter(|c| !c.is_nft()).collect();
        let nft_part = async {
            let mut report = ApplyReport::default();
            if !nft.is_empty() {
                self.nft.apply(&nft, &mut report).await;
            }
            report
        };
        let (mut report, nft_report) = futures::join!(self.apply_netlink(&netlink), nft_part);
        report.writes += nft_report.writes;
        report.failed.extend(nft_report.failed);
        report
    }

    async fn apply_netlink(&self, changes: &[&Change]) -> ApplyReport {
        let mut report = ApplyReport::default();
        let mut links: Option<LinkView> = None;
        let mut i = 0;
        while i < changes.len() {
            let change = changes[i];
            if change.pipelinable() {
                let same = std::mem::discriminant(change);
                let end = changes[i..]
                    .iter()
                    .position(|c| std::mem::discriminant(*c) != same)
                    .map_or(changes.len(), |p| i + p);
                if links.is_none() {
                    match self.netlink.dump_links().await {
                        Ok(raws) => links = Some(LinkView::new(raws)),
                        Err(e) => {
                            for c in &changes[i..end] {
                                report.failed.push(((*c).clone(), e.clone()));
                            }
                            i = end;
                            continue;
                        }
                    }
                }
                if let Some(view) = &links {
                    // Futures collected first: a lazy `map` closure inside the stream
                    // would make this future not provably `Send` (rust-lang/rust#102211),
                    // and CNI calls run it on spawned tasks.
                    let pending: Vec<_> = changes[i..end]
                        .iter()
                        .map(|c| Box::pin(self.apply_item(c, view)))
                        .collect();
                    let results: Vec<(usize, Result<(), KernelError>)> =
                        futures::stream::iter(pending)
                            .buffered(PIPELINE)
                            .collect()
                            .await;
                    for (c, (writes, result)) in changes[i..end].iter().zip(results) {
                        report.writes += writes;
                        if let Err(e) = result {
                            report.failed.push(((*c).clone(), e));
                        }
                    }
                }
                i = end;
                continue;
            }
            if let Change::SetSysctl { .. } = change {
                // A run of sysctls (the diff puts them together) is written in one go.
                let end = changes[i..]
                    .iter()
                    .position(|c| !matches!(c, Change::SetSysctl { .. }))
                    .map_or(changes.len(), |p| i + p);
                let settings: Vec<(String, String)> = changes[i..end]
                    .iter()
                    .filter_map(|c| match c {
                        Change::SetSysctl { key, value } => Some((key.clone(), value.clone())),
                        _ => None,
                    })
                    .collect();
                if let Ok(mut keys) = self.sysctl_keys.lock() {
                    keys.extend(settings.iter().map(|(k, _)| k.clone()));
                }
                let results = sysctl::write(self.netns(), settings).await;
                for (c, result) in changes[i..end].iter().zip(results) {
                    report.writes += 1;
                    if let Err(e) = result {
                        report.failed.push(((*c).clone(), e));
                    }
                }
                i = end;
                continue;
            }
            let (writes, result) = self.apply_link(change).await;
            if change.touches_links() {
                links = None;
            }
            report.writes += writes;
            if let Err(e) = result {
                report.failed.push((change.clone(), e));
            }
            i += 1;
        }
        report
    }

    async fn apply_item(
        &self,
        change: &Change,
        view: &LinkView,
    ) -> (usize, Result<(), KernelError>) {
        match change {
            Change::AddAddress(a) => self.netlink.add_address(a, view).await,
            Change::DeleteAddress(a) => self.netlink.delete_address(a, view).await,
            Change::AddRoute(r) => self.netlink.add_route(r, view, false).await,
            Change::ReplaceRoute(r) => self.netlink.add_route(r, view, true).await,
            Change::DeleteRoute(r) => self.netlink.delete_route(r, view).await,
            Change::AddFdb(e) => self.netlink.add_fdb(e, view).await,
            Change::DeleteFdb(e) => self.netlink.delete_fdb(e, view).await,
            Change::AddNeighbour(n) => self.netlink.add_neighbour(n, view).await,
            Change::DeleteNeighbour(n) => self.netlink.delete_neighbour(n, view).await,
            other => (
                0,
                Err(KernelError::Invalid(format!(
                    "{other} is not an item change"
                ))),
            ),
        }
    }

    async fn apply_link(&self, change: &Change) -> (usize, Result<(), KernelError>) {
        match change {
            Change::CreateLink(l) => self.netlink.create_link(l).await,
            Change::DeleteLink(name) => self.netlink.delete_link(name).await,
            Change::RecreateLink(l) => {
                let (w1, r) = self.netlink.delete_link(&l.name).await;
                if let Err(e) = r {
                    return (w1, Err(e));
                }
                let (w2, r) = self.netlink.create_link(l).await;
                (w1 + w2, r)
            }
            Change::SetLink {
                name,
                mtu,
                master,
                up,
                alias,
                mac,
            } => {
                self.netlink
                    .set_link(
                        name,
                        *mtu,
                        master.as_ref().map(Option::as_deref),
                        *up,
                        alias.as_deref(),
                        *mac,
                    )
                    .await
            }
            other => (
                0,
                Err(KernelError::Invalid(format!(
                    "{other} is not a link change"
                ))),
            ),
        }
    }

    /// Facts about any interface (owned or not). `None` if it does not exist.
    pub async fn interface(&self, name: &str) -> Result<Option<InterfaceInfo>, KernelError> {
        let Some(raw) = self.netlink.get_link(name).await? else {
            return Ok(None);
        };
        let addresses = self.netlink.addresses_of(raw.index).await?;
        Ok(Some(InterfaceInfo {
            name: raw.name.clone(),
            index: raw.index,
            mtu: raw.mtu,
            up: raw.up,
            mac: raw.mac,
            addresses,
            kind: raw.kind_name(),
            alias: raw.alias.clone(),
        }))
    }

    /// Name of the interface of the IPv4 default route (lowest metric), if any.
    pub async fn default_route_interface(&self) -> Result<Option<String>, KernelError> {
        let Some(index) = self.netlink.default_route_oif().await? else {
            return Ok(None);
        };
        let raws = self.netlink.dump_links().await?;
        Ok(raws.into_iter().find(|r| r.index == index).map(|r| r.name))
    }
}
