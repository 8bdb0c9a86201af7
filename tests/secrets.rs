//! API keys leave the gateway only as the upstream `api_key` header.
//!
//! One session at TRACE level for every crate (gateway, emulator, tonic, h2, hyper, reqwest,
//! rustls): every RPC with a key in `x-api-key`, another as `authorization: Bearer`, and the
//! gateway's default key, then the error paths. Afterwards no key may appear in the captured
//! log, in any status message or detail, or in any response metadata. This file is its own
//! test binary, so the global subscriber it installs sees nothing but this session.

mod common;

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use commenda_sync_gateway::emulator::{
    EmulatorConfig, Fault, FaultKind, JobTiming, OrganizationSeed, Route,
};
use commenda_sync_gateway::pb::v1 as pb;
use commenda_sync_gateway::upstream::ApiKey;
use common::Harness;
use tonic::metadata::{KeyAndValueRef, MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;
use tracing_subscriber::EnvFilter;

/// Sent by the caller as `x-api-key`.
const HEADER_KEY: &str = "sk-live-SECRET-0123456789abcdef";
/// Sent by the caller as `authorization: Bearer`.
const BEARER_KEY: &str = "sk-live-BEARER-fedcba9876543210";
/// The gateway's default key.
const DEFAULT_KEY: &str = "sk-live-DEFAULT-a1b2c3d4e5f60718";
/// A key the upstream does not know.
const WRONG_KEY: &str = "sk-live-WRONG-99887766554433221";
const KEYS: [&str; 4] = [HEADER_KEY, BEARER_KEY, DEFAULT_KEY, WRONG_KEY];

const COMPANY: i64 = 496;

/// Everything every subscriber layer wrote.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A writer into [`LOG`].
struct Capture;

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends every event of every target, `log` records included, into [`LOG`].
fn capture_everything() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("trace"))
        .with_writer(|| Capture)
        .with_ansi(false)
        .init();
}

fn captured_log() -> String {
    let log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&log).into_owned()
}

/// Where a call's key comes from.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Header(&'static str),
    Bearer(&'static str),
    Default,
}

impl Caller {
    fn request<T>(self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let (name, value) = match self {
            Caller::Header(key) => ("x-api-key", key.to_owned()),
            Caller::Bearer(key) => ("authorization", format!("Bearer {key}")),
            Caller::Default => return request,
        };
        let value = MetadataValue::try_from(value).expect("ascii");
        request.metadata_mut().insert(name, value);
        request
    }
}

/// All the text a caller was given back: messages, details, metadata.
#[derive(Default)]
struct Seen {
    texts: Vec<String>,
}

impl Seen {
    /// Keeps what a call returned and hands back its outcome.
    fn keep<T: std::fmt::Debug>(
        &mut self,
        result: Result<Response<T>, Status>,
    ) -> Result<T, Status> {
        match result {
            Ok(response) => {
                self.metadata(response.metadata());
                let message = response.into_inner();
                self.texts.push(format!("{message:?}"));
                Ok(message)
            }
            Err(status) => {
                self.status(&status);
                Err(status)
            }
        }
    }

    fn metadata(&mut self, metadata: &MetadataMap) {
        for entry in metadata.iter() {
            let (name, value) = match entry {
                KeyAndValueRef::Ascii(name, value) => (name.as_str(), value.as_encoded_bytes()),
                KeyAndValueRef::Binary(name, value) => (name.as_str(), value.as_encoded_bytes()),
            };
            self.texts.push(name.to_owned());
            self.texts.push(String::from_utf8_lossy(value).into_owned());
        }
    }

    /// The message, the raw details, every string of every decoded detail, the metadata.
    fn status(&mut self, status: &Status) {
        self.texts.push(status.message().to_owned());
        self.texts
            .push(String::from_utf8_lossy(status.details()).into_owned());
        self.metadata(status.metadata());
        let details = status.check_error_details().expect("details decode");
        if let Some(info) = details.error_info() {
            self.texts
                .extend([info.reason.clone(), info.domain.clone()]);
            for (name, value) in &info.metadata {
                self.texts.extend([name.clone(), value.clone()]);
            }
        }
        if let Some(info) = details.request_info() {
            let strings = [&info.request_id, &info.serving_data];
            self.texts.extend(strings.map(Clone::clone));
        }
        if let Some(info) = details.resource_info() {
            let strings = [
                &info.resource_type,
                &info.resource_name,
                &info.owner,
                &info.description,
            ];
            self.texts.extend(strings.map(Clone::clone));
        }
        if let Some(bad_request) = details.bad_request() {
            for violation in &bad_request.field_violations {
                let strings = [&violation.field, &violation.description];
                self.texts.extend(strings.map(Clone::clone));
            }
        }
        self.texts.push(format!("{details:?}"));
    }
}

/// Jobs that run for an hour, so a created sync can be cancelled; the clock is moved on
/// between callers instead.
fn emulator_config() -> EmulatorConfig {
    let mut organizations = OrganizationSeed::demo();
    organizations[0].api_keys = vec![
        HEADER_KEY.to_owned(),
        BEARER_KEY.to_owned(),
        DEFAULT_KEY.to_owned(),
    ];
    EmulatorConfig {
        organizations,
        timing: JobTiming {
            start_delay: Duration::from_millis(1),
            duration: Duration::from_secs(3600),
            jitter: Duration::from_millis(1),
        },
        ..EmulatorConfig::for_tests()
    }
}

fn write_config(data_model: &str) -> pb::WriteSyncConfig {
    pb::WriteSyncConfig {
        data_model: data_model.into(),
        category: pb::IntegrationCategory::Accounting.into(),
        enabled: true,
        frequency: pb::SyncFrequency::Daily.into(),
        interval: 1,
        scope_access: Some(pb::ScopeAccess {
            read: true,
            ..Default::default()
        }),
        sync_from: None,
    }
}

/// Every RPC once with `caller`'s key, all expected to succeed: create a sync, list and read
/// it, page through its jobs, cancel it, retry it, then read and write the configuration.
async fn every_rpc(harness: &Harness, caller: Caller, seen: &mut Seen) {
    let mut syncs = harness.syncs();
    let mut configs = harness.configs();
    let ok = Succeeds(caller);

    let create = pb::CreateSyncRequest {
        company_id: COMPANY,
        ..Default::default()
    };
    let created = seen.keep(syncs.create_sync(caller.request(create)).await);
    let sync_id = ok.check(created, "CreateSync").sync_id;

    let list = pb::ListSyncsRequest {
        company_id: COMPANY,
        page_size: 2,
        ..Default::default()
    };
    let page = ok.check(
        seen.keep(syncs.list_syncs(caller.request(list)).await),
        "ListSyncs",
    );
    let list = pb::ListSyncsRequest {
        company_id: COMPANY,
        page_size: 2,
        page_token: page.next_page_token,
        ..Default::default()
    };
    ok.check(
        seen.keep(syncs.list_syncs(caller.request(list)).await),
        "ListSyncs",
    );

    let get = pb::GetSyncRequest {
        sync_id: sync_id.clone(),
    };
    ok.check(
        seen.keep(syncs.get_sync(caller.request(get)).await),
        "GetSync",
    );

    let jobs = pb::ListSyncJobsRequest {
        sync_id: sync_id.clone(),
        page_size: 1,
        ..Default::default()
    };
    let jobs = caller.request(jobs);
    ok.check(seen.keep(syncs.list_sync_jobs(jobs).await), "ListSyncJobs");

    let cancel = pb::CancelSyncRequest {
        sync_id: sync_id.clone(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let cancel = caller.request(cancel);
    ok.check(seen.keep(syncs.cancel_sync(cancel).await), "CancelSync");

    let retry = pb::RetrySyncRequest {
        sync_id,
        ..Default::default()
    };
    ok.check(
        seen.keep(syncs.retry_sync(caller.request(retry)).await),
        "RetrySync",
    );

    let read = pb::GetOrganizationSyncConfigRequest {
        integration_type: pb::IntegrationType::Netsuite.into(),
    };
    let read = caller.request(read);
    ok.check(
        seen.keep(configs.get_organization_sync_config(read).await),
        "GetOrganizationSyncConfig",
    );

    let org = pb::UpdateOrganizationSyncConfigRequest {
        configs: vec![write_config("ACCOUNT")],
        propagate: false,
    };
    let org = caller.request(org);
    ok.check(
        seen.keep(configs.update_organization_sync_config(org).await),
        "UpdateOrganizationSyncConfig",
    );

    let company = pb::UpdateCompanySyncConfigRequest {
        company_id: COMPANY,
        configs: vec![write_config("INVOICE")],
    };
    let company = caller.request(company);
    ok.check(
        seen.keep(configs.update_company_sync_config(company).await),
        "UpdateCompanySyncConfig",
    );
}

/// Unwraps the answers of calls made with one caller's key.
struct Succeeds(Caller);

impl Succeeds {
    fn check<T>(&self, result: Result<T, Status>, rpc: &str) -> T {
        let caller = self.0;
        result.unwrap_or_else(|status| panic!("{rpc} with {caller:?}: {status:?}"))
    }
}

/// Calls GetSync of `sync_id` and returns the status it failed with.
async fn get_sync_fails(harness: &Harness, caller: Caller, sync_id: &str, seen: &mut Seen) -> Code {
    let get = pb::GetSyncRequest {
        sync_id: sync_id.into(),
    };
    let result = harness.syncs().get_sync(caller.request(get)).await;
    seen.keep(result).expect_err("an error").code()
}

/// Wrong keys, a malformed authorization header, an unknown sync, injected 500, 401 and a
/// dropped connection, each with a key on the call.
async fn error_paths(harness: &Harness, seen: &mut Seen) {
    let list = pb::ListSyncsRequest {
        company_id: COMPANY,
        ..Default::default()
    };
    let page = harness.syncs().list_syncs(list).await.expect("list");
    let sync = page.into_inner().syncs.remove(0).id;

    for caller in [Caller::Header(WRONG_KEY), Caller::Bearer(WRONG_KEY)] {
        let code = get_sync_fails(harness, caller, &sync, seen).await;
        assert_eq!(code, Code::Unauthenticated, "{caller:?}");
    }

    for header in [
        format!("Basic {BEARER_KEY}"),
        format!("Bearer {BEARER_KEY} x"),
    ] {
        let mut get = Request::new(pb::GetSyncRequest {
            sync_id: sync.clone(),
        });
        let value = MetadataValue::try_from(header).expect("ascii");
        get.metadata_mut().insert("authorization", value);
        let result = harness.syncs().get_sync(get).await;
        let status = seen.keep(result).expect_err("malformed authorization");
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    let code = get_sync_fails(harness, Caller::Header(HEADER_KEY), "no-such-sync", seen).await;
    assert_eq!(code, Code::NotFound);

    let injected = [
        (
            FaultKind::status(500),
            Caller::Bearer(BEARER_KEY),
            Code::Internal,
        ),
        (
            FaultKind::status(401),
            Caller::Header(HEADER_KEY),
            Code::Unauthenticated,
        ),
        (FaultKind::status(401), Caller::Default, Code::Unavailable),
        (FaultKind::Drop, Caller::Default, Code::Unavailable),
    ];
    for (kind, caller, expected) in injected {
        harness.emulator.clear_faults();
        harness
            .emulator
            .inject(Fault::on(Route::GetSync, kind.clone()));
        let code = get_sync_fails(harness, caller, &sync, seen).await;
        assert_eq!(code, expected, "{kind:?} with {caller:?}");
    }
    harness.emulator.clear_faults();
}

#[tokio::test]
async fn keys_never_reach_logs_statuses_details_or_metadata() {
    capture_everything();
    let harness = Harness::with(emulator_config(), |settings| {
        settings.default_key = Some(ApiKey::parse(DEFAULT_KEY).expect("valid key"));
    })
    .await;
    let mut seen = Seen::default();

    let callers = [
        Caller::Header(HEADER_KEY),
        Caller::Bearer(BEARER_KEY),
        Caller::Default,
    ];
    for caller in callers {
        every_rpc(&harness, caller, &mut seen).await;
        harness.emulator.advance(Duration::from_secs(24 * 3600));
    }
    error_paths(&harness, &mut seen).await;

    let log = captured_log();
    for key in [HEADER_KEY, BEARER_KEY, DEFAULT_KEY] {
        let fingerprint = ApiKey::parse(key)
            .expect("valid key")
            .fingerprint()
            .to_owned();
        let requests = harness.emulator.counters().for_key(key);
        assert!(
            requests >= 9,
            "key:{fingerprint}: {requests} upstream requests"
        );
        let label = format!("key=key:{fingerprint}");
        assert!(log.contains(&label), "the log never names {label}");
    }
    for target in [
        "commenda_sync_gateway",
        "tonic",
        "h2",
        "hyper_util",
        "reqwest",
    ] {
        let prefix = format!(" {target}::");
        assert!(log.contains(&prefix), "the log has no output of {target}");
    }

    for key in KEYS {
        let leaks: Vec<&str> = log.lines().filter(|line| line.contains(key)).collect();
        assert!(
            leaks.is_empty(),
            "the log holds {key}:\n{}",
            leaks.join("\n")
        );
        let shown: Vec<&String> = seen.texts.iter().filter(|t| t.contains(key)).collect();
        assert!(shown.is_empty(), "a caller was shown {key}: {shown:?}");
    }
}
