//! JSON batching (GRAPH.md §7): up to 20 GET requests per `POST /$batch`, answers correlated by `id` (they
//! come back in any order), each item's own `status` checked, and only the throttled or failed-dependency
//! items (429, 503, 424) resent, after the largest `Retry-After` among them. A 424 on the `$batch` call itself
//! (GRAPH.md §7 ⚠: an older page says throttled inner requests make the whole batch answer 424) is retried
//! like a 503.
//!
//! Every item counts against its mailbox budget each time it is sent, resends included, since Outlook counts
//! every request it receives.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{Call, GraphClient, MailboxLimiter};
use super::error::{Error, Result, classify, parse_retry_after};

/// Graph's limit of requests per batch.
pub const MAX_BATCH: usize = 20;
/// Items Outlook runs in parallel inside one batch: a batch holds that many concurrency permits.
const OUTLOOK_PARALLEL: usize = 4;

/// One GET inside a batch.
#[derive(Debug, Clone)]
pub struct BatchGet {
    /// Correlation id, unique within the batch.
    pub id: String,
    /// URL relative to `/v1.0`, e.g. `/groups/{id}/events?$top=100`.
    pub url: String,
    /// Per-item headers, e.g. `Prefer`.
    pub headers: Vec<(String, String)>,
    /// Key of the mailbox budget the item counts against (the group id), if any.
    pub mailbox: Option<String>,
}

/// The `$batch` answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BatchResponse {
    /// One entry per request, in any order.
    #[serde(default)]
    pub responses: Vec<BatchItemResponse>,
}

/// One item's answer: its own status, headers and body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BatchItemResponse {
    /// The request's id.
    pub id: String,
    /// Its HTTP status.
    pub status: u16,
    /// Its headers (e.g. `Retry-After` on a 429), any case.
    #[serde(default)]
    pub headers: Option<HashMap<String, String>>,
    /// Its body (JSON; `null` or absent for 204/302).
    #[serde(default)]
    pub body: Option<Value>,
}

impl BatchItemResponse {
    fn header_map(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in self.headers.iter().flatten() {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.insert(k, v);
            }
        }
        h
    }

    /// The item as a result: its body on 2xx, else the classified error.
    pub fn into_result(self) -> Result<Value> {
        if (200..300).contains(&self.status) {
            return Ok(self.body.unwrap_or(Value::Null));
        }
        let status = reqwest::StatusCode::from_u16(self.status)
            .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.body.as_ref().map(Value::to_string).unwrap_or_default();
        // A 424 (a dependency failed: the item never ran) classifies as retryable, like a 503.
        Err(classify(status, &self.header_map(), body.as_bytes()))
    }
}

/// Sends `gets` in batches of ≤ 20, one batch at a time, and returns each item's result by id. Items answered
/// 429/503/424 are resent (alone, in new batches) after the largest `Retry-After`, up to `max_retries` times.
/// Each send of a `$batch` call, resends included, waits for a token of `mailbox` per item with a
/// [`BatchGet::mailbox`] key.
///
/// # Errors
/// A failing `$batch` call itself (after the client's own retries); per-item failures are in the map.
pub async fn get_all(
    client: &GraphClient,
    gets: Vec<BatchGet>,
    max_retries: usize,
    mailbox: Option<&MailboxLimiter>,
) -> Result<HashMap<String, Result<Value>>> {
    let url = format!("{}/$batch", client.v1_root());
    let mut out = HashMap::new();
    let mut pending = gets;
    let mut attempt = 0;
    while !pending.is_empty() {
        let mut again = Vec::new();
        let mut wait = Duration::ZERO;
        for chunk in pending.chunks(MAX_BATCH) {
            // Every send of this `$batch` (the client's own resends of the whole call included) takes a
            // token for each item's mailbox.
            let keys: Vec<&str> = chunk.iter().filter_map(|g| g.mailbox.as_deref()).collect();
            let body = json!({
                "requests": chunk.iter().map(|g| json!({
                    "id": g.id,
                    "method": "GET",
                    "url": g.url,
                    "headers": g.headers.iter().cloned().collect::<HashMap<_, _>>(),
                })).collect::<Vec<_>>()
            });
            let call = Call {
                method: &reqwest::Method::POST,
                url: &url,
                headers: &[],
                body: Some(&body),
                permits: chunk.len().min(OUTLOOK_PARALLEL) as u32,
                mailbox: mailbox.map(|m| (m, keys.as_slice())),
            };
            let resp: BatchResponse = client.call_json(call).await?;
            let mut answered: HashMap<String, BatchItemResponse> = resp
                .responses
                .into_iter()
                .map(|r| (r.id.to_ascii_lowercase(), r))
                .collect();
            for g in chunk {
                let Some(item) = answered.remove(&g.id.to_ascii_lowercase()) else {
                    again.push(g.clone());
                    continue;
                };
                let retry_after = parse_retry_after(&item.header_map());
                match item.into_result() {
                    Err(e) if e.is_retryable() && attempt < max_retries => {
                        tracing::debug!(id = %g.id, error = %e, "Batch item will be resent.");
                        wait = wait.max(retry_after.unwrap_or_default());
                        again.push(g.clone());
                    }
                    r => {
                        out.insert(g.id.clone(), r);
                    }
                }
            }
        }
        if !again.is_empty() {
            attempt += 1;
            if attempt > max_retries {
                for g in again {
                    out.entry(g.id.clone()).or_insert_with(|| {
                        Err(Error::Decode(format!(
                            "$batch never answered item {}",
                            g.id
                        )))
                    });
                }
                break;
            }
            let backoff = Duration::from_millis(250 * (1 << attempt.min(6)));
            let wait = if wait.is_zero() { backoff } else { wait };
            tracing::info!(
                items = again.len(),
                wait_ms = wait.as_millis() as u64,
                "Resending throttled batch items."
            );
            tokio::time::sleep(wait).await;
        }
        pending = again;
    }
    Ok(out)
}
