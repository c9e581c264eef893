//! Scheduling: plan batches, then poll each one every `poll.interval_secs` (tokio-cron-scheduler), with a
//! random start delay so batches spread out, and never two polls of one batch at once.

pub mod calendar;
mod plan;
mod poll;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use calendar::{CalendarPlan, CalendarPoller, CalendarReport, calendar_plan};
pub use plan::{Batch, Plan, reconcile};
pub use poll::{PollError, PollReport, Poller};

/// One scheduled unit of work: a membership batch, or all group calendars of one connection.
#[derive(Clone)]
pub enum Target {
    /// A ≤ 50-group delta batch.
    Members(Arc<Poller>, Arc<Batch>),
    /// The calendar subscriptions of one connection (listed together so `$batch` can combine them).
    Calendar(Arc<CalendarPoller>, Arc<str>),
}

impl Target {
    async fn poll_and_log(&self) {
        match self {
            Target::Members(poller, batch) => match poller.poll_once(batch).await {
                Ok(r) => tracing::info!(
                    batch = %batch.key, pages = r.pages, events = r.events, unchanged = r.unchanged,
                    baseline = r.baseline, resyncs = r.resyncs, round_completed = r.round_completed,
                    "Polled batch."
                ),
                Err(e) => {
                    tracing::warn!(batch = %batch.key, error = %e, "Poll failed; the saved cursor is kept and retried next tick.")
                }
            },
            Target::Calendar(poller, conn) => match poller.poll_once(conn).await {
                Ok(r) => tracing::info!(
                    connection = %conn, groups = r.groups, failed = r.failed, events = r.events,
                    unchanged = r.unchanged, baseline = r.baseline, "Polled group calendars."
                ),
                Err(e @ PollError::Graph(crate::graph::Error::SignInRequired { .. })) => {
                    tracing::error!(connection = %conn, error = %e, "Calendar subscriptions of this connection are stopped until `groupwatch login` is run again.")
                }
                Err(e) => {
                    tracing::warn!(connection = %conn, error = %e, "Calendar poll failed; retried next tick.")
                }
            },
        }
    }
}

/// Runs one tick: skip if the previous poll of this target still runs, sleep the jitter, poll, log.
async fn tick(
    target: Target,
    busy: Arc<tokio::sync::Mutex<()>>,
    jitter: Duration,
    shutdown: CancellationToken,
) {
    let Ok(_guard) = busy.try_lock() else {
        tracing::debug!("Previous poll still running; skipping this tick.");
        return;
    };
    if !jitter.is_zero() {
        let wait = rand::rng().random_range(Duration::ZERO..=jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
    if shutdown.is_cancelled() {
        return;
    }
    target.poll_and_log().await;
}

/// Polls every target now, then every `interval`, until `shutdown`. In-flight polls are tracked by `tracker`
/// so shutdown can wait for the page being committed.
///
/// # Errors
/// When the job scheduler cannot start.
pub async fn run(
    targets: Vec<Target>,
    interval: Duration,
    jitter: Duration,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut sched = JobScheduler::new().await?;
    for target in targets {
        let busy = Arc::new(tokio::sync::Mutex::new(()));
        // First poll right away (with a short jitter), not one interval after start.
        tracker.spawn(tick(
            target.clone(),
            busy.clone(),
            jitter.min(Duration::from_secs(2)),
            shutdown.clone(),
        ));
        let (tracker, shutdown) = (tracker.clone(), shutdown.clone());
        let job = Job::new_repeated_async(interval, move |_id, _lock| {
            let fut = tick(target.clone(), busy.clone(), jitter, shutdown.clone());
            let tracker = tracker.clone();
            Box::pin(async move {
                if !tracker.is_closed() {
                    tracker.track_future(fut).await;
                }
            })
        })?;
        sched.add(job).await?;
    }
    sched.start().await?;
    shutdown.cancelled().await;
    sched.shutdown().await?;
    Ok(())
}
