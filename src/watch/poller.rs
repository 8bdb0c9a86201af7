//! One poller: reads one sync (or one company's syncs) with one key, publishes each changed
//! state to its latest-value cell, and stops at a final state, on a lasting failure, or as
//! soon as its last subscriber leaves.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost_types::Timestamp;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span};

use super::source::{Failure, Source};
use super::state::{End, Observation};
use super::{Pollers, Registry, Target, WatchSettings};
use crate::metrics::Metrics;
use crate::status;

/// Longest wait between two polls of a failing upstream.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The poller's link to its subscribers: the cell it publishes to and the registry it
/// leaves when done.
struct Link<T> {
    target: Target,
    feed: Arc<watch::Sender<Observation<T>>>,
    registry: Registry<T>,
}

impl<T> Link<T> {
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

    fn remove(&self, pollers: &mut Pollers<T>) {
        if pollers
            .get(&self.target)
            .is_some_and(|feed| Arc::ptr_eq(feed, &self.feed))
        {
            pollers.remove(&self.target);
        }
    }

    /// Runs `work` unless every subscriber leaves first; `None` means the poller retired.
    async fn unless_abandoned<R>(&self, work: impl Future<Output = R>) -> Option<R> {
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

/// A running poller.
pub(super) struct Poller<S: Source> {
    link: Link<S::State>,
    source: S,
    settings: WatchSettings,
    /// When the current run of failures began; `None` while polls succeed.
    failing_since: Option<Instant>,
    /// Where the poller counts itself among the running ones.
    metrics: Option<Arc<Metrics>>,
}

impl<S: Source> Poller<S> {
    /// Starts a poller task reading `source` and publishing to `feed`.
    pub(super) fn spawn(
        source: S,
        settings: WatchSettings,
        target: Target,
        feed: Arc<watch::Sender<Observation<S::State>>>,
        registry: Registry<S::State>,
        metrics: Option<Arc<Metrics>>,
    ) {
        let span = info_span!("poller", subject = ?target.subject, key = %target.key);
        let link = Link {
            target,
            feed,
            registry,
        };
        let poller = Self {
            link,
            source,
            settings,
            failing_since: None,
            metrics,
        };
        tokio::spawn(poller.run().instrument(span));
    }

    async fn run(mut self) {
        let _running = self
            .metrics
            .as_ref()
            .map(|m| Metrics::track(&m.active_pollers));
        info!("poller started");
        loop {
            let Some(result) = self.link.unless_abandoned(self.source.fetch()).await else {
                info!("last subscriber left; poller stopped");
                return;
            };
            let (done, wait) = match result {
                Ok(state) => self.publish(state),
                Err(failure) => self.failed(failure),
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
    fn publish(&mut self, state: S::State) -> (bool, Duration) {
        self.failing_since = None;
        let done = S::is_final(&state);
        let running = S::is_running(&state);
        let revision = S::revision(&state);
        let now = Some(Timestamp::from(SystemTime::now()));
        self.link.feed.send_modify(|observation| {
            let held = observation.state.as_deref().map(S::revision);
            if held != Some(revision) {
                debug!(revision, "state changed");
                observation.state = Some(Arc::new(state));
            }
            observation.last_poll = now;
            observation.failures = 0;
            if done {
                observation.end = Some(End::Final);
            }
        });
        if done {
            info!("final state reached; poller stopped");
        }
        (done, self.next_interval(running))
    }

    /// Records a failed poll; says whether the watch is over and when to poll next.
    fn failed(&mut self, failure: Failure) -> (bool, Duration) {
        let Failure { status, temporary } = failure;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let mut failures = 0;
        self.link.feed.send_modify(|observation| {
            observation.failures = observation.failures.saturating_add(1);
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
    fn next_interval(&self, running: bool) -> Duration {
        if running {
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
