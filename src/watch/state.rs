//! What a poller publishes: the latest state of a sync (or of a company's syncs) with its
//! content revision, how fresh it is, and whether the watch has ended.

use std::sync::Arc;
use std::time::SystemTime;

use prost::Message;
use prost_types::Timestamp;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::pb::v1 as pb;

/// The latest observation of what a poller watches, held in its latest-value cell.
#[derive(Debug)]
pub struct Observation<T> {
    /// The latest state; `None` until the first successful poll.
    pub state: Option<Arc<T>>,
    /// When the last poll succeeded; `None` before the first success.
    pub last_poll: Option<Timestamp>,
    /// Polls failed in a row since the last success.
    pub failures: u32,
    /// Set once the poller has stopped for good.
    pub end: Option<End>,
}

impl<T> Clone for Observation<T> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            last_poll: self.last_poll,
            failures: self.failures,
            end: self.end.clone(),
        }
    }
}

impl<T> Default for Observation<T> {
    fn default() -> Self {
        Self {
            state: None,
            last_poll: None,
            failures: 0,
            end: None,
        }
    }
}

/// Why a poller stopped.
#[derive(Debug, Clone)]
pub enum End {
    /// The sync reached a final status; `Observation::state` holds it.
    Final,
    /// The watch failed: the upstream refused it or the failure budget is spent.
    Failed(Status),
}

/// The parts of a sync whose change means its jobs may have changed too.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    status: i32,
    upstream_status: String,
    job_counts: Option<pb::StatusCounts>,
    data_model_counts: Option<pb::StatusCounts>,
    end_time: Option<Timestamp>,
}

impl Summary {
    /// The summary of a sync as GetSync returned it.
    pub fn of(sync: &pb::Sync) -> Self {
        Self {
            status: sync.status,
            upstream_status: sync.upstream_status.clone(),
            job_counts: sync.job_counts,
            data_model_counts: sync.data_model_counts,
            end_time: sync.end_time,
        }
    }
}

/// A state message for a sync and its jobs, observed now.
pub fn state(sync: pb::Sync, jobs: Vec<pb::Job>) -> pb::SyncState {
    let revision = revision(&sync, &jobs);
    pb::SyncState {
        sync: Some(sync),
        jobs,
        revision,
        observe_time: Some(Timestamp::from(SystemTime::now())),
    }
}

/// The content revision of a sync and its jobs: the first 8 bytes of a SHA-256 of their
/// protobuf encoding. It depends on the content only, so it is the same on every replica
/// and after a restart, and is never 0 (0 means "no revision" in requests).
pub fn revision(sync: &pb::Sync, jobs: &[pb::Job]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(sync.encode_to_vec());
    for job in jobs {
        hasher.update(job.encode_length_delimited_to_vec());
    }
    first_word(hasher)
}

fn first_word(hasher: Sha256) -> u64 {
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first).max(1)
}

/// The syncs of one company as one ListSyncs page showed them.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanySnapshot {
    /// The company.
    pub company_id: i64,
    /// Each sync with its own content revision, in the upstream's order (newest first).
    pub syncs: Vec<(pb::Sync, u64)>,
    /// The revision of the whole list.
    pub revision: u64,
    /// When the list was read.
    pub observe_time: Timestamp,
}

impl CompanySnapshot {
    /// A snapshot of a company's syncs, observed now.
    pub fn new(company_id: i64, syncs: Vec<pb::Sync>) -> Self {
        let syncs: Vec<_> = syncs
            .into_iter()
            .map(|sync| {
                let revision = revision(&sync, &[]);
                (sync, revision)
            })
            .collect();
        let mut hasher = Sha256::new();
        for (_, revision) in &syncs {
            hasher.update(revision.to_be_bytes());
        }
        Self {
            company_id,
            syncs,
            revision: first_word(hasher),
            observe_time: Timestamp::from(SystemTime::now()),
        }
    }

    /// Whether any listed sync is moving.
    pub fn is_running(&self) -> bool {
        self.syncs.iter().any(|(sync, _)| is_running(sync))
    }
}

/// Whether a sync's status is final: it will not change again.
pub fn is_final(sync: &pb::Sync) -> bool {
    matches!(
        sync.status(),
        pb::SyncStatus::Success | pb::SyncStatus::Failed | pb::SyncStatus::PartialSuccess
    )
}

/// Whether a sync is moving, so that polling it often is worth the budget.
pub fn is_running(sync: &pb::Sync) -> bool {
    sync.status() == pb::SyncStatus::Running
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(status: pb::SyncStatus) -> pb::Sync {
        pb::Sync {
            id: "s1".into(),
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn revision_depends_on_content_only() {
        let job = pb::Job {
            id: "j1".into(),
            ..Default::default()
        };
        let a = state(sync(pb::SyncStatus::Running), vec![job.clone()]);
        let b = state(sync(pb::SyncStatus::Running), vec![job.clone()]);
        assert_eq!(a.revision, b.revision);
        assert_ne!(a.revision, 0);

        let finished = state(sync(pb::SyncStatus::Success), vec![job]);
        assert_ne!(a.revision, finished.revision);
    }

    #[test]
    fn jobs_split_differently_have_different_revisions() {
        let job = |id: &str| pb::Job {
            id: id.into(),
            ..Default::default()
        };
        let one = revision(&sync(pb::SyncStatus::Running), &[job("ab")]);
        let two = revision(&sync(pb::SyncStatus::Running), &[job("a"), job("b")]);
        assert_ne!(one, two);
    }

    #[test]
    fn company_revision_follows_any_sync() {
        let before = CompanySnapshot::new(7, vec![sync(pb::SyncStatus::Running)]);
        let same = CompanySnapshot::new(7, vec![sync(pb::SyncStatus::Running)]);
        let after = CompanySnapshot::new(7, vec![sync(pb::SyncStatus::Success)]);
        assert_eq!(before.revision, same.revision);
        assert_ne!(before.revision, after.revision);
        assert!(before.is_running() && !after.is_running());
    }

    #[test]
    fn final_statuses_are_recognised() {
        assert!(is_final(&sync(pb::SyncStatus::PartialSuccess)));
        assert!(is_final(&sync(pb::SyncStatus::Failed)));
        assert!(!is_final(&sync(pb::SyncStatus::Running)));
        assert!(!is_final(&sync(pb::SyncStatus::Unspecified)));
    }
}
