//! `cargo xtask bench --data-model`: what the bounded-partition data model costs and what it
//! buys, side by side in one run on the bench stack (docs/data-model.md "Data model", BENCHMARKS.md).
//!
//! 1. Write cost: the same rows, one prepared insert each (256 in flight, as the writer sends
//!    them while draining), into the previous layout (migrations 0001–0004: partitioned by
//!    `source_ip` alone), the bucketed layout without indexes, with each SAI index alone, and
//!    as shipped (all five): Cassandra's CPU per row, from the first insert until `nodetool
//!    flush` has written the SSTables and their indexes, and rows/s. Rounds alternate the order.
//! 2. A skewed load: N rows over one hour of event time with one source (192.168.1.100, the
//!    cookbook's) at 5 %, into the previous and the shipped layout, flushed: the largest
//!    partition of each (`nodetool tablestats`), rows per partition, and each index's size.
//! 3. The latency of every cookbook query (docs/data-model.md, verbatim) on the shipped layout's data.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use anyhow::{Context as _, bail};
use cassandra_writer::migrate::MIGRATIONS;
use chrono::{TimeDelta, TimeZone, Utc};
use futures::StreamExt;
use log_schema::{Limits, Origin, ValidatedRecord};
use scylla::{client::session::Session, statement::prepared::PreparedStatement};

use crate::{
    bench::{Metric, migrate, process_cpu_secs, spread},
    stack::{Server, Stack},
};

#[path = "../../../tests/it/cookbook.rs"]
mod cookbook;

/// The cookbook's source, sending 5 % of the rows.
const HOT: &str = "192.168.1.100";

/// The shipped SAI indexes of `access_logs` (migration 0005).
const INDEXES: [&str; 5] = [
    "access_logs_source_ip",
    "access_logs_destination_ip",
    "access_logs_port",
    "access_logs_denied",
    "access_logs_timestamp",
];

/// A layout written in the cost comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// Migrations 0001–0004: `PRIMARY KEY (source_ip, timestamp, event_id)`.
    Previous,
    /// Migration 0005 with only these of [`INDEXES`] kept.
    Bucketed(&'static [&'static str]),
}

impl Layout {
    fn name(self) -> String {
        match self {
            Layout::Previous => "previous".into(),
            Layout::Bucketed([]) => "bucketed_no_index".into(),
            Layout::Bucketed(kept) if kept.len() == INDEXES.len() => "shipped".into(),
            Layout::Bucketed(kept) => format!("bucketed_{}", kept.join("+")),
        }
    }
}

/// `n` validated records over one hour of event time (2026-12-01 13:00–14:00 UTC): every 20th
/// from [`HOT`], the rest from 20,000 sources; 50 destinations, eight common ports and
/// ephemeral ones, 8 % denied. Deterministic.
fn records(n: usize) -> anyhow::Result<Vec<ValidatedRecord>> {
    let start = Utc
        .with_ymd_and_hms(2026, 12, 1, 13, 0, 0)
        .single()
        .context("start")?;
    let step_us = 3_600_000_000i64 / n as i64;
    let ports = [22u16, 80, 443, 3389, 445, 53, 8080, 25];
    let limits = Limits::default();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let src = if i % 20 == 0 {
                HOT.to_owned()
            } else {
                let h = x % 20_000;
                Ipv4Addr::new(10, 20 + (h / 65_536) as u8, (h / 256 % 256) as u8, (h % 256) as u8)
                    .to_string()
            };
            let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + ((x >> 20) % 50) as u8));
            let port = if (x >> 30).is_multiple_of(4) {
                1_024 + ((x >> 32) % 60_000) as u16
            } else {
                ports[((x >> 34) % 8) as usize]
            };
            let action = match (x >> 40) % 100 {
                0..=3 => "DENY",
                4..=5 => "DROP",
                6..=7 => "REJECT",
                _ => "ALLOW",
            };
            let at = start + TimeDelta::microseconds(step_us * i as i64);
            let json = format!(
                r#"{{"timestamp":"{}","source_ip":"{src}","destination_ip":"{dst}","port":{port},"protocol":"TCP","bytes_sent":{},"bytes_received":{},"action":"{action}"}}"#,
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                200 + (x >> 45) % 5_000,
                100 + (x >> 50) % 20_000,
            );
            let origin = Origin {
                topic: "bench",
                partition: 0,
                offset: i as i64,
            };
            log_schema::validate(json.as_bytes(), &origin, Utc::now(), &limits)
                .map_err(|e| anyhow::anyhow!("generated record {i} is invalid: {e}"))
        })
        .collect()
}

/// A fresh keyspace with `layout`, and the insert of one row into it.
async fn create(
    stack: &Stack,
    keyspace: &str,
    layout: Layout,
) -> anyhow::Result<(Session, PreparedStatement)> {
    let session = stack.cql_admin(keyspace).connect().await?;
    match layout {
        Layout::Previous => {
            session
                .query_unpaged(
                    format!(
                        "CREATE KEYSPACE {keyspace} WITH replication = \
                         {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
                    ),
                    &[],
                )
                .await?;
            session.use_keyspace(keyspace, false).await?;
            for m in &MIGRATIONS[..4] {
                for statement in m.statements() {
                    session.query_unpaged(statement, &[]).await?;
                }
            }
        }
        Layout::Bucketed(kept) => {
            migrate(&stack.env_with(&[("CASSANDRA_KEYSPACE", keyspace)]))?;
            for index in INDEXES.iter().filter(|i| !kept.contains(i)) {
                session
                    .query_unpaged(format!("DROP INDEX {keyspace}.{index}"), &[])
                    .await?;
            }
        }
    }
    let insert = match layout {
        Layout::Previous => format!(
            "INSERT INTO {keyspace}.access_logs (source_ip, timestamp, event_id, destination_ip, \
             port, protocol, bytes_sent, bytes_received, action, created_at, ingested_at, \
             total_bytes, source_ip_class, destination_ip_class, service) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        Layout::Bucketed(_) => cassandra_writer::writer::insert_cql(keyspace),
    };
    let insert = session.prepare(insert).await?;
    Ok((session, insert))
}

/// Writes `rows` one insert each, 256 in flight; a failed insert (a client timeout while
/// Cassandra flushes) is retried after 200 ms, up to 10 times. Returns how many retries.
async fn write(
    session: &Session,
    insert: &PreparedStatement,
    layout: Layout,
    rows: &[ValidatedRecord],
) -> anyhow::Result<usize> {
    let results: Vec<anyhow::Result<usize>> =
        futures::stream::iter(rows.iter().map(|r| async move {
            let mut attempt = 0;
            loop {
                let result = match layout {
                    Layout::Previous => {
                        session
                            .execute_unpaged(
                                insert,
                                (
                                    r.source_ip.to_string(),
                                    r.timestamp,
                                    r.event_id,
                                    r.destination_ip.to_string(),
                                    i32::from(r.port),
                                    r.protocol.as_str(),
                                    r.bytes_sent,
                                    r.bytes_received,
                                    r.action.as_str(),
                                    Utc::now(),
                                    r.ingested_at,
                                    r.total_bytes,
                                    r.source_ip_class.as_str(),
                                    r.destination_ip_class.as_str(),
                                    r.service.as_deref(),
                                ),
                            )
                            .await
                    }
                    Layout::Bucketed(_) => {
                        session
                            .execute_unpaged(insert, cassandra_writer::writer::access_log_row(r))
                            .await
                    }
                };
                match result {
                    Ok(_) => return Ok(attempt),
                    Err(e) if attempt >= 10 => return Err(e.into()),
                    Err(_) => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        }))
        .buffer_unordered(256)
        .collect()
        .await;
    results.into_iter().sum()
}

/// `nodetool tablestats <keyspace>`: table → (largest partition bytes, live bytes on disk).
fn tablestats(stack: &Stack, keyspace: &str) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let out = stack.nodetool(&["tablestats", keyspace])?;
    let mut stats = BTreeMap::new();
    let mut table = None;
    let mut live = 0;
    for line in out.lines().map(str::trim) {
        let value = |l: &str| {
            l.rsplit(':')
                .next()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if let Some(t) = line.strip_prefix("Table: ") {
            table = Some(t.to_owned());
        } else if line.starts_with("Space used (live):") {
            live = value(line);
        } else if line.starts_with("Compacted partition maximum bytes:")
            && let Some(t) = table.take()
        {
            stats.insert(t, (value(line), live));
        }
    }
    Ok(stats)
}

/// Bytes on disk of each SAI index of `keyspace` (all SSTables).
async fn index_sizes(session: &Session, keyspace: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows = session
        .query_unpaged(
            "SELECT index_name, per_column_disk_size FROM system_views.sai_sstable_indexes \
             WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await?
        .into_rows_result()?;
    let mut sizes = BTreeMap::new();
    for row in rows.rows::<(String, i64)>()? {
        let (index, bytes) = row?;
        *sizes.entry(index).or_default() += bytes;
    }
    Ok(sizes)
}

/// Waits until Cassandra is idle (under 10 % of a core over half a second, at most 30 s): what
/// a schema change or a dropped keyspace set off in the background is not charged to the next
/// measurement.
async fn quiesce(pid: i32) {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let before = process_cpu_secs(pid);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if process_cpu_secs(pid) - before < 0.05 || Instant::now() > deadline {
            return;
        }
    }
}

/// Runs the comparison on the (started, single-node) bench stack; `target/bench/data_model.json`.
pub(crate) async fn run(stack: &Stack, quick: bool) -> anyhow::Result<()> {
    if stack.nodes != 1 {
        bail!("--data-model measures one node (nodetool); drop --cluster");
    }
    let cassandra = stack
        .pid(Server::Cassandra)
        .context("Cassandra is not running")?;
    let (n_cost, rounds, n_skew, repeats) = if quick {
        (50_000, 1, 200_000, 5)
    } else {
        (100_000, 3, 1_000_000, 20)
    };
    println!("data model: generating {n_skew} records (one hour, {HOT} at 5 %)");
    let rows = records(n_skew)?;
    let cost_rows: Vec<ValidatedRecord> = rows.iter().step_by(n_skew / n_cost).cloned().collect();
    let mut layouts = vec![Layout::Previous, Layout::Bucketed(&[])];
    layouts.extend(
        INDEXES
            .iter()
            .map(|i| Layout::Bucketed(std::slice::from_ref(i))),
    );
    layouts.push(Layout::Bucketed(&INDEXES));
    let mut metrics = Vec::new();

    // 1. Write cost, rounds in alternating order, after a warm-up (JIT, caches) not counted.
    {
        let layout = Layout::Bucketed(&INDEXES);
        let (session, insert) = create(stack, "bdm_warmup", layout).await?;
        write(&session, &insert, layout, &cost_rows).await?;
        stack.nodetool(&["flush", "bdm_warmup"])?;
        session
            .query_unpaged("DROP KEYSPACE bdm_warmup", &[])
            .await?;
    }
    let mut samples: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for round in 0..rounds {
        let order: Vec<Layout> = if round % 2 == 0 {
            layouts.clone()
        } else {
            layouts.iter().rev().copied().collect()
        };
        for layout in order {
            let keyspace = format!("bdm_{}_{round}", layout.name().replace('+', "_"))
                .chars()
                .take(48)
                .collect::<String>();
            let (session, insert) = create(stack, &keyspace, layout).await?;
            quiesce(cassandra).await;
            let before = process_cpu_secs(cassandra);
            let start = Instant::now();
            let retries = write(&session, &insert, layout, &cost_rows).await?;
            let rows_per_s = cost_rows.len() as f64 / start.elapsed().as_secs_f64();
            stack.nodetool(&["flush", &keyspace])?;
            let us = (process_cpu_secs(cassandra) - before) * 1e6 / cost_rows.len() as f64;
            println!(
                "  round {round}: {:<40} {rows_per_s:>8.0} rows/s  Cassandra {us:>6.1} µs CPU per row (flush included), {retries} retries",
                layout.name()
            );
            let s = samples.entry(layout.name()).or_default();
            s.0.push(us);
            s.1.push(rows_per_s);
            session
                .query_unpaged(format!("DROP KEYSPACE {keyspace}"), &[])
                .await?;
        }
    }
    let base_us = spread(&samples["bucketed_no_index"].0).0;
    let prev_us = spread(&samples["previous"].0).0;
    println!(
        "\n{:<40} {:>10} {:>16} {:>12} {:>14}",
        "layout", "µs/row", "min–max", "rows/s", "vs previous"
    );
    for layout in &layouts {
        let name = layout.name();
        let (us, rate) = &samples[&name];
        let ((us_m, lo, hi), (rate_m, _, _)) = (spread(us), spread(rate));
        println!(
            "{name:<40} {us_m:>10.1} {:>16} {rate_m:>12.0} {:>13.2}×",
            format!("{lo:.1}–{hi:.1}"),
            us_m / prev_us
        );
        metrics.push(Metric {
            name: format!("data_model_{name}_cpu_us_per_row"),
            value: us_m,
            unit: "us",
            ceiling: Some(prev_us),
        });
        metrics.push(Metric {
            name: format!("data_model_{name}_rows_per_s"),
            value: rate_m,
            unit: "rows/s",
            ceiling: None,
        });
        if let Layout::Bucketed([index]) = layout {
            println!("  {index}: {:+.1} µs per row", us_m - base_us);
        }
    }

    // 2. The skewed load in the previous and the shipped layout.
    let mut per_partition: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for r in &rows {
        let bucket = cassandra_writer::rows::bucket(r.timestamp).timestamp();
        *per_partition
            .entry((r.source_ip.to_string(), bucket))
            .or_default() += 1;
    }
    let hot_rows = rows
        .iter()
        .filter(|r| r.source_ip.to_string() == HOT)
        .count();
    let max_bucketed = per_partition.values().max().copied().unwrap_or(0);
    println!(
        "\ndata model: {n_skew} rows, {HOT} sends {hot_rows}: one partition of the previous \
         layout, at most {max_bucketed} rows per partition of the shipped one"
    );
    let mut shipped_session = None;
    for (layout, keyspace) in [
        (Layout::Previous, "bdm_skew_previous"),
        (Layout::Bucketed(&INDEXES), "bdm_skew_shipped"),
    ] {
        let (session, insert) = create(stack, keyspace, layout).await?;
        let start = Instant::now();
        let retries = write(&session, &insert, layout, &rows).await?;
        stack.nodetool(&["flush", keyspace])?;
        let stats = tablestats(stack, keyspace)?;
        let (max_bytes, live) = stats.get("access_logs").copied().unwrap_or_default();
        println!(
            "  {:<10} written in {:.0} s ({retries} retries); access_logs: largest partition {:.1} MB, {:.1} MB on disk",
            layout.name(),
            start.elapsed().as_secs_f64(),
            max_bytes as f64 / 1e6,
            live as f64 / 1e6
        );
        for (table, (max, _)) in &stats {
            if table != "access_logs" && *max > 0 {
                println!("    {table}: largest partition {max} bytes");
            }
        }
        let hot_partition_rows = if layout == Layout::Previous {
            hot_rows as u64
        } else {
            max_bucketed
        };
        let bytes_per_row = max_bytes as f64 / hot_partition_rows as f64;
        println!(
            "    largest partition: {hot_partition_rows} rows, ≤ {bytes_per_row:.0} bytes per row"
        );
        metrics.push(Metric {
            name: format!("data_model_{}_largest_partition_mb", layout.name()),
            value: max_bytes as f64 / 1e6,
            unit: "MB",
            ceiling: None,
        });
        metrics.push(Metric {
            name: format!("data_model_{}_largest_partition_rows", layout.name()),
            value: hot_partition_rows as f64,
            unit: "rows",
            ceiling: None,
        });
        metrics.push(Metric {
            name: format!("data_model_{}_table_mb", layout.name()),
            value: live as f64 / 1e6,
            unit: "MB",
            ceiling: None,
        });
        if let Layout::Bucketed(_) = layout {
            for (index, bytes) in index_sizes(&session, keyspace).await? {
                println!("    index {index}: {:.1} MB", bytes as f64 / 1e6);
                metrics.push(Metric {
                    name: format!("data_model_index_{index}_mb"),
                    value: bytes as f64 / 1e6,
                    unit: "MB",
                    ceiling: None,
                });
            }
            shipped_session = Some(session);
        }
    }

    // 3. Every cookbook query on the shipped layout's data.
    let session = shipped_session.context("no shipped keyspace")?;
    session.use_keyspace("bdm_skew_shipped", false).await?;
    println!(
        "\n{:<6} {:>10} {:>10} {:>9}  question",
        "query", "median ms", "max ms", "rows"
    );
    for (i, q) in cookbook::parse(&cookbook::readme()).iter().enumerate() {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..repeats {
            let start = Instant::now();
            n = if q.cql.contains(" IN (") && q.cql.contains("ORDER BY") {
                // IN with ORDER BY cannot be paged (cqlsh: PAGING OFF).
                session
                    .query_unpaged(q.cql.as_str(), &[])
                    .await?
                    .into_rows_result()?
                    .rows_num()
            } else {
                let mut pages = session
                    .query_iter(q.cql.as_str(), &[])
                    .await?
                    .rows_stream::<scylla::value::Row>()?;
                let mut n = 0;
                while let Some(row) = pages.next().await {
                    row?;
                    n += 1;
                }
                n
            };
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let (med, _, max) = spread(&times);
        // This bench loads access_logs only: the other tables' queries read an empty partition.
        let loaded = q.cql.contains("FROM access_logs");
        println!(
            "q{:<5} {med:>10.1} {max:>10.1} {n:>9}  {}{}",
            i + 1,
            q.question,
            if loaded { "" } else { " [table not loaded]" }
        );
        metrics.push(Metric {
            name: format!("data_model_query_{}_ms", i + 1),
            value: med,
            unit: "ms",
            ceiling: None,
        });
    }
    let out_dir = crate::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let json = format!(
        "[\n  {}\n]\n",
        metrics
            .iter()
            .map(Metric::json)
            .collect::<Vec<_>>()
            .join(",\n  ")
    );
    fs::write(out_dir.join("data_model.json"), json)?;
    println!("\nwrote {}", out_dir.join("data_model.json").display());
    Ok(())
}
