//! Arbitrary bytes as a payload of the output topics: the decoders the writer, the tools and
//! the tests use on `ip_logs_dlq`, `ip_logs_validated`, `ip_stats` and `ip_alerts` never panic,
//! and whatever they accept can be published again: its encoding decodes, and encoding that
//! is a fixpoint. (Not `decode(encode(v)) == v`: the decoders accept any RFC 3339 precision,
//! the encoders write microseconds, by design.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_schema::{Alert, DeadLetter, ValidatedRecord, ValidationError, WindowStats};

fn republishable<T: std::fmt::Debug>(
    value: &T,
    encode: fn(&T) -> Vec<u8>,
    decode: fn(&[u8]) -> Result<T, ValidationError>,
) {
    let once = encode(value);
    let back = decode(&once).unwrap_or_else(|e| {
        panic!(
            "{value:?} encodes to something it cannot decode: {e}\n{}",
            String::from_utf8_lossy(&once)
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&encode(&back)),
        String::from_utf8_lossy(&once),
        "encoding is not a fixpoint"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok(dl) = DeadLetter::from_json(data) {
        // Decoding the kept bytes must not panic either (bad base64 is an error, not a crash).
        let _ = dl.raw_bytes();
        republishable(&dl, DeadLetter::to_json, DeadLetter::from_json);
    }
    if let Ok(r) = ValidatedRecord::from_json(data) {
        republishable(&r, ValidatedRecord::to_json, ValidatedRecord::from_json);
    }
    if let Ok(s) = WindowStats::from_json(data) {
        republishable(&s, WindowStats::to_json, WindowStats::from_json);
    }
    if let Ok(a) = Alert::from_json(data) {
        republishable(&a, Alert::to_json, Alert::from_json);
    }
});
