//! Delegated tokens for group calendars (GRAPH.md §4, §5.3, §5.4): the device authorization grant that
//! `groupwatch login` runs once, and the refresh-token grant the daemon runs whenever its access token nears
//! expiry, with the rotated refresh token persisted *before* the new access token is used.
//!
//! Both go through the `oauth2` crate (its device-flow poller implements RFC 8628 `authorization_pending` and
//! `slow_down`), over the same [`OAuthHttp`] adapter as the app-only tokens. Device code requires a public
//! client flow in Entra, so these requests carry the client id only, never the app's secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, DeviceAuthorizationUrl, DeviceCodeErrorResponseType, EndpointNotSet,
    EndpointSet, ExtraDeviceAuthorizationFields, RefreshToken, RequestTokenError, Scope,
    TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::auth::{LastAnswer, OAuthHttp, token_error};
use super::error::{Error, Result};

/// Refresh this long before the access token's announced expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

type PublicClient =
    BasicClient<EndpointNotSet, EndpointSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Where the refresh token lives. Implemented by the store (sled), so `graph/` never sees sled.
pub trait RefreshVault: Send + Sync {
    /// The current refresh token, if a login stored one and it was not marked unusable.
    ///
    /// # Errors
    /// A description of the storage failure.
    fn load(&self) -> std::result::Result<Option<SecretString>, String>;
    /// Replaces the stored refresh token (rotation), durably, before the caller uses the new access token.
    /// Async, since making it durable means waiting for the disk.
    ///
    /// # Errors
    /// A description of the storage failure.
    fn save<'a>(
        &'a self,
        refresh_token: &'a SecretString,
    ) -> futures::future::BoxFuture<'a, std::result::Result<(), String>>;
}

/// Endpoints and scopes of one connection's delegated sign-in.
#[derive(Debug, Clone)]
pub struct DelegatedEndpoints {
    /// `{authority}/{tenant}/oauth2/v2.0/token`
    pub token_url: String,
    /// `{authority}/{tenant}/oauth2/v2.0/devicecode`
    pub device_url: String,
    /// Application (client) id.
    pub client_id: String,
    /// Scopes, e.g. `offline_access Group.Read.All`.
    pub scopes: Vec<String>,
}

impl DelegatedEndpoints {
    fn client(&self) -> Result<PublicClient> {
        let bad =
            |what: &str, u: &str, e: url::ParseError| Error::Decode(format!("{what} {u:?}: {e}"));
        Ok(BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(
                TokenUrl::new(self.token_url.clone())
                    .map_err(|e| bad("token URL", &self.token_url, e))?,
            )
            .set_device_authorization_url(
                DeviceAuthorizationUrl::new(self.device_url.clone())
                    .map_err(|e| bad("device-code URL", &self.device_url, e))?,
            ))
    }

    fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.scopes.iter().map(|s| Scope::new(s.clone()))
    }
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

/// Hands out delegated access tokens, refreshing (and rotating the stored refresh token) when needed.
pub struct DelegatedTokens {
    endpoints: DelegatedEndpoints,
    client: PublicClient,
    http: OAuthHttp,
    vault: Arc<dyn RefreshVault>,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for DelegatedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedTokens")
            .field("token_url", &self.endpoints.token_url)
            .field("scopes", &self.endpoints.scopes)
            .finish_non_exhaustive()
    }
}

/// `invalid_grant`, `interaction_required` and friends: only a new interactive login helps.
fn needs_login(code: &str) -> bool {
    matches!(
        code,
        "invalid_grant" | "interaction_required" | "consent_required" | "login_required"
    )
}

impl DelegatedTokens {
    /// Builds the provider; nothing is fetched until the first [`DelegatedTokens::token`].
    ///
    /// # Errors
    /// [`Error::Decode`] for unusable URLs.
    pub fn new(
        http: reqwest::Client,
        endpoints: DelegatedEndpoints,
        vault: Arc<dyn RefreshVault>,
    ) -> Result<Self> {
        Ok(Self {
            client: endpoints.client()?,
            endpoints,
            http: OAuthHttp::new(http),
            vault,
            cached: Mutex::new(None),
        })
    }

    /// A delegated bearer token valid for a few more minutes.
    ///
    /// # Errors
    /// [`Error::SignInRequired`] when the refresh token is missing or refused for good,
    /// [`Error::Vault`] when the rotated token cannot be stored, token-endpoint and transport errors.
    pub async fn token(&self) -> Result<SecretString> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let started = Instant::now();
        let refresh =
            self.vault
                .load()
                .map_err(Error::Vault)?
                .ok_or_else(|| Error::SignInRequired {
                    error: "no_refresh_token".into(),
                    detail: "no delegated sign-in is stored for this connection".into(),
                })?;
        let resp = self
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh.expose_secret().to_owned()))
            .add_scopes(self.endpoints.scopes())
            .request_async(&self.http)
            .await
            .map_err(|e| match token_error(e, &self.http.last()) {
                Error::TokenRefused { error, detail } if needs_login(&error) => {
                    Error::SignInRequired { error, detail }
                }
                other => other,
            })?;
        // Rotation: Entra returns a new refresh token on every use. Store it before anything uses the new
        // access token, so a crash can never leave us holding only a token that was already spent.
        if let Some(rt) = resp.refresh_token() {
            self.vault
                .save(&SecretString::from(rt.secret().to_owned()))
                .await
                .map_err(Error::Vault)?;
        }
        let lifetime = resp.expires_in().unwrap_or(Duration::from_secs(3599));
        let refresh_in = lifetime.checked_sub(REFRESH_MARGIN).unwrap_or(lifetime / 2);
        tracing::debug!(
            lifetime_secs = lifetime.as_secs(),
            "Refreshed a delegated access token."
        );
        let token = SecretString::from(resp.access_token().secret().to_owned());
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: started + refresh_in,
        });
        Ok(token)
    }

    /// Forgets the cached access token (after a 401).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

/// Microsoft's extra device-authorization field: the ready-to-print sign-in instruction.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MicrosoftDeviceFields {
    /// "To sign in, use a web browser to open the page … and enter the code … to authenticate."
    #[serde(default)]
    pub message: Option<String>,
}
impl ExtraDeviceAuthorizationFields for MicrosoftDeviceFields {}

/// What the device flow tells the person at the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginProgress {
    /// Show this (URL and code) to the user.
    Instructions(String),
    /// The server asked to poll more slowly (`slow_down`); the new interval.
    SlowDown(Duration),
    /// The token endpoint could not be reached; the next poll comes after this (a temporary backoff, the
    /// interval itself is unchanged).
    Unreachable(Duration),
}

/// A finished device login.
pub struct LoginOutcome {
    /// The refresh token to store.
    pub refresh_token: SecretString,
    /// Scopes Entra granted.
    pub scopes: Vec<String>,
}

/// Why `groupwatch login` did not produce a refresh token. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The user declined (`authorization_declined` / `access_denied`).
    #[error(
        "the sign-in request was declined ({0}); run `groupwatch login` again and approve it in the browser"
    )]
    Declined(String),
    /// Nobody entered the code in time (`expired_token`).
    #[error(
        "the code expired before the sign-in completed (expired_token); run `groupwatch login` again and enter the new code within {0} s"
    )]
    Expired(u64),
    /// Entra no longer knows the device code (`bad_verification_code`).
    #[error(
        "Entra did not recognise the device code (bad_verification_code); run `groupwatch login` again"
    )]
    BadVerificationCode,
    /// The token came without a refresh token: `offline_access` was not granted.
    #[error(
        "Entra granted no refresh token; make sure delegated_scopes includes offline_access and consent was given"
    )]
    NoRefreshToken,
    /// Any other refusal or transport failure.
    #[error(transparent)]
    Graph(#[from] Error),
}

impl LoginError {
    /// Only transport trouble is worth an automatic retry; the rest needs the operator.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LoginError::Graph(e) if e.is_retryable())
    }
}

/// Longest backoff after consecutive transport failures of the token endpoint (as `oauth2`'s own default).
const MAX_TRANSPORT_BACKOFF: Duration = Duration::from_secs(10);

/// Runs the device authorization grant: request a code, show the instructions, poll at `interval` (growing by
/// 5 s on `slow_down`) until the user approves, declines or the code expires.
///
/// The interval is kept here, from what each poll really got, not taken from `oauth2` (which also doubles it
/// after a transport failure, for good): only `slow_down` raises it. A transport failure backs off for the next
/// poll only — doubling per consecutive failure up to 10 s, as RFC 8628 §3.5 asks after connection timeouts —
/// and is reported as [`LoginProgress::Unreachable`], never as a slow-down.
///
/// # Errors
/// [`LoginError`] with a next step in its message.
pub async fn device_login(
    http: reqwest::Client,
    endpoints: &DelegatedEndpoints,
    progress: impl Fn(LoginProgress) + Send + Sync,
) -> std::result::Result<LoginOutcome, LoginError> {
    let client = endpoints.client()?;
    let http = OAuthHttp::new(http);
    let details: oauth2::DeviceAuthorizationResponse<MicrosoftDeviceFields> = client
        .exchange_device_code()
        .add_scopes(endpoints.scopes())
        .request_async(&http)
        .await
        .map_err(|e| token_error(e, &http.last()))?;
    let text = details.extra_fields().message.clone().unwrap_or_else(|| {
        format!(
            "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
            details.verification_uri().as_str(),
            details.user_code().secret()
        )
    });
    progress(LoginProgress::Instructions(text));
    let expires = details.expires_in().as_secs();
    let interval = AtomicU64::new(details.interval().as_millis() as u64);
    let failures = AtomicU32::new(0);
    let sleep = |_: Duration| {
        let wait = next_poll(&http.last(), &interval, &failures, &progress);
        tokio::time::sleep(wait)
    };
    let token =
        client
            .exchange_device_access_token(&details)
            .request_async(&http, sleep, None)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    match r.error() {
                        DeviceCodeErrorResponseType::AccessDenied => {
                            LoginError::Declined("access_denied".into())
                        }
                        DeviceCodeErrorResponseType::ExpiredToken => LoginError::Expired(expires),
                        DeviceCodeErrorResponseType::Basic(BasicErrorResponseType::Extension(
                            x,
                        )) if x == "authorization_declined" => LoginError::Declined(x.clone()),
                        DeviceCodeErrorResponseType::Basic(BasicErrorResponseType::Extension(
                            x,
                        )) if x == "bad_verification_code" => LoginError::BadVerificationCode,
                        other => LoginError::Graph(Error::TokenRefused {
                            error: other.to_string(),
                            detail: r
                                .error_description()
                                .map(|d| d.lines().next().unwrap_or_default().to_owned())
                                .unwrap_or_default(),
                        }),
                    }
                }
                RequestTokenError::Request(source) => LoginError::Graph(Error::Transport {
                    what: "the token endpoint",
                    source,
                }),
                other => LoginError::Graph(Error::Decode(format!("token endpoint: {other}"))),
            })?;
    let refresh = token.refresh_token().ok_or(LoginError::NoRefreshToken)?;
    Ok(LoginOutcome {
        refresh_token: SecretString::from(refresh.secret().to_owned()),
        scopes: token
            .scopes()
            .map(|s| s.iter().map(|x| x.to_string()).collect())
            .unwrap_or_else(|| endpoints.scopes.clone()),
    })
}

/// The wait before the next device-code poll, from what the last one got: `slow_down` raises the interval by
/// 5 s for good; a transport failure (no answer) backs off temporarily; anything else keeps the interval.
fn next_poll(
    last: &LastAnswer,
    interval: &AtomicU64,
    failures: &AtomicU32,
    progress: &impl Fn(LoginProgress),
) -> Duration {
    let current = Duration::from_millis(interval.load(Ordering::Relaxed));
    if last.status.is_none() {
        let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
        let wait = current
            .saturating_mul(1 << n.min(16))
            .min(MAX_TRANSPORT_BACKOFF.max(current));
        tracing::warn!(
            wait_ms = wait.as_millis() as u64,
            "The token endpoint could not be reached while waiting for the sign-in; trying again."
        );
        progress(LoginProgress::Unreachable(wait));
        return wait;
    }
    failures.store(0, Ordering::Relaxed);
    if last.error.as_deref() == Some("slow_down") {
        let slower = current + Duration::from_secs(5);
        interval.store(slower.as_millis() as u64, Ordering::Relaxed);
        progress(LoginProgress::SlowDown(slower));
        return slower;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(error: Option<&str>) -> LastAnswer {
        LastAnswer {
            status: Some(400),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn only_slow_down_raises_the_interval_and_transport_failures_back_off_for_one_poll() {
        let interval = AtomicU64::new(1000);
        let failures = AtomicU32::new(0);
        let said = std::sync::Mutex::new(Vec::new());
        let progress = |p: LoginProgress| said.lock().unwrap().push(p);
        let next = |last: LastAnswer| next_poll(&last, &interval, &failures, &progress);
        let secs = Duration::from_secs;
        assert_eq!(next(answered(Some("authorization_pending"))), secs(1));
        assert_eq!(next(LastAnswer::default()), secs(2), "transport: back off");
        assert_eq!(next(LastAnswer::default()), secs(4), "again: longer");
        assert_eq!(next(answered(Some("authorization_pending"))), secs(1));
        assert_eq!(next(answered(Some("slow_down"))), secs(6));
        assert_eq!(next(answered(Some("authorization_pending"))), secs(6));
        for _ in 0..5 {
            next(LastAnswer::default());
        }
        assert_eq!(next(LastAnswer::default()), secs(10), "capped");
        let said = said.into_inner().unwrap();
        let slow: Vec<_> = said
            .iter()
            .filter(|p| matches!(p, LoginProgress::SlowDown(_)))
            .collect();
        assert_eq!(slow, [&LoginProgress::SlowDown(secs(6))]);
    }
}
