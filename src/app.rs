//! Wiring for `groupwatch run`: open the store, plan batches, build Graph clients and sinks, then run the
//! scheduler and one relay per sink under one cancellation token and one task tracker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::graph::GraphClient;
use crate::relay::{self, Notifier};
use crate::scheduler::{
    self, CalendarPoller, CalendarReport, Plan, PollError, PollReport, Poller, Target,
};
use crate::sink::{AnySink, Sink};
use crate::store::Store;

/// How long shutdown waits for in-flight polls and deliveries before flushing anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// A built daemon: everything `run` needs, also driven step by step by tests and benches.
pub struct Daemon {
    cfg: Config,
    store: Store,
    plan: Plan,
    poller: Arc<Poller>,
    calendar: Arc<CalendarPoller>,
    sinks: Vec<Arc<AnySink>>,
    notifier: Notifier,
    shutdown: CancellationToken,
}

impl Daemon {
    /// Builds from configuration, with sinks made from `[sinks]`.
    ///
    /// # Errors
    /// Store, client or sink construction failures, with context.
    pub async fn build(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Self::build_with_sinks(cfg, HashMap::new(), shutdown).await
    }

    /// As [`Daemon::build`], but sinks named in `overrides` replace the configured ones (the demo's
    /// pretty printer with names).
    ///
    /// # Errors
    /// As [`Daemon::build`].
    pub async fn build_with_sinks(
        cfg: Config,
        mut overrides: HashMap<String, AnySink>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let store = Store::open_async(&cfg.store.path, cfg.store.cache_capacity_mb * 1024 * 1024)
            .await
            .with_context(|| {
                format!(
                    "opening the state store at {} (is another groupwatch using it?)",
                    cfg.store.path.display()
                )
            })?;
        let plan = scheduler::reconcile(&cfg, &store).context("planning batches")?;
        let concurrency = Arc::new(Semaphore::new(cfg.poll.max_concurrent_requests));
        let mut graphs = HashMap::new();
        let mut tenants = HashMap::new();
        for (name, conn) in cfg
            .connections
            .iter()
            .filter(|(_, c)| c.has_app_credential())
        {
            let client = GraphClient::new(conn, concurrency.clone())
                .with_context(|| format!("building the Graph client of connection {name}"))?;
            graphs.insert(name.clone(), Arc::new(client));
            tenants.insert(name.clone(), conn.tenant_id.clone());
        }
        let mut sinks = Vec::new();
        for (name, sc) in &cfg.sinks {
            let sink = match overrides.remove(name) {
                Some(s) => s,
                None => AnySink::from_config(name, sc)
                    .with_context(|| format!("building sink {name}"))?,
            };
            match sink.healthcheck().await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    tracing::warn!(sink = %name, error = %e, "Sink is unreachable at startup; its events wait in the outbox.");
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("sink {name} failed its startup check"));
                }
            }
            sinks.push(Arc::new(sink));
        }
        let notifier = Notifier::new(cfg.sinks.keys());
        let calendar = Arc::new(crate::login::calendar_poller(&cfg, &store, &notifier)?);
        let poller = Arc::new(Poller::new(
            store.clone(),
            graphs,
            tenants,
            plan.routes.clone(),
            cfg.poll.max_pages_per_poll,
            cfg.poll.outbox_high_water,
            notifier.clone(),
            shutdown.clone(),
        ));
        Ok(Self {
            cfg,
            store,
            plan,
            poller,
            calendar,
            sinks,
            notifier,
            shutdown,
        })
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The batch plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The membership poller the scheduler's jobs share (for drivers that poll batches side by side).
    pub fn poller(&self) -> &Poller {
        &self.poller
    }

    /// Polls every batch once, in plan order.
    ///
    /// # Errors
    /// The first failing batch's error.
    pub async fn poll_all_once(&self) -> Result<Vec<PollReport>, PollError> {
        let mut out = Vec::new();
        for b in &self.plan.batches {
            out.push(self.poller.poll_once(b).await?);
        }
        Ok(out)
    }

    /// Polls the group calendars of every connection once.
    ///
    /// # Errors
    /// The first failing connection's error.
    pub async fn poll_calendars_once(&self) -> Result<Vec<CalendarReport>, PollError> {
        let mut out = Vec::new();
        for conn in self.calendar.connections() {
            out.push(self.calendar.poll_once(&conn).await?);
        }
        Ok(out)
    }

    /// Delivers every due outbox row to its sink (until nothing is due; rows scheduled for a later retry
    /// stay scheduled). Returns rows delivered.
    ///
    /// # Errors
    /// The first delivery error.
    pub async fn deliver_all(&self) -> Result<usize, relay::RelayError> {
        let mut total = 0;
        for sink in &self.sinks {
            total += relay::drain(&self.store, sink, self.cfg.relay.batch_size).await?;
        }
        Ok(total)
    }

    /// The `/healthz` and `/readyz` routes over this daemon's store (what `run` serves on `health.listen`).
    pub fn health_router(&self) -> axum::Router {
        crate::health::router(Arc::new(self.cfg.clone()), self.store.clone())
    }

    /// Starts one relay task per sink on `tracker` (each sink delivers independently of the others).
    pub fn spawn_relays(&self, tracker: &TaskTracker) {
        for sink in &self.sinks {
            tracker.spawn(relay::run(
                self.store.clone(),
                sink.clone(),
                self.cfg.relay.clone(),
                self.notifier.clone(),
                self.shutdown.clone(),
            ));
        }
    }

    /// Runs until the shutdown token fires, then drains: in-flight pages finish, relays finish their
    /// batch, sled is flushed last.
    ///
    /// # Errors
    /// Scheduler start-up failure or the final flush failing.
    pub async fn run(self) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        if let Some(addr) = self.cfg.health.addr() {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding health.listen {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(%local, "Health endpoints: GET /healthz, GET /readyz.");
            let (cfg, store, stop) = (
                Arc::new(self.cfg.clone()),
                self.store.clone(),
                self.shutdown.clone(),
            );
            tracker.spawn(async move {
                if let Err(e) = crate::health::serve(listener, cfg, store, stop).await {
                    tracing::error!(error = %e, "The health endpoint server stopped.");
                }
            });
        }
        self.spawn_relays(&tracker);
        tracing::info!(
            batches = self.plan.batches.len(),
            sinks = self.sinks.len(),
            interval_secs = self.cfg.poll.interval_secs,
            "groupwatch is running."
        );
        let mut targets: Vec<Target> = self
            .plan
            .batches
            .iter()
            .map(|b| Target::Members(self.poller.clone(), Arc::new(b.clone())))
            .collect();
        targets.extend(
            self.calendar
                .connections()
                .into_iter()
                .map(|c| Target::Calendar(self.calendar.clone(), c.into())),
        );
        let sched = scheduler::run(
            targets,
            self.cfg.poll.interval(),
            Duration::from_secs(self.cfg.poll.jitter_secs),
            tracker.clone(),
            self.shutdown.clone(),
        )
        .await;
        tracker.close();
        if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("Drain deadline passed; flushing state with work still in flight.");
        }
        self.store
            .flush()
            .await
            .context("flushing the state store")?;
        tracing::info!("groupwatch stopped; state flushed.");
        sched
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// `groupwatch run`: build, then run until a signal.
///
/// # Errors
/// Build or run failures.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let daemon = Daemon::build(cfg, shutdown.clone()).await?;
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("Shutdown requested; finishing the page in flight.");
        trigger.cancel();
    });
    daemon.run().await
}

/// `groupwatch state`: cursors, round counters, membership counts per group, outbox depth per sink.
///
/// # Errors
/// When the store cannot be opened (e.g. the daemon holds it) or read.
pub fn state_report(cfg: &Config) -> anyhow::Result<String> {
    use std::fmt::Write;
    let store = Store::open(&cfg.store.path).with_context(|| {
        format!(
            "opening the state store at {} (sled allows one process at a time: stop the daemon first)",
            cfg.store.path.display()
        )
    })?;
    let mut out = String::new();
    let batches = store.batches()?;
    writeln!(out, "store: {}", cfg.store.path.display())?;
    writeln!(out, "batches: {}", batches.len())?;
    for (key, b) in &batches {
        let cursor = match (&b.link, b.mid_round) {
            (None, _) => "none (next poll starts a full round)",
            (Some(_), true) => "nextLink (mid-round)",
            (Some(_), false) => "deltaLink",
        };
        let last = b
            .last_round_at
            .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
        writeln!(
            out,
            "  {key}  connection={} groups={} owners={} cursor={cursor} full_round={} epoch={} rounds={} resyncs={} last_round={last}",
            b.connection,
            b.groups.len(),
            b.owners,
            b.full_round,
            b.epoch,
            b.rounds,
            b.resyncs
        )?;
        for g in &b.groups {
            let c = store.group_counts(&b.connection, g)?;
            writeln!(
                out,
                "    group {g}  members={} owners={} synced={}",
                c.members, c.owners, c.known
            )?;
        }
    }
    crate::login::state_section(cfg, &store, &mut out)?;
    writeln!(out, "sinks:")?;
    out.push_str(&relay::sink_report(&store, cfg.sinks.keys())?);
    Ok(out)
}
