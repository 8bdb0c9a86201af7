//! A cap on concurrent upstream requests per API key, so one busy caller cannot open
//! unbounded connections upstream or starve other keys of the pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiKey;

/// How many keys are tracked before idle ones are forgotten.
const MAX_TRACKED_KEYS: usize = 10_000;

/// Hands out permits, at most `per_key` in flight for each key.
#[derive(Debug)]
pub struct KeyLimiter {
    per_key: usize,
    keys: Mutex<HashMap<ApiKey, Arc<Semaphore>>>,
}

impl KeyLimiter {
    /// A limiter allowing `per_key` concurrent requests per key (at least 1).
    pub fn new(per_key: usize) -> Self {
        Self {
            per_key: per_key.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Waits up to `wait` for a permit; `None` when the key stays saturated that long.
    pub async fn acquire(&self, key: &ApiKey, wait: Duration) -> Option<OwnedSemaphorePermit> {
        let semaphore = self.semaphore(key);
        let permit = tokio::time::timeout(wait, semaphore.acquire_owned()).await;
        permit.ok().and_then(Result::ok)
    }

    fn semaphore(&self, key: &ApiKey) -> Arc<Semaphore> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if keys.len() >= MAX_TRACKED_KEYS && !keys.contains_key(key) {
            let per_key = self.per_key;
            keys.retain(|_, semaphore| semaphore.available_permits() < per_key);
        }
        let semaphore = keys
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_key)));
        semaphore.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_saturated_key_does_not_block_another() {
        let limiter = KeyLimiter::new(1);
        let busy = ApiKey::parse("busy").expect("key");
        let other = ApiKey::parse("other").expect("key");
        let held = limiter
            .acquire(&busy, Duration::from_millis(10))
            .await
            .expect("first");
        assert!(
            limiter
                .acquire(&busy, Duration::from_millis(10))
                .await
                .is_none()
        );
        assert!(
            limiter
                .acquire(&other, Duration::from_millis(10))
                .await
                .is_some()
        );
        drop(held);
        assert!(
            limiter
                .acquire(&busy, Duration::from_millis(10))
                .await
                .is_some()
        );
    }
}
