//! Plumbing shared by every mst-dossiers service — no domain logic lives here.
//!
//! - [`config`]: typed settings from environment variables, every problem reported at once;
//! - [`db`]: the database pool (SQLite in WAL mode, or PostgreSQL);
//! - [`telemetry`]: logs, traces, OTLP export;
//! - [`auth`]: bearer JWT verification (shared secret or OIDC JWKS), roles, local token minting;
//! - [`grpc`]: the server with health, reflection, per-call spans and graceful shutdown;
//! - [`service`]: the start-up and run loop every service shares;
//! - [`shutdown`]: signal handling, tracked tasks, draining with a deadline;
//! - [`error`]: the one mapping from application errors to gRPC statuses with rich details.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use error::{ApiError, Violation};
pub use shutdown::Shutdown;
