//! The benchmark client that `scripts/bench.py` drives. It measures what h2load cannot:
//! per-call latency percentiles at concurrency 1, and the time from spawning the gateway to
//! its first SERVING health answer. It also writes the gRPC request frames that h2load sends.
//!
//! Every subcommand prints one JSON object on stdout and exits non-zero on any failed call,
//! so a broken gateway never produces figures.
//!
//! ```sh
//! cargo run --release --example bench_client -- latency --gateway 127.0.0.1:50051 \
//!     --rest-url http://127.0.0.1:8080/v4 --sync-id ID --calls 2000
//! cargo run --release --example bench_client -- start --bin target/release/commenda-sync-gateway \
//!     --upstream-url http://127.0.0.1:8080/v4 --runs 7
//! cargo run --release --example bench_client -- frame get-sync --sync-id ID --out get_sync.bin
//! ```

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use commenda_sync_gateway::pb::v1::sync_service_client::SyncServiceClient;
use commenda_sync_gateway::pb::v1::{GetSyncRequest, ListSyncsRequest};
use prost::Message;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Benchmark client for the gateway.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Sequential calls (concurrency 1) of GetSync through the gateway, the same read as a
    /// direct REST GET, and the health check, interleaved call by call.
    Latency(LatencyArgs),
    /// Spawns the gateway several times and times spawn to the first SERVING health answer.
    Start(StartArgs),
    /// Writes one length-prefixed gRPC request frame, the body h2load sends.
    Frame {
        /// Which request.
        #[command(subcommand)]
        kind: FrameKind,
        /// Where to write the frame.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct LatencyArgs {
    /// The gateway's gRPC address (host:port).
    #[arg(long)]
    gateway: String,
    /// The emulator's REST base URL, ending in `/v4`.
    #[arg(long)]
    rest_url: String,
    /// API key sent on the direct REST calls (the gateway uses its default key).
    #[arg(long, default_value = "commenda-demo-key")]
    api_key: String,
    /// A sync that exists, read by both GetSync and the REST GET.
    #[arg(long)]
    sync_id: String,
    /// Untimed rounds first, to open connections and warm caches.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Timed rounds; each round makes one call of each kind.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// The gateway binary.
    #[arg(long)]
    bin: PathBuf,
    /// Upstream base URL passed to the gateway.
    #[arg(long)]
    upstream_url: String,
    /// Default API key passed to the gateway.
    #[arg(long, default_value = "commenda-demo-key")]
    api_key: String,
    /// How many starts to time.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Give up on one start after this long, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
enum FrameKind {
    /// `GetSyncRequest`.
    GetSync {
        /// The sync to read.
        #[arg(long)]
        sync_id: String,
    },
    /// `ListSyncsRequest`.
    ListSyncs {
        /// The company whose syncs to list.
        #[arg(long)]
        company_id: i64,
        /// Syncs per page.
        #[arg(long, default_value_t = 20)]
        page_size: i32,
    },
    /// `grpc.health.v1.HealthCheckRequest` for the overall service (`""`).
    Health,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let report = match Cli::parse().command {
        Cmd::Latency(args) => latency(args).await?,
        Cmd::Start(args) => start(args).await?,
        Cmd::Frame { kind, out } => frame(kind, out)?,
    };
    println!("{report}");
    Ok(())
}

/// The three kinds of call the latency run compares.
#[derive(Debug, Clone, Copy)]
enum Kind {
    GetSync,
    RestGet,
    Health,
}

const KINDS: [Kind; 3] = [Kind::GetSync, Kind::RestGet, Kind::Health];

/// One connection to each side, reused for every call, as a long-lived client would.
struct Clients {
    sync: SyncServiceClient<Channel>,
    health: HealthClient<Channel>,
    http: reqwest::Client,
    rest_sync_url: String,
    api_key: String,
    sync_id: String,
}

impl Clients {
    async fn connect(args: &LatencyArgs) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{}", args.gateway))?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("connecting to the gateway")?;
        Ok(Self {
            sync: SyncServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            http: reqwest::Client::builder().tcp_nodelay(true).build()?,
            rest_sync_url: format!("{}/core/syncs/{}", args.rest_url, args.sync_id),
            api_key: args.api_key.clone(),
            sync_id: args.sync_id.clone(),
        })
    }

    /// Makes one call and returns how long it took; any failure ends the run.
    async fn call(&mut self, kind: Kind) -> anyhow::Result<Duration> {
        let started = Instant::now();
        match kind {
            Kind::GetSync => {
                let request = GetSyncRequest {
                    sync_id: self.sync_id.clone(),
                };
                self.sync.get_sync(request).await.context("GetSync")?;
            }
            Kind::RestGet => {
                let response = self
                    .http
                    .get(&self.rest_sync_url)
                    .header("api_key", &self.api_key)
                    .send()
                    .await?;
                let status = response.status();
                response.bytes().await?;
                if !status.is_success() {
                    bail!("REST GET answered {status}");
                }
            }
            Kind::Health => {
                let request = HealthCheckRequest::default();
                let answer = self.health.check(request).await.context("health check")?;
                if answer.into_inner().status != ServingStatus::Serving as i32 {
                    bail!("health check is not SERVING");
                }
            }
        }
        Ok(started.elapsed())
    }
}

async fn latency(args: LatencyArgs) -> anyhow::Result<Value> {
    let mut clients = Clients::connect(&args).await?;
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..args.warmup + args.calls {
        // Rotate the order each round so that no kind always follows the same one.
        for offset in 0..KINDS.len() {
            let index = (round + offset) % KINDS.len();
            let elapsed = clients.call(KINDS[index]).await?;
            if round >= args.warmup {
                samples[index].push(elapsed);
            }
        }
    }
    let [get_sync, rest_get, health] = samples;
    Ok(json!({
        "calls": args.calls,
        "warmup": args.warmup,
        "get_sync": summary(get_sync),
        "rest_get": summary(rest_get),
        "health": summary(health),
    }))
}

/// Percentiles by nearest rank, in microseconds.
fn summary(mut samples: Vec<Duration>) -> Value {
    samples.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let rank = |q: f64| {
        let index = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        micros(samples[index])
    };
    let total: Duration = samples.iter().sum();
    json!({
        "n": samples.len(),
        "p50_us": rank(0.50),
        "p90_us": rank(0.90),
        "p99_us": rank(0.99),
        "min_us": micros(samples[0]),
        "max_us": micros(samples[samples.len() - 1]),
        "mean_us": micros(total) / samples.len() as f64,
    })
}

async fn start(args: StartArgs) -> anyhow::Result<Value> {
    let mut runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let limit = Duration::from_millis(args.timeout_ms);
        let elapsed = tokio::time::timeout(limit, start_once(&args))
            .await
            .context("the gateway did not answer SERVING in time")??;
        runs.push(elapsed.as_secs_f64() * 1e3);
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "runs_ms": runs,
        "median_ms": sorted[sorted.len() / 2],
        "min_ms": sorted[0],
        "max_ms": sorted[sorted.len() - 1],
    }))
}

/// Spawns one gateway on port 0, reads its address from the serving line, polls the health
/// check until it answers SERVING, then kills the process.
async fn start_once(args: &StartArgs) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&args.bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream-url",
            &args.upstream_url,
        ])
        .args(["--default-api-key", &args.api_key])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the gateway")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).await?;
    let serving: Value = serde_json::from_str(&line).context("reading the serving line")?;
    let listen = serving["listen"].as_str().context("no listen address")?;

    let endpoint = Endpoint::from_shared(format!("http://{listen}"))?;
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await;
            if answer.is_ok_and(|a| a.into_inner().status == ServingStatus::Serving as i32) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    child.kill().await?;
    Ok(elapsed)
}

fn frame(kind: FrameKind, out: PathBuf) -> anyhow::Result<Value> {
    let (name, message) = match kind {
        FrameKind::GetSync { sync_id } => {
            ("GetSyncRequest", GetSyncRequest { sync_id }.encode_to_vec())
        }
        FrameKind::ListSyncs {
            company_id,
            page_size,
        } => {
            let request = ListSyncsRequest {
                company_id,
                page_size,
                ..Default::default()
            };
            ("ListSyncsRequest", request.encode_to_vec())
        }
        FrameKind::Health => (
            "HealthCheckRequest",
            HealthCheckRequest::default().encode_to_vec(),
        ),
    };
    // Uncompressed flag, then the message length as 4 big-endian bytes, then the message.
    let mut bytes = Vec::with_capacity(5 + message.len());
    bytes.push(0);
    bytes.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    bytes.extend_from_slice(&message);
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(json!({"message": name, "frame_bytes": bytes.len(), "out": out}))
}
