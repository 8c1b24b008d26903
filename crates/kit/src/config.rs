//! Typed configuration from environment variables.
//!
//! Every service reads its settings in one place through [`Env`], which records every missing or
//! malformed variable and reports them all at once, so a bad deployment fails at start with one
//! clear message instead of at the first request. The settings every service shares are parsed by
//! [`CommonSettings::from_env`].

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::auth::AuthSettings;
use crate::telemetry::TelemetrySettings;

/// A configuration problem: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Name of the environment variable.
    pub var: String,
    /// What is wrong.
    pub problem: String,
}

/// Every configuration problem found while reading settings.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|i| format!("  - {}: {}", i.var, i.problem)).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<ConfigIssue>);

/// A reader of environment variables that collects every problem.
///
/// Reads go through a snapshot map, so tests (and the embedded runner) can pass their own
/// variables without touching the process environment.
#[derive(Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    issues: Vec<ConfigIssue>,
}

impl Env {
    /// A reader over the process environment.
    pub fn from_process() -> Self {
        Self::from_map(std::env::vars())
    }

    /// A reader over the given variables only.
    pub fn from_map<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            issues: Vec::new(),
        }
    }

    /// Sets a variable (used by the embedded runner and tests to override defaults).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    /// The raw value of `var`, when set and not empty.
    pub fn raw(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    fn parse<T>(&mut self, var: &str, value: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        match value.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.issue(var, format!("cannot parse {value:?}: {e}"));
                None
            }
        }
    }

    /// Records a problem on `var`.
    pub fn issue(&mut self, var: &str, problem: impl Into<String>) {
        self.issues.push(ConfigIssue {
            var: var.to_owned(),
            problem: problem.into(),
        });
    }

    /// A required variable; records a problem when missing or malformed.
    pub fn required<T>(&mut self, var: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(var).map(str::to_owned) {
            Some(v) => self.parse(var, &v),
            None => {
                self.issue(var, "is required but not set");
                None
            }
        }
    }

    /// An optional variable with a default.
    pub fn or<T>(&mut self, var: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(var).map(str::to_owned) {
            Some(v) => self.parse(var, &v).unwrap_or(default),
            None => default,
        }
    }

    /// An optional variable without a default.
    pub fn optional<T>(&mut self, var: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let v = self.raw(var)?.to_owned();
        self.parse(var, &v)
    }

    /// A boolean (`true/false/1/0/yes/no/on/off`).
    pub fn flag(&mut self, var: &str, default: bool) -> bool {
        let Some(v) = self.raw(var).map(str::to_ascii_lowercase) else {
            return default;
        };
        match v.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            other => {
                self.issue(var, format!("expected true or false, got {other:?}"));
                default
            }
        }
    }

    /// A duration in whole seconds.
    pub fn seconds(&mut self, var: &str, default: Duration) -> Duration {
        match self.optional::<u64>(var) {
            Some(s) => Duration::from_secs(s),
            None => default,
        }
    }

    /// A secret: kept out of `Debug` output and logs.
    pub fn secret(&mut self, var: &str) -> Option<SecretString> {
        self.raw(var).map(|v| SecretString::from(v.to_owned()))
    }

    /// Ends reading: the problems found, if any.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(self.issues))
        }
    }
}

/// JetStream settings shared by every service.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated (`MST_NATS_URL`).
    pub url: String,
    /// Stream holding every event (`MST_NATS_STREAM`).
    pub stream: String,
    /// First subject token of every event subject (`MST_NATS_SUBJECT_PREFIX`).
    pub subject_prefix: String,
    /// Stream replicas (`MST_NATS_STREAM_REPLICAS`).
    pub replicas: usize,
}

/// Database settings.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// sea-orm URL (`MST_DATABASE_URL`): `sqlite://…?mode=rwc` or `postgres://…`.
    pub url: String,
    /// Pool size (`MST_DATABASE_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// Apply pending migrations at start (`MST_MIGRATE_ON_START`).
    pub migrate_on_start: bool,
}

/// Settings every service reads the same way.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// Service name (logs, traces, consumer names).
    pub service: &'static str,
    /// gRPC listen address (`MST_GRPC_ADDR`).
    pub grpc_addr: SocketAddr,
    /// Database.
    pub database: DatabaseSettings,
    /// NATS JetStream.
    pub nats: NatsSettings,
    /// Bearer-token verification.
    pub auth: AuthSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// How long in-flight work may take to finish after SIGTERM (`MST_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
}

impl CommonSettings {
    /// Reads the shared settings of `service`, whose defaults are `default_addr` and a SQLite file
    /// `data/<service>.db`. Problems are recorded in `env`.
    pub fn from_env(env: &mut Env, service: &'static str, default_addr: SocketAddr) -> Self {
        let grpc_addr = env.or("MST_GRPC_ADDR", default_addr);
        let database = DatabaseSettings {
            url: env
                .raw("MST_DATABASE_URL")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("sqlite://data/{service}.db?mode=rwc")),
            max_connections: env.or("MST_DATABASE_MAX_CONNECTIONS", 16),
            migrate_on_start: env.flag("MST_MIGRATE_ON_START", true),
        };
        if !(database.url.starts_with("sqlite:") || database.url.starts_with("postgres")) {
            env.issue(
                "MST_DATABASE_URL",
                "must start with sqlite: or postgres:// (postgresql://)",
            );
        }
        let nats = NatsSettings {
            url: env.or("MST_NATS_URL", "nats://127.0.0.1:4222".to_owned()),
            stream: env.or("MST_NATS_STREAM", "MST_EVENTS".to_owned()),
            subject_prefix: env.or("MST_NATS_SUBJECT_PREFIX", "mst".to_owned()),
            replicas: env.or("MST_NATS_STREAM_REPLICAS", 1),
        };
        if nats.subject_prefix.contains(['.', '*', '>', ' ']) {
            env.issue(
                "MST_NATS_SUBJECT_PREFIX",
                "must be one subject token (no '.', '*', '>' or spaces)",
            );
        }
        let auth = AuthSettings::from_env(env);
        let telemetry = TelemetrySettings::from_env(env, service);
        let shutdown_grace = env.seconds("MST_SHUTDOWN_GRACE_SECS", Duration::from_secs(10));
        Self {
            service,
            grpc_addr,
            database,
            nats,
            auth,
            telemetry,
            shutdown_grace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut env = Env::from_map([
            ("MST_GRPC_ADDR", "not-an-address"),
            ("MST_DATABASE_URL", "mysql://x"),
            ("MST_MIGRATE_ON_START", "perhaps"),
        ]);
        let _ = CommonSettings::from_env(&mut env, "forms", "127.0.0.1:50051".parse().unwrap());
        let err = env.finish().unwrap_err();
        let mut vars: Vec<_> = err.0.iter().map(|i| i.var.as_str()).collect();
        vars.sort_unstable();
        assert_eq!(
            vars,
            ["MST_DATABASE_URL", "MST_GRPC_ADDR", "MST_MIGRATE_ON_START"]
        );
        assert!(err.to_string().contains("MST_GRPC_ADDR"));
    }

    #[test]
    fn defaults_are_the_embedded_ones() {
        let mut env = Env::from_map::<_, String, String>([]);
        let s = CommonSettings::from_env(&mut env, "oscars", "127.0.0.1:50054".parse().unwrap());
        env.finish().unwrap();
        assert_eq!(s.database.url, "sqlite://data/oscars.db?mode=rwc");
        assert_eq!(s.nats.stream, "MST_EVENTS");
        assert_eq!(s.grpc_addr.port(), 50054);
        assert!(s.telemetry.otlp_endpoint.is_none());
    }

    #[test]
    fn a_required_variable_that_is_missing_is_named() {
        let mut env = Env::from_map::<_, String, String>([]);
        assert_eq!(env.required::<u16>("MST_PORT"), None);
        let err = env.finish().unwrap_err();
        assert_eq!(err.0[0].var, "MST_PORT");
    }
}
