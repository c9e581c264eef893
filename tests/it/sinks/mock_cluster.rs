//! Hermetic Kafka faults on librdkafka's in-process mock cluster: injected produce errors are absorbed by
//! the idempotent producer without duplicates, and while every broker is down events wait in the outbox.

use std::sync::Arc;
use std::time::Duration;

use cloudevents::Event;
use groupwatch::change::ChangeKind::Added;
use groupwatch::relay;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::support::sinks::broker::consume;
use crate::support::sinks::{RelayTask, event, ids, kafka_sink, temp_store, unique, wait_for};

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
