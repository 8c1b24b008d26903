//! End-to-end tests: the services in-process on real NATS and the database chosen by
//! `MST_TEST_DB` (`sqlite` or `postgres`).

mod authz;
mod bad_inputs;
mod closing;
mod forms;
mod instruction;
mod invariants;
mod messagerie;
mod mst_procedures;
mod oscars;
mod platform;
mod processes;
mod python_client;
mod rawgrpc;
mod scenario;
use mst_e2e::support;
mod trace_and_auth;
mod workflow;
