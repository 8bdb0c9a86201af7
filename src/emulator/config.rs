//! Settings of one emulator instance: seed, rate limit, job timing, outcomes and tenants.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use super::counters::key_fingerprint;

/// The API key of the demo organization (id 1), which owns companies 496 to 499.
pub const DEMO_API_KEY: &str = "commenda-demo-key";

/// The API key of a second organization (id 2), which owns company 900. It exists so that
/// tenant isolation can be seen and tested.
pub const OTHER_API_KEY: &str = "commenda-other-org-key";

/// How an emulator behaves. Build one with [`Default`] (production-like) or
/// [`EmulatorConfig::for_tests`] (fast and unlimited), then adjust fields.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Seeds every random choice: sync ids, job ids, timings, outcomes, record counts and
    /// probabilistic faults. The same seed and the same requests give the same results.
    pub seed: u64,
    /// The per-key rate limit; `None` switches limiting off (the headers are still sent).
    pub rate_limit: Option<RateLimitConfig>,
    /// How long jobs wait and run.
    pub timing: JobTiming,
    /// Chance, from 0.0 to 1.0, that any one job fails.
    pub failure_probability: f64,
    /// Data models whose jobs always fail, so tests can force `FAILED` or `PARTIAL_SUCCESS`.
    pub fail_data_models: BTreeSet<String>,
    /// Organizations with their API keys and companies.
    pub organizations: Vec<OrganizationSeed>,
    /// Whether each seeded company starts with a short history of finished syncs.
    pub seed_history: bool,
    /// How many recent requests the request log keeps (oldest are dropped first).
    pub request_log_capacity: usize,
}

impl Default for EmulatorConfig {
    /// Production-like: the documented rate limit (100 per minute, burst 200), jobs that take
    /// a few seconds, a 5% chance of a job failing, and the demo tenants.
    fn default() -> Self {
        Self {
            seed: 0x00C0_33E7_DA00,
            rate_limit: Some(RateLimitConfig::default()),
            timing: JobTiming {
                start_delay: Duration::from_millis(500),
                duration: Duration::from_secs(4),
                jitter: Duration::from_millis(1500),
            },
            failure_probability: 0.05,
            fail_data_models: BTreeSet::new(),
            organizations: OrganizationSeed::demo(),
            seed_history: true,
            request_log_capacity: 1000,
        }
    }
}

impl EmulatorConfig {
    /// For tests: no rate limit, jobs that finish within tens of milliseconds, no random
    /// failures (use [`EmulatorConfig::fail_data_models`] to force them), a fixed seed and
    /// the demo tenants.
    pub fn for_tests() -> Self {
        Self {
            seed: 7,
            rate_limit: None,
            timing: JobTiming {
                start_delay: Duration::from_millis(5),
                duration: Duration::from_millis(30),
                jitter: Duration::from_millis(10),
            },
            failure_probability: 0.0,
            ..Self::default()
        }
    }
}

/// A token bucket per API key: it holds `burst` tokens, each request takes one, and it
/// refills at `per_minute` tokens per minute of emulator time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per minute (the refill rate). Default 100.
    pub per_minute: u32,
    /// Bucket size: how many requests may arrive at once after a quiet spell. Default 200.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_minute: 100,
            burst: 200,
        }
    }
}

/// When a job starts and how long it runs, measured from the creation of its sync.
///
/// A job starts after `start_delay` plus a random share of `jitter`, then runs for
/// `duration` plus or minus a random share of `jitter` (at least one millisecond).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobTiming {
    /// Fixed wait before a job starts running.
    pub start_delay: Duration,
    /// Typical running time of a job.
    pub duration: Duration,
    /// Spread added to start delays and durations.
    pub jitter: Duration,
}

/// One organization: the API keys that act for it and the companies it owns.
#[derive(Clone)]
pub struct OrganizationSeed {
    /// Organization id, shown as `organisationId` on connections.
    pub id: i64,
    /// API keys that authenticate as this organization.
    pub api_keys: Vec<String>,
    /// Companies connected in this organization.
    pub companies: Vec<CompanySeed>,
}

impl OrganizationSeed {
    /// The demo tenants: [`DEMO_API_KEY`] for organization 1 (companies 496 NETSUITE,
    /// 497 XERO, 498 STRIPE, 499 SHOPIFY) and [`OTHER_API_KEY`] for organization 2
    /// (company 900 QUICKBOOKS).
    pub fn demo() -> Vec<Self> {
        vec![
            Self {
                id: 1,
                api_keys: vec![DEMO_API_KEY.to_owned()],
                companies: vec![
                    CompanySeed::new(496, "Acme Holdings Inc.", "NETSUITE"),
                    CompanySeed::new(497, "Bluebird Trading Ltd", "XERO"),
                    CompanySeed::new(498, "Copperleaf Payments LLC", "STRIPE"),
                    CompanySeed::new(499, "Driftwood Outfitters", "SHOPIFY"),
                ],
            },
            Self {
                id: 2,
                api_keys: vec![OTHER_API_KEY.to_owned()],
                companies: vec![CompanySeed::new(900, "Evergreen Bakery Co", "QUICKBOOKS")],
            },
        ]
    }
}

impl fmt::Debug for OrganizationSeed {
    /// Shows key fingerprints, never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.api_keys.iter().map(|k| key_fingerprint(k)).collect();
        f.debug_struct("OrganizationSeed")
            .field("id", &self.id)
            .field("api_key_fingerprints", &keys)
            .field("companies", &self.companies)
            .finish()
    }
}

/// One connected company. Its category and data model configs follow from its integration.
#[derive(Clone, Debug)]
pub struct CompanySeed {
    /// The company id (`id` and `companyId` in the API).
    pub id: i64,
    /// Display name (`companyName`).
    pub name: String,
    /// Integration type, one of the twelve v4 types (e.g. `NETSUITE`); an unknown type is
    /// treated as an accounting integration.
    pub integration: String,
}

impl CompanySeed {
    /// A company with the given id, name and integration type.
    pub fn new(id: i64, name: &str, integration: &str) -> Self {
        Self {
            id,
            name: name.to_owned(),
            integration: integration.to_owned(),
        }
    }
}
