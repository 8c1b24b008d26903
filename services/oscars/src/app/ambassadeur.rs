//! The ambassadeur's work, scoped to his région(s): work queue, chaining (action → projet, fiche →
//! previous year), the promoteur base (find, create, attach, merge, edit), corrections, and
//! visibility; and the admin's configuration of the ambassadeurs of each région.
//!
//! Authorization (invariant I4): an admin reaches everything; an ambassadeur (role `ambassadeur`
//! and listed for a région by an admin) reaches only the fiches of his régions — another fiche is
//! NOT_FOUND, so its existence does not leak; anyone else is PERMISSION_DENIED.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Utc;
use mst_kit::ApiError;
use mst_kit::auth::{Principal, Role};
use mst_kit::error::Violation;
use mst_proto::events as ev;
use mst_proto::oscars as pb;
use sea_orm::sea_query::{Condition, Expr, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};

use super::import::changed_fields;
use super::{FeedEvent, Oscars, decoded, enqueue, timestamp};
use crate::mapping;
use crate::store::{self, correction, fiche, promoteur, region};

/// What a caller reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// An admin: every région.
    All,
    /// An ambassadeur: these régions.
    Regions(BTreeSet<String>),
}

impl Scope {
    fn covers(&self, region: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Regions(r) => r.contains(region),
        }
    }
}

/// One ambassadeur as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmbassadeurRow {
    /// Email.
    pub email: String,
    /// Structure.
    pub structure: String,
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Next page token.
    pub next: String,
    /// Total matching.
    pub total: i64,
}

/// A fiche with what the ambassadeur works on.
#[derive(Debug, Clone)]
pub struct FicheView {
    /// The fiche.
    pub fiche: ev::Fiche,
    /// Its promoteur.
    pub promoteur: Option<pb::Promoteur>,
    /// Number of corrections.
    pub correction_count: i32,
    /// What is missing to publish.
    pub missing: Vec<String>,
}

/// A stored correction value (JSON of a `FicheFieldValue`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stored {
    Text(String),
    Texts(Vec<String>),
    Number(f64),
}

fn to_pb_value(s: Option<Stored>) -> Option<pb::FicheFieldValue> {
    use pb::fiche_field_value::Value;
    s.map(|s| pb::FicheFieldValue {
        value: Some(match s {
            Stored::Text(t) => Value::Text(t),
            Stored::Texts(values) => Value::Texts(pb::StringList { values }),
            Stored::Number(n) => Value::Number(n),
        }),
    })
}

fn json(s: &Option<Stored>) -> Option<String> {
    s.as_ref().and_then(|s| serde_json::to_string(s).ok())
}

fn unjson(s: &Option<String>) -> Option<Stored> {
    s.as_deref().and_then(|s| serde_json::from_str(s).ok())
}

/// Page token: offset and a fingerprint of the filters it was issued for.
pub fn page_token(offset: u64, filter: &str) -> String {
    format!(
        "{offset}.{}",
        &super::derived_id(&["page", filter]).simple().to_string()[..12]
    )
}

/// Offset of `token` issued for `filter`; a tampered or foreign token is INVALID_ARGUMENT.
pub fn page_offset(token: &str, filter: &str) -> Result<u64, ApiError> {
    if token.is_empty() {
        return Ok(0);
    }
    let invalid = || ApiError::invalid("page_token", "Jeton de page invalide");
    let (offset, _) = token.split_once('.').ok_or_else(invalid)?;
    let offset: u64 = offset.parse().map_err(|_| invalid())?;
    if page_token(offset, filter) != token {
        return Err(invalid());
    }
    Ok(offset)
}

/// A page size between 1 and `max` (0 → `default`).
pub fn page_size(requested: i32, default: u64, max: u64) -> u64 {
    match requested {
        n if n <= 0 => default,
        n => (n as u64).min(max),
    }
}

/// Lower-case words of at least three letters, accents folded.
pub fn words(s: &str) -> BTreeSet<String> {
    fold(s)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_owned)
        .collect()
}

/// Lower-cases and folds the common French accents.
pub fn fold(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| match c {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            '’' => '\'',
            other => other,
        })
        .collect()
}

/// Jaccard similarity of the words of two titles, in [0, 1].
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let inter = a.intersection(&b).count() as f64;
    inter / (a.union(&b).count() as f64)
}

/// Whether `s` is a SIRET: 14 digits passing the Luhn check (La Poste's establishments, SIREN
/// 356000000, use the sum of the digits instead).
pub fn is_siret(s: &str) -> bool {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let digits: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
    if s.starts_with("356000000") {
        return digits.iter().sum::<u32>().is_multiple_of(5);
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_commune_code(s: &str) -> bool {
    s.len() == 5 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_date(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
        && s.len() <= 254
}

/// The promoteur record as the API shows it.
pub fn promoteur_pb(m: &promoteur::Model, fiche_count: i32) -> pb::Promoteur {
    pb::Promoteur {
        id: m.id.clone(),
        siret: m.siret.clone().unwrap_or_default(),
        siren: m.siren.clone(),
        raison_sociale: m.raison_sociale.clone(),
        type_structure: m.type_structure.clone(),
        adresse: m.adresse.clone(),
        commune_code: m.commune_code.clone(),
        telephone: m.telephone.clone(),
        email: m.email.clone(),
        site_web: m.site_web.clone(),
        aliases: m.alias_list(),
        merged_into_id: m.merged_into_id.clone().unwrap_or_default(),
        fiche_count,
        version: m.version,
        created_at: Some(timestamp(m.created_at)),
        updated_at: Some(timestamp(m.updated_at)),
    }
}

/// The porteur block of a fiche showing promoteur `m`.
pub fn fiche_promoteur(m: &promoteur::Model) -> ev::FichePromoteur {
    ev::FichePromoteur {
        id: m.id.clone(),
        raison_sociale: m.raison_sociale.clone(),
        siret: m.siret.clone().unwrap_or_default(),
        type_structure: m.type_structure.clone(),
        adresse: m.adresse.clone(),
        commune_code: m.commune_code.clone(),
        telephone: m.telephone.clone(),
        email: m.email.clone(),
        site_web: m.site_web.clone(),
    }
}

/// A link to fiche `f`.
pub fn link(f: &ev::Fiche) -> ev::FicheLink {
    ev::FicheLink {
        fiche_id: f.id.clone(),
        title: f.title.clone(),
        year: f.year,
        dossier_number: f.dossier_number,
    }
}

/// What is still missing before `f` can be made visible (field paths, French descriptions).
pub fn missing_for_publication(f: &ev::Fiche) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut need = |ok: bool, path: &str, what: &str| {
        if !ok {
            out.push((path.to_owned(), what.to_owned()));
        }
    };
    need(
        !f.promoteur_id.is_empty(),
        "promoteur",
        "Aucun promoteur de la base n'est rattaché à la fiche",
    );
    need(!f.title.trim().is_empty(), "title", "Le titre est manquant");
    need(
        !f.start_date.is_empty(),
        "start_date",
        "La date de début est manquante",
    );
    need(
        !f.end_date.is_empty(),
        "end_date",
        "La date de fin est manquante",
    );
    need(
        !f.description.trim().is_empty(),
        "description",
        "La description est manquante",
    );
    need(
        !f.departement_code.is_empty(),
        "departement_code",
        "Le département est manquant",
    );
    if f.kind() == ev::DossierKind::Action {
        let d = match &f.details {
            Some(ev::fiche::Details::ActionDetails(d)) => d.clone(),
            _ => ev::ActionDetails::default(),
        };
        need(
            !d.type_action.is_empty(),
            "action_details.type_action",
            "Le type d'action est manquant",
        );
        need(!f.publics.is_empty(), "publics", "Le public est manquant");
        need(
            !f.commune_code.is_empty(),
            "commune_code",
            "La commune est manquante",
        );
        need(
            f.projet.is_some(),
            "projet",
            "L'action n'est pas chaînée à son projet",
        );
    }
    out
}

fn kind_label(k: ev::DossierKind) -> &'static str {
    match k {
        ev::DossierKind::Action => "une action",
        _ => "un projet",
    }
}

impl Oscars {
    /// What `who` reaches: everything for an admin, his régions for a configured ambassadeur.
    pub async fn scope(&self, who: &Principal) -> Result<Scope, ApiError> {
        if who.has(Role::Admin) {
            return Ok(Scope::All);
        }
        who.require(Role::Ambassadeur)?;
        let regions = self.regions_of(&who.email).await?;
        if regions.is_empty() {
            return Err(ApiError::PermissionDenied(format!(
                "{} is configured for no région",
                who.email
            )));
        }
        Ok(Scope::Regions(regions))
    }

    async fn regions_of(&self, email: &str) -> Result<BTreeSet<String>, ApiError> {
        let email = email.to_lowercase();
        Ok(region::Entity::find()
            .all(self.db())
            .await?
            .into_iter()
            .filter(|r| {
                serde_json::from_str::<Vec<AmbassadeurRow>>(&r.ambassadeurs)
                    .unwrap_or_default()
                    .iter()
                    .any(|a| a.email == email)
            })
            .map(|r| r.region_code)
            .collect())
    }

    /// The fiche `id` if `scope` reaches it, else NOT_FOUND.
    async fn reach<C: ConnectionTrait>(
        db: &C,
        scope: &Scope,
        id: &str,
    ) -> Result<fiche::Model, ApiError> {
        let not_found = || ApiError::NotFound {
            resource: "fiche",
            id: id.to_owned(),
        };
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(not_found());
        }
        let row = fiche::Entity::find_by_id(id.to_owned())
            .one(db)
            .await?
            .ok_or_else(not_found)?;
        if !scope.covers(&row.region_code) {
            return Err(not_found());
        }
        Ok(row)
    }

    fn check_version(row: &fiche::Model, expected: i64) -> Result<(), ApiError> {
        if row.version != expected {
            return Err(ApiError::VersionConflict {
                resource: "fiche",
                id: row.id.clone(),
                expected,
                current: row.version,
            });
        }
        Ok(())
    }

    fn not_withdrawn(f: &ev::Fiche) -> Result<(), ApiError> {
        if f.status() == ev::FicheStatus::Retiree {
            return Err(ApiError::wrong_state(
                "FICHE_WITHDRAWN",
                store::status_name(f.status()),
                "La fiche est retirée : son dossier n'est plus accepté",
            ));
        }
        Ok(())
    }

    /// Commits `f` (the new content of `row`) with its feed event: version + 1, an untouched
    /// fiche becomes EN_COURS, the row is updated only if nobody changed it meanwhile.
    async fn commit(
        &self,
        txn: DatabaseTransaction,
        who: &Principal,
        row: fiche::Model,
        mut f: ev::Fiche,
        what: FeedEvent,
    ) -> Result<ev::Fiche, ApiError> {
        let txn_ref = &txn;
        self.write_fiche(txn_ref, who, row, &mut f, what).await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(f)
    }

    async fn write_fiche(
        &self,
        txn: &DatabaseTransaction,
        who: &Principal,
        row: fiche::Model,
        f: &mut ev::Fiche,
        what: FeedEvent,
    ) -> Result<(), ApiError> {
        let now = Utc::now();
        let previous = row.version;
        if matches!(what, FeedEvent::Updated(_)) && f.status() == ev::FicheStatus::Importe {
            f.status = ev::FicheStatus::EnCours as i32;
        }
        f.version = previous + 1;
        f.updated_at = Some(timestamp(now));
        let mut row = row;
        fiche::columns(&mut row, f);
        row.updated_at = now;
        let mut active = row.into_active_model().reset_all();
        active.id = sea_orm::ActiveValue::Unchanged(f.id.clone());
        let updated = fiche::Entity::update_many()
            .set(active)
            .filter(fiche::Column::Id.eq(f.id.clone()))
            .filter(fiche::Column::Version.eq(previous))
            .exec(txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(ApiError::VersionConflict {
                resource: "fiche",
                id: f.id.clone(),
                expected: previous,
                current: previous + 1,
            });
        }
        enqueue(txn, uuid::Uuid::now_v7(), Some(who), "", f, what).await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Work queue and fiche
    // ----------------------------------------------------------------------------------------

    /// The work queue: fiches of the caller's régions matching `filter`, oldest import first.
    pub async fn work_queue(
        &self,
        who: &Principal,
        filter: pb::WorkQueueFilter,
        size: i32,
        token: &str,
    ) -> Result<Page<ev::Fiche>, ApiError> {
        let scope = self.scope(who).await?;
        let fingerprint = format!("{filter:?}");
        let offset = page_offset(token, &fingerprint)?;
        let size = page_size(size, 50, 500);
        let pb::WorkQueueFilter {
            statuses,
            departement_codes,
            year,
            kind,
            region_code,
            without_promoteur,
            unchained_actions,
            text,
        } = filter;
        let mut cond = Condition::all();
        match (&scope, region_code.is_empty()) {
            (_, false) if !scope.covers(&region_code) => {
                return Err(ApiError::invalid(
                    "filter.region_code",
                    "Cette région n'est pas la vôtre",
                ));
            }
            (_, false) => cond = cond.add(fiche::Column::RegionCode.eq(region_code)),
            (Scope::Regions(r), true) => {
                cond = cond.add(fiche::Column::RegionCode.is_in(r.iter().cloned()))
            }
            (Scope::All, true) => {
                return Err(ApiError::invalid(
                    "filter.region_code",
                    "Indiquez la région dont vous voulez la file de travail",
                ));
            }
        }
        let mut names = Vec::new();
        for (i, s) in statuses.iter().enumerate() {
            match ev::FicheStatus::try_from(*s) {
                Ok(s) if s != ev::FicheStatus::Unspecified => {
                    names.push(store::status_name(s).to_owned())
                }
                _ => {
                    return Err(ApiError::invalid(
                        format!("filter.statuses[{i}]"),
                        "Statut de fiche inconnu",
                    ));
                }
            }
        }
        if names.is_empty() {
            names = vec!["importe".into(), "en_cours".into()];
        }
        cond = cond.add(fiche::Column::Status.is_in(names));
        if !departement_codes.is_empty() {
            cond = cond.add(fiche::Column::DepartementCode.is_in(departement_codes));
        }
        if let Some(y) = year {
            cond = cond.add(fiche::Column::Year.eq(y));
        }
        match ev::DossierKind::try_from(kind).unwrap_or(ev::DossierKind::Unspecified) {
            ev::DossierKind::Unspecified => {}
            k => cond = cond.add(fiche::Column::Kind.eq(store::kind_name(k))),
        }
        if without_promoteur {
            cond = cond.add(fiche::Column::PromoteurId.is_null());
        }
        if unchained_actions {
            cond = cond
                .add(fiche::Column::Kind.eq("action"))
                .add(fiche::Column::ProjetFicheId.is_null());
        }
        if !text.trim().is_empty() {
            cond = cond.add(fiche::Column::SearchText.contains(text.trim().to_lowercase()));
        }
        let query = fiche::Entity::find().filter(cond);
        let total = query.clone().count(self.db()).await?;
        let rows = query
            .order_by_asc(fiche::Column::ImportedAt)
            .order_by_asc(fiche::Column::Id)
            .offset(offset)
            .limit(size)
            .all(self.db())
            .await?;
        let next = if offset + (rows.len() as u64) < total {
            page_token(offset + rows.len() as u64, &fingerprint)
        } else {
            String::new()
        };
        Ok(Page {
            items: rows.iter().map(decoded).collect::<Result<_, _>>()?,
            next,
            total: total as i64,
        })
    }

    /// One fiche with its promoteur, correction count and what is missing to publish it.
    pub async fn get_fiche(&self, who: &Principal, id: &str) -> Result<FicheView, ApiError> {
        let scope = self.scope(who).await?;
        let row = Self::reach(self.db(), &scope, id).await?;
        let f = decoded(&row)?;
        let promoteur = match &row.promoteur_id {
            Some(p) => self.promoteur_view(p).await?,
            None => None,
        };
        let correction_count = correction::Entity::find()
            .filter(correction::Column::FicheId.eq(id))
            .count(self.db())
            .await?;
        Ok(FicheView {
            missing: missing_for_publication(&f)
                .into_iter()
                .map(|(p, _)| p)
                .collect(),
            fiche: f,
            promoteur,
            correction_count: correction_count as i32,
        })
    }

    async fn promoteur_view(&self, id: &str) -> Result<Option<pb::Promoteur>, ApiError> {
        let Some(m) = promoteur::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
        else {
            return Ok(None);
        };
        let count = fiche::Entity::find()
            .filter(fiche::Column::PromoteurId.eq(id))
            .count(self.db())
            .await?;
        Ok(Some(promoteur_pb(&m, count as i32)))
    }

    // ----------------------------------------------------------------------------------------
    // Chaining
    // ----------------------------------------------------------------------------------------

    /// Projet fiches the action fiche `id` may belong to, best first.
    pub async fn suggest_projet(
        &self,
        who: &Principal,
        id: &str,
        limit: i32,
    ) -> Result<Vec<pb::ChainSuggestion>, ApiError> {
        let scope = self.scope(who).await?;
        let row = Self::reach(self.db(), &scope, id).await?;
        let action = decoded(&row)?;
        if action.kind() != ev::DossierKind::Action {
            return Err(ApiError::wrong_state(
                "NOT_AN_ACTION",
                store::status_name(action.status()),
                "Cette fiche est un projet : seule une action se chaîne à un projet",
            ));
        }
        let candidates = fiche::Entity::find()
            .filter(fiche::Column::Kind.eq("projet"))
            .filter(fiche::Column::RegionCode.eq(row.region_code.clone()))
            .all(self.db())
            .await?;
        let mut out = Vec::new();
        for c in candidates {
            let p = decoded(&c)?;
            let mut reasons = Vec::new();
            let mut score: f64 = 0.0;
            if row.linked_projet_dossier == Some(c.dossier_number) {
                reasons.push(pb::SuggestionReason::DossierLink as i32);
                score += 1.0;
            }
            if !row.siret.is_empty() && row.siret == c.siret {
                reasons.push(pb::SuggestionReason::SameSiret as i32);
                score += 0.4;
            }
            if row.promoteur_id.is_some() && row.promoteur_id == c.promoteur_id {
                reasons.push(pb::SuggestionReason::SamePromoteur as i32);
                score += 0.3;
            }
            let sim = similarity(&action.title, &p.title);
            if sim >= 0.2 {
                reasons.push(pb::SuggestionReason::SimilarTitle as i32);
                score += 0.2 * sim;
            }
            if reasons.is_empty() || p.year != action.year {
                continue;
            }
            out.push(suggestion(&p, score.min(1.0), reasons));
        }
        Ok(rank(out, limit))
    }

    /// Chains action fiche `id` to projet fiche `projet_id` (empty: unchains).
    pub async fn chain_to_projet(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
        projet_id: &str,
    ) -> Result<ev::Fiche, ApiError> {
        let scope = self.scope(who).await?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = Self::reach(&txn, &scope, id).await?;
        Self::check_version(&row, expected_version)?;
        let old = decoded(&row)?;
        if old.kind() != ev::DossierKind::Action {
            return Err(ApiError::wrong_state(
                "NOT_AN_ACTION",
                store::status_name(old.status()),
                "Cette fiche est un projet : seule une action se chaîne à un projet",
            ));
        }
        Self::not_withdrawn(&old)?;
        let mut f = old.clone();
        if projet_id.is_empty() {
            f.projet = None;
        } else {
            let p = decoded(&Self::reach(&txn, &scope, projet_id).await?)?;
            if p.kind() != ev::DossierKind::Projet {
                return Err(ApiError::invalid(
                    "projet_fiche_id",
                    "Cette fiche n'est pas un projet",
                ));
            }
            if p.year != f.year {
                return Err(ApiError::invalid(
                    "projet_fiche_id",
                    format!(
                        "Le projet est de l'édition {} et l'action de l'édition {}",
                        p.year, f.year
                    ),
                ));
            }
            f.projet = Some(link(&p));
        }
        let changed = changed_fields(&old, &f);
        self.commit(txn, who, row, f, FeedEvent::Updated(changed))
            .await
    }

    /// Earlier-year fiches of the same kind that fiche `id` may renew, best first.
    pub async fn suggest_previous_year(
        &self,
        who: &Principal,
        id: &str,
        limit: i32,
    ) -> Result<Vec<pb::ChainSuggestion>, ApiError> {
        let scope = self.scope(who).await?;
        let row = Self::reach(self.db(), &scope, id).await?;
        let f = decoded(&row)?;
        let candidates = fiche::Entity::find()
            .filter(fiche::Column::Kind.eq(row.kind.clone()))
            .filter(fiche::Column::Year.lt(row.year))
            .all(self.db())
            .await?;
        let mut out = Vec::new();
        for c in candidates {
            if !scope.covers(&c.region_code) {
                continue;
            }
            let p = decoded(&c)?;
            let mut reasons = Vec::new();
            let mut score: f64 = 0.0;
            if !row.siret.is_empty() && row.siret == c.siret {
                reasons.push(pb::SuggestionReason::SameSiret as i32);
                score += 0.6;
            }
            if row.promoteur_id.is_some() && row.promoteur_id == c.promoteur_id {
                reasons.push(pb::SuggestionReason::SamePromoteur as i32);
                score += 0.1;
            }
            let sim = similarity(&f.title, &p.title);
            if sim > 0.0 {
                reasons.push(pb::SuggestionReason::SimilarTitle as i32);
                score += 0.3 * sim;
            }
            if reasons.is_empty() {
                continue;
            }
            out.push(suggestion(&p, score.min(1.0), reasons));
        }
        Ok(rank(out, limit))
    }

    /// Chains fiche `id` to the earlier fiche `previous_id` it renews (empty: unchains).
    pub async fn chain_to_previous(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
        previous_id: &str,
    ) -> Result<ev::Fiche, ApiError> {
        let scope = self.scope(who).await?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = Self::reach(&txn, &scope, id).await?;
        Self::check_version(&row, expected_version)?;
        let old = decoded(&row)?;
        Self::not_withdrawn(&old)?;
        let mut f = old.clone();
        if previous_id.is_empty() {
            f.chained_previous = None;
        } else {
            if previous_id == id {
                return Err(ApiError::invalid(
                    "previous_fiche_id",
                    "Une fiche ne peut pas être chaînée à elle-même",
                ));
            }
            let p = decoded(&Self::reach(&txn, &scope, previous_id).await?)?;
            if p.kind != f.kind {
                return Err(ApiError::invalid(
                    "previous_fiche_id",
                    format!(
                        "La fiche choisie est {} et celle-ci {}",
                        kind_label(p.kind()),
                        kind_label(f.kind())
                    ),
                ));
            }
            if p.year >= f.year {
                return Err(ApiError::invalid(
                    "previous_fiche_id",
                    format!(
                        "La fiche choisie est de l'édition {}, qui n'est pas antérieure à {}",
                        p.year, f.year
                    ),
                ));
            }
            f.chained_previous = Some(link(&p));
        }
        let changed = changed_fields(&old, &f);
        self.commit(txn, who, row, f, FeedEvent::Updated(changed))
            .await
    }

    // ----------------------------------------------------------------------------------------
    // Visibility
    // ----------------------------------------------------------------------------------------

    /// Makes fiche `id` visible; it must have a promoteur and its required fields.
    pub async fn publish(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
    ) -> Result<ev::Fiche, ApiError> {
        let scope = self.scope(who).await?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = Self::reach(&txn, &scope, id).await?;
        Self::check_version(&row, expected_version)?;
        let mut f = decoded(&row)?;
        Self::not_withdrawn(&f)?;
        if f.status() == ev::FicheStatus::Visible {
            return Err(ApiError::wrong_state(
                "ALREADY_VISIBLE",
                "visible",
                "La fiche est déjà visible",
            ));
        }
        let missing = missing_for_publication(&f);
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|(_, d)| d.to_lowercase())
                .collect::<Vec<_>>()
                .join(" ; ");
            return Err(ApiError::FailedPrecondition {
                reason: "FICHE_INCOMPLETE".into(),
                message: format!("La fiche ne peut pas être rendue visible : {list}"),
                metadata: HashMap::from([(
                    "current_status".to_owned(),
                    store::status_name(f.status()).to_owned(),
                )]),
                violations: missing
                    .into_iter()
                    .map(|(p, d)| ("MISSING".to_owned(), p, d))
                    .collect(),
            });
        }
        f.status = ev::FicheStatus::Visible as i32;
        f.visible = true;
        f.published_at = Some(timestamp(Utc::now()));
        self.commit(txn, who, row, f, FeedEvent::Published).await
    }

    /// Hides the visible fiche `id`.
    pub async fn hide(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
    ) -> Result<ev::Fiche, ApiError> {
        let scope = self.scope(who).await?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = Self::reach(&txn, &scope, id).await?;
        Self::check_version(&row, expected_version)?;
        let mut f = decoded(&row)?;
        if f.status() != ev::FicheStatus::Visible {
            return Err(ApiError::wrong_state(
                "NOT_VISIBLE",
                store::status_name(f.status()),
                format!(
                    "La fiche n'est pas visible (elle est {})",
                    store::status_label(f.status())
                ),
            ));
        }
        f.status = ev::FicheStatus::EnCours as i32;
        f.visible = false;
        self.commit(
            txn,
            who,
            row,
            f,
            FeedEvent::Withdrawn(ev::FicheWithdrawalReason::HiddenByAmbassadeur),
        )
        .await
    }

    // ----------------------------------------------------------------------------------------
    // Corrections
    // ----------------------------------------------------------------------------------------

    /// Applies `corrections` to fiche `id`, all or nothing, recording each changed field.
    pub async fn correct(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
        corrections: Vec<pb::FieldCorrection>,
    ) -> Result<(ev::Fiche, Vec<pb::Correction>), ApiError> {
        let scope = self.scope(who).await?;
        if corrections.is_empty() {
            return Err(ApiError::invalid(
                "corrections",
                "Aucune correction demandée",
            ));
        }
        if corrections.len() > 50 {
            return Err(ApiError::invalid(
                "corrections",
                "Au plus 50 corrections à la fois",
            ));
        }
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = Self::reach(&txn, &scope, id).await?;
        Self::check_version(&row, expected_version)?;
        let old = decoded(&row)?;
        Self::not_withdrawn(&old)?;
        let original = store::decode(&row.original).map_err(ApiError::Unexpected)?;
        let mut f = old.clone();
        let mut violations = Vec::new();
        let mut seen = BTreeSet::new();
        let mut recorded = Vec::new();
        for (i, c) in corrections.into_iter().enumerate() {
            let at = format!("corrections[{i}]");
            if !seen.insert(c.field.clone()) {
                violations.push(Violation::new(at, "Ce champ est corrigé deux fois"));
                continue;
            }
            let value = match c.value.and_then(|v| v.value) {
                None => None,
                Some(pb::fiche_field_value::Value::Text(t)) => Some(Stored::Text(t.trim().into())),
                Some(pb::fiche_field_value::Value::Texts(l)) => Some(Stored::Texts(
                    l.values.into_iter().map(|v| v.trim().to_owned()).collect(),
                )),
                Some(pb::fiche_field_value::Value::Number(n)) => Some(Stored::Number(n)),
            };
            let before = get_field(&f, &c.field);
            if let Some(message) = check_thesaurus(&c.field, &before, &value) {
                violations.push(Violation::new(at, message));
                continue;
            }
            match set_field(&mut f, &c.field, value.clone()) {
                Ok(()) => {
                    if before != value {
                        recorded.push((
                            c.field.clone(),
                            get_field(&original, &c.field),
                            before,
                            value,
                        ));
                    }
                }
                Err(message) => violations.push(Violation::new(at, message)),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations));
        }
        if f.departement_code != old.departement_code
            && mapping::region_of(&f.departement_code) != Some(old.region_code.as_str())
        {
            return Err(ApiError::invalid(
                "corrections",
                "Le département doit appartenir à la région de la fiche",
            ));
        }
        if recorded.is_empty() {
            txn.rollback().await?;
            return Ok((old, Vec::new()));
        }
        let changed = changed_fields(&old, &f);
        let mut f2 = f;
        self.write_fiche(&txn, who, row, &mut f2, FeedEvent::Updated(changed))
            .await?;
        let now = Utc::now();
        let role = if who.has(Role::Admin) {
            "admin"
        } else {
            "ambassadeur"
        };
        let mut out = Vec::new();
        for (field, original, old_value, new_value) in recorded {
            let m = correction::Model {
                id: uuid::Uuid::now_v7().to_string(),
                fiche_id: id.to_owned(),
                field,
                original_value: json(&original),
                old_value: json(&old_value),
                new_value: json(&new_value),
                actor_email: who.email.clone(),
                actor_role: role.to_owned(),
                at: now,
                fiche_version: f2.version,
            };
            correction::ActiveModel::from(m.clone())
                .insert(&txn)
                .await?;
            out.push(correction_pb(&m));
        }
        txn.commit().await?;
        self.relay.wake();
        Ok((f2, out))
    }

    /// The corrections of fiche `id`, newest first.
    pub async fn corrections(
        &self,
        who: &Principal,
        id: &str,
        size: i32,
        token: &str,
    ) -> Result<Page<pb::Correction>, ApiError> {
        let scope = self.scope(who).await?;
        Self::reach(self.db(), &scope, id).await?;
        let offset = page_offset(token, id)?;
        let size = page_size(size, 50, 500);
        let query = correction::Entity::find().filter(correction::Column::FicheId.eq(id));
        let total = query.clone().count(self.db()).await?;
        let rows = query
            .order_by_desc(correction::Column::Id)
            .offset(offset)
            .limit(size)
            .all(self.db())
            .await?;
        let end = offset + rows.len() as u64;
        Ok(Page {
            items: rows.iter().map(correction_pb).collect(),
            next: if end < total {
                page_token(end, id)
            } else {
                String::new()
            },
            total: total as i64,
        })
    }

    // ----------------------------------------------------------------------------------------
    // Promoteur base
    // ----------------------------------------------------------------------------------------

    async fn fiche_counts(&self) -> Result<HashMap<String, i32>, ApiError> {
        let rows: Vec<(Option<String>, i64)> = fiche::Entity::find()
            .select_only()
            .column(fiche::Column::PromoteurId)
            .column_as(Expr::from(Func::count(Expr::col(fiche::Column::Id))), "n")
            .group_by(fiche::Column::PromoteurId)
            .into_tuple()
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(p, n)| Some((p?, n as i32)))
            .collect())
    }

    /// Searches the promoteur base: SIRET/SIREN first, then names and aliases (same commune first).
    pub async fn find_promoteurs(
        &self,
        who: &Principal,
        r: pb::FindPromoteursRequest,
    ) -> Result<Vec<pb::PromoteurMatch>, ApiError> {
        self.scope(who).await?;
        let siret = r.siret.trim().to_owned();
        let name = r.name.trim().to_owned();
        if siret.is_empty() && name.is_empty() {
            return Err(ApiError::invalid(
                "siret",
                "Indiquez un SIRET, un SIREN ou un nom",
            ));
        }
        let is_siren = siret.len() == 9 && siret.bytes().all(|b| b.is_ascii_digit());
        if !(siret.is_empty() || is_siren || is_siret(&siret)) {
            return Err(ApiError::invalid(
                "siret",
                "Le SIRET doit compter 14 chiffres valides (ou le SIREN 9 chiffres)",
            ));
        }
        let counts = self.fiche_counts().await?;
        let all = promoteur::Entity::find().all(self.db()).await?;
        let mut out = Vec::new();
        for p in all {
            if p.merged_into_id.is_some() && !r.include_merged {
                continue;
            }
            let (reason, score) = if !siret.is_empty() && p.siret.as_deref() == Some(&siret) {
                (pb::PromoteurMatchReason::Siret, 1.0)
            } else if !siret.is_empty() && p.siren == siret.chars().take(9).collect::<String>() {
                (pb::PromoteurMatchReason::Siren, 0.9)
            } else if !name.is_empty() {
                let best = std::iter::once(p.raison_sociale.clone())
                    .chain(p.alias_list())
                    .map(|n| {
                        let s = similarity(&n, &name);
                        if fold(&n).contains(&fold(&name)) {
                            s.max(0.5)
                        } else {
                            s
                        }
                    })
                    .fold(0.0_f64, f64::max);
                if best < 0.25 {
                    continue;
                }
                if !r.commune_code.is_empty() && p.commune_code == r.commune_code {
                    (pb::PromoteurMatchReason::NameAndCommune, 0.5 + 0.4 * best)
                } else {
                    (pb::PromoteurMatchReason::Name, 0.4 * best + 0.1)
                }
            } else {
                continue;
            };
            let n = counts.get(&p.id).copied().unwrap_or(0);
            out.push(pb::PromoteurMatch {
                promoteur: Some(promoteur_pb(&p, n)),
                reason: reason as i32,
                score,
            });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out.truncate(page_size(r.limit, 20, 100) as usize);
        Ok(out)
    }

    /// One promoteur.
    pub async fn get_promoteur(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<pb::Promoteur, ApiError> {
        self.scope(who).await?;
        self.promoteur_view(id).await?.ok_or(ApiError::NotFound {
            resource: "promoteur",
            id: id.to_owned(),
        })
    }

    /// Creates a promoteur (idempotent per `request_id`).
    pub async fn create_promoteur(
        &self,
        who: &Principal,
        p: pb::Promoteur,
        request_id: &str,
    ) -> Result<pb::Promoteur, ApiError> {
        self.scope(who).await?;
        if !request_id.is_empty() && uuid::Uuid::parse_str(request_id).is_err() {
            return Err(ApiError::invalid(
                "request_id",
                "Identifiant de requête invalide (UUID attendu)",
            ));
        }
        if !request_id.is_empty()
            && let Some(found) = promoteur::Entity::find()
                .filter(promoteur::Column::RequestId.eq(request_id))
                .one(self.db())
                .await?
        {
            return self
                .promoteur_view(&found.id)
                .await?
                .ok_or(ApiError::NotFound {
                    resource: "promoteur",
                    id: found.id,
                });
        }
        let mut violations = Vec::new();
        validate_promoteur(&p, "promoteur.", &mut violations, None);
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations));
        }
        let siret = Some(p.siret.trim().to_owned()).filter(|s| !s.is_empty());
        let txn = mst_kit::db::begin_write(self.db()).await?;
        if let Some(s) = &siret
            && let Some(taken) = promoteur::Entity::find()
                .filter(promoteur::Column::Siret.eq(s.clone()))
                .one(&txn)
                .await?
        {
            return Err(ApiError::AlreadyExists {
                resource: "promoteur",
                id: taken.id,
            });
        }
        let now = Utc::now();
        let m = promoteur::Model {
            id: uuid::Uuid::now_v7().to_string(),
            siren: siret
                .as_deref()
                .map(|s| s.chars().take(9).collect())
                .unwrap_or_default(),
            siret,
            raison_sociale: p.raison_sociale.trim().to_owned(),
            type_structure: p.type_structure.trim().to_owned(),
            adresse: p.adresse.trim().to_owned(),
            commune_code: p.commune_code.trim().to_owned(),
            telephone: p.telephone.trim().to_owned(),
            email: p.email.trim().to_lowercase(),
            site_web: p.site_web.trim().to_owned(),
            aliases: "[]".into(),
            merged_into_id: None,
            request_id: Some(request_id.to_owned()).filter(|r| !r.is_empty()),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        promoteur::ActiveModel::from(m.clone()).insert(&txn).await?;
        txn.commit().await?;
        Ok(promoteur_pb(&m, 0))
    }

    /// Attaches promoteur `promoteur_id` to fiche `id`; the name the dossier declared becomes an
    /// alias of the promoteur when it differs.
    pub async fn attach_promoteur(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
        promoteur_id: &str,
    ) -> Result<ev::Fiche, ApiError> {
        let scope = self.scope(who).await?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = Self::reach(&txn, &scope, id).await?;
        Self::check_version(&row, expected_version)?;
        let old = decoded(&row)?;
        Self::not_withdrawn(&old)?;
        let p = promoteur::Entity::find_by_id(promoteur_id.to_owned())
            .one(&txn)
            .await?
            .ok_or(ApiError::NotFound {
                resource: "promoteur",
                id: promoteur_id.to_owned(),
            })?;
        if let Some(survivor) = &p.merged_into_id {
            return Err(ApiError::FailedPrecondition {
                reason: "PROMOTEUR_MERGED".into(),
                message: "Ce promoteur a été fusionné dans un autre : rattachez celui-ci".into(),
                metadata: HashMap::from([
                    ("current_status".to_owned(), "merged".to_owned()),
                    ("merged_into_id".to_owned(), survivor.clone()),
                ]),
                violations: Vec::new(),
            });
        }
        let declared = old
            .promoteur
            .as_ref()
            .map(|d| d.raison_sociale.trim().to_owned())
            .unwrap_or_default();
        let mut aliases = p.alias_list();
        if !declared.is_empty()
            && fold(&declared) != fold(&p.raison_sociale)
            && !aliases.iter().any(|a| fold(a) == fold(&declared))
        {
            aliases.push(declared);
            let mut active = p.clone().into_active_model();
            active.aliases = sea_orm::Set(serde_json::to_string(&aliases).unwrap_or_default());
            active.version = sea_orm::Set(p.version + 1);
            active.updated_at = sea_orm::Set(Utc::now());
            active.update(&txn).await?;
        }
        let mut f = old.clone();
        f.promoteur_id = p.id.clone();
        f.promoteur = Some(fiche_promoteur(&p));
        let changed = changed_fields(&old, &f);
        self.commit(txn, who, row, f, FeedEvent::Updated(changed))
            .await
    }

    /// Fiches showing any of `ids`, each re-pointed to / refreshed with `survivor` and published
    /// as updated. Returns how many.
    async fn refresh_fiches(
        &self,
        txn: &DatabaseTransaction,
        who: &Principal,
        ids: &[String],
        survivor: &promoteur::Model,
    ) -> Result<i32, ApiError> {
        let rows = fiche::Entity::find()
            .filter(fiche::Column::PromoteurId.is_in(ids.iter().cloned()))
            .all(txn)
            .await?;
        let n = rows.len() as i32;
        for row in rows {
            let old = decoded(&row)?;
            let mut f = old.clone();
            f.promoteur_id = survivor.id.clone();
            f.promoteur = Some(fiche_promoteur(survivor));
            let changed = changed_fields(&old, &f);
            if changed.is_empty() {
                continue;
            }
            self.write_fiche(txn, who, row, &mut f, FeedEvent::Updated(changed))
                .await?;
        }
        Ok(n)
    }

    /// For an ambassadeur: every fiche of these promoteurs must be in his régions.
    async fn check_promoteurs_in_scope<C: ConnectionTrait>(
        db: &C,
        scope: &Scope,
        ids: &[String],
    ) -> Result<(), ApiError> {
        if *scope == Scope::All {
            return Ok(());
        }
        let regions: Vec<String> = fiche::Entity::find()
            .select_only()
            .column(fiche::Column::RegionCode)
            .filter(fiche::Column::PromoteurId.is_in(ids.iter().cloned()))
            .into_tuple()
            .all(db)
            .await?;
        if regions.iter().any(|r| !scope.covers(r)) {
            return Err(ApiError::PermissionDenied(
                "promoteur has fiches outside the caller's régions".into(),
            ));
        }
        Ok(())
    }

    /// Merges `merged` into `survivor`.
    pub async fn merge_promoteurs(
        &self,
        who: &Principal,
        survivor: pb::MergeSource,
        merged: Vec<pb::MergeSource>,
    ) -> Result<(pb::Promoteur, i32), ApiError> {
        let scope = self.scope(who).await?;
        if merged.is_empty() {
            return Err(ApiError::invalid(
                "merged",
                "Indiquez au moins un promoteur à fusionner",
            ));
        }
        let mut seen = BTreeSet::from([survivor.promoteur_id.clone()]);
        for (i, m) in merged.iter().enumerate() {
            if !seen.insert(m.promoteur_id.clone()) {
                return Err(ApiError::invalid(
                    format!("merged[{i}]"),
                    "Ce promoteur est déjà cité (survivant ou doublon)",
                ));
            }
        }
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let load = |s: &pb::MergeSource| {
            let txn = &txn;
            let id = s.promoteur_id.clone();
            let expected = s.expected_version;
            async move {
                let m = promoteur::Entity::find_by_id(id.clone())
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound {
                        resource: "promoteur",
                        id: id.clone(),
                    })?;
                if m.version != expected {
                    return Err(ApiError::VersionConflict {
                        resource: "promoteur",
                        id,
                        expected,
                        current: m.version,
                    });
                }
                if m.merged_into_id.is_some() {
                    return Err(ApiError::wrong_state(
                        "PROMOTEUR_MERGED",
                        "merged",
                        "Ce promoteur a déjà été fusionné",
                    ));
                }
                Ok(m)
            }
        };
        let surv = load(&survivor).await?;
        let mut others = Vec::new();
        for m in &merged {
            others.push(load(m).await?);
        }
        let sirets: BTreeSet<&str> = std::iter::once(&surv)
            .chain(others.iter())
            .filter_map(|p| p.siret.as_deref())
            .collect();
        if sirets.len() > 1 {
            return Err(ApiError::invalid(
                "merged",
                "Ces promoteurs ont des SIRET différents : ce ne sont pas des doublons",
            ));
        }
        let mut ids: Vec<String> = others.iter().map(|o| o.id.clone()).collect();
        ids.push(surv.id.clone());
        Self::check_promoteurs_in_scope(&txn, &scope, &ids).await?;
        ids.pop();
        let now = Utc::now();
        let mut aliases = surv.alias_list();
        let mut siret = surv.siret.clone();
        for o in &others {
            for name in std::iter::once(o.raison_sociale.clone()).chain(o.alias_list()) {
                if !name.is_empty()
                    && fold(&name) != fold(&surv.raison_sociale)
                    && !aliases.iter().any(|a| fold(a) == fold(&name))
                {
                    aliases.push(name);
                }
            }
            if siret.is_none() {
                siret.clone_from(&o.siret);
            }
            let mut active = o.clone().into_active_model();
            active.siret = sea_orm::Set(None);
            active.merged_into_id = sea_orm::Set(Some(surv.id.clone()));
            active.version = sea_orm::Set(o.version + 1);
            active.updated_at = sea_orm::Set(now);
            active.update(&txn).await?;
        }
        let mut s = surv.clone();
        s.siren = siret
            .as_deref()
            .map(|x| x.chars().take(9).collect())
            .unwrap_or_default();
        s.siret = siret;
        s.aliases = serde_json::to_string(&aliases).unwrap_or_default();
        s.version += 1;
        s.updated_at = now;
        s.clone()
            .into_active_model()
            .reset_all()
            .update(&txn)
            .await?;
        let n = self.refresh_fiches(&txn, who, &ids, &s).await?;
        txn.commit().await?;
        self.relay.wake();
        let count = self.fiche_counts().await?.get(&s.id).copied().unwrap_or(0);
        Ok((promoteur_pb(&s, count), n))
    }

    /// Updates the fields of promoteur `id` named in `paths`.
    pub async fn update_promoteur(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
        p: pb::Promoteur,
        paths: Vec<String>,
    ) -> Result<pb::Promoteur, ApiError> {
        let scope = self.scope(who).await?;
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask", "Aucun champ à modifier"));
        }
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let mut m = promoteur::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or(ApiError::NotFound {
                resource: "promoteur",
                id: id.to_owned(),
            })?;
        if m.version != expected_version {
            return Err(ApiError::VersionConflict {
                resource: "promoteur",
                id: id.to_owned(),
                expected: expected_version,
                current: m.version,
            });
        }
        if m.merged_into_id.is_some() {
            return Err(ApiError::wrong_state(
                "PROMOTEUR_MERGED",
                "merged",
                "Ce promoteur a été fusionné : modifiez le promoteur conservé",
            ));
        }
        Self::check_promoteurs_in_scope(&txn, &scope, &[id.to_owned()]).await?;
        let mut violations = Vec::new();
        validate_promoteur(&p, "promoteur.", &mut violations, Some(&paths));
        for (i, path) in paths.iter().enumerate() {
            match path.as_str() {
                "siret" => {
                    let s = p.siret.trim().to_owned();
                    m.siren = s.chars().take(9).collect();
                    m.siret = Some(s).filter(|s| !s.is_empty());
                }
                "raison_sociale" => m.raison_sociale = p.raison_sociale.trim().to_owned(),
                "type_structure" => m.type_structure = p.type_structure.trim().to_owned(),
                "adresse" => m.adresse = p.adresse.trim().to_owned(),
                "commune_code" => m.commune_code = p.commune_code.trim().to_owned(),
                "telephone" => m.telephone = p.telephone.trim().to_owned(),
                "email" => m.email = p.email.trim().to_lowercase(),
                "site_web" => m.site_web = p.site_web.trim().to_owned(),
                "aliases" => {
                    m.aliases = serde_json::to_string(
                        &p.aliases
                            .iter()
                            .map(|a| a.trim().to_owned())
                            .filter(|a| !a.is_empty())
                            .collect::<Vec<_>>(),
                    )
                    .unwrap_or_default()
                }
                _ => violations.push(Violation::new(
                    format!("update_mask.paths[{i}]"),
                    "Champ inconnu ou non modifiable",
                )),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations));
        }
        if let Some(s) = &m.siret
            && let Some(taken) = promoteur::Entity::find()
                .filter(promoteur::Column::Siret.eq(s.clone()))
                .filter(promoteur::Column::Id.ne(id))
                .one(&txn)
                .await?
        {
            return Err(ApiError::AlreadyExists {
                resource: "promoteur",
                id: taken.id,
            });
        }
        m.version += 1;
        m.updated_at = Utc::now();
        m.clone()
            .into_active_model()
            .reset_all()
            .update(&txn)
            .await?;
        self.refresh_fiches(&txn, who, &[id.to_owned()], &m).await?;
        txn.commit().await?;
        self.relay.wake();
        let count = self.fiche_counts().await?.get(&m.id).copied().unwrap_or(0);
        Ok(promoteur_pb(&m, count))
    }

    // ----------------------------------------------------------------------------------------
    // Ambassadeurs (admin configuration)
    // ----------------------------------------------------------------------------------------

    /// Replaces the ambassadeurs of `region_code`.
    pub async fn set_ambassadeurs(
        &self,
        who: &Principal,
        region_code: &str,
        expected_version: i64,
        list: Vec<pb::Ambassadeur>,
    ) -> Result<pb::RegionAmbassadeurs, ApiError> {
        who.require(Role::Admin)?;
        let mut violations = Vec::new();
        if !mapping::is_region(region_code) {
            violations.push(Violation::new("region_code", "Code de région inconnu"));
        }
        let mut seen = BTreeSet::new();
        let mut rows = Vec::new();
        for (i, a) in list.into_iter().enumerate() {
            let email = a.email.trim().to_lowercase();
            if !is_email(&email) {
                violations.push(Violation::new(
                    format!("ambassadeurs[{i}].email"),
                    "Adresse électronique invalide",
                ));
            } else if !seen.insert(email.clone()) {
                violations.push(Violation::new(
                    format!("ambassadeurs[{i}].email"),
                    "Cette adresse est déjà dans la liste",
                ));
            }
            rows.push(AmbassadeurRow {
                email,
                structure: a.structure.trim().to_owned(),
            });
        }
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations));
        }
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let current = region::Entity::find_by_id(region_code.to_owned())
            .one(&txn)
            .await?;
        let version = current.as_ref().map(|r| r.version).unwrap_or(0);
        if version != expected_version {
            return Err(ApiError::VersionConflict {
                resource: "région",
                id: region_code.to_owned(),
                expected: expected_version,
                current: version,
            });
        }
        let m = region::Model {
            region_code: region_code.to_owned(),
            ambassadeurs: serde_json::to_string(&rows).unwrap_or_default(),
            version: version + 1,
            updated_at: Utc::now(),
        };
        if current.is_some() {
            m.clone()
                .into_active_model()
                .reset_all()
                .update(&txn)
                .await?;
        } else {
            region::ActiveModel::from(m.clone()).insert(&txn).await?;
        }
        txn.commit().await?;
        Ok(region_pb(&m))
    }

    /// The ambassadeurs per région (an ambassadeur sees his régions only).
    pub async fn list_ambassadeurs(
        &self,
        who: &Principal,
        region_code: &str,
    ) -> Result<Vec<pb::RegionAmbassadeurs>, ApiError> {
        let scope = self.scope(who).await?;
        let rows = region::Entity::find()
            .order_by_asc(region::Column::RegionCode)
            .all(self.db())
            .await?;
        Ok(rows
            .iter()
            .filter(|r| scope.covers(&r.region_code))
            .filter(|r| region_code.is_empty() || r.region_code == region_code)
            .map(region_pb)
            .collect())
    }
}

fn region_pb(m: &region::Model) -> pb::RegionAmbassadeurs {
    pb::RegionAmbassadeurs {
        region_code: m.region_code.clone(),
        ambassadeurs: serde_json::from_str::<Vec<AmbassadeurRow>>(&m.ambassadeurs)
            .unwrap_or_default()
            .into_iter()
            .map(|a| pb::Ambassadeur {
                email: a.email,
                structure: a.structure,
            })
            .collect(),
        version: m.version,
        updated_at: Some(timestamp(m.updated_at)),
    }
}

fn correction_pb(m: &correction::Model) -> pb::Correction {
    pb::Correction {
        id: m.id.clone(),
        fiche_id: m.fiche_id.clone(),
        field: m.field.clone(),
        original_value: to_pb_value(unjson(&m.original_value)),
        old_value: to_pb_value(unjson(&m.old_value)),
        new_value: to_pb_value(unjson(&m.new_value)),
        actor: Some(ev::Actor {
            email: m.actor_email.clone(),
            role: if m.actor_role == "admin" {
                ev::Role::Admin
            } else {
                ev::Role::Ambassadeur
            } as i32,
        }),
        at: Some(timestamp(m.at)),
        fiche_version: m.fiche_version,
    }
}

fn suggestion(f: &ev::Fiche, score: f64, reasons: Vec<i32>) -> pb::ChainSuggestion {
    pb::ChainSuggestion {
        fiche: Some(link(f)),
        promoteur_name: f
            .promoteur
            .as_ref()
            .map(|p| p.raison_sociale.clone())
            .unwrap_or_default(),
        score,
        reasons,
    }
}

fn rank(mut out: Vec<pb::ChainSuggestion>, limit: i32) -> Vec<pb::ChainSuggestion> {
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(page_size(limit, 5, 20) as usize);
    out
}

fn validate_promoteur(
    p: &pb::Promoteur,
    prefix: &str,
    v: &mut Vec<Violation>,
    only: Option<&[String]>,
) {
    let checks = |f: &str| only.is_none_or(|paths| paths.iter().any(|p| p == f));
    if checks("siret") && !p.siret.trim().is_empty() && !is_siret(p.siret.trim()) {
        v.push(Violation::new(
            format!("{prefix}siret"),
            "Le SIRET doit compter 14 chiffres et être valide",
        ));
    }
    if checks("raison_sociale") && p.raison_sociale.trim().is_empty() {
        v.push(Violation::new(
            format!("{prefix}raison_sociale"),
            "La raison sociale est obligatoire",
        ));
    }
    if checks("raison_sociale") && p.raison_sociale.len() > 500 {
        v.push(Violation::new(
            format!("{prefix}raison_sociale"),
            "La raison sociale est trop longue (500 caractères au plus)",
        ));
    }
    if checks("commune_code")
        && !p.commune_code.trim().is_empty()
        && !is_commune_code(p.commune_code.trim())
    {
        v.push(Violation::new(
            format!("{prefix}commune_code"),
            "Code INSEE de commune invalide",
        ));
    }
    if checks("email") && !p.email.trim().is_empty() && !is_email(p.email.trim()) {
        v.push(Violation::new(
            format!("{prefix}email"),
            "Adresse électronique invalide",
        ));
    }
}

/// The thesaurus lists a field's labels come from (`data/thesaurus.json`), if any.
fn thesaurus_lists(path: &str) -> &'static [&'static str] {
    match path {
        "publics" => &["publics_prioritaires_AAP (sourced)", "publics_autres"],
        "financeurs" => &["financeurs"],
        "niveau_geographique" => &["niveaux_geographiques"],
        "action_details.objectifs" => &["objectifs_action"],
        "action_details.outils" => &["outils"],
        "action_details.type_action" => &["types_action"],
        "action_details.type_lieu" => &["types_lieu"],
        _ => &[],
    }
}

/// Whether `label` is in one of `lists` of the thesaurus.
fn in_thesaurus(lists: &[&str], label: &str) -> bool {
    static THESAURUS: std::sync::OnceLock<HashMap<String, Vec<String>>> =
        std::sync::OnceLock::new();
    let t = THESAURUS.get_or_init(|| {
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_str(include_str!("../../data/thesaurus.json")).unwrap_or_default();
        raw.into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::from_value::<Vec<String>>(v).ok()?)))
            .collect()
    });
    lists.iter().any(|l| {
        t.get(*l)
            .is_some_and(|values| values.iter().any(|v| v == label))
    })
}

/// A French message when `value` brings a label that is neither in the thesaurus nor already
/// on the fiche (`current`).
fn check_thesaurus(path: &str, current: &Option<Stored>, value: &Option<Stored>) -> Option<String> {
    let lists = thesaurus_lists(path);
    if lists.is_empty() {
        return None;
    }
    let present = |label: &str| match current {
        Some(Stored::Text(t)) => t == label,
        Some(Stored::Texts(l)) => l.iter().any(|v| v == label),
        _ => false,
    };
    let labels: Vec<&str> = match value {
        Some(Stored::Text(t)) => vec![t.as_str()],
        Some(Stored::Texts(l)) => l.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    labels
        .into_iter()
        .find(|label| !present(label) && !in_thesaurus(lists, label))
        .map(|label| format!("« {label} » n'est pas une valeur du thésaurus OSCARS"))
}

/// Every field a correction may change.
pub(crate) fn correctable_fields() -> impl Iterator<Item = &'static str> {
    TEXT_FIELDS
        .iter()
        .chain(LIST_FIELDS)
        .chain(NUMBER_FIELDS)
        .copied()
}

/// Text fields a correction may change.
const TEXT_FIELDS: &[&str] = &[
    "title",
    "start_date",
    "end_date",
    "description",
    "partenaires",
    "niveau_geographique",
    "departement_code",
    "commune_code",
    "projet_details.contexte",
    "projet_details.objectifs",
    "action_details.type_action",
    "action_details.type_action_precision",
    "action_details.public_precision",
    "action_details.nom_lieu",
    "action_details.type_lieu",
    "action_details.type_lieu_precision",
    "action_details.objectifs_precision",
    "action_details.outil_precision",
    "action_details.indicateurs_evaluation",
    "action_details.observation",
];
/// List fields a correction may change.
const LIST_FIELDS: &[&str] = &[
    "publics",
    "financeurs",
    "projet_details.commune_codes",
    "projet_details.departement_codes",
    "action_details.objectifs",
    "action_details.outils",
];
/// Number fields a correction may change.
const NUMBER_FIELDS: &[&str] = &["action_details.latitude", "action_details.longitude"];

fn projet_details(f: &mut ev::Fiche) -> Option<&mut ev::ProjetDetails> {
    match &mut f.details {
        Some(ev::fiche::Details::ProjetDetails(d)) => Some(d),
        _ => None,
    }
}

fn action_details(f: &mut ev::Fiche) -> Option<&mut ev::ActionDetails> {
    match &mut f.details {
        Some(ev::fiche::Details::ActionDetails(d)) => Some(d),
        _ => None,
    }
}

/// The value of field `path` of `f` (None when empty or not applicable).
pub(crate) fn get_field(f: &ev::Fiche, path: &str) -> Option<Stored> {
    let mut f = f.clone();
    let text = |s: &str| {
        Some(s.to_owned())
            .filter(|s| !s.is_empty())
            .map(Stored::Text)
    };
    let list = |l: &[String]| {
        Some(l.to_vec())
            .filter(|l| !l.is_empty())
            .map(Stored::Texts)
    };
    match path {
        "title" => text(&f.title),
        "start_date" => text(&f.start_date),
        "end_date" => text(&f.end_date),
        "description" => text(&f.description),
        "partenaires" => text(&f.partenaires),
        "niveau_geographique" => text(&f.niveau_geographique),
        "departement_code" => text(&f.departement_code),
        "commune_code" => text(&f.commune_code),
        "publics" => list(&f.publics),
        "financeurs" => list(&f.financeurs),
        p if p.starts_with("projet_details.") => {
            let d = projet_details(&mut f)?;
            match p {
                "projet_details.contexte" => text(&d.contexte),
                "projet_details.objectifs" => text(&d.objectifs),
                "projet_details.commune_codes" => list(&d.commune_codes),
                "projet_details.departement_codes" => list(&d.departement_codes),
                _ => None,
            }
        }
        p if p.starts_with("action_details.") => {
            let d = action_details(&mut f)?;
            match p {
                "action_details.type_action" => text(&d.type_action),
                "action_details.type_action_precision" => text(&d.type_action_precision),
                "action_details.public_precision" => text(&d.public_precision),
                "action_details.nom_lieu" => text(&d.nom_lieu),
                "action_details.type_lieu" => text(&d.type_lieu),
                "action_details.type_lieu_precision" => text(&d.type_lieu_precision),
                "action_details.objectifs_precision" => text(&d.objectifs_precision),
                "action_details.outil_precision" => text(&d.outil_precision),
                "action_details.indicateurs_evaluation" => text(&d.indicateurs_evaluation),
                "action_details.observation" => text(&d.observation),
                "action_details.objectifs" => list(&d.objectifs),
                "action_details.outils" => list(&d.outils),
                "action_details.latitude" => d.latitude.map(Stored::Number),
                "action_details.longitude" => d.longitude.map(Stored::Number),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Sets field `path` of `f` to `value` (None clears it); a French message when refused.
pub(crate) fn set_field(
    f: &mut ev::Fiche,
    path: &str,
    value: Option<Stored>,
) -> Result<(), String> {
    let kind = if TEXT_FIELDS.contains(&path) {
        "text"
    } else if LIST_FIELDS.contains(&path) {
        "texts"
    } else if NUMBER_FIELDS.contains(&path) {
        "number"
    } else {
        return Err(format!(
            "Le champ « {path} » n'existe pas ou ne se corrige pas"
        ));
    };
    let is_projet = f.kind() == ev::DossierKind::Projet;
    if (path.starts_with("projet_details.") && !is_projet)
        || (path.starts_with("action_details.") && is_projet)
    {
        return Err(format!(
            "Le champ « {path} » ne s'applique pas à {}",
            kind_label(f.kind())
        ));
    }
    let (text, list, number) = match (&value, kind) {
        (None, _) => (String::new(), Vec::new(), None),
        (Some(Stored::Text(t)), "text") => (t.clone(), Vec::new(), None),
        (Some(Stored::Texts(l)), "texts") => (String::new(), l.clone(), None),
        (Some(Stored::Number(n)), "number") => (String::new(), Vec::new(), Some(*n)),
        _ => {
            return Err(match kind {
                "text" => "Ce champ attend un texte",
                "texts" => "Ce champ attend une liste de valeurs",
                _ => "Ce champ attend un nombre",
            }
            .to_owned());
        }
    };
    if text.chars().count() > 10_000 {
        return Err("Texte trop long (10 000 caractères au plus)".into());
    }
    // Control characters (a NUL byte fails in PostgreSQL `text` and in the public exports);
    // line breaks and tabs are text.
    let control = |v: &str| {
        v.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    };
    if control(&text) || list.iter().any(|v| control(v)) {
        return Err("Le texte contient des caractères non autorisés".into());
    }
    if list.iter().any(|v| v.is_empty() || v.chars().count() > 500) || list.len() > 100 {
        return Err("Liste invalide : valeurs vides ou trop longues".into());
    }
    let mut unique = BTreeMap::new();
    for v in &list {
        if unique.insert(v.clone(), ()).is_some() {
            return Err(format!("La valeur « {v} » est en double"));
        }
    }
    match path {
        "start_date" | "end_date" if !text.is_empty() && !is_date(&text) => {
            return Err("Date invalide (AAAA-MM-JJ attendu)".into());
        }
        "departement_code" if !text.is_empty() && !mapping::is_departement(&text) => {
            return Err("Code de département inconnu".into());
        }
        "commune_code" if !text.is_empty() && !is_commune_code(&text) => {
            return Err("Code INSEE de commune invalide".into());
        }
        "projet_details.departement_codes" if list.iter().any(|d| !mapping::is_departement(d)) => {
            return Err("Code de département inconnu".into());
        }
        "projet_details.commune_codes" if list.iter().any(|c| !is_commune_code(c)) => {
            return Err("Code INSEE de commune invalide".into());
        }
        "action_details.latitude" if number.is_some_and(|n| !(-90.0..=90.0).contains(&n)) => {
            return Err("Latitude hors de [-90, 90]".into());
        }
        "action_details.longitude" if number.is_some_and(|n| !(-180.0..=180.0).contains(&n)) => {
            return Err("Longitude hors de [-180, 180]".into());
        }
        _ => {}
    }
    match path {
        "title" => f.title = text,
        "start_date" => f.start_date = text,
        "end_date" => f.end_date = text,
        "description" => f.description = text,
        "partenaires" => f.partenaires = text,
        "niveau_geographique" => f.niveau_geographique = text,
        "departement_code" => f.departement_code = text,
        "commune_code" => f.commune_code = text,
        "publics" => f.publics = list,
        "financeurs" => f.financeurs = list,
        p if p.starts_with("projet_details.") => {
            let Some(d) = projet_details(f) else {
                return Err("Fiche sans détails de projet".into());
            };
            match p {
                "projet_details.contexte" => d.contexte = text,
                "projet_details.objectifs" => d.objectifs = text,
                "projet_details.commune_codes" => d.commune_codes = list,
                _ => d.departement_codes = list,
            }
        }
        p => {
            let Some(d) = action_details(f) else {
                return Err("Fiche sans détails d'action".into());
            };
            match p {
                "action_details.type_action" => d.type_action = text,
                "action_details.type_action_precision" => d.type_action_precision = text,
                "action_details.public_precision" => d.public_precision = text,
                "action_details.nom_lieu" => d.nom_lieu = text,
                "action_details.type_lieu" => d.type_lieu = text,
                "action_details.type_lieu_precision" => d.type_lieu_precision = text,
                "action_details.objectifs_precision" => d.objectifs_precision = text,
                "action_details.outil_precision" => d.outil_precision = text,
                "action_details.indicateurs_evaluation" => d.indicateurs_evaluation = text,
                "action_details.observation" => d.observation = text,
                "action_details.objectifs" => d.objectifs = list,
                "action_details.outils" => d.outils = list,
                "action_details.latitude" => d.latitude = number,
                _ => d.longitude = number,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_renewed_from_year_to_year_are_similar_and_unrelated_ones_are_not() {
        let a = "Stand Mois sans tabac au centre social Saint-Louis";
        let b = "Stand Mois sans tabac au centre social Saint-Louis, édition 2023";
        assert!(similarity(a, b) > 0.7);
        assert!(similarity(a, "Atelier cuisine") < 0.1);
    }

    #[test]
    fn a_siret_passes_the_luhn_check_and_a_typo_does_not() {
        assert!(is_siret("73282932000074"));
        assert!(!is_siret("73282932000075"));
        assert!(!is_siret("7328293200007"));
    }

    #[test]
    fn a_correction_of_the_wrong_kind_or_an_unknown_field_is_refused_in_french() {
        let mut f = ev::Fiche {
            kind: ev::DossierKind::Action as i32,
            details: Some(ev::fiche::Details::ActionDetails(Default::default())),
            ..Default::default()
        };
        assert!(set_field(&mut f, "status", None).is_err());
        assert!(set_field(&mut f, "title", Some(Stored::Number(1.0))).is_err());
        assert!(set_field(&mut f, "projet_details.contexte", None).is_err());
        assert!(
            set_field(
                &mut f,
                "start_date",
                Some(Stored::Text("2024-02-30".into()))
            )
            .is_err()
        );
        set_field(
            &mut f,
            "action_details.nom_lieu",
            Some(Stored::Text("Salle".into())),
        )
        .unwrap();
        assert_eq!(
            get_field(&f, "action_details.nom_lieu"),
            Some(Stored::Text("Salle".into()))
        );
    }

    #[test]
    fn a_corrected_label_comes_from_the_thesaurus_or_is_already_on_the_fiche() {
        let current = Some(Stored::Texts(vec!["Habitants des QPV".into()]));
        let ok = Some(Stored::Texts(vec![
            "Habitants des QPV".into(),
            "Fumeurs".into(),
            "Étudiants".into(),
        ]));
        assert_eq!(check_thesaurus("publics", &current, &ok), None);
        let bad = Some(Stored::Texts(vec!["Fumeurs".into(), "Martiens".into()]));
        assert!(
            check_thesaurus("publics", &current, &bad)
                .unwrap()
                .contains("Martiens")
        );
        let t = Some(Stored::Text("Stand / journée d'information".into()));
        assert_eq!(
            check_thesaurus("action_details.type_action", &None, &t),
            None
        );
        assert!(check_thesaurus("niveau_geographique", &None, &t).is_some());
        assert_eq!(check_thesaurus("title", &None, &t), None);
    }

    #[test]
    fn page_tokens_are_bound_to_their_filter() {
        let t = page_token(50, "a");
        assert_eq!(page_offset(&t, "a").unwrap(), 50);
        assert!(page_offset(&t, "b").is_err());
        assert!(page_offset("50.xyz", "a").is_err());
    }
}
