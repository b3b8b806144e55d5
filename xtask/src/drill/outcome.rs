//! What a drill found: counts, reconciliation and recovery times, one line per drill.

use std::{collections::BTreeSet, time::Duration};

use clap::ValueEnum;
use pipeline_runtime::transaction::Delivery;

use super::Drill;

/// Result of one drill.
#[derive(Debug)]
pub struct Outcome {
    pub drill: Drill,
    pub records: u64,
    pub valid: usize,
    pub invalid: usize,
    pub faults: usize,
    /// Records the producer reported as not delivered (counted, never silent).
    pub producer_failed: u64,
    /// Records on the input topic whose payload is already there (a producer retry that the
    /// idempotent producer failed to deduplicate).
    pub input_duplicates: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub dlq_exact: bool,
    /// Windows the reference model closes.
    pub windows: usize,
    /// Reference windows not emitted with exactly their statistics, emitted windows the
    /// reference does not close, and windows emitted twice with different statistics.
    pub windows_wrong: usize,
    /// Windows whose rows in `ip_stats_by_ip` / `top_talkers_by_minute` are not exactly one
    /// with the reference's count.
    pub window_rows_wrong: usize,
    /// Destination windows the reference model closes.
    pub target_windows: usize,
    /// Destination windows not emitted with exactly the reference's statistics (or emitted
    /// twice with different ones, or not the reference's), and their `top_targets_by_minute`
    /// rows that are not exactly one with the reference's count.
    pub target_windows_wrong: usize,
    /// Alerts on the alerts topic that the emitted windows do not trigger, plus alerts they
    /// trigger that are missing (default thresholds).
    pub alerts_wrong: usize,
    /// `port_scan` alerts of the drill's own scanner (the broker-outage drill: exactly one).
    pub scan_alerts: Option<usize>,
    /// Output failures the stream-reader reported: produce attempts retried (its last status
    /// line) plus transactions aborted (exactly-once).
    pub reader_failures: u64,
    pub recover_max: Duration,
    pub elapsed: Duration,
    pub delivery: Delivery,
    /// Outputs seen more than once by a `read_committed` consumer: validated and DLQ records
    /// per source offset, window stats per window, alerts per id.
    pub topic_duplicates: TopicDuplicates,
    /// What a cluster drill measured beside the reconciliation (`key=value`).
    pub notes: Vec<String>,
}

/// Duplicates per output topic.
#[derive(Debug, Default, Clone, Copy)]
pub struct TopicDuplicates {
    pub validated: usize,
    pub dlq: usize,
    pub stats: usize,
    pub alerts: usize,
    pub targets: usize,
}

impl TopicDuplicates {
    fn total(self) -> usize {
        self.validated + self.dlq + self.stats + self.alerts + self.targets
    }
}

/// How many items occur more than once (each extra occurrence counted).
pub(super) fn repeats<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> usize {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| !seen.insert(i.clone()))
        .count()
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.producer_failed == 0
            && self.input_duplicates == 0
            && self.dlq_exact
            && self.windows > 0
            && self.windows_wrong == 0
            && self.window_rows_wrong == 0
            && self.target_windows > 0
            && self.target_windows_wrong == 0
            && self.alerts_wrong == 0
            && self.scan_alerts.is_none_or(|n| n == 1)
            && self.valid + self.invalid == self.records as usize
            && (self.delivery == Delivery::AtLeastOnce || self.topic_duplicates.total() == 0)
    }

    pub fn line(&self) -> String {
        format!(
            "drill {:<15} {} delivery={} records={} valid={} invalid={} faults={} producer_failed={} input_duplicates={} lost={} duplicated={} dlq_exact={} windows={} windows_wrong={} window_rows_wrong={} target_windows={} target_windows_wrong={} alerts_wrong={}{} reader_failures={} topic_duplicates=validated:{},dlq:{},stats:{},alerts:{},targets:{} recover_max={:.1}s elapsed={:.0}s{}",
            format!("{:?}", self.drill).to_lowercase(),
            if self.ok() { "PASS" } else { "FAIL" },
            self.delivery
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned()),
            self.records,
            self.valid,
            self.invalid,
            self.faults,
            self.producer_failed,
            self.input_duplicates,
            self.lost,
            self.duplicated,
            self.dlq_exact,
            self.windows,
            self.windows_wrong,
            self.window_rows_wrong,
            self.target_windows,
            self.target_windows_wrong,
            self.alerts_wrong,
            self.scan_alerts
                .map_or_else(String::new, |n| format!(" scan_alerts={n}")),
            self.reader_failures,
            self.topic_duplicates.validated,
            self.topic_duplicates.dlq,
            self.topic_duplicates.stats,
            self.topic_duplicates.alerts,
            self.topic_duplicates.targets,
            self.recover_max.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.notes
                .iter()
                .map(|n| format!(" {n}"))
                .collect::<String>(),
        )
    }
}
