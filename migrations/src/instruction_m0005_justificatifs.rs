//! Justificatifs of decisions: uploaded by an instructeur for one dossier, valid 24 hours, used
//! at most once by a decision (Accepter, Refuser, ClasserSansSuite).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Justificatifs {
    Table,
    UploadId,
    DossierNumber,
    UploadedBy,
    FileId,
    FileName,
    ContentType,
    Size,
    Sha256,
    StorageKey,
    CreatedAt,
    ExpiresAt,
    UsedBy,
}

/// Creates `justificatifs`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_justificatifs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Justificatifs::Table)
                .if_not_exists()
                .col(string_len(Justificatifs::UploadId, 64).primary_key())
                .col(big_integer(Justificatifs::DossierNumber))
                .col(string_len(Justificatifs::UploadedBy, 254))
                .col(string_len_uniq(Justificatifs::FileId, 64))
                .col(string_len(Justificatifs::FileName, 255))
                .col(string_len(Justificatifs::ContentType, 255))
                .col(big_integer(Justificatifs::Size))
                .col(string_len(Justificatifs::Sha256, 64))
                .col(string_len(Justificatifs::StorageKey, 255))
                .col(timestamp_with_time_zone(Justificatifs::CreatedAt))
                .col(timestamp_with_time_zone(Justificatifs::ExpiresAt))
                .col(string_len_null(Justificatifs::UsedBy, 64))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("justificatifs_dossier")
                .table(Justificatifs::Table)
                .col(Justificatifs::DossierNumber)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Justificatifs::Table).to_owned())
            .await
    }
}
