//! A request budget per API key, shared by the watch pollers and the unary calls.
//!
//! The REST API allows about 100 requests per minute per key and answers 429 past that.
//! Pollers are optional traffic: they wait for a token before each request, so they slow
//! down rather than spend the key. A watch's first read goes before routine re-reads, so a
//! new client is not kept waiting for its first message behind every running poller. Unary calls are what callers asked for: they are never
//! queued, they only take their token (the balance may go below zero), which makes the
//! pollers wait longer. The upstream's `X-RateLimit-*` headers lower the balance when the
//! key is being spent elsewhere too, and a 429 pauses every poller of the key until the
//! upstream's reset.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, trace, warn};

use super::{ApiKey, RateLimitInfo};

/// Tokens the pollers leave in the upstream's own bucket, for unary calls and other
/// clients of the same key.
const UPSTREAM_RESERVE: f64 = 2.0;

/// How long pollers pause after a 429 that said nothing about when to retry.
const DEFAULT_PAUSE: Duration = Duration::from_secs(10);

/// Buckets kept before idle, full ones are dropped.
const MAX_IDLE_BUCKETS: usize = 1024;

/// Which poll gets the next token when a key's budget is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A watch's first read: a client is waiting for its first message.
    First,
    /// A re-read of something already published.
    Routine,
}

/// The size and refill rate of each key's budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Requests per minute the gateway allows itself per key. Default 80: a safe share of
    /// the documented 100, leaving room for other clients of the key.
    pub per_minute: u32,
    /// How many requests may go at once after a quiet spell. Default 10.
    pub burst: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            per_minute: 80,
            burst: 10,
        }
    }
}

impl BudgetConfig {
    fn per_second(&self) -> f64 {
        f64::from(self.per_minute.max(1)) / 60.0
    }

    fn capacity(&self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// One key's bucket.
#[derive(Debug)]
struct Bucket {
    /// Tokens left; below zero after unary calls overdrew it.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// Pollers wait until then (set by a 429 or an exhausted upstream bucket).
    paused_until: Option<Instant>,
    /// First reads waiting now; routine reads let them go first.
    first_waiting: usize,
}

impl Bucket {
    fn refill(&mut self, config: &BudgetConfig, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * config.per_second()).min(config.capacity());
        self.refilled = now;
    }

    /// Takes a token now, or says how long to wait before trying again.
    fn try_take(
        &mut self,
        config: &BudgetConfig,
        now: Instant,
        priority: Priority,
    ) -> Result<(), Duration> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        self.refill(config, now);
        if priority == Priority::Routine && self.first_waiting > 0 {
            return Err(Duration::from_secs_f64(1.0 / config.per_second()));
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        Err(Duration::from_secs_f64(missing / config.per_second()))
    }

    fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |old| old.max(until)));
    }
}

/// The budgets of every key seen.
#[derive(Debug)]
pub struct Budgets {
    config: BudgetConfig,
    buckets: Mutex<HashMap<ApiKey, Bucket>>,
}

impl Budgets {
    /// Empty budgets; each key starts with a full bucket.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    fn with_bucket<T>(&self, key: &ApiKey, f: impl FnOnce(&mut Bucket, Instant) -> T) -> T {
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() >= MAX_IDLE_BUCKETS && !buckets.contains_key(key) {
            self.forget_idle(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert_with(|| Bucket {
            tokens: self.config.capacity(),
            refilled: now,
            paused_until: None,
            first_waiting: 0,
        });
        f(bucket, now)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ApiKey, Bucket>> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops buckets that are full and not paused: a new bucket would be the same.
    fn forget_idle(&self, buckets: &mut HashMap<ApiKey, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| {
            bucket.refill(&self.config, now);
            bucket.tokens < self.config.capacity()
                || bucket.paused_until.is_some_and(|u| u > now)
                || bucket.first_waiting > 0
        });
    }

    /// Whole requests left in `key`'s bucket now (negative after unary overdraft).
    pub fn remaining(&self, key: &ApiKey) -> i64 {
        let config = self.config;
        self.with_bucket(key, |bucket, now| {
            bucket.refill(&config, now);
            bucket.tokens.floor() as i64
        })
    }

    /// Takes a token for a unary call without waiting; the balance may go negative.
    pub fn debit(&self, key: &ApiKey) {
        let config = self.config;
        self.with_bucket(key, |bucket, now| {
            bucket.refill(&config, now);
            bucket.tokens = (bucket.tokens - 1.0).max(-config.capacity());
        });
    }

    /// Waits until `key` has a token for a poller and takes it; first reads go before
    /// routine ones.
    pub async fn acquire(&self, key: &ApiKey, priority: Priority) {
        let _first = (priority == Priority::First).then(|| FirstInLine::join(self, key));
        let config = self.config;
        loop {
            let wait = self.with_bucket(key, |bucket, now| bucket.try_take(&config, now, priority));
            match wait {
                Ok(()) => return,
                Err(wait) => {
                    trace!(%key, wait_ms = wait.as_millis() as u64, "poll waits for budget");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Learns from one upstream answer: its rate-limit headers and whether it was a 429.
    /// Returns the whole requests left in the bucket afterwards.
    pub fn calibrate(&self, key: &ApiKey, info: &RateLimitInfo, throttled: bool) -> i64 {
        let config = self.config;
        self.with_bucket(key, |bucket, now| {
            if throttled {
                let pause = info.retry_delay(429).unwrap_or(DEFAULT_PAUSE);
                warn!(%key, pause_ms = pause.as_millis() as u64, "rate limited; pollers pause");
                bucket.tokens = bucket.tokens.min(0.0);
                bucket.pause(now + pause);
                return bucket.tokens.floor() as i64;
            }
            bucket.refill(&config, now);
            let Some(remaining) = info.remaining.map(|r| r as f64) else {
                return bucket.tokens.floor() as i64;
            };
            bucket.tokens = bucket.tokens.min(remaining - UPSTREAM_RESERVE);
            if remaining <= UPSTREAM_RESERVE
                && let Some(wait) = refill_time(info, UPSTREAM_RESERVE + 1.0 - remaining)
            {
                debug!(%key, wait_ms = wait.as_millis() as u64, "upstream budget low; pause");
                bucket.pause(now + wait);
            }
            bucket.tokens.floor() as i64
        })
    }
}

/// A first read waiting for a token, counted in its bucket for as long as it waits (also
/// when the waiting future is dropped: the subscriber left).
struct FirstInLine<'a> {
    budgets: &'a Budgets,
    key: &'a ApiKey,
}

impl<'a> FirstInLine<'a> {
    fn join(budgets: &'a Budgets, key: &'a ApiKey) -> Self {
        budgets.with_bucket(key, |bucket, _| bucket.first_waiting += 1);
        Self { budgets, key }
    }
}

impl Drop for FirstInLine<'_> {
    fn drop(&mut self) {
        self.budgets.with_bucket(self.key, |bucket, _| {
            bucket.first_waiting = bucket.first_waiting.saturating_sub(1);
        });
    }
}

/// How long the upstream's bucket takes to gain `tokens`, from its limit, remaining and
/// reset (the time until it is full again, refilling linearly).
fn refill_time(info: &RateLimitInfo, tokens: f64) -> Option<Duration> {
    let (limit, remaining, reset) = (info.limit?, info.remaining?, info.reset?);
    let missing = limit.checked_sub(remaining).filter(|m| *m > 0)? as f64;
    let per_second = missing / reset.as_secs_f64().max(1.0);
    Some(Duration::from_secs_f64(tokens / per_second))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::parse("budget-test-key").expect("valid key")
    }

    fn budgets(per_minute: u32, burst: u32) -> Budgets {
        Budgets::new(BudgetConfig { per_minute, burst })
    }

    #[tokio::test(start_paused = true)]
    async fn pollers_wait_for_refill_after_the_burst() {
        let budgets = budgets(60, 2);
        let start = Instant::now();
        for _ in 0..4 {
            budgets.acquire(&key(), Priority::Routine).await;
        }
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        assert!(waited < Duration::from_millis(2100), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unary_debits_make_pollers_wait_longer() {
        let budgets = budgets(60, 2);
        for _ in 0..4 {
            budgets.debit(&key());
        }
        let start = Instant::now();
        budgets.acquire(&key(), Priority::Routine).await;
        assert!(
            start.elapsed() >= Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_until_retry_after() {
        let budgets = budgets(600, 10);
        let info = RateLimitInfo {
            retry_after: Some(Duration::from_secs(7)),
            ..Default::default()
        };
        budgets.calibrate(&key(), &info, true);
        let start = Instant::now();
        budgets.acquire(&key(), Priority::Routine).await;
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn low_upstream_remaining_pauses_pollers() {
        let budgets = budgets(600, 10);
        let info = RateLimitInfo {
            limit: Some(200),
            remaining: Some(1),
            reset: Some(Duration::from_secs(199)),
            retry_after: None,
        };
        budgets.calibrate(&key(), &info, false);
        let start = Instant::now();
        budgets.acquire(&key(), Priority::Routine).await;
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn first_reads_go_before_routine_ones() {
        let budgets = std::sync::Arc::new(budgets(60, 1));
        budgets.acquire(&key(), Priority::Routine).await;
        let start = Instant::now();
        let routine = tokio::spawn({
            let budgets = budgets.clone();
            async move {
                budgets.acquire(&key(), Priority::Routine).await;
                start.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        budgets.acquire(&key(), Priority::First).await;
        let first = start.elapsed();
        let routine = routine.await.expect("joins");
        assert!(
            first < routine,
            "first read at {first:?}, routine at {routine:?}"
        );
        assert!(first <= Duration::from_millis(1010), "{first:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_separate_budgets() {
        let budgets = budgets(1, 1);
        budgets.acquire(&key(), Priority::Routine).await;
        let other = ApiKey::parse("another-key").expect("valid key");
        let start = Instant::now();
        budgets.acquire(&other, Priority::Routine).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
