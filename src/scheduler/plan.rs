//! Batch planning: subscriptions → batches of ≤ 50 groups per connection, one delta link each.
//!
//! Re-planning never disturbs a running batch's cursor:
//! - a group removed from the configuration is dropped from its batch's *active* set; the saved link still
//!   covers it, its entries are ignored, and its stored state is forgotten; the batch's stored group set
//!   shrinks with it, so watching the group again later puts it into a new batch with its own first round;
//! - a new group goes into a new batch with its own first round, so other batches keep their links;
//! - a batch whose groups are all gone is deleted;
//! - a batch that must now also select owners restarts with a full round, which for already-known groups is
//!   a resync that emits only the net difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::{Baseline, Config, SubscriptionKind};
use crate::graph::MAX_GROUPS_PER_DELTA;
use crate::store::{BatchRecord, GroupRoute, Result, Store};

/// A batch as the poller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Store key.
    pub key: String,
    /// Connection name.
    pub connection: String,
    /// Watched groups of this batch (≤ 50).
    pub groups: Vec<String>,
    /// Select owners too.
    pub owners: bool,
}

/// The plan: batches plus per-connection routes (sinks and baseline per group).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// All batches, every connection.
    pub batches: Vec<Batch>,
    /// connection → group → route.
    pub routes: HashMap<String, HashMap<String, GroupRoute>>,
}

#[derive(Default)]
struct Want {
    route: GroupRoute,
    owners: bool,
}

fn desired(cfg: &Config) -> BTreeMap<String, BTreeMap<String, Want>> {
    let mut out: BTreeMap<String, BTreeMap<String, Want>> = BTreeMap::new();
    for sub in cfg
        .subscriptions
        .iter()
        .filter(|s| s.kind == SubscriptionKind::Members)
    {
        let conn = out.entry(sub.connection.clone()).or_default();
        for g in &sub.groups {
            // Graph returns lower-case ids; config may not.
            let w = conn.entry(g.to_ascii_lowercase()).or_default();
            let baseline = sub.baseline == Baseline::ExistingAsAdded;
            for s in &sub.sinks {
                if !w.route.sinks.contains(s) {
                    w.route.sinks.push(s.clone());
                }
                if baseline && !w.route.baseline_sinks.contains(s) {
                    w.route.baseline_sinks.push(s.clone());
                }
            }
            w.owners |= sub.track_owners;
        }
    }
    out
}

/// Reconciles the persisted batches with the configuration and returns the plan.
///
/// # Errors
/// Store failures.
pub fn reconcile(cfg: &Config, store: &Store) -> Result<Plan> {
    let want = desired(cfg);
    let mut plan = Plan::default();
    let existing = store.batches()?;
    for (key, rec) in &existing {
        if !want.contains_key(&rec.connection) {
            for g in &rec.groups {
                store.forget_group(&rec.connection, g)?;
            }
            store.delete_batch(key)?;
        }
    }
    for (conn, groups) in &want {
        let mut assigned = BTreeSet::new();
        for (key, mut rec) in existing
            .iter()
            .filter(|(_, r)| &r.connection == conn)
            .cloned()
        {
            let active: Vec<String> = rec
                .groups
                .iter()
                .filter(|g| groups.contains_key(*g) && !assigned.contains(*g))
                .cloned()
                .collect();
            if active.is_empty() {
                store.delete_batch(&key)?;
                continue;
            }
            let owners = active.iter().any(|g| groups[g].owners);
            if owners != rec.owners {
                tracing::info!(batch = %key, owners, "Batch selection changed; it restarts with a full round.");
                rec.restart_full(active.clone(), owners);
                store.put_batch(&key, &rec)?;
            } else if rec.groups != active {
                // Persist the shrunk set even while the batch keeps its link: a group dropped here and
                // watched again later is then no longer in any batch, so it gets a fresh batch with its own
                // first round (its state was forgotten) instead of rejoining a link that has no baseline
                // for it.
                rec.groups = active.clone();
                store.put_batch(&key, &rec)?;
            }
            assigned.extend(active.iter().cloned());
            plan.batches.push(Batch {
                key,
                connection: conn.clone(),
                groups: active,
                owners,
            });
        }
        let fresh: Vec<&String> = groups.keys().filter(|g| !assigned.contains(*g)).collect();
        for chunk in fresh.chunks(MAX_GROUPS_PER_DELTA) {
            let key = store.new_batch_key(conn)?;
            let gs: Vec<String> = chunk.iter().map(|g| (*g).clone()).collect();
            let owners = gs.iter().any(|g| groups[g].owners);
            store.put_batch(&key, &BatchRecord::new(conn, gs.clone(), owners))?;
            plan.batches.push(Batch {
                key,
                connection: conn.clone(),
                groups: gs,
                owners,
            });
        }
        for g in store.stored_groups(conn)? {
            if !groups.contains_key(&g) {
                tracing::info!(connection = %conn, group = %g, "Group no longer watched; forgetting its state.");
                store.forget_group(conn, &g)?;
            }
        }
        plan.routes.insert(
            conn.clone(),
            groups
                .iter()
                .map(|(g, w)| (g.clone(), w.route.clone()))
                .collect(),
        );
    }
    plan.batches.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(plan)
}
