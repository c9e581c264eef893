//! The one validation pass: every rule, every problem, each with its key path.

use std::collections::HashSet;

use secrecy::ExposeSecret;

use super::{
    Config, ConnectionConfig, MAX_POLL_INTERVAL_SECS, MIN_POLL_INTERVAL_SECS, SinkConfig,
    SubscriptionConfig, SubscriptionKind,
};
use crate::graph::assertion::{AssertionError, CertificateCredential};

/// One thing wrong with the configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `subscriptions[0].groups[2]`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

pub(super) fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) struct Collector(Vec<Problem>);

impl Collector {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// True for a canonical 8-4-4-4-12 hex GUID.
pub fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

pub(super) fn is_http_url(s: &str) -> bool {
    url::Url::parse(s)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

pub(super) fn problems(cfg: &Config) -> Vec<Problem> {
    let mut c = Collector(Vec::new());
    if cfg.store.path.as_os_str().is_empty() {
        c.push("store.path", "must not be empty");
    }
    if cfg.store.cache_capacity_mb == 0 {
        c.push("store.cache_capacity_mb", "must be at least 1");
    }
    let listen = cfg.health.listen.trim();
    if !listen.is_empty() && cfg.health.addr().is_none() {
        c.push(
            "health.listen",
            format!("{listen:?} is not an ip:port address (e.g. \"127.0.0.1:9464\" or \"[::]:9464\"); empty turns the endpoints off"),
        );
    }
    let p = &cfg.poll;
    if p.interval_secs < MIN_POLL_INTERVAL_SECS {
        c.push(
            "poll.interval_secs",
            format!(
                "{} is below the floor of {MIN_POLL_INTERVAL_SECS} s",
                p.interval_secs
            ),
        );
    }
    if p.interval_secs > MAX_POLL_INTERVAL_SECS {
        c.push(
            "poll.interval_secs",
            format!(
                "{} exceeds {MAX_POLL_INTERVAL_SECS} s; Graph delta tokens expire after 7 days",
                p.interval_secs
            ),
        );
    }
    if p.jitter_secs >= p.interval_secs.max(1) {
        c.push(
            "poll.jitter_secs",
            format!(
                "{} must be smaller than poll.interval_secs ({})",
                p.jitter_secs, p.interval_secs
            ),
        );
    }
    if p.max_pages_per_poll == 0 {
        c.push("poll.max_pages_per_poll", "must be at least 1");
    }
    if p.outbox_high_water == 0 {
        c.push("poll.outbox_high_water", "must be at least 1");
    }
    if p.max_concurrent_requests == 0 {
        c.push("poll.max_concurrent_requests", "must be at least 1");
    }
    let cal = &cfg.calendar;
    if !(1..=4).contains(&cal.max_concurrent_requests) {
        c.push(
            "calendar.max_concurrent_requests",
            format!(
                "{} is not within 1..=4 (Outlook allows 4 concurrent requests per app and mailbox)",
                cal.max_concurrent_requests
            ),
        );
    }
    if !(1..=10_000).contains(&cal.mailbox_requests_per_10min) {
        c.push(
            "calendar.mailbox_requests_per_10min",
            "must be within 1..=10000 (Outlook's per-mailbox budget)",
        );
    }
    if cfg.relay.batch_size == 0 {
        c.push("relay.batch_size", "must be at least 1");
    }
    if cfg.relay.retry_initial_ms == 0 {
        c.push("relay.retry_initial_ms", "must be at least 1");
    }
    connections(cfg, &mut c);
    sinks(cfg, &mut c);
    subscriptions(cfg, &mut c);
    c.0
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-')
}

fn connections(cfg: &Config, c: &mut Collector) {
    for (name, conn) in &cfg.connections {
        let k = format!("connections.{name}");
        if !valid_name(name) {
            c.push(
                &k,
                "connection names use lower-case letters, digits, '_' and '-' only (environment keys are lower-cased)",
            );
        }
        let t = &conn.tenant_id;
        let domain = t.contains('.') && !t.contains('/') && !t.contains(' ');
        if !is_guid(t) && !domain {
            c.push(
                format!("{k}.tenant_id"),
                format!("{t:?} is neither a GUID nor a domain name"),
            );
        }
        if !is_guid(&conn.client_id) {
            c.push(
                format!("{k}.client_id"),
                format!("{:?} is not a GUID", conn.client_id),
            );
        }
        credentials(cfg, name, conn, &k, c);
        for (key, value) in [
            ("graph_url", &conn.graph_url),
            ("authority_url", &conn.authority_url),
        ] {
            if !is_http_url(value) {
                c.push(
                    format!("{k}.{key}"),
                    format!("{value:?} is not an http(s) URL"),
                );
            }
        }
        if conn.rate_limit_calls == 0 {
            c.push(format!("{k}.rate_limit_calls"), "must be at least 1");
        }
        if conn.rate_limit_period_secs == 0 {
            c.push(format!("{k}.rate_limit_period_secs"), "must be at least 1");
        }
        if conn.request_timeout_secs == 0 {
            c.push(format!("{k}.request_timeout_secs"), "must be at least 1");
        }
        if conn.connect_timeout_secs == 0 {
            c.push(format!("{k}.connect_timeout_secs"), "must be at least 1");
        }
    }
}

/// App-only credential (secret xor certificate) where membership needs it; delegated scopes where set.
fn credentials(cfg: &Config, name: &str, conn: &ConnectionConfig, k: &str, c: &mut Collector) {
    let members = cfg
        .subscriptions
        .iter()
        .any(|s| s.connection == name && s.kind == SubscriptionKind::Members);
    let cert = (&conn.client_certificate_path, &conn.client_key_path);
    match (&conn.client_secret, cert) {
        (Some(_), (Some(_), _) | (_, Some(_))) => c.push(
            format!("{k}.client_secret"),
            "set either client_secret or client_certificate_path/client_key_path, not both",
        ),
        (Some(s), _) if s.expose_secret().trim().is_empty() => {
            c.push(format!("{k}.client_secret"), "is empty")
        }
        (None, (Some(cert), Some(key))) => {
            if let Err(e) = CertificateCredential::load(cert, key, conn.client_assertion_alg) {
                let key_name = match e {
                    AssertionError::Certificate { .. } => "client_certificate_path",
                    _ => "client_key_path",
                };
                c.push(format!("{k}.{key_name}"), e.to_string());
            }
        }
        (None, (Some(_), None)) => c.push(
            format!("{k}.client_key_path"),
            "missing: a certificate credential needs the PEM private key too",
        ),
        (None, (None, Some(_))) => c.push(
            format!("{k}.client_certificate_path"),
            "missing: a certificate credential needs the PEM certificate too",
        ),
        (None, (None, None)) if members || !conn.is_delegated() => c.push(
            format!("{k}.client_secret"),
            format!(
                "missing; set it in the file or in GROUPWATCH__CONNECTIONS__{}__CLIENT_SECRET \
                 (or use client_certificate_path + client_key_path)",
                name.to_uppercase()
            ),
        ),
        _ => {}
    }
    if conn.is_delegated() {
        if !conn
            .delegated_scopes
            .iter()
            .any(|s| s.eq_ignore_ascii_case("offline_access"))
        {
            c.push(
                format!("{k}.delegated_scopes"),
                "must include \"offline_access\": without it Entra issues no refresh token and the \
                 daemon could not keep the sign-in alive",
            );
        }
        for (i, s) in conn.delegated_scopes.iter().enumerate() {
            if s.trim().is_empty() || s.contains(char::is_whitespace) {
                c.push(
                    format!("{k}.delegated_scopes[{i}]"),
                    format!("{s:?} is not a scope name (one scope per list item)"),
                );
            }
        }
    }
}

fn calendar_subscription(cfg: &Config, sub: &SubscriptionConfig, k: &str, c: &mut Collector) {
    if sub.kind != SubscriptionKind::Calendar {
        for (key, set) in [
            ("overlap_secs", sub.overlap_secs.is_some()),
            ("emit_updates", sub.emit_updates.is_some()),
            ("emit_deletes", sub.emit_deletes.is_some()),
            ("page_size", sub.page_size.is_some()),
        ] {
            if set {
                c.push(format!("{k}.{key}"), "applies to kind = \"calendar\" only");
            }
        }
        return;
    }
    if sub.track_owners {
        c.push(
            format!("{k}.track_owners"),
            "applies to kind = \"members\" only",
        );
    }
    if let Some(conn) = cfg.connections.get(&sub.connection) {
        if !conn.is_delegated() {
            c.push(
                format!("{k}.connection"),
                format!(
                    "connection {:?} is app-only (client credentials), and Graph answers 403 to app-only \
                     tokens on group calendars: they need delegated sign-in by an account that is a member of \
                     each group. Add delegated_scopes = [\"offline_access\", \"Group.Read.All\"] to \
                     [connections.{}] and run `groupwatch login --config FILE --connection {}` once",
                    sub.connection, sub.connection, sub.connection
                ),
            );
        }
    }
    if sub.overlap_secs == Some(0) {
        c.push(
            format!("{k}.overlap_secs"),
            "must be at least 1: the overlap is what catches events created just before a poll",
        );
    }
    if let Some(p) = sub.page_size {
        if !(1..=1000).contains(&p) {
            c.push(
                format!("{k}.page_size"),
                format!("{p} is not within 1..=1000"),
            );
        }
    }
}

fn sinks(cfg: &Config, c: &mut Collector) {
    for (name, sink) in &cfg.sinks {
        if !valid_name(name) {
            c.push(
                format!("sinks.{name}"),
                "sink names use lower-case letters, digits, '_' and '-' only",
            );
        }
        let k = format!("sinks.{name}");
        match sink {
            SinkConfig::Jsonl { path } if path.as_os_str().is_empty() => {
                c.push(format!("{k}.path"), "must not be empty");
            }
            SinkConfig::Kafka(kafka) => super::validate_sinks::kafka(&k, kafka, c),
            SinkConfig::Webhook(hook) => super::validate_sinks::webhook(&k, hook, c),
            SinkConfig::Stdout { .. } | SinkConfig::Jsonl { .. } => {}
        }
    }
}

fn subscriptions(cfg: &Config, c: &mut Collector) {
    let mut ids = HashSet::new();
    for (i, sub) in cfg.subscriptions.iter().enumerate() {
        let k = format!("subscriptions[{i}]");
        if sub.id.trim().is_empty() {
            c.push(format!("{k}.id"), "must not be empty");
        } else if !ids.insert(sub.id.as_str()) {
            c.push(
                format!("{k}.id"),
                format!("{:?} is used by another subscription", sub.id),
            );
        }
        if !cfg.connections.contains_key(&sub.connection) {
            c.push(
                format!("{k}.connection"),
                format!(
                    "{:?} is not a configured connection (known: {})",
                    sub.connection,
                    known(cfg.connections.keys())
                ),
            );
        }
        calendar_subscription(cfg, sub, &k, c);
        if sub.groups.is_empty() {
            c.push(format!("{k}.groups"), "must list at least one group id");
        }
        let mut seen = HashSet::new();
        for (j, g) in sub.groups.iter().enumerate() {
            if !is_guid(g) {
                c.push(
                    format!("{k}.groups[{j}]"),
                    format!("{g:?} is not a group object id (GUID)"),
                );
            } else if !seen.insert(g.to_ascii_lowercase()) {
                c.push(format!("{k}.groups[{j}]"), format!("{g:?} is listed twice"));
            }
        }
        if sub.sinks.is_empty() {
            c.push(format!("{k}.sinks"), "must name at least one sink");
        }
        for (j, s) in sub.sinks.iter().enumerate() {
            if !cfg.sinks.contains_key(s) {
                c.push(
                    format!("{k}.sinks[{j}]"),
                    format!(
                        "unknown sink {s:?} (configured: {})",
                        known(cfg.sinks.keys())
                    ),
                );
            }
        }
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
