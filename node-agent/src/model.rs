//! The agent's picture of kernel state: what the planner wants (desired) and what the
//! executor finds (observed, owned objects only). Both sides use these same types, so the
//! diff is a plain comparison.
//!
//! Only objects Weft owns appear here. A link is owned when its alias starts with
//! [`ALIAS_PREFIX`]; addresses, routes, FDB and neighbour entries are owned when they sit on
//! an owned link; nftables rules are owned because they live in Weft's own table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Every owned link carries an alias `weft:<network>` (or `weft:node` for node-wide objects).
pub const ALIAS_PREFIX: &str = "weft:";

/// Alias prefix of host-side endpoint interfaces (deliberately not [`ALIAS_PREFIX`]: the
/// node's pass never takes them for network objects).
pub const ENDPOINT_ALIAS_PREFIX: &str = "weft-ep:";

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

/// An Ethernet MAC address, written `02:42:0a:00:00:02` everywhere Weft shows or reads one
/// (API fields, CNI results, nft rules, logs). Stored (journal) as its six bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Neither all-zero (an FDB's flood entry) nor multicast/broadcast.
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// `aa:bb:cc:dd:ee:ff` (either case); anything else is refused.
impl FromStr for Mac {
    type Err = InvalidMac;

    fn from_str(s: &str) -> Result<Mac, InvalidMac> {
        let bytes: Vec<u8> = s
            .split(':')
            .map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2))
            .collect::<Option<_>>()
            .ok_or(InvalidMac)?;
        Mac::try_from(bytes.as_slice())
    }
}

/// From the kernel's link-layer address attribute: exactly six bytes.
impl TryFrom<&[u8]> for Mac {
    type Error = InvalidMac;

    fn try_from(bytes: &[u8]) -> Result<Mac, InvalidMac> {
        <[u8; 6]>::try_from(bytes).map(Mac).map_err(|_| InvalidMac)
    }
}

impl std::ops::Deref for Mac {
    type Target = [u8; 6];

    fn deref(&self) -> &[u8; 6] {
        &self.0
    }
}

/// Not a MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidMac;

impl fmt::Display for InvalidMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a MAC address (aa:bb:cc:dd:ee:ff)")
    }
}

impl std::error::Error for InvalidMac {}

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
    /// A WireGuard link (the node's `weft-wg0`/`weft-wg1`); its keys and peers are set through the
    /// WireGuard generic netlink family ([`crate::kernel::wireguard`]), not here.
    Wireguard,
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

/// The network a link alias names, if the link is Weft's and belongs to a network (the
/// node-level `weft-wg0` is `weft:` alone).
pub fn network_of_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(ALIAS_PREFIX).filter(|n| !n.is_empty())
}

/// The per-interface sysctl that lets the kernel route packets with a loopback address to and
/// from that interface (`route_localnet`); Weft sets it on its own bridges only.
pub fn route_localnet_key(link: &str) -> String {
    format!("net/ipv4/conf/{link}/route_localnet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_written_and_read_one_way_and_journaled_as_bytes() {
        let mac = Mac([0x02, 0x42, 0x0a, 0x00, 0xff, 0x2b]);
        assert_eq!(mac.to_string(), "02:42:0a:00:ff:2b");
        assert_eq!("02:42:0A:00:FF:2B".parse::<Mac>(), Ok(mac));
        for bad in [
            "",
            "02:42:0a:00:ff",
            "02:42:0a:00:ff:2b:00",
            "2:42:0a:00:ff:2b",
            "0x:42:0a:00:ff:2b",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(InvalidMac), "{bad:?}");
        }
        assert_eq!(
            Mac::try_from(&[1u8, 2, 3, 4, 5, 6][..]),
            Ok(Mac([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(Mac::try_from(&[1u8, 2, 3][..]), Err(InvalidMac));
        // The journal's format from before Mac was a type: six numbers.
        assert_eq!(
            serde_json::to_string(&mac).expect("json"),
            "[2,66,10,0,255,43]"
        );
        assert_eq!(
            serde_json::from_str::<Mac>("[2,66,10,0,255,43]").expect("json"),
            mac
        );
    }
}
