//! The predicate: one delivery outcome → what the store does with the row. Pure, so every rule is a unit test.

use chrono::{DateTime, Utc};

use super::backoff::jitter_unit;
use crate::sink::{Outcome, RetryMode, SinkError};
use crate::store::Disposition;

/// Decides the fate of a row that had `attempts_before` failed attempts and now got `outcome`.
/// `unit` is the jitter sample in `[-1, 1]`.
pub fn disposition(
    attempts_before: u32,
    outcome: &Outcome,
    mode: &RetryMode,
    now: DateTime<Utc>,
    unit: f64,
) -> Disposition {
    let attempts = attempts_before.saturating_add(1);
    let e = match outcome {
        Outcome::Delivered => return Disposition::Ack,
        Outcome::NotAttempted => return Disposition::Keep,
        Outcome::Deferred(e) => return deferred(attempts_before, e, mode, now, unit),
        Outcome::Failed(e) => e,
    };
    let error = e.to_string();
    match e {
        SinkError::Gone(_) => Disposition::Disable { attempts, error },
        SinkError::Permanent(_) => Disposition::Dead { attempts, error },
        SinkError::Retryable(_) | SinkError::RetryAfter { .. } => match mode {
            RetryMode::Hold => Disposition::Keep,
            RetryMode::Schedule(s) => match s.next_delay(attempts, e.retry_after(), unit) {
                Some(wait) => Disposition::Retry {
                    due: now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                    attempts,
                    error,
                },
                None => Disposition::Dead {
                    attempts,
                    error: format!("gave up after {attempts} attempts; last: {error}"),
                },
            },
        },
    }
}

/// An event held back because the endpoint had just failed: it waits the delay of its current step (the
/// first for a fresh event) with its attempt count unchanged. With [`RetryMode::Hold`] it stays in place.
fn deferred(
    attempts_before: u32,
    e: &SinkError,
    mode: &RetryMode,
    now: DateTime<Utc>,
    unit: f64,
) -> Disposition {
    let RetryMode::Schedule(s) = mode else {
        return Disposition::Keep;
    };
    let step = attempts_before.max(1);
    let wait = s
        .next_delay(step, e.retry_after(), unit)
        .or_else(|| s.delays.last().copied())
        .unwrap_or_default();
    Disposition::Retry {
        due: now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
        attempts: attempts_before,
        error: format!("not sent, the endpoint had just failed: {e}"),
    }
}

/// [`disposition`] with a fresh jitter sample.
pub fn disposition_now(attempts_before: u32, outcome: &Outcome, mode: &RetryMode) -> Disposition {
    disposition(attempts_before, outcome, mode, Utc::now(), jitter_unit())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::relay::backoff::RetrySchedule;

    fn sched() -> RetryMode {
        RetryMode::Schedule(RetrySchedule {
            delays: vec![Duration::from_secs(5), Duration::from_secs(300)],
            jitter: 0.2,
            max_retry_after: Duration::from_secs(3600),
        })
    }

    fn fail(e: SinkError) -> Outcome {
        Outcome::Failed(e)
    }

    #[test]
    fn delivered_acks_and_not_attempted_keeps() {
        let now = Utc::now();
        assert_eq!(
            disposition(3, &Outcome::Delivered, &sched(), now, 0.0),
            Disposition::Ack
        );
        assert_eq!(
            disposition(0, &Outcome::NotAttempted, &sched(), now, 0.0),
            Disposition::Keep
        );
    }

    #[test]
    fn retryable_failures_follow_the_schedule_then_dead_letter() {
        let now = Utc::now();
        let e = || fail(SinkError::Retryable("503".into()));
        match disposition(0, &e(), &sched(), now, 0.0) {
            Disposition::Retry { due, attempts, .. } => {
                assert_eq!(attempts, 1);
                assert_eq!(due - now, chrono::Duration::seconds(5));
            }
            other => panic!("{other:?}"),
        }
        match disposition(1, &e(), &sched(), now, 1.0) {
            Disposition::Retry { due, attempts, .. } => {
                assert_eq!(attempts, 2);
                assert_eq!(due - now, chrono::Duration::seconds(360));
            }
            other => panic!("{other:?}"),
        }
        match disposition(2, &e(), &sched(), now, 0.0) {
            Disposition::Dead { attempts, error } => {
                assert_eq!(attempts, 3);
                assert!(error.contains("gave up after 3 attempts"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_pushes_the_next_attempt_out() {
        let now = Utc::now();
        let e = fail(SinkError::RetryAfter {
            message: "429".into(),
            after: Duration::from_secs(120),
        });
        match disposition(0, &e, &sched(), now, 0.0) {
            Disposition::Retry { due, .. } => assert_eq!(due - now, chrono::Duration::seconds(120)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn permanent_dead_letters_and_gone_disables_in_any_mode() {
        let now = Utc::now();
        for mode in [sched(), RetryMode::Hold] {
            let d = disposition(
                0,
                &fail(SinkError::Permanent("400".into())),
                &mode,
                now,
                0.0,
            );
            assert!(matches!(d, Disposition::Dead { attempts: 1, .. }), "{d:?}");
            let d = disposition(4, &fail(SinkError::Gone("410".into())), &mode, now, 0.0);
            assert!(
                matches!(d, Disposition::Disable { attempts: 5, .. }),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_deferred_event_waits_its_current_step_without_counting_an_attempt() {
        let now = Utc::now();
        let e = || Outcome::Deferred(SinkError::Retryable("connection refused".into()));
        match disposition(0, &e(), &sched(), now, 0.0) {
            Disposition::Retry {
                due,
                attempts,
                error,
            } => {
                assert_eq!(attempts, 0, "not an attempt");
                assert_eq!(due - now, chrono::Duration::seconds(5));
                assert!(error.starts_with("not sent"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        // Deferred at the last step: it waits that step again, and is never dead-lettered untried.
        match disposition(2, &e(), &sched(), now, 0.0) {
            Disposition::Retry { due, attempts, .. } => {
                assert_eq!(attempts, 2);
                assert_eq!(due - now, chrono::Duration::seconds(300));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            disposition(0, &e(), &RetryMode::Hold, now, 0.0),
            Disposition::Keep
        );
    }

    #[test]
    fn hold_mode_keeps_retryable_failures_in_place() {
        let d = disposition(
            0,
            &fail(SinkError::Retryable("broker down".into())),
            &RetryMode::Hold,
            Utc::now(),
            0.0,
        );
        assert_eq!(d, Disposition::Keep);
    }
}
