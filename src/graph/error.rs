//! Graph and token errors, classified so callers decide by variant, never by message text.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// Result alias for Graph calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a Graph call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The delta/skip token is expired or invalid (400/410 `syncStateNotFound`, `resyncRequired`, 410 Gone):
    /// drop the cursor and run a full resync.
    #[error(
        "Graph requires a full resync ({status} {code}): the saved delta link is no longer valid"
    )]
    ResyncRequired {
        /// HTTP status (400 or 410).
        status: u16,
        /// Graph error code, or `Gone` when the body carried none.
        code: String,
        /// The `Location` header of a 410 sync reset, if any.
        location: Option<String>,
    },
    /// 429 Too Many Requests.
    #[error("Graph throttled the request (429); retry after {retry_after:?}")]
    Throttled {
        /// The `Retry-After` header, fractional seconds allowed.
        retry_after: Option<Duration>,
    },
    /// 408, 5xx, or 424 (a `$batch` whose inner requests were throttled, or an item whose dependency failed):
    /// the service is unavailable or overloaded, and the same request may succeed later.
    #[error("Graph is unavailable ({status} {code}): {message}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// Graph error code.
        code: String,
        /// Graph error message.
        message: String,
        /// The `Retry-After` header of a 503, if any.
        retry_after: Option<Duration>,
    },
    /// 401: the access token was refused.
    #[error("Graph refused the access token (401 {code}): {message}")]
    Unauthorized {
        /// Graph error code.
        code: String,
        /// Graph error message.
        message: String,
    },
    /// 403: the app lacks a permission (e.g. GroupMember.Read.All without admin consent).
    #[error(
        "Graph denied access (403 {code}): {message}; check the app's API permissions and admin consent"
    )]
    Forbidden {
        /// Graph error code.
        code: String,
        /// Graph error message.
        message: String,
    },
    /// 404: the resource does not exist.
    #[error("Graph resource not found (404 {code}): {message}")]
    NotFound {
        /// Graph error code.
        code: String,
        /// Graph error message.
        message: String,
    },
    /// Any other 4xx: our request is wrong; retrying will not help.
    #[error("Graph rejected the request ({status} {code}): {message}")]
    BadRequest {
        /// HTTP status.
        status: u16,
        /// Graph error code.
        code: String,
        /// Graph error message.
        message: String,
    },
    /// The token endpoint refused us (bad secret, unknown tenant, …). `detail` carries the AADSTS text.
    #[error("token request refused ({error}): {detail}")]
    TokenRefused {
        /// OAuth error, e.g. `invalid_client`.
        error: String,
        /// `error_description`, which starts with the AADSTS code.
        detail: String,
    },
    /// The delegated sign-in is gone (`invalid_grant`, `interaction_required`, no refresh token stored): only an
    /// operator running `groupwatch login` again can fix it, so calendar polling of the connection stops.
    #[error(
        "the delegated sign-in is no longer valid ({error}: {detail}); run `groupwatch login --config FILE --connection NAME` again"
    )]
    SignInRequired {
        /// OAuth error, e.g. `invalid_grant`.
        error: String,
        /// `error_description` first line (the AADSTS text) or our explanation.
        detail: String,
    },
    /// The certificate credential could not be used.
    #[error(transparent)]
    Assertion(#[from] super::assertion::AssertionError),
    /// Persisting or reading the rotated refresh token failed; the new token is not used until it is stored.
    #[error("could not persist the delegated refresh token: {0}")]
    Vault(String),
    /// Connection failed, timed out, or the body could not be read.
    #[error("transport error talking to {what}: {source}")]
    Transport {
        /// Which endpoint.
        what: &'static str,
        /// The reqwest error.
        #[source]
        source: reqwest::Error,
    },
    /// The body was not what Graph documents.
    #[error("could not decode Graph response: {0}")]
    Decode(String),
    /// A nextLink/deltaLink pointed away from the configured Graph host: not followed, tokens stay home.
    #[error("refusing to follow {0}: it leaves the configured Graph host")]
    ForeignLink(String),
}

impl Error {
    /// True for failures that may succeed if the same request is sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. } | Error::Unavailable { .. } | Error::Transport { .. }
        )
    }

    /// How long Graph asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after } | Error::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// Codes that mean "the delta state is gone, start over" (GRAPH.md §2). `syncStateInvalid` is undocumented
/// for Graph but seen in the wild, so it is handled too.
const RESYNC_CODES: &[&str] = &[
    "syncstatenotfound",
    "resyncrequired",
    "syncstateinvalid",
    "resyncapplydifferences",
    "resyncuploaddifferences",
];

/// The parts of a Graph error body we branch on: the top-level code, the message, and every nested code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// `error.code` (empty when absent).
    pub code: String,
    /// `error.message` (empty when absent).
    pub message: String,
    /// Codes of `innerError`/`innererror`, outermost first.
    pub inner_codes: Vec<String>,
}

impl ErrorBody {
    /// Parses `{"error":{…}}` or a bare odata.error object; anything else yields an empty body.
    pub fn parse(body: &[u8]) -> ErrorBody {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return ErrorBody::default();
        };
        let err = v.get("error").unwrap_or(&v);
        let text = |v: &serde_json::Value, k: &str| match v.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let mut out = ErrorBody {
            code: text(err, "code"),
            message: text(err, "message"),
            inner_codes: Vec::new(),
        };
        let mut cur = err;
        while let Some(inner) = cur.get("innerError").or_else(|| cur.get("innererror")) {
            let c = text(inner, "code");
            if !c.is_empty() {
                out.inner_codes.push(c);
            }
            cur = inner;
        }
        out
    }

    fn requires_resync(&self) -> bool {
        std::iter::once(&self.code)
            .chain(&self.inner_codes)
            .any(|c| RESYNC_CODES.contains(&c.to_ascii_lowercase().as_str()))
    }
}

/// Parses `Retry-After`: delta-seconds (fractional allowed, as Graph sends `2.128`) or an HTTP date.
/// Clamped to one hour so a bogus header cannot park a poller forever.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    const MAX: Duration = Duration::from_secs(3600);
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX));
    }
    let when = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let wait = when
        .signed_duration_since(chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    Some(wait.min(MAX))
}

/// Maps a non-success response to an [`Error`].
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let parsed = ErrorBody::parse(body);
    let code = if parsed.code.is_empty() {
        status.canonical_reason().unwrap_or("").replace(' ', "")
    } else {
        parsed.code.clone()
    };
    let message = parsed.message.clone();
    let s = status.as_u16();
    // GRAPH.md §2: "a 4xx with a code such as syncStateNotFound" (400 in the 2020 blog, 410 on Outlook).
    if s == 410 || ((400..500).contains(&s) && !matches!(s, 401 | 429) && parsed.requires_resync())
    {
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        return Error::ResyncRequired {
            status: s,
            code,
            location,
        };
    }
    match s {
        429 => Error::Throttled {
            retry_after: parse_retry_after(headers),
        },
        // GRAPH.md §7 ⚠: an older throttling page has the `$batch` itself answer 424 when inner requests are
        // throttled; an item answers 424 when its dependency failed. Either is worth sending again.
        408 | 424 | 500..=599 => Error::Unavailable {
            status: s,
            code,
            message,
            retry_after: parse_retry_after(headers),
        },
        401 => Error::Unauthorized { code, message },
        403 => Error::Forbidden { code, message },
        404 => Error::NotFound { code, message },
        _ => Error::BadRequest {
            status: s,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, LOCATION, RETRY_AFTER};

    fn headers(pairs: &[(reqwest::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn fractional_retry_after_is_honoured() {
        let h = headers(&[(RETRY_AFTER, "2.128")]);
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(2128)));
        assert_eq!(parse_retry_after(&headers(&[(RETRY_AFTER, "-1")])), None);
        assert_eq!(
            parse_retry_after(&headers(&[(RETRY_AFTER, "99999")])),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn expired_token_400_requires_resync() {
        let body = br#"{"error":{"code":"syncStateNotFound","message":"The sync state generation is not found."}}"#;
        let e = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        assert!(
            matches!(e, Error::ResyncRequired { status: 400, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_resync_code_on_any_4xx_requires_resync() {
        let body = br#"{"error":{"code":"syncStateNotFound","message":"expired"}}"#;
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::FORBIDDEN,
        ] {
            let e = classify(status, &HeaderMap::new(), body);
            assert!(matches!(e, Error::ResyncRequired { .. }), "{status}: {e:?}");
        }
        let e = classify(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), body);
        assert!(e.is_retryable(), "a 5xx stays a retry: {e:?}");
    }

    #[test]
    fn nested_resync_code_requires_resync() {
        let body = br#"{"error":{"code":"badRequest","innerError":{"code":"resyncRequired"}}}"#;
        let e = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        assert!(matches!(e, Error::ResyncRequired { .. }));
    }

    #[test]
    fn gone_with_location_requires_resync_and_keeps_location() {
        let h = headers(&[(
            LOCATION,
            "https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=",
        )]);
        match classify(StatusCode::GONE, &h, b"") {
            Error::ResyncRequired { location, .. } => assert!(location.unwrap().ends_with("=")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn throttled_and_unavailable_are_retryable_others_not() {
        let h = headers(&[(RETRY_AFTER, "1.5")]);
        let t = classify(StatusCode::TOO_MANY_REQUESTS, &h, b"{}");
        assert!(t.is_retryable());
        assert_eq!(t.retry_after(), Some(Duration::from_millis(1500)));
        assert!(classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"").is_retryable());
        assert!(classify(StatusCode::GATEWAY_TIMEOUT, &HeaderMap::new(), b"").is_retryable());
        for s in [400, 401, 403, 404, 405] {
            let e = classify(StatusCode::from_u16(s).unwrap(), &HeaderMap::new(), b"{}");
            assert!(!e.is_retryable(), "{s} should not be retryable");
        }
    }

    #[test]
    fn failed_dependency_424_is_retryable() {
        let body =
            br#"{"error":{"code":"FailedDependency","message":"inner requests were throttled"}}"#;
        let e = classify(StatusCode::FAILED_DEPENDENCY, &HeaderMap::new(), body);
        assert!(e.is_retryable(), "{e:?}");
        assert!(
            matches!(e, Error::Unavailable { status: 424, ref code, .. } if code == "FailedDependency"),
            "{e:?}"
        );
    }

    #[test]
    fn plain_bad_request_is_not_a_resync() {
        let body = br#"{"error":{"code":"Request_UnsupportedQuery","message":"too many ids"}}"#;
        match classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), body) {
            Error::BadRequest { code, .. } => assert_eq!(code, "Request_UnsupportedQuery"),
            other => panic!("{other:?}"),
        }
    }
}
