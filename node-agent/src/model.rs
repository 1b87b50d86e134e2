//! The agent's picture of kernel state: what the planner wants (desired) and what the
//! executor finds (observed, owned objects only). Both sides use these same types, so the
//! diff is a plain comparison.
//!
//! Only objects Weft owns appear here. A link is owned when its alias starts with
//! [`ALIAS_PREFIX`]; addresses, routes, FDB and neighbour entries are owned when they sit on
//! an owned link; nftables rules are owned because they live in Weft's own table.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

/// Every owned link carries an alias `weft:<network>` (or `weft:node` for node-wide objects).
pub const ALIAS_PREFIX: &str = "weft:";

/// Name of Weft's own nftables tables (one in family inet, one in family bridge). Nothing
/// outside them is ever touched.
pub const NFT_TABLE: &str = "weft";

/// nftables families Weft keeps a table in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NftFamily {
    /// Routed traffic: isolation between networks, internal networks, masquerade, DNAT.
    Inet,
    /// Bridged traffic between ports of one bridge (inter-container traffic switch), which
    /// the inet hooks never see without br_netfilter.
    Bridge,
}

impl NftFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            NftFamily::Inet => "inet",
            NftFamily::Bridge => "bridge",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inet" => Some(NftFamily::Inet),
            "bridge" => Some(NftFamily::Bridge),
            _ => None,
        }
    }
}

/// A MAC address.
pub type Mac = [u8; 6];

/// Everything Weft owns in one network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    /// Owned links by name.
    pub links: BTreeMap<String, Link>,
    /// Addresses on owned links.
    pub addresses: BTreeSet<Address>,
    /// Routes through owned links (main table).
    pub routes: BTreeSet<Route>,
    /// Static FDB entries on owned VXLAN links (head-end replication and per-endpoint).
    pub fdb: BTreeSet<FdbEntry>,
    /// Static neighbour (ARP/NDP) entries on owned links.
    pub neighbours: BTreeSet<Neighbour>,
    /// Weft's nftables tables, one per family; a missing key = that table does not exist.
    pub nft: BTreeMap<NftFamily, NftTable>,
    /// Per-namespace sysctls Weft needs, such as `net/ipv4/ip_forward` = "1".
    pub sysctls: BTreeMap<String, String>,
}

/// One network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Kernel name, at most 15 bytes.
    pub name: String,
    /// Ownership mark, `weft:<network>`.
    pub alias: String,
    pub kind: LinkKind,
    /// `None` = leave the kernel's choice.
    pub mtu: Option<u32>,
    /// Name of the bridge this link is enslaved to.
    pub master: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// `None` = leave the kernel's choice (random).
    pub mac: Option<Mac>,
}

/// Kind-specific attributes. A change here means the link must be re-created; every other
/// field of [`Link`] can be changed in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Vxlan {
        vni: u32,
        port: u16,
        /// This node's underlay address (the VTEP).
        local: IpAddr,
        /// Underlay interface the tunnel is bound to.
        underlay: Option<String>,
        /// MAC learning on the VXLAN device (Weft keeps it off and programs the FDB).
        learning: bool,
        /// ARP/ND proxy: the device answers neighbour requests from its static entries
        /// (other nodes' endpoints), so they never flood the underlay.
        proxy: bool,
    },
    Macvlan {
        parent: String,
        mode: MacvlanMode,
    },
    Ipvlan {
        parent: String,
        mode: IpvlanMode,
    },
    /// 802.1Q sub-interface `parent.id`.
    Vlan {
        parent: String,
        id: u16,
    },
    /// One end of a veth pair; the other end's name (it may live in another netns).
    Veth {
        peer: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MacvlanMode {
    Private,
    Vepa,
    Bridge,
    Passthru,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpvlanMode {
    L2,
    L3,
    L3s,
}

/// An address on a link, with its prefix (10.0.0.1/24).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub link: String,
    pub address: IpNet,
}

/// A route in the main table through an owned link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub destination: IpNet,
    pub link: String,
    pub gateway: Option<IpAddr>,
}

/// A static FDB entry on a VXLAN link: frames for `mac` go to `dst` (the peer VTEP).
/// The all-zero MAC is the flood entry (head-end replication to every peer).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub link: String,
    pub mac: Mac,
    pub dst: IpAddr,
}

/// A permanent neighbour entry: `ip` is at `mac` on `link`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub link: String,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// One of Weft's nftables tables: chains with their rules as nft text.
///
/// Each rule is stored as the text Weft feeds to `nft`; when reading back, the executor
/// identifies rules by a `comment "weft:<id>"` that every rule carries, so comparing
/// desired and observed means comparing the ids per chain, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftTable {
    pub chains: BTreeMap<String, NftChain>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftChain {
    /// Base chain hook, e.g. `type filter hook forward priority 0; policy accept;`
    /// `None` = a regular chain (jump target).
    pub base: Option<String>,
    pub rules: Vec<NftRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftRule {
    /// Stable id carried in the rule's comment (`weft:<id>`), unique within the table.
    pub id: String,
    /// The rule body as nft text, without the comment (e.g. `ip saddr 10.0.0.0/24 masquerade`).
    pub body: String,
    /// The kernel's handle of an observed rule (what incremental updates delete or insert
    /// after); `None` in desired state.
    pub handle: Option<u64>,
}

/// The link alias for a network's objects.
pub fn alias_for(network: &str) -> String {
    format!("{ALIAS_PREFIX}{network}")
}

/// The network a link alias names, if the link is Weft's.
pub fn network_of_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(ALIAS_PREFIX)
}

/// The per-interface sysctl that lets the kernel route packets with a loopback address to and
/// from that interface (`route_localnet`); Weft sets it on its own bridges only.
pub fn route_localnet_key(link: &str) -> String {
    format!("net/ipv4/conf/{link}/route_localnet")
}
