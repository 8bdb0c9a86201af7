//! The tonic handlers. Each one validates its request, makes the upstream call through
//! [`Gateway::call`], and converts the answer; failures go through [`crate::status`].

mod config_service;
mod sync_service;
mod watch_rpcs;

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use crate::idempotency::{IdempotencyCache, Outcome, WriteKey};
use crate::page_token::PageTokens;
use crate::pb::v1 as pb;
use crate::status::{self, CallContext, Resource, Violation};
use crate::upstream::{
    ApiKey, CredentialSource, Endpoint, EnvelopeError, PathParam, Reply, UpstreamClient,
    UpstreamError, UpstreamRequest,
};
use crate::validate;

pub use config_service::SyncConfigApi;
pub use sync_service::SyncApi;

/// Time kept back from the caller's deadline, so that an upstream timeout can still be
/// reported before the caller gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// State shared by every handler.
#[derive(Debug)]
pub struct Gateway {
    upstream: UpstreamClient,
    tokens: PageTokens,
    default_key: Option<ApiKey>,
    require_caller_key: bool,
    creates: IdempotencyCache<pb::CreateSyncResponse>,
    cancels: IdempotencyCache<pb::CancelSyncResponse>,
    retries: IdempotencyCache<pb::RetrySyncResponse>,
    calls: Arc<Semaphore>,
}

/// Who may call, and how long idempotent answers are kept.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The key used for callers that send none.
    pub default_key: Option<ApiKey>,
    /// Refuse callers that send no key, even when a default key is set.
    pub require_caller_key: bool,
    /// How long an idempotent write's answer is kept.
    pub idempotency_ttl: Duration,
    /// How many idempotent answers are kept per write RPC.
    pub idempotency_max_entries: usize,
    /// Unary calls served at once; more are refused at once with RESOURCE_EXHAUSTED.
    pub max_concurrent_calls: usize,
}

/// The facts of one call that every upstream request needs.
#[derive(Debug, Clone)]
pub struct CallMeta {
    key: ApiKey,
    source: CredentialSource,
    request_id: Option<String>,
    time_left: Option<Duration>,
    traceparent: Option<String>,
    /// Held for the call's duration: the call's place under `max_concurrent_calls`.
    _slot: Arc<OwnedSemaphorePermit>,
}

/// One upstream call a handler wants made.
struct Call {
    endpoint: Endpoint,
    param: PathParam,
    query: Vec<(&'static str, String)>,
    body: Option<serde_json::Value>,
    resource: Option<Resource>,
    idempotency_key: Option<String>,
}

impl Call {
    fn new(endpoint: Endpoint, param: PathParam) -> Self {
        let resource = match &param {
            PathParam::Sync(id) => Some(Resource::sync(id)),
            PathParam::Company(id) => Some(Resource::company(*id)),
            PathParam::None => None,
        };
        Self {
            endpoint,
            param,
            query: Vec::new(),
            body: None,
            resource,
            idempotency_key: None,
        }
    }

    fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Forwards the caller's idempotency id as `Idempotency-Key`.
    fn idempotency_key(mut self, request_id: Option<&str>) -> Self {
        self.idempotency_key = request_id.map(str::to_owned);
        self
    }
}

/// An upstream answer with what is needed to report a broken one.
struct Answer {
    reply: Reply,
    context: CallContext,
}

impl Answer {
    /// Converts the answer's data, reporting a shape error as a malformed upstream answer.
    fn decode<T>(
        &self,
        convert: impl FnOnce(&serde_json::Value) -> Result<T, EnvelopeError>,
    ) -> Result<T, Status> {
        convert(&self.reply.data).map_err(|source| {
            let request_id = self.reply.request_id.clone();
            let error = UpstreamError::Malformed {
                status: 200,
                request_id,
                source,
            };
            status::from_upstream(&error, &self.context)
        })
    }

    /// Wraps a message in a response carrying the upstream request id as `x-request-id`.
    fn respond<T>(&self, message: T) -> Response<T> {
        respond(message, self.reply.request_id.as_deref())
    }

    /// The message with the upstream request id, as the idempotency cache keeps it.
    fn keep<T>(&self, message: T) -> (T, Option<String>) {
        (message, self.reply.request_id.clone())
    }
}

/// What makes a write idempotent: the RPC, its target, and the caller's id for it.
struct Once<'a> {
    method: &'static str,
    target: String,
    request_id: Option<&'a str>,
}

impl Gateway {
    /// Runs `write`, or, when the caller gave a request id, returns the kept answer of an
    /// earlier call with that id (waiting for it while it is still in flight).
    async fn idempotent<T: Clone>(
        &self,
        cache: &IdempotencyCache<T>,
        meta: &CallMeta,
        once: Once<'_>,
        request: &impl prost::Message,
        write: impl Future<Output = Outcome<T>>,
    ) -> Result<Response<T>, Status> {
        let outcome = match once.request_id {
            None => write.await,
            Some(id) => {
                let key = WriteKey {
                    key: meta.key.clone(),
                    method: once.method,
                    target: once.target,
                    request_id: id.to_owned(),
                };
                cache.run(key, &request.encode_to_vec(), || write).await
            }
        };
        let (message, upstream_id) = outcome?;
        Ok(respond(message, upstream_id.as_deref()))
    }
}

/// Wraps a message in a response carrying the upstream request id as `x-request-id`.
fn respond<T>(message: T, request_id: Option<&str>) -> Response<T> {
    let mut response = Response::new(message);
    let value = request_id.and_then(|id| MetadataValue::try_from(id).ok());
    if let Some(value) = value {
        response.metadata_mut().insert("x-request-id", value);
    }
    response
}

impl Gateway {
    /// Builds the shared state from the upstream client, the page-token sealer and the
    /// policy.
    pub fn new(upstream: UpstreamClient, tokens: PageTokens, policy: Policy) -> Arc<Self> {
        let (ttl, max) = (policy.idempotency_ttl, policy.idempotency_max_entries);
        Arc::new(Self {
            upstream,
            tokens,
            default_key: policy.default_key,
            require_caller_key: policy.require_caller_key,
            creates: IdempotencyCache::new(ttl, max),
            cancels: IdempotencyCache::new(ttl, max),
            retries: IdempotencyCache::new(ttl, max),
            calls: Arc::new(Semaphore::new(policy.max_concurrent_calls.max(1))),
        })
    }

    /// The upstream client, for the server's health monitor.
    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    /// Reads the key, request id and deadline of a call; refuses malformed ones.
    fn meta<T>(&self, request: &Request<T>) -> Result<CallMeta, Status> {
        let slot = self
            .calls
            .clone()
            .try_acquire_owned()
            .map_err(|_| status::overloaded())?;
        let metadata = request.metadata();
        let (key, source) = self.credential(metadata)?;
        let request_id = match metadata.get("x-request-id") {
            None => None,
            Some(raw) => Some(header_text(raw, "x-request-id", |field, value| {
                validate::request_id(field, value).map(str::to_owned)
            })?),
        };
        let time_left = grpc_timeout(metadata).map(|t| t.saturating_sub(margin(t)));
        Ok(CallMeta {
            key,
            source,
            request_id,
            time_left,
            traceparent: trace_context(metadata),
            _slot: Arc::new(slot),
        })
    }

    fn credential(&self, metadata: &MetadataMap) -> Result<(ApiKey, CredentialSource), Status> {
        if let Some(raw) = metadata.get("authorization") {
            let key = header_text(raw, "authorization", |field, value| {
                let token = strip_bearer(value)
                    .ok_or_else(|| Violation::new(field, "must be `Bearer <API key>`"))?;
                ApiKey::parse(token).map_err(|e| Violation::new(field, e.to_string()))
            })?;
            return Ok((key, CredentialSource::Caller));
        }
        if let Some(raw) = metadata.get("x-api-key") {
            let key = header_text(raw, "x-api-key", |field, value| {
                ApiKey::parse(value).map_err(|e| Violation::new(field, e.to_string()))
            })?;
            return Ok((key, CredentialSource::Caller));
        }
        match &self.default_key {
            Some(key) if !self.require_caller_key => Ok((key.clone(), CredentialSource::Default)),
            _ => Err(status::missing_api_key()),
        }
    }

    /// Makes one upstream call on behalf of a caller.
    async fn call(&self, meta: &CallMeta, call: Call) -> Result<Answer, Status> {
        let context = CallContext {
            endpoint: call.endpoint,
            resource: call.resource,
            credential: meta.source,
        };
        let request = UpstreamRequest {
            endpoint: call.endpoint,
            param: call.param,
            query: call.query,
            body: call.body,
            key: meta.key.clone(),
            source: meta.source,
            request_id: meta.request_id.clone(),
            time_left: meta.time_left,
            idempotency_key: call.idempotency_key,
            traceparent: meta.traceparent.clone(),
        };
        match self.upstream.send(request).await {
            Ok(reply) => Ok(Answer { reply, context }),
            Err(error) => Err(status::from_upstream(&error, &context)),
        }
    }
}

/// Reads a text metadata value and runs a check on it; a value that is not visible ASCII
/// is refused with the header named.
fn header_text<T>(
    raw: &MetadataValue<tonic::metadata::Ascii>,
    field: &str,
    check: impl FnOnce(&str, &str) -> Result<T, Violation>,
) -> Result<T, Status> {
    let refuse = |violation| status::invalid_argument(vec![violation]);
    let text = raw
        .to_str()
        .map_err(|_| refuse(Violation::new(field, "is not visible ASCII")))?;
    check(field, text).map_err(refuse)
}

fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// The caller's W3C `traceparent`, when well formed, so the upstream request continues the
/// caller's trace. A malformed one is dropped, as the W3C spec asks, rather than refused.
fn trace_context(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get("traceparent")?.to_str().ok()?;
    valid_traceparent(value).then(|| value.to_ascii_lowercase())
}

/// Whether `value` is a W3C `traceparent`: version, trace id, parent id and flags in hex,
/// with the all-zero ids and version `ff` refused.
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// The share of the caller's time kept back: 50 ms, or a quarter of very short deadlines.
fn margin(deadline: Duration) -> Duration {
    DEADLINE_MARGIN.min(deadline / 4)
}

/// The caller's deadline from the `grpc-timeout` header (`<digits><unit>`), if any.
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}
