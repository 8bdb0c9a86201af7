//! Properties of the code that takes input from callers and from the upstream: validators
//! accept exactly their documented alphabets, page tokens open only when this gateway sealed
//! them, the JSON converters never panic, and the running gateway answers any sync id or
//! page token with success, INVALID_ARGUMENT or NOT_FOUND.

mod common;

use commenda_sync_gateway::convert;
use commenda_sync_gateway::page_token::PageTokens;
use commenda_sync_gateway::pb::v1 as pb;
use commenda_sync_gateway::validate;
use common::Harness;
use proptest::prelude::*;
use serde_json::Value;
use tonic::Code;

/// Arbitrary text, text of the `valid` alphabet (around its length limit) and `near` misses,
/// so that both answers and every boundary are reached often.
fn text(valid: &'static str, near: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), valid, near]
}

fn id_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `8-4-4-4-12` hex digits, the only 36-character form of a UUID.
fn is_hyphenated_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

proptest! {
    #[test]
    fn resource_ids_are_1_to_128_of_letters_digits_dash_underscore(
        id in text("[A-Za-z0-9_-]{0,130}", "[A-Za-z0-9_-]{0,9}[/.%é +]?[A-Za-z0-9_-]{0,9}"),
    ) {
        let valid = (1..=128).contains(&id.len()) && id.bytes().all(id_alphabet);
        let result = validate::resource_id("sync_id", &id);
        prop_assert_eq!(result.is_ok(), valid, "{:?}", id);
        if let Ok(accepted) = result {
            prop_assert_eq!(accepted, id.as_str());
        }
    }

    #[test]
    fn data_models_are_upper_snake_up_to_64(model in text("[A-Z][A-Z0-9_]{0,65}", "[A-Za-z0-9_ -]?[A-Z0-9_]{0,9}[a-]?")) {
        let bytes = model.as_bytes();
        let valid = bytes.first().is_some_and(u8::is_ascii_uppercase)
            && bytes.len() <= 64
            && bytes
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
        let result = validate::data_model("data_model", &model);
        prop_assert_eq!(result.is_ok(), valid, "{:?}", model);
    }

    #[test]
    fn request_ids_are_1_to_128_plain_characters(id in text("[A-Za-z0-9._:-]{0,130}", "[A-Za-z0-9._:-]{0,9}[/ é@]?[A-Za-z0-9._:-]{0,9}")) {
        let valid = (1..=128).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        let result = validate::request_id("x-request-id", &id);
        prop_assert_eq!(result.is_ok(), valid, "{:?}", id);
    }

    #[test]
    fn idempotency_ids_are_empty_or_hyphenated_uuids(
        id in prop_oneof![
            text("[0-9a-f-]{36}", "[0-9a-fA-Fg{}-]{30,40}"),
            any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
            any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).simple().to_string()),
        ],
    ) {
        let result = validate::idempotency_id("request_id", &id);
        match result {
            Ok(None) => prop_assert!(id.is_empty()),
            Ok(Some(accepted)) => {
                prop_assert_eq!(accepted, id.as_str());
                prop_assert!(is_hyphenated_uuid(&id), "{:?}", id);
            }
            Err(_) => prop_assert!(!is_hyphenated_uuid(&id), "{:?}", id),
        }
    }

    #[test]
    fn company_ids_are_positive_and_page_sizes_clamped(id in any::<i64>(), size in any::<i32>()) {
        prop_assert_eq!(validate::company_id("company_id", id).is_ok(), id > 0);
        match validate::page_size("page_size", size) {
            Ok(limit) => {
                prop_assert!(size >= 0);
                prop_assert!((1..=validate::MAX_PAGE_SIZE).contains(&limit));
            }
            Err(_) => prop_assert!(size < 0),
        }
    }

    #[test]
    fn page_tokens_open_only_what_was_sealed(
        forged in text("[A-Za-z0-9_-]{38,60}", "[A-Za-z0-9_+/=-]{0,200}"),
        scope in any::<String>(),
        cursor in any::<String>(),
        at in any::<prop::sample::Index>(),
        replacement in "[A-Za-z0-9_-]",
    ) {
        let tokens = PageTokens::new(None);
        prop_assert!(tokens.open(&scope, &forged).is_err(), "{:?}", forged);

        let token = tokens.seal(&scope, &cursor);
        prop_assert_eq!(tokens.open(&scope, &token), Ok(cursor));
        let other_scope = format!("{scope}:");
        prop_assert!(tokens.open(&other_scope, &token).is_err());
        prop_assert!(PageTokens::new(None).open(&scope, &token).is_err());

        let i = at.index(token.len());
        let mut altered = token.clone();
        altered.replace_range(i..=i, &replacement);
        prop_assume!(altered != token);
        prop_assert!(tokens.open(&scope, &altered).is_err(), "{:?}", altered);
    }
}

/// The keys the converters read, so generated objects reach every branch.
const KEYS: [&str; 27] = [
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
    "dataModel",
    "jobType",
    "recordsSynced",
    "retryCount",
    "parentJobId",
    "errorCode",
    "errorMessage",
    "errorResponse",
    "total",
    "success",
    "failed",
    "running",
    "pending",
    "sync",
];

/// Any JSON value, with strings and numbers near the shapes the converters parse.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "(RUNNING|SUCCESS|FAILED|PULL|PUSH|MANUAL|AUTO_SYNC|[A-Z_]{1,12})".prop_map(Value::from),
        "[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})"
            .prop_map(Value::from),
    ];
    let key = prop_oneof![
        prop::sample::select(KEYS.to_vec()).prop_map(String::from),
        any::<String>()
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..10)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn has_string_id(value: &Value) -> bool {
    value.get("id").is_some_and(Value::is_string) && value.is_object()
}

proptest! {
    #[test]
    fn converters_never_panic_and_need_only_an_object_with_an_id(value in json()) {
        prop_assert_eq!(convert::sync(&value).is_ok(), has_string_id(&value));
        prop_assert_eq!(convert::job(&value).is_ok(), has_string_id(&value));
        let wrapped = serde_json::json!({ "sync": value, "syncs": [value], "jobs": [value] });
        let _ = convert::get_sync(&wrapped);
        let _ = convert::init_sync(&wrapped);
        let _ = convert::sync_page(&wrapped);
        let _ = convert::job_page(&wrapped);
        let _ = convert::sync_configs(&value);
        let _ = convert::to_struct(&value);
    }
}

/// Any text as a sync id or page token reaches the running gateway; reads answer with
/// success, INVALID_ARGUMENT or NOT_FOUND, never anything else. Real ids and tokens are
/// mixed in so that the success path is taken too.
#[test]
fn any_sync_id_or_page_token_is_found_or_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let harness = runtime.block_on(Harness::start());
    let (sync_id, tokens) = runtime.block_on(real_inputs(&harness));

    let ids = prop_oneof![any::<String>(), "[A-Za-z0-9_./%?#-]{0,140}", Just(sync_id),];
    let tokens = prop_oneof![
        Just(String::new()),
        any::<String>(),
        "[A-Za-z0-9_-]{0,160}",
        prop::sample::select(tokens),
    ];
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(sync_id in ids, page_token in tokens)| {
        let codes = runtime.block_on(read_codes(&harness, sync_id, page_token));
        for (rpc, code) in codes {
            let allowed = [Code::Ok, Code::InvalidArgument, Code::NotFound];
            prop_assert!(allowed.contains(&code), "{} answered {:?}", rpc, code);
        }
    });
}

/// A seeded sync id and real next-page tokens of ListSyncs and ListSyncJobs.
async fn real_inputs(harness: &Harness) -> (String, Vec<String>) {
    let list = pb::ListSyncsRequest {
        company_id: 496,
        page_size: 1,
        ..Default::default()
    };
    let page = harness.syncs().list_syncs(list).await.expect("list");
    let page = page.into_inner();
    let sync_id = page.syncs[0].id.clone();
    let jobs = pb::ListSyncJobsRequest {
        sync_id: sync_id.clone(),
        page_size: 1,
        ..Default::default()
    };
    let jobs = harness.syncs().list_sync_jobs(jobs).await.expect("jobs");
    let tokens = [page.next_page_token, jobs.into_inner().next_page_token];
    let tokens: Vec<String> = tokens.into_iter().filter(|t| !t.is_empty()).collect();
    assert!(
        !tokens.is_empty(),
        "company 496 has more than one seeded sync"
    );
    (sync_id, tokens)
}

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.map_or_else(|status| status.code(), |_| Code::Ok)
}

/// The codes of GetSync, ListSyncJobs and ListSyncs (company 496) for these inputs.
async fn read_codes(harness: &Harness, sync_id: String, page_token: String) -> Vec<(&str, Code)> {
    let get = pb::GetSyncRequest {
        sync_id: sync_id.clone(),
    };
    let jobs = pb::ListSyncJobsRequest {
        sync_id,
        page_size: 1,
        page_token: page_token.clone(),
    };
    let syncs = pb::ListSyncsRequest {
        company_id: 496,
        page_token,
        ..Default::default()
    };
    vec![
        ("GetSync", code(harness.syncs().get_sync(get).await)),
        (
            "ListSyncJobs",
            code(harness.syncs().list_sync_jobs(jobs).await),
        ),
        ("ListSyncs", code(harness.syncs().list_syncs(syncs).await)),
    ]
}
