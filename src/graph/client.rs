//! The Graph HTTP client: bearer tokens, a client-side rate limit, a global concurrency cap, retries with
//! `Retry-After`, and links that never leave the configured Graph host.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use super::auth::TokenProvider;
use super::delta::{DeltaPage, DirectoryObject, DirectoryObjectPage};
use super::error::{Error, Result, classify};
use crate::config::ConnectionConfig;

/// Largest `$filter=id eq …` list Graph accepts on `/groups/delta`.
pub const MAX_GROUPS_PER_DELTA: usize = 50;

/// Counters a poller and `groupwatch state` report.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// HTTP requests sent to Graph (not counting the token endpoint).
    pub requests: AtomicU64,
    /// Requests that were retried.
    pub retries: AtomicU64,
    /// 429 answers seen.
    pub throttled: AtomicU64,
}

/// One tenant connection's Graph client.
#[derive(Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    tokens: TokenProvider,
    limiter: DefaultDirectRateLimiter,
    concurrency: Arc<Semaphore>,
    max_retries: usize,
    low_priority: bool,
    /// Request counters.
    pub stats: ClientStats,
}

/// Builds the one reqwest client of a connection: timeouts set, redirects off (Graph never needs them and
/// a redirect must not carry our bearer token elsewhere).
#[allow(clippy::disallowed_methods)]
pub fn http_client(connect: Duration, request: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(request)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("groupwatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| Error::Transport {
            what: "the HTTP client builder",
            source,
        })
}

impl GraphClient {
    /// Builds the client of one `[connections.NAME]`. `concurrency` is shared by all connections.
    ///
    /// # Errors
    /// [`Error::Decode`] for unusable URLs (validation normally catches them first).
    pub fn new(conn: &ConnectionConfig, concurrency: Arc<Semaphore>) -> Result<Self> {
        let http = http_client(
            Duration::from_secs(conn.connect_timeout_secs),
            Duration::from_secs(conn.request_timeout_secs),
        )?;
        let base = Url::parse(conn.graph_url.trim_end_matches('/'))
            .map_err(|e| Error::Decode(format!("graph_url {:?}: {e}", conn.graph_url)))?;
        let token_url = format!(
            "{}/{}/oauth2/v2.0/token",
            conn.authority_url.trim_end_matches('/'),
            conn.tenant_id
        );
        let scope = format!("{}/.default", conn.graph_url.trim_end_matches('/'));
        let secret = conn
            .client_secret
            .clone()
            .ok_or_else(|| Error::Decode("client_secret is missing".into()))?;
        let tokens = TokenProvider::new(http.clone(), &token_url, &conn.client_id, &secret, scope)?;
        let calls = NonZeroU32::new(conn.rate_limit_calls.max(1)).expect("max(1) is non-zero");
        let period = Duration::from_secs(conn.rate_limit_period_secs.max(1));
        let quota = Quota::with_period(period / calls.get())
            .expect("a non-zero period")
            .allow_burst(calls);
        Ok(Self {
            http,
            base,
            tokens,
            limiter: RateLimiter::direct(quota),
            concurrency,
            max_retries: conn.max_retries,
            low_priority: conn.throttle_priority_low,
            stats: ClientStats::default(),
        })
    }

    /// The first URL of a membership delta round for these groups (≤ 50).
    pub fn delta_start_url(&self, groups: &[String], owners: bool) -> String {
        debug_assert!(groups.len() <= MAX_GROUPS_PER_DELTA);
        let select = if owners { "members,owners" } else { "members" };
        let filter = groups
            .iter()
            .map(|g| format!("id eq '{g}'"))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}/v1.0/groups/delta",
            self.base.path().trim_end_matches('/')
        ));
        url.set_query(Some(&format!("$select={select}&$filter={filter}")));
        url.to_string()
    }

    /// Fetches one delta page (the start URL, a saved nextLink or a saved deltaLink).
    ///
    /// # Errors
    /// Any [`Error`]; [`Error::ResyncRequired`] means the cursor must be dropped.
    pub async fn delta_page(&self, url: &str) -> Result<DeltaPage> {
        self.get_json(url).await
    }

    /// Lists a group's direct members, following every nextLink.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn list_members(&self, group: &str, top: u32) -> Result<Vec<DirectoryObject>> {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}/v1.0/groups/{group}/members",
            self.base.path().trim_end_matches('/')
        ));
        url.set_query(Some(&format!("$top={top}")));
        let mut next = Some(url.to_string());
        let mut out = Vec::new();
        while let Some(u) = next {
            let page: DirectoryObjectPage = self.get_json(&u).await?;
            out.extend(page.value);
            next = page.next_link;
        }
        Ok(out)
    }

    /// GET with retries: 429/503 wait `Retry-After` exactly, other retryable errors back off
    /// exponentially with jitter, up to `max_retries` times.
    ///
    /// # Errors
    /// The last error once retries are spent, or the first non-retryable one.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T> {
        self.check_host(url)?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(self.max_retries)
            .with_jitter();
        (|| self.get_once::<T>(url))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(Error::is_retryable)
            .adjust(|e, planned| match (e.retry_after(), planned) {
                // Graph said how long: wait exactly that (never less), as long as retries remain.
                (Some(wait), Some(_)) => Some(wait),
                (_, planned) => planned,
            })
            .notify(|e, wait| {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "Retrying Graph request.");
            })
            .await
    }

    async fn get_once<T: DeserializeOwned>(&self, url: &str) -> Result<T> {
        // A 401 with a cached token may just mean it was revoked or expired early: refresh once.
        for attempt in 0..2 {
            self.limiter.until_ready().await;
            let _permit = self
                .concurrency
                .acquire()
                .await
                .expect("the Graph semaphore is never closed");
            let token = self.tokens.token().await?;
            let mut req = self
                .http
                .get(url)
                .bearer_auth(token.expose_secret())
                .header("Accept", "application/json");
            if self.low_priority {
                req = req.header("x-ms-throttle-priority", "low");
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let resp = req.send().await.map_err(|source| Error::Transport {
                what: "Graph",
                source,
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.map_err(|source| Error::Transport {
                what: "Graph",
                source,
            })?;
            if status.is_success() {
                return serde_json::from_slice(&body).map_err(|e| {
                    Error::Decode(format!(
                        "{e} in {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ))
                });
            }
            let err = classify(status, &headers, &body);
            if matches!(err, Error::Throttled { .. }) {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            }
            if matches!(err, Error::Unauthorized { .. }) && attempt == 0 {
                tracing::info!("Graph refused the access token; fetching a new one.");
                self.tokens.invalidate().await;
                continue;
            }
            return Err(err);
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Links from Graph are followed only when they point at the configured Graph origin.
    fn check_host(&self, url: &str) -> Result<()> {
        let u = Url::parse(url).map_err(|_| Error::ForeignLink(url.to_owned()))?;
        if u.origin() == self.base.origin() {
            Ok(())
        } else {
            Err(Error::ForeignLink(url.to_owned()))
        }
    }
}
