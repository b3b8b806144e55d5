use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;

const SEED_EXAMPLE: &str = r#"{
  "timestamp": "2025-12-28T10:30:45.123456",
  "source_ip": "192.168.1.100",
  "destination_ip": "10.0.0.50",
  "port": 8080,
  "protocol": "TCP",
  "bytes_sent": 2048,
  "bytes_received": 4096,
  "action": "ALLOW"
}"#;

const ORIGIN: Origin<'static> = Origin {
    topic: "ip_logs",
    partition: 2,
    offset: 41,
};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 12, 28, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn check(payload: &str) -> Result<ValidatedRecord, ValidationError> {
    validate(payload.as_bytes(), &ORIGIN, now(), &Limits::default())
}

/// The seed example with one field replaced by a raw JSON value (or removed with `None`).
fn with_field(field: &str, value: Option<&str>) -> String {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(SEED_EXAMPLE).expect("seed example parses");
    v.remove(field);
    let mut s = serde_json::to_string(&v).expect("serialises");
    if let Some(value) = value {
        s.pop();
        s.push_str(&format!(r#","{field}":{value}}}"#));
    }
    s
}

fn kind_of(payload: &str) -> (ErrorKind, Option<&'static str>) {
    let e = check(payload).expect_err("must be rejected");
    (e.kind, e.field)
}

#[test]
fn seed_example_is_valid_and_enriched() {
    let r = check(SEED_EXAMPLE).expect("valid");
    assert_eq!(r.timestamp.to_rfc3339(), "2025-12-28T10:30:45.123456+00:00");
    assert_eq!(r.source_ip.to_string(), "192.168.1.100");
    assert_eq!(r.destination_ip.to_string(), "10.0.0.50");
    assert_eq!(r.port, 8080);
    assert_eq!(r.protocol, "TCP");
    assert_eq!(
        (r.bytes_sent, r.bytes_received, r.total_bytes),
        (2048, 4096, 6144)
    );
    assert_eq!(r.action, Action::Allow);
    assert_eq!(r.source_ip_class, IpClass::Private);
    assert_eq!(r.destination_ip_class, IpClass::Private);
    assert_eq!(r.service.as_deref(), Some("http-alt"));
    assert_eq!(r.ingested_at, now());
    assert_eq!(r.event_id, ORIGIN.event_id());
    assert_eq!(r.event_id.get_version_num(), 5);
}

#[test]
fn event_id_is_deterministic_and_depends_on_coordinates() {
    let a = check(SEED_EXAMPLE).expect("valid");
    let b = check(SEED_EXAMPLE).expect("valid");
    assert_eq!(a.event_id, b.event_id);
    let other = Origin {
        offset: 42,
        ..ORIGIN
    };
    let c = validate(SEED_EXAMPLE.as_bytes(), &other, now(), &Limits::default()).expect("valid");
    assert_ne!(a.event_id, c.event_id);
}

#[test]
fn own_event_id_is_kept_when_it_is_a_uuid() {
    let id = "0b3f6c8e-54a2-4f0e-9d1c-3a7b2e9f8c10";
    let r = check(&with_field("event_id", Some(&format!("\"{id}\"")))).expect("valid");
    assert_eq!(r.event_id.to_string(), id);
    let r = check(&with_field("event_id", Some("\"not-a-uuid\""))).expect("valid");
    assert_eq!(r.event_id, ORIGIN.event_id());
    let r = check(&with_field("event_id", Some("17"))).expect("valid");
    assert_eq!(r.event_id, ORIGIN.event_id());
}

#[test]
fn timestamp_forms() {
    for (ts, expected) in [
        ("2025-12-28T10:30:45.123Z", "2025-12-28T10:30:45.123+00:00"),
        ("2025-12-28T10:30:45+00:00", "2025-12-28T10:30:45+00:00"),
        (
            "2025-12-28T12:30:45.5+02:00",
            "2025-12-28T10:30:45.500+00:00",
        ),
        ("2025-12-28T10:30:45", "2025-12-28T10:30:45+00:00"),
        (
            "2025-12-28T10:30:45.123456",
            "2025-12-28T10:30:45.123456+00:00",
        ),
        // Nanoseconds are truncated to microseconds.
        (
            "2025-12-28T10:30:45.123456789Z",
            "2025-12-28T10:30:45.123456+00:00",
        ),
    ] {
        let r = check(&with_field("timestamp", Some(&format!("\"{ts}\"")))).expect(ts);
        assert_eq!(r.timestamp.to_rfc3339(), expected, "{ts}");
    }
    for bad in [
        "\"yesterday\"",
        "\"2025-12-28\"",
        "\"2025-13-28T10:30:45\"",
        "\"\"",
    ] {
        assert_eq!(
            kind_of(&with_field("timestamp", Some(bad))),
            (ErrorKind::InvalidTimestamp, Some("timestamp")),
            "{bad}"
        );
    }
    assert_eq!(
        kind_of(&with_field("timestamp", Some("1766917845"))),
        (ErrorKind::InvalidType, Some("timestamp"))
    );
}

#[test]
fn future_skew_is_bounded() {
    // now() is 12:00:00; 12:04:59 is within 5 min, 12:05:01 is not.
    assert!(check(&with_field("timestamp", Some("\"2025-12-28T12:04:59Z\""))).is_ok());
    assert_eq!(
        kind_of(&with_field("timestamp", Some("\"2025-12-28T12:05:01Z\""))),
        (ErrorKind::TimestampInFuture, Some("timestamp"))
    );
}

#[test]
fn every_error_kind_of_the_contract() {
    let cases: Vec<(Vec<u8>, ErrorKind, Option<&str>)> = vec![
        (vec![0xff, 0xfe, b'{'], ErrorKind::NotUtf8, None),
        (b"{\"timestamp\": ".to_vec(), ErrorKind::MalformedJson, None),
        (b"".to_vec(), ErrorKind::MalformedJson, None),
        (b"[1,2,3]".to_vec(), ErrorKind::NotObject, None),
        (b"\"text\"".to_vec(), ErrorKind::NotObject, None),
        (vec![b' '; 70_000], ErrorKind::TooLarge, None),
        (
            with_field("port", None).into_bytes(),
            ErrorKind::MissingField,
            Some("port"),
        ),
        (
            with_field("action", Some("null")).into_bytes(),
            ErrorKind::MissingField,
            Some("action"),
        ),
        (
            with_field("port", Some("\"8080\"")).into_bytes(),
            ErrorKind::InvalidType,
            Some("port"),
        ),
        (
            with_field("port", Some("8080.0")).into_bytes(),
            ErrorKind::InvalidType,
            Some("port"),
        ),
        (
            with_field("port", Some("8e3")).into_bytes(),
            ErrorKind::InvalidType,
            Some("port"),
        ),
        (
            with_field("protocol", Some("6")).into_bytes(),
            ErrorKind::InvalidType,
            Some("protocol"),
        ),
        (
            with_field("source_ip", Some("\"999.1.1.1\"")).into_bytes(),
            ErrorKind::InvalidIp,
            Some("source_ip"),
        ),
        (
            with_field("destination_ip", Some("\"fe80::1%eth0\"")).into_bytes(),
            ErrorKind::InvalidIp,
            Some("destination_ip"),
        ),
        (
            with_field("port", Some("65536")).into_bytes(),
            ErrorKind::PortOutOfRange,
            Some("port"),
        ),
        (
            with_field("port", Some("-1")).into_bytes(),
            ErrorKind::PortOutOfRange,
            Some("port"),
        ),
        (
            with_field("bytes_sent", Some("-5")).into_bytes(),
            ErrorKind::BytesOutOfRange,
            Some("bytes_sent"),
        ),
        (
            with_field("bytes_received", Some("9223372036854775808")).into_bytes(),
            ErrorKind::BytesOutOfRange,
            Some("bytes_received"),
        ),
        (
            with_field(
                "bytes_received",
                Some("123456789012345678901234567890123456789012"),
            )
            .into_bytes(),
            ErrorKind::BytesOutOfRange,
            Some("bytes_received"),
        ),
        (
            with_field("timestamp", Some("\"not a time\"")).into_bytes(),
            ErrorKind::InvalidTimestamp,
            Some("timestamp"),
        ),
        (
            with_field("timestamp", Some("\"2099-01-01T00:00:00Z\"")).into_bytes(),
            ErrorKind::TimestampInFuture,
            Some("timestamp"),
        ),
        (
            with_field("protocol", Some("\"T C P\"")).into_bytes(),
            ErrorKind::InvalidProtocol,
            Some("protocol"),
        ),
        (
            with_field("protocol", Some("\"\"")).into_bytes(),
            ErrorKind::InvalidProtocol,
            Some("protocol"),
        ),
        (
            with_field("protocol", Some("\"ABCDEFGHIJKLMNOPQ\"")).into_bytes(),
            ErrorKind::InvalidProtocol,
            Some("protocol"),
        ),
        (
            with_field("action", Some("\"PERMIT\"")).into_bytes(),
            ErrorKind::InvalidAction,
            Some("action"),
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (payload, kind, field) in cases {
        let e = validate(&payload, &ORIGIN, now(), &Limits::default())
            .expect_err(&String::from_utf8_lossy(&payload));
        assert_eq!(
            (e.kind, e.field),
            (kind, field),
            "{}",
            String::from_utf8_lossy(&payload)
        );
        assert!(!e.message.is_empty());
        seen.insert(kind);
    }
    // Every kind the validator can produce is covered (write_rejected is the writer's).
    let validator_kinds: Vec<_> = ErrorKind::ALL
        .into_iter()
        .filter(|k| k.is_validation())
        .collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), validator_kinds);
}

#[test]
fn normalisation() {
    let r = check(&with_field("protocol", Some("\"udp\""))).expect("valid");
    assert_eq!(r.protocol, "UDP");
    let r = check(&with_field("action", Some("\"deny\""))).expect("valid");
    assert_eq!(r.action, Action::Deny);
    assert!(r.action.is_denied());
    let r = check(&with_field("source_ip", Some("\"2001:DB8:0:0:0:0:0:1\""))).expect("valid");
    assert_eq!(r.source_ip.to_string(), "2001:db8::1");
    let r = check(&with_field("source_ip", Some("\"::ffff:10.1.2.3\""))).expect("valid");
    assert_eq!(r.source_ip_class, IpClass::Private);
    let r = check(&with_field("port", Some("0"))).expect("ICMP has port 0");
    assert_eq!(r.port, 0);
    let r = check(&with_field("bytes_sent", Some("9223372036854775807"))).expect("i64::MAX");
    assert_eq!(r.total_bytes, i64::MAX, "saturates");
    // Escaped strings are decoded.
    let r = check(&with_field("protocol", Some("\"\\u0054CP\""))).expect("valid");
    assert_eq!(r.protocol, "TCP");
}

#[test]
fn unknown_fields_are_ignored_but_duplicates_are_rejected() {
    let r = check(&with_field(
        "extra",
        Some(r#"{"nested": [1, 2, {"deep": null}]}"#),
    ));
    assert!(r.is_ok());
    let dup = SEED_EXAMPLE.replacen("\"port\": 8080", "\"port\": 8080, \"port\": 22", 1);
    assert_eq!(kind_of(&dup), (ErrorKind::MalformedJson, None));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let limits = Limits {
        max_record_bytes: 1 << 20,
        ..Limits::default()
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // Deep nesting in an ignored field is skipped without recursion; the record still lacks
    // its fields.
    let unknown = format!("{{\"x\": {deep}}}");
    let e = validate(unknown.as_bytes(), &ORIGIN, now(), &limits).expect_err("no fields");
    assert_eq!(e.kind, ErrorKind::MissingField);
    // In a required field it is the wrong type.
    let in_port = with_field("port", Some(&deep));
    let e = validate(in_port.as_bytes(), &ORIGIN, now(), &limits).expect_err("deep port");
    assert!(
        matches!(e.kind, ErrorKind::InvalidType | ErrorKind::MalformedJson),
        "{e}"
    );
    // As the whole payload it is not an object.
    let e = validate(deep.as_bytes(), &ORIGIN, now(), &limits).expect_err("deep array");
    assert!(
        matches!(e.kind, ErrorKind::NotObject | ErrorKind::MalformedJson),
        "{e}"
    );
}

#[test]
fn validated_record_round_trips() {
    let r = check(SEED_EXAMPLE).expect("valid");
    let json = r.to_json();
    let text = std::str::from_utf8(&json).expect("utf8");
    assert!(
        text.contains(r#""timestamp":"2025-12-28T10:30:45.123456Z""#),
        "{text}"
    );
    assert!(text.contains(r#""action":"ALLOW""#), "{text}");
    assert!(text.contains(r#""source_ip_class":"private""#), "{text}");
    assert_eq!(ValidatedRecord::from_json(&json).expect("decodes"), r);
    assert_eq!(
        ValidatedRecord::from_json(b"{}").expect_err("shape").kind,
        ErrorKind::InvalidType
    );
    assert_eq!(
        ValidatedRecord::from_json(b"{").expect_err("syntax").kind,
        ErrorKind::MalformedJson
    );
}

#[test]
fn raw_log_serialises_in_seed_format() {
    let at = Utc
        .with_ymd_and_hms(2025, 12, 28, 10, 30, 45)
        .single()
        .expect("date")
        + chrono::Duration::microseconds(123_456);
    let log = RawLog {
        timestamp: EventTime {
            at,
            style: TimestampStyle::Seed,
        },
        source_ip: "192.168.1.100".parse().expect("ip"),
        destination_ip: "10.0.0.50".parse().expect("ip"),
        port: 8080,
        protocol: "TCP",
        bytes_sent: 2048,
        bytes_received: 4096,
        action: Action::Allow,
    };
    let mut buf = Vec::new();
    log.write_json(&mut buf);
    let seed: serde_json::Value = serde_json::from_str(SEED_EXAMPLE).expect("seed");
    let ours: serde_json::Value = serde_json::from_slice(&buf).expect("ours");
    assert_eq!(ours, seed);
    assert!(buf.starts_with(br#"{"timestamp":"2025-12-28T10:30:45.123456","source_ip""#));
    let keys: Vec<String> =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&buf)
            .expect("object")
            .keys()
            .cloned()
            .collect();
    let mut expected: Vec<String> = RAW_FIELDS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(keys, expected);
    let rfc = RawLog {
        timestamp: EventTime {
            at,
            style: TimestampStyle::Rfc3339,
        },
        ..log
    };
    let mut buf = Vec::new();
    rfc.write_json(&mut buf);
    assert!(
        String::from_utf8(buf)
            .expect("utf8")
            .contains("\"2025-12-28T10:30:45.123456Z\"")
    );
}

#[test]
fn dead_letter_keeps_utf8_and_binary_payloads() {
    let err = check("[1]").expect_err("not object");
    let dl = DeadLetter::new(&err, b"[1]", &ORIGIN, now(), DEFAULT_MAX_RAW_BYTES);
    assert_eq!(dl.raw_encoding, RawEncoding::Utf8);
    assert_eq!(dl.raw, "[1]");
    assert!(!dl.raw_truncated);
    let back = DeadLetter::from_json(&dl.to_json()).expect("round trip");
    assert_eq!(back, dl);
    assert_eq!(back.raw_bytes().expect("raw"), b"[1]");

    let binary = [0u8, 159, 146, 150, 255];
    let err = validate(&binary, &ORIGIN, now(), &Limits::default()).expect_err("binary");
    let dl = DeadLetter::new(&err, &binary, &ORIGIN, now(), DEFAULT_MAX_RAW_BYTES);
    assert_eq!(dl.raw_encoding, RawEncoding::Base64);
    assert_eq!(dl.error.kind, ErrorKind::NotUtf8);
    let json = String::from_utf8(dl.to_json()).expect("utf8");
    assert!(json.contains(r#""kind":"not_utf8""#), "{json}");
    assert!(
        json.contains(r#""source":{"topic":"ip_logs","partition":2,"offset":41}"#),
        "{json}"
    );
    assert_eq!(
        DeadLetter::from_json(json.as_bytes())
            .expect("parse")
            .raw_bytes()
            .expect("raw"),
        binary
    );
}

#[test]
fn dead_letter_truncates_instead_of_dropping() {
    let big = "\u{1}é".repeat(100_000);
    let err = ValidationError::new(ErrorKind::TooLarge, None, "big");
    let dl = DeadLetter::new(&err, big.as_bytes(), &ORIGIN, now(), 1000);
    assert!(dl.raw_truncated);
    assert_eq!(dl.raw_size, big.len());
    assert!(big.starts_with(&dl.raw));
    assert!(dl.to_json().len() < 1500, "encoded raw respects the budget");

    let bin = vec![0xffu8; 10_000];
    let dl = DeadLetter::new(&err, &bin, &ORIGIN, now(), 1000);
    assert!(dl.raw_truncated);
    assert!(dl.raw.len() <= 1000);
    assert_eq!(
        dl.raw_bytes().expect("b64"),
        bin[..dl.raw_bytes().expect("b64").len()]
    );
}

#[test]
fn error_kind_names_are_stable() {
    for kind in ErrorKind::ALL {
        let json = serde_json::to_string(&kind).expect("serialises");
        assert_eq!(json, format!("\"{}\"", kind.as_str()));
        assert_eq!(
            serde_json::from_str::<ErrorKind>(&json).expect("parses"),
            kind
        );
    }
}

fn valid_record() -> impl Strategy<Value = String> {
    (
        any::<[u8; 4]>(),
        any::<[u16; 8]>(),
        any::<u16>(),
        "[A-Za-z0-9-]{1,16}",
        0..=i64::MAX,
        0..=i64::MAX,
        prop::sample::select(vec!["ALLOW", "deny", "Drop", "REJECT"]),
        0i64..1_700_000_000,
    )
        .prop_map(|(v4, v6, port, proto, sent, recv, action, secs)| {
            let ts = DateTime::from_timestamp(secs, 0)
                .expect("in range")
                .to_rfc3339();
            serde_json::json!({
                "timestamp": ts,
                "source_ip": std::net::Ipv4Addr::from(v4).to_string(),
                "destination_ip": std::net::Ipv6Addr::from(v6).to_string(),
                "port": port, "protocol": proto, "bytes_sent": sent,
                "bytes_received": recv, "action": action,
            })
            .to_string()
        })
}

/// chrono's reading of the seed's timestamp format, which the fast path must reproduce.
fn chrono_seed_format(s: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

#[test]
fn seed_timestamp_fast_path_matches_chrono_on_edges() {
    for s in [
        "2025-12-28T10:30:45.123456",
        "2025-12-28T10:30:45",
        "2025-12-28T10:30:45.1",
        "2025-12-28T10:30:45.123456789",
        "2024-02-29T23:59:59.999999",
        "0000-01-01T00:00:00",
        "9999-12-31T23:59:59.999999999",
    ] {
        assert_eq!(record::seed_timestamp(s), chrono_seed_format(s), "{s}");
        assert!(record::seed_timestamp(s).is_some(), "{s}");
    }
    // Shapes the fast path leaves to chrono: leap second, long fractions, bad dates.
    for s in [
        "2025-12-28T10:30:60",
        "2025-12-28T10:30:45.1234567891",
        "2025-02-30T10:30:45",
        "2025-12-28T10:30:45.",
        "2025-12-28 10:30:45",
        "2025-1-28T10:30:45",
    ] {
        assert_eq!(record::seed_timestamp(s), None, "{s}");
    }
}

proptest! {
    #[test]
    fn seed_timestamp_fast_path_agrees_with_chrono(
        s in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?.{0,2}",
    ) {
        if let Some(fast) = record::seed_timestamp(&s) {
            prop_assert_eq!(Some(fast), chrono_seed_format(&s));
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let r = validate(&bytes, &ORIGIN, now(), &Limits::default());
        if let Err(e) = r {
            let dl = DeadLetter::new(&e, &bytes, &ORIGIN, now(), DEFAULT_MAX_RAW_BYTES);
            let back = DeadLetter::from_json(&dl.to_json()).expect("envelope round trip");
            prop_assert_eq!(back.raw_bytes().expect("raw"), bytes);
        }
    }

    #[test]
    fn generated_valid_records_validate_and_round_trip(record in valid_record()) {
        let r = check(&record).expect("valid by construction");
        prop_assert_eq!(ValidatedRecord::from_json(&r.to_json()).expect("round trip"), r);
    }

    #[test]
    fn mutated_valid_records_never_panic(
        record in valid_record(),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = record.into_bytes();
        let i = cut.index(bytes.len());
        bytes[i] = byte;
        let _ = validate(&bytes, &ORIGIN, now(), &Limits::default());
        bytes.truncate(i);
        let _ = validate(&bytes, &ORIGIN, now(), &Limits::default());
    }
}

/// Found by fuzzing (`fuzz/`, target `validate`): a signed naive year or an offset crossing
/// year 0 was accepted, and the validated record then serialised a timestamp (`-0001-…`) that
/// RFC 3339, hence `ValidatedRecord::from_json` (the writer), cannot read back.
#[test]
fn timestamps_outside_four_digit_utc_years_are_invalid() {
    for ts in [
        // The fuzzer's minimised input: a naive form with a signed one-digit year.
        "-5-1-8T1:0:5",
        "-0001-01-01T00:00:00",
        "-10000-01-01T00:00:00",
        "0000-01-01T00:00:00+01:00",
        "+10000-01-01T00:00:00",
        "9999-12-31T23:59:59-01:00",
    ] {
        let payload = with_field("timestamp", Some(&format!("\"{ts}\"")));
        // No future bound at all: the year range alone rejects them.
        let limits = Limits {
            max_future_skew: std::time::Duration::MAX,
            ..Limits::default()
        };
        let e = validate(payload.as_bytes(), &ORIGIN, now(), &limits).expect_err(ts);
        assert_eq!(
            (e.kind, e.field),
            (ErrorKind::InvalidTimestamp, Some("timestamp")),
            "{ts}"
        );
        assert_eq!(parse_timestamp(ts), None, "{ts}");
    }
    // The edges of the range are fine and round-trip.
    let limits = Limits {
        max_future_skew: std::time::Duration::MAX,
        ..Limits::default()
    };
    for ts in [
        "0000-01-01T00:00:00",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:59:59.999999Z",
    ] {
        let payload = with_field("timestamp", Some(&format!("\"{ts}\"")));
        let r = validate(payload.as_bytes(), &ORIGIN, now(), &limits).expect(ts);
        assert_eq!(
            ValidatedRecord::from_json(&r.to_json()).expect(ts),
            r,
            "{ts}"
        );
    }
}

/// The decoders of the output topics reject an instant their encoders cannot write (the same
/// root cause as above, on the decoding side; the `dlq_roundtrip` fuzz target checks it).
#[test]
fn decoders_reject_instants_outside_four_digit_utc_years() {
    let r = check(SEED_EXAMPLE).expect("valid");
    let json = String::from_utf8(r.to_json()).expect("utf8");
    let shifted = json.replace("2025-12-28T10:30:45.123456Z", "0000-01-01T00:00:00+01:00");
    assert_ne!(shifted, json);
    assert_eq!(
        ValidatedRecord::from_json(shifted.as_bytes())
            .expect_err("year -1")
            .kind,
        ErrorKind::InvalidType
    );

    let err = check("[1]").expect_err("not object");
    let dl = DeadLetter::new(&err, b"[1]", &ORIGIN, now(), DEFAULT_MAX_RAW_BYTES);
    let json = String::from_utf8(dl.to_json()).expect("utf8");
    let shifted = json.replace("2025-12-28T12:00:00.000000Z", "9999-12-31T23:59:59-00:01");
    assert_ne!(shifted, json);
    assert!(DeadLetter::from_json(shifted.as_bytes()).is_err());
    let edge = json.replace("2025-12-28T12:00:00.000000Z", "9999-12-31T23:59:59+00:01");
    let back = DeadLetter::from_json(edge.as_bytes()).expect("year 9999 in UTC");
    assert_eq!(DeadLetter::from_json(&back.to_json()).expect("again"), back);
}

/// The alert JSON the README documents as the contract, byte for byte.
#[test]
fn the_alert_contract_is_the_readme_example() {
    let start = Utc
        .with_ymd_and_hms(2026, 12, 7, 13, 5, 0)
        .single()
        .expect("valid date");
    let stats = WindowStats {
        source_ip: "203.0.113.224".parse().expect("ip"),
        window_start: start,
        window_end: start + chrono::TimeDelta::minutes(1),
        events: 254,
        bytes_sent: 15_240,
        bytes_received: 0,
        distinct_ports: 1,
        distinct_destinations: 254,
        denied: 61,
        first_seen: start,
        last_seen: start,
        distinct_capped: false,
        sources_capped: false,
        source_geo: None,
        source_threats: Vec::new(),
        sweep: None,
    };
    let alert = Alert::evaluate(AlertRule::HostSweep, &stats, 100).expect("fires");
    let readme = include_str!("../../../README.md");
    let example = readme
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README's alert example");
    let example: String = example.lines().map(str::trim_start).collect();
    assert_eq!(String::from_utf8(alert.to_json()).expect("utf8"), example);
    assert_eq!(
        Alert::from_json(example.as_bytes()).expect("decodes"),
        alert
    );
    assert!(Alert::evaluate(AlertRule::HostSweep, &stats, 255).is_none());
}

#[test]
fn a_target_alert_names_its_destination_and_an_alert_names_exactly_one_address() {
    let start = Utc
        .with_ymd_and_hms(2026, 12, 8, 9, 30, 0)
        .single()
        .expect("valid date");
    let victim: std::net::IpAddr = "10.88.0.80".parse().expect("ip");
    let stats = crate::TargetStats {
        destination_ip: victim,
        window_start: start,
        window_end: start + chrono::TimeDelta::minutes(1),
        events: 600,
        bytes_sent: 44_400,
        bytes_received: 0,
        distinct_sources: 600,
        distinct_ports: 1,
        denied: 0,
        first_seen: start,
        last_seen: start,
        distinct_capped: false,
        targets_capped: false,
        destination_geo: None,
        destination_threats: Vec::new(),
    };
    assert!(Alert::evaluate_target(&stats, 601, 601).is_none());
    let by_sources = Alert::evaluate_target(&stats, 500, 20_000).expect("fires");
    assert_eq!(
        (by_sources.value, by_sources.threshold, by_sources.source_ip),
        (600, 500, None)
    );
    assert_eq!(
        by_sources.alert_id,
        Alert::id(AlertRule::TargetFlood, victim, start)
    );
    // Only the events reached theirs: the events are the figure.
    let by_events = Alert::evaluate_target(&stats, 601, 600).expect("fires");
    assert_eq!((by_events.value, by_events.threshold), (600, 600));
    assert_eq!(
        by_events.alert_id, by_sources.alert_id,
        "one alert per window"
    );
    let json = String::from_utf8(by_sources.to_json()).expect("utf8");
    assert!(json.contains(r#""destination_ip":"10.88.0.80""#), "{json}");
    assert!(!json.contains("source_ip"), "{json}");
    assert_eq!(
        Alert::from_json(json.as_bytes()).expect("decodes"),
        by_sources
    );
    // Neither address, or both: not an alert.
    let neither = json.replace(r#""destination_ip":"10.88.0.80","#, "");
    let both = json.replace(
        r#""destination_ip""#,
        r#""source_ip":"192.0.2.1","destination_ip""#,
    );
    for bad in [neither, both] {
        let error = Alert::from_json(bad.as_bytes()).expect_err("not an alert");
        assert_eq!(error.kind, ErrorKind::InvalidType, "{bad}");
    }
    // A source's rule is never a target's, and a target's never a source's.
    assert!(
        AlertRule::SOURCE
            .iter()
            .all(|r| *r != AlertRule::TargetFlood)
    );
    assert_eq!(
        "target_flood".parse::<AlertRule>(),
        Ok(AlertRule::TargetFlood)
    );
}
