//! Whether the upstream is usable, judged from the answers the gateway gets: a run of
//! failures (no answer, 5xx, or the gateway's own key refused) marks it down, and any
//! proper answer marks it up again. The server reflects this in `grpc.health.v1`.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::watch;

/// How one upstream answer bears on health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream answered as an API should (including refusals of the caller's input).
    Up,
    /// No answer, a server-side failure, or the gateway's own key refused.
    Down,
    /// Says nothing about the upstream (a caller's deadline, rate limiting, a local limit).
    Neutral,
}

/// The shared health state.
#[derive(Debug)]
pub struct UpstreamHealth {
    threshold: u32,
    failures: AtomicU32,
    up: watch::Sender<bool>,
}

impl UpstreamHealth {
    /// Starts healthy; `threshold` consecutive failures mark the upstream down.
    pub fn new(threshold: u32) -> Self {
        let (up, _) = watch::channel(true);
        Self {
            threshold: threshold.max(1),
            failures: AtomicU32::new(0),
            up,
        }
    }

    /// Records one answer.
    pub fn record(&self, verdict: Verdict) {
        match verdict {
            Verdict::Up => {
                self.failures.store(0, Ordering::Relaxed);
                self.up.send_if_modified(|up| !std::mem::replace(up, true));
            }
            Verdict::Down => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= self.threshold {
                    self.up.send_if_modified(|up| std::mem::replace(up, false));
                }
            }
            Verdict::Neutral => {}
        }
    }

    /// Whether the upstream is usable now.
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Follows changes of [`UpstreamHealth::is_up`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_marks_down_and_one_answer_marks_up() {
        let health = UpstreamHealth::new(3);
        health.record(Verdict::Down);
        health.record(Verdict::Down);
        health.record(Verdict::Neutral);
        assert!(health.is_up());
        health.record(Verdict::Down);
        assert!(!health.is_up());
        health.record(Verdict::Up);
        assert!(health.is_up());
    }
}
