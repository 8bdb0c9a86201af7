//! Faults that tests inject to see how a client copes with a misbehaving API.
//!
//! A fault targets one route or all of them, fires a limited number of times or forever,
//! and, when given a probability, fires on a seeded coin toss so runs repeat exactly.
//! Only one fault fires per request: the first one (in the order they were added) whose
//! route matches and whose coin toss succeeds.

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::lock;
use super::routes::Route;
use super::sim::chance;

/// A fault to inject into responses.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// The route it applies to; `None` for every route.
    pub route: Option<Route>,
    /// What happens to the response.
    pub kind: FaultKind,
    /// How many times it fires before it is removed; `None` for no limit.
    pub times: Option<u32>,
    /// Chance from 0.0 to 1.0 that it fires on a matching request; `None` means always.
    pub probability: Option<f64>,
}

impl Fault {
    /// A fault on every route that fires on every request.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            route: None,
            kind,
            times: None,
            probability: None,
        }
    }

    /// A fault on one route that fires on every request to it.
    pub fn on(route: Route, kind: FaultKind) -> Self {
        Self {
            route: Some(route),
            ..Self::new(kind)
        }
    }

    /// Limits the fault to `n` firings.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Makes the fault fire with probability `p` (a seeded draw per matching request).
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = Some(p);
        self
    }
}

/// What an injected fault does to a response.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer with this status instead of handling the request. Without `body`, the body is
    /// the standard error envelope; with it, exactly that text. `retry_after` adds a
    /// `Retry-After` header (seconds).
    Status {
        /// The HTTP status code.
        code: u16,
        /// Seconds for a `Retry-After` header.
        retry_after: Option<u64>,
        /// A raw body to send instead of the error envelope.
        body: Option<String>,
    },
    /// Wait this long (real time), then handle the request normally.
    Delay(Duration),
    /// Answer the route's success status with a body that is not JSON (an HTML page).
    Malformed,
    /// Handle the request normally (side effects included), then send only the first half
    /// of the JSON body, with a `Content-Length` that matches what is sent.
    Truncated,
    /// Answer the route's success status with `{"request_id"}` only, no `data`.
    MissingData,
    /// Answer the route's success status with a valid JSON envelope of this many bytes
    /// (at least the smallest such envelope, at most 256 MiB).
    Oversized(usize),
    /// Close the connection without sending any response.
    Drop,
}

impl FaultKind {
    /// A status fault with the standard error body and no `Retry-After`.
    pub fn status(code: u16) -> Self {
        Self::Status {
            code,
            retry_after: None,
            body: None,
        }
    }
}

/// The active faults and the coin used for probabilistic ones.
#[derive(Debug)]
pub(crate) struct FaultTable {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    faults: Vec<Fault>,
    coin: ChaCha8Rng,
}

impl FaultTable {
    /// An empty table whose coin is seeded from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        let mut coin = ChaCha8Rng::seed_from_u64(seed);
        coin.set_stream(u64::MAX);
        Self {
            inner: Mutex::new(Inner {
                faults: Vec::new(),
                coin,
            }),
        }
    }

    /// Adds a fault after the existing ones; a fault limited to zero firings is ignored.
    pub(crate) fn add(&self, fault: Fault) {
        if fault.times != Some(0) {
            lock(&self.inner).faults.push(fault);
        }
    }

    /// Removes every fault.
    pub(crate) fn clear(&self) {
        lock(&self.inner).faults.clear();
    }

    /// The active faults, in firing order.
    pub(crate) fn list(&self) -> Vec<Fault> {
        lock(&self.inner).faults.clone()
    }

    /// Picks the fault that fires for a request to `route`, using up one of its firings.
    pub(crate) fn pick(&self, route: Route) -> Option<FaultKind> {
        let mut inner = lock(&self.inner);
        let Inner { faults, coin } = &mut *inner;
        let index = faults.iter().position(|fault| {
            let matches = fault.route.is_none_or(|r| r == route);
            matches
                && fault
                    .probability
                    .is_none_or(|p| coin.random_bool(chance(p)))
        })?;
        let kind = faults[index].kind.clone();
        if let Some(times) = &mut faults[index].times {
            *times -= 1;
            if *times == 0 {
                faults.remove(index);
            }
        }
        Some(kind)
    }
}

/// The body a [`FaultKind::Malformed`] response carries.
pub(crate) const MALFORMED_BODY: &str = concat!(
    "<!DOCTYPE html><html><head><title>Bad Gateway</title></head>",
    "<body><h1>502 Bad Gateway</h1><p>upstream sent an invalid response</p></body></html>",
);

/// The largest body an [`FaultKind::Oversized`] fault sends, in bytes.
pub(crate) const MAX_OVERSIZED_BYTES: usize = 256 << 20;

/// A valid JSON envelope of `size` bytes (at least the size of the padding-free envelope, at
/// most [`MAX_OVERSIZED_BYTES`]).
pub(crate) fn oversized_body(size: usize, request_id: &str) -> Vec<u8> {
    let size = size.min(MAX_OVERSIZED_BYTES);
    let head = "{\"data\":{\"padding\":\"";
    let tail = format!("\"}},\"request_id\":\"{request_id}\"}}");
    let padding = size.saturating_sub(head.len() + tail.len());
    let mut body = Vec::with_capacity(head.len() + padding + tail.len());
    body.extend_from_slice(head.as_bytes());
    body.resize(head.len() + padding, b'x');
    body.extend_from_slice(tail.as_bytes());
    body
}

/// The first half of `body`.
pub(crate) fn truncated(body: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&body[..body.len() / 2])
}

/// A body whose first read fails, which makes the HTTP server abort the connection before
/// it writes the response head: the client sees the connection close with no response.
pub(crate) fn dropping_body() -> Body {
    let failure = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fault: drop");
    Body::from_stream(futures::stream::once(
        async move { Err::<Bytes, _>(failure) },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_fault_is_used_up() {
        let table = FaultTable::new(1);
        table.add(Fault::on(Route::GetSync, FaultKind::Drop).times(2));
        assert_eq!(table.pick(Route::ListSyncs), None);
        assert_eq!(table.pick(Route::GetSync), Some(FaultKind::Drop));
        assert_eq!(table.pick(Route::GetSync), Some(FaultKind::Drop));
        assert_eq!(table.pick(Route::GetSync), None);
        assert!(table.list().is_empty());
    }

    #[test]
    fn probability_is_seeded() {
        let draws = |seed| {
            let table = FaultTable::new(seed);
            table.add(Fault::new(FaultKind::Malformed).probability(0.5));
            (0..64)
                .map(|_| table.pick(Route::GetSync).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        let fired = draws(3).into_iter().filter(|f| *f).count();
        assert!((10..54).contains(&fired), "{fired}");
    }

    #[test]
    fn oversized_is_exact_and_valid() {
        let body = oversized_body(10_000, "r");
        assert_eq!(body.len(), 10_000);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["request_id"], "r");
    }
}
