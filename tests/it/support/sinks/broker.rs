//! Real Kafka-protocol brokers for the tests: the shared tansu broker that `tests/run.sh` starts
//! (`GROUPWATCH_TEST_KAFKA`), private tansu processes a test can stop and restart
//! (`GROUPWATCH_TEST_TANSU_BIN`), and a real rdkafka consumer to read back what the sink wrote.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// True under CI and under `tests/run.sh` (which sets `GROUPWATCH_TEST_STRICT=1` after starting the services):
/// there a missing service is a failure, never a skip.
pub fn strict() -> bool {
    let on = |var: &str| std::env::var(var).is_ok_and(|v| v == "true" || v == "1");
    on("CI") || on("GROUPWATCH_TEST_STRICT")
}

/// Reads a test-environment variable. Missing under CI is a failure; missing locally skips loudly.
fn required_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if strict() => panic!(
            "{var} is not set under CI or tests/run.sh: tests/run.sh must start the tansu broker (Kafka tests never skip in CI)"
        ),
        _ => {
            eprintln!(
                "\n!!!!!! SKIPPED: {var} is not set. Run `bash tests/run.sh` to start a tansu broker for the Kafka tests. !!!!!!\n"
            );
            None
        }
    }
}

/// The shared broker's `host:port`, or `None` (locally only) when there is none.
pub fn shared_broker() -> Option<String> {
    required_env("GROUPWATCH_TEST_KAFKA")
}

/// The tansu binary, for tests that need a broker of their own.
pub fn tansu_bin() -> Option<PathBuf> {
    required_env("GROUPWATCH_TEST_TANSU_BIN").map(PathBuf::from)
}

/// A free port on 127.0.0.1 (bound and released; fine for a test's private broker).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A private tansu broker with in-memory storage: stopping it loses its topics.
pub struct Tansu {
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Tansu {
    pub fn start(bin: PathBuf) -> Tansu {
        let mut t = Tansu {
            bin,
            port: free_port(),
            child: None,
        };
        t.up();
        t
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until the port accepts connections.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.addr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (like a crash) and waits for it.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.down();
    }
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = admin
        .create_topics([&t], &opts)
        .await
        .expect("create_topics");
    for r in res {
        match r {
            Ok(_) => {}
            // A producer's metadata request may have auto-created it first.
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => panic!("creating topic {t}: {e}"),
        }
    }
}

/// A consumed record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
}

impl Consumed {
    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map_or("", String::as_str)
    }
}

/// Reads every partition of `topic` from the beginning with a real consumer until `expected` records
/// arrived, then keeps reading for `settle` to catch duplicates. Panics after `timeout`.
pub async fn consume(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Consumed> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        assert!(tpl.count() > 0, "topic {topic} has no partitions");
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut settle_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if settle_until.is_some_and(|s| now >= s) {
                return out;
            }
            assert!(
                now < deadline,
                "consumed {} of {expected} records from {topic} within {timeout:?}",
                out.len()
            );
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let mut headers = HashMap::new();
                if let Some(hs) = m.headers() {
                    for h in hs.iter() {
                        let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        headers.insert(h.key.to_owned(), v.unwrap_or_default());
                    }
                }
                out.push(Consumed {
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    headers,
                    payload: m.payload().unwrap_or_default().to_vec(),
                    partition: m.partition(),
                    offset: m.offset(),
                });
            }
            if out.len() >= expected && settle_until.is_none() {
                settle_until = Some(Instant::now() + settle);
            }
        }
    })
    .await
    .unwrap()
}
