//! Decoding of upstream bodies: the `{data, request_id}` success envelope and the
//! `{"error": {...}}` error envelope, tolerant of anything else a proxy might send.

use serde_json::Value;

/// Longest upstream message copied into a status message; the rest goes to the log only.
const MAX_MESSAGE_CHARS: usize = 200;

/// Why a 2xx body could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is not JSON (HTML from a proxy, truncated, empty ...).
    #[error("the body is not valid JSON")]
    NotJson,
    /// The body is JSON but not an object.
    #[error("the body is not a JSON object")]
    NotObject,
    /// The route answers with a `data` object, and there is none.
    #[error("the body has no `data` object")]
    MissingData,
    /// The `data` object lacks something every answer of its route has.
    #[error("unexpected shape: {0}")]
    UnexpectedShape(&'static str),
}

/// A decoded success body.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    /// The `data` member; `Value::Null` for routes that answer `{request_id}` only.
    pub data: Value,
    /// The upstream `request_id`, when present and a string.
    pub request_id: Option<String>,
}

/// Decodes a 2xx body. `needs_data` says whether the route answers with a `data` object.
pub fn decode_success(body: &[u8], needs_data: bool) -> Result<Success, EnvelopeError> {
    let value = parse_json(body, needs_data)?;
    let Value::Object(mut object) = value else {
        return Err(EnvelopeError::NotObject);
    };

    let request_id = object
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let data = object.remove("data").unwrap_or(Value::Null);
    if needs_data && !data.is_object() {
        return Err(EnvelopeError::MissingData);
    }
    Ok(Success { data, request_id })
}

/// An empty body is acceptable only where the route carries no data.
fn parse_json(body: &[u8], needs_data: bool) -> Result<Value, EnvelopeError> {
    if body.iter().all(u8::is_ascii_whitespace) && !needs_data {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|_| EnvelopeError::NotJson)
}

/// What the gateway could learn from an error body. Every part is optional: the body may
/// be HTML, empty or cut off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// `error.message`, sanitised and shortened so it is safe to show a caller.
    pub message: Option<String>,
    /// `error.request_id`.
    pub request_id: Option<String>,
    /// Field violations, when the body names fields (`error.fields` as
    /// `[{"field", "message"}]`).
    pub fields: Vec<(String, String)>,
}

impl ErrorBody {
    /// The same body with every occurrence of `secret` replaced, in every text it holds.
    pub fn redact(self, secret: &str) -> Self {
        let clean = |text: String| text.replace(secret, "[redacted]");
        Self {
            message: self.message.map(clean),
            request_id: self.request_id.map(clean),
            fields: self
                .fields
                .into_iter()
                .map(|(f, m)| (clean(f), clean(m)))
                .collect(),
        }
    }

    /// Decodes any body; never fails, returns what it found.
    pub fn decode(body: &[u8]) -> Self {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let Some(Value::Object(error)) = object.get("error") else {
            return Self::default();
        };

        let text = |key: &str| error.get(key).and_then(Value::as_str).map(sanitize);
        Self {
            message: text("message").filter(|m| !m.is_empty()),
            request_id: text("request_id").filter(|id| !id.is_empty()),
            fields: error.get("fields").map(decode_fields).unwrap_or_default(),
        }
    }
}

fn decode_fields(fields: &Value) -> Vec<(String, String)> {
    let Some(items) = fields.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let field = item.get("field")?.as_str()?;
            let message = item
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("invalid");
            Some((sanitize(field), sanitize(message)))
        })
        .take(20)
        .collect()
}

/// Keeps printable characters only and caps the length, so upstream text cannot forge
/// lines in a status message or blow up its size.
fn sanitize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    cleaned.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_envelope_is_unwrapped() {
        let body = br#"{"data":{"sync":{"id":"s1"}},"request_id":"r-1"}"#;
        let success = decode_success(body, true).expect("decodes");
        assert_eq!(success.request_id.as_deref(), Some("r-1"));
        assert_eq!(success.data["sync"]["id"], "s1");
    }

    #[test]
    fn request_id_only_envelope_is_accepted_where_no_data_is_due() {
        let success = decode_success(br#"{"request_id":"r-2"}"#, false).expect("decodes");
        assert_eq!(success.request_id.as_deref(), Some("r-2"));
        assert_eq!(
            decode_success(br#"{"request_id":"r-2"}"#, true),
            Err(EnvelopeError::MissingData)
        );
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        assert_eq!(
            decode_success(b"<html>bad gateway</html>", true),
            Err(EnvelopeError::NotJson)
        );
        assert_eq!(
            decode_success(br#"{"data":{"sy"#, true),
            Err(EnvelopeError::NotJson)
        );
        assert_eq!(
            decode_success(b"[1,2]", true),
            Err(EnvelopeError::NotObject)
        );
        assert_eq!(decode_success(b"", true), Err(EnvelopeError::NotJson));
    }

    #[test]
    fn error_body_yields_message_request_id_and_fields() {
        let body = br#"{"error":{"status_code":400,"message":"bad\nthing","request_id":"r-3",
            "timestamp":"2026-01-01T00:00:00Z","platform_error":null,
            "fields":[{"field":"limit","message":"must be at most 100"}]}}"#;
        let error = ErrorBody::decode(body);
        assert_eq!(error.message.as_deref(), Some("bad thing"));
        assert_eq!(error.request_id.as_deref(), Some("r-3"));
        assert_eq!(
            error.fields,
            [("limit".to_owned(), "must be at most 100".to_owned())]
        );
    }

    #[test]
    fn error_body_from_a_proxy_yields_nothing() {
        assert_eq!(ErrorBody::decode(b"<html>502</html>"), ErrorBody::default());
        assert_eq!(
            ErrorBody::decode(br#"{"error":"text"}"#),
            ErrorBody::default()
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Any JSON value, nested a few levels deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A success or an error envelope around any values.
    fn envelopes() -> impl Strategy<Value = Vec<u8>> {
        (json(), json(), json(), any::<bool>()).prop_map(|(data, id, fields, error)| {
            let value = if error {
                json!({"error": {"message": data, "request_id": id, "fields": fields}})
            } else {
                json!({"data": data, "request_id": id})
            };
            serde_json::to_vec(&value).unwrap_or_default()
        })
    }

    /// Envelopes whole or cut anywhere, and plain random bytes.
    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        let cut = (envelopes(), any::<prop::sample::Index>())
            .prop_map(|(body, at)| body[..at.index(body.len() + 1)].to_vec());
        let noise = prop::collection::vec(any::<u8>(), 0..256);
        prop_oneof![envelopes(), cut, noise]
    }

    proptest! {
        #[test]
        fn success_decoding_never_panics_and_keeps_its_promises(
            body in bodies(),
            needs_data in any::<bool>(),
        ) {
            let Ok(success) = decode_success(&body, needs_data) else {
                return Ok(());
            };
            if needs_data {
                prop_assert!(success.data.is_object());
            }
            let blank = body.iter().all(u8::is_ascii_whitespace);
            if !blank {
                let parsed: Value = serde_json::from_slice(&body).expect("decoded as JSON");
                prop_assert!(parsed.is_object());
                let id = parsed.get("request_id").and_then(Value::as_str);
                prop_assert_eq!(success.request_id.as_deref(), id);
            }
        }

        #[test]
        fn error_decoding_never_panics_and_yields_safe_text(body in bodies()) {
            let error = ErrorBody::decode(&body);
            let texts = error.message.iter().chain(&error.request_id);
            let fields = error.fields.iter().flat_map(|(f, m)| [f, m]);
            for text in texts.chain(fields) {
                prop_assert!(text.chars().count() <= MAX_MESSAGE_CHARS, "{text:?}");
                prop_assert!(!text.chars().any(char::is_control), "{text:?}");
            }
            prop_assert!(error.fields.len() <= 20);
        }
    }
}
