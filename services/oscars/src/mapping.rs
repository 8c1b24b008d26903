//! From an accepted dossier to the content of its OSCARS fiche.
//!
//! The mapping is the one proposed in `../shared/data/oscars_schema.json`
//! (`mapping_ds_to_oscars`), applied to the fields of the two shipped procedures
//! (`services/forms/procedures/mst-2024-projet.json` and `mst-2024-action.json`). It is kept as data
//! ([`PROJET_FIELDS`], [`ACTION_FIELDS`]: fiche field ← form field) plus the few rules that are not
//! a plain copy (joined texts, the région of an action from its département, the financeurs of a
//! projet). Deviations from the proposal, because the forms have no such field: a projet's
//! `description` is its *objectif général* (the proposal has none), `montant_accorde` stays empty
//! (the granted amount is not a form answer), an action's `indicateurs_evaluation` and
//! `observation` stay empty (they belong to the bilan, not to the deposit) and its coordinates
//! come from the place's address as the promoteur chose it (no BAN geocoding here).

use std::collections::HashMap;
use std::sync::OnceLock;

use mst_proto::events as ev;
use mst_proto::forms as fpb;
use mst_proto::forms::champ_value::Value as V;

/// The OSCARS module of every fiche.
pub const MODULE: &str = "moisanstabac";

/// Funder implied by every Mois sans tabac projet (the call for projects is the Assurance
/// Maladie's), listed first (`oscars_schema.json`: "+ 'Assurance Maladie - Régime général'").
pub const ASSURANCE_MALADIE: &str = "Assurance Maladie - Régime général";

/// Fiche field ← projet form field.
pub const PROJET_FIELDS: &[(&str, &str)] = &[
    ("promoteur.siret", "p_siret"),
    ("promoteur.raison_sociale", "p_raison_sociale"),
    ("promoteur.type_structure", "p_type_structure"),
    ("promoteur.adresse", "p_adresse"),
    ("region_code", "p_region"),
    ("departement_code", "p_departement"),
    ("internal.cpam", "p_cpam"),
    ("title", "p_titre"),
    ("year", "p_edition"),
    ("projet_details.contexte", "p_contexte"),
    (
        "projet_details.objectifs",
        "p_objectif_general + p_objectifs_operationnels",
    ),
    ("description", "p_objectif_general"),
    ("publics", "p_publics"),
    ("niveau_geographique", "p_niveau_geo"),
    (
        "projet_details.commune_codes",
        "p_communes[].p_communes_commune",
    ),
    ("commune_code", "p_communes[0].p_communes_commune"),
    ("start_date", "p_date_debut"),
    ("end_date", "p_date_fin"),
    (
        "partenaires",
        "p_partenaires[].p_partenaire_nom (p_partenaire_role)",
    ),
    (
        "financeurs",
        "Assurance Maladie - Régime général + p_cofinancements[].p_cof_financeur",
    ),
    ("dossier_number", "dossier.number"),
];

/// Fiche field ← action form field.
pub const ACTION_FIELDS: &[(&str, &str)] = &[
    ("projet (suggestion)", "a_projet_dossier"),
    ("promoteur.siret", "a_siret"),
    ("promoteur.raison_sociale", "a_raison_sociale"),
    ("promoteur.email", "a_contact_public_email"),
    ("promoteur.telephone", "a_contact_public_tel"),
    ("internal.cpam", "a_cpam"),
    ("title", "a_titre"),
    ("start_date", "a_date_debut"),
    ("end_date", "a_date_fin"),
    ("year", "year of a_date_debut"),
    ("action_details.type_action", "a_type_action"),
    (
        "action_details.type_action_precision",
        "a_type_action_precision",
    ),
    ("action_details.objectifs", "a_objectifs"),
    (
        "action_details.objectifs_precision",
        "a_objectifs_precision",
    ),
    ("description", "a_description"),
    ("publics", "a_public"),
    ("action_details.public_precision", "a_public_precision"),
    ("action_details.nom_lieu", "a_nom_lieu"),
    ("action_details.type_lieu", "a_type_lieu"),
    (
        "action_details.type_lieu_precision",
        "a_type_lieu_precision",
    ),
    ("action_details.latitude/longitude", "a_adresse"),
    ("commune_code", "a_commune"),
    ("departement_code", "a_departement"),
    ("region_code", "région of a_departement"),
    ("niveau_geographique", "a_niveau_geo"),
    ("partenaires", "a_partenaires"),
    ("action_details.outils", "a_outils"),
    ("action_details.outil_precision", "a_outils_precision"),
    ("financeurs", "a_financeurs"),
    ("dossier_number", "dossier.number"),
];

/// A dossier mapped to a fiche: the fiche content (no id, status, version nor timestamps yet)
/// and the dossier number its action links to.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The fiche content.
    pub fiche: ev::Fiche,
    /// For an action: the projet dossier it declares (`a_projet_dossier`).
    pub linked_projet_dossier: Option<i64>,
}

/// Région of a département (INSEE codes), from `data/departements.csv`.
pub fn region_of(departement: &str) -> Option<&'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        include_str!("../data/departements.csv")
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut parts = l.split(',');
                let code = parts.next()?;
                let region = parts.nth(1)?;
                Some((code, region))
            })
            .collect()
    })
    .get(departement)
    .copied()
}

/// Whether `code` is a région code of `data/regions.csv`.
pub fn is_region(code: &str) -> bool {
    include_str!("../data/regions.csv")
        .lines()
        .skip(1)
        .any(|l| l.split(',').next() == Some(code))
}

/// Whether `code` is a département code of `data/departements.csv`.
pub fn is_departement(code: &str) -> bool {
    region_of(code).is_some()
}

struct Answers<'d> {
    champs: HashMap<&'d str, &'d V>,
}

impl<'d> Answers<'d> {
    fn new(dossier: &'d fpb::Dossier) -> Self {
        let hidden: Vec<&str> = dossier
            .hidden_field_ids
            .iter()
            .map(String::as_str)
            .collect();
        Self {
            champs: dossier
                .champs
                .iter()
                .filter(|c| !hidden.contains(&c.field_id.as_str()))
                .filter_map(|c| Some((c.field_id.as_str(), c.value.as_ref()?.value.as_ref()?)))
                .collect(),
        }
    }

    fn get(&self, id: &str) -> Option<&'d V> {
        self.champs.get(id).copied()
    }

    /// A scalar answer as text (choices: the value or the "autre" text).
    fn text(&self, id: &str) -> String {
        self.get(id).map(scalar).unwrap_or_default()
    }

    /// A multiple choice as labels ("autre" text last).
    fn labels(&self, id: &str) -> Vec<String> {
        match self.get(id) {
            Some(V::MultiDropDown(m)) => m.values.iter().cloned().chain(m.other.clone()).collect(),
            Some(other) => {
                let s = scalar(other);
                if s.is_empty() { Vec::new() } else { vec![s] }
            }
            None => Vec::new(),
        }
    }

    fn rows(&self, id: &str) -> Vec<HashMap<&'d str, &'d V>> {
        match self.get(id) {
            Some(V::Repetition(r)) => r
                .rows
                .iter()
                .map(|row| {
                    row.champs
                        .iter()
                        .filter_map(|c| {
                            Some((c.field_id.as_str(), c.value.as_ref()?.value.as_ref()?))
                        })
                        .collect()
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn scalar(v: &V) -> String {
    match v {
        V::Text(s)
        | V::Decimal(s)
        | V::Date(s)
        | V::Siret(s)
        | V::Email(s)
        | V::Phone(s)
        | V::Commune(s)
        | V::Departement(s)
        | V::Region(s) => s.trim().to_owned(),
        V::Integer(i) | V::DossierLink(i) => i.to_string(),
        V::DropDown(c) => match &c.choice {
            Some(fpb::choice::Choice::Value(s) | fpb::choice::Choice::Other(s)) => {
                s.trim().to_owned()
            }
            None => String::new(),
        },
        V::Address(a) => a.label.trim().to_owned(),
        V::Checkbox(b) | V::YesNo(b) => if *b { "Oui" } else { "Non" }.to_owned(),
        V::MultiDropDown(m) => m
            .values
            .iter()
            .cloned()
            .chain(m.other.clone())
            .collect::<Vec<_>>()
            .join(" | "),
        V::Datetime(_) | V::Repetition(_) | V::PieceJustificative(_) => String::new(),
    }
}

fn row_text(row: &HashMap<&str, &V>, id: &str) -> String {
    row.get(id).map(|v| scalar(v)).unwrap_or_default()
}

fn year_of(date: &str) -> Option<i32> {
    date.get(..4)?.parse().ok()
}

/// The year in a procedure id such as `mst-2024-projet`.
fn procedure_year(procedure_id: &str) -> Option<i32> {
    procedure_id
        .split('-')
        .find(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

fn push_unique(list: &mut Vec<String>, value: String) {
    if !value.is_empty() && !list.contains(&value) {
        list.push(value);
    }
}

/// Maps `dossier` (read from forms with its answers) to its fiche content. `kind` comes from
/// the procedure of the dossier.
pub fn map_dossier(dossier: &fpb::Dossier, kind: ev::DossierKind) -> Imported {
    let a = Answers::new(dossier);
    let procedure_id = dossier
        .procedure
        .as_ref()
        .map(|p| p.id.as_str())
        .unwrap_or_default();
    let headline = dossier.headline.clone().unwrap_or_default();
    match kind {
        ev::DossierKind::Action => map_action(dossier, &a, procedure_id, &headline),
        _ => map_projet(dossier, &a, procedure_id, &headline),
    }
}

fn map_projet(
    dossier: &fpb::Dossier,
    a: &Answers<'_>,
    procedure_id: &str,
    headline: &fpb::DossierHeadline,
) -> Imported {
    let communes: Vec<String> = a
        .rows("p_communes")
        .iter()
        .map(|r| row_text(r, "p_communes_commune"))
        .filter(|c| !c.is_empty())
        .collect();
    let departement = a.text("p_departement");
    let region = Some(a.text("p_region"))
        .filter(|r| !r.is_empty())
        .or_else(|| Some(headline.region_code.clone()).filter(|r| !r.is_empty()))
        .or_else(|| region_of(&departement).map(str::to_owned))
        .unwrap_or_default();
    let start = a.text("p_date_debut");
    let year = match a.get("p_edition") {
        Some(V::Integer(y)) => i32::try_from(*y).ok(),
        _ => None,
    }
    .or_else(|| year_of(&start))
    .or_else(|| procedure_year(procedure_id))
    .unwrap_or_default();
    let objectif_general = a.text("p_objectif_general");
    let objectifs = [
        objectif_general.clone(),
        a.text("p_objectifs_operationnels"),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join("\n\n");
    let partenaires = a
        .rows("p_partenaires")
        .iter()
        .map(|r| {
            let (nom, role) = (
                row_text(r, "p_partenaire_nom"),
                row_text(r, "p_partenaire_role"),
            );
            if role.is_empty() {
                nom
            } else {
                format!("{nom} ({role})")
            }
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let mut financeurs = vec![ASSURANCE_MALADIE.to_owned()];
    for row in a.rows("p_cofinancements") {
        push_unique(&mut financeurs, row_text(&row, "p_cof_financeur"));
    }
    let (adresse, adresse_commune) = match a.get("p_adresse") {
        Some(V::Address(addr)) => (addr.label.clone(), addr.commune_code.clone()),
        _ => (String::new(), String::new()),
    };
    let fiche = ev::Fiche {
        kind: ev::DossierKind::Projet as i32,
        dossier_number: dossier.number,
        year,
        module: MODULE.to_owned(),
        region_code: region,
        departement_code: departement.clone(),
        commune_code: communes.first().cloned().unwrap_or_default(),
        title: a.text("p_titre"),
        promoteur: Some(ev::FichePromoteur {
            raison_sociale: a.text("p_raison_sociale"),
            siret: a.text("p_siret"),
            type_structure: a.text("p_type_structure"),
            adresse,
            commune_code: adresse_commune,
            ..Default::default()
        }),
        start_date: start,
        end_date: a.text("p_date_fin"),
        description: objectif_general,
        publics: a.labels("p_publics"),
        partenaires,
        financeurs,
        niveau_geographique: a.text("p_niveau_geo"),
        details: Some(ev::fiche::Details::ProjetDetails(ev::ProjetDetails {
            contexte: a.text("p_contexte"),
            objectifs,
            commune_codes: communes,
            departement_codes: if departement.is_empty() {
                Vec::new()
            } else {
                vec![departement]
            },
        })),
        internal: Some(ev::FicheInternal {
            cpam: a.text("p_cpam"),
            montant_accorde: String::new(),
        }),
        ..Default::default()
    };
    Imported {
        fiche,
        linked_projet_dossier: None,
    }
}

fn map_action(
    dossier: &fpb::Dossier,
    a: &Answers<'_>,
    procedure_id: &str,
    headline: &fpb::DossierHeadline,
) -> Imported {
    let departement = a.text("a_departement");
    let (latitude, longitude, address_region) = match a.get("a_adresse") {
        Some(V::Address(addr)) => (addr.latitude, addr.longitude, addr.region_code.clone()),
        _ => (None, None, String::new()),
    };
    let region = region_of(&departement)
        .map(str::to_owned)
        .or_else(|| Some(address_region).filter(|r| !r.is_empty()))
        .or_else(|| Some(headline.region_code.clone()).filter(|r| !r.is_empty()))
        .unwrap_or_default();
    let start = a.text("a_date_debut");
    let year = year_of(&start)
        .or_else(|| procedure_year(procedure_id))
        .unwrap_or_default();
    let linked = match a.get("a_projet_dossier") {
        Some(V::DossierLink(n)) => Some(*n),
        _ => None,
    };
    let fiche = ev::Fiche {
        kind: ev::DossierKind::Action as i32,
        dossier_number: dossier.number,
        year,
        module: MODULE.to_owned(),
        region_code: region,
        departement_code: departement,
        commune_code: a.text("a_commune"),
        title: a.text("a_titre"),
        promoteur: Some(ev::FichePromoteur {
            raison_sociale: a.text("a_raison_sociale"),
            siret: a.text("a_siret"),
            email: a.text("a_contact_public_email"),
            telephone: a.text("a_contact_public_tel"),
            ..Default::default()
        }),
        start_date: start,
        end_date: a.text("a_date_fin"),
        description: a.text("a_description"),
        publics: a.labels("a_public"),
        partenaires: a.text("a_partenaires"),
        financeurs: a.labels("a_financeurs"),
        niveau_geographique: a.text("a_niveau_geo"),
        details: Some(ev::fiche::Details::ActionDetails(ev::ActionDetails {
            type_action: a.text("a_type_action"),
            type_action_precision: a.text("a_type_action_precision"),
            public_precision: a.text("a_public_precision"),
            nom_lieu: a.text("a_nom_lieu"),
            type_lieu: a.text("a_type_lieu"),
            type_lieu_precision: a.text("a_type_lieu_precision"),
            latitude,
            longitude,
            objectifs: a.labels("a_objectifs"),
            objectifs_precision: a.text("a_objectifs_precision"),
            outils: a.labels("a_outils"),
            outil_precision: a.text("a_outils_precision"),
            indicateurs_evaluation: String::new(),
            observation: String::new(),
        })),
        internal: Some(ev::FicheInternal {
            cpam: a.text("a_cpam"),
            montant_accorde: String::new(),
        }),
        ..Default::default()
    };
    Imported {
        fiche,
        linked_projet_dossier: linked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn champ(id: &str, v: V) -> fpb::Champ {
        fpb::Champ {
            field_id: id.into(),
            value: Some(fpb::ChampValue { value: Some(v) }),
        }
    }

    #[test]
    fn an_action_takes_the_region_of_its_departement_and_its_year_from_its_start_date() {
        let dossier = fpb::Dossier {
            number: 7,
            procedure: Some(ev::ProcedureRef {
                id: "mst-2024-action".into(),
                ..Default::default()
            }),
            champs: vec![
                champ("a_titre", V::Text(" Stand ".into())),
                champ("a_departement", V::Departement("13".into())),
                champ("a_date_debut", V::Date("2025-10-01".into())),
                champ("a_projet_dossier", V::DossierLink(3)),
                champ(
                    "a_public",
                    V::MultiDropDown(fpb::MultiChoice {
                        values: vec!["Fumeurs".into()],
                        other: Some("Voisins".into()),
                    }),
                ),
                champ("a_nom_lieu", V::Text("caché".into())),
            ],
            hidden_field_ids: vec!["a_nom_lieu".into()],
            ..Default::default()
        };
        let m = map_dossier(&dossier, ev::DossierKind::Action);
        assert_eq!(m.fiche.title, "Stand");
        assert_eq!(m.fiche.region_code, "93");
        assert_eq!(m.fiche.year, 2025);
        assert_eq!(m.linked_projet_dossier, Some(3));
        assert_eq!(m.fiche.publics, ["Fumeurs", "Voisins"]);
        let Some(ev::fiche::Details::ActionDetails(d)) = m.fiche.details else {
            panic!("action details")
        };
        assert_eq!(d.nom_lieu, "", "hidden answers are not imported");
    }

    #[test]
    fn a_projet_lists_the_assurance_maladie_first_among_its_funders_once() {
        let row = |id: &str, f: &str| fpb::RepetitionRow {
            row_id: id.into(),
            champs: vec![champ(
                "p_cof_financeur",
                V::DropDown(fpb::Choice {
                    choice: Some(fpb::choice::Choice::Value(f.into())),
                }),
            )],
        };
        let dossier = fpb::Dossier {
            number: 3,
            champs: vec![
                champ("p_edition", V::Integer(2024)),
                champ(
                    "p_cofinancements",
                    V::Repetition(fpb::Repetition {
                        rows: vec![
                            row("a", "ARS"),
                            row("b", ASSURANCE_MALADIE),
                            row("c", "ARS"),
                        ],
                    }),
                ),
            ],
            ..Default::default()
        };
        let m = map_dossier(&dossier, ev::DossierKind::Projet);
        assert_eq!(m.fiche.financeurs, [ASSURANCE_MALADIE, "ARS"]);
        assert_eq!(m.fiche.year, 2024);
        assert_eq!(m.fiche.module, MODULE);
    }
}
