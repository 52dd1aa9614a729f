//! Per-user token buckets for writes.
//!
//! In-process, so each replica limits on its own; that bounds abuse without a round trip
//! per request. A shared limiter (Redis) can replace it behind the same call.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use starling_ids::UserId;

use crate::{ApiError, ErrorCode};

#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Sustained writes per second per user; 0 disables limiting.
    pub per_second: f64,
    /// How many writes may come at once after a quiet spell.
    pub burst: f64,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<UserId, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `user`, or says how long to wait.
    pub fn check(&self, user: UserId) -> Result<(), ApiError> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget users whose bucket has refilled: they are indistinguishable from new ones.
            let full_after = self.limit.burst / self.limit.per_second;
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < full_after);
        }
        let (tokens, at) = buckets.entry(user).or_insert((self.limit.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.limit.per_second).min(self.limit.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.limit.per_second).ceil().max(1.0) as u64;
            Err(ApiError {
                retry_after: Some(wait),
                ..ApiError::new(ErrorCode::RateLimited, "too many writes, slow down")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let rl = RateLimiter::new(RateLimit { per_second: 1.0, burst: 3.0 });
        for _ in 0..3 {
            rl.check(UserId(1)).unwrap();
        }
        let err = rl.check(UserId(1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert!(err.retry_after.unwrap() >= 1);
        rl.check(UserId(2)).unwrap();
    }

    #[test]
    fn zero_rate_disables() {
        let rl = RateLimiter::new(RateLimit { per_second: 0.0, burst: 0.0 });
        for _ in 0..1000 {
            rl.check(UserId(1)).unwrap();
        }
    }
}
