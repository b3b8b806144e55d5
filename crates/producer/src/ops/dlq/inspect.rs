//! `producer dlq list|stats|show`: what the selected dead letters are.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use log_schema::{RawEncoding, SourceRef};
use serde_json::{Value, json};

use super::{Letter, ListArgs, Selection, ShowArgs, scan};
use crate::ops::print_json;

fn summary(l: &Letter) -> Value {
    let d = &l.letter;
    json!({
        "dlq": {"partition": l.partition, "offset": l.offset},
        "failed_at": d.failed_at.to_rfc3339(),
        "kind": d.error.kind,
        "field": d.error.field,
        "message": d.error.message,
        "source": d.source,
        "redrive": d.redrive,
        "raw_size": d.raw_size,
        "raw_truncated": d.raw_truncated,
    })
}

fn coordinates(s: &SourceRef) -> String {
    s.to_header()
}

pub(super) async fn list(args: &ListArgs) -> anyhow::Result<()> {
    let s = &args.selection;
    let mut printed = 0u64;
    let mut more = false;
    scan(s, false, |l, _| {
        if args.limit > 0 && printed == args.limit {
            more = true;
            return Ok(false);
        }
        printed += 1;
        if s.json {
            return print_json(&summary(&l)).map(|()| true);
        }
        let d = &l.letter;
        let redrive = d.redrive.as_ref().map_or(String::new(), |r| {
            format!(" redrive=#{} of {}", r.attempt, coordinates(&r.origin))
        });
        println!(
            "{}:{} {} {} field={} source={} size={}{}{}: {}",
            l.partition,
            l.offset,
            d.failed_at.to_rfc3339(),
            d.error.kind.as_str(),
            d.error.field.as_deref().unwrap_or("-"),
            coordinates(&d.source),
            d.raw_size,
            if d.raw_truncated { " truncated" } else { "" },
            redrive,
            d.error.message,
        );
        Ok(true)
    })
    .await?;
    if more {
        eprintln!("(more dead letters match: raise --limit, 0 for all)");
    }
    Ok(())
}

/// Counts of the selected dead letters.
#[derive(Debug, Default)]
struct Stats {
    total: u64,
    redriven: u64,
    by_kind: BTreeMap<&'static str, u64>,
    by_field: BTreeMap<String, u64>,
    by_source_topic: BTreeMap<String, u64>,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

pub(super) async fn stats(s: &Selection) -> anyhow::Result<()> {
    let mut st = Stats::default();
    let scanned = scan(s, false, |l, _| {
        let d = &l.letter;
        st.total += 1;
        st.redriven += u64::from(d.redrive.is_some());
        *st.by_kind.entry(d.error.kind.as_str()).or_default() += 1;
        *st.by_field
            .entry(d.error.field.clone().unwrap_or_else(|| "-".into()))
            .or_default() += 1;
        *st.by_source_topic
            .entry(d.source.topic.clone())
            .or_default() += 1;
        st.first = Some(st.first.map_or(d.failed_at, |f| f.min(d.failed_at)));
        st.last = Some(st.last.map_or(d.failed_at, |f| f.max(d.failed_at)));
        Ok(true)
    })
    .await?;
    if s.json {
        return print_json(&json!({
            "total": st.total,
            "redriven": st.redriven,
            "unreadable": scanned.unreadable,
            "first_failed_at": st.first.map(|t| t.to_rfc3339()),
            "last_failed_at": st.last.map(|t| t.to_rfc3339()),
            "by_kind": st.by_kind,
            "by_field": st.by_field,
            "by_source_topic": st.by_source_topic,
        }));
    }
    let span = match (st.first, st.last) {
        (Some(f), Some(l)) => format!(", written {} .. {}", f.to_rfc3339(), l.to_rfc3339()),
        _ => String::new(),
    };
    println!(
        "{} dead letters ({} of them redrives){span}; {} records of the topic are not dead letters",
        st.total, st.redriven, scanned.unreadable
    );
    for (title, counts) in [
        (
            "error kind",
            st.by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<Vec<_>>(),
        ),
        ("field", st.by_field.clone().into_iter().collect()),
        (
            "source topic",
            st.by_source_topic.clone().into_iter().collect(),
        ),
    ] {
        println!("by {title}:");
        for (name, n) in counts {
            println!("  {name:<24} {n:>10}");
        }
    }
    Ok(())
}

/// Hex dump lines: offset, 16 bytes in hex, the printable ASCII.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {:<47}  |{text}|\n",
            i * 16,
            hex.join(" ")
        ));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) async fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let s = &args.selection;
    let mut printed = 0u64;
    scan(s, false, |l, _| {
        if !args.at.is_empty() && !args.at.contains(&(l.partition, l.offset)) {
            return Ok(true);
        }
        if args.limit > 0 && printed == args.limit {
            eprintln!("(more dead letters match: raise --limit, 0 for all)");
            return Ok(false);
        }
        printed += 1;
        let d = &l.letter;
        let raw = d.raw_bytes()?;
        let utf8 = std::str::from_utf8(&raw).ok();
        if s.json {
            let mut v = summary(&l);
            v["encoding"] = json!(match d.raw_encoding {
                RawEncoding::Utf8 => "utf8",
                RawEncoding::Base64 => "binary",
            });
            match (d.raw_encoding, utf8) {
                (RawEncoding::Utf8, Some(text)) => v["payload_utf8"] = json!(text),
                _ => v["payload_hex"] = json!(hex(&raw)),
            }
            return print_json(&v).map(|()| true);
        }
        println!(
            "== {} {}:{}, written {}",
            s.dlq_topic,
            l.partition,
            l.offset,
            d.failed_at.to_rfc3339()
        );
        println!(
            "error:   {} (field {}): {}",
            d.error.kind.as_str(),
            d.error.field.as_deref().unwrap_or("-"),
            d.error.message
        );
        println!("source:  {}", coordinates(&d.source));
        if let Some(r) = &d.redrive {
            println!("redrive: #{} of {}", r.attempt, coordinates(&r.origin));
        }
        let shown = if d.raw_truncated {
            format!(" (only the first {} bytes were kept)", raw.len())
        } else {
            String::new()
        };
        match (d.raw_encoding, utf8) {
            (RawEncoding::Utf8, Some(text)) => {
                println!("payload: {} bytes, UTF-8{shown}:\n{text}", d.raw_size);
            }
            _ => print!(
                "payload: {} bytes, binary{shown}:\n{}",
                d.raw_size,
                hex_dump(&raw)
            ),
        }
        println!();
        Ok(true)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_dump_shows_offsets_bytes_and_text() {
        let dump = hex_dump(b"\xff\x00ab");
        assert_eq!(dump, format!("00000000  {:<47}  |..ab|\n", "ff 00 61 62"));
        assert_eq!(hex(b"\x01\xfe"), "01fe");
    }
}
