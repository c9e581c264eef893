//! Outbox → sink delivery (invariant 2): per sink, peek the oldest rows, publish, and delete them only when
//! the sink confirmed. Failures back off (exponential, jittered, capped) and retry the same rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::sink::{AnySink, Sink};
use crate::store::{Store, StoreError};

/// Wakes relays when the poller staged rows (a permit is stored if a relay is busy, so no wake-up is lost).
#[derive(Debug, Clone, Default)]
pub struct Notifier(Arc<HashMap<String, Arc<Notify>>>);

impl Notifier {
    /// One wake-up handle per sink name.
    pub fn new<'a>(sinks: impl IntoIterator<Item = &'a String>) -> Self {
        Self(Arc::new(
            sinks
                .into_iter()
                .map(|s| (s.clone(), Arc::new(Notify::new())))
                .collect(),
        ))
    }

    /// Wakes every relay.
    pub fn notify_all(&self) {
        for n in self.0.values() {
            n.notify_one();
        }
    }

    fn get(&self, sink: &str) -> Arc<Notify> {
        self.0.get(sink).cloned().unwrap_or_default()
    }
}

/// Delivers one batch of rows if there are any. Returns how many rows were delivered and acked.
///
/// # Errors
/// The sink's error (rows stay in the outbox) or a store error.
pub async fn deliver_once(
    store: &Store,
    sink: &AnySink,
    batch_size: usize,
) -> Result<usize, RelayError> {
    let rows = store.outbox_peek(sink.name(), batch_size)?;
    if rows.is_empty() {
        return Ok(0);
    }
    // Only durable rows may leave: a crash must never roll back the state behind an event a sink already
    // has (the cursor and state roll back together, but a delivered event cannot be taken back). sled
    // otherwise flushes on a timer; a flush with nothing dirty is cheap.
    store.flush().await?;
    let events: Vec<_> = rows.iter().map(|r| r.event.clone()).collect();
    sink.publish(&events).await.map_err(RelayError::Sink)?;
    store.outbox_ack(&rows)?;
    Ok(rows.len())
}

/// Why a delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The sink refused or failed.
    #[error("sink failed: {0}")]
    Sink(crate::sink::SinkError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn backoff(cfg: &RelayConfig) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(cfg.retry_initial_ms))
        .with_max_delay(Duration::from_secs(cfg.retry_max_secs.max(1)))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The relay loop of one sink. Never returns before `shutdown`; finishes its in-flight batch first.
pub async fn run(
    store: Store,
    sink: Arc<AnySink>,
    cfg: RelayConfig,
    notifier: Notifier,
    shutdown: CancellationToken,
) {
    let wake = notifier.get(sink.name());
    let mut delays = backoff(&cfg);
    loop {
        match deliver_once(&store, &sink, cfg.batch_size).await {
            Ok(0) => {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            Ok(n) => {
                tracing::debug!(sink = %sink.name(), rows = n, "Delivered outbox rows.");
                delays = backoff(&cfg);
                if shutdown.is_cancelled() {
                    return;
                }
            }
            Err(e) => {
                let wait = delays
                    .next()
                    .unwrap_or(Duration::from_secs(cfg.retry_max_secs));
                tracing::warn!(sink = %sink.name(), error = %e, wait_ms = wait.as_millis() as u64, "Delivery failed; rows stay in the outbox and are retried.");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}
