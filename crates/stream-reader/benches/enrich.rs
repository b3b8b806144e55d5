//! The validation stage's per-record CPU with GeoIP: parse + validate + enrich, then the
//! country/city and AS lookups of both addresses (MaxMind's test databases,
//! `tests/data/geoip/`), against the same without databases.

use std::{hint::black_box, path::Path};

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_schema::{Limits, Origin, validate};
use stream_reader::geoip::GeoIp;

const RECORD: &[u8] = br#"{"timestamp":"2025-12-28T10:30:45.123456","source_ip":"81.2.69.142","destination_ip":"1.128.0.1","port":443,"protocol":"TCP","bytes_sent":2048,"bytes_received":4096,"action":"ALLOW"}"#;

fn benches(c: &mut Criterion) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/geoip");
    let geo = GeoIp::open(
        Some(data.join("GeoLite2-City-Test.mmdb")),
        Some(data.join("GeoLite2-ASN-Test.mmdb")),
    );
    let none = GeoIp::open(None, None);
    let origin = Origin {
        topic: "ip_logs",
        partition: 0,
        offset: 1234,
    };
    let limits = Limits::default();
    let now = Utc::now();
    let enrich = |geo: &GeoIp| {
        let mut r = validate(black_box(RECORD), &origin, now, &limits).expect("valid");
        r.source_geo = geo.lookup(r.source_ip);
        r.destination_geo = geo.lookup(r.destination_ip);
        r
    };
    assert!(enrich(&geo).source_geo.is_some() && enrich(&geo).destination_geo.is_some());
    // 2,000 distinct source addresses, as the generator's network has, half of them in the
    // test databases' networks: lookups after the first of each address hit the cache.
    let addresses: Vec<std::net::IpAddr> = (0..2_000u32)
        .map(|i| match i % 4 {
            0 => std::net::Ipv4Addr::new(81, 2, 69, 142 + (i % 2) as u8).into(),
            1 => std::net::Ipv4Addr::from(0x0180_0000 + i).into(),
            _ => std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
        })
        .collect();
    let mut next = 0usize;
    let mut mixed = |geo: &GeoIp, cached: bool| {
        let mut r = validate(black_box(RECORD), &origin, now, &limits).expect("valid");
        next = (next + 1) % addresses.len();
        let lookup = |ip| {
            if cached {
                geo.lookup(ip)
            } else {
                geo.lookup_uncached(ip)
            }
        };
        r.source_geo = lookup(addresses[next]);
        r.destination_geo = lookup(r.destination_ip);
        r
    };
    let mut g = c.benchmark_group("stream_reader");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_validate_enrich_no_geoip", |b| {
        b.iter(|| enrich(&none))
    });
    g.bench_function("parse_validate_enrich_geoip", |b| {
        b.iter(|| mixed(&geo, true))
    });
    g.bench_function("parse_validate_enrich_geoip_uncached", |b| {
        b.iter(|| mixed(&geo, false))
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
