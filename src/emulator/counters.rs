//! What the emulator served: counts per (route, key, status) and a log of recent requests.
//!
//! Tests and benchmarks use these to prove how much traffic a client caused and what it
//! sent. API keys are only ever kept as a short SHA-256 fingerprint ([`key_fingerprint`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::lock;
use super::routes::Route;

/// Request headers the log keeps (when present), lowercase.
pub(crate) const LOGGED_HEADERS: [&str; 7] = [
    "x-request-id",
    "traceparent",
    "tracestate",
    "user-agent",
    "content-type",
    "accept",
    "idempotency-key",
];

/// How much of a request body the log keeps, in bytes.
const LOGGED_BODY_BYTES: usize = 4096;

/// The first 12 hex digits of the SHA-256 of an API key: enough to tell keys apart in
/// counters and logs without revealing them.
pub fn key_fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest
        .iter()
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The label a key is counted under: its fingerprint, or `""` when no key was sent.
fn key_label(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        key_fingerprint(key)
    }
}

/// One request as the emulator saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Emulator time when the request arrived.
    pub at: DateTime<Utc>,
    /// The route it matched; `None` for unknown routes.
    pub route: Option<Route>,
    /// The HTTP method.
    pub method: String,
    /// The path, as sent (still percent-encoded).
    pub path: String,
    /// The raw query string, without the `?`; `None` when there was none.
    pub query: Option<String>,
    /// Fingerprint of the `api_key` header ([`key_fingerprint`]); `None` when absent.
    pub key_fingerprint: Option<String>,
    /// The logged request headers that were present (see [`RecordedRequest::header`]),
    /// with lowercase names.
    pub headers: Vec<(String, String)>,
    /// The request body as text (lossy UTF-8), cut to its first 4 KiB.
    pub body: String,
    /// The status sent back; 0 when the connection was dropped without a response.
    pub status: u16,
    /// The `request_id` of the JSON envelope sent back, when there was one.
    pub response_request_id: Option<String>,
}

impl RecordedRequest {
    /// The value of a logged request header (`x-request-id`, `traceparent`, `tracestate`,
    /// `user-agent`, `content-type`, `accept`, `idempotency-key`), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the request carried `api_key` equal to `key`.
    pub fn sent_key(&self, key: &str) -> bool {
        self.key_fingerprint.as_deref() == Some(key_fingerprint(key).as_str())
    }

    /// Cuts a body to what the log keeps.
    pub(crate) fn body_text(body: &[u8]) -> String {
        String::from_utf8_lossy(&body[..body.len().min(LOGGED_BODY_BYTES)]).into_owned()
    }
}

/// A copy of the request counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    counts: BTreeMap<(Route, String, u16), u64>,
}

/// One counter: requests to `route` with a key whose fingerprint is `key` that got `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterEntry {
    /// The route.
    pub route: Route,
    /// Key fingerprint ([`key_fingerprint`]), or `""` for requests without a key.
    pub key: String,
    /// Response status; 0 for dropped connections.
    pub status: u16,
    /// Number of requests.
    pub count: u64,
}

impl CounterSnapshot {
    /// Requests served on known routes, in total.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Requests to one route.
    pub fn for_route(&self, route: Route) -> u64 {
        self.sum(|(r, _, _)| *r == route)
    }

    /// Requests made with one API key (in clear; `""` for requests without a key).
    pub fn for_key(&self, key: &str) -> u64 {
        let label = key_label(key);
        self.sum(|(_, k, _)| *k == label)
    }

    /// Requests answered with one status (0 for dropped connections).
    pub fn for_status(&self, status: u16) -> u64 {
        self.sum(|(_, _, s)| *s == status)
    }

    /// Requests to `route` with `key` (in clear) answered with `status`.
    pub fn count(&self, route: Route, key: &str, status: u16) -> u64 {
        self.counts
            .get(&(route, key_label(key), status))
            .copied()
            .unwrap_or(0)
    }

    /// Every non-zero counter, ordered by route, key fingerprint and status.
    pub fn entries(&self) -> Vec<CounterEntry> {
        self.counts
            .iter()
            .map(|((route, key, status), count)| CounterEntry {
                route: *route,
                key: key.clone(),
                status: *status,
                count: *count,
            })
            .collect()
    }

    fn sum(&self, keep: impl Fn(&(Route, String, u16)) -> bool) -> u64 {
        self.counts
            .iter()
            .filter(|(key, _)| keep(key))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The live counters and request log.
#[derive(Debug)]
pub(crate) struct Counters {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    counts: CounterSnapshot,
    log: VecDeque<RecordedRequest>,
    capacity: usize,
}

impl Counters {
    /// Empty counters with a log of at most `capacity` requests.
    pub(crate) fn new(capacity: usize) -> Self {
        let inner = Inner {
            counts: CounterSnapshot::default(),
            log: VecDeque::new(),
            capacity,
        };
        Self {
            inner: Mutex::new(inner),
        }
    }

    /// Counts a served request (when its route is known) and logs it.
    pub(crate) fn record(&self, request: RecordedRequest) {
        let mut inner = lock(&self.inner);
        if let Some(route) = request.route {
            let key = request.key_fingerprint.clone().unwrap_or_default();
            *inner
                .counts
                .counts
                .entry((route, key, request.status))
                .or_default() += 1;
        }
        if inner.capacity == 0 {
            return;
        }
        while inner.log.len() >= inner.capacity {
            inner.log.pop_front();
        }
        inner.log.push_back(request);
    }

    /// A copy of the counters.
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        lock(&self.inner).counts.clone()
    }

    /// The logged requests, oldest first.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner).log.iter().cloned().collect()
    }

    /// Zeroes the counters and empties the log.
    pub(crate) fn reset(&self) {
        let mut inner = lock(&self.inner);
        inner.counts = CounterSnapshot::default();
        inner.log.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(route: Route, key: Option<&str>, status: u16) -> RecordedRequest {
        RecordedRequest {
            at: Utc::now(),
            route: Some(route),
            method: "GET".into(),
            path: "/v4/core/companies".into(),
            query: None,
            key_fingerprint: key.map(key_fingerprint),
            headers: vec![("x-request-id".into(), "abc".into())],
            body: String::new(),
            status,
            response_request_id: None,
        }
    }

    #[test]
    fn counts_by_route_key_and_status() {
        let counters = Counters::new(2);
        counters.record(request(Route::GetSync, Some("k1"), 200));
        counters.record(request(Route::GetSync, Some("k2"), 404));
        counters.record(request(Route::ListSyncs, None, 401));
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.total(), 3);
        assert_eq!(snapshot.for_route(Route::GetSync), 2);
        assert_eq!(snapshot.for_key("k1"), 1);
        assert_eq!(snapshot.for_key(""), 1);
        assert_eq!(snapshot.for_status(404), 1);
        assert_eq!(snapshot.count(Route::GetSync, "k2", 404), 1);
        let log = counters.requests();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].header("X-Request-Id"), Some("abc"));
        assert!(log[0].sent_key("k2"));
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        assert_eq!(key_fingerprint("a"), key_fingerprint("a"));
        assert_eq!(key_fingerprint("a").len(), 12);
        assert_ne!(key_fingerprint("a"), key_fingerprint("b"));
    }
}
