//! Kafka sink: an idempotent librdkafka producer (`acks=all`) writing CloudEvents keyed by group id.
//! An event counts as delivered only when its delivery report says so; a full producer queue makes the
//! publish wait, never drop. Producer creation and metadata fetches block, so they run on the blocking pool.
//!
//! - `client`: producer configuration and error classification.
//! - `record`: CloudEvent → Kafka record (binary or structured mode).

pub mod client;
pub mod record;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cloudevents::Event;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{Outcome, Sink, SinkError};
use crate::config::KafkaSinkConfig;

/// Pause before offering a message again to a full producer queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(20);

/// Produces to Kafka.
pub struct KafkaSink {
    name: String,
    cfg: KafkaSinkConfig,
    client_config: ClientConfig,
    // A std mutex on purpose: held only to clone or replace the handle, never across an `.await`.
    producer: Mutex<Option<FutureProducer>>,
    /// Deliveries a round stopped waiting for, by CloudEvent id: the producer still holds those messages
    /// (they never time out inside librdkafka), so the next round awaits them again instead of producing
    /// them a second time, which would put a repeat behind later events of the group.
    in_flight: Mutex<HashMap<String, DeliveryFuture>>,
    /// Consecutive rounds that got nothing through while messages waited.
    stalled_rounds: std::sync::atomic::AtomicU32,
}

/// Rounds in a row with nothing delivered before the producer is recreated. More than one, so a broker
/// slower than `delivery_timeout_secs` is waited for (its deliveries complete in a later round) rather than
/// answered with a new producer and a second copy of everything in flight.
const STALLED_ROUNDS_BEFORE_RESET: u32 = 3;

/// How one event of a round ended.
enum Report {
    Delivered,
    Failed(SinkError),
    /// No delivery report within `delivery_timeout_secs`; still in the producer.
    Pending(DeliveryFuture),
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not `client_config`: its Debug prints secrets.
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("brokers", &self.cfg.brokers)
            .field("topic", &self.cfg.topic)
            .field("properties", &self.cfg.properties)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink for a validated configuration. The producer is created on first use, off the runtime.
    pub fn new(name: &str, cfg: &KafkaSinkConfig) -> Self {
        Self {
            name: name.to_owned(),
            cfg: cfg.clone(),
            client_config: client::producer_config(cfg),
            producer: Mutex::new(None),
            in_flight: Mutex::new(HashMap::new()),
            stalled_rounds: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn cached(&self) -> Option<FutureProducer> {
        self.producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The producer, created if needed (`ClientConfig::create` does blocking work). `on_create_error`
    /// classifies a creation failure: permanent at the startup check, retryable while publishing.
    async fn producer(
        &self,
        on_create_error: fn(&KafkaError) -> SinkError,
    ) -> Result<FutureProducer, SinkError> {
        if let Some(p) = self.cached() {
            return Ok(p);
        }
        let cc = self.client_config.clone();
        let created = tokio::task::spawn_blocking(move || cc.create::<FutureProducer>())
            .await
            .map_err(|e| SinkError::Retryable(format!("producer creation task failed: {e}")))?
            .map_err(|e| on_create_error(&e))?;
        tracing::info!(sink = %self.name, brokers = %self.cfg.brokers.join(","), properties = ?self.cfg.properties, "Kafka producer created.");
        *self.producer.lock().unwrap_or_else(|p| p.into_inner()) = Some(created.clone());
        Ok(created)
    }

    /// Drops a producer that hit a fatal error (e.g. the idempotence state could not be recovered after a
    /// cluster lost its data, or a gap the gapless guarantee refused), or one that got nothing through in a
    /// few whole rounds while messages waited: a broker that was restarted without its state (or a new cluster
    /// behind the same address) can refuse every produce of the old producer id with UNKNOWN_PRODUCER_ID
    /// without librdkafka ever raising a fatal error. The next publish creates a fresh producer, which asks
    /// for a new id; the old one's queued messages are purged, so every unacked event is produced again, in
    /// outbox order. Returns whether it dropped the producer.
    fn reset_if_broken(&self, producer: &FutureProducer, stalled: bool) -> bool {
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::error!(sink = %self.name, error = %reason, code = ?code, "Kafka producer hit a fatal error; recreating it.");
        } else if stalled {
            tracing::warn!(sink = %self.name, rounds = STALLED_ROUNDS_BEFORE_RESET, timeout_secs = self.cfg.delivery_timeout_secs, "Kafka producer delivered nothing for several rounds; recreating it.");
        } else {
            return false;
        }
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.producer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        true
    }

    /// Enqueues one record, waiting while the producer queue is full (backpressure), at most until
    /// `deadline`: with the broker away the queue may never drain, and the round must end.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        rec: &record::KafkaRecord,
        deadline: tokio::time::Instant,
    ) -> Result<rdkafka::producer::DeliveryFuture, SinkError> {
        let headers = rec.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        });
        let mut fr = FutureRecord::to(&rec.topic)
            .key(rec.key.as_bytes())
            .payload(&rec.payload)
            .headers(headers);
        loop {
            match producer.send_result(fr) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Backpressure: wait for delivery reports to free room; never drop.
                    if tokio::time::Instant::now() >= deadline {
                        return Err(SinkError::Retryable(format!(
                            "the producer queue stayed full for {} s",
                            self.cfg.delivery_timeout_secs
                        )));
                    }
                    fr = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, _)) => return Err(client::classify(&e)),
            }
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, batch: &[Event]) -> Vec<Outcome> {
        // A producer that cannot be created now (first use, or after a fatal error) keeps the batch in the
        // outbox: only the startup check may call that permanent.
        let producer = match self.producer(client::classify_create_in_publish).await {
            Ok(p) => p,
            Err(e) => return Outcome::all(batch.len(), Err(e)),
        };
        // One deadline for the whole round: enqueueing into a full queue and waiting for reports.
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.cfg.delivery_timeout_secs);
        let mut pending = Vec::with_capacity(batch.len());
        // After a retryable enqueue failure nothing more of the batch is enqueued: a later event of the
        // same group must not get into the producer ahead of it.
        let mut blocked: Option<SinkError> = None;
        for ev in batch {
            use cloudevents::AttributesReader;
            let earlier = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(ev.id());
            let enqueued = match (earlier, &blocked) {
                (Some(delivery), _) => Ok(delivery),
                (None, Some(e)) => Err(e.clone()),
                (None, None) => match record::build(ev, &self.cfg) {
                    Ok(rec) => self.enqueue(&producer, &rec, deadline).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = &enqueued {
                if e.is_retryable() && blocked.is_none() {
                    blocked = Some(e.clone());
                }
            }
            pending.push((ev.id().to_owned(), enqueued));
        }
        let reports = join_all(pending.into_iter().map(|(id, p)| async move {
            let report = match p {
                Err(e) => Report::Failed(e),
                Ok(mut fut) => match tokio::time::timeout_at(deadline, &mut fut).await {
                    Err(_elapsed) => Report::Pending(fut),
                    Ok(Ok(Ok(_delivery))) => Report::Delivered,
                    Ok(Ok(Err((e, _msg)))) => Report::Failed(client::classify(&e)),
                    Ok(Err(_canceled)) => {
                        Report::Failed(SinkError::Retryable("producer went away".into()))
                    }
                },
            };
            (id, report)
        }))
        .await;
        let delivered = reports.iter().any(|(_, r)| matches!(r, Report::Delivered));
        let waiting = reports.iter().any(|(_, r)| matches!(r, Report::Pending(_)));
        let failed = reports.iter().any(|(_, r)| matches!(r, Report::Failed(_)));
        // Nothing got through in a whole round although messages wait: the broker is down, or it was
        // restarted without its state and refuses this producer's id (see `reset_if_broken`).
        let stalled = if !delivered && waiting {
            self.stalled_rounds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1
                >= STALLED_ROUNDS_BEFORE_RESET
        } else {
            self.stalled_rounds
                .store(0, std::sync::atomic::Ordering::Relaxed);
            false
        };
        let reset = (failed || stalled) && self.reset_if_broken(&producer, stalled);
        if reset {
            self.stalled_rounds
                .store(0, std::sync::atomic::Ordering::Relaxed);
            // The last handle: dropping it purges its queues and waits up to 500 ms for librdkafka.
            tokio::task::spawn_blocking(move || drop(producer));
        }
        let mut outcomes = Vec::with_capacity(reports.len());
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for (id, r) in reports {
            outcomes.push(match r {
                Report::Delivered => Outcome::Delivered,
                Report::Failed(e) => Outcome::Failed(e),
                Report::Pending(fut) => {
                    // A recreated producer purged it: it is produced again next round.
                    if !reset {
                        in_flight.insert(id, fut);
                    }
                    Outcome::Failed(SinkError::Retryable(format!(
                        "no delivery report within {} s; the message stays in flight",
                        self.cfg.delivery_timeout_secs
                    )))
                }
            });
        }
        outcomes
    }

    /// Creates the producer and fetches cluster metadata, both on the blocking pool.
    async fn healthcheck(&self) -> Result<(), SinkError> {
        let producer = self.producer(client::classify_create).await?;
        let timeout = Duration::from_secs(self.cfg.healthcheck_timeout_secs);
        let brokers = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|m| m.brokers().len())
        })
        .await
        .map_err(|e| SinkError::Retryable(format!("metadata task failed: {e}")))?
        .map_err(|e| SinkError::Retryable(format!("Kafka metadata fetch failed: {e}")))?;
        tracing::info!(sink = %self.name, brokers, "Kafka cluster reachable.");
        Ok(())
    }
}
