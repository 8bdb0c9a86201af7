//! The `/v4` routes: which route a request names, and what each one does.
//!
//! Handlers are plain functions over the state and the instant of the request. They check
//! their input first (400), then look things up in the caller's organization (404), then
//! check the state allows the change (409).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{Value, json};

use super::catalog;
use super::errors::ApiError;
use super::state::{JobType, ModelConfig, ScopeAccess, State, SyncRequest, SyncType};
use super::views::{self, ConfigView, SyncView};

/// One operation of the emulated REST API. The string names (see [`Route::as_str`]) are
/// stable: the admin API and logs use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `POST /v4/core/companies/{company_id}/syncs`
    CreateSync,
    /// `GET /v4/core/companies/{company_id}/syncs`
    ListSyncs,
    /// `GET /v4/core/syncs/{sync_id}`
    GetSync,
    /// `GET /v4/core/syncs/{sync_id}/jobs`
    ListSyncJobs,
    /// `POST /v4/core/syncs/{sync_id}/cancel`
    CancelSync,
    /// `POST /v4/core/syncs/{sync_id}/retry`
    RetrySync,
    /// `GET /v4/core/organizations/sync-config`
    GetOrganizationSyncConfig,
    /// `POST /v4/core/organizations/sync-config`
    UpdateOrganizationSyncConfig,
    /// `PATCH /v4/core/companies/{company_id}/sync-config`
    UpdateCompanySyncConfig,
    /// `GET /v4/core/companies/{company_id}`
    GetCompany,
    /// `GET /v4/core/companies`
    ListCompanies,
}

impl Route {
    /// Every route, in the order above.
    pub const ALL: [Route; 11] = [
        Self::CreateSync,
        Self::ListSyncs,
        Self::GetSync,
        Self::ListSyncJobs,
        Self::CancelSync,
        Self::RetrySync,
        Self::GetOrganizationSyncConfig,
        Self::UpdateOrganizationSyncConfig,
        Self::UpdateCompanySyncConfig,
        Self::GetCompany,
        Self::ListCompanies,
    ];

    /// The stable snake_case name, e.g. `create_sync`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateSync => "create_sync",
            Self::ListSyncs => "list_syncs",
            Self::GetSync => "get_sync",
            Self::ListSyncJobs => "list_sync_jobs",
            Self::CancelSync => "cancel_sync",
            Self::RetrySync => "retry_sync",
            Self::GetOrganizationSyncConfig => "get_organization_sync_config",
            Self::UpdateOrganizationSyncConfig => "update_organization_sync_config",
            Self::UpdateCompanySyncConfig => "update_company_sync_config",
            Self::GetCompany => "get_company",
            Self::ListCompanies => "list_companies",
        }
    }

    /// The status of a successful response: 201 for the routes that create a sync.
    pub(crate) fn success_status(self) -> StatusCode {
        match self {
            Self::CreateSync | Self::RetrySync => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not one of [`Route::as_str`]'s names.
#[derive(Debug, thiserror::Error)]
#[error("unknown route name {0:?}")]
pub struct UnknownRoute(pub String);

impl FromStr for Route {
    type Err = UnknownRoute;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|route| route.as_str() == name)
            .ok_or_else(|| UnknownRoute(name.to_owned()))
    }
}

/// A request matched to a route, with its path parameter (company or sync id) decoded.
#[derive(Debug)]
pub(crate) struct Matched {
    pub(crate) route: Route,
    pub(crate) param: Option<String>,
}

/// Matches a method and path against the routes under `/v4/core`.
pub(crate) fn resolve(method: &Method, path: &str) -> Option<Matched> {
    let rest = path.strip_prefix("/v4/core/")?;
    let segments: Vec<String> = rest
        .trim_end_matches('/')
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (route, param) = match (method.as_str(), parts.as_slice()) {
        ("GET", ["companies"]) => (Route::ListCompanies, None),
        ("GET", ["companies", id]) => (Route::GetCompany, Some(*id)),
        ("POST", ["companies", id, "syncs"]) => (Route::CreateSync, Some(*id)),
        ("GET", ["companies", id, "syncs"]) => (Route::ListSyncs, Some(*id)),
        ("PATCH", ["companies", id, "sync-config"]) => (Route::UpdateCompanySyncConfig, Some(*id)),
        ("GET", ["syncs", id]) => (Route::GetSync, Some(*id)),
        ("GET", ["syncs", id, "jobs"]) => (Route::ListSyncJobs, Some(*id)),
        ("POST", ["syncs", id, "cancel"]) => (Route::CancelSync, Some(*id)),
        ("POST", ["syncs", id, "retry"]) => (Route::RetrySync, Some(*id)),
        ("GET", ["organizations", "sync-config"]) => (Route::GetOrganizationSyncConfig, None),
        ("POST", ["organizations", "sync-config"]) => (Route::UpdateOrganizationSyncConfig, None),
        _ => return None,
    };
    Some(Matched {
        route,
        param: param.filter(|p| !p.is_empty()).map(str::to_owned),
    })
}

/// What a successful handler returns: the status and, for most routes, a `data` payload
/// (`None` means the body is just `{"request_id"}`).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) data: Option<Value>,
}

impl Reply {
    fn ok(data: Value) -> Self {
        Self {
            status: StatusCode::OK,
            data: Some(data),
        }
    }

    fn created(data: Value) -> Self {
        Self {
            status: StatusCode::CREATED,
            data: Some(data),
        }
    }

    fn empty() -> Self {
        Self {
            status: StatusCode::OK,
            data: None,
        }
    }
}

/// Everything a handler needs to know about one request.
pub(crate) struct Call<'a> {
    pub(crate) org: i64,
    pub(crate) now: DateTime<Utc>,
    pub(crate) param: Option<&'a str>,
    pub(crate) query: &'a [(String, String)],
    pub(crate) body: &'a [u8],
}

impl Call<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn param(&self) -> &str {
        self.param.unwrap_or_default()
    }

    fn company_id(&self) -> Result<i64, ApiError> {
        positive_id(self.param(), "company_id")
    }
}

/// Runs the handler of `route`.
pub(crate) fn handle(route: Route, state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    match route {
        Route::CreateSync => create_sync(state, call),
        Route::ListSyncs => list_syncs(state, call),
        Route::GetSync => get_sync(state, call),
        Route::ListSyncJobs => list_sync_jobs(state, call),
        Route::CancelSync => cancel_sync(state, call),
        Route::RetrySync => retry_sync(state, call),
        Route::GetOrganizationSyncConfig => get_org_config(state, call),
        Route::UpdateOrganizationSyncConfig => update_org_config(state, call),
        Route::UpdateCompanySyncConfig => update_company_config(state, call),
        Route::GetCompany => get_company(state, call),
        Route::ListCompanies => list_companies(state, call),
    }
}

fn create_sync(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let company_id = call.company_id()?;
    let request = parse_sync_request(call.body)?;
    let sync = state.create_sync(call.org, company_id, request, call.now)?;
    Ok(Reply::created(views::init_sync(sync)))
}

fn list_syncs(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let company_id = call.company_id()?;
    let limit = limit(call.query("limit"), 20)?;
    let job_type = job_type(call.query("jobType"))?;
    let company = state.company(call.org, company_id)?;
    let syncs = state.company_syncs(company, job_type);
    let page = page_after(&syncs, call.query("cursor"), limit, |s| s.id.as_str())?;
    let items: Vec<SyncView<'_>> = page
        .items
        .iter()
        .map(|s| SyncView::new(s, call.now))
        .collect();
    let next = page.next.map(|s| s.id.clone());
    Ok(Reply::ok(
        json!({ "syncs": items, "count": syncs.len(), "next": next }),
    ))
}

fn get_sync(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let sync = state.sync(call.org, call.param())?;
    Ok(Reply::ok(json!({ "sync": SyncView::new(sync, call.now) })))
}

fn list_sync_jobs(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let limit = limit(call.query("limit"), 20)?;
    let sync = state.sync(call.org, call.param())?;
    let page = page_after(&sync.jobs, call.query("cursor"), limit, |job| {
        job.id.as_str()
    })?;
    let next = page.next.map(|job| job.id.clone());
    let jobs = views::jobs(sync, call.now);
    let items: Vec<_> = jobs
        .into_iter()
        .skip(page.start)
        .take(page.items.len())
        .collect();
    Ok(Reply::ok(
        json!({ "jobs": items, "count": sync.jobs.len(), "next": next }),
    ))
}

fn cancel_sync(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    state.cancel_sync(call.org, call.param(), call.now)?;
    Ok(Reply::empty())
}

fn retry_sync(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let sync = state.retry_sync(call.org, call.param(), call.now)?;
    Ok(Reply::created(views::init_sync(sync)))
}

fn get_org_config(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let Some(integration) = call.query("integration_type") else {
        return Err(ApiError::bad_request("integration_type is required"));
    };
    let Some(category) = catalog::category_of(integration) else {
        return Err(ApiError::bad_request(format!(
            "unknown integration_type {integration:?}"
        )));
    };
    let configs: Vec<ConfigView<'_>> = state
        .org_configs(call.org, category)
        .into_iter()
        .map(ConfigView::new)
        .collect();
    Ok(Reply::ok(json!({ "syncConfig": configs })))
}

fn update_org_config(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let body = parse_config_write(call.body)?;
    let configs = validate_configs(&body.configs)?;
    state.update_org_configs(call.org, configs, body.propagate.unwrap_or(false));
    Ok(Reply::empty())
}

fn update_company_config(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let company_id = call.company_id()?;
    let body = parse_config_write(call.body)?;
    let configs = validate_configs(&body.configs)?;
    state.update_company_configs(call.org, company_id, configs)?;
    Ok(Reply::empty())
}

fn get_company(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let company = state.company(call.org, call.company_id()?)?;
    Ok(Reply::ok(
        json!({ "company": views::company(state, company, call.now) }),
    ))
}

fn list_companies(state: &mut State, call: &Call<'_>) -> Result<Reply, ApiError> {
    let limit = limit(call.query("limit"), 50)?;
    let cursor = call
        .query("cursor")
        .map(|c| positive_id(c, "cursor"))
        .transpose()?;
    let syncing = sync_state(call.query("syncState"))?;
    let matching: Vec<_> = state
        .companies_of(call.org)
        .into_iter()
        .filter(|c| syncing.is_none_or(|want| state.has_active_sync(c, call.now) == want))
        .collect();
    let after: Vec<_> = matching
        .iter()
        .filter(|c| cursor.is_none_or(|id| c.id < id))
        .collect();
    let page = &after[..limit.min(after.len())];
    let next = if after.len() > page.len() {
        page.last().map(|c| c.id)
    } else {
        None
    };
    let items: Vec<Value> = page
        .iter()
        .map(|c| views::company(state, c, call.now))
        .collect();
    Ok(Reply::ok(
        json!({ "companies": items, "count": matching.len(), "next": next }),
    ))
}

/// One page of a list, and the cursor for the next page.
struct Page<'a, T> {
    items: &'a [T],
    /// The last item of the page when more items follow it.
    next: Option<&'a T>,
    /// Index of the page's first item in the whole list.
    start: usize,
}

/// The `limit` items after the item whose id is `cursor` (from the start without one).
fn page_after<'a, T>(
    items: &'a [T],
    cursor: Option<&str>,
    limit: usize,
    id: impl Fn(&T) -> &str,
) -> Result<Page<'a, T>, ApiError> {
    let start = match cursor {
        None => 0,
        Some(cursor) => match items.iter().position(|item| id(item) == cursor) {
            Some(position) => position + 1,
            None => return Err(ApiError::bad_request(format!("unknown cursor {cursor:?}"))),
        },
    };
    let rest = &items[start..];
    let page = &rest[..limit.min(rest.len())];
    let next = if rest.len() > page.len() {
        page.last()
    } else {
        None
    };
    Ok(Page {
        items: page,
        next,
        start,
    })
}

/// Parses `limit`: absent gives `default`; otherwise an integer from 1 to 100.
fn limit(raw: Option<&str>, default: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<usize>() {
        Ok(limit @ 1..=100) => Ok(limit),
        _ => Err(ApiError::bad_request(
            "limit must be an integer from 1 to 100",
        )),
    }
}

/// Parses `jobType`: `PULL` (the default) or `PUSH`.
fn job_type(raw: Option<&str>) -> Result<JobType, ApiError> {
    match raw {
        None | Some("PULL") => Ok(JobType::Pull),
        Some("PUSH") => Ok(JobType::Push),
        Some(other) => Err(ApiError::bad_request(format!("unknown jobType {other:?}"))),
    }
}

/// Parses `syncState` into "wants companies with an active sync": `SYNCING` or `IDLE`.
fn sync_state(raw: Option<&str>) -> Result<Option<bool>, ApiError> {
    match raw {
        None => Ok(None),
        Some("IDLE") => Ok(Some(false)),
        Some("SYNCING") => Ok(Some(true)),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown syncState {other:?}"
        ))),
    }
}

/// Parses a positive integer id (company ids, company cursors).
fn positive_id(raw: &str, name: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id >= 1 => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be a positive integer"
        ))),
    }
}

/// Parses a JSON body; an empty body (or `null`) reads as `T::default()`.
fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("request body is not valid JSON: {err}")))?;
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value)
        .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))
}

/// The create-sync body (camelCase; every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateSyncBody {
    data_models_to_sync: Option<Vec<ModelToSync>>,
    full_sync: Option<bool>,
    is_manual_sync: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelToSync {
    data_model: String,
    sync_from: Option<String>,
}

fn parse_sync_request(body: &[u8]) -> Result<SyncRequest, ApiError> {
    let body: CreateSyncBody = parse_body(body)?;
    let mut models: Vec<String> = Vec::new();
    for (n, entry) in body
        .data_models_to_sync
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        check_data_model(
            &entry.data_model,
            &format!("dataModelsToSync[{n}].dataModel"),
        )?;
        if let Some(from) = &entry.sync_from {
            check_iso(from, &format!("dataModelsToSync[{n}].syncFrom"))?;
        }
        if !models.contains(&entry.data_model) {
            models.push(entry.data_model);
        }
    }
    let sync_type = match body.is_manual_sync {
        Some(false) => SyncType::AutoSync,
        _ => SyncType::Manual,
    };
    let full_sync = body.full_sync.unwrap_or(false);
    Ok(SyncRequest {
        models,
        full_sync,
        sync_type: Some(sync_type),
    })
}

/// The body of both sync-config writes (`propagate` only matters for the organization).
#[derive(Debug, Default, Deserialize)]
struct ConfigWriteBody {
    configs: Option<Vec<WriteConfig>>,
    propagate: Option<bool>,
}

/// A WriteSyncConfigModel (snake_case; upstream §4.4).
#[derive(Debug, Deserialize)]
struct WriteConfig {
    data_model: String,
    category: String,
    enabled: bool,
    frequency: String,
    interval: i64,
    scope_access: ScopeAccess,
    sync_from: Option<String>,
}

fn parse_config_write(body: &[u8]) -> Result<ConfigWriteBody, ApiError> {
    parse_body(body)
}

fn validate_configs(configs: &Option<Vec<WriteConfig>>) -> Result<Vec<ModelConfig>, ApiError> {
    let configs = configs.as_deref().unwrap_or_default();
    if configs.is_empty() {
        return Err(ApiError::bad_request(
            "configs must list at least one sync config",
        ));
    }
    configs
        .iter()
        .enumerate()
        .map(|(n, config)| validate_config(n, config))
        .collect()
}

fn validate_config(n: usize, config: &WriteConfig) -> Result<ModelConfig, ApiError> {
    check_data_model(&config.data_model, &format!("configs[{n}].data_model"))?;
    if !catalog::CATEGORIES.contains(&config.category.as_str()) {
        let message = format!("configs[{n}].category must be ACCOUNTING, PAYMENTS or ECOMMERCE");
        return Err(ApiError::bad_request(message));
    }
    if !catalog::FREQUENCIES.contains(&config.frequency.as_str()) {
        let message = format!(
            "configs[{n}].frequency must be one of {:?}",
            catalog::FREQUENCIES
        );
        return Err(ApiError::bad_request(message));
    }
    if config.interval < 1 {
        return Err(ApiError::bad_request(format!(
            "configs[{n}].interval must be at least 1"
        )));
    }
    let sync_from = match &config.sync_from {
        Some(from) => Some(check_iso(from, &format!("configs[{n}].sync_from"))?),
        None => None,
    };
    Ok(ModelConfig {
        data_model: config.data_model.clone(),
        category: config.category.clone(),
        enabled: config.enabled,
        scope: config.scope_access,
        frequency: config.frequency.clone(),
        interval: config.interval,
        sync_from,
        is_overridden: false,
    })
}

fn check_data_model(name: &str, field: &str) -> Result<(), ApiError> {
    if catalog::is_data_model(name) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "{field} {name:?} is not a data model name"
    )))
}

/// Checks an ISO 8601 time and returns it normalized (UTC, milliseconds, `Z`).
fn check_iso(text: &str, field: &str) -> Result<String, ApiError> {
    catalog::parse_iso(text)
        .map(super::clock::iso)
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be an ISO 8601 time")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_route() {
        let cases = [
            ("POST", "/v4/core/companies/496/syncs", Route::CreateSync),
            ("GET", "/v4/core/companies/496/syncs", Route::ListSyncs),
            ("GET", "/v4/core/syncs/abc", Route::GetSync),
            ("GET", "/v4/core/syncs/abc/jobs", Route::ListSyncJobs),
            ("POST", "/v4/core/syncs/abc/cancel", Route::CancelSync),
            ("POST", "/v4/core/syncs/abc/retry", Route::RetrySync),
            (
                "GET",
                "/v4/core/organizations/sync-config",
                Route::GetOrganizationSyncConfig,
            ),
            (
                "POST",
                "/v4/core/organizations/sync-config",
                Route::UpdateOrganizationSyncConfig,
            ),
            (
                "PATCH",
                "/v4/core/companies/1/sync-config",
                Route::UpdateCompanySyncConfig,
            ),
            ("GET", "/v4/core/companies/1", Route::GetCompany),
            ("GET", "/v4/core/companies", Route::ListCompanies),
        ];
        for (method, path, route) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                resolve(&method, path).map(|m| m.route),
                Some(route),
                "{path}"
            );
        }
        assert!(resolve(&Method::DELETE, "/v4/core/syncs/abc").is_none());
        assert!(resolve(&Method::GET, "/v3/core/companies").is_none());
    }

    #[test]
    fn path_ids_are_percent_decoded() {
        let matched = resolve(&Method::GET, "/v4/core/syncs/a%2Fb").unwrap();
        assert_eq!(matched.param.as_deref(), Some("a/b"));
    }

    #[test]
    fn route_names_round_trip() {
        for route in Route::ALL {
            assert_eq!(route.as_str().parse::<Route>().unwrap(), route);
        }
        assert!("nope".parse::<Route>().is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None, 20).unwrap(), 20);
        assert_eq!(limit(Some("100"), 20).unwrap(), 100);
        assert!(limit(Some("0"), 20).is_err());
        assert!(limit(Some("101"), 20).is_err());
        assert!(limit(Some("ten"), 20).is_err());
    }

    #[test]
    fn paging_after_a_cursor() {
        let items = ["a", "b", "c", "d", "e"];
        let page = page_after(&items, Some("b"), 2, |s| s).unwrap();
        assert_eq!(page.items, ["c", "d"]);
        assert_eq!(page.next, Some(&"d"));
        let last = page_after(&items, Some("d"), 2, |s| s).unwrap();
        assert_eq!(last.items, ["e"]);
        assert_eq!(last.next, None);
        assert!(page_after(&items, Some("x"), 2, |s| s).is_err());
    }
}
