//! One API request from arrival to response.
//!
//! The steps, in order: match the route (404), check the `api_key` (401), take a token from
//! the key's bucket (429), apply an injected fault if one fires, run the handler, then count
//! and log the request. Every response, errors included, carries the rate-limit headers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::counters::{LOGGED_HEADERS, RecordedRequest, key_fingerprint};
use super::errors::{ApiError, default_message, error_body};
use super::faults::{self, FaultKind, MALFORMED_BODY};
use super::rate_limit::Quota;
use super::routes::{self, Call, Matched, Route};
use super::{Shared, lock};

/// The largest request body the emulator reads, in bytes.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The header that carries the API key.
const API_KEY: &str = "api_key";

/// A request's parts and body, read once up front.
struct Incoming {
    parts: Parts,
    body: Result<Bytes, String>,
    matched: Option<Matched>,
    key: Option<String>,
}

/// The response, the status to count it under (0 when the connection is dropped), and the
/// `request_id` its envelope carries, so tests can match what a client received.
struct Outcome {
    response: Response,
    status: u16,
    request_id: Option<String>,
}

/// Serves every request outside the admin paths.
pub(crate) async fn api(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let arrived = shared.clock.now();
    let incoming = Incoming::read(request).await;
    let outcome = respond(&shared, &incoming, arrived).await;
    tracing::debug!(
        http.method = %incoming.parts.method,
        http.path = incoming.parts.uri.path(),
        emulator.route = incoming.matched.as_ref().map(|m| m.route.as_str()),
        http.status = outcome.status,
        "emulator served a request"
    );
    shared.counters.record(incoming.record(arrived, &outcome));
    outcome.response
}

impl Incoming {
    async fn read(request: Request) -> Self {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| e.to_string());
        let matched = routes::resolve(&parts.method, parts.uri.path());
        let key = parts
            .headers
            .get(API_KEY)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        Self {
            parts,
            body,
            matched,
            key,
        }
    }

    fn record(&self, at: DateTime<Utc>, outcome: &Outcome) -> RecordedRequest {
        let headers = LOGGED_HEADERS
            .iter()
            .filter_map(|name| {
                let value = self.parts.headers.get(*name)?;
                Some((
                    (*name).to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ))
            })
            .collect();
        RecordedRequest {
            at,
            route: self.matched.as_ref().map(|m| m.route),
            method: self.parts.method.to_string(),
            path: self.parts.uri.path().to_owned(),
            query: self.parts.uri.query().map(str::to_owned),
            key_fingerprint: self.key.as_deref().map(key_fingerprint),
            headers,
            body: self
                .body
                .as_deref()
                .map(RecordedRequest::body_text)
                .unwrap_or_default(),
            status: outcome.status,
            response_request_id: outcome.request_id.clone(),
        }
    }
}

/// A request that matched a route, named a known key and got a token.
struct Admitted<'a> {
    incoming: &'a Incoming,
    matched: &'a Matched,
    org: i64,
    quota: Quota,
}

async fn respond(shared: &Shared, incoming: &Incoming, now: DateTime<Utc>) -> Outcome {
    let admitted = match admit(shared, incoming, now) {
        Ok(admitted) => admitted,
        Err((refusal, quota)) => return error_outcome(&refusal, quota, now),
    };
    match shared.faults.pick(admitted.matched.route) {
        None => handled(shared, &admitted, now),
        Some(FaultKind::Delay(wait)) => {
            tokio::time::sleep(wait).await;
            handled(shared, &admitted, shared.clock.now())
        }
        Some(FaultKind::Truncated) => truncate(handled(shared, &admitted, now)).await,
        Some(kind) => fault_outcome(kind, admitted.matched.route, admitted.quota, now),
    }
}

/// Routing (404), authentication (401) and the rate limit (429), in that order. A refusal
/// comes with the quota to report; refusals before the rate limit take no token.
fn admit<'a>(
    shared: &Shared,
    incoming: &'a Incoming,
    now: DateTime<Utc>,
) -> Result<Admitted<'a>, (ApiError, Quota)> {
    let Some(matched) = &incoming.matched else {
        let parts = &incoming.parts;
        let method = parts.method.to_string();
        let path = parts.uri.path().to_owned();
        return Err((ApiError::NoRoute { method, path }, shared.limiter.idle()));
    };
    let key = incoming.key.as_deref().unwrap_or_default();
    let Some(org) = lock(&shared.state).organization_of(key) else {
        return Err((ApiError::Unauthorized, shared.limiter.idle()));
    };
    let quota = shared.limiter.take(key, now);
    if let Some(retry_after) = quota.retry_after {
        return Err((ApiError::RateLimited { retry_after }, quota));
    }
    Ok(Admitted {
        incoming,
        matched,
        org,
        quota,
    })
}

/// Runs the route's handler and wraps its result in the success or error envelope.
fn handled(shared: &Shared, admitted: &Admitted<'_>, now: DateTime<Utc>) -> Outcome {
    match run(shared, admitted, now) {
        Ok(reply) => {
            let request_id = new_request_id();
            let body = match reply.data {
                Some(data) => json!({ "data": data, "request_id": request_id }),
                None => json!({ "request_id": request_id }),
            };
            json_outcome(reply.status, &body, admitted.quota)
        }
        Err(err) => error_outcome(&err, admitted.quota, now),
    }
}

/// Reads the query and body, then calls the handler under the state lock.
fn run(
    shared: &Shared,
    admitted: &Admitted<'_>,
    now: DateTime<Utc>,
) -> Result<routes::Reply, ApiError> {
    let Admitted {
        incoming,
        matched,
        org,
        ..
    } = admitted;
    let body = incoming
        .body
        .as_ref()
        .map_err(|err| ApiError::bad_request(format!("request body could not be read: {err}")))?;
    let Query(query) = Query::<Vec<(String, String)>>::try_from_uri(&incoming.parts.uri)
        .map_err(|err| ApiError::bad_request(format!("malformed query string: {err}")))?;
    let param = matched.param.as_deref();
    let call = Call {
        org: *org,
        now,
        param,
        query: &query,
        body,
    };
    let mut state = lock(&shared.state);
    routes::handle(matched.route, &mut state, &call)
}

/// The error envelope for `err`, with `Retry-After` on 429.
fn error_outcome(err: &ApiError, quota: Quota, now: DateTime<Utc>) -> Outcome {
    if let ApiError::Internal(source) = err {
        tracing::error!(error = %source, "emulator failed to build a response");
    }
    let status = err.status();
    let body = error_body(status, &err.to_string(), &new_request_id(), now);
    let mut outcome = json_outcome(status, &body, quota);
    if let ApiError::RateLimited { retry_after } = err {
        outcome
            .response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(*retry_after));
    }
    outcome
}

/// The response an injected fault produces instead of the handler's.
fn fault_outcome(kind: FaultKind, route: Route, quota: Quota, now: DateTime<Utc>) -> Outcome {
    let success = route.success_status();
    match kind {
        FaultKind::Status {
            code,
            retry_after,
            body,
        } => status_fault(code, retry_after, body, quota, now),
        FaultKind::Malformed => raw_outcome(success, "text/html", MALFORMED_BODY.into(), quota),
        FaultKind::MissingData => {
            json_outcome(success, &json!({ "request_id": new_request_id() }), quota)
        }
        FaultKind::Oversized(size) => {
            let body = faults::oversized_body(size, &new_request_id());
            raw_outcome(success, "application/json", body.into(), quota)
        }
        FaultKind::Drop => dropped(),
        FaultKind::Delay(_) | FaultKind::Truncated => {
            let err = ApiError::Internal("fault kind is applied around the handler".into());
            error_outcome(&err, quota, now)
        }
    }
}

fn status_fault(
    code: u16,
    retry_after: Option<u64>,
    body: Option<String>,
    quota: Quota,
    now: DateTime<Utc>,
) -> Outcome {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut outcome = match body {
        Some(text) => {
            let is_json = serde_json::from_str::<Value>(&text).is_ok();
            let content_type = if is_json {
                "application/json"
            } else {
                "text/plain"
            };
            raw_outcome(status, content_type, text.into(), quota)
        }
        None => {
            let message = default_message(status);
            json_outcome(
                status,
                &error_body(status, &message, &new_request_id(), now),
                quota,
            )
        }
    };
    if let Some(seconds) = retry_after {
        outcome
            .response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    outcome
}

/// Keeps the status and headers of `outcome` but only the first half of its body.
async fn truncate(outcome: Outcome) -> Outcome {
    let (mut parts, body) = outcome.response.into_parts();
    let full = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = faults::truncated(&full);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(half.len()));
    Outcome {
        response: Response::from_parts(parts, Body::from(half)),
        ..outcome
    }
}

/// A response whose body fails at once, so the server closes the connection unanswered.
fn dropped() -> Outcome {
    let mut response = Response::new(faults::dropping_body());
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(64_u32));
    Outcome {
        response,
        status: 0,
        request_id: None,
    }
}

fn json_outcome(status: StatusCode, body: &Value, quota: Quota) -> Outcome {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let request_id = body
        .get("request_id")
        .or_else(|| body.get("error").and_then(|e| e.get("request_id")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Outcome {
        request_id,
        ..raw_outcome(status, "application/json", bytes.into(), quota)
    }
}

fn raw_outcome(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    quota: Quota,
) -> Outcome {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    quota.write_headers(headers);
    Outcome {
        response,
        status: status.as_u16(),
        request_id: None,
    }
}

/// A fresh request id (a random UUID v4), as the API stamps on every response.
fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
