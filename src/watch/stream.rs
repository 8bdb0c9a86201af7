//! What a subscriber does with a poller's cell: the `WatchSync` and `WatchCompanySyncs`
//! streams and the `WaitSync` long-poll.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Status;

use super::state::{CompanySnapshot, End, Observation};
use crate::metrics::GaugeGuard;
use crate::pb::v1::{self as pb, watch_company_syncs_response, watch_sync_response};
use crate::status;

/// How a published state becomes stream messages.
pub trait Render: Send + Sync + 'static {
    /// The stream's message type.
    type Message: Send + 'static;
    /// What a stream remembers of the states it sent, to send only what changed.
    type Seen: Default + Send + 'static;

    /// The state's content revision.
    fn revision(&self) -> u64;

    /// The message for this state given what the client has seen; `None` when nothing it
    /// would be told about changed.
    fn render(&self, seen: &mut Self::Seen) -> Option<Self::Message>;

    /// A heartbeat message.
    fn heartbeat(heartbeat: pb::WatchHeartbeat) -> Self::Message;
}

impl Render for pb::SyncState {
    type Message = pb::WatchSyncResponse;
    type Seen = ();

    fn revision(&self) -> u64 {
        self.revision
    }

    fn render(&self, (): &mut ()) -> Option<pb::WatchSyncResponse> {
        let event = watch_sync_response::Event::State(self.clone());
        Some(pb::WatchSyncResponse { event: Some(event) })
    }

    fn heartbeat(heartbeat: pb::WatchHeartbeat) -> pb::WatchSyncResponse {
        let event = watch_sync_response::Event::Heartbeat(heartbeat);
        pb::WatchSyncResponse { event: Some(event) }
    }
}

impl Render for CompanySnapshot {
    type Message = pb::WatchCompanySyncsResponse;
    /// The revision of each sync the client was sent, by sync id.
    type Seen = HashMap<String, u64>;

    fn revision(&self) -> u64 {
        self.revision
    }

    fn render(&self, seen: &mut Self::Seen) -> Option<pb::WatchCompanySyncsResponse> {
        let first = seen.is_empty();
        let mut syncs = Vec::new();
        for (sync, revision) in &self.syncs {
            if seen.insert(sync.id.clone(), *revision) != Some(*revision) {
                syncs.push(sync.clone());
            }
        }
        if syncs.is_empty() && !first {
            return None;
        }
        let change = pb::CompanySyncsChange {
            company_id: self.company_id,
            syncs,
            revision: self.revision,
            observe_time: Some(self.observe_time),
        };
        let event = watch_company_syncs_response::Event::Change(change);
        Some(pb::WatchCompanySyncsResponse { event: Some(event) })
    }

    fn heartbeat(heartbeat: pb::WatchHeartbeat) -> pb::WatchCompanySyncsResponse {
        let event = watch_company_syncs_response::Event::Heartbeat(heartbeat);
        pb::WatchCompanySyncsResponse { event: Some(event) }
    }
}

/// Resolves once the shutdown flag is set; never if its sender is gone without setting it.
async fn shutting_down(flag: &mut watch::Receiver<bool>) {
    loop {
        let set = *flag.borrow_and_update();
        if set {
            return;
        }
        if flag.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits until the poller has a state or has ended, and returns a copy of the cell.
async fn first_observation<T>(
    feed: &mut watch::Receiver<Observation<T>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Observation<T>, Status> {
    loop {
        let observation = feed.borrow_and_update().clone();
        if observation.state.is_some() || observation.end.is_some() {
            return Ok(observation);
        }
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    return Err(status::watch_interrupted());
                }
            }
            () = shutting_down(shutdown) => return Err(status::shutting_down()),
        }
    }
}

/// What a stream does next with what the cell holds.
enum Step<M> {
    Send(Box<Result<M, Status>>),
    Finish,
    Wait,
}

/// One stream's position: what its client holds and when the next heartbeat is due.
struct Cursor<T: Render> {
    feed: watch::Receiver<Observation<T>>,
    shutdown: watch::Receiver<bool>,
    /// The revision the client holds: the last one sent, or the one it resumed from.
    held: u64,
    seen: T::Seen,
    heartbeat: tokio::time::Interval,
    poller_gone: bool,
    done: bool,
}

impl<T: Render> Cursor<T> {
    async fn next(&mut self) -> Option<Result<T::Message, Status>> {
        loop {
            if self.done {
                return None;
            }
            match self.step() {
                Step::Send(item) => return Some(*item),
                Step::Finish => return None,
                Step::Wait => {}
            }
            tokio::select! {
                changed = self.feed.changed() => self.poller_gone = changed.is_err(),
                _ = self.heartbeat.tick() => return Some(Ok(self.heartbeat_message())),
                () = shutting_down(&mut self.shutdown) => {
                    self.done = true;
                    return Some(Err(status::shutting_down()));
                }
            }
        }
    }

    /// Decides from the latest value: a new state, the end of the stream, or nothing yet.
    fn step(&mut self) -> Step<T::Message> {
        let observation = self.feed.borrow_and_update().clone();
        let last = matches!(observation.end, Some(End::Final));
        if let Some(state) = observation.state
            && state.revision() != self.held
        {
            self.held = state.revision();
            if let Some(message) = state.render(&mut self.seen) {
                self.done = last;
                return Step::Send(Box::new(Ok(message)));
            }
        }
        self.done = observation.end.is_some() || self.poller_gone;
        match observation.end {
            Some(End::Final) => Step::Finish,
            Some(End::Failed(status)) => Step::Send(Box::new(Err(status))),
            None if self.poller_gone => Step::Send(Box::new(Err(status::watch_interrupted()))),
            None => Step::Wait,
        }
    }

    fn heartbeat_message(&self) -> T::Message {
        let observation = self.feed.borrow();
        let heartbeat = pb::WatchHeartbeat {
            last_poll_time: observation.last_poll,
            revision: self.held,
            consecutive_failures: i32::try_from(observation.failures).unwrap_or(i32::MAX),
        };
        T::heartbeat(heartbeat)
    }
}

/// A watch stream: the current state first, then each change and heartbeats, until a
/// final state (OK), a lasting failure, or shutdown (UNAVAILABLE). Dropping it drops its
/// subscription, so the poller stops when this was its last subscriber.
pub struct WatchStream<M> {
    inner: Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>,
    /// Counts the stream among the open ones while it lives.
    _open: Option<GaugeGuard>,
}

/// The stream of `WatchSync`: one sync and its jobs.
pub type WatchSyncStream = WatchStream<pb::WatchSyncResponse>;

/// The stream of `WatchCompanySyncs`: the syncs of one company.
pub type WatchCompanySyncsStream = WatchStream<pb::WatchCompanySyncsResponse>;

impl<M> std::fmt::Debug for WatchStream<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl<M: Send + 'static> WatchStream<M> {
    /// Waits for the poller's first state and opens the stream. What the key cannot read
    /// fails here, before any message. `revision` is the one the client holds (0 for none).
    pub async fn open<T: Render<Message = M>>(
        mut feed: watch::Receiver<Observation<T>>,
        mut shutdown: watch::Receiver<bool>,
        revision: u64,
        heartbeat_every: Duration,
    ) -> Result<Self, Status> {
        let first = first_observation(&mut feed, &mut shutdown).await?;
        if let (None, Some(End::Failed(status))) = (&first.state, &first.end) {
            return Err(status.clone());
        }
        let every = heartbeat_every.max(Duration::from_millis(1));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let cursor = Cursor {
            feed,
            shutdown,
            held: revision,
            seen: T::Seen::default(),
            heartbeat,
            poller_gone: false,
            done: false,
        };
        let inner = futures::stream::unfold(cursor, |mut cursor| async move {
            cursor.next().await.map(|item| (item, cursor))
        });
        Ok(Self {
            inner: Box::pin(inner),
            _open: None,
        })
    }

    /// Ends the stream with DEADLINE_EXCEEDED when the caller's time runs out, rather than
    /// leaving the caller's own timer to cut it off with CANCELLED.
    pub fn until(self, time_left: Option<Duration>) -> Self {
        let Some(left) = time_left else {
            return self;
        };
        let expiry = Box::pin(tokio::time::sleep(left));
        let state = (self.inner, expiry, false);
        let inner = futures::stream::unfold(state, |(mut inner, mut expiry, over)| async move {
            if over {
                return None;
            }
            tokio::select! {
                item = futures::StreamExt::next(&mut inner) => {
                    item.map(|item| (item, (inner, expiry, false)))
                }
                () = &mut expiry => Some((Err(status::deadline_exceeded()), (inner, expiry, true))),
            }
        });
        Self {
            inner: Box::pin(inner),
            _open: self._open,
        }
    }

    /// Counts this stream in the open-streams gauge until it is dropped.
    pub fn tracked(mut self, guard: Option<GaugeGuard>) -> Self {
        self._open = guard;
        self
    }
}

impl<M> Stream for WatchStream<M> {
    type Item = Result<M, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What `WaitSync` returns.
#[derive(Debug, Clone)]
pub struct WaitOutcome {
    /// The sync's latest state.
    pub state: Arc<pb::SyncState>,
    /// Whether its revision differs from the caller's.
    pub changed: bool,
}

/// Waits up to `timeout` for the sync's revision to differ from `revision` or for a final
/// state; at the timeout, returns the unchanged state.
pub async fn wait(
    mut feed: watch::Receiver<Observation<pb::SyncState>>,
    mut shutdown: watch::Receiver<bool>,
    revision: u64,
    timeout: Duration,
) -> Result<WaitOutcome, Status> {
    let deadline = Instant::now() + timeout;
    loop {
        let observation = feed.borrow_and_update().clone();
        if let Some(outcome) = settled(&observation, revision)? {
            return Ok(outcome);
        }
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    return Err(status::watch_interrupted());
                }
            }
            () = tokio::time::sleep_until(deadline) => return unchanged(observation),
            () = shutting_down(&mut shutdown) => return Err(status::shutting_down()),
        }
    }
}

/// The answer the cell already gives, if any: a changed or final state, or a failure.
fn settled(
    observation: &Observation<pb::SyncState>,
    revision: u64,
) -> Result<Option<WaitOutcome>, Status> {
    if let Some(state) = &observation.state {
        let changed = state.revision != revision;
        if changed || matches!(observation.end, Some(End::Final)) {
            let state = Arc::clone(state);
            return Ok(Some(WaitOutcome { state, changed }));
        }
    }
    match &observation.end {
        Some(End::Failed(status)) => Err(status.clone()),
        _ => Ok(None),
    }
}

/// The timeout's answer: the state as it is, or UNAVAILABLE when none was read yet.
fn unchanged(observation: Observation<pb::SyncState>) -> Result<WaitOutcome, Status> {
    match observation.state {
        Some(state) => Ok(WaitOutcome {
            state,
            changed: false,
        }),
        None => Err(status::not_observed_yet()),
    }
}
