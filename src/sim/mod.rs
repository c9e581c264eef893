//! A simulated Microsoft Graph tenant served over real HTTP.
//!
//! The simulator reproduces the parts of Graph that groupwatch relies on, including the awkward
//! ones: paged group delta rounds where a large group recurs on several pages, replayed and
//! repeated changes, empty pages, expiring delta tokens (400 `syncStateNotFound` or 410 with a
//! `Location`), throttling with fractional `Retry-After`, transient 5xx and revoked tokens.
//! All randomness comes from one seeded RNG, so the same seed and the same operations give
//! byte-identical responses.
//!
//! # Layout
//! - `state`: the directory (groups, member and owner links) and its change log.
//! - `delta`: `GET /v1.0/groups/delta` — rounds, paging and server-side token storage.
//! - `members`: `GET /v1.0/groups/{id}/members` and `/owners` list endpoints.
//! - `auth`: the client-credentials token endpoint and bearer-token checks.
//! - `faults`: request recording plus the per-request fault gate in front of `/v1.0`.
//! - `query`: query-string decoding and the `$select`/`$filter` grammar.
//! - `errors`: Graph and AAD error bodies, ids and timestamps.
//! - `calendar`: group events (list/create/update/delete) for delegated member tokens only.
//! - `device`: device-code sign-in, rotating refresh tokens, certificate client assertions.
//! - `batch`: JSON `$batch`, items run through the same router, ≤ 4 at a time.

mod auth;
mod batch;
mod calendar;
mod delta;
mod device;
mod errors;
mod faults;
mod members;
mod query;
mod state;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::state::Rel;
pub use device::DeviceFlow;

/// Settings fixed for the lifetime of one simulated tenant.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice (tokens, faults, replays), so runs are reproducible.
    pub seed: u64,
    /// The only tenant the token endpoint accepts; others get AADSTS90002.
    pub tenant_id: String,
    /// The only registered application; others get AADSTS700016.
    pub client_id: String,
    /// The application's secret; a mismatch gets AADSTS7000215.
    pub client_secret: String,
    /// Access-token lifetime, reported as `expires_in` and enforced on `/v1.0`.
    pub token_ttl: Duration,
    /// Upper bound of member entries (`members@delta` plus `owners@delta`) per delta page,
    /// small values force large groups to be split across pages.
    pub page_size: usize,
    /// The account that device-code sign-ins sign in (it must be a member of a group to read its calendar).
    pub user_id: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            tenant_id: "11111111-1111-1111-1111-111111111111".into(),
            client_id: "22222222-2222-2222-2222-222222222222".into(),
            client_secret: "sim-secret".into(),
            token_ttl: Duration::from_secs(3599),
            page_size: 100,
            user_id: "a11ce000-0000-4000-8000-000000000001".into(),
        }
    }
}

/// Directory object type of a member, because Graph reports nested groups as members too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    /// Serialised as `#microsoft.graph.user`.
    User,
    /// Serialised as `#microsoft.graph.group` (a nested group, never expanded).
    Group,
}

impl MemberKind {
    fn odata_type(self) -> &'static str {
        match self {
            MemberKind::User => "#microsoft.graph.user",
            MemberKind::Group => "#microsoft.graph.group",
        }
    }
}

/// The `@removed.reason` Graph attaches to a removed link; clients must treat both as "left".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovedReason {
    /// Permanently removed (`"deleted"`), what the docs show for a removed membership.
    Deleted,
    /// Soft-deleted and restorable (`"changed"`).
    Changed,
}

impl RemovedReason {
    fn as_str(self) -> &'static str {
        match self {
            RemovedReason::Deleted => "deleted",
            RemovedReason::Changed => "changed",
        }
    }
}

/// How invalidated delta and skip tokens are rejected; Graph does both in the wild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// 400 with code `syncStateNotFound` (directory tokens older than 7 days).
    SyncStateNotFound400,
    /// 410 Gone with code `resyncRequired` and a `Location` holding the initial query.
    Gone410WithLocation,
}

/// Random misbehaviour applied to Graph (`/v1.0`) requests, to exercise client tolerance.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fraction of the links reported in earlier rounds that a delta round reports again.
    pub replay_fraction: f64,
    /// Fraction of a round's entries that appear a second time in a later group object.
    pub repeat_fraction: f64,
    /// Probability of an empty page (with a nextLink) in front of each real page.
    pub empty_page_fraction: f64,
    /// Probability that a request answers 503 without `Retry-After`.
    pub error_5xx_fraction: f64,
    /// Probability that a request answers 429 with `Retry-After: retry_after_secs`.
    pub throttle_fraction: f64,
    /// `Retry-After` for random throttling, fractional values are sent as such ("1.5").
    pub retry_after_secs: f64,
    /// Delay before answering each `/v1.0` request, to expose timeouts and overlap.
    pub latency: Duration,
    /// Initial rounds also carry `@removed` entries for links removed earlier, as Graph does.
    pub removed_in_initial: bool,
}

/// What the simulated user does with a device-code sign-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOutcome {
    /// Approves (after `approve_after_polls` pending answers).
    Approve,
    /// Declines: `authorization_declined`.
    Decline,
    /// Never enters the code: `expired_token`.
    Expire,
    /// Entra no longer recognises the device code: `bad_verification_code`.
    BadVerificationCode,
}

/// One observed request, so tests can assert on what a client actually sent.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Arrival time.
    pub at: Instant,
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// URL path without the query, e.g. `/v1.0/groups/delta`.
    pub path: String,
    /// Query string with percent-escapes and `+` decoded, e.g. `$deltatoken=ab12`.
    pub query: String,
    /// Response status, 0 while the request is still being answered.
    pub status: u16,
    /// An item of a `$batch` (not an HTTP round trip of its own).
    pub batched: bool,
}

/// State shared by the handle and the HTTP handlers.
///
/// Std mutexes are used deliberately: every critical section is short and none is held across
/// an `.await`. Lock order, when two are needed: `tenant` before `store`.
struct Shared {
    cfg: SimConfig,
    base_url: String,
    tenant: Mutex<state::Tenant>,
    store: Mutex<delta::Store>,
    gate: Mutex<faults::Gate>,
    auth: Mutex<auth::Tokens>,
    /// Source of request ids, trace ids and access tokens, kept apart from the delta RNG so
    /// auth and error traffic cannot change delta responses.
    ids: Mutex<StdRng>,
    log: Mutex<faults::RequestLog>,
    /// Paging state of the members/owners list endpoints, by skiptoken.
    cursors: Mutex<std::collections::HashMap<String, members::Cursor>>,
    calendar: Mutex<calendar::Calendars>,
    device: Mutex<device::DeviceState>,
    /// DER of the certificate registered for client assertions.
    trusted_cert: Mutex<Option<Vec<u8>>>,
    /// Calendar requests being answered right now, and the most ever at once.
    cal_inflight: AtomicUsize,
    cal_max_inflight: AtomicUsize,
    shutdown: CancellationToken,
}

/// Locks a mutex, recovering from poisoning since a panicking test must not cascade.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to a running simulated tenant; clones share it and the last drop stops the server.
#[derive(Clone)]
pub struct Sim {
    shared: Arc<Shared>,
    _stop_on_drop: Arc<DropGuard>,
}

impl Sim {
    /// Binds 127.0.0.1 on an ephemeral port and serves the tenant on a background task.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let mut master = StdRng::seed_from_u64(cfg.seed);
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            tenant: Mutex::new(state::Tenant::default()),
            store: Mutex::new(delta::Store::new(StdRng::from_rng(&mut master))),
            gate: Mutex::new(faults::Gate::new(StdRng::from_rng(&mut master))),
            auth: Mutex::new(auth::Tokens::default()),
            ids: Mutex::new(StdRng::from_rng(&mut master)),
            log: Mutex::new(faults::RequestLog::default()),
            cursors: Mutex::default(),
            calendar: Mutex::default(),
            device: Mutex::default(),
            trusted_cert: Mutex::default(),
            cal_inflight: AtomicUsize::new(0),
            cal_max_inflight: AtomicUsize::new(0),
            shutdown: shutdown.clone(),
            base_url,
            cfg,
        });
        let app = app(shared.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tracing::debug!("Simulated Graph serving.");
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "Simulated Graph server failed.");
            }
            tracing::debug!("Simulated Graph stopped.");
        });
        Ok(Sim {
            shared,
            _stop_on_drop: Arc::new(shutdown.drop_guard()),
        })
    }

    /// The app itself, for `tower::ServiceExt::oneshot` tests without a socket.
    pub fn router(&self) -> Router {
        app(self.shared.clone())
    }

    /// Graph root (`http://127.0.0.1:PORT`); endpoints live under `/v1.0`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Login authority (same origin); the token endpoint is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn authority_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The accepted tenant id.
    pub fn tenant_id(&self) -> String {
        self.shared.cfg.tenant_id.clone()
    }

    /// The accepted client id.
    pub fn client_id(&self) -> String {
        self.shared.cfg.client_id.clone()
    }

    /// The accepted client secret.
    pub fn client_secret(&self) -> String {
        self.shared.cfg.client_secret.clone()
    }

    /// Stops accepting connections and lets in-flight requests finish; safe to call twice.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Creates a group, or restores and renames a deleted one; either shows up in the next delta.
    pub fn create_group(&self, id: &str, display_name: &str) {
        lock(&self.shared.tenant).create_group(id, display_name);
    }

    /// Soft-deletes a group; the next delta reports it with `"@removed":{"reason":"changed"}`.
    pub fn delete_group(&self, id: &str) {
        lock(&self.shared.tenant).delete_group(id);
    }

    /// Adds a direct member; false if the group is unknown or the member already present.
    pub fn add_member(&self, group: &str, member: &str, kind: MemberKind) -> bool {
        lock(&self.shared.tenant).add_link(group, Rel::Members, member, kind)
    }

    /// Removes a direct member; `reason` is what later `@removed` entries carry.
    pub fn remove_member(&self, group: &str, member: &str, reason: RemovedReason) -> bool {
        lock(&self.shared.tenant).remove_link(group, Rel::Members, member, reason)
    }

    /// Adds an owner (always a user); false if unknown group or already an owner.
    pub fn add_owner(&self, group: &str, user: &str) -> bool {
        lock(&self.shared.tenant).add_link(group, Rel::Owners, user, MemberKind::User)
    }

    /// Removes an owner; reported as `@removed` with reason `deleted`.
    pub fn remove_owner(&self, group: &str, user: &str) -> bool {
        let reason = RemovedReason::Deleted;
        lock(&self.shared.tenant).remove_link(group, Rel::Owners, user, reason)
    }

    /// Current direct member ids, sorted; empty for unknown or deleted groups.
    pub fn members(&self, group: &str) -> Vec<String> {
        let tenant = lock(&self.shared.tenant);
        let links = tenant.current_links(group, Rel::Members);
        links.into_iter().map(|(id, _)| id).collect()
    }

    /// Replaces the random fault settings for subsequent requests.
    pub fn set_faults(&self, f: Faults) {
        lock(&self.shared.gate).faults = f;
    }

    /// Invalidates every delta token and skip token issued so far.
    pub fn expire_delta_tokens(&self, how: Expiry) {
        lock(&self.shared.store).expire(how);
    }

    /// The next `n` `/v1.0` requests answer 429 with `Retry-After: <retry_after>` verbatim.
    pub fn throttle_next(&self, n: usize, retry_after: &str) {
        lock(&self.shared.gate).throttle_next(n, retry_after);
    }

    /// The next `n` `/v1.0` requests answer `status` with a Graph error body.
    pub fn fail_next(&self, n: usize, status: u16) {
        lock(&self.shared.gate).fail_next(n, status);
    }

    /// Every access token issued so far is rejected with 401 from now on.
    pub fn revoke_access_tokens(&self) {
        lock(&self.shared.auth).revoke_all();
    }

    /// All requests so far (token endpoint included) in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).records.clone()
    }

    /// Number of recorded requests whose path equals `path` exactly.
    pub fn count(&self, path: &str) -> usize {
        let log = lock(&self.shared.log);
        log.records.iter().filter(|r| r.path == path).count()
    }

    /// Forgets recorded requests, so a test can count only what follows.
    pub fn reset_requests(&self) {
        lock(&self.shared.log).reset();
        self.shared.cal_max_inflight.store(0, Ordering::SeqCst);
    }
}

/// Builds the routes; the fault gate wraps everything so unknown routes are recorded too.
fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(device::device_code),
        )
        .route("/v1.0/$batch", post(batch::batch))
        .route(
            "/v1.0/groups/{id}/events",
            get(calendar::events).post(calendar::events),
        )
        .route(
            "/v1.0/groups/{id}/calendar/events",
            get(calendar::events).post(calendar::events),
        )
        .route(
            "/v1.0/groups/{id}/events/{eid}",
            axum::routing::patch(calendar::event).delete(calendar::event),
        )
        .route(
            "/v1.0/groups/{id}/calendar/events/{eid}",
            axum::routing::patch(calendar::event).delete(calendar::event),
        )
        .route("/v1.0/groups/delta", get(delta::groups_delta))
        .route("/v1.0/groups/{id}/members", get(members::list_members))
        .route("/v1.0/groups/{id}/owners", get(members::list_owners))
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            faults::record_and_gate,
        ))
        .with_state(shared)
}
