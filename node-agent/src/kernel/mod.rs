//! Effects: reading, diffing and applying what Weft owns in one network namespace.
//!
//! The agent loop is `observe` → [`diff`] (pure) → `apply`. [`Kernel`] talks rtnetlink over
//! one socket bound to the target namespace, runs `nft` inside it and writes sysctls from a
//! thread inside it, so `--netns` works while the agent process itself stays put.
//!
//! Ownership is the safety rail: only links whose alias starts with
//! [`ALIAS_PREFIX`](crate::model::ALIAS_PREFIX), what sits on them, routes carrying
//! [`WEFT_RTPROT`], and the `weft` nft tables are ever read as ours or written.
//!
//! One file per kernel noun, like rust-netlink's rtnetlink: `link`, `addr`, `route`,
//! `fdb` (FDB + neighbours), `nft`, `sysctl`; plus `netns` (entering a namespace), `diff`
//! (pure), `events` (multicast subscription) and `probe` (capabilities).

mod addr;
mod diff;
mod endpoint;
mod events;
mod fdb;
mod libnft;
mod link;
mod netns;
mod nft;
mod probe;
mod route;
mod sysctl;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

use crate::model::{
    Address, FdbEntry, KernelState, Link, Mac, Neighbour, NftFamily, NftTable, Route,
};

pub use diff::diff;
pub use endpoint::{
    ENDPOINT_ALIAS_PREFIX, EndpointLink, SandboxConfig, SandboxInterface, sandbox_missing,
};
pub use events::KernelEvents;
pub use nft::{base_chain, nft_tables_equivalent};
pub use probe::Capabilities;
pub use sysctl::DEFAULT_KEYS as DEFAULT_SYSCTLS;

/// Routing protocol number Weft stamps on the routes it adds (`proto 87` in `ip route`).
/// Observing filters on it, so kernel prefix routes and other daemons' routes through the
/// same links are never mistaken for Weft's. 87 is unassigned in `/etc/iproute2/rt_protos`.
pub const WEFT_RTPROT: u8 = 0x57;

/// How many netlink requests are kept in flight at once when a batch of independent
/// changes (addresses, routes, FDB, neighbours) is sent: enough to hide round trips, few
/// enough that the replies never overflow the socket's receive buffer.
const PIPELINE: usize = 64;

/// Everything that can go wrong talking to the kernel, worded for the person reading logs.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot start a helper thread: {0}")]
    Thread(String),
    #[error("the netlink connection is closed: {0}")]
    Closed(String),
    /// The kernel refused a request; `errno` allows callers to treat "already gone" as done.
    #[error("{op}: {message}")]
    Netlink {
        op: String,
        errno: i32,
        message: String,
    },
    #[error("{op}: no interface named {name:?}")]
    NoSuchLink { op: String, name: String },
    #[error("refusing to touch {0:?}: it is not Weft's (its alias does not start with \"weft:\")")]
    NotOwned(String),
    #[error("nft: {0}")]
    Nft(String),
    #[error("sysctl {key}: {source}")]
    Sysctl { key: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("unexpected kernel reply: {0}")]
    Unexpected(String),
}

impl KernelError {
    /// The errno of a refused netlink request, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// One write to the kernel, as produced by [`diff`] and consumed by [`Kernel::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    CreateLink(Link),
    DeleteLink(String),
    /// Delete and create again: kind-specific attributes (VNI, parent, mode…) cannot change
    /// in place.
    RecreateLink(Link),
    /// In-place change of an existing owned link; `None` fields stay as they are.
    /// `master: Some(None)` releases the link from its bridge.
    SetLink {
        name: String,
        mtu: Option<u32>,
        master: Option<Option<String>>,
        up: Option<bool>,
        alias: Option<String>,
        mac: Option<Mac>,
    },
    AddAddress(Address),
    DeleteAddress(Address),
    AddRoute(Route),
    DeleteRoute(Route),
    AddFdb(FdbEntry),
    DeleteFdb(FdbEntry),
    AddNeighbour(Neighbour),
    DeleteNeighbour(Neighbour),
    /// Make the family's `weft` table exactly this, in one atomic transaction that writes
    /// only the difference from what the kernel holds (see [`nft::plan_update`]).
    SetNftTable(NftFamily, NftTable),
    DeleteNftTable(NftFamily),
    SetSysctl {
        key: String,
        value: String,
    },
}

impl Change {
    /// Label for metrics (`weft_drift_corrections_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::CreateLink(_)
            | Change::DeleteLink(_)
            | Change::RecreateLink(_)
            | Change::SetLink { .. } => "link",
            Change::AddAddress(_) | Change::DeleteAddress(_) => "address",
            Change::AddRoute(_) | Change::DeleteRoute(_) => "route",
            Change::AddFdb(_) | Change::DeleteFdb(_) => "fdb",
            Change::AddNeighbour(_) | Change::DeleteNeighbour(_) => "neighbour",
            Change::SetNftTable(..) | Change::DeleteNftTable(_) => "nft",
            Change::SetSysctl { .. } => "sysctl",
        }
    }

    fn is_nft(&self) -> bool {
        matches!(self, Change::SetNftTable(..) | Change::DeleteNftTable(_))
    }

    /// Changes that do not depend on each other when they are of the same variant, so a run
    /// of them can be pipelined on the socket.
    fn pipelinable(&self) -> bool {
        matches!(
            self,
            Change::AddAddress(_)
                | Change::DeleteAddress(_)
                | Change::AddRoute(_)
                | Change::DeleteRoute(_)
                | Change::AddFdb(_)
                | Change::DeleteFdb(_)
                | Change::AddNeighbour(_)
                | Change::DeleteNeighbour(_)
        )
    }

    fn touches_links(&self) -> bool {
        self.kind() == "link"
    }
}

fn mac_str(mac: &Mac) -> String {
    mac.to_string()
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateLink(l) => write!(f, "create link {}", l.name),
            Change::DeleteLink(n) => write!(f, "delete link {n}"),
            Change::RecreateLink(l) => write!(f, "re-create link {}", l.name),
            Change::SetLink {
                name,
                mtu,
                master,
                up,
                alias,
                mac,
            } => {
                write!(f, "set link {name}")?;
                if let Some(m) = mtu {
                    write!(f, " mtu {m}")?;
                }
                match master {
                    Some(Some(m)) => write!(f, " master {m}")?,
                    Some(None) => write!(f, " nomaster")?,
                    None => {}
                }
                if let Some(u) = up {
                    write!(f, " {}", if *u { "up" } else { "down" })?;
                }
                if let Some(a) = alias {
                    write!(f, " alias {a}")?;
                }
                if let Some(m) = mac {
                    write!(f, " address {}", mac_str(m))?;
                }
                Ok(())
            }
            Change::AddAddress(a) => write!(f, "add address {} dev {}", a.address, a.link),
            Change::DeleteAddress(a) => write!(f, "delete address {} dev {}", a.address, a.link),
            Change::AddRoute(r) => write!(f, "add route {}", route::describe(r)),
            Change::DeleteRoute(r) => write!(f, "delete route {}", route::describe(r)),
            Change::AddFdb(e) => {
                write!(
                    f,
                    "add fdb {} dst {} dev {}",
                    mac_str(&e.mac),
                    e.dst,
                    e.link
                )
            }
            Change::DeleteFdb(e) => {
                write!(
                    f,
                    "delete fdb {} dst {} dev {}",
                    mac_str(&e.mac),
                    e.dst,
                    e.link
                )
            }
            Change::AddNeighbour(n) => {
                write!(
                    f,
                    "add neighbour {} lladdr {} dev {}",
                    n.ip,
                    mac_str(&n.mac),
                    n.link
                )
            }
            Change::DeleteNeighbour(n) => {
                write!(
                    f,
                    "delete neighbour {} lladdr {} dev {}",
                    n.ip,
                    mac_str(&n.mac),
                    n.link
                )
            }
            Change::SetNftTable(fam, _) => write!(f, "set nft table {} weft", fam.as_str()),
            Change::DeleteNftTable(fam) => write!(f, "delete nft table {} weft", fam.as_str()),
            Change::SetSysctl { key, value } => write!(f, "set sysctl {key}={value}"),
        }
    }
}

/// What one `apply` did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Kernel write operations sent (netlink requests that modify, `nft -f` runs, sysctl
    /// writes), successful or not.
    pub writes: usize,
    /// Changes that failed, with a readable reason; the others were still applied.
    pub failed: Vec<(Change, String)>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

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
    handle: rtnetlink::Handle,
    /// The netlink port of `handle`'s socket (see [`connect`]).
    netlink_port: u32,
    netns: Option<PathBuf>,
    connection: tokio::task::JoinHandle<()>,
    /// Sysctl keys written through this handle, so `observe` reads them back too and a
    /// second pass sees them as already set.
    sysctl_keys: Mutex<BTreeSet<String>>,
    /// The last listing of Weft's nftables tables, reused while `nft_unchanged` holds: once
    /// [`Kernel::events`] runs, every notification about those tables (and every overrun)
    /// clears the flag, so a pass spawns `nft -j list` only when something may have changed.
    nft_listing: Mutex<Option<BTreeMap<NftFamily, NftTable>>>,
    nft_unchanged: Arc<AtomicBool>,
    /// How many times `nft -j list` ran (tests show own writes do not cost a listing).
    nft_listings: std::sync::atomic::AtomicU64,
    /// The agent's `nft` runs, whose own notifications leave the cached listing valid; it
    /// also knows whether an event reader watches the tables (see [`Kernel::events`]).
    own_nft: nft::OwnNft,
    /// Serializes nft writers (passes and CNI ADDs): each computes its difference from the
    /// listing the previous one left.
    nft_writer: tokio::sync::Mutex<()>,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
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
        let (mut conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Socket)?;
        // Bound now rather than on the first send, so the port is known from the start.
        let socket = conn.socket_mut().socket_mut();
        let port = socket
            .bind_auto()
            .map_err(KernelError::Socket)?
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

impl Kernel {
    /// `None` = the agent's own netns; `Some(path)` = e.g. `/var/run/netns/X`.
    pub async fn open(netns: Option<&Path>) -> Result<Self, KernelError> {
        let (handle, connection, netlink_port) = connect(netns).await?;
        Ok(Kernel {
            handle,
            netlink_port,
            netns: netns.map(Path::to_path_buf),
            connection,
            sysctl_keys: Mutex::new(BTreeSet::new()),
            nft_listing: Mutex::new(None),
            nft_unchanged: Arc::new(AtomicBool::new(false)),
            own_nft: nft::OwnNft::default(),
            nft_listings: std::sync::atomic::AtomicU64::new(0),
            nft_writer: tokio::sync::Mutex::new(()),
        })
    }

    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
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
            self.netlink_port,
            self.nft_unchanged.clone(),
            self.own_nft.clone(),
        )
        .await?;
        Ok(events)
    }

    /// Weft's nftables tables: the cached listing while nothing can have changed them,
    /// otherwise a fresh `nft -j list`.
    async fn observe_nft(&self) -> Result<BTreeMap<NftFamily, NftTable>, KernelError> {
        // Listings and writes take turns: a listing taken before a write must not be cached
        // after the write's result.
        let _writer = self.nft_writer.lock().await;
        self.observe_nft_locked().await
    }

    /// [`Kernel::observe_nft`] for a caller that holds `nft_writer`.
    async fn observe_nft_locked(&self) -> Result<BTreeMap<NftFamily, NftTable>, KernelError> {
        // Only while an event reader watches the tables can the cache be trusted.
        if self.own_nft.listening()
            && self.nft_unchanged.load(Ordering::SeqCst)
            && let Some(cached) = self.nft_listing.lock().ok().and_then(|c| c.clone())
        {
            return Ok(cached);
        }
        // Set before listing: a change while `nft` runs clears it again.
        self.nft_unchanged.store(true, Ordering::SeqCst);
        self.nft_listings.fetch_add(1, Ordering::SeqCst);
        tracing::debug!("listing the nft tables");
        let listing = nft::observe(self.netns()).await;
        match &listing {
            Ok(tables) => {
                if let Ok(mut c) = self.nft_listing.lock() {
                    *c = Some(tables.clone());
                }
            }
            Err(_) => self.nft_unchanged.store(false, Ordering::SeqCst),
        }
        listing
    }

    /// How many nft transactions ran in the agent's process (libnftables) so far.
    pub fn nft_in_process_transactions(&self) -> u64 {
        self.own_nft.in_process_transactions()
    }

    /// How many times Weft's nftables tables were listed from the kernel so far.
    pub fn nft_listings(&self) -> u64 {
        self.nft_listings.load(Ordering::SeqCst)
    }

    /// Write nft changes as the difference from the current listing, then keep that listing
    /// exact from what `nft` echoed (no second listing), unless somebody else changed the
    /// tables meanwhile (the event reader cleared `nft_unchanged`) or the result is unknown.
    async fn apply_nft(&self, changes: &[&Change], report: &mut ApplyReport) {
        let _writer = self.nft_writer.lock().await;
        let observed = self.observe_nft_locked().await.ok();
        let started = std::time::Instant::now();
        let written = nft::apply(
            self.netns(),
            &self.own_nft,
            observed.as_ref(),
            changes,
            report,
        )
        .await;
        tracing::debug!(took = ?started.elapsed(), "nft transaction");
        let Ok(mut cache) = self.nft_listing.lock() else {
            return;
        };
        match (written, cache.as_mut()) {
            (Some(tables), Some(listing)) => {
                for (family, table) in tables {
                    match table {
                        Some(t) => listing.insert(family, t),
                        None => listing.remove(&family),
                    };
                }
            }
            _ => self.nft_unchanged.store(false, Ordering::SeqCst),
        }
    }

    /// Create and delete a throwaway link of each kind and report which worked.
    pub async fn probe(&self) -> Capabilities {
        probe::probe(self).await
    }

    /// Everything Weft owns in the namespace.
    pub async fn observe(&self) -> Result<KernelState, KernelError> {
        Ok(self.observe_with_foreign().await?.0)
    }

    /// [`Kernel::observe`], plus the names of every link that is not Weft's (parents, the
    /// underlay, foreign bridges) from the same link dump: the planner needs them to find
    /// parents and to refuse names already taken.
    pub async fn observe_with_foreign(
        &self,
    ) -> Result<(KernelState, BTreeSet<String>), KernelError> {
        let started = std::time::Instant::now();
        let view = link::LinkView::new(self.dump_links().await?);
        let links_took = started.elapsed();
        let mut keys: BTreeSet<String> =
            sysctl::DEFAULT_KEYS.iter().map(|k| k.to_string()).collect();
        if let Ok(written) = self.sysctl_keys.lock() {
            keys.extend(written.iter().cloned());
        }
        // The kernel runs one dump at a time per netlink socket (a second one gets EBUSY), so
        // the netlink dumps go one after the other; nft and sysctl reads overlap with them.
        let netlink_dumps = async {
            let t = std::time::Instant::now();
            let addresses = self.observe_addresses(&view).await;
            let t1 = t.elapsed();
            let routes = self.observe_routes(&view).await;
            let t2 = t.elapsed();
            let fdb = self.observe_fdb(&view).await;
            let t3 = t.elapsed();
            let neighbours = self.observe_neighbours(&view).await;
            let t4 = t.elapsed();
            tracing::debug!(links = ?links_took, addresses = ?t1, routes = ?(t2 - t1), fdb = ?(t3 - t2), neighbours = ?(t4 - t3), "netlink dumps");
            (addresses, routes, fdb, neighbours)
        };
        let ((addresses, routes, fdb, neighbours), nft, sysctls) = futures::join!(
            netlink_dumps,
            self.observe_nft(),
            sysctl::read(self.netns(), keys.into_iter().collect()),
        );
        let owned = view.owned_links();
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
        Ok((state, foreign))
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
                self.apply_nft(&nft, &mut report).await;
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
        let mut links: Option<link::LinkView> = None;
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
                    match self.dump_links().await {
                        Ok(raws) => links = Some(link::LinkView::new(raws)),
                        Err(e) => {
                            for c in &changes[i..end] {
                                report.failed.push(((*c).clone(), e.to_string()));
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
                            report.failed.push(((*c).clone(), e.to_string()));
                        }
                    }
                }
                i = end;
                continue;
            }
            let (writes, result) = match change {
                Change::SetSysctl { key, value } => {
                    let r = sysctl::write(self.netns(), key.clone(), value.clone()).await;
                    if let Ok(mut keys) = self.sysctl_keys.lock() {
                        keys.insert(key.clone());
                    }
                    (1, r)
                }
                _ => self.apply_link(change).await,
            };
            if change.touches_links() {
                links = None;
            }
            report.writes += writes;
            if let Err(e) = result {
                report.failed.push((change.clone(), e.to_string()));
            }
            i += 1;
        }
        report
    }

    async fn apply_item(
        &self,
        change: &Change,
        view: &link::LinkView,
    ) -> (usize, Result<(), KernelError>) {
        match change {
            Change::AddAddress(a) => self.add_address(a, view).await,
            Change::DeleteAddress(a) => self.delete_address(a, view).await,
            Change::AddRoute(r) => self.add_route(r, view).await,
            Change::DeleteRoute(r) => self.delete_route(r, view).await,
            Change::AddFdb(e) => self.add_fdb(e, view).await,
            Change::DeleteFdb(e) => self.delete_fdb(e, view).await,
            Change::AddNeighbour(n) => self.add_neighbour(n, view).await,
            Change::DeleteNeighbour(n) => self.delete_neighbour(n, view).await,
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
            Change::CreateLink(l) => self.create_link(l).await,
            Change::DeleteLink(name) => self.delete_link(name).await,
            Change::RecreateLink(l) => {
                let (w1, r) = self.delete_link(&l.name).await;
                if let Err(e) = r {
                    return (w1, Err(e));
                }
                let (w2, r) = self.create_link(l).await;
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
                self.set_link(
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
        let Some(raw) = self.get_link(name).await? else {
            return Ok(None);
        };
        let addresses = self.addresses_of(raw.index).await?;
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
        let Some(index) = self.default_route_oif().await? else {
            return Ok(None);
        };
        let raws = self.dump_links().await?;
        Ok(raws.into_iter().find(|r| r.index == index).map(|r| r.name))
    }

    // ---- netlink plumbing shared by the noun modules ----

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

fn netlink_error(op: String, err: &netlink_packet_core::ErrorMessage) -> KernelError {
    let errno = err.raw_code().abs();
    KernelError::Netlink {
        op,
        errno,
        message: std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

/// `errno` values that mean "it is already gone", which a delete treats as done.
pub(crate) fn already_gone(e: &KernelError) -> bool {
    matches!(
        e.errno(),
        Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
    )
}

/// Index of an owned link, or why an item on it must not be touched.
pub(crate) fn owned_index(
    view: &link::LinkView,
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
