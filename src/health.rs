//! `GET /healthz` and `GET /readyz`: the daemon's live status over HTTP. sled lets one process hold the store,
//! so while the daemon runs this is the only view of it; `groupwatch state` is the same view with the daemon
//! stopped.
//!
//! Readiness fails (503) when something needs an operator: a delegated sign-in that calendar subscriptions
//! depend on is missing or was refused (`invalid_grant`, `interaction_required`), or a webhook endpoint was
//! disabled by 410 Gone. Each problem says what to do. Membership keeps flowing in both cases; readiness is the
//! alarm, not a stop.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SubscriptionKind};
use crate::store::{SignInStatus, Store, StoreError};

/// Outbox rows counted per sink at most (a huge backlog reads as this many, not as a slow probe).
const DEPTH_CAP: usize = 1_000_000;

/// The `/readyz` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// True when `problems` is empty.
    pub ready: bool,
    /// What needs an operator, one sentence each, with the fix.
    pub problems: Vec<String>,
    /// Delegated sign-in per connection that calendar subscriptions use: `active`, `not_signed_in` or
    /// `needs_login`.
    pub sign_ins: BTreeMap<String, String>,
    /// Delivery state per sink.
    pub sinks: BTreeMap<String, SinkHealth>,
}

/// One sink's delivery state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SinkHealth {
    /// Rows waiting for their first attempt (counted up to 1,000,000).
    pub waiting: usize,
    /// Rows waiting for a scheduled retry.
    pub retrying: usize,
    /// Dead letters.
    pub dead_lettered: usize,
    /// Set when a 410 Gone disabled the endpoint.
    pub disabled: Option<String>,
}

/// Reads the readiness of `cfg`'s connections and sinks from the store.
///
/// # Errors
/// Store read failures.
pub fn readiness(cfg: &Config, store: &Store) -> Result<Readiness, StoreError> {
    let mut problems = Vec::new();
    let mut sign_ins = BTreeMap::new();
    let calendar_conns: std::collections::BTreeSet<&str> = cfg
        .subscriptions
        .iter()
        .filter(|s| s.kind == SubscriptionKind::Calendar)
        .map(|s| s.connection.as_str())
        .collect();
    for conn in calendar_conns {
        let login =
            format!("run `groupwatch login --config FILE --connection {conn}` (daemon stopped)");
        let state = match store.sign_in(conn)? {
            None => {
                problems.push(format!(
                    "connection {conn}: not signed in; its calendar subscriptions cannot run: {login}"
                ));
                "not_signed_in"
            }
            Some(v) => match v.status {
                SignInStatus::Active => "active",
                SignInStatus::NeedsLogin { error, detail, at } => {
                    problems.push(format!(
                        "connection {conn}: NEEDS LOGIN ({error} at {}: {detail}); its calendar subscriptions are stopped, membership keeps running: {login}",
                        at.to_rfc3339()
                    ));
                    "needs_login"
                }
            },
        };
        sign_ins.insert(conn.to_owned(), state.to_owned());
    }
    let mut sinks = BTreeMap::new();
    for name in cfg.sinks.keys() {
        let state = store.sink_state(name)?;
        let disabled = state.disabled_at.map(|at| {
            let why = state.disabled_reason.unwrap_or_default();
            format!("since {} ({why})", at.to_rfc3339())
        });
        if let Some(d) = &disabled {
            problems.push(format!(
                "sink {name}: endpoint disabled {d}; its events are dead-lettered: fix the endpoint, then `groupwatch dlq replay --config FILE --sink {name}` (daemon stopped)"
            ));
        }
        sinks.insert(
            name.clone(),
            SinkHealth {
                waiting: store.outbox_depth(name, DEPTH_CAP),
                retrying: store.retry_depth(name, DEPTH_CAP),
                dead_lettered: store.dlq_count(name)?,
                disabled,
            },
        );
    }
    Ok(Readiness {
        ready: problems.is_empty(),
        problems,
        sign_ins,
        sinks,
    })
}

#[derive(Clone)]
struct Ctx {
    cfg: Arc<Config>,
    store: Store,
}

/// The two routes, ready to serve.
pub fn router(cfg: Arc<Config>, store: Store) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Ctx { cfg, store })
}

async fn ready(State(ctx): State<Ctx>) -> (StatusCode, Json<serde_json::Value>) {
    let read = tokio::task::spawn_blocking(move || readiness(&ctx.cfg, &ctx.store)).await;
    match read {
        Ok(Ok(r)) => {
            let code = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(serde_json::to_value(r).unwrap_or_default()))
        }
        Ok(Err(e)) => unavailable(format!("the state store cannot be read: {e}")),
        Err(e) => unavailable(format!("the readiness check failed: {e}")),
    }
}

fn unavailable(problem: String) -> (StatusCode, Json<serde_json::Value>) {
    let body = serde_json::json!({ "ready": false, "problems": [problem] });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

/// Serves the endpoints on `listener` until `shutdown` fires.
///
/// # Errors
/// The server failing.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: Arc<Config>,
    store: Store,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(cfg, store))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
