//! Error bodies, ids and timestamps shaped like the ones Graph and AAD send.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Shared, lock};

/// Content type Graph uses for JSON payloads.
pub(super) const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// A JSON response with Graph's content type.
pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, ODATA_JSON)], body).into_response()
}

impl Shared {
    /// A fresh GUID-shaped id for `request-id`, `trace_id` and the like.
    pub(super) fn new_guid(&self) -> String {
        guid(lock(&self.ids).random())
    }

    /// A Graph error body: `{"error":{"code","message","innerError":{"date","request-id"}}}`.
    pub(super) fn graph_error_body(&self, code: &str, message: &str) -> Value {
        json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": graph_date(),
                    "request-id": self.new_guid(),
                    "client-request-id": self.new_guid(),
                }
            }
        })
    }

    /// A complete Graph error response.
    pub(super) fn graph_error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        let body = self.graph_error_body(code, message);
        json_response(status, body.to_string())
    }
}

/// Formats 128 random bits as `8-4-4-4-12` lowercase hex.
pub(super) fn guid(bits: u128) -> String {
    let h = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Opaque token text: 40 hex digits from the given RNG.
pub(super) fn hex_token(rng: &mut impl Rng) -> String {
    let a: u128 = rng.random();
    let b: u32 = rng.random();
    format!("{a:032x}{b:08x}")
}

/// Now in UTC as `(year, month, day, hour, minute, second)`.
fn utc_now() -> (i64, u32, u32, u64, u64, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Graph's `innerError.date` format, e.g. `2020-08-18T12:51:51`.
pub(super) fn graph_date() -> String {
    let (y, mo, d, h, mi, s) = utc_now();
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

/// AAD's `timestamp` format, e.g. `2016-01-09 02:02:12Z`.
pub(super) fn aad_timestamp() -> String {
    let (y, mo, d, h, mi, s) = utc_now();
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// Graph's answer for a path it has no resource for.
pub(super) async fn not_found(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let message = format!("Resource not found for the segment '{}'.", uri.path());
    shared.graph_error(StatusCode::NOT_FOUND, "itemNotFound", &message)
}

/// Graph's answer for a known path with the wrong method.
pub(super) async fn method_not_allowed(State(shared): State<Arc<Shared>>) -> Response {
    let message = "The requested resource does not support http method.";
    shared.graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        message,
    )
}
