//! Plumbing shared by every mst-dossiers service — no domain logic lives here.
//!
//! - [`config`]: typed settings from environment variables, every problem reported at once;
//! - [`db`]: the database pool (SQLite in WAL mode, or PostgreSQL);
//! - [`telemetry`]: logs, traces, OTLP export;
//! - [`auth`]: bearer JWT verification (shared secret or OIDC JWKS), roles, local token minting;
//! - [`files`]: attachments in a local directory or an S3-compatible bucket, streamed, capped,
//!   hashed and checked against their declared type;
//! - [`grpc`]: the server with health, reflection, per-call spans and graceful shutdown;
//! - [`service`]: the start-up and run loop every service shares;
//! - [`shutdown`]: signal handling, tracked tasks, draining with a deadline;
//! - [`error`]: the one mapping from application errors to gRPC statuses with rich details.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod files;
pub mod grpc;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use error::{ApiError, Violation};
pub use shutdown::Shutdown;

/// Invariant I1: how long the instruction service may take between having forms freeze a
/// dossier and committing the transition (it rolls back past it). Forms releases a hold whose
/// transition never committed only well after this lease (`mst_forms::freeze`).
pub const FREEZE_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// Makes ring the process-wide rustls crypto provider; calling it again does nothing.
///
/// The workspace uses ring everywhere (tonic `tls-ring`, reqwest `rustls-tls`, sqlx), but
/// object_store's S3 client (reqwest 0.13) compiles aws-lc-rs into rustls too. With both providers
/// compiled in, rustls cannot choose one by itself: `ClientConfig::builder()` and
/// `ServerConfig::builder()` panic ("Could not automatically determine the process-level
/// CryptoProvider from Rustls crate features") — async-nats calls the former for a `tls://` NATS
/// server. So every process installs ring first: [`service::main`] and
/// [`service::Infra::start_on`] do, and so does whatever builds a TLS client before them (the
/// S3 attachments store).
pub fn install_crypto_provider() {
    // An error only says that a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
