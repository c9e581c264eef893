//! Delegated sign-in on the simulated authority: the device-code endpoint, the device-code and refresh-token
//! grants (with refresh-token rotation and injectable `invalid_grant` / `interaction_required`), and the
//! certificate `client_assertion` check of the client-credentials grant.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::AadError;
use super::errors::hex_token;
use super::{DeviceOutcome, Shared, lock};

/// RFC 8628 grant type of the device-code token request.
pub(super) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How the simulated user answers device-code sign-ins and how refresh tokens behave.
#[derive(Clone, Debug)]
pub struct DeviceFlow {
    /// Token polls answered `authorization_pending` before the outcome.
    pub approve_after_polls: u32,
    /// What the user finally does.
    pub outcome: DeviceOutcome,
    /// This poll (1-based) answers `slow_down` instead.
    pub slow_down_at_poll: Option<u32>,
    /// `interval` announced to the client, seconds.
    pub interval_secs: u64,
    /// `expires_in` of the code, seconds.
    pub expires_in_secs: u64,
    /// A refresh token is spent by its first use (rotation); false keeps old ones valid.
    pub single_use_refresh_tokens: bool,
    /// The first this many device-code token polls hang for a minute (longer than any client timeout) and
    /// then answer 504, as an unreachable token endpoint would; they do not count as polls.
    pub stall_polls: u32,
}

impl Default for DeviceFlow {
    fn default() -> Self {
        Self {
            approve_after_polls: 2,
            outcome: DeviceOutcome::Approve,
            slow_down_at_poll: None,
            interval_secs: 1,
            expires_in_secs: 900,
            single_use_refresh_tokens: true,
            stall_polls: 0,
        }
    }
}

struct Pending {
    polls: u32,
    scope: String,
}

struct Refresh {
    scope: String,
    spent: bool,
}

/// Device codes in progress, refresh tokens issued, and the injected refresh failure.
#[derive(Default)]
pub(super) struct DeviceState {
    pub flow: DeviceFlow,
    pending: HashMap<String, Pending>,
    refresh: HashMap<String, Refresh>,
    /// When set, every refresh answers this OAuth error (`invalid_grant`, `interaction_required`).
    pub refresh_failure: Option<&'static str>,
    /// Refresh-token grants answered successfully.
    pub refreshes: usize,
    /// Device-code token polls received.
    pub polls: usize,
    /// Device-code token polls stalled so far (see [`DeviceFlow::stall_polls`]).
    stalled: u32,
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn bad(error: &'static str, code: u32, text: &str) -> AadError {
    AadError::new(StatusCode::BAD_REQUEST, error, code, text)
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
pub(super) async fn device_code(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: String,
) -> Response {
    let form = super::query::pairs(Some(&body));
    if tenant != shared.cfg.tenant_id || field(&form, "client_id") != Some(&shared.cfg.client_id) {
        let body = json!({"error": "invalid_request", "error_description": "AADSTS700016: Application or tenant not found."});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let scope = field(&form, "scope").unwrap_or_default().to_owned();
    let (device_code, user_code) = {
        let mut rng = lock(&shared.ids);
        (
            hex_token(&mut *rng),
            hex_token(&mut *rng)[..9].to_uppercase(),
        )
    };
    let mut st = lock(&shared.device);
    st.pending
        .insert(device_code.clone(), Pending { polls: 0, scope });
    let uri = format!("{}/devicelogin", shared.base_url);
    let body = json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": uri,
        "expires_in": st.flow.expires_in_secs,
        "interval": st.flow.interval_secs,
        "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// True when this token request is a device-code poll that must stall (see [`DeviceFlow::stall_polls`]).
pub(super) fn stalls(shared: &Shared, body: &str) -> bool {
    let form = super::query::pairs(Some(body));
    if field(&form, "grant_type") != Some(DEVICE_GRANT) {
        return false;
    }
    let mut st = lock(&shared.device);
    if st.stalled < st.flow.stall_polls {
        st.stalled += 1;
        return true;
    }
    false
}

/// The device-code and refresh-token grants.
pub(super) fn grant(
    shared: &Shared,
    grant: &str,
    form: &[(String, String)],
) -> Result<Value, AadError> {
    if field(form, "client_id") != Some(shared.cfg.client_id.as_str()) {
        return Err(bad("unauthorized_client", 700016, "Application not found."));
    }
    let mut st = lock(&shared.device);
    let scope = if grant == DEVICE_GRANT {
        st.polls += 1;
        let code = field(form, "device_code").unwrap_or_default().to_owned();
        let flow = st.flow.clone();
        let Some(p) = st.pending.get_mut(&code) else {
            return Err(bad(
                "bad_verification_code",
                70019,
                "Verification code not recognized.",
            ));
        };
        p.polls += 1;
        if flow.slow_down_at_poll == Some(p.polls) {
            return Err(bad("slow_down", 70016, "Polling too fast; slow down."));
        }
        if p.polls <= flow.approve_after_polls {
            return Err(bad(
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            ));
        }
        let scope = p.scope.clone();
        st.pending.remove(&code);
        match flow.outcome {
            DeviceOutcome::Approve => scope,
            DeviceOutcome::Decline => {
                return Err(bad(
                    "authorization_declined",
                    70000,
                    "The user declined the sign-in.",
                ));
            }
            DeviceOutcome::BadVerificationCode => {
                return Err(bad(
                    "bad_verification_code",
                    70019,
                    "Verification code not recognized.",
                ));
            }
            DeviceOutcome::Expire => {
                return Err(bad(
                    "expired_token",
                    70020,
                    "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
                ));
            }
        }
    } else {
        if let Some(err) = st.refresh_failure {
            let code = if err == "interaction_required" {
                50076
            } else {
                70008
            };
            return Err(bad(
                err,
                code,
                "The refresh token has expired or was revoked; the user must sign in again.",
            ));
        }
        let rt = field(form, "refresh_token").unwrap_or_default().to_owned();
        let single_use = st.flow.single_use_refresh_tokens;
        match st.refresh.get_mut(&rt) {
            Some(r) if !r.spent => {
                r.spent = single_use;
                st.refreshes += 1;
                st.refresh[&rt].scope.clone()
            }
            _ => {
                return Err(bad(
                    "invalid_grant",
                    9002313,
                    "Invalid request. The refresh token was already used or is malformed.",
                ));
            }
        }
    };
    let refresh_token = format!("rt.{}", hex_token(&mut *lock(&shared.ids)));
    st.refresh.insert(
        refresh_token.clone(),
        Refresh {
            scope: scope.clone(),
            spent: false,
        },
    );
    drop(st);
    let access = shared.new_access_token(Some(shared.cfg.user_id.clone()));
    let ttl = shared.cfg.token_ttl.as_secs();
    let granted = if scope.contains("offline_access") {
        Some(refresh_token)
    } else {
        None
    };
    Ok(json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": ttl,
        "ext_expires_in": ttl,
        "access_token": access,
        "refresh_token": granted,
    }))
}

/// Checks a certificate client assertion the way Entra does: type, signature against the trusted
/// certificate, thumbprint header, audience, issuer/subject, lifetime and `jti` reuse.
pub(super) fn check_assertion(
    shared: &Shared,
    kind: &str,
    jwt: &str,
    token_url: &str,
    client_id: &str,
) -> Result<(), AadError> {
    let invalid = |code: u32, text: String| {
        AadError::new(StatusCode::UNAUTHORIZED, "invalid_client", code, text)
    };
    if kind != crate::graph::assertion::ASSERTION_TYPE {
        return Err(bad(
            "invalid_request",
            50027,
            "Invalid client_assertion_type.",
        ));
    }
    let Some(cert) = lock(&shared.trusted_cert).clone() else {
        return Err(invalid(
            700027,
            "No certificate is registered for the application.".into(),
        ));
    };
    let (header, claims) = crate::graph::assertion::verify(jwt, &cert).map_err(|e| {
        invalid(
            700027,
            format!("Client assertion failed signature validation: {e}"),
        )
    })?;
    use crate::graph::assertion::thumbprint;
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256};
    let thumb_ok = match header["alg"].as_str() {
        Some("PS256") => header["x5t#S256"].as_str() == Some(&thumbprint(&SHA256, &cert)),
        _ => header["x5t"].as_str() == Some(&thumbprint(&SHA1_FOR_LEGACY_USE_ONLY, &cert)),
    };
    if !thumb_ok {
        return Err(invalid(
            700027,
            "The thumbprint in the assertion header does not match a registered certificate."
                .into(),
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let num = |k: &str| claims[k].as_i64().unwrap_or(i64::MIN);
    if claims["aud"].as_str() != Some(token_url) {
        return Err(invalid(
            700212,
            format!("The audience claim must be {token_url}."),
        ));
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err(invalid(700021, "iss and sub must be the client id.".into()));
    }
    if num("exp") <= now || num("nbf") > now + 60 || num("iat") > now + 60 {
        return Err(invalid(
            700024,
            "Client assertion is not within its valid time range.".into(),
        ));
    }
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    let mut auth = lock(&shared.auth);
    if jti.is_empty() || !auth.jtis.insert(jti) {
        return Err(invalid(
            700025,
            "The assertion's jti is missing or was already used.".into(),
        ));
    }
    auth.verified_assertions += 1;
    Ok(())
}

/// Sign-in controls of the simulated tenant, for tests and the demo.
impl super::Sim {
    /// How the simulated user answers device-code sign-ins and whether refresh tokens are single-use.
    pub fn set_device_flow(&self, flow: DeviceFlow) {
        lock(&self.shared.device).flow = flow;
    }

    /// From now on every refresh-token grant fails with `error` (`invalid_grant`, `interaction_required`);
    /// `None` heals it.
    pub fn fail_refresh(&self, error: Option<&'static str>) {
        lock(&self.shared.device).refresh_failure = error;
    }

    /// Refresh-token grants answered successfully so far.
    pub fn refreshes(&self) -> usize {
        lock(&self.shared.device).refreshes
    }

    /// Registers the app's certificate (PEM) for client assertions.
    pub fn trust_certificate(&self, pem: &str) {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .map(|c| c.as_ref().to_vec())
            .ok();
        *lock(&self.shared.trusted_cert) = der;
    }

    /// Client assertions whose signature and claims checked out.
    pub fn verified_assertions(&self) -> usize {
        lock(&self.shared.auth).verified_assertions
    }
}
