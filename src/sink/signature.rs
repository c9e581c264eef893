//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>` keyed by a `whsec_…`
//! secret. Several secrets sign at once (space-separated signatures), so a receiver can rotate its secret
//! without a window in which valid deliveries fail verification.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix every Standard Webhooks secret carries.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key the spec recommends (bytes after base64 decoding).
pub const MIN_KEY_BYTES: usize = 24;
/// Longest key the spec recommends.
pub const MAX_KEY_BYTES: usize = 64;

/// Why a secret or a signature is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The secret does not start with `whsec_`.
    #[error("a webhook secret must start with \"whsec_\"")]
    MissingPrefix,
    /// The part after `whsec_` is not standard base64.
    #[error("the part after \"whsec_\" is not base64")]
    NotBase64,
    /// The decoded key is outside 24..=64 bytes.
    #[error("the decoded key has {0} bytes; Standard Webhooks keys have 24 to 64")]
    KeyLength(usize),
    /// No signature in the header matched any secret.
    #[error("no signature matches")]
    Mismatch,
    /// The timestamp is not an integer or too far from now (replay protection).
    #[error("the timestamp is missing, malformed or outside the tolerance")]
    Timestamp,
}

impl SignatureError {
    /// Signature problems never go away by retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// A decoded `whsec_…` key. `Debug` never prints it.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`; config validation calls this so a bad secret fails at startup.
    ///
    /// # Errors
    /// [`SignatureError::MissingPrefix`], [`SignatureError::NotBase64`] or [`SignatureError::KeyLength`].
    pub fn parse(s: &str) -> Result<Self, SignatureError> {
        let b64 = s
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SignatureError::MissingPrefix)?;
        let key = B64.decode(b64).map_err(|_| SignatureError::NotBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SignatureError::KeyLength(key.len()));
        }
        Ok(Self { key })
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// One signature, `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", B64.encode(tag))
    }

    fn matches(&self, id: &str, timestamp: i64, body: &[u8], signature_b64: &str) -> bool {
        let Ok(tag) = B64.decode(signature_b64) else {
            return false;
        };
        // `verify_slice` compares in constant time.
        self.mac(id, timestamp, body).verify_slice(&tag).is_ok()
    }
}

/// The `webhook-signature` header value: one `v1,…` signature per secret, space-separated.
pub fn signature_header(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a delivery as a receiver would: the timestamp within `tolerance_secs` of `now`, and at least one
/// `v1` signature of the header made with one of `secrets`.
///
/// # Errors
/// [`SignatureError::Timestamp`] or [`SignatureError::Mismatch`].
pub fn verify(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Timestamp)?;
    if (now - ts).abs() > tolerance_secs {
        return Err(SignatureError::Timestamp);
    }
    let found = header.split_whitespace().any(|sig| {
        sig.strip_prefix("v1,")
            .is_some_and(|b64| secrets.iter().any(|s| s.matches(id, ts, body, b64)))
    });
    if found {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference vector of the Standard Webhooks libraries ("sign function works").
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn signs_the_standard_webhooks_reference_vector() {
        assert_eq!(spec().sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
    }

    #[test]
    fn verifies_the_reference_vector_and_rejects_tampering() {
        let s = [spec()];
        let ts = SPEC_TS.to_string();
        verify(&s, SPEC_ID, &ts, SPEC_BODY, SPEC_SIG, SPEC_TS + 10, 300).unwrap();
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(&s, SPEC_ID, &ts, tampered, SPEC_SIG, SPEC_TS, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&s, SPEC_ID, &ts, SPEC_BODY, SPEC_SIG, SPEC_TS + 301, 300),
            Err(SignatureError::Timestamp)
        );
    }

    #[test]
    fn two_secrets_give_two_signatures_each_verifiable_alone() {
        let other = WebhookSecret::parse(&format!("whsec_{}", B64.encode([7u8; 32]))).unwrap();
        let header = signature_header(&[spec(), other.clone()], SPEC_ID, SPEC_TS, SPEC_BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], SPEC_SIG);
        let ts = SPEC_TS.to_string();
        verify(&[other], SPEC_ID, &ts, SPEC_BODY, &header, SPEC_TS, 300).unwrap();
        verify(&[spec()], SPEC_ID, &ts, SPEC_BODY, &header, SPEC_TS, 300).unwrap();
    }

    #[test]
    fn rejects_malformed_secrets() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SignatureError::MissingPrefix
        );
        assert_eq!(
            WebhookSecret::parse("whsec_not base64!").unwrap_err(),
            SignatureError::NotBase64
        );
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SignatureError::KeyLength(5)
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        assert_eq!(format!("{:?}", spec()), "WebhookSecret([REDACTED])");
    }
}
