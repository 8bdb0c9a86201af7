//! Spans reach an OTLP collector, as children of the caller's trace: the real binary runs
//! with `--otlp-endpoint` pointing at a stand-in collector on loopback.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use commenda_sync_gateway::pb::v1 as pb;
use commenda_sync_gateway::pb::v1::sync_service_client::SyncServiceClient;
use tokio::net::TcpListener;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

type Received = Arc<Mutex<Vec<Bytes>>>;

async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Received>, body: Bytes| async move {
                r.lock().expect("lock").push(body);
            }),
        )
        .with_state(received.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn spans_are_exported_as_children_of_the_callers_trace() {
    let (url, received) = collector().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_commenda-sync-gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--emulator-rate-limit",
            "0",
            "--otlp-endpoint",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("serving line");
    let serving: serde_json::Value =
        serde_json::from_str(&line.expect("joined").expect("read")).expect("json line");
    let addr = serving["listen"].as_str().expect("listen").to_owned();

    let mut client = SyncServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(pb::ListSyncsRequest {
        company_id: 496,
        ..Default::default()
    });
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    client.list_syncs(request).await.expect("list");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(killed.expect("kill runs").success());
    let exited = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("exits");
    assert!(status.expect("joined").expect("wait").success());

    let bodies = received.lock().expect("lock").clone();
    assert!(!bodies.is_empty(), "the collector received spans");
    let all: Vec<u8> = bodies.iter().flat_map(|b| b.to_vec()).collect();
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(&hex_bytes(TRACE_ID)),
        "spans carry the caller's trace id"
    );
    assert!(
        contains(b"commenda-sync-gateway"),
        "spans carry the service name"
    );
    assert!(
        contains(b"upstream"),
        "the upstream request has its own span"
    );
}
