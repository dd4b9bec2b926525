//! Per-device token buckets. Time is passed in (a `tokio::time::Instant`), so the policy is a
//! pure function of (state, request, clock) and tests use paused time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimitConfig;

/// Most devices tracked before full buckets are forgotten.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by device id.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Buckets refilled at `config.per_second`, holding at most `config.burst`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `device`; `Err(wait)` if none is left, with the time until one is.
    pub fn check(&self, device: &str, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.config.burst);
        let rate = self.config.per_second;
        // A poisoned lock only means another request panicked mid-update; the map is still a
        // valid map of buckets.
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(device) {
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let b = map.entry(device.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - b.tokens) / rate).max(0.001),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let rl = RateLimiter::new(RateLimitConfig {
            per_second: 1.0,
            burst: 2,
        });
        let t0 = Instant::now();
        assert!(rl.check("a", t0).is_ok());
        assert!(rl.check("a", t0).is_ok());
        let wait = rl.check("a", t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(rl.check("b", t0).is_ok(), "buckets are per device");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rl.check("a", Instant::now()).is_ok());
    }
}
