//! The emulator's notion of "now".
//!
//! Every time the emulator reads, from job progress to rate-limit refills, comes from one
//! [`Clock`]: wall-clock time plus an offset that only moves forward. Tests move the offset
//! with [`Clock::advance`] instead of sleeping, so a sync that would take minutes finishes
//! the moment a test asks for it, and an exhausted rate-limit budget refills on demand.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// The furthest the clock can be advanced: about a thousand years, which keeps every date the
/// emulator computes far inside chrono's range.
const MAX_OFFSET_MS: i64 = 1000 * 366 * 24 * 3600 * 1000;

/// Wall-clock time shifted by a manual, monotonically growing offset.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// Milliseconds added to the wall clock; only ever grows.
    offset_ms: AtomicI64,
}

impl Clock {
    /// The current emulator time, truncated to whole milliseconds.
    ///
    /// Truncating keeps every timestamp the emulator stores equal to the one it prints,
    /// since the wire format carries milliseconds.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let offset = TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst));
        let now = later(Utc::now(), offset);
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }

    /// Moves emulator time forward by `by` (sub-millisecond parts are dropped).
    pub(crate) fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                Some(old.saturating_add(ms).min(MAX_OFFSET_MS))
            })
            .ok();
    }
}

/// Formats a time the way the REST API does: ISO 8601, UTC, milliseconds, `Z` suffix.
pub(crate) fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `at` plus `by`, saturating at the latest representable time instead of panicking.
pub(crate) fn later(at: DateTime<Utc>, by: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Converts a std duration into a chrono delta, saturating instead of failing.
pub(crate) fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_now_forward() {
        let clock = Clock::default();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() - before >= TimeDelta::seconds(3600));
    }

    #[test]
    fn iso_has_millis_and_z() {
        let at = DateTime::from_timestamp_millis(1_779_260_402_237).unwrap();
        assert_eq!(iso(at), "2026-05-20T07:00:02.237Z");
    }
}
