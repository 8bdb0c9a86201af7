//! The binary: parse the configuration, set up logging, start the emulator when no upstream
//! is configured, serve until SIGTERM or SIGINT, then drain.

use std::process::ExitCode;

use clap::Parser;
use commenda_sync_gateway::config::{Cli, Command, EmulatorArgs};
use commenda_sync_gateway::emulator::{self, Emulator};
use commenda_sync_gateway::upstream::ApiKey;
use commenda_sync_gateway::{server, telemetry};
use tokio::net::TcpListener;
use tracing::{error, info};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::init(cli.log_format, cli.otlp_endpoint.as_deref()) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("commenda-sync-gateway: {error}");
            return ExitCode::FAILURE;
        }
    };

    let result = match cli.command {
        Some(Command::Emulator { listen, emulator }) => run_emulator(listen, &emulator).await,
        None => run_gateway(cli.gateway).await,
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(error = %format!("{error:#}"), "exiting");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn run_gateway(args: commenda_sync_gateway::config::GatewayArgs) -> anyhow::Result<()> {
    let (upstream_url, emulator) = match &args.upstream_url {
        Some(url) => (url.clone(), None),
        None => {
            let emulator = Emulator::start(emulator_config(&args.emulator)).await?;
            info!(url = %emulator.base_url(), "no upstream configured; serving the built-in emulator");
            (emulator.base_url(), Some(emulator))
        }
    };

    let mut settings = args.settings(upstream_url.clone())?;
    if emulator.is_some() && settings.default_key.is_none() {
        settings.default_key = Some(ApiKey::parse(emulator::DEMO_API_KEY)?);
    }
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    announce(addr, &upstream_url, emulator.is_some());

    server::serve(listener, settings, shutdown).await?;
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    info!("stopped");
    Ok(())
}

async fn run_emulator(listen: std::net::SocketAddr, args: &EmulatorArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let emulator = Emulator::serve(emulator_config(args), listener).await?;
    let shutdown = shutdown_signal()?;
    info!(url = %emulator.base_url(), "emulator serving");
    announce(emulator.addr(), &emulator.base_url(), true);
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}

/// Prints one JSON line on stdout once the server is bound, so scripts and tests can read
/// the address of a server started on port 0 without parsing logs.
fn announce(addr: std::net::SocketAddr, upstream: &str, emulator: bool) {
    let line = serde_json::json!({
        "event": "serving",
        "listen": addr.to_string(),
        "upstream": upstream,
        "emulator": emulator,
    });
    println!("{line}");
}

/// The emulator's production-like defaults, adjusted by the flags: jitter and start delay
/// scale with the job duration so that short runs stay short.
fn emulator_config(args: &EmulatorArgs) -> emulator::EmulatorConfig {
    let duration = std::time::Duration::from_millis(args.emulator_job_duration_ms);
    let mut config = emulator::EmulatorConfig {
        seed: args.emulator_seed,
        ..Default::default()
    };
    config.timing.duration = duration;
    config.timing.jitter = duration / 4;
    config.timing.start_delay = duration / 8;
    let extra = (0..i64::from(args.emulator_extra_companies))
        .map(|i| emulator::CompanySeed::new(10_000 + i, "Load Test Co", "XERO"));
    config.organizations[0].companies.extend(extra);
    config.rate_limit = (args.emulator_rate_limit > 0).then(|| emulator::RateLimitConfig {
        per_minute: args.emulator_rate_limit,
        burst: args.emulator_rate_limit.saturating_mul(2),
    });
    config
}

/// Installs the SIGTERM and SIGINT handlers now, so a signal that arrives right after the
/// server announced itself is not missed, and returns a future that resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        info!("shutdown signal received");
    })
}
