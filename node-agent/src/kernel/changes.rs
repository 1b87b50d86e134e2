//! The writes [`diff`](fn@crate::kernel::diff) plans and [`Kernel::apply`] performs — one
//! [`Change`] per kernel object — and what one apply did ([`ApplyReport`]). Pure data.
//!
//! [`Kernel::apply`]: crate::kernel::Kernel::apply

use std::fmt;

use crate::kernel::error::KernelError;
use crate::model::{Address, FdbEntry, Link, Mac, Neighbour, NftFamily, NftTable, Route};

/// One write to the kernel, as produced by `diff` and consumed by `Kernel::apply`.
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
    /// The route of the same destination (in the main table, Weft's) becomes this one in
    /// one request: traffic never finds no route.
    ReplaceRoute(Route),
    DeleteRoute(Route),
    AddFdb(FdbEntry),
    DeleteFdb(FdbEntry),
    AddNeighbour(Neighbour),
    DeleteNeighbour(Neighbour),
    /// Make the family's `weft` table exactly this, in one atomic transaction that writes
    /// only the difference from what the kernel holds (see `nft::plan_update`).
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
            Change::AddRoute(_) | Change::ReplaceRoute(_) | Change::DeleteRoute(_) => "route",
            Change::AddFdb(_) | Change::DeleteFdb(_) => "fdb",
            Change::AddNeighbour(_) | Change::DeleteNeighbour(_) => "neighbour",
            Change::SetNftTable(..) | Change::DeleteNftTable(_) => "nft",
            Change::SetSysctl { .. } => "sysctl",
        }
    }

    pub(crate) fn is_nft(&self) -> bool {
        matches!(self, Change::SetNftTable(..) | Change::DeleteNftTable(_))
    }

    /// Changes that do not depend on each other when they are of the same variant, so a run
    /// of them can be pipelined on the socket.
    pub(crate) fn pipelinable(&self) -> bool {
        matches!(
            self,
            Change::AddAddress(_)
                | Change::DeleteAddress(_)
                | Change::AddRoute(_)
                | Change::ReplaceRoute(_)
                | Change::DeleteRoute(_)
                | Change::AddFdb(_)
                | Change::DeleteFdb(_)
                | Change::AddNeighbour(_)
                | Change::DeleteNeighbour(_)
        )
    }

    pub(crate) fn touches_links(&self) -> bool {
        self.kind() == "link"
    }
}

/// A route as `ip route` would name it (`10.1.0.0/24 via 10.0.0.2 dev wfb-x`).
pub(crate) fn describe_route(r: &Route) -> String {
    match r.gateway {
        Some(g) => format!("{} via {g} dev {}", r.destination, r.link),
        None => format!("{} dev {}", r.destination, r.link),
    }
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
                    write!(f, " address {}", m)?;
                }
                Ok(())
            }
            Change::AddAddress(a) => write!(f, "add address {} dev {}", a.address, a.link),
            Change::DeleteAddress(a) => write!(f, "delete address {} dev {}", a.address, a.link),
            Change::AddRoute(r) => write!(f, "add route {}", describe_route(r)),
            Change::ReplaceRoute(r) => write!(f, "replace route {}", describe_route(r)),
            Change::DeleteRoute(r) => write!(f, "delete route {}", describe_route(r)),
            Change::AddFdb(e) => {
                write!(f, "add fdb {} dst {} dev {}", e.mac, e.dst, e.link)
            }
            Change::DeleteFdb(e) => {
                write!(f, "delete fdb {} dst {} dev {}", e.mac, e.dst, e.link)
            }
            Change::AddNeighbour(n) => {
                write!(f, "add neighbour {} lladdr {} dev {}", n.ip, n.mac, n.link)
            }
            Change::DeleteNeighbour(n) => {
                write!(
                    f,
                    "delete neighbour {} lladdr {} dev {}",
                    n.ip, n.mac, n.link
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
    /// Changes that failed, each with what the kernel said (errno included); the others were
    /// still applied.
    pub failed: Vec<(Change, KernelError)>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}
