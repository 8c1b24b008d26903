//! The instructeur dashboard and lists: `dashboard_counters` (à suivre / traités / tous /
//! archivés per procedure × groupe, maintained in the transaction of every change so that reading
//! them never scans dossiers), `dashboard_members` (what each dossier currently contributes to
//! them, which makes the maintenance idempotent), and `column_preferences` (the list columns an
//! instructeur chose for a procedure). Existing dossiers are counted when the step runs.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum DashboardCounters {
    Table,
    ProcedureId,
    GroupeId,
    Bucket,
    N,
}

#[derive(DeriveIden)]
enum DashboardMembers {
    Table,
    DossierNumber,
    ProcedureId,
    GroupeId,
    Mask,
}

#[derive(DeriveIden)]
enum ColumnPreferences {
    Table,
    Email,
    ProcedureId,
    Columns,
    UpdatedAt,
}

/// Creates the board tables and counts the existing dossiers.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_board"
    }
}

/// Conditions of the non-archived buckets (an archived dossier counts in `archives` only). The
/// bits of `dashboard_members.mask` are those of `mst_instruction::store::board::Buckets`:
/// à suivre 1, traités 2, tous 4, archivés 8.
const BACKFILL: &[(&str, &str)] = &[
    (
        "a_suivre",
        "d.status IN ('en_construction', 'en_instruction') AND NOT EXISTS \
         (SELECT 1 FROM follows f WHERE f.dossier_number = d.number AND f.unfollowed_at IS NULL)",
    ),
    ("traites", "d.status IN ('accepte', 'refuse', 'sans_suite')"),
    ("tous", "1 = 1"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(DashboardCounters::Table)
                .if_not_exists()
                .col(string_len(DashboardCounters::ProcedureId, 64))
                // "" for dossiers routed to no groupe.
                .col(string_len(DashboardCounters::GroupeId, 64))
                .col(string_len(DashboardCounters::Bucket, 16))
                .col(big_integer(DashboardCounters::N))
                .primary_key(
                    Index::create()
                        .col(DashboardCounters::ProcedureId)
                        .col(DashboardCounters::GroupeId)
                        .col(DashboardCounters::Bucket),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(DashboardMembers::Table)
                .if_not_exists()
                .col(big_integer(DashboardMembers::DossierNumber).primary_key())
                .col(string_len(DashboardMembers::ProcedureId, 64))
                .col(string_len(DashboardMembers::GroupeId, 64))
                .col(integer(DashboardMembers::Mask))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ColumnPreferences::Table)
                .if_not_exists()
                .col(string_len(ColumnPreferences::Email, 254))
                .col(string_len(ColumnPreferences::ProcedureId, 64))
                .col(text(ColumnPreferences::Columns))
                .col(timestamp_with_time_zone(ColumnPreferences::UpdatedAt))
                .primary_key(
                    Index::create()
                        .col(ColumnPreferences::Email)
                        .col(ColumnPreferences::ProcedureId),
                )
                .to_owned(),
        )
        .await?;
        // Count what exists already (a deployment upgrading with dossiers in place).
        let db = m.get_connection();
        let visible = "d.status <> 'brouillon' AND NOT d.deleted";
        db.execute_unprepared(&format!(
            "INSERT INTO dashboard_members (dossier_number, procedure_id, groupe_id, mask) \
             SELECT d.number, d.procedure_id, COALESCE(d.groupe_id, ''), \
             CASE WHEN d.archived THEN 8 ELSE 4 \
               + CASE WHEN d.status IN ('accepte', 'refuse', 'sans_suite') THEN 2 ELSE 0 END \
               + CASE WHEN {a_suivre} THEN 1 ELSE 0 END END \
             FROM dossiers d WHERE {visible}",
            a_suivre = BACKFILL[0].1,
        ))
        .await?;
        for (bucket, condition) in BACKFILL {
            db.execute_unprepared(&format!(
                "INSERT INTO dashboard_counters (procedure_id, groupe_id, bucket, n) \
                 SELECT d.procedure_id, COALESCE(d.groupe_id, ''), '{bucket}', COUNT(*) \
                 FROM dossiers d WHERE {visible} AND NOT d.archived AND {condition} \
                 GROUP BY d.procedure_id, COALESCE(d.groupe_id, '')"
            ))
            .await?;
        }
        db.execute_unprepared(&format!(
            "INSERT INTO dashboard_counters (procedure_id, groupe_id, bucket, n) \
             SELECT d.procedure_id, COALESCE(d.groupe_id, ''), 'archives', COUNT(*) \
             FROM dossiers d WHERE {visible} AND d.archived \
             GROUP BY d.procedure_id, COALESCE(d.groupe_id, '')"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ColumnPreferences::Table.into_iden(),
            DashboardMembers::Table.into_iden(),
            DashboardCounters::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
