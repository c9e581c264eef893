//! Test support for the sink scenarios: events, stores, sinks built from TOML (so config parsing is part of
//! every test), relay tasks, and the real receiver and brokers in the submodules.

pub mod broker;
pub mod receiver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cloudevents::Event;
use groupwatch::change::{Change, ChangeKind, Relationship};
use groupwatch::config::{Config, RelayConfig};
use groupwatch::relay::{self, Notifier};
use groupwatch::sink::AnySink;
use groupwatch::store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Two valid Standard Webhooks secrets (24-byte keys).
pub const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SECRET_B: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A realistic membership event: member `m{n}` added to (or removed from) `group`.
pub fn event(group: &str, n: u64, kind: ChangeKind) -> Event {
    Change {
        connection: "contoso".into(),
        tenant: "11111111-1111-1111-1111-111111111111".into(),
        group: group.into(),
        rel: Relationship::Members,
        member: format!("m{n:05}"),
        member_type: "user".into(),
        kind,
        reason: (kind == ChangeKind::Removed).then(|| "deleted".into()),
        version: n,
        detected_at: Utc::now(),
    }
    .to_event()
}

/// A store in a fresh temp dir (keep the dir alive as long as the store).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state")).unwrap();
    (dir, store)
}

/// Builds sink `name` from a `[sinks.NAME]` TOML body, through the real config loader and validation.
pub fn sink_from_toml(name: &str, body: &str) -> AnySink {
    let cfg = Config::from_toml(&format!("[sinks.{name}]\n{body}")).unwrap();
    AnySink::from_config(name, &cfg.sinks[name]).unwrap()
}

/// A webhook sink to `url` with a millisecond retry schedule.
pub fn webhook_sink(name: &str, url: &str, secrets: &[&str], schedule: &str) -> AnySink {
    let secrets = secrets
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    sink_from_toml(
        name,
        &format!(
            "type = \"webhook\"\nurl = \"{url}\"\nsecrets = [{secrets}]\ntimeout_secs = 2\nretry_schedule_secs = {schedule}\nretry_jitter = 0.0\n"
        ),
    )
}

/// A Kafka sink writing to `topic` with a short delivery timeout, plus extra TOML lines.
pub fn kafka_sink(name: &str, brokers: &str, topic: &str, extra: &str) -> AnySink {
    sink_from_toml(
        name,
        &format!(
            "type = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{topic}\"\ndelivery_timeout_secs = 5\nhealthcheck_timeout_secs = 5\n{extra}\n"
        ),
    )
}

/// Fast relay settings for tests.
pub fn relay_cfg() -> RelayConfig {
    RelayConfig {
        batch_size: 50,
        retry_initial_ms: 20,
        retry_max_secs: 1,
    }
}

/// A running relay loop for one sink.
pub struct RelayTask {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl RelayTask {
    pub fn spawn(store: &Store, sink: Arc<AnySink>) -> RelayTask {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(relay::run(
            store.clone(),
            sink,
            relay_cfg(),
            Notifier::default(),
            stop.clone(),
        ));
        RelayTask { stop, handle }
    }

    /// Stops the loop (it finishes its in-flight batch) and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("relay stops")
            .unwrap();
    }
}

/// Polls `cond` until true; panics with `what` after `timeout`.
pub async fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ids of events, in order.
pub fn ids(events: &[Event]) -> Vec<String> {
    use cloudevents::AttributesReader;
    events.iter().map(|e| e.id().to_owned()).collect()
}

/// True when no id occurs twice.
pub fn unique(ids: &[String]) -> bool {
    let set: std::collections::HashSet<&String> = ids.iter().collect();
    set.len() == ids.len()
}
