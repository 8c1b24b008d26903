//! Persistence of the oscars service (tables of `migrations/src/oscars_m0002.rs`).
//!
//! A fiche row keeps the fiche as it is published — the encoded `mst.events.v1.Fiche`, which is
//! the contract the feed and both APIs carry — plus, denormalised from it, the columns the work
//! queue and the public API filter and sort on. [`fiche::columns`] derives them, so they never
//! disagree with the content.

use mst_proto::events as ev;
use prost::Message as _;

/// `oscars_fiches`: one fiche per accepted dossier.
pub mod fiche {
    use sea_orm::entity::prelude::*;

    /// One fiche.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oscars_fiches")]
    pub struct Model {
        /// Fiche id (derived from the dossier number, so a replay rebuilds the same ids).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Source dossier (unique).
        pub dossier_number: i64,
        /// "projet" or "action".
        pub kind: String,
        /// Edition year.
        pub year: i32,
        /// Région (ambassadeur scope).
        pub region_code: String,
        /// Main département.
        pub departement_code: String,
        /// Commune.
        pub commune_code: String,
        /// Status name ("importe", "en_cours", "visible", "retiree").
        pub status: String,
        /// Shown by the public API.
        pub visible: bool,
        /// Attached promoteur.
        pub promoteur_id: Option<String>,
        /// Chained projet fiche (actions).
        pub projet_fiche_id: Option<String>,
        /// Previous-year fiche it renews.
        pub previous_fiche_id: Option<String>,
        /// The projet dossier the action's dossier links to.
        pub linked_projet_dossier: Option<i64>,
        /// Type d'action (actions).
        pub type_action: String,
        /// Publics as `|a|b|` (exact-label filter with LIKE).
        pub publics_key: String,
        /// Lower-cased title, porteur, SIRET, number, description (free-text filter).
        pub search_text: String,
        /// SIRET shown on the fiche (suggestions).
        pub siret: String,
        /// Fiche version.
        pub version: i64,
        /// Highest dossier status version applied (staleness of `DossierStatusChanged`).
        pub dossier_status_version: i64,
        /// Encoded `mst.events.v1.Fiche`.
        pub content: Vec<u8>,
        /// Encoded `mst.events.v1.Fiche` as last imported from the dossier (original values).
        pub original: Vec<u8>,
        /// First import.
        pub imported_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
        /// Last made visible.
        pub published_at: Option<DateTimeUtc>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The denormalised columns of `f`, written over `m`.
    pub fn columns(m: &mut Model, f: &mst_proto::events::Fiche) {
        use mst_proto::events::fiche::Details;
        m.kind = super::kind_name(f.kind()).to_owned();
        m.year = f.year;
        m.region_code = f.region_code.clone();
        m.departement_code = f.departement_code.clone();
        m.commune_code = f.commune_code.clone();
        m.status = super::status_name(f.status()).to_owned();
        m.visible = f.visible;
        m.promoteur_id = Some(f.promoteur_id.clone()).filter(|s| !s.is_empty());
        m.projet_fiche_id = f.projet.as_ref().map(|l| l.fiche_id.clone());
        m.previous_fiche_id = f.chained_previous.as_ref().map(|l| l.fiche_id.clone());
        m.type_action = match &f.details {
            Some(Details::ActionDetails(d)) => d.type_action.clone(),
            _ => String::new(),
        };
        m.publics_key = if f.publics.is_empty() {
            String::new()
        } else {
            format!("|{}|", f.publics.join("|"))
        };
        let p = f.promoteur.clone().unwrap_or_default();
        m.siret = p.siret.chars().take(14).collect();
        m.search_text = format!(
            "{} | {} | {} | {} | {}",
            f.title, p.raison_sociale, p.siret, f.dossier_number, f.description
        )
        .to_lowercase();
        m.version = f.version;
        let at = |t: &Option<prost_types::Timestamp>| {
            t.as_ref().and_then(|t| {
                chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            })
        };
        if let Some(t) = at(&f.imported_at) {
            m.imported_at = t;
        }
        m.published_at = at(&f.published_at);
        m.content = prost::Message::encode_to_vec(f);
    }
}

/// `oscars_promoteurs`: the promoteur base.
pub mod promoteur {
    use sea_orm::entity::prelude::*;

    /// One promoteur.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oscars_promoteurs")]
    pub struct Model {
        /// Id (UUID).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// SIRET, unique when present.
        pub siret: Option<String>,
        /// SIREN (first 9 digits of the SIRET).
        pub siren: String,
        /// Name.
        pub raison_sociale: String,
        /// Type of structure.
        pub type_structure: String,
        /// Address.
        pub adresse: String,
        /// Commune of the address.
        pub commune_code: String,
        /// Phone.
        pub telephone: String,
        /// Email.
        pub email: String,
        /// Web site.
        pub site_web: String,
        /// JSON array of other names.
        pub aliases: String,
        /// Survivor when merged.
        pub merged_into_id: Option<String>,
        /// CreatePromoteur idempotency key.
        pub request_id: Option<String>,
        /// Version.
        pub version: i64,
        /// Created.
        pub created_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl Model {
        /// Its aliases.
        pub fn alias_list(&self) -> Vec<String> {
            serde_json::from_str(&self.aliases).unwrap_or_default()
        }
    }
}

/// `oscars_corrections`: one recorded field correction.
pub mod correction {
    use sea_orm::entity::prelude::*;

    /// One correction.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oscars_corrections")]
    pub struct Model {
        /// Id (UUID v7: time-ordered).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Fiche.
        pub fiche_id: String,
        /// Field path.
        pub field: String,
        /// Value at import (JSON of a FicheFieldValue), if any.
        pub original_value: Option<String>,
        /// Value before.
        pub old_value: Option<String>,
        /// Value after.
        pub new_value: Option<String>,
        /// Who.
        pub actor_email: String,
        /// Under which role.
        pub actor_role: String,
        /// When.
        pub at: DateTimeUtc,
        /// Fiche version produced.
        pub fiche_version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `oscars_regions`: the ambassadeurs of a région.
pub mod region {
    use sea_orm::entity::prelude::*;

    /// One région's ambassadeurs.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oscars_regions")]
    pub struct Model {
        /// INSEE code.
        #[sea_orm(primary_key, auto_increment = false)]
        pub region_code: String,
        /// JSON array of `{email, structure}`.
        pub ambassadeurs: String,
        /// Version.
        pub version: i64,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod dossier_version {
    use sea_orm::entity::prelude::*;

    /// The newest status version seen for one dossier (whether it has a fiche or not), so that a
    /// status change redelivered after newer ones is recognised as stale.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oscars_dossier_versions")]
    pub struct Model {
        /// Dossier number.
        #[sea_orm(primary_key, auto_increment = false)]
        pub dossier_number: i64,
        /// Its newest status version handled here.
        pub status_version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Stored name of a kind.
pub fn kind_name(k: ev::DossierKind) -> &'static str {
    match k {
        ev::DossierKind::Action => "action",
        _ => "projet",
    }
}

/// Stored name of a status.
pub fn status_name(s: ev::FicheStatus) -> &'static str {
    match s {
        ev::FicheStatus::Importe | ev::FicheStatus::Unspecified => "importe",
        ev::FicheStatus::EnCours => "en_cours",
        ev::FicheStatus::Visible => "visible",
        ev::FicheStatus::Retiree => "retiree",
    }
}

/// French label of a status (error messages).
pub fn status_label(s: ev::FicheStatus) -> &'static str {
    match s {
        ev::FicheStatus::Importe | ev::FicheStatus::Unspecified => "importée",
        ev::FicheStatus::EnCours => "en cours de traitement",
        ev::FicheStatus::Visible => "visible",
        ev::FicheStatus::Retiree => "retirée",
    }
}

/// Decodes a stored fiche.
pub fn decode(bytes: &[u8]) -> anyhow::Result<ev::Fiche> {
    Ok(ev::Fiche::decode(bytes)?)
}
