//! REST JSON to proto messages and back.
//!
//! Decoding is strict about structure (a sync without an id is a broken answer) and lenient
//! about values: an enum string this gateway does not know becomes `*_UNSPECIFIED` with the
//! original kept beside it, and an unparsable optional time is left unset.

use chrono::DateTime;
use prost_types::{ListValue, Struct, Timestamp, value::Kind};
use serde_json::{Map, Value, json};

use crate::pb::v1 as pb;
use crate::upstream::EnvelopeError;

type Result<T> = std::result::Result<T, EnvelopeError>;

fn shape(what: &'static str) -> EnvelopeError {
    EnvelopeError::UnexpectedShape(what)
}

fn object<'a>(value: &'a Value, what: &'static str) -> Result<&'a Map<String, Value>> {
    value.as_object().ok_or(shape(what))
}

fn text(object: &Map<String, Value>, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn int(object: &Map<String, Value>, key: &str) -> i64 {
    object.get(key).and_then(Value::as_i64).unwrap_or_default()
}

fn int32(object: &Map<String, Value>, key: &str) -> i32 {
    let value = int(object, key);
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

fn flag(object: &Map<String, Value>, key: &str) -> bool {
    object.get(key).and_then(Value::as_bool).unwrap_or_default()
}

fn strings(object: &Map<String, Value>, key: &str) -> Vec<String> {
    let items = object.get(key).and_then(Value::as_array);
    items
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// An ISO 8601 time, or unset when absent, null or unparsable.
fn time(object: &Map<String, Value>, key: &str) -> Option<Timestamp> {
    let raw = object.get(key)?.as_str()?;
    let parsed = DateTime::parse_from_rfc3339(raw).ok()?;
    Some(Timestamp {
        seconds: parsed.timestamp(),
        nanos: parsed.timestamp_subsec_nanos() as i32,
    })
}

/// Maps an upstream enum string onto a proto enum through its `PREFIX_VALUE` name.
fn enum_value(raw: &str, prefix: &str, from_name: fn(&str) -> Option<i32>) -> i32 {
    from_name(&format!("{prefix}{raw}")).unwrap_or_default()
}

fn counts(object: &Map<String, Value>, key: &str) -> Option<pb::StatusCounts> {
    let counts = object.get(key)?.as_object()?;
    Some(pb::StatusCounts {
        total: int32(counts, "total"),
        success: int32(counts, "success"),
        failed: int32(counts, "failed"),
        running: int32(counts, "running"),
        pending: int32(counts, "pending"),
    })
}

/// One upstream Sync object.
pub fn sync(value: &Value) -> Result<pb::Sync> {
    let o = object(value, "sync is not an object")?;
    let id = o
        .get("id")
        .and_then(Value::as_str)
        .ok_or(shape("sync has no id"))?;
    let status = text(o, "status");
    let sync_type = text(o, "syncType");
    Ok(pb::Sync {
        id: id.to_owned(),
        company_id: int(o, "companyId"),
        integration_type: text(o, "integrationType"),
        data_models: strings(o, "dataModels"),
        config_mode: text(o, "configMode"),
        full_sync: flag(o, "fullSync"),
        sync_type: enum_value(&sync_type, "SYNC_TYPE_", |n| {
            pb::SyncType::from_str_name(n).map(Into::into)
        }),
        status: enum_value(&status, "SYNC_STATUS_", |n| {
            pb::SyncStatus::from_str_name(n).map(Into::into)
        }),
        job_counts: counts(o, "jobCounts"),
        data_model_counts: counts(o, "dataModelCounts"),
        start_time: time(o, "startTime"),
        end_time: time(o, "endTime"),
        create_time: time(o, "createdAt"),
        upstream_status: status,
        upstream_sync_type: sync_type,
    })
}

/// One upstream Job object.
pub fn job(value: &Value) -> Result<pb::Job> {
    let o = object(value, "job is not an object")?;
    let id = o
        .get("id")
        .and_then(Value::as_str)
        .ok_or(shape("job has no id"))?;
    let status = text(o, "status");
    let job_type = text(o, "jobType");
    Ok(pb::Job {
        id: id.to_owned(),
        data_model: text(o, "dataModel"),
        status: enum_value(&status, "JOB_STATUS_", |n| {
            pb::JobStatus::from_str_name(n).map(Into::into)
        }),
        job_type: enum_value(&job_type, "JOB_TYPE_", |n| {
            pb::JobType::from_str_name(n).map(Into::into)
        }),
        config_mode: text(o, "configMode"),
        records_synced: o.get("recordsSynced").and_then(Value::as_i64),
        retry_count: int32(o, "retryCount"),
        parent_job_id: text(o, "parentJobId"),
        error_code: text(o, "errorCode"),
        error_message: text(o, "errorMessage"),
        error_response: o.get("errorResponse").and_then(to_struct),
        start_time: time(o, "startTime"),
        end_time: time(o, "endTime"),
        create_time: time(o, "createdAt"),
        upstream_status: status,
        upstream_job_type: job_type,
    })
}

/// The `{sync: {...}}` wrapper of GET one sync.
pub fn get_sync(data: &Value) -> Result<pb::Sync> {
    sync(data.get("sync").ok_or(shape("data has no sync"))?)
}

/// The `{sync: {id, dataModelsSyncing}}` answer of create and retry.
pub fn init_sync(data: &Value) -> Result<(String, Vec<String>)> {
    let o = object(
        data.get("sync").ok_or(shape("data has no sync"))?,
        "sync is not an object",
    )?;
    let id = o
        .get("id")
        .and_then(Value::as_str)
        .ok_or(shape("sync has no id"))?;
    Ok((id.to_owned(), strings(o, "dataModelsSyncing")))
}

/// One page of a list: its items, the total count and the next upstream cursor.
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The total for the filters.
    pub total: i32,
    /// The upstream cursor of the next page, if any.
    pub next: Option<String>,
}

fn page<T>(data: &Value, key: &'static str, item: fn(&Value) -> Result<T>) -> Result<Page<T>> {
    let o = object(data, "data is not an object")?;
    let items = o
        .get(key)
        .and_then(Value::as_array)
        .ok_or(shape("list has no items"))?;
    let next = match o.get("next") {
        Some(Value::String(next)) if !next.is_empty() => Some(next.clone()),
        Some(Value::Number(next)) => Some(next.to_string()),
        _ => None,
    };
    Ok(Page {
        items: items.iter().map(item).collect::<Result<_>>()?,
        total: int32(o, "count"),
        next,
    })
}

/// The page of ListSyncs.
pub fn sync_page(data: &Value) -> Result<Page<pb::Sync>> {
    page(data, "syncs", sync)
}

/// The page of ListSyncJobs.
pub fn job_page(data: &Value) -> Result<Page<pb::Job>> {
    page(data, "jobs", job)
}

/// The `{syncConfig: [...]}` answer of the organization config read.
pub fn sync_configs(data: &Value) -> Result<Vec<pb::SyncConfig>> {
    let items = data.get("syncConfig").and_then(Value::as_array);
    let items = items.ok_or(shape("data has no syncConfig list"))?;
    items.iter().map(sync_config).collect()
}

fn sync_config(value: &Value) -> Result<pb::SyncConfig> {
    let o = object(value, "sync config is not an object")?;
    let scope = o.get("scopeAccess").and_then(Value::as_object);
    Ok(pb::SyncConfig {
        data_model: text(o, "dataModel"),
        category: enum_value(&text(o, "category"), "INTEGRATION_CATEGORY_", |n| {
            pb::IntegrationCategory::from_str_name(n).map(Into::into)
        }),
        enabled: flag(o, "enabled"),
        scope_access: scope.map(|s| pb::ScopeAccess {
            read: flag(s, "READ"),
            create: flag(s, "CREATE"),
            update: flag(s, "UPDATE"),
            delete: flag(s, "DELETE"),
        }),
        frequency: enum_value(&text(o, "frequency"), "SYNC_FREQUENCY_", |n| {
            pb::SyncFrequency::from_str_name(n).map(Into::into)
        }),
        interval: int32(o, "interval"),
        sync_from: time(o, "syncFrom"),
        overridden: flag(o, "isOverridden"),
        child: flag(o, "isChild"),
    })
}

/// The upstream spelling of an enum value: its proto name without the type prefix.
pub fn upstream_name<'a>(proto_name: &'a str, prefix: &str) -> &'a str {
    proto_name.strip_prefix(prefix).unwrap_or(proto_name)
}

/// One validated write config as the upstream's snake_case `WriteSyncConfigModel`.
/// `sync_from` is already rendered as ISO 8601.
pub fn write_config(config: &pb::WriteSyncConfig, sync_from: Option<String>) -> Value {
    let category = upstream_name(config.category().as_str_name(), "INTEGRATION_CATEGORY_");
    let frequency = upstream_name(config.frequency().as_str_name(), "SYNC_FREQUENCY_");
    let scope = config.scope_access.unwrap_or_default();
    let mut body = json!({
        "data_model": config.data_model,
        "category": category,
        "enabled": config.enabled,
        "frequency": frequency,
        "interval": config.interval,
        "scope_access": {
            "READ": scope.read, "CREATE": scope.create,
            "UPDATE": scope.update, "DELETE": scope.delete,
        },
    });
    if let Some(sync_from) = sync_from {
        body["sync_from"] = Value::String(sync_from);
    }
    body
}

/// A JSON value as a protobuf `Struct`; a non-object is wrapped as `{"value": ...}` and
/// null is no struct at all.
pub fn to_struct(value: &Value) -> Option<Struct> {
    match value {
        Value::Null => None,
        Value::Object(map) => Some(Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), to_proto_value(v)))
                .collect(),
        }),
        other => Some(Struct {
            fields: [("value".to_owned(), to_proto_value(other))]
                .into_iter()
                .collect(),
        }),
    }
}

fn to_proto_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(to_struct(value).unwrap_or_default()),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_sync_example_converts_whole() {
        let value = json!({
            "id": "6870abae-60d9-48fb-8235-49cd812c06b9", "companyId": 496,
            "integrationType": "NETSUITE", "dataModels": ["ACCOUNT", "INVOICE"],
            "configMode": "READ", "fullSync": true, "syncType": "MANUAL",
            "status": "PARTIAL_SUCCESS",
            "jobCounts": { "total": 22, "success": 21, "failed": 1, "running": 0, "pending": 0 },
            "dataModelCounts": { "total": 18, "success": 17, "failed": 1, "running": 0, "pending": 0 },
            "startTime": "2026-05-20T07:10:02.237Z", "endTime": "2026-05-20T07:11:00.754Z",
            "createdAt": "2026-05-20T07:10:02.931Z"
        });
        let sync = sync(&value).expect("converts");
        assert_eq!(sync.status(), pb::SyncStatus::PartialSuccess);
        assert_eq!(sync.sync_type(), pb::SyncType::Manual);
        assert_eq!(sync.job_counts.expect("counts").total, 22);
        assert_eq!(
            sync.start_time,
            Some(Timestamp {
                seconds: 1_779_261_002,
                nanos: 237_000_000
            })
        );
        assert_eq!(sync.data_models, ["ACCOUNT", "INVOICE"]);
    }

    #[test]
    fn unknown_enum_strings_do_not_fail() {
        let sync = sync(&json!({"id": "s", "status": "PAUSED", "syncType": 7})).expect("ok");
        assert_eq!(sync.status(), pb::SyncStatus::Unspecified);
        assert_eq!(sync.upstream_status, "PAUSED");
        assert_eq!(sync.sync_type(), pb::SyncType::Unspecified);
    }

    #[test]
    fn structure_errors_are_reported() {
        assert!(sync(&json!({"status": "RUNNING"})).is_err());
        assert!(sync_page(&json!({"count": 1})).is_err());
        assert!(get_sync(&json!({"sync": []})).is_err());
    }

    #[test]
    fn non_object_error_response_is_wrapped() {
        let job = job(&json!({"id": "j", "errorResponse": "boom"})).expect("ok");
        let fields = job.error_response.expect("struct").fields;
        assert_eq!(fields["value"].kind, Some(Kind::StringValue("boom".into())));
    }
}
