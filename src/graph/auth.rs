//! App-only access tokens (OAuth 2.0 client credentials) through the `oauth2` crate, cached and refreshed
//! before they expire.
//!
//! `oauth2` 5 ships a reqwest 0.12 client; [`OAuthHttp`] is the few-line adapter that lets it use our
//! reqwest 0.13 client (same timeouts, same TLS), so there is one HTTP stack in the binary. It remembers the
//! last answer's status and OAuth error, which `oauth2`'s errors do not carry: a body that failed to parse is
//! quoted in errors only when it was not a 2xx (a 2xx token response holds the tokens), and the device flow
//! tells `slow_down` from a transport failure.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use oauth2::basic::{BasicClient, BasicErrorResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse,
    RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::assertion::{ASSERTION_TYPE, CertificateCredential};
use super::error::{Error, Result};

/// Refresh this long before the token's announced expiry (Entra tokens live 60–90 min).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

type Client =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// How the app proves its identity in the client-credentials grant.
pub enum AppCredential {
    /// `client_secret` in the form body.
    Secret(SecretString),
    /// A signed `client_assertion` JWT per request (certificate credential).
    Certificate(Box<CertificateCredential>),
}

/// What the token endpoint last answered through an [`OAuthHttp`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastAnswer {
    /// The HTTP status; `None` before any request or when the last one failed in transport.
    pub status: Option<u16>,
    /// The OAuth `error` of a non-2xx JSON body, e.g. `slow_down`.
    pub error: Option<String>,
}

impl LastAnswer {
    fn success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Adapter: `oauth2::AsyncHttpClient` over our reqwest 0.13 client. Its users send one request at a time
/// (each token provider holds its cache lock while fetching), so [`OAuthHttp::last`] is that request's answer.
pub struct OAuthHttp {
    client: reqwest::Client,
    last: std::sync::Mutex<LastAnswer>,
}

impl OAuthHttp {
    /// Wraps `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            last: std::sync::Mutex::default(),
        }
    }

    /// The last request's answer.
    pub fn last(&self) -> LastAnswer {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn remember(&self, answer: LastAnswer) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = answer;
    }
}

/// The `error` field of an OAuth error body.
fn oauth_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.as_str().map(str::to_owned)
}

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp {
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, reqwest::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            self.remember(LastAnswer::default());
            let (parts, body) = request.into_parts();
            let resp = self
                .client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let mut builder = http::Response::builder().status(status);
            for (k, v) in resp.headers() {
                builder = builder.header(k, v);
            }
            let bytes = resp.bytes().await?;
            self.remember(LastAnswer {
                status: Some(status.as_u16()),
                error: (!status.is_success())
                    .then(|| oauth_error(&bytes))
                    .flatten(),
            });
            Ok(builder
                .body(bytes.to_vec())
                .expect("status and headers came from a valid response"))
        })
    }
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

/// Hands out a valid bearer token, fetching a new one when the cached one nears expiry.
pub struct TokenProvider {
    client: Client,
    client_id: String,
    certificate: Option<Box<CertificateCredential>>,
    scope: String,
    http: OAuthHttp,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.client.token_uri().as_str())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// `token_url` is `{authority}/{tenant}/oauth2/v2.0/token`; `scope` is `{graph_url}/.default`.
    ///
    /// # Errors
    /// [`Error::Decode`] when the token URL is not a URL.
    pub fn new(
        http: reqwest::Client,
        token_url: &str,
        client_id: &str,
        credential: AppCredential,
        scope: String,
    ) -> Result<Self> {
        let token_url = TokenUrl::new(token_url.to_owned())
            .map_err(|e| Error::Decode(format!("token URL {token_url:?}: {e}")))?;
        let mut client = BasicClient::new(ClientId::new(client_id.to_owned()))
            // Entra documents the secret in the form body; Basic auth works too, but keep to the docs.
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        let mut certificate = None;
        match credential {
            AppCredential::Secret(secret) => {
                client =
                    client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
            }
            AppCredential::Certificate(c) => certificate = Some(c),
        }
        Ok(Self {
            client,
            client_id: client_id.to_owned(),
            certificate,
            scope,
            http: OAuthHttp::new(http),
            cached: Mutex::new(None),
        })
    }

    /// A bearer token valid for at least a few more minutes.
    ///
    /// # Errors
    /// [`Error::TokenRefused`] with the AADSTS text, or [`Error::Transport`].
    pub async fn token(&self) -> Result<SecretString> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token (after a 401), so the next call fetches a new one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<Cached> {
        let started = Instant::now();
        let mut request = self
            .client
            .exchange_client_credentials()
            .add_scope(Scope::new(self.scope.clone()));
        if let Some(cert) = &self.certificate {
            // The assertion's audience is the token endpoint itself (GRAPH.md §5.2); a new jti each time.
            let jwt = cert.sign(self.client.token_uri().as_str(), &self.client_id)?;
            request = request
                .add_extra_param("client_assertion_type", ASSERTION_TYPE)
                .add_extra_param("client_assertion", jwt);
        }
        let resp = request
            .request_async(&self.http)
            .await
            .map_err(|e| token_error(e, &self.http.last()))?;
        let lifetime = resp.expires_in().unwrap_or(Duration::from_secs(3599));
        let refresh_in = lifetime.checked_sub(REFRESH_MARGIN).unwrap_or(lifetime / 2);
        tracing::debug!(
            lifetime_secs = lifetime.as_secs(),
            "Fetched a Graph access token."
        );
        Ok(Cached {
            token: SecretString::from(resp.access_token().secret().to_owned()),
            refresh_at: started + refresh_in,
        })
    }
}

/// Maps an `oauth2` failure. `last` is the answer it came from: an unparsable body is quoted (200 chars) only
/// when it was not a 2xx, since a 2xx token response carries access and refresh tokens.
pub(crate) fn token_error(
    e: RequestTokenError<reqwest::Error, BasicErrorResponse>,
    last: &LastAnswer,
) -> Error {
    match e {
        RequestTokenError::ServerResponse(r) => Error::TokenRefused {
            error: r.error().to_string(),
            detail: r
                .error_description()
                .map(|d| d.lines().next().unwrap_or_default().to_owned())
                .unwrap_or_default(),
        },
        RequestTokenError::Request(source) => Error::Transport {
            what: "the token endpoint",
            source,
        },
        RequestTokenError::Parse(err, _) if last.success() || last.status.is_none() => {
            Error::Decode(format!(
                "token endpoint answered an unreadable token response (body withheld: it may hold tokens): {}",
                redact_quoted(&err.to_string())
            ))
        }
        RequestTokenError::Parse(err, body) => Error::Decode(format!(
            "token endpoint answered {}: {}: {err}",
            last.status.unwrap_or_default(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
        RequestTokenError::Other(s) => Error::Decode(format!("token endpoint: {s}")),
    }
}

/// `s` with every double-quoted part replaced by `"…"`: serde quotes the offending value ("invalid type: string
/// \"…\""), which in a token response may be a token.
fn redact_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut inside = false;
    for c in s.chars() {
        if c == '"' {
            if inside {
                out.push('…');
            }
            out.push(c);
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// A token endpoint on 127.0.0.1 that always answers `status` with `body` as JSON.
    async fn endpoint(status: StatusCode, body: &'static str) -> String {
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move || async move {
                (status, [("content-type", "application/json")], body)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/token")
    }

    async fn fetch_error(status: StatusCode, body: &'static str) -> String {
        let url = endpoint(status, body).await;
        let provider = TokenProvider::new(
            reqwest::Client::new(),
            &url,
            "client",
            AppCredential::Secret(SecretString::from("secret")),
            "scope/.default".into(),
        )
        .unwrap();
        provider.token().await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn an_unreadable_2xx_token_response_never_quotes_the_tokens() {
        let body = r#"{"access_token":"SECRET-AT-1","refresh_token":"SECRET-RT-1","expires_in":"SECRET-AT-1","token_type":"Bearer"}"#;
        let text = fetch_error(StatusCode::OK, body).await;
        assert!(text.contains("unreadable token response"), "{text}");
        assert!(text.contains("expires_in"), "says where: {text}");
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[tokio::test]
    async fn an_unreadable_error_response_is_quoted() {
        let text = fetch_error(StatusCode::BAD_GATEWAY, "<html>proxy error</html>").await;
        assert!(
            text.contains("502") && text.contains("proxy error"),
            "{text}"
        );
    }

    #[test]
    fn quoted_values_are_redacted() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "tok", expected u64 at `expires_in`"#),
            r#"invalid type: string "…", expected u64 at `expires_in`"#
        );
    }
}
