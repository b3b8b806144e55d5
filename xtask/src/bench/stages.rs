//! The per-stage phases of `cargo xtask bench`: each service against its ceiling.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use log_schema::ValidatedRecord;
use pipeline_runtime::cassandra::CassandraArgs;

use super::{
    Ctx, Metric, Records,
    ceilings::{python_produce, raw_inserts, raw_passthrough, raw_produce},
    children_cpu_secs,
    e2e::{
        Load, WRITER_METRICS_ADDR, WRITER_METRICS_PORT, end_to_end as run_end_to_end, wait_rows,
    },
    peak_rss_mb, read_all, service, stop, topic_size, wait_committed, wait_size,
};

/// Phase 1: the producer (release binary, `--rate 0`) vs a raw rdkafka producer sending the
/// same bytes vs a Python confluent-kafka producer; returns the records it produced.
pub(super) async fn producer(ctx: &mut Ctx<'_>) -> anyhow::Result<Records> {
    let (n, _e2e_secs) = (ctx.n, ctx.e2e_secs);
    // The broker's first idempotent producer waits for its coordinator to load ("Coordinator
    // load in progress"): a fresh stack's first phase would pay that, the raw loop after it not.
    raw_produce(&ctx.kafka, "b_warmup", &[(None, b"{}".to_vec())], 1_000)?;
    // 1. producer
    println!("bench: producer, {n} records");
    let cpu_before = children_cpu_secs();
    let start = Instant::now();
    // Its own log, as JSON: the last status line's rate is timed like the raw loop's.
    let log = ctx.log.with_file_name("producer.log");
    let _ = std::fs::remove_file(&log);
    let mut env = ctx.env.clone();
    env.push(("LOG_FORMAT".into(), "json".into()));
    env.retain(|(k, _)| k != "RUST_LOG");
    env.push(("RUST_LOG".into(), "warn,producer=info".into()));
    let mut p = service(
        "producer",
        &[
            "--topic",
            "b_raw",
            "--count",
            &ctx.n.to_string(),
            "--rate",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &env,
        &log,
    )?;
    let mut peak = 0.0f64;
    while p.try_wait()?.is_none() {
        peak = peak.max(peak_rss_mb(p.id()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let with_startup = ctx.n as f64 / start.elapsed().as_secs_f64();
    let ours = final_rate(&log)?;
    let ours_cpu_us = (children_cpu_secs() - cpu_before) * 1e6 / ctx.n as f64;
    ctx.rss.push(("producer", peak));
    let records = read_all(&ctx.kafka, "b_raw")?;
    let ceiling = raw_produce(&ctx.kafka, "b_raw_ceiling", &records, records.len())?;
    let python_n = n.min(100_000);
    let cpu_before = children_cpu_secs();
    let python = python_produce(&ctx.kafka, "b_raw_py", python_n, false)?;
    let python_cpu_us = (children_cpu_secs() - cpu_before) * 1e6 / python_n as f64;
    println!(
        "  ours {ours:.0}/s ({with_startup:.0}/s with its start-up and exit; {ours_cpu_us:.1} µs CPU per log), raw rdkafka {ceiling:.0}/s, python {python:.0}/s ({python_cpu_us:.1} µs CPU per log)"
    );
    ctx.metrics.push(Metric {
        name: "producer_logs_per_s".into(),
        value: ours,
        unit: "logs/s",
        ceiling: Some(ceiling),
    });
    ctx.metrics.push(Metric {
        name: "producer_logs_per_s_with_startup".into(),
        value: with_startup,
        unit: "logs/s",
        ceiling: Some(ceiling),
    });
    ctx.metrics.push(Metric {
        name: "producer_vs_python".into(),
        value: ours / python,
        unit: "x",
        ceiling: None,
    });
    ctx.metrics.push(Metric {
        name: "python_producer_logs_per_s".into(),
        value: python,
        unit: "logs/s",
        ceiling: None,
    });
    // Both producers are capped by the broker, so throughput says little about the clients;
    // the CPU each spends per record does (same machine, same broker, same run).
    ctx.metrics.push(Metric {
        name: "producer_cpu_us_per_log".into(),
        value: ours_cpu_us,
        unit: "us",
        ceiling: None,
    });
    ctx.metrics.push(Metric {
        name: "python_producer_cpu_us_per_log".into(),
        value: python_cpu_us,
        unit: "us",
        ceiling: None,
    });
    ctx.metrics.push(Metric {
        name: "producer_vs_python_cpu".into(),
        value: python_cpu_us / ours_cpu_us.max(1e-9),
        unit: "x",
        ceiling: None,
    });
    Ok(records)
}

/// The producer's rate from its first send until every record was delivered (its last
/// `status` line's `avg_per_s`, in a JSON log): the span the raw loop is timed over, without
/// the process's start-up (metadata, access check) and exit.
fn final_rate(log: &std::path::Path) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(log)?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "status")
        .and_then(|v| v["avg_per_s"].as_str()?.parse().ok())
        .with_context(|| format!("no status line with avg_per_s in {}", log.display()))
}

/// Phase 1b: the same three against librdkafka's in-process mock cluster (no broker cap).
pub(super) async fn producer_mock(ctx: &mut Ctx<'_>, records: &Records) -> anyhow::Result<()> {
    let (_n, _e2e_secs) = (ctx.n, ctx.e2e_secs);
    // 1b. The same three without the broker's cap: librdkafka's in-process mock cluster
    //     (`test.mock.num.brokers`), which both clients embed; only the clients differ.
    let mock_n: u64 = if ctx.quick { 300_000 } else { 2_000_000 };
    println!("bench: producer against librdkafka's mock cluster, {mock_n} records");
    let mock_env: Vec<(String, String)> = ctx
        .env
        .iter()
        .cloned()
        .chain([(
            "KAFKA_OPTIONS".to_owned(),
            "test.mock.num.brokers=1".to_owned(),
        )])
        .collect();
    let start = Instant::now();
    let status = service(
        "producer",
        &[
            "--topic",
            "b_mock",
            "--count",
            &mock_n.to_string(),
            "--rate",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &mock_env,
        &ctx.log,
    )?
    .wait()?;
    if !status.success() {
        bail!("the producer failed against the mock cluster: {status}");
    }
    let ours_mock = mock_n as f64 / start.elapsed().as_secs_f64();
    let mut mock_kafka = ctx.kafka.clone();
    mock_kafka.options.push(
        "test.mock.num.brokers=1"
            .parse()
            .map_err(anyhow::Error::msg)?,
    );
    let ceiling_mock = raw_produce(&mock_kafka, "b_mock", records, mock_n as usize)?;
    let python_mock_n = mock_n / 2;
    let python_mock = python_produce(&ctx.kafka, "b_mock", python_mock_n, true)?;
    println!("  ours {ours_mock:.0}/s, raw rdkafka {ceiling_mock:.0}/s, python {python_mock:.0}/s");
    ctx.metrics.push(Metric {
        name: "producer_mock_logs_per_s".into(),
        value: ours_mock,
        unit: "logs/s",
        ceiling: Some(ceiling_mock),
    });
    ctx.metrics.push(Metric {
        name: "python_producer_mock_logs_per_s".into(),
        value: python_mock,
        unit: "logs/s",
        ceiling: None,
    });
    ctx.metrics.push(Metric {
        name: "producer_vs_python_mock".into(),
        value: ours_mock / python_mock,
        unit: "x",
        ceiling: None,
    });
    Ok(())
}

/// Phase 2: the stream-reader on the topic the producer filled, at-least-once and
/// exactly-once, vs a raw consume → produce pass-through.
pub(super) async fn reader(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    // Five times the stage size: at the pass-through's ~250,000 records/s a 50,000-record drain
    // takes 0.2 s, too short for a clock that watches the topic from outside.
    let rn = ctx.n * 5;
    println!("bench: stream-reader, {rn} records");
    let status = service(
        "producer",
        &[
            "--topic",
            "b_raw_reader",
            "--count",
            &rn.to_string(),
            "--rate",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &ctx.env,
        &ctx.log,
    )?
    .wait()?;
    if !status.success() {
        bail!("the producer failed to fill b_raw_reader: {status}");
    }
    let reader_env = |input: &str, suffix: &str| -> Vec<(String, String)> {
        ctx.env
            .iter()
            .cloned()
            .chain([
                ("READER_INPUT_TOPIC".into(), input.into()),
                ("READER_VALIDATED_TOPIC".into(), format!("b_valid{suffix}")),
                ("READER_DLQ_TOPIC".into(), format!("b_dlq{suffix}")),
                ("READER_STATS_TOPIC".into(), format!("b_stats{suffix}")),
                ("READER_ALERTS_TOPIC".into(), format!("b_alerts{suffix}")),
                ("READER_GROUP_ID".into(), format!("bench-reader{suffix}")),
                (
                    "READER_ANALYTICS_GROUP_ID".into(),
                    format!("bench-analytics{suffix}"),
                ),
                ("METRICS_ADDR".into(), "127.0.0.1:0".into()),
            ])
            .collect()
    };
    // Both clocks watch their output topics the same way, from the first output to the last:
    // neither counts process start-up and the consumer group join.
    let mut r = service(
        "stream-reader",
        &[],
        &reader_env("b_raw_reader", "_r"),
        &ctx.log,
    )?;
    let outputs = ["b_valid_r", "b_dlq_r"];
    wait_size(&ctx.kafka, &outputs, 1, Duration::from_secs(120)).await?;
    let took = wait_size(&ctx.kafka, &outputs, rn as i64, Duration::from_secs(600)).await?;
    ctx.rss.push(("stream-reader", peak_rss_mb(r.id())));
    stop(&mut r);
    let reader = rn as f64 / took.as_secs_f64();
    let pass = {
        let kafka = ctx.kafka.clone();
        let copy = tokio::task::spawn_blocking(move || {
            raw_passthrough(&kafka, "b_raw_reader", "b_pass", rn as i64)
        });
        wait_size(&ctx.kafka, &["b_pass"], 1, Duration::from_secs(120)).await?;
        let took = wait_size(&ctx.kafka, &["b_pass"], rn as i64, Duration::from_secs(600)).await?;
        copy.await??;
        rn as f64 / took.as_secs_f64()
    };
    println!("  ours {reader:.0}/s, raw pass-through {pass:.0}/s");
    ctx.metrics.push(Metric {
        name: "reader_records_per_s".into(),
        value: reader,
        unit: "records/s",
        ceiling: Some(pass),
    });
    // The writer's input: the producer phase's records, validated (not measured).
    let mut r = service("stream-reader", &[], &reader_env("b_raw", ""), &ctx.log)?;
    wait_size(
        &ctx.kafka,
        &["b_valid", "b_dlq"],
        ctx.n as i64,
        Duration::from_secs(600),
    )
    .await?;
    stop(&mut r);

    // 2b. the same in exactly-once mode.
    println!("bench: stream-reader, exactly-once");
    let eos_env: Vec<(String, String)> = reader_env("b_raw_reader", "_r")
        .into_iter()
        .chain(
            [
                ("READER_VALIDATED_TOPIC", "b_valid_eos"),
                ("READER_DLQ_TOPIC", "b_dlq_eos"),
                ("READER_STATS_TOPIC", "b_stats_eos"),
                ("READER_ALERTS_TOPIC", "b_alerts_eos"),
                ("READER_GROUP_ID", "bench-reader-eos"),
                ("READER_ANALYTICS_GROUP_ID", "bench-analytics-eos"),
                ("READER_DELIVERY", "exactly-once"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .collect();
    let mut r = service("stream-reader", &[], &eos_env, &ctx.log)?;
    // As the at-least-once run, from the first output (the topic's end moves with the open
    // transaction's outputs, before they are visible) to the commit of the last input offset.
    wait_size(&ctx.kafka, &["b_valid_eos"], 1, Duration::from_secs(120)).await?;
    let took = wait_committed(
        &ctx.kafka,
        "bench-reader-eos",
        "b_raw_reader",
        rn as i64,
        Duration::from_secs(600),
    )
    .await?;
    ctx.rss.push(("stream-reader-eos", peak_rss_mb(r.id())));
    stop(&mut r);
    let reader_eos = rn as f64 / took.as_secs_f64();
    println!("  exactly-once {reader_eos:.0}/s, at-least-once {reader:.0}/s");
    ctx.metrics.push(Metric {
        name: "reader_eos_records_per_s".into(),
        value: reader_eos,
        unit: "records/s",
        ceiling: Some(reader),
    });
    Ok(())
}

/// Phase 3: the cassandra-writer on the validated topic vs raw concurrent prepared inserts.
pub(super) async fn writer(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let (_n, _e2e_secs) = (ctx.n, ctx.e2e_secs);
    // 3. cassandra-writer on the validated topic
    println!("bench: cassandra-writer");
    let valid = topic_size(&ctx.kafka, "b_valid")?;
    let writer_env: Vec<(String, String)> = ctx
        .env
        .iter()
        .cloned()
        .chain(
            [
                ("WRITER_INPUT_TOPIC", "b_valid"),
                ("WRITER_DLQ_TOPIC", "b_dlq"),
                ("WRITER_STATS_TOPIC", "b_stats"),
                ("WRITER_ALERTS_TOPIC", "b_alerts"),
                ("WRITER_GROUP_ID", "bench-writer"),
                ("METRICS_ADDR", WRITER_METRICS_ADDR),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .collect();
    let mut w = service("cassandra-writer", &[], &writer_env, &ctx.log)?;
    // From the first access_logs row written to the last, as the raw loop is timed from its
    // first insert: neither counts start-up, connecting and the consumer group join.
    wait_rows(WRITER_METRICS_PORT, 1, Duration::from_secs(120)).await?;
    let took = wait_rows(WRITER_METRICS_PORT, valid, Duration::from_secs(900)).await?;
    let writer = valid as f64 / took.as_secs_f64();
    ctx.rss.push(("cassandra-writer", peak_rss_mb(w.id())));
    stop(&mut w);
    let rows: Vec<ValidatedRecord> = read_all(&ctx.kafka, "b_valid")?
        .iter()
        .filter_map(|(_, p)| ValidatedRecord::from_json(p).ok())
        .collect();
    let cql = CassandraArgs::new(ctx.stack.cql_addr(), "bench");
    let mut best = 0.0f64;
    let concurrencies: &[usize] = if ctx.quick {
        &[256, 1024]
    } else {
        &[64, 256, 1024]
    };
    for &concurrency in concurrencies {
        best = best.max(raw_inserts(&cql, &rows, concurrency).await?);
    }
    println!(
        "  ours {writer:.0} rows/s, raw scylla inserts {best:.0} rows/s (best of {concurrencies:?} in flight)"
    );
    ctx.metrics.push(Metric {
        name: "writer_rows_per_s".into(),
        value: writer,
        unit: "rows/s",
        ceiling: Some(best),
    });
    Ok(())
}

/// Phase 4: end to end at the fixed 10K logs/s, then at a rate this machine sustains, in
/// both delivery modes.
pub(super) async fn end_to_end(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let (_n, e2e_secs) = (ctx.n, ctx.e2e_secs);
    // 4. end to end at the fixed 10K logs/s, then at a rate this machine sustains, to tell
    //    pipeline latency from queueing.
    let rate = 10_000u64;
    println!("bench: end to end at {rate} logs/s for {e2e_secs} s");
    let full = run_end_to_end(
        ctx.stack,
        &ctx.env,
        &ctx.log,
        "e2e",
        Load::rate(rate, e2e_secs),
    )
    .await?;
    for (i, name) in ["producer", "stream-reader", "cassandra-writer"]
        .iter()
        .enumerate()
    {
        if let Some(e) = ctx.rss.iter_mut().find(|(n, _)| n == name) {
            e.1 = e.1.max(full.peaks[i]);
        }
    }
    ctx.metrics.extend(full.metrics("e2e", rate));
    for (i, name) in ["producer", "stream_reader", "cassandra_writer"]
        .iter()
        .enumerate()
    {
        ctx.metrics.push(Metric {
            name: format!("e2e_rss_mb_{name}"),
            value: full.peaks[i],
            unit: "MB",
            ceiling: None,
        });
    }
    let low_rate = 2_000u64;
    let low_secs = if ctx.quick { 8 } else { 30 };
    println!("bench: end to end at {low_rate} logs/s for {low_secs} s");
    let low = run_end_to_end(
        ctx.stack,
        &ctx.env,
        &ctx.log,
        "e2e_low",
        Load::rate(low_rate, low_secs),
    )
    .await?;
    ctx.metrics.extend(low.metrics("e2e_2k", low_rate));

    // 4b. the same two rates with exactly-once delivery in the stream-reader and the writer.
    let eos: Vec<(String, String)> = ctx
        .env
        .iter()
        .cloned()
        .chain(
            [
                ("READER_DELIVERY", "exactly-once"),
                ("WRITER_DELIVERY", "exactly-once"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .collect();
    println!("bench: end to end, exactly-once, at {rate} logs/s for {e2e_secs} s");
    let full_eos = run_end_to_end(
        ctx.stack,
        &eos,
        &ctx.log,
        "e2e_eos",
        Load::rate(rate, e2e_secs),
    )
    .await?;
    ctx.metrics.extend(full_eos.metrics("e2e_eos", rate));
    println!("bench: end to end, exactly-once, at {low_rate} logs/s for {low_secs} s");
    let low_eos = run_end_to_end(
        ctx.stack,
        &eos,
        &ctx.log,
        "e2e_eos_low",
        Load::rate(low_rate, low_secs),
    )
    .await?;
    ctx.metrics.extend(low_eos.metrics("e2e_eos_2k", low_rate));
    Ok(())
}
