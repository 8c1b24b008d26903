//! Database migrations of mst-dossiers: one [`MigratorTrait`] per service.
//!
//! Each service owns its database (a SQLite file in the embedded default, its own PostgreSQL
//! database in production) and its migrator. Every migrator starts with the plumbing tables of
//! the event bus (`outbox`, `processed_events`), then the service's own tables. The same
//! migrations run on SQLite and PostgreSQL. Run them with the `mst-migrate` CLI, or let a service
//! apply them at start (`MST_MIGRATE_ON_START=true`, the embedded default).

#![forbid(unsafe_code)]

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

mod forms_m0002;
mod forms_m0003_freeze_lease;
mod instruction_m0002;
mod instruction_m0003_board;
mod instruction_m0004_avis;
mod instruction_m0005_justificatifs;
mod instruction_m0006_board_scale;
mod messagerie_m0002;
mod messagerie_m0003_mail_trace;
mod messagerie_m0004_notice_requests;
mod oscars_m0002;
mod oscars_m0003_dossier_versions;
mod plumbing;

/// The services that own a database.
pub const SERVICES: [&str; 4] = ["forms", "instruction", "messagerie", "oscars"];

/// Migrations of the forms service.
pub mod forms {
    use super::*;

    /// The forms service's migrator.
    #[derive(Debug)]
    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![
                Box::new(plumbing::Migration),
                Box::new(forms_m0002::Migration),
                Box::new(forms_m0003_freeze_lease::Migration),
            ]
        }
    }
}

/// Migrations of the instruction service.
pub mod instruction {
    use super::*;

    /// The instruction service's migrator.
    #[derive(Debug)]
    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![
                Box::new(plumbing::Migration),
                Box::new(instruction_m0002::Migration),
                Box::new(instruction_m0003_board::Migration),
                Box::new(instruction_m0004_avis::Migration),
                Box::new(instruction_m0005_justificatifs::Migration),
                Box::new(instruction_m0006_board_scale::Migration),
            ]
        }
    }
}

/// Migrations of the messagerie service.
pub mod messagerie {
    use super::*;

    /// The messagerie service's migrator.
    #[derive(Debug)]
    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![
                Box::new(plumbing::Migration),
                Box::new(messagerie_m0002::Migration),
                Box::new(messagerie_m0003_mail_trace::Migration),
                Box::new(messagerie_m0004_notice_requests::Migration),
            ]
        }
    }
}

/// Migrations of the oscars service.
pub mod oscars {
    use super::*;

    /// The oscars service's migrator.
    #[derive(Debug)]
    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![
                Box::new(plumbing::Migration),
                Box::new(oscars_m0002::Migration),
                Box::new(oscars_m0003_dossier_versions::Migration),
            ]
        }
    }
}

/// A migration command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Apply every pending migration.
    Up,
    /// Roll back the last migration.
    Down,
    /// Print applied and pending migrations.
    Status,
}

async fn run_one<M: MigratorTrait>(
    db: &sea_orm::DatabaseConnection,
    cmd: Command,
) -> Result<(), DbErr> {
    match cmd {
        Command::Up => M::up(db, None).await,
        Command::Down => M::down(db, Some(1)).await,
        Command::Status => M::status(db).await,
    }
}

/// Runs `cmd` with the migrator of `service` on `db`.
pub async fn run(
    service: &str,
    db: &sea_orm::DatabaseConnection,
    cmd: Command,
) -> Result<(), DbErr> {
    match service {
        "forms" => run_one::<forms::Migrator>(db, cmd).await,
        "instruction" => run_one::<instruction::Migrator>(db, cmd).await,
        "messagerie" => run_one::<messagerie::Migrator>(db, cmd).await,
        "oscars" => run_one::<oscars::Migrator>(db, cmd).await,
        other => Err(DbErr::Custom(format!(
            "unknown service {other:?} (expected one of {})",
            SERVICES.join(", ")
        ))),
    }
}
