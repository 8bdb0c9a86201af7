//! Deadlines, cancellation, retries, idempotency and per-key limits, each proved by counting
//! what reached the upstream.

mod common;

use std::time::{Duration, Instant};

use commenda_sync_gateway::emulator::{EmulatorConfig, Fault, FaultKind, OTHER_API_KEY, Route};
use commenda_sync_gateway::pb::v1 as pb;
use common::{Harness, assert_invalid_field, newest_sync, with_key};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tonic::{Code, Request};

const REQUEST_ID: &str = "0f8c1c52-6f39-4f0b-9a43-2b7c1b6f2a10";

fn create(company_id: i64, request_id: &str) -> pb::CreateSyncRequest {
    pb::CreateSyncRequest {
        company_id,
        request_id: request_id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn reads_are_retried_after_transient_failures() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 497).await;
    for kind in [
        FaultKind::status(503),
        FaultKind::Drop,
        FaultKind::status(502),
    ] {
        harness.emulator.reset_counters();
        harness
            .emulator
            .inject(Fault::on(Route::GetSync, kind.clone()).times(2));
        let get = pb::GetSyncRequest {
            sync_id: sync.id.clone(),
        };
        let answer = harness
            .syncs()
            .get_sync(get)
            .await
            .expect("third attempt succeeds");
        assert_eq!(
            answer.into_inner().sync.expect("sync").id,
            sync.id,
            "{kind:?}"
        );
        assert_eq!(
            harness.emulator.counters().for_route(Route::GetSync),
            3,
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn rate_limited_reads_wait_for_retry_after() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 497).await;
    harness.emulator.reset_counters();
    let kind = FaultKind::Status {
        code: 429,
        retry_after: Some(1),
        body: None,
    };
    harness
        .emulator
        .inject(Fault::on(Route::GetSync, kind).times(1));

    let started = Instant::now();
    let get = pb::GetSyncRequest {
        sync_id: sync.id.clone(),
    };
    harness
        .syncs()
        .get_sync(get)
        .await
        .expect("the retry succeeds");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(harness.emulator.counters().for_route(Route::GetSync), 2);
}

#[tokio::test]
async fn retries_stop_at_the_attempt_limit() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 497).await;
    harness.emulator.reset_counters();
    harness
        .emulator
        .inject(Fault::on(Route::GetSync, FaultKind::status(503)));
    let get = pb::GetSyncRequest { sync_id: sync.id };
    let status = harness.syncs().get_sync(get).await.expect_err("always 503");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(harness.emulator.counters().for_route(Route::GetSync), 3);
}

#[tokio::test]
async fn retries_stay_inside_the_callers_deadline() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 497).await;
    harness.emulator.reset_counters();
    let kind = FaultKind::Status {
        code: 429,
        retry_after: Some(2),
        body: None,
    };
    harness.emulator.inject(Fault::on(Route::GetSync, kind));
    let mut get = Request::new(pb::GetSyncRequest { sync_id: sync.id });
    get.set_timeout(Duration::from_millis(500));

    let started = Instant::now();
    let status = harness
        .syncs()
        .get_sync(get)
        .await
        .expect_err("rate limited");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(harness.emulator.counters().for_route(Route::GetSync), 1);
}

#[tokio::test]
async fn writes_are_never_retried() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 497).await;
    harness.emulator.reset_counters();
    for route in [Route::CreateSync, Route::RetrySync, Route::CancelSync] {
        harness
            .emulator
            .inject(Fault::on(route, FaultKind::status(503)));
    }
    let mut syncs = harness.syncs();
    let created = syncs.create_sync(create(497, "")).await.expect_err("503");
    let retry = pb::RetrySyncRequest {
        sync_id: sync.id.clone(),
        ..Default::default()
    };
    let retried = syncs.retry_sync(retry).await.expect_err("503");
    let cancel = pb::CancelSyncRequest {
        sync_id: sync.id,
        ..Default::default()
    };
    let cancelled = syncs.cancel_sync(cancel).await.expect_err("503");
    for status in [created, retried, cancelled] {
        assert_eq!(status.code(), Code::Unavailable);
    }
    let counters = harness.emulator.counters();
    for route in [Route::CreateSync, Route::RetrySync, Route::CancelSync] {
        assert_eq!(counters.for_route(route), 1, "{route:?}");
    }
}

#[tokio::test]
async fn deadline_expiry_is_deadline_exceeded_after_one_attempt() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 497).await;
    harness.emulator.reset_counters();
    harness.emulator.inject(Fault::on(
        Route::GetSync,
        FaultKind::Delay(Duration::from_secs(2)),
    ));
    let mut get = Request::new(pb::GetSyncRequest { sync_id: sync.id });
    get.set_timeout(Duration::from_millis(250));
    let status = harness.syncs().get_sync(get).await.expect_err("too slow");
    assert_eq!(status.code(), Code::DeadlineExceeded);
}

/// A stand-in upstream that accepts one request and never answers, and reports when the
/// gateway closes the connection.
async fn silent_upstream() -> (String, tokio::sync::oneshot::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v4", listener.local_addr().expect("addr"));
    let (closed, on_close) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buffer = [0u8; 4096];
        while let Ok(n) = socket.read(&mut buffer).await {
            if n == 0 {
                let _ = closed.send(Instant::now());
                return;
            }
        }
    });
    (url, on_close)
}

#[tokio::test]
async fn a_caller_that_gives_up_aborts_its_upstream_request() {
    let (url, on_close) = silent_upstream().await;
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| s.upstream_url = url).await;

    let mut client = harness.syncs();
    let call = tokio::spawn(async move {
        client
            .get_sync(pb::GetSyncRequest {
                sync_id: "abc".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gave_up = Instant::now();
    call.abort();

    let closed = tokio::time::timeout(Duration::from_secs(3), on_close).await;
    let closed = closed.expect("upstream connection closed").expect("closed");
    assert!(
        closed - gave_up < Duration::from_millis(500),
        "closed after {:?}",
        closed - gave_up
    );
}

#[tokio::test]
async fn repeated_writes_with_one_request_id_write_once() {
    let harness = Harness::start().await;
    let first = harness
        .syncs()
        .create_sync(create(498, REQUEST_ID))
        .await
        .expect("create")
        .into_inner();
    let repeat = harness
        .syncs()
        .create_sync(create(498, REQUEST_ID))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(first, repeat);
    assert_eq!(harness.emulator.counters().for_route(Route::CreateSync), 1);
    let sent = harness.emulator.requests().pop().expect("recorded");
    assert_eq!(sent.header("idempotency-key"), Some(REQUEST_ID));

    let other = "5d6e0c55-2f4c-4a4e-8a35-0d1b8a7f9c11";
    harness.emulator.advance(Duration::from_secs(600));
    let fresh = harness
        .syncs()
        .create_sync(create(498, other))
        .await
        .expect("new id")
        .into_inner();
    assert_ne!(fresh.sync_id, first.sync_id);
    assert_eq!(harness.emulator.counters().for_route(Route::CreateSync), 2);
}

#[tokio::test]
async fn concurrent_repeats_share_one_write() {
    let harness = Harness::start().await;
    harness.emulator.inject(Fault::on(
        Route::CreateSync,
        FaultKind::Delay(Duration::from_millis(300)),
    ));
    let calls = (0..10).map(|_| {
        let mut client = harness.syncs();
        tokio::spawn(async move { client.create_sync(create(499, REQUEST_ID)).await })
    });
    let answers = futures::future::join_all(calls).await;
    let ids: std::collections::HashSet<_> = answers
        .into_iter()
        .map(|a| a.expect("joined").expect("created").into_inner().sync_id)
        .collect();
    assert_eq!(ids.len(), 1, "every repeat got the same sync");
    assert_eq!(harness.emulator.counters().for_route(Route::CreateSync), 1);
}

#[tokio::test]
async fn idempotency_is_per_key_and_per_request() {
    let harness = Harness::start().await;
    harness
        .syncs()
        .create_sync(create(496, REQUEST_ID))
        .await
        .expect("demo org");
    let other = harness
        .syncs()
        .create_sync(with_key(create(900, REQUEST_ID), OTHER_API_KEY))
        .await;
    other.expect("the other org's call is its own");
    assert_eq!(harness.emulator.counters().for_route(Route::CreateSync), 2);

    let mut changed = create(496, REQUEST_ID);
    changed.full_sync = Some(true);
    let refused = harness
        .syncs()
        .create_sync(changed)
        .await
        .expect_err("reused id");
    assert_invalid_field(&refused, "request_id");
    assert_eq!(harness.emulator.counters().for_route(Route::CreateSync), 2);
}

#[tokio::test]
async fn definite_refusals_are_kept_but_unknown_outcomes_are_not() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 497).await;
    let cancel = || pb::CancelSyncRequest {
        sync_id: sync.id.clone(),
        request_id: REQUEST_ID.into(),
    };
    for _ in 0..2 {
        let status = harness
            .syncs()
            .cancel_sync(cancel())
            .await
            .expect_err("finished sync");
        assert_eq!(status.code(), Code::FailedPrecondition);
    }
    assert_eq!(harness.emulator.counters().for_route(Route::CancelSync), 1);

    let retry = || pb::RetrySyncRequest {
        sync_id: sync.id.clone(),
        request_id: REQUEST_ID.into(),
    };
    harness
        .emulator
        .inject(Fault::on(Route::RetrySync, FaultKind::Drop).times(1));
    let status = harness
        .syncs()
        .retry_sync(retry())
        .await
        .expect_err("dropped");
    assert_eq!(status.code(), Code::Unavailable);
    let retried = harness
        .syncs()
        .retry_sync(retry())
        .await
        .expect("the repeat writes");
    assert_ne!(retried.into_inner().sync_id, sync.id);
    assert_eq!(harness.emulator.counters().for_route(Route::RetrySync), 2);
}

#[tokio::test]
async fn malformed_request_ids_are_refused() {
    let harness = Harness::start().await;
    for id in [
        "not-a-uuid",
        "0f8c1c526f394f0b9a432b7c1b6f2a10",
        "{0f8c1c52-6f39-4f0b-9a43-2b7c1b6f2a10}",
    ] {
        let refused = harness
            .syncs()
            .create_sync(create(496, id))
            .await
            .expect_err(id);
        assert_invalid_field(&refused, "request_id");
        let cancel = pb::CancelSyncRequest {
            sync_id: "abc".into(),
            request_id: id.into(),
        };
        assert_invalid_field(
            &harness.syncs().cancel_sync(cancel).await.expect_err(id),
            "request_id",
        );
    }
    assert_eq!(harness.emulator.counters().total(), 0);
}

#[tokio::test]
async fn one_saturated_key_does_not_block_another() {
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.upstream.max_in_flight_per_key = 1
    })
    .await;
    let sync = newest_sync(&harness, 497).await;
    harness
        .emulator
        .inject(Fault::on(Route::GetSync, FaultKind::Delay(Duration::from_millis(800))).times(1));

    let mut slow = harness.syncs();
    let id = sync.id.clone();
    let first =
        tokio::spawn(async move { slow.get_sync(pb::GetSyncRequest { sync_id: id }).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A different read, so it cannot share the first one's request.
    let mut second = Request::new(pb::ListSyncJobsRequest {
        sync_id: sync.id.clone(),
        ..Default::default()
    });
    second.set_timeout(Duration::from_millis(200));
    let status = harness
        .syncs()
        .list_sync_jobs(second)
        .await
        .expect_err("key saturated");
    assert_eq!(status.code(), Code::ResourceExhausted);

    let other = with_key(
        pb::ListSyncsRequest {
            company_id: 900,
            ..Default::default()
        },
        OTHER_API_KEY,
    );
    harness
        .syncs()
        .list_syncs(other)
        .await
        .expect("another key is not held up");
    first
        .await
        .expect("joined")
        .expect("the slow call completes");
}

#[tokio::test]
async fn identical_concurrent_reads_share_one_upstream_request() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 497).await;
    harness.emulator.reset_counters();
    let delay = FaultKind::Delay(Duration::from_millis(300));
    harness
        .emulator
        .inject(Fault::on(Route::GetSync, delay).times(1));

    let calls = (0..20).map(|_| {
        let mut client = harness.syncs();
        let get = pb::GetSyncRequest {
            sync_id: sync.id.clone(),
        };
        tokio::spawn(async move { client.get_sync(get).await })
    });
    for answer in futures::future::join_all(calls).await {
        let answer = answer.expect("joined").expect("found").into_inner();
        assert_eq!(answer.sync.expect("sync").id, sync.id);
    }
    assert_eq!(harness.emulator.counters().for_route(Route::GetSync), 1);

    let other = with_key(
        pb::GetSyncRequest {
            sync_id: sync.id.clone(),
        },
        OTHER_API_KEY,
    );
    let status = harness
        .syncs()
        .get_sync(other)
        .await
        .expect_err("another key reads alone");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(harness.emulator.counters().for_route(Route::GetSync), 2);
}
