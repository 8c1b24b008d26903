//! A fresh database per test, on the backend chosen for the run: SQLite by default, PostgreSQL
//! when `MST_TEST_DB=postgres` (the test command runs the suite once with each).

use std::fmt;

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::postgres::Postgres;

/// The environment variable choosing the test database backend: `sqlite` (default) or `postgres`.
pub const TEST_DB_ENV: &str = "MST_TEST_DB";

/// The database backend tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in its own temporary directory.
    Sqlite,
    /// A fresh database in the process's shared PostgreSQL 15 cluster.
    Postgres,
}

impl Backend {
    /// The backend named by `MST_TEST_DB` (`sqlite` when unset or empty, `postgres`/`postgresql`),
    /// case-insensitive; any other value is an error.
    pub fn from_env() -> anyhow::Result<Backend> {
        match std::env::var(TEST_DB_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Backend::Sqlite),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{TEST_DB_ENV} is not valid UTF-8"),
            Ok(value) => Self::parse(&value),
        }
    }

    fn parse(value: &str) -> anyhow::Result<Backend> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => bail!("{TEST_DB_ENV}={other:?}: expected `sqlite` or `postgres`"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A database of its own for one test. Keep it alive as long as the database is used: a SQLite
/// file is deleted with it (a PostgreSQL database goes with the cluster at process exit).
pub struct TestDb {
    url: String,
    backend: Backend,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// A fresh, empty database on the backend chosen by `MST_TEST_DB`.
    pub async fn new() -> anyhow::Result<TestDb> {
        Self::with_backend(Backend::from_env()?).await
    }

    /// A fresh, empty database on `backend`, whatever `MST_TEST_DB` says.
    pub async fn with_backend(backend: Backend) -> anyhow::Result<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("mst-sqlite-")
                    .tempdir()
                    .context("creating the SQLite temporary directory")?;
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Ok(TestDb {
                    url,
                    backend,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => Ok(TestDb {
                url: Postgres::shared().await?.create_database().await?,
                backend,
                _dir: None,
            }),
        }
    }

    /// The database URL, for sea-orm's `Database::connect`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend this database lives on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_parsed() {
        assert_eq!(Backend::parse("").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::parse("sqlite").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::parse("Postgres").unwrap(), Backend::Postgres);
        assert_eq!(Backend::parse("postgresql").unwrap(), Backend::Postgres);
        assert!(Backend::parse("mysql").is_err());
    }

    #[tokio::test]
    async fn a_sqlite_test_db_is_a_file_url_that_creates_the_file() {
        let db = TestDb::with_backend(Backend::Sqlite).await.unwrap();
        assert_eq!(db.backend(), Backend::Sqlite);
        assert!(db.url().starts_with("sqlite:///"), "{}", db.url());
        assert!(db.url().ends_with("/test.db?mode=rwc"), "{}", db.url());
        let conn = sea_orm::Database::connect(db.url()).await.unwrap();
        sea_orm::ConnectionTrait::execute_unprepared(&conn, "CREATE TABLE t (id INTEGER)")
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}
