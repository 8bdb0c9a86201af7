//! Tenancy, companies, sync configs, syncs and jobs: everything the API reads and changes.
//!
//! The state is plain data behind one lock. Operations take the instant they act at, so a
//! request sees one consistent picture: a sync is running or not for the whole request.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::{self, DefaultModel};
use super::config::{CompanySeed, EmulatorConfig, JobTiming};
use super::errors::ApiError;
use super::sim::{Counts, FailureRule, Job, JobState, JobStatus, Planner, SyncStatus};

/// Whether a sync reads from the platform or writes to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum JobType {
    /// Reads data from the platform.
    Pull,
    /// Writes data to the platform (asynchronous writes).
    Push,
}

impl JobType {
    /// The `configMode` of syncs and jobs of this type.
    pub(crate) fn config_mode(self) -> &'static str {
        match self {
            Self::Pull => "READ",
            Self::Push => "CREATE",
        }
    }
}

/// Who started a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum SyncType {
    /// Started through the API.
    Manual,
    /// Started by the schedule.
    AutoSync,
}

/// The `scopeAccess` / `scope_access` object of a sync config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScopeAccess {
    #[serde(rename = "READ", default)]
    pub(crate) read: bool,
    #[serde(rename = "CREATE", default)]
    pub(crate) create: bool,
    #[serde(rename = "DELETE", default)]
    pub(crate) delete: bool,
    #[serde(rename = "UPDATE", default)]
    pub(crate) update: bool,
}

/// The sync config of one data model, for an organization or a company.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ModelConfig {
    pub(crate) data_model: String,
    pub(crate) category: String,
    pub(crate) enabled: bool,
    pub(crate) scope: ScopeAccess,
    pub(crate) frequency: String,
    pub(crate) interval: i64,
    pub(crate) sync_from: Option<String>,
    /// True once a company-level update set this entry.
    pub(crate) is_overridden: bool,
}

impl ModelConfig {
    fn from_default(model: &DefaultModel, category: &str) -> Self {
        Self {
            data_model: model.name.to_owned(),
            category: category.to_owned(),
            enabled: model.enabled,
            scope: ScopeAccess {
                read: true,
                ..ScopeAccess::default()
            },
            frequency: model.frequency.to_owned(),
            interval: model.interval,
            sync_from: None,
            is_overridden: false,
        }
    }
}

/// Replaces the entry for the same data model, or appends a new one.
fn upsert(configs: &mut Vec<ModelConfig>, entry: ModelConfig) {
    match configs
        .iter_mut()
        .find(|c| c.data_model == entry.data_model)
    {
        Some(existing) => *existing = entry,
        None => configs.push(entry),
    }
}

/// An organization and its default sync configs, keyed by data model.
#[derive(Debug)]
struct Organization {
    defaults: Vec<ModelConfig>,
}

/// A connected company.
#[derive(Debug)]
pub(crate) struct Company {
    pub(crate) id: i64,
    pub(crate) org_id: i64,
    pub(crate) name: String,
    pub(crate) integration: String,
    pub(crate) category: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) configs: Vec<ModelConfig>,
    /// Indexes into [`State::syncs`], in creation order.
    syncs: Vec<usize>,
}

/// One sync and its jobs (one job per data model).
#[derive(Debug)]
pub(crate) struct SyncRecord {
    pub(crate) id: String,
    pub(crate) company_id: i64,
    org_id: i64,
    pub(crate) integration: String,
    pub(crate) job_type: JobType,
    pub(crate) sync_type: SyncType,
    pub(crate) full_sync: bool,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) jobs: Vec<Job>,
}

/// A sync as it stands at one instant.
pub(crate) struct SyncState {
    pub(crate) status: SyncStatus,
    pub(crate) counts: Counts,
    pub(crate) jobs: Vec<JobState>,
    pub(crate) end: Option<DateTime<Utc>>,
}

impl SyncRecord {
    /// The sync's status, counts and job states at `now`.
    pub(crate) fn at(&self, now: DateTime<Utc>) -> SyncState {
        let jobs: Vec<JobState> = self.jobs.iter().map(|job| job.at(now)).collect();
        let counts = Counts::of(&jobs);
        let status = counts.status();
        let end = if status.is_final() {
            jobs.iter().filter_map(|j| j.end).max()
        } else {
            None
        };
        SyncState {
            status,
            counts,
            jobs,
            end,
        }
    }

    /// The data models whose jobs failed in `state`, or every model if none failed.
    fn models_to_retry(&self, state: &SyncState) -> Vec<String> {
        let failed = self
            .jobs
            .iter()
            .zip(&state.jobs)
            .filter(|(_, job)| job.status == JobStatus::Failed);
        let failed: Vec<String> = failed.map(|(job, _)| job.data_model.clone()).collect();
        if !failed.is_empty() {
            return failed;
        }
        self.jobs.iter().map(|job| job.data_model.clone()).collect()
    }

    /// The data models of this sync, in job order.
    pub(crate) fn data_models(&self) -> Vec<&str> {
        self.jobs
            .iter()
            .map(|job| job.data_model.as_str())
            .collect()
    }
}

/// What a new sync should contain.
#[derive(Debug, Default)]
pub(crate) struct SyncRequest {
    /// Data models to sync; empty means the company's enabled configs.
    pub(crate) models: Vec<String>,
    pub(crate) full_sync: bool,
    pub(crate) sync_type: Option<SyncType>,
}

/// What a sync about to be created contains and how it was started.
struct SyncSpec<'a> {
    models: &'a [String],
    job_type: JobType,
    sync_type: SyncType,
    full_sync: bool,
}

impl<'a> SyncSpec<'a> {
    /// A read sync of `models`.
    fn pull(models: &'a [String], sync_type: SyncType, full_sync: bool) -> Self {
        Self {
            models,
            job_type: JobType::Pull,
            sync_type,
            full_sync,
        }
    }
}

/// The settings that shape new syncs.
#[derive(Debug)]
struct SimSettings {
    seed: u64,
    timing: JobTiming,
    failure_probability: f64,
    fail_data_models: BTreeSet<String>,
}

/// Everything the emulated API knows (not `Debug`: it holds API keys).
pub(crate) struct State {
    sim: SimSettings,
    keys: HashMap<String, i64>,
    orgs: BTreeMap<i64, Organization>,
    companies: BTreeMap<i64, Company>,
    syncs: Vec<SyncRecord>,
    sync_index: HashMap<String, usize>,
}

impl State {
    /// Builds the tenants of `config`, with a short sync history when asked, as of `now`.
    pub(crate) fn new(config: &EmulatorConfig, now: DateTime<Utc>) -> Self {
        let mut state = Self {
            sim: SimSettings {
                seed: config.seed,
                timing: config.timing,
                failure_probability: config.failure_probability,
                fail_data_models: config.fail_data_models.clone(),
            },
            keys: HashMap::new(),
            orgs: BTreeMap::new(),
            companies: BTreeMap::new(),
            syncs: Vec::new(),
            sync_index: HashMap::new(),
        };
        for org in &config.organizations {
            state.add_organization(org.id, &org.api_keys, &org.companies, now);
        }
        if config.seed_history {
            state.seed_history(now);
        }
        state
    }

    fn add_organization(
        &mut self,
        org_id: i64,
        keys: &[String],
        companies: &[CompanySeed],
        now: DateTime<Utc>,
    ) {
        for key in keys {
            self.keys.insert(key.clone(), org_id);
        }
        let defaults = catalog::CATEGORIES
            .iter()
            .flat_map(|category| {
                let models = catalog::default_models(category);
                models
                    .iter()
                    .map(move |model| ModelConfig::from_default(model, category))
            })
            .collect();
        self.orgs.insert(org_id, Organization { defaults });
        for seed in companies {
            self.add_company(org_id, seed, now - TimeDelta::days(30));
        }
    }

    fn add_company(&mut self, org_id: i64, seed: &CompanySeed, created_at: DateTime<Utc>) {
        let category = catalog::category_of(&seed.integration).unwrap_or("ACCOUNTING");
        let configs = self.orgs.get(&org_id).map_or_else(Vec::new, |org| {
            org.defaults
                .iter()
                .filter(|c| c.category == category)
                .cloned()
                .collect()
        });
        let company = Company {
            id: seed.id,
            org_id,
            name: seed.name.clone(),
            integration: seed.integration.clone(),
            category: category.to_owned(),
            created_at,
            configs,
            syncs: Vec::new(),
        };
        self.companies.insert(seed.id, company);
    }

    /// Gives every company two finished read syncs (two days and one day old), and the
    /// company with the lowest id an asynchronous-write (PUSH) sync, so lists start out
    /// non-empty.
    fn seed_history(&mut self, now: DateTime<Utc>) {
        let ids: Vec<i64> = self.companies.keys().copied().collect();
        for (n, id) in ids.into_iter().enumerate() {
            let models = self.enabled_models(id);
            let auto = SyncSpec::pull(&models, SyncType::AutoSync, true);
            self.insert_sync(id, auto, now - TimeDelta::days(2));
            let manual = SyncSpec::pull(&models, SyncType::Manual, false);
            self.insert_sync(id, manual, now - TimeDelta::days(1));
            if n == 0 {
                let invoices = [String::from("INVOICE")];
                let push = SyncSpec {
                    job_type: JobType::Push,
                    ..SyncSpec::pull(&invoices, SyncType::Manual, false)
                };
                self.insert_sync(id, push, now - TimeDelta::hours(12));
            }
        }
    }

    /// The organization an API key acts for.
    pub(crate) fn organization_of(&self, api_key: &str) -> Option<i64> {
        self.keys.get(api_key).copied()
    }

    /// A company of `org`; another organization's company is reported as not found.
    pub(crate) fn company(&self, org: i64, id: i64) -> Result<&Company, ApiError> {
        self.companies
            .get(&id)
            .filter(|company| company.org_id == org)
            .ok_or_else(|| ApiError::NotFound(format!("company {id}")))
    }

    /// A sync of `org`; another organization's sync is reported as not found.
    pub(crate) fn sync(&self, org: i64, id: &str) -> Result<&SyncRecord, ApiError> {
        self.sync_index
            .get(id)
            .and_then(|index| self.syncs.get(*index))
            .filter(|sync| sync.org_id == org)
            .ok_or_else(|| ApiError::NotFound(format!("sync {id}")))
    }

    /// The syncs of a company with the given job type, newest first.
    pub(crate) fn company_syncs(&self, company: &Company, job_type: JobType) -> Vec<&SyncRecord> {
        company
            .syncs
            .iter()
            .rev()
            .filter_map(|index| self.syncs.get(*index))
            .filter(|sync| sync.job_type == job_type)
            .collect()
    }

    /// Whether a read sync of the company is running at `now` (`hasActiveSync`).
    pub(crate) fn has_active_sync(&self, company: &Company, now: DateTime<Utc>) -> bool {
        self.company_syncs(company, JobType::Pull)
            .iter()
            .any(|sync| sync.at(now).status == SyncStatus::Running)
    }

    /// When the company's last read sync that delivered data ended (`lastSynced`).
    pub(crate) fn last_synced(
        &self,
        company: &Company,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.company_syncs(company, JobType::Pull)
            .iter()
            .map(|sync| sync.at(now))
            .filter(|state| state.status.delivered_data())
            .filter_map(|state| state.end)
            .max()
    }

    /// The companies of `org`, highest id (newest) first.
    pub(crate) fn companies_of(&self, org: i64) -> Vec<&Company> {
        self.companies
            .values()
            .rev()
            .filter(|company| company.org_id == org)
            .collect()
    }

    /// Starts a sync for a company of `org`, refusing while a read sync is running.
    pub(crate) fn create_sync(
        &mut self,
        org: i64,
        company_id: i64,
        request: SyncRequest,
        now: DateTime<Utc>,
    ) -> Result<&SyncRecord, ApiError> {
        let company = self.company(org, company_id)?;
        self.refuse_if_running(company, now)?;
        let models = if request.models.is_empty() {
            self.enabled_models(company_id)
        } else {
            request.models
        };
        if models.is_empty() {
            return Err(ApiError::bad_request(
                "the company has no enabled data models to sync",
            ));
        }
        let sync_type = request.sync_type.unwrap_or(SyncType::Manual);
        let full = request.full_sync;
        Ok(self.insert_sync(company_id, SyncSpec::pull(&models, sync_type, full), now))
    }

    /// Starts a scheduled (`AUTO_SYNC`) sync of the company's enabled models, as the
    /// platform's scheduler would; `None` if the company is unknown, busy or has nothing on.
    pub(crate) fn start_auto_sync(
        &mut self,
        company_id: i64,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let org = self.companies.get(&company_id)?.org_id;
        let request = SyncRequest {
            sync_type: Some(SyncType::AutoSync),
            ..SyncRequest::default()
        };
        let sync = self.create_sync(org, company_id, request, now).ok()?;
        Some(sync.id.clone())
    }

    /// Cancels a running sync: its unfinished jobs fail at `now`.
    pub(crate) fn cancel_sync(
        &mut self,
        org: i64,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let index = self.sync_position(org, id)?;
        let Some(sync) = self.syncs.get_mut(index) else {
            return Err(ApiError::NotFound(format!("sync {id}")));
        };
        if sync.at(now).status.is_final() {
            return Err(ApiError::conflict(format!(
                "sync {id} has already finished"
            )));
        }
        for job in &mut sync.jobs {
            if !job.at(now).status.is_final() {
                job.cancelled_at = Some(now);
            }
        }
        Ok(())
    }

    /// Starts a new manual sync of the data models that failed in sync `id` (all of its
    /// models if none failed). Refused while that sync, or any read sync of its company, runs.
    pub(crate) fn retry_sync(
        &mut self,
        org: i64,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<&SyncRecord, ApiError> {
        let original = self.sync(org, id)?;
        let state = original.at(now);
        if state.status == SyncStatus::Running {
            return Err(ApiError::conflict(format!("sync {id} is still running")));
        }
        let models = original.models_to_retry(&state);
        let (company_id, job_type, full) =
            (original.company_id, original.job_type, original.full_sync);
        if job_type == JobType::Pull {
            let company = self.company(org, company_id)?;
            self.refuse_if_running(company, now)?;
        }
        let spec = SyncSpec {
            job_type,
            ..SyncSpec::pull(&models, SyncType::Manual, full)
        };
        Ok(self.insert_sync(company_id, spec, now))
    }

    fn refuse_if_running(&self, company: &Company, now: DateTime<Utc>) -> Result<(), ApiError> {
        if self.has_active_sync(company, now) {
            let message = format!("a sync is already running for company {}", company.id);
            return Err(ApiError::conflict(message));
        }
        Ok(())
    }

    fn sync_position(&self, org: i64, id: &str) -> Result<usize, ApiError> {
        self.sync(org, id)?;
        self.sync_index
            .get(id)
            .copied()
            .ok_or_else(|| ApiError::NotFound(format!("sync {id}")))
    }

    fn enabled_models(&self, company_id: i64) -> Vec<String> {
        let Some(company) = self.companies.get(&company_id) else {
            return Vec::new();
        };
        company
            .configs
            .iter()
            .filter(|c| c.enabled)
            .map(|c| c.data_model.clone())
            .collect()
    }

    /// Creates a sync with one planned job per model; the ordinal keys its random stream.
    fn insert_sync(
        &mut self,
        company_id: i64,
        spec: SyncSpec<'_>,
        created_at: DateTime<Utc>,
    ) -> &SyncRecord {
        let index = self.syncs.len();
        let (org_id, integration) = self
            .companies
            .get(&company_id)
            .map_or((0, String::new()), |c| (c.org_id, c.integration.clone()));
        let mut planner = Planner::new(self.sim.seed, index as u64);
        let id = planner.sync_id();
        let rule = FailureRule {
            probability: self.sim.failure_probability,
            always: &self.sim.fail_data_models,
        };
        let timing = self.sim.timing;
        let jobs = spec
            .models
            .iter()
            .map(|m| planner.job(m, created_at, &timing, &rule))
            .collect();
        let sync = SyncRecord {
            id: id.clone(),
            company_id,
            org_id,
            integration,
            job_type: spec.job_type,
            sync_type: spec.sync_type,
            full_sync: spec.full_sync,
            created_at,
            jobs,
        };
        if let Some(company) = self.companies.get_mut(&company_id) {
            company.syncs.push(index);
        }
        self.sync_index.insert(id, index);
        self.syncs.push(sync);
        &self.syncs[index]
    }

    /// The organization's default configs for the category of `integration`.
    pub(crate) fn org_configs(&self, org: i64, category: &str) -> Vec<&ModelConfig> {
        self.orgs
            .get(&org)
            .map(|o| {
                o.defaults
                    .iter()
                    .filter(|c| c.category == category)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stores organization defaults; with `propagate`, also writes them to every company of
    /// the organization whose category matches, replacing company overrides.
    pub(crate) fn update_org_configs(
        &mut self,
        org: i64,
        configs: Vec<ModelConfig>,
        propagate: bool,
    ) {
        if propagate {
            for company in self.companies.values_mut().filter(|c| c.org_id == org) {
                for config in configs.iter().filter(|c| c.category == company.category) {
                    upsert(&mut company.configs, config.clone());
                }
            }
        }
        if let Some(organization) = self.orgs.get_mut(&org) {
            for config in configs {
                upsert(&mut organization.defaults, config);
            }
        }
    }

    /// Merges configs into a company's, per data model, marking them overridden.
    pub(crate) fn update_company_configs(
        &mut self,
        org: i64,
        company_id: i64,
        configs: Vec<ModelConfig>,
    ) -> Result<(), ApiError> {
        self.company(org, company_id)?;
        let Some(company) = self.companies.get_mut(&company_id) else {
            return Err(ApiError::NotFound(format!("company {company_id}")));
        };
        for config in configs {
            upsert(
                &mut company.configs,
                ModelConfig {
                    is_overridden: true,
                    ..config
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (State, DateTime<Utc>) {
        let now = Utc::now();
        (State::new(&EmulatorConfig::for_tests(), now), now)
    }

    #[test]
    fn demo_tenants_are_isolated() {
        let (state, _) = state();
        let demo = state
            .organization_of(super::super::config::DEMO_API_KEY)
            .unwrap();
        let other = state
            .organization_of(super::super::config::OTHER_API_KEY)
            .unwrap();
        assert!(state.company(demo, 496).is_ok());
        assert!(matches!(
            state.company(other, 496),
            Err(ApiError::NotFound(_))
        ));
        assert_eq!(state.companies_of(demo).len(), 4);
    }

    #[test]
    fn history_is_final_and_listed_newest_first() {
        let (state, now) = state();
        let company = state.company(1, 496).unwrap();
        let syncs = state.company_syncs(company, JobType::Pull);
        assert_eq!(syncs.len(), 2);
        assert!(syncs[0].created_at > syncs[1].created_at);
        assert!(syncs.iter().all(|s| s.at(now).status.is_final()));
        assert_eq!(state.company_syncs(company, JobType::Push).len(), 1);
        assert!(state.last_synced(company, now).is_some());
    }

    #[test]
    fn second_sync_conflicts_until_first_finishes() {
        let (mut state, now) = state();
        let first = state
            .create_sync(1, 497, SyncRequest::default(), now)
            .unwrap()
            .id
            .clone();
        let again = state.create_sync(1, 497, SyncRequest::default(), now);
        assert!(matches!(again, Err(ApiError::Conflict(_))));
        let later = now + TimeDelta::seconds(60);
        assert_eq!(
            state.sync(1, &first).unwrap().at(later).status,
            SyncStatus::Success
        );
        assert!(
            state
                .create_sync(1, 497, SyncRequest::default(), later)
                .is_ok()
        );
    }

    #[test]
    fn cancel_fails_unfinished_jobs() {
        let (mut state, now) = state();
        let id = state
            .create_sync(1, 496, SyncRequest::default(), now)
            .unwrap()
            .id
            .clone();
        state.cancel_sync(1, &id, now).unwrap();
        let sync = state.sync(1, &id).unwrap().at(now);
        assert_eq!(sync.status, SyncStatus::Failed);
        assert!(matches!(
            state.cancel_sync(1, &id, now),
            Err(ApiError::Conflict(_))
        ));
        let retry = state.retry_sync(1, &id, now).unwrap();
        assert_eq!(retry.jobs.len(), 5);
        assert_eq!(retry.sync_type, SyncType::Manual);
    }
}
