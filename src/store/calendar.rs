//! Calendar state: per group the createdDateTime watermark, and the seen set (blake3 of event ids). One
//! transaction per group poll stages the outbox rows, writes the seen records and moves the watermark.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sled::Transactional;

use super::page::{TxResult, stage_event};
use super::{Result, Store, StoreError, decode, encode, group_key};
use crate::change::calendar::{CalendarGroupState, Decision, EventChange, SeenEvent};
use crate::change::event_envelope::CalendarChange;

/// One group poll to commit.
#[derive(Debug)]
pub struct CalendarCommit<'a> {
    /// Connection name.
    pub connection: &'a str,
    /// Tenant id.
    pub tenant: &'a str,
    /// Group id.
    pub group: &'a str,
    /// Which sinks receive which of the group's changes.
    pub sinks: CalendarSinks<'a>,
    /// What the pure logic decided.
    pub decision: &'a Decision,
    /// Detection time stamped on the events.
    pub detected_at: DateTime<Utc>,
}

/// The sinks of one group poll, by change: subscriptions sharing a group may want different changes (one
/// emits updates, another does not; one takes the first poll as a baseline, another lists it as created).
#[derive(Debug, Clone, Copy)]
pub struct CalendarSinks<'a> {
    /// `event.created`.
    pub created: &'a [String],
    /// `event.updated`.
    pub updated: &'a [String],
    /// `event.deleted`.
    pub deleted: &'a [String],
}

impl<'a> CalendarSinks<'a> {
    fn of(&self, change: EventChange) -> &'a [String] {
        match change {
            EventChange::Created => self.created,
            EventChange::Updated => self.updated,
            EventChange::Deleted => self.deleted,
        }
    }
}

/// A calendar group as `groupwatch state` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarGroupView {
    /// Connection name.
    pub connection: String,
    /// Group id.
    pub group: String,
    /// Its state.
    pub state: CalendarGroupState,
    /// Seen ids kept.
    pub seen: usize,
}

fn seen_prefix(conn: &str, group: &str) -> Vec<u8> {
    let mut k = group_key(conn, group);
    k.push(0);
    k
}

impl Store {
    /// The group's calendar state (default before its first poll).
    pub fn calendar_group(&self, conn: &str, group: &str) -> Result<CalendarGroupState> {
        let k = group_key(conn, group);
        Ok(self
            .cal_groups
            .get(&k)?
            .map(|v| decode(&k, &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// The group's seen set.
    pub fn calendar_seen(&self, conn: &str, group: &str) -> Result<HashMap<[u8; 16], SeenEvent>> {
        let prefix = seen_prefix(conn, group);
        let mut out = HashMap::new();
        for kv in self.cal_seen.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let mut key = [0u8; 16];
            if k.len() == prefix.len() + 16 {
                key.copy_from_slice(&k[prefix.len()..]);
                out.insert(key, decode(&k, &v)?);
            }
        }
        Ok(out)
    }

    /// Every calendar group with state, for `groupwatch state`.
    pub fn calendar_groups(&self) -> Result<Vec<CalendarGroupView>> {
        let mut out = Vec::new();
        for kv in self.cal_groups.iter() {
            let (k, v) = kv?;
            let mut parts = k.splitn(2, |b| *b == 0);
            let conn = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let group = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let seen = self
                .cal_seen
                .scan_prefix(seen_prefix(&conn, &group))
                .count();
            out.push(CalendarGroupView {
                state: decode(&k, &v)?,
                connection: conn,
                group,
                seen,
            });
        }
        Ok(out)
    }

    /// Forgets a calendar group that is no longer watched.
    pub fn forget_calendar_group(&self, conn: &str, group: &str) -> Result<()> {
        let mut batch = sled::Batch::default();
        for k in self.cal_seen.scan_prefix(seen_prefix(conn, group)).keys() {
            batch.remove(k?);
        }
        self.cal_seen.apply_batch(batch)?;
        self.cal_groups.remove(group_key(conn, group))?;
        Ok(())
    }

    /// Commits one group poll atomically: outbox rows for every emitted change, seen upserts and removals,
    /// the new watermark. Returns the staged event ids. sled may re-run the closure: it does no I/O.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is written then.
    pub fn commit_calendar(&self, c: &CalendarCommit<'_>) -> Result<Vec<String>> {
        let prefix = seen_prefix(c.connection, c.group);
        let changes: Vec<CalendarChange> = c
            .decision
            .emit
            .iter()
            .map(|e| CalendarChange {
                connection: c.connection.to_owned(),
                tenant: c.tenant.to_owned(),
                group: c.group.to_owned(),
                emitted: e.clone(),
                detected_at: c.detected_at,
            })
            .collect();
        let _staging = self.staging();
        let events: Vec<_> = changes
            .iter()
            .map(|ch| (c.sinks.of(ch.emitted.change), ch.to_event()))
            .collect();
        let res = (&self.cal_seen, &self.cal_groups, &self.outbox).transaction(
            |(seen, groups, outbox)| -> TxResult<()> {
                for (sinks, ev) in &events {
                    stage_event(outbox, sinks, ev)?;
                }
                for k in &c.decision.removals {
                    seen.remove([prefix.as_slice(), k].concat())?;
                }
                for (k, rec) in &c.decision.upserts {
                    seen.insert([prefix.as_slice(), k].concat(), encode(rec))?;
                }
                groups.insert(group_key(c.connection, c.group), encode(&c.decision.state))?;
                Ok(())
            },
        );
        match res {
            Ok(()) => Ok(changes.iter().map(CalendarChange::id).collect()),
            Err(sled::transaction::TransactionError::Abort(e)) => Err(e),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }
}
