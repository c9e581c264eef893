//! One poll of one batch: follow the saved link page by page, committing each page with its cursor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::plan::Batch;
use crate::change::normalize;
use crate::graph::{self, GraphClient, NextLink};
use crate::relay::Notifier;
use crate::store::{EmitContext, GroupRoute, PageInput, RoundEnd, Store, StoreError};

/// Why a poll stopped early. The cursor is untouched by a failed page, so the next poll retries it.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Graph failed after retries.
    #[error(transparent)]
    Graph(#[from] graph::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The plan names something the poller was not built with.
    #[error("batch {0} is unknown to the poller")]
    UnknownBatch(String),
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Pages committed.
    pub pages: usize,
    /// Events staged.
    pub events: usize,
    /// Outbox rows written.
    pub rows: usize,
    /// Observations equal to stored state (replays, repeats).
    pub unchanged: usize,
    /// Changes recorded silently by a `from_now` baseline.
    pub baseline: usize,
    /// Full resyncs Graph forced.
    pub resyncs: usize,
    /// Removals found by a completed resync.
    pub resync_removals: usize,
    /// The poll reached a deltaLink.
    pub round_completed: bool,
    /// Skipped because an outbox was above the high-water mark.
    pub backpressure: bool,
    /// Ids of the staged events.
    pub ids: Vec<String>,
}

/// Polls batches. Shared by the scheduler's jobs.
pub struct Poller {
    store: Store,
    graphs: HashMap<String, Arc<GraphClient>>,
    tenants: HashMap<String, String>,
    routes: HashMap<String, HashMap<String, GroupRoute>>,
    max_pages: u32,
    high_water: u64,
    notifier: Notifier,
    shutdown: CancellationToken,
}

impl Poller {
    /// Builds a poller. `graphs` and `tenants` are keyed by connection name.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        graphs: HashMap<String, Arc<GraphClient>>,
        tenants: HashMap<String, String>,
        routes: HashMap<String, HashMap<String, GroupRoute>>,
        max_pages: u32,
        high_water: u64,
        notifier: Notifier,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            graphs,
            tenants,
            routes,
            max_pages,
            high_water,
            notifier,
            shutdown,
        }
    }

    fn over_high_water(&self, batch: &Batch) -> bool {
        let sinks: HashSet<&String> = self
            .routes
            .get(&batch.connection)
            .into_iter()
            .flat_map(|r| batch.groups.iter().filter_map(|g| r.get(g)))
            .flat_map(|r| r.sinks.iter())
            .collect();
        self.store.any_over_high_water(sinks, self.high_water)
    }

    /// Polls one batch: at most one round (or `max_pages` pages), each page committed with its cursor.
    ///
    /// # Errors
    /// [`PollError`] when Graph or the store fails; pages committed before the failure stay committed.
    pub async fn poll_once(&self, batch: &Batch) -> Result<PollReport, PollError> {
        let mut report = PollReport::default();
        if self.over_high_water(batch) {
            tracing::warn!(batch = %batch.key, "Outbox above its high-water mark; skipping this poll.");
            report.backpressure = true;
            return Ok(report);
        }
        let graph = self
            .graphs
            .get(&batch.connection)
            .ok_or_else(|| PollError::UnknownBatch(batch.key.clone()))?;
        let mut rec = self
            .store
            .batch(&batch.key)?
            .ok_or_else(|| PollError::UnknownBatch(batch.key.clone()))?;
        let watched: HashSet<String> = batch.groups.iter().cloned().collect();
        let ctx_routes = self
            .routes
            .get(&batch.connection)
            .cloned()
            .unwrap_or_default();
        let tenant = self
            .tenants
            .get(&batch.connection)
            .cloned()
            .unwrap_or_default();
        let mut resyncs_left = 2;
        let mut pages = 0;
        while pages < self.max_pages {
            if rec.link.is_none() {
                rec.groups = batch.groups.clone();
            }
            let url = match &rec.link {
                Some(l) => l.clone(),
                None => graph.delta_start_url(&batch.groups, batch.owners),
            };
            let fetched = tokio::select! {
                r = graph.delta_page(&url) => r,
                () = self.shutdown.cancelled() => break,
            };
            let page = match fetched {
                Ok(p) => p,
                Err(e @ graph::Error::ResyncRequired { .. }) if resyncs_left > 0 => {
                    resyncs_left -= 1;
                    tracing::warn!(batch = %batch.key, error = %e, "Delta link expired; starting a full resync that emits only the net difference.");
                    rec.restart_full(batch.groups.clone(), batch.owners);
                    rec.resyncs += 1;
                    self.store.put_batch(&batch.key, &rec)?;
                    report.resyncs += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let next = page.link().map_err(graph::Error::Decode)?;
            let norm = normalize(&page, &watched);
            for (g, reason) in &norm.deleted_groups {
                tracing::warn!(group = %g, reason = ?reason, "Graph reports a watched group as deleted.");
            }
            let now = Utc::now();
            let mut after = rec.clone();
            after.last_page_at = Some(now);
            let round_end = match next {
                NextLink::Next(l) => {
                    after.link = Some(l);
                    after.mid_round = true;
                    None
                }
                NextLink::Delta(l) => {
                    after.link = Some(l);
                    after.mid_round = false;
                    after.full_round = false;
                    after.rounds += 1;
                    after.last_round_at = Some(now);
                    rec.full_round
                        .then(|| -> Result<RoundEnd, StoreError> {
                            Ok(RoundEnd {
                                stale: self.store.stale_links(
                                    &batch.connection,
                                    &batch.groups,
                                    rec.epoch,
                                )?,
                                groups: batch.groups.clone(),
                            })
                        })
                        .transpose()?
                }
            };
            let ctx = EmitContext {
                connection: batch.connection.clone(),
                tenant: tenant.clone(),
                detected_at: now,
                routes: ctx_routes.clone(),
            };
            let outcome = self.store.commit_page(&PageInput {
                batch_key: &batch.key,
                before: &rec,
                after: &after,
                observations: &norm.links,
                deleted_groups: &norm.deleted_groups,
                ctx: &ctx,
                round_end: round_end.as_ref(),
            })?;
            pages += 1;
            report.pages += 1;
            report.events += outcome.events;
            report.rows += outcome.rows;
            report.unchanged += outcome.unchanged;
            report.baseline += outcome.baseline;
            report.resync_removals += outcome.resync_removals;
            report.ids.extend(outcome.ids);
            if outcome.rows > 0 {
                self.notifier.notify_all();
            }
            let done = !after.mid_round;
            rec = after;
            if done {
                report.round_completed = true;
                break;
            }
        }
        Ok(report)
    }
}
