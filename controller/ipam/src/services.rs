//! The service range: the part of a subnet that service VIPs come from.

use ipnet::IpNet;

/// The part of a subnet reserved for service VIPs, which the endpoint IPAM never hands out
/// by itself (an endpoint asking for one by name, like `docker run --ip`, still gets it, and
/// the controller then never makes it a VIP): the top sixteenth (4 bits longer than the subnet; for a /24, .240/28), at most /30 for
/// IPv4 (/126 for IPv6) so small subnets keep room for endpoints; `None` for subnets too
/// small to spare anything (/27 and longer).
pub fn service_range(subnet: &IpNet) -> Option<IpNet> {
    let longest = match subnet {
        IpNet::V4(_) => 30u8,
        IpNet::V6(_) => 126u8,
    };
    let len = subnet.prefix_len().checked_add(4)?;
    if len > longest {
        return None;
    }
    // The last subnet of length `len` inside `subnet`.
    subnet.subnets(len).ok()?.last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_range_is_the_top_sixteenth_of_the_subnet() {
        let r = |s: &str| service_range(&s.parse().unwrap()).map(|n| n.to_string());
        assert_eq!(r("10.0.0.0/24").as_deref(), Some("10.0.0.240/28"));
        assert_eq!(r("10.1.0.0/16").as_deref(), Some("10.1.240.0/20"));
        assert_eq!(r("10.0.0.0/26").as_deref(), Some("10.0.0.60/30"));
        assert_eq!(r("10.0.0.0/27"), None);
        assert_eq!(r("fd00::/64").as_deref(), Some("fd00::f000:0:0:0/68"));
    }
}
