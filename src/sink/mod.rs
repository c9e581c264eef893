//! Sinks: where events go. A closed set, modelled as a trait plus an enum dispatcher.
//! Kafka and webhooks join the enum later; the relay only sees [`Sink`].

mod jsonl;
mod stdout;

use cloudevents::Event;

pub use jsonl::JsonlSink;
pub use stdout::{NameBook, StdoutSink};

use crate::config::SinkConfig;

/// A sink failure, classified for the relay.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying (I/O hiccup, receiver down).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will fail the same way again.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SinkError {
    /// True for [`SinkError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable(_))
    }
}

/// What every sink does.
pub trait Sink {
    /// The configured name (outbox rows are keyed by it).
    fn name(&self) -> &str;
    /// Delivers the events in order; `Ok` means every one is durably accepted.
    fn publish(&self, batch: &[Event]) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Startup check.
    fn healthcheck(&self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Every sink kind.
#[derive(Debug)]
pub enum AnySink {
    /// Standard output.
    Stdout(StdoutSink),
    /// JSON-lines file.
    Jsonl(JsonlSink),
}

impl AnySink {
    /// Builds a sink from its configuration.
    pub fn from_config(name: &str, cfg: &SinkConfig) -> Self {
        match cfg {
            SinkConfig::Stdout { format } => AnySink::Stdout(StdoutSink::new(name, *format)),
            SinkConfig::Jsonl { path } => AnySink::Jsonl(JsonlSink::new(name, path.clone())),
        }
    }
}

impl Sink for AnySink {
    fn name(&self) -> &str {
        match self {
            AnySink::Stdout(s) => s.name(),
            AnySink::Jsonl(s) => s.name(),
        }
    }

    async fn publish(&self, batch: &[Event]) -> Result<(), SinkError> {
        match self {
            AnySink::Stdout(s) => s.publish(batch).await,
            AnySink::Jsonl(s) => s.publish(batch).await,
        }
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        match self {
            AnySink::Stdout(s) => s.healthcheck().await,
            AnySink::Jsonl(s) => s.healthcheck().await,
        }
    }
}
