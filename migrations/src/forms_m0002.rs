//! The forms service's tables: procedures and their revisions, dossiers (content, headline,
//! status mirror, freeze), content history, invitations, and attached files.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Procedures {
    Table,
    Id,
    Title,
    Description,
    Kind,
    EstimatedFillingSecs,
    ClosingAt,
    Notice,
    PublishedRevisionId,
    DraftRevisionId,
    State,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Revisions {
    Table,
    Id,
    ProcedureId,
    Number,
    State,
    Definition,
    Version,
    CreatedAt,
    PublishedAt,
}

#[derive(DeriveIden)]
enum Dossiers {
    Table,
    Number,
    ProcedureId,
    RevisionId,
    OwnerEmail,
    Status,
    StatusVersion,
    Version,
    Answers,
    Title,
    StructureName,
    Siret,
    RegionCode,
    DepartementCode,
    Cpam,
    FrozenBy,
    CorrectionPending,
    DuplicatedFrom,
    CreateRequestId,
    CreatedAt,
    UpdatedAt,
    DepositedAt,
}

#[derive(DeriveIden)]
enum ChampHistory {
    Table,
    Id,
    DossierNumber,
    Version,
    At,
    ActorEmail,
    ActorRole,
    FieldPath,
    TopFieldId,
    Kind,
    OldValue,
    NewValue,
}

#[derive(DeriveIden)]
enum Invitations {
    Table,
    Id,
    DossierNumber,
    InviteeEmail,
    InvitedBy,
    Message,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Files {
    Table,
    Id,
    DossierNumber,
    FieldPath,
    Name,
    ContentType,
    Size,
    Sha256,
    StorageKey,
    UploadedBy,
    CreatedAt,
}

/// Creates the forms tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_forms"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Procedures::Table)
                .if_not_exists()
                .col(string_len(Procedures::Id, 64).primary_key())
                .col(string_len(Procedures::Title, 500))
                .col(text(Procedures::Description))
                .col(string_len(Procedures::Kind, 16))
                .col(big_integer(Procedures::EstimatedFillingSecs))
                .col(timestamp_with_time_zone_null(Procedures::ClosingAt))
                .col(text_null(Procedures::Notice))
                .col(string_len_null(Procedures::PublishedRevisionId, 64))
                .col(string_len(Procedures::DraftRevisionId, 64))
                .col(string_len(Procedures::State, 16))
                .col(big_integer(Procedures::Version))
                .col(timestamp_with_time_zone(Procedures::CreatedAt))
                .col(timestamp_with_time_zone(Procedures::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Revisions::Table)
                .if_not_exists()
                .col(string_len(Revisions::Id, 64).primary_key())
                .col(string_len(Revisions::ProcedureId, 64))
                .col(integer(Revisions::Number))
                .col(string_len(Revisions::State, 16))
                .col(text(Revisions::Definition))
                .col(big_integer(Revisions::Version))
                .col(timestamp_with_time_zone(Revisions::CreatedAt))
                .col(timestamp_with_time_zone_null(Revisions::PublishedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Revisions::Table, Revisions::ProcedureId)
                        .to(Procedures::Table, Procedures::Id),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .unique()
                .name("revisions_procedure_number")
                .table(Revisions::Table)
                .col(Revisions::ProcedureId)
                .col(Revisions::Number)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Dossiers::Table)
                .if_not_exists()
                .col(big_pk_auto(Dossiers::Number))
                .col(string_len(Dossiers::ProcedureId, 64))
                .col(string_len(Dossiers::RevisionId, 64))
                .col(string_len(Dossiers::OwnerEmail, 254))
                .col(string_len(Dossiers::Status, 16))
                .col(big_integer(Dossiers::StatusVersion))
                .col(big_integer(Dossiers::Version))
                .col(text(Dossiers::Answers))
                .col(string_len(Dossiers::Title, 500))
                .col(string_len(Dossiers::StructureName, 500))
                .col(string_len(Dossiers::Siret, 14))
                .col(string_len(Dossiers::RegionCode, 3))
                .col(string_len(Dossiers::DepartementCode, 3))
                .col(string_len(Dossiers::Cpam, 200))
                .col(string_len_null(Dossiers::FrozenBy, 64))
                .col(boolean(Dossiers::CorrectionPending))
                .col(big_integer_null(Dossiers::DuplicatedFrom))
                .col(string_len_null(Dossiers::CreateRequestId, 64).unique_key())
                .col(timestamp_with_time_zone(Dossiers::CreatedAt))
                .col(timestamp_with_time_zone(Dossiers::UpdatedAt))
                .col(timestamp_with_time_zone_null(Dossiers::DepositedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Dossiers::Table, Dossiers::RevisionId)
                        .to(Revisions::Table, Revisions::Id),
                )
                .to_owned(),
        )
        .await?;
        // "My dossiers", most recently updated first.
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("dossiers_owner_updated")
                .table(Dossiers::Table)
                .col(Dossiers::OwnerEmail)
                .col(Dossiers::UpdatedAt)
                .col(Dossiers::Number)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("dossiers_procedure_status")
                .table(Dossiers::Table)
                .col(Dossiers::ProcedureId)
                .col(Dossiers::Status)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ChampHistory::Table)
                .if_not_exists()
                .col(big_pk_auto(ChampHistory::Id))
                .col(big_integer(ChampHistory::DossierNumber))
                .col(big_integer(ChampHistory::Version))
                .col(timestamp_with_time_zone(ChampHistory::At))
                .col(string_len(ChampHistory::ActorEmail, 254))
                .col(string_len(ChampHistory::ActorRole, 16))
                .col(string_len(ChampHistory::FieldPath, 300))
                .col(string_len(ChampHistory::TopFieldId, 64))
                .col(string_len(ChampHistory::Kind, 16))
                .col(text_null(ChampHistory::OldValue))
                .col(text_null(ChampHistory::NewValue))
                .foreign_key(
                    ForeignKey::create()
                        .from(ChampHistory::Table, ChampHistory::DossierNumber)
                        .to(Dossiers::Table, Dossiers::Number)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("champ_history_dossier")
                .table(ChampHistory::Table)
                .col(ChampHistory::DossierNumber)
                .col(ChampHistory::Id)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Invitations::Table)
                .if_not_exists()
                .col(string_len(Invitations::Id, 64).primary_key())
                .col(big_integer(Invitations::DossierNumber))
                .col(string_len(Invitations::InviteeEmail, 254))
                .col(string_len(Invitations::InvitedBy, 254))
                .col(text(Invitations::Message))
                .col(timestamp_with_time_zone(Invitations::CreatedAt))
                .col(timestamp_with_time_zone_null(Invitations::RevokedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Invitations::Table, Invitations::DossierNumber)
                        .to(Dossiers::Table, Dossiers::Number)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("invitations_invitee")
                .table(Invitations::Table)
                .col(Invitations::InviteeEmail)
                .col(Invitations::DossierNumber)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("invitations_dossier")
                .table(Invitations::Table)
                .col(Invitations::DossierNumber)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Files::Table)
                .if_not_exists()
                .col(string_len(Files::Id, 64).primary_key())
                .col(big_integer(Files::DossierNumber))
                .col(string_len(Files::FieldPath, 300))
                .col(string_len(Files::Name, 255))
                .col(string_len(Files::ContentType, 255))
                .col(big_integer(Files::Size))
                .col(string_len(Files::Sha256, 64))
                .col(string_len(Files::StorageKey, 255))
                .col(string_len(Files::UploadedBy, 254))
                .col(timestamp_with_time_zone(Files::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Files::Table, Files::DossierNumber)
                        .to(Dossiers::Table, Dossiers::Number)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("files_dossier")
                .table(Files::Table)
                .col(Files::DossierNumber)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Files::Table.into_iden(),
            Invitations::Table.into_iden(),
            ChampHistory::Table.into_iden(),
            Dossiers::Table.into_iden(),
            Revisions::Table.into_iden(),
            Procedures::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
