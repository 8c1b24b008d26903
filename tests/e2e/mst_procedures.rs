//! The two shipped *Mois sans tabac 2024* procedures (issue 3): they load by builtin id and are
//! published, loading them again changes nothing, and they refuse dossiers while closed; once
//! their closing date is cleared, a complete realistic Projet and its Action are filled over
//! several autosaves, deposited, and routed to the groupe of the chosen CPAM.

use std::collections::BTreeSet;
use std::time::Duration;

use mst_e2e::{Services, Stack};
use mst_kit::auth::Role;
use mst_proto::events::DossierStatus;
use mst_proto::forms as pb;
use mst_proto::forms::champ_value::Value as V;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::support::*;

pub(crate) const PROJET: &str = "mst-2024-projet";
pub(crate) const ACTION: &str = "mst-2024-action";
/// The promoteur: the referent of an association of Marseille.
pub(crate) const PROMOTEUR: &str = "marie.dupont@asso-souffle.fr";
/// Another promoteur, of another structure.
pub(crate) const OTHER_PROMOTEUR: &str = "karim.benali@csapa-lestaque.fr";
pub(crate) const INSTRUCTEUR_13: &str = "claire.roussel@assurance-maladie.example";
const GROUPE_LABEL: &str = "CPAM des Bouches-du-Rhône";

// ---------------------------------------------------------------------------------------------
// Procedures
// ---------------------------------------------------------------------------------------------

async fn load_builtin(stack: &impl Services, id: &str) -> pb::LoadProcedureResponse {
    forms_admin(stack)
        .await
        .load_procedure(admin(pb::LoadProcedureRequest {
            source: Some(pb::load_procedure_request::Source::BuiltinId(id.into())),
            publish: true,
        }))
        .await
        .unwrap_or_else(|e| panic!("loading {id}: {e:?}"))
        .into_inner()
}

/// Clears the closing date of `procedure` (the shipped definitions close in 2024).
pub(crate) async fn clear_closing_date(
    stack: &impl Services,
    procedure: &pb::Procedure,
) -> pb::Procedure {
    let mut request = pb::UpdateProcedureRequest {
        procedure_id: procedure.id.clone(),
        expected_version: procedure.version,
        procedure: Some(pb::Procedure {
            id: procedure.id.clone(),
            closing_at: None,
            ..Default::default()
        }),
        update_mask: Some(Default::default()),
    };
    if let Some(mask) = request.update_mask.as_mut() {
        mask.paths.push("closing_at".into());
    }
    forms_admin(stack)
        .await
        .update_procedure(admin(request))
        .await
        .unwrap_or_else(|e| panic!("clearing the closing date of {}: {e:?}", procedure.id))
        .into_inner()
        .procedure
        .unwrap()
}

/// Both procedures loaded, published and open; returns their published revisions.
pub(crate) async fn open_procedures(stack: &impl Services) -> (pb::Revision, pb::Revision) {
    let mut revisions = Vec::new();
    for id in [PROJET, ACTION] {
        let loaded = load_builtin(stack, id).await;
        assert_eq!(loaded.outcome, pb::LoadOutcome::Created as i32);
        clear_closing_date(stack, loaded.procedure.as_ref().unwrap()).await;
        revisions.push(loaded.revision.unwrap());
    }
    let action = revisions.pop().unwrap();
    (revisions.pop().unwrap(), action)
}

pub(crate) async fn try_create(
    stack: &impl Services,
    owner: &str,
    procedure: &str,
) -> Result<pb::Dossier, tonic::Status> {
    forms(stack)
        .await
        .create_dossier(promoteur(
            owner,
            pb::CreateDossierRequest {
                procedure_id: procedure.into(),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner().dossier.unwrap())
}

/// Ids of the fields that take an answer (not sections nor explications), top level.
fn answerable(revision: &pb::Revision) -> BTreeSet<String> {
    revision
        .fields
        .iter()
        .filter(|f| {
            f.r#type != pb::FieldType::HeaderSection as i32
                && f.r#type != pb::FieldType::Explication as i32
        })
        .map(|f| f.id.clone())
        .collect()
}

fn field<'r>(revision: &'r pb::Revision, id: &str) -> &'r pb::FieldDefinition {
    revision
        .fields
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no field {id}"))
}

/// The allowed values of a choice field.
fn choice_values(def: &pb::FieldDefinition) -> Vec<String> {
    match &def.constraints {
        Some(pb::field_definition::Constraints::Choice(c)) => c.values.clone(),
        other => panic!("{} has no choice constraints: {other:?}", def.id),
    }
}

/// The libellé of `departement`'s CPAM in the shipped `cpam.csv` (single-caisse départements).
pub(crate) fn cpam_of(departement: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/forms/data/cpam.csv"
    );
    let csv = std::fs::read_to_string(path).unwrap();
    let found: Vec<&str> = csv
        .lines()
        .skip(1)
        .filter(|l| l.rsplit(',').next() == Some(departement))
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "one caisse in {departement}: {found:?}");
    found[0].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Roster, answers, files, errors
// ---------------------------------------------------------------------------------------------

/// A groupe routed by the exact CPAM value and by its département, with one instructeur.
pub(crate) async fn roster_groupe(stack: &impl Services, cpam: &str, departement: &str) -> String {
    let mut client = roster(stack).await;
    let groupe = client
        .create_groupe(admin(mst_proto::instruction::CreateGroupeRequest {
            label: GROUPE_LABEL.into(),
            cpam_values: vec![cpam.into()],
            departement_codes: vec![departement.into()],
            is_default: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .groupe
        .unwrap();
    client
        .add_instructeur(admin(mst_proto::instruction::AddInstructeurRequest {
            email: INSTRUCTEUR_13.into(),
            groupe_id: groupe.id.clone(),
            name: "Claire Roussel".into(),
        }))
        .await
        .unwrap();
    groupe.id
}

pub(crate) fn principal(email: &str, roles: &[Role]) -> mst_kit::auth::Principal {
    mst_kit::auth::Principal {
        email: email.into(),
        name: None,
        roles: roles.iter().copied().collect(),
    }
}

/// Sum of the Luhn algorithm over `digits` (every second digit from the right doubled).
fn luhn_sum(digits: &str) -> u32 {
    digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum()
}

/// `payload` followed by its Luhn check digit.
fn with_luhn_key(payload: &str) -> String {
    let key = (10 - luhn_sum(&format!("{payload}0")) % 10) % 10;
    format!("{payload}{key}")
}

/// A SIRET valid the way Sirene builds them: a SIREN with its own Luhn key, then an NIC whose
/// last digit makes the 14 digits pass the Luhn check.
pub(crate) fn siret(siren_payload: &str, nic_payload: &str) -> String {
    let siren = with_luhn_key(siren_payload);
    assert_eq!(luhn_sum(&siren) % 10, 0);
    let siret = with_luhn_key(&format!("{siren}{nic_payload}"));
    assert_eq!((siret.len(), luhn_sum(&siret) % 10), (14, 0));
    siret
}

/// The same SIRET with a wrong check digit (a typing mistake).
fn mistyped(siret: &str) -> String {
    let (head, last) = siret.split_at(13);
    let wrong = (last.parse::<u8>().unwrap() + 1) % 10;
    format!("{head}{wrong}")
}

pub(crate) fn choice(value: &str) -> V {
    V::DropDown(pb::Choice {
        choice: Some(pb::choice::Choice::Value(value.into())),
    })
}

fn choice_other(text: &str) -> V {
    V::DropDown(pb::Choice {
        choice: Some(pb::choice::Choice::Other(text.into())),
    })
}

pub(crate) fn multi(values: &[&str], other: Option<&str>) -> V {
    V::MultiDropDown(pb::MultiChoice {
        values: values.iter().map(|v| (*v).to_owned()).collect(),
        other: other.map(str::to_owned),
    })
}

pub(crate) fn marseille_address(
    street: &str,
    postal_code: &str,
    latitude: f64,
    longitude: f64,
) -> V {
    V::Address(pb::Address {
        label: format!("{street} {postal_code} Marseille"),
        street: street.into(),
        postal_code: postal_code.into(),
        city: "Marseille".into(),
        commune_code: "13055".into(),
        departement_code: "13".into(),
        region_code: "93".into(),
        latitude: Some(latitude),
        longitude: Some(longitude),
    })
}

/// A small, well-formed one-page PDF (objects, cross-reference table and trailer).
pub(crate) fn pdf(line: &str) -> Vec<u8> {
    let content = format!("BT /F1 14 Tf 72 770 Td ({line}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> \
         /Contents 5 0 R >>"
            .to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).into_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).into_bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").into_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .into_bytes(),
    );
    out
}

/// Uploads `content` as a PDF to the piece justificative `field_id` (metadata, then chunks).
pub(crate) async fn upload_pdf(
    stack: &impl Services,
    who: &str,
    number: i64,
    field_id: &str,
    file_name: &str,
    content: Vec<u8>,
) -> pb::UploadChampFileResponse {
    use pb::upload_champ_file_request::Payload;
    let mut messages = vec![pb::UploadChampFileRequest {
        payload: Some(Payload::Metadata(pb::UploadChampFileMetadata {
            number,
            field_id: field_id.into(),
            row: None,
            file_name: file_name.into(),
            content_type: "application/pdf".into(),
            size_bytes: content.len() as i64,
            expected_version: None,
        })),
    }];
    for chunk in content.chunks(512) {
        messages.push(pb::UploadChampFileRequest {
            payload: Some(Payload::Chunk(chunk.to_vec())),
        });
    }
    forms(stack)
        .await
        .upload_champ_file(promoteur(who, tokio_stream::iter(messages)))
        .await
        .unwrap_or_else(|e| panic!("upload of {file_name}: {e:?}"))
        .into_inner()
}

/// Saves `patches` at the dossier's current version and checks that the version moved on.
pub(crate) async fn autosave(
    stack: &impl Services,
    who: &str,
    dossier: &pb::Dossier,
    patches: Vec<pb::ChampPatch>,
) -> pb::Dossier {
    let saved = update(stack, who, dossier.number, dossier.version, patches)
        .await
        .unwrap_or_else(|e| panic!("autosave of dossier {}: {e:?}", dossier.number));
    assert_eq!(saved.version, dossier.version + 1);
    saved
}

/// The field paths of an INVALID_ARGUMENT with BadRequest, with their messages.
fn violations(err: &tonic::Status) -> Vec<(String, String)> {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    err.get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

fn paths(err: &tonic::Status) -> Vec<String> {
    violations(err).into_iter().map(|(p, _)| p).collect()
}

fn answer<'d>(dossier: &'d pb::Dossier, id: &str) -> &'d V {
    dossier
        .champs
        .iter()
        .find(|c| c.field_id == id)
        .and_then(|c| c.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .unwrap_or_else(|| panic!("{id} is not answered"))
}

fn answered(dossier: &pb::Dossier) -> BTreeSet<String> {
    dossier.champs.iter().map(|c| c.field_id.clone()).collect()
}

fn hidden(dossier: &pb::Dossier, id: &str) -> bool {
    dossier.hidden_field_ids.iter().any(|h| h == id)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_two_mst_procedures_load_published_then_unchanged_and_take_dossiers_once_their_closing_date_is_cleared()
 {
    let stack = Stack::start().await.unwrap();
    for (id, kind, top_level_fields) in [
        (PROJET, mst_proto::events::DossierKind::Projet, 44),
        (ACTION, mst_proto::events::DossierKind::Action, 38),
    ] {
        let loaded = load_builtin(&stack, id).await;
        assert_eq!(loaded.outcome, pb::LoadOutcome::Created as i32, "{id}");
        let procedure = loaded.procedure.unwrap();
        let revision = loaded.revision.unwrap();
        assert_eq!(procedure.id, id);
        assert_eq!(procedure.kind, kind as i32, "{id}");
        assert!(
            procedure
                .title
                .starts_with("Mois sans tabac 2024 – Appel à projets Assurance Maladie")
        );
        assert_eq!(revision.state, pb::RevisionState::Published as i32, "{id}");
        assert_eq!(procedure.published_revision_id, revision.id, "{id}");
        assert_eq!(
            revision.fields.len(),
            top_level_fields,
            "{id}: as the procedures README says"
        );
        assert!(
            procedure.closing_at.is_some(),
            "{id} ships with its 2024 closing date"
        );
        assert_eq!(
            procedure.state,
            pb::ProcedureState::Closed as i32,
            "{id}: closed since 2024"
        );

        let again = load_builtin(&stack, id).await;
        assert_eq!(again.outcome, pb::LoadOutcome::Unchanged as i32, "{id}");
        let same = again.procedure.unwrap();
        assert_eq!(same.version, procedure.version, "{id}");
        assert_eq!(again.revision.unwrap().id, revision.id, "{id}");

        let err = try_create(&stack, PROMOTEUR, id).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{id}: {err:?}");
        assert_eq!(
            err.get_details_error_info().expect("ErrorInfo").reason,
            "PROCEDURE_CLOSED"
        );

        let open = clear_closing_date(&stack, &procedure).await;
        assert_eq!(open.closing_at, None, "{id}");
        assert_eq!(open.version, procedure.version + 1, "{id}");
        assert_eq!(open.state, pb::ProcedureState::Published as i32, "{id}");
        let brouillon = try_create(&stack, PROMOTEUR, id).await.unwrap();
        assert_eq!(brouillon.status, DossierStatus::Brouillon as i32);
        assert_eq!(brouillon.revision_id, revision.id);
        assert_eq!(brouillon.procedure.unwrap().id, id);
    }
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_complete_realistic_projet_and_its_action_are_filled_over_several_autosaves_deposited_and_routed_to_their_cpam()
 {
    let stack = Stack::start().await.unwrap();
    let (projet_form, action_form) = open_procedures(&stack).await;

    // The CPAM the promoteur chooses: the drop-down's value for the Bouches-du-Rhône is the
    // libellé of cpam.csv, and the groupe is routed by that exact value.
    let cpam = cpam_of("13");
    assert_eq!(cpam, "CPAM des Bouches-du-Rhône (13)");
    assert!(choice_values(field(&projet_form, "p_cpam")).contains(&cpam));
    assert!(choice_values(field(&action_form, "a_cpam")).contains(&cpam));
    let groupe_id = roster_groupe(&stack, &cpam, "13").await;

    let siret = siret("78452316", "0001");

    // ----- Projet -----
    let d = try_create(&stack, PROMOTEUR, PROJET).await.unwrap();
    for conditional in [
        "p_projet_precedent",
        "p_communes",
        "p_partenaires",
        "p_cofinancements",
    ] {
        assert!(
            hidden(&d, conditional),
            "{conditional} is hidden until its question is answered"
        );
    }

    // Autosave 1 — the structure, with a mistyped SIRET first: refused, nothing kept.
    let structure = vec![
        set("p_siret", V::Siret(siret.clone())),
        set(
            "p_raison_sociale",
            text("Association Souffle – Prévention santé Marseille"),
        ),
        set("p_type_structure", choice("Association")),
        set(
            "p_adresse",
            marseille_address("12 rue d'Italie", "13006", 43.2886, 5.3822),
        ),
        set("p_contact_nom", text("Marie Dupont")),
        set("p_contact_email", V::Email(PROMOTEUR.into())),
        set("p_contact_tel", V::Phone("04 91 55 20 13".into())),
        set("p_aucun_lien_tabac", V::Checkbox(true)),
    ];
    let mut typo = structure.clone();
    typo[0] = set("p_siret", V::Siret(mistyped(&siret)));
    let err = update(&stack, PROMOTEUR, d.number, d.version, typo)
        .await
        .unwrap_err();
    assert_eq!(paths(&err), ["p_siret"]);
    let d = autosave(&stack, PROMOTEUR, &d, structure).await;
    assert_eq!(
        answer(&d, "p_contact_tel"),
        &V::Phone("+33491552013".into())
    );

    // Autosave 2 — territory, title, renewal (which reveals the previous projet).
    let d = autosave(
        &stack,
        PROMOTEUR,
        &d,
        vec![
            set("p_region", V::Region("93".into())),
            set("p_departement", V::Departement("13".into())),
            set("p_cpam", choice(&cpam)),
            set(
                "p_titre",
                text("Mois sans tabac 2024 dans les quartiers Nord de Marseille"),
            ),
            set("p_edition", V::Integer(2024)),
            set("p_renouvellement", V::YesNo(true)),
        ],
    )
    .await;
    assert!(!hidden(&d, "p_projet_precedent"));
    let headline = d.headline.clone().unwrap();
    assert_eq!(
        headline.title,
        "Mois sans tabac 2024 dans les quartiers Nord de Marseille"
    );
    assert_eq!(
        headline.structure_name,
        "Association Souffle – Prévention santé Marseille"
    );
    assert_eq!(
        (headline.siret.as_str(), headline.region_code.as_str()),
        (siret.as_str(), "93")
    );
    assert_eq!(
        (headline.departement_code.as_str(), headline.cpam.as_str()),
        ("13", cpam.as_str())
    );

    // Autosave 3 — description, publics, communes (intercommunal level), dates and numbers.
    let d = autosave(&stack, PROMOTEUR, &d, vec![
        set("p_projet_precedent", text("« Marseille respire », Mois sans tabac 2023")),
        set(
            "p_contexte",
            text(
                "Les 13e, 14e, 15e et 16e arrondissements de Marseille comptent plus de 40 % d'habitants \
                 vivant sous le seuil de pauvreté.\nLa prévalence du tabagisme quotidien y dépasse 30 % \
                 chez les 18-45 ans (Baromètre Santé publique France 2021, région PACA), et l'offre de \
                 sevrage y est rare : un seul CSAPA et peu de tabacologues libéraux.",
            ),
        ),
        set(
            "p_objectif_general",
            text("Réduire le tabagisme des habitants des quartiers Nord de Marseille en les aidant à arrêter pendant le mois de novembre."),
        ),
        set(
            "p_objectifs_operationnels",
            text(
                "1. Informer 1 500 habitants sur Mois sans tabac en octobre (stands dans 3 centres sociaux).\n\
                 2. Inscrire 200 fumeurs au défi.\n\
                 3. Proposer 60 consultations de tabacologie et la remise gratuite de substituts nicotiniques.",
            ),
        ),
        set(
            "p_publics",
            multi(
                &[
                    "Jeunes, notamment en formation professionnelle et en insertion",
                    "Publics en vulnérabilité sociale (C2S, insertion, recherche d'emploi, faible niveau d'études ou de revenu…)",
                ],
                Some("Habitants des quartiers prioritaires de la politique de la ville"),
            ),
        ),
        set("p_niveau_geo", choice("Intercommunal")),
        add_row("p_communes", "commune-marseille"),
        set_in_row("p_communes", "commune-marseille", "p_communes_commune", V::Commune("13055".into())),
        add_row("p_communes", "commune-septemes"),
        set_in_row("p_communes", "commune-septemes", "p_communes_commune", V::Commune("13106".into())),
        set("p_date_debut", V::Date("2024-10-07".into())),
        set("p_date_fin", V::Date("2024-11-29".into())),
        set("p_nb_actions", V::Integer(3)),
        set("p_nb_personnes_prevues", V::Integer(450)),
    ])
    .await;
    assert!(!hidden(&d, "p_communes"));

    // A first deposit attempt lists every required field still missing, in form order.
    let err = deposit(&stack, PROMOTEUR, d.number, d.version)
        .await
        .unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "p_avec_partenaires",
            "p_relais",
            "p_indicateurs",
            "p_budget_total",
            "p_montant_demande",
            "p_depenses",
            "p_avec_cofinancements",
            "p_pj_budget",
            "p_pj_rib",
            "p_engagement_bilan",
        ]
    );
    assert!(
        violations(&err)
            .iter()
            .all(|(_, message)| !message.is_empty())
    );

    // Autosave 4 — partners (revealed by « oui »), follow-up and indicators.
    let d = autosave(&stack, PROMOTEUR, &d, vec![
        set("p_avec_partenaires", V::YesNo(true)),
        add_row("p_partenaires", "partenaire-csapa"),
        set_in_row("p_partenaires", "partenaire-csapa", "p_partenaire_nom", text("CSAPA Le Sémaphore")),
        set_in_row(
            "p_partenaires",
            "partenaire-csapa",
            "p_partenaire_role",
            text("Consultations de tabacologie et orientation après le défi"),
        ),
        add_row("p_partenaires", "partenaire-mission-locale"),
        set_in_row(
            "p_partenaires",
            "partenaire-mission-locale",
            "p_partenaire_nom",
            text("Mission locale de Marseille"),
        ),
        set_in_row(
            "p_partenaires",
            "partenaire-mission-locale",
            "p_partenaire_role",
            text("Mobilisation des jeunes en insertion"),
        ),
        add_row("p_partenaires", "partenaire-pharmacie"),
        set_in_row("p_partenaires", "partenaire-pharmacie", "p_partenaire_nom", text("Pharmacie du Merlan")),
        set(
            "p_relais",
            text(
                "Orientation systématique vers Tabac info service (39 89 et application), prise de rendez-vous \
                 au CSAPA Le Sémaphore et relais par les médecins traitants du secteur.",
            ),
        ),
        set(
            "p_indicateurs",
            text(
                "Réalisation : nombre de stands et de personnes informées, nombre de consultations.\n\
                 Résultats : nombre d'inscrits au défi, abstinence déclarée à 30 jours (questionnaire).",
            ),
        ),
    ])
    .await;
    assert!(!hidden(&d, "p_partenaires"));

    // Autosave 5 — budget, with the amount requested mistyped above the total cost (only a
    // deposit compares the two fields).
    let depenses = [
        (
            "depense-vacations",
            choice("Vacations d'intervenants externes"),
            "8400.00",
            "Tabacologue, 24 demi-journées",
        ),
        (
            "depense-substituts",
            choice("Traitements d'aide au sevrage tabagique"),
            "4200.00",
            "Patchs et gommes, 60 personnes",
        ),
        (
            "depense-impression",
            choice("Supports de communication / impression"),
            "1850.50",
            "Affiches et flyers",
        ),
        (
            "depense-salles",
            choice("Location de salle / logistique"),
            "1200.00",
            "Stands et barnums",
        ),
        (
            "depense-formation",
            choice_other("Formation des bénévoles au repérage"),
            "2799.50",
            "Deux journées",
        ),
    ];
    let mut budget = vec![
        set("p_budget_total", V::Decimal("18450.00".into())),
        set("p_montant_demande", V::Decimal("21000.00".into())),
    ];
    for (row, poste, montant, detail) in depenses {
        budget.push(add_row("p_depenses", row));
        budget.push(set_in_row("p_depenses", row, "p_dep_poste", poste));
        budget.push(set_in_row(
            "p_depenses",
            row,
            "p_dep_montant",
            V::Decimal(montant.into()),
        ));
        budget.push(set_in_row("p_depenses", row, "p_dep_detail", text(detail)));
    }
    budget.push(set("p_avec_cofinancements", V::YesNo(true)));
    for (row, financeur, montant, statut) in [
        ("cofinancement-ars", "ARS", "3500.00", "Acquis"),
        (
            "cofinancement-ville",
            "Collectivités territoriales",
            "1450.00",
            "Demandé",
        ),
        (
            "cofinancement-fonds-propres",
            "Fonds propres",
            "1000.00",
            "Acquis",
        ),
    ] {
        budget.push(add_row("p_cofinancements", row));
        budget.push(set_in_row(
            "p_cofinancements",
            row,
            "p_cof_financeur",
            choice(financeur),
        ));
        budget.push(set_in_row(
            "p_cofinancements",
            row,
            "p_cof_montant",
            V::Decimal(montant.into()),
        ));
        budget.push(set_in_row(
            "p_cofinancements",
            row,
            "p_cof_statut",
            choice(statut),
        ));
    }
    let d = autosave(&stack, PROMOTEUR, &d, budget).await;
    assert!(!hidden(&d, "p_cofinancements"));

    // A second attempt: the amount above the total, the pieces and the commitment.
    let err = deposit(&stack, PROMOTEUR, d.number, d.version)
        .await
        .unwrap_err();
    let listed = violations(&err);
    let listed_paths: Vec<&str> = listed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        listed_paths,
        [
            "p_montant_demande",
            "p_pj_budget",
            "p_pj_rib",
            "p_engagement_bilan"
        ]
    );
    assert!(listed[0].1.contains("Coût total du projet"), "{listed:?}");

    // Autosave 6 — the corrected amount and the commitment; then the three pieces.
    let d = autosave(
        &stack,
        PROMOTEUR,
        &d,
        vec![
            set("p_montant_demande", V::Decimal("12500.00".into())),
            set("p_engagement_bilan", V::Checkbox(true)),
        ],
    )
    .await;
    let mut version = d.version;
    for (field_id, file_name, line) in [
        (
            "p_pj_budget",
            "budget-previsionnel-2024-signe.pdf",
            "Budget previsionnel 2024 - Association Souffle",
        ),
        (
            "p_pj_rib",
            "rib-association-souffle.pdf",
            "RIB - Association Souffle - FR76 ...",
        ),
        (
            "p_pj_statuts",
            "statuts-association-souffle.pdf",
            "Statuts de l'association Souffle",
        ),
    ] {
        let content = pdf(line);
        let uploaded = upload_pdf(
            &stack,
            PROMOTEUR,
            d.number,
            field_id,
            file_name,
            content.clone(),
        )
        .await;
        let file = uploaded.file.unwrap();
        assert_eq!(
            (file.file_name.as_str(), file.content_type.as_str()),
            (file_name, "application/pdf")
        );
        assert_eq!(file.size_bytes, content.len() as i64);
        assert_eq!(uploaded.version, version + 1);
        version = uploaded.version;
    }

    let d = promoteurs_view(&stack, PROMOTEUR, d.number).await;
    assert_eq!(d.version, version);
    assert_eq!(
        answered(&d),
        answerable(&projet_form),
        "every field of the Projet is answered"
    );
    assert!(d.hidden_field_ids.is_empty(), "{:?}", d.hidden_field_ids);
    let projet = deposit(&stack, PROMOTEUR, d.number, d.version)
        .await
        .unwrap();
    assert_eq!(projet.status, DossierStatus::EnConstruction as i32);
    assert!(projet.deposited_at.is_some());

    // ----- Action -----
    let a = try_create(&stack, PROMOTEUR, ACTION).await.unwrap();
    assert!(a.number != projet.number);
    for conditional in [
        "a_action_precedente",
        "a_type_action_precision",
        "a_objectifs_precision",
        "a_public_precision",
        "a_type_lieu_precision",
        "a_outils_precision",
    ] {
        assert!(
            hidden(&a, conditional),
            "{conditional} is hidden until its question is answered"
        );
    }

    // A number typed wrong: the Projet of another promoteur cannot be linked (and nothing of
    // the refused save is kept).
    let theirs = try_create(&stack, OTHER_PROMOTEUR, PROJET).await.unwrap();
    autosave(
        &stack,
        OTHER_PROMOTEUR,
        &theirs,
        vec![set("p_titre", text("Mois sans tabac à L'Estaque"))],
    )
    .await;
    let err = update(
        &stack,
        PROMOTEUR,
        a.number,
        a.version,
        vec![
            set("a_projet_dossier", V::DossierLink(theirs.number)),
            set(
                "a_raison_sociale",
                text("Association Souffle – Prévention santé Marseille"),
            ),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(paths(&err), ["a_projet_dossier"]);
    assert_eq!(
        promoteurs_view(&stack, PROMOTEUR, a.number).await.version,
        a.version
    );

    // Autosave 1 — attachment to the Projet, structure and CPAM, renewal.
    let a = autosave(
        &stack,
        PROMOTEUR,
        &a,
        vec![
            set("a_projet_dossier", V::DossierLink(projet.number)),
            set("a_siret", V::Siret(siret.clone())),
            set(
                "a_raison_sociale",
                text("Association Souffle – Prévention santé Marseille"),
            ),
            set("a_cpam", choice(&cpam)),
            set("a_renouvellement", V::YesNo(true)),
        ],
    )
    .await;
    assert!(!hidden(&a, "a_action_precedente"));

    // Autosave 2 — the action itself; its choices reveal their OSCARS précisions.
    let a = autosave(&stack, PROMOTEUR, &a, vec![
        set("a_action_precedente", text("Stand Mois sans tabac au centre social Saint-Louis, édition 2023")),
        set("a_titre", text("Stand d'information et mesure du CO au centre social Saint-Louis")),
        set("a_date_debut", V::Date("2024-10-15".into())),
        set("a_date_fin", V::Date("2024-11-26".into())),
        set("a_type_action", choice("Stand / journée d'information")),
        set(
            "a_objectifs",
            multi(
                &[
                    "Susciter l'intérêt ou l'inscription à l'opération (stand d'information sur l'opération et ses outils, affichage, inviter les fumeurs à s'inscrire sur le site ou appli TIS...)",
                    "Accompagner l'arrêt (consultation, atelier collectif, substituts nicotiniques…)",
                ],
                None,
            ),
        ),
        set(
            "a_description",
            text(
                "Chaque mardi matin d'octobre et de novembre, un stand tenu par une tabacologue et deux \
                 bénévoles accueille les habitants dans le hall du centre social.\nMesure du CO expiré, \
                 remise du kit Mois sans tabac, inscription au défi et prise de rendez-vous au CSAPA.",
            ),
        ),
        set("a_nb_seances", V::Integer(7)),
    ])
    .await;
    for revealed in ["a_type_action_precision", "a_objectifs_precision"] {
        assert!(!hidden(&a, revealed), "{revealed}");
    }

    // Autosave 3 — précisions, public and place.
    let a = autosave(&stack, PROMOTEUR, &a, vec![
        set("a_type_action_precision", text("Stand hebdomadaire avec mesure du CO expiré")),
        set(
            "a_objectifs_precision",
            text("Inscrire au moins 40 fumeurs au défi et orienter 15 personnes vers une consultation."),
        ),
        set(
            "a_public",
            multi(
                &[
                    "Publics en vulnérabilité sociale (C2S, insertion, recherche d'emploi, faible niveau d'études ou de revenu…)",
                    "Habitants / tout public",
                    "Fumeurs",
                ],
                None,
            ),
        ),
        set("a_public_precision", text("Usagers du centre social et habitants du 15e arrondissement")),
        set("a_ages", multi(&["18-25 ans", "26-45 ans", "46-64 ans"], None)),
        set("a_nb_personnes_prevues", V::Integer(120)),
        set("a_nom_lieu", text("Centre social Saint-Louis")),
        set("a_type_lieu", choice("Structure sociale / hébergement")),
        set("a_type_lieu_precision", text("Centre social agréé par la CAF")),
        set("a_adresse", marseille_address("172 rue de Lyon", "13015", 43.3420, 5.3548)),
        set("a_commune", V::Commune("13055".into())),
        set("a_departement", V::Departement("13".into())),
        set("a_niveau_geo", choice("Communal")),
    ])
    .await;

    // Autosave 4 — means and public contact.
    let a = autosave(&stack, PROMOTEUR, &a, vec![
        set(
            "a_partenaires",
            text("CSAPA Le Sémaphore : tabacologue.\nCentre social Saint-Louis : accueil et mobilisation des usagers."),
        ),
        set(
            "a_outils",
            multi(
                &[
                    "Kit d'aide à l'arrêt Mois sans tabac",
                    "Application Tabac info service",
                    "Testeur de CO",
                    "Substituts nicotiniques",
                ],
                None,
            ),
        ),
        set("a_outils_precision", text("Testeur de CO prêté par le CSAPA")),
        set("a_financeurs", multi(&["Assurance Maladie - Régime général", "ARS"], None)),
        set("a_contact_public_email", V::Email("mois-sans-tabac@asso-souffle.fr".into())),
        set("a_contact_public_tel", V::Phone("06 12 34 56 78".into())),
    ])
    .await;
    assert_eq!(
        answered(&a),
        answerable(&action_form),
        "every field of the Action is answered"
    );
    assert!(a.hidden_field_ids.is_empty(), "{:?}", a.hidden_field_ids);
    assert_eq!(
        answer(&a, "a_projet_dossier"),
        &V::DossierLink(projet.number)
    );

    let action = deposit(&stack, PROMOTEUR, a.number, a.version)
        .await
        .unwrap();
    assert_eq!(action.status, DossierStatus::EnConstruction as i32);

    // ----- Instruction: both en construction, in the CPAM 13 groupe -----
    let instructeur = principal(INSTRUCTEUR_13, &[Role::Instructeur]);
    for (number, procedure, title) in [
        (
            projet.number,
            PROJET,
            "Mois sans tabac 2024 dans les quartiers Nord de Marseille",
        ),
        (
            action.number,
            ACTION,
            "Stand d'information et mesure du CO au centre social Saint-Louis",
        ),
    ] {
        let view = stack
            .instruction
            .dossier(&instructeur, number)
            .await
            .unwrap();
        assert_eq!(view.row.status, "en_construction", "{number}");
        assert_eq!(view.row.procedure_id, procedure);
        assert_eq!(
            view.row.groupe_id.as_deref(),
            Some(groupe_id.as_str()),
            "{number}"
        );
        assert_eq!(view.groupe_label.as_deref(), Some(GROUPE_LABEL));
        assert_eq!(view.row.owner_email, PROMOTEUR);
        assert_eq!(
            (view.row.cpam.as_str(), view.row.departement_code.as_str()),
            (cpam.as_str(), "13")
        );
        assert_eq!(view.row.siret, siret);
        assert_eq!(view.row.title, title);
    }
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn an_action_links_only_to_an_existing_projet_of_its_own_promoteur() {
    let stack = Stack::start().await.unwrap();
    open_procedures(&stack).await;
    let own_projet = try_create(&stack, PROMOTEUR, PROJET).await.unwrap();
    let other_action = try_create(&stack, PROMOTEUR, ACTION).await.unwrap();
    let their_projet = try_create(&stack, OTHER_PROMOTEUR, PROJET).await.unwrap();
    let a = try_create(&stack, PROMOTEUR, ACTION).await.unwrap();

    let refused = |target: i64| {
        let stack = &stack;
        let a = &a;
        async move {
            let err = update(
                stack,
                PROMOTEUR,
                a.number,
                a.version,
                vec![set("a_projet_dossier", V::DossierLink(target))],
            )
            .await
            .unwrap_err();
            let listed = violations(&err);
            assert_eq!(listed.len(), 1, "{target}: {listed:?}");
            assert_eq!(listed[0].0, "a_projet_dossier", "{target}");
            listed[0].1.clone()
        }
    };
    // Another promoteur's Projet reads like a number that does not exist.
    let theirs = refused(their_projet.number).await;
    assert_eq!(
        theirs,
        refused(999_999)
            .await
            .replace("999999", &their_projet.number.to_string())
    );
    // An Action is not a Projet; a dossier is not its own Projet.
    assert!(refused(other_action.number).await.contains(PROJET));
    refused(a.number).await;
    assert_eq!(
        promoteurs_view(&stack, PROMOTEUR, a.number).await.version,
        a.version,
        "nothing of the refused saves is kept"
    );

    // The own Projet may be linked while still a brouillon (mustBeDeposited is false).
    let linked = autosave(
        &stack,
        PROMOTEUR,
        &a,
        vec![set("a_projet_dossier", V::DossierLink(own_projet.number))],
    )
    .await;
    assert_eq!(
        answer(&linked, "a_projet_dossier"),
        &V::DossierLink(own_projet.number)
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
