//! A real webhook receiver: axum on 127.0.0.1:0. It verifies Standard Webhooks signatures with its own
//! HMAC code (not groupwatch's signer), records every attempt (on any path, so a followed redirect shows),
//! and answers with a status, `Retry-After`, `Location` and delay a test can script and switch mid-test.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio_util::sync::{CancellationToken, DropGuard};

/// One answer: a status, an optional `Retry-After` and `Location`, and an optional delay before answering.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            location: None,
            delay: None,
        }
    }

    /// With a `Retry-After` header.
    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }

    /// With a `Location` header (a redirect target).
    pub fn location(mut self, url: &str) -> Self {
        self.location = Some(url.to_owned());
        self
    }

    /// Answers only after `delay` (the request is recorded when it arrives).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    /// The request path: `/hook` unless the sender went somewhere else (e.g. followed a redirect).
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Bytes,
    /// How many of the configured secrets produced a matching `v1` signature.
    pub secrets_matched: usize,
    /// Status answered.
    pub status: u16,
    pub at: Instant,
}

impl Hit {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

struct Inner {
    keys: Vec<Vec<u8>>,
    script: VecDeque<Reply>,
    default: Reply,
    hits: Vec<Hit>,
}

/// Handle to a running receiver; dropping it stops the server.
#[derive(Clone)]
pub struct Receiver {
    base: String,
    inner: Arc<Mutex<Inner>>,
    _stop: Arc<DropGuard>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn matches(key: &[u8], id: &str, ts: &str, body: &[u8], sig_b64: &str) -> bool {
    let Ok(tag) = B64.decode(sig_b64) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, reply) = record(&inner, &method, &uri, &headers, body);
    if let Some(d) = reply.delay {
        // The request is on record already: a sender that gives up meanwhile has still "delivered" it.
        tokio::time::sleep(d).await;
    }
    let mut resp = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(ra) = reply.retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().unwrap());
    }
    if let Some(to) = reply.location {
        resp.headers_mut().insert("location", to.parse().unwrap());
    }
    resp
}

/// Verifies and records one request; returns the status to answer and the scripted reply.
fn record(
    inner: &Mutex<Inner>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> (u16, Reply) {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let mut g = lock(inner);
    let secrets_matched = g
        .keys
        .iter()
        .filter(|k| {
            sig.split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .any(|b64| matches(k, &id, &ts, &body, b64))
        })
        .count();
    let reply = g.script.pop_front().unwrap_or_else(|| g.default.clone());
    // An unsigned or wrongly signed request is refused like a real receiver would (and the test sees it).
    let status = if secrets_matched == 0 {
        401
    } else {
        reply.status
    };
    g.hits.push(Hit {
        method: method.to_string(),
        path: uri.path().to_owned(),
        id,
        timestamp: ts,
        signature: sig,
        content_type: h("content-type"),
        body,
        secrets_matched,
        status,
        at: Instant::now(),
    });
    (status, reply)
}

impl Receiver {
    /// Starts a receiver that knows `secrets` (`whsec_…`) and answers 204 unless told otherwise.
    pub async fn start(secrets: &[&str]) -> Receiver {
        Self::start_on(secrets, 0).await
    }

    /// [`Receiver::start`] on a given port of 127.0.0.1 (0: any), e.g. one a sender already targets.
    pub async fn start_on(secrets: &[&str], port: u16) -> Receiver {
        let keys = secrets
            .iter()
            .map(|s| B64.decode(s.strip_prefix("whsec_").unwrap()).unwrap())
            .collect();
        let inner = Arc::new(Mutex::new(Inner {
            keys,
            script: VecDeque::new(),
            default: Reply::status(204),
            hits: Vec::new(),
        }));
        // Every method and path is answered and recorded, so a test sees a request that went elsewhere
        // (a followed redirect) as well as those to `/hook`.
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Receiver {
            base,
            inner,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// The webhook endpoint, `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        self.url_for("/hook")
    }

    /// Another URL on this receiver (requests to it are recorded too).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// From now on, answer `status` (after any scripted replies).
    pub fn set_status(&self, status: u16) {
        lock(&self.inner).default = Reply::status(status);
    }

    /// The next requests get these replies, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.inner).script.extend(replies);
    }

    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.inner).hits.clone()
    }

    /// Ids of accepted (2xx) deliveries, in arrival order.
    pub fn delivered_ids(&self) -> Vec<String> {
        self.hits()
            .into_iter()
            .filter(Hit::ok)
            .map(|h| h.id)
            .collect()
    }

    /// Waits until `n` deliveries were accepted; panics after `timeout`.
    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.delivered_ids();
            if ids.len() >= n {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} deliveries accepted within {timeout:?}; hits: {:?}",
                ids.len(),
                self.hits()
                    .iter()
                    .map(|h| (h.id.clone(), h.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
