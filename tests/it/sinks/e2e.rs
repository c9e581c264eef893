//! End to end: simulated tenant churn → the daemon → Kafka (tansu) and a webhook at once, the webhook
//! failing for a while. Both must receive every event exactly once by id.

use std::collections::HashSet;
use std::time::Duration;

use groupwatch::app::Daemon;
use groupwatch::config::Config;
use groupwatch::sim::{MemberKind, RemovedReason, Sim, SimConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::sinks::broker::{consume, create_topic, shared_broker};
use crate::support::sinks::receiver::Receiver;
use crate::support::sinks::{SECRET_A, unique, wait_for};

const GROUPS: [&str; 3] = [
    "aaaaaaaa-0000-0000-0000-000000000001",
    "aaaaaaaa-0000-0000-0000-000000000002",
    "aaaaaaaa-0000-0000-0000-000000000003",
];

/// Store (under `dir`), a fast relay and the simulator's connection `sim`.
fn base_toml(sim: &Sim, dir: &std::path::Path, batch_size: usize) -> String {
    format!(
        r#"
[store]
path = "{store}"

[relay]
batch_size = {batch_size}
retry_initial_ms = 20
retry_max_secs = 1

[connections.sim]
tenant_id = "{tenant}"
client_id = "{client}"
client_secret = "{secret}"
graph_url = "{graph}"
authority_url = "{graph}"
"#,
        store = dir.join("state").display(),
        tenant = sim.tenant_id(),
        client = sim.client_id(),
        secret = sim.client_secret(),
        graph = sim.base_url(),
    )
}

fn member(n: usize) -> String {
    format!("bbbbbbbb-0000-0000-0000-{n:012}")
}

#[tokio::test]
async fn tenant_churn_reaches_kafka_and_a_flaky_webhook_exactly_once() {
    let Some(brokers) = shared_broker() else {
        return;
    };
    let topic = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    create_topic(&brokers, &topic, 3).await;
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let rx = Receiver::start(&[SECRET_A]).await;
    let dir = tempfile::tempdir().unwrap();
    let groups = GROUPS.map(|g| format!("\"{g}\"")).join(", ");
    let cfg = Config::from_toml(&format!(
        r#"{base}
[sinks.kafka]
type = "kafka"
brokers = ["{brokers}"]
topic = "{topic}"

[sinks.hooks]
type = "webhook"
url = "{hook}"
secrets = ["{SECRET_A}"]
retry_schedule_secs = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]

[[subscriptions]]
id = "e2e"
connection = "sim"
kind = "members"
groups = [{groups}]
sinks = ["kafka", "hooks"]
"#,
        base = base_toml(&sim, dir.path(), 10),
        hook = rx.url(),
    ))
    .unwrap();

    let mut next = 0;
    for g in GROUPS {
        sim.create_group(g, g);
        for _ in 0..3 {
            next += 1;
            sim.add_member(g, &member(next), MemberKind::User);
        }
    }
    let shutdown = CancellationToken::new();
    let daemon = Daemon::build(cfg, shutdown.clone()).await.unwrap();
    daemon.poll_all_once().await.unwrap(); // baseline: from_now, no events
    let tracker = TaskTracker::new();
    daemon.spawn_relays(&tracker);

    rx.set_status(503);
    let mut expected = 0;
    let mut seen: Vec<(String, String)> = Vec::new();
    for round in 0..6 {
        let mut fresh = Vec::new();
        for g in GROUPS {
            for _ in 0..4 {
                next += 1;
                assert!(sim.add_member(g, &member(next), MemberKind::User));
                fresh.push((g.to_owned(), member(next)));
                expected += 1;
            }
        }
        // Remove two members added in an earlier round, already seen by a poll (a member added and removed
        // between two polls is no change at all).
        let n = seen.len().min(2);
        for (g, m) in seen.drain(..n) {
            assert!(sim.remove_member(&g, &m, RemovedReason::Deleted));
            expected += 1;
        }
        seen.extend(fresh);
        let staged: usize = daemon
            .poll_all_once()
            .await
            .unwrap()
            .iter()
            .map(|r| r.events)
            .sum();
        assert!(staged > 0, "round {round} staged events");
        if round == 3 {
            rx.set_status(200); // the webhook recovers
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Gates only: everything arrived at least once and nothing is left to send.
    rx.wait_delivered(expected, Duration::from_secs(60)).await;
    let store = daemon.store().clone();
    wait_for(Duration::from_secs(60), "settled outboxes", || {
        ["kafka", "hooks"]
            .iter()
            .all(|s| store.outbox_depth(s, 10) + store.retry_depth(s, 10) == 0)
    })
    .await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;

    // Only now, with every relay finished, read what arrived: a late duplicate has nowhere to hide.
    let hook_ids = rx.delivered_ids();
    let kafka = consume(
        &brokers,
        &topic,
        expected,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .await;
    let kafka_ids: Vec<String> = kafka.iter().map(|r| r.header("ce_id").to_owned()).collect();

    assert!(
        rx.hits().iter().any(|h| h.status == 503),
        "the webhook did fail for a while"
    );
    assert_eq!(
        hook_ids.len(),
        expected,
        "webhook: every event exactly once"
    );
    assert!(unique(&hook_ids));
    assert_eq!(kafka_ids.len(), expected, "kafka: every event exactly once");
    assert!(unique(&kafka_ids));
    let (a, b): (HashSet<_>, HashSet<_>) = (hook_ids.iter().collect(), kafka_ids.iter().collect());
    assert_eq!(a, b, "both sinks got the same events");
    assert_eq!(store.dlq_count("hooks").unwrap(), 0);
}

/// A webhook that is down for the whole run: the other sink must keep getting every event and polling
/// must not pause, because the down webhook's events move onto their own retry schedules at once instead of
/// waiting at the head of its outbox.
#[tokio::test]
async fn a_down_webhook_never_pauses_polling_for_the_other_sinks() {
    let (daemon, sim, rx, dir, shutdown, tracker) = down_webhook_world(100).await;
    let file = dir.path().join("events.jsonl");
    let store = daemon.store().clone();
    let mut expected = 0;
    for round in 0..5 {
        for _ in 0..6 {
            expected += 1;
            sim.add_member(GROUPS[0], &member(expected), MemberKind::User);
        }
        let reports = daemon.poll_all_once().await.unwrap();
        assert!(
            reports.iter().all(|r| !r.backpressure && r.events == 6),
            "round {round}: polling went on: {reports:?}"
        );
        // The down webhook's rows leave its outbox within moments (one request, the rest deferred);
        // holding them there instead would drain about one row per backoff step (up to 1 s).
        wait_for(Duration::from_secs(3), "the hooks outbox drained", || {
            store.outbox_depth("hooks", 10) == 0 && store.outbox_depth("file", 10) == 0
        })
        .await;
    }
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    let got = crate::support::read_events(&file);
    assert_eq!(got.len(), expected, "the file sink got every event");
    assert_eq!(
        store.retry_depth("hooks", usize::MAX),
        expected,
        "every webhook event waits on its schedule: nothing lost"
    );
    assert!(rx.delivered_ids().is_empty());
}

/// The events waiting for a down webhook (outbox and retry schedule) count against the high-water mark, so
/// the store stays bounded: past the mark, polling pauses (the cursor stays, nothing is lost).
#[tokio::test]
async fn events_waiting_for_a_down_webhook_count_against_the_high_water_mark() {
    let (daemon, sim, _rx, _dir, shutdown, tracker) = down_webhook_world(5).await;
    let store = daemon.store().clone();
    for i in 1..=6 {
        sim.add_member(GROUPS[0], &member(i), MemberKind::User);
    }
    let first = daemon.poll_all_once().await.unwrap();
    assert!(first.iter().all(|r| !r.backpressure && r.events == 6));
    wait_for(Duration::from_secs(3), "the hooks outbox drained", || {
        store.outbox_depth("hooks", 10) == 0
    })
    .await;
    sim.add_member(GROUPS[0], &member(7), MemberKind::User);
    let second = daemon.poll_all_once().await.unwrap();
    assert!(
        second.iter().all(|r| r.backpressure && r.events == 0),
        "6 events wait for the webhook, more than the mark of 5: {second:?}"
    );
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

/// A daemon with a JSONL sink and a webhook that answers 503, after its baseline round, relays running.
async fn down_webhook_world(
    high_water: u64,
) -> (
    Daemon,
    Sim,
    Receiver,
    tempfile::TempDir,
    CancellationToken,
    TaskTracker,
) {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let cfg = Config::from_toml(&format!(
        r#"{base}
[poll]
outbox_high_water = {high_water}

[sinks.file]
type = "jsonl"
path = "{file}"

[sinks.hooks]
type = "webhook"
url = "{hook}"
secrets = ["{SECRET_A}"]
retry_schedule_secs = [3600]

[[subscriptions]]
id = "down"
connection = "sim"
kind = "members"
groups = ["{group}"]
sinks = ["file", "hooks"]
"#,
        base = base_toml(&sim, dir.path(), 4),
        file = file.display(),
        hook = rx.url(),
        group = GROUPS[0],
    ))
    .unwrap();
    sim.create_group(GROUPS[0], "g");
    let shutdown = CancellationToken::new();
    let daemon = Daemon::build(cfg, shutdown.clone()).await.unwrap();
    daemon.poll_all_once().await.unwrap(); // baseline
    let tracker = TaskTracker::new();
    daemon.spawn_relays(&tracker);
    (daemon, sim, rx, dir, shutdown, tracker)
}
