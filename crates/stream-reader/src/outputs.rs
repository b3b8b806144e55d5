//! Pipelined produces with delivery reports and delayed retries, shared by the validation and
//! analytics stages.
//!
//! Each output is handed to librdkafka and its delivery report awaited in one
//! `FuturesUnordered` (no task per record). A flight keeps its record (librdkafka copied it, so
//! this is no extra copy) so that a failed delivery, or a lost report, can be sent again after
//! an exponential backoff with jitter. What a failure means is the stage's decision
//! ([`pipeline_runtime::failure::classify_produce`]); this module only moves records.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder as _, ExponentialBuilder};
use futures::{StreamExt as _, stream::FuturesUnordered};
use pipeline_runtime::transaction::OutputProducer;
use rdkafka::{
    error::KafkaError,
    producer::{DeliveryFuture, FutureRecord, future_producer::OwnedDeliveryResult},
};
use tokio::sync::mpsc;

/// One record to produce.
#[derive(Debug)]
pub(crate) struct Out {
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// librdkafka's delivery report, or its loss.
pub(crate) type Report = Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>;

/// A settled delivery.
pub(crate) struct Landed<O> {
    pub owner: O,
    pub attempt: u32,
    pub sent_at: Instant,
    pub out: Out,
    pub report: Report,
}

/// What [`Outputs::next`] yields.
#[expect(
    clippy::large_enum_variant,
    reason = "one event per delivery, moved once; boxing it would allocate per record"
)]
pub(crate) enum Event<O> {
    /// A delivery report arrived.
    Landed(Landed<O>),
    /// An output's backoff delay passed: send it again (`attempt` is the new attempt).
    Retry { owner: O, attempt: u32, out: Out },
}

struct Flight<O> {
    owner: Option<O>,
    attempt: u32,
    sent_at: Instant,
    out: Option<Out>,
    delivery: DeliveryFuture,
}

impl<O: Unpin> Future for Flight<O> {
    type Output = Option<Landed<O>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let report = std::task::ready!(Pin::new(&mut self.delivery).poll(cx));
        let (owner, out) = (self.owner.take(), self.out.take());
        Poll::Ready(owner.zip(out).map(|(owner, out)| Landed {
            owner,
            attempt: self.attempt,
            sent_at: self.sent_at,
            out,
            report,
        }))
    }
}

/// A producer with its outputs in flight and its retries waiting.
pub(crate) struct Outputs<O> {
    producer: OutputProducer,
    flights: FuturesUnordered<Flight<O>>,
    retry_tx: mpsc::UnboundedSender<(O, u32, Out)>,
    retry_rx: mpsc::UnboundedReceiver<(O, u32, Out)>,
    backoff: ExponentialBuilder,
    max_delay: Duration,
}

impl<O: Unpin + Send + 'static> Outputs<O> {
    /// Retries wait `min_delay` doubling up to `max_delay`, with jitter, without limit.
    pub fn new(producer: OutputProducer, min_delay: Duration, max_delay: Duration) -> Self {
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        Self {
            producer,
            flights: FuturesUnordered::new(),
            retry_tx,
            retry_rx,
            backoff: ExponentialBuilder::default()
                .with_min_delay(min_delay)
                .with_max_delay(max_delay)
                .with_jitter()
                .without_max_times(),
            max_delay,
        }
    }

    /// Hands `out` to librdkafka. When librdkafka cannot take it now (e.g. its queue is full)
    /// the error comes back with the record, for the stage to classify.
    #[expect(
        clippy::result_large_err,
        reason = "the error hands the record back; boxing it would allocate per failed send"
    )]
    pub fn send(&mut self, out: Out, owner: O, attempt: u32) -> Result<(), (KafkaError, Out, O)> {
        let mut record = FutureRecord::<[u8], [u8]>::to(&out.topic).payload(&out.payload);
        if let Some(k) = &out.key {
            record = record.key(k);
        }
        match self.producer.with(|p| p.send_result(record)) {
            Ok(delivery) => {
                self.flights.push(Flight {
                    owner: Some(owner),
                    attempt,
                    sent_at: Instant::now(),
                    out: Some(out),
                    delivery,
                });
                Ok(())
            }
            Err((error, _)) => Err((error, out, owner)),
        }
    }

    /// Sends `out` again after the backoff delay of `attempt`; returns the delay.
    pub fn retry_later(&mut self, out: Out, owner: O, attempt: u32) -> Duration {
        let delay = self
            .backoff
            .build()
            .nth(attempt as usize)
            .unwrap_or(self.max_delay);
        let tx = self.retry_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send((owner, attempt.saturating_add(1), out));
        });
        delay
    }

    /// The next delivery report or due retry (pending while there is none).
    pub async fn next(&mut self) -> Event<O> {
        loop {
            tokio::select! {
                Some(landed) = self.flights.next(), if !self.flights.is_empty() => {
                    if let Some(landed) = landed {
                        return Event::Landed(landed);
                    }
                }
                Some((owner, attempt, out)) = self.retry_rx.recv() => {
                    return Event::Retry { owner, attempt, out };
                }
            }
        }
    }

    /// Forgets every output in flight and every retry waiting (after the transaction they
    /// belonged to was aborted).
    pub fn clear(&mut self) {
        self.flights = FuturesUnordered::new();
        (self.retry_tx, self.retry_rx) = mpsc::unbounded_channel();
    }

    /// Outputs whose delivery report is awaited.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// The owners and records of the outputs in flight (tests).
    #[cfg(test)]
    pub fn pending(&self) -> impl Iterator<Item = (&O, &Out)> {
        self.flights
            .iter()
            .filter_map(|f| f.owner.as_ref().zip(f.out.as_ref()))
    }

    /// Waits (off the runtime's workers) until librdkafka delivered what it holds, at most
    /// `timeout`.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer as _;
        let producer = self.producer.get();
        let _ = pipeline_runtime::run_blocking(|| producer.flush(timeout));
    }
}
