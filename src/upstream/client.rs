//! The HTTP call itself: one pooled reqwest client, bounded in time and in body size.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_LENGTH, HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::Value;
use tracing::{Instrument, debug, debug_span, warn};

use super::budget::{BudgetConfig, Budgets, Priority};
use super::envelope::{self, EnvelopeError, ErrorBody};
use super::{ApiKey, Endpoint, PathParam};

/// Everything needed for one upstream call. Built by the handlers from validated input.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    /// Which route to call.
    pub endpoint: Endpoint,
    /// The route's path parameter.
    pub param: PathParam,
    /// Query parameters, names fixed by the code, values from validated input.
    pub query: Vec<(&'static str, String)>,
    /// The JSON body, for writes.
    pub body: Option<Value>,
    /// The key sent as the `api_key` header.
    pub key: &'a ApiKey,
    /// The caller's `x-request-id`, already validated, forwarded as is.
    pub request_id: Option<&'a str>,
    /// How long the caller can still wait; `None` leaves only the gateway's own limit.
    pub time_left: Option<Duration>,
}

/// A successful, decoded upstream answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The `data` member (`Null` for routes without data).
    pub data: Value,
    /// The upstream `request_id`, returned to callers as `x-request-id`.
    pub request_id: Option<String>,
    /// What the rate-limit headers said.
    pub rate_limit: RateLimitInfo,
}

/// The upstream's rate-limit headers, as far as they parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// `X-RateLimit-Limit`: requests allowed per window.
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`: requests left in this window.
    pub remaining: Option<u64>,
    /// `X-RateLimit-Reset`, read as seconds until the window resets.
    pub reset: Option<Duration>,
    /// `Retry-After` in seconds, sent with a 429.
    pub retry_after: Option<Duration>,
}

impl RateLimitInfo {
    fn from_headers(headers: &HeaderMap) -> Self {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        Self {
            limit: number("x-ratelimit-limit"),
            remaining: number("x-ratelimit-remaining"),
            reset: number("x-ratelimit-reset").map(Duration::from_secs),
            retry_after: number(RETRY_AFTER.as_str()).map(Duration::from_secs),
        }
    }

    /// How long a caller should wait before retrying, when the upstream said.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after.or(self.reset)
    }
}

/// Why an upstream call did not produce a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with a non-2xx status.
    #[error("upstream answered {status}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What the error body said, if anything (boxed: errors stay small to move).
        body: Box<ErrorBody>,
        /// The rate-limit headers of the answer.
        rate_limit: RateLimitInfo,
    },
    /// No answer: connection refused or reset, TLS failure, connection dropped mid-body.
    #[error("upstream unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The caller's deadline passed before the upstream answered.
    #[error("upstream did not answer within the caller's deadline")]
    DeadlineExceeded,
    /// The gateway's own upstream time limit passed.
    #[error("upstream did not answer within {0:?}")]
    TimedOut(Duration),
    /// A 2xx answer whose body could not be decoded.
    #[error("upstream answered {status} with an undecodable body")]
    Malformed {
        /// The HTTP status.
        status: u16,
        /// The upstream `request_id`, if the headers or body gave one.
        request_id: Option<String>,
        /// What was wrong.
        #[source]
        source: EnvelopeError,
    },
    /// The body was larger than the gateway accepts.
    #[error("upstream body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl UpstreamError {
    /// The upstream request id carried by the error, when there is one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Status { body, .. } => body.request_id.as_deref(),
            Self::Malformed { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

/// A pooled client for one upstream base URL. Clones share the pool and the per-key
/// request budgets.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
    max_body_bytes: usize,
    budgets: Arc<Budgets>,
}

impl UpstreamClient {
    /// Builds a client. `base_url` ends before `/core`, e.g. `https://host/v4`.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("commenda-sync-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self::with_http(http, base_url, timeout, max_body_bytes))
    }

    /// Builds a client around a prepared reqwest client (custom TLS roots, for example).
    pub fn with_http(
        http: reqwest::Client,
        base_url: &str,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self {
            http,
            base_url,
            timeout,
            max_body_bytes,
            budgets: Arc::new(Budgets::new(BudgetConfig::default())),
        }
    }

    /// Replaces the per-key request budget settings (the default is
    /// [`BudgetConfig::default`]).
    pub fn with_budget(mut self, config: BudgetConfig) -> Self {
        self.budgets = Arc::new(Budgets::new(config));
        self
    }

    /// The per-key request budgets this client spends.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one request a caller asked for and decodes its answer, within the caller's
    /// time and the gateway's own limit. It never waits for the key's budget; it only
    /// spends from it.
    pub async fn send(&self, request: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
        self.budgets.debit(request.key);
        self.send_spent(request).await
    }

    /// Sends one background (polling) request: waits for a token of the key's budget
    /// first, so pollers slow down instead of running the key into 429.
    /// `priority` lets a watch's first read go before routine re-reads.
    pub async fn send_polled(
        &self,
        request: UpstreamRequest<'_>,
        priority: Priority,
    ) -> Result<Reply, UpstreamError> {
        self.budgets.acquire(request.key, priority).await;
        self.send_spent(request).await
    }

    /// Sends a request whose token is already taken, and feeds the answer's rate-limit
    /// headers back to the budget.
    async fn send_spent(&self, request: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
        let key = request.key.clone();
        let result = self.send_traced(request).await;
        match &result {
            Ok(reply) => self.budgets.calibrate(&key, &reply.rate_limit, false),
            Err(UpstreamError::Status {
                status, rate_limit, ..
            }) => self.budgets.calibrate(&key, rate_limit, *status == 429),
            Err(_) => {}
        }
        result
    }

    async fn send_traced(&self, request: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
        let endpoint = request.endpoint;
        let span = debug_span!(
            "upstream",
            upstream.route = endpoint.name(),
            upstream.status = tracing::field::Empty,
            key = %request.key,
        );
        self.send_bounded(request).instrument(span).await
    }

    async fn send_bounded(&self, request: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
        let (limit, caller_bound) = match request.time_left {
            Some(left) if left < self.timeout => (left, true),
            _ => (self.timeout, false),
        };
        match tokio::time::timeout(limit, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) if caller_bound => Err(UpstreamError::DeadlineExceeded),
            Err(_) => Err(UpstreamError::TimedOut(limit)),
        }
    }

    async fn exchange(&self, request: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
        let endpoint = request.endpoint;
        let response = self
            .build(request)
            .send()
            .await
            .map_err(UpstreamError::Unreachable)?;

        let status = response.status().as_u16();
        tracing::Span::current().record("upstream.status", status);
        let rate_limit = RateLimitInfo::from_headers(response.headers());
        let body = self.read_body(response).await?;

        if !(200..300).contains(&status) {
            debug!(status, body = %preview(&body), "upstream error answer");
            let body = Box::new(ErrorBody::decode(&body));
            return Err(UpstreamError::Status {
                status,
                body,
                rate_limit,
            });
        }
        decode(endpoint, status, &body, rate_limit)
    }

    fn build(&self, request: UpstreamRequest<'_>) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.base_url, request.endpoint.path(&request.param));
        let mut builder = self
            .http
            .request(request.endpoint.method(), url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header("api_key", request.key.expose());
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        if let Some(id) = request.request_id {
            builder = builder.header("x-request-id", id);
        }
        if let Some(body) = request.body {
            builder = builder.json(&body);
        }
        builder
    }

    /// Reads the body chunk by chunk and stops as soon as it passes the limit, so a huge
    /// answer costs at most the limit in memory.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
        let limit = self.max_body_bytes;
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(UpstreamError::TooLarge { limit });
        }

        let mut body = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(UpstreamError::Unreachable)? {
            if body.len() + chunk.len() > limit {
                return Err(UpstreamError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn decode(
    endpoint: Endpoint,
    status: u16,
    body: &[u8],
    rate_limit: RateLimitInfo,
) -> Result<Reply, UpstreamError> {
    match envelope::decode_success(body, endpoint.has_data()) {
        Ok(success) => Ok(Reply {
            data: success.data,
            request_id: success.request_id,
            rate_limit,
        }),
        Err(source) => {
            warn!(status, body = %preview(body), %source, "undecodable upstream answer");
            Err(UpstreamError::Malformed {
                status,
                request_id: None,
                source,
            })
        }
    }
}

/// The start of a body, for the log: enough to diagnose, bounded in size.
fn preview(body: &[u8]) -> String {
    const PREVIEW_BYTES: usize = 512;
    let cut = &body[..body.len().min(PREVIEW_BYTES)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if body.len() > PREVIEW_BYTES {
        text.push_str(&format!("... ({} bytes)", body.len()));
    }
    text
}
