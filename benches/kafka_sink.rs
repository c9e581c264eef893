//! Events/s through the Kafka sink (outbox → broker acked, rows deleted) side by side with a raw librdkafka
//! `FutureProducer` sending the same records, in the same run, against the broker in `GROUPWATCH_BENCH_KAFKA`
//! (or `GROUPWATCH_TEST_KAFKA`, which `tests/run.sh` sets).
//!
//! `cargo bench --bench kafka_sink` (`GROUPWATCH_BENCH_EVENTS` sets the count, default 20000).

use std::time::{Duration, Instant};

use chrono::Utc;
use cloudevents::Event;
use futures::future::join_all;
use groupwatch::change::{Change, ChangeKind, Relationship};
use groupwatch::config::{Config, SinkConfig};
use groupwatch::relay;
use groupwatch::sink::kafka::{client, record};
use groupwatch::sink::{AnySink, Sink};
use groupwatch::store::Store;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Change {
                connection: "bench".into(),
                tenant: "11111111-1111-1111-1111-111111111111".into(),
                group: format!("aaaaaaaa-0000-0000-0000-{:012}", i % 100),
                rel: Relationship::Members,
                member: format!("bbbbbbbb-0000-0000-0000-{i:012}"),
                member_type: "user".into(),
                kind: ChangeKind::Added,
                reason: None,
                version: 1,
                detected_at: Utc::now(),
            }
            .to_event()
        })
        .collect()
}

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let t = NewTopic::new(topic, 3, TopicReplication::Fixed(1));
    let _ = admin.create_topics([&t], &AdminOptions::new()).await;
}

fn sink_config(brokers: &str, topic: &str) -> SinkConfig {
    let cfg = Config::from_toml(&format!(
        "[sinks.bench]\ntype = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{topic}\"\n"
    ))
    .expect("bench config");
    cfg.sinks["bench"].clone()
}

/// Ours: events staged in the outbox (untimed), then timed until every row is acked and deleted.
async fn ours(brokers: &str, topic: &str, evs: &[Event], batch: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state")).expect("store");
    for e in evs {
        store.outbox_push("bench", e).expect("stage");
    }
    let sink = AnySink::from_config("bench", &sink_config(brokers, topic)).expect("sink");
    sink.healthcheck().await.expect("broker reachable");
    let t = Instant::now();
    let n = relay::drain(&store, &sink, batch).await.expect("drain");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, evs.len());
    assert_eq!(store.outbox_depth("bench", 1), 0);
    n as f64 / secs
}

/// Raw: the same records (built untimed) through a FutureProducer with the same settings, timed until
/// every delivery report arrived.
async fn raw(brokers: &str, topic: &str, evs: &[Event]) -> f64 {
    let SinkConfig::Kafka(kcfg) = sink_config(brokers, topic) else {
        unreachable!()
    };
    let records: Vec<_> = evs
        .iter()
        .map(|e| record::build(e, &kcfg).expect("record"))
        .collect();
    let cc = client::producer_config(&kcfg);
    let producer: FutureProducer = tokio::task::spawn_blocking(move || cc.create())
        .await
        .expect("task")
        .expect("producer");
    let t = Instant::now();
    let mut futs = Vec::with_capacity(records.len());
    for r in &records {
        let headers = r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        });
        let mut fr = FutureRecord::to(&r.topic)
            .key(r.key.as_bytes())
            .payload(&r.payload)
            .headers(headers);
        loop {
            match producer.send_result(fr) {
                Ok(f) => break futs.push(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    fr = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => panic!("raw produce failed: {e}"),
            }
        }
    }
    let ok = join_all(futs)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(_))))
        .count();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(ok, evs.len());
    ok as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // test runners listing tests: this binary has none.
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("kafka_sink is a benchmark: run `cargo bench --bench kafka_sink`.");
        return;
    }
    let Some(brokers) = ["GROUPWATCH_BENCH_KAFKA", "GROUPWATCH_TEST_KAFKA"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    else {
        println!(
            "kafka_sink bench: no broker (set GROUPWATCH_BENCH_KAFKA=host:port); nothing measured."
        );
        return;
    };
    let n: u64 = std::env::var("GROUPWATCH_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let topic = format!("bench-{}", uuid::Uuid::new_v4().simple());
        create_topic(&brokers, &topic).await;
        let evs = events(n);
        ours(&brokers, &topic, &evs[..500.min(evs.len())], 100).await; // warm-up: metadata, connections
        println!(
            "kafka_sink bench: {n} events, broker {brokers}, 3 partitions, idempotent, acks=all"
        );
        let raw1 = raw(&brokers, &topic, &evs).await;
        let ours100 = ours(&brokers, &topic, &evs, 100).await;
        let ours1000 = ours(&brokers, &topic, &evs, 1000).await;
        let raw2 = raw(&brokers, &topic, &evs).await;
        println!("  raw FutureProducer (run 1)        {raw1:>10.0} events/s");
        println!("  groupwatch sink, batch_size 100   {ours100:>10.0} events/s");
        println!("  groupwatch sink, batch_size 1000  {ours1000:>10.0} events/s");
        println!("  raw FutureProducer (run 2)        {raw2:>10.0} events/s");
    });
}
