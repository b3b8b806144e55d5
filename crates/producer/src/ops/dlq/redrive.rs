//! `producer dlq redrive`: re-submits the selected dead letters under their original identity.

use std::collections::BTreeMap;

use anyhow::bail;
use log_schema::DeadLetter;
use rdkafka::producer::FutureRecord;
use serde_json::json;

use super::{Letter, RedriveArgs, scan};
use crate::ops::{Progress, identity_headers, print_json, sender::Sender};

/// The newest dead letter of one original record.
struct Newest {
    letter: Letter,
    /// Whether the newest one is selected.
    selected: bool,
    /// Whether any dead letter of the record is selected.
    any_selected: bool,
    /// Selected dead letters of the record that are not the newest.
    older_selected: u64,
}

/// What a redrive selected and why some was left out.
#[derive(Debug, Default, serde::Serialize)]
struct Plan {
    /// Dead letters that match the selection.
    selected: u64,
    /// Original records to re-submit, per destination topic.
    per_destination: BTreeMap<String, u64>,
    /// Older dead letters of records whose newest dead letter is re-submitted.
    older_dead_letters: u64,
    /// Records whose newest dead letter is a later redrive that the selection does not match
    /// (already redriven, failed for another reason).
    superseded: u64,
    /// Records whose kept payload is only a prefix.
    truncated: u64,
    /// Records already redriven `--max-attempts` times.
    max_attempts: u64,
}

pub(super) async fn redrive(args: &RedriveArgs) -> anyhow::Result<()> {
    let s = &args.selection;
    if s.kinds.is_empty() {
        bail!("redrive needs at least one --kind (see `producer dlq stats`)");
    }
    // Every dead letter from --since on: a record is redriven only through its newest one, so
    // a second redrive of the same selection re-submits the records that were written (their
    // rows are rewritten) but not those that failed again for another reason.
    let mut newest: BTreeMap<(String, i32, i64), Newest> = BTreeMap::new();
    scan(s, true, |l, chosen| {
        let o = l.letter.origin();
        let key = (o.topic.clone(), o.partition, o.offset);
        let rank = |d: &DeadLetter| (d.attempt(), d.failed_at);
        match newest.get_mut(&key) {
            None => {
                newest.insert(
                    key,
                    Newest {
                        letter: l,
                        selected: chosen,
                        any_selected: chosen,
                        older_selected: 0,
                    },
                );
            }
            Some(n) => {
                n.any_selected |= chosen;
                if rank(&l.letter) > rank(&n.letter.letter) {
                    n.older_selected += u64::from(n.selected);
                    n.letter = l;
                    n.selected = chosen;
                } else {
                    n.older_selected += u64::from(chosen);
                }
            }
        }
        Ok(true)
    })
    .await?;
    let mut plan = Plan::default();
    let mut chosen: Vec<(&Letter, String)> = Vec::new();
    for n in newest.values().filter(|n| n.any_selected) {
        plan.selected += n.older_selected + u64::from(n.selected);
        let d = &n.letter.letter;
        if !n.selected {
            plan.superseded += 1;
        } else if d.raw_truncated {
            plan.truncated += 1;
        } else if d.attempt() >= args.max_attempts {
            plan.max_attempts += 1;
        } else {
            plan.older_dead_letters += n.older_selected;
            let to = args.to.clone().unwrap_or_else(|| d.origin().topic.clone());
            *plan.per_destination.entry(to.clone()).or_default() += 1;
            chosen.push((&n.letter, to));
        }
    }
    let mut out = None;
    if !args.dry_run && !chosen.is_empty() {
        let mut sender = Sender::new(&s.kafka, args.rate)?;
        let mut progress = Progress::new("redrive", chosen.len() as u64);
        for (i, (l, to)) in chosen.iter().enumerate() {
            let d = &l.letter;
            let raw = d.raw_bytes()?;
            let headers = identity_headers(d.origin(), Some(d.attempt() + 1));
            let mut record = FutureRecord::<[u8], [u8]>::to(to)
                .payload(&raw)
                .headers(headers);
            if let Some(key) = &l.key {
                record = record.key(key);
            }
            sender.send(record).await?;
            progress.update(i as u64 + 1, sender.bytes);
        }
        sender.settle().await;
        progress.finish();
        out = Some(sender);
    }
    let (delivered, failed) = out.as_ref().map_or((0, 0), |o| (o.delivered, o.failed));
    if s.json {
        let mut report = serde_json::to_value(&plan)?;
        report["dry_run"] = json!(args.dry_run);
        report["redrive"] = json!(chosen.len());
        report["delivered"] = json!(delivered);
        report["failed"] = json!(failed);
        print_json(&report)?;
    } else {
        let targets: Vec<String> = plan
            .per_destination
            .iter()
            .map(|(t, n)| format!("{n} to {t}"))
            .collect();
        println!(
            "{} dead letters selected; {} {} records ({}); left out: {} already redriven and \
             failed otherwise, {} truncated, {} at --max-attempts, {} older dead letters of \
             the same records{}",
            plan.selected,
            if args.dry_run {
                "would redrive"
            } else {
                "redrove"
            },
            chosen.len(),
            if targets.is_empty() {
                "none".into()
            } else {
                targets.join(", ")
            },
            plan.superseded,
            plan.truncated,
            plan.max_attempts,
            plan.older_dead_letters,
            if args.dry_run {
                String::new()
            } else {
                format!("; delivered {delivered}, failed {failed}")
            },
        );
    }
    if let Some(o) = out.filter(|o| o.failed > 0) {
        bail!(
            "{} redriven record(s) were not delivered (first error: {})",
            o.failed,
            o.first_error.unwrap_or_default()
        );
    }
    Ok(())
}
