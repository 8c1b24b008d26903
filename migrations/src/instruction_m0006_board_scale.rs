//! The board at scale (1M dossiers): the per-instructeur « suivis » counter is maintained like
//! the other buckets instead of being counted from `follows` on every dashboard read
//! (`dashboard_suivis`, with `dashboard_suivis_members`: which open follows a dossier currently
//! contributes, so that the maintenance is idempotent), and the list gets the indexes its keyset
//! pages and free-text filter need: `(procedure_id, groupe_id, updated_at, number)` and
//! `(procedure_id, groupe_id, number)` for the default sorts, and on PostgreSQL trigram (GIN)
//! indexes on `lower(title)` and `lower(structure_name)` when the `pg_trgm` extension is available
//! (a `LIKE '%mot%'` then reads the index instead of the procedure's dossiers). Existing follows
//! are counted when the step runs.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveIden)]
enum DashboardSuivis {
    Table,
    Email,
    ProcedureId,
    GroupeId,
    N,
}

#[derive(DeriveIden)]
enum DashboardSuivisMembers {
    Table,
    DossierNumber,
    Email,
    ProcedureId,
    GroupeId,
}

#[derive(DeriveIden)]
enum Dossiers {
    Table,
    ProcedureId,
    GroupeId,
    UpdatedAt,
    Number,
}

/// Creates the suivis counters and the list indexes.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_board_scale"
    }
}

/// The open follows that count in « suivis »: of a deposited, undecided, non-archived dossier.
const COUNTED: &str = "FROM follows f JOIN dossiers d ON d.number = f.dossier_number \
     WHERE f.unfollowed_at IS NULL AND NOT d.archived AND NOT d.deleted \
     AND d.status IN ('en_construction', 'en_instruction')";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(DashboardSuivis::Table)
                .if_not_exists()
                .col(string_len(DashboardSuivis::Email, 254))
                .col(string_len(DashboardSuivis::ProcedureId, 64))
                // "" for dossiers routed to no groupe.
                .col(string_len(DashboardSuivis::GroupeId, 64))
                .col(big_integer(DashboardSuivis::N))
                .primary_key(
                    Index::create()
                        .col(DashboardSuivis::Email)
                        .col(DashboardSuivis::ProcedureId)
                        .col(DashboardSuivis::GroupeId),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(DashboardSuivisMembers::Table)
                .if_not_exists()
                .col(big_integer(DashboardSuivisMembers::DossierNumber))
                .col(string_len(DashboardSuivisMembers::Email, 254))
                .col(string_len(DashboardSuivisMembers::ProcedureId, 64))
                .col(string_len(DashboardSuivisMembers::GroupeId, 64))
                .primary_key(
                    Index::create()
                        .col(DashboardSuivisMembers::DossierNumber)
                        .col(DashboardSuivisMembers::Email),
                )
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        db.execute_unprepared(&format!(
            "INSERT INTO dashboard_suivis_members (dossier_number, email, procedure_id, groupe_id) \
             SELECT DISTINCT d.number, f.email, d.procedure_id, COALESCE(d.groupe_id, '') {COUNTED}"
        ))
        .await?;
        db.execute_unprepared(
            "INSERT INTO dashboard_suivis (email, procedure_id, groupe_id, n) \
             SELECT email, procedure_id, groupe_id, COUNT(*) FROM dashboard_suivis_members \
             GROUP BY email, procedure_id, groupe_id",
        )
        .await?;
        for (name, sort) in [
            ("dossiers_list_updated", Some(Dossiers::UpdatedAt)),
            ("dossiers_list_number", None),
        ] {
            let mut idx = Index::create();
            idx.if_not_exists()
                .name(name)
                .table(Dossiers::Table)
                .col(Dossiers::ProcedureId)
                .col(Dossiers::GroupeId);
            if let Some(sort) = sort {
                idx.col(sort);
            }
            m.create_index(idx.col(Dossiers::Number).to_owned()).await?;
        }
        if db.get_database_backend() == DatabaseBackend::Postgres && trigrams_available(db).await? {
            db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                .await?;
            for column in ["title", "structure_name"] {
                db.execute_unprepared(&format!(
                    "CREATE INDEX IF NOT EXISTS dossiers_{column}_trgm ON dossiers \
                     USING gin (lower({column}) gin_trgm_ops)"
                ))
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for index in [
            "dossiers_list_updated",
            "dossiers_list_number",
            "dossiers_title_trgm",
            "dossiers_structure_name_trgm",
        ] {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {index}"))
                .await?;
        }
        for table in ["dashboard_suivis_members", "dashboard_suivis"] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}

/// Whether `pg_trgm` is installed or installable here (contrib present, and the extension is
/// trusted since PostgreSQL 13: a database owner may create it).
async fn trigrams_available<C: ConnectionTrait>(db: &C) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT COUNT(*) FROM pg_available_extensions WHERE name = 'pg_trgm'",
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get_by_index::<i64>(0)? > 0,
        None => false,
    })
}
