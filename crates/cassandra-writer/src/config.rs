//! The writer's command line.

use std::{path::PathBuf, time::Duration};

use backon::ExponentialBuilder;
use clap::Args;
use pipeline_runtime::{
    cassandra::CassandraArgs, kafka::KafkaArgs, telemetry::TelemetryArgs, transaction::Delivery,
};

/// Options of the writer.
#[derive(Debug, Clone, Args)]
pub struct WriterArgs {
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Cassandra connection.
    #[command(flatten)]
    pub cassandra: CassandraArgs,

    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// Consumer group id.
    #[arg(long, env = "WRITER_GROUP_ID", default_value = "cassandra-writer")]
    pub group_id: String,

    /// Topic of validated records to persist.
    #[arg(long, env = "WRITER_INPUT_TOPIC", default_value = log_schema::topics::VALIDATED)]
    pub input_topic: String,

    /// Topic of per-IP window statistics (persisted to ip_stats_by_ip and top_talkers_by_minute).
    #[arg(long, env = "WRITER_STATS_TOPIC", default_value = log_schema::topics::STATS)]
    pub stats_topic: String,

    /// Topic of per-destination window statistics (persisted to target_stats_by_ip and
    /// top_targets_by_minute).
    #[arg(long, env = "WRITER_TARGET_STATS_TOPIC", default_value = log_schema::topics::TARGET_STATS)]
    pub target_stats_topic: String,

    /// Topic of alerts (persisted to alerts, and target_alerts for a target's rule).
    #[arg(long, env = "WRITER_ALERTS_TOPIC", default_value = log_schema::topics::ALERTS)]
    pub alerts_topic: String,

    /// Dead-letter topic for rows Cassandra rejects and records that cannot be decoded.
    #[arg(long, env = "WRITER_DLQ_TOPIC", default_value = log_schema::topics::DLQ)]
    pub dlq_topic: String,

    /// Budget of the payload inside a dead letter, in bytes (encoded); larger payloads are
    /// kept as a flagged prefix, and a dead letter the DLQ topic's max.message.bytes cannot
    /// take is sent without its payload.
    #[arg(long, env = "WRITER_DLQ_MAX_RAW_BYTES", default_value_t = log_schema::DEFAULT_MAX_RAW_BYTES)]
    pub dlq_max_raw_bytes: usize,

    /// Most `access_logs` rows of one partition (source IP, 10-minute bucket) written as one
    /// unlogged batch; 1 writes every row on its own.
    #[arg(long, env = "WRITER_BATCH_MAX_ROWS", default_value_t = 32)]
    pub batch_max_rows: usize,

    /// Payload bytes (validated JSON) at which a partition's group is sent without waiting
    /// for `WRITER_BATCH_MAX_ROWS`.
    #[arg(long, env = "WRITER_BATCH_MAX_BYTES", default_value_t = 65_536)]
    pub batch_max_bytes: usize,

    /// Most partitions with an open group at once; past it, the oldest group is sent.
    #[arg(long, env = "WRITER_BATCH_MAX_OPEN_GROUPS", default_value_t = 4_000)]
    pub batch_max_open_groups: usize,

    /// How long a partial group may wait for more rows of its partition, in ms, only while
    /// the writer is behind (the consumer has more records ready); otherwise it is sent at once.
    #[arg(long, env = "WRITER_BATCH_LINGER_MS", default_value_t = 200)]
    pub batch_linger_ms: u64,

    /// Most records consumed and not yet written (in open groups or in requests); beyond it
    /// the writer stops reading, and pauses the partitions if that lasts.
    #[arg(long, env = "WRITER_MAX_IN_FLIGHT", default_value_t = 16_384)]
    pub max_in_flight: usize,

    /// Most Cassandra requests (a batch or a single write) in flight at once; while all are
    /// busy, groups keep filling.
    #[arg(long, env = "WRITER_MAX_IN_FLIGHT_REQUESTS", default_value_t = 64)]
    pub max_in_flight_requests: usize,

    /// Attempts per write before giving up on it (0 = retry without limit). A write that runs out
    /// of attempts stops the writer without committing past it, so nothing is lost either way.
    #[arg(long, env = "WRITER_RETRY_MAX_ATTEMPTS", default_value_t = 0)]
    pub retry_max_attempts: usize,

    /// First retry delay, in milliseconds (doubles each attempt, with jitter).
    #[arg(long, env = "WRITER_RETRY_MIN_DELAY_MS", default_value_t = 100)]
    pub retry_min_delay_ms: u64,

    /// Largest retry delay, in milliseconds.
    #[arg(long, env = "WRITER_RETRY_MAX_DELAY_MS", default_value_t = 10_000)]
    pub retry_max_delay_ms: u64,

    /// Seconds between status lines.
    #[arg(long, env = "WRITER_STATUS_INTERVAL_SECS", default_value_t = 5)]
    pub status_interval_secs: u64,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9103")]
    pub metrics_addr: std::net::SocketAddr,

    /// Delivery guarantee of the writer's dead letters: `at-least-once`, or `exactly-once`
    /// (committed with the input offsets in Kafka transactions). Rows are idempotent either way.
    #[arg(long, env = "WRITER_DELIVERY", value_enum, value_parser = pipeline_runtime::enums::Lenient::<Delivery>::new(), default_value_t = Delivery::AtLeastOnce)]
    pub delivery: Delivery,

    /// Transactional id of this instance in exactly-once mode (`-writer` is appended); empty:
    /// `<WRITER_GROUP_ID>@<hostname>:<pid>`. Unique per running instance; if stable across
    /// restarts, a restart aborts at once what the crashed instance left open.
    #[arg(long, env = "WRITER_TRANSACTIONAL_ID", default_value = "")]
    pub transactional_id: String,

    /// Interval between offset commits in exactly-once mode (each a transaction with the dead
    /// letters below the committed offsets), in ms.
    #[arg(long, env = "WRITER_TRANSACTION_INTERVAL_MS", default_value_t = 1_000)]
    pub transaction_interval_ms: u64,

    /// Broker-side timeout of an open transaction (`transaction.timeout.ms`), in ms.
    #[arg(long, env = "WRITER_TRANSACTION_TIMEOUT_MS", default_value_t = 10_000)]
    pub transaction_timeout_ms: u64,

    /// The alert hand-off to a webhook (off unless `WRITER_WEBHOOK_URL` is set).
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// Options of the alert hand-off: every alert of `WRITER_ALERTS_TOPIC` POSTed to a webhook.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// URL every alert is POSTed to as JSON (the `ip_alerts` payload), with the header
    /// `Idempotency-Key: <alert_id>`; empty: no hand-off.
    #[arg(
        id = "webhook_url",
        long = "webhook-url",
        env = "WRITER_WEBHOOK_URL",
        default_value = ""
    )]
    pub url: String,

    /// File holding the webhook's secret token, sent as `Authorization: Bearer <token>` (read
    /// at every call, so a rotated token applies at once; trailing newline ignored); unset: no
    /// `Authorization` header.
    #[arg(
        id = "webhook_token_file",
        long = "webhook-token-file",
        env = "WRITER_WEBHOOK_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,

    /// CA certificate (PEM) to verify an `https` webhook with, besides the system's roots.
    #[arg(
        id = "webhook_ca_file",
        long = "webhook-ca-file",
        env = "WRITER_WEBHOOK_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,

    /// Consumer group of the hand-off (its own offsets on the alerts topic).
    #[arg(
        id = "webhook_group_id",
        long = "webhook-group-id",
        env = "WRITER_WEBHOOK_GROUP_ID",
        default_value = "alert-webhook"
    )]
    pub group_id: String,

    /// Timeout of one webhook call, in ms.
    #[arg(
        id = "webhook_timeout_ms",
        long = "webhook-timeout-ms",
        env = "WRITER_WEBHOOK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub timeout_ms: u64,

    /// Calls per alert before it is dead-lettered (`alert_undelivered`, with the last reason);
    /// a refusal of the alert itself (HTTP 400, 413, 415, 422) is dead-lettered at once.
    #[arg(
        id = "webhook_max_attempts",
        long = "webhook-max-attempts",
        env = "WRITER_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 20
    )]
    pub max_attempts: usize,

    /// First retry delay of a failed call, in ms (doubles each attempt, with jitter).
    #[arg(
        id = "webhook_retry_min_delay_ms",
        long = "webhook-retry-min-delay-ms",
        env = "WRITER_WEBHOOK_RETRY_MIN_DELAY_MS",
        default_value_t = 500
    )]
    pub retry_min_delay_ms: u64,

    /// Largest retry delay, in ms.
    #[arg(
        id = "webhook_retry_max_delay_ms",
        long = "webhook-retry-max-delay-ms",
        env = "WRITER_WEBHOOK_RETRY_MAX_DELAY_MS",
        default_value_t = 30_000
    )]
    pub retry_max_delay_ms: u64,

    /// Most alerts being delivered at once; beyond it the hand-off stops reading.
    #[arg(
        id = "webhook_max_in_flight",
        long = "webhook-max-in-flight",
        env = "WRITER_WEBHOOK_MAX_IN_FLIGHT",
        default_value_t = 64
    )]
    pub max_in_flight: usize,
}

impl WebhookArgs {
    /// Whether the hand-off runs.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        backoff(
            self.retry_min_delay_ms,
            self.retry_max_delay_ms,
            self.max_attempts.max(1),
        )
    }
}

impl WriterArgs {
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        backoff(
            self.retry_min_delay_ms,
            self.retry_max_delay_ms,
            self.retry_max_attempts,
        )
    }
}

/// Exponential backoff with jitter from `min_ms` to `max_ms`, for `attempts` attempts in all
/// (0: without limit).
fn backoff(min_ms: u64, max_ms: u64, attempts: usize) -> ExponentialBuilder {
    let b = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(min_ms))
        .with_max_delay(Duration::from_millis(max_ms))
        .with_jitter();
    match attempts {
        0 => b.without_max_times(),
        n => b.with_max_times(n - 1),
    }
}
