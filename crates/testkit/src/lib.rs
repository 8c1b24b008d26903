//! Real-service test harness for mst-dossiers.
//!
//! Tests run against the real thing, never a mock: a `nats-server -js` on a free port with a
//! throw-away store ([`NatsServer`]), a throw-away PostgreSQL 15 cluster shared by the test process
//! with one fresh database per test ([`Postgres`], [`TestDb`]), and an `aiosmtpd` SMTP sink whose
//! received messages a test can read ([`SmtpSink`], [`ReceivedMail`]), and an OTLP/gRPC trace
//! collector the services export their spans to ([`Collector`]).
//!
//! Every child process is killed when its handle is dropped and every temporary directory is
//! removed; readiness is always polled with a deadline, never awaited with a fixed sleep. A missing
//! binary fails with a message saying how to install it.
#![forbid(unsafe_code)]

mod db;
mod mail;
mod nats;
mod otlp;
mod postgres;
mod process;
mod smtp;
mod wait;

pub use db::{Backend, TEST_DB_ENV, TestDb};
pub use mail::{ReceivedMail, decode_rfc2047};
pub use nats::NatsServer;
pub use otlp::{Collector, ReceivedSpan};
pub use postgres::Postgres;
pub use smtp::SmtpSink;
pub use wait::{unique_prefix, wait_until};
