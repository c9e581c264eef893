//! Validation rules of the Kafka and webhook sinks (part of the one validation pass).

use super::validate::{Collector, is_http_url};
use super::{KafkaSinkConfig, WebhookSinkConfig};
use crate::sink::signature::WebhookSecret;

/// Properties the sink owns: setting them would break its guarantees or duplicate a typed key.
const OWNED_PROPERTIES: [(&str, &str); 4] = [
    ("bootstrap.servers", "use `brokers`"),
    ("metadata.broker.list", "use `brokers`"),
    ("message.timeout.ms", "use `delivery_timeout_secs`"),
    ("delivery.timeout.ms", "use `delivery_timeout_secs`"),
];

/// Kafka's topic name rule: 1–249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn valid_broker(b: &str) -> bool {
    let b = b.trim();
    let b = b.split_once("://").map_or(b, |(_, rest)| rest);
    match b.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

pub(super) fn kafka(k: &str, cfg: &KafkaSinkConfig, c: &mut Collector) {
    if cfg.brokers.is_empty() {
        c.push(
            format!("{k}.brokers"),
            "must list at least one broker (host:port)",
        );
    }
    for (i, b) in cfg.brokers.iter().enumerate() {
        if !valid_broker(b) {
            c.push(
                format!("{k}.brokers[{i}]"),
                format!("{b:?} is not host:port"),
            );
        }
    }
    if !valid_topic(&cfg.topic) {
        c.push(
            format!("{k}.topic"),
            format!(
                "{:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)",
                cfg.topic
            ),
        );
    }
    for (ty, topic) in &cfg.topics.0 {
        if !ty.starts_with("groupwatch.") {
            c.push(
                format!("{k}.topics.\"{ty}\""),
                "keys are event types, e.g. \"groupwatch.member.added\"",
            );
        }
        if !valid_topic(topic) {
            c.push(
                format!("{k}.topics.\"{ty}\""),
                format!("{topic:?} is not a Kafka topic name"),
            );
        }
    }
    if cfg.delivery_timeout_secs == 0 {
        c.push(format!("{k}.delivery_timeout_secs"), "must be at least 1");
    }
    if cfg.healthcheck_timeout_secs == 0 {
        c.push(
            format!("{k}.healthcheck_timeout_secs"),
            "must be at least 1",
        );
    }
    for (prop, value) in &cfg.properties.0 {
        let pk = format!("{k}.properties.\"{prop}\"");
        if let Some((_, instead)) = OWNED_PROPERTIES.iter().find(|(p, _)| p == prop) {
            c.push(pk, format!("is set by the sink; {instead}"));
        } else if prop == "enable.idempotence" && value != "true" {
            c.push(
                pk,
                "must stay true: without it a producer retry can duplicate or reorder a group's events",
            );
        } else if prop == "enable.gapless.guarantee" && value != "true" {
            c.push(
                pk,
                "must stay true: without it a lost message could be retried after later ones of its group",
            );
        } else if matches!(prop.as_str(), "acks" | "request.required.acks")
            && !matches!(value.as_str(), "all" | "-1")
        {
            c.push(
                pk,
                "must stay \"all\": the idempotent producer needs it and an event is acked only when durable",
            );
        } else if prop == "transactional.id" {
            c.push(pk, "transactions are not used by this sink");
        }
    }
}

pub(super) fn webhook(k: &str, cfg: &WebhookSinkConfig, c: &mut Collector) {
    if !is_http_url(&cfg.url) {
        c.push(
            format!("{k}.url"),
            format!("{:?} is not an http(s) URL", super::redact_url(&cfg.url)),
        );
    }
    if cfg.secrets.0.is_empty() {
        c.push(
            format!("{k}.secrets"),
            "must list at least one \"whsec_…\" secret (receivers verify every delivery with it)",
        );
    }
    for (i, s) in cfg.secrets.exposed().enumerate() {
        if let Err(e) = WebhookSecret::parse(s) {
            // The message names the rule, never the value.
            c.push(format!("{k}.secrets[{i}]"), e.to_string());
        }
    }
    if cfg.timeout_secs == 0 {
        c.push(format!("{k}.timeout_secs"), "must be at least 1");
    }
    if cfg.connect_timeout_secs == 0 {
        c.push(format!("{k}.connect_timeout_secs"), "must be at least 1");
    }
    for (i, d) in cfg.retry_schedule_secs.iter().enumerate() {
        if !d.is_finite() || *d <= 0.0 || *d > 7.0 * 24.0 * 3600.0 {
            c.push(
                format!("{k}.retry_schedule_secs[{i}]"),
                format!("{d} must be a positive number of seconds, at most 7 days"),
            );
        }
    }
    if !(0.0..1.0).contains(&cfg.retry_jitter) {
        c.push(
            format!("{k}.retry_jitter"),
            format!("{} must be in 0.0..1.0", cfg.retry_jitter),
        );
    }
}
