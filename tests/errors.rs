//! One test per row of the error table: an upstream outcome, forced with an emulator fault,
//! and the gRPC status and details the caller receives.

mod common;

use std::time::Duration;

use commenda_sync_gateway::emulator::{Fault, FaultKind, OTHER_API_KEY, Route};
use commenda_sync_gateway::pb::v1 as pb;
use common::{Harness, newest_sync, with_key};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

const SEEDED_COMPANY: i64 = 496;

fn get_sync(id: &str) -> pb::GetSyncRequest {
    pb::GetSyncRequest { sync_id: id.into() }
}

/// Makes every GetSync answer with a fault (retries included) and returns the status the
/// gateway answered with.
async fn get_sync_with(harness: &Harness, kind: FaultKind) -> Status {
    let sync = newest_sync(harness, SEEDED_COMPANY).await;
    harness.emulator.clear_faults();
    harness.emulator.inject(Fault::on(Route::GetSync, kind));
    harness
        .syncs()
        .get_sync(get_sync(&sync.id))
        .await
        .expect_err("fault answers an error")
}

/// The checks every upstream error shares: code, ErrorInfo reason and domain, and the
/// HTTP status and upstream request id in its metadata.
fn assert_upstream_error(status: &Status, code: Code, reason: &str, http: Option<u16>) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, reason);
    assert_eq!(info.domain, "sync.commenda.io");
    assert_eq!(
        info.metadata.get("http_status").map(String::as_str),
        http.map(|h| h.to_string()).as_deref()
    );
    if http.is_some() {
        let request_id = info
            .metadata
            .get("upstream_request_id")
            .expect("upstream request id");
        let request_info = status.get_details_request_info().expect("RequestInfo");
        assert_eq!(&request_info.request_id, request_id);
    }
    assert!(
        !status.message().contains('{'),
        "raw body leaked: {}",
        status.message()
    );
}

#[tokio::test]
async fn upstream_400_and_422_are_invalid_argument() {
    let harness = Harness::start().await;
    for http in [400, 422] {
        let status = get_sync_with(&harness, FaultKind::status(http)).await;
        assert_upstream_error(
            &status,
            Code::InvalidArgument,
            "UPSTREAM_INVALID_ARGUMENT",
            Some(http),
        );
    }
}

#[tokio::test]
async fn upstream_400_naming_fields_carries_bad_request() {
    let harness = Harness::start().await;
    let body = r#"{"error":{"status_code":400,"message":"invalid limit","request_id":"r-1",
        "timestamp":"2026-01-01T00:00:00Z","platform_error":null,
        "fields":[{"field":"limit","message":"must be at most 100"}]}}"#;
    let kind = FaultKind::Status {
        code: 400,
        retry_after: None,
        body: Some(body.into()),
    };
    let status = get_sync_with(&harness, kind).await;
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        "UPSTREAM_INVALID_ARGUMENT",
        Some(400),
    );
    let bad_request = status.get_details_bad_request().expect("BadRequest");
    assert_eq!(bad_request.field_violations[0].field, "limit");
    assert_eq!(
        bad_request.field_violations[0].description,
        "must be at most 100"
    );
}

#[tokio::test]
async fn unknown_caller_key_is_unauthenticated() {
    let harness = Harness::start().await;
    let refused = harness
        .syncs()
        .get_sync(with_key(get_sync("abc"), "not-a-real-key"))
        .await;
    let status = refused.expect_err("unknown key");
    assert_upstream_error(
        &status,
        Code::Unauthenticated,
        "API_KEY_REJECTED",
        Some(401),
    );
    assert!(!status.message().contains("not-a-real-key"));
}

#[tokio::test]
async fn rejected_default_key_is_unavailable_not_the_callers_fault() {
    let harness = Harness::start().await;
    let status = get_sync_with(&harness, FaultKind::status(401)).await;
    assert_upstream_error(
        &status,
        Code::Unavailable,
        "GATEWAY_CREDENTIAL_REJECTED",
        Some(401),
    );
}

#[tokio::test]
async fn upstream_403_is_permission_denied() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, SEEDED_COMPANY).await;
    harness
        .emulator
        .inject(Fault::on(Route::GetSync, FaultKind::status(403)));
    let request = with_key(
        get_sync(&sync.id),
        commenda_sync_gateway::emulator::DEMO_API_KEY,
    );
    let status = harness.syncs().get_sync(request).await.expect_err("403");
    assert_upstream_error(
        &status,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
        Some(403),
    );
}

#[tokio::test]
async fn unknown_or_foreign_sync_is_not_found_with_resource_info() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, SEEDED_COMPANY).await;
    let requests = [
        Request::new(get_sync("no-such-sync")),
        with_key(get_sync(&sync.id), OTHER_API_KEY),
    ];
    for request in requests {
        let status = harness
            .syncs()
            .get_sync(request)
            .await
            .expect_err("not found");
        assert_upstream_error(&status, Code::NotFound, "RESOURCE_NOT_FOUND", Some(404));
        let resource = status.get_details_resource_info().expect("ResourceInfo");
        assert_eq!(resource.resource_type, "commenda.sync.v1.Sync");
        assert!(
            status.message().starts_with("sync "),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn cancelling_a_finished_sync_is_failed_precondition() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, SEEDED_COMPANY).await;
    assert_ne!(
        sync.status(),
        pb::SyncStatus::Running,
        "seeded syncs are finished"
    );
    let refused = harness
        .syncs()
        .cancel_sync(pb::CancelSyncRequest {
            sync_id: sync.id,
            ..Default::default()
        })
        .await;
    let status = refused.expect_err("finished");
    assert_upstream_error(
        &status,
        Code::FailedPrecondition,
        "SYNC_STATE_CONFLICT",
        Some(409),
    );
}

#[tokio::test]
async fn conflict_on_a_config_write_is_aborted() {
    let harness = Harness::start().await;
    harness.emulator.inject(Fault::on(
        Route::UpdateCompanySyncConfig,
        FaultKind::status(409),
    ));
    let config = pb::WriteSyncConfig {
        data_model: "ACCOUNT".into(),
        category: pb::IntegrationCategory::Accounting.into(),
        enabled: true,
        frequency: pb::SyncFrequency::Daily.into(),
        interval: 1,
        ..Default::default()
    };
    let request = pb::UpdateCompanySyncConfigRequest {
        company_id: SEEDED_COMPANY,
        configs: vec![config],
    };
    let status = harness
        .configs()
        .update_company_sync_config(request)
        .await
        .expect_err("409");
    assert_upstream_error(&status, Code::Aborted, "CONCURRENT_MODIFICATION", Some(409));
}

#[tokio::test]
async fn rate_limited_is_resource_exhausted_with_retry_info() {
    let harness = Harness::start().await;
    let kind = FaultKind::Status {
        code: 429,
        retry_after: Some(17),
        body: None,
    };
    let status = get_sync_with(&harness, kind).await;
    assert_upstream_error(
        &status,
        Code::ResourceExhausted,
        "UPSTREAM_RATE_LIMITED",
        Some(429),
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(17)));
}

#[tokio::test]
async fn upstream_500_is_internal_and_501_unimplemented() {
    let harness = Harness::start().await;
    let status = get_sync_with(&harness, FaultKind::status(500)).await;
    assert_upstream_error(
        &status,
        Code::Internal,
        "UPSTREAM_INTERNAL_ERROR",
        Some(500),
    );
    let status = get_sync_with(&harness, FaultKind::status(501)).await;
    assert_upstream_error(
        &status,
        Code::Unimplemented,
        "UPSTREAM_UNIMPLEMENTED",
        Some(501),
    );
}

#[tokio::test]
async fn gateway_errors_5xx_are_unavailable() {
    let harness = Harness::start().await;
    for http in [502, 503, 504] {
        let status = get_sync_with(&harness, FaultKind::status(http)).await;
        assert_upstream_error(
            &status,
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
            Some(http),
        );
    }
    let kind = FaultKind::Status {
        code: 503,
        retry_after: Some(3),
        body: None,
    };
    let status = get_sync_with(&harness, kind).await;
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(3)));
}

#[tokio::test]
async fn dropped_connection_is_unavailable() {
    let harness = Harness::start().await;
    let status = get_sync_with(&harness, FaultKind::Drop).await;
    assert_upstream_error(&status, Code::Unavailable, "UPSTREAM_UNREACHABLE", None);
}

#[tokio::test]
async fn unreachable_upstream_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = listener.local_addr().expect("addr");
    drop(listener);
    let harness = Harness::with(
        commenda_sync_gateway::emulator::EmulatorConfig::for_tests(),
        |s| {
            s.upstream_url = format!("http://{closed}/v4");
        },
    )
    .await;
    let status = harness
        .syncs()
        .get_sync(get_sync("abc"))
        .await
        .expect_err("refused");
    assert_upstream_error(&status, Code::Unavailable, "UPSTREAM_UNREACHABLE", None);
}

#[tokio::test]
async fn upstream_slower_than_the_deadline_is_deadline_exceeded() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, SEEDED_COMPANY).await;
    harness.emulator.inject(Fault::on(
        Route::GetSync,
        FaultKind::Delay(Duration::from_secs(3)),
    ));
    let mut request = Request::new(get_sync(&sync.id));
    request.set_timeout(Duration::from_millis(300));
    let status = harness
        .syncs()
        .get_sync(request)
        .await
        .expect_err("too slow");
    assert_upstream_error(
        &status,
        Code::DeadlineExceeded,
        "UPSTREAM_DEADLINE_EXCEEDED",
        None,
    );
}

#[tokio::test]
async fn undecodable_success_bodies_are_internal() {
    let harness = Harness::start().await;
    for kind in [
        FaultKind::Malformed,
        FaultKind::Truncated,
        FaultKind::MissingData,
    ] {
        let status = get_sync_with(&harness, kind.clone()).await;
        assert_upstream_error(&status, Code::Internal, "UPSTREAM_MALFORMED_RESPONSE", None);
        assert!(
            !status.message().contains("html"),
            "{kind:?}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let harness = Harness::with(
        commenda_sync_gateway::emulator::EmulatorConfig::for_tests(),
        |s| {
            s.upstream.max_body_bytes = 64 * 1024;
        },
    )
    .await;
    let status = get_sync_with(&harness, FaultKind::Oversized(1024 * 1024)).await;
    assert_upstream_error(&status, Code::Internal, "UPSTREAM_RESPONSE_TOO_LARGE", None);
}

#[tokio::test]
async fn any_other_status_is_unknown() {
    let harness = Harness::start().await;
    let status = get_sync_with(&harness, FaultKind::status(418)).await;
    assert_upstream_error(
        &status,
        Code::Unknown,
        "UPSTREAM_UNEXPECTED_STATUS",
        Some(418),
    );
}

#[tokio::test]
async fn html_error_pages_do_not_leak() {
    let harness = Harness::start().await;
    let body = "<html><body>nginx: upstream exploded SECRET-INTERNAL</body></html>";
    let kind = FaultKind::Status {
        code: 502,
        retry_after: None,
        body: Some(body.into()),
    };
    let status = get_sync_with(&harness, kind).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert!(!status.message().contains("SECRET-INTERNAL"));
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert!(
        info.metadata
            .values()
            .all(|v| !v.contains("SECRET-INTERNAL"))
    );
}

#[tokio::test]
async fn an_upstream_that_echoes_the_key_does_not_leak_it() {
    let harness = Harness::start().await;
    let key = commenda_sync_gateway::emulator::DEMO_API_KEY;
    for code in [400, 403, 409, 422] {
        let body = format!(
            r#"{{"error":{{"status_code":{code},"message":"api_key {key} may not do this",
            "request_id":"r-{key}","fields":[{{"field":"{key}","message":"bad {key}"}}]}}}}"#
        );
        let kind = FaultKind::Status {
            code,
            retry_after: None,
            body: Some(body),
        };
        let status = get_sync_with(&harness, kind).await;
        if code != 403 {
            // With the gateway's own key a 403 is reported without the upstream's words.
            let message = status.message();
            assert!(message.contains("[redacted]"), "{message}");
        }
        let details = format!("{:?}", status.get_error_details());
        assert!(
            !status.message().contains(key) && !details.contains(key),
            "{status:?}"
        );
    }
}
