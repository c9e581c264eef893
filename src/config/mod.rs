//! Configuration: built-in defaults (`config/default.toml`) → `--config FILE` → `GROUPWATCH__…` environment.
//!
//! Parsing is strict (`deny_unknown_fields`); after parsing, [`Config::validate`] reports *every* problem with
//! the key path that holds it, so an operator fixes a file in one go.

mod sinks;
mod validate;
mod validate_sinks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

pub use sinks::{
    DottedMap, KafkaMode, KafkaSinkConfig, SecretList, WebhookSinkConfig, is_secret_key, redact_url,
};
pub use validate::Problem;

/// The defaults, embedded so the binary needs no file beside it.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Shortest poll interval accepted. Graph itself has no floor, but anything faster only burns the rate budget.
pub const MIN_POLL_INTERVAL_SECS: u64 = 2;
/// Longest poll interval accepted: directory delta tokens expire after 7 days, so poll well before that.
pub const MAX_POLL_INTERVAL_SECS: u64 = 6 * 24 * 3600;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be read or did not match the schema (unknown key, wrong type).
    #[error("configuration could not be read: {0}")]
    Load(String),
    /// The configuration parsed but some values are wrong; every problem is listed.
    #[error("configuration has {} problem(s):\n{}", .0.len(), validate::render(.0))]
    Invalid(Vec<Problem>),
}

/// The whole daemon configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where state lives.
    pub store: StoreConfig,
    /// Poll scheduling and Graph-side bounds.
    pub poll: PollConfig,
    /// Outbox → sink delivery.
    pub relay: RelayConfig,
    /// Tenant connections by name.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Sinks by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// What to watch.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Group-calendar polling bounds (Outlook limits).
    pub calendar: CalendarConfig,
    /// Liveness and readiness endpoints.
    pub health: HealthConfig,
}

/// `[health]`: `GET /healthz` (the process runs) and `GET /readyz` (sign-ins valid, no sink disabled) over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `host:port` to listen on, e.g. `127.0.0.1:9464`; empty = no endpoints.
    pub listen: String,
}

impl HealthConfig {
    /// The socket address, when endpoints are enabled and the value parses (validation reports it otherwise).
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.trim().parse().ok()
    }
}

/// `[calendar]`: bounds for group-calendar polling, which Outlook throttles per app and per mailbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Calendar requests in flight at once per app (client id, shared by its connections): Outlook allows 4.
    pub max_concurrent_requests: usize,
    /// Send calendar listings in JSON `$batch` calls of up to 20 requests, to cut HTTP round trips.
    pub use_batch: bool,
    /// Per group mailbox: at most this many requests per 10 minutes (Outlook allows 10,000).
    pub mailbox_requests_per_10min: u32,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// sled's page cache; sled's own default is 1 GiB, far more than membership state needs.
    pub cache_capacity_mb: u64,
}

/// `[poll]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Seconds between two polls of one batch.
    pub interval_secs: u64,
    /// Random start delay of each poll, up to this many seconds, to spread load.
    pub jitter_secs: u64,
    /// Pages fetched by one poll before it yields (guards against endless nextLinks).
    pub max_pages_per_poll: u32,
    /// Polling pauses while a sink's outbox is deeper than this.
    pub outbox_high_water: u64,
    /// Concurrent Graph requests across all connections.
    pub max_concurrent_requests: usize,
}

impl PollConfig {
    /// The poll interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// `[relay]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Rows per publish call.
    pub batch_size: usize,
    /// First retry delay after a failed publish.
    pub retry_initial_ms: u64,
    /// Cap of the retry delay.
    pub retry_max_secs: u64,
}

/// `[connections.NAME]`: one Entra ID app registration in one tenant, app-only (client credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Directory (tenant) id: a GUID or a verified domain.
    pub tenant_id: String,
    /// Application (client) id, a GUID.
    pub client_id: String,
    /// Client secret. Never logged; `Debug` prints `[REDACTED]`.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// Graph root, without `/v1.0` (national clouds differ).
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Token authority root; the token endpoint is `{authority_url}/{tenant_id}/oauth2/v2.0/token`.
    #[serde(default = "default_authority_url")]
    pub authority_url: String,
    /// Client-side rate limit: at most this many calls …
    #[serde(default = "default_rate_limit_calls")]
    pub rate_limit_calls: u32,
    /// … per this many seconds (the connector allows 100 per 60 s).
    #[serde(default = "default_rate_limit_period_secs")]
    pub rate_limit_period_secs: u64,
    /// Whole-request timeout.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// TCP/TLS connect timeout.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Retries per request for 429, 5xx and transport errors.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// Send `x-ms-throttle-priority: low`, so Graph throttles our background polls before interactive traffic.
    #[serde(default = "default_true")]
    pub throttle_priority_low: bool,
    /// Certificate credential instead of a secret: PEM certificate whose public key is registered on the app.
    #[serde(default)]
    pub client_certificate_path: Option<PathBuf>,
    /// PEM RSA private key (PKCS#8 or PKCS#1) of that certificate; signs the `client_assertion` JWT.
    #[serde(default)]
    pub client_key_path: Option<PathBuf>,
    /// JWT algorithm of the assertion: `PS256` with `x5t#S256` (current Entra docs) or `RS256` with `x5t`.
    #[serde(default)]
    pub client_assertion_alg: AssertionAlg,
    /// Delegated sign-in (device code, `groupwatch login`) with these scopes; empty = app-only connection.
    /// Group calendars need it: Graph answers 403 to app-only tokens there.
    #[serde(default)]
    pub delegated_scopes: Vec<String>,
}

impl ConnectionConfig {
    /// True when the connection signs in a user (needed for group calendars).
    pub fn is_delegated(&self) -> bool {
        !self.delegated_scopes.is_empty()
    }

    /// True when the connection has an app-only credential (secret or certificate).
    pub fn has_app_credential(&self) -> bool {
        self.client_secret.is_some() || self.client_certificate_path.is_some()
    }
}

/// Signature algorithm of the certificate `client_assertion`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum AssertionAlg {
    /// RSASSA-PSS SHA-256, header `x5t#S256` (what current Entra docs show).
    #[default]
    PS256,
    /// RSASSA-PKCS1-v1_5 SHA-256, header `x5t` (SHA-1 thumbprint; older docs and samples).
    RS256,
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com".into()
}
fn default_authority_url() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_rate_limit_calls() -> u32 {
    100
}
fn default_rate_limit_period_secs() -> u64 {
    60
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_max_retries() -> usize {
    6
}
fn default_true() -> bool {
    true
}

/// `[sinks.NAME]`, tagged by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines (or a friendly rendering) on standard output.
    Stdout {
        /// `json` (one CloudEvent per line) or `pretty` (for people).
        #[serde(default)]
        format: StdoutFormat,
    },
    /// Append-only JSON-lines file, fsynced before an event counts as delivered.
    Jsonl {
        /// File to append to; created if missing.
        path: PathBuf,
    },
    /// Kafka, through an idempotent librdkafka producer.
    Kafka(KafkaSinkConfig),
    /// An HTTP endpoint, Standard Webhooks signed, with durable retries.
    Webhook(WebhookSinkConfig),
}

/// How the stdout sink renders events.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StdoutFormat {
    /// One structured CloudEvent JSON per line.
    #[default]
    Json,
    /// One human sentence per event.
    Pretty,
}

/// What a subscription watches.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionKind {
    /// Group membership through `/groups/delta`.
    Members,
    /// New events in group calendars (needs delegated sign-in: `groupwatch login`).
    Calendar,
}

/// What the first sync of a new group does (invariant 6).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Record current members silently; only later changes are events.
    #[default]
    FromNow,
    /// Emit every current member as added.
    ExistingAsAdded,
}

/// `[[subscriptions]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Unique name, shown in logs and `groupwatch state`.
    pub id: String,
    /// Name of a `[connections.NAME]` table.
    pub connection: String,
    /// What to watch.
    pub kind: SubscriptionKind,
    /// Group object ids (GUIDs).
    pub groups: Vec<String>,
    /// Names of `[sinks.NAME]` tables that receive the events.
    pub sinks: Vec<String>,
    /// First-sync behaviour.
    #[serde(default)]
    pub baseline: Baseline,
    /// Also track owners (`owners@delta`), emitted as `groupwatch.owner.*`.
    #[serde(default)]
    pub track_owners: bool,
    /// Calendar only: how far behind the createdDateTime watermark each poll lists again, so events
    /// created just before a poll or surfacing late are still found (default 600).
    #[serde(default)]
    pub overlap_secs: Option<u64>,
    /// Calendar only: also emit `groupwatch.event.updated` when an event's changeKey changes.
    #[serde(default)]
    pub emit_updates: Option<bool>,
    /// Calendar only: also emit `groupwatch.event.deleted` when a seen event leaves the listed window.
    #[serde(default)]
    pub emit_deletes: Option<bool>,
    /// Calendar only: `$top` of each events page (Graph's default is 10; default here 100).
    #[serde(default)]
    pub page_size: Option<u32>,
}

/// Default calendar overlap window.
pub const DEFAULT_OVERLAP_SECS: u64 = 600;
/// Default calendar `$top`.
pub const DEFAULT_CALENDAR_PAGE_SIZE: u32 = 100;

impl Config {
    /// Loads defaults, then `file` (if any), then the `GROUPWATCH__` environment, and validates the result.
    ///
    /// # Errors
    /// [`ConfigError::Load`] for unreadable files or schema mismatches (the message names the key),
    /// [`ConfigError::Invalid`] listing every semantic problem.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with an explicit environment (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        use config::{Environment, File, FileFormat};
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("GROUPWATCH__"))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("GROUPWATCH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        finish(builder)
    }

    /// Parses a TOML string layered over the defaults (no environment). Used by `demo` and tests.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(toml: &str) -> Result<Config, ConfigError> {
        use config::{File, FileFormat};
        finish(
            config::Config::builder()
                .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
                .add_source(File::from_str(toml, FileFormat::Toml)),
        )
    }

    /// Checks every semantic rule and returns all problems at once.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with one [`Problem`] per wrong value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Builds the layers, deserializes strictly and validates.
fn finish(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
) -> Result<Config, ConfigError> {
    let raw = builder
        .build()
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    let cfg: Config = raw
        .try_deserialize()
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sinks;
