//! The API's error outcomes and their envelope.
//!
//! Every error the emulator answers with, from a bad query parameter to an unknown route,
//! goes out as `{"error": {"status_code", "message", "request_id", "timestamp",
//! "platform_error"}}`, the one error shape the v4 reference shows.

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{Value, json};

use super::clock::iso;

/// Why a request to the REST API did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A malformed body or an invalid parameter.
    #[error("{0}")]
    BadRequest(String),
    /// The `api_key` header is missing or names no organization.
    #[error("missing or unknown api_key header")]
    Unauthorized,
    /// The thing does not exist, or belongs to another organization (deliberately the same).
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state of a sync.
    #[error("{0}")]
    Conflict(String),
    /// The key's request budget is spent; it refills after `retry_after` seconds.
    #[error("rate limit exceeded, retry after {retry_after} seconds")]
    RateLimited {
        /// Whole seconds until one request is allowed again.
        retry_after: u64,
    },
    /// No route matches the method and path.
    #[error("cannot {method} {path}")]
    NoRoute {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The emulator itself failed (a bug, not something the caller did).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 400 with the given message.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// A 409 with the given message.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    /// The HTTP status this error is sent with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) | Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<serde_json::Error> for ApiError {
    /// Rendering a response failed; that is the emulator's fault.
    fn from(err: serde_json::Error) -> Self {
        Self::Internal(Box::new(err))
    }
}

/// The error envelope for `status` with `message`, stamped with `request_id` and `now`.
pub(crate) fn error_body(
    status: StatusCode,
    message: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "error": {
            "status_code": status.as_u16(),
            "message": message,
            "request_id": request_id,
            "timestamp": iso(now),
            "platform_error": null,
        }
    })
}

/// A short message for a status code, used when a fault injects a status without a body.
pub(crate) fn default_message(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    reason.to_lowercase()
}
