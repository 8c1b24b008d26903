//! Instructeur tools: the annotations privées (definitions per procedure, values per dossier,
//! each versioned) and the avis externes (an expert's opinion asked on a dossier, with its
//! answer and the key of its optional file in the object store).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum AnnotationDefinitions {
    Table,
    ProcedureId,
    Version,
    Definitions,
    UpdatedByEmail,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AnnotationSets {
    Table,
    DossierNumber,
    Version,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AnnotationValues {
    Table,
    DossierNumber,
    AnnotationId,
    Value,
    UpdatedByEmail,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Avis {
    Table,
    Id,
    DossierNumber,
    ProcedureId,
    ExpertEmail,
    Question,
    Confidential,
    State,
    RequestedByEmail,
    RequestId,
    RequestedAt,
    Answer,
    AnsweredAt,
    RevokedAt,
    FileKey,
    FileName,
    FileContentType,
    FileSizeBytes,
    FileSha256,
    Version,
}

#[derive(DeriveIden)]
enum Dossiers {
    Table,
    Number,
}

/// Creates the annotation and avis tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_avis"
    }
}

async fn index(
    m: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    cols: &[&str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut idx = Index::create();
    idx.if_not_exists().name(name).table(table);
    for c in cols {
        idx.col(Alias::new(*c));
    }
    if unique {
        idx.unique();
    }
    m.create_index(idx.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One row per procedure: the whole ordered list as JSON, replaced at each version (the
        // list is small and always read and written whole).
        m.create_table(
            Table::create()
                .table(AnnotationDefinitions::Table)
                .if_not_exists()
                .col(string_len(AnnotationDefinitions::ProcedureId, 64).primary_key())
                .col(big_integer(AnnotationDefinitions::Version))
                .col(text(AnnotationDefinitions::Definitions))
                .col(string_len(AnnotationDefinitions::UpdatedByEmail, 254))
                .col(timestamp_with_time_zone(AnnotationDefinitions::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AnnotationSets::Table)
                .if_not_exists()
                .col(big_integer(AnnotationSets::DossierNumber).primary_key())
                .col(big_integer(AnnotationSets::Version))
                .col(timestamp_with_time_zone(AnnotationSets::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(AnnotationSets::Table, AnnotationSets::DossierNumber)
                        .to(Dossiers::Table, Dossiers::Number),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AnnotationValues::Table)
                .if_not_exists()
                .col(big_integer(AnnotationValues::DossierNumber))
                .col(string_len(AnnotationValues::AnnotationId, 64))
                .col(text(AnnotationValues::Value))
                .col(string_len(AnnotationValues::UpdatedByEmail, 254))
                .col(timestamp_with_time_zone(AnnotationValues::UpdatedAt))
                .primary_key(
                    Index::create()
                        .col(AnnotationValues::DossierNumber)
                        .col(AnnotationValues::AnnotationId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(AnnotationValues::Table, AnnotationValues::DossierNumber)
                        .to(Dossiers::Table, Dossiers::Number),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Avis::Table)
                .if_not_exists()
                .col(string_len(Avis::Id, 64).primary_key())
                .col(big_integer(Avis::DossierNumber))
                .col(string_len(Avis::ProcedureId, 64))
                .col(string_len(Avis::ExpertEmail, 254))
                .col(text(Avis::Question))
                .col(boolean(Avis::Confidential))
                .col(string_len(Avis::State, 16))
                .col(string_len(Avis::RequestedByEmail, 254))
                .col(string_len(Avis::RequestId, 64))
                .col(timestamp_with_time_zone(Avis::RequestedAt))
                .col(text_null(Avis::Answer))
                .col(timestamp_with_time_zone_null(Avis::AnsweredAt))
                .col(timestamp_with_time_zone_null(Avis::RevokedAt))
                .col(string_len_null(Avis::FileKey, 200))
                .col(string_len_null(Avis::FileName, 255))
                .col(string_len_null(Avis::FileContentType, 128))
                .col(big_integer_null(Avis::FileSizeBytes))
                .col(string_len_null(Avis::FileSha256, 64))
                .col(big_integer(Avis::Version))
                .foreign_key(
                    ForeignKey::create()
                        .from(Avis::Table, Avis::DossierNumber)
                        .to(Dossiers::Table, Dossiers::Number),
                )
                .to_owned(),
        )
        .await?;
        // ListAvis: a dossier's avis, oldest first.
        index(
            m,
            "avis_dossier",
            Avis::Table,
            &["dossier_number", "id"],
            false,
        )
        .await?;
        // ListMyAvisRequests: the expert's inbox, newest first (ids are UUID v7).
        index(
            m,
            "avis_expert",
            Avis::Table,
            &["expert_email", "id"],
            false,
        )
        .await?;
        // RequestAvis idempotency, per requesting instructeur.
        index(
            m,
            "avis_request_id",
            Avis::Table,
            &["requested_by_email", "request_id"],
            true,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Avis::Table.into_iden(),
            AnnotationValues::Table.into_iden(),
            AnnotationSets::Table.into_iden(),
            AnnotationDefinitions::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
