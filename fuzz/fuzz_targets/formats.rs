//! Arbitrary bytes as input lines of every `--format` parser (`log-formats`): no panic, and a
//! line the parser calls a record is a seed JSON object with the eight fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_formats::{Format, Options, Outcome, Parser};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = [
        Format::AwsVpcFlow,
        Format::ZeekConn,
        Format::SuricataEve,
        Format::Netfilter,
    ][usize::from(selector) % 4];
    let mut parser = Parser::new(format, Options::default());
    let mut out = Vec::new();
    for line in rest.split(|&b| b == b'\n') {
        let _ = log_formats::detect(line);
        if parser.parse(line, &mut out) == Outcome::Record {
            let value: serde_json::Value =
                serde_json::from_slice(&out).expect("a record is JSON");
            for field in log_schema::RAW_FIELDS {
                assert!(value.get(field).is_some(), "{field} missing: {value}");
            }
        }
    }
});
