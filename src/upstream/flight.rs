//! Single flight for reads: identical reads under one key that overlap in time share one
//! upstream request. It saves latency and, more importantly, the key's rate budget.
//!
//! The table holds only weak references: when every caller waiting on a request has gone,
//! the request is dropped (and so aborted) as it would be without sharing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};

use super::{ApiKey, Endpoint, PathParam, Reply, UpstreamError, UpstreamRequest};

type Outcome = Result<Reply, UpstreamError>;
type Flight = Shared<BoxFuture<'static, Outcome>>;

/// What makes two reads identical: the key, the route, the path parameter and the query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    key: ApiKey,
    endpoint: Endpoint,
    param: PathParam,
    query: Vec<(&'static str, String)>,
}

/// The reads in flight.
#[derive(Debug, Default)]
pub struct Flights {
    table: Mutex<HashMap<FlightKey, WeakShared<BoxFuture<'static, Outcome>>>>,
}

impl Flights {
    /// Joins the flight for `request`, or starts one with `start` when none is under way;
    /// says whether this caller started it.
    pub fn join<F, Fut>(&self, request: &UpstreamRequest, start: F) -> (Flight, bool)
    where
        F: FnOnce(UpstreamRequest) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let key = FlightKey {
            key: request.key.clone(),
            endpoint: request.endpoint,
            param: request.param.clone(),
            query: request.query.clone(),
        };
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(flight) = table.get(&key).and_then(WeakShared::upgrade) {
            return (flight, false);
        }

        table.retain(|_, weak| weak.upgrade().is_some());
        let flight = start(request.clone()).boxed().shared();
        if let Some(weak) = flight.downgrade() {
            table.insert(key, weak);
        }
        (flight, true)
    }
}
