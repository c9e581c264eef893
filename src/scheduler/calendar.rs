//! Calendar polling: per connection, list every watched group's window (batched or not), decide new events
//! against the seen set, and commit each group in its own transaction. A connection whose delegated sign-in
//! was refused stops here — with the reason persisted for `groupwatch state` — while membership polling,
//! which uses the app-only token, carries on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;

use super::poll::PollError;
use crate::change::calendar::{CalendarPolicy, decide, floor};
use crate::config::{
    Baseline, Config, DEFAULT_CALENDAR_PAGE_SIZE, DEFAULT_OVERLAP_SECS, SubscriptionKind,
};
use crate::graph::calendar::{CalendarClient, ListRequest};
use crate::graph::{self};
use crate::relay::Notifier;
use crate::store::{CalendarCommit, CalendarSinks, SignInStatus, Store};

/// One watched group calendar: where its events go and how it is polled.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarRoute {
    /// Sink names: every subscription's that names the group. New events after the first poll go to all.
    pub sinks: Vec<String>,
    /// Sinks of `existing_as_added` subscriptions: the first poll's existing events go to these only.
    pub baseline_sinks: Vec<String>,
    /// Sinks of subscriptions with `emit_updates`.
    pub update_sinks: Vec<String>,
    /// Sinks of subscriptions with `emit_deletes`.
    pub delete_sinks: Vec<String>,
    /// Window, emission and baseline settings (merged over subscriptions naming the group).
    pub policy: CalendarPolicy,
    /// `$top`.
    pub page_size: u32,
}

/// connection → group → route, from the calendar subscriptions.
pub type CalendarPlan = BTreeMap<String, BTreeMap<String, CalendarRoute>>;

/// Builds the calendar plan; a group named by several subscriptions is polled once, for all of them.
pub fn calendar_plan(cfg: &Config) -> CalendarPlan {
    let mut out = CalendarPlan::new();
    for sub in cfg
        .subscriptions
        .iter()
        .filter(|s| s.kind == SubscriptionKind::Calendar)
    {
        let policy = CalendarPolicy {
            overlap: chrono::Duration::seconds(
                sub.overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS) as i64
            ),
            emit_updates: sub.emit_updates.unwrap_or(false),
            emit_deletes: sub.emit_deletes.unwrap_or(false),
            baseline_emits: sub.baseline == Baseline::ExistingAsAdded,
        };
        let page_size = sub.page_size.unwrap_or(DEFAULT_CALENDAR_PAGE_SIZE);
        for g in &sub.groups {
            let route = out
                .entry(sub.connection.clone())
                .or_default()
                .entry(g.to_ascii_lowercase())
                .or_insert_with(|| CalendarRoute {
                    sinks: Vec::new(),
                    baseline_sinks: Vec::new(),
                    update_sinks: Vec::new(),
                    delete_sinks: Vec::new(),
                    policy,
                    page_size,
                });
            for s in &sub.sinks {
                for (list, wanted) in [
                    (&mut route.sinks, true),
                    (&mut route.baseline_sinks, policy.baseline_emits),
                    (&mut route.update_sinks, policy.emit_updates),
                    (&mut route.delete_sinks, policy.emit_deletes),
                ] {
                    if wanted && !list.contains(s) {
                        list.push(s.clone());
                    }
                }
            }
            let p = &mut route.policy;
            p.overlap = p.overlap.max(policy.overlap);
            p.emit_updates |= policy.emit_updates;
            p.emit_deletes |= policy.emit_deletes;
            p.baseline_emits |= policy.baseline_emits;
            route.page_size = route.page_size.max(page_size);
        }
    }
    out
}

/// What one calendar poll of a connection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalendarReport {
    /// Groups committed.
    pub groups: usize,
    /// Groups that failed (kept for the next tick).
    pub failed: usize,
    /// Events staged.
    pub events: usize,
    /// New ids recorded silently by a first poll.
    pub baseline: usize,
    /// Re-listed, already known events.
    pub unchanged: usize,
    /// Skipped because an outbox was above the high-water mark.
    pub backpressure: bool,
    /// Ids of the staged events.
    pub ids: Vec<String>,
}

/// Polls the calendars of every connection. Shared by the scheduler's jobs.
pub struct CalendarPoller {
    store: Store,
    clients: HashMap<String, Arc<CalendarClient>>,
    tenants: HashMap<String, String>,
    plan: CalendarPlan,
    high_water: u64,
    notifier: Notifier,
}

impl CalendarPoller {
    /// `clients` and `tenants` are keyed by connection name.
    pub fn new(
        store: Store,
        clients: HashMap<String, Arc<CalendarClient>>,
        tenants: HashMap<String, String>,
        plan: CalendarPlan,
        high_water: u64,
        notifier: Notifier,
    ) -> Self {
        Self {
            store,
            clients,
            tenants,
            plan,
            high_water,
            notifier,
        }
    }

    /// Connections with calendar subscriptions.
    pub fn connections(&self) -> Vec<String> {
        self.plan.keys().cloned().collect()
    }

    /// Forgets calendar state of groups no longer watched.
    ///
    /// # Errors
    /// Store failures.
    pub fn forget_unwatched(&self) -> Result<(), PollError> {
        for v in self.store.calendar_groups()? {
            let watched = self
                .plan
                .get(&v.connection)
                .is_some_and(|g| g.contains_key(&v.group));
            if !watched {
                self.store.forget_calendar_group(&v.connection, &v.group)?;
            }
        }
        Ok(())
    }

    fn over_high_water(&self, groups: &BTreeMap<String, CalendarRoute>) -> bool {
        let sinks: HashSet<&String> = groups.values().flat_map(|r| r.sinks.iter()).collect();
        self.store.any_over_high_water(sinks, self.high_water)
    }

    /// Turns a round-level failure into the poll error; a refused sign-in is persisted first.
    async fn stop(&self, conn: &str, e: graph::Error) -> PollError {
        if let graph::Error::SignInRequired { error, detail } = &e {
            if let Err(se) = self.store.mark_needs_login(conn, error, detail).await {
                tracing::error!(connection = %conn, error = %se, "Could not persist the sign-in status.");
            }
            tracing::error!(connection = %conn, error = %e, "Calendar polling of this connection stopped: the delegated sign-in was refused. Run `groupwatch login` for it; membership polling continues.");
        }
        PollError::Graph(e)
    }

    /// Polls every watched group calendar of `conn` once.
    ///
    /// # Errors
    /// [`PollError`] when the sign-in is gone (nothing polled), a `$batch` call fails, or the store fails.
    pub async fn poll_once(&self, conn: &str) -> Result<CalendarReport, PollError> {
        let mut report = CalendarReport::default();
        let groups = self
            .plan
            .get(conn)
            .ok_or_else(|| PollError::UnknownBatch(conn.to_owned()))?;
        if let Some(SignInStatus::NeedsLogin { error, detail, at }) =
            self.store.sign_in(conn)?.map(|s| s.status)
        {
            return Err(PollError::Graph(graph::Error::SignInRequired {
                error,
                detail: format!("{detail} (refused at {at})"),
            }));
        }
        if self.over_high_water(groups) {
            tracing::warn!(connection = %conn, "Outbox above its high-water mark; skipping this calendar poll.");
            report.backpressure = true;
            return Ok(report);
        }
        let client = self
            .clients
            .get(conn)
            .ok_or_else(|| PollError::UnknownBatch(conn.to_owned()))?;
        let now = Utc::now();
        let mut states = HashMap::new();
        let mut reqs = Vec::new();
        for (g, route) in groups {
            let state = self.store.calendar_group(conn, g)?;
            reqs.push(ListRequest {
                group: g.clone(),
                floor: floor(&state, &route.policy, now),
                top: route.page_size,
            });
            states.insert(g.clone(), state);
        }
        let mut listings = match client.list(reqs).await {
            Ok(l) => l,
            Err(e) => return Err(self.stop(conn, e).await),
        };
        let refused = listings
            .iter()
            .find(|(_, r)| matches!(r, Err(graph::Error::SignInRequired { .. })))
            .map(|(g, _)| g.clone());
        if let Some(Some(Err(e))) = refused.map(|g| listings.remove(&g)) {
            return Err(self.stop(conn, e).await);
        }
        let tenant = self.tenants.get(conn).cloned().unwrap_or_default();
        let mut rows = false;
        for (g, listing) in listings {
            let listing = match listing {
                Ok(l) => l,
                Err(e) => {
                    report.failed += 1;
                    let hint = if matches!(e, graph::Error::Forbidden { .. }) {
                        " The signed-in account must be a member of the group."
                    } else {
                        ""
                    };
                    tracing::warn!(connection = %conn, group = %g, error = %e, "Listing a group calendar failed; it is retried next tick.{hint}");
                    continue;
                }
            };
            let route = &groups[&g];
            let seen = self.store.calendar_seen(conn, &g)?;
            let d = decide(&listing.events, &seen, &states[&g], &route.policy, now);
            let ids = self.store.commit_calendar(&CalendarCommit {
                connection: conn,
                tenant: &tenant,
                group: &g,
                sinks: CalendarSinks {
                    // The first poll's events are a baseline: only `existing_as_added` sinks take them.
                    created: if states[&g].watermark.is_none() {
                        &route.baseline_sinks
                    } else {
                        &route.sinks
                    },
                    updated: &route.update_sinks,
                    deleted: &route.delete_sinks,
                },
                decision: &d,
                detected_at: now,
            })?;
            rows |= !ids.is_empty() && !route.sinks.is_empty();
            report.groups += 1;
            report.events += ids.len();
            report.baseline += d.baseline;
            report.unchanged += d.unchanged;
            report.ids.extend(ids);
        }
        if rows {
            // Durable before any sink may see the rows (as for membership pages).
            self.store.flush().await?;
            self.notifier.notify_all();
        }
        Ok(report)
    }
}
