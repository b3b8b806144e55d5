//! Arbitrary bytes through `log_schema::validate`, as the stream-reader sees them.
//!
//! * valid: the validated record survives its own JSON round trip (what the writer decodes is
//!   what the reader encoded);
//! * invalid: the error has a message, and its dead letter survives its JSON round trip with
//!   the original bytes recoverable (all of them, or a prefix when truncated).
#![no_main]

use chrono::{DateTime, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use log_schema::{DEFAULT_MAX_RAW_BYTES, DeadLetter, Limits, Origin, ValidatedRecord, validate};

const ORIGIN: Origin<'static> = Origin {
    topic: "ip_logs",
    partition: 2,
    offset: 41,
};

/// A small budget as well, so that truncation is exercised with fuzzer-sized inputs.
const SMALL_RAW_BUDGET: usize = 64;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 12, 28, 12, 0, 0)
        .single()
        .expect("valid date")
}

fuzz_target!(|data: &[u8]| {
    let now = now();
    match validate(data, &ORIGIN, now, &Limits::default()) {
        Ok(r) => {
            let json = r.to_json();
            let back = ValidatedRecord::from_json(&json).unwrap_or_else(|e| {
                panic!(
                    "validated record does not decode: {e}\n{}",
                    String::from_utf8_lossy(&json)
                )
            });
            assert_eq!(back, r, "validated record round trip");
        }
        Err(e) => {
            assert!(!e.message.is_empty(), "empty error message for {e:?}");
            for budget in [DEFAULT_MAX_RAW_BYTES, SMALL_RAW_BUDGET] {
                let dl = DeadLetter::new(&e, data, &ORIGIN, now, budget);
                assert_eq!(dl.raw_size, data.len());
                assert!(dl.raw.len() <= budget, "encoded raw exceeds its budget");
                let back = DeadLetter::from_json(&dl.to_json()).expect("dead letter round trip");
                assert_eq!(back, dl, "dead letter round trip");
                let raw = back.raw_bytes().expect("raw bytes decode");
                if back.raw_truncated {
                    assert!(raw.len() < data.len(), "truncated but complete");
                    assert!(data.starts_with(&raw), "kept raw is not a prefix");
                } else {
                    assert_eq!(raw, data, "original bytes recoverable");
                }
                if budget == DEFAULT_MAX_RAW_BYTES && data.len() <= 4096 {
                    assert!(!dl.raw_truncated, "small payloads are never truncated");
                }
            }
        }
    }
});
