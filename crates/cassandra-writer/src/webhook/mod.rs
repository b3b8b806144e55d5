//! The alert hand-off (`WRITER_WEBHOOK_URL`): every alert of `WRITER_ALERTS_TOPIC` POSTed to
//! a webhook, a second stage of the writer with its own consumer group
//! (`WRITER_WEBHOOK_GROUP_ID`), driven by [`pipeline_runtime::stage`].
//!
//! **Delivery: at-least-once, keyed.** Each call carries `Idempotency-Key: <alert_id>` (the
//! deterministic id, the same for every emission of an alert), so a receiver that keeps the
//! keys it has seen sees each alert once. An alert's offset is stored only after the webhook
//! answered 2xx or its `alert_undelivered` dead letter was acknowledged, and after every
//! earlier alert of its partition: a crash or kill repeats calls, never skips one. The calls
//! run concurrently (`WRITER_WEBHOOK_MAX_IN_FLIGHT`), so alerts may arrive out of order.
//!
//! A failed call is retried with backoff (`WRITER_WEBHOOK_RETRY_*`) while `/readyz` names the
//! failure; after `WRITER_WEBHOOK_MAX_ATTEMPTS` calls, or at once when the webhook refuses the
//! alert itself (400, 413, 415, 422), the alert is dead-lettered with the reason, and `producer
//! dlq redrive` re-submits it to the alerts topic under its identity. Dead letters are
//! acknowledged one by one, in both delivery modes: no HTTP call can join a Kafka transaction.
//! A record that is not an alert is skipped here (the row stage dead-letters it).

mod call;

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use anyhow::Context as _;
use chrono::Utc;
use futures::{StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use log_schema::{Alert, DeadLetter, Origin, ValidationError};
use pipeline_runtime::{
    kafka::{Backpressure, PipelineContext, SharedTracker, complete_and_store, final_commit},
    observe::Readiness,
    stage::{self, Loop, SharedConsumer, Stage},
    telemetry::LogLimiter,
};
use rdkafka::{
    Message as _, consumer::Consumer as _, message::BorrowedMessage, producer::Producer as _,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::WriterArgs,
    dead_letter::{self, Dlq},
    metrics::{WEBHOOK_ALERTS, WEBHOOK_IN_FLIGHT, WriterStats},
};
use call::Webhook;

/// The readiness check the hand-off reports its webhook's state under.
pub(crate) const READINESS: &str = "webhook";

/// Consumer settings: only committed alerts (an aborted stream-reader transaction's alerts
/// never reach people).
const READ_COMMITTED: &[(&str, &str)] = &[("isolation.level", "read_committed")];

/// What became of one record of the alerts topic.
enum Done {
    Delivered,
    DeadLettered,
}

/// A finished record: its partition, offset, and outcome (an error stops the stage).
type Finished = (i32, i64, anyhow::Result<Done>);

/// What every delivery shares.
struct Shared {
    webhook: Webhook,
    producer: rdkafka::producer::FutureProducer,
    args: WriterArgs,
    stats: Arc<WriterStats>,
    readiness: Readiness,
    logs: LogLimiter,
}

/// Runs the hand-off until `shutdown` is cancelled (or it fails).
pub(crate) async fn run_until(
    args: WriterArgs,
    shutdown: CancellationToken,
    stats: Arc<WriterStats>,
    readiness: Readiness,
) -> anyhow::Result<()> {
    // Reads the CA and token files: off the runtime's workers.
    let webhook = pipeline_runtime::run_blocking(|| Webhook::new(&args.webhook))?;
    readiness.set(READINESS, Ok(()));
    let context =
        PipelineContext::new(readiness.clone(), Arc::default()).with_group_check("webhook_group");
    let tracker = context.tracker.clone();
    let consumer = args
        .kafka
        .consumer(&args.webhook.group_id, context, READ_COMMITTED)?;
    consumer
        .subscribe(&[&args.alerts_topic])
        .context("subscribe to the alerts topic")?;
    info!(
        topic = %args.alerts_topic,
        group = %args.webhook.group_id,
        url = %args.webhook.url,
        "alert hand-off started"
    );
    let timers = Loop {
        tick: Duration::from_secs(1),
        status: Duration::from_secs(args.status_interval_secs.max(1)),
        drain: Duration::from_secs(30),
    };
    let mut stage = Handoff {
        consumer: Arc::new(consumer),
        tracker,
        flow: Backpressure::new(args.webhook.max_in_flight.max(1)),
        calls: FuturesUnordered::new(),
        shared: Arc::new(Shared {
            webhook,
            producer: args.kafka.producer(&[])?,
            args,
            stats,
            readiness,
            logs: LogLimiter::per_second(1),
        }),
        fatal: None,
    };
    stage::run(&mut stage, timers, &shutdown).await
}

/// The hand-off's state between records.
struct Handoff {
    consumer: SharedConsumer,
    tracker: SharedTracker,
    flow: Backpressure,
    calls: FuturesUnordered<BoxFuture<'static, Finished>>,
    shared: Arc<Shared>,
    fatal: Option<anyhow::Error>,
}

impl Handoff {
    fn done(&mut self, partition: i32, offset: i64) {
        self.flow.finished(&self.consumer);
        complete_and_store(
            &self.tracker,
            &self.consumer,
            &self.shared.args.alerts_topic,
            partition,
            offset,
        );
        metrics::gauge!(WEBHOOK_IN_FLIGHT.name).set(self.flow.in_flight() as f64);
    }
}

impl Stage for Handoff {
    type Event = Finished;

    fn consumer(&self) -> SharedConsumer {
        self.consumer.clone()
    }

    async fn next_event(&mut self) -> Finished {
        match self.calls.next().await {
            Some(finished) => finished,
            None => std::future::pending().await,
        }
    }

    fn on_event(&mut self, (partition, offset, result): Finished) {
        match result {
            Ok(done) => {
                let (outcome, count) = match done {
                    Done::Delivered => ("delivered", &self.shared.stats.alerts_delivered),
                    Done::DeadLettered => ("dead_lettered", &self.shared.stats.alerts_undelivered),
                };
                count.fetch_add(1, Relaxed);
                metrics::counter!(WEBHOOK_ALERTS.name, "outcome" => outcome).increment(1);
                self.done(partition, offset);
            }
            Err(error) => {
                self.flow.finished(&self.consumer);
                if self.fatal.is_none() {
                    let topic = &self.shared.args.alerts_topic;
                    self.fatal = Some(error.context(format!(
                        "alert hand-off of record {topic}/{partition}/{offset}"
                    )));
                }
            }
        }
    }

    fn accepting(&self) -> bool {
        self.flow.accepting()
    }

    fn on_record(&mut self, m: &BorrowedMessage<'_>) {
        let (partition, offset) = (m.partition(), m.offset());
        self.tracker.lock().begin(m.topic(), partition, offset);
        self.flow.started(&self.consumer);
        let payload = m.payload().unwrap_or_default().to_vec();
        let alert = match Alert::from_json(&payload) {
            Ok(alert) => alert,
            Err(error) => {
                if let Some(suppressed) = self.shared.logs.allow() {
                    warn!(%error, partition, offset, suppressed, "not an alert: skipped by the hand-off");
                }
                metrics::counter!(WEBHOOK_ALERTS.name, "outcome" => "skipped").increment(1);
                self.done(partition, offset);
                return;
            }
        };
        let key = m.key().map(<[u8]>::to_vec);
        let shared = self.shared.clone();
        self.calls.push(Box::pin(async move {
            let result =
                deliver(&shared, &alert, &payload, key.as_deref(), partition, offset).await;
            (partition, offset, result)
        }));
        metrics::gauge!(WEBHOOK_IN_FLIGHT.name).set(self.flow.in_flight() as f64);
    }

    fn on_tick(&mut self) {
        self.flow.tick(&self.consumer);
    }

    fn settle(&mut self) {}

    fn log_status(&mut self) {
        let stats = &self.shared.stats;
        info!(
            delivered = stats.alerts_delivered.load(Relaxed),
            dead_lettered = stats.alerts_undelivered.load(Relaxed),
            in_flight = self.flow.in_flight(),
            "webhook status"
        );
    }

    fn failed(&self) -> bool {
        self.fatal.is_some()
    }

    fn draining(&self) -> bool {
        self.flow.in_flight() > 0 && self.fatal.is_none()
    }

    /// Commits what was delivered; alerts still in flight are called again after a restart.
    fn finish(&mut self) -> anyhow::Result<()> {
        final_commit(&self.consumer);
        let _ =
            pipeline_runtime::run_blocking(|| self.shared.producer.flush(Duration::from_secs(10)));
        info!(
            delivered = self.shared.stats.alerts_delivered.load(Relaxed),
            dead_lettered = self.shared.stats.alerts_undelivered.load(Relaxed),
            "alert hand-off stopped"
        );
        self.fatal.take().map_or(Ok(()), Err)
    }
}

/// Delivers one alert, or dead-letters it with the reason.
async fn deliver(
    shared: &Shared,
    alert: &Alert,
    payload: &[u8],
    key: Option<&[u8]>,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Done> {
    let id = alert.alert_id.to_string();
    let on_retry = |reason: &str| {
        shared
            .readiness
            .set(READINESS, Err(format!("the webhook failed: {reason}")));
        if let Some(suppressed) = shared.logs.allow() {
            warn!(alert_id = %id, reason, suppressed, "webhook call failed, retrying");
        }
    };
    let reason = match shared.webhook.deliver(&id, payload, on_retry).await {
        Ok(_) => {
            shared.readiness.set(READINESS, Ok(()));
            return Ok(Done::Delivered);
        }
        Err((reason, _calls)) => reason,
    };
    warn!(alert_id = %id, %reason, "alert not delivered: dead-lettered");
    let topic = &shared.args.alerts_topic;
    let error = ValidationError::alert_undelivered(reason);
    let origin = Origin {
        topic,
        partition,
        offset,
    };
    let envelope = DeadLetter::new(
        &error,
        payload,
        &origin,
        Utc::now(),
        shared.args.dlq_max_raw_bytes,
    )
    .to_json();
    let dlq = Dlq {
        producer: &shared.producer,
        topic: &shared.args.dlq_topic,
        setting: "WRITER_DLQ_TOPIC",
        backoff: shared.args.backoff(),
        logs: &shared.logs,
    };
    dead_letter::produce(dlq, &envelope, key, error.kind).await?;
    shared.stats.dead_lettered.fetch_add(1, Relaxed);
    Ok(Done::DeadLettered)
}
