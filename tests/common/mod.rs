//! Starts the emulator and the gateway in-process on loopback port 0, and hands out
//! generated clients for them.

#![allow(dead_code)]

use commenda_sync_gateway::emulator::{DEMO_API_KEY, Emulator, EmulatorConfig};
use commenda_sync_gateway::pb::v1 as pb;
use commenda_sync_gateway::pb::v1::sync_config_service_client::SyncConfigServiceClient;
use commenda_sync_gateway::pb::v1::sync_service_client::SyncServiceClient;
use commenda_sync_gateway::server::{self, RunningServer, Settings};
use commenda_sync_gateway::upstream::ApiKey;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// The emulator, the gateway in front of it, and a channel to the gateway.
pub struct Harness {
    pub emulator: Emulator,
    pub server: RunningServer,
    pub channel: Channel,
}

impl Harness {
    /// Fast emulator, no rate limit, the demo key as the gateway's default key.
    pub async fn start() -> Self {
        Self::with(EmulatorConfig::for_tests(), |_| {}).await
    }

    /// A harness with a chosen emulator configuration and adjusted gateway settings.
    pub async fn with(config: EmulatorConfig, adjust: impl FnOnce(&mut Settings)) -> Self {
        let emulator = Emulator::start(config).await.expect("emulator starts");
        let mut settings = Settings::new(emulator.base_url());
        settings.default_key = Some(ApiKey::parse(DEMO_API_KEY).expect("demo key is valid"));
        adjust(&mut settings);

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let server = server::spawn(listener, settings).expect("gateway starts");
        let url = format!("http://{}", server.addr());
        let channel = Channel::from_shared(url)
            .expect("url")
            .connect()
            .await
            .expect("connect");
        Self {
            emulator,
            server,
            channel,
        }
    }

    pub fn syncs(&self) -> SyncServiceClient<Channel> {
        SyncServiceClient::new(self.channel.clone())
    }

    pub fn configs(&self) -> SyncConfigServiceClient<Channel> {
        SyncConfigServiceClient::new(self.channel.clone())
    }
}

/// The newest seeded (finished) sync of a demo company, read through the gateway.
pub async fn newest_sync(harness: &Harness, company_id: i64) -> pb::Sync {
    let list = pb::ListSyncsRequest {
        company_id,
        ..Default::default()
    };
    let page = harness
        .syncs()
        .list_syncs(list)
        .await
        .expect("list")
        .into_inner();
    page.syncs
        .into_iter()
        .next()
        .expect("the company has seeded syncs")
}

/// A sync as GetSync answers it now.
pub async fn sync_now(harness: &Harness, sync_id: &str) -> pb::Sync {
    let get = pb::GetSyncRequest {
        sync_id: sync_id.to_owned(),
    };
    let response = harness.syncs().get_sync(get).await.expect("get");
    response.into_inner().sync.expect("sync")
}

/// The first page of a sync's jobs, as ListSyncJobs answers it now.
pub async fn jobs_now(harness: &Harness, sync_id: &str) -> Vec<pb::Job> {
    let list = pb::ListSyncJobsRequest {
        sync_id: sync_id.to_owned(),
        ..Default::default()
    };
    harness
        .syncs()
        .list_sync_jobs(list)
        .await
        .expect("jobs")
        .into_inner()
        .jobs
}

/// A request carrying an API key as `x-api-key`.
pub fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(key).expect("ascii key");
    request.metadata_mut().insert("x-api-key", value);
    request
}

/// Asserts the code, then that `BadRequest` names `field`; returns the status.
pub fn assert_invalid_field(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad_request = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let fields: Vec<_> = bad_request
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert!(
        fields.contains(&field),
        "BadRequest names {fields:?}, expected {field}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.domain, "sync.commenda.io");
}
