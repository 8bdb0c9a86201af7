//! A gRPC gateway for the Commenda Integrations sync REST API, with a built-in emulator of
//! that API.
//!
//! The modules, one concern each:
//!
//! - [`config`]: every setting, as command-line flags with environment variables.
//! - [`pb`]: the code generated from `proto/` and the descriptor set for reflection.
//! - [`emulator`]: a stateful emulator of the REST API, served over real HTTP.
//! - [`upstream`]: the REST client: routes, credentials, envelopes.
//! - [`status`]: the one place that turns upstream failures into `tonic::Status`.
//! - [`validate`]: checks of caller input, run before any upstream call.
//! - [`metrics`]: Prometheus metrics and the layer that times every call.
//! - [`page_token`]: opaque, tamper-evident page tokens bound to their filters.
//! - [`convert`]: REST JSON models to and from proto messages.
//! - [`watch`]: the shared, rate-budgeted pollers behind the streaming RPCs.
//! - [`grpc`]: the tonic service handlers.
//! - [`idempotency`]: answers of idempotent writes, kept so repeats do not write twice.
//! - [`telemetry`]: logs, and spans exported over OTLP when asked.
//! - [`server`]: builds and runs the tonic server with reflection, health and shutdown.

#![warn(missing_docs)]

pub mod config;
pub mod convert;
pub mod emulator;
pub mod grpc;
pub mod idempotency;
pub mod metrics;
pub mod page_token;
pub mod pb;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod upstream;
pub mod validate;
pub mod watch;
