//! The REST client for the Commenda sync API: the route table, credentials, the request
//! itself, the per-key request budget and the decoding of envelopes.
//!
//! Everything a caller controls reaches the upstream only through typed values here: ids
//! are percent-encoded into the path, query parameters are built from validated numbers
//! and enum names, and the only headers set from caller input are the API key and the
//! request id, both checked before use.

mod budget;
mod client;
mod credentials;
mod envelope;
mod flight;
mod health;
mod limiter;
mod retry;
mod routes;

pub use budget::{BudgetConfig, Budgets, Priority};
pub use client::{
    RateLimitInfo, Reply, UpstreamClient, UpstreamError, UpstreamOptions, UpstreamRequest,
};
pub use credentials::{ApiKey, CredentialSource, InvalidApiKey};
pub use envelope::{EnvelopeError, ErrorBody};
pub use health::{UpstreamHealth, Verdict};
pub use retry::RetryPolicy;
pub use routes::{Endpoint, PathParam};
