//! The instruction service's tables: procedures (projection), groupes instructeurs and their
//! routing keys, the roster, dossiers with their status, traitements (status history), follows
//! (with history), invitees (projection), and deposit idempotency keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Procedures {
    Table,
    Id,
    Title,
    Kind,
    ClosingAt,
    Version,
}

#[derive(DeriveIden)]
enum Groupes {
    Table,
    Id,
    Label,
    IsDefault,
    Version,
    CreatedAt,
}

#[derive(DeriveIden)]
enum GroupeRoutes {
    Table,
    GroupeId,
    Kind,
    Value,
}

#[derive(DeriveIden)]
enum Instructeurs {
    Table,
    Email,
    Name,
    AddedAt,
}

#[derive(DeriveIden)]
enum GroupeInstructeurs {
    Table,
    GroupeId,
    Email,
    AddedAt,
}

#[derive(DeriveIden)]
enum Dossiers {
    Table,
    Number,
    ProcedureId,
    RevisionId,
    OwnerEmail,
    Status,
    Version,
    Archived,
    CorrectionPending,
    GroupeId,
    Title,
    StructureName,
    Siret,
    RegionCode,
    DepartementCode,
    Cpam,
    ContentVersion,
    CreatedAt,
    DepositedAt,
    EnInstructionAt,
    DecidedAt,
    ArchivedAt,
    UpdatedAt,
    Deleted,
}

#[derive(DeriveIden)]
enum Traitements {
    Table,
    Id,
    DossierNumber,
    FromStatus,
    ToStatus,
    Transition,
    ActorEmail,
    ActorRole,
    Motivation,
    Justificatif,
    CorrectionReason,
    StatusVersion,
    ContentVersion,
    At,
}

#[derive(DeriveIden)]
enum Follows {
    Table,
    Id,
    DossierNumber,
    Email,
    FollowedAt,
    UnfollowedAt,
}

#[derive(DeriveIden)]
enum DossierInvitees {
    Table,
    DossierNumber,
    Email,
    InvitationId,
    Since,
    Until,
}

#[derive(DeriveIden)]
enum Deposits {
    Table,
    DepositId,
    DossierNumber,
    Response,
    At,
}

/// Creates the instruction tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_instruction"
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
        m.create_table(
            Table::create()
                .table(Procedures::Table)
                .if_not_exists()
                .col(string_len(Procedures::Id, 64).primary_key())
                .col(string_len(Procedures::Title, 500))
                .col(string_len(Procedures::Kind, 16))
                .col(timestamp_with_time_zone_null(Procedures::ClosingAt))
                .col(big_integer(Procedures::Version))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Groupes::Table)
                .if_not_exists()
                .col(string_len(Groupes::Id, 64).primary_key())
                .col(string_len_uniq(Groupes::Label, 200))
                .col(boolean(Groupes::IsDefault))
                .col(big_integer(Groupes::Version))
                .col(timestamp_with_time_zone(Groupes::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(GroupeRoutes::Table)
                .if_not_exists()
                .col(string_len(GroupeRoutes::GroupeId, 64))
                .col(string_len(GroupeRoutes::Kind, 16))
                .col(string_len(GroupeRoutes::Value, 200))
                .primary_key(
                    Index::create()
                        .col(GroupeRoutes::Kind)
                        .col(GroupeRoutes::Value)
                        .col(GroupeRoutes::GroupeId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(GroupeRoutes::Table, GroupeRoutes::GroupeId)
                        .to(Groupes::Table, Groupes::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Instructeurs::Table)
                .if_not_exists()
                .col(string_len(Instructeurs::Email, 254).primary_key())
                .col(string_len(Instructeurs::Name, 200))
                .col(timestamp_with_time_zone(Instructeurs::AddedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(GroupeInstructeurs::Table)
                .if_not_exists()
                .col(string_len(GroupeInstructeurs::GroupeId, 64))
                .col(string_len(GroupeInstructeurs::Email, 254))
                .col(timestamp_with_time_zone(GroupeInstructeurs::AddedAt))
                .primary_key(
                    Index::create()
                        .col(GroupeInstructeurs::GroupeId)
                        .col(GroupeInstructeurs::Email),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(GroupeInstructeurs::Table, GroupeInstructeurs::GroupeId)
                        .to(Groupes::Table, Groupes::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(GroupeInstructeurs::Table, GroupeInstructeurs::Email)
                        .to(Instructeurs::Table, Instructeurs::Email)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "groupe_instructeurs_email",
            GroupeInstructeurs::Table,
            &["email"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Dossiers::Table)
                .if_not_exists()
                .col(big_integer(Dossiers::Number).primary_key())
                .col(string_len(Dossiers::ProcedureId, 64))
                .col(string_len(Dossiers::RevisionId, 64))
                .col(string_len(Dossiers::OwnerEmail, 254))
                .col(string_len(Dossiers::Status, 16))
                .col(big_integer(Dossiers::Version))
                .col(boolean(Dossiers::Archived))
                .col(boolean(Dossiers::CorrectionPending))
                .col(string_len_null(Dossiers::GroupeId, 64))
                .col(string_len(Dossiers::Title, 500))
                .col(string_len(Dossiers::StructureName, 500))
                .col(string_len(Dossiers::Siret, 14))
                .col(string_len(Dossiers::RegionCode, 3))
                .col(string_len(Dossiers::DepartementCode, 3))
                .col(string_len(Dossiers::Cpam, 200))
                .col(big_integer(Dossiers::ContentVersion))
                .col(timestamp_with_time_zone(Dossiers::CreatedAt))
                .col(timestamp_with_time_zone_null(Dossiers::DepositedAt))
                .col(timestamp_with_time_zone_null(Dossiers::EnInstructionAt))
                .col(timestamp_with_time_zone_null(Dossiers::DecidedAt))
                .col(timestamp_with_time_zone_null(Dossiers::ArchivedAt))
                .col(timestamp_with_time_zone(Dossiers::UpdatedAt))
                .col(boolean(Dossiers::Deleted))
                .to_owned(),
        )
        .await?;
        // Dashboard and lists: per procedure and groupe, by status and archive flag.
        index(
            m,
            "dossiers_board",
            Dossiers::Table,
            &["procedure_id", "groupe_id", "status", "archived"],
            false,
        )
        .await?;
        index(
            m,
            "dossiers_groupe_deposited",
            Dossiers::Table,
            &["groupe_id", "deposited_at", "number"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Traitements::Table)
                .if_not_exists()
                .col(string_len(Traitements::Id, 64).primary_key())
                .col(big_integer(Traitements::DossierNumber))
                .col(string_len(Traitements::FromStatus, 16))
                .col(string_len(Traitements::ToStatus, 16))
                .col(string_len(Traitements::Transition, 32))
                .col(string_len(Traitements::ActorEmail, 254))
                .col(string_len(Traitements::ActorRole, 16))
                .col(text(Traitements::Motivation))
                .col(text_null(Traitements::Justificatif))
                .col(string_len_null(Traitements::CorrectionReason, 16))
                .col(big_integer(Traitements::StatusVersion))
                .col(big_integer(Traitements::ContentVersion))
                .col(timestamp_with_time_zone(Traitements::At))
                .foreign_key(
                    ForeignKey::create()
                        .from(Traitements::Table, Traitements::DossierNumber)
                        .to(Dossiers::Table, Dossiers::Number),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "traitements_dossier",
            Traitements::Table,
            &["dossier_number", "status_version"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Follows::Table)
                .if_not_exists()
                .col(big_pk_auto(Follows::Id))
                .col(big_integer(Follows::DossierNumber))
                .col(string_len(Follows::Email, 254))
                .col(timestamp_with_time_zone(Follows::FollowedAt))
                .col(timestamp_with_time_zone_null(Follows::UnfollowedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Follows::Table, Follows::DossierNumber)
                        .to(Dossiers::Table, Dossiers::Number),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "follows_dossier",
            Follows::Table,
            &["dossier_number", "email"],
            false,
        )
        .await?;
        index(
            m,
            "follows_email",
            Follows::Table,
            &["email", "dossier_number"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(DossierInvitees::Table)
                .if_not_exists()
                .col(big_integer(DossierInvitees::DossierNumber))
                .col(string_len(DossierInvitees::Email, 254))
                .col(string_len(DossierInvitees::InvitationId, 64))
                .col(timestamp_with_time_zone(DossierInvitees::Since))
                .col(timestamp_with_time_zone_null(DossierInvitees::Until))
                .primary_key(
                    Index::create()
                        .col(DossierInvitees::DossierNumber)
                        .col(DossierInvitees::InvitationId),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Deposits::Table)
                .if_not_exists()
                .col(string_len(Deposits::DepositId, 64).primary_key())
                .col(big_integer(Deposits::DossierNumber))
                .col(text(Deposits::Response))
                .col(timestamp_with_time_zone(Deposits::At))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Deposits::Table.into_iden(),
            DossierInvitees::Table.into_iden(),
            Follows::Table.into_iden(),
            Traitements::Table.into_iden(),
            Dossiers::Table.into_iden(),
            GroupeInstructeurs::Table.into_iden(),
            Instructeurs::Table.into_iden(),
            GroupeRoutes::Table.into_iden(),
            Groupes::Table.into_iden(),
            Procedures::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
