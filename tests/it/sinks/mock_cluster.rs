//! Hermetic Kafka faults on librdkafka's in-process mock cluster: injected produce errors are absorbed by
//! the idempotent producer without duplicates, and while every broker is down events wait in the outbox.

use std::sync::Arc;
use std::time::Duration;

use cloudevents::Event;
use groupwatch::change::ChangeKind::Added;
use groupwatch::relay;
use groupwatch::sink::{Sink, SinkError};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::support::sinks::broker::consume;
use crate::support::sinks::{
    RelayTask, event, ids, kafka_sink, sink_from_toml, temp_store, unique, wait_for,
};

fn events(from: u64, n: u64) -> Vec<Event> {
    (from..from + n)
        .map(|i| event(&format!("g{}", i % 4), i, Added))
        .collect()
}

#[tokio::test]
async fn mock_cluster_faults_lose_nothing_and_duplicate_nothing() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("gw", 4, 3).unwrap();
    let brokers = mock.bootstrap_servers();
    let (_d, store) = temp_store();
    let sink = Arc::new(kafka_sink("events", &brokers, "gw", ""));

    // Transient produce errors: librdkafka retries them itself; idempotence keeps it duplicate-free.
    use RDKafkaRespErr::*;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let first = events(0, 40);
    for e in &first {
        store.outbox_push("events", e).unwrap();
    }
    assert_eq!(relay::drain(&store, &sink, 10).await.unwrap(), 40);

    // Every broker down: produce attempts time out, rows stay, nothing is acked.
    for id in 1..=3 {
        mock.broker_down(id).unwrap();
    }
    let second = events(100, 20);
    for e in &second {
        store.outbox_push("events", e).unwrap();
    }
    let p = relay::deliver_once(&store, &sink, 50).await.unwrap();
    assert_eq!((p.delivered, p.kept), (0, 20), "{p:?}");
    assert!(p.error.unwrap().is_retryable());
    assert_eq!(
        store.outbox_depth("events", 100),
        20,
        "events wait in the outbox"
    );
    assert_eq!(
        store.dlq_count("events").unwrap(),
        0,
        "broker outages never dead-letter"
    );

    for id in 1..=3 {
        mock.broker_up(id).unwrap();
    }
    let relay = RelayTask::spawn(&store, sink);
    wait_for(
        Duration::from_secs(60),
        "outbox drained after brokers came back",
        || store.outbox_depth("events", 100) == 0,
    )
    .await;
    relay.stop().await;

    let all: Vec<Event> = first.iter().chain(&second).cloned().collect();
    let got = consume(
        &brokers,
        "gw",
        all.len(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    let got_ids: Vec<String> = got.iter().map(|r| r.header("ce_id").to_owned()).collect();
    assert!(unique(&got_ids), "the producer duplicated: {got_ids:?}");
    let (mut want, mut have) = (ids(&all), got_ids);
    want.sort();
    have.sort();
    assert_eq!(have, want);
}

#[tokio::test]
async fn a_producer_that_cannot_be_created_keeps_events_in_the_outbox() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("gw", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // librdkafka loads the CA when it creates the client: a missing file makes creation itself fail.
    let ca = dir.path().join("missing-ca.pem");
    let sink = kafka_sink(
        "events",
        &mock.bootstrap_servers(),
        "gw",
        &format!(
            "[sinks.events.properties]\n\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{}\"",
            ca.display()
        ),
    );
    let e = sink.healthcheck().await.unwrap_err();
    assert!(
        matches!(e, SinkError::Permanent(_)),
        "the startup check refuses to start: {e:?}"
    );

    // While running (the producer is re-created after a fatal error, and the CA file is gone since the
    // start), the same failure is about this host, not the events: they wait, nothing is dead-lettered.
    let (_d, store) = temp_store();
    let evs = events(0, 3);
    for e in &evs {
        store.outbox_push("events", e).unwrap();
    }
    let p = relay::deliver_once(&store, &sink, 50).await.unwrap();
    assert_eq!((p.delivered, p.kept, p.dead), (0, 3, 0), "{p:?}");
    let e = p.error.unwrap();
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("ssl.ca.location"), "{e}");
    assert_eq!(store.outbox_depth("events", 10), 3);
    assert_eq!(store.dlq_count("events").unwrap(), 0);
}

#[tokio::test]
async fn a_round_that_stops_waiting_leaves_messages_in_flight_and_never_produces_them_twice() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("slow", 2, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let (_d, store) = temp_store();
    let sink = sink_from_toml(
        "events",
        &format!(
            "type = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"slow\"\ndelivery_timeout_secs = 1\n"
        ),
    );
    // Warm up metadata and the producer id at normal speed.
    let warm = events(1_000, 1);
    store.outbox_push("events", &warm[0]).unwrap();
    relay::drain(&store, &sink, 10).await.unwrap();
    // The broker now answers every request 2.5 s late: longer than a round waits for its reports.
    mock.broker_round_trip_time(1, Duration::from_millis(2500))
        .unwrap();
    let evs = events(0, 40);
    for e in &evs {
        store.outbox_push("events", e).unwrap();
    }
    let first = relay::deliver_once(&store, &sink, 100).await.unwrap();
    assert_eq!(first.delivered, 0, "{first:?}");
    assert_eq!(first.kept, 40, "every event stays in the outbox, in flight");
    let msg = first.error.unwrap().to_string();
    assert!(msg.contains("stays in flight"), "{msg}");
    // The next rounds wait for the same messages instead of producing them again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.outbox_depth("events", 100) > 0 {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        relay::deliver_once(&store, &sink, 100).await.unwrap();
    }
    mock.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let got = consume(
        &brokers,
        "slow",
        evs.len() + 1,
        Duration::from_secs(30),
        Duration::from_secs(3),
    )
    .await;
    let got_ids: Vec<String> = got.iter().map(|r| r.header("ce_id").to_owned()).collect();
    assert_eq!(got_ids.len(), evs.len() + 1, "each event exactly once");
    assert!(unique(&got_ids));
}
