//! Checks of caller input. Every handler runs them before any upstream call, so a bad
//! request costs no upstream budget and gets a precise INVALID_ARGUMENT.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::status::Violation;

/// Page size used when the caller sends 0, as upstream.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page the upstream serves; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Most entries accepted in a repeated request field.
pub const MAX_ITEMS: usize = 100;

/// A company id must be positive.
pub fn company_id(field: &str, id: i64) -> Result<i64, Violation> {
    if id > 0 {
        Ok(id)
    } else {
        Err(Violation::new(field, "must be a positive company id"))
    }
}

/// Sync ids (and cursors inside tokens) are 1 to 128 characters of `A-Z a-z 0-9 _ -`, so
/// they can never change the shape of an upstream path.
pub fn resource_id<'a>(field: &str, id: &'a str) -> Result<&'a str, Violation> {
    if id.is_empty() {
        return Err(Violation::new(field, "is required"));
    }
    if id.len() > 128 {
        return Err(Violation::new(field, "must be at most 128 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Violation::new(
            field,
            "may contain only letters, digits, '-' and '_'",
        ));
    }
    Ok(id)
}

/// 0 means the default, values above the maximum are clamped, negative ones refused.
pub fn page_size(field: &str, size: i32) -> Result<u32, Violation> {
    match u32::try_from(size) {
        Err(_) => Err(Violation::new(field, "must not be negative")),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
    }
}

/// Data models are UPPER_SNAKE words of up to 64 characters, such as `BANK_ACCOUNT`.
pub fn data_model<'a>(field: &str, model: &'a str) -> Result<&'a str, Violation> {
    let mut bytes = model.bytes();
    let starts_well = bytes.next().is_some_and(|b| b.is_ascii_uppercase());
    let rest_ok = bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if model.is_empty() {
        return Err(Violation::new(field, "is required"));
    }
    if !starts_well || !rest_ok || model.len() > 64 {
        return Err(Violation::new(
            field,
            "must be an UPPER_SNAKE data model such as ACCOUNT",
        ));
    }
    Ok(model)
}

/// A timestamp the upstream can take, as ISO 8601 in UTC with milliseconds.
pub fn timestamp(field: &str, ts: &prost_types::Timestamp) -> Result<String, Violation> {
    let nanos = u32::try_from(ts.nanos).ok().filter(|n| *n < 1_000_000_000);
    let instant = nanos.and_then(|n| DateTime::<Utc>::from_timestamp(ts.seconds, n));
    match instant {
        Some(at) if (1970..=9999).contains(&chrono::Datelike::year(&at)) => {
            Ok(at.to_rfc3339_opts(SecondsFormat::Millis, true))
        }
        _ => Err(Violation::new(
            field,
            "must be a valid time between 1970 and 9999",
        )),
    }
}

/// An enum field that the caller must set to a known, specified value.
pub fn required_enum<E>(field: &str, raw: i32) -> Result<E, Violation>
where
    E: TryFrom<i32> + Copy,
{
    if raw == 0 {
        return Err(Violation::new(field, "must be specified"));
    }
    E::try_from(raw).map_err(|_| Violation::new(field, format!("unknown value {raw}")))
}

/// A caller's `x-request-id`, forwarded upstream, so it may not carry anything but a
/// plain token.
pub fn request_id<'a>(field: &str, id: &'a str) -> Result<&'a str, Violation> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(id)
    } else {
        Err(Violation::new(
            field,
            "must be 1 to 128 characters of A-Z a-z 0-9 - _ . :",
        ))
    }
}

/// An optional idempotency id: empty means none, anything else must be a UUID in its
/// usual 36-character form.
pub fn idempotency_id<'a>(field: &str, id: &'a str) -> Result<Option<&'a str>, Violation> {
    if id.is_empty() {
        return Ok(None);
    }
    let canonical = id.len() == 36 && uuid::Uuid::parse_str(id).is_ok();
    if canonical {
        Ok(Some(id))
    } else {
        Err(Violation::new(field, "must be a UUID"))
    }
}

/// Collects violations so that a request with several bad fields names them all.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Keeps the value of a passed check, records a failed one.
    pub fn check<T>(&mut self, result: Result<T, Violation>) -> Option<T> {
        result.map_err(|violation| self.0.push(violation)).ok()
    }

    /// Records a violation directly.
    pub fn push(&mut self, violation: Violation) {
        self.0.push(violation);
    }

    /// `Ok` when nothing was recorded, else the INVALID_ARGUMENT status naming every field.
    pub fn finish(self) -> Result<(), tonic::Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::status::invalid_argument(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_sync_ids_are_refused() {
        let long = "a".repeat(129);
        for id in [
            "../companies/1",
            "a/b",
            "a?b=c",
            "%2e%2e",
            "",
            long.as_str(),
            "a b",
            "é",
        ] {
            assert!(resource_id("sync_id", id).is_err(), "{id:?}");
        }
        assert_eq!(
            resource_id("sync_id", "6870abae-60d9_48fb"),
            Ok("6870abae-60d9_48fb")
        );
        assert!(resource_id("sync_id", &"a".repeat(128)).is_ok());
    }

    #[test]
    fn page_sizes_default_clamp_and_refuse() {
        assert_eq!(page_size("page_size", 0), Ok(20));
        assert_eq!(page_size("page_size", 7), Ok(7));
        assert_eq!(page_size("page_size", 1000), Ok(100));
        assert!(page_size("page_size", -1).is_err());
    }

    #[test]
    fn timestamps_outside_the_calendar_are_refused() {
        let ok = prost_types::Timestamp {
            seconds: 1_767_225_600,
            nanos: 5_000_000,
        };
        assert_eq!(
            timestamp("t", &ok).as_deref(),
            Ok("2026-01-01T00:00:00.005Z")
        );
        for bad in [(0, -1), (0, 1_000_000_000), (i64::MAX, 0), (-1, 0)] {
            let ts = prost_types::Timestamp {
                seconds: bad.0,
                nanos: bad.1,
            };
            assert!(timestamp("t", &ts).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_models_are_upper_snake() {
        assert!(data_model("m", "BANK_ACCOUNT").is_ok());
        for bad in ["", "account", "1ACCOUNT", "ACCOUNT/../X", "A-B"] {
            assert!(data_model("m", bad).is_err(), "{bad:?}");
        }
    }
}
