//! Retry delays: exponential backoff with full jitter (a random delay between zero and the
//! exponential bound), bounded to `[min, max]`, and the collector's `Retry-After` honoured.
//!
//! A `Retry-After` comes from a collector that is up and says when to come back (maintenance,
//! rate limit): the delay is then that time plus up to half of it again (so a fleet does not
//! return at one instant), whatever the exponential bound has grown to. Growing it there made
//! terminals wait up to `backoff_max_secs` after a long maintenance window had ended.

use std::time::Duration;

/// Backoff state for one kind of failure.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays from `min` (first retry) up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The exponential bound of the next delay: `min * 2^attempt`, at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniform in `[min, ceiling]` given `unit` in `[0, 1)` (the caller's
    /// randomness), and the attempt count moves on. A `Retry-After` from the server is a floor.
    pub fn next(&mut self, unit: f64, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let span = ceiling.saturating_sub(self.min);
        let jittered = self.min.saturating_add(span.mul_f64(unit.clamp(0.0, 1.0)));
        match retry_after {
            Some(floor) => floor.saturating_add((floor / 2).mul_f64(unit.clamp(0.0, 1.0))),
            None => jittered,
        }
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures in a row so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_full_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let bounds: Vec<_> = (0..12)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next(0.999, None);
                assert!(d <= c && d >= Duration::from_secs(1));
                c
            })
            .collect();
        assert_eq!(bounds[0], Duration::from_secs(1));
        assert_eq!(bounds[3], Duration::from_secs(8));
        assert_eq!(
            *bounds.last().unwrap_or(&Duration::ZERO),
            Duration::from_secs(300)
        );
        assert_eq!(
            b.next(0.0, None),
            Duration::from_secs(1),
            "jitter reaches down to min"
        );
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(
            b.next(0.0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert!(b.next(0.5, Some(Duration::from_secs(600))) >= Duration::from_secs(600));
    }

    /// However long the collector kept answering 503 with `Retry-After: 30`, the next try comes
    /// within 30 to 45 s, never at the grown exponential bound.
    #[test]
    fn retry_after_is_honoured_without_growing_after_many_refusals() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..50 {
            for unit in [0.0, 0.3, 0.999, 1.0] {
                let d = b.next(unit, Some(Duration::from_secs(30)));
                assert!(
                    (Duration::from_secs(30)..=Duration::from_secs(45)).contains(&d),
                    "{d:?}"
                );
            }
        }
        assert!(
            b.ceiling() == Duration::from_secs(300),
            "the bound still grows for other failures"
        );
    }
}
