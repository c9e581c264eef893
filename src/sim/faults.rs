//! Request recording and the fault gate every `/v1.0` request passes before its handler.
//!
//! Order per Graph request: record, latency, scripted `throttle_next`/`fail_next` answers,
//! random 5xx/429, bearer check, endpoint. Token-endpoint requests are only recorded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

use super::errors::{graph_date, json_response};
use super::{Faults, RequestRecord, Shared, lock};

/// Recorded requests; `epoch` changes on reset so late status updates cannot hit new records.
#[derive(Default)]
pub(super) struct RequestLog {
    pub records: Vec<RequestRecord>,
    epoch: u64,
}

impl RequestLog {
    pub fn reset(&mut self) {
        self.records.clear();
        self.epoch += 1;
    }
}

/// A scripted answer queued by `throttle_next` or `fail_next`.
enum Scripted {
    Throttle(String),
    Fail(u16),
}

/// Fault settings, the scripted-answer queue and the RNG that rolls the dice.
pub(super) struct Gate {
    pub faults: Faults,
    queue: VecDeque<Scripted>,
    rng: StdRng,
}

/// What the gate decided for one request.
enum Verdict {
    Pass,
    Throttle(String),
    Fail(u16),
}

impl Gate {
    pub fn new(rng: StdRng) -> Self {
        Self {
            faults: Faults::default(),
            queue: VecDeque::new(),
            rng,
        }
    }

    pub fn throttle_next(&mut self, n: usize, retry_after: &str) {
        let item = || Scripted::Throttle(retry_after.to_owned());
        self.queue.extend(std::iter::repeat_with(item).take(n));
    }

    pub fn fail_next(&mut self, n: usize, status: u16) {
        self.queue
            .extend(std::iter::repeat_with(|| Scripted::Fail(status)).take(n));
    }

    fn verdict(&mut self) -> Verdict {
        match self.queue.pop_front() {
            Some(Scripted::Throttle(after)) => return Verdict::Throttle(after),
            Some(Scripted::Fail(status)) => return Verdict::Fail(status),
            None => {}
        }
        let f = &self.faults;
        let (p5xx, p429) = (f.error_5xx_fraction, f.throttle_fraction);
        if p5xx > 0.0 && self.rng.random_bool(p5xx.clamp(0.0, 1.0)) {
            return Verdict::Fail(503);
        }
        if p429 > 0.0 && self.rng.random_bool(p429.clamp(0.0, 1.0)) {
            let secs = self.faults.retry_after_secs.max(0.0);
            return Verdict::Throttle(format!("{secs}"));
        }
        Verdict::Pass
    }
}

/// Middleware: records every request and applies the fault gate to `/v1.0`.
pub(super) async fn record_and_gate(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let record = RequestRecord {
        at: Instant::now(),
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: super::query::decoded(req.uri().query()),
        status: 0,
        batched: req.headers().contains_key(super::batch::ITEM_HEADER),
    };
    let is_graph = record.path == "/v1.0" || record.path.starts_with("/v1.0/");
    let slot = {
        let mut log = lock(&shared.log);
        log.records.push(record);
        (log.epoch, log.records.len() - 1)
    };
    let response = if is_graph {
        gate(&shared, req, next).await
    } else {
        next.run(req).await
    };
    let mut log = lock(&shared.log);
    if log.epoch == slot.0
        && let Some(r) = log.records.get_mut(slot.1)
    {
        r.status = response.status().as_u16();
    }
    response
}

async fn gate(shared: &Shared, req: Request, next: Next) -> Response {
    if !req.uri().path().contains("/events") {
        return gate_inner(shared, req, next).await;
    }
    // Outlook's concurrency limit is what the client must respect: count calendar requests in flight.
    let now = shared.cal_inflight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.cal_max_inflight.fetch_max(now, Ordering::SeqCst);
    let response = gate_inner(shared, req, next).await;
    shared.cal_inflight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn gate_inner(shared: &Shared, req: Request, next: Next) -> Response {
    let latency = lock(&shared.gate).faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let verdict = lock(&shared.gate).verdict();
    match verdict {
        Verdict::Throttle(after) => return throttled(shared, &after),
        Verdict::Fail(status) => return failed(shared, status),
        Verdict::Pass => {}
    }
    if !super::auth::is_authorized(shared, req.headers()) {
        tracing::debug!("Simulated Graph rejected an access token.");
        let message = "Access token has expired or is not yet valid.";
        let mut response = shared.graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(req).await
}

/// 429 shaped like `throttling--too-many-requests-429.json`.
fn throttled(shared: &Shared, retry_after: &str) -> Response {
    tracing::debug!(retry_after, "Simulated Graph throttled a request.");
    let body = json!({
        "error": {
            "code": "TooManyRequests",
            "message": "Please retry again later.",
            "innerError": {
                "code": "429",
                "date": graph_date(),
                "message": "Please retry after",
                "request-id": shared.new_guid(),
                "status": "429",
            }
        }
    });
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    match HeaderValue::from_str(retry_after) {
        Ok(v) => {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Err(error) => tracing::warn!(%error, "Simulated Retry-After is not a valid header value."),
    }
    response
}

/// A scripted or random failure; every 5xx carries `serviceNotAvailable`, as the brief's
/// Graph examples do, other statuses a code Graph documents for them.
fn failed(shared: &Shared, status: u16) -> Response {
    tracing::debug!(status, "Simulated Graph failed a request.");
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let (code, message) = match status.as_u16() {
        400 => ("invalidRequest", "The request is malformed or incorrect."),
        401 => (
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        ),
        403 => (
            "accessDenied",
            "The caller does not have permission to perform the action.",
        ),
        404 => ("itemNotFound", "The resource could not be found."),
        424 => (
            "FailedDependency",
            "The request failed because a request it depends on was throttled or failed.",
        ),
        _ if status.is_server_error() => (
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        _ => ("generalException", "An unspecified error has occurred."),
    };
    shared.graph_error(status, code, message)
}
