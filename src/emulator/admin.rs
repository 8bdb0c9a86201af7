//! The admin HTTP API under `/__emulator`, for tests and tools outside the process.
//!
//! These paths cannot be mistaken for the REST API (which lives under `/v4`); they are not
//! rate limited, counted or logged, and they show API keys only as fingerprints.
//!
//! - `GET /__emulator/counters`, `DELETE /__emulator/counters` (also empties the log)
//! - `GET /__emulator/requests`
//! - `GET`, `POST`, `DELETE /__emulator/faults`
//! - `GET /__emulator/clock`, `POST /__emulator/clock/advance` with `{"ms": N}` and/or
//!   `{"seconds": N}`
//! - `POST /__emulator/companies/{company_id}/auto-sync`

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Shared;
use super::clock::iso;
use super::faults::{Fault, FaultKind, MAX_OVERSIZED_BYTES};
use super::lock;
use super::routes::Route;

/// The admin routes, to be nested under `/__emulator`.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/counters", get(counters).delete(reset_counters))
        .route("/requests", get(requests))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/companies/{company_id}/auto-sync", post(auto_sync))
        .fallback(not_found)
}

/// An admin request that could not be carried out; answered as `{"error": message}`.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no such admin path")]
    NotFound,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotFound => StatusCode::NOT_FOUND,
        };
        (status, axum::Json(json!({ "error": self.to_string() }))).into_response()
    }
}

async fn counters(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let snapshot = shared.counters.snapshot();
    let entries: Vec<Value> = snapshot
        .entries()
        .into_iter()
        .map(|e| {
            let route = e.route.as_str();
            json!({ "route": route, "key": e.key, "status": e.status, "count": e.count })
        })
        .collect();
    axum::Json(json!({ "total": snapshot.total(), "counters": entries }))
}

async fn reset_counters(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.counters.reset();
    StatusCode::NO_CONTENT
}

async fn requests(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let requests: Vec<Value> = shared
        .counters
        .requests()
        .into_iter()
        .map(|r| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .into_iter()
                .map(|(name, value)| (name, Value::String(value)))
                .collect();
            json!({
                "at": iso(r.at),
                "route": r.route.map(Route::as_str),
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "key": r.key_fingerprint,
                "headers": headers,
                "body": r.body,
                "status": r.status,
            })
        })
        .collect();
    axum::Json(json!({ "requests": requests }))
}

/// A fault as JSON: `kind` is one of `status`, `delay`, `malformed`, `truncated`,
/// `missing_data`, `oversized`, `drop`; `code`, `retry_after` and `body` go with `status`,
/// `ms` with `delay`, `bytes` with `oversized`.
#[derive(Debug, Default, Deserialize, Serialize)]
struct FaultSpec {
    route: Option<String>,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
    times: Option<u32>,
    probability: Option<f64>,
}

impl FaultSpec {
    fn from_fault(fault: &Fault) -> Self {
        let route = fault.route.map(|r| r.as_str().to_owned());
        let base = Self {
            route,
            times: fault.times,
            probability: fault.probability,
            ..Self::default()
        };
        match &fault.kind {
            FaultKind::Status {
                code,
                retry_after,
                body,
            } => Self {
                kind: "status".into(),
                code: Some(*code),
                retry_after: *retry_after,
                body: body.clone(),
                ..base
            },
            FaultKind::Delay(wait) => {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                Self {
                    kind: "delay".into(),
                    ms: Some(ms),
                    ..base
                }
            }
            FaultKind::Malformed => Self {
                kind: "malformed".into(),
                ..base
            },
            FaultKind::Truncated => Self {
                kind: "truncated".into(),
                ..base
            },
            FaultKind::MissingData => Self {
                kind: "missing_data".into(),
                ..base
            },
            FaultKind::Oversized(size) => Self {
                kind: "oversized".into(),
                bytes: Some(*size),
                ..base
            },
            FaultKind::Drop => Self {
                kind: "drop".into(),
                ..base
            },
        }
    }

    fn into_fault(self) -> Result<Fault, AdminError> {
        let bad = |message: &str| AdminError::BadRequest(message.to_owned());
        let route = match self.route.as_deref() {
            None | Some("all") => None,
            Some(name) => Some(name.parse::<Route>().map_err(|e| bad(&e.to_string()))?),
        };
        if self.probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(bad("probability must be between 0 and 1"));
        }
        let kind = match self.kind.as_str() {
            "status" => {
                let code = self.code.filter(|c| (100..=599).contains(c));
                let code = code.ok_or_else(|| bad("status faults need a code from 100 to 599"))?;
                FaultKind::Status {
                    code,
                    retry_after: self.retry_after,
                    body: self.body,
                }
            }
            "delay" => {
                let ms = self.ms.ok_or_else(|| bad("delay faults need ms"))?;
                FaultKind::Delay(Duration::from_millis(ms))
            }
            "malformed" => FaultKind::Malformed,
            "truncated" => FaultKind::Truncated,
            "missing_data" => FaultKind::MissingData,
            "oversized" => {
                let bytes = self.bytes.filter(|b| *b <= MAX_OVERSIZED_BYTES);
                FaultKind::Oversized(
                    bytes.ok_or_else(|| bad("oversized faults need bytes ≤ 256 MiB"))?,
                )
            }
            "drop" => FaultKind::Drop,
            other => {
                return Err(AdminError::BadRequest(format!(
                    "unknown fault kind {other:?}"
                )));
            }
        };
        Ok(Fault {
            route,
            kind,
            times: self.times,
            probability: self.probability,
        })
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body)
        .map_err(|err| AdminError::BadRequest(format!("invalid JSON: {err}")))
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let faults: Vec<FaultSpec> = shared
        .faults
        .list()
        .iter()
        .map(FaultSpec::from_fault)
        .collect();
    axum::Json(json!({ "faults": faults }))
}

async fn add_fault(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<FaultSpec>), AdminError> {
    let fault = parse::<FaultSpec>(&body)?.into_fault()?;
    let echo = FaultSpec::from_fault(&fault);
    tracing::info!(fault = ?fault, "emulator fault injected");
    shared.faults.add(fault);
    Ok((StatusCode::CREATED, axum::Json(echo)))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.faults.clear();
    StatusCode::NO_CONTENT
}

async fn clock(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(json!({ "now": iso(shared.clock.now()) }))
}

/// How far to move the clock; both fields add up.
#[derive(Debug, Deserialize)]
struct Advance {
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    seconds: u64,
}

async fn advance(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<axum::Json<Value>, AdminError> {
    let by = parse::<Advance>(&body)?;
    let by = Duration::from_millis(by.ms).saturating_add(Duration::from_secs(by.seconds));
    shared.clock.advance(by);
    Ok(axum::Json(json!({ "now": iso(shared.clock.now()) })))
}

async fn auto_sync(
    State(shared): State<Arc<Shared>>,
    Path(company_id): Path<String>,
) -> Result<(StatusCode, axum::Json<Value>), AdminError> {
    let id = company_id
        .parse::<i64>()
        .map_err(|_| AdminError::BadRequest("company_id must be an integer".into()))?;
    let now = shared.clock.now();
    let started = lock(&shared.state).start_auto_sync(id, now);
    let id = started.ok_or_else(|| {
        AdminError::Conflict(format!(
            "company {id} is unknown, already syncing or has nothing enabled"
        ))
    })?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "id": id }))))
}

async fn not_found() -> AdminError {
    AdminError::NotFound
}
