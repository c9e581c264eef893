//! The librdkafka side: producer configuration (the properties the sink insists on, plus every pass-through
//! property) and error classification.

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaSinkConfig;
use crate::sink::SinkError;

/// The producer configuration: user properties first, then the sink's own, which win. `ClientConfig`'s
/// `Debug` prints every value, secrets included: never log it; log [`crate::config::DottedMap::redacted`].
pub fn producer_config(cfg: &KafkaSinkConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in &cfg.properties.0 {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", cfg.brokers.join(","))
        // Idempotence: librdkafka's own retries can neither duplicate nor reorder a partition's messages.
        .set("enable.idempotence", "true")
        // A message that fails for good while later ones of its partition succeed would be a gap, and its
        // retry from the outbox would land after them: a group's events out of order. With the gapless
        // guarantee such a failure is a fatal producer error instead; every unacked event of the batch then
        // fails, stays in the outbox in order, and the sink recreates the producer.
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        // Messages never time out inside librdkafka (0 = infinite): a timed-out message is a gap that a
        // retry from the outbox would fill behind later events of its group. A round waits
        // `delivery_timeout_secs` for reports; what is still in flight then is awaited again next round,
        // and a producer that gets nothing through in a whole round is recreated (see `KafkaSink`).
        .set("message.timeout.ms", "0");
    if !cfg.properties.0.contains_key("client.id") {
        cc.set("client.id", "groupwatch");
    }
    // The relay hands over a whole batch and waits for its delivery reports, so the batch is the batching
    // unit; librdkafka's 5 ms default linger only adds that wait to every batch (benches/kafka_sink.rs:
    // about 2x the events/s at relay.batch_size = 100). A configured value wins.
    if !cfg.properties.0.contains_key("linger.ms")
        && !cfg.properties.0.contains_key("queue.buffering.max.ms")
    {
        cc.set("linger.ms", "1");
    }
    cc
}

/// Whether a produce error is about this one message (dead-letter it) or about the cluster (retry).
/// Authorization and unknown-topic errors are retryable on purpose: an operator fixes ACLs or creates the
/// topic, and the events flow again without a replay.
pub fn classify(e: &KafkaError) -> SinkError {
    use RDKafkaErrorCode as C;
    let message = format!("Kafka: {e}");
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::MessageBatchTooLarge
            | C::InvalidTopic
            | C::UnsupportedForMessageFormat,
        ) => SinkError::Permanent(message),
        _ => SinkError::Retryable(message),
    }
}

/// `ClientConfig::create` failures at the startup check are configuration errors (unknown property, bad
/// value, unreadable CA file): permanent, so the daemon refuses to start.
pub fn classify_create(e: &KafkaError) -> SinkError {
    SinkError::Permanent(format!("Kafka producer configuration rejected: {e}"))
}

/// The same failure while publishing (the first publish, or a re-creation after a fatal error, when e.g. a
/// CA file has gone missing since the start) is retryable: it is about this host, not about the events, so
/// they wait in the outbox until the operator fixes it instead of the whole batch being dead-lettered.
pub fn classify_create_in_publish(e: &KafkaError) -> SinkError {
    SinkError::Retryable(format!("Kafka producer could not be created: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DottedMap, KafkaMode};

    #[test]
    fn sink_properties_override_user_properties() {
        let mut props = DottedMap::default();
        props.0.insert("compression.type".into(), "zstd".into());
        props.0.insert("acks".into(), "1".into());
        let cfg = KafkaSinkConfig {
            brokers: vec!["a:9092".into(), "b:9092".into()],
            topic: "t".into(),
            topics: DottedMap::default(),
            mode: KafkaMode::Binary,
            delivery_timeout_secs: 7,
            healthcheck_timeout_secs: 1,
            properties: props,
        };
        let cc = producer_config(&cfg);
        assert_eq!(cc.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("enable.gapless.guarantee"), Some("true"));
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(
            cc.get("message.timeout.ms"),
            Some("0"),
            "never times out inside librdkafka"
        );
        assert_eq!(cc.get("compression.type"), Some("zstd"));
        assert_eq!(cc.get("client.id"), Some("groupwatch"));
        assert_eq!(cc.get("linger.ms"), Some("1"), "our default");
        let mut props = DottedMap::default();
        props.0.insert("linger.ms".into(), "20".into());
        let cc = producer_config(&KafkaSinkConfig {
            properties: props,
            ..cfg
        });
        assert_eq!(cc.get("linger.ms"), Some("20"), "a configured linger wins");
    }

    #[test]
    fn producer_creation_fails_permanently_only_at_startup() {
        let e = KafkaError::ClientCreation("ssl.ca.location failed".into());
        assert!(matches!(classify_create(&e), SinkError::Permanent(_)));
        assert!(classify_create_in_publish(&e).is_retryable());
    }

    #[test]
    fn per_message_errors_are_permanent_cluster_errors_retryable() {
        let too_big = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify(&too_big), SinkError::Permanent(_)));
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(
                classify(&KafkaError::MessageProduction(code)).is_retryable(),
                "{code:?}"
            );
        }
    }
}
