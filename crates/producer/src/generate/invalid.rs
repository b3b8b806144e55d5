//! Records the validator rejects, one per error kind.

use log_schema::{ErrorKind, RawLog};

/// Writes a record that the validator rejects with exactly `kind`.
pub(super) fn write_invalid(kind: ErrorKind, log: &RawLog<'_>, buf: &mut Vec<u8>) {
    let mut v = serde_json::to_value(log).unwrap_or_default();
    let set = |v: &mut serde_json::Value, field: &str, value: serde_json::Value| {
        if let Some(o) = v.as_object_mut() {
            o.insert(field.to_owned(), value);
        }
    };
    match kind {
        ErrorKind::MalformedJson => {
            log.write_json(buf);
            buf.truncate(buf.len() / 2);
            return;
        }
        ErrorKind::NotObject => v = serde_json::Value::Array(vec![v]),
        ErrorKind::NotUtf8 => {
            log.write_json(buf);
            buf.splice(1..1, [0xff, 0xfe]);
            return;
        }
        ErrorKind::MissingField => {
            if let Some(o) = v.as_object_mut() {
                o.remove("port");
            }
        }
        ErrorKind::InvalidType => set(&mut v, "port", serde_json::json!(log.port.to_string())),
        ErrorKind::InvalidIp => set(&mut v, "source_ip", serde_json::json!("999.12.0.1")),
        ErrorKind::PortOutOfRange => set(&mut v, "port", serde_json::json!(70_000)),
        ErrorKind::BytesOutOfRange => set(&mut v, "bytes_sent", serde_json::json!(-1)),
        ErrorKind::InvalidTimestamp => set(&mut v, "timestamp", serde_json::json!("yesterday")),
        ErrorKind::InvalidProtocol => set(&mut v, "protocol", serde_json::json!("T C P")),
        _ => set(&mut v, "action", serde_json::json!("PERMIT")),
    }
    let _ = serde_json::to_writer(buf, &v);
}
