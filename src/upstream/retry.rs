//! When and how soon a failed read is tried again. Writes are never repeated by the
//! gateway: only the caller knows whether a second create or cancel is wanted.

use std::time::Duration;

use rand::Rng;

use super::UpstreamError;

/// Retry settings for upstream reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// The delay before the second attempt; each later one doubles it.
    pub base_delay: Duration,
    /// The longest delay between two attempts; a 429 asking for a longer wait is returned
    /// to the caller at once, with its RetryInfo.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2 for the first retry) after `error`, or `None` when
    /// the error is not worth another try or the attempts are spent.
    pub fn delay(&self, next: u32, error: &UpstreamError) -> Option<Duration> {
        if next > self.max_attempts {
            return None;
        }
        match error {
            UpstreamError::Unreachable(_) => Some(self.backoff(next)),
            UpstreamError::Status {
                status: 502..=504, ..
            } => Some(self.backoff(next)),
            UpstreamError::Status {
                status: 429,
                rate_limit,
                ..
            } => {
                let wait = rate_limit
                    .retry_delay(429)
                    .unwrap_or_else(|| self.backoff(next));
                (wait <= self.max_delay).then_some(wait)
            }
            _ => None,
        }
    }

    /// Exponential backoff with full jitter over the upper half, so that callers who failed
    /// together do not retry together.
    fn backoff(&self, next: u32) -> Duration {
        let exponent = next.saturating_sub(2).min(16);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        let factor = rand::rng().random_range(0.5..=1.0);
        ceiling.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{ErrorBody, RateLimitInfo};

    fn status(code: u16, retry_after: Option<u64>) -> UpstreamError {
        let rate_limit = RateLimitInfo {
            retry_after: retry_after.map(Duration::from_secs),
            ..Default::default()
        };
        UpstreamError::Status {
            status: code,
            body: Box::new(ErrorBody::default()),
            rate_limit,
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let policy = RetryPolicy::default();
        for code in [502, 503, 504, 429] {
            assert!(policy.delay(2, &status(code, None)).is_some(), "{code}");
        }
        for code in [400, 401, 404, 409, 500, 501] {
            assert!(policy.delay(2, &status(code, None)).is_none(), "{code}");
        }
        assert!(
            policy.delay(4, &status(503, None)).is_none(),
            "attempts are spent"
        );
    }

    #[test]
    fn retry_after_is_honoured_and_backoff_grows_within_bounds() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(2, &status(429, Some(1))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            policy.delay(2, &status(429, Some(30))),
            None,
            "too long to wait inside"
        );
        for next in 2..=3 {
            let delay = policy.delay(next, &status(503, None)).expect("retried");
            let ceiling = policy.base_delay * (1 << (next - 2));
            assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?}");
        }
    }
}
