//! WatchSync and WaitSync end to end against the emulator: each point of the stream
//! contract, the sharing of pollers between streams, key isolation, and shutdown.
//!
//! Syncs here run for minutes of emulator time, so nothing changes until a test moves the
//! emulator clock; the gateway polls every few milliseconds so each change shows at once.

mod common;

use std::future::Future;
use std::time::Duration;

use commenda_sync_gateway::emulator::{
    CompanySeed, DEMO_API_KEY, EmulatorConfig, Fault, FaultKind, JobTiming, OTHER_API_KEY,
    RateLimitConfig, Route,
};
use commenda_sync_gateway::pb::v1::{self as pb, watch_sync_response::Event};
use commenda_sync_gateway::server::Settings;
use common::{Harness, with_key};
use tonic::{Code, Status, Streaming};

/// A second key of the demo organization, to watch the same syncs with another credential.
const SECOND_DEMO_KEY: &str = "commenda-demo-key-2";

/// How long any single expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// Fast polling; a heartbeat interval long enough that heartbeats only show up in the tests
/// that shorten it.
fn fast_watch(settings: &mut Settings) {
    settings.watch.poll_interval = Duration::from_millis(20);
    settings.watch.idle_poll_interval = Duration::from_millis(20);
    settings.watch.heartbeat_interval = Duration::from_secs(3600);
    settings.watch.max_failures = 1000;
    settings.watch.failure_budget = Duration::from_secs(3600);
    settings.request_budget.per_minute = 100_000;
    settings.request_budget.burst = 1000;
}

/// Jobs that start 10 s after their sync and run 60 s, in emulator time; a second key for
/// the demo organization.
fn slow_emulator() -> EmulatorConfig {
    let mut config = EmulatorConfig::for_tests();
    config.timing = JobTiming {
        start_delay: Duration::from_secs(10),
        duration: Duration::from_secs(60),
        jitter: Duration::ZERO,
    };
    config.organizations[0]
        .api_keys
        .push(SECOND_DEMO_KEY.to_owned());
    config
}

async fn harness(adjust: impl FnOnce(&mut Settings)) -> Harness {
    Harness::with(slow_emulator(), |settings| {
        fast_watch(settings);
        adjust(settings);
    })
    .await
}

/// Fails the test when `future` takes longer than [`PATIENCE`].
async fn soon<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("in time")
}

/// Starts a two-job sync of company 496 and returns its id.
async fn create_sync(harness: &Harness) -> String {
    let selection = |m: &str| pb::DataModelSelection {
        data_model: m.into(),
        sync_from: None,
    };
    let request = pb::CreateSyncRequest {
        company_id: 496,
        data_models: vec![selection("ACCOUNT"), selection("INVOICE")],
        ..Default::default()
    };
    let created = harness.syncs().create_sync(request).await.expect("create");
    created.into_inner().sync_id
}

fn watch_request(sync_id: &str, revision: u64) -> pb::WatchSyncRequest {
    pb::WatchSyncRequest {
        sync_id: sync_id.to_owned(),
        revision,
    }
}

async fn watch(harness: &Harness, sync_id: &str) -> Streaming<pb::WatchSyncResponse> {
    let request = watch_request(sync_id, 0);
    let response = soon(harness.syncs().watch_sync(request)).await;
    response.expect("watch opens").into_inner()
}

/// The next message, `None` when the stream ended with OK.
async fn next(stream: &mut Streaming<pb::WatchSyncResponse>) -> Option<Result<Event, Status>> {
    let message = soon(stream.message()).await;
    match message {
        Ok(Some(message)) => Some(Ok(message.event.expect("event set"))),
        Ok(None) => None,
        Err(status) => Some(Err(status)),
    }
}

/// The next state message, skipping heartbeats.
async fn next_state(stream: &mut Streaming<pb::WatchSyncResponse>) -> pb::SyncState {
    loop {
        match next(stream).await {
            Some(Ok(Event::State(state))) => return state,
            Some(Ok(Event::Heartbeat(_))) => continue,
            other => panic!("expected a state, got {other:?}"),
        }
    }
}

/// The next heartbeat, failing on anything else.
async fn next_heartbeat(stream: &mut Streaming<pb::WatchSyncResponse>) -> pb::WatchHeartbeat {
    match next(stream).await {
        Some(Ok(Event::Heartbeat(heartbeat))) => heartbeat,
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

fn status_of(state: &pb::SyncState) -> pb::SyncStatus {
    state.sync.as_ref().expect("sync").status()
}

/// GetSync requests the emulator served for `sync_id`.
fn polls_of(harness: &Harness, sync_id: &str) -> usize {
    harness
        .emulator
        .requests()
        .iter()
        .filter(|r| r.route == Some(Route::GetSync) && r.path.ends_with(sync_id))
        .count()
}

#[tokio::test]
async fn first_message_is_the_full_current_state() {
    let harness = harness(|_| {}).await;
    let sync_id = create_sync(&harness).await;

    let mut stream = watch(&harness, &sync_id).await;
    let state = next_state(&mut stream).await;

    let sync = state.sync.as_ref().expect("sync");
    assert_eq!(sync.id, sync_id);
    assert_eq!(sync.status(), pb::SyncStatus::Running);
    assert_eq!(state.jobs.len(), 2);
    let mut models: Vec<_> = state.jobs.iter().map(|j| j.data_model.as_str()).collect();
    models.sort_unstable();
    assert_eq!(models, ["ACCOUNT", "INVOICE"]);
    assert_ne!(state.revision, 0);
    assert!(state.observe_time.is_some());
}

#[tokio::test]
async fn unknown_sync_fails_with_not_found_before_any_message() {
    let harness = harness(|_| {}).await;
    let request = watch_request("no-such-sync", 0);
    let status = soon(harness.syncs().watch_sync(request))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("no-such-sync"), "{status:?}");
}

#[tokio::test]
async fn rejected_key_fails_with_unauthenticated_before_any_message() {
    let harness = harness(|_| {}).await;
    let sync_id = create_sync(&harness).await;
    let request = with_key(watch_request(&sync_id, 0), "not-a-known-key");
    let status = soon(harness.syncs().watch_sync(request))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn malformed_sync_id_is_invalid_argument() {
    let harness = harness(|_| {}).await;
    let request = watch_request("../companies", 0);
    let status = soon(harness.syncs().watch_sync(request))
        .await
        .expect_err("refused");
    common::assert_invalid_field(&status, "sync_id");
    assert_eq!(harness.emulator.counters().total(), 0);
}

#[tokio::test]
async fn each_change_arrives_with_a_new_revision_then_the_final_state_ends_the_stream() {
    let harness = harness(|_| {}).await;
    let sync_id = create_sync(&harness).await;
    let mut stream = watch(&harness, &sync_id).await;
    let pending = next_state(&mut stream).await;
    assert!(
        pending
            .jobs
            .iter()
            .all(|j| j.status() == pb::JobStatus::Created)
    );

    harness.emulator.advance(Duration::from_secs(11));
    let running = next_state(&mut stream).await;
    assert!(
        running
            .jobs
            .iter()
            .all(|j| j.status() == pb::JobStatus::Running)
    );
    assert_ne!(running.revision, pending.revision);
    assert_eq!(status_of(&running), pb::SyncStatus::Running);

    harness.emulator.advance(Duration::from_secs(61));
    let done = next_state(&mut stream).await;
    assert_eq!(status_of(&done), pb::SyncStatus::Success);
    assert!(
        done.jobs
            .iter()
            .all(|j| j.status() == pb::JobStatus::Success)
    );
    assert_ne!(done.revision, running.revision);

    assert!(next(&mut stream).await.is_none(), "the stream ends with OK");
}

#[tokio::test]
async fn heartbeats_carry_the_last_successful_poll_time() {
    let harness = harness(|s| s.watch.heartbeat_interval = Duration::from_millis(50)).await;
    let sync_id = create_sync(&harness).await;
    let mut stream = watch(&harness, &sync_id).await;
    let state = next_state(&mut stream).await;

    let first = next_heartbeat(&mut stream).await;
    let second = next_heartbeat(&mut stream).await;
    assert_eq!(first.revision, state.revision);
    assert_eq!(first.consecutive_failures, 0);
    let (first_poll, second_poll) = (
        first.last_poll_time.expect("polled"),
        second.last_poll_time.expect("polled"),
    );
    assert!(
        (second_poll.seconds, second_poll.nanos) > (first_poll.seconds, first_poll.nanos),
        "polling goes on: {first_poll:?} then {second_poll:?}"
    );
}

#[tokio::test]
async fn upstream_failures_show_as_staleness_then_end_with_unavailable() {
    let harness = harness(|s| {
        s.watch.heartbeat_interval = Duration::from_millis(30);
        s.watch.max_failures = 6;
    })
    .await;
    let sync_id = create_sync(&harness).await;
    let mut stream = watch(&harness, &sync_id).await;
    next_state(&mut stream).await;

    harness.emulator.inject(Fault::new(FaultKind::status(503)));
    let mut stale_since = None;
    let mut most_failures = 0;
    let end = loop {
        match next(&mut stream).await {
            Some(Ok(Event::Heartbeat(heartbeat))) if heartbeat.consecutive_failures > 0 => {
                let last = heartbeat.last_poll_time.expect("an earlier poll succeeded");
                assert_eq!(*stale_since.get_or_insert(last), last, "no poll succeeds");
                most_failures = most_failures.max(heartbeat.consecutive_failures);
            }
            Some(Ok(_)) => {}
            Some(Err(status)) => break status,
            None => panic!("the stream must not end with OK"),
        }
    };
    assert!(most_failures > 0, "a heartbeat showed the failures");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("upstream"), "{end:?}");
}

#[tokio::test]
async fn resuming_with_the_current_revision_sends_only_later_changes() {
    let harness = harness(|s| s.watch.heartbeat_interval = Duration::from_millis(50)).await;
    let sync_id = create_sync(&harness).await;
    let mut first = watch(&harness, &sync_id).await;
    let seen = next_state(&mut first).await;
    drop(first);

    let request = watch_request(&sync_id, seen.revision);
    let response = soon(harness.syncs().watch_sync(request)).await;
    let mut resumed = response.expect("watch opens").into_inner();
    let heartbeat = next_heartbeat(&mut resumed).await;
    assert_eq!(heartbeat.revision, seen.revision, "nothing was re-sent");

    harness.emulator.advance(Duration::from_secs(11));
    let changed = next_state(&mut resumed).await;
    assert_ne!(changed.revision, seen.revision);
}

#[tokio::test]
async fn resuming_a_final_unchanged_sync_ends_at_once() {
    let harness = harness(|_| {}).await;
    let sync_id = create_sync(&harness).await;
    harness.emulator.advance(Duration::from_secs(600));
    let mut first = watch(&harness, &sync_id).await;
    let done = next_state(&mut first).await;
    assert_eq!(status_of(&done), pb::SyncStatus::Success);
    assert!(next(&mut first).await.is_none());

    let request = watch_request(&sync_id, done.revision);
    let response = soon(harness.syncs().watch_sync(request)).await;
    let mut resumed = response.expect("watch opens").into_inner();
    assert!(
        next(&mut resumed).await.is_none(),
        "ends with OK, no message"
    );
}

#[tokio::test]
async fn many_streams_on_one_sync_cost_what_one_stream_costs() {
    const PERIOD: Duration = Duration::from_millis(1000);
    let harness = harness(|s| s.watch.poll_interval = Duration::from_millis(50)).await;
    let sync_id = create_sync(&harness).await;

    let mut single = watch(&harness, &sync_id).await;
    next_state(&mut single).await;
    let before = polls_of(&harness, &sync_id);
    tokio::time::sleep(PERIOD).await;
    let one = polls_of(&harness, &sync_id) - before;
    drop(single);

    let mut streams = Vec::new();
    for _ in 0..200 {
        let mut stream = watch(&harness, &sync_id).await;
        next_state(&mut stream).await;
        streams.push(stream);
    }
    let before = polls_of(&harness, &sync_id);
    tokio::time::sleep(PERIOD).await;
    let many = polls_of(&harness, &sync_id) - before;

    assert!(one >= 5, "one stream polled {one} times");
    let allowed = one + one / 10 + 1;
    assert!(
        many <= allowed,
        "200 streams polled {many} times, one stream {one}"
    );
    assert!(
        many >= one / 2,
        "polling keeps its pace: {many} against {one}"
    );
}

#[tokio::test]
async fn each_key_polls_with_its_own_key_and_a_foreign_key_gets_not_found() {
    let harness = harness(|_| {}).await;
    let sync_id = create_sync(&harness).await;
    let mut demo = watch(&harness, &sync_id).await;
    next_state(&mut demo).await;
    let request = with_key(watch_request(&sync_id, 0), SECOND_DEMO_KEY);
    let response = soon(harness.syncs().watch_sync(request)).await;
    let mut second = response.expect("watch opens").into_inner();
    next_state(&mut second).await;

    let request = with_key(watch_request(&sync_id, 0), OTHER_API_KEY);
    let status = soon(harness.syncs().watch_sync(request))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let polls: Vec<_> = harness
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.route == Some(Route::GetSync))
        .collect();
    for key in [DEMO_API_KEY, SECOND_DEMO_KEY, OTHER_API_KEY] {
        assert!(polls.iter().any(|r| r.sent_key(key)), "a poll with {key}");
    }
    let other = polls.iter().filter(|r| r.sent_key(OTHER_API_KEY));
    assert!(other.clone().all(|r| r.status == 404));
    assert_eq!(other.count(), 1, "a refused poller stops");
}

#[tokio::test]
async fn polling_stops_within_one_interval_when_the_last_client_leaves() {
    let interval = Duration::from_millis(50);
    let harness = harness(|s| s.watch.poll_interval = interval).await;
    let sync_id = create_sync(&harness).await;
    let mut a = watch(&harness, &sync_id).await;
    let mut b = watch(&harness, &sync_id).await;
    next_state(&mut a).await;
    next_state(&mut b).await;

    drop(a);
    tokio::time::sleep(interval * 3).await;
    let still = polls_of(&harness, &sync_id);
    tokio::time::sleep(interval * 3).await;
    assert!(
        polls_of(&harness, &sync_id) > still,
        "one client left; polling goes on"
    );

    drop(b);
    tokio::time::sleep(interval * 2).await;
    let stopped = polls_of(&harness, &sync_id);
    tokio::time::sleep(interval * 6).await;
    assert_eq!(
        polls_of(&harness, &sync_id),
        stopped,
        "no poll after the last left"
    );
}

#[tokio::test]
async fn shutdown_ends_every_open_stream_with_unavailable() {
    let harness = harness(|s| s.drain_timeout = Duration::from_secs(5)).await;
    let sync_id = create_sync(&harness).await;
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut stream = watch(&harness, &sync_id).await;
        next_state(&mut stream).await;
        streams.push(stream);
    }

    let Harness {
        emulator, server, ..
    } = harness;
    let started = tokio::time::Instant::now();
    let drained = tokio::spawn(server.shutdown());
    for mut stream in streams {
        match next(&mut stream).await {
            Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
    }
    soon(drained).await.expect("joins").expect("drains cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(emulator);
}

#[tokio::test]
async fn wait_sync_returns_on_change_and_times_out_with_the_unchanged_state() {
    let harness = harness(|_| {}).await;
    let sync_id = create_sync(&harness).await;
    let wait = |revision: u64, timeout_ms: i32| pb::WaitSyncRequest {
        sync_id: sync_id.clone(),
        revision,
        timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: timeout_ms * 1_000_000,
        }),
    };

    let current = soon(harness.syncs().wait_sync(wait(0, 500))).await;
    let current = current.expect("state").into_inner();
    assert!(current.changed);
    let state = current.state.expect("state");

    let started = tokio::time::Instant::now();
    let unchanged = soon(harness.syncs().wait_sync(wait(state.revision, 200))).await;
    let unchanged = unchanged.expect("times out with the state").into_inner();
    assert!(!unchanged.changed);
    assert_eq!(unchanged.state.expect("state").revision, state.revision);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let mut syncs = harness.syncs();
    let request = wait(state.revision, 900);
    let waiting = tokio::spawn(async move { syncs.wait_sync(request).await });
    harness.emulator.advance(Duration::from_secs(11));
    let changed = soon(waiting).await.expect("joins").expect("changed");
    let changed = changed.into_inner();
    assert!(changed.changed);
    assert_ne!(changed.state.expect("state").revision, state.revision);
}

#[tokio::test]
async fn wait_sync_refuses_a_negative_timeout() {
    let harness = harness(|_| {}).await;
    let request = pb::WaitSyncRequest {
        sync_id: "abc".into(),
        revision: 0,
        timeout: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
    };
    let status = harness
        .syncs()
        .wait_sync(request)
        .await
        .expect_err("refused");
    common::assert_invalid_field(&status, "timeout");
}

#[tokio::test]
async fn a_client_that_stops_reading_delays_nobody_then_gets_the_latest_state() {
    let harness = harness(|_| {}).await;
    let sync_id = create_sync(&harness).await;
    let mut reader = watch(&harness, &sync_id).await;
    let mut sleeper = watch(&harness, &sync_id).await;
    next_state(&mut reader).await;
    next_state(&mut sleeper).await;

    harness.emulator.advance(Duration::from_secs(11));
    next_state(&mut reader).await;
    harness.emulator.advance(Duration::from_secs(61));
    let done = next_state(&mut reader).await;
    assert_eq!(status_of(&done), pb::SyncStatus::Success);
    assert!(next(&mut reader).await.is_none());

    let mut last = None;
    while let Some(event) = next(&mut sleeper).await {
        if let Event::State(state) = event.expect("no error") {
            last = Some(state);
        }
    }
    assert_eq!(last.expect("a state").revision, done.revision);
}

/// 50 syncs in 50 companies watched under one key, with the emulator enforcing a rate
/// limit: the shared budget keeps every poller under it, and every stream still ends with
/// its sync's final state. Rates are 30 times the real API's (3000 per minute upstream, 2400
/// for the gateway, the same 80% share) so the test takes seconds, not minutes.
#[tokio::test]
async fn pollers_of_many_syncs_stay_within_the_upstream_rate_limit() {
    many_syncs_under_one_rate_limit(30, Duration::from_secs(10)).await;
}

/// The same at the documented 100 requests per minute, in real time (about two and a half
/// minutes, which run beside the other tests).
#[tokio::test]
async fn pollers_of_many_syncs_stay_within_the_documented_rate_limit() {
    many_syncs_under_one_rate_limit(1, Duration::from_secs(120)).await;
}

/// Fifty syncs under one key against the emulator's limit, with the gateway's budget at
/// four fifths of it. `scale` multiplies both rates (and divides the time it takes): the
/// test command runs it 30 times faster than the documented 100 requests per minute.
async fn many_syncs_under_one_rate_limit(scale: u32, opening_limit: Duration) {
    const SYNCS: i64 = 50;
    let mut config = slow_emulator();
    config.rate_limit = Some(RateLimitConfig {
        per_minute: 100 * scale,
        burst: 100,
    });
    config.organizations[0].companies = (0..SYNCS)
        .map(|i| CompanySeed::new(1000 + i, "Budget Test Co", "XERO"))
        .collect();
    let harness = Harness::with(config, |settings| {
        fast_watch(settings);
        settings.request_budget.per_minute = 80 * scale;
        settings.request_budget.burst = 20;
        settings.watch.heartbeat_interval = Duration::from_millis(200);
    })
    .await;
    let mut sync_ids = Vec::new();
    for company_id in (0..SYNCS).map(|i| 1000 + i) {
        let request = pb::CreateSyncRequest {
            company_id,
            ..Default::default()
        };
        let created = harness.syncs().create_sync(request).await;
        sync_ids.push(created.expect("create").into_inner().sync_id);
    }
    // One after the other: a new watch's first reads go before the running pollers'
    // re-reads, so each opens within a few tokens' time, not a whole round of pollers.
    let started = tokio::time::Instant::now();
    let mut streams = Vec::new();
    for sync_id in &sync_ids {
        let request = watch_request(sync_id, 0);
        let mut client = harness.syncs();
        let opened = tokio::time::timeout(opening_limit, client.watch_sync(request));
        streams.push(
            opened
                .await
                .expect("opens in time")
                .expect("opens")
                .into_inner(),
        );
    }
    let opening = started.elapsed();
    assert!(opening < opening_limit, "opening took {opening:?}");
    harness.emulator.advance(Duration::from_secs(600));

    // Every stream is read at once, as real clients do: unread messages pile up in the
    // client's HTTP/2 connection, which refuses too many small buffered frames.
    let readers = streams.into_iter().map(|mut stream| async move {
        let (mut last, mut heartbeats) = (None, 0);
        while let Some(event) = next(&mut stream).await {
            match event.expect("no error") {
                Event::State(state) => last = Some(state),
                Event::Heartbeat(heartbeat) => {
                    assert!(heartbeat.last_poll_time.is_some());
                    heartbeats += 1;
                }
            }
        }
        (last, heartbeats)
    });
    let mut heartbeats = 0;
    for (last, seen) in futures::future::join_all(readers).await {
        assert_eq!(status_of(&last.expect("a state")), pb::SyncStatus::Success);
        heartbeats += seen;
    }
    assert!(
        heartbeats > 0,
        "streams waiting for the budget saw heartbeats"
    );
    assert_eq!(harness.emulator.counters().for_status(429), 0);
}

async fn watch_company(
    harness: &Harness,
    company_id: i64,
) -> Streaming<pb::WatchCompanySyncsResponse> {
    let request = pb::WatchCompanySyncsRequest {
        company_id,
        job_type: pb::JobType::Unspecified.into(),
    };
    let response = soon(harness.syncs().watch_company_syncs(request)).await;
    response.expect("watch opens").into_inner()
}

/// The next list of added or changed syncs, skipping heartbeats.
async fn next_change(
    stream: &mut Streaming<pb::WatchCompanySyncsResponse>,
) -> pb::CompanySyncsChange {
    use pb::watch_company_syncs_response::Event as CompanyEvent;
    loop {
        let message = soon(stream.message()).await;
        match message.map(|m| m.and_then(|m| m.event)) {
            Ok(Some(CompanyEvent::Change(change))) => return change,
            Ok(Some(CompanyEvent::Heartbeat(_))) => continue,
            other => panic!("expected a change, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn company_watch_sends_every_sync_then_only_new_and_changed_ones() {
    let harness = harness(|_| {}).await;
    let mut stream = watch_company(&harness, 496).await;
    let first = next_change(&mut stream).await;
    assert_eq!(first.company_id, 496);
    assert_eq!(first.syncs.len(), 2, "the seeded history: {first:?}");
    assert!(first.syncs.iter().all(|s| s.company_id == 496));

    let sync_id = create_sync(&harness).await;
    let added = next_change(&mut stream).await;
    assert_eq!(added.syncs.len(), 1, "{added:?}");
    assert_eq!(added.syncs[0].id, sync_id);
    assert_eq!(added.syncs[0].status(), pb::SyncStatus::Running);
    assert_ne!(added.revision, first.revision);

    harness.emulator.advance(Duration::from_secs(600));
    let mut finished = next_change(&mut stream).await;
    while finished.syncs[0].status() == pb::SyncStatus::Running {
        finished = next_change(&mut stream).await;
    }
    assert_eq!(finished.syncs.len(), 1, "{finished:?}");
    assert_eq!(finished.syncs[0].id, sync_id);
    assert_eq!(finished.syncs[0].status(), pb::SyncStatus::Success);
}

#[tokio::test]
async fn company_watch_shows_syncs_started_by_the_schedule() {
    let harness = harness(|_| {}).await;
    let mut stream = watch_company(&harness, 497).await;
    next_change(&mut stream).await;

    let auto = harness
        .emulator
        .start_auto_sync(497)
        .expect("auto sync starts");
    let added = next_change(&mut stream).await;
    assert_eq!(added.syncs.len(), 1, "{added:?}");
    assert_eq!(added.syncs[0].id, auto);
    assert_eq!(added.syncs[0].sync_type(), pb::SyncType::AutoSync);
}

#[tokio::test]
async fn company_watch_refuses_unknown_and_foreign_companies_and_bad_filters() {
    let harness = harness(|_| {}).await;
    for company_id in [12_345, 900] {
        let request = pb::WatchCompanySyncsRequest {
            company_id,
            job_type: 0,
        };
        let status = soon(harness.syncs().watch_company_syncs(request))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }

    let request = pb::WatchCompanySyncsRequest {
        company_id: 496,
        job_type: pb::JobType::Custom.into(),
    };
    let status = soon(harness.syncs().watch_company_syncs(request))
        .await
        .expect_err("refused");
    common::assert_invalid_field(&status, "job_type");
}

#[tokio::test]
async fn company_streams_share_one_poller() {
    const PERIOD: Duration = Duration::from_millis(600);
    let harness = harness(|s| s.watch.idle_poll_interval = Duration::from_millis(50)).await;
    let lists = |harness: &Harness| harness.emulator.counters().for_route(Route::ListSyncs);

    let mut one = watch_company(&harness, 498).await;
    next_change(&mut one).await;
    let before = lists(&harness);
    tokio::time::sleep(PERIOD).await;
    let single = lists(&harness) - before;

    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut stream = watch_company(&harness, 498).await;
        next_change(&mut stream).await;
        streams.push(stream);
    }
    let before = lists(&harness);
    tokio::time::sleep(PERIOD).await;
    let many = lists(&harness) - before;
    assert!(single >= 3, "one stream listed {single} times");
    assert!(
        many <= single * 2,
        "51 streams listed {many} times, one stream {single}"
    );
}

/// The built binary on port 0 against its built-in emulator, with jobs that run for ten
/// minutes; returns the process and its gRPC address from the serving line.
#[cfg(unix)]
async fn start_binary() -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_commenda-sync-gateway"))
        .args(["--listen", "127.0.0.1:0", "--drain-timeout-ms", "5000"])
        .args([
            "--emulator-job-duration-ms",
            "600000",
            "--emulator-rate-limit",
            "0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = soon(lines.next_line()).await.expect("reads stdout");
    let serving: serde_json::Value =
        serde_json::from_str(&line.expect("a serving line")).expect("JSON");
    let addr = serving["listen"]
        .as_str()
        .expect("listen address")
        .to_owned();
    (child, addr)
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_ends_500_open_streams_with_unavailable_and_exits_cleanly() {
    use commenda_sync_gateway::pb::v1::sync_service_client::SyncServiceClient;
    let (mut child, addr) = start_binary().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connects");
        clients.push(SyncServiceClient::new(channel));
    }
    let request = pb::CreateSyncRequest {
        company_id: 496,
        ..Default::default()
    };
    let created = clients[0].create_sync(request).await.expect("create");
    let sync_id = created.into_inner().sync_id;

    let mut streams = Vec::new();
    for i in 0..500 {
        let opened = soon(clients[i % 5].watch_sync(watch_request(&sync_id, 0))).await;
        let mut stream = opened.expect("watch opens").into_inner();
        next_state(&mut stream).await;
        streams.push(stream);
    }

    let pid = child.id().expect("running").to_string();
    let started = tokio::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(killed.expect("kill runs").success());
    for stream in &mut streams {
        match next(stream).await {
            Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
    }
    let exit = soon(child.wait()).await.expect("exits");
    assert!(exit.success(), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn wait_sync_on_an_unknown_sync_is_not_found_and_on_a_final_one_returns_at_once() {
    let harness = harness(|_| {}).await;
    let request = pb::WaitSyncRequest {
        sync_id: "no-such-sync".into(),
        ..Default::default()
    };
    let status = soon(harness.syncs().wait_sync(request))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let sync_id = create_sync(&harness).await;
    harness.emulator.advance(Duration::from_secs(600));
    let request = pb::WaitSyncRequest {
        sync_id: sync_id.clone(),
        ..Default::default()
    };
    let done = soon(harness.syncs().wait_sync(request))
        .await
        .expect("state");
    let state = done.into_inner().state.expect("state");
    assert_eq!(status_of(&state), pb::SyncStatus::Success);

    let request = pb::WaitSyncRequest {
        sync_id,
        revision: state.revision,
        timeout: None,
    };
    let started = tokio::time::Instant::now();
    let again = soon(harness.syncs().wait_sync(request))
        .await
        .expect("state");
    assert!(!again.into_inner().changed);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a final sync does not wait"
    );
}

#[tokio::test]
async fn a_429_pauses_every_poller_of_the_key_until_retry_after() {
    let harness = harness(|_| {}).await;
    let first = create_sync(&harness).await;
    let request = pb::CreateSyncRequest {
        company_id: 497,
        ..Default::default()
    };
    let second = harness.syncs().create_sync(request).await.expect("create");
    let second = second.into_inner().sync_id;
    let mut streams = vec![
        watch(&harness, &first).await,
        watch(&harness, &second).await,
    ];
    for stream in &mut streams {
        next_state(stream).await;
    }

    let throttle = FaultKind::Status {
        code: 429,
        retry_after: Some(1),
        body: None,
    };
    harness
        .emulator
        .inject(Fault::on(Route::GetSync, throttle).times(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let requests = harness.emulator.requests();
    let throttled = requests.iter().find(|r| r.status == 429).expect("a 429");
    let polls_after = |from: i64, to: i64| {
        requests
            .iter()
            .filter(|r| matches!(r.route, Some(Route::GetSync | Route::ListSyncJobs)))
            .filter(|r| (r.at - throttled.at).num_milliseconds() > from)
            .filter(|r| (r.at - throttled.at).num_milliseconds() < to)
            .count()
    };
    // A request the other poller had already sent may land just after the 429.
    assert_eq!(polls_after(50, 900), 0, "both pollers paused");
    assert!(
        polls_after(1000, 1500) > 0,
        "polling resumed after Retry-After"
    );
}

#[tokio::test]
async fn a_failing_upstream_before_the_first_state_fails_the_call_with_unavailable() {
    let harness = harness(|s| s.watch.max_failures = 3).await;
    let sync_id = create_sync(&harness).await;
    harness
        .emulator
        .inject(Fault::on(Route::GetSync, FaultKind::status(503)));
    let status = soon(harness.syncs().watch_sync(watch_request(&sync_id, 0)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let polls = harness
        .emulator
        .counters()
        .count(Route::GetSync, DEMO_API_KEY, 503);
    assert_eq!(polls, 3, "the failure budget is three polls");
}

#[tokio::test]
async fn a_stream_past_the_callers_deadline_ends_with_deadline_exceeded() {
    let harness = harness(|_| {}).await;
    let sync_id = create_sync(&harness).await;
    let mut request = tonic::Request::new(watch_request(&sync_id, 0));
    request.set_timeout(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let mut stream = soon(harness.syncs().watch_sync(request))
        .await
        .expect("opens")
        .into_inner();

    let first = next_state(&mut stream).await;
    assert_eq!(first.sync.expect("sync").id, sync_id);
    let end = loop {
        match next(&mut stream).await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("the sync is still running; the stream must not end OK"),
        }
    };
    assert_eq!(end.code(), tonic::Code::DeadlineExceeded, "{end:?}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}
