//! `commenda.sync.v1.SyncConfigService`: reads and writes of the sync configuration.

use std::sync::Arc;

use serde_json::{Value, json};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{Call, Gateway};
use crate::convert;
use crate::pb::v1::{self as pb, sync_config_service_server::SyncConfigService};
use crate::status::Violation;
use crate::upstream::{Endpoint, PathParam};
use crate::validate::{self, Violations};

/// The SyncConfigService handlers.
#[derive(Debug, Clone)]
pub struct SyncConfigApi {
    gateway: Arc<Gateway>,
}

impl SyncConfigApi {
    /// Handlers over the shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

/// Checks every write config and renders the upstream `configs` array.
fn write_configs(configs: &[pb::WriteSyncConfig], violations: &mut Violations) -> Value {
    if configs.is_empty() {
        violations.push(Violation::new("configs", "must hold at least one config"));
    }
    if configs.len() > validate::MAX_ITEMS {
        violations.push(Violation::new("configs", "must hold at most 100 configs"));
    }
    let rendered = configs.iter().enumerate().map(|(i, config)| {
        let field = |name: &str| format!("configs[{i}].{name}");
        violations.check(validate::data_model(
            &field("data_model"),
            &config.data_model,
        ));
        violations.check(validate::required_enum::<pb::IntegrationCategory>(
            &field("category"),
            config.category,
        ));
        violations.check(validate::required_enum::<pb::SyncFrequency>(
            &field("frequency"),
            config.frequency,
        ));
        if config.interval < 1 {
            violations.push(Violation::new(field("interval"), "must be at least 1"));
        }
        let from = config.sync_from.as_ref();
        let from =
            from.and_then(|ts| violations.check(validate::timestamp(&field("sync_from"), ts)));
        convert::write_config(config, from)
    });
    Value::Array(rendered.collect())
}

#[tonic::async_trait]
impl SyncConfigService for SyncConfigApi {
    #[instrument(skip_all)]
    async fn get_organization_sync_config(
        &self,
        request: Request<pb::GetOrganizationSyncConfigRequest>,
    ) -> Result<Response<pb::GetOrganizationSyncConfigResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let raw = request.get_ref().integration_type;
        let integration = validate::required_enum::<pb::IntegrationType>("integration_type", raw)
            .map_err(|violation| crate::status::invalid_argument(vec![violation]))?;

        let name = convert::upstream_name(integration.as_str_name(), "INTEGRATION_TYPE_");
        let call = Call::new(Endpoint::GetOrganizationSyncConfig, PathParam::None)
            .query("integration_type", name);
        let answer = self.gateway.call(&meta, call).await?;
        let configs = answer.decode(convert::sync_configs)?;
        Ok(answer.respond(pb::GetOrganizationSyncConfigResponse { configs }))
    }

    #[instrument(skip_all)]
    async fn update_organization_sync_config(
        &self,
        request: Request<pb::UpdateOrganizationSyncConfigRequest>,
    ) -> Result<Response<pb::UpdateOrganizationSyncConfigResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let message = request.get_ref();
        let mut violations = Violations::default();
        let configs = write_configs(&message.configs, &mut violations);
        violations.finish()?;

        let body = json!({ "configs": configs, "propagate": message.propagate });
        let call = Call::new(Endpoint::UpdateOrganizationSyncConfig, PathParam::None).body(body);
        let answer = self.gateway.call(&meta, call).await?;
        Ok(answer.respond(pb::UpdateOrganizationSyncConfigResponse {}))
    }

    #[instrument(skip_all, fields(company.id = request.get_ref().company_id))]
    async fn update_company_sync_config(
        &self,
        request: Request<pb::UpdateCompanySyncConfigRequest>,
    ) -> Result<Response<pb::UpdateCompanySyncConfigResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let message = request.get_ref();
        let mut violations = Violations::default();
        let company = violations.check(validate::company_id("company_id", message.company_id));
        let configs = write_configs(&message.configs, &mut violations);
        violations.finish()?;

        let param = PathParam::Company(company.unwrap_or_default());
        let call =
            Call::new(Endpoint::UpdateCompanySyncConfig, param).body(json!({ "configs": configs }));
        let answer = self.gateway.call(&meta, call).await?;
        Ok(answer.respond(pb::UpdateCompanySyncConfigResponse {}))
    }
}
