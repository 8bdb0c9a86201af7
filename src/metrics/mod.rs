//! Prometheus metrics: RPCs by method and code with latency, upstream requests by route and
//! status with latency, upstream health, and gauges the streaming layer keeps. Served in
//! the text format on a listener of its own, so scraping never competes with gRPC traffic.

mod layer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use layer::MetricsLayer;

/// Latency buckets in seconds, from 1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Labels of one RPC outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The full method path, e.g. `/commenda.sync.v1.SyncService/GetSync`.
    pub method: String,
    /// The gRPC status code name, e.g. `OK` or `NOT_FOUND`.
    pub code: String,
}

/// Labels of one upstream request outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The route name, e.g. `get_sync`.
    pub route: String,
    /// The HTTP status, or `error` when there was no answer.
    pub status: String,
}

/// Labels naming an API key by its fingerprint, never in clear.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// The key's 8-hex-digit fingerprint.
    pub key: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric the gateway keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    rpc_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    upstream: Family<UpstreamLabels, Counter>,
    upstream_seconds: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    upstream_up: Gauge,
    /// Open streaming RPCs.
    pub active_streams: Gauge,
    /// Running pollers of the streaming layer.
    pub active_pollers: Gauge,
    /// Requests left in each key's polling budget.
    pub budget_remaining: Family<KeyLabels, Gauge>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("commenda_gateway");
        let metrics = Self {
            rpcs: Family::default(),
            rpc_seconds: Family::new_with_constructor(latency_histogram),
            upstream: Family::default(),
            upstream_seconds: Family::new_with_constructor(latency_histogram),
            upstream_up: Gauge::default(),
            active_streams: Gauge::default(),
            active_pollers: Gauge::default(),
            budget_remaining: Family::default(),
            registry: Registry::default(),
        };
        metrics.register(&mut registry);
        Arc::new(Self {
            registry,
            ..metrics
        })
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "rpcs",
            "gRPC calls by method and status code",
            self.rpcs.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "gRPC call latency by method and status code",
            self.rpc_seconds.clone(),
        );
        registry.register(
            "upstream_requests",
            "REST requests to the upstream by route and HTTP status",
            self.upstream.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "REST request latency by route and HTTP status",
            self.upstream_seconds.clone(),
        );
        registry.register(
            "upstream_up",
            "1 while the upstream answers, else 0",
            self.upstream_up.clone(),
        );
        registry.register(
            "active_streams",
            "open streaming calls",
            self.active_streams.clone(),
        );
        registry.register(
            "active_pollers",
            "running upstream pollers",
            self.active_pollers.clone(),
        );
        registry.register(
            "request_budget_remaining",
            "requests left in each API key's polling budget (keys by fingerprint)",
            self.budget_remaining.clone(),
        );
    }

    /// Records one finished RPC.
    pub fn record_rpc(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let labels = RpcLabels {
            method: method.to_owned(),
            code: code_name(code).to_owned(),
        };
        self.rpcs.get_or_create(&labels).inc();
        self.rpc_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Records one upstream request; `status` is `None` when no answer came.
    pub fn record_upstream(&self, route: &str, status: Option<u16>, elapsed: Duration) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        let labels = UpstreamLabels {
            route: route.to_owned(),
            status,
        };
        self.upstream.get_or_create(&labels).inc();
        self.upstream_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the gauge of requests left in one key's budget.
    pub fn set_budget_remaining(&self, key_fingerprint: &str, remaining: i64) {
        let labels = KeyLabels {
            key: key_fingerprint.to_owned(),
        };
        self.budget_remaining.get_or_create(&labels).set(remaining);
    }

    /// Counts one gauge up for as long as the returned guard lives.
    pub fn track(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }

    /// Sets the upstream health gauge.
    pub fn set_upstream_up(&self, up: bool) {
        self.upstream_up.set(i64::from(up));
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Holds one unit of a gauge (an open stream, a running poller) until dropped.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The canonical UPPER_SNAKE name of a gRPC code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(CONTENT_TYPE, content_type)], metrics.encode())
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
