//! The client-credentials token endpoint and bearer-token validation for `/v1.0`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use super::errors::{aad_timestamp, hex_token};
use super::{Shared, lock};

/// One issued access token: until when, and for whom (`None` = app-only).
struct Grant {
    expires: Instant,
    user: Option<String>,
}

/// Issued access tokens and when each stops being valid.
#[derive(Default)]
pub(super) struct Tokens {
    grants: HashMap<String, Grant>,
    /// Client assertions whose signature checked out against the trusted certificate.
    pub verified_assertions: usize,
    /// `jti`s already used (Entra rejects a replayed assertion).
    pub jtis: std::collections::HashSet<String>,
}

impl Tokens {
    pub fn revoke_all(&mut self) {
        self.grants.clear();
    }

    /// True if `token` was issued here, is not revoked and has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        self.grants
            .get(token)
            .is_some_and(|g| Instant::now() < g.expires)
    }

    /// The signed-in user of a valid delegated token; `Some(None)` for a valid app-only token.
    pub fn user(&self, token: &str) -> Option<Option<String>> {
        self.grants
            .get(token)
            .filter(|g| Instant::now() < g.expires)
            .map(|g| g.user.clone())
    }
}

impl Shared {
    /// Issues an access token for the app (`user = None`) or a signed-in user.
    pub(super) fn new_access_token(&self, user: Option<String>) -> String {
        let token = format!("sim.{}", hex_token(&mut *lock(&self.ids)));
        let grant = Grant {
            expires: Instant::now() + self.cfg.token_ttl,
            user,
        };
        lock(&self.auth).grants.insert(token.clone(), grant);
        token
    }
}

/// The bearer token of a request, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// An AAD token-endpoint failure.
pub(super) struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl AadError {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        text: impl Into<String>,
    ) -> Self {
        let description = text.into();
        Self {
            status,
            error,
            code,
            description,
        }
    }
}

/// `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`.
pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if super::device::stalls(&shared, &body) {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    match issue(&shared, &tenant, &headers, &body) {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(e) => {
            let (trace_id, correlation_id) = (shared.new_guid(), shared.new_guid());
            let timestamp = aad_timestamp();
            let description = format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                e.code, e.description
            );
            tracing::debug!(
                error = e.error,
                code = e.code,
                "Simulated token request refused."
            );
            let body = json!({
                "error": e.error,
                "error_description": description,
                "error_codes": [e.code],
                "timestamp": timestamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
            });
            (e.status, axum::Json(body)).into_response()
        }
    }
}

/// Validates the request in AAD's order and returns the success body.
fn issue(
    shared: &Shared,
    tenant: &str,
    headers: &HeaderMap,
    body: &str,
) -> Result<serde_json::Value, AadError> {
    use StatusCode as S;
    let cfg = &shared.cfg;
    let form = super::query::pairs(Some(body));
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let missing = |name: &str| {
        let text = format!("The request body must contain the following parameter: '{name}'.");
        AadError::new(S::BAD_REQUEST, "invalid_request", 900144, text)
    };
    if tenant != cfg.tenant_id {
        let text = format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and \
             are signing into the correct cloud."
        );
        return Err(AadError::new(
            S::BAD_REQUEST,
            "invalid_request",
            90002,
            text,
        ));
    }
    let grant = field("grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant == super::device::DEVICE_GRANT || grant == "refresh_token" {
        return super::device::grant(shared, grant, &form);
    }
    if grant != "client_credentials" {
        let text = format!(
            "The provided request must include a 'grant_type' input parameter. Grant type '{grant}' is not supported."
        );
        return Err(AadError::new(
            S::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            text,
        ));
    }
    let basic = basic_credentials(headers);
    let (client_id, secret) = match &basic {
        Some((id, secret)) => (id.as_str(), Some(secret.as_str())),
        None => (
            field("client_id").ok_or_else(|| missing("client_id"))?,
            field("client_secret"),
        ),
    };
    if client_id != cfg.client_id {
        let text = format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
        );
        return Err(AadError::new(
            S::BAD_REQUEST,
            "unauthorized_client",
            700016,
            text,
        ));
    }
    if let Some(assertion) = field("client_assertion") {
        let token_url = format!("{}/{tenant}/oauth2/v2.0/token", shared.base_url);
        let kind = field("client_assertion_type").unwrap_or_default();
        super::device::check_assertion(shared, kind, assertion, &token_url, client_id)?;
    } else {
        let Some(secret) = secret else {
            let text = "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.";
            return Err(AadError::new(
                S::UNAUTHORIZED,
                "invalid_client",
                7000218,
                text,
            ));
        };
        if secret != cfg.client_secret {
            let text = format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the \
             client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            );
            return Err(AadError::new(
                S::UNAUTHORIZED,
                "invalid_client",
                7000215,
                text,
            ));
        }
    }
    let scope = field("scope").ok_or_else(|| missing("scope"))?;
    if !scope.ends_with("/.default") || scope.split_whitespace().count() != 1 {
        let text = format!(
            "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
        );
        return Err(AadError::new(S::BAD_REQUEST, "invalid_scope", 70011, text));
    }
    let token = shared.new_access_token(None);
    tracing::debug!("Simulated access token issued.");
    let ttl = cfg.token_ttl.as_secs();
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": ttl,
        "ext_expires_in": ttl,
        "access_token": token,
    }))
}

/// Client id and secret from `Authorization: Basic`, form-decoded per RFC 6749 §2.3.1.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        let pairs = super::query::pairs(Some(&format!("x={s}")));
        pairs.into_iter().next().map(|(_, v)| v).unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// Standard base64 (padding optional); `None` on any invalid character.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in input.trim_end_matches('=').bytes() {
        acc = (acc << 6) | u32::from(sextet(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Extracts and checks the bearer token of a Graph request.
pub(super) fn is_authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| lock(&shared.auth).is_valid(t))
}

#[cfg(test)]
mod unit {
    use super::base64_decode;

    #[test]
    fn decodes_base64_with_and_without_padding() {
        assert_eq!(base64_decode("YWJjOmQ=").unwrap(), b"abc:d");
        assert_eq!(base64_decode("YWJjOmQ").unwrap(), b"abc:d");
        assert!(base64_decode("!!").is_none());
    }
}
