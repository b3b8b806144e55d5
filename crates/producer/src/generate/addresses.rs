//! Random addresses of the simulated network: private and public IPv4, public IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::{Rng, rngs::SmallRng};

pub(super) fn private_v4(rng: &mut SmallRng) -> Ipv4Addr {
    match rng.random_range(0..3) {
        0 => Ipv4Addr::new(10, rng.random(), rng.random(), rng.random_range(1..255)),
        1 => Ipv4Addr::new(
            172,
            rng.random_range(16..32),
            rng.random(),
            rng.random_range(1..255),
        ),
        _ => Ipv4Addr::new(192, 168, rng.random(), rng.random_range(1..255)),
    }
}

pub(super) fn public_v4(rng: &mut SmallRng) -> Ipv4Addr {
    loop {
        let ip = Ipv4Addr::new(
            rng.random_range(1..224),
            rng.random(),
            rng.random(),
            rng.random_range(1..255),
        );
        if log_schema::IpClass::of(IpAddr::V4(ip)) == log_schema::IpClass::Public {
            return ip;
        }
    }
}

pub(super) fn public_v6(rng: &mut SmallRng) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2a02,
        rng.random(),
        rng.random(),
        rng.random(),
        0,
        0,
        0,
        rng.random_range(1..0xffff),
    )
}
