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
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, info_span, warn};

use crate::grpc::{Gateway, SyncApi, SyncConfigApi};
use crate::page_token::PageTokens;
use crate::pb::v1::sync_config_service_server::SyncConfigServiceServer;
use crate::pb::v1::sync_service_server::SyncServiceServer;
use crate::upstream::{ApiKey, BudgetConfig, UpstreamClient};
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
    /// The longest the gateway waits for one upstream answer.
    pub upstream_timeout: Duration,
    /// The largest upstream body the gateway reads.
    pub max_upstream_body_bytes: usize,
    /// The secret page tokens are sealed with; random per process when unset.
    pub page_token_secret: Option<String>,
    /// How long in-flight calls may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// The request budget per API key shared by pollers and unary calls.
    pub request_budget: BudgetConfig,
    /// How the watch pollers and streams behave.
    pub watch: WatchSettings,
}

impl Settings {
    /// Defaults for everything but the upstream.
    pub fn new(upstream_url: impl Into<String>) -> Self {
        Self {
            upstream_url: upstream_url.into(),
            default_key: None,
            require_caller_key: false,
            upstream_timeout: Duration::from_secs(10),
            max_upstream_body_bytes: 4 * 1024 * 1024,
            page_token_secret: None,
            drain_timeout: Duration::from_secs(10),
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
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, settings, async {
        let _ = signal.await;
    }));
    Ok(RunningServer {
        addr,
        shutdown: Some(shutdown),
        task,
    })
}

/// Serves on `listener` until `shutdown` resolves, then drains: health turns NOT_SERVING,
/// open watch streams end with UNAVAILABLE, new calls are refused, and in-flight calls get
/// `drain_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (gateway, upstream) = build_gateway(&settings)?;
    let (draining, drain_signal) = watch::channel(false);
    let watches = Watches::new(upstream, settings.watch, drain_signal);
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;

    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = TcpListenerStream::new(listener);
    let router = router(gateway, watches, health_service)?;
    let server = router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result.map_err(ServeError::Transport),
        () = shutdown => info!("shutdown requested; draining"),
    }
    set_health(&health, ServingStatus::NotServing).await;
    draining.send_replace(true);
    let _ = stop.send(());
    match tokio::time::timeout(settings.drain_timeout, server).await {
        Ok(result) => result.map_err(ServeError::Transport),
        Err(_) => {
            warn!(drain_timeout = ?settings.drain_timeout, "drain deadline passed; stopping");
            Ok(())
        }
    }
}

/// The handlers' shared state, and the upstream client (sharing its pool and budgets) for
/// the pollers.
fn build_gateway(settings: &Settings) -> Result<(Arc<Gateway>, UpstreamClient), ServeError> {
    let upstream = UpstreamClient::new(
        &settings.upstream_url,
        settings.upstream_timeout,
        settings.max_upstream_body_bytes,
    )
    .map_err(ServeError::Client)?
    .with_budget(settings.request_budget);
    let tokens = PageTokens::new(settings.page_token_secret.as_deref());
    let gateway = Gateway::new(
        upstream.clone(),
        tokens,
        settings.default_key.clone(),
        settings.require_caller_key,
    );
    Ok((gateway, upstream))
}

fn router(
    gateway: Arc<Gateway>,
    watches: Watches,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<tonic::transport::server::Router, ServeError> {
    let reflection_v1 = reflection().build_v1().map_err(ServeError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    let router = Server::builder()
        .trace_fn(|request| info_span!("rpc", rpc.method = %request.uri().path()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(SyncServiceServer::new(SyncApi::new(
            gateway.clone(),
            watches,
        )))
        .add_service(SyncConfigServiceServer::new(SyncConfigApi::new(gateway)));
    Ok(router)
}

/// Reflection describes the gateway's own services, health, and the `google.rpc` detail
/// messages, so that tools can decode error details.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status("commenda.sync.v1.SyncService", status)
        .await;
    health
        .set_service_status("commenda.sync.v1.SyncConfigService", status)
        .await;
}
