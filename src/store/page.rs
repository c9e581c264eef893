//! The page transaction: observations → state updates + outbox rows + the new cursor, atomically.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{
    BatchRecord, GroupRecord, StoreError, decode, encode, group_key, link_key, split_link_key,
};
use crate::change::envelope::RESYNC_REASON;
use crate::change::{Change, ChangeKind, LinkState, Observation, Relationship, decide};

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Where a group's events go and how its first sync behaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupRoute {
    /// Sink names (each gets its own outbox row).
    pub sinks: Vec<String>,
    /// The sinks, among `sinks`, of `existing_as_added` subscriptions: the group's first full sync emits
    /// its current members to these only (a `from_now` subscription's sinks get nothing from it).
    pub baseline_sinks: Vec<String>,
}

/// Facts shared by every change of a page.
#[derive(Debug, Clone)]
pub struct EmitContext {
    /// Connection name.
    pub connection: String,
    /// Tenant id.
    pub tenant: String,
    /// Detection time stamped on the page's events.
    pub detected_at: DateTime<Utc>,
    /// Per watched group.
    pub routes: HashMap<String, GroupRoute>,
}

/// Work done when a full round reaches its deltaLink.
#[derive(Debug, Clone, Default)]
pub struct RoundEnd {
    /// Links present before the round and not seen in it (from [`super::Store::stale_links`]).
    pub stale: Vec<Vec<u8>>,
    /// The batch's groups, now known.
    pub groups: Vec<String>,
}

/// One page to commit.
#[derive(Debug)]
pub struct PageInput<'a> {
    /// Batch key.
    pub batch_key: &'a str,
    /// The batch as it was before this page (its epoch and round kind decide baseline handling).
    pub before: &'a BatchRecord,
    /// The batch after this page (new link): written in the same transaction.
    pub after: &'a BatchRecord,
    /// The page's observations, in order.
    pub observations: &'a [Observation],
    /// Watched groups Graph reported deleted.
    pub deleted_groups: &'a [(String, Option<String>)],
    /// Emission facts.
    pub ctx: &'a EmitContext,
    /// Set on the last page of a full round.
    pub round_end: Option<&'a RoundEnd>,
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Changes turned into events.
    pub events: usize,
    /// Outbox rows written (events × sinks).
    pub rows: usize,
    /// Changes recorded silently by a `from_now` baseline.
    pub baseline: usize,
    /// Observations that matched stored state (replays, repeats, overlaps).
    pub unchanged: usize,
    /// Removals found by a completed resync.
    pub resync_removals: usize,
    /// Ids of the events staged, in order.
    pub ids: Vec<String>,
}

fn get<T: for<'de> serde::Deserialize<'de>>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(v) => decode(key, &v)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

/// Whether the first full sync of this group's relationship completed (later full rounds are resyncs).
fn known(groups: &TransactionalTree, conn: &str, group: &str, rel: Relationship) -> TxResult<bool> {
    Ok(
        get::<GroupRecord>(groups, &group_key(conn, group))?.is_some_and(|g| match rel {
            Relationship::Members => g.known,
            Relationship::Owners => g.owners_known,
        }),
    )
}

/// Writes one outbox row per sink for `event`; returns the rows written. Shared with calendar commits.
pub(super) fn stage_event(
    outbox: &TransactionalTree,
    sinks: &[String],
    event: &cloudevents::Event,
) -> TxResult<usize> {
    let event = encode(event);
    for sink in sinks {
        let seq = outbox.generate_id()?;
        let key = [sink.as_bytes(), b"\0", &seq.to_be_bytes()].concat();
        outbox.insert(key, event.clone())?;
    }
    Ok(sinks.len())
}

fn stage(
    outbox: &TransactionalTree,
    sinks: &[String],
    change: &Change,
    out: &mut PageOutcome,
) -> TxResult<()> {
    out.rows += stage_event(outbox, sinks, &change.to_event())?;
    out.events += 1;
    out.ids.push(change.id());
    Ok(())
}

pub(super) fn apply(
    input: &PageInput<'_>,
    batches: &TransactionalTree,
    links: &TransactionalTree,
    groups: &TransactionalTree,
    outbox: &TransactionalTree,
) -> TxResult<PageOutcome> {
    let mut out = PageOutcome::default();
    let ctx = input.ctx;
    let conn = ctx.connection.as_str();
    let epoch = input.before.epoch;
    let no_route = GroupRoute::default();
    let route = |g: &str| ctx.routes.get(g).unwrap_or(&no_route);
    let change = |group: &str, rel, member: &str, state: &LinkState, kind, reason| Change {
        connection: ctx.connection.clone(),
        tenant: ctx.tenant.clone(),
        group: group.to_owned(),
        rel,
        member: member.to_owned(),
        member_type: state.member_type.clone(),
        kind,
        reason,
        version: state.version,
        detected_at: ctx.detected_at,
    };

    for obs in input.observations {
        let key = link_key(conn, &obs.group, obs.rel, &obs.member);
        let prev: Option<LinkState> = get(links, &key)?;
        let (state, kind) = decide(prev.as_ref(), obs, epoch);
        links.insert(key, encode(&state))?;
        let Some(kind) = kind else {
            out.unchanged += 1;
            continue;
        };
        let r = route(&obs.group);
        let sinks = if !input.before.full_round || known(groups, conn, &obs.group, obs.rel)? {
            &r.sinks
        } else {
            // The group's first sync: a baseline.
            &r.baseline_sinks
        };
        if sinks.is_empty() {
            out.baseline += 1;
            continue;
        }
        let c = change(
            &obs.group,
            obs.rel,
            &obs.member,
            &state,
            kind,
            obs.reason.clone(),
        );
        stage(outbox, sinks, &c, &mut out)?;
    }

    for (group, _reason) in input.deleted_groups {
        let gk = group_key(conn, group);
        let mut rec: GroupRecord = get(groups, &gk)?.unwrap_or_default();
        rec.deleted = true;
        groups.insert(gk, encode(&rec))?;
    }

    if let Some(end) = input.round_end {
        for key in &end.stale {
            let Some(prev) = get::<LinkState>(links, key)? else {
                continue;
            };
            if !prev.present || prev.seen_epoch >= epoch {
                continue;
            }
            let Some((_, group, rel, member)) = split_link_key(key) else {
                continue;
            };
            let rel = if rel == "owner" {
                Relationship::Owners
            } else {
                Relationship::Members
            };
            let state = LinkState {
                present: false,
                version: prev.version + 1,
                ..prev
            };
            links.insert(key.as_slice(), encode(&state))?;
            let r = route(&group);
            let sinks = if known(groups, conn, &group, rel)? {
                &r.sinks
            } else {
                &r.baseline_sinks
            };
            if !sinks.is_empty() {
                let c = change(
                    &group,
                    rel,
                    &member,
                    &state,
                    ChangeKind::Removed,
                    Some(RESYNC_REASON.to_owned()),
                );
                stage(outbox, sinks, &c, &mut out)?;
                out.resync_removals += 1;
            }
        }
        for g in &end.groups {
            let gk = group_key(conn, g);
            let mut rec: GroupRecord = get(groups, &gk)?.unwrap_or_default();
            rec.known = true;
            rec.owners_known |= input.before.owners;
            groups.insert(gk, encode(&rec))?;
        }
    }

    batches.insert(input.batch_key.as_bytes(), encode(input.after))?;
    Ok(out)
}
