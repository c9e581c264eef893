//! `groupwatch dlq list | replay | purge`: inspect dead letters, put them back on their sink's outbox, or
//! delete them. Like `state`, these open the store, which sled lets only one process hold: stop the daemon.

use std::fmt::Write;

use anyhow::{Context, bail};
use cloudevents::AttributesReader;

use crate::config::Config;
use crate::store::{DlqFilter, Store};

fn open(cfg: &Config) -> anyhow::Result<Store> {
    Store::open(&cfg.store.path).with_context(|| {
        format!(
            "opening the state store at {} (sled allows one process at a time: stop the daemon first)",
            cfg.store.path.display()
        )
    })
}

/// One line per dead letter (or one JSON object per line with `json`).
///
/// # Errors
/// Store failures.
pub fn list(cfg: &Config, filter: &DlqFilter, json: bool) -> anyhow::Result<String> {
    let store = open(cfg)?;
    let mut out = String::new();
    let letters = store.dlq_list(filter)?;
    for (seq, d) in &letters {
        if json {
            let line = serde_json::json!({
                "seq": seq, "sink": d.sink, "attempts": d.attempts, "error": d.error,
                "at": d.at, "event": d.event,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{seq:>6}  {}  sink={}  id={}  type={}  attempts={}  error={}",
                d.at.to_rfc3339(),
                d.sink,
                d.event.id(),
                d.event.ty(),
                d.attempts,
                d.error
            )?;
        }
    }
    if !json {
        writeln!(out, "{} dead letter(s)", letters.len())?;
    }
    Ok(out)
}

/// Moves matching dead letters back to their sinks' outboxes (same event ids, so receivers can still drop
/// repeats) and re-enables any sink among them that a 410 Gone had disabled.
///
/// # Errors
/// A dead letter whose sink is no longer configured (it would never be delivered), or store failures.
pub fn replay(cfg: &Config, filter: &DlqFilter) -> anyhow::Result<String> {
    let store = open(cfg)?;
    let letters = store.dlq_list(filter)?;
    let mut unknown: Vec<&str> = letters
        .iter()
        .map(|(_, d)| d.sink.as_str())
        .filter(|s| !cfg.sinks.contains_key(*s))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        bail!(
            "dead letters of sinks that are no longer configured: {} (select others with --sink, or purge them)",
            unknown.join(", ")
        );
    }
    let moved = store.dlq_replay(filter)?;
    let mut out = String::new();
    let mut sinks: Vec<&str> = moved.iter().map(|d| d.sink.as_str()).collect();
    // `--sink NAME` re-enables that sink even when no dead letter is left (they may have been purged).
    if let Some(s) = filter
        .sink
        .as_deref()
        .filter(|s| cfg.sinks.contains_key(*s))
    {
        sinks.push(s);
    }
    sinks.sort_unstable();
    sinks.dedup();
    for s in &sinks {
        let n = moved.iter().filter(|d| d.sink == *s).count();
        if n > 0 {
            writeln!(out, "replayed {n} event(s) to sink {s}")?;
        }
        let before = store.enable_sink(s)?;
        if let Some(at) = before.disabled_at {
            writeln!(
                out,
                "sink {s} was disabled since {} and is enabled again",
                at.to_rfc3339()
            )?;
        }
    }
    if moved.is_empty() {
        writeln!(out, "no dead letter matched")?;
    }
    store.flush_blocking()?;
    Ok(out)
}

/// Deletes matching dead letters.
///
/// # Errors
/// Store failures.
pub fn purge(cfg: &Config, filter: &DlqFilter) -> anyhow::Result<String> {
    let store = open(cfg)?;
    let n = store.dlq_purge(filter)?;
    store.flush_blocking()?;
    Ok(format!("purged {n} dead letter(s)\n"))
}
