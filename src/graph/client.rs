//! The Graph HTTP client: bearer tokens, a client-side rate limit, a global concurrency cap, retries with
//! `Retry-After`, and links that never leave the configured Graph host.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use super::assertion::CertificateCredential;
use super::auth::{AppCredential, TokenProvider};
use super::delegated::{DelegatedEndpoints, DelegatedTokens, RefreshVault};
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

/// A request budget per mailbox (Outlook: per app and mailbox), keyed by group id.
pub type MailboxLimiter = DefaultKeyedRateLimiter<String>;

/// Where a client's bearer tokens come from: the app itself (membership) or a signed-in user (calendars).
#[derive(Debug)]
enum Tokens {
    App(TokenProvider),
    Delegated(DelegatedTokens),
}

impl Tokens {
    async fn token(&self) -> Result<secrecy::SecretString> {
        match self {
            Tokens::App(t) => t.token().await,
            Tokens::Delegated(t) => t.token().await,
        }
    }

    async fn invalidate(&self) {
        match self {
            Tokens::App(t) => t.invalidate().await,
            Tokens::Delegated(t) => t.invalidate().await,
        }
    }
}

/// One request: method, URL, extra headers, JSON body, and how many concurrency permits it holds (a `$batch`
/// holds several, because Outlook runs up to 4 of its items at once).
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// GET or POST.
    pub method: &'a reqwest::Method,
    /// Absolute URL on the Graph host.
    pub url: &'a str,
    /// Extra headers, e.g. `Prefer: outlook.timezone="UTC"`.
    pub headers: &'a [(&'a str, &'a str)],
    /// JSON body (POST).
    pub body: Option<&'a serde_json::Value>,
    /// Permits of the concurrency semaphore held while in flight.
    pub permits: u32,
    /// The mailbox budget this request counts against, and the mailboxes it touches (one for a plain
    /// request, one per item for a `$batch`): every attempt (retries, whole-batch resends and the refresh
    /// after a 401 included) waits for a token of each.
    pub mailbox: Option<(&'a MailboxLimiter, &'a [&'a str])>,
}

impl<'a> Call<'a> {
    /// A plain GET.
    pub fn get(url: &'a str) -> Self {
        Call {
            method: &reqwest::Method::GET,
            url,
            headers: &[],
            body: None,
            permits: 1,
            mailbox: None,
        }
    }
}

/// The `{authority}/{tenant}/oauth2/v2.0/{endpoint}` URL of a connection.
pub fn authority_endpoint(conn: &ConnectionConfig, endpoint: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/{endpoint}",
        conn.authority_url.trim_end_matches('/'),
        conn.tenant_id
    )
}

/// The delegated endpoints and scopes of a connection.
pub fn delegated_endpoints(conn: &ConnectionConfig) -> DelegatedEndpoints {
    DelegatedEndpoints {
        token_url: authority_endpoint(conn, "token"),
        device_url: authority_endpoint(conn, "devicecode"),
        client_id: conn.client_id.clone(),
        scopes: conn.delegated_scopes.clone(),
    }
}

/// One tenant connection's Graph client.
#[derive(Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    tokens: Tokens,
    limiter: DefaultDirectRateLimiter,
    concurrency: Arc<Semaphore>,
    /// The semaphore's size (a call never asks for more permits than exist).
    max_permits: u32,
    max_retries: usize,
    low_priority: bool,
    /// No request of this client leaves before this instant: the latest `Retry-After` Graph sent (429, or
    /// 503 with the header) to a directory or `$batch` request. Directory throttling is per app and tenant,
    /// so every batch of the connection waits, not only the request that was refused.
    throttled_until: std::sync::Mutex<Option<tokio::time::Instant>>,
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
    /// Builds the app-only client of one `[connections.NAME]`. `concurrency` is shared by all connections.
    ///
    /// # Errors
    /// [`Error::Decode`] for unusable URLs (validation normally catches them first), [`Error::Assertion`] for
    /// an unusable certificate.
    pub fn new(conn: &ConnectionConfig, concurrency: Arc<Semaphore>) -> Result<Self> {
        let http = Self::http_for(conn)?;
        let scope = format!("{}/.default", conn.graph_url.trim_end_matches('/'));
        let credential = match (&conn.client_certificate_path, &conn.client_key_path) {
            (Some(cert), Some(key)) => AppCredential::Certificate(Box::new(
                CertificateCredential::load(cert, key, conn.client_assertion_alg)?,
            )),
            _ => AppCredential::Secret(conn.client_secret.clone().ok_or_else(|| {
                Error::Decode("neither client_secret nor a certificate is configured".into())
            })?),
        };
        let token_url = authority_endpoint(conn, "token");
        let tokens =
            TokenProvider::new(http.clone(), &token_url, &conn.client_id, credential, scope)?;
        Self::build(conn, http, Tokens::App(tokens), concurrency)
    }

    /// Builds the delegated (signed-in user) client of a connection, for group calendars. `concurrency` is the
    /// calendar semaphore of the connection's app, shared by connections with the same client id (Outlook: 4
    /// concurrent requests per app).
    ///
    /// # Errors
    /// [`Error::Decode`] for unusable URLs.
    pub fn delegated(
        conn: &ConnectionConfig,
        vault: Arc<dyn RefreshVault>,
        concurrency: Arc<Semaphore>,
    ) -> Result<Self> {
        let http = Self::http_for(conn)?;
        let tokens = DelegatedTokens::new(http.clone(), delegated_endpoints(conn), vault)?;
        Self::build(conn, http, Tokens::Delegated(tokens), concurrency)
    }

    fn http_for(conn: &ConnectionConfig) -> Result<reqwest::Client> {
        http_client(
            Duration::from_secs(conn.connect_timeout_secs),
            Duration::from_secs(conn.request_timeout_secs),
        )
    }

    fn build(
        conn: &ConnectionConfig,
        http: reqwest::Client,
        tokens: Tokens,
        concurrency: Arc<Semaphore>,
    ) -> Result<Self> {
        let base = Url::parse(conn.graph_url.trim_end_matches('/'))
            .map_err(|e| Error::Decode(format!("graph_url {:?}: {e}", conn.graph_url)))?;
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
            max_permits: u32::try_from(concurrency.available_permits())
                .unwrap_or(u32::MAX)
                .max(1),
            concurrency,
            max_retries: conn.max_retries,
            low_priority: conn.throttle_priority_low,
            throttled_until: std::sync::Mutex::new(None),
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
        self.call_json(Call::get(url)).await
    }

    /// The `/v1.0` root URL of this client's Graph host, e.g. `https://graph.microsoft.com/v1.0`.
    pub fn v1_root(&self) -> String {
        format!("{}/v1.0", self.base.as_str().trim_end_matches('/'))
    }

    /// Any call with the retry policy of [`GraphClient::get_json`].
    ///
    /// # Errors
    /// As [`GraphClient::get_json`].
    pub async fn call_json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        let url = call.url;
        self.check_host(url)?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(self.max_retries)
            .with_jitter();
        (|| self.send_once::<T>(call))
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

    async fn send_once<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        // A 401 with a cached token may just mean it was revoked or expired early: refresh once.
        for attempt in 0..2 {
            if let Some((budget, keys)) = call.mailbox {
                for key in keys {
                    budget.until_key_ready(&(*key).to_owned()).await;
                }
            }
            self.wait_out_throttle().await;
            self.limiter.until_ready().await;
            let _permit = loop {
                let permit = self
                    .concurrency
                    .acquire_many(call.permits.clamp(1, self.max_permits))
                    .await
                    .expect("the Graph semaphore is never closed");
                // A Retry-After may have come in while this request queued for its permit: give the permit
                // back (the semaphore is shared with other connections) and wait it out.
                if !self.throttled_now() {
                    break permit;
                }
                drop(permit);
                self.wait_out_throttle().await;
            };
            let token = self.tokens.token().await?;
            let mut req = self
                .http
                .request(call.method.clone(), call.url)
                .bearer_auth(token.expose_secret())
                .header("Accept", "application/json");
            for (k, v) in call.headers {
                req = req.header(*k, *v);
            }
            if let Some(body) = call.body {
                req = req.json(body);
            }
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
            // Directory throttling is per app and tenant: hold every request of this client. Outlook
            // throttles per mailbox (GRAPH.md §6.4), so a single-mailbox request's Retry-After holds only
            // that request (its retry waits it out); a `$batch` spanning mailboxes holds the client.
            let one_mailbox = call.mailbox.is_some_and(|(_, keys)| keys.len() == 1)
                && !call.url.ends_with("/$batch");
            if let Some(wait) = err.retry_after().filter(|_| !one_mailbox) {
                self.hold_off(wait);
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

    fn throttle_gate(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        self.throttled_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers Graph's `Retry-After` for every later request of this client (the latest end wins).
    fn hold_off(&self, wait: Duration) {
        let end = tokio::time::Instant::now() + wait;
        let mut gate = self.throttle_gate();
        *gate = Some(gate.map_or(end, |t| t.max(end)));
    }

    fn throttled_now(&self) -> bool {
        self.throttle_gate()
            .is_some_and(|t| t > tokio::time::Instant::now())
    }

    /// Sleeps until a `Retry-After` that Graph sent to any request of this client has elapsed.
    async fn wait_out_throttle(&self) {
        let until = *self.throttle_gate();
        if let Some(t) = until.filter(|t| *t > tokio::time::Instant::now()) {
            tracing::debug!(
                wait_ms = (t - tokio::time::Instant::now()).as_millis() as u64,
                "Waiting out Graph's Retry-After before the next request."
            );
            tokio::time::sleep_until(t).await;
        }
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
