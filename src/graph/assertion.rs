//! Certificate client credentials (GRAPH.md §5.2): a short-lived `client_assertion` JWT signed with the app's
//! private key, so no shared secret has to live on the host.
//!
//! Signing goes through `jsonwebtoken` (maintained, on the aws-lc-rs backend rustls already uses); the PEM
//! certificate is read with `rustls-pki-types` and only its DER bytes matter: they give the thumbprint that tells
//! Entra which registered certificate to check the signature with.

use std::path::Path;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;

use crate::config::AssertionAlg;

/// How long an assertion is valid: Entra asks for a short `exp` (5–10 min after `nbf`).
const LIFETIME_SECS: i64 = 300;

/// `client_assertion_type` for a JWT bearer assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A loaded certificate credential. `Debug` shows only the thumbprint.
pub struct CertificateCredential {
    key: EncodingKey,
    alg: AssertionAlg,
    /// base64url SHA-256 of the certificate DER (`x5t#S256`).
    pub x5t_s256: String,
    /// base64url SHA-1 of the certificate DER (`x5t`, for RS256).
    pub x5t: String,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("alg", &self.alg)
            .field("x5t_s256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

/// Why a certificate credential is unusable; `Key` and `Certificate` name their file.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// The key file is unreadable or not a PEM RSA private key.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The certificate file is unreadable or not a PEM certificate.
    #[error("{path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key {key} does not match the certificate {cert}")]
    Mismatch {
        /// Key file.
        key: String,
        /// Certificate file.
        cert: String,
    },
    /// Signing failed.
    #[error("could not sign the client assertion: {0}")]
    Sign(String),
}

impl AssertionError {
    /// Never: a broken key or certificate stays broken until the operator fixes the files.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// base64url (no padding) of a digest of `der`.
pub fn thumbprint(alg: &'static digest::Algorithm, der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(alg, der).as_ref())
}

impl CertificateCredential {
    /// Loads and cross-checks key and certificate: the key must sign something the certificate verifies.
    ///
    /// # Errors
    /// [`AssertionError`] naming the offending file.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        alg: AssertionAlg,
    ) -> Result<Self, AssertionError> {
        let cert_err = |reason: String| AssertionError::Certificate {
            path: cert_path.display().to_string(),
            reason,
        };
        let key_err = |reason: String| AssertionError::Key {
            path: key_path.display().to_string(),
            reason,
        };
        let cert_pem = std::fs::read(cert_path).map_err(|e| cert_err(e.to_string()))?;
        let cert = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| cert_err(format!("not a PEM certificate ({e})")))?;
        let key_pem = std::fs::read(key_path).map_err(|e| key_err(e.to_string()))?;
        let key = EncodingKey::from_rsa_pem(&key_pem)
            .map_err(|e| key_err(format!("not a PEM RSA private key ({e})")))?;
        let cred = Self {
            key,
            alg,
            x5t_s256: thumbprint(&digest::SHA256, cert.as_ref()),
            x5t: thumbprint(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref()),
        };
        let probe = cred.sign("urn:groupwatch:probe", "probe")?;
        verify(&probe, cert.as_ref()).map_err(|_| AssertionError::Mismatch {
            key: key_path.display().to_string(),
            cert: cert_path.display().to_string(),
        })?;
        Ok(cred)
    }

    /// A fresh assertion for `client_id` at the token endpoint `aud` (one per token request: new `jti`).
    ///
    /// # Errors
    /// [`AssertionError::Sign`].
    pub fn sign(&self, aud: &str, client_id: &str) -> Result<String, AssertionError> {
        let mut header = match self.alg {
            AssertionAlg::PS256 => Header::new(Algorithm::PS256),
            AssertionAlg::RS256 => Header::new(Algorithm::RS256),
        };
        header.typ = Some("JWT".into());
        match self.alg {
            AssertionAlg::PS256 => header.x5t_s256 = Some(self.x5t_s256.clone()),
            AssertionAlg::RS256 => header.x5t = Some(self.x5t.clone()),
        }
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            aud,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| AssertionError::Sign(e.to_string()))
    }
}

/// Checks a compact JWT's RS256/PS256 signature against a certificate (DER). Used by the key/cert
/// cross-check here and by the simulated token endpoint. Returns the decoded header and claims JSON.
///
/// # Errors
/// A short description of what failed.
pub fn verify(
    jwt: &str,
    cert_der: &[u8],
) -> Result<(serde_json::Value, serde_json::Value), String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWT".into());
    };
    let json = |part: &str| -> Result<serde_json::Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let (header, claims) = (json(h)?, json(c)?);
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?;
    let alg: &dyn rustls_pki_types::SignatureVerificationAlgorithm = match header["alg"].as_str() {
        Some("PS256") => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        Some("RS256") => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
        other => return Err(format!("unsupported alg {other:?}")),
    };
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| e.to_string())?;
    let signed = &jwt[..h.len() + 1 + c.len()];
    cert.verify_signature(alg, signed.as_bytes(), &sig)
        .map_err(|e| format!("signature does not verify: {e}"))?;
    Ok((header, claims))
}
