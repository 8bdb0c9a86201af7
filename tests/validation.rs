//! Every field a caller controls is checked before any upstream call: each test asserts
//! INVALID_ARGUMENT, the field named in BadRequest, and zero requests at the emulator.

mod common;

use commenda_sync_gateway::pb::v1 as pb;
use common::{Harness, assert_invalid_field};
use prost_types::Timestamp;
use tonic::Request;
use tonic::metadata::MetadataValue;

fn write_config() -> pb::WriteSyncConfig {
    pb::WriteSyncConfig {
        data_model: "ACCOUNT".into(),
        category: pb::IntegrationCategory::Accounting.into(),
        enabled: true,
        frequency: pb::SyncFrequency::Weekly.into(),
        interval: 2,
        scope_access: Some(pb::ScopeAccess {
            read: true,
            ..Default::default()
        }),
        sync_from: None,
    }
}

async fn assert_no_upstream_calls(harness: &Harness) {
    assert_eq!(
        harness.emulator.counters().total(),
        0,
        "the emulator was called"
    );
}

#[tokio::test]
async fn hostile_sync_ids_are_refused_before_any_upstream_call() {
    let harness = Harness::start().await;
    let long = "a".repeat(129);
    let ids = [
        "../companies/1",
        "a/b",
        "a?b=c",
        "%2e%2e",
        "",
        long.as_str(),
        "a b",
        "a\u{0}b",
    ];
    for id in ids {
        let mut client = harness.syncs();
        let get = client
            .get_sync(pb::GetSyncRequest { sync_id: id.into() })
            .await;
        assert_invalid_field(&get.expect_err(id), "sync_id");

        let jobs = pb::ListSyncJobsRequest {
            sync_id: id.into(),
            ..Default::default()
        };
        assert_invalid_field(&client.list_sync_jobs(jobs).await.expect_err(id), "sync_id");
        let cancel = client
            .cancel_sync(pb::CancelSyncRequest {
                sync_id: id.into(),
                ..Default::default()
            })
            .await;
        assert_invalid_field(&cancel.expect_err(id), "sync_id");
        let retry = client
            .retry_sync(pb::RetrySyncRequest {
                sync_id: id.into(),
                ..Default::default()
            })
            .await;
        assert_invalid_field(&retry.expect_err(id), "sync_id");
    }
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn non_positive_company_ids_are_refused() {
    let harness = Harness::start().await;
    let mut syncs = harness.syncs();
    for id in [0, -496] {
        let create = syncs.create_sync(pb::CreateSyncRequest {
            company_id: id,
            ..Default::default()
        });
        assert_invalid_field(&create.await.expect_err("create"), "company_id");
        let list = syncs.list_syncs(pb::ListSyncsRequest {
            company_id: id,
            ..Default::default()
        });
        assert_invalid_field(&list.await.expect_err("list"), "company_id");
        let update = pb::UpdateCompanySyncConfigRequest {
            company_id: id,
            configs: vec![write_config()],
        };
        let update = harness.configs().update_company_sync_config(update).await;
        assert_invalid_field(&update.expect_err("update"), "company_id");
    }
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn negative_page_sizes_are_refused() {
    let harness = Harness::start().await;
    let list = pb::ListSyncsRequest {
        company_id: 496,
        page_size: -1,
        ..Default::default()
    };
    assert_invalid_field(
        &harness.syncs().list_syncs(list).await.expect_err("list"),
        "page_size",
    );
    let jobs = pb::ListSyncJobsRequest {
        sync_id: "abc".into(),
        page_size: -5,
        ..Default::default()
    };
    let jobs = harness.syncs().list_sync_jobs(jobs).await;
    assert_invalid_field(&jobs.expect_err("jobs"), "page_size");
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn forged_or_foreign_page_tokens_are_refused() {
    let harness = Harness::start().await;
    for token in [
        "garbage",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "%%%",
        &"x".repeat(2000),
    ] {
        let list = pb::ListSyncsRequest {
            company_id: 496,
            page_token: token.into(),
            ..Default::default()
        };
        let list = harness.syncs().list_syncs(list).await;
        assert_invalid_field(&list.expect_err("list"), "page_token");
        let jobs = pb::ListSyncJobsRequest {
            sync_id: "abc".into(),
            page_token: token.into(),
            ..Default::default()
        };
        let jobs = harness.syncs().list_sync_jobs(jobs).await;
        assert_invalid_field(&jobs.expect_err("jobs"), "page_token");
    }
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn page_token_replayed_with_other_filters_is_refused() {
    let harness = Harness::start().await;
    let first = pb::ListSyncsRequest {
        company_id: 496,
        page_size: 1,
        ..Default::default()
    };
    let page = harness
        .syncs()
        .list_syncs(first)
        .await
        .expect("first page")
        .into_inner();
    assert!(
        !page.next_page_token.is_empty(),
        "company 496 has more than one sync"
    );
    harness.emulator.reset_counters();

    let replays = [
        pb::ListSyncsRequest {
            company_id: 497,
            ..Default::default()
        },
        pb::ListSyncsRequest {
            company_id: 496,
            job_type: pb::JobType::Push.into(),
            ..Default::default()
        },
    ];
    for mut replay in replays {
        replay.page_token = page.next_page_token.clone();
        let refused = harness
            .syncs()
            .list_syncs(replay)
            .await
            .expect_err("replay");
        assert_invalid_field(&refused, "page_token");
    }
    let jobs = pb::ListSyncJobsRequest {
        sync_id: "abc".into(),
        page_token: page.next_page_token.clone(),
        ..Default::default()
    };
    let jobs = harness.syncs().list_sync_jobs(jobs).await;
    assert_invalid_field(&jobs.expect_err("jobs"), "page_token");
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn job_type_filters_other_than_pull_or_push_are_refused() {
    let harness = Harness::start().await;
    for job_type in [pb::JobType::Custom as i32, 42] {
        let list = pb::ListSyncsRequest {
            company_id: 496,
            job_type,
            ..Default::default()
        };
        assert_invalid_field(
            &harness.syncs().list_syncs(list).await.expect_err("list"),
            "job_type",
        );
    }
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn bad_data_models_and_times_in_create_sync_are_refused() {
    let harness = Harness::start().await;
    let selection = |model: &str| pb::DataModelSelection {
        data_model: model.into(),
        sync_from: None,
    };
    let cases = [
        (vec![selection("account")], "data_models[0].data_model"),
        (vec![selection("")], "data_models[0].data_model"),
        (
            vec![selection("ACCOUNT"), selection("ACCOUNT")],
            "data_models[1].data_model",
        ),
        (
            vec![pb::DataModelSelection {
                data_model: "ACCOUNT".into(),
                sync_from: Some(Timestamp {
                    seconds: 0,
                    nanos: -3,
                }),
            }],
            "data_models[0].sync_from",
        ),
        (vec![selection("ACCOUNT"); 101], "data_models"),
    ];
    for (data_models, field) in cases {
        let create = pb::CreateSyncRequest {
            company_id: 496,
            data_models,
            ..Default::default()
        };
        let refused = harness.syncs().create_sync(create).await.expect_err(field);
        assert_invalid_field(&refused, field);
    }
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn unspecified_integration_type_is_refused() {
    let harness = Harness::start().await;
    for integration_type in [0, 99] {
        let request = pb::GetOrganizationSyncConfigRequest { integration_type };
        let refused = harness
            .configs()
            .get_organization_sync_config(request)
            .await;
        assert_invalid_field(&refused.expect_err("refused"), "integration_type");
    }
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn bad_write_configs_are_refused_field_by_field() {
    let harness = Harness::start().await;
    let mut cases: Vec<(Vec<pb::WriteSyncConfig>, &str)> = vec![(vec![], "configs")];
    let mut bad = write_config();
    bad.interval = 0;
    cases.push((vec![write_config(), bad], "configs[1].interval"));
    let mut bad = write_config();
    bad.category = 0;
    cases.push((vec![bad], "configs[0].category"));
    let mut bad = write_config();
    bad.frequency = 0;
    cases.push((vec![bad], "configs[0].frequency"));
    let mut bad = write_config();
    bad.data_model = "bank account".into();
    cases.push((vec![bad], "configs[0].data_model"));
    let mut bad = write_config();
    bad.sync_from = Some(Timestamp {
        seconds: -10,
        nanos: 0,
    });
    cases.push((vec![bad], "configs[0].sync_from"));
    cases.push((vec![write_config(); 101], "configs"));

    for (configs, field) in cases {
        let org = pb::UpdateOrganizationSyncConfigRequest {
            configs: configs.clone(),
            propagate: false,
        };
        let org = harness.configs().update_organization_sync_config(org).await;
        assert_invalid_field(&org.expect_err(field), field);
        let company = pb::UpdateCompanySyncConfigRequest {
            company_id: 496,
            configs,
        };
        let company = harness.configs().update_company_sync_config(company).await;
        assert_invalid_field(&company.expect_err(field), field);
    }
    assert_no_upstream_calls(&harness).await;
}

#[tokio::test]
async fn malformed_keys_and_request_ids_are_refused() {
    let harness = Harness::start().await;
    let get = || pb::GetSyncRequest {
        sync_id: "abc".into(),
    };
    let cases = [
        ("authorization", "Basic abc"),
        ("authorization", "Bearer "),
        ("authorization", "Bearer two words"),
        ("x-api-key", "key with spaces"),
        ("x-request-id", "id with spaces"),
        ("x-request-id", "../../etc"),
    ];
    for (header, value) in cases {
        let mut request = Request::new(get());
        let value = MetadataValue::try_from(value).expect("ascii");
        request.metadata_mut().insert(header, value);
        let refused = harness.syncs().get_sync(request).await.expect_err(header);
        assert_invalid_field(&refused, header);
    }
    assert_no_upstream_calls(&harness).await;
}

/// A key with CR or LF cannot even be built by a conforming client, and the HTTP/2 layer
/// refuses the stream when a hostile peer sends one anyway: the call never reaches a handler
/// or the upstream. (`ApiKey::parse` refuses such keys too, as a second line.)
#[tokio::test]
async fn keys_with_line_breaks_never_reach_the_upstream() {
    let harness = Harness::start().await;
    for (header, raw) in [
        ("x-api-key", "abc\r\napi_key: other"),
        ("authorization", "Bearer a\nb"),
    ] {
        assert!(
            MetadataValue::<tonic::metadata::Ascii>::try_from(raw).is_err(),
            "{raw:?}"
        );
        let answer = raw_h2::get_sync_with_header(harness.server.addr(), header, raw).await;
        assert!(answer.is_refused(), "{header}: {answer:?}");
    }
    let (header, raw) = ("x-api-key", "bad key");
    let answer = raw_h2::get_sync_with_header(harness.server.addr(), header, raw).await;
    assert!(
        !answer.is_refused(),
        "a well-formed header value reaches the handler: {answer:?}"
    );
    assert_no_upstream_calls(&harness).await;
}

/// Just enough of an HTTP/2 client to send header bytes no library would send.
mod raw_h2 {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// How the server answered stream 1.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Answer {
        /// RST_STREAM or GOAWAY: the stream was refused as malformed.
        Reset,
        /// A HEADERS frame: the request reached the gRPC layer.
        Headers,
    }

    impl Answer {
        pub fn is_refused(&self) -> bool {
            *self == Answer::Reset
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    /// An HPACK literal header field without indexing, with a literal name.
    fn literal(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x00, name.len() as u8];
        out.extend(name.as_bytes());
        out.push(value.len() as u8);
        out.extend(value);
        out
    }

    pub async fn get_sync_with_header(addr: SocketAddr, header: &str, value: &str) -> Answer {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/commenda.sync.v1.SyncService/GetSync"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            block.extend(literal(name, value.as_bytes()));
        }
        block.extend(literal(header, value.as_bytes()));
        let message = [0x0a, 0x03, b'a', b'b', b'c'];
        let mut data = vec![0, 0, 0, 0, message.len() as u8];
        data.extend(message);

        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        out.extend(frame(0x1, 0x4, 1, &block));
        out.extend(frame(0x0, 0x1, 1, &data));
        stream.write_all(&out).await.expect("write");
        tokio::time::timeout(Duration::from_secs(5), read_answer(&mut stream))
            .await
            .expect("server answers")
    }

    async fn read_answer(stream: &mut TcpStream) -> Answer {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return Answer::Reset;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            stream
                .read_exact(&mut payload)
                .await
                .expect("frame payload");
            let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            match (head[3], stream_id) {
                (0x3, 1) | (0x7, _) => return Answer::Reset,
                (0x1, 1) => return Answer::Headers,
                (0x4, 0) if head[4] & 0x1 == 0 => {
                    stream
                        .write_all(&frame(0x4, 0x1, 0, &[]))
                        .await
                        .expect("ack");
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn calls_without_any_key_are_unauthenticated() {
    let harness = Harness::with(
        commenda_sync_gateway::emulator::EmulatorConfig::for_tests(),
        |s| {
            s.default_key = None;
        },
    )
    .await;
    let refused = harness
        .syncs()
        .get_sync(pb::GetSyncRequest {
            sync_id: "abc".into(),
        })
        .await;
    let status = refused.expect_err("no key");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(!status.message().contains("commenda-demo-key"));
    assert_no_upstream_calls(&harness).await;
}
