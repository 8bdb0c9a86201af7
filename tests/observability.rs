//! Metrics a scraper can read, trace context that reaches the upstream, and gRPC-Web.

mod common;

use commenda_sync_gateway::emulator::EmulatorConfig;
use commenda_sync_gateway::pb::v1 as pb;
use common::{Harness, newest_sync};
use prost::Message;
use tonic::Request;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test]
async fn metrics_count_the_calls_they_saw() {
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let sync = newest_sync(&harness, 496).await;
    for _ in 0..3 {
        let get = pb::GetSyncRequest {
            sync_id: sync.id.clone(),
        };
        harness.syncs().get_sync(get).await.expect("found");
    }
    let missing = harness
        .syncs()
        .get_sync(pb::GetSyncRequest {
            sync_id: "nope".into(),
        })
        .await;
    assert!(missing.is_err());
    let invalid = harness
        .syncs()
        .get_sync(pb::GetSyncRequest {
            sync_id: "a/b".into(),
        })
        .await;
    assert!(invalid.is_err());

    let addr = harness.server.metrics_addr().expect("metrics listener");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape");
    let text = text.text().await.expect("body");
    let rpc = |code: &str| {
        let series = format!(
            "commenda_gateway_rpcs_total{{method=\"/commenda.sync.v1.SyncService/GetSync\",code=\"{code}\"}}"
        );
        sample(&text, &series)
    };
    assert_eq!(rpc("OK"), Some(3.0), "{text}");
    assert_eq!(rpc("NOT_FOUND"), Some(1.0));
    assert_eq!(rpc("INVALID_ARGUMENT"), Some(1.0));
    let upstream = |status: &str| {
        let series = format!(
            "commenda_gateway_upstream_requests_total{{route=\"get_sync\",status=\"{status}\"}}"
        );
        sample(&text, &series)
    };
    assert_eq!(upstream("200"), Some(3.0));
    assert_eq!(upstream("404"), Some(1.0));
    assert_eq!(sample(&text, "commenda_gateway_upstream_up"), Some(1.0));
    let latency = "commenda_gateway_rpc_duration_seconds_count{method=\"/commenda.sync.v1.SyncService/GetSync\",code=\"OK\"}";
    assert_eq!(sample(&text, latency), Some(3.0));
}

#[tokio::test]
async fn a_valid_traceparent_reaches_the_upstream_and_a_bad_one_does_not() {
    let harness = Harness::start().await;
    let sync = newest_sync(&harness, 496).await;
    for (sent, forwarded) in [(TRACEPARENT, Some(TRACEPARENT)), ("00-zz-00-01", None)] {
        let mut get = Request::new(pb::GetSyncRequest {
            sync_id: sync.id.clone(),
        });
        get.metadata_mut()
            .insert("traceparent", sent.parse().expect("ascii"));
        harness.syncs().get_sync(get).await.expect("found");
        let request = harness.emulator.requests().pop().expect("recorded");
        assert_eq!(request.header("traceparent"), forwarded, "sent {sent}");
    }
}

/// One gRPC-Web frame: a flag byte, a big-endian length, the payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend(payload);
    out
}

/// Splits a gRPC-Web body into its data message and its trailer text.
fn split_frames(body: &[u8]) -> (Vec<u8>, String) {
    let (mut data, mut trailers, mut rest) = (Vec::new(), String::new(), body);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        if rest[0] & 0x80 == 0 {
            data = payload.to_vec();
        } else {
            trailers = String::from_utf8_lossy(payload).into_owned();
        }
        rest = &rest[5 + len..];
    }
    (data, trailers)
}

#[tokio::test]
async fn grpc_web_calls_work_over_http1() {
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.cors_allow_origins = vec!["https://console.example.com".into()];
    })
    .await;
    let sync = newest_sync(&harness, 496).await;
    let url = format!(
        "http://{}/commenda.sync.v1.SyncService/GetSync",
        harness.server.addr()
    );
    let message = pb::GetSyncRequest {
        sync_id: sync.id.clone(),
    }
    .encode_to_vec();
    let client = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client");

    let response = client
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "https://console.example.com")
        .body(frame(0, &message))
        .send()
        .await
        .expect("gRPC-Web answer");
    assert_eq!(response.status(), 200);
    let allowed = response
        .headers()
        .get("access-control-allow-origin")
        .cloned();
    assert_eq!(
        allowed.as_ref().and_then(|v| v.to_str().ok()),
        Some("https://console.example.com")
    );
    let body = response.bytes().await.expect("body");
    let (data, trailers) = split_frames(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let answer = pb::GetSyncResponse::decode(data.as_slice()).expect("message");
    assert_eq!(answer.sync.expect("sync").id, sync.id);

    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example.net")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn stream_poller_and_budget_gauges_follow_the_watches() {
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let create = pb::CreateSyncRequest {
        company_id: 497,
        ..Default::default()
    };
    let created = harness
        .syncs()
        .create_sync(create)
        .await
        .expect("create")
        .into_inner();
    let addr = harness.server.metrics_addr().expect("metrics listener");
    let scrape = || async move {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("scrape");
        text.text().await.expect("body")
    };

    let watch = pb::WatchSyncRequest {
        sync_id: created.sync_id,
        revision: 0,
    };
    let mut stream = harness
        .syncs()
        .watch_sync(watch)
        .await
        .expect("watch")
        .into_inner();
    stream
        .message()
        .await
        .expect("first message")
        .expect("a state");
    let text = scrape().await;
    assert_eq!(
        sample(&text, "commenda_gateway_active_streams"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "commenda_gateway_active_pollers"), Some(1.0));
    let budget = text
        .lines()
        .find(|l| l.starts_with("commenda_gateway_request_budget_remaining{key=\""));
    let budget = budget.expect("a budget gauge for the demo key's fingerprint");
    assert!(
        !budget.contains("commenda-demo-key"),
        "keys appear only as fingerprints"
    );

    drop(stream);
    let settled = async {
        loop {
            let text = scrape().await;
            let streams = sample(&text, "commenda_gateway_active_streams");
            let pollers = sample(&text, "commenda_gateway_active_pollers");
            if streams == Some(0.0) && pollers == Some(0.0) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), settled)
        .await
        .expect("gauges fall to 0");
}
