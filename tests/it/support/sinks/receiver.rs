//! A real webhook receiver: axum on 127.0.0.1:0. It verifies Standard Webhooks signatures with its own
//! HMAC code (not groupwatch's signer), records every attempt, and answers with a status a test can script
//! and switch mid-test.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio_util::sync::{CancellationToken, DropGuard};

/// One answer: a status and an optional `Retry-After`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Hit {
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
    url: String,
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
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    let mut g = lock(&inner);
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
        id,
        timestamp: ts,
        signature: sig,
        content_type: h("content-type"),
        body,
        secrets_matched,
        status,
        at: Instant::now(),
    });
    let mut resp = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(ra) = reply.retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().unwrap());
    }
    resp
}

impl Receiver {
    /// Starts a receiver that knows `secrets` (`whsec_…`) and answers 204 unless told otherwise.
    pub async fn start(secrets: &[&str]) -> Receiver {
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
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Receiver {
            url,
            inner,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
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
