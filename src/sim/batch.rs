//! `POST /v1.0/$batch`: up to 20 requests, each run through the same router (so faults, auth, throttling and
//! in-flight counting apply per item), at most 4 at a time as Outlook does, answered in scrambled order with
//! per-item status, headers and body. `dependsOn` runs in order and fails dependents with 424.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::errors::json_response;
use super::{Shared, app};

/// Marks an item request so the request log can tell HTTP round trips from batch items.
pub(super) const ITEM_HEADER: &str = "x-sim-batch-item";
const MAX_ITEMS: usize = 20;
const OUTLOOK_PARALLEL: usize = 4;

async fn run_item(shared: Arc<Shared>, auth: Option<String>, item: Value) -> Value {
    let id = item["id"].as_str().unwrap_or_default().to_owned();
    let method = item["method"].as_str().unwrap_or("GET").to_uppercase();
    // Graph takes the relative URL with or without its leading slash.
    let rel = item["url"].as_str().unwrap_or_default();
    let url = format!("/v1.0/{}", rel.trim_start_matches('/'));
    let mut req = Request::builder()
        .method(method.as_str())
        .uri(&url)
        .header(ITEM_HEADER, "1");
    if let Some(a) = &auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    if let Some(h) = item["headers"].as_object() {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                req = req.header(k.as_str(), v);
            }
        }
    }
    let body = match &item["body"] {
        Value::Null => Body::empty(),
        b => Body::from(b.to_string()),
    };
    let Ok(req) = req.body(body) else {
        return json!({"id": id, "status": 400, "body": {"error": {"code": "BadRequest", "message": "Invalid request."}}});
    };
    let resp = app(shared)
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = resp.status().as_u16();
    let headers: HashMap<String, String> = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    json!({"id": id, "status": status, "headers": headers, "body": body})
}

/// The `$batch` handler.
pub(super) async fn batch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let bad = |msg: &str| shared.graph_error(StatusCode::BAD_REQUEST, "BadRequest", msg);
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return bad("Invalid batch payload format.");
    };
    let items: Vec<Value> = v["requests"].as_array().cloned().unwrap_or_default();
    if items.is_empty() || items.len() > MAX_ITEMS {
        return bad(&format!("The batch must hold 1 to {MAX_ITEMS} requests."));
    }
    let mut ids = HashSet::new();
    if !items
        .iter()
        .all(|i| ids.insert(i["id"].as_str().unwrap_or_default().to_ascii_lowercase()))
    {
        return bad("Batch request ids must be unique.");
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sequential = items.iter().any(|i| i.get("dependsOn").is_some());
    let mut responses: Vec<Value> = Vec::new();
    if sequential {
        let mut failed = HashSet::new();
        for item in items {
            let id = item["id"].as_str().unwrap_or_default().to_owned();
            let deps: Vec<String> = item["dependsOn"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_ascii_lowercase))
                        .collect()
                })
                .unwrap_or_default();
            let r = if deps.iter().any(|d| failed.contains(d)) {
                json!({"id": id, "status": 424, "body": {"error": {"code": "FailedDependency", "message": "A dependency failed."}}})
            } else {
                run_item(shared.clone(), auth.clone(), item).await
            };
            if r["status"].as_u64().unwrap_or(500) >= 400 {
                // Ids are case-insensitive, in `dependsOn` too.
                failed.insert(id.to_ascii_lowercase());
            }
            responses.push(r);
        }
    } else {
        responses = futures::stream::iter(items)
            .map(|item| run_item(shared.clone(), auth.clone(), item))
            .buffer_unordered(OUTLOOK_PARALLEL)
            .collect()
            .await;
    }
    // Graph answers in any order: make sure clients correlate by id.
    responses.reverse();
    json_response(StatusCode::OK, json!({"responses": responses}).to_string())
}
