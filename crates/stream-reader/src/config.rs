//! The `stream-reader` command line.

use clap::Parser;
use pipeline_runtime::{kafka::KafkaArgs, telemetry::TelemetryArgs, transaction::Delivery};

/// Command line of the `stream-reader` binary.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct ReaderArgs {
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// Consumer group id.
    #[arg(long, env = "READER_GROUP_ID", default_value = "stream-reader")]
    pub group_id: String,

    /// Topic of raw records.
    #[arg(long, env = "READER_INPUT_TOPIC", default_value = log_schema::topics::RAW)]
    pub input_topic: String,

    /// Topic of validated, enriched records.
    #[arg(long, env = "READER_VALIDATED_TOPIC", default_value = log_schema::topics::VALIDATED)]
    pub validated_topic: String,

    /// Dead-letter topic.
    #[arg(long, env = "READER_DLQ_TOPIC", default_value = log_schema::topics::DLQ)]
    pub dlq_topic: String,

    /// Largest accepted record, in bytes.
    #[arg(long, env = "READER_MAX_RECORD_BYTES", default_value_t = 64 * 1024)]
    pub max_record_bytes: usize,

    /// How far an event timestamp may lie ahead of its raw record's Kafka timestamp, in seconds.
    #[arg(long, env = "READER_MAX_FUTURE_SKEW_SECS", default_value_t = 300)]
    pub max_future_skew_secs: u64,

    /// Budget of the raw payload inside a dead letter, in bytes (encoded); larger payloads are
    /// kept as a flagged prefix. Keep it below the DLQ topic's max.message.bytes.
    #[arg(long, env = "READER_DLQ_MAX_RAW_BYTES", default_value_t = log_schema::DEFAULT_MAX_RAW_BYTES)]
    pub dlq_max_raw_bytes: usize,

    /// Most records in flight (consumed, output not yet acknowledged).
    #[arg(long, env = "READER_MAX_IN_FLIGHT", default_value_t = 5_000)]
    pub max_in_flight: usize,

    /// First retry delay of a failed produce, in milliseconds.
    #[arg(long, env = "READER_RETRY_MIN_DELAY_MS", default_value_t = 100)]
    pub retry_min_delay_ms: u64,

    /// Largest retry delay, in milliseconds.
    #[arg(long, env = "READER_RETRY_MAX_DELAY_MS", default_value_t = 10_000)]
    pub retry_max_delay_ms: u64,

    /// Seconds between status lines.
    #[arg(long, env = "READER_STATUS_INTERVAL_SECS", default_value_t = 5)]
    pub status_interval_secs: u64,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102")]
    pub metrics_addr: std::net::SocketAddr,

    /// Compute per-IP one-minute window statistics and security alerts.
    #[arg(long, env = "READER_ANALYTICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub analytics: bool,

    /// Topic of per-IP window statistics.
    #[arg(long, env = "READER_STATS_TOPIC", default_value = log_schema::topics::STATS)]
    pub stats_topic: String,

    /// Topic of security alerts.
    #[arg(long, env = "READER_ALERTS_TOPIC", default_value = log_schema::topics::ALERTS)]
    pub alerts_topic: String,

    /// Allowed lateness of events, in seconds: a window closes when the largest event time seen
    /// passes its end by this much.
    #[arg(long, env = "READER_ALLOWED_LATENESS_SECS", default_value_t = 30)]
    pub allowed_lateness_secs: u64,

    /// A caught-up partition without records for this long advances its event time by the
    /// quiet time (so live traffic flushes its last minute), in ms; 0 turns idle steps off
    /// (only event time closes windows).
    #[arg(long, env = "READER_IDLE_FLUSH_MS", default_value_t = 2_000)]
    pub idle_flush_ms: u64,

    /// Consumer group of the analytics stage (reads the validated topic).
    #[arg(
        long,
        env = "READER_ANALYTICS_GROUP_ID",
        default_value = "stream-reader-analytics"
    )]
    pub analytics_group_id: String,

    /// Most windows (distinct sources) of one minute on one partition of the validated topic;
    /// events of further sources are not counted and the minute's windows are flagged
    /// `sources_capped`.
    #[arg(long, env = "READER_MAX_WINDOWS_PER_MINUTE", default_value_t = 50_000)]
    pub max_windows_per_minute: usize,

    /// Most distinct ports plus destinations tracked for one minute on one partition; values
    /// beyond it are not tracked and their windows are flagged `distinct_capped`.
    #[arg(
        long,
        env = "READER_MAX_DISTINCT_PER_MINUTE",
        default_value_t = 500_000
    )]
    pub max_distinct_per_minute: usize,

    /// Most window outputs (statistics and alerts) in flight; past it the analytics stage stops
    /// reading until they are acknowledged.
    #[arg(long, env = "READER_ANALYTICS_MAX_IN_FLIGHT", default_value_t = 5_000)]
    pub analytics_max_in_flight: usize,

    /// port_scan alert: distinct destination ports of one source in a window.
    #[arg(long, env = "READER_ALERT_PORT_SCAN_PORTS", default_value_t = 100)]
    pub alert_port_scan_ports: i64,

    /// flood alert: events of one source in a window.
    #[arg(long, env = "READER_ALERT_FLOOD_EVENTS", default_value_t = 5_000)]
    pub alert_flood_events: i64,

    /// deny_burst alert: denied (DENY/DROP/REJECT) events of one source in a window.
    #[arg(long, env = "READER_ALERT_DENY_BURST_DENIED", default_value_t = 100)]
    pub alert_deny_burst_denied: i64,

    /// host_sweep alert: distinct destination addresses of one source in a window.
    #[arg(
        long,
        env = "READER_ALERT_HOST_SWEEP_DESTINATIONS",
        default_value_t = 100
    )]
    pub alert_host_sweep_destinations: i64,

    /// host_sweep counts only the destination addresses reached on this port (a worm on 445,
    /// a scan of 22); unset: on any port.
    #[arg(long, env = "READER_ALERT_HOST_SWEEP_PORT")]
    pub alert_host_sweep_port: Option<u16>,

    /// Addresses and CIDR blocks the rules skip (your own scanners, monitoring, NAT
    /// gateways), comma-separated: their windows are computed and stored, but raise no alert.
    #[arg(long, env = "READER_ALERT_ALLOWLIST", default_value = "", value_parser = crate::allowlist::Allowlist::parse)]
    pub alert_allowlist: crate::allowlist::Allowlist,

    /// Also compute one-minute windows per destination IP ("who is under attack") and the
    /// target_flood rule: the validation stage sends every validated record a second time, to
    /// READER_DESTINATION_TOPIC keyed by destination, and a third stage reads it.
    #[arg(long, env = "READER_DESTINATION_WINDOWS", default_value_t = false, action = clap::ArgAction::Set)]
    pub destination_windows: bool,

    /// Topic of validated records keyed by destination IP (the destination windows' input).
    #[arg(long, env = "READER_DESTINATION_TOPIC", default_value = log_schema::topics::BY_DESTINATION)]
    pub destination_topic: String,

    /// Topic of per-destination window statistics.
    #[arg(long, env = "READER_TARGET_STATS_TOPIC", default_value = log_schema::topics::TARGET_STATS)]
    pub target_stats_topic: String,

    /// Consumer group of the destination windows' stage (reads READER_DESTINATION_TOPIC).
    #[arg(
        long,
        env = "READER_TARGETS_GROUP_ID",
        default_value = "stream-reader-targets"
    )]
    pub targets_group_id: String,

    /// target_flood alert: distinct sources against one destination in a window.
    #[arg(long, env = "READER_ALERT_TARGET_FLOOD_SOURCES", default_value_t = 500)]
    pub alert_target_flood_sources: i64,

    /// target_flood alert: events against one destination in a window (when its distinct
    /// sources stay below READER_ALERT_TARGET_FLOOD_SOURCES).
    #[arg(
        long,
        env = "READER_ALERT_TARGET_FLOOD_EVENTS",
        default_value_t = 20_000
    )]
    pub alert_target_flood_events: i64,

    /// threat_match alert: events of an address on a threat list (READER_THREAT_LISTS) in a
    /// window, as a source (and, with READER_DESTINATION_WINDOWS, as a destination); one
    /// alert per list, address, direction and minute.
    #[arg(long, env = "READER_ALERT_THREAT_MATCH_EVENTS", default_value_t = 1)]
    pub alert_threat_match_events: i64,

    /// Destination addresses and CIDR blocks the target rules skip (your own load balancers,
    /// DNS resolvers), comma-separated: their windows are computed and stored, but raise no
    /// alert.
    #[arg(long, env = "READER_ALERT_TARGET_ALLOWLIST", default_value = "", value_parser = crate::allowlist::Allowlist::parse)]
    pub alert_target_allowlist: crate::allowlist::Allowlist,

    /// Delivery guarantee of every output (validated, dead letters, window stats, alerts):
    /// `at-least-once`, or `exactly-once` with Kafka transactions (outputs and input offsets
    /// committed together; consumers of the outputs must read with
    /// `isolation.level=read_committed`).
    #[arg(long, env = "READER_DELIVERY", value_enum, value_parser = pipeline_runtime::enums::Lenient::<Delivery>::new(), default_value_t = Delivery::AtLeastOnce)]
    pub delivery: Delivery,

    /// Transactional id of this instance in exactly-once mode (each stage appends
    /// `-validation` / `-analytics`); empty: `<READER_GROUP_ID>@<hostname>:<pid>`. Unique per
    /// running instance; if stable across restarts, a restart aborts at once what the crashed
    /// instance left open (otherwise READER_TRANSACTION_TIMEOUT_MS does).
    #[arg(long, env = "READER_TRANSACTIONAL_ID", default_value = "")]
    pub transactional_id: String,

    /// Longest time a transaction stays open in exactly-once mode before it is committed, in
    /// ms; outputs become visible to `read_committed` consumers when it commits.
    #[arg(long, env = "READER_TRANSACTION_INTERVAL_MS", default_value_t = 100)]
    pub transaction_interval_ms: u64,

    /// Most input records in one transaction in exactly-once mode.
    #[arg(long, env = "READER_TRANSACTION_MAX_RECORDS", default_value_t = 50_000)]
    pub transaction_max_records: usize,

    /// Broker-side timeout of an open transaction (`transaction.timeout.ms`), in ms: an instance
    /// stalled for longer is aborted by the coordinator and cannot commit it any more.
    #[arg(long, env = "READER_TRANSACTION_TIMEOUT_MS", default_value_t = 10_000)]
    pub transaction_timeout_ms: u64,

    /// MaxMind City or Country database (GeoLite2/GeoIP2 `.mmdb`) for the country and city of
    /// both addresses; absent or unset: no such enrichment, never an error.
    #[arg(long, env = "READER_GEOIP_CITY_DB")]
    pub geoip_city_db: Option<std::path::PathBuf>,

    /// MaxMind ASN database (GeoLite2 ASN `.mmdb`) for the AS number and organisation.
    #[arg(long, env = "READER_GEOIP_ASN_DB")]
    pub geoip_asn_db: Option<std::path::PathBuf>,

    /// How often the GeoIP files are checked for a change (then reloaded), in ms.
    #[arg(long, env = "READER_GEOIP_RELOAD_INTERVAL_MS", default_value_t = 2_000)]
    pub geoip_reload_interval_ms: u64,

    /// Threat lists (one address or CIDR block a line, `#`/`;` comments: FireHOL, Spamhaus
    /// DROP, most feeds), comma-separated `name=path` or `path` (named by the file's stem):
    /// validated records name the lists each address is on. Empty: none.
    #[arg(long, env = "READER_THREAT_LISTS", default_value = "", value_parser = crate::threats::ListSpecs::parse)]
    pub threat_lists: crate::threats::ListSpecs,

    /// How often the threat-list files are checked for a change (then reloaded), in ms.
    #[arg(
        long,
        env = "READER_THREAT_RELOAD_INTERVAL_MS",
        default_value_t = 2_000
    )]
    pub threat_reload_interval_ms: u64,
}

impl ReaderArgs {
    /// Whether the destination windows run (they need the analytics).
    pub fn destination_windows(&self) -> bool {
        self.analytics && self.destination_windows
    }

    /// The transactional id of one stage (`validation`, `analytics`).
    pub fn transactional_id_of(&self, stage: &str) -> String {
        pipeline_runtime::transaction::transactional_id(
            &self.transactional_id,
            &self.group_id,
            stage,
        )
    }
}
