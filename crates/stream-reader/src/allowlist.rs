//! The addresses the alert rules skip (`READER_ALERT_ALLOWLIST`): your own scanners,
//! monitoring hosts, NAT gateways and load balancers.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

/// Addresses and CIDR blocks; a window of an address inside one raises no alert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Arc<[IpNet]>);

impl Allowlist {
    /// Parses a comma-separated list of addresses (`192.0.2.7`, `2001:db8::1`) and CIDR blocks
    /// (`10.0.0.0/8`); empty entries are ignored, so an empty text is an empty list.
    pub fn parse(text: &str) -> Result<Self, String> {
        let nets = text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("`{t}` is neither an IP address nor a CIDR block (like 10.0.0.0/8)")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(nets.into()))
    }

    /// Whether `ip` is listed (IPv4-mapped IPv6 addresses match as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn addresses_and_blocks_of_both_families() {
        let a = Allowlist::parse(" 10.1.0.0/16, 192.0.2.7,2001:db8::/32 ,").expect("parse");
        assert!(a.contains(ip("10.1.255.3")));
        assert!(!a.contains(ip("10.2.0.1")));
        assert!(a.contains(ip("192.0.2.7")));
        assert!(!a.contains(ip("192.0.2.8")));
        assert!(a.contains(ip("2001:db8:ffff::1")));
        assert!(a.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        // A block given with host bits set means its network.
        assert!(
            Allowlist::parse("10.1.2.3/8")
                .expect("parse")
                .contains(ip("10.200.0.1"))
        );
        assert!(Allowlist::parse("").expect("empty").is_empty());
    }

    #[test]
    fn a_bad_entry_is_named() {
        let e = Allowlist::parse("10.0.0.0/8,10.0.0.300").expect_err("bad");
        assert!(e.contains("`10.0.0.300`"), "{e}");
        assert!(Allowlist::parse("10.0.0.0/33").is_err());
    }
}
