//! The tonic handlers. Each one validates its request, makes the upstream call through
//! [`Gateway::call`], and converts the answer; failures go through [`crate::status`].

mod config_service;
mod sync_service;
mod watch_rpcs;

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use crate::page_token::PageTokens;
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
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// State shared by every handler.
#[derive(Debug)]
pub struct Gateway {
    upstream: UpstreamClient,
    tokens: PageTokens,
    default_key: Option<ApiKey>,
    require_caller_key: bool,
}

/// The facts of one call that every upstream request needs.
#[derive(Debug, Clone)]
pub struct CallMeta {
    key: ApiKey,
    source: CredentialSource,
    request_id: Option<String>,
    time_left: Option<Duration>,
}

/// One upstream call a handler wants made.
struct Call {
    endpoint: Endpoint,
    param: PathParam,
    query: Vec<(&'static str, String)>,
    body: Option<serde_json::Value>,
    resource: Option<Resource>,
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
        let mut response = Response::new(message);
        let value = self
            .reply
            .request_id
            .as_deref()
            .and_then(|id| MetadataValue::try_from(id).ok());
        if let Some(value) = value {
            response.metadata_mut().insert("x-request-id", value);
        }
        response
    }
}

impl Gateway {
    /// Builds the shared state. `default_key` serves callers that send none, unless
    /// `require_caller_key` is set.
    pub fn new(
        upstream: UpstreamClient,
        tokens: PageTokens,
        default_key: Option<ApiKey>,
        require_caller_key: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            tokens,
            default_key,
            require_caller_key,
        })
    }

    /// Reads the key, request id and deadline of a call; refuses malformed ones.
    fn meta<T>(&self, request: &Request<T>) -> Result<CallMeta, Status> {
        let metadata = request.metadata();
        let (key, source) = self.credential(metadata)?;
        let request_id = match metadata.get("x-request-id") {
            None => None,
            Some(raw) => Some(header_text(raw, "x-request-id", |field, value| {
                validate::request_id(field, value).map(str::to_owned)
            })?),
        };
        let time_left = grpc_timeout(metadata).map(|t| t.saturating_sub(DEADLINE_MARGIN));
        Ok(CallMeta {
            key,
            source,
            request_id,
            time_left,
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
            key: &meta.key,
            request_id: meta.request_id.as_deref(),
            time_left: meta.time_left,
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
