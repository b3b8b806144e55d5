//! The consume → process → acknowledge → store-offset loop of every stage, written once.
//!
//! A [`Stage`] says what it does with a record, with a completion of its in-flight work and
//! on a timer; [`run`] drives it: it takes records only while the stage is
//! [`accepting`](Stage::accepting) (bounded in-flight work, no commit due), settles after every
//! step (commits what is due, sends what is queued), logs the status line, and on shutdown or
//! failure drains the in-flight work for at most [`Loop::drain`] before the stage's final
//! commit (or abort) in [`Stage::finish`].
//!
//! **Delivery guarantee.** The loop itself stores and commits nothing: each stage stores an
//! input offset only once that record's effect is durable (an acknowledged produce, a written
//! row), contiguously per partition ([`crate::kafka::OffsetTracker`]), or hands its outputs and
//! offsets to one Kafka transaction ([`crate::transaction`]). What the loop guarantees is the
//! order: revocations (inside `recv`, [`crate::kafka::PipelineContext`]) are seen by the stage
//! before any record or completion that follows them, nothing is read while a commit is due,
//! and `finish` runs exactly once, after the drain, whether the loop ended on shutdown or on the
//! stage's failure. So: at-least-once by default, exactly-once for `read_committed` consumers
//! in the transactional mode; a record whose effect was not durable at the final commit is
//! processed again by the next owner.

use std::{future::Future, sync::Arc, time::Duration};

use rdkafka::{consumer::StreamConsumer, error::KafkaError, message::BorrowedMessage};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{kafka::PipelineContext, telemetry::LogLimiter};

/// The consumer every stage reads with (shared between the stage and the loop).
pub type SharedConsumer = Arc<StreamConsumer<PipelineContext>>;

/// What a stage does; [`run`] calls it from one task, never concurrently.
pub trait Stage {
    /// A completion of in-flight work: a delivery report, a finished write, a retry due.
    type Event;

    /// The consumer the loop reads from.
    fn consumer(&self) -> SharedConsumer;

    /// The next completion; pending while nothing is in flight. Must be cancel-safe.
    fn next_event(&mut self) -> impl Future<Output = Self::Event> + Send;

    /// Handles a completion.
    fn on_event(&mut self, event: Self::Event);

    /// True while the loop may take a record (in-flight work below its bound, no commit due).
    fn accepting(&self) -> bool;

    /// Handles one consumed record.
    fn on_record(&mut self, message: &BorrowedMessage<'_>);

    /// Periodic work ([`Loop::tick`]): pausing on a stuck downstream, idle steps, due commits.
    fn on_tick(&mut self);

    /// After every step: commits what is due, sends what is queued.
    fn settle(&mut self);

    /// Logs the status line ([`Loop::status`]).
    fn log_status(&mut self);

    /// True once the stage cannot continue ([`Stage::finish`] returns why).
    fn failed(&self) -> bool;

    /// True while the drain should wait for in-flight work.
    fn draining(&self) -> bool;

    /// The final commit (or abort) and flush; the stage's failure, if it failed.
    fn finish(&mut self) -> anyhow::Result<()>;
}

/// The loop's timers.
#[derive(Debug, Clone, Copy)]
pub struct Loop {
    /// How often [`Stage::on_tick`] runs.
    pub tick: Duration,
    /// How often [`Stage::log_status`] runs.
    pub status: Duration,
    /// How long the drain waits for in-flight work after shutdown.
    pub drain: Duration,
}

/// Runs `stage` until `shutdown` is cancelled or the stage fails, then drains and finishes it.
pub async fn run<S: Stage>(
    stage: &mut S,
    timers: Loop,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let consumer = stage.consumer();
    let mut tick = tokio::time::interval(timers.tick);
    let mut status = tokio::time::interval(timers.status);
    let errors = LogLimiter::per_second(1);
    while !stage.failed() {
        let accepting = stage.accepting();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            event = stage.next_event() => stage.on_event(event),
            message = consumer.recv(), if accepting => match message {
                Ok(message) => stage.on_record(&message),
                Err(error) => consume_error(&errors, &error),
            },
            _ = tick.tick() => stage.on_tick(),
            _ = status.tick() => stage.log_status(),
        }
        stage.settle();
    }
    let deadline = tokio::time::sleep(timers.drain);
    tokio::pin!(deadline);
    while stage.draining() {
        tokio::select! {
            event = stage.next_event() => stage.on_event(event),
            _ = &mut deadline => {
                warn!("drain timed out; what is not committed is processed again by the next owner");
                break;
            }
        }
        stage.settle();
    }
    stage.finish()
}

fn consume_error(log: &LogLimiter, error: &KafkaError) {
    if let Some(suppressed) = log.allow() {
        warn!(%error, suppressed, "consume error");
    }
}
