//! Idempotent writes: a caller that repeats CreateSync, RetrySync or CancelSync with the
//! same `request_id` gets the first call's answer instead of a second upstream write.
//!
//! Entries are keyed by credential, method, target (company or sync) and request id, live
//! for a TTL, and are bounded in number. Concurrent repeats share one in-flight call. Only
//! definite answers are kept: a success, or an error the upstream gave on purpose (such as
//! NOT_FOUND or FAILED_PRECONDITION). After a transport failure, whose outcome upstream is
//! unknown, the next repeat tries again.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::status::{self, Violation};
use crate::upstream::ApiKey;

/// Identifies one logical write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteKey {
    /// Whose write it is.
    pub key: ApiKey,
    /// The RPC, e.g. `CreateSync`.
    pub method: &'static str,
    /// The company or sync written to.
    pub target: String,
    /// The caller's request id.
    pub request_id: String,
}

/// A kept answer: the response and the upstream request id that came with it.
pub type Outcome<T> = Result<(T, Option<String>), Status>;

struct Entry<T> {
    created: Instant,
    fingerprint: u64,
    cell: Arc<OnceCell<Outcome<T>>>,
}

/// The cache for one response type.
pub struct IdempotencyCache<T> {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<WriteKey, Entry<T>>>,
}

impl<T> std::fmt::Debug for IdempotencyCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> IdempotencyCache<T> {
    /// A cache keeping answers for `ttl`, at most `max_entries` of them.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `write` once per key within the TTL and returns its answer to every repeat.
    /// `request` is the whole request message, so a request id reused for a different
    /// request is refused rather than answered with another call's result.
    pub async fn run<F, Fut>(&self, key: WriteKey, request: &impl Hash, write: F) -> Outcome<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        let cell = self.cell(key, fingerprint(request))?;
        let kept = cell.get_or_try_init(|| async {
            match write().await {
                Err(status) if !is_definite(&status) => Err(status),
                outcome => Ok(outcome),
            }
        });
        match kept.await {
            Ok(outcome) => outcome.clone(),
            Err(status) => Err(status),
        }
    }

    fn cell(&self, key: WriteKey, fingerprint: u64) -> Result<Arc<OnceCell<Outcome<T>>>, Status> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if let Some(entry) = entries.get(&key).filter(|e| now - e.created < self.ttl) {
            if entry.fingerprint != fingerprint {
                let violation =
                    Violation::new("request_id", "was already used for a different request");
                return Err(status::invalid_argument(vec![violation]));
            }
            return Ok(entry.cell.clone());
        }
        self.make_room(&mut entries, now);
        let cell = Arc::new(OnceCell::new());
        entries.insert(
            key,
            Entry {
                created: now,
                fingerprint,
                cell: cell.clone(),
            },
        );
        Ok(cell)
    }

    /// Drops expired entries, then the oldest, until one more fits.
    fn make_room(&self, entries: &mut HashMap<WriteKey, Entry<T>>, now: Instant) {
        if entries.len() < self.max_entries {
            return;
        }
        entries.retain(|_, entry| now - entry.created < self.ttl);
        while entries.len() >= self.max_entries {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => entries.remove(&key),
                None => break,
            };
        }
    }

    /// How many answers are kept now (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|entries| entries.len())
            .unwrap_or_default()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Errors the upstream answered on purpose; a repeat would get the same answer.
fn is_definite(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

fn fingerprint(request: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    request.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key(request_id: &str) -> WriteKey {
        WriteKey {
            key: ApiKey::parse("k").expect("key"),
            method: "CreateSync",
            target: "496".into(),
            request_id: request_id.into(),
        }
    }

    #[tokio::test]
    async fn repeats_get_the_first_answer_and_write_once() {
        let cache = IdempotencyCache::new(Duration::from_secs(60), 10);
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let outcome = cache
                .run(key("a"), &"req", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(("sync-1".to_owned(), None))
                })
                .await;
            assert_eq!(outcome.expect("ok").0, "sync-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unknown_outcomes_are_not_kept() {
        let cache = IdempotencyCache::<String>::new(Duration::from_secs(60), 10);
        let calls = AtomicUsize::new(0);
        for _ in 0..2 {
            let outcome = cache
                .run(key("a"), &"req", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(Status::unavailable("down"))
                })
                .await;
            assert_eq!(outcome.expect_err("down").code(), Code::Unavailable);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_reused_id_with_another_request_is_refused() {
        let cache = IdempotencyCache::new(Duration::from_secs(60), 10);
        let first = cache
            .run(key("a"), &"one", || async { Ok((1, None)) })
            .await;
        assert!(first.is_ok());
        let second = cache
            .run(key("a"), &"two", || async { Ok((2, None)) })
            .await;
        assert_eq!(second.expect_err("refused").code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let cache = IdempotencyCache::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            let id = format!("id-{i}");
            cache
                .run(key(&id), &i, || async { Ok((i, None)) })
                .await
                .expect("ok");
        }
        assert_eq!(cache.len(), 3);
    }
}
