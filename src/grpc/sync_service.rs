//! `commenda.sync.v1.SyncService`: the unary sync RPCs.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{Call, Gateway, Once};
use crate::convert;
use crate::pb::v1::{self as pb, sync_service_server::SyncService};
use crate::status::Violation;
use crate::upstream::{Endpoint, PathParam};
use crate::validate::{self, Violations};
use crate::watch::{WatchCompanySyncsStream, WatchSyncStream, Watches};

/// The SyncService handlers.
#[derive(Debug, Clone)]
pub struct SyncApi {
    pub(super) gateway: Arc<Gateway>,
    pub(super) watches: Watches,
}

impl SyncApi {
    /// Handlers over the shared gateway state and the shared pollers.
    pub fn new(gateway: Arc<Gateway>, watches: Watches) -> Self {
        Self { gateway, watches }
    }
}

/// The upstream `jobType` filter for a ListSyncs request; UNSPECIFIED means PULL, as
/// upstream.
pub(super) fn job_type_filter(raw: i32) -> Result<&'static str, Violation> {
    match pb::JobType::try_from(raw) {
        Ok(pb::JobType::Unspecified | pb::JobType::Pull) => Ok("PULL"),
        Ok(pb::JobType::Push) => Ok("PUSH"),
        Ok(pb::JobType::Custom) => Err(Violation::new("job_type", "must be PULL or PUSH")),
        Err(_) => Err(Violation::new("job_type", format!("unknown value {raw}"))),
    }
}

/// Checks the requested data models and renders the create-sync body.
fn create_body(request: &pb::CreateSyncRequest, violations: &mut Violations) -> Value {
    if request.data_models.len() > validate::MAX_ITEMS {
        violations.push(Violation::new(
            "data_models",
            "must hold at most 100 entries",
        ));
    }

    let mut seen = HashSet::new();
    let mut models = Vec::new();
    for (i, selection) in request.data_models.iter().enumerate() {
        let field = format!("data_models[{i}].data_model");
        let model = violations.check(validate::data_model(&field, &selection.data_model));
        if model.is_some_and(|m| !seen.insert(m)) {
            violations.push(Violation::new(field, "is listed twice"));
        }
        let mut entry = Map::from_iter([("dataModel".into(), json!(selection.data_model))]);
        if let Some(from) = &selection.sync_from {
            let field = format!("data_models[{i}].sync_from");
            if let Some(from) = violations.check(validate::timestamp(&field, from)) {
                entry.insert("syncFrom".into(), json!(from));
            }
        }
        models.push(Value::Object(entry));
    }

    let mut body = Map::new();
    if !models.is_empty() {
        body.insert("dataModelsToSync".into(), Value::Array(models));
    }
    if let Some(full) = request.full_sync {
        body.insert("fullSync".into(), json!(full));
    }
    if let Some(manual) = request.manual_sync {
        body.insert("isManualSync".into(), json!(manual));
    }
    Value::Object(body)
}

impl Gateway {
    /// Opens a page token for `scope`; an empty token means the first page.
    fn cursor(&self, scope: &str, token: &str) -> Result<Option<String>, Violation> {
        if token.is_empty() {
            return Ok(None);
        }
        let cursor = self.tokens.open(scope, token);
        cursor
            .map(Some)
            .map_err(|e| Violation::new("page_token", e.to_string()))
    }

    fn next_token(&self, scope: &str, next: Option<String>) -> String {
        next.map(|cursor| self.tokens.seal(scope, &cursor))
            .unwrap_or_default()
    }
}

#[tonic::async_trait]
impl SyncService for SyncApi {
    type WatchSyncStream = WatchSyncStream;

    async fn watch_sync(
        &self,
        request: Request<pb::WatchSyncRequest>,
    ) -> Result<Response<Self::WatchSyncStream>, Status> {
        self.watch(request).await
    }

    type WatchCompanySyncsStream = WatchCompanySyncsStream;

    async fn watch_company_syncs(
        &self,
        request: Request<pb::WatchCompanySyncsRequest>,
    ) -> Result<Response<Self::WatchCompanySyncsStream>, Status> {
        self.watch_company(request).await
    }

    async fn wait_sync(
        &self,
        request: Request<pb::WaitSyncRequest>,
    ) -> Result<Response<pb::WaitSyncResponse>, Status> {
        self.wait(request).await
    }

    #[instrument(skip_all, fields(company.id = request.get_ref().company_id))]
    async fn create_sync(
        &self,
        request: Request<pb::CreateSyncRequest>,
    ) -> Result<Response<pb::CreateSyncResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let message = request.into_inner();
        let mut violations = Violations::default();
        let company = violations.check(validate::company_id("company_id", message.company_id));
        let body = create_body(&message, &mut violations);
        let request_id =
            violations.check(validate::idempotency_id("request_id", &message.request_id));
        violations.finish()?;

        let request_id = request_id.flatten();
        let company = company.unwrap_or_default();
        let call = Call::new(Endpoint::CreateSync, PathParam::Company(company))
            .body(body)
            .idempotency_key(request_id);
        let write = async {
            let answer = self.gateway.call(&meta, call).await?;
            let (sync_id, data_models_syncing) = answer.decode(convert::init_sync)?;
            Ok(answer.keep(pb::CreateSyncResponse {
                sync_id,
                data_models_syncing,
            }))
        };
        let once = Once {
            method: "CreateSync",
            target: company.to_string(),
            request_id,
        };
        self.gateway
            .idempotent(&self.gateway.creates, &meta, once, &message, write)
            .await
    }

    #[instrument(skip_all, fields(company.id = request.get_ref().company_id))]
    async fn list_syncs(
        &self,
        request: Request<pb::ListSyncsRequest>,
    ) -> Result<Response<pb::ListSyncsResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let message = request.into_inner();
        let mut violations = Violations::default();
        let company = violations.check(validate::company_id("company_id", message.company_id));
        let limit = violations.check(validate::page_size("page_size", message.page_size));
        let job_type = violations.check(job_type_filter(message.job_type));
        let scope = format!(
            "list_syncs:{}:{}",
            message.company_id,
            job_type.unwrap_or_default()
        );
        let cursor = violations.check(self.gateway.cursor(&scope, &message.page_token));
        violations.finish()?;

        let param = PathParam::Company(company.unwrap_or_default());
        let mut call = Call::new(Endpoint::ListSyncs, param)
            .query("limit", limit.unwrap_or_default().to_string())
            .query("jobType", job_type.unwrap_or_default());
        if let Some(cursor) = cursor.flatten() {
            call = call.query("cursor", cursor);
        }
        let answer = self.gateway.call(&meta, call).await?;
        let page = answer.decode(convert::sync_page)?;
        Ok(answer.respond(pb::ListSyncsResponse {
            syncs: page.items,
            next_page_token: self.gateway.next_token(&scope, page.next),
            total_size: page.total,
        }))
    }

    #[instrument(skip_all, fields(sync.id = %request.get_ref().sync_id))]
    async fn get_sync(
        &self,
        request: Request<pb::GetSyncRequest>,
    ) -> Result<Response<pb::GetSyncResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let sync_id = sync_id(&request.get_ref().sync_id)?;

        let call = Call::new(Endpoint::GetSync, PathParam::Sync(sync_id));
        let answer = self.gateway.call(&meta, call).await?;
        let sync = answer.decode(convert::get_sync)?;
        Ok(answer.respond(pb::GetSyncResponse { sync: Some(sync) }))
    }

    #[instrument(skip_all, fields(sync.id = %request.get_ref().sync_id))]
    async fn list_sync_jobs(
        &self,
        request: Request<pb::ListSyncJobsRequest>,
    ) -> Result<Response<pb::ListSyncJobsResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let message = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(validate::resource_id("sync_id", &message.sync_id));
        let limit = violations.check(validate::page_size("page_size", message.page_size));
        let scope = format!("list_sync_jobs:{}", message.sync_id);
        let cursor = violations.check(self.gateway.cursor(&scope, &message.page_token));
        violations.finish()?;

        let param = PathParam::Sync(id.unwrap_or_default().to_owned());
        let mut call = Call::new(Endpoint::ListSyncJobs, param)
            .query("limit", limit.unwrap_or_default().to_string());
        if let Some(cursor) = cursor.flatten() {
            call = call.query("cursor", cursor);
        }
        let answer = self.gateway.call(&meta, call).await?;
        let page = answer.decode(convert::job_page)?;
        Ok(answer.respond(pb::ListSyncJobsResponse {
            jobs: page.items,
            next_page_token: self.gateway.next_token(&scope, page.next),
            total_size: page.total,
        }))
    }

    #[instrument(skip_all, fields(sync.id = %request.get_ref().sync_id))]
    async fn cancel_sync(
        &self,
        request: Request<pb::CancelSyncRequest>,
    ) -> Result<Response<pb::CancelSyncResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let message = request.get_ref();
        let (sync_id, request_id) = sync_write(&message.sync_id, &message.request_id)?;

        let call = Call::new(Endpoint::CancelSync, PathParam::Sync(sync_id.clone()))
            .idempotency_key(request_id);
        let write = async {
            let answer = self.gateway.call(&meta, call).await?;
            Ok(answer.keep(pb::CancelSyncResponse {}))
        };
        let once = Once {
            method: "CancelSync",
            target: sync_id,
            request_id,
        };
        self.gateway
            .idempotent(&self.gateway.cancels, &meta, once, message, write)
            .await
    }

    #[instrument(skip_all, fields(sync.id = %request.get_ref().sync_id))]
    async fn retry_sync(
        &self,
        request: Request<pb::RetrySyncRequest>,
    ) -> Result<Response<pb::RetrySyncResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let message = request.get_ref();
        let (sync_id, request_id) = sync_write(&message.sync_id, &message.request_id)?;

        let call = Call::new(Endpoint::RetrySync, PathParam::Sync(sync_id.clone()))
            .idempotency_key(request_id);
        let write = async {
            let answer = self.gateway.call(&meta, call).await?;
            let (sync_id, data_models_syncing) = answer.decode(convert::init_sync)?;
            Ok(answer.keep(pb::RetrySyncResponse {
                sync_id,
                data_models_syncing,
            }))
        };
        let once = Once {
            method: "RetrySync",
            target: sync_id,
            request_id,
        };
        self.gateway
            .idempotent(&self.gateway.retries, &meta, once, message, write)
            .await
    }
}

/// Validates the `sync_id` and `request_id` fields of a write to one sync.
fn sync_write<'a>(sync_id: &str, request_id: &'a str) -> Result<(String, Option<&'a str>), Status> {
    let mut violations = Violations::default();
    let sync_id = violations.check(validate::resource_id("sync_id", sync_id));
    let request_id = violations.check(validate::idempotency_id("request_id", request_id));
    violations.finish()?;
    Ok((sync_id.unwrap_or_default().to_owned(), request_id.flatten()))
}

/// Validates the `sync_id` field of a single-sync request.
pub(super) fn sync_id(raw: &str) -> Result<String, Status> {
    validate::resource_id("sync_id", raw)
        .map(str::to_owned)
        .map_err(|violation| crate::status::invalid_argument(vec![violation]))
}
