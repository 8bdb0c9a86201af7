//! How syncs progress, computed from timestamps instead of a background task.
//!
//! When a sync is created, each of its jobs gets a plan: when it starts, when it ends, and how
//! it ends. The plan is drawn from a ChaCha stream keyed by the configured seed and the
//! sync's ordinal, so the same seed and the same requests give the same syncs. A job's status
//! at any instant is then a pure function of its plan and that instant, which keeps results
//! deterministic and lets tests jump ahead by advancing the emulator clock.

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::clock::{delta, later};
use super::config::JobTiming;

/// Status of one job, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum JobStatus {
    /// Waiting to start.
    Created,
    /// Pulling or pushing records.
    Running,
    /// Finished without error.
    Success,
    /// Finished with an error, or cancelled before it finished.
    Failed,
}

impl JobStatus {
    /// Whether the job can no longer change.
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Failed)
    }
}

/// Status of a sync, derived from its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum SyncStatus {
    /// At least one job is not final.
    Running,
    /// Every job succeeded.
    Success,
    /// No job succeeded.
    Failed,
    /// Some jobs succeeded and some failed.
    PartialSuccess,
}

impl SyncStatus {
    /// Whether the sync can no longer change.
    pub(crate) fn is_final(self) -> bool {
        self != Self::Running
    }

    /// Whether the sync counts as "synced" for a company's `lastSynced`.
    pub(crate) fn delivered_data(self) -> bool {
        matches!(self, Self::Success | Self::PartialSuccess)
    }
}

/// Why a job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The platform answered with an error; the index picks one of [`PLATFORM_ERRORS`].
    Platform(usize),
    /// The sync was cancelled before this job finished.
    Cancelled,
}

/// Error codes and messages a failing job reports, chosen per job from the seeded stream.
pub(crate) const PLATFORM_ERRORS: [(&str, &str); 3] = [
    (
        "PLATFORM_ERROR",
        "the platform returned an unexpected error",
    ),
    (
        "PLATFORM_RATE_LIMITED",
        "the platform rate-limited the connection",
    ),
    ("PLATFORM_TIMEOUT", "the platform did not answer in time"),
];

/// The planned life of one job.
#[derive(Clone, Debug)]
pub(crate) struct JobPlan {
    /// When the job starts running.
    pub(crate) start_at: DateTime<Utc>,
    /// When the job finishes.
    pub(crate) end_at: DateTime<Utc>,
    /// Records the job reports once final (on failure, those written before the error).
    pub(crate) records: u64,
    /// How the job fails, if it does.
    pub(crate) failure: Option<Failure>,
}

/// A job as stored: its identity, its plan, and when it was cancelled, if it was.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// 15-character alphanumeric id.
    pub(crate) id: String,
    /// The data model this job syncs.
    pub(crate) data_model: String,
    /// Creation time (the creation time of its sync).
    pub(crate) created_at: DateTime<Utc>,
    /// The planned timing and outcome.
    pub(crate) plan: JobPlan,
    /// Set when a cancel found the job unfinished; freezes it as failed at that instant.
    pub(crate) cancelled_at: Option<DateTime<Utc>>,
}

/// What a job looks like at one instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobState {
    pub(crate) status: JobStatus,
    pub(crate) records: Option<u64>,
    pub(crate) start: Option<DateTime<Utc>>,
    pub(crate) end: Option<DateTime<Utc>>,
    pub(crate) failure: Option<Failure>,
}

impl Job {
    /// The job's state at `now`.
    pub(crate) fn at(&self, now: DateTime<Utc>) -> JobState {
        let plan = &self.plan;
        if let Some(cancelled) = self.cancelled_at {
            let start = (plan.start_at <= cancelled).then_some(plan.start_at);
            return JobState {
                status: JobStatus::Failed,
                records: start.map(|_| 0),
                start,
                end: Some(cancelled),
                failure: Some(Failure::Cancelled),
            };
        }
        if now < plan.start_at {
            return JobState::waiting();
        }
        if now < plan.end_at {
            return JobState::running(plan.start_at);
        }
        let status = if plan.failure.is_some() {
            JobStatus::Failed
        } else {
            JobStatus::Success
        };
        JobState {
            status,
            records: Some(plan.records),
            start: Some(plan.start_at),
            end: Some(plan.end_at),
            failure: plan.failure,
        }
    }
}

impl JobState {
    fn waiting() -> Self {
        Self {
            status: JobStatus::Created,
            records: None,
            start: None,
            end: None,
            failure: None,
        }
    }

    fn running(start: DateTime<Utc>) -> Self {
        Self {
            status: JobStatus::Running,
            records: Some(0),
            start: Some(start),
            ..Self::waiting()
        }
    }
}

/// How many jobs (or data models) are in each state; the API's `jobCounts` shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    pub(crate) total: u64,
    pub(crate) success: u64,
    pub(crate) failed: u64,
    pub(crate) running: u64,
    /// Jobs still `CREATED`.
    pub(crate) pending: u64,
}

impl Counts {
    /// Tallies job states.
    pub(crate) fn of(states: &[JobState]) -> Self {
        let mut counts = Self {
            total: states.len() as u64,
            ..Self::default()
        };
        for state in states {
            match state.status {
                JobStatus::Created => counts.pending += 1,
                JobStatus::Running => counts.running += 1,
                JobStatus::Success => counts.success += 1,
                JobStatus::Failed => counts.failed += 1,
            }
        }
        counts
    }

    /// The sync status these counts imply.
    pub(crate) fn status(&self) -> SyncStatus {
        if self.running + self.pending > 0 {
            SyncStatus::Running
        } else if self.failed == 0 {
            SyncStatus::Success
        } else if self.success == 0 {
            SyncStatus::Failed
        } else {
            SyncStatus::PartialSuccess
        }
    }
}

/// Draws everything random about one sync, from a stream unique to (seed, ordinal).
pub(crate) struct Planner {
    rng: ChaCha8Rng,
}

/// What decides whether a job fails.
pub(crate) struct FailureRule<'a> {
    /// Chance that any job fails.
    pub(crate) probability: f64,
    /// Data models that always fail.
    pub(crate) always: &'a std::collections::BTreeSet<String>,
}

impl Planner {
    /// A planner for the sync with the given ordinal.
    pub(crate) fn new(seed: u64, ordinal: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(ordinal);
        Self { rng }
    }

    /// A UUID (version 4 layout) drawn from the stream.
    pub(crate) fn sync_id(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// Plans one job of a sync created at `created_at`.
    pub(crate) fn job(
        &mut self,
        data_model: &str,
        created_at: DateTime<Utc>,
        timing: &JobTiming,
        rule: &FailureRule<'_>,
    ) -> Job {
        let id = self.job_id();
        let wait = delta(timing.start_delay).checked_add(&self.share(timing.jitter));
        let start_at = later(created_at, wait.unwrap_or(chrono::TimeDelta::MAX));
        let spread = self.share(timing.jitter.saturating_mul(2)) - delta(timing.jitter);
        let run = delta(timing.duration)
            .checked_add(&spread)
            .unwrap_or(chrono::TimeDelta::MAX);
        let run = run.max(chrono::TimeDelta::milliseconds(1));
        let fails =
            self.rng.random_bool(chance(rule.probability)) || rule.always.contains(data_model);
        let records = self.rng.random_range(1..=5000);
        let error = self.rng.random_range(0..PLATFORM_ERRORS.len());
        let plan = JobPlan {
            start_at,
            end_at: later(start_at, run),
            records: if fails { records / 3 } else { records },
            failure: fails.then_some(Failure::Platform(error)),
        };
        Job {
            id,
            data_model: data_model.to_owned(),
            created_at,
            plan,
            cancelled_at: None,
        }
    }

    /// A 15-character alphanumeric id, like the API's job ids.
    fn job_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..15)
            .map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())]))
            .collect()
    }

    /// A random whole number of milliseconds between zero and `max`.
    fn share(&mut self, max: std::time::Duration) -> chrono::TimeDelta {
        let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        chrono::TimeDelta::milliseconds(
            self.rng.random_range(0..=max_ms).min(i64::MAX as u64) as i64
        )
    }
}

/// A probability made safe for a coin toss: clamped to 0..=1, with NaN read as never.
pub(crate) fn chance(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    fn timing() -> JobTiming {
        JobTiming {
            start_delay: Duration::from_millis(100),
            duration: Duration::from_millis(1000),
            jitter: Duration::from_millis(50),
        }
    }

    fn plan(seed: u64, ordinal: u64, always: &BTreeSet<String>) -> (String, Job) {
        let mut planner = Planner::new(seed, ordinal);
        let id = planner.sync_id();
        let rule = FailureRule {
            probability: 0.5,
            always,
        };
        let created = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        (id, planner.job("ACCOUNT", created, &timing(), &rule))
    }

    #[test]
    fn same_seed_same_plan() {
        let none = BTreeSet::new();
        let (id_a, job_a) = plan(1, 3, &none);
        let (id_b, job_b) = plan(1, 3, &none);
        assert_eq!(id_a, id_b);
        assert_eq!(job_a.id, job_b.id);
        assert_eq!(job_a.plan.end_at, job_b.plan.end_at);
        assert_eq!(job_a.plan.records, job_b.plan.records);
        let (id_c, _) = plan(1, 4, &none);
        assert_ne!(id_a, id_c);
    }

    #[test]
    fn job_moves_through_states() {
        let (_, job) = plan(1, 1, &BTreeSet::new());
        let created = job.created_at;
        assert_eq!(job.at(created).status, JobStatus::Created);
        assert_eq!(job.at(job.plan.start_at).status, JobStatus::Running);
        assert!(job.at(job.plan.end_at).status.is_final());
        assert_eq!(job.id.len(), 15);
    }

    #[test]
    fn forced_failure_and_cancel() {
        let always = BTreeSet::from(["ACCOUNT".to_owned()]);
        let (_, mut job) = plan(9, 1, &always);
        assert_eq!(job.at(job.plan.end_at).status, JobStatus::Failed);
        job.cancelled_at = Some(job.created_at);
        let state = job.at(job.plan.end_at);
        assert_eq!(state.failure, Some(Failure::Cancelled));
        assert_eq!(state.start, None);
        assert_eq!(state.records, None);
    }

    #[test]
    fn status_from_counts() {
        let c = |success, failed, running| Counts {
            total: 3,
            success,
            failed,
            running,
            pending: 0,
        };
        assert_eq!(c(3, 0, 0).status(), SyncStatus::Success);
        assert_eq!(c(0, 3, 0).status(), SyncStatus::Failed);
        assert_eq!(c(2, 1, 0).status(), SyncStatus::PartialSuccess);
        assert_eq!(c(2, 0, 1).status(), SyncStatus::Running);
    }
}
