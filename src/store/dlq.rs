//! Dead letters: events a sink gave up on (permanent rejection, exhausted retries, endpoint gone), kept with
//! the sink, the last error and the attempt count until an operator replays or purges them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Result, Store, StoreError, decode, encode};

/// One dead-lettered event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The sink that gave up.
    pub sink: String,
    /// The event, unchanged (replay re-sends it with the same id).
    pub event: cloudevents::Event,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
}

/// Which dead letters a `list`, `replay` or `purge` touches. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    /// Only this sink's.
    pub sink: Option<String>,
    /// Only these CloudEvent ids.
    pub ids: Vec<String>,
}

impl DlqFilter {
    fn matches(&self, d: &DeadLetter) -> bool {
        use cloudevents::AttributesReader;
        self.sink.as_ref().is_none_or(|s| *s == d.sink)
            && (self.ids.is_empty() || self.ids.iter().any(|i| i == d.event.id()))
    }
}

impl Store {
    /// Matching dead letters, oldest first, with their sequence numbers.
    pub fn dlq_list(&self, filter: &DlqFilter) -> Result<Vec<(u64, DeadLetter)>> {
        let mut out = Vec::new();
        for kv in &self.dead_letters {
            let (k, v) = kv?;
            let d: DeadLetter = decode(&k, &v)?;
            if filter.matches(&d) {
                let seq = k
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or_default();
                out.push((seq, d));
            }
        }
        Ok(out)
    }

    /// Dead letters of `sink`, counted.
    pub fn dlq_count(&self, sink: &str) -> Result<usize> {
        let f = DlqFilter {
            sink: Some(sink.to_owned()),
            ids: Vec::new(),
        };
        Ok(self.dlq_list(&f)?.len())
    }

    /// Moves matching dead letters back to the end of their sink's outbox (same event, same id), in one
    /// transaction. Returns what was moved.
    ///
    /// # Errors
    /// Store failures; nothing is moved then.
    pub fn dlq_replay(&self, filter: &DlqFilter) -> Result<Vec<DeadLetter>> {
        let found = self.dlq_list(filter)?;
        let _staging = self.staging();
        let res = (&self.dead_letters, &self.outbox).transaction(|(dead, outbox)| {
            for (seq, d) in &found {
                dead.remove(seq.to_be_bytes().to_vec())?;
                let key = [
                    d.sink.as_bytes(),
                    b"\0",
                    &outbox.generate_id()?.to_be_bytes(),
                ]
                .concat();
                outbox.insert(key, encode(&d.event))?;
            }
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        });
        match res {
            Ok(()) => Ok(found.into_iter().map(|(_, d)| d).collect()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// Deletes matching dead letters. Returns how many.
    pub fn dlq_purge(&self, filter: &DlqFilter) -> Result<usize> {
        let found = self.dlq_list(filter)?;
        let mut batch = sled::Batch::default();
        for (seq, _) in &found {
            batch.remove(seq.to_be_bytes().to_vec());
        }
        self.dead_letters.apply_batch(batch)?;
        Ok(found.len())
    }
}
