//! When a freeze hold (invariant I1) was taken: `dossiers.frozen_at`. A hold whose transition
//! never committed (the instruction service stopped between freezing and committing) is released
//! by forms once it is older than its lease and instruction confirms that no newer status was
//! committed (`mst_forms::freeze`). Holds taken before this step have no time and count as old.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Dossiers {
    Table,
    FrozenAt,
}

/// Adds `dossiers.frozen_at`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_freeze_lease"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Dossiers::Table)
                .add_column(timestamp_with_time_zone_null(Dossiers::FrozenAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Dossiers::Table)
                .drop_column(Dossiers::FrozenAt)
                .to_owned(),
        )
        .await
    }
}
