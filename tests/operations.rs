//! Health that follows the upstream, load shedding, message limits, and TLS on both sides.

mod common;

use std::sync::Arc;
use std::time::Duration;

use commenda_sync_gateway::emulator::{EmulatorConfig, Fault, FaultKind, Route};
use commenda_sync_gateway::pb::v1 as pb;
use commenda_sync_gateway::pb::v1::sync_service_client::SyncServiceClient;
use commenda_sync_gateway::server::{self, Settings, TlsFiles};
use commenda_sync_gateway::upstream::ApiKey;
use common::{Harness, with_key};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response};
use tonic_types::StatusExt;

async fn health(channel: &Channel) -> ServingStatus {
    let mut client = HealthClient::new(channel.clone());
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let status = client
        .check(request)
        .await
        .expect("health check")
        .into_inner()
        .status;
    health_check_response::ServingStatus::try_from(status).expect("known status")
}

/// Polls health until it reads `want`, within five seconds.
async fn await_health(channel: &Channel, want: ServingStatus) {
    let wait = async {
        while health(channel).await != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("health reached");
}

#[tokio::test]
async fn health_follows_the_upstream_down_and_back_up() {
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.health_probe_interval = Duration::from_millis(50);
    })
    .await;
    assert_eq!(health(&harness.channel).await, ServingStatus::Serving);

    harness.emulator.inject(Fault::new(FaultKind::status(503)));
    let get = pb::GetSyncRequest {
        sync_id: "abc".into(),
    };
    let status = harness.syncs().get_sync(get).await.expect_err("503");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(health(&harness.channel).await, ServingStatus::NotServing);

    harness.emulator.clear_faults();
    await_health(&harness.channel, ServingStatus::Serving).await;
}

#[tokio::test]
async fn a_rejected_default_key_turns_health_off_but_caller_keys_do_not() {
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.default_key = Some(ApiKey::parse("revoked-default-key").expect("key"));
        s.health_probe_interval = Duration::from_secs(60);
    })
    .await;
    for _ in 0..3 {
        let get = with_key(
            pb::GetSyncRequest {
                sync_id: "abc".into(),
            },
            "unknown-caller-key",
        );
        let status = harness.syncs().get_sync(get).await.expect_err("401");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert_eq!(health(&harness.channel).await, ServingStatus::Serving);

    for _ in 0..3 {
        let get = pb::GetSyncRequest {
            sync_id: "abc".into(),
        };
        let status = harness.syncs().get_sync(get).await.expect_err("401");
        assert_eq!(status.code(), Code::Unavailable);
    }
    assert_eq!(health(&harness.channel).await, ServingStatus::NotServing);
}

/// A stand-in upstream that accepts connections and never answers; it reports each
/// accepted connection, so a test knows a call is in flight without waiting blindly.
async fn silent_upstream() -> (String, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v4", listener.local_addr().expect("addr"));
    let (accepted, on_accept) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted.send(()).await;
        }
    });
    (url, on_accept)
}

#[tokio::test]
async fn calls_beyond_the_limit_are_shed_at_once() {
    let (url, mut on_accept) = silent_upstream().await;
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.max_concurrent_calls = 1;
        s.upstream_url = url;
    })
    .await;
    let mut slow = harness.syncs();
    let first = tokio::spawn(async move {
        slow.get_sync(pb::GetSyncRequest {
            sync_id: "abc".into(),
        })
        .await
    });
    tokio::time::timeout(Duration::from_secs(5), on_accept.recv())
        .await
        .expect("first call is in flight");

    let started = std::time::Instant::now();
    let get = pb::GetSyncRequest {
        sync_id: "abc".into(),
    };
    let status = harness.syncs().get_sync(get).await.expect_err("shed");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.get_details_error_info().expect("ErrorInfo").reason,
        "GATEWAY_OVERLOADED"
    );
    assert!(status.get_details_retry_info().is_some());
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "refused at once"
    );
    first.abort();
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| s.max_message_bytes = 4096).await;
    let selection = pb::DataModelSelection {
        data_model: "A".repeat(64),
        sync_from: None,
    };
    let create = pb::CreateSyncRequest {
        company_id: 496,
        data_models: vec![selection; 100],
        ..Default::default()
    };
    let status = harness
        .syncs()
        .create_sync(create)
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(harness.emulator.counters().total(), 0);
}

/// A certificate authority and a `localhost` certificate it signed.
struct Pki {
    ca_pem: String,
    cert_der: Vec<u8>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("leaf");
    Pki {
        ca_pem: ca.pem(),
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn the_listener_serves_tls_with_given_files() {
    let pki = pki();
    let emulator = commenda_sync_gateway::emulator::Emulator::start(EmulatorConfig::for_tests())
        .await
        .expect("emulator");
    let mut settings = Settings::new(emulator.base_url());
    settings.default_key =
        Some(ApiKey::parse(commenda_sync_gateway::emulator::DEMO_API_KEY).expect("key"));
    settings.tls = Some(TlsFiles {
        cert_pem: pki.cert_pem.clone().into(),
        key_pem: pki.key_pem.clone().into(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = server::spawn(listener, settings).expect("gateway");

    let url = format!("https://localhost:{}", server.addr().port());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(url.clone())
        .expect("url")
        .tls_config(tls)
        .expect("tls");
    let channel = channel.connect().await.expect("TLS handshake with the CA");
    let list = pb::ListSyncsRequest {
        company_id: 496,
        ..Default::default()
    };
    let page = SyncServiceClient::new(channel)
        .list_syncs(list)
        .await
        .expect("list over TLS");
    assert!(!page.into_inner().syncs.is_empty());

    // Plaintext HTTP/2 is not served on a TLS listener: either the connection or the
    // call fails.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{}", server.addr().port()))
        .expect("url")
        .connect()
        .await;
    let plain_call_worked = match plain {
        Err(_) => false,
        Ok(plain) => {
            let list = pb::ListSyncsRequest {
                company_id: 496,
                ..Default::default()
            };
            SyncServiceClient::new(plain).list_syncs(list).await.is_ok()
        }
    };
    assert!(!plain_call_worked);
}

/// Terminates TLS with `pki`'s certificate and forwards the bytes to `target`.
async fn tls_front(pki: &Pki, target: std::net::SocketAddr) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rustls::pki_types::CertificateDer::from(pki.cert_der.clone());
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(pki.key_der.clone());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_upstream_is_trusted_through_a_given_ca_only() {
    let pki = pki();
    let emulator = commenda_sync_gateway::emulator::Emulator::start(EmulatorConfig::for_tests())
        .await
        .expect("emulator");
    let port = tls_front(&pki, emulator.addr()).await;
    let url = format!("https://localhost:{port}/v4");

    let ca = pki.ca_pem.clone().into_bytes();
    let trusted = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.upstream_url = url.clone();
        s.upstream_ca_pem = Some(ca);
    })
    .await;
    let list = pb::ListSyncsRequest {
        company_id: 496,
        ..Default::default()
    };
    trusted
        .syncs()
        .list_syncs(list.clone())
        .await
        .expect("upstream over TLS with the CA");
    assert_eq!(emulator.counters().for_route(Route::ListSyncs), 1);

    let untrusted = Harness::with(EmulatorConfig::for_tests(), |s| s.upstream_url = url).await;
    let status = untrusted
        .syncs()
        .list_syncs(list)
        .await
        .expect_err("unknown CA");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        emulator.counters().for_route(Route::ListSyncs),
        1,
        "nothing got through"
    );
}

#[tokio::test]
async fn health_turns_off_when_draining() {
    let harness = Harness::with(EmulatorConfig::for_tests(), |s| {
        s.drain_timeout = Duration::from_millis(300);
    })
    .await;
    let Harness {
        server,
        channel,
        emulator: _emulator,
    } = harness;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("message").expect("status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let stopping = std::time::Instant::now();
    let stopped = tokio::spawn(server.shutdown());
    let update = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    let update = update
        .expect("an update")
        .expect("a message")
        .expect("a status");
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    stopped.await.expect("joined").expect("clean stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stopped within the drain deadline"
    );
}
