//! New-event detection for group calendars, pure: a listing of one group's window + what the store remembers
//! (seen ids, the createdDateTime watermark) → events to emit and the state to write, in one decision.
//!
//! The window is `createdDateTime ≥ watermark − overlap`. The watermark is the newest createdDateTime ever
//! listed (never our clock, except on the first poll), so it only moves forward and every later window starts
//! at or after every earlier one. An event is new when its id was never seen for the group; the overlap
//! re-lists recent events on every poll so an event created just before a poll, or surfacing late, is still
//! found — and the seen set makes the re-listing silent. Seen ids behind the next window's start can never be
//! listed again, so they are pruned.
//!
//! Changes of one poll are emitted oldest first (createdDateTime, then id), whatever the listing order (it is
//! newest first), so one group's events reach a sink in creation order; deletions come last.
//!
//! Deletions (`emit_deletes`) are inferred from seen ids missing from a complete listing of their window. One
//! listing is not proof: `$skip` paging shifts when an event is deleted between two page requests, so the
//! event just behind the page boundary is skipped once. A missing id is therefore only marked
//! ([`SeenEvent::missed`], stored with the seen record) and declared deleted when a second consecutive complete
//! poll misses it too; listing it again clears the mark. This costs no extra request, at the price of
//! reporting a deletion one poll later.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::graph::calendar::GraphEvent;

/// Seen-set key of an event id: blake3, so keys are short and fixed-size whatever Outlook's id length.
pub fn seen_key(event_id: &str) -> [u8; 16] {
    let h = blake3::hash(event_id.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

/// What the store remembers per seen event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenEvent {
    /// Its createdDateTime (pruning compares it with the window start).
    pub created: DateTime<Utc>,
    /// Last changeKey seen (update detection).
    pub change_key: Option<String>,
    /// Bumped on every emitted change; part of event ids.
    pub version: u64,
    /// The Outlook id, kept only when deletions are emitted (the deleted event must name it).
    pub id: Option<String>,
    /// Consecutive complete polls whose window covered this event but whose listing lacked it (deletion
    /// candidates; reset when it is listed again).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed: u32,
    /// Recorded silently as part of a `from_now` baseline (it existed before the group was watched). When
    /// such a record is pruned, [`CalendarGroupState::baseline_floor`] moves up to it, so a wider window
    /// listing it again does not call it new.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub baseline: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Consecutive complete polls that must miss a seen id before `event.deleted` is emitted (one miss can be a
/// `$skip` shift).
pub const MISSES_BEFORE_DELETE: u32 = 2;

/// Per-group calendar state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarGroupState {
    /// Newest createdDateTime listed so far (None before the first poll).
    pub watermark: Option<DateTime<Utc>>,
    /// Completed polls.
    pub polls: u64,
    /// Last completed poll.
    pub last_poll_at: Option<DateTime<Utc>>,
    /// Where a `from_now` first poll's window started: events created before it existed before groupwatch
    /// watched the group. A later window that reaches further back (the overlap was raised, or a
    /// subscription with a larger one joined) records unseen events below it silently instead of calling
    /// them new. (An event pruned earlier and listed again by such a window is emitted again, with the same
    /// CloudEvent id as the first time, so consumers drop it as a repeat.)
    #[serde(default)]
    pub baseline_floor: Option<DateTime<Utc>>,
}

/// How a subscription wants its group polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarPolicy {
    /// Re-listed span behind the watermark.
    pub overlap: Duration,
    /// Emit `event.updated` on changeKey changes.
    pub emit_updates: bool,
    /// Emit `event.deleted` for seen ids missing from the window.
    pub emit_deletes: bool,
    /// `existing_as_added`: the first poll lists everything and emits it.
    pub baseline_emits: bool,
}

/// Created, updated or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventChange {
    /// A new id.
    Created,
    /// A seen id with a new changeKey.
    Updated,
    /// A seen id missing from a complete listing of its window.
    Deleted,
}

impl EventChange {
    /// `created` / `updated` / `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventChange::Created => "created",
            EventChange::Updated => "updated",
            EventChange::Deleted => "deleted",
        }
    }
}

/// One change to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// What happened.
    pub change: EventChange,
    /// The event as listed (for deletions: only its id).
    pub event: GraphEvent,
    /// The event's version after the change (part of the CloudEvent id).
    pub version: u64,
}

/// The outcome of one poll of one group: what to emit and what to write, all in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Changes to emit: created/updated oldest first (createdDateTime, then id), deletions last.
    pub emit: Vec<Emitted>,
    /// Seen records to write.
    pub upserts: Vec<([u8; 16], SeenEvent)>,
    /// Seen records to delete (pruned behind the window, or deleted).
    pub removals: Vec<[u8; 16]>,
    /// The new group state.
    pub state: CalendarGroupState,
    /// New ids recorded silently by a `from_now` first poll.
    pub baseline: usize,
    /// Listed events already known and unchanged (overlap re-listings, `$skip` repeats).
    pub unchanged: usize,
    /// Events without an id or a parsable createdDateTime.
    pub skipped: usize,
}

/// Where this poll's window starts (None: list everything).
pub fn floor(
    state: &CalendarGroupState,
    policy: &CalendarPolicy,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match state.watermark {
        Some(w) => Some(w - policy.overlap),
        None if policy.baseline_emits => None,
        None => Some(now - policy.overlap),
    }
}

/// Decides one poll. `listed` is the complete listing of the window that started at `floor(state, …)`;
/// `seen` holds the group's stored records.
pub fn decide(
    listed: &[GraphEvent],
    seen: &HashMap<[u8; 16], SeenEvent>,
    state: &CalendarGroupState,
    policy: &CalendarPolicy,
    now: DateTime<Utc>,
) -> Decision {
    let mut d = Decision::default();
    let first = state.watermark.is_none();
    let window_start = floor(state, policy, now);
    let mut in_listing: HashSet<[u8; 16]> = HashSet::new();
    let mut newest = state.watermark;
    let mut kept: Vec<([u8; 16], SeenEvent)> = Vec::new();
    let mut changes: Vec<(DateTime<Utc>, &str, Emitted)> = Vec::new();
    for ev in listed {
        let (Some(id), Some(created)) = (ev.id.as_deref(), ev.created()) else {
            d.skipped += 1;
            continue;
        };
        if window_start.is_some_and(|f| created < f) {
            continue; // below the window: the fallback listing's last page reaches past the floor
        }
        let key = seen_key(id);
        if !in_listing.insert(key) {
            d.unchanged += 1; // the same event twice in one listing ($skip pages shifted)
            continue;
        }
        newest = newest.max(Some(created));
        let keep_id = policy.emit_deletes.then(|| id.to_owned());
        let mut emit = |change, version| {
            let e = Emitted {
                change,
                event: ev.clone(),
                version,
            };
            changes.push((created, id, e));
        };
        match seen.get(&key) {
            None if state.baseline_floor.is_some_and(|f| created < f) => {
                // Older than the baseline: it existed before the group was watched.
                d.unchanged += 1;
                kept.push((
                    key,
                    SeenEvent {
                        created,
                        change_key: ev.change_key.clone(),
                        version: 1,
                        id: keep_id,
                        missed: 0,
                        baseline: true,
                    },
                ));
            }
            None => {
                let silent = first && !policy.baseline_emits;
                let rec = SeenEvent {
                    created,
                    change_key: ev.change_key.clone(),
                    version: 1,
                    id: keep_id,
                    missed: 0,
                    // Part of the first poll: whether emitted (`existing_as_added` sinks) or not
                    // (`from_now` sinks), it predates the watch, and a wider window later stays silent.
                    baseline: first,
                };
                if silent {
                    d.baseline += 1;
                } else {
                    emit(EventChange::Created, 1);
                }
                kept.push((key, rec));
            }
            Some(prev) if prev.change_key != ev.change_key && ev.change_key.is_some() => {
                let mut rec = SeenEvent {
                    change_key: ev.change_key.clone(),
                    id: keep_id,
                    missed: 0,
                    ..prev.clone()
                };
                if policy.emit_updates {
                    rec.version += 1;
                    emit(EventChange::Updated, rec.version);
                }
                kept.push((key, rec));
            }
            Some(prev) => {
                d.unchanged += 1;
                let store_id = prev.id.is_none() && keep_id.is_some();
                if store_id || prev.missed > 0 {
                    // Listed again: no longer a deletion candidate (a miss was a `$skip` shift).
                    let id = if store_id { keep_id } else { prev.id.clone() };
                    let rec = SeenEvent {
                        id,
                        missed: 0,
                        ..prev.clone()
                    };
                    kept.push((key, rec));
                }
            }
        }
    }
    // Oldest first, so a group's events reach each sink in creation order (the listing is newest first).
    changes.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    d.emit = changes.into_iter().map(|(_, _, e)| e).collect();
    if policy.emit_deletes && !first {
        missing(&mut d, &mut kept, seen, &in_listing, window_start);
    }
    let watermark = if first { newest.max(Some(now)) } else { newest };
    let next_start = watermark.map(|w| w - policy.overlap);
    let behind = |created: DateTime<Utc>| next_start.is_some_and(|f| created < f);
    let (upserts, dropped): (Vec<_>, Vec<_>) =
        kept.into_iter().partition(|(_, r)| !behind(r.created));
    d.upserts = upserts;
    let deleted: HashSet<[u8; 16]> = d.removals.iter().copied().collect();
    let pruned: Vec<(&[u8; 16], &SeenEvent)> = seen
        .iter()
        .filter(|(k, s)| behind(s.created) && !deleted.contains(*k))
        .collect();
    // A pruned baseline record (stored before, or recorded now and already behind the next window)
    // leaves the floor just above it: Graph's own timestamps, so no clock skew.
    let mut baseline_floor = if first && !policy.baseline_emits {
        window_start
    } else {
        state.baseline_floor
    };
    let gone = pruned
        .iter()
        .map(|(_, r)| *r)
        .chain(dropped.iter().map(|(_, r)| r));
    for rec in gone.filter(|r| r.baseline) {
        let above = rec.created + chrono::Duration::microseconds(1);
        baseline_floor = baseline_floor.max(Some(above));
    }
    d.removals.extend(pruned.into_iter().map(|(k, _)| *k));
    d.state = CalendarGroupState {
        watermark,
        polls: state.polls + 1,
        last_poll_at: Some(now),
        baseline_floor,
    };
    d
}

/// Seen ids inside the window but missing from its complete listing: a first miss is only marked (kept with
/// `missed` raised); at [`MISSES_BEFORE_DELETE`] consecutive misses `event.deleted` is emitted (oldest first)
/// and the record removed.
fn missing(
    d: &mut Decision,
    kept: &mut Vec<([u8; 16], SeenEvent)>,
    seen: &HashMap<[u8; 16], SeenEvent>,
    in_listing: &HashSet<[u8; 16]>,
    window_start: Option<DateTime<Utc>>,
) {
    let mut gone: Vec<(&[u8; 16], &SeenEvent)> = seen
        .iter()
        // A record kept from before `emit_deletes` was switched on has no Outlook id to report: it waits
        // until it is listed again (and gets its id) or falls behind the window.
        .filter(|(k, s)| {
            s.id.is_some()
                && window_start.is_none_or(|f| s.created >= f)
                && !in_listing.contains(*k)
        })
        .collect();
    gone.sort_by(|a, b| (a.1.created, &a.1.id).cmp(&(b.1.created, &b.1.id)));
    for (key, rec) in gone {
        let missed = rec.missed + 1;
        if missed < MISSES_BEFORE_DELETE {
            let rec = SeenEvent {
                missed,
                ..rec.clone()
            };
            kept.push((*key, rec));
            continue;
        }
        d.emit.push(Emitted {
            change: EventChange::Deleted,
            event: GraphEvent {
                id: rec.id.clone(),
                created_date_time: Some(rec.created.to_rfc3339()),
                ..GraphEvent::default()
            },
            version: rec.version + 1,
        });
        d.removals.push(*key);
    }
}

#[cfg(test)]
#[path = "calendar_tests.rs"]
mod tests;
