//! What a poller publishes: the latest state of a sync with its content revision, how fresh
//! it is, and whether the watch has ended.

use std::sync::Arc;
use std::time::SystemTime;

use prost::Message;
use prost_types::Timestamp;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::pb::v1 as pb;

/// The latest observation of one sync, held in the poller's latest-value cell.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The latest state; `None` until the first successful poll.
    pub state: Option<Arc<pb::SyncState>>,
    /// When the last poll succeeded; `None` before the first success.
    pub last_poll: Option<Timestamp>,
    /// Polls failed in a row since the last success.
    pub failures: u32,
    /// Set once the poller has stopped for good.
    pub end: Option<End>,
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
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first).max(1)
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
    fn final_statuses_are_recognised() {
        assert!(is_final(&sync(pb::SyncStatus::PartialSuccess)));
        assert!(is_final(&sync(pb::SyncStatus::Failed)));
        assert!(!is_final(&sync(pb::SyncStatus::Running)));
        assert!(!is_final(&sync(pb::SyncStatus::Unspecified)));
    }
}
