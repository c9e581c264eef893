//! groupwatch: self-hosted, replay-proof change events for Microsoft 365 groups, read from Microsoft Graph.
//!
//! # Layout
//!
//! - [`config`]: the configuration schema, its layered loading and the one validation pass.
//! - [`graph`]: the only module that knows Graph URLs, JSON, tokens, throttling and paging.
//! - [`change`]: pure logic: delta pages → observations → deduplicated changes with deterministic ids.
//! - [`store`]: the only module that knows sled; one transaction per page stages events and moves the cursor.
//! - [`scheduler`]: plans subscriptions into ≤ 50-group batches and polls each batch on a jittered schedule.
//! - [`relay`]: per sink, moves outbox rows to the sink, settles each by its outcome (ack, durable retry,
//!   dead letter) and deletes a row only once the sink confirmed it.
//! - [`sink`]: where events go: stdout, JSONL files, Kafka (idempotent, CloudEvents) and Standard Webhooks.
//! - [`dlq`]: `groupwatch dlq list | replay | purge`, the operator's view of dead letters.
//! - [`sim`]: a simulated Graph tenant (axum) used by `groupwatch demo`, the tests and the benches.
//! - [`app`]: wiring for `groupwatch run`: store, clients, scheduler and relays under one shutdown token.
//! - [`login`]: `groupwatch login` (delegated device-code sign-in for calendars) and the calendar wiring.
//! - [`health`]: `GET /healthz` and `GET /readyz` (sign-ins, disabled endpoints, outbox depths) while running.
//! - [`demo`]: `groupwatch demo`, the daemon against an in-process simulated tenant with live churn.
//! - [`telemetry`]: tracing setup.

pub mod app;
pub mod change;
pub mod config;
pub mod demo;
pub mod dlq;
pub mod graph;
pub mod health;
pub mod login;
pub mod relay;
pub mod scheduler;
pub mod sim;
pub mod sink;
pub mod store;
pub mod telemetry;
