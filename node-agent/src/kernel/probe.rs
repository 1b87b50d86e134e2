//! What this kernel can do, found by trying: kernels built without modules (like the one
//! Weft's CI runs on) lack whole link kinds, and the only reliable test is to create one.
//!
//! Throwaway links carry the alias `weft:probe`, so if the agent dies mid-probe the next
//! pass garbage-collects them like any other owned link that is not desired.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::kernel::handle::Kernel;
use crate::kernel::nft;
use crate::model::{IpvlanMode, Link, LinkKind, MacvlanMode};

/// Which link kinds and tools work in the namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub bridge: bool,
    pub vxlan: bool,
    pub macvlan: bool,
    pub ipvlan: bool,
    pub vlan: bool,
    pub nftables: bool,
    pub wireguard: bool,
}

static PROBES: AtomicU32 = AtomicU32::new(0);

fn throwaway(name: String, kind: LinkKind) -> Link {
    Link {
        name,
        alias: "weft:probe".into(),
        kind,
        mtu: None,
        master: None,
        up: false,
        mac: None,
    }
}

impl Kernel {
    /// Create `link`; report whether that worked. With `keep`, leave it for the caller to
    /// delete (a parent for the other probes).
    async fn try_create(&self, link: &Link, keep: bool) -> bool {
        let (writes, result) = self.netlink.create_link(link).await;
        match result {
            Ok(()) => {
                if !keep {
                    let _ = self.netlink.delete_link(&link.name).await;
                }
                true
            }
            Err(e) => {
                // Two or more writes sent = the creation itself went through and a later
                // step failed; the link is ours all the same (its name was free a moment
                // ago), so remove it whether or not it got its alias.
                if writes >= 2 {
                    self.force_delete(&link.name).await;
                }
                tracing::debug!(link = %link.name, error = %e, "probe failed");
                false
            }
        }
    }

    async fn force_delete(&self, name: &str) {
        if let Ok(Some(raw)) = self.netlink.get_link(name).await {
            let mut msg = netlink_packet_route::link::LinkMessage::default();
            msg.header.index = raw.index;
            let _ = self
                .netlink
                .ack(
                    netlink_packet_route::RouteNetlinkMessage::DelLink(msg),
                    0,
                    || format!("delete probe link {name}"),
                )
                .await;
        }
    }
}

impl Kernel {
    /// Create and delete a throwaway link of each kind and report which worked.
    pub async fn probe(&self) -> Capabilities {
        let k = self;
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}", ((std::process::id() << 8) | (n & 0xff)) & 0xff_ffff);
        let name = |p: &str| format!("wp{p}{tag}");

        let bridge = k
            .try_create(&throwaway(name("b"), LinkKind::Bridge), false)
            .await;
        let vxlan = k
            .try_create(
                &throwaway(
                    name("x"),
                    LinkKind::Vxlan {
                        vni: 16_000_000 + (n % 700_000),
                        port: 4789,
                        local: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        underlay: None,
                        learning: false,
                        proxy: false,
                    },
                ),
                false,
            )
            .await;

        // macvlan, ipvlan and vlan need a parent: a throwaway veth pair.
        let parent = name("v");
        let peer = name("w");
        let have_parent = k
            .try_create(&throwaway(parent.clone(), LinkKind::Veth { peer }), true)
            .await;
        let (mut macvlan, mut ipvlan, mut vlan) = (false, false, false);
        if have_parent {
            macvlan = k
                .try_create(
                    &throwaway(
                        name("m"),
                        LinkKind::Macvlan {
                            parent: parent.clone(),
                            mode: MacvlanMode::Bridge,
                        },
                    ),
                    false,
                )
                .await;
            ipvlan = k
                .try_create(
                    &throwaway(
                        name("i"),
                        LinkKind::Ipvlan {
                            parent: parent.clone(),
                            mode: IpvlanMode::L2,
                        },
                    ),
                    false,
                )
                .await;
            vlan = k
                .try_create(
                    &throwaway(
                        name("l"),
                        LinkKind::Vlan {
                            parent: parent.clone(),
                            id: 42,
                        },
                    ),
                    false,
                )
                .await;
            let _ = k.netlink.delete_link(&parent).await;
        }
        let wireguard = k
            .try_create(&throwaway(name("g"), LinkKind::Wireguard), false)
            .await;
        let nftables = nft::available(k.netns()).await;
        Capabilities {
            bridge,
            vxlan,
            macvlan,
            ipvlan,
            vlan,
            nftables,
            wireguard,
        }
    }
}
