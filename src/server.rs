//! Builds and runs the tonic server: the two services, reflection (v1 and v1alpha), health,
//! a span per RPC, and a graceful drain bounded by a deadline that first ends open watch
//! streams.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tonic_web::GrpcWebLayer;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{info, info_span, warn};

use crate::grpc::{Gateway, Policy, SyncApi, SyncConfigApi};
use crate::metrics::{Metrics, MetricsLayer};
use crate::page_token::PageTokens;
use crate::pb::v1::sync_config_service_server::SyncConfigServiceServer;
use crate::pb::v1::sync_service_server::SyncServiceServer;
use crate::upstream::{ApiKey, BudgetConfig, UpstreamClient, UpstreamOptions};
use crate::watch::{WatchSettings, Watches};

/// Everything the server needs, independent of how it was configured.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The REST base URL, ending before `/core` (e.g. `https://host/v4`).
    pub upstream_url: String,
    /// The key used for callers that send none.
    pub default_key: Option<ApiKey>,
    /// Refuse callers that send no key, even when a default key is set.
    pub require_caller_key: bool,
    /// Upstream timeout, body limit, retries and per-key concurrency.
    pub upstream: UpstreamOptions,
    /// An extra CA certificate (PEM) trusted for the upstream's TLS.
    pub upstream_ca_pem: Option<Vec<u8>>,
    /// The secret page tokens are sealed with; random per process when unset.
    pub page_token_secret: Option<String>,
    /// How long in-flight calls may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// How long the answer of an idempotent write (one with a `request_id`) is kept.
    pub idempotency_ttl: Duration,
    /// How many idempotent answers are kept per write RPC; the oldest go first.
    pub idempotency_max_entries: usize,
    /// How often a down upstream is probed.
    pub health_probe_interval: Duration,
    /// Unary calls served at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_calls: usize,
    /// Largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Certificate and key for TLS on the listener; plaintext when unset.
    pub tls: Option<TlsFiles>,
    /// Where to serve Prometheus metrics (`GET /metrics`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Origins allowed to call over gRPC-Web from a browser (`*` for any); none when empty.
    pub cors_allow_origins: Vec<String>,
    /// The request budget per API key shared by pollers and unary calls.
    pub request_budget: BudgetConfig,
    /// How the watch pollers and streams behave.
    pub watch: WatchSettings,
}

/// A PEM certificate chain and its private key.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles { .. }")
    }
}

impl Settings {
    /// Defaults for everything but the upstream.
    pub fn new(upstream_url: impl Into<String>) -> Self {
        Self {
            upstream_url: upstream_url.into(),
            default_key: None,
            require_caller_key: false,
            upstream: UpstreamOptions::default(),
            upstream_ca_pem: None,
            page_token_secret: None,
            drain_timeout: Duration::from_secs(10),
            idempotency_ttl: Duration::from_secs(600),
            idempotency_max_entries: 10_000,
            health_probe_interval: Duration::from_secs(5),
            max_concurrent_calls: 1024,
            max_message_bytes: 1024 * 1024,
            tls: None,
            metrics_listen: None,
            cors_allow_origins: Vec::new(),
            request_budget: BudgetConfig::default(),
            watch: WatchSettings::default(),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP client for the upstream could not be built.
    #[error("cannot build the upstream client")]
    Client(#[source] reqwest::Error),
    /// The gRPC transport failed.
    #[error("gRPC transport failed")]
    Transport(#[source] tonic::transport::Error),
    /// The reflection service could not load the descriptors.
    #[error("cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The listener's address could not be read.
    #[error("cannot read the listener address")]
    Listener(#[source] std::io::Error),
}

/// A server running on a background task.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the metrics listener, when one was configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Starts the drain and waits for the server to stop.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Serves on `listener` in a background task until [`RunningServer::shutdown`].
pub fn spawn(listener: TcpListener, settings: Settings) -> Result<RunningServer, ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Listener)?;
    let metrics = settings.metrics_listen.map(bind_now).transpose()?;
    let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose();
    let metrics_addr = metrics_addr.map_err(ServeError::Listener)?;
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_on(listener, metrics, settings, async {
        let _ = signal.await;
    }));
    Ok(RunningServer {
        addr,
        metrics_addr,
        shutdown: Some(shutdown),
        task,
    })
}

/// Binds at once, so the caller learns the address before the server task runs.
fn bind_now(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let listener = std::net::TcpListener::bind(addr).map_err(ServeError::Listener)?;
    listener
        .set_nonblocking(true)
        .map_err(ServeError::Listener)?;
    TcpListener::from_std(listener).map_err(ServeError::Listener)
}

/// Serves on `listener` until `shutdown` resolves, then drains: health turns NOT_SERVING,
/// open watch streams end with UNAVAILABLE, new calls are refused, and in-flight calls get
/// `drain_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let metrics = match settings.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(ServeError::Listener)?,
        ),
        None => None,
    };
    serve_on(listener, metrics, settings, shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let metrics = Metrics::new();
    let (gateway, upstream) = build_gateway(&settings, metrics.clone())?;
    let (draining, drain_signal) = watch::channel(false);
    let watches = Watches::new(upstream, settings.watch, drain_signal);
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    let monitor = tokio::spawn(follow_upstream_health(
        gateway.upstream().clone(),
        health.clone(),
        settings.health_probe_interval,
        settings.default_key.clone(),
        metrics.clone(),
    ));
    let (metrics_stop, metrics_stopped) = oneshot::channel::<()>();
    if let Some(listener) = metrics_listener {
        info!(addr = ?listener.local_addr().ok(), "serving metrics");
        let stopped = async {
            let _ = metrics_stopped.await;
        };
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), stopped));
    }

    let (stop, stopped) = oneshot::channel::<()>();
    // Small answers must leave at once: with Nagle's algorithm on, a response written in
    // more than one segment waits for the client's delayed ACK (about 40 ms on Linux).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let routes = routes(gateway, watches, health_service, &settings)?;
    let layers = ServiceBuilder::new()
        .layer(cors(&settings.cors_allow_origins))
        .layer(GrpcWebLayer::new())
        .layer(MetricsLayer::new(metrics))
        .into_inner();
    let router = transport(&settings)?
        .layer(layers)
        .trace_fn(rpc_span)
        .add_routes(routes);
    let server = router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result.map_err(ServeError::Transport),
        () = shutdown => info!("shutdown requested; draining"),
    }
    monitor.abort();
    set_health(&health, ServingStatus::NotServing).await;
    draining.send_replace(true);
    let _ = stop.send(());
    let _ = metrics_stop.send(());
    match tokio::time::timeout(settings.drain_timeout, server).await {
        Ok(result) => result.map_err(ServeError::Transport),
        Err(_) => {
            warn!(drain_timeout = ?settings.drain_timeout, "drain deadline passed; stopping");
            Ok(())
        }
    }
}

/// The handlers' shared state, and the upstream client (sharing its pool, budgets and
/// health) for the pollers.
fn build_gateway(
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> Result<(Arc<Gateway>, UpstreamClient), ServeError> {
    let upstream = UpstreamClient::new(
        &settings.upstream_url,
        settings.upstream.clone(),
        settings.upstream_ca_pem.as_deref(),
    )
    .map_err(ServeError::Client)?
    .with_metrics(metrics)
    .with_budget(settings.request_budget);
    let tokens = PageTokens::new(settings.page_token_secret.as_deref());
    let policy = Policy {
        default_key: settings.default_key.clone(),
        require_caller_key: settings.require_caller_key,
        idempotency_ttl: settings.idempotency_ttl,
        idempotency_max_entries: settings.idempotency_max_entries,
        max_concurrent_calls: settings.max_concurrent_calls,
    };
    Ok((Gateway::new(upstream.clone(), tokens, policy), upstream))
}

/// The services the server offers: health, reflection (v1 and v1alpha) and the API.
fn routes(
    gateway: Arc<Gateway>,
    watches: Watches,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    settings: &Settings,
) -> Result<Routes, ServeError> {
    let reflection_v1 = reflection().build_v1().map_err(ServeError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    let max = settings.max_message_bytes;
    let syncs = SyncServiceServer::new(SyncApi::new(gateway.clone(), watches))
        .max_decoding_message_size(max);
    let configs =
        SyncConfigServiceServer::new(SyncConfigApi::new(gateway)).max_decoding_message_size(max);
    let routes = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(syncs)
        .add_service(configs);
    Ok(routes)
}

/// The transport: TLS when configured, HTTP/1.1 accepted for gRPC-Web.
fn transport(settings: &Settings) -> Result<Server, ServeError> {
    let mut builder = Server::builder().accept_http1(true);
    if let Some(tls) = &settings.tls {
        let identity = TlsIdentity::from_pem(&tls.cert_pem, &tls.key_pem);
        let config = ServerTlsConfig::new().identity(identity);
        builder = builder.tls_config(config).map_err(ServeError::Transport)?;
    }
    Ok(builder)
}

/// CORS for browsers calling over gRPC-Web: only the configured origins (`*` for any) may
/// call, with the headers gRPC-Web and the gateway's metadata need.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| http::HeaderValue::from_str(o).ok()),
        )
    };
    let header = http::HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers([
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("authorization"),
            header("x-api-key"),
            header("x-request-id"),
            header("traceparent"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
            header("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

/// One span per RPC, carrying the caller's trace context when it sent a valid one.
fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let traceparent = traceparent.filter(|value| crate::grpc::valid_traceparent(value));
    let span = info_span!("rpc", rpc.method = %request.uri().path(), trace.parent = traceparent);
    if let Some(traceparent) = traceparent {
        crate::telemetry::continue_trace(&span, traceparent);
    }
    span
}

/// Mirrors the upstream's health into `grpc.health.v1`, and while it is down probes it
/// every `probe_every` so that recovery shows without waiting for a caller.
async fn follow_upstream_health(
    upstream: UpstreamClient,
    reporter: HealthReporter,
    probe_every: Duration,
    key: Option<ApiKey>,
    metrics: Arc<Metrics>,
) {
    let mut up = upstream.health().subscribe();
    loop {
        let is_up = *up.borrow_and_update();
        metrics.set_upstream_up(is_up);
        let status = if is_up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_health(&reporter, status).await;
        info!(upstream.up = is_up, "upstream health");

        let changed = if is_up {
            up.changed().await
        } else {
            tokio::select! {
                changed = up.changed() => changed,
                () = tokio::time::sleep(probe_every) => {
                    upstream.probe(key.as_ref()).await;
                    Ok(())
                }
            }
        };
        if changed.is_err() {
            return;
        }
    }
}

/// Reflection describes the gateway's own services, health, and the `google.rpc` detail
/// messages, so that tools can decode error details.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The health service name for liveness: SERVING while the process runs, whatever the
/// upstream's state, so that an orchestrator does not restart a gateway for an outage it
/// cannot fix. The empty name and the API services report readiness.
pub const LIVENESS_SERVICE: &str = "liveness";

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    health.set_service_status("", status).await;
    health
        .set_service_status("commenda.sync.v1.SyncService", status)
        .await;
    health
        .set_service_status("commenda.sync.v1.SyncConfigService", status)
        .await;
}
