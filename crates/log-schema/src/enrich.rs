//! Enrichment: address classes and well-known service names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The class of an IP address, as a security analyst groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IpClass {
    /// RFC 1918 IPv4 and RFC 4193 unique-local IPv6 (`fc00::/7`).
    Private,
    /// Globally routable.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// Carrier-grade NAT, `100.64.0.0/10` (RFC 6598).
    SharedAddressSpace,
    /// Documentation ranges (TEST-NET-1/2/3, `2001:db8::/32`).
    Documentation,
    /// Other reserved ranges (`0.0.0.0/8`, `240.0.0.0/4`, benchmarking `198.18.0.0/15`).
    Reserved,
}

impl IpClass {
    /// The stable snake_case name stored in Cassandra.
    pub fn as_str(self) -> &'static str {
        match self {
            IpClass::Private => "private",
            IpClass::Public => "public",
            IpClass::Loopback => "loopback",
            IpClass::LinkLocal => "link_local",
            IpClass::Multicast => "multicast",
            IpClass::Unspecified => "unspecified",
            IpClass::Broadcast => "broadcast",
            IpClass::SharedAddressSpace => "shared_address_space",
            IpClass::Documentation => "documentation",
            IpClass::Reserved => "reserved",
        }
    }

    /// Classifies an address. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are classified as
    /// the IPv4 address they carry.
    pub fn of(ip: IpAddr) -> IpClass {
        match ip {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => classify_v4(v4),
                None => classify_v6(v6),
            },
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> IpClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() {
        IpClass::Unspecified
    } else if ip.is_loopback() {
        IpClass::Loopback
    } else if ip.is_private() {
        IpClass::Private
    } else if ip.is_link_local() {
        IpClass::LinkLocal
    } else if ip.is_broadcast() {
        IpClass::Broadcast
    } else if ip.is_multicast() {
        IpClass::Multicast
    } else if a == 100 && (b & 0xc0) == 64 {
        IpClass::SharedAddressSpace
    } else if ip.is_documentation() {
        IpClass::Documentation
    } else if a == 0 || a >= 240 || (a == 198 && (b & 0xfe) == 18) || (a == 192 && b == 0 && c == 0)
    {
        IpClass::Reserved
    } else {
        IpClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> IpClass {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        IpClass::Unspecified
    } else if ip.is_loopback() {
        IpClass::Loopback
    } else if ip.is_multicast() {
        IpClass::Multicast
    } else if (first & 0xffc0) == 0xfe80 {
        IpClass::LinkLocal
    } else if (first & 0xfe00) == 0xfc00 {
        IpClass::Private
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        IpClass::Documentation
    } else {
        IpClass::Public
    }
}

/// The well-known service for a normalised (upper-case) protocol and port, if any.
pub fn service_name(protocol: &str, port: u16) -> Option<&'static str> {
    let tcp = protocol == "TCP";
    let udp = protocol == "UDP";
    if protocol == "ICMP" || protocol == "ICMPV6" {
        return Some("icmp");
    }
    let name = match (port, tcp, udp) {
        (20 | 21, true, _) => "ftp",
        (22, true, _) => "ssh",
        (23, true, _) => "telnet",
        (25, true, _) => "smtp",
        (53, _, _) if tcp || udp => "dns",
        (67 | 68, _, true) => "dhcp",
        (80, true, _) => "http",
        (110, true, _) => "pop3",
        (123, _, true) => "ntp",
        (135, true, _) => "msrpc",
        (137..=139, _, _) if tcp || udp => "netbios",
        (143, true, _) => "imap",
        (161 | 162, _, true) => "snmp",
        (389, _, _) if tcp || udp => "ldap",
        (443, true, _) => "https",
        (443, _, true) => "quic",
        (445, true, _) => "smb",
        (465 | 587, true, _) => "smtp-submission",
        (514, _, true) => "syslog",
        (636, true, _) => "ldaps",
        (993, true, _) => "imaps",
        (995, true, _) => "pop3s",
        (1433, true, _) => "mssql",
        (1521, true, _) => "oracle",
        (1883, true, _) => "mqtt",
        (2049, _, _) if tcp || udp => "nfs",
        (2181, true, _) => "zookeeper",
        (3306, true, _) => "mysql",
        (3389, true, _) => "rdp",
        (5060 | 5061, _, _) if tcp || udp => "sip",
        (5432, true, _) => "postgresql",
        (5672, true, _) => "amqp",
        (5900, true, _) => "vnc",
        (6379, true, _) => "redis",
        (6443, true, _) => "kubernetes-api",
        (8080 | 8000 | 8008, true, _) => "http-alt",
        (8443, true, _) => "https-alt",
        (9042, true, _) => "cassandra",
        (9092, true, _) => "kafka",
        (9200, true, _) => "elasticsearch",
        (11211, _, _) if tcp || udp => "memcached",
        (27017, true, _) => "mongodb",
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> IpClass {
        IpClass::of(s.parse().expect("test address"))
    }

    #[test]
    fn classes() {
        assert_eq!(class("192.168.1.100"), IpClass::Private);
        assert_eq!(class("10.0.0.50"), IpClass::Private);
        assert_eq!(class("172.16.3.4"), IpClass::Private);
        assert_eq!(class("8.8.8.8"), IpClass::Public);
        assert_eq!(class("127.0.0.1"), IpClass::Loopback);
        assert_eq!(class("169.254.1.1"), IpClass::LinkLocal);
        assert_eq!(class("224.0.0.251"), IpClass::Multicast);
        assert_eq!(class("0.0.0.0"), IpClass::Unspecified);
        assert_eq!(class("255.255.255.255"), IpClass::Broadcast);
        assert_eq!(class("100.64.0.1"), IpClass::SharedAddressSpace);
        assert_eq!(class("192.0.2.1"), IpClass::Documentation);
        assert_eq!(class("240.0.0.1"), IpClass::Reserved);
        assert_eq!(class("::1"), IpClass::Loopback);
        assert_eq!(class("::"), IpClass::Unspecified);
        assert_eq!(class("fe80::1"), IpClass::LinkLocal);
        assert_eq!(class("fd12:3456::1"), IpClass::Private);
        assert_eq!(class("ff02::1"), IpClass::Multicast);
        assert_eq!(class("2001:db8::1"), IpClass::Documentation);
        assert_eq!(class("2a00:1450::1"), IpClass::Public);
        assert_eq!(class("::ffff:192.168.0.1"), IpClass::Private);
    }

    #[test]
    fn services() {
        assert_eq!(service_name("TCP", 443), Some("https"));
        assert_eq!(service_name("UDP", 53), Some("dns"));
        assert_eq!(service_name("TCP", 53), Some("dns"));
        assert_eq!(service_name("UDP", 22), None);
        assert_eq!(service_name("ICMP", 0), Some("icmp"));
        assert_eq!(service_name("TCP", 49152), None);
        assert_eq!(service_name("GRE", 0), None);
    }
}
