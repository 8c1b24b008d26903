//! Per-client-address token buckets for the anonymous public API: `burst` requests at once, then
//! `rate` per second. A client over its budget gets RESOURCE_EXHAUSTED.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Buckets beyond which idle (full) ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Tokens left and when they were counted, per client address (`None`: unknown address).
type Buckets = HashMap<Option<IpAddr>, (f64, Instant)>;

/// A shared rate limiter.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Arc<Mutex<Buckets>>,
}

impl RateLimiter {
    /// `rate` requests per second after a `burst`; a rate of 0 disables the limit.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: Arc::default(),
        }
    }

    /// Whether `client` may make one more request at `now` (and counts it).
    pub fn allow(&self, client: Option<IpAddr>, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() > MAX_TRACKED {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            true
        } else {
            *tokens = refilled;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_client_gets_its_burst_then_its_rate_and_another_client_is_not_affected() {
        let limiter = RateLimiter::new(2.0, 3.0);
        let (a, b) = (
            Some("10.0.0.1".parse().unwrap()),
            Some("10.0.0.2".parse().unwrap()),
        );
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow(a, t0)));
        assert!(!limiter.allow(a, t0));
        assert!(limiter.allow(b, t0));
        assert!(limiter.allow(a, t0 + Duration::from_millis(500)));
        assert!(!limiter.allow(a, t0 + Duration::from_millis(500)));
        assert!(RateLimiter::new(0.0, 1.0).allow(a, t0));
    }
}
