//! The public read API: visible fiches only, without their internal fields; filters on région,
//! département, commune, year, type d'action, public, kind and free text; exports in JSON (the
//! proto3 JSON mapping of `mst.events.v1.Fiche`) and CSV, produced page by page while streaming.

use mst_kit::ApiError;
use mst_proto::events as ev;
use mst_proto::oscars as pb;
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use super::ambassadeur::{Page, page_offset, page_size, page_token};
use super::{Oscars, decoded};
use crate::mapping;
use crate::store::{self, fiche};

/// Rows read per step of an export.
const EXPORT_BATCH: u64 = 200;

/// A fiche as the public sees it: without `internal`.
pub fn public_view(mut f: ev::Fiche) -> ev::Fiche {
    f.internal = None;
    f
}

/// The SQL condition of `filter` (visible fiches only).
pub fn condition(filter: &pb::PublicFicheFilter) -> Result<Condition, ApiError> {
    let pb::PublicFicheFilter {
        region_code,
        departement_code,
        commune_code,
        year,
        type_action,
        target_public,
        kind,
        text,
    } = filter;
    let mut violations = Vec::new();
    let mut cond = Condition::all().add(fiche::Column::Visible.eq(true));
    if !region_code.is_empty() {
        if !mapping::is_region(region_code) {
            violations.push(mst_kit::error::Violation::new(
                "filter.region_code",
                "Code de région inconnu",
            ));
        }
        cond = cond.add(fiche::Column::RegionCode.eq(region_code.clone()));
    }
    if !departement_code.is_empty() {
        if !mapping::is_departement(departement_code) {
            violations.push(mst_kit::error::Violation::new(
                "filter.departement_code",
                "Code de département inconnu",
            ));
        }
        cond = cond.add(fiche::Column::DepartementCode.eq(departement_code.clone()));
    }
    if !commune_code.is_empty() {
        if commune_code.len() != 5 || !commune_code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            violations.push(mst_kit::error::Violation::new(
                "filter.commune_code",
                "Code INSEE de commune invalide",
            ));
        }
        cond = cond.add(fiche::Column::CommuneCode.eq(commune_code.clone()));
    }
    if let Some(y) = year {
        cond = cond.add(fiche::Column::Year.eq(*y));
    }
    if !type_action.is_empty() {
        cond = cond.add(fiche::Column::TypeAction.eq(type_action.clone()));
    }
    if !target_public.is_empty() {
        if target_public.contains('|') {
            violations.push(mst_kit::error::Violation::new(
                "filter.target_public",
                "Public invalide",
            ));
        }
        cond = cond.add(fiche::Column::PublicsKey.contains(format!("|{target_public}|")));
    }
    match ev::DossierKind::try_from(*kind) {
        Ok(ev::DossierKind::Unspecified) => {}
        Ok(k) => cond = cond.add(fiche::Column::Kind.eq(store::kind_name(k))),
        Err(_) => violations.push(mst_kit::error::Violation::new(
            "filter.kind",
            "Type de fiche inconnu",
        )),
    }
    if !text.trim().is_empty() {
        cond = cond.add(fiche::Column::SearchText.contains(text.trim().to_lowercase()));
    }
    if !violations.is_empty() {
        return Err(ApiError::Invalid(violations));
    }
    Ok(cond)
}

impl Oscars {
    /// Visible fiches matching `filter`, by title.
    pub async fn public_list(
        &self,
        filter: &pb::PublicFicheFilter,
        size: i32,
        token: &str,
    ) -> Result<Page<ev::Fiche>, ApiError> {
        let cond = condition(filter)?;
        let fingerprint = format!("public {filter:?}");
        let offset = page_offset(token, &fingerprint)?;
        let size = page_size(size, 50, 200);
        let query = fiche::Entity::find().filter(cond);
        let total = query.clone().count(self.db()).await?;
        let rows = self.public_rows(filter, offset, size).await?;
        let end = offset + rows.len() as u64;
        Ok(Page {
            items: rows,
            next: if end < total {
                page_token(end, &fingerprint)
            } else {
                String::new()
            },
            total: total as i64,
        })
    }

    /// Up to `limit` visible fiches matching `filter` from `offset`, by title then id.
    pub async fn public_rows(
        &self,
        filter: &pb::PublicFicheFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<ev::Fiche>, ApiError> {
        let rows = fiche::Entity::find()
            .filter(condition(filter)?)
            .order_by_asc(fiche::Column::SearchText)
            .order_by_asc(fiche::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(self.db())
            .await?;
        rows.iter().map(|r| decoded(r).map(public_view)).collect()
    }

    /// Up to `limit` visible fiches matching `filter` after the sort key `after` (keyset: an
    /// export never skips nor repeats a fiche however long it streams), with the key of the last.
    pub async fn public_rows_after(
        &self,
        filter: &pb::PublicFicheFilter,
        after: Option<(String, String)>,
        limit: u64,
    ) -> Result<(Vec<ev::Fiche>, Option<(String, String)>), ApiError> {
        let mut cond = condition(filter)?;
        if let Some((text, id)) = after {
            cond = cond.add(
                Condition::any()
                    .add(fiche::Column::SearchText.gt(text.clone()))
                    .add(
                        Condition::all()
                            .add(fiche::Column::SearchText.eq(text))
                            .add(fiche::Column::Id.gt(id)),
                    ),
            );
        }
        let rows = fiche::Entity::find()
            .filter(cond)
            .order_by_asc(fiche::Column::SearchText)
            .order_by_asc(fiche::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        let last = rows.last().map(|r| (r.search_text.clone(), r.id.clone()));
        let fiches = rows
            .iter()
            .map(|r| decoded(r).map(public_view))
            .collect::<Result<_, _>>()?;
        Ok((fiches, last))
    }

    /// One visible fiche.
    pub async fn public_get(&self, id: &str) -> Result<ev::Fiche, ApiError> {
        let not_found = || ApiError::NotFound {
            resource: "fiche",
            id: id.to_owned(),
        };
        let row = fiche::Entity::find_by_id(id.to_owned())
            .filter(fiche::Column::Visible.eq(true))
            .one(self.db())
            .await?
            .ok_or_else(not_found)?;
        decoded(&row).map(public_view)
    }

    /// The export of `filter` as a stream of byte chunks (the caller sends the header first).
    pub fn export(
        &self,
        filter: pb::PublicFicheFilter,
        csv: bool,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, ApiError>> + Send + 'static {
        let this = self.clone();
        futures::stream::unfold(
            (Some(None::<(String, String)>), true),
            move |(after, first)| {
                let this = this.clone();
                let filter = filter.clone();
                async move {
                    let after = after?;
                    let (rows, last) =
                        match this.public_rows_after(&filter, after, EXPORT_BATCH).await {
                            Ok(page) => page,
                            Err(e) => return Some((Err(e), (None, false))),
                        };
                    let done = (rows.len() as u64) < EXPORT_BATCH;
                    let mut out = Vec::new();
                    if first {
                        if csv {
                            out.extend_from_slice(csv_header().as_bytes());
                        } else {
                            out.push(b'[');
                        }
                    }
                    for (i, f) in rows.iter().enumerate() {
                        if csv {
                            out.extend_from_slice(csv_line(f).as_bytes());
                        } else {
                            if !(first && i == 0) {
                                out.push(b',');
                            }
                            match mst_proto::json::encode("mst.events.v1.Fiche", f) {
                                Ok(j) => out.extend_from_slice(j.as_bytes()),
                                Err(e) => {
                                    return Some((
                                        Err(ApiError::Unexpected(anyhow::anyhow!("{e}"))),
                                        (None, false),
                                    ));
                                }
                            }
                        }
                    }
                    if done && !csv {
                        out.push(b']');
                    }
                    let next = if done { None } else { Some(last) };
                    Some((Ok(out), (next, false)))
                }
            },
        )
    }
}

/// CSV columns (French labels as on oscarsante.org fiches).
const COLUMNS: &[&str] = &[
    "Identifiant",
    "Type de fiche",
    "Dossier",
    "Année",
    "Région",
    "Département",
    "Commune",
    "Titre",
    "Porteur de l'action",
    "SIRET",
    "Date de début",
    "Date de fin",
    "Type d'action",
    "Type d'action précision",
    "Public",
    "Public précision",
    "Nom du lieu de l'action",
    "Type de lieu",
    "Niveau géographique",
    "Objectifs de l'action",
    "Description",
    "Partenaire de l'action",
    "Outils",
    "Financeur",
    "Projet",
    "Action chaînée avec",
];

fn csv_header() -> String {
    let mut s = COLUMNS
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    s.push('\n');
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// "{titre} - {année}" of a link, as the public fiche shows it.
pub fn chained_label(l: &ev::FicheLink) -> String {
    format!("{} - {}", l.title, l.year)
}

fn csv_line(f: &ev::Fiche) -> String {
    let d = match &f.details {
        Some(ev::fiche::Details::ActionDetails(d)) => d.clone(),
        _ => ev::ActionDetails::default(),
    };
    let objectifs = match &f.details {
        Some(ev::fiche::Details::ProjetDetails(p)) => p.objectifs.clone(),
        _ => d.objectifs.join(" | "),
    };
    let p = f.promoteur.clone().unwrap_or_default();
    let values = [
        f.id.clone(),
        store::kind_name(f.kind()).to_owned(),
        f.dossier_number.to_string(),
        f.year.to_string(),
        f.region_code.clone(),
        f.departement_code.clone(),
        f.commune_code.clone(),
        f.title.clone(),
        p.raison_sociale,
        p.siret,
        f.start_date.clone(),
        f.end_date.clone(),
        d.type_action.clone(),
        d.type_action_precision.clone(),
        f.publics.join(" | "),
        d.public_precision.clone(),
        d.nom_lieu.clone(),
        d.type_lieu.clone(),
        f.niveau_geographique.clone(),
        objectifs,
        f.description.clone(),
        f.partenaires.clone(),
        d.outils.join(" | "),
        f.financeurs.join(" | "),
        f.projet.as_ref().map(chained_label).unwrap_or_default(),
        f.chained_previous
            .as_ref()
            .map(chained_label)
            .unwrap_or_default(),
    ];
    let mut s = values
        .iter()
        .map(|v| csv_field(v))
        .collect::<Vec<_>>()
        .join(",");
    s.push('\n');
    s
}
