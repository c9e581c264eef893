//! Kafka and webhook sinks, durable retries and dead letters, against real parts: a tansu broker, an
//! in-process librdkafka mock cluster, an axum webhook receiver and the Python reference verifier.

mod dlq;
mod e2e;
mod interop;
mod kafka;
mod mock_cluster;
mod webhook;
