//! Outbox → sink delivery (invariant 2): per sink, take the rows due now (scheduled retries first, then the
//! oldest fresh rows), publish, and settle each row by its own outcome in one store transaction: delivered
//! rows are deleted, failed ones are kept, rescheduled or dead-lettered (see [`decide`]). Each sink has its
//! own task and its own rows, so a failing webhook does not delay Kafka: a failing endpoint's rows move onto
//! per-event schedules instead of waiting at the head of its outbox.

pub mod backoff;
pub mod decide;
mod report;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::sink::{AnySink, Outcome, RetryMode, Sink, SinkError};
use crate::store::{Disposition, Store, StoreError};

pub use report::sink_report;

/// Longest idle wait between two looks at the outbox (a missed wake-up costs at most this).
const IDLE_WAIT: Duration = Duration::from_secs(1);

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

/// What one delivery round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Rows delivered and deleted.
    pub delivered: usize,
    /// Rows rescheduled for a later attempt.
    pub rescheduled: usize,
    /// Rows moved to the dead letters.
    pub dead: usize,
    /// Rows left in place (not attempted, or held by a retryable failure).
    pub kept: usize,
    /// The first failure seen, for logs.
    pub error: Option<SinkError>,
}

impl Progress {
    /// Rows that left the outbox this round.
    pub fn moved(&self) -> usize {
        self.delivered + self.rescheduled + self.dead
    }

    /// Nothing was due.
    pub fn idle(&self) -> bool {
        self.moved() == 0 && self.kept == 0
    }
}

/// Why a delivery round failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The sink failed and nothing moved.
    #[error("sink failed: {0}")]
    Sink(SinkError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RelayError {
    /// Store failures and retryable sink failures are worth another round.
    pub fn is_retryable(&self) -> bool {
        match self {
            RelayError::Sink(e) => e.is_retryable(),
            RelayError::Store(_) => true,
        }
    }
}

/// Delivers one batch of due rows, if any, and settles every row by its own outcome.
///
/// # Errors
/// Store errors (the batch is attempted again; delivery is at-least-once).
pub async fn deliver_once(
    store: &Store,
    sink: &AnySink,
    batch_size: usize,
) -> Result<Progress, RelayError> {
    deliver_round(store, sink, batch_size, None).await
}

/// One round. With `defer` (the endpoint just failed with it, and the sink keeps per-event schedules) no
/// request is sent: up to `batch_size` fresh rows move onto their schedules as [`Outcome::Deferred`].
async fn deliver_round(
    store: &Store,
    sink: &AnySink,
    batch_size: usize,
    defer: Option<&SinkError>,
) -> Result<Progress, RelayError> {
    let name = sink.name();
    let mode = sink.retry_mode();
    let scheduled = matches!(mode, RetryMode::Schedule(_));
    let defer = defer.filter(|_| scheduled);
    // While deferring, only fresh rows: no scheduled retry is due before the beginning of time.
    let due_by = if defer.is_some() {
        chrono::DateTime::<Utc>::MIN_UTC
    } else {
        Utc::now()
    };
    let rows = store.pending(name, due_by, batch_size)?;
    if rows.is_empty() {
        return Ok(Progress::default());
    }
    // Only durable rows may leave: a crash must never roll back the state behind an event a sink already
    // has (the cursor and state roll back together, but a delivered event cannot be taken back). sled
    // otherwise flushes on a timer. Skipped when every staged row is already on disk.
    store.flush_staged().await?;
    let state = store.sink_state(name)?;
    let outcomes = match (&state.disabled_at, defer) {
        (Some(at), _) => {
            let why = state.disabled_reason.as_deref().unwrap_or("endpoint gone");
            let e = SinkError::Permanent(format!("sink disabled since {at}: {why}"));
            vec![Outcome::Failed(e); rows.len()]
        }
        (None, Some(e)) => vec![Outcome::Deferred(e.clone()); rows.len()],
        (None, None) => {
            let events: Vec<_> = rows.iter().map(|p| p.row.event.clone()).collect();
            sink.publish(&events).await
        }
    };
    let mut progress = Progress::default();
    let mut settled = Vec::with_capacity(rows.len());
    // With per-event schedules, rows a sink skipped after a retryable failure (the endpoint is unwell) are
    // deferred onto their schedules rather than kept at the head of the outbox: the outbox keeps draining
    // while a receiver is down, and the endpoint sees one request per round.
    let mut unwell: Option<SinkError> = None;
    for (i, p) in rows.into_iter().enumerate() {
        // A sink that reported fewer outcomes than events did not attempt the rest.
        let reported = outcomes.get(i).cloned().unwrap_or(Outcome::NotAttempted);
        let outcome = match (reported, &unwell) {
            (Outcome::NotAttempted, Some(e)) => Outcome::Deferred(e.clone()),
            (o, _) => o,
        };
        // A fresh event held back waits its first step without counting an attempt. A retry that came due
        // and is held back uses up that step like a failed attempt: every event moves along its own
        // schedule at each due time, so a dead endpoint dead-letters each event when its schedule runs
        // out, however many events wait.
        let outcome = match outcome {
            Outcome::Deferred(e) if p.is_retry() => Outcome::Failed(e.deferred()),
            o => o,
        };
        if let Outcome::Failed(e) | Outcome::Deferred(e) = &outcome {
            if progress.error.is_none() {
                progress.error = Some(e.clone());
            }
            if scheduled && unwell.is_none() && e.is_retryable() {
                unwell = Some(e.clone());
            }
        }
        let d = decide::disposition_now(p.attempts, &outcome, &mode);
        match &d {
            Disposition::Ack => progress.delivered += 1,
            Disposition::Keep => progress.kept += 1,
            Disposition::Retry { .. } => progress.rescheduled += 1,
            Disposition::Dead { error, attempts } => {
                progress.dead += 1;
                tracing::warn!(sink = %name, event = %event_id(&p), attempts, error = %error, "Event dead-lettered; `groupwatch dlq replay` sends it again.");
            }
            Disposition::Disable { error, .. } => {
                progress.dead += 1;
                tracing::error!(sink = %name, error = %error, "Endpoint is gone; sink disabled and its events are dead-lettered until `groupwatch dlq replay --sink` re-enables it.");
            }
        }
        settled.push((p, d));
    }
    store.settle(name, &settled)?;
    Ok(progress)
}

fn event_id(p: &crate::store::Pending) -> String {
    use cloudevents::AttributesReader;
    p.row.event.id().to_owned()
}

/// Delivers until nothing is due, for step-by-step drivers (tests, benches, `Daemon::deliver_all`).
/// Returns rows delivered.
///
/// # Errors
/// A store error, or the sink's error when a round moved nothing (a sink that holds its rows, like Kafka,
/// is down). A webhook that fails moves its rows onto their schedules instead, so `drain` returns `Ok`.
pub async fn drain(store: &Store, sink: &AnySink, batch_size: usize) -> Result<usize, RelayError> {
    let mut delivered = 0;
    loop {
        let p = deliver_once(store, sink, batch_size).await?;
        delivered += p.delivered;
        if p.idle() {
            return Ok(delivered);
        }
        if p.moved() == 0 {
            let e = p
                .error
                .unwrap_or_else(|| SinkError::Retryable("nothing was attempted".into()));
            return Err(RelayError::Sink(e));
        }
    }
}

fn backoff(cfg: &RelayConfig) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(cfg.retry_initial_ms))
        .with_max_delay(Duration::from_secs(cfg.retry_max_secs.max(1)))
        .with_jitter()
        .without_max_times()
        .build()
}

/// How long an idle relay may sleep: until the next scheduled retry, at most [`IDLE_WAIT`].
fn idle_wait(store: &Store, sink: &str) -> Duration {
    match store.next_retry_due(sink) {
        Ok(Some(due)) => (due - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(IDLE_WAIT),
        _ => IDLE_WAIT,
    }
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
    // Set when a round found the endpoint failing: the next rounds send nothing and only move the fresh
    // rows onto their schedules, until the outbox is empty. Scheduled retries are then tried at their own
    // due times, and fresh rows that arrive later get a real attempt again.
    let mut unwell: Option<SinkError> = None;
    loop {
        let round = deliver_round(&store, &sink, cfg.batch_size, unwell.as_ref()).await;
        if let Ok(p) = &round {
            let failing = p.delivered == 0 && p.dead == 0 && p.rescheduled > 0;
            unwell = if failing {
                p.error
                    .clone()
                    .filter(SinkError::is_retryable)
                    .or(unwell.take())
            } else {
                None
            };
        }
        let wait = match round {
            Ok(p) if p.idle() => {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(idle_wait(&store, sink.name())) => {}
                    () = shutdown.cancelled() => return,
                }
                continue;
            }
            Ok(p) if p.moved() > 0 => {
                // Rows left the outbox (delivered, onto a schedule of their own, or dead-lettered): go on
                // with the next ones at once. Only a round that moved nothing backs off.
                if let Some(e) = &p.error {
                    tracing::warn!(sink = %sink.name(), error = %e, delivered = p.delivered, rescheduled = p.rescheduled, dead = p.dead, "Some events failed; each waits durably for its next scheduled attempt.");
                }
                tracing::debug!(sink = %sink.name(), delivered = p.delivered, rescheduled = p.rescheduled, dead = p.dead, kept = p.kept, "Delivered outbox rows.");
                delays = backoff(&cfg);
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            Ok(p) => {
                // Nothing got through: the sink is down. Back off before trying fresh rows again.
                let wait = delays
                    .next()
                    .unwrap_or(Duration::from_secs(cfg.retry_max_secs));
                let error = p.error.map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(sink = %sink.name(), error = %error, rescheduled = p.rescheduled, kept = p.kept, wait_ms = wait.as_millis() as u64, "Delivery failed; events wait durably and are retried.");
                wait
            }
            Err(e) => {
                let wait = delays
                    .next()
                    .unwrap_or(Duration::from_secs(cfg.retry_max_secs));
                tracing::warn!(sink = %sink.name(), error = %e, wait_ms = wait.as_millis() as u64, "Delivery round failed; rows stay in the outbox and are retried.");
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
