//! The kernel layer against a real kernel (run as root). Every test works in its own
//! throwaway network namespace `weft-k-<pid>-<n>`, removed again by a drop guard (also on
//! panic); the host's namespace is never touched and no traffic leaves those namespaces.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use weft_agent::kernel::{Change, Kernel, base_chain, diff, nft_tables_equivalent};
use weft_agent::model::{
    Address, FdbEntry, KernelState, Link, LinkKind, Mac, MacvlanMode, Neighbour, NftChain,
    NftFamily, NftRule, NftTable, Route,
};

/// Say loudly that a test did not run. Written to the real stderr, not through `eprintln!`,
/// which the test harness captures and hides for passing tests.
fn skip(test: &str, what: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: {test}: this kernel has no {what} support (Unknown device type)"
    );
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A throwaway network namespace, deleted on drop.
struct Ns {
    name: String,
    path: PathBuf,
}

impl Ns {
    fn new() -> Ns {
        let name = format!(
            "weft-k-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = Path::new("/var/run/netns").join(&name);
        let ns = Ns { name, path };
        ns.sh("ip link set lo up");
        ns
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    /// Run a shell command inside the namespace; panic with its stderr if it fails.
    fn sh(&self, cmd: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn link(name: &str, network: &str, kind: LinkKind) -> Link {
    Link {
        name: name.into(),
        alias: format!("weft:{network}"),
        kind,
        mtu: None,
        master: None,
        up: true,
        mac: None,
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

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn state(links: Vec<Link>) -> KernelState {
    KernelState {
        links: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
        ..Default::default()
    }
}

/// Observed must equal desired, reading "don't care" (`None` MTU/MAC) as whatever the
/// kernel chose and nft rules by id.
fn assert_reads_back(desired: &KernelState, observed: &KernelState) {
    let mut expect = desired.links.clone();
    for (name, l) in &mut expect {
        let o = observed
            .links
            .get(name)
            .unwrap_or_else(|| panic!("link {name} not observed: {observed:#?}"));
        if l.mtu.is_none() {
            l.mtu = o.mtu;
        }
        if l.mac.is_none() {
            l.mac = o.mac;
        }
    }
    assert_eq!(expect, observed.links, "links");
    assert_eq!(desired.addresses, observed.addresses, "addresses");
    assert_eq!(desired.routes, observed.routes, "routes");
    assert_eq!(desired.fdb, observed.fdb, "fdb");
    assert_eq!(desired.neighbours, observed.neighbours, "neighbours");
    assert_eq!(
        desired.nft.keys().collect::<Vec<_>>(),
        observed.nft.keys().collect::<Vec<_>>(),
        "nft tables"
    );
    for (fam, t) in &desired.nft {
        assert!(
            nft_tables_equivalent(t, &observed.nft[fam]),
            "nft {fam:?}: {t:#?} vs {:#?}",
            observed.nft[fam]
        );
    }
    for (k, v) in &desired.sysctls {
        assert_eq!(observed.sysctls.get(k), Some(v), "sysctl {k}");
    }
}

/// Apply the diff, then check the result reads back and a second pass changes nothing.
async fn converge(k: &Kernel, desired: &KernelState) -> KernelState {
    let changes = diff(desired, &k.observe().await.expect("observe"));
    let report = k.apply(&changes).await;
    assert!(
        report.failed.is_empty(),
        "apply failed: {:#?}",
        report.failed
    );
    let observed = k.observe().await.expect("observe");
    assert_reads_back(desired, &observed);
    let again = diff(desired, &observed);
    assert_eq!(again, vec![], "second pass must be empty");
    assert_eq!(k.apply(&again).await.writes, 0);
    observed
}

#[tokio::test]
async fn bridge_address_route_sysctl() {
    let ns = Ns::new();
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let k = Kernel::open(ns.path()).await.unwrap();
    assert_eq!(k.netns(), ns.path());
    let mut br = link("wfb-t1", "net1", LinkKind::Bridge);
    br.mtu = Some(1400);
    let mut port = link(
        "wfv-t1",
        "net1",
        LinkKind::Veth {
            peer: "wfv-t1c".into(),
        },
    );
    port.master = Some("wfb-t1".into());
    port.mtu = Some(1400);
    port.mac = Some(mac("02:00:00:00:01:01"));
    let mut d = state(vec![br, port]);
    d.addresses.insert(addr("wfb-t1", "10.10.0.1/24"));
    d.addresses.insert(addr("wfb-t1", "fd00:10::1/64"));
    d.routes.insert(Route {
        destination: "10.20.0.0/16".parse().unwrap(),
        link: "wfb-t1".into(),
        gateway: Some(ip("10.10.0.254")),
    });
    d.routes.insert(Route {
        destination: "10.30.0.0/16".parse().unwrap(),
        link: "wfb-t1".into(),
        gateway: None,
    });
    d.routes.insert(Route {
        destination: "fd00:30::/48".parse().unwrap(),
        link: "wfb-t1".into(),
        gateway: None,
    });
    d.sysctls.insert("net/ipv4/ip_forward".into(), "1".into());
    d.sysctls
        .insert("net/ipv6/conf/all/forwarding".into(), "1".into());
    let o = converge(&k, &d).await;
    assert_eq!(o.links["wfv-t1"].master.as_deref(), Some("wfb-t1"));
    assert_eq!(o.links["wfb-t1"].mtu, Some(1400));
    assert!(o.links["wfb-t1"].up);

    // Cross-check with iproute2 and that the host netns was not touched.
    assert!(ns.sh("ip -d link show wfb-t1").contains("alias weft:net1"));
    assert!(
        ns.sh("ip route show 10.20.0.0/16")
            .contains("via 10.10.0.254 dev wfb-t1 proto 87")
    );
    assert_eq!(ns.sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
    assert!(
        !Path::new("/sys/class/net/wfb-t1").exists(),
        "created in the host netns"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward,
        "host sysctl changed"
    );
    // The kernel's own prefix route is not Weft's.
    assert!(
        !o.routes
            .iter()
            .any(|r| r.destination.to_string() == "10.10.0.0/24")
    );
}

#[tokio::test]
async fn veth_pair_with_both_ends_owned() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    let a = link(
        "wfv-pa",
        "p",
        LinkKind::Veth {
            peer: "wfv-pb".into(),
        },
    );
    let mut b = link(
        "wfv-pb",
        "p",
        LinkKind::Veth {
            peer: "wfv-pa".into(),
        },
    );
    b.mtu = Some(1380);
    let d = state(vec![a, b]);
    converge(&k, &d).await;
    assert!(ns.sh("ip -d link show wfv-pb").contains("alias weft:p"));
    converge(&k, &KernelState::default()).await;
    assert_eq!(ns.sh("ip -o link show").lines().count(), 1);
}

#[tokio::test]
async fn vxlan_fdb_and_neighbours() {
    let ns = Ns::new();
    ns.sh("ip link add und2 type veth peer name und2p && ip addr add 192.168.50.1/24 dev und2 && ip link set und2 up && ip link set und2p up");
    let k = Kernel::open(ns.path()).await.unwrap();
    let local = ip("192.168.50.1");
    let mut vx = link(
        "wfx-t2",
        "ov",
        LinkKind::Vxlan {
            vni: 4242,
            port: 4789,
            local,
            underlay: Some("und2".into()),
            learning: false,
            proxy: false,
        },
    );
    vx.mtu = Some(1450);
    let vx2 = link(
        "wfx-t2b",
        "ov2",
        LinkKind::Vxlan {
            vni: 4243,
            port: 8472,
            local,
            underlay: Some("und2".into()),
            learning: true,
            proxy: false,
        },
    );
    let mut d = state(vec![vx, vx2]);
    let zero = Mac([0; 6]);
    d.fdb.insert(FdbEntry {
        link: "wfx-t2".into(),
        mac: zero,
        dst: ip("192.168.50.2"),
    });
    d.fdb.insert(FdbEntry {
        link: "wfx-t2".into(),
        mac: zero,
        dst: ip("192.168.50.3"),
    });
    d.fdb.insert(FdbEntry {
        link: "wfx-t2".into(),
        mac: mac("02:aa:00:00:00:01"),
        dst: ip("192.168.50.2"),
    });
    d.fdb.insert(FdbEntry {
        link: "wfx-t2b".into(),
        mac: zero,
        dst: ip("192.168.50.4"),
    });
    d.addresses.insert(addr("wfx-t2", "10.50.0.1/24"));
    d.neighbours.insert(Neighbour {
        link: "wfx-t2".into(),
        ip: ip("10.50.0.2"),
        mac: mac("02:aa:00:00:00:01"),
    });
    d.neighbours.insert(Neighbour {
        link: "wfx-t2".into(),
        ip: ip("fd00:50::2"),
        mac: mac("02:aa:00:00:00:01"),
    });
    converge(&k, &d).await;

    let details = ns.sh("ip -d link show wfx-t2");
    for want in [
        "vxlan id 4242",
        "local 192.168.50.1",
        "dev und2",
        "dstport 4789",
        "nolearning",
    ] {
        assert!(details.contains(want), "{want:?} missing in {details}");
    }
    assert!(ns.sh("ip -d link show wfx-t2b").contains("dstport 8472"));
    let fdb = ns.sh("bridge fdb show dev wfx-t2");
    assert!(
        fdb.contains("00:00:00:00:00:00 dst 192.168.50.2 self permanent"),
        "{fdb}"
    );
    assert!(
        fdb.contains("00:00:00:00:00:00 dst 192.168.50.3 self permanent"),
        "{fdb}"
    );
    assert!(
        fdb.contains("02:aa:00:00:00:01 dst 192.168.50.2 self permanent"),
        "{fdb}"
    );
    assert!(
        ns.sh("ip neigh show dev wfx-t2")
            .contains("10.50.0.2 lladdr 02:aa:00:00:00:01 PERMANENT")
    );
    // The underlay is foreign and untouched.
    assert!(!ns.sh("ip -d link show und2").contains("alias"));

    // Drop one flood peer: exactly that entry goes.
    let gone = FdbEntry {
        link: "wfx-t2".into(),
        mac: zero,
        dst: ip("192.168.50.3"),
    };
    d.fdb.remove(&gone);
    let c = diff(&d, &k.observe().await.unwrap());
    assert_eq!(c, vec![Change::DeleteFdb(gone)]);
    converge(&k, &d).await;
    assert!(
        ns.sh("bridge fdb show dev wfx-t2")
            .contains("dst 192.168.50.2 self permanent")
    );
}

#[tokio::test]
async fn macvlan_bridge_and_private_on_foreign_parent() {
    let ns = Ns::new();
    ns.sh("ip link add par3 type veth peer name par3p && ip link set par3 up && ip addr add 192.168.60.1/24 dev par3 && ip route add default via 192.168.60.254 dev par3");
    let k = Kernel::open(ns.path()).await.unwrap();
    let before = ns.sh("ip -o link show par3");
    let a = link(
        "wfm3a",
        "mv",
        LinkKind::Macvlan {
            parent: "par3".into(),
            mode: MacvlanMode::Bridge,
        },
    );
    let mut b = link(
        "wfm3b",
        "mv",
        LinkKind::Macvlan {
            parent: "par3".into(),
            mode: MacvlanMode::Private,
        },
    );
    b.mac = Some(mac("02:00:00:00:03:02"));
    b.up = false;
    let mut d = state(vec![a, b]);
    d.addresses.insert(addr("wfm3a", "192.168.60.10/24"));
    converge(&k, &d).await;
    assert!(
        ns.sh("ip -d link show wfm3a")
            .contains("macvlan mode bridge")
    );
    assert!(
        ns.sh("ip -d link show wfm3b")
            .contains("macvlan mode private")
    );

    // Facts about foreign interfaces for the planner.
    let par = k.interface("par3").await.unwrap().expect("par3 exists");
    assert!(par.up);
    assert_eq!(par.kind.as_deref(), Some("veth"));
    assert!(par.addresses.contains(&"192.168.60.1/24".parse().unwrap()));
    assert_eq!(k.interface("nope0").await.unwrap(), None);
    assert_eq!(
        k.default_route_interface().await.unwrap().as_deref(),
        Some("par3")
    );

    // Garbage collection leaves the foreign parent alone.
    converge(&k, &KernelState::default()).await;
    let after = ns.sh("ip -o link show par3");
    assert_eq!(before.replace("M-DOWN", ""), after.replace("M-DOWN", ""));
}

fn nft_desired() -> KernelState {
    let rule = |id: &str, body: &str| NftRule {
        id: id.into(),
        body: body.into(),
        handle: None,
    };
    let mut inet = NftTable::default();
    inet.chains.insert(
        "forward".into(),
        NftChain {
            base: Some(base_chain("filter", "forward", 0, "accept")),
            rules: vec![
                rule("h1", "ct state established,related accept"),
                rule("h2", "iifname \"wfb-x\" jump isolation"),
            ],
        },
    );
    inet.chains.insert(
        "isolation".into(),
        NftChain {
            base: None,
            rules: vec![rule("h3", "oifname != \"wfb-x\" drop")],
        },
    );
    inet.chains.insert(
        "postrouting".into(),
        NftChain {
            base: Some(base_chain("nat", "postrouting", 100, "accept")),
            rules: vec![rule(
                "h4",
                "ip saddr 10.60.0.0/24 oifname != \"wfb-x\" masquerade",
            )],
        },
    );
    let mut bridge = NftTable::default();
    bridge.chains.insert(
        "forward".into(),
        NftChain {
            base: Some(base_chain("filter", "forward", 0, "accept")),
            rules: vec![
                rule("b1", "ether type arp accept"),
                rule("b2", "iifname \"wfv-x\" oifname \"wfv-y\" drop"),
            ],
        },
    );
    let mut d = KernelState::default();
    d.nft.insert(NftFamily::Inet, inet);
    d.nft.insert(NftFamily::Bridge, bridge);
    d
}

#[tokio::test]
async fn nft_tables_apply_read_back_and_restore() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    let d = nft_desired();
    converge(&k, &d).await;
    let listed = ns.sh("nft list table inet weft");
    assert!(
        listed.contains("masquerade comment \"weft:h4\""),
        "{listed}"
    );

    // Flushed out of band: seen, and restored by one more apply.
    ns.sh("nft flush table inet weft");
    let c = diff(&d, &k.observe().await.unwrap());
    assert_eq!(
        c,
        vec![Change::SetNftTable(
            NftFamily::Inet,
            d.nft[&NftFamily::Inet].clone()
        )]
    );
    let report = k.apply(&c).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.writes, 1);
    assert_eq!(diff(&d, &k.observe().await.unwrap()), vec![]);

    // A foreign rule slipped into Weft's table is noticed too.
    ns.sh("nft add rule inet weft forward accept");
    assert_eq!(diff(&d, &k.observe().await.unwrap()).len(), 1);
    converge(&k, &d).await;

    // A changed rule (new content hash = new id) is rewritten; dropping a family deletes it.
    let mut d2 = d.clone();
    d2.nft.remove(&NftFamily::Bridge);
    inet_rules(&mut d2, "isolation")[0] = NftRule {
        id: "h3b".into(),
        body: "oifname != \"wfb-y\" drop".into(),
        handle: None,
    };
    let c = diff(&d2, &k.observe().await.unwrap());
    assert_eq!(c.len(), 2, "{c:?}");
    converge(&k, &d2).await;
    assert!(ns.sh("nft list table inet weft").contains("wfb-y"));
    assert!(!ns.sh("nft list tables").contains("bridge weft"));

    // A bad rule fails alone and is reported; the transaction leaves the old table intact.
    let mut bad = d2.clone();
    inet_rules(&mut bad, "isolation")[0] = NftRule {
        id: "zz".into(),
        body: "this is not nft".into(),
        handle: None,
    };
    bad.nft
        .insert(NftFamily::Bridge, d.nft[&NftFamily::Bridge].clone());
    let report = k.apply(&diff(&bad, &k.observe().await.unwrap())).await;
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(matches!(
        report.failed[0].0,
        Change::SetNftTable(NftFamily::Inet, _)
    ));
    let o = k.observe().await.unwrap();
    assert!(nft_tables_equivalent(
        &o.nft[&NftFamily::Inet],
        &d2.nft[&NftFamily::Inet]
    ));
    assert!(
        o.nft.contains_key(&NftFamily::Bridge),
        "the good table still went in"
    );
}

/// The rules of one chain of the desired `inet weft` table.
fn inet_rules<'a>(state: &'a mut KernelState, chain: &str) -> &'a mut Vec<NftRule> {
    &mut state
        .nft
        .get_mut(&NftFamily::Inet)
        .and_then(|t| t.chains.get_mut(chain))
        .unwrap_or_else(|| panic!("no inet chain {chain}"))
        .rules
}

/// `nft -a list` handles of the rules carrying these Weft ids, in the order given.
fn nft_handles(ns: &Ns, family: &str, ids: &[&str]) -> Vec<u64> {
    let listed = ns.sh(&format!("nft -a list table {family} weft"));
    ids.iter()
        .map(|id| {
            listed
                .lines()
                .find(|l| l.contains(&format!("\"weft:{id}\"")))
                .and_then(|l| l.rsplit_once("# handle "))
                .and_then(|(_, h)| h.trim().parse().ok())
                .unwrap_or_else(|| panic!("rule {id} not found in\n{listed}"))
        })
        .collect()
}

#[tokio::test]
async fn nft_updates_write_only_the_difference_and_own_writes_keep_the_cache() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    let _events = k.events().await.unwrap();
    let d = nft_desired();
    converge(&k, &d).await;
    let before = nft_handles(&ns, "inet", &["h1", "h2", "h4"]);

    // A new rule in the middle and one at the end; one rule gone. The rules that stay keep
    // their handles (they were not rewritten); new ones are appended (order within a Weft
    // chain does not matter).
    let mut d2 = d.clone();
    let inet = d2.nft.get_mut(&NftFamily::Inet).unwrap();
    let fwd = &mut inet.chains.get_mut("forward").unwrap().rules;
    let new = |id: &str, body: &str| NftRule {
        id: id.into(),
        body: body.into(),
        handle: None,
    };
    fwd.insert(1, new("n1", "iifname \"wfb-n\" drop"));
    fwd.push(new("n2", "oifname \"wfb-n\" drop"));
    inet.chains.get_mut("postrouting").unwrap().rules.clear();
    let listings = k.nft_listings();
    let in_process = k.nft_in_process_transactions();
    converge(&k, &d2).await;
    // A small change runs through libnftables in the agent's process (installed with nft),
    // not a child `nft`.
    assert!(
        k.nft_in_process_transactions() > in_process,
        "the update ran a child nft"
    );
    assert_eq!(
        nft_handles(&ns, "inet", &["h1", "h2"]),
        before[..2].to_vec(),
        "kept rules were rewritten"
    );
    let listed = ns.sh("nft list chain inet weft forward");
    let order: Vec<usize> = ["weft:h1", "weft:h2", "weft:n1", "weft:n2"]
        .iter()
        .map(|id| {
            listed
                .find(id)
                .unwrap_or_else(|| panic!("{id} missing:\n{listed}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{listed}");
    assert!(!ns.sh("nft list table inet weft").contains("weft:h4"));

    // Weft's own transactions did not invalidate the listing: reading back costs no `nft`
    // run, and what the cache says is what the kernel holds.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let cached = k.observe().await.unwrap();
    assert_eq!(diff(&d2, &cached), vec![]);
    assert_eq!(k.nft_listings(), listings, "own writes caused a listing");
    // The new rules' handles, learnt from the transaction's notifications, are the kernel's.
    let cached_handles: Vec<u64> = cached.nft[&NftFamily::Inet].chains["forward"]
        .rules
        .iter()
        .filter_map(|r| r.handle)
        .collect();
    assert_eq!(
        cached_handles,
        nft_handles(&ns, "inet", &["h1", "n1", "h2", "n2"])
    );
    // A change that another writer already made (a CNI ADD racing a pass) runs no nft.
    let again = Change::SetNftTable(NftFamily::Inet, d2.nft[&NftFamily::Inet].clone());
    assert_eq!(k.apply(&[again]).await.writes, 0);

    // Somebody else's change does: the next read lists again and sees it.
    ns.sh("nft add rule inet weft forward accept");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(diff(&d2, &k.observe().await.unwrap()).len(), 1);
    assert!(k.nft_listings() > listings);
    converge(&k, &d2).await;
    assert_eq!(
        ns.sh("nft list chain inet weft forward")
            .matches("comment")
            .count(),
        4,
        "the foreign rule was deleted, Weft's kept"
    );

    // A bad rule through the in-process path fails with nft's own message, and nothing of
    // its transaction is applied.
    let mut bad = d2.clone();
    inet_rules(&mut bad, "forward").push(NftRule {
        id: "bad".into(),
        body: "this is not nft".into(),
        handle: None,
    });
    let report = k.apply(&diff(&bad, &k.observe().await.unwrap())).await;
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(
        report.failed[0].1.to_string().contains("syntax error"),
        "{:?}",
        report.failed
    );
    assert_eq!(diff(&d2, &k.observe().await.unwrap()), vec![]);
}

#[tokio::test]
async fn garbage_collection_spares_foreign_objects() {
    let ns = Ns::new();
    ns.sh(
        "ip link add fbr type bridge && ip link set fbr alias weft-not-really && \
         ip link add fvx type vxlan id 77 dstport 4789 local 127.0.0.1 nolearning && \
         bridge fdb append 00:00:00:00:00:00 dev fvx dst 10.0.0.9 && \
         ip link add fpar type veth peer name fparp && \
         ip link add link fpar name fmv type macvlan mode bridge && \
         ip link set fbr up && ip addr add 10.70.0.1/24 dev fbr && ip route add 10.71.0.0/16 dev fbr && \
         nft add table inet foreign && \
         nft add chain inet foreign c '{ type filter hook forward priority 0; policy accept; }' && \
         nft add rule inet foreign c accept comment '\"weft:impostor\"'",
    );
    let snapshot = |ns: &Ns| {
        (
            ns.sh("ip -o link show | grep -E ' (fbr|fvx|fpar|fparp|fmv)[:@]' | sed 's/ M-DOWN//'"),
            ns.sh("ip -o addr show dev fbr"),
            ns.sh("ip route show dev fbr"),
            ns.sh("bridge fdb show dev fvx"),
            ns.sh("nft list table inet foreign"),
        )
    };
    let before = snapshot(&ns);
    let k = Kernel::open(ns.path()).await.unwrap();
    let nothing = |o: &KernelState| KernelState {
        sysctls: o.sysctls.clone(),
        ..Default::default()
    };
    let o = k.observe().await.unwrap();
    assert_eq!(o, nothing(&o), "foreign objects are not Weft's");

    // Weft's own objects, partly on foreign links.
    let mut d = nft_desired();
    let mut port = link(
        "wfv-t6",
        "g",
        LinkKind::Veth {
            peer: "wfv-t6c".into(),
        },
    );
    port.master = Some("wfb-t6".into());
    d.links = state(vec![
        link("wfb-t6", "g", LinkKind::Bridge),
        port,
        link(
            "wfx-t6",
            "g",
            LinkKind::Vxlan {
                vni: 78,
                port: 4790,
                local: ip("127.0.0.1"),
                underlay: None,
                learning: false,
                proxy: false,
            },
        ),
        link(
            "wfm-t6",
            "g",
            LinkKind::Macvlan {
                parent: "fpar".into(),
                mode: MacvlanMode::Bridge,
            },
        ),
    ])
    .links;
    d.addresses.insert(addr("wfb-t6", "10.80.0.1/24"));
    d.routes.insert(Route {
        destination: "10.81.0.0/16".parse().unwrap(),
        link: "wfb-t6".into(),
        gateway: None,
    });
    d.fdb.insert(FdbEntry {
        link: "wfx-t6".into(),
        mac: Mac([0; 6]),
        dst: ip("10.0.0.9"),
    });
    converge(&k, &d).await;

    // Everything Weft owns goes; nothing else moves.
    let o = converge(&k, &KernelState::default()).await;
    assert_eq!(o, nothing(&o));
    assert_eq!(snapshot(&ns), before);
    assert!(
        !ns.sh("ip -o link show").contains("wf"),
        "owned links left: {}",
        ns.sh("ip -o link show")
    );
}

#[tokio::test]
async fn tampering_is_seen_and_undone() {
    let ns = Ns::new();
    ns.sh("ip link add und7 type veth peer name und7p && ip addr add 192.168.70.1/24 dev und7 && ip link set und7 up");
    let k = Kernel::open(ns.path()).await.unwrap();
    let mut port = link(
        "wfv-t7",
        "t",
        LinkKind::Veth {
            peer: "wfv-t7c".into(),
        },
    );
    port.master = Some("wfb-t7".into());
    let mut d = state(vec![
        link("wfb-t7", "t", LinkKind::Bridge),
        port.clone(),
        link(
            "wfx-t7",
            "t",
            LinkKind::Vxlan {
                vni: 7,
                port: 4789,
                local: ip("192.168.70.1"),
                underlay: Some("und7".into()),
                learning: false,
                proxy: false,
            },
        ),
    ]);
    d.addresses.insert(addr("wfb-t7", "10.7.0.1/24"));
    let flood = FdbEntry {
        link: "wfx-t7".into(),
        mac: Mac([0; 6]),
        dst: ip("192.168.70.2"),
    };
    d.fdb.insert(flood.clone());
    d.fdb.insert(FdbEntry {
        link: "wfx-t7".into(),
        mac: Mac([0; 6]),
        dst: ip("192.168.70.3"),
    });
    converge(&k, &d).await;

    ns.sh("ip link del wfv-t7 && ip addr flush dev wfb-t7 && bridge fdb del 00:00:00:00:00:00 dev wfx-t7 dst 192.168.70.2");
    let c = diff(&d, &k.observe().await.unwrap());
    assert_eq!(
        c,
        vec![
            Change::CreateLink(port),
            Change::AddAddress(addr("wfb-t7", "10.7.0.1/24")),
            Change::AddFdb(flood)
        ]
    );
    let report = k.apply(&c).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(diff(&d, &k.observe().await.unwrap()), vec![]);

    // A weft alias removed out of band makes a link foreign: Weft then refuses to touch it.
    ns.sh("ip link set wfb-t7 alias someone-else");
    let o = k.observe().await.unwrap();
    assert!(!o.links.contains_key("wfb-t7"));
    let report = k.apply(&diff(&d, &o)).await;
    assert!(
        report.failed.iter().any(
            |(c, e)| matches!(c, Change::CreateLink(l) if l.name == "wfb-t7")
                && e.to_string().contains("not Weft's")
        ),
        "{:?}",
        report.failed
    );
    assert!(
        ns.sh("ip -d link show wfb-t7")
            .contains("alias someone-else")
    );
}

#[tokio::test]
async fn vni_change_recreates_mtu_change_sets_in_place() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    let kind = |vni| LinkKind::Vxlan {
        vni,
        port: 4789,
        local: ip("127.0.0.1"),
        underlay: None,
        learning: false,
        proxy: false,
    };
    let mut d = state(vec![link("wfx-t8", "v", kind(100))]);
    d.fdb.insert(FdbEntry {
        link: "wfx-t8".into(),
        mac: Mac([0; 6]),
        dst: ip("10.0.0.2"),
    });
    converge(&k, &d).await;

    d.links.get_mut("wfx-t8").unwrap().kind = kind(101);
    let c = diff(&d, &k.observe().await.unwrap());
    assert!(
        matches!(&c[0], Change::RecreateLink(l) if l.name == "wfx-t8"),
        "{c:?}"
    );
    assert_eq!(c.len(), 2, "re-create + its FDB entry: {c:?}");
    converge(&k, &d).await;
    assert!(ns.sh("ip -d link show wfx-t8").contains("vxlan id 101"));

    let index = k.interface("wfx-t8").await.unwrap().unwrap().index;
    d.links.get_mut("wfx-t8").unwrap().mtu = Some(1300);
    let c = diff(&d, &k.observe().await.unwrap());
    assert_eq!(
        c,
        vec![Change::SetLink {
            name: "wfx-t8".into(),
            mtu: Some(1300),
            master: None,
            up: None,
            alias: None,
            mac: None
        }]
    );
    assert_eq!(k.apply(&c).await.writes, 1);
    converge(&k, &d).await;
    assert_eq!(
        k.interface("wfx-t8").await.unwrap().unwrap().index,
        index,
        "same link, not re-created"
    );
}

#[tokio::test]
async fn events_report_out_of_band_changes() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    let mut events = k.events().await.unwrap();
    converge(&k, &state(vec![link("wfb-t9", "e", LinkKind::Bridge)])).await;
    // Our own writes notify too: drain them.
    let mut own = 0;
    while tokio::time::timeout(Duration::from_millis(200), events.next())
        .await
        .is_ok()
    {
        own += 1;
    }
    let _ = writeln!(std::io::stderr(), "events from creating one bridge: {own}");
    assert!(own > 0);
    ns.sh("ip link del wfb-t9");
    let got = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
    assert_eq!(
        got,
        Ok(Some(())),
        "no event within 1 s of an out-of-band delete"
    );
}

/// Whether no event arrives within `quiet`.
async fn quiet_for(
    events: &mut (impl futures::Stream<Item = ()> + Unpin),
    quiet: Duration,
) -> bool {
    tokio::time::timeout(quiet, events.next()).await.is_err()
}

#[tokio::test]
async fn events_stay_quiet_for_own_writes_and_what_the_kernel_learns() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    let mut events = k.events().await.unwrap();
    let mut d = state(vec![link("wfb-t10", "q", LinkKind::Bridge)]);
    converge(&k, &d).await;
    // Creating a link still notifies (the kernel stamps no writer on most link messages).
    while !quiet_for(&mut events, Duration::from_millis(300)).await {}
    // An address written through the agent's own socket, with the kernel's prefix and
    // local routes that follow it: nothing.
    d.addresses.insert(addr("wfb-t10", "10.77.0.1/24"));
    converge(&k, &d).await;
    assert!(
        quiet_for(&mut events, Duration::from_millis(300)).await,
        "the agent's own address write woke it"
    );
    // What the kernel learns or makes by itself: a dynamic neighbour, an IPv6 link-local
    // address, a route of another protocol.
    ns.sh("ip neigh add 10.77.0.5 lladdr 02:00:00:00:00:05 dev wfb-t10 nud reachable");
    ns.sh("ip addr add fe80::77/64 dev wfb-t10 scope link");
    ns.sh("ip route add 10.78.0.0/24 dev wfb-t10 proto static");
    assert!(
        quiet_for(&mut events, Duration::from_millis(300)).await,
        "a learned neighbour, a link-local address or a foreign route woke the agent"
    );
    // What may be Weft's, changed by somebody else: a permanent neighbour added, then
    // deleted (which the kernel reports as FAILED), an address flushed.
    for change in [
        "ip neigh add 10.77.0.6 lladdr 02:00:00:00:00:06 dev wfb-t10 nud permanent",
        "ip neigh del 10.77.0.6 dev wfb-t10",
        "ip addr del 10.77.0.1/24 dev wfb-t10",
    ] {
        ns.sh(change);
        assert!(
            !quiet_for(&mut events, Duration::from_secs(1)).await,
            "no event within 1 s of `{change}`"
        );
        while !quiet_for(&mut events, Duration::from_millis(200)).await {}
    }
}

#[tokio::test]
async fn probe_reports_this_kernel() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    let caps = k.probe().await;
    eprintln!("capabilities: {caps:?}");
    assert!(
        caps.bridge && caps.vxlan && caps.macvlan && caps.nftables,
        "{caps:?}"
    );
    // FACTS.md: this kernel has neither (built without them, no modules).
    assert!(!caps.ipvlan && !caps.vlan, "{caps:?}");
    // Nothing left behind.
    assert_eq!(k.observe().await.unwrap().links.len(), 0);
    assert_eq!(
        ns.sh("ip -o link show").lines().count(),
        1,
        "{}",
        ns.sh("ip -o link show")
    );
}

#[tokio::test]
async fn ipvlan_when_supported() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    if !k.probe().await.ipvlan {
        skip("ipvlan_when_supported", "ipvlan");
        return;
    }
    ns.sh("ip link add par11 type veth peer name par11p");
    let d = state(vec![link(
        "wfi-t11",
        "iv",
        LinkKind::Ipvlan {
            parent: "par11".into(),
            mode: weft_agent::model::IpvlanMode::L2,
        },
    )]);
    converge(&k, &d).await;
    converge(&k, &KernelState::default()).await;
}

#[tokio::test]
async fn vlan_when_supported() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    if !k.probe().await.vlan {
        skip("vlan_when_supported", "802.1q vlan");
        return;
    }
    // Up, as a node's uplink is: a VLAN cannot come up on a parent that is down (ENETDOWN).
    ns.sh("ip link add par12 type veth peer name par12p");
    ns.sh("ip link set par12 up");
    let d = state(vec![link(
        "par12.10",
        "vl",
        LinkKind::Vlan {
            parent: "par12".into(),
            id: 10,
        },
    )]);
    converge(&k, &d).await;
    converge(&k, &KernelState::default()).await;
}

#[tokio::test]
async fn unsupported_kind_fails_readably_and_does_not_block_others() {
    let ns = Ns::new();
    let k = Kernel::open(ns.path()).await.unwrap();
    ns.sh("ip link add par13 type veth peer name par13p");
    let d = state(vec![
        link(
            "wfl-t13",
            "x",
            LinkKind::Vlan {
                parent: "par13".into(),
                id: 13,
            },
        ),
        link("wfb-t13", "x", LinkKind::Bridge),
    ]);
    let report = k.apply(&diff(&d, &k.observe().await.unwrap())).await;
    if k.probe().await.vlan {
        assert!(report.failed.is_empty());
        return;
    }
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(
        report.failed[0]
            .1
            .to_string()
            .contains("no 802.1q vlan support"),
        "{}",
        report.failed[0].1
    );
    assert!(k.observe().await.unwrap().links.contains_key("wfb-t13"));
}

#[tokio::test]
async fn missing_netns_is_a_readable_error() {
    let err = Kernel::open(Some(Path::new("/var/run/netns/weft-k-does-not-exist")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("weft-k-does-not-exist"), "{err}");
}
