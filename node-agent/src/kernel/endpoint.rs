//! Sandboxes: putting an endpoint's interface into a network namespace that is not the
//! node's (a pod, a container), configuring it there, and taking it away again.
//!
//! The interface is created *directly* inside the sandbox (`IFLA_NET_NS_FD` on the peer of
//! a veth, or on a macvlan/ipvlan child), already named and with its MAC: one request
//! instead of Docker's create → move → rename. Everything after that runs through a second
//! [`Kernel`] handle opened inside the sandbox and is diffed like the node itself, so the
//! same call attaches, repairs and does nothing when all is in place.
//!
//! Ownership: a host-side veth carries the alias `weft-ep:<namespace>/<name>` (on purpose
//! *not* `weft:`, so the node's own pass never treats it as a network object); the
//! interface inside the sandbox carries `weft:<network>` and is the only thing Weft touches
//! there (besides bringing `lo` up).

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoPortData, InfoPortKind,
    InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};

use crate::kernel::changes::{ApplyReport, Change};
use crate::kernel::diff::diff;
use crate::kernel::error::{KernelError, already_gone};
use crate::kernel::handle::Kernel;
use crate::kernel::host_ports::HostPort;
use crate::kernel::link::{self, LinkView, RawLink};
use crate::kernel::netns;
use crate::model::{Address, IpvlanMode, KernelState, Link, Mac, MacvlanMode, Route};
use crate::names;

pub use crate::model::ENDPOINT_ALIAS_PREFIX;

/// Link group of host-side endpoint interfaces taken out of service by a DEL and waiting
/// for their deletion ([`Kernel::disconnect_endpoint`]): deleted together in one request,
/// so several pay for the kernel's RCU waits once (`weft` in ASCII).
pub const RELEASE_GROUP: u32 = 0x7765_6674;

/// How the endpoint's interface reaches the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointLink {
    /// A veth pair: `host` on the node, enslaved to `bridge`; the peer in the sandbox.
    Veth {
        host: String,
        host_alias: String,
        bridge: String,
        /// Bridge hairpin mode on the host end, so the container reaches itself through a
        /// DNAT of the node (its own published port, a service VIP balanced to itself): with
        /// `br_netfilter` loaded, a DNAT'd packet is bridged back out the port it came in on,
        /// which a bridge only does in hairpin mode. The bridge driver sets it on every port,
        /// as Docker without its userland proxy and kubelet's `hairpin-veth` do: any endpoint
        /// may join a service by a label change, which must not need a link change. Hairpin
        /// also echoes the endpoint's broadcasts back to it; IPv6 DAD tells its own probes
        /// by their nonce (RFC 7527).
        hairpin: bool,
    },
    /// A macvlan child of `parent` (a node interface), living in the sandbox.
    Macvlan { parent: String, mode: MacvlanMode },
    /// An ipvlan child of `parent`, living in the sandbox.
    Ipvlan { parent: String, mode: IpvlanMode },
    /// No interface: only the sandbox's loopback is brought up (driver `none`).
    LoopbackOnly,
}

/// Everything one endpoint needs in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    pub sandbox: PathBuf,
    pub if_name: String,
    /// `weft:<network>`: marks the sandbox interface as Weft's.
    pub alias: String,
    pub link: EndpointLink,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    pub addresses: Vec<IpNet>,
    /// Routes inside the sandbox (the default route via the gateway, for the sandbox's
    /// one attachment per family that holds it).
    pub routes: Vec<Route>,
    /// A default route in the sandbox that is not Weft's is deleted for ours; otherwise it
    /// stays and ours is not added.
    pub replace_default_route: bool,
}

/// What [`Kernel::ensure_endpoint`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ensured {
    pub writes: usize,
    /// The config's default route was left out, per family: the sandbox has one that is
    /// not Weft's (and the config does not ask to replace it). A CNI result then claims none.
    pub default_route_yielded: YieldedDefaultRoutes,
}

/// In which address families the config's default route yielded to a foreign one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct YieldedDefaultRoutes {
    pub v4: bool,
    pub v6: bool,
}

/// The interface as found in the sandbox (for CNI CHECK and status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxInterface {
    pub mac: Option<Mac>,
    pub up: bool,
    /// It carries Weft's mark (`false`: somebody else's interface under that name).
    pub owned: bool,
    pub addresses: BTreeSet<IpNet>,
    pub routes: BTreeSet<Route>,
}

/// Is this kernel error "the sandbox does not exist (any more)"?
pub fn sandbox_missing(e: &KernelError) -> bool {
    matches!(e, KernelError::Netns { source, .. }
        if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)))
}

impl Kernel {
    /// Make the endpoint exist exactly as `cfg` says. Reports the writes (0 when everything
    /// was already in place) and whether the default route yielded to a foreign one.
    pub async fn ensure_endpoint(&self, cfg: &SandboxConfig) -> Result<Ensured, KernelError> {
        let ns_file = netns::open(&cfg.sandbox)?;
        let sandbox = Kernel::open(Some(&cfg.sandbox)).await?;
        let mut writes = 0;
        match &cfg.link {
            EndpointLink::Veth {
                host,
                host_alias,
                bridge,
                hairpin,
            } => {
                let existing = self.netlink.get_link(host).await?;
                let peer_there = sandbox.netlink.get_link(&cfg.if_name).await?;
                if let Some(raw) = &existing {
                    let marked = raw.alias.as_deref() == Some(host_alias.as_str());
                    if raw.alias.is_some() && !marked {
                        return Err(KernelError::NotOwned(host.clone()));
                    }
                    // Keep the pair only if the sandbox's interface is this veth's other
                    // end (indices point at each other). Otherwise the creation was cut
                    // short (no alias yet) or the sandbox at that path is a new one: start
                    // over.
                    let paired = peer_there
                        .as_ref()
                        .is_some_and(|p| raw.link == Some(p.index) && p.link == Some(raw.index));
                    if !(marked && paired) {
                        self.delete_by_index(raw.index, host).await?;
                        writes += 1;
                    }
                }
                let bridge_index = self
                    .netlink
                    .get_link(bridge)
                    .await?
                    .map(|b| b.index)
                    .ok_or_else(|| KernelError::NoSuchLink {
                        op: format!("attach {} to its bridge", cfg.if_name),
                        name: bridge.clone(),
                    })?;
                match self.netlink.get_link(host).await? {
                    None => {
                        match sandbox.netlink.get_link(&cfg.if_name).await? {
                            None => {}
                            // Weft's, but from an attachment of another kind: replace it.
                            Some(p) if p.owned() => {
                                let (w, r) = sandbox.netlink.delete_link(&cfg.if_name).await;
                                r?;
                                writes += w;
                            }
                            Some(_) => return Err(name_taken(cfg)),
                        }
                        writes += self
                            .create_veth(cfg, host, host_alias, *hairpin, bridge_index, &ns_file)
                            .await?;
                    }
                    Some(raw) => {
                        let mtu = cfg.mtu.filter(|m| raw.mtu != Some(*m));
                        let master = (raw.master != Some(bridge_index)).then_some(bridge_index);
                        if mtu.is_some() || master.is_some() || !raw.up {
                            let mut msg = LinkMessage::default();
                            msg.header.index = raw.index;
                            msg.header.flags |= LinkFlags::Up;
                            msg.header.change_mask |= LinkFlags::Up;
                            if let Some(m) = mtu {
                                msg.attributes.push(LinkAttribute::Mtu(m));
                            }
                            if let Some(m) = master {
                                msg.attributes.push(LinkAttribute::Controller(m));
                            }
                            self.netlink
                                .ack(RouteNetlinkMessage::SetLink(msg), 0, || {
                                    format!("set {host} up on {bridge}")
                                })
                                .await?;
                            writes += 1;
                        }
                        if raw.hairpin != Some(*hairpin) {
                            self.set_port(raw.index, None, *hairpin, || {
                                format!("set hairpin {hairpin} on {host}")
                            })
                            .await?;
                            writes += 1;
                        }
                    }
                }
            }
            EndpointLink::Macvlan { .. } | EndpointLink::Ipvlan { .. } => {
                match sandbox.netlink.get_link(&cfg.if_name).await? {
                    Some(raw) if raw.owned() => {}
                    Some(_) => return Err(name_taken(cfg)),
                    None => writes += self.create_child(cfg, &ns_file, &sandbox).await?,
                }
            }
            EndpointLink::LoopbackOnly => {}
        }
        writes += sandbox.loopback_up().await?;
        let mut default_route_yielded = YieldedDefaultRoutes::default();
        if cfg.link != EndpointLink::LoopbackOnly {
            let (w, yielded) = sandbox.configure_sandbox_interface(cfg).await?;
            writes += w;
            default_route_yielded = yielded;
        }
        Ok(Ensured {
            writes,
            default_route_yielded,
        })
    }

    /// Remove what Weft made for one endpoint, whatever its driver (also when its network is
    /// gone and the driver unknown): the host side of its veth if there is one carrying
    /// `host_alias` (the peer goes with it); otherwise Weft's interface `if_name` inside the
    /// sandbox (a macvlan/ipvlan child). Gone already, or the sandbox gone, counts as done.
    pub async fn remove_endpoint(
        &self,
        sandbox: &Path,
        if_name: &str,
        host: &str,
        host_alias: &str,
    ) -> Result<usize, KernelError> {
        if self.delete_host_link(host, |a| a == host_alias).await? > 0 {
            return Ok(1);
        }
        let sandbox = match Kernel::open(Some(sandbox)).await {
            Ok(k) => k,
            Err(e) if sandbox_missing(&e) => return Ok(0),
            Err(e) => return Err(e),
        };
        let (w, r) = sandbox.netlink.delete_link(if_name).await;
        r.map(|()| w)
    }

    /// Take an endpoint's veth out of service at once, without deleting it: the host end
    /// down (the sandbox end loses its carrier), out of its bridge, and in
    /// [`RELEASE_GROUP`]. These are cheap; the deletion itself waits for RCU grace periods
    /// (~20 ms) and follows in [`Kernel::delete_released`]. Returns `false` when there is
    /// no host end (not a veth endpoint, or gone already).
    pub async fn disconnect_endpoint(
        &self,
        host: &str,
        host_alias: &str,
    ) -> Result<bool, KernelError> {
        let Some(raw) = self.netlink.get_link(host).await? else {
            return Ok(false);
        };
        if raw.alias.as_deref() != Some(host_alias) {
            return Err(KernelError::NotOwned(host.to_string()));
        }
        let mut msg = LinkMessage::default();
        msg.header.index = raw.index;
        // Up in the mask, not in the flags: down.
        msg.header.change_mask |= LinkFlags::Up;
        msg.attributes.push(LinkAttribute::Controller(0));
        msg.attributes.push(LinkAttribute::Group(RELEASE_GROUP));
        match self
            .netlink
            .ack(RouteNetlinkMessage::SetLink(msg), 0, || {
                format!("take {host} out of service")
            })
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if already_gone(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Delete disconnected host ends (`(name, alias)` pairs): every link in
    /// [`RELEASE_GROUP`] in one request when all of them are Weft endpoints' (the kernel
    /// deletes a group in one batch), then any of `hosts` still there one by one. Gone
    /// already counts as deleted. Returns the writes.
    pub async fn delete_released(&self, hosts: &[(String, String)]) -> Result<usize, KernelError> {
        let links = self.netlink.dump_links().await?;
        let grouped: Vec<_> = links.iter().filter(|l| l.group == RELEASE_GROUP).collect();
        let all_ours = grouped.iter().all(|l| {
            l.alias
                .as_deref()
                .is_some_and(|a| a.starts_with(ENDPOINT_ALIAS_PREFIX))
        });
        let mut writes = 0;
        if !grouped.is_empty() && all_ours {
            let mut msg = LinkMessage::default();
            msg.attributes.push(LinkAttribute::Group(RELEASE_GROUP));
            writes += 1;
            match self
                .netlink
                .ack(RouteNetlinkMessage::DelLink(msg), 0, || {
                    format!("delete {} released endpoint interfaces", grouped.len())
                })
                .await
            {
                Ok(()) => {}
                Err(e) if already_gone(&e) => {}
                // One by one below.
                Err(e) => tracing::debug!(error = %e, "deleting the release group failed"),
            }
        }
        for (host, alias) in hosts {
            writes += self.delete_host_link(host, |a| a == alias).await?;
        }
        Ok(writes)
    }

    /// Delete a host-side endpoint interface found by the garbage collector.
    pub async fn remove_host_endpoint_link(&self, name: &str) -> Result<usize, KernelError> {
        self.delete_host_link(name, |a| a.starts_with(ENDPOINT_ALIAS_PREFIX))
            .await
    }

    /// Delete the node's link `name` if its alias passes `ours`; a link without an alias or
    /// with another one is refused; a missing one is 0 writes.
    async fn delete_host_link(
        &self,
        name: &str,
        ours: impl Fn(&str) -> bool,
    ) -> Result<usize, KernelError> {
        match self.netlink.get_link(name).await? {
            Some(raw) if raw.alias.as_deref().is_some_and(&ours) => {
                self.delete_by_index(raw.index, name).await?;
                Ok(1)
            }
            Some(_) => Err(KernelError::NotOwned(name.to_string())),
            None => Ok(0),
        }
    }

    /// The endpoint's interface as it is in the sandbox; `None` if it is not there.
    pub async fn inspect_endpoint(
        sandbox: &Path,
        if_name: &str,
    ) -> Result<Option<SandboxInterface>, KernelError> {
        let k = Kernel::open(Some(sandbox)).await?;
        let Some(raw) = k.netlink.get_link(if_name).await? else {
            return Ok(None);
        };
        let state = k.observe_interface(if_name).await?;
        Ok(Some(SandboxInterface {
            mac: raw.mac,
            up: raw.up,
            owned: raw.owned(),
            addresses: state.addresses.into_iter().map(|a| a.address).collect(),
            routes: state.routes,
        }))
    }

    async fn delete_by_index(&self, index: u32, name: &str) -> Result<(), KernelError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self
            .netlink
            .ack(RouteNetlinkMessage::DelLink(msg), 0, || {
                format!("delete link {name}")
            })
            .await
        {
            Err(e) if already_gone(&e) => Ok(()),
            r => r,
        }
    }

    /// One request creates both ends: the host end (up, on its bridge) here and the peer,
    /// named and with its MAC, inside the sandbox. Then the host end gets its alias.
    async fn create_veth(
        &self,
        cfg: &SandboxConfig,
        host: &str,
        host_alias: &str,
        hairpin: bool,
        bridge_index: u32,
        ns_file: &std::fs::File,
    ) -> Result<usize, KernelError> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(cfg.if_name.clone()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(ns_file.as_raw_fd()));
        if let Some(mac) = cfg.mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(m) = cfg.mtu {
            peer.attributes.push(LinkAttribute::Mtu(m));
        }
        let mut msg = LinkMessage::default();
        msg.header.flags |= LinkFlags::Up;
        msg.header.change_mask |= LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        if let Some(m) = cfg.mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        msg.attributes.push(LinkAttribute::Controller(bridge_index));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.netlink
            .ack(
                RouteNetlinkMessage::NewLink(msg),
                NLM_F_CREATE | NLM_F_EXCL,
                || format!("create veth {host} with {} in the sandbox", cfg.if_name),
            )
            .await
            .map_err(|e| match e.errno() {
                Some(libc::EEXIST) => name_taken(cfg),
                _ => e,
            })?;
        let index = self
            .netlink
            .get_link(host)
            .await?
            .map(|r| r.index)
            .ok_or_else(|| KernelError::Unexpected(format!("veth {host} vanished")))?;
        if let Err(e) = self
            .set_port(index, Some(host_alias), hairpin, || {
                format!("mark {host} as Weft's")
            })
            .await
        {
            // Never leave an unmarked interface behind.
            let _ = self.delete_by_index(index, host).await;
            return Err(e);
        }
        Ok(2)
    }

    /// Set a bridge port's hairpin mode (and its alias, when given) in one request. Port
    /// options only change through RTM_NEWLINK on the existing link.
    async fn set_port(
        &self,
        index: u32,
        alias: Option<&str>,
        hairpin: bool,
        op: impl Fn() -> String,
    ) -> Result<(), KernelError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(a) = alias {
            msg.attributes.push(LinkAttribute::IfAlias(a.to_string()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                hairpin,
            )])),
        ]));
        self.netlink
            .ack(RouteNetlinkMessage::NewLink(msg), 0, op)
            .await
    }

    /// A macvlan/ipvlan child of a node interface, created straight into the sandbox.
    /// Create the macvlan/ipvlan child inside the sandbox under a temporary name, then rename
    /// it there: kernels before 6.x (Debian 12's 6.1) check a new link's name in the
    /// *creating* namespace, so a child created straight into the sandbox as `eth0` fails
    /// with EEXIST whenever the node has an `eth0` of its own (found by the VM tier).
    async fn create_child(
        &self,
        cfg: &SandboxConfig,
        ns_file: &std::fs::File,
        sandbox: &Kernel,
    ) -> Result<usize, KernelError> {
        let (parent, kind, data) = match &cfg.link {
            EndpointLink::Macvlan { parent, mode } => (
                parent,
                InfoKind::MacVlan,
                InfoData::MacVlan(vec![InfoMacVlan::Mode(link::macvlan_mode(*mode))]),
            ),
            EndpointLink::Ipvlan { parent, mode } => (
                parent,
                InfoKind::IpVlan,
                InfoData::IpVlan(vec![InfoIpVlan::Mode(link::ipvlan_mode(*mode))]),
            ),
            _ => return Ok(0),
        };
        let parent_index = self
            .netlink
            .get_link(parent)
            .await?
            .map(|p| p.index)
            .ok_or_else(|| KernelError::NoSuchLink {
                op: format!("create {} in the sandbox", cfg.if_name),
                name: parent.clone(),
            })?;
        let temporary = names::temporary_child(&cfg.sandbox.to_string_lossy(), &cfg.if_name);
        let mut writes = 0;
        // A child left under the temporary name by a cut-short attach: start over.
        if sandbox.netlink.get_link(&temporary).await?.is_some() {
            let (w, r) = sandbox.netlink.delete_link(&temporary).await;
            r?;
            writes += w;
        }
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(temporary.clone()));
        msg.attributes.push(LinkAttribute::Link(parent_index));
        msg.attributes
            .push(LinkAttribute::NetNsFd(ns_file.as_raw_fd()));
        if let (Some(mac), InfoKind::MacVlan) = (cfg.mac, &kind) {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(m) = cfg.mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(kind),
            LinkInfo::Data(data),
        ]));
        self.netlink
            .ack(
                RouteNetlinkMessage::NewLink(msg),
                NLM_F_CREATE | NLM_F_EXCL,
                || format!("create {} on {parent} in the sandbox", cfg.if_name),
            )
            .await?;
        writes += 1;
        let created =
            sandbox
                .netlink
                .get_link(&temporary)
                .await?
                .ok_or_else(|| KernelError::NoSuchLink {
                    op: format!("rename the new {} in the sandbox", cfg.if_name),
                    name: temporary.clone(),
                })?;
        let mut rename = LinkMessage::default();
        rename.header.index = created.index;
        rename
            .attributes
            .push(LinkAttribute::IfName(cfg.if_name.clone()));
        let renamed = sandbox
            .netlink
            .ack(RouteNetlinkMessage::SetLink(rename), 0, || {
                format!("rename {temporary} to {} in the sandbox", cfg.if_name)
            })
            .await;
        if let Err(e) = renamed {
            // Nothing half-made stays behind: the temporary child goes again.
            let _ = sandbox.netlink.delete_link(&temporary).await;
            return Err(match e.errno() {
                Some(libc::EEXIST) => name_taken(cfg),
                _ => e,
            });
        }
        Ok(writes + 1)
    }

    /// Loopback up (every sandbox needs it; `none` networks get nothing else).
    async fn loopback_up(&self) -> Result<usize, KernelError> {
        match self.netlink.get_link("lo").await? {
            Some(lo) if !lo.up => {
                let mut msg = LinkMessage::default();
                msg.header.index = lo.index;
                msg.header.flags |= LinkFlags::Up;
                msg.header.change_mask |= LinkFlags::Up;
                self.netlink
                    .ack(RouteNetlinkMessage::SetLink(msg), 0, || {
                        "set lo up in the sandbox".into()
                    })
                    .await?;
                Ok(1)
            }
            _ => Ok(0),
        }
    }

    /// Links, addresses and routes Weft owns on one interface of this namespace (no nft, no
    /// sysctls: a sandbox has none of Weft's).
    async fn observe_interface(&self, if_name: &str) -> Result<KernelState, KernelError> {
        let view = LinkView::new(self.netlink.dump_links().await?);
        let mut state = KernelState {
            links: view.owned_links(),
            addresses: self.netlink.observe_addresses(&view).await?,
            routes: self.netlink.observe_routes(&view).await?,
            ..KernelState::default()
        };
        state.links.retain(|n, _| n == if_name);
        state.addresses.retain(|a| a.link == if_name);
        state.routes.retain(|r| r.link == if_name);
        Ok(state)
    }

    /// Inside the sandbox: the interface marked, up, with its MAC and MTU, exactly its
    /// addresses and routes. Diffed against what is there, so a repeat writes nothing.
    /// Returns the writes and whether the default route yielded to a foreign one.
    async fn configure_sandbox_interface(
        &self,
        cfg: &SandboxConfig,
    ) -> Result<(usize, YieldedDefaultRoutes), KernelError> {
        let Some(raw) = self.netlink.get_link(&cfg.if_name).await? else {
            return Err(KernelError::NoSuchLink {
                op: "configure the endpoint in its sandbox".into(),
                name: cfg.if_name.clone(),
            });
        };
        let mut writes = 0;
        if !raw.owned() {
            // Just created by us through the node side: mark it before anything else.
            let mut msg = LinkMessage::default();
            msg.header.index = raw.index;
            msg.attributes
                .push(LinkAttribute::IfAlias(cfg.alias.clone()));
            self.netlink
                .ack(RouteNetlinkMessage::SetLink(msg), 0, || {
                    format!("mark {} as Weft's", cfg.if_name)
                })
                .await?;
            writes += 1;
        }
        let observed = self.observe_interface(&cfg.if_name).await?;
        let kind = observed
            .links
            .get(&cfg.if_name)
            .map(|l| l.kind.clone())
            .ok_or_else(|| KernelError::Unexpected(format!("{} lost its mark", cfg.if_name)))?;
        let mut desired = KernelState::default();
        desired.links.insert(
            cfg.if_name.clone(),
            Link {
                name: cfg.if_name.clone(),
                alias: cfg.alias.clone(),
                kind,
                mtu: cfg.mtu,
                master: None,
                up: true,
                mac: cfg.mac,
            },
        );
        desired.addresses = cfg
            .addresses
            .iter()
            .map(|a| Address {
                link: cfg.if_name.clone(),
                address: *a,
            })
            .collect();
        let (routes, settled) = self.settle_default_routes(cfg, raw.index).await?;
        let yielded_in = |v4: bool| {
            cfg.routes.iter().any(|r| {
                r.destination.prefix_len() == 0
                    && r.destination.addr().is_ipv4() == v4
                    && !routes.contains(r)
            })
        };
        let yielded = YieldedDefaultRoutes {
            v4: yielded_in(true),
            v6: yielded_in(false),
        };
        writes += settled;
        desired.routes = routes;
        let changes: Vec<Change> = diff(&desired, &observed)
            .into_iter()
            .filter(|c| {
                !matches!(
                    c,
                    Change::CreateLink(_) | Change::RecreateLink(_) | Change::DeleteLink(_)
                )
            })
            .collect();
        if changes.is_empty() {
            return Ok((writes, yielded));
        }
        let report = self.apply(&changes).await;
        Ok((writes + sandbox_outcome(report)?, yielded))
    }
}

impl Kernel {
    /// One endpoint host side (its port) as it is now; `None` if there is no such link.
    pub async fn host_port(&self, name: &str) -> Result<Option<HostPort>, KernelError> {
        let Some(raw) = self.netlink.get_link(name).await? else {
            return Ok(None);
        };
        let master = match raw.master {
            Some(index) => self.link_name(index).await?,
            None => None,
        };
        Ok(Some(HostPort { master, up: raw.up }))
    }

    /// The name of the link with this index; `None` if there is none.
    async fn link_name(&self, index: u32) -> Result<Option<String>, KernelError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self
            .netlink
            .query(RouteNetlinkMessage::GetLink(msg), false, || {
                format!("look up link {index}")
            })
            .await
        {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(RawLink::parse(l).name),
                _ => None,
            })),
            Err(e) if already_gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Kernel {
    /// A sandbox has one default route per family. Before this interface's routes are
    /// diffed: Weft's default routes on the sandbox's *other* interfaces go when this one is
    /// to hold the route (the holder changed: a higher priority came, or the holder left); a
    /// default route that is not Weft's (a CNI primary's, the cluster's pod network) stays
    /// and this interface gets none, unless the config asks to replace it. Returns the
    /// routes to hold this interface to, and the writes made.
    async fn settle_default_routes(
        &self,
        cfg: &SandboxConfig,
        index: u32,
    ) -> Result<(BTreeSet<Route>, usize), KernelError> {
        let mut routes = BTreeSet::new();
        let mut writes = 0;
        for route in &cfg.routes {
            if route.destination.prefix_len() != 0 {
                routes.insert(route.clone());
                continue;
            }
            let v4 = route.destination.addr().is_ipv4();
            let found = self.netlink.default_routes(v4).await?;
            let foreign: Vec<_> = found.iter().filter(|r| !r.is_weft()).collect();
            if !foreign.is_empty() && !cfg.replace_default_route {
                continue;
            }
            for r in found
                .iter()
                .filter(|r| !r.is_weft() || r.oif != Some(index))
            {
                self.netlink
                    .delete_default_route(r)
                    .await
                    .map_err(|e| KernelError::InSandbox(Box::new(e)))?;
                writes += 1;
            }
            routes.insert(route.clone());
        }
        Ok((routes, writes))
    }
}

/// The writes of changes applied inside a sandbox, or the first failure. The kernel's error
/// already names the operation (`add route …: File exists`); only where it happened is added.
fn sandbox_outcome(report: ApplyReport) -> Result<usize, KernelError> {
    match report.failed.into_iter().next() {
        Some((_, err)) => Err(KernelError::InSandbox(Box::new(err))),
        None => Ok(report.writes),
    }
}

fn name_taken(cfg: &SandboxConfig) -> KernelError {
    KernelError::Invalid(format!(
        "interface {} already exists in sandbox {} and is not Weft's",
        cfg.if_name,
        cfg.sandbox.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::error::netlink_error;

    /// A route the sandbox already has reads `in the sandbox: add route …: File exists`: the
    /// operation once, from the layer that sent it, and the errno still there.
    #[test]
    fn a_failed_change_in_the_sandbox_names_its_operation_once() {
        let route = Route {
            destination: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.1.0.1".parse().unwrap()),
            link: "eth0".into(),
        };
        let mut refused = netlink_packet_core::ErrorMessage::default();
        refused.code = std::num::NonZeroI32::new(-libc::EEXIST);
        let op = format!(
            "add route {}",
            crate::kernel::changes::describe_route(&route)
        );
        let report = ApplyReport {
            writes: 1,
            failed: vec![(Change::AddRoute(route), netlink_error(op, &refused))],
        };
        let err = sandbox_outcome(report).expect_err("a failure");
        assert_eq!(
            err.to_string(),
            format!(
                "in the sandbox: add route 0.0.0.0/0 via 10.1.0.1 dev eth0: {}",
                std::io::Error::from_raw_os_error(libc::EEXIST)
            )
        );
        assert_eq!(err.to_string().matches("add route").count(), 1);
        assert_eq!(err.errno(), Some(libc::EEXIST));
        assert_eq!(sandbox_outcome(ApplyReport::default()).ok(), Some(0));
    }
}
