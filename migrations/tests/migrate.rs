//! Every service's migrations apply, roll back and apply again on the database chosen by
//! `MST_TEST_DB` (SQLite or PostgreSQL).

use mst_migrations::{Command, SERVICES};
use mst_testkit::TestDb;
use sea_orm_migration::sea_orm::Database;

#[tokio::test]
async fn every_migrator_goes_up_down_and_up_again() {
    for service in SERVICES {
        let test_db = TestDb::new().await.unwrap();
        let db = Database::connect(test_db.url()).await.unwrap();
        mst_migrations::run(service, &db, Command::Up)
            .await
            .unwrap_or_else(|e| panic!("{service} up: {e}"));
        // Up again is a no-op.
        mst_migrations::run(service, &db, Command::Up)
            .await
            .unwrap();
        // Roll back every migration, one at a time, then re-apply them all.
        for _ in 0..8 {
            mst_migrations::run(service, &db, Command::Down)
                .await
                .unwrap_or_else(|e| panic!("{service} down: {e}"));
        }
        mst_migrations::run(service, &db, Command::Up)
            .await
            .unwrap_or_else(|e| panic!("{service} up again: {e}"));
    }
}

#[tokio::test]
async fn an_unknown_service_is_an_error() {
    let test_db = TestDb::new().await.unwrap();
    let db = Database::connect(test_db.url()).await.unwrap();
    let err = mst_migrations::run("billing", &db, Command::Up)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown service"));
}
