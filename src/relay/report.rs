//! The sink section of `groupwatch state`: per sink, rows waiting, rows scheduled for a retry, dead letters,
//! and whether the endpoint was disabled.

use std::fmt::Write;

use crate::store::{Store, StoreError};

/// One line per sink, e.g. `  hooks: 3 waiting, 2 retrying (next 2026-01-01T00:00:05Z), 1 dead-lettered, DISABLED since … (410 Gone)`.
///
/// # Errors
/// Store read failures.
pub fn sink_report<'a>(
    store: &Store,
    sinks: impl IntoIterator<Item = &'a String>,
) -> Result<String, StoreError> {
    let mut out = String::new();
    for name in sinks {
        let waiting = store.outbox_depth(name, usize::MAX);
        let retrying = store.retry_depth(name, usize::MAX);
        let dead = store.dlq_count(name)?;
        let _ = write!(out, "  {name}: {waiting} waiting, {retrying} retrying");
        if let Some(next) = store.next_retry_due(name)? {
            let _ = write!(out, " (next {})", next.to_rfc3339());
        }
        let _ = write!(out, ", {dead} dead-lettered");
        let state = store.sink_state(name)?;
        if let Some(at) = state.disabled_at {
            let why = state.disabled_reason.unwrap_or_default();
            let _ = write!(out, ", DISABLED since {} ({why})", at.to_rfc3339());
        }
        out.push('\n');
    }
    Ok(out)
}
