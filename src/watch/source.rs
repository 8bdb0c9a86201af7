//! What a poller reads: one sync with its jobs, or one company's list of syncs. Every read
//! is budgeted ([`UpstreamClient::send_polled`]) and a failure comes back as the caller's
//! status plus whether it is worth retrying.

use std::future::Future;

use tonic::Status;

use super::state::{self, CompanySnapshot, Summary};
use super::{Subject, Target};
use crate::convert;
use crate::pb::v1 as pb;
use crate::status::{self, CallContext, Resource};
use crate::upstream::{
    Endpoint, EnvelopeError, PathParam, Priority, UpstreamClient, UpstreamError, UpstreamRequest,
};

/// Items asked for per list page: the upstream's maximum.
const PAGE_SIZE: &str = "100";

/// Pages of jobs read at most per poll, so a cursor that never ends cannot loop forever.
const MAX_JOB_PAGES: usize = 50;

/// A failed poll.
#[derive(Debug)]
pub(super) struct Failure {
    /// What a subscriber receives if the watch ends on it.
    pub(super) status: Status,
    /// Whether the same read may succeed later (unreachable, 5xx, 429, timeouts).
    pub(super) temporary: bool,
}

/// One kind of thing a poller can watch.
pub(super) trait Source: Send + 'static {
    /// What one successful poll yields.
    type State: Send + Sync + 'static;

    /// Reads the current state upstream.
    fn fetch(&mut self) -> impl Future<Output = Result<Self::State, Failure>> + Send;

    /// The content revision of a state.
    fn revision(state: &Self::State) -> u64;

    /// Whether the state can never change again, so polling may stop.
    fn is_final(state: &Self::State) -> bool;

    /// Whether the state is moving, so polling often is worth the budget.
    fn is_running(state: &Self::State) -> bool;
}

/// Budgeted reads with one credential.
struct Reader {
    client: UpstreamClient,
    target: Target,
}

impl Reader {
    async fn read(
        &self,
        endpoint: Endpoint,
        param: PathParam,
        query: Vec<(&'static str, String)>,
        priority: Priority,
    ) -> Result<serde_json::Value, Failure> {
        let request = UpstreamRequest {
            endpoint,
            param,
            query,
            body: None,
            key: self.target.key.clone(),
            source: self.target.source,
            request_id: None,
            time_left: None,
            idempotency_key: None,
            traceparent: None,
        };
        match self.client.send_polled(request, priority).await {
            Ok(reply) => Ok(reply.data),
            Err(error) => Err(self.failure(endpoint, &error)),
        }
    }

    fn decode<T>(
        &self,
        endpoint: Endpoint,
        result: Result<T, EnvelopeError>,
    ) -> Result<T, Failure> {
        result.map_err(|source| {
            let error = UpstreamError::Malformed {
                status: 200,
                request_id: None,
                source,
            };
            self.failure(endpoint, &error)
        })
    }

    fn failure(&self, endpoint: Endpoint, error: &UpstreamError) -> Failure {
        let resource = match &self.target.subject {
            Subject::Sync(id) => Resource::sync(id),
            Subject::Company { id, .. } => Resource::company(*id),
        };
        let context = CallContext {
            endpoint,
            resource: Some(resource),
            credential: self.target.source,
        };
        Failure {
            status: status::from_upstream(error, &context),
            temporary: status::is_temporary(error),
        }
    }
}

/// One sync and its jobs.
pub(super) struct SyncSource {
    reader: Reader,
    sync_id: String,
    /// The summary the current jobs were read under; `None` forces a jobs read.
    summary: Option<Summary>,
    jobs: Vec<pb::Job>,
}

impl SyncSource {
    pub(super) fn new(client: UpstreamClient, target: Target, sync_id: String) -> Self {
        Self {
            reader: Reader { client, target },
            sync_id,
            summary: None,
            jobs: Vec::new(),
        }
    }

    /// First until the sync and its jobs were read once.
    fn priority(&self) -> Priority {
        match self.summary {
            None => Priority::First,
            Some(_) => Priority::Routine,
        }
    }

    async fn get_sync(&self) -> Result<pb::Sync, Failure> {
        let param = PathParam::Sync(self.sync_id.clone());
        let data = self
            .reader
            .read(Endpoint::GetSync, param, Vec::new(), self.priority())
            .await?;
        self.reader
            .decode(Endpoint::GetSync, convert::get_sync(&data))
    }

    async fn list_jobs(&self) -> Result<Vec<pb::Job>, Failure> {
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_JOB_PAGES {
            let mut query = vec![("limit", PAGE_SIZE.to_owned())];
            query.extend(cursor.take().map(|c| ("cursor", c)));
            let param = PathParam::Sync(self.sync_id.clone());
            let data = self
                .reader
                .read(Endpoint::ListSyncJobs, param, query, self.priority())
                .await?;
            let page = self
                .reader
                .decode(Endpoint::ListSyncJobs, convert::job_page(&data))?;
            jobs.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(jobs)
    }
}

impl Source for SyncSource {
    type State = pb::SyncState;

    /// Reads the sync, and its jobs when its summary changed since they were last read.
    async fn fetch(&mut self) -> Result<pb::SyncState, Failure> {
        let sync = self.get_sync().await?;
        let summary = Summary::of(&sync);
        if self.summary.as_ref() != Some(&summary) {
            self.jobs = self.list_jobs().await?;
            self.summary = Some(summary);
        }
        Ok(state::state(sync, self.jobs.clone()))
    }

    fn revision(state: &pb::SyncState) -> u64 {
        state.revision
    }

    fn is_final(state: &pb::SyncState) -> bool {
        state.sync.as_ref().is_some_and(state::is_final)
    }

    fn is_running(state: &pb::SyncState) -> bool {
        state.sync.as_ref().is_some_and(state::is_running)
    }
}

/// The newest page of one company's syncs of one job type.
pub(super) struct CompanySource {
    reader: Reader,
    company_id: i64,
    job_type: &'static str,
    /// Whether a list was read once; the first read goes before routine ones.
    listed: bool,
}

impl CompanySource {
    pub(super) fn new(
        client: UpstreamClient,
        target: Target,
        company_id: i64,
        job_type: &'static str,
    ) -> Self {
        Self {
            reader: Reader { client, target },
            company_id,
            job_type,
            listed: false,
        }
    }
}

impl Source for CompanySource {
    type State = CompanySnapshot;

    async fn fetch(&mut self) -> Result<CompanySnapshot, Failure> {
        let query = vec![
            ("limit", PAGE_SIZE.to_owned()),
            ("jobType", self.job_type.to_owned()),
        ];
        let param = PathParam::Company(self.company_id);
        let priority = match self.listed {
            false => Priority::First,
            true => Priority::Routine,
        };
        let data = self
            .reader
            .read(Endpoint::ListSyncs, param, query, priority)
            .await?;
        let page = self
            .reader
            .decode(Endpoint::ListSyncs, convert::sync_page(&data))?;
        self.listed = true;
        Ok(CompanySnapshot::new(self.company_id, page.items))
    }

    fn revision(state: &CompanySnapshot) -> u64 {
        state.revision
    }

    fn is_final(_: &CompanySnapshot) -> bool {
        false
    }

    fn is_running(state: &CompanySnapshot) -> bool {
        state.is_running()
    }
}
