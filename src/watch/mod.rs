//! The shared pollers behind the streaming RPCs.
//!
//! The REST API has no push and allows about 100 requests per minute per key, so watchers
//! cannot each poll. Instead there is one poller per (credential, sync), or per (credential,
//! company, job type), started by the first subscriber and stopped when the last one leaves.
//! It publishes into a latest-value cell ([`tokio::sync::watch`]): a slow subscriber skips
//! intermediate states instead of slowing the poller or the others, and memory stays one
//! state per poller whatever the number of subscribers. Pollers spend the key's request
//! budget ([`crate::upstream::Budgets`]) and wait for it.
//!
//! - `state`: what a poller publishes, and the content revision of a state.
//! - `source`: what a poller reads: a sync with its jobs, or a company's syncs.
//! - `poller`: the polling task.
//! - `stream`: the stream types of `WatchSync` and `WatchCompanySyncs`, and the `WaitSync`
//!   long-poll.

mod poller;
mod source;
mod state;
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::{GaugeGuard, Metrics};
use crate::pb::v1 as pb;
use crate::upstream::{ApiKey, CredentialSource, UpstreamClient};
use poller::Poller;
use source::{CompanySource, Source, SyncSource};

pub use state::{CompanySnapshot, End, Observation};
pub use stream::{
    Render, WaitOutcome, WatchCompanySyncsStream, WatchStream, WatchSyncStream, wait,
};

/// How the pollers and streams behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchSettings {
    /// Time between polls of a running sync. Default 2 s.
    pub poll_interval: Duration,
    /// Time between polls of a sync that is not running (not started, or a status this
    /// gateway does not know), with ±20% jitter. Default 10 s.
    pub idle_poll_interval: Duration,
    /// Time between heartbeats on a stream. Default 15 s.
    pub heartbeat_interval: Duration,
    /// Temporary failures in a row after which a watch ends with UNAVAILABLE. Default 10.
    pub max_failures: u32,
    /// How long polls may keep failing before a watch ends with UNAVAILABLE, whatever
    /// their number. Default 120 s.
    pub failure_budget: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            idle_poll_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
            max_failures: 10,
            failure_budget: Duration::from_secs(120),
        }
    }
}

/// What one poller watches, and with which credential: pollers are never shared between
/// keys, so no caller sees what another caller's key fetched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The key the poller sends.
    pub key: ApiKey,
    /// Where the key came from (a rejected default key is reported differently).
    pub source: CredentialSource,
    /// What is watched.
    pub subject: Subject,
}

/// The thing a poller watches, already validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// One sync, by id.
    Sync(String),
    /// The syncs of one company with one upstream job type (`PULL` or `PUSH`).
    Company {
        /// The company id.
        id: i64,
        /// The upstream `jobType` filter.
        job_type: &'static str,
    },
}

type Pollers<T> = HashMap<Target, Arc<watch::Sender<Observation<T>>>>;
type Registry<T> = Arc<Mutex<Pollers<T>>>;

fn lock<T>(registry: &Registry<T>) -> MutexGuard<'_, Pollers<T>> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running pollers, and what streams need to end at shutdown.
#[derive(Debug, Clone)]
pub struct Watches {
    client: UpstreamClient,
    settings: WatchSettings,
    syncs: Registry<pb::SyncState>,
    companies: Registry<CompanySnapshot>,
    shutdown: watch::Receiver<bool>,
}

impl Watches {
    /// No pollers yet. `shutdown` turns true when the server starts draining; open streams
    /// then end with UNAVAILABLE.
    pub fn new(
        client: UpstreamClient,
        settings: WatchSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            client,
            settings,
            syncs: Arc::default(),
            companies: Arc::default(),
            shutdown,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &WatchSettings {
        &self.settings
    }

    /// Subscribes to the poller of one sync, starting it if none runs. Dropping the
    /// receiver unsubscribes; the poller stops when its last receiver is gone.
    pub fn subscribe_sync(
        &self,
        key: ApiKey,
        source: CredentialSource,
        sync_id: String,
    ) -> watch::Receiver<Observation<pb::SyncState>> {
        let subject = Subject::Sync(sync_id.clone());
        let target = Target {
            key,
            source,
            subject,
        };
        let metrics = self.client.metrics().cloned();
        subscribe(&self.syncs, target, self.settings, metrics, |target| {
            SyncSource::new(self.client.clone(), target, sync_id)
        })
    }

    /// Subscribes to the poller of one company's syncs, as [`Watches::subscribe_sync`].
    pub fn subscribe_company(
        &self,
        key: ApiKey,
        source: CredentialSource,
        company_id: i64,
        job_type: &'static str,
    ) -> watch::Receiver<Observation<CompanySnapshot>> {
        let subject = Subject::Company {
            id: company_id,
            job_type,
        };
        let target = Target {
            key,
            source,
            subject,
        };
        let metrics = self.client.metrics().cloned();
        subscribe(&self.companies, target, self.settings, metrics, |target| {
            CompanySource::new(self.client.clone(), target, company_id, job_type)
        })
    }

    /// Counts an open stream for as long as the returned guard lives.
    pub fn track_stream(&self) -> Option<GaugeGuard> {
        self.client
            .metrics()
            .map(|m| Metrics::track(&m.active_streams))
    }

    /// A receiver of the shutdown flag.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

/// Joins the poller of `target` in `registry`, or starts one reading `make(target)`. The
/// lookup, the insertion and a poller's retirement happen under the registry's lock, so a
/// subscriber never joins a poller that is leaving.
fn subscribe<S: Source>(
    registry: &Registry<S::State>,
    target: Target,
    settings: WatchSettings,
    metrics: Option<Arc<Metrics>>,
    make: impl FnOnce(Target) -> S,
) -> watch::Receiver<Observation<S::State>> {
    let mut pollers = lock(registry);
    if let Some(feed) = pollers.get(&target) {
        return feed.subscribe();
    }
    let (feed, receiver) = watch::channel(Observation::default());
    let feed = Arc::new(feed);
    pollers.insert(target.clone(), Arc::clone(&feed));
    drop(pollers);
    let source = make(target.clone());
    Poller::spawn(
        source,
        settings,
        target,
        feed,
        Arc::clone(registry),
        metrics,
    );
    receiver
}
