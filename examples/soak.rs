//! The soak load: a steady mix of every unary RPC plus long-lived WatchSync streams against
//! a running gateway, for a fixed time. It counts every outcome by RPC and status code and
//! prints one JSON summary; `scripts/soak.sh` starts the processes and judges the result.
//!
//! Usage: `soak ADDR SECONDS STREAMS UNARY_WORKERS`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use commenda_sync_gateway::pb::v1 as pb;
use commenda_sync_gateway::pb::v1::sync_config_service_client::SyncConfigServiceClient;
use commenda_sync_gateway::pb::v1::sync_service_client::SyncServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Codes the injected faults and ordinary sync states explain: upstream failures
/// (UNAVAILABLE, INTERNAL), slow answers (DEADLINE_EXCEEDED) and state conflicts such as
/// creating a sync while one runs (FAILED_PRECONDITION). Anything else is unexpected.
const EXPECTED: [Code; 5] = [
    Code::Ok,
    Code::Unavailable,
    Code::Internal,
    Code::DeadlineExceeded,
    Code::FailedPrecondition,
];

const COMPANIES: [i64; 4] = [496, 497, 498, 499];

/// Outcomes by RPC and code.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<(String, String), u64>>);

impl Tally {
    fn record(&self, rpc: &str, code: Code) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *counts
            .entry((rpc.to_owned(), format!("{code:?}")))
            .or_default() += 1;
    }
}

/// Syncs seen lately, for the RPCs that need an id.
#[derive(Default)]
struct Syncs(Mutex<Vec<String>>);

impl Syncs {
    fn add(&self, id: String) {
        let mut ids = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ids.push(id);
        let excess = ids.len().saturating_sub(200);
        ids.drain(..excess);
    }

    fn pick(&self, n: usize) -> Option<String> {
        let ids = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (!ids.is_empty()).then(|| ids[n % ids.len()].clone())
    }
}

fn code_of<T>(result: &Result<T, Status>) -> Code {
    result.as_ref().map_or_else(Status::code, |_| Code::Ok)
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(5));
    request
}

fn write_config() -> pb::WriteSyncConfig {
    pb::WriteSyncConfig {
        data_model: "ACCOUNT".into(),
        category: pb::IntegrationCategory::Accounting.into(),
        enabled: true,
        frequency: pb::SyncFrequency::Weekly.into(),
        interval: 1,
        scope_access: Some(pb::ScopeAccess {
            read: true,
            ..Default::default()
        }),
        sync_from: None,
    }
}

/// One call of RPC number `n % 9`.
async fn unary(channel: &Channel, n: usize, syncs: &Syncs, tally: &Tally) {
    let mut client = SyncServiceClient::new(channel.clone());
    let mut configs = SyncConfigServiceClient::new(channel.clone());
    let company = COMPANIES[n % COMPANIES.len()];
    let Some(sync_id) = syncs
        .pick(n)
        .or_else(|| (n % 9 > 5 || n % 9 < 2).then(String::new))
    else {
        return;
    };
    let (rpc, code) = match n % 9 {
        0 => {
            let result = client
                .create_sync(request(pb::CreateSyncRequest {
                    company_id: company,
                    ..Default::default()
                }))
                .await;
            if let Ok(created) = &result {
                syncs.add(created.get_ref().sync_id.clone());
            }
            ("CreateSync", code_of(&result))
        }
        1 => {
            let result = client
                .list_syncs(request(pb::ListSyncsRequest {
                    company_id: company,
                    ..Default::default()
                }))
                .await;
            if let Ok(page) = &result {
                page.get_ref()
                    .syncs
                    .iter()
                    .for_each(|s| syncs.add(s.id.clone()));
            }
            ("ListSyncs", code_of(&result))
        }
        2 => (
            "GetSync",
            code_of(
                &client
                    .get_sync(request(pb::GetSyncRequest { sync_id }))
                    .await,
            ),
        ),
        3 => {
            let message = pb::ListSyncJobsRequest {
                sync_id,
                ..Default::default()
            };
            (
                "ListSyncJobs",
                code_of(&client.list_sync_jobs(request(message)).await),
            )
        }
        4 => {
            let message = pb::CancelSyncRequest {
                sync_id,
                ..Default::default()
            };
            (
                "CancelSync",
                code_of(&client.cancel_sync(request(message)).await),
            )
        }
        5 => {
            let message = pb::RetrySyncRequest {
                sync_id,
                ..Default::default()
            };
            (
                "RetrySync",
                code_of(&client.retry_sync(request(message)).await),
            )
        }
        6 => {
            let message = pb::GetOrganizationSyncConfigRequest {
                integration_type: pb::IntegrationType::Netsuite.into(),
            };
            (
                "GetOrganizationSyncConfig",
                code_of(&configs.get_organization_sync_config(request(message)).await),
            )
        }
        7 => {
            let message = pb::UpdateOrganizationSyncConfigRequest {
                configs: vec![write_config()],
                propagate: false,
            };
            (
                "UpdateOrganizationSyncConfig",
                code_of(
                    &configs
                        .update_organization_sync_config(request(message))
                        .await,
                ),
            )
        }
        _ => {
            let message = pb::UpdateCompanySyncConfigRequest {
                company_id: company,
                configs: vec![write_config()],
            };
            (
                "UpdateCompanySyncConfig",
                code_of(&configs.update_company_sync_config(request(message)).await),
            )
        }
    };
    tally.record(rpc, code);
}

/// Watches syncs one after another until `end`, recording how each stream ended.
async fn watcher(channel: Channel, n: usize, end: Instant, syncs: Arc<Syncs>, tally: Arc<Tally>) {
    let mut client = SyncServiceClient::new(channel);
    let mut round = n;
    while Instant::now() < end {
        let Some(sync_id) = syncs.pick(round) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        round += 7;
        let opened = client
            .watch_sync(pb::WatchSyncRequest {
                sync_id,
                revision: 0,
            })
            .await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                tally.record("WatchSync(open)", status.code());
                continue;
            }
        };
        let ended = loop {
            match tokio::time::timeout_at(end, stream.message()).await {
                Err(_) => return,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => break Code::Ok,
                Ok(Err(status)) => break status.code(),
            }
        };
        tally.record("WatchSync(end)", ended);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, seconds, streams, workers] = args.as_slice() else {
        return Err("usage: soak ADDR SECONDS STREAMS UNARY_WORKERS".into());
    };
    let end = Instant::now() + Duration::from_secs(seconds.parse()?);
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let (syncs, tally) = (Arc::new(Syncs::default()), Arc::new(Tally::default()));

    let mut tasks = Vec::new();
    for n in 0..streams.parse::<usize>()? {
        tasks.push(tokio::spawn(watcher(
            channel.clone(),
            n,
            end,
            syncs.clone(),
            tally.clone(),
        )));
    }
    for worker in 0..workers.parse::<usize>()? {
        let (channel, syncs, tally) = (channel.clone(), syncs.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while Instant::now() < end {
                unary(&channel, n, &syncs, &tally).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }

    let counts = tally.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let unexpected: u64 = counts
        .iter()
        .filter(|((_, code), _)| !EXPECTED.iter().any(|c| format!("{c:?}") == *code))
        .map(|(_, n)| n)
        .sum();
    let total: u64 = counts.values().sum();
    let outcomes: Vec<_> = counts
        .iter()
        .map(|((rpc, code), n)| serde_json::json!({"rpc": rpc, "code": code, "count": n}))
        .collect();
    let summary =
        serde_json::json!({"total": total, "unexpected": unexpected, "outcomes": outcomes});
    println!("{summary}");
    Ok(())
}
