//! The watcher benchmark: many WatchSync streams spread over running syncs, against a
//! gateway and emulator started by `scripts/bench_watchers.sh`. Measures the gateway's RSS
//! per open stream, the upstream requests per minute the streams cause (emulator
//! counters), and the event latency from a sync's end (its `end_time`, on the emulator's
//! clock, which is this machine's) to the final state's arrival.
//!
//! Usage: `bench_watchers GATEWAY_ADDR EMULATOR_URL GATEWAY_PID STREAMS SYNCS SETTLE WINDOW`
//!
//! The request count is taken over `WINDOW` seconds starting `SETTLE` seconds after the
//! syncs were created, so runs with different stream counts measure the same phase of the
//! syncs' lives (all running).

use std::time::{Duration, SystemTime};

use commenda_sync_gateway::pb::v1 as pb;
use commenda_sync_gateway::pb::v1::sync_service_client::SyncServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Streams per connection, under the server's per-connection stream limit.
const STREAMS_PER_CONNECTION: usize = 150;
/// Where the extra demo companies start (`--emulator-extra-companies`).
const FIRST_COMPANY: i64 = 10_000;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn rss_kib(pid: &str) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("no value")?.parse()?)
}

async fn upstream_total(emulator: &str) -> Result<u64, Error> {
    let url = format!("{}/__emulator/counters", emulator.trim_end_matches("/v4"));
    let body: serde_json::Value = reqwest::get(url).await?.json().await?;
    body["total"].as_u64().ok_or_else(|| "no total".into())
}

async fn create_syncs(channel: &Channel, count: i64) -> Result<Vec<String>, Error> {
    let mut client = SyncServiceClient::new(channel.clone());
    let mut ids = Vec::new();
    for company_id in FIRST_COMPANY..FIRST_COMPANY + count {
        let request = pb::CreateSyncRequest {
            company_id,
            ..Default::default()
        };
        ids.push(client.create_sync(request).await?.into_inner().sync_id);
    }
    Ok(ids)
}

/// What one stream reports: its first message arrived, then its final state's latency.
enum Report {
    Opened,
    Final(Duration),
    Failed(String),
}

async fn watch(channel: Channel, sync_id: String, reports: mpsc::UnboundedSender<Report>) {
    let mut client = SyncServiceClient::new(channel);
    let request = pb::WatchSyncRequest {
        sync_id,
        revision: 0,
    };
    let mut stream = match client.watch_sync(request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => {
            let _ = reports.send(Report::Failed(format!("{:?}", status.code())));
            return;
        }
    };
    let mut opened = false;
    let mut last_end = None;
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                if !opened {
                    opened = true;
                    let _ = reports.send(Report::Opened);
                }
                if let Some(pb::watch_sync_response::Event::State(state)) = message.event {
                    last_end = state.sync.and_then(|s| s.end_time);
                }
            }
            Ok(None) => break,
            Err(status) => {
                let _ = reports.send(Report::Failed(format!("{:?}", status.code())));
                return;
            }
        }
    }
    let ended = last_end.and_then(|t| SystemTime::try_from(t).ok());
    let latency = ended.and_then(|t| SystemTime::now().duration_since(t).ok());
    let _ = reports.send(latency.map_or(Report::Failed("no end time".into()), Report::Final));
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, emulator, pid, streams, syncs, settle, window] = args.as_slice() else {
        return Err(
            "usage: bench_watchers ADDR EMULATOR_URL PID STREAMS SYNCS SETTLE WINDOW".into(),
        );
    };
    let settle = Duration::from_secs(settle.parse()?);
    let (streams, syncs): (usize, i64) = (streams.parse()?, syncs.parse()?);
    let window = Duration::from_secs(window.parse()?);
    let url = format!("http://{addr}");
    let connections = streams.div_ceil(STREAMS_PER_CONNECTION).max(1);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(Channel::from_shared(url.clone())?.connect().await?);
    }

    let ids = create_syncs(&channels[0], syncs).await?;
    let created = tokio::time::Instant::now();
    let rss_before = rss_kib(pid)?;
    let (reports, mut received) = mpsc::unbounded_channel();
    let started = tokio::time::Instant::now();
    for n in 0..streams {
        let channel = channels[n % connections].clone();
        tokio::spawn(watch(channel, ids[n % ids.len()].clone(), reports.clone()));
    }
    drop(reports);

    let (mut opened, mut finals, mut failures) = (0, Vec::new(), Vec::new());
    while opened + failures.len() < streams {
        match received.recv().await {
            Some(Report::Opened) => opened += 1,
            Some(Report::Final(latency)) => finals.push(latency),
            Some(Report::Failed(why)) => failures.push(why),
            None => break,
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let rss_open = rss_kib(pid)?;

    tokio::time::sleep_until(created + settle).await;
    let before = upstream_total(emulator).await?;
    tokio::time::sleep(window).await;
    let upstream_per_minute =
        (upstream_total(emulator).await? - before) as f64 * 60.0 / window.as_secs_f64();

    while let Some(report) = received.recv().await {
        match report {
            Report::Final(latency) => finals.push(latency),
            Report::Failed(why) => failures.push(why),
            Report::Opened => opened += 1,
        }
    }
    finals.sort();
    let rss_per_stream = (rss_open.saturating_sub(rss_before) * 1024) as f64 / streams as f64;
    let summary = serde_json::json!({
        "streams": streams, "syncs": syncs, "opened": opened, "open_secs": open_secs,
        "rss_before_kib": rss_before, "rss_open_kib": rss_open,
        "rss_per_stream_bytes": rss_per_stream,
        "upstream_per_minute": upstream_per_minute,
        "finals": finals.len(), "failures": failures.len(),
        "latency_p50_ms": percentile(&finals, 0.5), "latency_p99_ms": percentile(&finals, 0.99),
    });
    println!("{summary}");
    Ok(())
}
