//! Sinks: where events go. A closed set, modelled as a trait plus an enum dispatcher; the relay only sees
//! [`Sink`]. A publish reports one [`Outcome`] per event, because a batch can partly succeed (Kafka delivery
//! reports arrive per message, a webhook answers per request) and the relay must ack exactly what arrived.

mod jsonl;
pub mod kafka;
pub mod signature;
mod stdout;
pub mod webhook;

use std::time::Duration;

use cloudevents::Event;

pub use jsonl::JsonlSink;
pub use kafka::KafkaSink;
pub use stdout::{NameBook, StdoutSink};
pub use webhook::WebhookSink;

use crate::config::SinkConfig;
use crate::relay::backoff::RetrySchedule;

/// A sink failure, classified for the relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying (I/O hiccup, receiver down, broker unreachable).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Worth retrying, but not before the receiver's `Retry-After`.
    #[error("retryable: {message} (Retry-After {after:?})")]
    RetryAfter {
        /// What happened.
        message: String,
        /// The receiver's wish.
        after: Duration,
    },
    /// Will fail the same way again: the event goes to the dead letters.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The endpoint told us it is gone for good (HTTP 410): the sink is disabled.
    #[error("endpoint gone: {0}")]
    Gone(String),
}

impl SinkError {
    /// True for [`SinkError::Retryable`] and [`SinkError::RetryAfter`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable(_) | SinkError::RetryAfter { .. })
    }

    /// The same failure for an event the sink did not send because the endpoint had just failed: it joins
    /// that failure's schedule (and keeps its `Retry-After`) instead of waiting at the head of the outbox.
    pub fn deferred(&self) -> SinkError {
        let note = |m: &str| format!("not sent, the endpoint had just failed: {m}");
        match self {
            SinkError::Retryable(m) => SinkError::Retryable(note(m)),
            SinkError::RetryAfter { message, after } => SinkError::RetryAfter {
                message: note(message),
                after: *after,
            },
            other => other.clone(),
        }
    }

    /// The receiver's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::RetryAfter { after, .. } => Some(*after),
            _ => None,
        }
    }
}

/// What happened to one event of a published batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durably accepted (Kafka delivery report, webhook 2xx, fsync).
    Delivered,
    /// Attempted and failed.
    Failed(SinkError),
    /// Not attempted (the sink stopped early because the endpoint is evidently down); stays where it is.
    NotAttempted,
    /// Not sent because the endpoint had just failed with this (retryable) error. Not an attempt: with a
    /// per-event schedule the event waits the delay of its current step and keeps its attempt count, so
    /// it is never dead-lettered without having been tried.
    Deferred(SinkError),
}

impl Outcome {
    /// The same outcome for every event of a batch, for sinks that succeed or fail as a whole.
    pub fn all(n: usize, res: Result<(), SinkError>) -> Vec<Outcome> {
        let one = match res {
            Ok(()) => Outcome::Delivered,
            Err(e) => Outcome::Failed(e),
        };
        vec![one; n]
    }
}

/// What the relay does with events that failed with a retryable error.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryMode {
    /// Keep them at the head of the outbox and retry the sink with the relay's backoff, forever: right for
    /// Kafka, whose failures are about the cluster, not the event, and where per-group order matters.
    Hold,
    /// Give each event its own durable schedule and dead-letter it when the schedule is exhausted: right
    /// for webhooks, where one receiver error must not stall every later event for a day.
    Schedule(RetrySchedule),
}

/// What every sink does.
pub trait Sink {
    /// The configured name (outbox rows are keyed by it).
    fn name(&self) -> &str;
    /// Delivers the events in order and reports one outcome per event, in batch order.
    fn publish(&self, batch: &[Event]) -> impl Future<Output = Vec<Outcome>> + Send;
    /// Startup check. A retryable error is logged and the daemon starts anyway (events wait in the outbox);
    /// a permanent one (bad configuration) stops the start.
    fn healthcheck(&self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Every sink kind.
#[derive(Debug)]
pub enum AnySink {
    /// Standard output.
    Stdout(StdoutSink),
    /// JSON-lines file.
    Jsonl(JsonlSink),
    /// Kafka topic(s), CloudEvents binary or structured mode.
    Kafka(KafkaSink),
    /// Standard Webhooks HTTP endpoint.
    Webhook(WebhookSink),
}

impl AnySink {
    /// Builds a sink from its (validated) configuration. Nothing here blocks: the Kafka producer is created
    /// lazily, off the runtime, by the first healthcheck or publish.
    ///
    /// # Errors
    /// [`SinkError::Permanent`] when the configuration cannot be turned into a client.
    pub fn from_config(name: &str, cfg: &SinkConfig) -> Result<Self, SinkError> {
        Ok(match cfg {
            SinkConfig::Stdout { format } => AnySink::Stdout(StdoutSink::new(name, *format)),
            SinkConfig::Jsonl { path } => AnySink::Jsonl(JsonlSink::new(name, path.clone())),
            SinkConfig::Kafka(k) => AnySink::Kafka(KafkaSink::new(name, k)),
            SinkConfig::Webhook(w) => AnySink::Webhook(WebhookSink::new(name, w)?),
        })
    }

    /// How retryable failures of this sink are handled.
    pub fn retry_mode(&self) -> RetryMode {
        match self {
            AnySink::Webhook(w) => RetryMode::Schedule(w.schedule().clone()),
            AnySink::Stdout(_) | AnySink::Jsonl(_) | AnySink::Kafka(_) => RetryMode::Hold,
        }
    }
}

impl Sink for AnySink {
    fn name(&self) -> &str {
        match self {
            AnySink::Stdout(s) => s.name(),
            AnySink::Jsonl(s) => s.name(),
            AnySink::Kafka(s) => s.name(),
            AnySink::Webhook(s) => s.name(),
        }
    }

    async fn publish(&self, batch: &[Event]) -> Vec<Outcome> {
        match self {
            AnySink::Stdout(s) => s.publish(batch).await,
            AnySink::Jsonl(s) => s.publish(batch).await,
            AnySink::Kafka(s) => s.publish(batch).await,
            AnySink::Webhook(s) => s.publish(batch).await,
        }
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        match self {
            AnySink::Stdout(s) => s.healthcheck().await,
            AnySink::Jsonl(s) => s.healthcheck().await,
            AnySink::Kafka(s) => s.healthcheck().await,
            AnySink::Webhook(s) => s.healthcheck().await,
        }
    }
}
