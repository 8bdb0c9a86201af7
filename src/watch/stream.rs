//! What a subscriber does with a poller's cell: the `WatchSync` stream and the `WaitSync`
//! long-poll.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Status;

use super::state::{End, Observation};
use crate::pb::v1::{self as pb, watch_sync_response::Event};
use crate::status;

type Item = Result<pb::WatchSyncResponse, Status>;

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
async fn first_observation(
    feed: &mut watch::Receiver<Observation>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Observation, Status> {
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
enum Step {
    Send(Box<Item>),
    Finish,
    Wait,
}

/// One stream's position: what its client holds and when the next heartbeat is due.
struct Cursor {
    feed: watch::Receiver<Observation>,
    shutdown: watch::Receiver<bool>,
    /// The revision the client holds: the last one sent, or the one it resumed from.
    held: u64,
    heartbeat: tokio::time::Interval,
    poller_gone: bool,
    done: bool,
}

impl Cursor {
    async fn next(&mut self) -> Option<Item> {
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
    fn step(&mut self) -> Step {
        let observation = self.feed.borrow_and_update().clone();
        let last = matches!(observation.end, Some(End::Final));
        if let Some(state) = observation.state
            && state.revision != self.held
        {
            self.held = state.revision;
            self.done = last;
            return Step::Send(Box::new(Ok(state_message(&state))));
        }
        self.done = observation.end.is_some() || self.poller_gone;
        match observation.end {
            Some(End::Final) => Step::Finish,
            Some(End::Failed(status)) => Step::Send(Box::new(Err(status))),
            None if self.poller_gone => Step::Send(Box::new(Err(status::watch_interrupted()))),
            None => Step::Wait,
        }
    }

    fn heartbeat_message(&self) -> pb::WatchSyncResponse {
        let observation = self.feed.borrow();
        let heartbeat = pb::WatchHeartbeat {
            last_poll_time: observation.last_poll,
            revision: self.held,
            consecutive_failures: i32::try_from(observation.failures).unwrap_or(i32::MAX),
        };
        pb::WatchSyncResponse {
            event: Some(Event::Heartbeat(heartbeat)),
        }
    }
}

fn state_message(state: &pb::SyncState) -> pb::WatchSyncResponse {
    pb::WatchSyncResponse {
        event: Some(Event::State(state.clone())),
    }
}

/// The `WatchSync` stream: the current state first, then each change and heartbeats, until
/// the final state (OK), a lasting failure, or shutdown (UNAVAILABLE). Dropping it drops
/// its subscription, so the poller stops when this was its last subscriber.
pub struct WatchSyncStream {
    inner: Pin<Box<dyn Stream<Item = Item> + Send>>,
}

impl std::fmt::Debug for WatchSyncStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSyncStream").finish_non_exhaustive()
    }
}

impl WatchSyncStream {
    /// Waits for the poller's first state and opens the stream. A sync the key cannot read
    /// fails here, before any message. `revision` is the one the client holds (0 for none).
    pub async fn open(
        mut feed: watch::Receiver<Observation>,
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
            heartbeat,
            poller_gone: false,
            done: false,
        };
        let inner = futures::stream::unfold(cursor, |mut cursor| async move {
            cursor.next().await.map(|item| (item, cursor))
        });
        Ok(Self {
            inner: Box::pin(inner),
        })
    }
}

impl Stream for WatchSyncStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
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
    mut feed: watch::Receiver<Observation>,
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
fn settled(observation: &Observation, revision: u64) -> Result<Option<WaitOutcome>, Status> {
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
fn unchanged(observation: Observation) -> Result<WaitOutcome, Status> {
    match observation.state {
        Some(state) => Ok(WaitOutcome {
            state,
            changed: false,
        }),
        None => Err(status::watch_gave_up(observation.failures)),
    }
}
