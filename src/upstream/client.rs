//! The HTTP call itself: one pooled reqwest client, bounded in time and in body size.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use reqwest::header::{ACCEPT, CONTENT_LENGTH, HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::Value;
use tracing::{Instrument, debug, info_span, warn};

use super::budget::{BudgetConfig, Budgets, Priority};
use super::envelope::{self, EnvelopeError, ErrorBody};
use super::flight::Flights;
use super::health::{UpstreamHealth, Verdict};
use super::limiter::KeyLimiter;
use super::retry::RetryPolicy;
use super::{ApiKey, CredentialSource, Endpoint, PathParam};
use crate::metrics::Metrics;

/// Everything needed for one upstream call. Built by the handlers from validated input.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Which route to call.
    pub endpoint: Endpoint,
    /// The route's path parameter.
    pub param: PathParam,
    /// Query parameters, names fixed by the code, values from validated input.
    pub query: Vec<(&'static str, String)>,
    /// The JSON body, for writes.
    pub body: Option<Value>,
    /// The key sent as the `api_key` header.
    pub key: ApiKey,
    /// Whose key it is: a refusal of the gateway's own key counts against upstream health.
    pub source: CredentialSource,
    /// The caller's `x-request-id`, already validated, forwarded as is.
    pub request_id: Option<String>,
    /// How long the caller can still wait; `None` leaves only the gateway's own limit.
    pub time_left: Option<Duration>,
    /// The caller's idempotency id for a write, forwarded as `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The caller's W3C trace context, already validated, forwarded as `traceparent`.
    pub traceparent: Option<String>,
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
    /// The HTTP status (a 2xx).
    pub status: u16,
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

    /// How long a caller should wait before retrying, when the upstream said: `Retry-After`,
    /// or for a 429 the rate-limit reset. A zero wait says nothing and is dropped.
    pub fn retry_delay(&self, status: u16) -> Option<Duration> {
        let reset = if status == 429 { self.reset } else { None };
        self.retry_after.or(reset).filter(|delay| !delay.is_zero())
    }
}

/// Why an upstream call did not produce a usable answer. Cloneable, so that callers
/// sharing one request each get the outcome.
#[derive(Debug, Clone, thiserror::Error)]
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
    Unreachable(#[source] Arc<reqwest::Error>),
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
    /// The key already has as many upstream requests in flight as allowed, and none
    /// finished within the caller's time.
    #[error("too many concurrent upstream requests for one key")]
    Saturated,
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

/// Limits and retry behaviour of the upstream client.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// The longest wait for one upstream answer.
    pub timeout: Duration,
    /// The largest body read; larger answers fail with [`UpstreamError::TooLarge`].
    pub max_body_bytes: usize,
    /// Retries of reads.
    pub retry: RetryPolicy,
    /// Concurrent upstream requests allowed per key.
    pub max_in_flight_per_key: usize,
    /// Consecutive failed answers that mark the upstream down.
    pub health_failure_threshold: u32,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_body_bytes: 4 * 1024 * 1024,
            retry: RetryPolicy::default(),
            max_in_flight_per_key: 32,
            health_failure_threshold: 3,
        }
    }
}

/// A pooled client for one upstream base URL. Clones share the pool, the per-key request
/// budgets, the health state and the reads in flight.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    base_url: String,
    options: UpstreamOptions,
    limiter: Arc<KeyLimiter>,
    health: Arc<UpstreamHealth>,
    metrics: Option<Arc<Metrics>>,
    flights: Arc<Flights>,
    budgets: Arc<Budgets>,
}

impl UpstreamClient {
    /// Builds a client with its own connection pool. `base_url` ends before `/core`, e.g.
    /// `https://host/v4`; `extra_root` adds a trusted CA (PEM) for the upstream's TLS.
    pub fn new(
        base_url: &str,
        options: UpstreamOptions,
        extra_root: Option<&[u8]>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("commenda-sync-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = extra_root {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(Self::with_http(builder.build()?, base_url, options))
    }

    /// Builds a client around a prepared reqwest client.
    pub fn with_http(http: reqwest::Client, base_url: &str, options: UpstreamOptions) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let limiter = Arc::new(KeyLimiter::new(options.max_in_flight_per_key));
        let health = Arc::new(UpstreamHealth::new(options.health_failure_threshold));
        Self {
            http,
            base_url,
            options,
            limiter,
            health,
            metrics: None,
            flights: Arc::new(Flights::default()),
            budgets: Arc::new(Budgets::new(BudgetConfig::default())),
        }
    }

    /// Records every upstream request in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
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

    /// The metrics this client records into, if any.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The upstream's health as judged from the answers so far.
    pub fn health(&self) -> &Arc<UpstreamHealth> {
        &self.health
    }

    /// Asks the upstream one cheap question (the organization sync configuration of one
    /// integration) to learn whether it answers again; the answer is recorded in
    /// [`UpstreamClient::health`]. Without a key, any HTTP answer short of a 5xx counts.
    pub async fn probe(&self, key: Option<&ApiKey>) {
        let url = format!(
            "{}{}",
            self.base_url,
            Endpoint::GetOrganizationSyncConfig.path(&PathParam::None)
        );
        let mut request = self
            .http
            .get(url)
            .query(&[("integration_type", "NETSUITE")]);
        if let Some(key) = key {
            request = request.header("api_key", key.expose());
        }
        let verdict = match tokio::time::timeout(self.options.timeout, request.send()).await {
            Ok(Ok(response)) => status_verdict(response.status().as_u16(), key.is_some()),
            Ok(Err(_)) | Err(_) => Verdict::Down,
        };
        debug!(?verdict, "upstream probed");
        self.health.record(verdict);
    }

    /// Sends one request and decodes its answer, within the caller's time and the
    /// gateway's own limit, retrying reads that failed for a passing reason.
    ///
    /// Identical reads under one key that overlap in time share one upstream request
    /// (single flight): the first caller's request is made within its deadline, and the
    /// others wait for its answer, each within its own. A joiner that got the first
    /// caller's deadline or saturation failure while it still has time makes its own
    /// request. A read that carries the caller's own `x-request-id` is always made on its
    /// own, so that the id reaches the upstream.
    pub async fn send(&self, request: UpstreamRequest) -> Result<Reply, UpstreamError> {
        if !request.endpoint.is_read() || request.request_id.is_some() {
            return self.send_alone(request).await;
        }
        let deadline = request.time_left.map(|left| Instant::now() + left);
        let (flight, leader) = self.flights.join(&request, |request| {
            let client = self.clone();
            async move { client.send_alone(request).await }
        });
        let result = match deadline {
            None => flight.await,
            Some(deadline) => tokio::time::timeout_at(deadline, flight)
                .await
                .unwrap_or(Err(UpstreamError::DeadlineExceeded)),
        };
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match result {
            Err(UpstreamError::DeadlineExceeded | UpstreamError::Saturated)
                if !leader && left.is_none_or(|left| !left.is_zero()) =>
            {
                self.send_alone(UpstreamRequest {
                    time_left: left,
                    ..request
                })
                .await
            }
            other => other,
        }
    }

    /// Sends one background (polling) request: waits for a token of the key's budget
    /// first, so pollers slow down instead of running the key into 429. `priority` lets a
    /// watch's first read go before routine re-reads. Polled reads are made once: the
    /// poller has its own pace and failure budget, and is already shared.
    pub async fn send_polled(
        &self,
        request: UpstreamRequest,
        priority: Priority,
    ) -> Result<Reply, UpstreamError> {
        self.budgets.acquire(&request.key, priority).await;
        let deadline = request.time_left.map(|left| Instant::now() + left);
        self.attempt(&request, deadline, Spend::Taken)
            .instrument(upstream_span(&request))
            .await
    }

    async fn send_alone(&self, request: UpstreamRequest) -> Result<Reply, UpstreamError> {
        let span = upstream_span(&request);
        self.send_with_retries(request).instrument(span).await
    }

    async fn send_with_retries(&self, request: UpstreamRequest) -> Result<Reply, UpstreamError> {
        let deadline = request.time_left.map(|left| Instant::now() + left);
        let mut attempt = 1;
        loop {
            tracing::Span::current().record("upstream.attempts", attempt);
            let error = match self.attempt(&request, deadline, Spend::Debit).await {
                Ok(reply) => return Ok(reply),
                Err(error) => error,
            };
            let delay = request
                .endpoint
                .is_read()
                .then(|| self.options.retry.delay(attempt + 1, &error));
            let Some(delay) = delay.flatten() else {
                return Err(error);
            };
            if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
                return Err(error);
            }
            debug!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "retrying a read");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One attempt: a permit for the key, then the exchange, both within the caller's
    /// deadline and the gateway's own timeout. The attempt is charged to the key's budget
    /// (debited for calls, already taken for polls), and its rate-limit headers calibrate
    /// the budget.
    async fn attempt(
        &self,
        request: &UpstreamRequest,
        deadline: Option<Instant>,
        spend: Spend,
    ) -> Result<Reply, UpstreamError> {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let (limit, caller_bound) = match left {
            Some(left) if left < self.options.timeout => (left, true),
            _ => (self.options.timeout, false),
        };
        let permit = self.limiter.acquire(&request.key, limit).await;
        let Some(_permit) = permit else {
            return Err(UpstreamError::Saturated);
        };
        if spend == Spend::Debit {
            self.budgets.debit(&request.key);
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(limit, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) if caller_bound => Err(UpstreamError::DeadlineExceeded),
            Err(_) => Err(UpstreamError::TimedOut(limit)),
        };
        let own_key = request.source == CredentialSource::Default;
        self.health.record(outcome_verdict(&result, own_key));
        let remaining = self.calibrate(&request.key, &result);
        if let Some(metrics) = &self.metrics {
            metrics.set_budget_remaining(request.key.fingerprint(), remaining);
            metrics.record_upstream(
                request.endpoint.name(),
                answered_status(&result),
                started.elapsed(),
            );
        }
        result
    }

    /// Feeds an answer's rate-limit headers back to the key's budget; returns the whole
    /// requests left in it, read under the same lock.
    fn calibrate(&self, key: &ApiKey, result: &Result<Reply, UpstreamError>) -> i64 {
        match result {
            Ok(reply) => self.budgets.calibrate(key, &reply.rate_limit, false),
            Err(UpstreamError::Status {
                status, rate_limit, ..
            }) => self.budgets.calibrate(key, rate_limit, *status == 429),
            Err(_) => self.budgets.remaining(key),
        }
    }

    async fn exchange(&self, request: &UpstreamRequest) -> Result<Reply, UpstreamError> {
        let endpoint = request.endpoint;
        let response = self
            .build(request)
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(Arc::new(e)))?;

        let status = response.status().as_u16();
        tracing::Span::current().record("upstream.status", status);
        let rate_limit = RateLimitInfo::from_headers(response.headers());
        let body = self.read_body(response).await?;

        if !(200..300).contains(&status) {
            let key = request.key.expose();
            debug!(status, body = %redact(&preview(&body), key), "upstream error answer");
            let body = Box::new(ErrorBody::decode(&body).redact(key));
            return Err(UpstreamError::Status {
                status,
                body,
                rate_limit,
            });
        }
        decode(endpoint, status, &body, rate_limit, request.key.expose())
    }

    fn build(&self, request: &UpstreamRequest) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.base_url, request.endpoint.path(&request.param));
        let mut builder = self
            .http
            .request(request.endpoint.method(), url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header("api_key", request.key.expose());
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        if let Some(id) = &request.request_id {
            builder = builder.header("x-request-id", id);
        }
        let traceparent =
            crate::telemetry::current_traceparent().or_else(|| request.traceparent.clone());
        if let Some(traceparent) = traceparent {
            builder = builder.header("traceparent", traceparent);
        }
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        builder
    }

    /// Reads the body chunk by chunk and stops as soon as it passes the limit, so a huge
    /// answer costs at most the limit in memory.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
        let limit = self.options.max_body_bytes;
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(UpstreamError::TooLarge { limit });
        }

        let mut body = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| UpstreamError::Unreachable(Arc::new(e)))?
        {
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
    key: &str,
) -> Result<Reply, UpstreamError> {
    decode_body(endpoint, status, body, rate_limit).inspect_err(|error| {
        warn!(status, body = %redact(&preview(body), key), %error, "undecodable upstream answer");
    })
}

fn decode_body(
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
            status,
        }),
        Err(source) => Err(UpstreamError::Malformed {
            status,
            request_id: None,
            source,
        }),
    }
}

/// Removes the API key from upstream text, should the upstream echo it back: the text may
/// reach a log or a caller who sent no key (the gateway's default key was used).
fn redact(text: &str, key: &str) -> String {
    text.replace(key, "[redacted]")
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

/// How an attempt is charged to its key's request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spend {
    /// A caller's call: never waits for the budget, only spends from it.
    Debit,
    /// A poll: its token was taken before the attempt.
    Taken,
}

/// The span of one upstream request and its retries.
fn upstream_span(request: &UpstreamRequest) -> tracing::Span {
    info_span!(
        "upstream",
        upstream.route = request.endpoint.name(),
        upstream.status = tracing::field::Empty,
        upstream.attempts = tracing::field::Empty,
        trace.parent = request.traceparent.as_deref(),
        key = %request.key,
    )
}

/// The HTTP status of an attempt, when the upstream answered at all.
fn answered_status(result: &Result<Reply, UpstreamError>) -> Option<u16> {
    match result {
        Ok(reply) => Some(reply.status),
        Err(UpstreamError::Status { status, .. } | UpstreamError::Malformed { status, .. }) => {
            Some(*status)
        }
        Err(_) => None,
    }
}

/// How one attempt's outcome bears on upstream health.
fn outcome_verdict(result: &Result<Reply, UpstreamError>, own_key: bool) -> Verdict {
    match result {
        Ok(_) => Verdict::Up,
        Err(UpstreamError::Status { status, .. }) => status_verdict(*status, own_key),
        Err(UpstreamError::Unreachable(_) | UpstreamError::TimedOut(_)) => Verdict::Down,
        Err(_) => Verdict::Neutral,
    }
}

fn status_verdict(status: u16, own_key: bool) -> Verdict {
    match status {
        401 | 403 if own_key => Verdict::Down,
        429 => Verdict::Neutral,
        500..=599 => Verdict::Down,
        _ => Verdict::Up,
    }
}
