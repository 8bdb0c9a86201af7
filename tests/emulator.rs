//! The emulator over real HTTP: every route, every error status, rate limiting, tenancy,
//! sync progress, reproducibility, fault injection and counters (in-process and admin).

use std::time::{Duration, Instant};

use commenda_sync_gateway::emulator::{
    self, DEMO_API_KEY, Emulator, EmulatorConfig, Fault, FaultKind, JobTiming, OTHER_API_KEY,
    RateLimitConfig, Route, key_fingerprint,
};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

/// Upper bound for any wait in these tests.
const PATIENCE: Duration = Duration::from_secs(5);

/// A response, read fully.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.text))
    }

    fn data(&self) -> Value {
        self.json()["data"].clone()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, the success envelope and the rate-limit headers.
    fn expect_ok(self, status: StatusCode) -> Self {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert!(body["data"].is_object(), "no data object: {body}");
        assert_request_id(&body["request_id"]);
        self.expect_rate_headers()
    }

    /// Asserts a `{"request_id"}`-only success.
    fn expect_empty_ok(self) -> Self {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        let body = self.json();
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        assert_request_id(&body["request_id"]);
        self.expect_rate_headers()
    }

    /// Asserts the status, the five-field error envelope and the rate-limit headers.
    fn expect_error(self, status: StatusCode) -> Self {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        let error = body["error"]
            .as_object()
            .unwrap_or_else(|| panic!("no error: {body}"));
        assert_eq!(error.len(), 5, "{body}");
        assert_eq!(error["status_code"], status.as_u16(), "{body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_request_id(&error["request_id"]);
        let timestamp = error["timestamp"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{body}"
        );
        assert!(error["platform_error"].is_null(), "{body}");
        self.expect_rate_headers()
    }

    fn expect_rate_headers(self) -> Self {
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            let value = self.header(name).unwrap_or_else(|| panic!("no {name}"));
            assert!(value.parse::<u64>().is_ok(), "{name}: {value}");
        }
        self
    }
}

fn assert_request_id(value: &Value) {
    let id = value
        .as_str()
        .unwrap_or_else(|| panic!("request_id missing: {value}"));
    assert!(uuid::Uuid::parse_str(id).is_ok(), "request_id {id}");
}

/// An emulator and a client for it.
struct Harness {
    emulator: Emulator,
    http: reqwest::Client,
}

impl Harness {
    async fn start(config: EmulatorConfig) -> Self {
        let emulator = Emulator::start(config).await.expect("emulator starts");
        let http = reqwest::Client::builder()
            .timeout(PATIENCE)
            .build()
            .expect("client");
        Self { emulator, http }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let url = format!("{}{path}", self.emulator.base_url());
        let mut request = self.http.request(method, url);
        if let Some(key) = key {
            request = request.header("api_key", key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("request succeeds");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body reads");
        Reply {
            status,
            headers,
            text,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(DEMO_API_KEY), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        let body = body.to_string();
        self.send(Method::POST, path, Some(DEMO_API_KEY), Some(&body))
            .await
    }

    async fn patch(&self, path: &str, body: Value) -> Reply {
        let body = body.to_string();
        self.send(Method::PATCH, path, Some(DEMO_API_KEY), Some(&body))
            .await
    }

    /// Creates a sync of company `company` with `models` (all enabled ones when empty).
    async fn create_sync(&self, company: i64, models: &[&str]) -> String {
        let entries: Vec<Value> = models.iter().map(|m| json!({ "dataModel": m })).collect();
        let body = json!({ "dataModelsToSync": entries });
        let reply = self
            .post(&format!("/core/companies/{company}/syncs"), body)
            .await;
        let reply = reply.expect_ok(StatusCode::CREATED);
        reply.data()["sync"]["id"]
            .as_str()
            .expect("sync id")
            .to_owned()
    }

    async fn sync(&self, id: &str) -> Value {
        self.get(&format!("/core/syncs/{id}"))
            .await
            .expect_ok(StatusCode::OK)
            .data()["sync"]
            .clone()
    }

    async fn jobs(&self, id: &str) -> Vec<Value> {
        let reply = self.get(&format!("/core/syncs/{id}/jobs?limit=100")).await;
        let data = reply.expect_ok(StatusCode::OK).data();
        data["jobs"].as_array().cloned().unwrap_or_default()
    }

    /// Polls the sync, moving the emulator clock a little each time, until it is final.
    async fn wait_final(&self, id: &str) -> Value {
        let poll = async {
            loop {
                let sync = self.sync(id).await;
                if sync["status"] != "RUNNING" {
                    return sync;
                }
                self.emulator.advance(Duration::from_millis(250));
            }
        };
        tokio::time::timeout(PATIENCE, poll)
            .await
            .expect("sync finishes in time")
    }

    /// Sends raw JSON text as a POST body.
    async fn post_raw(&self, path: &str, body: &str) -> Reply {
        self.send(Method::POST, path, Some(DEMO_API_KEY), Some(body))
            .await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("http://{}/__emulator{path}", self.emulator.addr());
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.expect("admin request succeeds");
        let status = response.status();
        let text = response.text().await.expect("admin body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Test settings where jobs take an hour of emulator time, so nothing finishes until the
/// test advances the clock.
fn slow_config() -> EmulatorConfig {
    EmulatorConfig {
        timing: JobTiming {
            start_delay: Duration::from_secs(60),
            duration: Duration::from_secs(3600),
            jitter: Duration::from_secs(30),
        },
        ..EmulatorConfig::for_tests()
    }
}

fn account_config(overrides: Value) -> Value {
    let mut config = json!({
        "data_model": "ACCOUNT", "category": "ACCOUNTING", "enabled": true,
        "frequency": "WEEKLY", "interval": 3,
        "scope_access": { "READ": true, "CREATE": false, "UPDATE": false, "DELETE": false },
    });
    if let (Some(base), Some(extra)) = (config.as_object_mut(), overrides.as_object()) {
        base.extend(extra.clone());
    }
    config
}

#[tokio::test]
async fn create_sync_returns_the_init_shape() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let body = json!({
        "dataModelsToSync": [{ "dataModel": "ACCOUNT" },
                             { "dataModel": "INVOICE", "syncFrom": "2026-01-01T00:00:00.000Z" }],
        "fullSync": true, "isManualSync": true,
    });
    let reply = h
        .post("/core/companies/496/syncs", body)
        .await
        .expect_ok(StatusCode::CREATED);
    let sync = &reply.data()["sync"];
    assert!(uuid::Uuid::parse_str(sync["id"].as_str().unwrap()).is_ok());
    assert_eq!(sync["dataModelsSyncing"], json!(["ACCOUNT", "INVOICE"]));
    let full = h.sync(sync["id"].as_str().unwrap()).await;
    assert_eq!(full["fullSync"], true);
    assert_eq!(full["syncType"], "MANUAL");
}

#[tokio::test]
async fn empty_create_body_syncs_the_enabled_models() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let reply = h
        .send(
            Method::POST,
            "/core/companies/498/syncs",
            Some(DEMO_API_KEY),
            None,
        )
        .await;
    let data = reply.expect_ok(StatusCode::CREATED).data();
    let models = data["sync"]["dataModelsSyncing"].as_array().unwrap().len();
    let company = h
        .get("/core/companies/498")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    let configs = company["company"]["dataModelConfigs"]
        .as_array()
        .unwrap()
        .clone();
    let enabled = configs.iter().filter(|c| c["enabled"] == true).count();
    assert_eq!(models, enabled);
    assert!(
        enabled < configs.len(),
        "the demo data has disabled models too"
    );
}

#[tokio::test]
async fn list_syncs_pages_newest_first() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let id = h.create_sync(497, &["ACCOUNT"]).await;
    let first = h
        .get("/core/companies/497/syncs?limit=2")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    let syncs = first["syncs"].as_array().unwrap();
    assert_eq!(first["count"], 3);
    assert_eq!(syncs.len(), 2);
    assert_eq!(syncs[0]["id"], id.as_str());
    assert_eq!(first["next"], syncs[1]["id"]);
    for field in [
        "id",
        "companyId",
        "integrationType",
        "dataModels",
        "configMode",
        "fullSync",
        "syncType",
        "status",
        "jobCounts",
        "dataModelCounts",
        "startTime",
        "endTime",
        "createdAt",
    ] {
        assert!(syncs[0].get(field).is_some(), "sync lacks {field}");
    }
    assert_eq!(syncs[0]["configMode"], "READ");
    assert_eq!(syncs[0]["integrationType"], "XERO");
    let cursor = first["next"].as_str().unwrap();
    let path = format!("/core/companies/497/syncs?limit=2&cursor={cursor}");
    let second = h.get(&path).await.expect_ok(StatusCode::OK).data();
    assert_eq!(second["syncs"].as_array().unwrap().len(), 1);
    assert_eq!(second["next"], Value::Null);
    let push = h
        .get("/core/companies/496/syncs?jobType=PUSH")
        .await
        .expect_ok(StatusCode::OK);
    let push = push.data();
    assert_eq!(push["count"], 1);
    assert_eq!(push["syncs"][0]["configMode"], "CREATE");
}

#[tokio::test]
async fn get_sync_and_jobs_show_the_documented_fields() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let id = h
        .create_sync(496, &["ACCOUNT", "INVOICE", "TAX_RATE"])
        .await;
    let sync = h.wait_final(&id).await;
    assert_eq!(sync["status"], "SUCCESS");
    assert_eq!(
        sync["jobCounts"],
        json!({"total":3,"success":3,"failed":0,"running":0,"pending":0})
    );
    assert!(sync["endTime"].as_str().unwrap().ends_with('Z'));
    let reply = h
        .get(&format!("/core/syncs/{id}/jobs?limit=2"))
        .await
        .expect_ok(StatusCode::OK);
    let page = reply.data();
    assert_eq!(page["count"], 3);
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["dataModel"], "ACCOUNT");
    assert_eq!(jobs[0]["id"].as_str().unwrap().len(), 15);
    for field in [
        "id",
        "dataModel",
        "status",
        "jobType",
        "configMode",
        "recordsSynced",
        "retryCount",
        "parentJobId",
        "errorCode",
        "errorMessage",
        "errorResponse",
        "startTime",
        "endTime",
        "createdAt",
    ] {
        assert!(jobs[0].get(field).is_some(), "job lacks {field}");
    }
    let next = page["next"].as_str().unwrap();
    let rest = h.get(&format!("/core/syncs/{id}/jobs?cursor={next}")).await;
    let rest = rest.expect_ok(StatusCode::OK).data();
    assert_eq!(rest["jobs"][0]["dataModel"], "TAX_RATE");
    assert_eq!(rest["next"], Value::Null);
}

#[tokio::test]
async fn a_three_model_sync_finishes_on_its_own() {
    let config = EmulatorConfig {
        timing: JobTiming {
            start_delay: Duration::from_secs(2),
            duration: Duration::from_secs(4),
            jitter: Duration::from_secs(1),
        },
        ..EmulatorConfig::for_tests()
    };
    let h = Harness::start(config).await;
    let id = h
        .create_sync(497, &["ACCOUNT", "CONTACT", "BANK_ACCOUNT"])
        .await;
    let created = h.sync(&id).await;
    assert_eq!(created["status"], "RUNNING");
    assert_eq!(created["jobCounts"]["pending"], 3);
    assert_eq!(created["endTime"], Value::Null);
    assert!(
        h.jobs(&id)
            .await
            .iter()
            .all(|j| j["recordsSynced"].is_null())
    );
    h.emulator.advance(Duration::from_millis(3500));
    let midway = h.sync(&id).await;
    assert_eq!(midway["status"], "RUNNING");
    assert_eq!(midway["jobCounts"]["running"], 3);
    let done = h.wait_final(&id).await;
    assert_eq!(done["status"], "SUCCESS");
    for job in h.jobs(&id).await {
        assert_eq!(job["status"], "SUCCESS");
        assert!(job["recordsSynced"].as_u64().unwrap() > 0);
        assert!(job["startTime"].is_string() && job["endTime"].is_string());
    }
}

/// Runs the same requests against an emulator and reports what came out.
async fn scripted_outcomes(seed: u64) -> Vec<(String, Value, Vec<(Value, Value)>)> {
    let config = EmulatorConfig {
        seed,
        failure_probability: 0.5,
        ..EmulatorConfig::for_tests()
    };
    let h = Harness::start(config).await;
    let mut outcomes = Vec::new();
    for company in [496, 497, 498, 499] {
        let id = h.create_sync(company, &[]).await;
        let sync = h.wait_final(&id).await;
        let jobs = h.jobs(&id).await;
        let jobs = jobs
            .iter()
            .map(|j| (j["status"].clone(), j["recordsSynced"].clone()))
            .collect();
        outcomes.push((id, sync["status"].clone(), jobs));
    }
    outcomes
}

#[tokio::test]
async fn the_same_seed_gives_the_same_syncs() {
    let first = scripted_outcomes(42).await;
    let second = scripted_outcomes(42).await;
    assert_eq!(first, second);
    let statuses: Vec<&Value> = first.iter().map(|(_, status, _)| status).collect();
    assert!(
        statuses.iter().any(|s| *s != "SUCCESS"),
        "a coin of 0.5 should fail some jobs"
    );
    let other = scripted_outcomes(43).await;
    assert_ne!(first, other);
}

#[tokio::test]
async fn forced_failures_give_partial_success_and_retry_reruns_them() {
    let mut config = EmulatorConfig::for_tests();
    config.fail_data_models.insert("INVOICE".to_owned());
    let h = Harness::start(config).await;
    let id = h.create_sync(496, &["ACCOUNT", "INVOICE"]).await;
    let sync = h.wait_final(&id).await;
    assert_eq!(sync["status"], "PARTIAL_SUCCESS");
    assert_eq!(sync["dataModelCounts"]["failed"], 1);
    let failed = h
        .jobs(&id)
        .await
        .into_iter()
        .find(|j| j["status"] == "FAILED")
        .unwrap();
    assert_eq!(failed["dataModel"], "INVOICE");
    assert!(failed["errorCode"].is_string() && failed["errorMessage"].is_string());
    assert_eq!(failed["errorResponse"]["platform"], "NETSUITE");
    let reply = h.post(&format!("/core/syncs/{id}/retry"), json!({})).await;
    let retry = reply.expect_ok(StatusCode::CREATED).data();
    assert_ne!(retry["sync"]["id"], id.as_str());
    assert_eq!(retry["sync"]["dataModelsSyncing"], json!(["INVOICE"]));
    let retried = h.wait_final(retry["sync"]["id"].as_str().unwrap()).await;
    assert_eq!(retried["status"], "FAILED");
    assert_eq!(retried["syncType"], "MANUAL");
}

#[tokio::test]
async fn cancel_fails_unfinished_jobs_and_frees_the_company() {
    let h = Harness::start(slow_config()).await;
    let id = h
        .create_sync(499, &["ECOMMERCE_ORDER", "ECOMMERCE_ITEM"])
        .await;
    let company = h
        .get("/core/companies/499")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    assert_eq!(company["company"]["hasActiveSync"], true);
    assert_eq!(company["company"]["syncStatus"], "SYNCING");
    h.post(&format!("/core/syncs/{id}/cancel"), json!({}))
        .await
        .expect_empty_ok();
    let sync = h.sync(&id).await;
    assert_eq!(sync["status"], "FAILED");
    for job in h.jobs(&id).await {
        assert_eq!(job["status"], "FAILED");
        assert_eq!(job["errorCode"], "CANCELLED");
        assert!(job["endTime"].is_string());
        assert!(job["errorResponse"].is_object());
    }
    let company = h
        .get("/core/companies/499")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    assert_eq!(company["company"]["hasActiveSync"], false);
}

#[tokio::test]
async fn companies_show_sync_activity() {
    let h = Harness::start(slow_config()).await;
    let list = h
        .get("/core/companies")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    let ids: Vec<&Value> = list["companies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [499, 498, 497, 496]);
    assert_eq!(list["count"], 4);
    let sync = h.create_sync(497, &[]).await;
    let syncing = h
        .get("/core/companies?syncState=SYNCING")
        .await
        .expect_ok(StatusCode::OK);
    assert_eq!(syncing.data()["companies"][0]["id"], 497);
    assert_eq!(syncing.data()["count"], 1);
    let idle = h
        .get("/core/companies?syncState=IDLE&limit=2")
        .await
        .expect_ok(StatusCode::OK);
    assert_eq!(idle.data()["count"], 3);
    assert_eq!(idle.data()["next"], 498);
    let rest = h
        .get("/core/companies?syncState=IDLE&cursor=498")
        .await
        .expect_ok(StatusCode::OK);
    assert_eq!(rest.data()["companies"][0]["id"], 496);
    assert_eq!(rest.data()["next"], Value::Null);

    h.emulator.advance(Duration::from_secs(2 * 3600));
    let done = h.sync(&sync).await;
    let company = h
        .get("/core/companies/497")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    let company = &company["company"];
    assert_eq!(company["hasActiveSync"], false);
    assert_eq!(company["lastSynced"], done["endTime"]);
    assert_eq!(company["connection"]["id"], "497_XERO");
    assert_eq!(company["connection"]["syncResumeAt"], Value::Null);
    assert_eq!(company["integrationCategory"], "ACCOUNTING");
}

#[tokio::test]
async fn sync_config_writes_show_up_in_reads() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let reply = h
        .get("/core/organizations/sync-config?integration_type=NETSUITE")
        .await;
    let before = reply.expect_ok(StatusCode::OK).data();
    assert!(
        before["syncConfig"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["category"] == "ACCOUNTING")
    );

    let body = json!({ "configs": [account_config(json!({"sync_from": "2025-01-01"}))],
                       "propagate": true });
    h.post("/core/organizations/sync-config", body)
        .await
        .expect_empty_ok();
    let reply = h
        .get("/core/organizations/sync-config?integration_type=XERO")
        .await;
    let org = reply.expect_ok(StatusCode::OK).data();
    let account = org["syncConfig"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["dataModel"] == "ACCOUNT");
    assert_eq!(account.unwrap()["interval"], 3);
    assert_eq!(account.unwrap()["syncFrom"], "2025-01-01T00:00:00.000Z");
    let company = h
        .get("/core/companies/497")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    let configs = company["company"]["dataModelConfigs"]
        .as_array()
        .unwrap()
        .clone();
    let account = configs
        .iter()
        .find(|c| c["dataModel"] == "ACCOUNT")
        .unwrap();
    assert_eq!(
        (
            account["frequency"].clone(),
            account["isOverridden"].clone()
        ),
        (json!("WEEKLY"), json!(false))
    );

    let body = json!({ "configs": [account_config(json!({"enabled": false, "interval": 1}))] });
    h.patch("/core/companies/497/sync-config", body)
        .await
        .expect_empty_ok();
    let company = h
        .get("/core/companies/497")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    let configs = company["company"]["dataModelConfigs"]
        .as_array()
        .unwrap()
        .clone();
    let account = configs
        .iter()
        .find(|c| c["dataModel"] == "ACCOUNT")
        .unwrap();
    assert_eq!(account["isOverridden"], true);
    assert_eq!(account["enabled"], false);
    assert_eq!(account["scopeAccess"]["READ"], true);
    let created = h
        .post("/core/companies/497/syncs", json!({}))
        .await
        .expect_ok(StatusCode::CREATED);
    let models = created.data()["sync"]["dataModelsSyncing"].clone();
    assert!(
        !models.as_array().unwrap().contains(&json!("ACCOUNT")),
        "{models}"
    );
}

#[tokio::test]
async fn bad_input_is_400() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let sync = h.create_sync(496, &["ACCOUNT"]).await;
    let gets = [
        "/core/companies/496/syncs?limit=0".to_owned(),
        "/core/companies/496/syncs?limit=101".to_owned(),
        "/core/companies/496/syncs?limit=ten".to_owned(),
        "/core/companies/496/syncs?jobType=CUSTOM".to_owned(),
        "/core/companies/496/syncs?cursor=no-such-sync".to_owned(),
        "/core/companies/abc/syncs".to_owned(),
        "/core/companies/0".to_owned(),
        "/core/companies/-3".to_owned(),
        format!("/core/syncs/{sync}/jobs?limit=500"),
        format!("/core/syncs/{sync}/jobs?cursor=nope"),
        "/core/organizations/sync-config".to_owned(),
        "/core/organizations/sync-config?integration_type=ODOO_ACCOUNTING".to_owned(),
        "/core/companies?limit=0".to_owned(),
        "/core/companies?cursor=0".to_owned(),
        "/core/companies?cursor=x".to_owned(),
        "/core/companies?syncState=BUSY".to_owned(),
    ];
    for path in &gets {
        h.get(path).await.expect_error(StatusCode::BAD_REQUEST);
    }
    let creates = [
        r#"{"dataModelsToSync":[{"dataModel":"account"}]}"#,
        r#"{"dataModelsToSync":[{"dataModel":"ACCOUNT","syncFrom":"last tuesday"}]}"#,
        r#"{"dataModelsToSync":[{}]}"#,
        r#"{"fullSync":"yes"}"#,
        r#"{"dataModelsToSync": ["#,
        "[1, 2]",
    ];
    for body in creates {
        let reply = h.post_raw("/core/companies/497/syncs", body).await;
        reply.expect_error(StatusCode::BAD_REQUEST);
    }
    let configs = [
        json!({}),
        json!({ "configs": [] }),
        json!({ "configs": [account_config(json!({"data_model": "Account"}))] }),
        json!({ "configs": [account_config(json!({"category": "CRM"}))] }),
        json!({ "configs": [account_config(json!({"frequency": "FORTNIGHTLY"}))] }),
        json!({ "configs": [account_config(json!({"interval": 0}))] }),
        json!({ "configs": [account_config(json!({"sync_from": "soon"}))] }),
        json!({ "configs": [{ "data_model": "ACCOUNT" }] }),
    ];
    for body in &configs {
        h.post("/core/organizations/sync-config", body.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        h.patch("/core/companies/496/sync-config", body.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST);
    }
    h.post_raw("/core/organizations/sync-config", "{not json")
        .await
        .expect_error(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_or_unknown_key_is_401_and_costs_nothing() {
    let config = EmulatorConfig {
        rate_limit: Some(RateLimitConfig {
            per_minute: 60,
            burst: 5,
        }),
        ..EmulatorConfig::for_tests()
    };
    let h = Harness::start(config).await;
    for key in [None, Some("not-a-key"), Some("")] {
        let reply = h.send(Method::GET, "/core/companies", key, None).await;
        let reply = reply.expect_error(StatusCode::UNAUTHORIZED);
        assert_eq!(reply.header("x-ratelimit-remaining"), Some("5"));
    }
    let reply = h
        .send(Method::POST, "/core/syncs/x/cancel", None, None)
        .await;
    reply.expect_error(StatusCode::UNAUTHORIZED);
    let first = h.get("/core/companies").await.expect_ok(StatusCode::OK);
    assert_eq!(first.header("x-ratelimit-remaining"), Some("4"));
}

#[tokio::test]
async fn unknown_and_foreign_things_are_404() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let foreign = h
        .emulator
        .start_auto_sync(900)
        .expect("other org's company syncs");
    let paths = [
        "/core/companies/12345".to_owned(),
        "/core/companies/900".to_owned(),
        "/core/companies/900/syncs".to_owned(),
        format!("/core/syncs/{foreign}"),
        format!("/core/syncs/{foreign}/jobs"),
        "/core/syncs/00000000-0000-4000-8000-000000000000".to_owned(),
        "/core/nothing-here".to_owned(),
        "/v3/core/companies".to_owned(),
    ];
    for path in &paths {
        h.get(path).await.expect_error(StatusCode::NOT_FOUND);
    }
    let not_found = h.get(&format!("/core/syncs/{foreign}")).await.json();
    let unknown = h
        .get("/core/syncs/00000000-0000-4000-8000-000000000000")
        .await
        .json();
    let shape = |v: &Value| {
        v["error"]["message"]
            .as_str()
            .unwrap()
            .replace(char::is_alphanumeric, "")
    };
    assert_eq!(
        shape(&not_found),
        shape(&unknown),
        "foreign and unknown look alike"
    );
    let posts = [
        "/core/companies/900/syncs".to_owned(),
        format!("/core/syncs/{foreign}/cancel"),
        format!("/core/syncs/{foreign}/retry"),
    ];
    for path in &posts {
        h.post(path, json!({}))
            .await
            .expect_error(StatusCode::NOT_FOUND);
    }
    let body = json!({ "configs": [account_config(json!({}))] });
    h.patch("/core/companies/900/sync-config", body)
        .await
        .expect_error(StatusCode::NOT_FOUND);
    let path = format!("/core/syncs/{foreign}");
    let owner = h.send(Method::GET, &path, Some(OTHER_API_KEY), None).await;
    owner.expect_ok(StatusCode::OK);
}

#[tokio::test]
async fn state_conflicts_are_409() {
    let h = Harness::start(slow_config()).await;
    let running = h.create_sync(496, &["ACCOUNT"]).await;
    h.post("/core/companies/496/syncs", json!({}))
        .await
        .expect_error(StatusCode::CONFLICT);
    h.post(&format!("/core/syncs/{running}/retry"), json!({}))
        .await
        .expect_error(StatusCode::CONFLICT);
    let history = h
        .get("/core/companies/496/syncs")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    let finished = history["syncs"][1]["id"].as_str().unwrap().to_owned();
    h.post(&format!("/core/syncs/{finished}/cancel"), json!({}))
        .await
        .expect_error(StatusCode::CONFLICT);
    h.post(&format!("/core/syncs/{finished}/retry"), json!({}))
        .await
        .expect_error(StatusCode::CONFLICT);
    h.emulator.advance(Duration::from_secs(2 * 3600));
    h.post(&format!("/core/syncs/{finished}/retry"), json!({}))
        .await
        .expect_ok(StatusCode::CREATED);
}

#[tokio::test]
async fn a_spent_key_gets_429_while_others_carry_on() {
    let config = EmulatorConfig {
        rate_limit: Some(RateLimitConfig {
            per_minute: 6,
            burst: 3,
        }),
        ..EmulatorConfig::for_tests()
    };
    let h = Harness::start(config).await;
    for left in ["2", "1", "0"] {
        let reply = h.get("/core/companies/496").await.expect_ok(StatusCode::OK);
        assert_eq!(reply.header("x-ratelimit-remaining"), Some(left));
        assert_eq!(reply.header("x-ratelimit-limit"), Some("3"));
    }
    let refused = h
        .get("/core/companies/496")
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);
    let seconds = |name| refused.header(name).and_then(|v| v.parse::<u64>().ok());
    assert!(seconds("retry-after").is_some_and(|s| (9..=10).contains(&s)));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert!(seconds("x-ratelimit-reset").is_some_and(|s| (29..=30).contains(&s)));
    let other = h
        .send(Method::GET, "/core/companies", Some(OTHER_API_KEY), None)
        .await;
    assert_eq!(
        other
            .expect_ok(StatusCode::OK)
            .header("x-ratelimit-remaining"),
        Some("2")
    );

    h.emulator.advance(Duration::from_secs(10));
    h.get("/core/companies/496").await.expect_ok(StatusCode::OK);
    h.get("/core/companies/496")
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);
    let counters = h.emulator.counters();
    assert_eq!(counters.count(Route::GetCompany, DEMO_API_KEY, 429), 2);
    assert_eq!(counters.count(Route::GetCompany, DEMO_API_KEY, 200), 4);
    let (status, _) = h.admin(Method::GET, "/counters", None).await;
    assert_eq!(status, StatusCode::OK, "admin paths are not limited");
}

#[tokio::test]
async fn default_config_enforces_the_documented_limit() {
    let h = Harness::start(EmulatorConfig::default()).await;
    let reply = h.get("/core/companies").await.expect_ok(StatusCode::OK);
    assert_eq!(reply.header("x-ratelimit-limit"), Some("200"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("199"));
    assert_eq!(reply.header("x-ratelimit-reset"), Some("1"));
}

#[tokio::test]
async fn keys_see_only_their_own_organization() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let other = h
        .send(Method::GET, "/core/companies", Some(OTHER_API_KEY), None)
        .await;
    let other = other.expect_ok(StatusCode::OK).data();
    assert_eq!(other["count"], 1);
    assert_eq!(other["companies"][0]["id"], 900);
    assert_eq!(other["companies"][0]["connection"]["organisationId"], 2);
    let mine = h.create_sync(496, &[]).await;
    let peek = h
        .send(
            Method::GET,
            &format!("/core/syncs/{mine}"),
            Some(OTHER_API_KEY),
            None,
        )
        .await;
    peek.expect_error(StatusCode::NOT_FOUND);
    let list = h
        .send(
            Method::GET,
            "/core/companies/496/syncs",
            Some(OTHER_API_KEY),
            None,
        )
        .await;
    list.expect_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn auto_syncs_start_in_process_and_over_admin() {
    let h = Harness::start(slow_config()).await;
    let id = h.emulator.start_auto_sync(498).expect("auto sync starts");
    assert_eq!(h.sync(&id).await["syncType"], "AUTO_SYNC");
    assert_eq!(
        h.emulator.start_auto_sync(498),
        None,
        "one read sync at a time"
    );
    assert_eq!(h.emulator.start_auto_sync(4242), None);
    let (status, body) = h
        .admin(Method::POST, "/companies/499/auto-sync", None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let listed = h
        .get("/core/companies/499/syncs?limit=1")
        .await
        .expect_ok(StatusCode::OK)
        .data();
    assert_eq!(listed["syncs"][0]["id"], body["id"]);
    let (status, _) = h
        .admin(Method::POST, "/companies/499/auto-sync", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn status_faults_replace_the_response() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let kind = FaultKind::Status {
        code: 503,
        retry_after: Some(7),
        body: None,
    };
    h.emulator
        .inject(Fault::on(Route::GetCompany, kind).times(1));
    let reply = h
        .get("/core/companies/496")
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("7"));
    h.get("/core/companies/496").await.expect_ok(StatusCode::OK);
    h.get("/core/companies").await.expect_ok(StatusCode::OK);

    let kind = FaultKind::Status {
        code: 502,
        retry_after: None,
        body: Some("<h1>oops</h1>".into()),
    };
    h.emulator.inject(Fault::new(kind));
    let reply = h.get("/core/companies").await.expect_rate_headers();
    assert_eq!(
        (reply.status, reply.text.as_str()),
        (StatusCode::BAD_GATEWAY, "<h1>oops</h1>")
    );
    assert_eq!(h.emulator.faults().len(), 1);
    h.emulator.clear_faults();
    h.get("/core/companies").await.expect_ok(StatusCode::OK);
    let counters = h.emulator.counters();
    assert_eq!(counters.count(Route::GetCompany, DEMO_API_KEY, 503), 1);
    assert_eq!(counters.count(Route::ListCompanies, DEMO_API_KEY, 502), 1);
}

#[tokio::test]
async fn body_faults_break_the_body() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    h.emulator
        .inject(Fault::on(Route::GetCompany, FaultKind::Malformed).times(1));
    let reply = h.get("/core/companies/496").await.expect_rate_headers();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&reply.text).is_err());

    h.emulator
        .inject(Fault::on(Route::GetCompany, FaultKind::Truncated).times(1));
    let reply = h.get("/core/companies/496").await.expect_rate_headers();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text.starts_with("{\"data\""));
    assert!(serde_json::from_str::<Value>(&reply.text).is_err());

    h.emulator
        .inject(Fault::on(Route::CreateSync, FaultKind::MissingData).times(1));
    let reply = h
        .post("/core/companies/496/syncs", json!({}))
        .await
        .expect_rate_headers();
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.json()["data"], Value::Null);
    assert_request_id(&reply.json()["request_id"]);

    h.emulator
        .inject(Fault::on(Route::ListCompanies, FaultKind::Oversized(300_000)).times(1));
    let reply = h.get("/core/companies").await.expect_ok(StatusCode::OK);
    assert_eq!(reply.text.len(), 300_000);
}

#[tokio::test]
async fn drop_closes_the_connection_without_a_response() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    h.emulator
        .inject(Fault::on(Route::ListCompanies, FaultKind::Drop).times(1));
    let url = format!("{}/core/companies", h.emulator.base_url());
    let err = h
        .http
        .get(&url)
        .header("api_key", DEMO_API_KEY)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request() && !err.is_timeout(), "{err:?}");
    h.get("/core/companies").await.expect_ok(StatusCode::OK);
    let counters = h.emulator.counters();
    assert_eq!(counters.count(Route::ListCompanies, DEMO_API_KEY, 0), 1);
}

#[tokio::test]
async fn delay_faults_slow_the_answer_down() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    h.emulator.inject(Fault::on(
        Route::ListSyncs,
        FaultKind::Delay(Duration::from_millis(150)),
    ));
    let started = Instant::now();
    h.get("/core/companies/496/syncs")
        .await
        .expect_ok(StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn probabilistic_faults_repeat_with_the_seed() {
    async fn pattern() -> Vec<u16> {
        let h = Harness::start(EmulatorConfig::for_tests()).await;
        h.emulator
            .inject(Fault::new(FaultKind::status(500)).probability(0.5));
        let mut statuses = Vec::new();
        for _ in 0..16 {
            statuses.push(h.get("/core/companies").await.status.as_u16());
        }
        statuses
    }
    let first = pattern().await;
    assert_eq!(first, pattern().await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn requests_are_logged_with_what_the_client_sent() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let url = format!(
        "{}/core/companies/496/syncs?limit=5&jobType=PULL",
        h.emulator.base_url()
    );
    let sent = h
        .http
        .get(url)
        .header("api_key", DEMO_API_KEY)
        .header("x-request-id", "req-123")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(sent.status(), StatusCode::OK);
    h.post("/core/companies/496/syncs", json!({"fullSync": true}))
        .await;
    let log = h.emulator.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].route, Some(Route::ListSyncs));
    assert_eq!(log[0].query.as_deref(), Some("limit=5&jobType=PULL"));
    assert_eq!(log[0].header("x-request-id"), Some("req-123"));
    assert!(
        log[0]
            .header("traceparent")
            .is_some_and(|t| t.starts_with("00-"))
    );
    assert!(log[0].sent_key(DEMO_API_KEY));
    assert_eq!(log[0].status, 200);
    assert_eq!(log[1].method, "POST");
    assert_eq!(log[1].body, r#"{"fullSync":true}"#);
    assert_eq!(h.emulator.counters().total(), 2);
    h.emulator.reset_counters();
    assert_eq!(h.emulator.counters().total(), 0);
    assert!(h.emulator.requests().is_empty());
}

#[tokio::test]
async fn admin_api_manages_faults_counters_and_clock() {
    let h = Harness::start(slow_config()).await;
    let fault = json!({ "route": "get_company", "kind": "status", "code": 429, "retry_after": 3,
                        "times": 1 });
    let (status, echo) = h.admin(Method::POST, "/faults", Some(fault)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(echo["route"], "get_company");
    let (_, listed) = h.admin(Method::GET, "/faults", None).await;
    assert_eq!(listed["faults"].as_array().map(Vec::len), Some(1));
    let reply = h
        .get("/core/companies/496")
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("3"));

    for bad in [
        json!({"kind": "explode"}),
        json!({"kind": "status"}),
        json!({"kind": "drop", "route": "nope"}),
    ] {
        let (status, body) = h.admin(Method::POST, "/faults", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].is_string());
    }

    let (_, counters) = h.admin(Method::GET, "/counters", None).await;
    assert_eq!(counters["total"], 1);
    let entry = &counters["counters"][0];
    assert_eq!(entry["route"], "get_company");
    assert_eq!(entry["status"], 429);
    assert_eq!(entry["key"], key_fingerprint(DEMO_API_KEY));
    let (_, requests) = h.admin(Method::GET, "/requests", None).await;
    let raw = requests.to_string() + &counters.to_string();
    assert!(
        !raw.contains(DEMO_API_KEY),
        "admin output never shows keys in clear"
    );
    assert_eq!(requests["requests"][0]["path"], "/v4/core/companies/496");

    let id = h.create_sync(496, &["ACCOUNT"]).await;
    let (status, clock) = h
        .admin(
            Method::POST,
            "/clock/advance",
            Some(json!({"seconds": 7200})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(clock["now"].is_string());
    assert_eq!(h.sync(&id).await["status"], "SUCCESS");
    let (status, _) = h.admin(Method::DELETE, "/counters", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.emulator.counters().total(), 0);
    let (status, body) = h.admin(Method::GET, "/nothing", None).await;
    assert_eq!(
        (status, body["error"].is_string()),
        (StatusCode::NOT_FOUND, true)
    );
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let emulator = Emulator::start(EmulatorConfig::for_tests())
        .await
        .expect("starts");
    let url = format!("{}/core/companies", emulator.base_url());
    emulator.shutdown().await;
    let client = reqwest::Client::new();
    let result = client.get(url).header("api_key", DEMO_API_KEY).send().await;
    assert!(result.is_err());
}

#[tokio::test]
async fn admin_faults_of_every_kind_take_effect() {
    let h = Harness::start(EmulatorConfig::for_tests()).await;
    let inject = |spec: Value| async {
        let mut spec = spec;
        spec["route"] = json!("list_companies");
        spec["times"] = json!(1);
        let (status, echo) = h.admin(Method::POST, "/faults", Some(spec)).await;
        assert_eq!(status, StatusCode::CREATED, "{echo}");
    };

    inject(json!({ "kind": "status", "code": 418, "body": "teapot" })).await;
    let reply = h.get("/core/companies").await.expect_rate_headers();
    assert_eq!(
        (reply.status.as_u16(), reply.text.as_str()),
        (418, "teapot")
    );

    inject(json!({ "kind": "malformed" })).await;
    let reply = h.get("/core/companies").await.expect_rate_headers();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&reply.text).is_err());

    inject(json!({ "kind": "truncated" })).await;
    let reply = h.get("/core/companies").await;
    assert!(
        reply.text.starts_with("{\"data\"") && serde_json::from_str::<Value>(&reply.text).is_err()
    );

    inject(json!({ "kind": "missing_data" })).await;
    let reply = h.get("/core/companies").await;
    assert_eq!(
        (reply.status, reply.json().get("data").is_none()),
        (StatusCode::OK, true)
    );

    inject(json!({ "kind": "oversized", "bytes": 50_000 })).await;
    assert_eq!(
        h.get("/core/companies")
            .await
            .expect_ok(StatusCode::OK)
            .text
            .len(),
        50_000
    );

    inject(json!({ "kind": "delay", "ms": 100 })).await;
    let started = Instant::now();
    h.get("/core/companies").await.expect_ok(StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(100));

    inject(json!({ "kind": "drop" })).await;
    let url = format!("{}/core/companies", h.emulator.base_url());
    let dropped = h
        .http
        .get(&url)
        .header("api_key", DEMO_API_KEY)
        .send()
        .await;
    assert!(dropped.is_err());

    h.get("/core/companies").await.expect_ok(StatusCode::OK);
    let (_, listed) = h.admin(Method::GET, "/faults", None).await;
    assert_eq!(
        listed["faults"],
        json!([]),
        "each fault fired once and was used up"
    );
    let (_, counters) = h.admin(Method::GET, "/counters", None).await;
    assert_eq!(counters["total"], 8);
}

#[tokio::test]
async fn run_until_serves_until_its_shutdown_future_completes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = EmulatorConfig::for_tests();
    let server = tokio::spawn(emulator::run_until(listener, config, async move {
        stopped.await.ok();
    }));
    let url = format!("http://{addr}/v4/core/companies");
    let client = reqwest::Client::new();
    let reply = client
        .get(&url)
        .header("api_key", DEMO_API_KEY)
        .send()
        .await;
    assert_eq!(reply.expect("served").status(), StatusCode::OK);
    stop.send(()).expect("server still waiting");
    let finished = tokio::time::timeout(PATIENCE, server)
        .await
        .expect("stops in time");
    assert!(finished.expect("task joins").is_ok());
}
