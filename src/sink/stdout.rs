//! Standard output: JSON lines for programs, or one friendly sentence per event for people.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use cloudevents::{AttributesReader, Event};

use super::{Outcome, Sink, SinkError};
use crate::change::envelope::event_data;
use crate::change::{ChangeKind, Relationship};
use crate::config::StdoutFormat;

/// Object id → display name, for the pretty format (the demo knows its simulated people).
pub type NameBook = Arc<HashMap<String, String>>;

/// Writes events to standard output.
#[derive(Debug)]
pub struct StdoutSink {
    name: String,
    format: StdoutFormat,
    names: NameBook,
}

impl StdoutSink {
    /// A stdout sink in `format`.
    pub fn new(name: &str, format: StdoutFormat) -> Self {
        Self {
            name: name.to_owned(),
            format,
            names: NameBook::default(),
        }
    }

    /// Pretty output that shows names instead of object ids where known.
    pub fn with_names(mut self, names: NameBook) -> Self {
        self.names = names;
        self
    }

    fn label<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map_or(id, String::as_str)
    }

    /// One line for people, e.g. `12:00:03  + Ada Lovelace joined Engineering (user)  id 3f2a…`.
    pub fn pretty_line(&self, ev: &Event) -> String {
        if ev.ty().starts_with("groupwatch.event.") {
            return self.pretty_calendar_line(ev);
        }
        let Some(d) = event_data(ev) else {
            return format!("{} {}", ev.ty(), ev.id());
        };
        let time = d.detected_at.format("%H:%M:%S");
        let who = self.label(&d.id);
        let group = self.label(&d.group_id);
        let role = match d.relationship {
            Relationship::Members => "",
            Relationship::Owners => " as owner",
        };
        let what = match d.change {
            ChangeKind::Added => format!("\x1b[32m+ {who}\x1b[0m joined {group}{role}"),
            ChangeKind::Removed => {
                let reason = d
                    .removed
                    .and_then(|r| r.reason)
                    .unwrap_or_else(|| "removed".into());
                format!("\x1b[31m- {who}\x1b[0m left {group}{role} ({reason})")
            }
        };
        format!("{time}  {what}  [{}]  id {}", d.member_type, &ev.id()[..12])
    }
}

impl StdoutSink {
    /// One line for a calendar event, e.g. `12:00:03  ✚ new event "Design review" in Engineering`.
    fn pretty_calendar_line(&self, ev: &Event) -> String {
        let Some(d) = crate::change::event_envelope::calendar_data(ev) else {
            return format!("{} {}", ev.ty(), ev.id());
        };
        let subject = d.event.subject.as_deref().unwrap_or("(no subject)");
        let start = d
            .event
            .start
            .as_ref()
            .and_then(|s| s.date_time.as_deref())
            .map(|s| s.get(..16).unwrap_or(s).replace('T', " "))
            .unwrap_or_default();
        format!(
            "{}  \x1b[36m✚ {} event\x1b[0m \"{subject}\" in {} (starts {start} UTC)  id {}",
            d.detected_at.format("%H:%M:%S"),
            match d.change {
                crate::change::calendar::EventChange::Created => "new",
                crate::change::calendar::EventChange::Updated => "updated",
                crate::change::calendar::EventChange::Deleted => "deleted",
            },
            self.label(&d.group_id),
            &ev.id()[..12]
        )
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, batch: &[Event]) -> Vec<Outcome> {
        Outcome::all(batch.len(), self.write(batch).await)
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

impl StdoutSink {
    async fn write(&self, batch: &[Event]) -> Result<(), SinkError> {
        let mut out = String::new();
        for ev in batch {
            match self.format {
                StdoutFormat::Json => {
                    out.push_str(&serde_json::to_string(ev).map_err(|e| {
                        SinkError::Permanent(format!("event does not serialize: {e}"))
                    })?)
                }
                StdoutFormat::Pretty => out.push_str(&self.pretty_line(ev)),
            }
            out.push('\n');
        }
        tokio::task::spawn_blocking(move || {
            let mut lock = std::io::stdout().lock();
            lock.write_all(out.as_bytes()).and_then(|()| lock.flush())
        })
        .await
        .map_err(|e| SinkError::Retryable(e.to_string()))?
        .map_err(|e| SinkError::Retryable(format!("stdout: {e}")))
    }
}
