//! The handle's view of Weft's nftables tables: the last listing, reused while nothing can
//! have changed them, and the turn writers take so each writes the difference from the
//! listing the previous one left.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::kernel::changes::{ApplyReport, Change};
use crate::kernel::error::KernelError;
use crate::kernel::nft::exec::Executor;
use crate::kernel::nft::own::OwnNft;
use crate::model::{NftFamily, NftTable};

/// Weft's nftables tables in one namespace, as one [`Kernel`](crate::kernel::Kernel) handle
/// reads and writes them.
pub(crate) struct NftTables {
    /// The last listing, reused while `unchanged` holds: once the handle's event reader
    /// runs, every notification about those tables (and every overrun) clears the flag, so
    /// a pass spawns `nft -j list` only when something may have changed.
    listing: Mutex<Option<BTreeMap<NftFamily, NftTable>>>,
    unchanged: Arc<AtomicBool>,
    /// How many times `nft -j list` ran (tests show own writes do not cost a listing).
    listings: AtomicU64,
    /// Serializes nft writers (passes and CNI ADDs): each computes its difference from the
    /// listing the previous one left.
    writer: tokio::sync::Mutex<()>,
    exec: Executor,
}

impl NftTables {
    pub(crate) fn new(ns: Option<&Path>) -> Self {
        NftTables {
            listing: Mutex::new(None),
            unchanged: Arc::new(AtomicBool::new(false)),
            listings: AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(()),
            exec: Executor::new(ns),
        }
    }

    /// The flag the event reader clears when somebody else touches the tables.
    pub(crate) fn unchanged_flag(&self) -> Arc<AtomicBool> {
        self.unchanged.clone()
    }

    /// The agent's own nft writes here, which the event reader recognises.
    pub(crate) fn own(&self) -> &OwnNft {
        self.exec.own()
    }

    /// How many times the tables were listed from the kernel.
    pub(crate) fn listings(&self) -> u64 {
        self.listings.load(Ordering::SeqCst)
    }

    /// How many transactions ran in the agent's process (libnftables).
    pub(crate) fn in_process_transactions(&self) -> u64 {
        self.exec.in_process_transactions()
    }

    /// Weft's nftables tables: the cached listing while nothing can have changed them,
    /// otherwise a fresh `nft -j list`.
    pub(crate) async fn observe(&self) -> Result<BTreeMap<NftFamily, NftTable>, KernelError> {
        // Listings and writes take turns: a listing taken before a write must not be cached
        // after the write's result.
        let _writer = self.writer.lock().await;
        self.observe_locked().await
    }

    /// [`NftTables::observe`] for a caller that holds `writer`.
    async fn observe_locked(&self) -> Result<BTreeMap<NftFamily, NftTable>, KernelError> {
        // Only while an event reader watches the tables can the cache be trusted.
        if self.exec.own().listening()
            && self.unchanged.load(Ordering::SeqCst)
            && let Some(cached) = self.listing.lock().ok().and_then(|c| c.clone())
        {
            return Ok(cached);
        }
        // Set before listing: a change while `nft` runs clears it again.
        self.unchanged.store(true, Ordering::SeqCst);
        self.listings.fetch_add(1, Ordering::SeqCst);
        tracing::debug!("listing the nft tables");
        let listing = self.exec.list().await;
        match &listing {
            Ok(tables) => {
                if let Ok(mut c) = self.listing.lock() {
                    *c = Some(tables.clone());
                }
            }
            Err(_) => self.unchanged.store(false, Ordering::SeqCst),
        }
        listing
    }

    /// Write nft changes as the difference from the current listing, then keep that listing
    /// exact from what `nft` echoed (no second listing), unless somebody else changed the
    /// tables meanwhile (the event reader cleared `unchanged`) or the result is unknown.
    pub(crate) async fn apply(&self, changes: &[&Change], report: &mut ApplyReport) {
        let _writer = self.writer.lock().await;
        let observed = self.observe_locked().await.ok();
        let started = std::time::Instant::now();
        let written = self.exec.apply(observed.as_ref(), changes, report).await;
        tracing::debug!(took = ?started.elapsed(), "nft transaction");
        let Ok(mut cache) = self.listing.lock() else {
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
            _ => self.unchanged.store(false, Ordering::SeqCst),
        }
    }
}
