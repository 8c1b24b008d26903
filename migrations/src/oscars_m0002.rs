//! The oscars service's tables: fiches (one per accepted dossier, unique on the dossier number),
//! the promoteur base, recorded corrections, and the ambassadeurs of each région.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum OscarsFiches {
    Table,
    Id,
    DossierNumber,
    Kind,
    Year,
    RegionCode,
    DepartementCode,
    CommuneCode,
    Status,
    Visible,
    PromoteurId,
    ProjetFicheId,
    PreviousFicheId,
    LinkedProjetDossier,
    TypeAction,
    PublicsKey,
    SearchText,
    Siret,
    Version,
    DossierStatusVersion,
    Content,
    Original,
    ImportedAt,
    UpdatedAt,
    PublishedAt,
}

#[derive(DeriveIden)]
enum OscarsPromoteurs {
    Table,
    Id,
    Siret,
    Siren,
    RaisonSociale,
    TypeStructure,
    Adresse,
    CommuneCode,
    Telephone,
    Email,
    SiteWeb,
    Aliases,
    MergedIntoId,
    RequestId,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OscarsCorrections {
    Table,
    Id,
    FicheId,
    Field,
    OriginalValue,
    OldValue,
    NewValue,
    ActorEmail,
    ActorRole,
    At,
    FicheVersion,
}

#[derive(DeriveIden)]
enum OscarsRegions {
    Table,
    RegionCode,
    Ambassadeurs,
    Version,
    UpdatedAt,
}

/// Creates the oscars tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "oscars_m0002"
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
        // The fiche as published (encoded mst.events.v1.Fiche in `content`, the import's version in
        // `original`), with the columns the work queue and the public API filter on.
        m.create_table(
            Table::create()
                .table(OscarsFiches::Table)
                .if_not_exists()
                .col(string_len(OscarsFiches::Id, 36).primary_key())
                .col(big_integer(OscarsFiches::DossierNumber))
                .col(string_len(OscarsFiches::Kind, 8))
                .col(integer(OscarsFiches::Year))
                .col(string_len(OscarsFiches::RegionCode, 3))
                .col(string_len(OscarsFiches::DepartementCode, 3))
                .col(string_len(OscarsFiches::CommuneCode, 5))
                .col(string_len(OscarsFiches::Status, 16))
                .col(boolean(OscarsFiches::Visible))
                .col(string_len_null(OscarsFiches::PromoteurId, 36))
                .col(string_len_null(OscarsFiches::ProjetFicheId, 36))
                .col(string_len_null(OscarsFiches::PreviousFicheId, 36))
                .col(big_integer_null(OscarsFiches::LinkedProjetDossier))
                .col(text(OscarsFiches::TypeAction))
                .col(text(OscarsFiches::PublicsKey))
                .col(text(OscarsFiches::SearchText))
                .col(string_len(OscarsFiches::Siret, 14))
                .col(big_integer(OscarsFiches::Version))
                .col(big_integer(OscarsFiches::DossierStatusVersion))
                .col(blob(OscarsFiches::Content))
                .col(blob(OscarsFiches::Original))
                .col(timestamp_with_time_zone(OscarsFiches::ImportedAt))
                .col(timestamp_with_time_zone(OscarsFiches::UpdatedAt))
                .col(timestamp_with_time_zone_null(OscarsFiches::PublishedAt))
                .to_owned(),
        )
        .await?;
        // Exactly one fiche per dossier (invariant I3).
        index(
            m,
            "oscars_fiches_dossier",
            OscarsFiches::Table,
            &["dossier_number"],
            true,
        )
        .await?;
        index(
            m,
            "oscars_fiches_queue",
            OscarsFiches::Table,
            &["region_code", "status", "imported_at"],
            false,
        )
        .await?;
        index(
            m,
            "oscars_fiches_public",
            OscarsFiches::Table,
            &["visible", "region_code", "departement_code"],
            false,
        )
        .await?;
        index(
            m,
            "oscars_fiches_promoteur",
            OscarsFiches::Table,
            &["promoteur_id"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OscarsPromoteurs::Table)
                .if_not_exists()
                .col(string_len(OscarsPromoteurs::Id, 36).primary_key())
                .col(string_len_null(OscarsPromoteurs::Siret, 14))
                .col(string_len(OscarsPromoteurs::Siren, 9))
                .col(text(OscarsPromoteurs::RaisonSociale))
                .col(text(OscarsPromoteurs::TypeStructure))
                .col(text(OscarsPromoteurs::Adresse))
                .col(string_len(OscarsPromoteurs::CommuneCode, 5))
                .col(text(OscarsPromoteurs::Telephone))
                .col(text(OscarsPromoteurs::Email))
                .col(text(OscarsPromoteurs::SiteWeb))
                .col(text(OscarsPromoteurs::Aliases))
                .col(string_len_null(OscarsPromoteurs::MergedIntoId, 36))
                .col(string_len_null(OscarsPromoteurs::RequestId, 64))
                .col(big_integer(OscarsPromoteurs::Version))
                .col(timestamp_with_time_zone(OscarsPromoteurs::CreatedAt))
                .col(timestamp_with_time_zone(OscarsPromoteurs::UpdatedAt))
                .to_owned(),
        )
        .await?;
        // A SIRET names one promoteur (NULLs are distinct on both backends).
        index(
            m,
            "oscars_promoteurs_siret",
            OscarsPromoteurs::Table,
            &["siret"],
            true,
        )
        .await?;
        index(
            m,
            "oscars_promoteurs_request",
            OscarsPromoteurs::Table,
            &["request_id"],
            true,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OscarsCorrections::Table)
                .if_not_exists()
                .col(string_len(OscarsCorrections::Id, 36).primary_key())
                .col(string_len(OscarsCorrections::FicheId, 36))
                .col(string_len(OscarsCorrections::Field, 64))
                .col(text_null(OscarsCorrections::OriginalValue))
                .col(text_null(OscarsCorrections::OldValue))
                .col(text_null(OscarsCorrections::NewValue))
                .col(string_len(OscarsCorrections::ActorEmail, 254))
                .col(string_len(OscarsCorrections::ActorRole, 16))
                .col(timestamp_with_time_zone(OscarsCorrections::At))
                .col(big_integer(OscarsCorrections::FicheVersion))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "oscars_corrections_fiche",
            OscarsCorrections::Table,
            &["fiche_id", "id"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OscarsRegions::Table)
                .if_not_exists()
                .col(string_len(OscarsRegions::RegionCode, 3).primary_key())
                .col(text(OscarsRegions::Ambassadeurs))
                .col(big_integer(OscarsRegions::Version))
                .col(timestamp_with_time_zone(OscarsRegions::UpdatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OscarsRegions::Table.into_iden(),
            OscarsCorrections::Table.into_iden(),
            OscarsPromoteurs::Table.into_iden(),
            OscarsFiches::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
