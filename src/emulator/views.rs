//! The JSON shapes of the API's objects: Sync, Job, SyncConfigRead and Company.
//!
//! Responses are camelCase with ISO 8601 times (milliseconds, `Z`), as in the v4 reference.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::clock::iso;
use super::sim::{Counts, Failure, JobState, JobStatus, PLATFORM_ERRORS, SyncStatus};
use super::state::{Company, JobType, ModelConfig, ScopeAccess, State, SyncRecord, SyncType};

/// A Sync object (upstream §4.1).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SyncView<'a> {
    id: &'a str,
    company_id: i64,
    integration_type: &'a str,
    data_models: Vec<&'a str>,
    config_mode: &'static str,
    full_sync: bool,
    sync_type: SyncType,
    status: SyncStatus,
    job_counts: Counts,
    data_model_counts: Counts,
    start_time: Option<String>,
    end_time: Option<String>,
    created_at: String,
}

impl<'a> SyncView<'a> {
    /// The sync as it stands at `now`.
    ///
    /// A sync runs one job per data model, so `dataModelCounts` equals `jobCounts`. The sync
    /// counts as started when it is created, so `startTime` equals `createdAt`.
    pub(crate) fn new(sync: &'a SyncRecord, now: DateTime<Utc>) -> Self {
        let state = sync.at(now);
        Self {
            id: &sync.id,
            company_id: sync.company_id,
            integration_type: &sync.integration,
            data_models: sync.data_models(),
            config_mode: sync.job_type.config_mode(),
            full_sync: sync.full_sync,
            sync_type: sync.sync_type,
            status: state.status,
            job_counts: state.counts,
            data_model_counts: state.counts,
            start_time: Some(iso(sync.created_at)),
            end_time: state.end.map(iso),
            created_at: iso(sync.created_at),
        }
    }
}

/// The short shape create and retry return: `{"sync": {"id", "dataModelsSyncing"}}`.
pub(crate) fn init_sync(sync: &SyncRecord) -> Value {
    json!({ "sync": { "id": sync.id, "dataModelsSyncing": sync.data_models() } })
}

/// A Job object (upstream §4.2).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobView<'a> {
    id: &'a str,
    data_model: &'a str,
    status: JobStatus,
    job_type: JobType,
    config_mode: &'static str,
    records_synced: Option<u64>,
    retry_count: u32,
    parent_job_id: Option<&'a str>,
    error_code: Option<&'static str>,
    error_message: Option<&'static str>,
    error_response: Option<Value>,
    start_time: Option<String>,
    end_time: Option<String>,
    created_at: String,
}

/// Every job of a sync as it stands at `now`, in creation order.
pub(crate) fn jobs(sync: &SyncRecord, now: DateTime<Utc>) -> Vec<JobView<'_>> {
    let state = sync.at(now);
    sync.jobs
        .iter()
        .zip(state.jobs)
        .map(|(job, job_state)| {
            JobView::new(sync, &job.id, &job.data_model, job.created_at, job_state)
        })
        .collect()
}

impl<'a> JobView<'a> {
    fn new(
        sync: &'a SyncRecord,
        id: &'a str,
        data_model: &'a str,
        created_at: DateTime<Utc>,
        state: JobState,
    ) -> Self {
        let (error_code, error_message) = match state.failure {
            Some(Failure::Platform(n)) => PLATFORM_ERRORS.get(n).copied().unzip(),
            Some(Failure::Cancelled) => (Some("CANCELLED"), Some("the sync was cancelled")),
            None => (None, None),
        };
        let error_response = error_message.map(|detail| {
            json!({ "platform": sync.integration, "dataModel": data_model, "detail": detail })
        });
        Self {
            id,
            data_model,
            status: state.status,
            job_type: sync.job_type,
            config_mode: sync.job_type.config_mode(),
            records_synced: state.records,
            retry_count: 0,
            parent_job_id: None,
            error_code,
            error_message,
            error_response,
            start_time: state.start.map(iso),
            end_time: state.end.map(iso),
            created_at: iso(created_at),
        }
    }
}

/// A SyncConfigRead object (upstream §4.3).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigView<'a> {
    data_model: &'a str,
    category: &'a str,
    enabled: bool,
    scope_access: ScopeAccess,
    frequency: &'a str,
    interval: i64,
    sync_from: Option<&'a str>,
    is_overridden: bool,
    /// The emulator has no parent/child data models, so this is always false.
    is_child: bool,
}

impl<'a> ConfigView<'a> {
    /// The read shape of one stored config.
    pub(crate) fn new(config: &'a ModelConfig) -> Self {
        Self {
            data_model: &config.data_model,
            category: &config.category,
            enabled: config.enabled,
            scope_access: config.scope,
            frequency: &config.frequency,
            interval: config.interval,
            sync_from: config.sync_from.as_deref(),
            is_overridden: config.is_overridden,
            is_child: false,
        }
    }
}

/// A Company object (upstream §4.5) as it stands at `now`.
pub(crate) fn company(state: &State, company: &Company, now: DateTime<Utc>) -> Value {
    let active = state.has_active_sync(company, now);
    let sync_status = if active { "SYNCING" } else { "IDLE" };
    let last_synced = state.last_synced(company, now).map(iso);
    let configs: Vec<ConfigView<'_>> = company.configs.iter().map(ConfigView::new).collect();
    let entity = format!("{}-{}", company.integration.to_lowercase(), company.id);
    let created = iso(company.created_at);
    json!({
        "id": company.id,
        "companyId": company.id,
        "companyName": company.name,
        "inviteLinkId": null,
        "integration": company.integration,
        "integrationCategory": company.category,
        "integrationEntityId": entity,
        "connectionStatus": "HEALTHY",
        "syncStatus": sync_status,
        "hasActiveSync": active,
        "lastSynced": last_synced,
        "syncFrom": null,
        "createdAt": created,
        "dataModelConfigs": configs,
        "connection": {
            "id": format!("{}_{}", company.id, company.integration),
            "createdAt": created,
            "updatedAt": created,
            "companyId": company.id,
            "organisationId": company.org_id,
            "integrationType": company.integration,
            "integrationEntityId": entity,
            "category": company.category,
            "status": "HEALTHY",
            "syncStatus": sync_status,
            "syncResumeAt": null,
            "lastSynced": last_synced,
        },
    })
}
