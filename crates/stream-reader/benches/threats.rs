//! Threat-list lookups (`READER_THREAT_LISTS`): one address against 100,000 CIDR blocks in 4
//! lists (random /8–/32 IPv4 blocks and /32–/64 IPv6 blocks, seeded), for addresses that are
//! mostly on no list (ordinary traffic) and for addresses inside a listed block. The issue's
//! bound: ≤ 200 ns per address.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipnet::IpNet;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use stream_reader::threats::Table;

fn benches(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(42);
    let lists: Vec<(Arc<str>, Vec<IpNet>)> = (0..4)
        .map(|i| {
            let nets = (0..25_000)
                .map(|_| {
                    if rng.random_bool(0.9) {
                        let len = rng.random_range(8..=32);
                        IpNet::new(IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())), len)
                    } else {
                        let len = rng.random_range(32..=64);
                        IpNet::new(IpAddr::V6(Ipv6Addr::from(rng.random::<u128>())), len)
                    }
                    .expect("prefix length")
                    .trunc()
                })
                .collect();
            (Arc::from(format!("list{i}").as_str()), nets)
        })
        .collect();
    let table = Table::build(&lists);
    let random: Vec<IpAddr> = (0..4_096)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())))
        .collect();
    let listed: Vec<IpAddr> = lists
        .iter()
        .flat_map(|(_, nets)| nets.iter().take(1_024).map(|n| n.addr()))
        .collect();
    assert!(listed.iter().all(|ip| table.lookup(*ip) != 0));
    let mut g = c.benchmark_group("threat_lookup_100k_cidrs");
    for (name, addresses) in [("random_ipv4", &random), ("listed", &listed)] {
        g.throughput(Throughput::Elements(addresses.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                addresses
                    .iter()
                    .fold(0u64, |acc, ip| acc ^ table.lookup(black_box(*ip)))
            })
        });
    }
    g.finish();
}

criterion_group!(threats, benches);
criterion_main!(threats);
