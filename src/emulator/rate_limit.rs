//! The per-key rate limit and the `X-RateLimit-*` headers.
//!
//! Each API key has a token bucket that holds `burst` tokens and refills at `per_minute`
//! tokens per minute of emulator time. A request takes one token; with none left it gets 429.
//!
//! Header units, on every response:
//! - `X-RateLimit-Limit`: the bucket size (the burst), in requests.
//! - `X-RateLimit-Remaining`: whole requests left in the bucket after this one.
//! - `X-RateLimit-Reset`: whole seconds until the bucket is full again (0 when full).
//! - `Retry-After` (429 only): whole seconds until the next request will be accepted (≥ 1).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::config::RateLimitConfig;
use super::lock;

/// `X-RateLimit-Limit`.
pub(crate) const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub(crate) const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub(crate) const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// A key's standing after (or without) taking a token; becomes the response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    pub(crate) reset_secs: u64,
    /// Set when the request was refused: seconds until a token is available.
    pub(crate) retry_after: Option<u64>,
}

impl Quota {
    /// A full bucket of the given size: what requests that use no budget report.
    pub(crate) fn full(limit: u32) -> Self {
        Self {
            limit,
            remaining: limit,
            reset_secs: 0,
            retry_after: None,
        }
    }

    /// Writes the three `X-RateLimit-*` headers.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RESET, HeaderValue::from(self.reset_secs));
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: DateTime<Utc>,
}

/// Token buckets per API key (not `Debug`: keyed by the keys themselves).
pub(crate) struct RateLimiter {
    config: Option<RateLimitConfig>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with the given settings; `None` accepts everything.
    pub(crate) fn new(config: Option<RateLimitConfig>) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket size reported in headers; the documented default when limiting is off.
    fn capacity(&self) -> u32 {
        self.config.unwrap_or_default().burst
    }

    /// What a request that takes no token reports (no key, unknown key, unknown route).
    pub(crate) fn idle(&self) -> Quota {
        Quota::full(self.capacity())
    }

    /// Takes one token from `key`'s bucket at `now`, or reports how long to wait.
    pub(crate) fn take(&self, key: &str, now: DateTime<Utc>) -> Quota {
        let Some(config) = self.config else {
            return self.idle();
        };
        let capacity = f64::from(config.burst);
        let per_second = f64::from(config.per_minute.max(1)) / 60.0;
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = (now - bucket.updated).num_milliseconds().max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = bucket.updated.max(now);
        let refused = bucket.tokens < 1.0;
        if !refused {
            bucket.tokens -= 1.0;
        }
        let retry_after = refused.then(|| seconds((1.0 - bucket.tokens) / per_second).max(1));
        Quota {
            limit: config.burst,
            remaining: bucket.tokens.floor() as u32,
            reset_secs: seconds((capacity - bucket.tokens) / per_second),
            retry_after,
        }
    }
}

/// Rounds a non-negative number of seconds up to a whole number.
fn seconds(value: f64) -> u64 {
    value.max(0.0).ceil() as u64
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn burst_then_refuse_then_refill() {
        let limiter = RateLimiter::new(Some(RateLimitConfig {
            per_minute: 2,
            burst: 3,
        }));
        let now = Utc::now();
        for left in [2, 1, 0] {
            let quota = limiter.take("k", now);
            assert_eq!((quota.remaining, quota.retry_after), (left, None));
        }
        let refused = limiter.take("k", now);
        assert_eq!(refused.retry_after, Some(30));
        assert_eq!(refused.reset_secs, 90);
        assert_eq!(limiter.take("other", now).remaining, 2);
        let later = now + TimeDelta::seconds(30);
        assert_eq!(limiter.take("k", later).retry_after, None);
    }

    #[test]
    fn off_reports_a_full_bucket() {
        let limiter = RateLimiter::new(None);
        assert_eq!(limiter.take("k", Utc::now()), Quota::full(200));
    }
}
