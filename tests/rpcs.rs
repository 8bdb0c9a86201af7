//! Every RPC end to end against the emulator, asserting whole messages and that
//! `x-request-id` is the emulator's `request_id`.

mod common;

use std::time::Duration;

use chrono::DateTime;
use commenda_sync_gateway::emulator::{DEMO_API_KEY, EmulatorConfig, OTHER_API_KEY};
use commenda_sync_gateway::pb::v1 as pb;
use common::{Harness, jobs_now, sync_now, with_key};
use prost_types::Timestamp;
use serde_json::Value;
use tonic::{Code, Request, Response};

/// Reads a resource straight from the emulator's REST API, bypassing the gateway.
async fn rest_get(harness: &Harness, path: &str) -> Value {
    let url = format!("{}{}", harness.emulator.base_url(), path);
    let response = reqwest::Client::new()
        .get(url)
        .header("api_key", DEMO_API_KEY)
        .send()
        .await;
    let body = response
        .expect("emulator answers")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&body).expect("json")
}

fn time(value: &Value) -> Option<Timestamp> {
    let parsed = DateTime::parse_from_rfc3339(value.as_str()?).expect("ISO 8601");
    Some(Timestamp {
        seconds: parsed.timestamp(),
        nanos: parsed.timestamp_subsec_nanos() as i32,
    })
}

fn counts(value: &Value) -> Option<pb::StatusCounts> {
    let n = |key: &str| value[key].as_i64().expect("count") as i32;
    Some(pb::StatusCounts {
        total: n("total"),
        success: n("success"),
        failed: n("failed"),
        running: n("running"),
        pending: n("pending"),
    })
}

/// The proto Sync a REST sync should become, built field by field from the JSON.
fn expected_sync(json: &Value) -> pb::Sync {
    let status = json["status"].as_str().expect("status");
    let sync_type = json["syncType"].as_str().expect("syncType");
    pb::Sync {
        id: json["id"].as_str().expect("id").into(),
        company_id: json["companyId"].as_i64().expect("companyId"),
        integration_type: json["integrationType"].as_str().expect("type").into(),
        data_models: json["dataModels"]
            .as_array()
            .expect("models")
            .iter()
            .map(|m| m.as_str().expect("model").to_owned())
            .collect(),
        config_mode: json["configMode"].as_str().expect("mode").into(),
        full_sync: json["fullSync"].as_bool().expect("fullSync"),
        sync_type: pb::SyncType::from_str_name(&format!("SYNC_TYPE_{sync_type}"))
            .expect("known")
            .into(),
        status: pb::SyncStatus::from_str_name(&format!("SYNC_STATUS_{status}"))
            .expect("known")
            .into(),
        job_counts: counts(&json["jobCounts"]),
        data_model_counts: counts(&json["dataModelCounts"]),
        start_time: time(&json["startTime"]),
        end_time: time(&json["endTime"]),
        create_time: time(&json["createdAt"]),
        upstream_status: status.into(),
        upstream_sync_type: sync_type.into(),
    }
}

fn expected_job(json: &Value) -> pb::Job {
    let status = json["status"].as_str().expect("status");
    let job_type = json["jobType"].as_str().expect("jobType");
    let text = |key: &str| json[key].as_str().unwrap_or_default().to_owned();
    pb::Job {
        id: text("id"),
        data_model: text("dataModel"),
        status: pb::JobStatus::from_str_name(&format!("JOB_STATUS_{status}"))
            .expect("known")
            .into(),
        job_type: pb::JobType::from_str_name(&format!("JOB_TYPE_{job_type}"))
            .expect("known")
            .into(),
        config_mode: text("configMode"),
        records_synced: json["recordsSynced"].as_i64(),
        retry_count: json["retryCount"].as_i64().expect("retryCount") as i32,
        parent_job_id: text("parentJobId"),
        error_code: text("errorCode"),
        error_message: text("errorMessage"),
        error_response: commenda_sync_gateway::convert::to_struct(&json["errorResponse"]),
        start_time: time(&json["startTime"]),
        end_time: time(&json["endTime"]),
        create_time: time(&json["createdAt"]),
        upstream_status: status.into(),
        upstream_job_type: job_type.into(),
    }
}

/// Asserts that the response's `x-request-id` is the `request_id` the emulator sent last.
fn assert_request_id<T>(harness: &Harness, response: &Response<T>) {
    let sent = harness
        .emulator
        .requests()
        .last()
        .and_then(|r| r.response_request_id.clone());
    let received = response
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    assert!(sent.is_some(), "emulator recorded a request id");
    assert_eq!(received, sent.as_deref());
}

async fn seeded_syncs(harness: &Harness, company_id: i64) -> Vec<pb::Sync> {
    let list = pb::ListSyncsRequest {
        company_id,
        page_size: 100,
        ..Default::default()
    };
    harness
        .syncs()
        .list_syncs(list)
        .await
        .expect("list")
        .into_inner()
        .syncs
}

#[tokio::test]
async fn get_sync_returns_the_whole_sync() {
    let harness = Harness::start().await;
    let sync = seeded_syncs(&harness, 496).await.remove(0);

    let response = harness
        .syncs()
        .get_sync(pb::GetSyncRequest {
            sync_id: sync.id.clone(),
        })
        .await;
    let response = response.expect("get");
    assert_request_id(&harness, &response);
    let rest = rest_get(&harness, &format!("/core/syncs/{}", sync.id)).await;
    assert_eq!(
        response.into_inner().sync,
        Some(expected_sync(&rest["data"]["sync"]))
    );
}

#[tokio::test]
async fn list_sync_jobs_returns_whole_jobs() {
    let harness = Harness::start().await;
    let sync = seeded_syncs(&harness, 496).await.remove(0);

    let request = pb::ListSyncJobsRequest {
        sync_id: sync.id.clone(),
        ..Default::default()
    };
    let response = harness.syncs().list_sync_jobs(request).await.expect("jobs");
    assert_request_id(&harness, &response);
    let rest = rest_get(&harness, &format!("/core/syncs/{}/jobs?limit=20", sync.id)).await;
    let expected: Vec<_> = rest["data"]["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(expected_job)
        .collect();
    let page = response.into_inner();
    assert!(!expected.is_empty());
    assert_eq!(page.jobs, expected);
    assert_eq!(
        i64::from(page.total_size),
        rest["data"]["count"].as_i64().expect("count")
    );
}

#[tokio::test]
async fn list_syncs_pages_through_every_sync_with_opaque_tokens() {
    let harness = Harness::start().await;
    let rest = rest_get(&harness, "/core/companies/496/syncs?limit=100").await;
    let expected: Vec<_> = rest["data"]["syncs"]
        .as_array()
        .expect("syncs")
        .iter()
        .map(expected_sync)
        .collect();
    assert!(
        expected.len() >= 2,
        "seed data has at least two syncs for 496"
    );

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let list = pb::ListSyncsRequest {
            company_id: 496,
            page_size: 1,
            page_token: token,
            ..Default::default()
        };
        let response = harness.syncs().list_syncs(list).await.expect("page");
        assert_request_id(&harness, &response);
        let page = response.into_inner();
        assert_eq!(page.total_size as usize, expected.len());
        seen.extend(page.syncs);
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(
            seen.iter().all(|s| !page.next_page_token.contains(&s.id)),
            "token hides the cursor"
        );
        token = page.next_page_token;
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn list_syncs_forwards_the_job_type_filter() {
    let harness = Harness::start().await;
    let list = pb::ListSyncsRequest {
        company_id: 496,
        job_type: pb::JobType::Push.into(),
        ..Default::default()
    };
    harness.syncs().list_syncs(list).await.expect("push list");
    let request = harness.emulator.requests().pop().expect("recorded");
    let query = request.query.expect("query");
    assert!(query.contains("jobType=PUSH"), "{query}");
    assert!(query.contains("limit=20"), "{query}");
}

#[tokio::test]
async fn create_sync_runs_to_a_final_state() {
    let harness = Harness::start().await;
    let selection = |m: &str| pb::DataModelSelection {
        data_model: m.into(),
        sync_from: None,
    };
    let request = pb::CreateSyncRequest {
        company_id: 496,
        data_models: vec![selection("ACCOUNT"), selection("INVOICE")],
        full_sync: Some(true),
        manual_sync: Some(true),
        request_id: String::new(),
    };
    let response = harness.syncs().create_sync(request).await.expect("create");
    assert_request_id(&harness, &response);
    let body: Value =
        serde_json::from_str(&harness.emulator.requests().pop().expect("recorded").body)
            .expect("json");
    assert_eq!(body["dataModelsToSync"][1]["dataModel"], "INVOICE");
    assert_eq!(body["fullSync"], true);
    let created = response.into_inner();
    assert_eq!(created.data_models_syncing, ["ACCOUNT", "INVOICE"]);

    harness.emulator.advance(Duration::from_secs(600));
    let sync = sync_now(&harness, &created.sync_id).await;
    assert_eq!(sync.id, created.sync_id);
    assert_eq!(
        (sync.company_id, sync.integration_type.as_str()),
        (496, "NETSUITE")
    );
    assert_eq!(sync.status(), pb::SyncStatus::Success);
    assert_eq!(sync.sync_type(), pb::SyncType::Manual);
    assert!(sync.full_sync);
    let counts = sync.job_counts.expect("counts");
    assert_eq!(
        (counts.total, counts.success, counts.running, counts.pending),
        (2, 2, 0, 0)
    );
    assert!(sync.end_time.expect("end").seconds >= sync.start_time.expect("start").seconds);

    let jobs = jobs_now(&harness, &created.sync_id).await;
    let mut models: Vec<_> = jobs.iter().map(|j| j.data_model.as_str()).collect();
    models.sort_unstable();
    assert_eq!(models, ["ACCOUNT", "INVOICE"]);
    assert!(
        jobs.iter()
            .all(|j| j.status() == pb::JobStatus::Success && j.records_synced.is_some())
    );
}

#[tokio::test]
async fn cancel_sync_fails_unfinished_jobs() {
    let mut config = EmulatorConfig::for_tests();
    config.timing.start_delay = Duration::from_secs(30);
    let harness = Harness::with(config, |_| {}).await;
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

    let cancel = pb::CancelSyncRequest {
        sync_id: created.sync_id.clone(),
        ..Default::default()
    };
    let response = harness.syncs().cancel_sync(cancel).await.expect("cancel");
    assert_request_id(&harness, &response);

    let sync = sync_now(&harness, &created.sync_id).await;
    assert_eq!(sync.status(), pb::SyncStatus::Failed);
    let jobs = jobs_now(&harness, &created.sync_id).await;
    assert!(!jobs.is_empty());
    assert!(
        jobs.iter()
            .all(|j| j.status() == pb::JobStatus::Failed && j.error_code == "CANCELLED")
    );
}

#[tokio::test]
async fn retry_sync_reruns_the_failed_models() {
    let mut config = EmulatorConfig::for_tests();
    config.fail_data_models.insert("INVOICE".into());
    let harness = Harness::with(config, |_| {}).await;
    let selection = |m: &str| pb::DataModelSelection {
        data_model: m.into(),
        sync_from: None,
    };
    let create = pb::CreateSyncRequest {
        company_id: 496,
        data_models: vec![selection("ACCOUNT"), selection("INVOICE")],
        ..Default::default()
    };
    let created = harness
        .syncs()
        .create_sync(create)
        .await
        .expect("create")
        .into_inner();
    harness.emulator.advance(Duration::from_secs(600));

    let sync = sync_now(&harness, &created.sync_id).await;
    assert_eq!(sync.status(), pb::SyncStatus::PartialSuccess);

    let retry = pb::RetrySyncRequest {
        sync_id: created.sync_id.clone(),
        ..Default::default()
    };
    let response = harness.syncs().retry_sync(retry).await.expect("retry");
    assert_request_id(&harness, &response);
    let retried = response.into_inner();
    assert_ne!(retried.sync_id, created.sync_id);
    assert_eq!(retried.data_models_syncing, ["INVOICE"]);
}

#[tokio::test]
async fn organization_sync_config_round_trips() {
    let harness = Harness::start().await;
    let get = || pb::GetOrganizationSyncConfigRequest {
        integration_type: pb::IntegrationType::Netsuite.into(),
    };
    let response = harness
        .configs()
        .get_organization_sync_config(get())
        .await
        .expect("get");
    assert_request_id(&harness, &response);
    let rest = rest_get(
        &harness,
        "/core/organizations/sync-config?integration_type=NETSUITE",
    )
    .await;
    let rest_configs = rest["data"]["syncConfig"].as_array().expect("configs");
    let configs = response.into_inner().configs;
    assert_eq!(configs.len(), rest_configs.len());
    for (config, json) in configs.iter().zip(rest_configs) {
        assert_eq!(
            config.data_model,
            json["dataModel"].as_str().expect("model")
        );
        assert_eq!(
            config.interval as i64,
            json["interval"].as_i64().expect("interval")
        );
        assert_eq!(config.enabled, json["enabled"].as_bool().expect("enabled"));
        assert_ne!(config.category(), pb::IntegrationCategory::Unspecified);
        assert_ne!(config.frequency(), pb::SyncFrequency::Unspecified);
    }

    let write = pb::WriteSyncConfig {
        data_model: "ACCOUNT".into(),
        category: pb::IntegrationCategory::Accounting.into(),
        enabled: true,
        frequency: pb::SyncFrequency::Hourly.into(),
        interval: 6,
        scope_access: Some(pb::ScopeAccess {
            read: true,
            create: true,
            ..Default::default()
        }),
        sync_from: Some(Timestamp {
            seconds: 1_767_225_600,
            nanos: 0,
        }),
    };
    let update = pb::UpdateOrganizationSyncConfigRequest {
        configs: vec![write],
        propagate: false,
    };
    let response = harness
        .configs()
        .update_organization_sync_config(update)
        .await
        .expect("update");
    assert_request_id(&harness, &response);
    let body: Value =
        serde_json::from_str(&harness.emulator.requests().pop().expect("recorded").body)
            .expect("json");
    assert_eq!(body["configs"][0]["frequency"], "HOURLY");
    assert_eq!(body["configs"][0]["sync_from"], "2026-01-01T00:00:00.000Z");

    let configs = harness
        .configs()
        .get_organization_sync_config(get())
        .await
        .expect("get")
        .into_inner()
        .configs;
    let account = configs
        .iter()
        .find(|c| c.data_model == "ACCOUNT")
        .expect("ACCOUNT config");
    assert_eq!(
        (account.frequency(), account.interval),
        (pb::SyncFrequency::Hourly, 6)
    );
    let scope = account.scope_access.expect("scope");
    assert!(scope.read && scope.create && !scope.update && !scope.delete);
}

#[tokio::test]
async fn company_sync_config_update_reaches_the_company() {
    let harness = Harness::start().await;
    let write = pb::WriteSyncConfig {
        data_model: "INVOICE".into(),
        category: pb::IntegrationCategory::Accounting.into(),
        enabled: false,
        frequency: pb::SyncFrequency::Monthly.into(),
        interval: 3,
        scope_access: None,
        sync_from: None,
    };
    let update = pb::UpdateCompanySyncConfigRequest {
        company_id: 496,
        configs: vec![write],
    };
    let response = harness
        .configs()
        .update_company_sync_config(update)
        .await
        .expect("update");
    assert_request_id(&harness, &response);

    let company = rest_get(&harness, "/core/companies/496").await;
    let configs = company["data"]["company"]["dataModelConfigs"]
        .as_array()
        .expect("configs");
    let invoice = configs
        .iter()
        .find(|c| c["dataModel"] == "INVOICE")
        .expect("INVOICE");
    assert_eq!(
        (invoice["enabled"].as_bool(), invoice["frequency"].as_str()),
        (Some(false), Some("MONTHLY"))
    );
    assert_eq!(invoice["interval"], 3);
}

#[tokio::test]
async fn caller_request_id_and_key_are_forwarded() {
    let harness = Harness::start().await;
    let mut request = with_key(
        pb::ListSyncsRequest {
            company_id: 900,
            ..Default::default()
        },
        OTHER_API_KEY,
    );
    request
        .metadata_mut()
        .insert("x-request-id", "trace-abc.123".parse().expect("ascii"));
    harness
        .syncs()
        .list_syncs(request)
        .await
        .expect("other org lists its company");

    let sent = harness.emulator.requests().pop().expect("recorded");
    assert_eq!(sent.header("x-request-id"), Some("trace-abc.123"));
    assert!(sent.sent_key(OTHER_API_KEY));
    assert_eq!(sent.path, "/v4/core/companies/900/syncs");
}

#[tokio::test]
async fn bearer_keys_are_accepted() {
    let harness = Harness::start().await;
    let mut request = Request::new(pb::ListSyncsRequest {
        company_id: 496,
        ..Default::default()
    });
    let bearer = format!("Bearer {OTHER_API_KEY}");
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().expect("ascii"));
    let status = harness
        .syncs()
        .list_syncs(request)
        .await
        .expect_err("496 is not org 2's");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        harness
            .emulator
            .requests()
            .pop()
            .expect("recorded")
            .sent_key(OTHER_API_KEY)
    );
}
