//! Kafka sink against a real Kafka-protocol broker (tansu), read back with a real rdkafka consumer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cloudevents::{AttributesReader, Event};
use groupwatch::change::ChangeKind::{Added, Removed};
use groupwatch::relay;
use groupwatch::store::Store;

use crate::support::sinks::broker::{
    Consumed, Tansu, consume, create_topic, shared_broker, tansu_bin,
};
use crate::support::sinks::{RelayTask, event, ids, kafka_sink, temp_store, unique, wait_for};

fn topic(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// `per_group` events for each of `groups`, interleaved across groups.
fn interleaved(groups: &[&str], per_group: u64, offset: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..per_group {
        for g in groups {
            out.push(event(
                g,
                offset + i,
                if i % 3 == 2 { Removed } else { Added },
            ));
        }
    }
    out
}

fn stage(store: &Store, sink: &str, evs: &[Event]) {
    for e in evs {
        store.outbox_push(sink, e).unwrap();
    }
}

fn group_of(ev: &Event) -> String {
    groupwatch::change::envelope::event_data(ev)
        .unwrap()
        .group_id
}

/// Per group: the ids in the order the consumer saw them (one partition per key, so offset order).
fn by_group(records: &[Consumed]) -> HashMap<String, Vec<String>> {
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in sorted {
        out.entry(r.key.clone())
            .or_default()
            .push(r.header("ce_id").to_owned());
    }
    out
}

#[tokio::test]
async fn kafka_sink_writes_keyed_binary_cloudevents_in_group_order() {
    let Some(brokers) = shared_broker() else {
        return;
    };
    let t = topic("binary");
    create_topic(&brokers, &t, 3).await;
    let (_d, store) = temp_store();
    let sink = kafka_sink("events", &brokers, &t, "");
    let groups = ["g-alpha", "g-bravo", "g-charlie", "g-delta"];
    let evs = interleaved(&groups, 30, 0);
    stage(&store, "events", &evs);
    assert_eq!(relay::drain(&store, &sink, 50).await.unwrap(), evs.len());
    assert_eq!(store.outbox_depth("events", 10), 0);

    let got = consume(
        &brokers,
        &t,
        evs.len(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(got.len(), evs.len(), "no loss, no duplicate");
    let staged: HashMap<String, &Event> = evs.iter().map(|e| (e.id().to_owned(), e)).collect();
    for r in &got {
        let ev = staged[r.header("ce_id")];
        assert_eq!(r.key, group_of(ev), "key = group id");
        assert_eq!(r.header("ce_specversion"), "1.0");
        assert_eq!(r.header("ce_type"), ev.ty());
        assert_eq!(r.header("ce_source"), ev.source().to_string());
        assert_eq!(r.header("ce_time"), ev.time().unwrap().to_rfc3339());
        assert_eq!(r.header("content-type"), "application/json");
        let data: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(data["groupId"], r.key.as_str());
        assert_eq!(data["id"], ev.subject().unwrap());
    }
    let order = by_group(&got);
    for g in groups {
        let want: Vec<String> = evs
            .iter()
            .filter(|e| group_of(e) == g)
            .map(|e| e.id().to_owned())
            .collect();
        assert_eq!(order[g], want, "group {g} in staged order");
    }
}

#[tokio::test]
async fn kafka_structured_mode_routes_types_to_their_topics() {
    let Some(brokers) = shared_broker() else {
        return;
    };
    let (added, removed) = (topic("added"), topic("removed"));
    create_topic(&brokers, &added, 1).await;
    create_topic(&brokers, &removed, 1).await;
    let (_d, store) = temp_store();
    let extra = format!(
        "mode = \"structured\"\ntopics = {{ \"groupwatch.member.removed\" = \"{removed}\" }}"
    );
    let sink = kafka_sink("events", &brokers, &added, &extra);
    let evs = interleaved(&["g1"], 9, 0);
    stage(&store, "events", &evs);
    relay::drain(&store, &sink, 50).await.unwrap();
    let a = consume(
        &brokers,
        &added,
        6,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    let r = consume(
        &brokers,
        &removed,
        3,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!((a.len(), r.len()), (6, 3));
    for (records, removed_topic) in [(&a, false), (&r, true)] {
        for rec in records {
            assert_eq!(
                rec.header("content-type"),
                "application/cloudevents+json; charset=UTF-8"
            );
            assert!(
                rec.header("ce_id").is_empty(),
                "structured mode has no ce_ headers"
            );
            let ev: Event = serde_json::from_slice(&rec.payload).unwrap();
            assert!(evs.contains(&ev), "the value is the whole event");
            assert_eq!(rec.key, "g1");
            assert_eq!(
                ev.ty() == "groupwatch.member.removed",
                removed_topic,
                "routed by type"
            );
        }
    }
}

#[tokio::test]
async fn a_full_producer_queue_waits_and_never_drops() {
    let Some(brokers) = shared_broker() else {
        return;
    };
    let t = topic("queuefull");
    create_topic(&brokers, &t, 2).await;
    let (_d, store) = temp_store();
    // A queue of 3 messages against batches of 200: QueueFull on almost every send.
    let sink = kafka_sink(
        "events",
        &brokers,
        &t,
        "[sinks.events.properties]\n\"queue.buffering.max.messages\" = 3",
    );
    let evs = interleaved(&["g1", "g2"], 200, 0);
    stage(&store, "events", &evs);
    assert_eq!(relay::drain(&store, &sink, 200).await.unwrap(), 400);
    let got = consume(
        &brokers,
        &t,
        400,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    let got_ids: Vec<String> = got.iter().map(|r| r.header("ce_id").to_owned()).collect();
    assert!(unique(&got_ids));
    assert_eq!(
        got_ids.iter().collect::<HashSet<_>>(),
        ids(&evs).iter().collect::<HashSet<_>>()
    );
}

#[tokio::test]
async fn no_event_is_lost_or_duplicated_across_a_broker_restart() {
    let Some(bin) = tansu_bin() else { return };
    let mut broker = Tansu::start(bin);
    let brokers = broker.addr();
    let t = "restart";
    create_topic(&brokers, t, 3).await;
    let (_d, store) = temp_store();
    let sink = Arc::new(kafka_sink("events", &brokers, t, ""));
    let relay = RelayTask::spawn(&store, sink.clone());

    // Many batches of 50: the broker is killed mid-stream, while the relay is still publishing.
    let staged = interleaved(&["g1", "g2", "g3"], 1000, 0);
    stage(&store, "events", &staged);
    wait_for(Duration::from_secs(30), "the first batches acked", || {
        store.outbox_depth("events", staged.len()) < staged.len()
    })
    .await;
    broker.down();
    // Longer than delivery_timeout_secs (5): the batch in flight at the kill has settled (acked or kept),
    // and the attempts since time out; nothing may be acked while the broker is down.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let unacked: Vec<String> = store
        .pending("events", chrono::Utc::now(), staged.len())
        .unwrap()
        .iter()
        .map(|p| p.row.event.id().to_owned())
        .collect();
    assert!(
        !unacked.is_empty() && unacked.len() < staged.len(),
        "the kill came mid-stream ({} of {} unacked)",
        unacked.len(),
        staged.len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.outbox_depth("events", staged.len()),
        unacked.len(),
        "events wait in the outbox while the broker is down"
    );
    assert_eq!(store.dlq_count("events").unwrap(), 0);

    // Memory storage: the restarted broker is empty, so it holds exactly what was sent after the restart.
    // That must be every event not acked before the kill (nothing lost), once (nothing duplicated), and
    // nothing that was acked (an ack settles an event for good).
    broker.up();
    create_topic(&brokers, t, 3).await;
    wait_for(
        Duration::from_secs(90),
        "outbox drained after the restart",
        || store.outbox_depth("events", 100) == 0,
    )
    .await;
    relay.stop().await;
    let got = consume(
        &brokers,
        t,
        unacked.len(),
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .await;
    let got_ids: Vec<String> = got.iter().map(|r| r.header("ce_id").to_owned()).collect();
    assert!(unique(&got_ids), "duplicate ids after the restart");
    let mut want = unacked.clone();
    let mut have = got_ids.clone();
    want.sort();
    have.sort();
    assert_eq!(
        have, want,
        "exactly the events not acked before the kill arrived after the restart"
    );
    let unacked: HashSet<&String> = unacked.iter().collect();
    for (g, order) in by_group(&got) {
        let want: Vec<String> = staged
            .iter()
            .filter(|e| group_of(e) == g && unacked.contains(&e.id().to_owned()))
            .map(|e| e.id().to_owned())
            .collect();
        assert_eq!(order, want, "group {g} in order");
    }
}

#[tokio::test]
async fn a_broker_down_at_startup_does_not_stop_the_daemon_and_events_wait_for_it() {
    let Some(bin) = tansu_bin() else { return };
    let mut broker = Tansu::start(bin);
    let brokers = broker.addr();
    broker.down();
    let w = crate::support::World::new(1, 1, 100).await;
    let toml = format!(
        "{}\n[sinks.bus]\ntype = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"late\"\ndelivery_timeout_secs = 3\nhealthcheck_timeout_secs = 1\n",
        w.toml(&w.groups)
    );
    // The startup check fails retryably (no broker): a warning, not a refusal to start.
    let d = crate::support::daemon_from(&toml).await;
    let evs = interleaved(&["g1"], 3, 0);
    stage(d.store(), "bus", &evs);
    assert!(d.deliver_all().await.is_err(), "the broker is still down");
    assert_eq!(
        d.store().outbox_depth("bus", 10),
        3,
        "events wait in the outbox"
    );
    broker.up();
    create_topic(&brokers, "late", 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while d.store().outbox_depth("bus", 10) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered after the broker came up"
        );
        let _ = d.deliver_all().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = consume(
        &brokers,
        "late",
        evs.len(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    let got_ids: Vec<String> = got.iter().map(|r| r.header("ce_id").to_owned()).collect();
    assert_eq!(got_ids, ids(&evs), "every event, once, in order");
}
