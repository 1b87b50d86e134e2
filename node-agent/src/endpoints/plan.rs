//! Pure endpoint planning: what an attachment looks like in the kernel (its driver's link
//! plus addresses and routes), the publish (DNAT) rules of the node's endpoints and the
//! entries other nodes' endpoints need. No I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use weft_api::Protocol;

use super::{
    ANY_HOST_PORT, Attachment, EndpointId, EndpointRequest, HostPortRange, PortSpec, Publication,
};
use crate::drivers::{
    self, HostSide, NetworkInput, Networks, NodeFacts, Problem, Reason, RemoteEndpoint, SandboxLink,
};
use crate::kernel::SandboxConfig;
use crate::model::{FdbEntry, KernelState, Mac, Neighbour, NftFamily, NftTable, Route, alias_for};
use crate::names::{self, fnv1a64};

/// The host-side interface of an endpoint: `wfe` + 12 hex digits of its identity (15 bytes).
pub fn host_interface(id: &EndpointId) -> String {
    let h = fnv1a64(id.to_string().as_bytes()) & 0xffff_ffff_ffff;
    format!("{}e{h:012x}", names::LINK_PREFIX)
}

/// The alias that marks a host-side endpoint interface: `weft-ep:<namespace>/<name>`.
pub fn host_alias(id: &EndpointId) -> String {
    format!("{}{id}", crate::kernel::ENDPOINT_ALIAS_PREFIX)
}

/// Docker's MAC for an address: `02:42` and the last four bytes of the address, so a
/// re-created endpoint keeps its MAC and neighbours' ARP caches stay valid.
pub fn derive_mac(addr: IpAddr) -> Mac {
    let tail: [u8; 4] = match addr {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    Mac([0x02, 0x42, tail[0], tail[1], tail[2], tail[3]])
}

/// Which address families (of IPv4, IPv6) an attachment gives its sandbox the default
/// route in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultRoutes {
    pub v4: bool,
    pub v6: bool,
}

impl DefaultRoutes {
    /// In the family of `addr`?
    pub fn covers(self, addr: IpAddr) -> bool {
        if addr.is_ipv4() { self.v4 } else { self.v6 }
    }
}

/// Does this attachment have an address with a gateway in the family (`v4`: IPv4)?
fn has_gateway_in(att: &Attachment, v4: bool) -> bool {
    att.addresses()
        .any(|(a, g)| g.is_some() && a.addr().is_ipv4() == v4)
}

/// Does this attachment ask for a default route in the family at all: an address and a
/// gateway of that family, on a network that is not internal?
pub fn wants_default_route(att: &Attachment, net: &NetworkInput, v4: bool) -> bool {
    has_gateway_in(att, v4) && !net.spec.internal
}

/// Of the attachments that want a default route in the family (see
/// [`wants_default_route`]), the one that gets it for `att`'s sandbox, Docker's
/// `gw-priority` rule: the highest priority; a tie goes to the one attached first on this
/// node, then to the lower namespace/name. The others install only their subnet's route
/// (the kernel's prefix route of their address).
pub fn holds_default_route<'a>(
    att: &'a Attachment,
    v4: bool,
    wanting: impl IntoIterator<Item = &'a Attachment>,
) -> bool {
    wanting
        .into_iter()
        .filter(|a| a.sandbox == att.sandbox && has_gateway_in(a, v4))
        .chain(std::iter::once(att))
        .max_by(|a, b| {
            (
                a.gw_priority,
                std::cmp::Reverse(a.since),
                std::cmp::Reverse(&a.id),
            )
                .cmp(&(
                    b.gw_priority,
                    std::cmp::Reverse(b.since),
                    std::cmp::Reverse(&b.id),
                ))
        })
        .is_some_and(|w| w.id == att.id)
}

/// [`holds_default_route`] in each family over every attachment of the node, their
/// networks looked up.
pub fn holds_default_route_among(
    att: &Attachment,
    net: &NetworkInput,
    all: &BTreeMap<EndpointId, Attachment>,
    networks: &Networks,
) -> DefaultRoutes {
    let holds = |v4: bool| {
        wants_default_route(att, net, v4)
            && holds_default_route(
                att,
                v4,
                all.values().filter(|a| {
                    a.sandbox == att.sandbox
                        && networks
                            .get(&a.network)
                            .is_some_and(|n| wants_default_route(a, n, v4))
                }),
            )
    };
    DefaultRoutes {
        v4: holds(true),
        v6: holds(false),
    }
}

/// The kernel shape of an attachment whose address is decided: the driver's link, plus
/// what every driver's endpoint gets alike (addresses; a default route via the gateway in
/// each family of `default_routes`, i.e. where it [`holds_default_route`] in its sandbox).
pub fn sandbox_config(
    att: &Attachment,
    net: &NetworkInput,
    node: &NodeFacts,
    desired_node: &KernelState,
    default_routes: DefaultRoutes,
) -> Result<SandboxConfig, Problem> {
    let host = HostSide {
        interface: host_interface(&att.id),
        alias: host_alias(&att.id),
    };
    let SandboxLink { link, mtu } =
        drivers::of(net).sandbox_link(net, node, desired_node, &host)?;
    let mut routes = Vec::new();
    for (addr, gw) in att.addresses() {
        let v4 = addr.addr().is_ipv4();
        if let Some(gw) = gw
            && default_routes.covers(addr.addr())
            && wants_default_route(att, net, v4)
        {
            routes.push(Route {
                destination: default_destination(v4),
                link: att.if_name.clone(),
                gateway: Some(gw),
            });
        }
    }
    Ok(SandboxConfig {
        sandbox: PathBuf::from(&att.sandbox),
        if_name: att.if_name.clone(),
        alias: alias_for(&net.name),
        link,
        mac: att.mac,
        mtu,
        addresses: att.addresses().map(|(a, _)| a).collect(),
        routes,
        replace_default_route: att.replace_default_route,
    })
}

/// `0.0.0.0/0` or `::/0`.
pub fn default_destination(v4: bool) -> IpNet {
    if v4 {
        IpNet::V4(ipnet::Ipv4Net::default())
    } else {
        IpNet::V6(ipnet::Ipv6Net::default())
    }
}

/// Refusal of a second endpoint with the same interface name in one sandbox.
pub fn interface_name_problem<'a>(
    req: &EndpointRequest,
    attachments: impl IntoIterator<Item = &'a Attachment>,
) -> Option<Problem> {
    let other = attachments
        .into_iter()
        .find(|a| a.id != req.id && a.sandbox == req.sandbox && a.if_name == req.if_name)?;
    Some(Problem::new(
        Reason::InterfaceNameInUse,
        format!(
            "interface {} in sandbox {} is already endpoint {}'s (network {}); choose another interfaceName",
            req.if_name, req.sandbox, other.id, other.network
        ),
    ))
}

/// Every port of `wanted` that names no host port gets one from `range` (Docker's `-p 80`):
/// the one it had in `previous` (the same endpoint admitted again) if still free, else the
/// lowest port of the range that no other endpoint claims for that protocol (on any host
/// address, so a later specific binding cannot meet it either) and this request does not
/// name. A range with no free port refuses the endpoint with `PortConflict`.
pub fn choose_host_ports<'a>(
    wanted: &[PortSpec],
    previous: Option<&[PortSpec]>,
    others: impl IntoIterator<Item = &'a Attachment>,
    range: HostPortRange,
) -> Result<Vec<PortSpec>, Problem> {
    if wanted.iter().all(|p| p.host_port != ANY_HOST_PORT) {
        return Ok(wanted.to_vec());
    }
    let mut taken: std::collections::HashSet<(Protocol, u16)> = others
        .into_iter()
        .flat_map(|a| a.publish.iter())
        .chain(wanted.iter().filter(|p| p.host_port != ANY_HOST_PORT))
        .flat_map(|p| (p.host_port..=p.host_port_end).map(move |h| (p.protocol, h)))
        .collect();
    let mut chosen = Vec::with_capacity(wanted.len());
    for (i, port) in wanted.iter().enumerate() {
        if port.host_port != ANY_HOST_PORT {
            chosen.push(port.clone());
            continue;
        }
        let before = previous
            .and_then(|p| p.get(i))
            .filter(|p| p.container_port == port.container_port && p.protocol == port.protocol)
            .map(|p| p.host_port)
            .filter(|h| *h != ANY_HOST_PORT && !taken.contains(&(port.protocol, *h)));
        let host = before
            .or_else(|| {
                (range.first..=range.last).find(|h| !taken.contains(&(port.protocol, *h)))
            })
            .ok_or_else(|| {
                Problem::new(
                    Reason::PortConflict,
                    format!(
                        "no free host port for {}/{} in the node's range {range}; name a hostPort or free one",
                        port.container_port,
                        proto_word(port.protocol)
                    ),
                )
            })?;
        taken.insert((port.protocol, host));
        chosen.push(PortSpec {
            host_port: host,
            host_port_end: host,
            ..port.clone()
        });
    }
    Ok(chosen)
}

/// Publish rules for every endpoint of the node, in the order the endpoints came (the
/// first to claim a host port keeps it). Returns the inet table's extra chains and the
/// endpoints refused with `PortConflict` (none of their ports is published then).
pub fn publish_rules(
    publications: &[Publication],
) -> (
    BTreeMap<String, crate::model::NftChain>,
    BTreeMap<EndpointId, Problem>,
) {
    use crate::model::NftChain;
    use crate::plan::firewall::rule;

    let mut taken: BTreeMap<(Option<IpAddr>, &str, u16), &EndpointId> = BTreeMap::new();
    let mut conflicts = BTreeMap::new();
    let mut accepted: Vec<&Publication> = Vec::new();
    let mut ordered: Vec<&Publication> = publications.iter().collect();
    ordered.sort_by(|a, b| (a.since, &a.id).cmp(&(b.since, &b.id)));
    for p in ordered {
        let mut mine = Vec::new();
        let mut clash = None;
        for port in &p.ports {
            for hp in port.host_port..=port.host_port_end {
                // A wildcard binding clashes with every specific one and vice versa.
                let hit = taken
                    .iter()
                    .find(|((ip, proto, h), _)| {
                        *proto == proto_word(port.protocol)
                            && *h == hp
                            && (ip.is_none() || port.host_ip.is_none() || *ip == port.host_ip)
                    })
                    .map(|(_, owner)| *owner);
                if let Some(owner) = hit {
                    clash = Some((owner.clone(), hp, port.protocol));
                    break;
                }
                mine.push((port.host_ip, proto_word(port.protocol), hp));
            }
            if clash.is_some() {
                break;
            }
        }
        match clash {
            Some((owner, hp, proto)) => {
                conflicts.insert(
                    p.id.clone(),
                    Problem::new(
                        Reason::PortConflict,
                        format!(
                            "host port {hp}/{} is already published by endpoint {owner}; none of this endpoint's ports is published",
                            proto_word(proto)
                        ),
                    ),
                );
            }
            None => {
                for k in mine {
                    taken.insert(k, &p.id);
                }
                accepted.push(p);
            }
        }
    }

    // A gone sandbox keeps its claims (nobody else takes its ports) but gets no rules.
    accepted.retain(|p| !p.sandbox_gone);
    let mut chains: BTreeMap<String, NftChain> = BTreeMap::new();
    if accepted.is_empty() {
        return (chains, conflicts);
    }
    let mut publish = Vec::new();
    let mut hairpin = Vec::new();
    for (p, address) in accepted
        .iter()
        .flat_map(|p| p.addresses.iter().map(move |a| (p, a)))
    {
        let subnet = address.trunc();
        let address = address.addr();
        let l3 = if address.is_ipv4() { "ip" } else { "ip6" };
        let target = match address {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        for port in &p.ports {
            let proto = proto_word(port.protocol);
            let bind = match port.host_ip {
                Some(ip) if ip.is_ipv4() == address.is_ipv4() => {
                    format!("{} daddr {ip} ", if ip.is_ipv4() { "ip" } else { "ip6" })
                }
                // A binding of the other family never matches this endpoint.
                Some(_) => continue,
                // `[::1]` is not served (IPv6 has no route_localnet: a DNATed packet from
                // ::1 would be dropped), so a local client is refused at once, not left
                // waiting for an answer that cannot come.
                None if address.is_ipv6() => "ip6 daddr != ::1 ".to_string(),
                None => String::new(),
            };
            let span = port.host_port_end - port.host_port;
            let dnat = if port.host_port == port.container_port {
                if span == 0 {
                    format!("dnat {l3} to {target}")
                } else {
                    // Same ports on both sides: the port is kept.
                    format!("dnat {l3} to {address}")
                }
            } else if span == 0 {
                format!("dnat {l3} to {target}:{}", port.container_port)
            } else {
                let pairs: Vec<String> = (0..=span)
                    .map(|i| format!("{} : {}", port.host_port + i, port.container_port + i))
                    .collect();
                format!(
                    "dnat {l3} to {address} : {proto} dport map {{ {} }}",
                    pairs.join(", ")
                )
            };
            let dport = if span == 0 {
                port.host_port.to_string()
            } else {
                format!("{}-{}", port.host_port, port.host_port_end)
            };
            publish.push(rule(format!("{bind}{proto} dport {dport} {dnat}")));
            let cport = if span == 0 {
                port.container_port.to_string()
            } else {
                format!("{}-{}", port.container_port, port.container_port + span)
            };
            // Return traffic of a connection from the endpoint's own subnet (hairpin: the
            // container itself, or a neighbour on its bridge) would skip the de-NAT without
            // this: the answer would go straight back over the bridge.
            hairpin.push(rule(format!(
                "ct status dnat {l3} saddr {subnet} {l3} daddr {address} {proto} dport {cport} masquerade"
            )));
        }
    }
    chains.insert(
        CHAIN_PUBLISH.into(),
        NftChain {
            base: None,
            rules: publish,
        },
    );
    chains.insert(
        CHAIN_PUBLISH_PREROUTING.into(),
        NftChain {
            base: Some(NAT_PREROUTING.into()),
            rules: vec![rule(format!("fib daddr type local jump {CHAIN_PUBLISH}"))],
        },
    );
    chains.insert(
        CHAIN_PUBLISH_OUTPUT.into(),
        NftChain {
            base: Some(NAT_OUTPUT.into()),
            rules: vec![rule(format!("fib daddr type local jump {CHAIN_PUBLISH}"))],
        },
    );
    chains.insert(
        CHAIN_PUBLISH_POSTROUTING.into(),
        NftChain {
            base: Some(NAT_POSTROUTING_HAIRPIN.into()),
            rules: hairpin,
        },
    );
    (chains, conflicts)
}

/// Regular chain holding one DNAT rule per published port.
pub const CHAIN_PUBLISH: &str = "publish";
pub const CHAIN_PUBLISH_PREROUTING: &str = "publish-prerouting";
pub const CHAIN_PUBLISH_OUTPUT: &str = "publish-output";
pub const CHAIN_PUBLISH_POSTROUTING: &str = "publish-postrouting";
pub const NAT_PREROUTING: &str = "type nat hook prerouting priority -100; policy accept;";
pub const NAT_OUTPUT: &str = "type nat hook output priority -100; policy accept;";
/// Before the network's own masquerade (priority 100), so hairpin traffic is handled first.
pub const NAT_POSTROUTING_HAIRPIN: &str = "type nat hook postrouting priority 90; policy accept;";

fn proto_word(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Add the publish chains to the node's desired nft tables.
pub fn add_publish_chains(
    nft: &mut BTreeMap<NftFamily, NftTable>,
    chains: BTreeMap<String, crate::model::NftChain>,
) {
    if chains.is_empty() {
        return;
    }
    nft.entry(NftFamily::Inet)
        .or_default()
        .chains
        .extend(chains);
}

/// Static FDB and neighbour entries for other nodes' endpoints (`remote` sorted, so each
/// network's endpoints are together), from the drivers of the networks this node programs.
pub fn remote_entries(
    remote: &[RemoteEndpoint],
    networks: &Networks,
    peers: &BTreeMap<String, IpAddr>,
    desired_node: &KernelState,
) -> (Vec<FdbEntry>, Vec<Neighbour>) {
    let mut fdb = Vec::new();
    let mut neighbours = Vec::new();
    for endpoints in remote.chunk_by(|a, b| a.network == b.network) {
        let Some(net) = endpoints.first().and_then(|r| networks.get(&r.network)) else {
            continue;
        };
        let (f, n) = drivers::of(net).remote_entries(net, endpoints, peers, desired_node);
        fdb.extend(f);
        neighbours.extend(n);
    }
    (fdb, neighbours)
}

/// Refusal for an address request that cannot be honoured.
pub fn address_problem(err: &weft_ipam::AddressError, network: &str) -> Problem {
    use weft_ipam::AddressError::*;
    let reason = match err {
        Exhausted { .. } => Reason::NoFreeAddress,
        InUse { .. } | Reserved { .. } => Reason::AddressInUse,
        OutsideRange { .. } => Reason::OutsideSubnet,
    };
    Problem::new(reason, format!("network {network}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::PortSpec;

    fn id(s: &str) -> EndpointId {
        EndpointId {
            namespace: "default".into(),
            name: s.into(),
        }
    }

    fn publication(name: &str, since: u64, addr: &str, ports: Vec<PortSpec>) -> Publication {
        Publication {
            id: id(name),
            since,
            addresses: vec![format!("{addr}/24").parse().expect("addr")],
            ports,
            sandbox_gone: false,
        }
    }

    fn tcp(host: u16, container: u16) -> PortSpec {
        PortSpec {
            host_port: host,
            host_port_end: host,
            container_port: container,
            protocol: Protocol::Tcp,
            host_ip: None,
        }
    }

    fn attached(
        name: &str,
        sandbox: &str,
        if_name: &str,
        addr: &str,
        prio: i32,
        since: u64,
    ) -> Attachment {
        let address: IpNet = addr.parse().expect("addr");
        Attachment {
            id: id(name),
            network: format!("net-{name}"),
            network_uid: "uid".into(),
            sandbox: sandbox.into(),
            if_name: if_name.into(),
            address: Some(address),
            gateway: Some(address.network()),
            mac: None,
            publish: Vec::new(),
            cni: None,
            since,
            requested_address: None,
            requested_mac: None,
            in_api: true,
            gw_priority: prio,
            replace_default_route: false,
            mirror: None,
            names: Default::default(),
        }
    }

    /// One default route per sandbox and family: the highest gwPriority, then the earliest
    /// attached, then the lower name; other sandboxes and the other family do not compete.
    #[test]
    fn the_default_route_goes_to_the_highest_priority_then_the_earliest() {
        let family = |x: &Attachment| x.address.is_some_and(|a| a.addr().is_ipv4());
        let a = attached("a", "/s", "eth0", "10.1.0.2/24", 0, 1);
        let b = attached("b", "/s", "eth1", "10.2.0.2/24", 5, 2);
        let c = attached("c", "/s", "eth2", "10.3.0.2/24", 5, 3);
        let d = attached("d", "/s", "eth3", "fd00::2/64", 0, 4);
        let e = attached("e", "/other", "eth0", "10.4.0.2/24", 9, 0);
        let all = [&a, &b, &c, &d, &e];
        let holders: Vec<&str> = all
            .iter()
            .filter(|x| holds_default_route(x, family(x), all.iter().copied()))
            .map(|x| x.id.name.as_str())
            .collect();
        assert_eq!(holders, vec!["b", "d", "e"]);
        // b leaves: c (same priority as b, above a) takes over.
        let rest = [&a, &c, &d];
        assert!(holds_default_route(&c, true, rest.iter().copied()));
        assert!(!holds_default_route(&a, true, rest.iter().copied()));
        // Same priority, same arrival: the lower name.
        let x = attached("x", "/t", "eth0", "10.5.0.2/24", 0, 7);
        let y = attached("y", "/t", "eth1", "10.6.0.2/24", 0, 7);
        assert!(holds_default_route(&x, true, [&x, &y]));
        assert!(!holds_default_route(&y, true, [&x, &y]));
    }

    /// A dual-stack attachment competes in both families, each on its own: a v4-only one
    /// of higher priority takes the v4 default route, the v6 one stays with it.
    #[test]
    fn a_dual_stack_attachment_competes_in_each_family() {
        let mut a = attached("a", "/s", "eth0", "10.1.0.2/24", 0, 1);
        a.mirror = Some(crate::endpoints::MirrorAddress {
            address: "fd00:1::2/64".parse().expect("addr"),
            gateway: Some("fd00:1::1".parse().expect("gw")),
        });
        let b = attached("b", "/s", "eth1", "10.2.0.2/24", 5, 2);
        assert!(!holds_default_route(&a, true, [&a, &b]));
        assert!(holds_default_route(&a, false, [&a, &b]));
        assert!(holds_default_route(&b, true, [&a, &b]));
        // Without a v6 gateway, a does not compete for the v6 route.
        let mut c = a.clone();
        c.id = id("c");
        c.gw_priority = 9;
        if let Some(m) = c.mirror.as_mut() {
            m.gateway = None;
        }
        assert!(holds_default_route(&a, false, [&a, &c]));
        let sandbox_addresses: Vec<IpNet> = a.addresses().map(|(n, _)| n).collect();
        assert_eq!(
            sandbox_addresses,
            vec![
                "10.1.0.2/24".parse::<IpNet>().expect("a"),
                "fd00:1::2/64".parse().expect("b")
            ]
        );
    }

    #[test]
    fn a_second_endpoint_with_the_same_interface_in_a_sandbox_is_refused() {
        let a = attached("a", "/s", "eth0", "10.1.0.2/24", 0, 1);
        let mut req = EndpointRequest {
            id: id("b"),
            network: "blue".into(),
            sandbox: "/s".into(),
            if_name: "eth0".into(),
            address: None,
            mac: None,
            publish: Vec::new(),
            cni: None,
            gw_priority: 0,
            replace_default_route: false,
            names: Default::default(),
        };
        let p = interface_name_problem(&req, [&a]).expect("refused");
        assert_eq!(p.reason, Reason::InterfaceNameInUse);
        assert!(p.message.contains("default/a"), "{}", p.message);
        req.if_name = "eth1".into();
        assert!(interface_name_problem(&req, [&a]).is_none());
        // The endpoint itself (a repeated request) is no conflict.
        req.if_name = "eth0".into();
        req.id = id("a");
        assert!(interface_name_problem(&req, [&a]).is_none());
    }

    #[test]
    fn docker_macs_from_addresses() {
        assert_eq!(
            derive_mac("172.17.0.2".parse().expect("ip")),
            Mac([0x02, 0x42, 172, 17, 0, 2])
        );
        assert_eq!(
            "02:42:ac:11:00:02".parse::<Mac>().ok(),
            Some(Mac([2, 0x42, 0xac, 0x11, 0, 2]))
        );
        assert_eq!("02:42:ac:11:00".parse::<Mac>().ok(), None);
        assert_eq!("zz:42:ac:11:00:02".parse::<Mac>().ok(), None);
    }

    #[test]
    fn host_interface_names_fit_and_are_stable() {
        let n = host_interface(&id("web"));
        assert_eq!(n.len(), 15);
        assert_eq!(n, host_interface(&id("web")));
        assert_ne!(n, host_interface(&id("db")));
    }

    /// Publish chains mean the same in any order (the executor does not keep it): DNATs of
    /// ports no two endpoints share, masquerades, one jump per hook chain.
    #[test]
    fn publish_chains_mean_the_same_in_any_order() {
        let mut specific = tcp(7000, 80);
        specific.host_ip = Some("192.0.2.1".parse().expect("ip"));
        let (chains, _) = publish_rules(&[
            publication("a", 1, "10.0.0.2", vec![tcp(5000, 80), tcp(5001, 81)]),
            publication("b", 2, "10.0.0.3", vec![tcp(6000, 80), specific]),
            publication("c", 3, "10.0.0.4", vec![tcp(5000, 80)]),
        ]);
        for (name, chain) in &chains {
            let kinds: std::collections::BTreeSet<&str> = chain
                .rules
                .iter()
                .map(|r| crate::plan::firewall::tests::verdict(&r.body))
                .collect();
            assert_eq!(kinds.len(), 1, "{name}: {kinds:?}");
        }
    }

    #[test]
    fn first_claim_keeps_the_port_and_the_second_gets_nothing() {
        let a = publication("a", 1, "10.0.0.2", vec![tcp(5000, 80)]);
        let b = publication("b", 2, "10.0.0.3", vec![tcp(6000, 80), tcp(5000, 80)]);
        let (chains, conflicts) = publish_rules(&[b.clone(), a.clone()]);
        assert_eq!(conflicts.len(), 1);
        let p = &conflicts[&id("b")];
        assert_eq!(p.reason, Reason::PortConflict);
        assert!(p.message.contains("default/a"), "{}", p.message);
        let rules: Vec<&str> = chains[CHAIN_PUBLISH]
            .rules
            .iter()
            .map(|r| r.body.as_str())
            .collect();
        assert_eq!(rules, vec!["tcp dport 5000 dnat ip to 10.0.0.2:80"]);
    }

    #[test]
    fn a_gone_sandbox_keeps_its_port_claims_but_gets_no_rules() {
        let mut gone = publication("a", 1, "10.0.0.2", vec![tcp(5000, 80)]);
        gone.sandbox_gone = true;
        let later = publication("b", 2, "10.0.0.3", vec![tcp(5000, 80)]);
        let (chains, conflicts) = publish_rules(&[gone.clone(), later]);
        assert!(chains.is_empty(), "{chains:?}");
        assert_eq!(conflicts[&id("b")].reason, Reason::PortConflict);
        let other = publication("c", 3, "10.0.0.4", vec![tcp(6000, 80)]);
        let (chains, _) = publish_rules(&[gone, other]);
        let rules: Vec<&str> = chains[CHAIN_PUBLISH]
            .rules
            .iter()
            .map(|r| r.body.as_str())
            .collect();
        assert_eq!(rules, vec!["tcp dport 6000 dnat ip to 10.0.0.4:80"]);
    }

    #[test]
    fn host_ip_binding_and_ranges() {
        let mut p = tcp(8000, 80);
        p.host_port_end = 8001;
        p.host_ip = Some("192.0.2.1".parse().expect("ip"));
        let (chains, conflicts) = publish_rules(&[publication("a", 1, "10.0.0.2", vec![p])]);
        assert!(conflicts.is_empty());
        assert_eq!(
            chains[CHAIN_PUBLISH].rules[0].body,
            "ip daddr 192.0.2.1 tcp dport 8000-8001 dnat ip to 10.0.0.2 : tcp dport map { 8000 : 80, 8001 : 81 }"
        );
        // Two specific bindings of one port on different addresses do not clash.
        let mut q = tcp(5000, 80);
        q.host_ip = Some("192.0.2.1".parse().expect("ip"));
        let mut r = tcp(5000, 80);
        r.host_ip = Some("192.0.2.2".parse().expect("ip"));
        let (_, conflicts) = publish_rules(&[
            publication("a", 1, "10.0.0.2", vec![q]),
            publication("b", 2, "10.0.0.3", vec![r]),
        ]);
        assert!(conflicts.is_empty());
    }

    #[test]
    fn ipv6_publications_leave_loopback_alone() {
        let mut p = publication("a", 1, "fd00::2", vec![tcp(5000, 80)]);
        p.addresses = vec!["fd00::2/64".parse().expect("addr")];
        let (chains, _) = publish_rules(&[p]);
        assert_eq!(
            chains[CHAIN_PUBLISH].rules[0].body,
            "ip6 daddr != ::1 tcp dport 5000 dnat ip6 to [fd00::2]:80"
        );
    }

    /// A dual-stack endpoint's port is published in both families, each to the address of
    /// its family; a host address binds only its own family.
    #[test]
    fn a_dual_stack_endpoint_publishes_in_both_families() {
        let mut p = publication("a", 1, "10.0.0.2", vec![tcp(5000, 80)]);
        p.addresses.push("fd00::2/64".parse().expect("addr"));
        let (chains, conflicts) = publish_rules(&[p.clone()]);
        assert!(conflicts.is_empty());
        let rules: Vec<&str> = chains[CHAIN_PUBLISH]
            .rules
            .iter()
            .map(|r| r.body.as_str())
            .collect();
        assert_eq!(
            rules,
            vec![
                "tcp dport 5000 dnat ip to 10.0.0.2:80",
                "ip6 daddr != ::1 tcp dport 5000 dnat ip6 to [fd00::2]:80"
            ]
        );
        let hairpin: Vec<&str> = chains[CHAIN_PUBLISH_POSTROUTING]
            .rules
            .iter()
            .map(|r| r.body.as_str())
            .collect();
        assert_eq!(hairpin.len(), 2);
        assert!(
            hairpin[1].contains("ip6 saddr fd00::/64 ip6 daddr fd00::2"),
            "{hairpin:?}"
        );
        // One claim per port, not per family: a second endpoint on 5000 is refused.
        let q = publication("b", 2, "10.0.0.3", vec![tcp(5000, 80)]);
        let (_, conflicts) = publish_rules(&[p.clone(), q]);
        assert_eq!(conflicts[&id("b")].reason, Reason::PortConflict);
        // Bound to a v6 host address: only the v6 rule.
        p.ports[0].host_ip = Some("2001:db8::1".parse().expect("ip"));
        let (chains, _) = publish_rules(&[p]);
        let rules: Vec<&str> = chains[CHAIN_PUBLISH]
            .rules
            .iter()
            .map(|r| r.body.as_str())
            .collect();
        assert_eq!(
            rules,
            vec!["ip6 daddr 2001:db8::1 tcp dport 5000 dnat ip6 to [fd00::2]:80"]
        );
    }

    /// `-p 80`: the lowest free port of the range, clear of every other endpoint's ports
    /// (any host address) and of the request's own; kept on a repeated admission; a full
    /// range refuses the endpoint.
    #[test]
    fn host_ports_are_chosen_free_kept_and_refused_when_the_range_is_full() {
        let range = HostPortRange {
            first: 40000,
            last: 40003,
        };
        let any = |c: u16| PortSpec {
            host_port: ANY_HOST_PORT,
            host_port_end: ANY_HOST_PORT,
            ..tcp(0, c)
        };
        let mut other = attached("o", "/o", "eth0", "10.0.0.9/24", 0, 1);
        let mut bound = tcp(40000, 80);
        bound.host_ip = Some("192.0.2.1".parse().expect("ip"));
        other.publish = vec![
            bound,
            PortSpec {
                protocol: Protocol::Udp,
                ..tcp(40001, 53)
            },
        ];
        let wanted = vec![any(80), tcp(40001, 81), any(443)];
        let chosen = choose_host_ports(&wanted, None, [&other], range).expect("chosen");
        let hosts: Vec<u16> = chosen.iter().map(|p| p.host_port).collect();
        // 40000 is taken (even if only on one address), 40001 is this request's own; the
        // other endpoint's 40001 is udp and does not count for tcp.
        assert_eq!(hosts, vec![40002, 40001, 40003]);
        assert!(chosen.iter().all(|p| p.host_port == p.host_port_end));
        assert_eq!(chosen[0].container_port, 80);
        // Admitted again: the same ports, even though lower ones would now be free.
        let kept = choose_host_ports(&wanted, Some(&chosen), [], range).expect("kept");
        assert_eq!(kept, chosen);
        // Nothing free: refused, naming the range.
        let full = choose_host_ports(
            &[any(80), any(81)],
            None,
            [&other],
            HostPortRange {
                first: 40000,
                last: 40001,
            },
        );
        let p = full.expect_err("full");
        assert_eq!(p.reason, Reason::PortConflict);
        assert!(p.message.contains("40000-40001"), "{}", p.message);
        // Nothing to choose: as it was.
        let fixed = vec![tcp(8080, 80)];
        assert_eq!(choose_host_ports(&fixed, None, [&other], range), Ok(fixed));
    }

    #[test]
    fn host_port_ranges_parse_like_the_flag() {
        assert_eq!(
            "49153-65535".parse::<HostPortRange>(),
            Ok(HostPortRange::default())
        );
        for bad in ["", "80", "0-10", "10-5", "a-b", "1-70000"] {
            assert!(bad.parse::<HostPortRange>().is_err(), "{bad:?}");
        }
        assert_eq!(HostPortRange::default().to_string(), "49153-65535");
    }

    #[test]
    fn no_publications_no_chains() {
        let (chains, conflicts) = publish_rules(&[]);
        assert!(chains.is_empty() && conflicts.is_empty());
    }
}
