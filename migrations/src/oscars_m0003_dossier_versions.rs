//! The newest status version the oscars service has seen for each dossier, fiche or not:
//! `oscars_dossier_versions`. Without it, an acceptance whose handling failed transiently and was
//! redelivered after the dossier's later status changes (re-opened, refused — handled while no
//! fiche existed, so nothing recorded them) imported a fiche for a dossier that is no longer
//! accepted. Found by the chaos suite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum OscarsDossierVersions {
    Table,
    DossierNumber,
    StatusVersion,
}

/// Creates `oscars_dossier_versions`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "oscars_m0003_dossier_versions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(OscarsDossierVersions::Table)
                .if_not_exists()
                .col(big_integer(OscarsDossierVersions::DossierNumber).primary_key())
                .col(big_integer(OscarsDossierVersions::StatusVersion))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OscarsDossierVersions::Table).to_owned())
            .await
    }
}
