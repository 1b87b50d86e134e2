//! What several drivers read the same way: the controller's allocation (subnets, gateway,
//! this node's block), the MTU, the address space most drivers' endpoints share, and the
//! node's capabilities. Every reader turns malformed data into a [`Problem`]; nothing here
//! panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use weft_ipam::first_host;

use super::contract::{AddressSpace, NetworkInput, NodeFacts, Problem, Reason};

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
    let mut reserved: Vec<IpNet> = excluded;
    if let Some(g) = gateway {
        reserved.push(IpNet::from(g));
    }
    Ok(AddressSpace {
        subnet,
        range,
        gateway,
        reserved,
    })
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
