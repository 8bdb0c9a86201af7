//! The built-in emulator of the Commenda Integrations v4 sync REST API.
//!
//! Nobody can reach the real API from a test machine, and a new user has no key yet, so the
//! crate ships a stateful emulator of it: the sync, job, sync-config and company routes under
//! `/v4/core`, with the API's envelopes, error bodies and status codes. Syncs progress on
//! their own, reproducibly for a given seed.
//!
//! The modules, one concern each: `config` (settings and demo tenants), `catalog`
//! (vocabularies), `clock` (emulator time), `sim` (how jobs progress), `state` (tenancy,
//! companies, syncs), `views` (JSON shapes), `routes` (the `/v4` handlers), `errors` (the
//! error envelope), `rate_limit` (per-key token buckets and their headers), `faults` (what
//! tests inject) and `counters` (what was served).

// The HTTP server that uses these modules comes next; until then much is unused.
#![allow(dead_code)]

mod catalog;
mod clock;
mod config;
mod counters;
mod errors;
mod faults;
mod rate_limit;
mod routes;
mod sim;
mod state;
mod views;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use config::{
    CompanySeed, DEMO_API_KEY, EmulatorConfig, JobTiming, OTHER_API_KEY, OrganizationSeed,
    RateLimitConfig,
};
pub use counters::{CounterEntry, CounterSnapshot, RecordedRequest, key_fingerprint};
pub use faults::{Fault, FaultKind};
pub use routes::{Route, UnknownRoute};

/// Locks a mutex, carrying on if another thread panicked while holding it: every critical
/// section leaves the data consistent between statements, so the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
