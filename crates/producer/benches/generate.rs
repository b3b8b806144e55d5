//! Generate + serialise one record (the producer's CPU cost per log, without Kafka).

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use producer::{Generator, GeneratorConfig};

fn benches(c: &mut Criterion) {
    let mut g = Generator::new(GeneratorConfig::default());
    let mut buf = Vec::with_capacity(512);
    let now = Utc::now();
    let mut group = c.benchmark_group("producer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("generate_serialise", |b| {
        b.iter(|| {
            let (key, _) = g.next_into(black_box(now), &mut buf);
            black_box(key.len());
        })
    });
    group.finish();
}

criterion_group!(producer, benches);
criterion_main!(producer);
