//! Delivery bookkeeping for the relay: which rows are due, and one transaction per batch that acks, schedules
//! a retry, dead-letters or disables, so a crash between "the sink answered" and "the store knows" can only
//! repeat a delivery (invariant 2), never lose one.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::dlq::DeadLetter;
use super::{OutboxRow, Result, Store, StoreError, decode, encode, outbox_prefix};

/// A row waiting for its next attempt, in the `retry` tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryRecord {
    /// Steps of the retry schedule used so far: rounds in which the event was due and either failed or
    /// was held back because the endpoint had just failed (`last_error` then says "not sent").
    pub attempts: u32,
    /// The last failure, for logs, `groupwatch state` and the dead letter.
    pub last_error: String,
    /// The event (structured CloudEvent JSON).
    pub event: cloudevents::Event,
}

/// Persisted per-sink state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkState {
    /// Set when the endpoint answered 410 Gone: the relay dead-letters instead of delivering.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
}

/// Where a pending row lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Outbox,
    Retry,
}

/// A row the relay may deliver now: a due retry or a fresh outbox row.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The row (key in its tree, event).
    pub row: OutboxRow,
    /// Attempts made before this one.
    pub attempts: u32,
    origin: Origin,
}

impl Pending {
    /// A scheduled retry that came due (not a fresh outbox row).
    pub fn is_retry(&self) -> bool {
        matches!(self.origin, Origin::Retry)
    }
}

/// What the relay decided for one pending row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Delivered: delete it.
    Ack,
    /// Leave it where it is (not attempted, or a sink whose failures hold the queue).
    Keep,
    /// Try again at `due`.
    Retry {
        /// Next attempt time.
        due: DateTime<Utc>,
        /// Attempts made, this one included.
        attempts: u32,
        /// The failure.
        error: String,
    },
    /// Give up: move it to the dead letters.
    Dead {
        /// Attempts made, this one included.
        attempts: u32,
        /// The failure.
        error: String,
    },
    /// The endpoint is gone: disable the sink and dead-letter the row.
    Disable {
        /// Attempts made, this one included.
        attempts: u32,
        /// The failure.
        error: String,
    },
}

fn seq_of(key: &[u8]) -> [u8; 8] {
    let mut seq = [0u8; 8];
    if key.len() >= 8 {
        seq.copy_from_slice(&key[key.len() - 8..]);
    }
    seq
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn retry_key(sink: &str, due: DateTime<Utc>, seq: [u8; 8]) -> Vec<u8> {
    [
        sink.as_bytes(),
        b"\0",
        &millis(due).to_be_bytes(),
        b"\0",
        &seq,
    ]
    .concat()
}

fn due_of(key: &[u8], prefix_len: usize) -> Option<DateTime<Utc>> {
    let raw: [u8; 8] = key.get(prefix_len..prefix_len + 8)?.try_into().ok()?;
    let ms = i64::try_from(u64::from_be_bytes(raw)).ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

impl Store {
    /// Up to `limit` rows of `sink` to attempt now: due retries first (oldest due first), then the oldest
    /// fresh outbox rows.
    pub fn pending(&self, sink: &str, now: DateTime<Utc>, limit: usize) -> Result<Vec<Pending>> {
        let prefix = outbox_prefix(sink);
        let mut out = Vec::new();
        for kv in self.retry.scan_prefix(&prefix) {
            if out.len() >= limit {
                return Ok(out);
            }
            let (key, v) = kv?;
            if due_of(&key, prefix.len()).is_some_and(|due| due > now) {
                break;
            }
            let rec: RetryRecord = decode(&key, &v)?;
            out.push(Pending {
                row: OutboxRow {
                    key,
                    event: rec.event,
                },
                attempts: rec.attempts,
                origin: Origin::Retry,
            });
        }
        let room = limit.saturating_sub(out.len());
        out.extend(
            self.outbox_peek(sink, room)?
                .into_iter()
                .map(|row| Pending {
                    row,
                    attempts: 0,
                    origin: Origin::Outbox,
                }),
        );
        Ok(out)
    }

    /// When the earliest scheduled retry of `sink` is due.
    pub fn next_retry_due(&self, sink: &str) -> Result<Option<DateTime<Utc>>> {
        let prefix = outbox_prefix(sink);
        Ok(match self.retry.scan_prefix(&prefix).keys().next() {
            Some(k) => due_of(&k?, prefix.len()),
            None => None,
        })
    }

    /// Rows of `sink` waiting for a scheduled retry, counted up to `cap`.
    pub fn retry_depth(&self, sink: &str, cap: usize) -> usize {
        self.retry
            .scan_prefix(outbox_prefix(sink))
            .keys()
            .take(cap)
            .count()
    }

    /// Stages one event for `sink` at the end of its outbox (dead-letter replay, tests, benches).
    pub fn outbox_push(&self, sink: &str, event: &cloudevents::Event) -> Result<()> {
        let _staging = self.staging();
        let seq = self.db.generate_id()?;
        let key = [sink.as_bytes(), b"\0", &seq.to_be_bytes()].concat();
        self.outbox.insert(key, encode(event))?;
        Ok(())
    }

    /// The persisted state of `sink` (default: enabled).
    pub fn sink_state(&self, sink: &str) -> Result<SinkState> {
        Ok(self
            .sinks
            .get(sink)?
            .map(|v| decode(sink.as_bytes(), &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Re-enables a sink disabled by 410 Gone. Returns the state it had.
    pub fn enable_sink(&self, sink: &str) -> Result<SinkState> {
        let before = self.sink_state(sink)?;
        self.sinks.remove(sink)?;
        Ok(before)
    }

    /// Applies the relay's decisions for one batch in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Sled`]; nothing is applied then and the rows are attempted again.
    pub fn settle(&self, sink: &str, items: &[(Pending, Disposition)]) -> Result<()> {
        let now = Utc::now();
        let res = (&self.outbox, &self.retry, &self.dead_letters, &self.sinks).transaction(
            |(outbox, retry, dead, sinks)| {
                for (p, d) in items {
                    let home = match p.origin {
                        Origin::Outbox => outbox,
                        Origin::Retry => retry,
                    };
                    let key = &p.row.key;
                    let (attempts, error) = match d {
                        Disposition::Keep => continue,
                        Disposition::Ack => {
                            home.remove(key)?;
                            continue;
                        }
                        Disposition::Retry {
                            due,
                            attempts,
                            error,
                        } => {
                            home.remove(key)?;
                            let rec = RetryRecord {
                                attempts: *attempts,
                                last_error: error.clone(),
                                event: p.row.event.clone(),
                            };
                            retry.insert(retry_key(sink, *due, seq_of(key)), encode(&rec))?;
                            continue;
                        }
                        Disposition::Dead { attempts, error } => (attempts, error),
                        Disposition::Disable { attempts, error } => {
                            let state = SinkState {
                                disabled_at: Some(now),
                                disabled_reason: Some(error.clone()),
                            };
                            sinks.insert(sink.as_bytes(), encode(&state))?;
                            (attempts, error)
                        }
                    };
                    home.remove(key)?;
                    let letter = DeadLetter {
                        sink: sink.to_owned(),
                        event: p.row.event.clone(),
                        error: error.clone(),
                        attempts: *attempts,
                        at: now,
                    };
                    dead.insert(dead.generate_id()?.to_be_bytes().to_vec(), encode(&letter))?;
                }
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            },
        );
        match res {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }
}
