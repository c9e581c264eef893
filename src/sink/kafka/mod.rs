//! Kafka sink: an idempotent librdkafka producer (`acks=all`) writing CloudEvents keyed by group id.
//! An event counts as delivered only when its delivery report says so; a full producer queue makes the
//! publish wait, never drop. Producer creation and metadata fetches block, so they run on the blocking pool.
//!
//! - `client`: producer configuration and error classification.
//! - `record`: CloudEvent → Kafka record (binary or structured mode).

pub mod client;
pub mod record;

use std::sync::Mutex;
use std::time::Duration;

use cloudevents::Event;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

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
    /// cluster lost its data), or one that got nothing through while its messages timed out: librdkafka then
    /// only bumps its producer epoch locally, and a broker that has forgotten the producer id (restarted
    /// without its state) can refuse every later produce with UNKNOWN_PRODUCER_ID until the timeout, round
    /// after round, without ever raising a fatal error. The next publish creates a fresh producer, which
    /// asks for a new id. Unacked events are simply sent again; a fresh producer adds no duplicate risk,
    /// since after an epoch bump the broker could not have recognised a repeat either.
    fn reset_if_broken(&self, producer: &FutureProducer, stalled: bool) {
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::error!(sink = %self.name, error = %reason, code = ?code, "Kafka producer hit a fatal error; recreating it.");
        } else if stalled {
            tracing::warn!(sink = %self.name, "Kafka producer delivered nothing and its messages timed out; recreating it.");
        } else {
            return;
        }
        *self.producer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Enqueues one record, waiting while the producer queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        rec: &record::KafkaRecord,
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
        let mut pending = Vec::with_capacity(batch.len());
        for ev in batch {
            let enqueued = match record::build(ev, &self.cfg) {
                Ok(rec) => self.enqueue(&producer, &rec).await,
                Err(e) => Err(e),
            };
            pending.push(enqueued);
        }
        // Each delivery report with, for failures, librdkafka's error code.
        let reports = join_all(pending.into_iter().map(|p| async move {
            match p {
                Err(e) => Err((e, None)),
                Ok(fut) => match fut.await {
                    Ok(Ok(_delivery)) => Ok(()),
                    Ok(Err((e, _msg))) => Err((client::classify(&e), e.rdkafka_error_code())),
                    Err(_canceled) => {
                        Err((SinkError::Retryable("producer went away".into()), None))
                    }
                },
            }
        }))
        .await;
        if reports.iter().any(Result::is_err) {
            let stalled = !reports.iter().any(Result::is_ok)
                && reports
                    .iter()
                    .any(|r| matches!(r, Err((_, Some(RDKafkaErrorCode::MessageTimedOut)))));
            self.reset_if_broken(&producer, stalled);
        }
        reports
            .into_iter()
            .map(|r| match r {
                Ok(()) => Outcome::Delivered,
                Err((e, _)) => Outcome::Failed(e),
            })
            .collect()
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
