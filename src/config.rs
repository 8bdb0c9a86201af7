//! Every setting of the binary, as command-line flags that can also come from environment
//! variables. Defaults are chosen so that a bare `commenda-sync-gateway` serves the gRPC API
//! against the built-in emulator on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::server::{Settings, TlsFiles};
use crate::upstream::{ApiKey, InvalidApiKey, RetryPolicy, UpstreamOptions};

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

    /// Attempts per upstream read (GET), the first included; failed reads are retried after
    /// connection errors, 429, 502, 503 and 504. Writes are never retried. 1 turns retries
    /// off.
    #[arg(long, env = "GATEWAY_UPSTREAM_READ_ATTEMPTS", default_value_t = 3)]
    pub upstream_read_attempts: u32,

    /// Concurrent upstream requests allowed per API key; more wait, within their deadline,
    /// then fail with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "GATEWAY_UPSTREAM_MAX_IN_FLIGHT_PER_KEY",
        default_value_t = 32
    )]
    pub upstream_max_in_flight_per_key: usize,

    /// A PEM file with a CA certificate to trust for the upstream's TLS, in addition to the
    /// built-in roots.
    #[arg(long, env = "GATEWAY_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<std::path::PathBuf>,

    /// Secret that page tokens are sealed with. Give every replica the same one so tokens
    /// work across replicas and restarts; when unset, a random secret per process.
    #[arg(long, env = "GATEWAY_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,

    /// How long in-flight calls may take to finish after SIGTERM or SIGINT, in
    /// milliseconds.
    #[arg(long, env = "GATEWAY_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,

    /// Consecutive failed upstream answers (no answer, 5xx, the default key refused) after
    /// which `grpc.health.v1` reports NOT_SERVING.
    #[arg(long, env = "GATEWAY_HEALTH_FAILURE_THRESHOLD", default_value_t = 3)]
    pub health_failure_threshold: u32,

    /// How often a down upstream is probed to learn that it recovered, in milliseconds.
    #[arg(
        long,
        env = "GATEWAY_HEALTH_PROBE_INTERVAL_MS",
        default_value_t = 5_000
    )]
    pub health_probe_interval_ms: u64,

    /// Unary calls served at once; beyond it calls are refused at once with
    /// RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,

    /// Largest request message accepted, in bytes.
    #[arg(long, env = "GATEWAY_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Address of the Prometheus metrics listener (`GET /metrics`), for example
    /// `0.0.0.0:9090`. Off when unset.
    #[arg(long, env = "GATEWAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Origins allowed to call from a browser over gRPC-Web (comma-separated, `*` for any).
    /// gRPC-Web itself is always on, on the gRPC port; without origins, only same-origin
    /// pages and non-browser clients can use it.
    #[arg(long, env = "GATEWAY_CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,

    /// PEM certificate chain for TLS on the gRPC listener; needs `--tls-key`. Without both,
    /// the listener speaks plaintext HTTP/2.
    #[arg(long, env = "GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// How long the answer of an idempotent write (CreateSync, RetrySync or CancelSync with
    /// a `request_id`) is kept, in seconds.
    #[arg(long, env = "GATEWAY_IDEMPOTENCY_TTL_SECS", default_value_t = 600)]
    pub idempotency_ttl_secs: u64,

    /// How many idempotent answers are kept per write RPC; the oldest are dropped first.
    #[arg(
        long,
        env = "GATEWAY_IDEMPOTENCY_MAX_ENTRIES",
        default_value_t = 10_000
    )]
    pub idempotency_max_entries: usize,

    /// How the built-in emulator behaves, when it runs.
    #[command(flatten)]
    pub emulator: EmulatorArgs,
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
    /// A file named by a flag could not be read.
    #[error("cannot read {path}")]
    File {
        /// The path given.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
            upstream: UpstreamOptions {
                timeout: Duration::from_millis(self.upstream_timeout_ms),
                max_body_bytes: self.max_upstream_body_bytes,
                retry: RetryPolicy {
                    max_attempts: self.upstream_read_attempts.max(1),
                    ..RetryPolicy::default()
                },
                max_in_flight_per_key: self.upstream_max_in_flight_per_key,
                health_failure_threshold: self.health_failure_threshold,
            },
            health_probe_interval: Duration::from_millis(self.health_probe_interval_ms),
            max_concurrent_calls: self.max_concurrent_calls,
            max_message_bytes: self.max_message_bytes,
            tls: self.tls()?,
            metrics_listen: self.metrics_listen,
            cors_allow_origins: self.cors_allow_origins.clone(),
            upstream_ca_pem: self.upstream_ca_pem()?,
            page_token_secret: self.page_token_secret.clone(),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs),
            idempotency_max_entries: self.idempotency_max_entries,
        })
    }

    fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(TlsFiles {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        }))
    }

    fn upstream_ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.upstream_ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|source| ConfigError::File {
            path: path.clone(),
            source,
        })?;
        Ok(Some(pem))
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::File {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The README's configuration table must name every flag, so it cannot fall behind.
    #[test]
    fn readme_documents_every_flag() {
        let readme = include_str!("../README.md");
        let command = Cli::command();
        for argument in command.get_arguments() {
            let Some(long) = argument.get_long() else {
                continue;
            };
            if ["help", "version"].contains(&long) {
                continue;
            }
            assert!(
                readme.contains(&format!("`--{long}`")),
                "README lacks `--{long}`"
            );
            if let Some(env) = argument.get_env() {
                let env = env.to_string_lossy();
                assert!(readme.contains(&format!("`{env}`")), "README lacks `{env}`");
            }
        }
    }
}
