//! The built-in emulator of the Commenda Integrations v4 sync REST API.
//!
//! Nobody can reach the real API from a test machine, and a new user has no key yet, so the
//! crate ships a stateful emulator of it, served over real HTTP: the sync, job, sync-config
//! and company routes under `/v4/core`, with the API's envelopes, error bodies, status codes
//! and rate-limit headers. Syncs progress on their own, reproducibly for a given seed.
//! Tests can inject faults, read request counters and move the emulator's clock, in-process
//! through [`Emulator`] or over HTTP under `/__emulator` (see `docs/emulator.md`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use commenda_sync_gateway::emulator::{Emulator, EmulatorConfig};
//!
//! let emulator = Emulator::start(EmulatorConfig::for_tests()).await?;
//! println!("REST API at {}", emulator.base_url());
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The modules, one concern each: `config` (settings and demo tenants), `catalog`
//! (vocabularies), `clock` (emulator time), `sim` (how jobs progress), `state` (tenancy,
//! companies, syncs), `views` (JSON shapes), `routes` (the `/v4` handlers), `errors` (the
//! error envelope), `rate_limit`, `faults`, `counters`, `dispatch` (the per-request pipeline)
//! and `admin` (the `/__emulator` paths).

mod admin;
mod catalog;
mod clock;
mod config;
mod counters;
mod dispatch;
mod errors;
mod faults;
mod rate_limit;
mod routes;
mod sim;
mod state;
mod views;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    CompanySeed, DEMO_API_KEY, EmulatorConfig, JobTiming, OTHER_API_KEY, OrganizationSeed,
    RateLimitConfig,
};
pub use counters::{CounterEntry, CounterSnapshot, RecordedRequest, key_fingerprint};
pub use faults::{Fault, FaultKind};
pub use routes::{Route, UnknownRoute};

use clock::Clock;
use counters::Counters;
use faults::FaultTable;
use rate_limit::RateLimiter;
use state::State;

/// How long [`Emulator::shutdown`] lets open requests finish before it stops waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Everything the HTTP handlers share. Deliberately not `Debug`: it holds API keys.
struct Shared {
    clock: Clock,
    state: Mutex<State>,
    limiter: RateLimiter,
    faults: FaultTable,
    counters: Counters,
}

impl Shared {
    fn new(config: &EmulatorConfig) -> Self {
        let clock = Clock::default();
        let state = State::new(config, clock.now());
        Self {
            clock,
            state: Mutex::new(state),
            limiter: RateLimiter::new(config.rate_limit),
            faults: FaultTable::new(config.seed),
            counters: Counters::new(config.request_log_capacity),
        }
    }
}

/// Locks a mutex, carrying on if another thread panicked while holding it: every critical
/// section leaves the data consistent between statements, so the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running emulator. Dropping it, or calling [`Emulator::shutdown`], stops the server.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Starts an emulator on a free loopback port (`127.0.0.1:0`).
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Self::serve(config, listener).await
    }

    /// Starts an emulator on an already bound listener.
    pub async fn serve(config: EmulatorConfig, listener: TcpListener) -> std::io::Result<Emulator> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&config));
        let app = router(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                stopped.await.ok();
            });
            if let Err(err) = server.await {
                tracing::warn!(error = %err, "emulator server stopped with an error");
            }
        });
        tracing::info!(emulator.addr = %addr, seed = config.seed, "emulator listening");
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The REST base URL, `http://127.0.0.1:PORT/v4`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v4", self.addr)
    }

    /// Adds a fault after those already active.
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.add(fault);
    }

    /// Removes every active fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// The active faults, in the order they are tried.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared.faults.list()
    }

    /// A copy of the request counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// Zeroes the counters and empties the request log.
    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }

    /// The recent requests, oldest first (at most `request_log_capacity` of them).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.counters.requests()
    }

    /// Moves the emulator clock forward: jobs progress and rate-limit buckets refill as if
    /// that much time had passed.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Starts a scheduled (`AUTO_SYNC`) sync of the company's enabled data models, as the
    /// platform's scheduler would, and returns its id. `None` when the company does not
    /// exist, a read sync of it is already running, or it has no enabled data models.
    pub fn start_auto_sync(&self, company_id: i64) -> Option<String> {
        let now = self.shared.clock.now();
        lock(&self.shared.state).start_auto_sync(company_id, now)
    }

    /// Stops accepting connections, lets open requests finish (up to a short grace period)
    /// and stops the server.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
        tracing::info!(emulator.addr = %self.addr, "emulator stopped");
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The API under `/v4` and the admin paths under `/__emulator`.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .nest("/__emulator", admin::router())
        .fallback(dispatch::api)
        .with_state(shared)
}

/// Runs an emulator alone on `listen` until Ctrl-C or SIGTERM: the body of the binary's
/// `emulator --listen ADDR` subcommand.
pub async fn run_standalone(listen: SocketAddr, config: EmulatorConfig) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    run_until(listener, config, shutdown_signal()).await
}

/// Runs an emulator on `listener` until `shutdown` completes.
pub async fn run_until(
    listener: TcpListener,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let emulator = Emulator::serve(config, listener).await?;
    tracing::info!(base_url = %emulator.base_url(), "emulator ready; demo key {DEMO_API_KEY:?}");
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
