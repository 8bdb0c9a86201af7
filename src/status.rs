//! The one place that decides the gRPC status of every failure.
//!
//! Each status carries `google.rpc.ErrorInfo` with a fixed domain, an UPPER_SNAKE reason and
//! metadata (the HTTP status and the upstream request id when there are any), plus
//! `RequestInfo`, `RetryInfo`, `ResourceInfo` or `BadRequest` where they help. Messages are
//! short and lowercase; upstream bodies and Rust error text go to the log, never to callers.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use tracing::{debug, warn};

use crate::upstream::{CredentialSource, Endpoint, ErrorBody, UpstreamError};

/// The `ErrorInfo.domain` of every error the gateway returns.
pub const DOMAIN: &str = "sync.commenda.io";

/// What an upstream call was about, so the status can name it.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The route called.
    pub endpoint: Endpoint,
    /// The resource the call addressed, for `ResourceInfo` on NOT_FOUND.
    pub resource: Option<Resource>,
    /// Whose key was used.
    pub credential: CredentialSource,
}

/// A resource named in `ResourceInfo`.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The proto type, e.g. `commenda.sync.v1.Sync`.
    pub kind: &'static str,
    /// Its id.
    pub name: String,
}

impl Resource {
    /// A sync, by id.
    pub fn sync(id: &str) -> Self {
        Self {
            kind: "commenda.sync.v1.Sync",
            name: id.to_owned(),
        }
    }

    /// A company, by id.
    pub fn company(id: i64) -> Self {
        Self {
            kind: "commenda.sync.v1.Company",
            name: id.to_string(),
        }
    }
}

/// The designed answer to one kind of failure, before details are attached.
struct Verdict {
    code: Code,
    reason: &'static str,
    message: String,
}

impl Verdict {
    fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }
}

/// Turns an upstream failure into the status the caller receives.
pub fn from_upstream(error: &UpstreamError, context: &CallContext) -> Status {
    log(error, context);
    let verdict = verdict(error, context);
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::from([("route".to_owned(), context.endpoint.name().to_owned())]);

    if let Some(id) = error.request_id() {
        metadata.insert("upstream_request_id".to_owned(), id.to_owned());
        details.set_request_info(id, "");
    }
    if let UpstreamError::Status {
        status,
        body,
        rate_limit,
    } = error
    {
        metadata.insert("http_status".to_owned(), status.to_string());
        add_status_details(
            &mut details,
            *status,
            body,
            rate_limit.retry_delay(*status),
            context,
        );
    }
    details.set_error_info(verdict.reason, DOMAIN, metadata);
    Status::with_error_details(verdict.code, verdict.message, details)
}

fn add_status_details(
    details: &mut ErrorDetails,
    status: u16,
    body: &ErrorBody,
    retry_delay: Option<Duration>,
    context: &CallContext,
) {
    match status {
        400 | 422 if !body.fields.is_empty() => {
            for (field, description) in &body.fields {
                details.add_bad_request_violation(field.clone(), description.clone());
            }
        }
        404 => {
            if let Some(resource) = &context.resource {
                details.set_resource_info(resource.kind, resource.name.clone(), "", "not found");
            }
        }
        429 | 502..=504 => {
            if let Some(delay) = retry_delay {
                details.set_retry_info(Some(delay));
            }
        }
        _ => {}
    }
}

fn verdict(error: &UpstreamError, context: &CallContext) -> Verdict {
    match error {
        UpstreamError::Status { status, body, .. } => status_verdict(*status, body, context),
        UpstreamError::Unreachable(_) => Verdict::new(
            Code::Unavailable,
            "UPSTREAM_UNREACHABLE",
            "upstream is unreachable",
        ),
        UpstreamError::DeadlineExceeded => Verdict::new(
            Code::DeadlineExceeded,
            "UPSTREAM_DEADLINE_EXCEEDED",
            "upstream did not answer before the deadline",
        ),
        UpstreamError::TimedOut(_) => Verdict::new(
            Code::Unavailable,
            "UPSTREAM_TIMEOUT",
            "upstream did not answer in time",
        ),
        UpstreamError::Malformed { .. } => Verdict::new(
            Code::Internal,
            "UPSTREAM_MALFORMED_RESPONSE",
            "upstream answered with a body the gateway could not decode",
        ),
        UpstreamError::Saturated => Verdict::new(
            Code::ResourceExhausted,
            "UPSTREAM_CONCURRENCY_LIMIT",
            "too many concurrent upstream requests for this API key",
        ),
        UpstreamError::TooLarge { .. } => Verdict::new(
            Code::Internal,
            "UPSTREAM_RESPONSE_TOO_LARGE",
            "upstream answer exceeds the gateway's size limit",
        ),
    }
}

/// The error table of the design, row by row.
fn status_verdict(status: u16, body: &ErrorBody, context: &CallContext) -> Verdict {
    let detail = |what: &str| match &body.message {
        Some(message) => format!("{what}: {message}"),
        None => what.to_owned(),
    };
    let own_key = context.credential == CredentialSource::Default;
    match status {
        400 | 422 => Verdict::new(
            Code::InvalidArgument,
            "UPSTREAM_INVALID_ARGUMENT",
            detail("invalid request"),
        ),
        401 | 403 if own_key => Verdict::new(
            Code::Unavailable,
            "GATEWAY_CREDENTIAL_REJECTED",
            "the gateway's default API key was rejected by the upstream",
        ),
        401 => Verdict::new(
            Code::Unauthenticated,
            "API_KEY_REJECTED",
            "API key rejected",
        ),
        403 => Verdict::new(
            Code::PermissionDenied,
            "PERMISSION_DENIED",
            detail("permission denied"),
        ),
        404 => Verdict::new(
            Code::NotFound,
            "RESOURCE_NOT_FOUND",
            not_found_message(context),
        ),
        409 if is_state_conflict(context.endpoint) => Verdict::new(
            Code::FailedPrecondition,
            "SYNC_STATE_CONFLICT",
            detail("the sync's state does not allow this"),
        ),
        409 => Verdict::new(
            Code::Aborted,
            "CONCURRENT_MODIFICATION",
            detail("conflicting change"),
        ),
        429 => Verdict::new(
            Code::ResourceExhausted,
            "UPSTREAM_RATE_LIMITED",
            "upstream rate limit reached for this API key",
        ),
        500 => Verdict::new(
            Code::Internal,
            "UPSTREAM_INTERNAL_ERROR",
            "upstream internal error",
        ),
        501 => Verdict::new(
            Code::Unimplemented,
            "UPSTREAM_UNIMPLEMENTED",
            "upstream does not support this",
        ),
        502..=504 => Verdict::new(
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
            "upstream is unavailable",
        ),
        _ => Verdict::new(
            Code::Unknown,
            "UPSTREAM_UNEXPECTED_STATUS",
            format!("upstream answered with unexpected status {status}"),
        ),
    }
}

/// A 409 from these routes means the sync's state forbids the operation (cancel a
/// finished sync, retry or start one while another runs); elsewhere it is a race.
fn is_state_conflict(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::CreateSync | Endpoint::CancelSync | Endpoint::RetrySync
    )
}

fn not_found_message(context: &CallContext) -> String {
    match &context.resource {
        Some(resource) if resource.kind.ends_with("Sync") => {
            format!("sync {} not found", resource.name)
        }
        Some(resource) => format!("company {} not found", resource.name),
        None => "not found".to_owned(),
    }
}

/// Each failure is logged once, here: surprises at warn, caller mistakes at debug.
fn log(error: &UpstreamError, context: &CallContext) {
    let route = context.endpoint.name();
    match error {
        UpstreamError::Status { status, .. } if *status < 500 && *status != 429 => {
            debug!(
                upstream.route = route,
                upstream.status = status,
                "upstream refused the call"
            );
        }
        UpstreamError::Status { status, .. } => {
            warn!(
                upstream.route = route,
                upstream.status = status,
                "upstream failed the call"
            );
        }
        other => warn!(upstream.route = route, error = %error_chain(other), "upstream call failed"),
    }
}

/// The error and its sources in one line, for the log only.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path, e.g. `configs[0].interval`.
    pub field: String,
    /// What is wrong, lowercase.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// INVALID_ARGUMENT for input the gateway refused itself, before any upstream call.
pub fn invalid_argument(violations: Vec<Violation>) -> Status {
    let message = match violations.as_slice() {
        [one] => format!("invalid {}: {}", one.field, one.description),
        _ => format!("{} invalid fields", violations.len()),
    };
    let fields = violations
        .iter()
        .map(|v| v.field.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut details = ErrorDetails::new();
    details.set_error_info(
        "INVALID_ARGUMENT",
        DOMAIN,
        HashMap::from([("fields".to_owned(), fields)]),
    );
    details.set_bad_request(
        violations
            .into_iter()
            .map(|v| FieldViolation::new(v.field, v.description))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// RESOURCE_EXHAUSTED for a call refused because the gateway is at its limit of
/// concurrent calls; refusing at once keeps latency bounded for the calls it serves.
pub fn overloaded() -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("GATEWAY_OVERLOADED", DOMAIN, HashMap::new());
    details.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(
        Code::ResourceExhausted,
        "the gateway is at its call limit",
        details,
    )
}

/// DEADLINE_EXCEEDED for a stream or wait whose caller's deadline ran out.
pub fn deadline_exceeded() -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("DEADLINE_EXCEEDED", DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::DeadlineExceeded,
        "the call's deadline passed",
        details,
    )
}

/// UNAUTHENTICATED for a call that carries no key while the gateway has no default one,
/// or requires callers to send their own.
pub fn missing_api_key() -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("API_KEY_MISSING", DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::Unauthenticated,
        "missing API key: send `authorization: Bearer <key>` or `x-api-key: <key>`",
        details,
    )
}

/// Whether a failed upstream call may succeed if repeated unchanged: the upstream was
/// unreachable, slow, rate limited, failing (5xx) or garbled. The watch pollers retry these
/// and show them as staleness; everything else ends a watch.
pub fn is_temporary(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Status { status, .. } => *status == 429 || *status >= 500,
        UpstreamError::Unreachable(_)
        | UpstreamError::DeadlineExceeded
        | UpstreamError::TimedOut(_)
        | UpstreamError::Malformed { .. }
        | UpstreamError::Saturated
        | UpstreamError::TooLarge { .. } => true,
    }
}

/// UNAVAILABLE for a watch whose upstream kept failing past the failure budget.
pub fn watch_gave_up(failures: u32) -> Status {
    let mut details = ErrorDetails::new();
    let metadata = HashMap::from([("consecutive_failures".to_owned(), failures.to_string())]);
    details.set_error_info("UPSTREAM_FAILING", DOMAIN, metadata);
    Status::with_error_details(
        Code::Unavailable,
        "upstream kept failing; watch stopped",
        details,
    )
}

/// UNAVAILABLE for watches cut short because the gateway is shutting down; retryable.
pub fn shutting_down() -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("GATEWAY_SHUTTING_DOWN", DOMAIN, HashMap::new());
    Status::with_error_details(Code::Unavailable, "gateway is shutting down", details)
}

/// UNAVAILABLE for a WaitSync that timed out before the sync could be read at all (the
/// upstream failing, or the key's request budget spent by other watches).
pub fn not_observed_yet() -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("SYNC_NOT_OBSERVED_YET", DOMAIN, HashMap::new());
    Status::with_error_details(Code::Unavailable, "sync not read yet; try again", details)
}

/// UNAVAILABLE for a watch whose poller stopped without a final state or an error.
pub fn watch_interrupted() -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("WATCH_INTERRUPTED", DOMAIN, HashMap::new());
    Status::with_error_details(Code::Unavailable, "watch interrupted", details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::RateLimitInfo;

    fn context(endpoint: Endpoint) -> CallContext {
        CallContext {
            endpoint,
            resource: Some(Resource::sync("s-1")),
            credential: CredentialSource::Caller,
        }
    }

    fn upstream(status: u16) -> UpstreamError {
        let body = Box::new(ErrorBody {
            request_id: Some("r-9".into()),
            ..ErrorBody::default()
        });
        let rate_limit = RateLimitInfo {
            retry_after: Some(Duration::from_secs(7)),
            ..Default::default()
        };
        UpstreamError::Status {
            status,
            body,
            rate_limit,
        }
    }

    #[test]
    fn every_row_of_the_table_has_its_code() {
        let rows = [
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::FailedPrecondition),
            (422, Code::InvalidArgument),
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (501, Code::Unimplemented),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (418, Code::Unknown),
        ];
        for (http, code) in rows {
            let status = from_upstream(&upstream(http), &context(Endpoint::CancelSync));
            assert_eq!(status.code(), code, "HTTP {http}");
            let info = status.get_details_error_info().expect("error info");
            assert_eq!(info.domain, DOMAIN);
            assert_eq!(info.metadata["http_status"], http.to_string());
            assert_eq!(info.metadata["upstream_request_id"], "r-9");
        }
    }

    #[test]
    fn conflict_outside_sync_state_routes_is_aborted() {
        let status = from_upstream(&upstream(409), &context(Endpoint::UpdateCompanySyncConfig));
        assert_eq!(status.code(), Code::Aborted);
    }

    #[test]
    fn rate_limit_carries_retry_info() {
        let status = from_upstream(&upstream(429), &context(Endpoint::GetSync));
        let retry = status.get_details_retry_info().expect("retry info");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));
    }

    #[test]
    fn rejected_default_key_is_not_blamed_on_the_caller() {
        let mut ctx = context(Endpoint::GetSync);
        ctx.credential = CredentialSource::Default;
        let status = from_upstream(&upstream(401), &ctx);
        assert_eq!(status.code(), Code::Unavailable);
    }
}
