//! Webhook sink: POSTs each event as a structured CloudEvent (`application/cloudevents+json`) with Standard
//! Webhooks headers. `webhook-id` is the CloudEvent id, so it is stable across retries and receivers can drop
//! repeats. The status decides the event's fate ([`classify`]); the relay turns that into durable retries.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Event};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER, USER_AGENT};

use super::signature::{WebhookSecret, signature_header};
use super::{Outcome, Sink, SinkError};
use crate::config::WebhookSinkConfig;
use crate::config::redact_url;
use crate::relay::backoff::RetrySchedule;

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.name)
            .field("url", &self.shown)
            .field(
                "secrets",
                &format_args!("[{} REDACTED]", self.secrets.len()),
            )
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// The structured-mode media type of the CloudEvents HTTP binding.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// Delivers to one HTTP endpoint.
pub struct WebhookSink {
    name: String,
    url: reqwest::Url,
    /// The URL with user info and query masked, for logs and errors.
    shown: String,
    secrets: Vec<WebhookSecret>,
    client: reqwest::Client,
    schedule: RetrySchedule,
}

impl WebhookSink {
    /// Builds the HTTP client (timeouts set, redirects off) and decodes the secrets.
    ///
    /// # Errors
    /// [`SinkError::Permanent`] for a bad URL or secret (validation catches both earlier) or a client that
    /// cannot be built.
    pub fn new(name: &str, cfg: &WebhookSinkConfig) -> Result<Self, SinkError> {
        let shown = redact_url(&cfg.url);
        let url = reqwest::Url::parse(&cfg.url)
            .map_err(|e| SinkError::Permanent(format!("url {shown:?}: {e}")))?;
        let secrets = cfg
            .secrets
            .exposed()
            .map(WebhookSecret::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SinkError::Permanent(format!("secrets: {e}")))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .build()
            .map_err(|e| SinkError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            url,
            shown,
            secrets,
            client,
            schedule: cfg.schedule(),
        })
    }

    /// The per-event retry schedule.
    pub fn schedule(&self) -> &RetrySchedule {
        &self.schedule
    }

    /// One signed POST of one event.
    async fn send(&self, ev: &Event) -> Result<(), SinkError> {
        let body = serde_json::to_vec(ev)
            .map_err(|e| SinkError::Permanent(format!("event does not serialize: {e}")))?;
        let ts = Utc::now().timestamp();
        let sig = signature_header(&self.secrets, ev.id(), ts, &body);
        let resp = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, CLOUDEVENTS_JSON)
            .header(
                USER_AGENT,
                concat!("groupwatch/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", ev.id())
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await;
        match resp {
            Ok(r) => classify(r.status(), retry_after(r.headers(), Utc::now())),
            // reqwest's error text repeats the whole URL: show the masked one instead.
            Err(e) if e.is_builder() => Err(SinkError::Permanent(format!(
                "request to {}: {}",
                self.shown,
                e.without_url()
            ))),
            Err(e) => Err(SinkError::Retryable(format!(
                "POST {}: {}",
                self.shown,
                e.without_url()
            ))),
        }
    }
}

/// The fate of a delivery by its status: 2xx delivered; 410 Gone disables the endpoint; 408, 429 and 5xx
/// are retried (after `Retry-After` if given); everything else, redirects included, is permanent.
///
/// # Errors
/// The classified failure.
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Result<(), SinkError> {
    let message = format!("HTTP {status}");
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::GONE {
        Err(SinkError::Gone(message))
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Err(match retry_after {
            Some(after) => SinkError::RetryAfter { message, after },
            None => SinkError::Retryable(message),
        })
    } else {
        Err(SinkError::Permanent(message))
    }
}

/// `Retry-After` as delay-seconds (fractions tolerated) or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Sends in order and stops at the first failure that says the endpoint is unwell (retryable or gone):
    /// the rest of the batch is not attempted and stays queued.
    async fn publish(&self, batch: &[Event]) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        for ev in batch {
            match self.send(ev).await {
                Ok(()) => out.push(Outcome::Delivered),
                Err(e) => {
                    tracing::debug!(sink = %self.name, event = %ev.id(), error = %e, "Webhook attempt failed.");
                    let stop = e.is_retryable() || matches!(e, SinkError::Gone(_));
                    out.push(Outcome::Failed(e));
                    if stop {
                        break;
                    }
                }
            }
        }
        out.resize(batch.len(), Outcome::NotAttempted);
        out
    }

    /// No network check: a receiver that is down at startup is a normal retry case, not a reason to stop.
    async fn healthcheck(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: u16) -> StatusCode {
        StatusCode::from_u16(c).unwrap()
    }

    #[test]
    fn classifies_statuses_like_standard_webhooks_senders() {
        for ok in [200, 201, 202, 204] {
            assert_eq!(classify(code(ok), None), Ok(()), "{ok}");
        }
        for retry in [408, 429, 500, 502, 503, 504] {
            assert!(
                classify(code(retry), None).unwrap_err().is_retryable(),
                "{retry}"
            );
        }
        for permanent in [301, 302, 307, 400, 401, 403, 404, 413, 422] {
            let e = classify(code(permanent), None).unwrap_err();
            assert!(matches!(e, SinkError::Permanent(_)), "{permanent}: {e:?}");
        }
        assert!(matches!(classify(code(410), None), Err(SinkError::Gone(_))));
    }

    #[test]
    fn retry_after_rides_along_on_retryable_statuses_only() {
        let ra = Some(Duration::from_secs(7));
        assert_eq!(classify(code(429), ra).unwrap_err().retry_after(), ra);
        assert_eq!(classify(code(400), ra).unwrap_err().retry_after(), None);
    }

    #[test]
    fn parses_retry_after_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(RETRY_AFTER, v.parse().unwrap());
            m
        };
        assert_eq!(retry_after(&h("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after(&h("1.5"), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&h("Wed, 21 Oct 2015 07:28:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after(&h("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
