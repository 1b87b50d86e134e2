//! Firewalling, apart from the drivers: each driver says what its network needs
//! ([`FirewallIntent`]); [`render`] turns the intents of every network on the node into
//! Weft's own nftables tables (`inet weft`, `bridge weft`), all at once, because isolation
//! is a relation between networks.
//!
//! What is emitted, per feature (`B` = the network's bridge, `S` = one of its subnets):
//!
//! | feature | family / chain | rule |
//! |---|---|---|
//! | masquerade (unless internal or `bridge.masquerade: false`) | inet `postrouting` (nat) | `ip saddr S oifname != "B" masquerade` (`ip6 saddr` for IPv6) |
//! | internal | inet `forward` | `iifname "B" oifname != "B" drop`, `iifname != "B" oifname "B" drop` |
//! | isolation (if either side asks for it) | inet `forward` | `iifname "B" oifname != "B" oifname "wfb-*" drop`, `oifname "B" iifname != "B" iifname "wfb-*" drop` |
//! | inbound `published` (bridge default; overlay) | inet `forward` | `oifname "B" iifname != "wfb-*" ct state != { established, related } ct status & dnat == 0 ct mark & 0x4000000 == 0 drop` (the mark: the services mesh) |
//! | `interContainerTraffic: false` | bridge `forward` | `ip daddr S drop` (`ip6 daddr` for IPv6) |
//! | overlay anycast gateway | bridge `prerouting` | `iifname "X" ether saddr M drop` (`X` = VXLAN port, `M` = gateway MAC) |
//!
//! Inter-container traffic: Docker drops `-i B -o B` in iptables, which sees bridged IP
//! packets through br_netfilter. The nftables equivalent, `meta ibrname "B" drop` in the
//! bridge family, needs the kernel's `nft_meta_bridge` (CONFIG_NFT_BRIDGE_META), which many
//! kernels (this project's CI kernel among them) lack, and one unsupported expression makes
//! the whole atomic nft transaction fail. The bridge family's forward hook only ever sees
//! frames switched between two ports of one bridge (frames to and from the gateway take the
//! input/output hooks), and only this network's endpoints hold addresses of `S`, so
//! `ip daddr S drop` there drops exactly endpoint-to-endpoint IP traffic on this bridge — what
//! Docker's rule drops — without naming the bridge. ARP and IPv6 link-local traffic pass, as
//! they do with Docker's rule for ARP.
//!
//! Inbound default-deny: forwarding is on, so without a rule any host with a route to `S`
//! through the node reaches every port of every endpoint. Docker 28 accepts published ports
//! and drops the rest (`! -i B -o B -j DROP` after its accepts); one chain holds one verdict
//! kind here, so the same is one drop that spares what it would have accepted: connections
//! the node DNATed (published ports) and replies. Other Weft bridges are spared too:
//! whether networks reach each other is isolation's decision. The node's own traffic takes
//! the output hook, bridged traffic (same bridge, overlay peers over VXLAN) never has an
//! `oifname` other than through `B` from `B`, so neither meets the rule.
//!
//! Rule ids are content hashes of the body, so a changed body is a changed id and the
//! executor's comparison of ids per chain is a comparison of bodies.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;

pub use crate::drivers::{AnycastGuard, FirewallIntent};
use crate::model::{NFT_TABLE, NftChain, NftFamily, NftRule, NftTable};
use crate::names::fnv1a64;
use crate::services::mesh::MESH_CT_MARK;

/// Base chain spec of the filter chains on the forward hook.
pub const FILTER_FORWARD: &str = "type filter hook forward priority 0; policy accept;";
/// Base chain spec of the bridge family's filter chain on the prerouting hook.
pub const FILTER_PREROUTING: &str = "type filter hook prerouting priority 0; policy accept;";
/// Base chain spec of the filter chain on the output hook.
pub const FILTER_OUTPUT: &str = "type filter hook output priority 0; policy accept;";
/// Base chain spec of the nat chain on the postrouting hook.
pub const NAT_POSTROUTING: &str = "type nat hook postrouting priority 100; policy accept;";

/// Chain names (one chain per hook, named after it).
pub const CHAIN_FORWARD: &str = "forward";
pub const CHAIN_PREROUTING: &str = "prerouting";
pub const CHAIN_POSTROUTING: &str = "postrouting";
pub const CHAIN_OUTPUT: &str = "output";

/// A rule whose id is the content hash of its body.
pub fn rule(body: impl Into<String>) -> NftRule {
    let body = body.into();
    NftRule {
        id: rule_id(&body),
        body,
        handle: None,
    }
}

/// `{:016x}` of the 64-bit FNV-1a of the body.
pub fn rule_id(body: &str) -> String {
    format!("{:016x}", fnv1a64(body.as_bytes()))
}

/// Weft's nftables tables for a set of networks. A family with no rules has no table (and a
/// chain with no rules is left out), so a node without networks has no nft state at all.
/// The result does not depend on the order of `intents`.
pub fn render(intents: &[FirewallIntent]) -> BTreeMap<NftFamily, NftTable> {
    // Routed networks, one per interface, in interface order.
    let mut routed: Vec<(&str, &FirewallIntent)> = intents
        .iter()
        .filter_map(|i| i.interface.as_deref().map(|name| (name, i)))
        .collect();
    routed.sort_by(|a, b| (a.0, &a.1.network).cmp(&(b.0, &b.1.network)));
    routed.dedup_by(|later, earlier| later.0 == earlier.0);

    let mut inet = Tables::default();
    let mut bridge = Tables::default();

    for &(name, intent) in &routed {
        let b = quote(name);
        if intent.internal {
            inet.add(
                CHAIN_FORWARD,
                FILTER_FORWARD,
                format!("iifname {b} oifname != {b} drop"),
            );
            inet.add(
                CHAIN_FORWARD,
                FILTER_FORWARD,
                format!("iifname != {b} oifname {b} drop"),
            );
            // Nothing crosses the bridge at all: isolation would add nothing.
            continue;
        }
        if intent.published_only {
            inet.add(
                CHAIN_FORWARD,
                FILTER_FORWARD,
                // Connections another node's service balanced to an endpoint here carry the
                // routing mesh's conntrack mark (`services::mesh`): taken like published ones.
                format!(
                    "oifname {b} iifname != {all} ct state != {{ established, related }} ct status & dnat == 0 ct mark & {MESH_CT_MARK:#x} == 0 drop",
                    all = all_bridges()
                ),
            );
        }
        // Two constant-size rules per isolated network, matching every other Weft bridge by
        // name prefix (Docker's two-stage isolation chains, in nftables): the ruleset grows
        // linearly with the number of networks, not quadratically.
        let has_others = routed
            .iter()
            .any(|(other, o)| *other != name && !o.internal);
        if intent.isolation && has_others {
            let all = all_bridges();
            inet.add(
                CHAIN_FORWARD,
                FILTER_FORWARD,
                format!("iifname {b} oifname != {b} oifname {all} drop"),
            );
            inet.add(
                CHAIN_FORWARD,
                FILTER_FORWARD,
                format!("oifname {b} iifname != {b} iifname {all} drop"),
            );
        }
    }

    for &(name, intent) in &routed {
        if !intent.masquerade || intent.internal {
            continue;
        }
        for subnet in sorted(&intent.subnets) {
            inet.add(
                CHAIN_POSTROUTING,
                NAT_POSTROUTING,
                format!(
                    "{} saddr {subnet} oifname != {} masquerade",
                    l3(&subnet),
                    quote(name)
                ),
            );
        }
    }

    for &(_, intent) in &routed {
        if intent.icc {
            continue;
        }
        for subnet in sorted(&intent.subnets) {
            bridge.add(
                CHAIN_FORWARD,
                FILTER_FORWARD,
                format!("{} daddr {subnet} drop", l3(&subnet)),
            );
        }
    }

    for &(_, intent) in &routed {
        if let Some(guard) = &intent.anycast_guard {
            bridge.add(
                CHAIN_PREROUTING,
                FILTER_PREROUTING,
                format!(
                    "iifname {} ether saddr {} drop",
                    quote(&guard.port),
                    guard.mac
                ),
            );
        }
    }

    if routed.iter().any(|(_, i)| i.tunnel_guard) {
        inet.add(
            CHAIN_OUTPUT,
            FILTER_OUTPUT,
            format!(
                "ip6 daddr {} oifname != \"{}*\" drop",
                crate::drivers::wireguard::tunnel_net(),
                crate::drivers::wireguard::LINK_PREFIX
            ),
        );
    }

    let mut out = BTreeMap::new();
    for (family, tables) in [(NftFamily::Inet, inet), (NftFamily::Bridge, bridge)] {
        if !tables.table.chains.is_empty() {
            out.insert(family, tables.table);
        }
    }
    out
}

/// Base chain spec of the guard against loopback addresses from outside: the prerouting hook
/// at raw priority, before connection tracking and before any DNAT.
pub const FILTER_PREROUTING_RAW: &str = "type filter hook prerouting priority -300; policy accept;";
/// Chains of localhost publishing ([`localhost_chains`]).
pub const CHAIN_LOCALHOST_GUARD: &str = "localhost-guard";
pub const CHAIN_LOCALHOST_POSTROUTING: &str = "localhost-postrouting";

/// Localhost publishing (`127.0.0.1:HOSTPORT` reaches a published port, as with Docker and
/// the portmap plugin), without opening the node's loopback to anyone else. The output hook
/// DNATs the connection to the endpoint; the kernel then routes a packet with source
/// 127.0.0.1 out of the bridge only because `route_localnet` is on for Weft's routed
/// bridges alone (set by the planner; never `all`, never the underlay). This adds, for the
/// IPv4 routed networks among `intents` (empty if there are none):
///
/// - `localhost-postrouting`: such packets are masqueraded to the bridge's address, so the
///   endpoint answers the node, not its own loopback;
/// - `localhost-guard`: nothing with a loopback source or destination is accepted from any
///   interface but `lo` — the kernel would drop it as a martian anyway, except that a DNAT
///   in prerouting (a published port) runs before that check and would forward a
///   neighbour's `127.0.0.1:HOSTPORT` to the endpoint, and `route_localnet` on a bridge would
///   let its endpoints reach the node's loopback-only services (kube-proxy's CVE-2020-8558).
///   It runs before connection tracking, so it sees the addresses as they arrive: answers to
///   the masqueraded connections come back to the bridge's address and are de-NATed later.
pub fn localhost_chains(intents: &[FirewallIntent]) -> BTreeMap<String, NftChain> {
    let routed_v4 = intents.iter().any(|i| {
        i.interface.is_some() && !i.internal && i.subnets.iter().any(|s| s.addr().is_ipv4())
    });
    let mut chains = BTreeMap::new();
    if !routed_v4 {
        return chains;
    }
    let lo = "iifname != \"lo\"";
    chains.insert(
        CHAIN_LOCALHOST_GUARD.to_string(),
        NftChain {
            base: Some(FILTER_PREROUTING_RAW.to_string()),
            rules: vec![
                rule(format!("{lo} ip daddr 127.0.0.0/8 drop")),
                rule(format!("{lo} ip saddr 127.0.0.0/8 drop")),
            ],
        },
    );
    chains.insert(
        CHAIN_LOCALHOST_POSTROUTING.to_string(),
        NftChain {
            base: Some(NAT_POSTROUTING.to_string()),
            rules: vec![rule(format!(
                "ip saddr 127.0.0.0/8 oifname \"{}b-*\" masquerade",
                crate::names::LINK_PREFIX
            ))],
        },
    );
    chains
}

/// The tables as one nft script (`nft -f -` input, without any flush): the reference text
/// form of what [`render`] produces, comments included. Tabs, one statement a line, a
/// newline before every `}` (nft 1.0.6's parser wants one).
pub fn to_nft_script(tables: &BTreeMap<NftFamily, NftTable>) -> String {
    let mut s = String::new();
    for (family, table) in tables {
        let _ = writeln!(s, "table {} {NFT_TABLE} {{", family.as_str());
        for (name, chain) in &table.chains {
            let _ = writeln!(s, "\tchain {name} {{");
            if let Some(base) = &chain.base {
                let _ = writeln!(s, "\t\t{base}");
            }
            for rule in &chain.rules {
                let _ = writeln!(s, "\t\t{} comment \"weft:{}\"", rule.body, rule.id);
            }
            let _ = writeln!(s, "\t}}");
        }
        let _ = writeln!(s, "}}");
    }
    s
}

/// Builds one table; a rule whose id is already in the table is not added twice.
#[derive(Default)]
struct Tables {
    table: NftTable,
}

impl Tables {
    fn add(&mut self, chain: &str, base: &str, body: String) {
        let rule = rule(body);
        let taken = self
            .table
            .chains
            .values()
            .any(|c| c.rules.iter().any(|r| r.id == rule.id));
        if taken {
            return;
        }
        self.table
            .chains
            .entry(chain.to_string())
            .or_insert_with(|| NftChain {
                base: Some(base.to_string()),
                rules: Vec::new(),
            })
            .rules
            .push(rule);
    }
}

/// Every Weft bridge, as an nft wildcard.
fn all_bridges() -> String {
    format!("\"{}b-*\"", crate::names::LINK_PREFIX)
}

/// An interface name as an nft string. Weft's names are `[A-Za-z0-9_.:-]`; anything else
/// is escaped away rather than trusted.
fn quote(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        .collect();
    format!("\"{clean}\"")
}

fn l3(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    }
}

/// Canonical (host bits cleared), sorted, deduplicated.
fn sorted(subnets: &[IpNet]) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = subnets.iter().map(IpNet::trunc).collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Mac;
    use std::collections::BTreeSet;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    fn bridge_intent(network: &str, iface: &str, subnets: &[&str]) -> FirewallIntent {
        FirewallIntent {
            network: network.into(),
            interface: Some(iface.into()),
            subnets: subnets.iter().map(|s| net(s)).collect(),
            masquerade: true,
            internal: false,
            isolation: true,
            icc: true,
            published_only: false,
            anycast_guard: None,
            tunnel_guard: false,
        }
    }

    fn published_only(mut intent: FirewallIntent) -> FirewallIntent {
        intent.published_only = true;
        intent
    }

    fn bodies(
        tables: &BTreeMap<NftFamily, NftTable>,
        family: NftFamily,
        chain: &str,
    ) -> Vec<String> {
        tables
            .get(&family)
            .and_then(|t| t.chains.get(chain))
            .map(|c| c.rules.iter().map(|r| r.body.clone()).collect())
            .unwrap_or_default()
    }

    /// The kind of verdict a rule body ends in (`drop`, `masquerade`, `dnat`, `jump`...).
    pub(crate) fn verdict(body: &str) -> &str {
        [
            "drop",
            "accept",
            "masquerade",
            "dnat",
            "snat",
            "jump",
            "goto",
            "return",
        ]
        .into_iter()
        .filter_map(|v| body.rfind(&format!(" {v}")).map(|at| (at, v)))
        .chain(body.starts_with("drop").then_some((0, "drop")))
        .max()
        .map(|(_, v)| v)
        .unwrap_or("continue")
    }

    /// The executor does not keep rule order within a chain (placing a rule costs `nft` a
    /// fetch of the chain), so every chain must mean the same in any order: one verdict kind
    /// per chain (drops, or masquerades of distinct subnets, ...).
    #[test]
    fn every_chain_means_the_same_in_any_order() {
        let mut internal = bridge_intent("c", "wfb-c", &["10.2.0.0/24"]);
        internal.internal = true;
        let mut quiet = bridge_intent("d", "wfb-d", &["10.3.0.0/24", "fd00:3::/64"]);
        quiet.icc = false;
        let mut overlay = bridge_intent("e", "wfb-e", &["10.4.0.0/24"]);
        overlay.anycast_guard = Some(AnycastGuard {
            port: "wfx-e".into(),
            mac: Mac([2, 0x57, 0, 0, 0, 1]),
        });
        let tables = render(&[
            published_only(bridge_intent("a", "wfb-a", &["10.0.0.0/24"])),
            bridge_intent("b", "wfb-b", &["10.1.0.0/24", "fd00:1::/64"]),
            published_only(internal),
            published_only(quiet),
            published_only(overlay),
        ]);
        for (family, table) in &tables {
            for (name, chain) in &table.chains {
                let kinds: BTreeSet<&str> = chain.rules.iter().map(|r| verdict(&r.body)).collect();
                assert_eq!(kinds.len(), 1, "{family:?} {name}: {kinds:?}");
            }
        }
        assert_eq!(
            verdict("ip saddr 10.0.0.0/24 oifname != \"b\" masquerade"),
            "masquerade"
        );
        assert_eq!(
            verdict("iifname \"wfb-a\" oifname != \"wfb-a\" drop"),
            "drop"
        );
    }

    #[test]
    fn no_intents_no_tables() {
        assert!(render(&[]).is_empty());
        assert!(render(&[FirewallIntent::none("mv")]).is_empty());
    }

    #[test]
    fn masquerade_per_subnet_and_family() {
        let t = render(&[bridge_intent("a", "wfb-a", &["10.0.0.0/24", "fd00:1::/64"])]);
        assert_eq!(
            bodies(&t, NftFamily::Inet, CHAIN_POSTROUTING),
            vec![
                r#"ip saddr 10.0.0.0/24 oifname != "wfb-a" masquerade"#,
                r#"ip6 saddr fd00:1::/64 oifname != "wfb-a" masquerade"#,
            ]
        );
        let chain = &t[&NftFamily::Inet].chains[CHAIN_POSTROUTING];
        assert_eq!(
            chain.base.as_deref(),
            Some("type nat hook postrouting priority 100; policy accept;")
        );
        // One network alone: isolation has nobody to isolate from, ICC on: no other chains.
        assert_eq!(t[&NftFamily::Inet].chains.len(), 1);
        assert!(!t.contains_key(&NftFamily::Bridge));
    }

    #[test]
    fn no_masquerade_when_off_or_internal() {
        let mut off = bridge_intent("a", "wfb-a", &["10.0.0.0/24"]);
        off.masquerade = false;
        assert!(render(&[off]).is_empty());

        let mut internal = bridge_intent("a", "wfb-a", &["10.0.0.0/24"]);
        internal.internal = true;
        let t = render(&[internal]);
        assert!(bodies(&t, NftFamily::Inet, CHAIN_POSTROUTING).is_empty());
    }

    #[test]
    fn internal_drops_everything_crossing_the_bridge() {
        let mut internal = bridge_intent("a", "wfb-a", &["10.0.0.0/24"]);
        internal.internal = true;
        let t = render(&[internal]);
        assert_eq!(
            bodies(&t, NftFamily::Inet, CHAIN_FORWARD),
            vec![
                r#"iifname "wfb-a" oifname != "wfb-a" drop"#,
                r#"iifname != "wfb-a" oifname "wfb-a" drop"#,
            ]
        );
        assert_eq!(
            t[&NftFamily::Inet].chains[CHAIN_FORWARD].base.as_deref(),
            Some("type filter hook forward priority 0; policy accept;")
        );
    }

    #[test]
    fn isolation_between_networks() {
        let t = render(&[
            bridge_intent("a", "wfb-a", &["10.0.0.0/24"]),
            bridge_intent("b", "wfb-b", &["10.0.1.0/24"]),
            bridge_intent("c", "wfb-c", &["10.0.2.0/24"]),
        ]);
        let mut want = Vec::new();
        for n in ["wfb-a", "wfb-b", "wfb-c"] {
            want.push(format!(
                r#"iifname "{n}" oifname != "{n}" oifname "wfb-*" drop"#
            ));
            want.push(format!(
                r#"oifname "{n}" iifname != "{n}" iifname "wfb-*" drop"#
            ));
        }
        assert_eq!(bodies(&t, NftFamily::Inet, CHAIN_FORWARD), want);
    }

    #[test]
    fn isolation_applies_if_either_side_asks() {
        let mut open = bridge_intent("b", "wfb-b", &["10.0.1.0/24"]);
        open.isolation = false;
        let mut open2 = bridge_intent("c", "wfb-c", &["10.0.2.0/24"]);
        open2.isolation = false;
        let t = render(&[bridge_intent("a", "wfb-a", &["10.0.0.0/24"]), open, open2]);
        // Only a's rules: they cut a off from b and c in both directions; b and c still talk.
        assert_eq!(
            bodies(&t, NftFamily::Inet, CHAIN_FORWARD),
            vec![
                r#"iifname "wfb-a" oifname != "wfb-a" oifname "wfb-*" drop"#,
                r#"oifname "wfb-a" iifname != "wfb-a" iifname "wfb-*" drop"#,
            ]
        );
    }

    #[test]
    fn isolation_rules_grow_linearly_with_networks() {
        let intents: Vec<_> = (0..1000)
            .map(|i| {
                bridge_intent(
                    &format!("n{i}"),
                    &format!("wfb-{i:08x}"),
                    &[&format!("10.{}.{}.0/24", i / 256, i % 256)],
                )
            })
            .collect();
        let t = render(&intents);
        let rules = &t[&NftFamily::Inet].chains[CHAIN_FORWARD].rules;
        assert_eq!(rules.len(), 2000);
        assert!(rules.iter().all(|r| r.body.len() < 100));
    }

    #[test]
    fn internal_networks_are_left_out_of_isolation_sets() {
        let mut internal = bridge_intent("b", "wfb-b", &["10.0.1.0/24"]);
        internal.internal = true;
        let t = render(&[bridge_intent("a", "wfb-a", &["10.0.0.0/24"]), internal]);
        assert_eq!(
            bodies(&t, NftFamily::Inet, CHAIN_FORWARD),
            vec![
                r#"iifname "wfb-b" oifname != "wfb-b" drop"#,
                r#"iifname != "wfb-b" oifname "wfb-b" drop"#,
            ]
        );
    }

    #[test]
    fn inbound_published_drops_what_was_neither_dnated_nor_a_reply() {
        let t = render(&[
            published_only(bridge_intent("a", "wfb-a", &["10.0.0.0/24", "fd00:1::/64"])),
            bridge_intent("b", "wfb-b", &["10.0.1.0/24"]),
        ]);
        let forward = bodies(&t, NftFamily::Inet, CHAIN_FORWARD);
        // One rule per network whatever its subnets (it names the bridge, not the subnets);
        // the routed network b gets none.
        let inbound: Vec<&String> = forward.iter().filter(|b| b.contains("ct state")).collect();
        assert_eq!(
            inbound,
            vec![
                r#"oifname "wfb-a" iifname != "wfb-*" ct state != { established, related } ct status & dnat == 0 ct mark & 0x4000000 == 0 drop"#
            ]
        );
        assert!(published_only(bridge_intent("a", "wfb-a", &[])).needs_nftables());
    }

    #[test]
    fn internal_networks_need_no_inbound_rule() {
        let mut internal = published_only(bridge_intent("a", "wfb-a", &["10.0.0.0/24"]));
        internal.internal = true;
        let t = render(&[internal]);
        assert!(
            bodies(&t, NftFamily::Inet, CHAIN_FORWARD)
                .iter()
                .all(|b| !b.contains("ct state")),
            "{t:?}"
        );
    }

    #[test]
    fn icc_off_in_the_bridge_family() {
        let mut a = bridge_intent("a", "wfb-a", &["fd00:1::/64", "10.0.0.0/24"]);
        a.icc = false;
        let t = render(&[a]);
        assert_eq!(
            bodies(&t, NftFamily::Bridge, CHAIN_FORWARD),
            vec!["ip daddr 10.0.0.0/24 drop", "ip6 daddr fd00:1::/64 drop"]
        );
        assert_eq!(
            t[&NftFamily::Bridge].chains[CHAIN_FORWARD].base.as_deref(),
            Some("type filter hook forward priority 0; policy accept;")
        );
    }

    #[test]
    fn anycast_guard_in_bridge_prerouting() {
        let mut a = bridge_intent("a", "wfb-a", &["10.0.0.0/24"]);
        a.anycast_guard = Some(AnycastGuard {
            port: "wfx-a".into(),
            mac: Mac([0x02, 0x57, 0xde, 0xad, 0xbe, 0xef]),
        });
        let t = render(&[a]);
        assert_eq!(
            bodies(&t, NftFamily::Bridge, CHAIN_PREROUTING),
            vec![r#"iifname "wfx-a" ether saddr 02:57:de:ad:be:ef drop"#]
        );
        assert_eq!(
            t[&NftFamily::Bridge].chains[CHAIN_PREROUTING]
                .base
                .as_deref(),
            Some("type filter hook prerouting priority 0; policy accept;")
        );
    }

    #[test]
    fn localhost_chains_for_routed_ipv4_networks_only() {
        let chains = localhost_chains(&[bridge_intent("a", "wfb-a", &["10.0.0.0/24"])]);
        let bodies =
            |c: &str| -> Vec<String> { chains[c].rules.iter().map(|r| r.body.clone()).collect() };
        assert_eq!(
            bodies(CHAIN_LOCALHOST_GUARD),
            vec![
                r#"iifname != "lo" ip daddr 127.0.0.0/8 drop"#,
                r#"iifname != "lo" ip saddr 127.0.0.0/8 drop"#,
            ]
        );
        assert_eq!(
            chains[CHAIN_LOCALHOST_GUARD].base.as_deref(),
            Some("type filter hook prerouting priority -300; policy accept;")
        );
        assert_eq!(
            bodies(CHAIN_LOCALHOST_POSTROUTING),
            vec![r#"ip saddr 127.0.0.0/8 oifname "wfb-*" masquerade"#]
        );
        assert_eq!(
            chains[CHAIN_LOCALHOST_POSTROUTING].base.as_deref(),
            Some(NAT_POSTROUTING)
        );
        for chain in chains.values() {
            let kinds: BTreeSet<&str> = chain.rules.iter().map(|r| verdict(&r.body)).collect();
            assert_eq!(kinds.len(), 1, "{kinds:?}");
        }

        let mut internal = bridge_intent("b", "wfb-b", &["10.0.1.0/24"]);
        internal.internal = true;
        assert!(localhost_chains(&[internal]).is_empty());
        assert!(localhost_chains(&[bridge_intent("c", "wfb-c", &["fd00:1::/64"])]).is_empty());
        assert!(localhost_chains(&[FirewallIntent::none("mv")]).is_empty());
        assert!(localhost_chains(&[]).is_empty());
    }

    #[test]
    fn rule_ids_are_content_hashes() {
        let a = rule("ip saddr 10.0.0.0/24 oifname != \"wfb-a\" masquerade");
        let same = rule("ip saddr 10.0.0.0/24 oifname != \"wfb-a\" masquerade");
        let other = rule("ip saddr 10.0.1.0/24 oifname != \"wfb-a\" masquerade");
        assert_eq!(a.id, same.id);
        assert_ne!(a.id, other.id);
        assert_eq!(a.id.len(), 16);
        // Pinned: ids must not change between versions (FNV-1a 64 reference vectors).
        assert_eq!(rule_id(""), "cbf29ce484222325");
        assert_eq!(rule_id("a"), "af63dc4c8601ec8c");
        assert_eq!(rule_id("foobar"), "85944171f73967e8");
    }

    #[test]
    fn rule_ids_change_iff_bodies_change() {
        let before = render(&[
            bridge_intent("a", "wfb-a", &["10.0.0.0/24"]),
            bridge_intent("b", "wfb-b", &["10.0.1.0/24"]),
        ]);
        let mut b_no_masq = bridge_intent("b", "wfb-b", &["10.0.1.0/24"]);
        b_no_masq.masquerade = false;
        let after = render(&[bridge_intent("a", "wfb-a", &["10.0.0.0/24"]), b_no_masq]);
        let all = |t: &BTreeMap<NftFamily, NftTable>| -> Vec<NftRule> {
            t.values()
                .flat_map(|t| t.chains.values())
                .flat_map(|c| c.rules.clone())
                .collect()
        };
        let (before, after) = (all(&before), all(&after));
        for r in &before {
            for s in &after {
                assert_eq!(r.id == s.id, r.body == s.body, "{r:?} vs {s:?}");
            }
        }
        // The unchanged masquerade rule of a kept its id; b's is gone.
        assert_eq!(before.len(), after.len() + 1);
    }

    #[test]
    fn render_is_order_independent() {
        let mut a = bridge_intent("a", "wfb-a", &["10.0.0.0/24"]);
        a.icc = false;
        let b = bridge_intent("b", "wfb-b", &["10.0.1.0/24"]);
        let mut c = bridge_intent("c", "wfb-c", &["10.0.2.0/24"]);
        c.internal = true;
        let one = render(&[a.clone(), b.clone(), c.clone()]);
        let two = render(&[c, b, a]);
        assert_eq!(one, two);
    }

    #[test]
    fn interface_names_are_never_trusted_into_nft_text() {
        assert_eq!(quote("wfb-1\" accept; #"), "\"wfb-1accept\"");
    }

    #[test]
    fn script_shape() {
        let t = render(&[bridge_intent("a", "wfb-a", &["10.0.0.0/24"])]);
        let id = rule_id(r#"ip saddr 10.0.0.0/24 oifname != "wfb-a" masquerade"#);
        assert_eq!(
            to_nft_script(&t),
            format!(
                "table inet weft {{\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority 100; policy accept;\n\t\tip saddr 10.0.0.0/24 oifname != \"wfb-a\" masquerade comment \"weft:{id}\"\n\t}}\n}}\n"
            )
        );
    }
}
