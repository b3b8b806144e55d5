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
use tokio::time::MissedTickBehavior;
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
    for timer in [&mut tick, &mut status] {
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let errors = LogLimiter::per_second(1);
    while !stage.failed() {
        let accepting = stage.accepting();
        // The timers come before the work: while draining a backlog a completion or a record
        // is always ready, and timers polled after them would not run for seconds (the
        // interval's commits, transaction ends and status lines).
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => stage.on_tick(),
            _ = status.tick() => stage.log_status(),
            event = stage.next_event() => stage.on_event(event),
            message = consumer.recv(), if accepting => match message {
                Ok(message) => stage.on_record(&message),
                Err(error) => consume_error(&errors, &error),
            },
        }
        stage.settle();
        // librdkafka's queue is outside tokio's cooperative budget: without this a backlog
        // keeps the task from ever yielding its worker.
        tokio::task::coop::consume_budget().await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::mpsc;

    use super::*;
    use crate::{kafka::KafkaArgs, observe::Readiness};

    /// A stage with `in_flight` completions to wait for, delivered through a channel.
    struct Fake {
        consumer: SharedConsumer,
        completions: mpsc::UnboundedReceiver<()>,
        in_flight: usize,
        handled: usize,
        ticks: usize,
        fail_after_ticks: Option<usize>,
        finished: Arc<AtomicUsize>,
        /// A completion is always ready, as while draining a backlog.
        busy: bool,
    }

    impl Fake {
        /// A stage whose consumer points at a closed port: it never receives a record.
        fn new(in_flight: usize) -> (Self, mpsc::UnboundedSender<()>) {
            let (send, completions) = mpsc::unbounded_channel();
            let context = PipelineContext::new(Readiness::default(), Arc::default());
            let consumer = KafkaArgs::new("127.0.0.1:1")
                .consumer("stage-test", context, &[])
                .expect("consumer");
            let fake = Self {
                consumer: Arc::new(consumer),
                completions,
                in_flight,
                handled: 0,
                ticks: 0,
                fail_after_ticks: None,
                finished: Arc::default(),
                busy: false,
            };
            (fake, send)
        }
    }

    impl Stage for Fake {
        type Event = ();

        fn consumer(&self) -> SharedConsumer {
            self.consumer.clone()
        }

        async fn next_event(&mut self) {
            if self.busy {
                return;
            }
            if self.completions.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }

        fn on_event(&mut self, (): ()) {
            self.handled += 1;
            self.in_flight = self.in_flight.saturating_sub(1);
        }

        fn accepting(&self) -> bool {
            true
        }

        fn on_record(&mut self, _: &BorrowedMessage<'_>) {
            panic!("no record can arrive from a closed port");
        }

        fn on_tick(&mut self) {
            self.ticks += 1;
        }

        fn settle(&mut self) {}

        fn log_status(&mut self) {}

        fn failed(&self) -> bool {
            self.fail_after_ticks.is_some_and(|n| self.ticks >= n)
        }

        fn draining(&self) -> bool {
            self.in_flight > 0 && !self.failed()
        }

        fn finish(&mut self) -> anyhow::Result<()> {
            self.finished.fetch_add(1, Ordering::SeqCst);
            match self.fail_after_ticks {
                Some(_) => anyhow::bail!("failed"),
                None => Ok(()),
            }
        }
    }

    const TIMERS: Loop = Loop {
        tick: Duration::from_millis(10),
        status: Duration::from_secs(5),
        drain: Duration::from_millis(500),
    };

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_the_work_in_flight_then_finishes_once() {
        let (mut stage, done) = Fake::new(2);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        done.send(()).expect("open");
        done.send(()).expect("open");
        run(&mut stage, TIMERS, &shutdown).await.expect("ok");
        assert_eq!(stage.handled, 2, "both completions handled in the drain");
        assert_eq!(stage.finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_never_completes_ends_at_its_deadline() {
        let (mut stage, _done) = Fake::new(1);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let started = tokio::time::Instant::now();
        run(&mut stage, TIMERS, &shutdown).await.expect("ok");
        assert!(started.elapsed() >= TIMERS.drain, "waited for the deadline");
        assert_eq!(stage.in_flight, 1, "the work is left to the next owner");
        assert_eq!(stage.finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_stage_stops_without_draining_and_reports_its_error() {
        let (mut stage, _done) = Fake::new(1);
        stage.fail_after_ticks = Some(3);
        let shutdown = CancellationToken::new();
        let error = run(&mut stage, TIMERS, &shutdown)
            .await
            .expect_err("the stage's error");
        assert_eq!(error.to_string(), "failed");
        assert_eq!(stage.ticks, 3, "the loop stopped at the failure");
        assert_eq!(stage.finished.load(Ordering::SeqCst), 1);
    }

    /// Real time: a loop that never waits would never let paused time advance.
    #[tokio::test]
    async fn timers_run_while_completions_are_always_ready() {
        let (mut stage, _done) = Fake::new(0);
        stage.busy = true;
        stage.fail_after_ticks = Some(5);
        let shutdown = CancellationToken::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(30), run(&mut stage, TIMERS, &shutdown))
                .await
                .expect("the ticks ran although a completion was always ready");
        assert_eq!(
            ended.expect_err("failed after 5 ticks").to_string(),
            "failed"
        );
        assert_eq!(stage.ticks, 5);
        assert!(stage.handled > 5, "the completions ran between the ticks");
    }
}
