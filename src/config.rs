//! Every setting of the binary, as command-line flags that can also come from environment
//! variables. Defaults are chosen so that a bare `commenda-sync-gateway` serves the gRPC API
//! against the built-in emulator on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::server::Settings;
use crate::upstream::{ApiKey, BudgetConfig, InvalidApiKey};
use crate::watch::WatchSettings;

/// A gRPC gateway for the Commenda Integrations sync API.
#[derive(Debug, Parser)]
#[command(name = "commenda-sync-gateway", version, about)]
pub struct Cli {
    /// Run something other than the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The gateway's settings.
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// Log output format.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the REST emulator alone, for tests and for people writing REST clients.
    Emulator {
        /// Address the emulator listens on.
        #[arg(long, env = "EMULATOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,

        /// How the emulated API behaves.
        #[command(flatten)]
        emulator: EmulatorArgs,
    },
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of the gateway itself.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address the gRPC server listens on; port 0 picks a free port.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Base URL of the REST API, ending in `/v4` (for example
    /// `https://api.integrations.commenda.io/v4`). When unset, the built-in emulator is
    /// started on a loopback port and used.
    #[arg(long, env = "COMMENDA_UPSTREAM_URL")]
    pub upstream_url: Option<String>,

    /// API key used for callers that send none. With the built-in emulator it defaults to
    /// the emulator's demo key.
    #[arg(
        long = "default-api-key",
        env = "COMMENDA_API_KEY",
        hide_env_values = true
    )]
    pub default_api_key: Option<String>,

    /// Refuse calls that carry no key of their own, even when a default key is set.
    #[arg(long, env = "GATEWAY_REQUIRE_CALLER_KEY")]
    pub require_caller_key: bool,

    /// Longest wait for one upstream answer, in milliseconds.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_timeout_ms: u64,

    /// Largest upstream body read, in bytes; larger answers fail with INTERNAL.
    #[arg(long, env = "GATEWAY_MAX_UPSTREAM_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_upstream_body_bytes: usize,

    /// Secret that page tokens are sealed with. Give every replica the same one so tokens
    /// work across replicas and restarts; when unset, a random secret per process.
    #[arg(long, env = "GATEWAY_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,

    /// How long in-flight calls may take to finish after SIGTERM or SIGINT, in
    /// milliseconds.
    #[arg(long, env = "GATEWAY_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,

    /// How the streaming RPCs poll.
    #[command(flatten)]
    pub watch: WatchArgs,

    /// How the built-in emulator behaves, when it runs.
    #[command(flatten)]
    pub emulator: EmulatorArgs,
}

/// Settings of the shared pollers behind WatchSync and WaitSync, and of the per-key request
/// budget they share with unary calls.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Time between polls of a running sync, in milliseconds.
    #[arg(long, env = "GATEWAY_WATCH_POLL_INTERVAL_MS", default_value_t = 2_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_poll_interval_ms: u64,

    /// Time between polls of a sync that is not running, in milliseconds (±20% jitter).
    #[arg(long, env = "GATEWAY_WATCH_IDLE_POLL_INTERVAL_MS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_idle_poll_interval_ms: u64,

    /// Time between heartbeats on a WatchSync stream, in milliseconds.
    #[arg(long, env = "GATEWAY_WATCH_HEARTBEAT_INTERVAL_MS", default_value_t = 15_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_heartbeat_interval_ms: u64,

    /// Temporary upstream failures in a row after which a watch ends with UNAVAILABLE.
    #[arg(long, env = "GATEWAY_WATCH_MAX_FAILURES", default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_max_failures: u32,

    /// How long polls may keep failing before a watch ends with UNAVAILABLE, in
    /// milliseconds.
    #[arg(
        long,
        env = "GATEWAY_WATCH_FAILURE_BUDGET_MS",
        default_value_t = 120_000
    )]
    pub watch_failure_budget_ms: u64,

    /// Upstream requests per minute per API key the gateway allows itself (pollers wait
    /// for it, unary calls only spend it); a safe share of the API's 100.
    #[arg(long, env = "GATEWAY_WATCH_BUDGET_PER_MINUTE", default_value_t = 80,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_budget_per_minute: u32,

    /// Requests per API key that may go at once after a quiet spell.
    #[arg(long, env = "GATEWAY_WATCH_BUDGET_BURST", default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_budget_burst: u32,
}

impl WatchArgs {
    fn watch_settings(&self) -> WatchSettings {
        WatchSettings {
            poll_interval: Duration::from_millis(self.watch_poll_interval_ms),
            idle_poll_interval: Duration::from_millis(self.watch_idle_poll_interval_ms),
            heartbeat_interval: Duration::from_millis(self.watch_heartbeat_interval_ms),
            max_failures: self.watch_max_failures,
            failure_budget: Duration::from_millis(self.watch_failure_budget_ms),
        }
    }

    fn budget(&self) -> BudgetConfig {
        BudgetConfig {
            per_minute: self.watch_budget_per_minute,
            burst: self.watch_budget_burst,
        }
    }
}

/// Settings of the built-in emulator.
#[derive(Debug, Clone, Args)]
pub struct EmulatorArgs {
    /// Seed of the emulator's simulation; the same seed and requests give the same outcomes.
    #[arg(long, env = "EMULATOR_SEED", default_value_t = 7)]
    pub emulator_seed: u64,

    /// How long each emulated job runs, in milliseconds (before jitter).
    #[arg(long, env = "EMULATOR_JOB_DURATION_MS", default_value_t = 4_000)]
    pub emulator_job_duration_ms: u64,

    /// Requests per minute per key the emulator allows (burst: twice as many); 0 turns the
    /// limit off.
    #[arg(long, env = "EMULATOR_RATE_LIMIT", default_value_t = 100)]
    pub emulator_rate_limit: u32,
}

/// A configuration the gateway cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The default key is malformed.
    #[error("COMMENDA_API_KEY / --default-api-key: {0}")]
    DefaultKey(#[from] InvalidApiKey),
    /// The upstream URL is not an http(s) URL.
    #[error("--upstream-url must start with http:// or https://")]
    UpstreamUrl,
}

impl GatewayArgs {
    /// The server settings for a given upstream URL.
    pub fn settings(&self, upstream_url: String) -> Result<Settings, ConfigError> {
        if !(upstream_url.starts_with("http://") || upstream_url.starts_with("https://")) {
            return Err(ConfigError::UpstreamUrl);
        }
        let default_key = self
            .default_api_key
            .as_deref()
            .map(ApiKey::parse)
            .transpose()?;
        Ok(Settings {
            upstream_url,
            default_key,
            require_caller_key: self.require_caller_key,
            upstream_timeout: Duration::from_millis(self.upstream_timeout_ms),
            max_upstream_body_bytes: self.max_upstream_body_bytes,
            page_token_secret: self.page_token_secret.clone(),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            request_budget: self.watch.budget(),
            watch: self.watch.watch_settings(),
        })
    }
}
