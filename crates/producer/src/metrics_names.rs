//! The producer's metrics: each defined once, registered with its help text.

use pipeline_runtime::telemetry::{Metric, MetricKind};

/// `producer_records_sent_total`.
pub const RECORDS_SENT: Metric = Metric {
    name: "producer_records_sent_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Records handed to the Kafka client",
};
/// `producer_records_delivered_total`.
pub const RECORDS_DELIVERED: Metric = Metric {
    name: "producer_records_delivered_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Records acknowledged by the broker",
};
/// `producer_delivery_failures_total`.
pub const DELIVERY_FAILURES: Metric = Metric {
    name: "producer_delivery_failures_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Records that could not be delivered",
};
/// `producer_produce_latency_seconds`.
pub const PRODUCE_LATENCY_SECONDS: Metric = Metric {
    name: "producer_produce_latency_seconds",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Send to broker acknowledgement",
};
/// `producer_lines_truncated_total`.
pub const LINES_TRUNCATED: Metric = Metric {
    name: "producer_lines_truncated_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Replayed input lines longer than the bound, sent truncated",
};

/// Registers every metric of the producer with its help text and zero values.
/// Every metric of the producer.
pub const METRICS: &[Metric] = &[
    RECORDS_SENT,
    RECORDS_DELIVERED,
    DELIVERY_FAILURES,
    PRODUCE_LATENCY_SECONDS,
    LINES_TRUNCATED,
    crate::formats::INPUT_LINES,
];

pub(crate) fn describe_metrics() {
    pipeline_runtime::telemetry::describe(METRICS);
    crate::formats::describe_metrics();
}
