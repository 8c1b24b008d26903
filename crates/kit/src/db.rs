//! Database connection: one pool per service, SQLite tuned for a service's write pattern.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};

use crate::config::DatabaseSettings;

pub use mst_bus::db::begin_write;

/// Connects to the service's database. On SQLite, switches the file to WAL (readers never wait
/// for the writer; commits are durable at `synchronous=FULL`) and enables foreign keys; the
/// directory of the file is created if missing.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    if let Some(path) = sqlite_path(&settings.url)
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        // Every pooled connection, not just the first: WAL, foreign keys, and a busy timeout so a
        // writer waits for another instead of failing with SQLITE_BUSY.
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
        });
    Ok(Database::connect(options).await?)
}

/// The file path of a `sqlite:` URL (`None` for in-memory or other backends).
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait as _, DatabaseBackend};

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(
            sqlite_path("sqlite://data/forms.db?mode=rwc"),
            Some("data/forms.db")
        );
        assert_eq!(sqlite_path("sqlite:///tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }

    #[tokio::test]
    async fn a_sqlite_database_is_created_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/x.db?mode=rwc", dir.path().display());
        let db = connect(&DatabaseSettings {
            url,
            max_connections: 2,
            migrate_on_start: false,
        })
        .await
        .unwrap();
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                DatabaseBackend::Sqlite,
                "PRAGMA journal_mode",
            ))
            .await
            .unwrap()
            .unwrap();
        let mode: String = row.try_get_by_index(0).unwrap();
        assert_eq!(mode, "wal");
    }
}
