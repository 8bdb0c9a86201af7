//! One poller: reads one sync with one key, publishes each changed state to its
//! latest-value cell, and stops at a final state, on a lasting failure, or as soon as its
//! last subscriber leaves.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost_types::Timestamp;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;
use tracing::{Instrument, debug, info, info_span};

use super::state::{self, End, Observation, Summary};
use super::{Registry, Target, WatchSettings};
use crate::convert;
use crate::pb::v1 as pb;
use crate::status::{self, CallContext, Resource};
use crate::upstream::{Endpoint, PathParam, UpstreamClient, UpstreamError, UpstreamRequest};

/// Jobs asked for per ListSyncJobs page: the upstream's maximum.
const JOBS_PAGE_SIZE: &str = "100";

/// Pages of jobs read at most per poll, so a cursor that never ends cannot loop forever.
const MAX_JOB_PAGES: usize = 50;

/// Longest wait between two polls of a failing upstream.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The poller's link to its subscribers: the cell it publishes to and the registry it
/// leaves when done.
struct Link {
    target: Target,
    feed: Arc<watch::Sender<Observation>>,
    registry: Registry,
}

impl Link {
    /// Removes this poller from the registry when nobody watches it; subscribing happens
    /// under the same lock, so no subscriber can join a poller that is leaving.
    fn retire_if_unwatched(&self) -> bool {
        let mut pollers = super::lock(&self.registry);
        if self.feed.receiver_count() > 0 {
            return false;
        }
        self.remove(&mut pollers);
        true
    }

    /// Removes this poller from the registry for good; subscribers that hold the cell keep
    /// its last value.
    fn retire(&self) {
        let mut pollers = super::lock(&self.registry);
        self.remove(&mut pollers);
    }

    fn remove(&self, pollers: &mut super::Pollers) {
        if pollers
            .get(&self.target)
            .is_some_and(|feed| Arc::ptr_eq(feed, &self.feed))
        {
            pollers.remove(&self.target);
        }
    }

    /// Runs `work` unless every subscriber leaves first; `None` means the poller retired.
    async fn unless_abandoned<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                () = self.feed.closed() => {
                    if self.retire_if_unwatched() {
                        return None;
                    }
                }
            }
        }
    }
}

/// What the poller reads and remembers between polls.
struct Fetcher {
    client: UpstreamClient,
    target: Target,
    /// The summary the current jobs were read under; `None` forces a jobs read.
    summary: Option<Summary>,
    jobs: Vec<pb::Job>,
}

impl Fetcher {
    /// Reads the sync, and its jobs when its summary changed since they were last read.
    async fn fetch(&mut self) -> Result<pb::SyncState, (Status, bool)> {
        let sync = self.get_sync().await?;
        let summary = Summary::of(&sync);
        if self.summary.as_ref() != Some(&summary) {
            self.jobs = self.list_jobs().await?;
            self.summary = Some(summary);
        }
        Ok(state::state(sync, self.jobs.clone()))
    }

    async fn get_sync(&self) -> Result<pb::Sync, (Status, bool)> {
        let data = self.send(Endpoint::GetSync, Vec::new()).await?;
        self.decode(Endpoint::GetSync, convert::get_sync(&data))
    }

    async fn list_jobs(&self) -> Result<Vec<pb::Job>, (Status, bool)> {
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_JOB_PAGES {
            let mut query = vec![("limit", JOBS_PAGE_SIZE.to_owned())];
            query.extend(cursor.take().map(|c| ("cursor", c)));
            let data = self.send(Endpoint::ListSyncJobs, query).await?;
            let page = self.decode(Endpoint::ListSyncJobs, convert::job_page(&data))?;
            jobs.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(jobs)
    }

    /// One budgeted upstream read; a failure comes back as its status and whether it is
    /// temporary.
    async fn send(
        &self,
        endpoint: Endpoint,
        query: Vec<(&'static str, String)>,
    ) -> Result<serde_json::Value, (Status, bool)> {
        let request = UpstreamRequest {
            endpoint,
            param: PathParam::Sync(self.target.sync_id.clone()),
            query,
            body: None,
            key: &self.target.key,
            request_id: None,
            time_left: None,
        };
        match self.client.send_polled(request).await {
            Ok(reply) => Ok(reply.data),
            Err(error) => Err(self.failure(endpoint, &error)),
        }
    }

    fn decode<T>(
        &self,
        endpoint: Endpoint,
        result: Result<T, crate::upstream::EnvelopeError>,
    ) -> Result<T, (Status, bool)> {
        result.map_err(|source| {
            let error = UpstreamError::Malformed {
                status: 200,
                request_id: None,
                source,
            };
            self.failure(endpoint, &error)
        })
    }

    fn failure(&self, endpoint: Endpoint, error: &UpstreamError) -> (Status, bool) {
        let context = CallContext {
            endpoint,
            resource: Some(Resource::sync(&self.target.sync_id)),
            credential: self.target.source,
        };
        (
            status::from_upstream(error, &context),
            status::is_temporary(error),
        )
    }
}

/// A running poller.
pub(super) struct Poller {
    link: Link,
    fetcher: Fetcher,
    settings: WatchSettings,
    /// When the current run of failures began; `None` while polls succeed.
    failing_since: Option<Instant>,
}

impl Poller {
    /// Starts a poller task publishing to `feed`.
    pub(super) fn spawn(
        client: UpstreamClient,
        settings: WatchSettings,
        target: Target,
        feed: Arc<watch::Sender<Observation>>,
        registry: Registry,
    ) {
        let span = info_span!("poller", sync.id = %target.sync_id, key = %target.key);
        let fetcher = Fetcher {
            client,
            target: target.clone(),
            summary: None,
            jobs: Vec::new(),
        };
        let link = Link {
            target,
            feed,
            registry,
        };
        let poller = Self {
            link,
            fetcher,
            settings,
            failing_since: None,
        };
        tokio::spawn(poller.run().instrument(span));
    }

    async fn run(mut self) {
        info!("poller started");
        loop {
            let Some(result) = self.link.unless_abandoned(self.fetcher.fetch()).await else {
                info!("last subscriber left; poller stopped");
                return;
            };
            let (done, wait) = match result {
                Ok(state) => self.publish(state),
                Err((status, temporary)) => self.failed(status, temporary),
            };
            if done {
                self.link.retire();
                return;
            }
            let slept = self.link.unless_abandoned(tokio::time::sleep(wait)).await;
            if slept.is_none() {
                info!("last subscriber left; poller stopped");
                return;
            }
        }
    }

    /// Publishes a successful poll; says whether the watch is over and when to poll next.
    fn publish(&mut self, state: pb::SyncState) -> (bool, Duration) {
        self.failing_since = None;
        let sync = state.sync.clone().unwrap_or_default();
        let done = state::is_final(&sync);
        let now = Some(Timestamp::from(SystemTime::now()));
        self.link.feed.send_modify(|observation| {
            let changed = observation.state.as_ref().map(|s| s.revision) != Some(state.revision);
            if changed {
                debug!(revision = state.revision, status = ?sync.status(), "sync changed");
                observation.state = Some(Arc::new(state));
            }
            observation.last_poll = now;
            observation.failures = 0;
            if done {
                observation.end = Some(End::Final);
            }
        });
        if done {
            info!(status = ?sync.status(), "sync reached a final state; poller stopped");
        }
        (done, self.next_interval(&sync))
    }

    /// Records a failed poll; says whether the watch is over and when to poll next.
    fn failed(&mut self, status: Status, temporary: bool) -> (bool, Duration) {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let mut failures = 0;
        self.link.feed.send_modify(|observation| {
            observation.failures += 1;
            failures = observation.failures;
        });
        let code = status.code();
        let spent = failures >= self.settings.max_failures
            || since.elapsed() >= self.settings.failure_budget;
        let end = match (temporary, spent) {
            (false, _) => Some(status),
            (true, true) => Some(status::watch_gave_up(failures)),
            (true, false) => None,
        };
        if let Some(status) = end {
            info!(code = ?status.code(), failures, "watch failed; poller stopped");
            self.link
                .feed
                .send_modify(|observation| observation.end = Some(End::Failed(status)));
            return (true, Duration::ZERO);
        }
        debug!(?code, failures, "poll failed; will retry");
        (false, self.backoff(failures))
    }

    /// Fast while the sync runs; slower, with jitter so pollers spread out, otherwise.
    fn next_interval(&self, sync: &pb::Sync) -> Duration {
        if state::is_running(sync) {
            return self.settings.poll_interval;
        }
        let base = self.settings.idle_poll_interval;
        let jitter = rand::rng().random_range(0.8..1.2);
        base.mul_f64(jitter)
    }

    /// The fast interval doubled per failure in a row, capped.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(6);
        self.settings
            .poll_interval
            .saturating_mul(factor)
            .min(MAX_BACKOFF.max(self.settings.poll_interval))
    }
}
