//! The one table of REST routes the gateway calls.
//!
//! Three paths are not in the public reference (get one sync, list jobs, cancel); they are
//! marked `inferred` so that a correction is a one-line change here.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;

/// Every byte outside `A-Z a-z 0-9 - _` is encoded, so no id can add a path segment, a
/// query or a fragment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// One REST operation of the upstream API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /core/companies/{company_id}/syncs`.
    CreateSync,
    /// `GET /core/companies/{company_id}/syncs`.
    ListSyncs,
    /// `GET /core/syncs/{sync_id}` (inferred).
    GetSync,
    /// `GET /core/syncs/{sync_id}/jobs` (inferred).
    ListSyncJobs,
    /// `POST /core/syncs/{sync_id}/cancel` (inferred).
    CancelSync,
    /// `POST /core/syncs/{sync_id}/retry`.
    RetrySync,
    /// `GET /core/organizations/sync-config`.
    GetOrganizationSyncConfig,
    /// `POST /core/organizations/sync-config`.
    UpdateOrganizationSyncConfig,
    /// `PATCH /core/companies/{company_id}/sync-config`.
    UpdateCompanySyncConfig,
}

/// The route table: method, path template, whether the path is inferred, and whether a
/// success carries a `data` object (mutations without payload answer `{request_id}` only).
struct RouteSpec {
    method: Method,
    template: &'static str,
    inferred: bool,
    has_data: bool,
}

impl Endpoint {
    fn spec(self) -> RouteSpec {
        use Endpoint::*;
        let (method, template, inferred, has_data) = match self {
            CreateSync => (
                Method::POST,
                "/core/companies/{company_id}/syncs",
                false,
                true,
            ),
            ListSyncs => (
                Method::GET,
                "/core/companies/{company_id}/syncs",
                false,
                true,
            ),
            GetSync => (Method::GET, "/core/syncs/{sync_id}", true, true),
            ListSyncJobs => (Method::GET, "/core/syncs/{sync_id}/jobs", true, true),
            CancelSync => (Method::POST, "/core/syncs/{sync_id}/cancel", true, false),
            RetrySync => (Method::POST, "/core/syncs/{sync_id}/retry", false, true),
            GetOrganizationSyncConfig => {
                (Method::GET, "/core/organizations/sync-config", false, true)
            }
            UpdateOrganizationSyncConfig => (
                Method::POST,
                "/core/organizations/sync-config",
                false,
                false,
            ),
            UpdateCompanySyncConfig => (
                Method::PATCH,
                "/core/companies/{company_id}/sync-config",
                false,
                false,
            ),
        };
        RouteSpec {
            method,
            template,
            inferred,
            has_data,
        }
    }

    /// The HTTP method.
    pub fn method(self) -> Method {
        self.spec().method
    }

    /// The path template, as written in the reference, for logs and metrics.
    pub fn template(self) -> &'static str {
        self.spec().template
    }

    /// Whether the path is a guess (no public reference page documents it).
    pub fn is_inferred(self) -> bool {
        self.spec().inferred
    }

    /// Whether a success body carries `data`; otherwise it is `{request_id}` only.
    pub fn has_data(self) -> bool {
        self.spec().has_data
    }

    /// Only reads may be repeated without the caller's say.
    pub fn is_read(self) -> bool {
        self.method() == Method::GET
    }

    /// A short stable name for logs and metrics.
    pub fn name(self) -> &'static str {
        use Endpoint::*;
        match self {
            CreateSync => "create_sync",
            ListSyncs => "list_syncs",
            GetSync => "get_sync",
            ListSyncJobs => "list_sync_jobs",
            CancelSync => "cancel_sync",
            RetrySync => "retry_sync",
            GetOrganizationSyncConfig => "get_organization_sync_config",
            UpdateOrganizationSyncConfig => "update_organization_sync_config",
            UpdateCompanySyncConfig => "update_company_sync_config",
        }
    }

    /// The path below the base URL with the parameter filled in and encoded.
    pub fn path(self, param: &PathParam) -> String {
        let template = self.template();
        match param {
            PathParam::None => template.to_owned(),
            PathParam::Company(id) => template.replace("{company_id}", &id.to_string()),
            PathParam::Sync(id) => {
                let encoded = utf8_percent_encode(id, PATH_SEGMENT).to_string();
                template.replace("{sync_id}", &encoded)
            }
        }
    }
}

/// The one path parameter a route takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathParam {
    /// The route has no parameter.
    None,
    /// A company id, already validated as positive.
    Company(i64),
    /// A sync id, already validated; encoded again as a second line of defence.
    Sync(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_ids_cannot_escape_their_segment() {
        let path = Endpoint::GetSync.path(&PathParam::Sync("../companies/1?x=y#z".into()));
        assert_eq!(path, "/core/syncs/%2E%2E%2Fcompanies%2F1%3Fx%3Dy%23z");
    }

    #[test]
    fn company_ids_fill_the_template() {
        let path = Endpoint::UpdateCompanySyncConfig.path(&PathParam::Company(496));
        assert_eq!(path, "/core/companies/496/sync-config");
        assert_eq!(Endpoint::UpdateCompanySyncConfig.method(), Method::PATCH);
    }

    #[test]
    fn inferred_paths_are_marked() {
        let inferred: Vec<_> = [
            Endpoint::CreateSync,
            Endpoint::ListSyncs,
            Endpoint::GetSync,
            Endpoint::ListSyncJobs,
            Endpoint::CancelSync,
            Endpoint::RetrySync,
        ]
        .into_iter()
        .filter(|e| e.is_inferred())
        .collect();
        assert_eq!(
            inferred,
            [
                Endpoint::GetSync,
                Endpoint::ListSyncJobs,
                Endpoint::CancelSync
            ]
        );
    }
}
