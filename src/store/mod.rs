//! State in sled: the only module that knows trees and key encodings.
//!
//! Trees:
//! - `batches`: batch key → [`BatchRecord`] (its group filter, the saved nextLink/deltaLink, the full-sync epoch).
//! - `links`: `conn \0 group \0 rel \0 member` → [`LinkState`] (membership state, kept after removal for versions).
//! - `groups`: `conn \0 group` → [`GroupRecord`] (whether its first full sync completed).
//! - `outbox`: `sink \0 seq(u64 BE)` → structured CloudEvent JSON, one row per sink.
//! - `retry`: `sink \0 due_ms(u64 BE) \0 seq(u64 BE)` → [`RetryRecord`]: rows that failed and wait for their next
//!   attempt, ordered by due time so the relay reads only the due ones (see `delivery.rs`).
//! - `dead_letters`: `seq(u64 BE)` → [`DeadLetter`]: events a sink gave up on (see `dlq.rs`).
//! - `sinks`: sink name → [`SinkState`] (a webhook endpoint disabled by 410 Gone).
//! - `meta`: schema version, batch-number counter.
//! - `cal_groups`: `conn \0 group` → calendar watermark and poll counters.
//! - `cal_seen`: `conn \0 group \0 blake3(event id)[..16]` → [`crate::change::calendar::SeenEvent`].
//! - `credentials`: connection → delegated refresh token (rotated on every use) and sign-in status.
//!
//! The directory is created 0700 and its files set to 0600 on unix: it holds refresh tokens.
//!
//! [`Store::commit_page`] is the heart of invariant 1: one multi-tree transaction stages the outbox rows,
//! updates membership state and moves the cursor; sled may re-run the closure, so it does no I/O.

mod calendar;
mod credentials;
mod delivery;
mod dlq;
mod harden;
mod page;

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::change::LinkState;
use crate::change::Relationship;

pub use calendar::{CalendarCommit, CalendarGroupView, CalendarSinks};
pub use credentials::{SignInStatus, SignInView, StoreVault};
pub use delivery::{Disposition, Pending, RetryRecord, SinkState};
pub use dlq::{DeadLetter, DlqFilter};
pub use page::{EmitContext, GroupRoute, PageInput, PageOutcome, RoundEnd};

/// Bumped when the on-disk layout changes.
const SCHEMA_VERSION: &[u8] = b"1";

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption, lock held by another process).
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
    /// The state directory could not be created or its permissions restricted.
    #[error("state store directory: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value did not decode.
    #[error("state store holds an undecodable value under {key}: {source}")]
    Decode {
        /// The key, lossily printed.
        key: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The store was written by an incompatible groupwatch.
    #[error("state store schema {found} is not supported (expected {expected})")]
    Schema {
        /// Found version.
        found: String,
        /// Expected version.
        expected: String,
    },
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A poll batch: ≤ 50 groups of one connection sharing one delta link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Connection name.
    pub connection: String,
    /// The batch's watched groups: those in the `$filter` of the saved link, minus any no longer watched
    /// (their entries are ignored until the next full round; re-watching one gives it a new batch).
    pub groups: Vec<String>,
    /// Whether the saved link selects owners too.
    pub owners: bool,
    /// The whole saved nextLink or deltaLink; `None` starts a full round.
    pub link: Option<String>,
    /// True while the saved link is a nextLink (mid-round).
    pub mid_round: bool,
    /// True while the current round is a full sync (initial or resync).
    pub full_round: bool,
    /// Full-sync counter; links seen in the current full round carry it.
    pub epoch: u64,
    /// Completed rounds.
    pub rounds: u64,
    /// Resyncs forced by Graph (expired/invalid tokens).
    pub resyncs: u64,
    /// Last page committed.
    pub last_page_at: Option<DateTime<Utc>>,
    /// Last round completed.
    pub last_round_at: Option<DateTime<Utc>>,
}

impl BatchRecord {
    /// A new batch that starts with a full round.
    pub fn new(connection: &str, groups: Vec<String>, owners: bool) -> Self {
        Self {
            connection: connection.to_owned(),
            groups,
            owners,
            link: None,
            mid_round: false,
            full_round: true,
            epoch: 1,
            rounds: 0,
            resyncs: 0,
            last_page_at: None,
            last_round_at: None,
        }
    }

    /// Drops the link and starts a new full round with a new epoch.
    pub fn restart_full(&mut self, groups: Vec<String>, owners: bool) {
        self.groups = groups;
        self.owners = owners;
        self.link = None;
        self.mid_round = false;
        self.full_round = true;
        self.epoch += 1;
    }
}

/// Per watched group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Its first full sync completed: later full rounds are resyncs that emit differences.
    pub known: bool,
    /// The same for owners, which may be switched on later (their first sync is then a baseline too).
    #[serde(default)]
    pub owners_known: bool,
    /// Graph reported the group deleted.
    pub deleted: bool,
}

/// How long [`Store::open`] waits for a lock that the same process is still releasing.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens sled, waiting briefly while its file lock is held. sled releases the lock from a background
/// thread some milliseconds after the last handle is dropped, so an in-process re-open (`login` then
/// `run` in the demo and the tests) can otherwise fail at random. Another live process holding the store
/// still fails, after the wait, with the lock error.
fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
        {
            // sled wraps the flock error as `Other` with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_RELEASE_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => return Ok(other?),
        }
    }
}

/// Which outbox writes a completed flush covers, so the relay flushes only when a row it is about to send
/// could still be in memory alone. `begun` counts staging commits as they start, `done` as they finish;
/// `flushed` is the `done` count read before the last completed flush started (sled's flush makes
/// everything written before the call durable). `begun == flushed` means every staged row is on disk.
#[derive(Debug, Default)]
struct Durability {
    begun: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
    flushed: std::sync::atomic::AtomicU64,
}

/// Marks one staging commit in progress; dropped when it has finished (either way).
struct Staging<'a>(&'a Durability);

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        self.0
            .done
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    durability: std::sync::Arc<Durability>,
    /// The store directory (permissions are re-tightened after credential writes).
    path: std::sync::Arc<std::path::PathBuf>,
    batches: sled::Tree,
    links: sled::Tree,
    groups: sled::Tree,
    outbox: sled::Tree,
    retry: sled::Tree,
    dead_letters: sled::Tree,
    sinks: sled::Tree,
    cal_groups: sled::Tree,
    cal_seen: sled::Tree,
    credentials: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|source| StoreError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store values always serialize")
}

/// `conn \0 group`
pub(crate) fn group_key(conn: &str, group: &str) -> Vec<u8> {
    [conn.as_bytes(), b"\0", group.as_bytes()].concat()
}

/// `conn \0 group \0 rel \0 member`
pub(crate) fn link_key(conn: &str, group: &str, rel: Relationship, member: &str) -> Vec<u8> {
    [
        conn.as_bytes(),
        b"\0",
        group.as_bytes(),
        b"\0",
        rel.singular().as_bytes(),
        b"\0",
        member.as_bytes(),
    ]
    .concat()
}

fn split_link_key(key: &[u8]) -> Option<(String, String, String, String)> {
    let mut parts = key
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    Some((parts.next()?, parts.next()?, parts.next()?, parts.next()?))
}

pub(crate) fn outbox_prefix(sink: &str) -> Vec<u8> {
    [sink.as_bytes(), b"\0"].concat()
}

/// A row waiting in a sink's outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Its key, for [`Store::outbox_ack`].
    pub key: sled::IVec,
    /// The event.
    pub event: cloudevents::Event,
}

/// Per-group membership counts for `groupwatch state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupCounts {
    /// Present members.
    pub members: u64,
    /// Present owners.
    pub owners: u64,
    /// First full sync done.
    pub known: bool,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    /// [`StoreError::Sled`] — notably when another process (a running daemon) holds the store.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, 64 * 1024 * 1024)
    }

    /// [`Store::open_with_cache`] on the blocking pool, for async callers: opening may wait for a lock
    /// (see [`LOCK_RELEASE_WAIT`]) and reads the store from disk.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub async fn open_async(path: &Path, cache_bytes: u64) -> Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_with_cache(&path, cache_bytes))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(format!("store open task: {e}"))))?
    }

    /// Opens with an explicit page-cache size in bytes.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self> {
        harden::create_private_dir(path)?;
        let db = open_db(path, cache_bytes)?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema")? {
            None => {
                meta.insert("schema", SCHEMA_VERSION)?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(StoreError::Schema {
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: String::from_utf8_lossy(SCHEMA_VERSION).into_owned(),
                });
            }
        }
        harden::restrict(path)?;
        Ok(Self {
            cal_groups: db.open_tree("cal_groups")?,
            cal_seen: db.open_tree("cal_seen")?,
            credentials: db.open_tree("credentials")?,
            batches: db.open_tree("batches")?,
            links: db.open_tree("links")?,
            groups: db.open_tree("groups")?,
            outbox: db.open_tree("outbox")?,
            retry: db.open_tree("retry")?,
            dead_letters: db.open_tree("dead_letters")?,
            sinks: db.open_tree("sinks")?,
            db,
            durability: std::sync::Arc::default(),
            path: std::sync::Arc::new(path.to_path_buf()),
        })
    }

    /// Every persisted batch, by key.
    pub fn batches(&self) -> Result<Vec<(String, BatchRecord)>> {
        self.batches
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), decode(&k, &v)?))
            })
            .collect()
    }

    /// One batch.
    pub fn batch(&self, key: &str) -> Result<Option<BatchRecord>> {
        self.batches
            .get(key)?
            .map(|v| decode(key.as_bytes(), &v))
            .transpose()
    }

    /// Writes a batch record outside a page commit (planning, resets).
    pub fn put_batch(&self, key: &str, rec: &BatchRecord) -> Result<()> {
        self.batches.insert(key, encode(rec))?;
        Ok(())
    }

    /// Deletes a batch whose groups are all gone.
    pub fn delete_batch(&self, key: &str) -> Result<()> {
        self.batches.remove(key)?;
        Ok(())
    }

    /// A fresh, never reused batch key for `conn`.
    pub fn new_batch_key(&self, conn: &str) -> Result<String> {
        let n = self.db.generate_id()?;
        Ok(format!("{conn}/{n:06}"))
    }

    /// Forgets everything about a group that is no longer watched (re-watching it later starts afresh).
    pub fn forget_group(&self, conn: &str, group: &str) -> Result<()> {
        let gk = group_key(conn, group);
        let mut prefix = gk.clone();
        prefix.push(0);
        let mut batch = sled::Batch::default();
        for k in self.links.scan_prefix(&prefix).keys() {
            batch.remove(k?);
        }
        self.links.apply_batch(batch)?;
        self.groups.remove(gk)?;
        Ok(())
    }

    /// Group ids (of `conn`) that have any stored state.
    pub fn stored_groups(&self, conn: &str) -> Result<Vec<String>> {
        let prefix = [conn.as_bytes(), b"\0"].concat();
        self.groups
            .scan_prefix(&prefix)
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[prefix.len()..]).into_owned()))
            .collect()
    }

    /// The group record, if any.
    pub fn group(&self, conn: &str, group: &str) -> Result<Option<GroupRecord>> {
        let k = group_key(conn, group);
        self.groups.get(&k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// Counts present members and owners of a group.
    pub fn group_counts(&self, conn: &str, group: &str) -> Result<GroupCounts> {
        let mut prefix = group_key(conn, group);
        prefix.push(0);
        let mut c = GroupCounts {
            known: self.group(conn, group)?.is_some_and(|g| g.known),
            ..GroupCounts::default()
        };
        for kv in self.links.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let s: LinkState = decode(&k, &v)?;
            if s.present {
                match split_link_key(&k).map(|p| p.2) {
                    Some(r) if r == "owner" => c.owners += 1,
                    _ => c.members += 1,
                }
            }
        }
        Ok(c)
    }

    /// Present member ids of a group (relationship `members`), sorted.
    pub fn present_members(&self, conn: &str, group: &str) -> Result<Vec<String>> {
        let prefix = link_key(conn, group, Relationship::Members, "");
        let mut out = Vec::new();
        for kv in self.links.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let s: LinkState = decode(&k, &v)?;
            if s.present {
                out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            }
        }
        Ok(out)
    }

    /// Keys of links in `groups` that are present but were not seen in full round `epoch`: the candidates a
    /// completed resync removes. Read outside the page transaction (sled transactions cannot scan) and
    /// re-checked inside it.
    pub fn stale_links(&self, conn: &str, groups: &[String], epoch: u64) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for g in groups {
            let mut prefix = group_key(conn, g);
            prefix.push(0);
            for kv in self.links.scan_prefix(&prefix) {
                let (k, v) = kv?;
                let s: LinkState = decode(&k, &v)?;
                if s.present && s.seen_epoch < epoch {
                    out.push(k.to_vec());
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` oldest rows of a sink's outbox.
    pub fn outbox_peek(&self, sink: &str, limit: usize) -> Result<Vec<OutboxRow>> {
        self.outbox
            .scan_prefix(outbox_prefix(sink))
            .take(limit)
            .map(|kv| {
                let (key, v) = kv?;
                let event = decode(&key, &v)?;
                Ok(OutboxRow { key, event })
            })
            .collect()
    }

    /// Deletes delivered rows (invariant 2: only after the sink confirmed).
    pub fn outbox_ack(&self, rows: &[OutboxRow]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for r in rows {
            batch.remove(r.key.clone());
        }
        self.outbox.apply_batch(batch)?;
        Ok(())
    }

    /// Rows waiting for `sink`, counted up to `cap` (enough to compare with a high-water mark).
    pub fn outbox_depth(&self, sink: &str, cap: usize) -> usize {
        self.outbox
            .scan_prefix(outbox_prefix(sink))
            .keys()
            .take(cap)
            .count()
    }

    /// Whether any of `sinks` has more than `high_water` events waiting: in its outbox, or scheduled for a
    /// retry (a failing webhook's events wait there; they count, so the store stays bounded).
    pub fn any_over_high_water<'a>(
        &self,
        sinks: impl IntoIterator<Item = &'a String>,
        high_water: u64,
    ) -> bool {
        let cap = usize::try_from(high_water).unwrap_or(usize::MAX);
        let limit = cap.saturating_add(1);
        sinks.into_iter().any(|s| {
            let queued = self.outbox_depth(s, limit);
            queued > cap || queued + self.retry_depth(s, limit - queued) > cap
        })
    }

    /// Flushes to disk from synchronous code (CLI commands).
    pub fn flush_blocking(&self) -> Result<()> {
        let covered = self.staged_so_far();
        self.db.flush()?;
        self.mark_flushed(covered);
        Ok(())
    }

    /// Flushes to disk; called last on shutdown.
    pub async fn flush(&self) -> Result<()> {
        let covered = self.staged_so_far();
        self.db.flush_async().await?;
        self.mark_flushed(covered);
        Ok(())
    }

    /// Flushes only if some outbox row staged since the last flush may not be on disk yet: what the relay
    /// calls before a sink sees any row. Its own deletions of delivered rows need no flush (losing one
    /// repeats an event with the same id), so a steady stream of deliveries does not fsync per batch.
    pub async fn flush_staged(&self) -> Result<()> {
        if self.staged_unflushed() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Whether an outbox write has begun since the start of the last completed flush.
    pub fn staged_unflushed(&self) -> bool {
        let d = &self.durability;
        d.begun.load(std::sync::atomic::Ordering::SeqCst)
            > d.flushed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn staged_so_far(&self) -> u64 {
        self.durability
            .done
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn mark_flushed(&self, covered: u64) {
        self.durability
            .flushed
            .fetch_max(covered, std::sync::atomic::Ordering::SeqCst);
    }

    /// Call before a write that stages outbox rows; keep the guard until the write has returned.
    fn staging(&self) -> Staging<'_> {
        self.durability
            .begun
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Staging(&self.durability)
    }

    /// Runs one page commit (see [`PageInput`]).
    ///
    /// # Errors
    /// [`StoreError`] when sled fails; nothing is written then (the transaction aborts whole).
    pub fn commit_page(&self, input: &PageInput<'_>) -> Result<PageOutcome> {
        let _staging = self.staging();
        let res = (&self.batches, &self.links, &self.groups, &self.outbox).transaction(
            |(batches, links, groups, outbox)| page::apply(input, batches, links, groups, outbox),
        );
        match res {
            Ok(outcome) => Ok(outcome),
            Err(sled::transaction::TransactionError::Abort(e)) => Err(e),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }
}

#[cfg(test)]
mod tests;
