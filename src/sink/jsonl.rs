//! Append-only JSON-lines file. A batch counts as delivered only after `fsync`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cloudevents::Event;

use super::{Outcome, Sink, SinkError};

/// Appends one structured CloudEvent per line.
#[derive(Debug)]
pub struct JsonlSink {
    name: String,
    path: PathBuf,
    // A std mutex on purpose: it is only taken inside `spawn_blocking`, never across an `.await`.
    file: Arc<Mutex<Option<std::fs::File>>>,
}

impl JsonlSink {
    /// A sink appending to `path` (opened lazily, created if missing).
    pub fn new(name: &str, path: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            path,
            file: Arc::new(Mutex::new(None)),
        }
    }

    fn open(path: &PathBuf) -> std::io::Result<std::fs::File> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, batch: &[Event]) -> Vec<Outcome> {
        Outcome::all(batch.len(), self.append(batch).await)
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || Self::open(&path).map(drop))
            .await
            .map_err(|e| SinkError::Retryable(e.to_string()))?
            .map_err(|e| SinkError::Permanent(format!("{}: {e}", self.path.display())))
    }
}

impl JsonlSink {
    async fn append(&self, batch: &[Event]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for ev in batch {
            serde_json::to_writer(&mut buf, ev)
                .map_err(|e| SinkError::Permanent(format!("event does not serialize: {e}")))?;
            buf.push(b'\n');
        }
        let (file, path) = (self.file.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut guard = file.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                *guard = Some(Self::open(&path)?);
            }
            let f = guard.as_mut().expect("opened above");
            let res = f.write_all(&buf).and_then(|()| f.sync_data());
            if res.is_err() {
                // Reopen next time: the handle may be broken (disk full, file rotated away).
                *guard = None;
            }
            res
        })
        .await
        .map_err(|e| SinkError::Retryable(format!("writer task failed: {e}")))?
        .map_err(|e| SinkError::Retryable(format!("{}: {e}", self.path.display())))
    }
}
