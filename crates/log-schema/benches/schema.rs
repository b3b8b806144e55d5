//! Micro-benchmarks of the contract's hot path.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_schema::{DEFAULT_MAX_RAW_BYTES, DeadLetter, Limits, Origin, validate};

const RECORD: &[u8] = br#"{"timestamp":"2025-12-28T10:30:45.123456","source_ip":"192.168.1.100","destination_ip":"10.0.0.50","port":8080,"protocol":"TCP","bytes_sent":2048,"bytes_received":4096,"action":"ALLOW"}"#;

fn benches(c: &mut Criterion) {
    let origin = Origin {
        topic: "ip_logs",
        partition: 0,
        offset: 1234,
    };
    let limits = Limits::default();
    let now = Utc::now();
    let mut g = c.benchmark_group("log_schema");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_validate_enrich", |b| {
        b.iter(|| validate(black_box(RECORD), &origin, now, &limits))
    });
    let record = validate(RECORD, &origin, now, &limits).expect("valid");
    let mut buf = Vec::with_capacity(512);
    g.bench_function("serialise_validated", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&record).write_json(&mut buf);
        })
    });
    let bad = br#"{"timestamp":"2025-12-28T10:30:45","source_ip":"999.1.1.1"}"#;
    let err = validate(bad, &origin, now, &limits).expect_err("invalid");
    g.bench_function("build_dlq_envelope", |b| {
        b.iter(|| {
            DeadLetter::new(&err, black_box(bad), &origin, now, DEFAULT_MAX_RAW_BYTES).to_json()
        })
    });
    g.finish();
}

criterion_group!(schema, benches);
criterion_main!(schema);
