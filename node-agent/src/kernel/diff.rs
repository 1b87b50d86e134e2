//! Desired vs observed → the ordered list of writes that makes the kernel match. Pure.
//!
//! Order of the output, and why:
//! 1. nft tables (isolation rules exist before ports come up; they match interfaces by
//!    name, so they do not need the links to exist);
//! 2. removals of neighbours, routes, addresses on links that stay (on links that go, they
//!    go with the link);
//! 3. link deletions, children (macvlan, vlan, vxlan on an underlay, bridge ports) first;
//! 4. link creations and re-creations, masters and parents first;
//! 5. in-place link changes (only the fields that differ);
//! 6. sysctls (after links: per-interface keys need the interface);
//! 7. additions of addresses, then routes (a gateway must be on-link), FDB, neighbours.
//! 8. removals of FDB entries on links that stay: make before break, so a peer's VTEP that
//!    moves (a key rotation moves an encrypted overlay's) always has an entry. A unicast
//!    MAC's entry is not removed at all when it is re-added elsewhere: that add replaces it
//!    in the kernel in one request.
//!
//! A route whose destination stays and whose link or gateway changes is replaced in one
//! request at step 7 (also make before break: a key rotation moves the tunnel prefix's
//! route to the next WireGuard link this way), not removed at 2 and added at 7.
//!
//! A link that the kernel will take down with another one (a macvlan whose parent is
//! re-created, the far end of a re-created veth) is created again rather than diffed, and
//! everything desired on a created or re-created link is added in full.

use std::collections::BTreeSet;

use crate::kernel::changes::Change;
use crate::kernel::nft::plan::nft_tables_equivalent;
use crate::model::{KernelState, Link, LinkKind, NftFamily, Route};

/// `""` (or `Some("")`) in an observed kind means the kernel only told us an index in some
/// other namespace: it matches any name.
fn name_matches(desired: &str, observed: &str) -> bool {
    observed.is_empty() || desired == observed
}

/// Same kind-specific attributes, i.e. no re-creation needed.
pub(crate) fn kind_matches(desired: &LinkKind, observed: &LinkKind) -> bool {
    use LinkKind::*;
    match (desired, observed) {
        (Bridge, Bridge) | (Wireguard, Wireguard) => true,
        (
            Vxlan {
                vni,
                port,
                local,
                underlay,
                learning,
                proxy,
            },
            Vxlan {
                vni: ov,
                port: op,
                local: ol,
                underlay: ou,
                learning: olr,
                proxy: opx,
            },
        ) => {
            vni == ov
                && port == op
                // No local address: the kernel reports none, which reads as 0.0.0.0.
                && (local == ol || (local.is_unspecified() && ol.is_unspecified()))
                && learning == olr
                && proxy == opx
                && match (underlay, ou) {
                    (Some(d), Some(o)) => name_matches(d, o),
                    (None, None) => true,
                    _ => false,
                }
        }
        (
            Macvlan { parent, mode },
            Macvlan {
                parent: op,
                mode: om,
            },
        ) => mode == om && name_matches(parent, op),
        (
            Ipvlan { parent, mode },
            Ipvlan {
                parent: op,
                mode: om,
            },
        ) => mode == om && name_matches(parent, op),
        (Vlan { parent, id }, Vlan { parent: op, id: oi }) => id == oi && name_matches(parent, op),
        (Veth { peer }, Veth { peer: op }) => name_matches(peer, op),
        // Spelled out, so a new kind cannot fall into "re-create every pass" unnoticed.
        (
            Bridge
            | Vxlan { .. }
            | Macvlan { .. }
            | Ipvlan { .. }
            | Vlan { .. }
            | Veth { .. }
            | Wireguard,
            _,
        ) => false,
    }
}

/// Links the kernel deletes together with `kind`'s owner: parent, underlay, veth peer.
fn lower_links(kind: &LinkKind) -> Vec<&str> {
    match kind {
        LinkKind::Macvlan { parent, .. }
        | LinkKind::Ipvlan { parent, .. }
        | LinkKind::Vlan { parent, .. } => {
            vec![parent.as_str()]
        }
        LinkKind::Vxlan {
            underlay: Some(u), ..
        } => vec![u.as_str()],
        LinkKind::Veth { peer } => vec![peer.as_str()],
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|n| !n.is_empty())
    .collect()
}

/// Links that must exist before `link` can be created (the veth peer is made with it).
fn creation_deps(link: &Link) -> Vec<&str> {
    let mut deps: Vec<&str> = match &link.kind {
        LinkKind::Veth { .. } => Vec::new(),
        kind => lower_links(kind),
    };
    deps.extend(link.master.as_deref());
    deps
}

/// Depth-first order of `names` such that every name comes after the names it depends on
/// (`deps`). Cycles (a planner bug) are broken instead of looping.
fn dependency_order<'a>(
    names: &BTreeSet<&'a str>,
    deps: impl Fn(&'a str) -> Vec<&'a str>,
) -> Vec<&'a str> {
    fn visit<'a>(
        n: &'a str,
        names: &BTreeSet<&'a str>,
        deps: &dyn Fn(&'a str) -> Vec<&'a str>,
        seen: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a str>,
    ) {
        if !seen.insert(n) {
            return;
        }
        for d in deps(n) {
            if names.contains(d) {
                visit(d, names, deps, seen, out);
            }
        }
        out.push(n);
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in names {
        visit(n, names, &deps, &mut seen, &mut out);
    }
    out
}

pub fn diff(desired: &KernelState, observed: &KernelState) -> Vec<Change> {
    let mut out = Vec::new();

    // 1. nft
    let families: BTreeSet<NftFamily> = desired
        .nft
        .keys()
        .chain(observed.nft.keys())
        .copied()
        .collect();
    for family in families {
        match (desired.nft.get(&family), observed.nft.get(&family)) {
            (Some(d), Some(o)) if nft_tables_equivalent(d, o) => {}
            (Some(d), _) => out.push(Change::SetNftTable(family, d.clone())),
            (None, Some(_)) => out.push(Change::DeleteNftTable(family)),
            (None, None) => {}
        }
    }

    // Which links go away: not desired, or of another kind (re-created)…
    let mut gone: BTreeSet<&str> = BTreeSet::new();
    let mut recreate: BTreeSet<&str> = BTreeSet::new();
    for (name, o) in &observed.links {
        match desired.links.get(name) {
            None => {
                gone.insert(name);
            }
            Some(d) if !kind_matches(&d.kind, &o.kind) => {
                gone.insert(name);
                recreate.insert(name);
            }
            Some(_) => {}
        }
    }
    // …and which desired links the kernel will take down with them.
    let mut vanish: BTreeSet<&str> = BTreeSet::new();
    loop {
        let more: Vec<&str> = observed
            .links
            .iter()
            .filter(|(name, _)| !gone.contains(name.as_str()) && !vanish.contains(name.as_str()))
            .filter(|(_, o)| {
                lower_links(&o.kind)
                    .iter()
                    .any(|l| gone.contains(l) || vanish.contains(l))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if more.is_empty() {
            break;
        }
        vanish.extend(more);
    }
    let create: BTreeSet<&str> = desired
        .links
        .keys()
        .map(String::as_str)
        .filter(|n| !observed.links.contains_key(*n) || vanish.contains(n) || recreate.contains(n))
        .collect();
    // Links whose addresses, routes, FDB and neighbours start from nothing.
    let fresh: BTreeSet<&str> = gone.iter().chain(&create).copied().collect();

    // 2. removals on links that stay
    let stays = |link: &str| !fresh.contains(link);
    let needed = |link: &str, present: bool| fresh.contains(link) || !present;
    for n in observed
        .neighbours
        .difference(&desired.neighbours)
        .filter(|n| stays(&n.link))
    {
        out.push(Change::DeleteNeighbour(n.clone()));
    }
    let route_adds: Vec<&Route> = desired
        .routes
        .iter()
        .filter(|r| needed(&r.link, observed.routes.contains(*r)))
        .collect();
    let mut route_removals: Vec<&Route> = observed
        .routes
        .difference(&desired.routes)
        .filter(|r| stays(&r.link))
        .collect();
    // Same destination, new link or gateway: one replace at step 7 instead.
    let mut replaces: BTreeSet<&Route> = BTreeSet::new();
    for add in &route_adds {
        if let Some(i) = route_removals
            .iter()
            .position(|r| r.destination == add.destination)
        {
            route_removals.remove(i);
            replaces.insert(add);
        }
    }
    for r in route_removals {
        out.push(Change::DeleteRoute(r.clone()));
    }
    for a in observed
        .addresses
        .difference(&desired.addresses)
        .filter(|a| stays(&a.link))
    {
        out.push(Change::DeleteAddress(a.clone()));
    }

    // 3. deletions, children first: order parents-first, then reverse.
    let delete: BTreeSet<&str> = observed
        .links
        .keys()
        .map(String::as_str)
        .filter(|n| !desired.links.contains_key(*n))
        .collect();
    let mut order = dependency_order(&delete, |n| {
        let Some(l) = observed.links.get(n) else {
            return Vec::new();
        };
        let mut deps = lower_links(&l.kind);
        deps.extend(l.master.as_deref());
        deps
    });
    order.reverse();
    out.extend(order.into_iter().map(|n| Change::DeleteLink(n.to_string())));

    // 4. creations, parents and masters first
    for name in dependency_order(&create, |n| {
        desired.links.get(n).map(creation_deps).unwrap_or_default()
    }) {
        if let Some(l) = desired.links.get(name) {
            out.push(if recreate.contains(name) {
                Change::RecreateLink(l.clone())
            } else {
                Change::CreateLink(l.clone())
            });
        }
    }

    // 5. in-place changes
    for (name, d) in &desired.links {
        if create.contains(name.as_str()) {
            continue;
        }
        let Some(o) = observed.links.get(name) else {
            continue;
        };
        // A master that goes away leaves its ports without one.
        let o_master = o
            .master
            .as_deref()
            .filter(|m| !gone.contains(m) && !vanish.contains(m));
        let mtu = d.mtu.filter(|m| o.mtu != Some(*m));
        let mac = d.mac.filter(|m| o.mac != Some(*m));
        let master = (d.master.as_deref() != o_master).then(|| d.master.clone());
        let up = (d.up != o.up).then_some(d.up);
        let alias = (d.alias != o.alias).then(|| d.alias.clone());
        if mtu.is_some() || mac.is_some() || master.is_some() || up.is_some() || alias.is_some() {
            out.push(Change::SetLink {
                name: name.clone(),
                mtu,
                master,
                up,
                alias,
                mac,
            });
        }
    }

    // 6. sysctls: only desired keys, never unset
    for (key, value) in &desired.sysctls {
        if observed.sysctls.get(key).map(|v| v.trim()) != Some(value.trim()) {
            out.push(Change::SetSysctl {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }

    // 7. additions
    for a in desired
        .addresses
        .iter()
        .filter(|a| needed(&a.link, observed.addresses.contains(*a)))
    {
        out.push(Change::AddAddress(a.clone()));
    }
    for r in route_adds {
        out.push(if replaces.contains(r) {
            Change::ReplaceRoute(r.clone())
        } else {
            Change::AddRoute(r.clone())
        });
    }
    let fdb_adds: Vec<_> = desired
        .fdb
        .iter()
        .filter(|e| needed(&e.link, observed.fdb.contains(*e)))
        .collect();
    for e in &fdb_adds {
        out.push(Change::AddFdb((*e).clone()));
    }
    for n in desired
        .neighbours
        .iter()
        .filter(|n| needed(&n.link, observed.neighbours.contains(*n)))
    {
        out.push(Change::AddNeighbour(n.clone()));
    }

    // 8. FDB removals, after the additions
    for e in observed
        .fdb
        .difference(&desired.fdb)
        .filter(|e| stays(&e.link))
    {
        let replaced =
            e.mac.is_unicast() && fdb_adds.iter().any(|a| a.link == e.link && a.mac == e.mac);
        if !replaced {
            out.push(Change::DeleteFdb(e.clone()));
        }
    }
    out
}

/// Names of links in creation order.
#[cfg(test)]
fn created_names(changes: &[Change]) -> Vec<&str> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::CreateLink(l) | Change::RecreateLink(l) => Some(l.name.as_str()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::kernel::base_chain;
    use crate::model::{
        Address, FdbEntry, Mac, MacvlanMode, Neighbour, NftChain, NftRule, NftTable, Route,
    };

    fn link(name: &str, kind: LinkKind) -> Link {
        Link {
            name: name.into(),
            alias: "weft:n".into(),
            kind,
            mtu: Some(1500),
            master: None,
            up: true,
            mac: None,
        }
    }
    fn vxlan(vni: u32) -> LinkKind {
        LinkKind::Vxlan {
            vni,
            port: 4789,
            local: "10.0.0.1".parse().unwrap(),
            underlay: Some("eth0".into()),
            learning: false,
            proxy: false,
        }
    }
    fn state(links: Vec<Link>) -> KernelState {
        KernelState {
            links: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
            ..Default::default()
        }
    }
    fn addr(link: &str, a: &str) -> Address {
        Address {
            link: link.into(),
            address: a.parse().unwrap(),
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn position(changes: &[Change], f: impl Fn(&Change) -> bool) -> usize {
        changes.iter().position(f).expect("change present")
    }
    fn rich() -> KernelState {
        let mut port = link("p1", LinkKind::Veth { peer: "p1c".into() });
        port.master = Some("br".into());
        let mut s = state(vec![
            link("br", LinkKind::Bridge),
            port,
            link("vx", vxlan(42)),
            link(
                "mv",
                LinkKind::Macvlan {
                    parent: "eth0".into(),
                    mode: MacvlanMode::Bridge,
                },
            ),
        ]);
        s.addresses.insert(addr("br", "10.1.0.1/24"));
        s.routes.insert(Route {
            destination: "10.9.0.0/16".parse().unwrap(),
            link: "br".into(),
            gateway: Some(ip("10.1.0.254")),
        });
        s.fdb.insert(FdbEntry {
            link: "vx".into(),
            mac: Mac([0; 6]),
            dst: ip("192.0.2.1"),
        });
        s.fdb.insert(FdbEntry {
            link: "vx".into(),
            mac: Mac([0; 6]),
            dst: ip("192.0.2.2"),
        });
        s.neighbours.insert(Neighbour {
            link: "vx".into(),
            ip: ip("10.1.0.9"),
            mac: Mac([2, 0, 0, 0, 0, 9]),
        });
        let mut t = NftTable::default();
        t.chains.insert(
            "forward".into(),
            NftChain {
                base: Some(base_chain("filter", "forward", 0, "accept")),
                rules: vec![NftRule {
                    id: "r1".into(),
                    body: "accept".into(),
                    handle: None,
                }],
            },
        );
        s.nft.insert(NftFamily::Inet, t);
        s.sysctls.insert("net/ipv4/ip_forward".into(), "1".into());
        s
    }

    #[test]
    fn matching_state_yields_nothing() {
        let s = rich();
        assert_eq!(diff(&s, &s), vec![]);
        // Observed carries more than desired asks about: kernel-chosen MTU/MAC, extra sysctls.
        let mut d = s.clone();
        for l in d.links.values_mut() {
            l.mtu = None;
        }
        let mut o = s.clone();
        for l in o.links.values_mut() {
            l.mac = Some(Mac([2, 1, 2, 3, 4, 5]));
        }
        o.sysctls
            .insert("net/ipv6/conf/all/forwarding".into(), "0".into());
        o.sysctls.insert("net/ipv4/ip_forward".into(), "1\n".into());
        // Observed nft rules have no bodies.
        for c in o.nft.get_mut(&NftFamily::Inet).unwrap().chains.values_mut() {
            for r in &mut c.rules {
                r.body.clear();
            }
        }
        assert_eq!(diff(&d, &o), vec![]);
    }

    #[test]
    fn everything_from_scratch_in_dependency_order() {
        let d = rich();
        let c = diff(&d, &KernelState::default());
        assert!(matches!(c[0], Change::SetNftTable(NftFamily::Inet, _)));
        let names = created_names(&c);
        assert_eq!(names.len(), 4);
        let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(at("br") < at("p1"), "master before port: {names:?}");
        let last_link = c.iter().rposition(|x| x.kind() == "link").unwrap();
        let sysctl = position(&c, |x| matches!(x, Change::SetSysctl { .. }));
        let first_addr = position(&c, |x| matches!(x, Change::AddAddress(_)));
        let first_route = position(&c, |x| matches!(x, Change::AddRoute(_)));
        assert!(last_link < sysctl && sysctl < first_addr && first_addr < first_route);
        assert_eq!(
            c.iter().filter(|x| matches!(x, Change::AddFdb(_))).count(),
            2
        );
        assert_eq!(
            c.iter()
                .filter(|x| matches!(x, Change::AddNeighbour(_)))
                .count(),
            1
        );
        assert!(!c.iter().any(|x| matches!(x, Change::SetLink { .. })));
    }

    #[test]
    fn parents_created_before_children() {
        let d = state(vec![
            link(
                "zz-parent",
                LinkKind::Veth {
                    peer: "zz-peer".into(),
                },
            ),
            link(
                "aa-mv",
                LinkKind::Macvlan {
                    parent: "zz-parent".into(),
                    mode: MacvlanMode::Private,
                },
            ),
            link(
                "bb-vlan",
                LinkKind::Vlan {
                    parent: "zz-parent".into(),
                    id: 10,
                },
            ),
        ]);
        let names = created_names(&diff(&d, &KernelState::default()))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        assert_eq!(names[0], "zz-parent");
    }

    #[test]
    fn garbage_collection_children_first_without_item_removals() {
        let o = rich();
        let mut child = link(
            "mv2",
            LinkKind::Macvlan {
                parent: "vx".into(),
                mode: MacvlanMode::Bridge,
            },
        );
        child.master = None;
        let mut o2 = o.clone();
        o2.links.insert("mv2".into(), child);
        let c = diff(&KernelState::default(), &o2);
        assert!(matches!(c[0], Change::DeleteNftTable(NftFamily::Inet)));
        let deletes: Vec<&str> = c
            .iter()
            .filter_map(|x| match x {
                Change::DeleteLink(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deletes.len(), 5);
        let at = |n: &str| deletes.iter().position(|x| *x == n).unwrap();
        assert!(at("mv2") < at("vx"), "child before parent: {deletes:?}");
        assert!(at("p1") < at("br"), "port before bridge: {deletes:?}");
        // Items go with their links; sysctls are never unset.
        assert_eq!(c.len(), 6, "{c:?}");
    }

    #[test]
    fn set_differences_of_items() {
        let d = rich();
        let mut o = rich();
        o.addresses.clear();
        o.addresses.insert(addr("br", "10.1.0.2/24"));
        let stale = FdbEntry {
            link: "vx".into(),
            mac: Mac([0; 6]),
            dst: ip("192.0.2.3"),
        };
        o.fdb.insert(stale.clone());
        o.fdb.remove(&FdbEntry {
            link: "vx".into(),
            mac: Mac([0; 6]),
            dst: ip("192.0.2.1"),
        });
        let c = diff(&d, &o);
        // FDB removals come last: the flood list never misses a peer in between.
        assert_eq!(
            c,
            vec![
                Change::DeleteAddress(addr("br", "10.1.0.2/24")),
                Change::AddAddress(addr("br", "10.1.0.1/24")),
                Change::AddFdb(FdbEntry {
                    link: "vx".into(),
                    mac: Mac([0; 6]),
                    dst: ip("192.0.2.1")
                }),
                Change::DeleteFdb(stale),
            ]
        );
    }

    #[test]
    fn a_moved_route_is_replaced_and_a_moved_unicast_mac_is_re_added_never_removed_first() {
        let mut o = rich();
        o.links
            .insert("wg0".into(), link("wg0", LinkKind::Wireguard));
        o.links
            .insert("wg1".into(), link("wg1", LinkKind::Wireguard));
        let tunnel: ipnet::IpNet = "fd77:6566:7400::/64".parse().unwrap();
        o.routes.insert(Route {
            destination: tunnel,
            link: "wg0".into(),
            gateway: None,
        });
        let old_vtep = FdbEntry {
            link: "vx".into(),
            mac: Mac([2, 0, 0, 0, 0, 9]),
            dst: ip("fd77:6566:7400::8"),
        };
        let old_flood = FdbEntry {
            mac: Mac([0; 6]),
            ..old_vtep.clone()
        };
        o.fdb.insert(old_vtep.clone());
        o.fdb.insert(old_flood.clone());

        let mut d = o.clone();
        let on_wg0 = Route {
            destination: tunnel,
            link: "wg0".into(),
            gateway: None,
        };
        assert!(d.routes.remove(&on_wg0));
        let moved = Route {
            link: "wg1".into(),
            ..on_wg0.clone()
        };
        d.routes.insert(moved.clone());
        d.fdb.remove(&old_vtep);
        d.fdb.remove(&old_flood);
        let new_vtep = FdbEntry {
            dst: ip("fd77:6566:7400::9"),
            ..old_vtep.clone()
        };
        let new_flood = FdbEntry {
            mac: Mac([0; 6]),
            ..new_vtep.clone()
        };
        d.fdb.insert(new_vtep.clone());
        d.fdb.insert(new_flood.clone());
        assert_eq!(
            diff(&d, &o),
            vec![
                Change::ReplaceRoute(moved),
                Change::AddFdb(new_flood),
                Change::AddFdb(new_vtep),
                Change::DeleteFdb(old_flood),
            ]
        );

        // A route whose destination goes is still deleted; one that is new is added.
        let mut gone = o.clone();
        gone.routes.remove(&on_wg0);
        assert_eq!(diff(&gone, &o), vec![Change::DeleteRoute(on_wg0.clone())]);
        assert_eq!(diff(&o, &gone), vec![Change::AddRoute(on_wg0)]);
    }

    #[test]
    fn every_kind_matches_itself_so_nothing_is_recreated_every_pass() {
        // A WireGuard link re-created every pass lost its keys and took the VXLAN devices
        // bound to it along (found by the VM tier).
        for kind in [
            LinkKind::Bridge,
            LinkKind::Wireguard,
            vxlan(42),
            LinkKind::Veth { peer: "p".into() },
            LinkKind::Vlan {
                parent: "eth0".into(),
                id: 10,
            },
        ] {
            assert!(kind_matches(&kind, &kind), "{kind:?}");
            let d = KernelState {
                links: [("l".to_string(), link("l", kind.clone()))].into(),
                ..Default::default()
            };
            assert_eq!(diff(&d, &d), vec![], "{kind:?}");
        }
        assert!(!kind_matches(&LinkKind::Wireguard, &LinkKind::Bridge));
    }

    #[test]
    fn kind_change_recreates_and_restores_items() {
        let d = rich();
        let mut o = rich();
        o.links.get_mut("vx").unwrap().kind = vxlan(43);
        let c = diff(&d, &o);
        assert_eq!(c[0], Change::RecreateLink(d.links["vx"].clone()));
        // FDB and neighbours on the re-created link are added again in full.
        assert_eq!(
            c.iter().filter(|x| matches!(x, Change::AddFdb(_))).count(),
            2
        );
        assert_eq!(
            c.iter()
                .filter(|x| matches!(x, Change::AddNeighbour(_)))
                .count(),
            1
        );
        assert_eq!(c.len(), 4, "{c:?}");
    }

    #[test]
    fn recreated_parent_takes_children_along() {
        let mut d = state(vec![
            link(
                "par",
                LinkKind::Veth {
                    peer: "parp".into(),
                },
            ),
            link(
                "mv",
                LinkKind::Macvlan {
                    parent: "par".into(),
                    mode: MacvlanMode::Bridge,
                },
            ),
        ]);
        d.addresses.insert(addr("mv", "10.0.0.1/24"));
        let mut o = d.clone();
        o.links.get_mut("par").unwrap().kind = LinkKind::Veth {
            peer: "other".into(),
        };
        let c = diff(&d, &o);
        assert_eq!(
            c,
            vec![
                Change::RecreateLink(d.links["par"].clone()),
                Change::CreateLink(d.links["mv"].clone()),
                Change::AddAddress(addr("mv", "10.0.0.1/24")),
            ]
        );
    }

    #[test]
    fn recreated_bridge_reattaches_ports() {
        let d = rich();
        let mut o = rich();
        // Pretend the bridge became something else: it must be re-created and p1 re-enslaved.
        o.links.get_mut("br").unwrap().kind = LinkKind::Veth { peer: "x".into() };
        let c = diff(&d, &o);
        assert!(c.contains(&Change::RecreateLink(d.links["br"].clone())));
        assert!(c.contains(&Change::SetLink {
            name: "p1".into(),
            mtu: None,
            master: Some(Some("br".into())),
            up: None,
            alias: None,
            mac: None
        }));
        assert!(c.contains(&Change::AddAddress(addr("br", "10.1.0.1/24"))));
    }

    #[test]
    fn set_link_carries_only_differences() {
        let mut d = rich();
        let o = rich();
        {
            let br = d.links.get_mut("br").unwrap();
            br.mtu = Some(9000);
        }
        {
            let p1 = d.links.get_mut("p1").unwrap();
            p1.master = None;
            p1.up = false;
            p1.alias = "weft:other".into();
            p1.mac = Some(Mac([2, 0, 0, 0, 0, 1]));
        }
        let c = diff(&d, &o);
        assert_eq!(
            c,
            vec![
                Change::SetLink {
                    name: "br".into(),
                    mtu: Some(9000),
                    master: None,
                    up: None,
                    alias: None,
                    mac: None
                },
                Change::SetLink {
                    name: "p1".into(),
                    mtu: None,
                    master: Some(None),
                    up: Some(false),
                    alias: Some("weft:other".into()),
                    mac: Some(Mac([2, 0, 0, 0, 0, 1]))
                },
            ]
        );
        assert!(c.iter().all(|x| x.kind() == "link"));
    }

    #[test]
    fn unknown_far_end_names_match_anything() {
        let d = rich();
        let mut o = rich();
        o.links.get_mut("p1").unwrap().kind = LinkKind::Veth {
            peer: String::new(),
        };
        assert_eq!(diff(&d, &o), vec![]);
        o.links.get_mut("p1").unwrap().kind = LinkKind::Veth {
            peer: "someone-else".into(),
        };
        assert!(matches!(diff(&d, &o)[0], Change::RecreateLink(_)));
    }

    #[test]
    fn nft_restored_when_flushed_or_tampered_and_deleted_when_undesired() {
        let d = rich();
        let mut flushed = rich();
        for ch in flushed
            .nft
            .get_mut(&NftFamily::Inet)
            .unwrap()
            .chains
            .values_mut()
        {
            ch.rules.clear();
        }
        assert_eq!(
            diff(&d, &flushed),
            vec![Change::SetNftTable(
                NftFamily::Inet,
                d.nft[&NftFamily::Inet].clone()
            )]
        );
        let mut foreign_rule = rich();
        foreign_rule
            .nft
            .get_mut(&NftFamily::Inet)
            .unwrap()
            .chains
            .get_mut("forward")
            .unwrap()
            .rules
            .push(NftRule {
                id: "<not weft's: handle 9>".into(),
                body: String::new(),
                handle: Some(9),
            });
        assert_eq!(diff(&d, &foreign_rule).len(), 1);
        let mut extra = rich();
        extra.nft.insert(NftFamily::Bridge, NftTable::default());
        assert_eq!(
            diff(&d, &extra),
            vec![Change::DeleteNftTable(NftFamily::Bridge)]
        );
        let mut missing = rich();
        missing.nft.clear();
        assert_eq!(diff(&d, &missing).len(), 1);
    }

    #[test]
    fn sysctls_set_when_different_or_missing_never_unset() {
        let mut d = KernelState::default();
        d.sysctls.insert("net/ipv4/ip_forward".into(), "1".into());
        let mut o = KernelState::default();
        o.sysctls.insert("net/ipv4/ip_forward".into(), "0".into());
        o.sysctls
            .insert("net/ipv6/conf/all/forwarding".into(), "1".into());
        assert_eq!(
            diff(&d, &o),
            vec![Change::SetSysctl {
                key: "net/ipv4/ip_forward".into(),
                value: "1".into()
            }]
        );
        assert_eq!(diff(&d, &KernelState::default()).len(), 1);
        assert_eq!(diff(&KernelState::default(), &o), vec![]);
    }

    #[test]
    fn change_kinds() {
        let d = rich();
        let c = diff(&d, &KernelState::default());
        let kinds: BTreeSet<&str> = c.iter().map(Change::kind).collect();
        assert_eq!(
            kinds,
            [
                "address",
                "fdb",
                "link",
                "neighbour",
                "nft",
                "route",
                "sysctl"
            ]
            .into_iter()
            .collect()
        );
    }
}
