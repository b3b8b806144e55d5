//! Bounded in-flight work of a consume loop, pausing its partitions when downstream is stuck.

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use tracing::{info, warn};

/// Bounded in-flight work for a consume loop. At `max` records in flight the loop stops taking
/// records (`saturated`); if that lasts `pause_after` (a stuck downstream, e.g. Cassandra down),
/// the assigned partitions are paused so the loop can keep polling — which keeps the group
/// membership alive — without receiving; they are resumed once half of the work is done.
/// Pausing is not used for short saturation: librdkafka drops its prefetched records on pause,
/// and re-fetching them after every resume would throttle a busy consumer.
#[derive(Debug)]
pub struct Backpressure {
    max: usize,
    in_flight: usize,
    paused: bool,
    saturated_since: Option<std::time::Instant>,
    pause_after: std::time::Duration,
}

impl Backpressure {
    /// At most `max` records in flight (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            in_flight: 0,
            paused: false,
            saturated_since: None,
            pause_after: std::time::Duration::from_secs(5),
        }
    }

    /// Records in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True while the loop should take records from the consumer: below the limit, or paused
    /// (a paused consumer delivers nothing, but must be polled).
    pub fn accepting(&self) -> bool {
        self.in_flight < self.max || self.paused
    }

    /// A record was handed to a worker.
    pub fn started<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        self.in_flight += 1;
        if self.in_flight >= self.max {
            self.saturated_since
                .get_or_insert_with(std::time::Instant::now);
            if self.paused {
                // A rebalance may have assigned new partitions meanwhile.
                self.pause(consumer);
            }
        }
    }

    /// Call periodically: pauses the partitions when saturated for too long.
    pub fn tick<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        if !self.paused
            && self.in_flight >= self.max
            && self
                .saturated_since
                .is_some_and(|t| t.elapsed() >= self.pause_after)
        {
            warn!(
                in_flight = self.in_flight,
                "downstream stuck, pausing consumption"
            );
            self.pause(consumer);
        }
    }

    fn pause<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        self.paused = true;
    }

    /// Nothing is in flight any more (the work was discarded): resumes paused partitions.
    pub fn reset<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        self.in_flight = 0;
        self.saturated_since = None;
        if self.paused {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
            self.paused = false;
        }
    }

    /// A record's work finished.
    pub fn finished<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight < self.max {
            self.saturated_since = None;
        }
        if self.paused && self.in_flight <= self.max / 2 {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
            self.paused = false;
            info!(
                in_flight = self.in_flight,
                "downstream recovered, resuming consumption"
            );
        }
    }
}
