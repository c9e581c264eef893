//! `[sinks.NAME]` tables for Kafka and webhooks, and the small value types they need: a dotted-key map (for
//! librdkafka properties and per-type topics) and a secret list that also reads from one environment string.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::relay::backoff::{DEFAULT_JITTER, DEFAULT_SCHEDULE_SECS, RetrySchedule};

/// `type = "kafka"`: an idempotent producer writing CloudEvents, keyed by group id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port` each (librdkafka's `bootstrap.servers`).
    pub brokers: Vec<String>,
    /// Topic for every event type not listed in `topics`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Event type → topic, e.g. `"groupwatch.owner.added" = "owners"`; routes types to their own topics.
    #[serde(default)]
    pub topics: DottedMap,
    /// CloudEvents binding: `binary` (`ce_*` headers, JSON data as the value) or `structured` (the whole
    /// event as `application/cloudevents+json`).
    #[serde(default)]
    pub mode: KafkaMode,
    /// How long one delivery round waits for its delivery reports. Events without one stay in the outbox
    /// and in flight in the producer (messages never time out inside librdkafka); the next round waits for
    /// the same messages. Three rounds in a row with nothing delivered recreate the producer.
    #[serde(default = "default_delivery_timeout_secs")]
    pub delivery_timeout_secs: u64,
    /// Limit of the startup metadata fetch.
    #[serde(default = "default_healthcheck_timeout_secs")]
    pub healthcheck_timeout_secs: u64,
    /// Any librdkafka property, passed through (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, `compression.type`, …). Secrets are redacted from logs.
    #[serde(default)]
    pub properties: DottedMap,
}

fn default_topic() -> String {
    "groupwatch.events".into()
}
fn default_delivery_timeout_secs() -> u64 {
    30
}
fn default_healthcheck_timeout_secs() -> u64 {
    10
}

impl KafkaSinkConfig {
    /// The topic for an event type.
    pub fn topic_for(&self, event_type: &str) -> &str {
        self.topics
            .0
            .get(event_type)
            .map_or(&self.topic, String::as_str)
    }
}

/// The CloudEvents Kafka protocol binding mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KafkaMode {
    /// Attributes as `ce_*` headers, data as the value: consumers that ignore CloudEvents still get plain JSON.
    #[default]
    Binary,
    /// The whole event as JSON in the value.
    Structured,
}

/// `type = "webhook"`: Standard Webhooks POSTs with durable per-event retries. `Debug` masks the URL's
/// user info and query ([`redact_url`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Endpoint (http or https). Redirects are not followed: a moved endpoint must be reconfigured.
    pub url: String,
    /// `whsec_…` secrets; each signs every delivery, so a receiver can rotate. In the environment, one string
    /// with the secrets separated by spaces or commas. Missing = a validation problem naming this key.
    #[serde(default)]
    pub secrets: SecretList,
    /// Whole-request timeout; a timeout counts as a retryable failure.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// TCP/TLS connect timeout.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Waits after the 1st, 2nd, … failed attempt of one event; when they are used up the event is
    /// dead-lettered. Fractions are allowed (tests use milliseconds).
    #[serde(default = "default_schedule")]
    pub retry_schedule_secs: Vec<f64>,
    /// Relative jitter applied to every wait (0.2 = ±20 %).
    #[serde(default = "default_jitter")]
    pub retry_jitter: f64,
    /// Longest `Retry-After` honoured; longer requests are clamped.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: u64,
}

impl std::fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("secrets", &self.secrets)
            .field("timeout_secs", &self.timeout_secs)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("retry_schedule_secs", &self.retry_schedule_secs)
            .field("retry_jitter", &self.retry_jitter)
            .field("max_retry_after_secs", &self.max_retry_after_secs)
            .finish()
    }
}

/// A URL as logs, errors and dead letters show it: user info, query and every path segment after the first
/// masked, since endpoints often carry a credential there (Power Automate and Logic Apps trigger URLs hold
/// their SAS signature in `sig=`; Slack and Discord webhook URLs hold their token in the path).
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("REDACTED");
                let _ = u.set_password(None);
            }
            let path = u.path().to_owned();
            let mut segments = path.trim_start_matches('/').splitn(2, '/');
            let first = segments.next().unwrap_or_default();
            if segments.next().is_some_and(|rest| !rest.is_empty()) {
                u.set_path(&format!("/{first}/REDACTED"));
            }
            if u.query().is_some() {
                u.set_query(Some("REDACTED"));
            }
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => {
            let head = raw.split(['?', '#', '@']).next().unwrap_or_default();
            let masked = if head.len() < raw.len() {
                "…(REDACTED)"
            } else {
                ""
            };
            format!("{head}{masked}")
        }
    }
}

fn default_timeout_secs() -> u64 {
    15
}
fn default_connect_timeout_secs() -> u64 {
    5
}
fn default_schedule() -> Vec<f64> {
    DEFAULT_SCHEDULE_SECS.to_vec()
}
fn default_jitter() -> f64 {
    DEFAULT_JITTER
}
fn default_max_retry_after_secs() -> u64 {
    24 * 3600
}

impl WebhookSinkConfig {
    /// The retry schedule (assumes validated values).
    pub fn schedule(&self) -> RetrySchedule {
        RetrySchedule {
            delays: self
                .retry_schedule_secs
                .iter()
                .map(|s| Duration::try_from_secs_f64(*s).unwrap_or(Duration::ZERO))
                .collect(),
            jitter: self.retry_jitter,
            max_retry_after: Duration::from_secs(self.max_retry_after_secs),
        }
    }
}

/// A string map whose keys may contain dots. Accepts quoted keys (`"sasl.password" = "…"`), TOML dotted keys
/// (`sasl.password = "…"`, which TOML turns into nested tables) and nested environment keys
/// (`…__PROPERTIES__SASL__PASSWORD`), flattening all of them to `sasl.password`. Values may be strings,
/// numbers or booleans. `Debug` redacts values whose key looks secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DottedMap(pub BTreeMap<String, String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Table(BTreeMap<String, Node>),
}

fn flatten(prefix: &str, node: Node, out: &mut BTreeMap<String, String>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match node {
        Node::Str(s) => {
            out.insert(prefix.to_owned(), s);
        }
        Node::Int(i) => {
            out.insert(prefix.to_owned(), i.to_string());
        }
        Node::Float(f) => {
            out.insert(prefix.to_owned(), f.to_string());
        }
        Node::Bool(b) => {
            out.insert(prefix.to_owned(), b.to_string());
        }
        Node::Table(t) => {
            for (k, v) in t {
                flatten(&key(&k), v, out);
            }
        }
    }
}

impl<'de> Deserialize<'de> for DottedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let top = BTreeMap::<String, Node>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in top {
            flatten(&k, v, &mut out);
        }
        Ok(DottedMap(out))
    }
}

/// True for property names whose values must never be logged.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "jaas", "oauthbearer.config"]
        .iter()
        .any(|w| k.contains(w))
        || k == "ssl.key.pem"
        || k == "ssl.keystore.location"
}

impl DottedMap {
    /// The map with secret values replaced by `[REDACTED]`, for logs.
    pub fn redacted(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_key(k) {
                    "[REDACTED]"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect()
    }
}

impl std::fmt::Debug for DottedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

/// Webhook secrets: a TOML list, or one string separated by spaces/commas (environment variables).
#[derive(Clone, Default)]
pub struct SecretList(pub Vec<SecretString>);

impl std::fmt::Debug for SecretList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} secret(s) REDACTED]", self.0.len())
    }
}

impl SecretList {
    /// The secrets, exposed (for building the signer and for validation).
    pub fn exposed(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| s.expose_secret())
    }
}

impl<'de> Deserialize<'de> for SecretList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let list = match Raw::deserialize(d)? {
            Raw::One(s) => s
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            Raw::Many(v) => v,
        };
        Ok(SecretList(
            list.into_iter().map(SecretString::from).collect(),
        ))
    }
}
