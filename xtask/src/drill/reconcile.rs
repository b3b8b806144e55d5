//! The reconciliation after a drill: records, dead letters, rows and analytics against what was
//! produced and the reference model.

use log_schema::TargetStats;
use stream_reader::reference::{By, Reference};

use super::outcome::repeats;
use super::*;

pub(super) async fn reconcile(
    stack: &Stack,
    names: &Names,
    drill: Drill,
    records: u64,
    faults: usize,
    recover_max: Duration,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let kafka = stack.kafka_admin();
    let input = read_all(&kafka, &names.raw)?;
    if input.len() as u64 != records {
        bail!(
            "{} records on {} but {records} produced",
            input.len(),
            names.raw
        );
    }
    // Generated payloads carry microsecond timestamps and random addresses: a repeated payload
    // is a duplicate the producer wrote.
    let distinct_payloads: BTreeSet<&[u8]> = input.iter().map(|(_, _, p)| p.as_slice()).collect();
    // What the contract says each input must become.
    let mut want_valid: BTreeMap<Uuid, String> = BTreeMap::new();
    let mut want_invalid: BTreeSet<(i32, i64)> = BTreeSet::new();
    for (p, o, payload) in &input {
        let origin = Origin {
            topic: &names.raw,
            partition: *p,
            offset: *o,
        };
        match validate(payload, &origin, Utc::now(), &Limits::default()) {
            Ok(r) => {
                want_valid.insert(r.event_id, r.source_ip.to_string());
            }
            Err(_) => {
                want_invalid.insert((*p, *o));
            }
        }
    }
    // Every dead letter, the writer's (`write_rejected`, sourced from the validated topic) too.
    let dead_letters: Vec<DeadLetter> = read_all(&kafka, &names.dlq)?
        .iter()
        .filter_map(|(_, _, payload)| DeadLetter::from_json(payload).ok())
        .collect();
    let validated_records: Vec<ValidatedRecord> = read_all(&kafka, &names.valid)?
        .iter()
        .filter_map(|(_, _, payload)| ValidatedRecord::from_json(payload).ok())
        .collect();
    let topic_duplicates = TopicDuplicates {
        validated: repeats(
            validated_records
                .iter()
                .map(|r| r.source.map(|s| (s.partition, s.offset))),
        ),
        dlq: repeats(
            dead_letters
                .iter()
                .map(|d| (d.source.topic.as_str(), d.source.partition, d.source.offset)),
        ),
        ..TopicDuplicates::default()
    };
    let dlq: BTreeSet<(i32, i64)> = dead_letters
        .iter()
        .filter(|d| d.source.topic == names.raw)
        .map(|d| (d.source.partition, d.source.offset))
        .collect();
    let validated: BTreeSet<Uuid> = validated_records.iter().map(|r| r.event_id).collect();

    // Cassandra: every row of every source IP.
    let cql = stack.cql_admin(&names.keyspace);
    let session = cql.connect().await?;
    let stmt = session
        .prepare(format!(
            "SELECT event_id FROM {}.access_logs WHERE source_ip = ?",
            names.keyspace
        ))
        .await?;
    let ips: BTreeSet<&String> = want_valid.values().collect();
    let mut rows: Vec<Uuid> = Vec::new();
    for ip in ips {
        let mut pages = session
            .execute_iter(stmt.clone(), (ip,))
            .await?
            .rows_stream::<(Uuid,)>()?;
        while let Some(row) = pages.next().await {
            rows.push(row?.0);
        }
    }
    let distinct: BTreeSet<Uuid> = rows.iter().copied().collect();
    let want_ids: BTreeSet<Uuid> = want_valid.keys().copied().collect();
    let lost = want_ids.difference(&distinct).count();
    Ok(Outcome {
        drill,
        records,
        valid: want_valid.len(),
        invalid: want_invalid.len(),
        faults,
        producer_failed: 0,
        input_duplicates: input.len() - distinct_payloads.len(),
        lost,
        duplicated: rows.len() - distinct.len() + distinct.difference(&want_ids).count(),
        dlq_exact: dlq == want_invalid && validated == want_ids,
        windows: 0,
        windows_wrong: 0,
        window_rows_wrong: 0,
        target_windows: 0,
        target_windows_wrong: 0,
        alerts_wrong: 0,
        scan_alerts: None,
        reader_failures: 0,
        recover_max,
        elapsed: started.elapsed(),
        delivery: Delivery::AtLeastOnce,
        topic_duplicates,
        notes: Vec::new(),
    })
}

/// The reference models of both sides' windows.
pub(super) struct References {
    /// Per source, over the validated topic.
    pub(super) sources: Reference,
    /// Per destination, over the by-destination topic.
    pub(super) targets: Reference,
}

/// The reference models over the (complete) validated and by-destination topics, with the idle
/// steps the stream-readers committed as they logged them to `log`.
pub(super) fn reference_now(
    kafka: &KafkaArgs,
    names: &Names,
    log: &Path,
) -> anyhow::Result<References> {
    let text = fs::read_to_string(log).with_context(|| format!("read {}", log.display()))?;
    let of = |topic: &str, by: By| -> anyhow::Result<Reference> {
        Ok(stream_reader::reference::reference_by(
            by,
            read_all(kafka, topic)?
                .into_iter()
                .filter_map(|(p, o, payload)| {
                    Some((p, o, ValidatedRecord::from_json(&payload).ok()?))
                }),
            LATENESS,
            &stream_reader::reference::idle_steps_in_log(&text, topic),
        ))
    };
    Ok(References {
        sources: of(&names.valid, By::Source)?,
        targets: of(&names.by_destination, By::Destination)?,
    })
}

/// Waits until the analytics stage emitted every window the reference model closes so far
/// (idle steps may close more until the stream-readers stop).
pub(super) async fn wait_for_analytics(
    kafka: &KafkaArgs,
    names: &Names,
    log: &Path,
) -> anyhow::Result<()> {
    let reference = reference_now(kafka, names, log)?;
    wait_for(
        "the analytics stages to emit every window",
        Duration::from_secs(300),
        || {
            let emitted: BTreeSet<_> = read_all(kafka, &names.stats)?
                .iter()
                .filter_map(|(_, _, p)| WindowStats::from_json(p).ok())
                .map(|s| (s.source_ip, s.window_start))
                .collect();
            let targets: BTreeSet<_> = read_all(kafka, &names.target_stats)?
                .iter()
                .filter_map(|(_, _, p)| TargetStats::from_json(p).ok())
                .map(|s| (s.destination_ip, s.window_start))
                .collect();
            Ok(reference
                .sources
                .windows
                .keys()
                .all(|k| emitted.contains(k))
                && reference
                    .targets
                    .windows
                    .keys()
                    .all(|k| targets.contains(k)))
        },
    )
    .await
}

/// Compares the stats topics and the statistics tables with the references.
pub(super) async fn reconcile_analytics(
    stack: &Stack,
    names: &Names,
    references: &References,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let reference = &references.sources;
    let kafka = stack.kafka_admin();
    let horizon = reference.windows.keys().map(|k| k.1).max();
    let mut emitted: BTreeMap<(std::net::IpAddr, chrono::DateTime<Utc>), WindowStats> =
        BTreeMap::new();
    let mut wrong = 0;
    let mut windows = Vec::new();
    for (_, _, payload) in read_all(&kafka, &names.stats)? {
        let s = WindowStats::from_json(&payload)?;
        windows.push((s.source_ip, s.window_start));
        if Some(s.window_start) > horizon {
            continue; // the closing records' own minute
        }
        if let Some(previous) = emitted.insert((s.source_ip, s.window_start), s.clone())
            && previous != s
        {
            wrong += 1;
        }
    }
    wrong += reference.differences(&emitted).len();
    outcome.topic_duplicates.stats = repeats(windows);
    let mut alert_ids = Vec::new();
    let mut alerts = Vec::new();
    for (_, _, payload) in read_all(&kafka, &names.alerts)? {
        let alert = log_schema::Alert::from_json(&payload)?;
        alert_ids.push(alert.alert_id);
        alerts.push(alert);
    }
    outcome.topic_duplicates.alerts = repeats(alert_ids);
    // The alerts are exactly those the windows trigger under the default thresholds (the
    // drills set none).
    let defaults = <stream_reader::ReaderArgs as clap::Parser>::try_parse_from(["stream-reader"])?;
    let thresholds = [
        (
            log_schema::AlertRule::PortScan,
            defaults.alert_port_scan_ports,
        ),
        (log_schema::AlertRule::Flood, defaults.alert_flood_events),
        (
            log_schema::AlertRule::DenyBurst,
            defaults.alert_deny_burst_denied,
        ),
        (
            log_schema::AlertRule::HostSweep,
            defaults.alert_host_sweep_destinations,
        ),
    ];
    let want: BTreeSet<Uuid> = emitted
        .values()
        .flat_map(|s| {
            thresholds
                .iter()
                .filter_map(|(rule, t)| log_schema::Alert::evaluate(*rule, s, *t))
                .chain(log_schema::Alert::threat_matches(
                    s,
                    defaults.alert_threat_match_events,
                ))
                .map(|a| a.alert_id)
        })
        .collect();
    let (targets, target_horizon) = reconcile_targets(&kafka, names, references, outcome)?;
    let want_targets = targets.values().flat_map(|s| {
        log_schema::Alert::evaluate_target(
            s,
            defaults.alert_target_flood_sources,
            defaults.alert_target_flood_events,
        )
        .into_iter()
        .chain(log_schema::Alert::target_threat_matches(
            s,
            defaults.alert_threat_match_events,
        ))
        .map(|a| a.alert_id)
    });
    let want: BTreeSet<Uuid> = want.into_iter().chain(want_targets).collect();
    let got: BTreeSet<Uuid> = alerts
        .iter()
        .filter(|a| {
            let horizon = if a.destination_ip.is_some() {
                target_horizon
            } else {
                horizon
            };
            Some(a.window_start) <= horizon
        })
        .map(|a| a.alert_id)
        .collect();
    outcome.alerts_wrong = want.symmetric_difference(&got).count();
    if outcome.drill == Drill::BrokerOutage {
        outcome.scan_alerts = Some(
            alerts
                .iter()
                .filter(|a| a.rule == log_schema::AlertRule::PortScan)
                .filter(|a| a.source_ip.is_some_and(|ip| ip.to_string() == SCANNER))
                .count(),
        );
    }

    let session = stack.cql_admin(&names.keyspace).connect().await?;
    let ks = &names.keyspace;
    let by_ip = session
        .prepare(format!(
            "SELECT window_start, events FROM {ks}.ip_stats_by_ip WHERE source_ip = ? AND day = ?"
        ))
        .await?;
    let talkers = session
        .prepare(format!(
            "SELECT source_ip, events FROM {ks}.top_talkers_by_minute WHERE window_start = ?"
        ))
        .await?;
    let mut stored: BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>> = BTreeMap::new();
    let ip_days: BTreeSet<(String, chrono::NaiveDate)> = reference
        .windows
        .keys()
        .map(|(ip, m)| (ip.to_string(), m.date_naive()))
        .collect();
    for (ip, day) in ip_days {
        let mut pages = session
            .execute_iter(by_ip.clone(), (&ip, day))
            .await?
            .rows_stream::<(chrono::DateTime<Utc>, i64)>()?;
        while let Some(row) = pages.next().await {
            let (m, events) = row?;
            stored.entry((ip.clone(), m)).or_default().push(events);
        }
    }
    let minutes: BTreeSet<chrono::DateTime<Utc>> = reference.windows.keys().map(|k| k.1).collect();
    let mut top: BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>> = BTreeMap::new();
    for m in minutes {
        let mut pages = session
            .execute_iter(talkers.clone(), (m,))
            .await?
            .rows_stream::<(String, i64)>()?;
        while let Some(row) = pages.next().await {
            let (ip, events) = row?;
            top.entry((ip, m)).or_default().push(events);
        }
    }
    let want: BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>> = reference
        .windows
        .iter()
        .map(|((ip, m), w)| ((ip.to_string(), *m), vec![w.events]))
        .collect();
    let differs = |got: &BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>>| {
        want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count()
            + got.keys().filter(|k| !want.contains_key(*k)).count()
    };
    outcome.windows = reference.windows.len();
    outcome.windows_wrong = wrong;
    outcome.window_rows_wrong = differs(&stored) + differs(&top);

    // The destination windows' rows: one per window in the minute's top targets.
    let targets_of_minute = session
        .prepare(format!(
            "SELECT destination_ip, events FROM {ks}.top_targets_by_minute WHERE window_start = ?"
        ))
        .await?;
    let minutes: BTreeSet<chrono::DateTime<Utc>> =
        references.targets.windows.keys().map(|k| k.1).collect();
    let mut top_targets: BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>> = BTreeMap::new();
    for m in minutes {
        let mut pages = session
            .execute_iter(targets_of_minute.clone(), (m,))
            .await?
            .rows_stream::<(String, i64)>()?;
        while let Some(row) = pages.next().await {
            let (ip, events) = row?;
            top_targets.entry((ip, m)).or_default().push(events);
        }
    }
    let want_targets: BTreeMap<(String, chrono::DateTime<Utc>), Vec<i64>> = references
        .targets
        .windows
        .iter()
        .map(|((ip, m), w)| ((ip.to_string(), *m), vec![w.events]))
        .collect();
    outcome.target_windows_wrong += want_targets
        .iter()
        .filter(|(k, v)| top_targets.get(*k) != Some(*v))
        .count()
        + top_targets
            .keys()
            .filter(|k| !want_targets.contains_key(*k))
            .count();
    Ok(())
}

/// Emitted destination windows by (destination, window start).
type TargetWindows = BTreeMap<(std::net::IpAddr, chrono::DateTime<Utc>), TargetStats>;

/// The destination windows on the target stats topic against their reference: counts the
/// wrong ones into `outcome` and returns the emitted windows (up to the reference's last
/// minute) and that minute.
fn reconcile_targets(
    kafka: &KafkaArgs,
    names: &Names,
    references: &References,
    outcome: &mut Outcome,
) -> anyhow::Result<(TargetWindows, Option<chrono::DateTime<Utc>>)> {
    let horizon = references.targets.windows.keys().map(|k| k.1).max();
    let mut emitted = BTreeMap::new();
    let mut wrong = 0;
    let mut windows = Vec::new();
    for (_, _, payload) in read_all(kafka, &names.target_stats)? {
        let s = TargetStats::from_json(&payload)?;
        windows.push((s.destination_ip, s.window_start));
        if Some(s.window_start) > horizon {
            continue; // the closing records' own minute
        }
        if let Some(previous) = emitted.insert((s.destination_ip, s.window_start), s.clone())
            && previous != s
        {
            wrong += 1;
        }
    }
    wrong += references.targets.differences(&emitted).len();
    outcome.topic_duplicates.targets = repeats(windows);
    outcome.target_windows = references.targets.windows.len();
    outcome.target_windows_wrong = wrong;
    Ok((emitted, horizon))
}
