//! Retry policy as data: a schedule of delays, ±jitter, and `Retry-After` honoured but clamped.
//! The predicate that turns one delivery outcome into what the store does with the row is
//! [`super::disposition`]; this file only knows time.

use std::time::Duration;

/// Svix's schedule: after the first failed attempt wait 5 s, then 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
/// Eight attempts over about 28 hours before an event is dead-lettered.
pub const DEFAULT_SCHEDULE_SECS: [f64; 7] = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0];

/// Default jitter: each delay is scaled by a random factor in `[0.8, 1.2]`, so a burst of failures
/// does not come back as a burst.
pub const DEFAULT_JITTER: f64 = 0.2;

/// When the per-event attempts of a sink happen.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// Delay before attempt `n + 2` after `n + 1` failures; the length bounds the attempts.
    pub delays: Vec<Duration>,
    /// Relative jitter, `0.0..1.0`.
    pub jitter: f64,
    /// Upper bound for a receiver's `Retry-After`, so a hostile or buggy header cannot park events forever.
    pub max_retry_after: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            delays: DEFAULT_SCHEDULE_SECS
                .iter()
                .map(|s| Duration::from_secs_f64(*s))
                .collect(),
            jitter: DEFAULT_JITTER,
            max_retry_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetrySchedule {
    /// Total attempts an event gets (the first one plus one per delay).
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The wait before the next attempt of an event that has failed `failures` times, or `None` when the
    /// schedule is exhausted. `unit` is a random number in `[-1, 1]` (passed in so tests are exact);
    /// `retry_after` is the receiver's wish, honoured as a lower bound and clamped to `max_retry_after`.
    pub fn next_delay(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        let idx = usize::try_from(failures.checked_sub(1)?).ok()?;
        let base = *self.delays.get(idx)?;
        let factor = 1.0 + self.jitter.clamp(0.0, 1.0) * unit.clamp(-1.0, 1.0);
        let jittered = base.mul_f64(factor.max(0.0));
        Some(match retry_after {
            Some(ra) => jittered.max(ra.min(self.max_retry_after)),
            None => jittered,
        })
    }
}

/// A random number in `[-1, 1]` for [`RetrySchedule::next_delay`].
pub fn jitter_unit() -> f64 {
    use rand::Rng;
    rand::rng().random_range(-1.0..=1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_schedule_is_svix_like_with_eight_attempts() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 8);
        let plain: Vec<_> = (1..=7)
            .map(|f| s.next_delay(f, None, 0.0).unwrap())
            .collect();
        assert_eq!(
            plain,
            [5, 300, 1800, 7200, 18000, 36000, 36000].map(secs).to_vec()
        );
        assert_eq!(
            s.next_delay(8, None, 0.0),
            None,
            "exhausted after 8 attempts"
        );
        assert_eq!(s.next_delay(0, None, 0.0), None, "no failure, no retry");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let s = RetrySchedule::default();
        assert_eq!(s.next_delay(2, None, 1.0), Some(secs(360)));
        assert_eq!(s.next_delay(2, None, -1.0), Some(secs(240)));
        assert_eq!(
            s.next_delay(2, None, 7.0),
            Some(secs(360)),
            "unit is clamped"
        );
        for _ in 0..100 {
            let d = s.next_delay(1, None, jitter_unit()).unwrap();
            assert!(d >= secs(4) && d <= secs(6), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_a_lower_bound_and_is_clamped() {
        let s = RetrySchedule {
            delays: vec![Duration::from_millis(10)],
            jitter: 0.0,
            max_retry_after: secs(60),
        };
        assert_eq!(s.next_delay(1, Some(secs(2)), 0.0), Some(secs(2)));
        assert_eq!(s.next_delay(1, Some(secs(3600)), 0.0), Some(secs(60)));
        assert_eq!(
            s.next_delay(1, Some(Duration::ZERO), 0.0),
            Some(Duration::from_millis(10))
        );
    }
}
