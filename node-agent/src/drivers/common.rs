//! What several drivers read the same way: the controller's allocation (subnets, gateway,
//! this node's block), the MTU, the address space most drivers' endpoints share, and the
//! node's capabilities. Every reader turns malformed data into a [`Problem`]; nothing here
//! panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use weft_ipam::first_host;

use super::contract::{AddressSpace, MirrorSpace, NetworkInput, NodeFacts, Problem, Reason};

/// Smallest MTU Weft sets (IPv4's minimum reassembly size, the schema's lower bound).
pub const MIN_MTU: u32 = 576;

/// The network's allocated subnets, canonical, in allocation order. None yet → NotAllocated.
pub(crate) fn allocated_subnets(net: &NetworkInput) -> Result<Vec<IpNet>, Problem> {
    if net.status.subnets.is_empty() {
        return Err(Problem::new(
            Reason::NotAllocated,
            format!(
                "the controller has not allocated a subnet to network {} yet",
                net.name
            ),
        ));
    }
    let mut subnets: Vec<IpNet> = Vec::with_capacity(net.status.subnets.len());
    for s in &net.status.subnets {
        let parsed: IpNet = s.trim().parse().map_err(|_| {
            Problem::new(
                Reason::InvalidStatus,
                format!(
                    "status.subnets of network {} holds {s:?}, which is not a CIDR",
                    net.name
                ),
            )
        })?;
        let canonical = parsed.trunc();
        if !subnets.contains(&canonical) {
            subnets.push(canonical);
        }
    }
    Ok(subnets)
}

/// The controller's gateway (of the first subnet), if any.
pub(crate) fn status_gateway(net: &NetworkInput) -> Result<Option<IpAddr>, Problem> {
    match net.status.gateway.as_deref() {
        None => Ok(None),
        Some(g) => g.trim().parse().map(Some).map_err(|_| {
            Problem::new(
                Reason::InvalidStatus,
                format!(
                    "status.gateway of network {} is {g:?}, not an IP address",
                    net.name
                ),
            )
        }),
    }
}

/// The gateway address of every subnet, with the subnet's prefix: `gateway` for the subnet
/// that contains it, the first host address for the others (and for all, without a
/// gateway).
pub fn gateway_addresses(subnets: &[IpNet], gateway: Option<IpAddr>) -> Vec<IpNet> {
    subnets
        .iter()
        .filter_map(|subnet| {
            let addr = gateway
                .filter(|g| subnet.contains(g))
                .or_else(|| first_host(subnet))?;
            IpNet::new(addr, subnet.prefix_len()).ok()
        })
        .collect()
}

/// `addr + n`, if it does not overflow the family.
pub(crate) fn offset_addr(addr: IpAddr, n: u128) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => {
            let v = u128::from(u32::from(a)).checked_add(n)?;
            u32::try_from(v).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v)))
        }
        IpAddr::V6(a) => u128::from(a)
            .checked_add(n)
            .map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    }
}

/// MTU of the network's links: `spec.mtu` if set, else `default`.
pub(crate) fn link_mtu(net: &NetworkInput, default: u32) -> Result<u32, Problem> {
    match net.spec.mtu {
        Some(mtu) => explicit_mtu(net, mtu),
        None if default >= MIN_MTU => Ok(default),
        None => Err(Problem::new(
            Reason::Unsupported,
            format!(
                "network {} would get MTU {default} from the underlay, less than {MIN_MTU}; set spec.mtu or fix the node's underlay MTU",
                net.name
            ),
        )),
    }
}

/// The MTU an unrouted endpoint's interface gets: `spec.mtu` as it is (the node side checks
/// it), else the kernel's choice.
pub(crate) fn endpoint_mtu(net: &NetworkInput) -> Option<u32> {
    net.spec.mtu.and_then(|m| u32::try_from(m).ok())
}

/// `spec.mtu` if set (checked), else `None` (the kernel's choice).
pub(crate) fn optional_mtu(net: &NetworkInput) -> Result<Option<u32>, Problem> {
    net.spec.mtu.map(|mtu| explicit_mtu(net, mtu)).transpose()
}

fn explicit_mtu(net: &NetworkInput, mtu: i32) -> Result<u32, Problem> {
    u32::try_from(mtu)
        .ok()
        .filter(|m| (MIN_MTU..=65535).contains(m))
        .ok_or_else(|| {
            Problem::new(
                Reason::InvalidSpec,
                format!(
                    "spec.mtu of network {} is {mtu}; it must be between {MIN_MTU} and 65535",
                    net.name
                ),
            )
        })
}

/// This node's block of a cluster-scope network. None yet → NoBlock.
pub(crate) fn node_block(net: &NetworkInput, node: &NodeFacts) -> Result<IpNet, Problem> {
    net.blocks
        .get(&node.node_name)
        .map(IpNet::trunc)
        .ok_or_else(|| {
            Problem::new(
                Reason::NoBlock,
                format!(
                    "the controller has not given node {} an address block of network {} yet",
                    node.node_name, net.name
                ),
            )
        })
}

/// The network's `ipam.excludedRanges` (addresses already used on the LAN).
pub(crate) fn excluded_ranges(net: &NetworkInput) -> Result<Vec<IpNet>, Problem> {
    let Some(ranges) = net
        .spec
        .ipam
        .as_ref()
        .and_then(|i| i.excluded_ranges.as_ref())
    else {
        return Ok(Vec::new());
    };
    ranges
        .iter()
        .map(|r| {
            r.trim().parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                Problem::new(
                    Reason::InvalidSpec,
                    format!(
                        "spec.ipam.excludedRanges of network {} holds {r:?}, which is not a CIDR",
                        net.name
                    ),
                )
            })
        })
        .collect()
}

/// Which part of the network a node hands out to its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The whole (first) subnet, on every node (bridge: node-local, like Docker's).
    Subnet,
    /// This node's block of the network (cluster-scope drivers).
    NodeBlock,
}

/// The address space most drivers share: the subnet or this node's block, narrowed by
/// `ipam.ipRange`, with the gateway (the controller's, else — if `default_gateway` — the
/// subnet's first host) and the excluded ranges reserved.
pub(crate) fn address_space(
    net: &NetworkInput,
    node: &NodeFacts,
    scope: Scope,
    default_gateway: bool,
) -> Result<AddressSpace, Problem> {
    let subnets = allocated_subnets(net)?;
    let status_gateway = status_gateway(net)?;
    let excluded = excluded_ranges(net)?;
    let (subnet, mut range) = match scope {
        Scope::NodeBlock => {
            let block = node_block(net, node)?;
            let subnet = subnets
                .iter()
                .copied()
                .find(|s| s.contains(&block))
                .unwrap_or(block);
            (subnet, block)
        }
        Scope::Subnet => (subnets[0], subnets[0]),
    };
    if let Some(r) = net.spec.ipam.as_ref().and_then(|i| i.ip_range.as_deref())
        && let Ok(r) = r.trim().parse::<IpNet>()
        && range.contains(&r.trunc())
    {
        range = r.trunc();
    }
    let gateway = status_gateway
        .filter(|g| subnet.contains(g))
        .or_else(|| default_gateway.then(|| first_host(&subnet)).flatten());
    let mut reserved: Vec<IpNet> = excluded.clone();
    if let Some(g) = gateway {
        reserved.push(IpNet::from(g));
    }
    let mirror = subnets
        .iter()
        .copied()
        .find(|m| m.addr().is_ipv4() != subnet.addr().is_ipv4())
        .map(|m| MirrorSpace {
            subnet: m,
            gateway: status_gateway
                .filter(|g| m.contains(g))
                .or_else(|| default_gateway.then(|| first_host(&m)).flatten()),
        });
    if let Some(m) = &mirror {
        narrow_to_mirror(subnet, m, &excluded, &mut range, &mut reserved);
    }
    Ok(AddressSpace {
        subnet,
        range,
        gateway,
        reserved,
        mirror,
    })
}

/// Narrow the first family's space so that every address it hands out has a usable
/// mirror: inside the mirror subnet (a smaller mirror leaves only the first offsets), and
/// not the image of the mirror's gateway, network or broadcast address or excluded ranges.
fn narrow_to_mirror(
    subnet: IpNet,
    mirror: &MirrorSpace,
    excluded: &[IpNet],
    range: &mut IpNet,
    reserved: &mut Vec<IpNet>,
) {
    let m = mirror.subnet;
    let host_bits = |n: &IpNet| n.max_prefix_len() - n.prefix_len();
    let window_prefix = subnet.max_prefix_len() - host_bits(&subnet).min(host_bits(&m));
    if let Ok(window) = IpNet::new(subnet.network(), window_prefix) {
        if window.contains(&*range) {
            // the range fits as it is
        } else if range.contains(&window) {
            *range = window;
        } else {
            // Disjoint: no address of this range has a mirror.
            reserved.push(*range);
        }
    }
    let mut mirror_reserved: Vec<IpNet> = vec![IpNet::from(m.network())];
    if m.addr().is_ipv4() {
        mirror_reserved.push(IpNet::from(m.broadcast()));
    }
    mirror_reserved.extend(mirror.gateway.map(IpNet::from));
    mirror_reserved.extend(excluded.iter().filter(|e| m.contains(*e)).copied());
    reserved.extend(mirror_reserved.iter().filter_map(|r| image(m, subnet, *r)));
}

/// The part of subnet `to` at the same offsets as `r` in subnet `from`, if any.
fn image(from: IpNet, to: IpNet, r: IpNet) -> Option<IpNet> {
    let offset = to_u128(r.network()).checked_sub(to_u128(from.network()))?;
    let bits = (r.max_prefix_len() - r.prefix_len()).min(to.max_prefix_len() - to.prefix_len());
    let start = offset_addr(to.network(), offset)?;
    let out = IpNet::new(start, to.max_prefix_len() - bits).ok()?.trunc();
    to.contains(&out).then_some(out)
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl AddressSpace {
    /// The mirror of an address handed out from this space, with the mirror subnet's
    /// prefix, and the mirror's gateway; `None` without a mirror (or for an address that
    /// has none, which the narrowed space never hands out).
    pub fn mirror_of(&self, addr: IpAddr) -> Option<(IpNet, Option<IpAddr>)> {
        let m = self.mirror.as_ref()?;
        let host = image(self.subnet, m.subnet, IpNet::from(addr))?;
        Some((
            IpNet::new(host.addr(), m.subnet.prefix_len()).ok()?,
            m.gateway,
        ))
    }

    /// A requested address in the allocator's family: itself, or for an address of the
    /// mirror's family (`docker run --ip6`) the address it mirrors.
    pub fn in_allocated_family(&self, requested: IpAddr) -> IpAddr {
        match &self.mirror {
            Some(m) if m.subnet.contains(&requested) => {
                image(m.subnet, self.subnet, IpNet::from(requested))
                    .map(|n| n.addr())
                    .unwrap_or(requested)
            }
            _ => requested,
        }
    }
}

/// `Ok` if the node's kernel has the feature.
pub(crate) fn require(present: bool, message: impl FnOnce() -> String) -> Result<(), Problem> {
    if present {
        Ok(())
    } else {
        Err(Problem::new(Reason::Unsupported, message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    #[test]
    fn gateways_per_subnet() {
        let subnets = [net("10.0.0.0/24"), net("10.0.1.0/24"), net("fd00::/64")];
        assert_eq!(
            gateway_addresses(&subnets, Some(ip("10.0.0.254"))),
            vec![net("10.0.0.254/24"), net("10.0.1.1/24"), net("fd00::1/64")]
        );
        assert_eq!(
            gateway_addresses(&subnets, Some(ip("10.0.1.9"))),
            vec![net("10.0.0.1/24"), net("10.0.1.9/24"), net("fd00::1/64")]
        );
        assert_eq!(
            gateway_addresses(&subnets[..1], None),
            vec![net("10.0.0.1/24")]
        );
    }

    fn dual_stack(subnets: &[&str], gateway: Option<&str>) -> AddressSpace {
        let mut n = crate::drivers::testutil::network("ds", weft_api::Driver::Bridge);
        crate::drivers::testutil::allocate(&mut n, subnets, gateway);
        let node = crate::drivers::testutil::node("n1", "192.0.2.1");
        address_space(&n, &node, Scope::Subnet, true).expect("space")
    }

    #[test]
    fn a_dual_stack_endpoint_mirrors_its_address_into_the_other_family() {
        let space = dual_stack(&["10.0.0.0/24", "fd00:1::/64"], Some("10.0.0.1"));
        assert_eq!(space.subnet, net("10.0.0.0/24"));
        assert_eq!(
            space.mirror_of(ip("10.0.0.5")),
            Some((net("fd00:1::5/64"), Some(ip("fd00:1::1"))))
        );
        assert_eq!(space.in_allocated_family(ip("fd00:1::9")), ip("10.0.0.9"));
        assert_eq!(space.in_allocated_family(ip("10.0.0.9")), ip("10.0.0.9"));
        // A v6 network first: the v4 mirror is smaller, so only its offsets are handed
        // out, and the v4 broadcast's image is reserved.
        let space = dual_stack(&["fd00:2::/64", "10.9.0.0/24"], None);
        assert_eq!(space.range, net("fd00:2::/120"));
        assert!(
            space.reserved.contains(&net("fd00:2::ff/128")),
            "{:?}",
            space.reserved
        );
        assert_eq!(
            space.mirror_of(ip("fd00:2::2")),
            Some((net("10.9.0.2/24"), Some(ip("10.9.0.1"))))
        );
        // A gateway that is not the first host in one family reserves its image in the
        // other: 10.0.0.254 is the v4 gateway, fd00:1::1 the v6 one.
        let space = dual_stack(&["10.0.0.0/24", "fd00:1::/64"], Some("10.0.0.254"));
        assert!(space.reserved.contains(&net("10.0.0.254/32")));
        assert!(
            space.reserved.contains(&net("10.0.0.1/32")),
            "{:?}",
            space.reserved
        );
        // Single-stack: no mirror.
        let space = dual_stack(&["fd00:3::/64"], None);
        assert_eq!(space.mirror, None);
        assert_eq!(space.mirror_of(ip("fd00:3::2")), None);
    }

    #[test]
    fn offsets_do_not_overflow() {
        assert_eq!(offset_addr(ip("255.255.255.255"), 1), None);
        assert_eq!(
            offset_addr(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1),
            None
        );
        assert_eq!(offset_addr(ip("10.0.0.1"), 2), Some(ip("10.0.0.3")));
    }
}
