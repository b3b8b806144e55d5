//! The producer's metrics: each name defined once, registered with its help text.

/// `producer_records_sent_total`.
pub const RECORDS_SENT: &str = "producer_records_sent_total";
/// `producer_records_delivered_total`.
pub const RECORDS_DELIVERED: &str = "producer_records_delivered_total";
/// `producer_delivery_failures_total`.
pub const DELIVERY_FAILURES: &str = "producer_delivery_failures_total";
/// `producer_produce_latency_seconds`.
pub const PRODUCE_LATENCY_SECONDS: &str = "producer_produce_latency_seconds";
/// `producer_lines_truncated_total`.
pub const LINES_TRUNCATED: &str = "producer_lines_truncated_total";

/// Registers every metric of the producer with its help text and zero values.
pub(crate) fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram};
    crate::formats::describe_metrics();
    describe_counter!(RECORDS_SENT, "Records handed to the Kafka client");
    describe_counter!(RECORDS_DELIVERED, "Records acknowledged by the broker");
    describe_counter!(DELIVERY_FAILURES, "Records that could not be delivered");
    describe_histogram!(
        PRODUCE_LATENCY_SECONDS,
        metrics::Unit::Seconds,
        "Send to broker acknowledgement"
    );
    describe_counter!(
        LINES_TRUNCATED,
        "Replayed input lines longer than the bound, sent truncated"
    );
    for name in [
        RECORDS_SENT,
        RECORDS_DELIVERED,
        DELIVERY_FAILURES,
        LINES_TRUNCATED,
    ] {
        metrics::counter!(name).absolute(0);
    }
}
