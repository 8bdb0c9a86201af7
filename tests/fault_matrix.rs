//! Every fault the emulator can inject, against every unary RPC: the code, ErrorInfo reason
//! and details the caller receives, and how many times the gateway asked the upstream.
//!
//! The table lives in [`rows`]. Each row gets a fresh emulator and gateway, and the rows
//! run side by side (the slow upstream's alone, after the others); within a row the nine
//! RPCs run one after the other, each against a fault that fires on every attempt. `README.md` shows the same table, rendered
//! by [`render`]; `the_document_shows_this_matrix` keeps the two in step.

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use commenda_sync_gateway::emulator::{
    DEMO_API_KEY, EmulatorConfig, Fault, FaultKind, JobTiming, Route,
};
use commenda_sync_gateway::pb::v1 as pb;
use commenda_sync_gateway::server::Settings;
use common::{Harness, with_key};
use futures::future::join_all;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// The company of the seeded sync, and of the company RPCs.
const COMPANY: i64 = 496;
/// The company whose running sync CancelSync cancels, so that nothing else waits on it.
const CANCEL_COMPANY: i64 = 497;
/// The caller's deadline in the row where the upstream is too slow.
const DEADLINE: Duration = Duration::from_millis(400);
/// How long the slow upstream waits before it answers.
const SLOW: Duration = Duration::from_secs(3);
/// The gateway's body limit in every row, and the size of the oversized answer.
const BODY_LIMIT: usize = 64 * 1024;
const OVERSIZED: usize = 1024 * 1024;
/// How long `Retry-After` asks to wait in the 429 row: more than the gateway waits itself.
const RETRY_AFTER_SECS: u64 = 30;

/// The nine unary RPCs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    CreateSync,
    ListSyncs,
    GetSync,
    ListSyncJobs,
    CancelSync,
    RetrySync,
    GetOrganizationSyncConfig,
    UpdateOrganizationSyncConfig,
    UpdateCompanySyncConfig,
}

impl Rpc {
    const ALL: [Rpc; 9] = [
        Rpc::CreateSync,
        Rpc::ListSyncs,
        Rpc::GetSync,
        Rpc::ListSyncJobs,
        Rpc::CancelSync,
        Rpc::RetrySync,
        Rpc::GetOrganizationSyncConfig,
        Rpc::UpdateOrganizationSyncConfig,
        Rpc::UpdateCompanySyncConfig,
    ];

    fn name(self) -> String {
        format!("{self:?}")
    }

    /// The upstream route the RPC calls.
    fn route(self) -> Route {
        match self {
            Rpc::CreateSync => Route::CreateSync,
            Rpc::ListSyncs => Route::ListSyncs,
            Rpc::GetSync => Route::GetSync,
            Rpc::ListSyncJobs => Route::ListSyncJobs,
            Rpc::CancelSync => Route::CancelSync,
            Rpc::RetrySync => Route::RetrySync,
            Rpc::GetOrganizationSyncConfig => Route::GetOrganizationSyncConfig,
            Rpc::UpdateOrganizationSyncConfig => Route::UpdateOrganizationSyncConfig,
            Rpc::UpdateCompanySyncConfig => Route::UpdateCompanySyncConfig,
        }
    }

    /// The `route` metadata of its ErrorInfo.
    fn route_label(self) -> &'static str {
        match self {
            Rpc::CreateSync => "create_sync",
            Rpc::ListSyncs => "list_syncs",
            Rpc::GetSync => "get_sync",
            Rpc::ListSyncJobs => "list_sync_jobs",
            Rpc::CancelSync => "cancel_sync",
            Rpc::RetrySync => "retry_sync",
            Rpc::GetOrganizationSyncConfig => "get_organization_sync_config",
            Rpc::UpdateOrganizationSyncConfig => "update_organization_sync_config",
            Rpc::UpdateCompanySyncConfig => "update_company_sync_config",
        }
    }

    /// Reads go out as GET and are retried; writes are sent once.
    fn is_read(self) -> bool {
        matches!(
            self,
            Rpc::ListSyncs | Rpc::GetSync | Rpc::ListSyncJobs | Rpc::GetOrganizationSyncConfig
        )
    }

    /// Whether the upstream answers with a `data` object; the others answer `{request_id}`.
    fn answers_data(self) -> bool {
        !matches!(
            self,
            Rpc::CancelSync | Rpc::UpdateOrganizationSyncConfig | Rpc::UpdateCompanySyncConfig
        )
    }

    /// Whether a 409 means the sync's state forbids the call.
    fn changes_sync_state(self) -> bool {
        matches!(self, Rpc::CreateSync | Rpc::CancelSync | Rpc::RetrySync)
    }

    /// The `ResourceInfo.resource_type` of a 404.
    fn resource(self) -> Option<&'static str> {
        match self {
            Rpc::GetSync | Rpc::ListSyncJobs | Rpc::CancelSync | Rpc::RetrySync => {
                Some("commenda.sync.v1.Sync")
            }
            Rpc::CreateSync | Rpc::ListSyncs | Rpc::UpdateCompanySyncConfig => {
                Some("commenda.sync.v1.Company")
            }
            Rpc::GetOrganizationSyncConfig | Rpc::UpdateOrganizationSyncConfig => None,
        }
    }
}

/// What the upstream does.
#[derive(Clone, Debug)]
enum Upstream {
    /// The gateway points at a port nobody listens on.
    Refused,
    /// The emulator answers every attempt of the RPC's route with this fault.
    Fault(FaultKind),
}

/// Which key the call carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    /// None: the gateway uses its default key (the demo key).
    Default,
    /// The demo key, sent by the caller as `x-api-key`.
    Caller,
}

/// The google.rpc detail that a row adds beside ErrorInfo and RequestInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detail {
    None,
    RetryInfo(u64),
    ResourceInfo(&'static str),
}

/// What the caller receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Ok,
    Error {
        code: Code,
        reason: &'static str,
        detail: Detail,
    },
}

fn error(code: Code, reason: &'static str) -> Expected {
    Expected::Error {
        code,
        reason,
        detail: Detail::None,
    }
}

/// How many requests reach the emulator for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempts {
    /// One, read or write.
    Once,
    /// Three for reads, one for writes.
    ReadsRetried,
    /// Not counted: nothing reached the emulator, or it was still busy when the call ended.
    NotCounted,
}

/// One fault and what every RPC answers to it.
struct Row {
    fault: String,
    upstream: Upstream,
    key: Key,
    /// The `http_status` in ErrorInfo metadata, for answers that had one.
    http: Option<u16>,
    attempts: Attempts,
    expected: fn(Rpc) -> Expected,
}

impl Row {
    fn status(http: u16, key: Key, expected: fn(Rpc) -> Expected) -> Self {
        let retried = matches!(http, 502..=504);
        Self {
            fault: format!("HTTP {http}"),
            upstream: Upstream::Fault(FaultKind::status(http)),
            key,
            http: Some(http),
            attempts: if retried {
                Attempts::ReadsRetried
            } else {
                Attempts::Once
            },
            expected,
        }
    }

    fn body(fault: &str, kind: FaultKind, expected: fn(Rpc) -> Expected) -> Self {
        Self {
            fault: fault.to_owned(),
            upstream: Upstream::Fault(kind),
            key: Key::Default,
            http: None,
            attempts: Attempts::Once,
            expected,
        }
    }

    /// The caller's deadline: short only where the upstream is slow.
    fn deadline(&self) -> Option<Duration> {
        matches!(self.upstream, Upstream::Fault(FaultKind::Delay(_))).then_some(DEADLINE)
    }
}

/// The matrix, one row per fault.
fn rows() -> Vec<Row> {
    let malformed = |_: Rpc| error(Code::Internal, "UPSTREAM_MALFORMED_RESPONSE");
    vec![
        Row {
            fault: "connection refused".to_owned(),
            upstream: Upstream::Refused,
            key: Key::Default,
            http: None,
            attempts: Attempts::NotCounted,
            expected: |_| error(Code::Unavailable, "UPSTREAM_UNREACHABLE"),
        },
        Row {
            fault: "connection dropped".to_owned(),
            upstream: Upstream::Fault(FaultKind::Drop),
            key: Key::Default,
            http: None,
            attempts: Attempts::ReadsRetried,
            expected: |_| error(Code::Unavailable, "UPSTREAM_UNREACHABLE"),
        },
        Row {
            fault: "answer slower than the caller's deadline".to_owned(),
            upstream: Upstream::Fault(FaultKind::Delay(SLOW)),
            key: Key::Default,
            http: None,
            attempts: Attempts::NotCounted,
            expected: |_| error(Code::DeadlineExceeded, "UPSTREAM_DEADLINE_EXCEEDED"),
        },
        Row::status(400, Key::Default, |_| {
            error(Code::InvalidArgument, "UPSTREAM_INVALID_ARGUMENT")
        }),
        Row::status(401, Key::Caller, |_| {
            error(Code::Unauthenticated, "API_KEY_REJECTED")
        }),
        Row::status(401, Key::Default, |_| {
            error(Code::Unavailable, "GATEWAY_CREDENTIAL_REJECTED")
        }),
        Row::status(403, Key::Caller, |_| {
            error(Code::PermissionDenied, "PERMISSION_DENIED")
        }),
        Row::status(403, Key::Default, |_| {
            error(Code::Unavailable, "GATEWAY_CREDENTIAL_REJECTED")
        }),
        Row::status(404, Key::Default, |rpc| Expected::Error {
            code: Code::NotFound,
            reason: "RESOURCE_NOT_FOUND",
            detail: rpc.resource().map_or(Detail::None, Detail::ResourceInfo),
        }),
        Row::status(409, Key::Default, |rpc| {
            if rpc.changes_sync_state() {
                error(Code::FailedPrecondition, "SYNC_STATE_CONFLICT")
            } else {
                error(Code::Aborted, "CONCURRENT_MODIFICATION")
            }
        }),
        Row::status(422, Key::Default, |_| {
            error(Code::InvalidArgument, "UPSTREAM_INVALID_ARGUMENT")
        }),
        Row {
            fault: "HTTP 429 with `Retry-After: 30`".to_owned(),
            upstream: Upstream::Fault(FaultKind::Status {
                code: 429,
                retry_after: Some(RETRY_AFTER_SECS),
                body: None,
            }),
            key: Key::Default,
            http: Some(429),
            attempts: Attempts::Once,
            expected: |_| Expected::Error {
                code: Code::ResourceExhausted,
                reason: "UPSTREAM_RATE_LIMITED",
                detail: Detail::RetryInfo(RETRY_AFTER_SECS),
            },
        },
        Row::status(500, Key::Default, |_| {
            error(Code::Internal, "UPSTREAM_INTERNAL_ERROR")
        }),
        Row::status(501, Key::Default, |_| {
            error(Code::Unimplemented, "UPSTREAM_UNIMPLEMENTED")
        }),
        Row::status(502, Key::Default, unavailable),
        Row::status(503, Key::Default, unavailable),
        Row::status(504, Key::Default, unavailable),
        Row::status(418, Key::Default, |_| {
            error(Code::Unknown, "UPSTREAM_UNEXPECTED_STATUS")
        }),
        Row::body(
            "2xx whose body is not JSON",
            FaultKind::Malformed,
            malformed,
        ),
        Row::body("2xx without `data`", FaultKind::MissingData, |rpc| {
            if rpc.answers_data() {
                error(Code::Internal, "UPSTREAM_MALFORMED_RESPONSE")
            } else {
                Expected::Ok
            }
        }),
        Row::body("2xx cut off halfway", FaultKind::Truncated, malformed),
        Row::body(
            "2xx larger than the body limit",
            FaultKind::Oversized(OVERSIZED),
            |_| error(Code::Internal, "UPSTREAM_RESPONSE_TOO_LARGE"),
        ),
    ]
}

/// 502 to 504. The emulator sends no `Retry-After` with them, and a rate-limit reset says
/// nothing about when an unavailable upstream recovers, so there is no RetryInfo.
fn unavailable(_: Rpc) -> Expected {
    Expected::Error {
        code: Code::Unavailable,
        reason: "UPSTREAM_UNAVAILABLE",
        detail: Detail::None,
    }
}

/// Jobs that run for an hour, so a sync started for CancelSync is still running when the
/// call arrives; the tests move the emulator clock instead of waiting.
fn emulator_config() -> EmulatorConfig {
    EmulatorConfig {
        timing: JobTiming {
            start_delay: Duration::from_millis(1),
            duration: Duration::from_secs(3600),
            jitter: Duration::from_millis(1),
        },
        ..EmulatorConfig::for_tests()
    }
}

async fn start(adjust: impl FnOnce(&mut Settings)) -> Harness {
    Harness::with(emulator_config(), |settings| {
        settings.upstream.max_body_bytes = BODY_LIMIT;
        adjust(settings);
    })
    .await
}

/// A loopback URL where nothing listens.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/v4")
}

/// The newest seeded sync of company 496; seeded syncs are finished.
async fn seeded_sync(harness: &Harness) -> String {
    let list = pb::ListSyncsRequest {
        company_id: COMPANY,
        ..Default::default()
    };
    let page = harness.syncs().list_syncs(list).await.expect("list");
    let sync = page.into_inner().syncs.into_iter().next().expect("seeded");
    sync.id
}

/// Finishes every sync started so far, and returns the sync the RPC will name: a running
/// one for CancelSync, the seeded one otherwise.
fn prepare(harness: &Harness, rpc: Rpc, seeded: &str) -> String {
    harness.emulator.advance(Duration::from_secs(24 * 3600));
    match rpc {
        Rpc::CancelSync => harness
            .emulator
            .start_auto_sync(CANCEL_COMPANY)
            .expect("company 497 is idle and has enabled models"),
        _ => seeded.to_owned(),
    }
}

fn request<T>(message: T, key: Key, deadline: Option<Duration>) -> Request<T> {
    let mut request = match key {
        Key::Default => Request::new(message),
        Key::Caller => with_key(message, DEMO_API_KEY),
    };
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    request
}

fn write_config() -> pb::WriteSyncConfig {
    pb::WriteSyncConfig {
        data_model: "ACCOUNT".into(),
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

/// One valid call of `rpc`; only the outcome is kept.
async fn call(
    rpc: Rpc,
    channel: Channel,
    sync_id: String,
    key: Key,
    deadline: Option<Duration>,
) -> Result<(), Status> {
    let mut syncs = pb::sync_service_client::SyncServiceClient::new(channel.clone());
    let mut configs = pb::sync_config_service_client::SyncConfigServiceClient::new(channel);
    match rpc {
        Rpc::CreateSync => {
            let message = pb::CreateSyncRequest {
                company_id: COMPANY,
                ..Default::default()
            };
            syncs.create_sync(request(message, key, deadline)).await?;
        }
        Rpc::ListSyncs => {
            let message = pb::ListSyncsRequest {
                company_id: COMPANY,
                ..Default::default()
            };
            syncs.list_syncs(request(message, key, deadline)).await?;
        }
        Rpc::GetSync => {
            let message = pb::GetSyncRequest { sync_id };
            syncs.get_sync(request(message, key, deadline)).await?;
        }
        Rpc::ListSyncJobs => {
            let message = pb::ListSyncJobsRequest {
                sync_id,
                ..Default::default()
            };
            syncs
                .list_sync_jobs(request(message, key, deadline))
                .await?;
        }
        Rpc::CancelSync => {
            let message = pb::CancelSyncRequest {
                sync_id,
                ..Default::default()
            };
            syncs.cancel_sync(request(message, key, deadline)).await?;
        }
        Rpc::RetrySync => {
            let message = pb::RetrySyncRequest {
                sync_id,
                ..Default::default()
            };
            syncs.retry_sync(request(message, key, deadline)).await?;
        }
        Rpc::GetOrganizationSyncConfig => {
            let message = pb::GetOrganizationSyncConfigRequest {
                integration_type: pb::IntegrationType::Netsuite.into(),
            };
            configs
                .get_organization_sync_config(request(message, key, deadline))
                .await?;
        }
        Rpc::UpdateOrganizationSyncConfig => {
            let message = pb::UpdateOrganizationSyncConfigRequest {
                configs: vec![write_config()],
                propagate: false,
            };
            configs
                .update_organization_sync_config(request(message, key, deadline))
                .await?;
        }
        Rpc::UpdateCompanySyncConfig => {
            let message = pb::UpdateCompanySyncConfigRequest {
                company_id: COMPANY,
                configs: vec![write_config()],
            };
            configs
                .update_company_sync_config(request(message, key, deadline))
                .await?;
        }
    }
    Ok(())
}

/// Runs the nine RPCs of one row against a fresh emulator and gateway; returns every way
/// the answers differ from the row.
async fn run_row(row: &Row) -> Vec<String> {
    let harness = start(|_| {}).await;
    let refused = match row.upstream {
        Upstream::Refused => Some(start(|s| s.upstream_url = closed_url()).await),
        Upstream::Fault(_) => None,
    };
    let gateway = refused.as_ref().unwrap_or(&harness);
    let seeded = seeded_sync(&harness).await;

    let mut problems = Vec::new();
    for rpc in Rpc::ALL {
        let sync_id = prepare(&harness, rpc, &seeded);
        harness.emulator.reset_counters();
        if let Upstream::Fault(kind) = &row.upstream {
            let fault = Fault::on(rpc.route(), kind.clone());
            harness.emulator.inject(fault);
        }
        let channel = gateway.channel.clone();
        let result = call(rpc, channel, sync_id, row.key, row.deadline()).await;
        harness.emulator.clear_faults();

        let attempts = harness.emulator.counters().for_route(rpc.route());
        let found = check(row, rpc, &result, attempts);
        let label = format!("{} ({:?} key) / {}", row.fault, row.key, rpc.name());
        problems.extend(found.into_iter().map(|p| format!("{label}: {p}")));
    }
    problems
}

/// What differs between one call's outcome and the row.
fn check(row: &Row, rpc: Rpc, result: &Result<(), Status>, attempts: u64) -> Vec<String> {
    let mut problems = match ((row.expected)(rpc), result) {
        (Expected::Ok, Ok(())) => Vec::new(),
        (Expected::Ok, Err(status)) => {
            let (code, message) = (status.code(), status.message());
            vec![format!("expected OK, got {code:?}: {message}")]
        }
        (Expected::Error { .. }, Ok(())) => vec!["expected an error, got OK".to_owned()],
        (
            Expected::Error {
                code,
                reason,
                detail,
            },
            Err(status),
        ) => check_status(row, rpc, status, (code, reason, detail)),
    };
    let due = match row.attempts {
        Attempts::Once => Some(1),
        Attempts::ReadsRetried if rpc.is_read() => Some(3),
        Attempts::ReadsRetried => Some(1),
        Attempts::NotCounted => None,
    };
    if let Some(due) = due
        && attempts != due
    {
        problems.push(format!("{attempts} upstream attempts, expected {due}"));
    }
    problems
}

/// The code first, then ErrorInfo, RequestInfo, RetryInfo, ResourceInfo and the message.
fn check_status(
    row: &Row,
    rpc: Rpc,
    status: &Status,
    (code, reason, detail): (Code, &str, Detail),
) -> Vec<String> {
    let mut problems = Vec::new();
    if status.code() != code {
        let (got, message) = (status.code(), status.message());
        problems.push(format!("code {got:?}, expected {code:?}: {message}"));
    }
    let Some(info) = status.get_details_error_info() else {
        problems.push("no ErrorInfo".to_owned());
        return problems;
    };
    let metadata = |name: &str| info.metadata.get(name).map(String::as_str);
    let http = row.http.map(|h| h.to_string());
    let facts = [
        ("reason", Some(info.reason.as_str()), Some(reason)),
        (
            "domain",
            Some(info.domain.as_str()),
            Some("sync.commenda.io"),
        ),
        ("route", metadata("route"), Some(rpc.route_label())),
        ("http_status", metadata("http_status"), http.as_deref()),
    ];
    for (name, got, due) in facts {
        if got != due {
            problems.push(format!("ErrorInfo {name} {got:?}, expected {due:?}"));
        }
    }

    let request_info = status.get_details_request_info().map(|r| r.request_id);
    if request_info.as_deref() != metadata("upstream_request_id") {
        problems.push(format!(
            "RequestInfo {request_info:?} differs from ErrorInfo"
        ));
    }
    if row.http.is_some() && request_info.is_none() {
        problems.push("no upstream request id".to_owned());
    }

    let retry = status.get_details_retry_info().map(|r| r.retry_delay);
    let due_retry = match detail {
        Detail::RetryInfo(secs) => Some(Some(Duration::from_secs(secs))),
        _ => None,
    };
    if retry != due_retry {
        problems.push(format!("RetryInfo {retry:?}, expected {due_retry:?}"));
    }
    let resource = status.get_details_resource_info().map(|r| r.resource_type);
    let due_resource = match detail {
        Detail::ResourceInfo(kind) => Some(kind),
        _ => None,
    };
    if resource.as_deref() != due_resource {
        problems.push(format!(
            "ResourceInfo {resource:?}, expected {due_resource:?}"
        ));
    }

    if status.message().contains(['{', '<']) {
        problems.push(format!("raw body in the message: {}", status.message()));
    }
    problems
}

/// The rows run side by side, except the slow upstream's: it races the caller's own timer
/// by the gateway's 20 ms margin, so it runs alone, after the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_gives_its_designed_status_on_every_rpc() {
    let (slow, others): (Vec<Row>, Vec<Row>) =
        rows().into_iter().partition(|row| row.deadline().is_some());
    let mut problems: Vec<String> = join_all(others.iter().map(run_row))
        .await
        .into_iter()
        .flatten()
        .collect();
    for row in &slow {
        problems.extend(run_row(row).await);
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_document_shows_this_matrix() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let document = std::fs::read_to_string(path).expect("README.md");
    let table = render(&rows());
    assert!(
        document.contains(&table),
        "README.md should hold this table:\n{table}"
    );
}

/// The matrix in Markdown: per fault, the answer most RPCs give and the RPCs that differ.
fn render(rows: &[Row]) -> String {
    let mut table = String::from(
        "| upstream fault | key | code | ErrorInfo reason | other detail | RPCs that differ \
         | upstream attempts |\n|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let groups = outcome_groups(row);
        let (code, reason, detail) = match groups[0].0 {
            Expected::Ok => ("OK".to_owned(), String::new(), String::new()),
            Expected::Error {
                code,
                reason,
                detail,
            } => (code_name(code), format!("`{reason}`"), detail_text(detail)),
        };
        let differ: Vec<String> = groups[1..]
            .iter()
            .map(|(expected, rpcs)| format!("{}: {}", rpcs.join(", "), outcome_text(*expected)))
            .collect();
        let key = match row.key {
            Key::Default => "gateway's",
            Key::Caller => "caller's",
        };
        let attempts = match row.attempts {
            Attempts::Once => "1",
            Attempts::ReadsRetried => "reads 3, writes 1",
            Attempts::NotCounted => "not counted",
        };
        let cells = [
            row.fault.as_str(),
            key,
            &code,
            &reason,
            &detail,
            &differ.join("; "),
            attempts,
        ];
        let _ = writeln!(table, "| {} |", cells.join(" | "));
    }
    table
}

/// The RPCs grouped by their expected outcome, largest group first.
fn outcome_groups(row: &Row) -> Vec<(Expected, Vec<String>)> {
    let mut groups: Vec<(Expected, Vec<String>)> = Vec::new();
    for rpc in Rpc::ALL {
        let expected = (row.expected)(rpc);
        match groups.iter_mut().find(|(e, _)| *e == expected) {
            Some((_, rpcs)) => rpcs.push(rpc.name()),
            None => groups.push((expected, vec![rpc.name()])),
        }
    }
    groups.sort_by_key(|(_, rpcs)| std::cmp::Reverse(rpcs.len()));
    groups
}

fn outcome_text(expected: Expected) -> String {
    match expected {
        Expected::Ok => "OK".to_owned(),
        Expected::Error {
            code,
            reason,
            detail,
        } => {
            let detail = detail_text(detail);
            let text = format!("{} `{reason}`", code_name(code));
            if detail.is_empty() {
                text
            } else {
                format!("{text}, {detail}")
            }
        }
    }
}

fn detail_text(detail: Detail) -> String {
    match detail {
        Detail::None => String::new(),
        Detail::RetryInfo(secs) => format!("RetryInfo {secs} s"),
        Detail::ResourceInfo(kind) => format!("ResourceInfo `{kind}`"),
    }
}

/// `DeadlineExceeded` as `DEADLINE_EXCEEDED`.
fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}
