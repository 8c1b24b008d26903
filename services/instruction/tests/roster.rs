//! The roster, groupes and routing of the instruction service, on the database chosen by
//! `MST_TEST_DB` (SQLite by default, PostgreSQL with `MST_TEST_DB=postgres`): the use cases
//! directly, and the RosterService over a real gRPC server on port 0 with real tokens.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use mst_bus::RelayHandle;
use mst_instruction::app::roster::{
    GroupePatch, GroupeView, ImportOptions, ImportReport, LineOutcome, MAX_ROSTER_BYTES, NewGroupe,
};
use mst_instruction::app::{AppError, FormsFreeze, Instruction};
use mst_instruction::grpc::roster::RosterApi;
use mst_kit::auth::{AuthSettings, Authenticator, Principal, Role, mint_dev};
use mst_kit::config::DatabaseSettings;
use mst_migrations::MigratorTrait;
use mst_proto::instruction as pb;
use mst_proto::instruction::import_roster_request::Payload;
use mst_proto::instruction::roster_service_client::RosterServiceClient;
use mst_proto::instruction::roster_service_server::RosterServiceServer;
use mst_testkit::TestDb;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

struct TestApp {
    instruction: Instruction,
    _db: TestDb,
}

impl TestApp {
    fn db(&self) -> &DatabaseConnection {
        self.instruction.db()
    }
}

async fn spawn_app() -> TestApp {
    let test_db = TestDb::new().await.expect("test database");
    let db = mst_kit::db::connect(&DatabaseSettings {
        url: test_db.url().to_owned(),
        max_connections: 4,
        migrate_on_start: false,
    })
    .await
    .expect("connect");
    mst_migrations::instruction::Migrator::up(&db, None)
        .await
        .expect("migrate");
    TestApp {
        instruction: Instruction::new(db, RelayHandle::default(), FormsFreeze::unconfigured()),
        _db: test_db,
    }
}

fn person(email: &str, roles: &[Role]) -> Principal {
    Principal {
        email: email.to_owned(),
        name: None,
        roles: roles.iter().copied().collect::<BTreeSet<_>>(),
    }
}

fn admin() -> Principal {
    person("admin@mst.test", &[Role::Admin])
}

async fn groupe(
    app: &TestApp,
    label: &str,
    cpam: &[&str],
    deps: &[&str],
    is_default: bool,
) -> GroupeView {
    app.instruction
        .create_groupe(
            &admin(),
            NewGroupe {
                label: label.into(),
                cpam_values: cpam.iter().map(|s| (*s).to_owned()).collect(),
                departement_codes: deps.iter().map(|s| (*s).to_owned()).collect(),
                is_default,
            },
        )
        .await
        .expect("create groupe")
}

async fn bouches_du_rhone(app: &TestApp) -> GroupeView {
    groupe(
        app,
        "CPAM des Bouches-du-Rhône",
        &["CPAM des Bouches-du-Rhône (13)"],
        &["13"],
        false,
    )
    .await
}

async fn flandres(app: &TestApp) -> GroupeView {
    groupe(
        app,
        "CPAM des Flandres",
        &["CPAM des Flandres (59)"],
        &[],
        false,
    )
    .await
}

/// A dossier routed to `groupe_id` (what the workflow writes on deposit).
async fn insert_dossier(db: &DatabaseConnection, number: i64, groupe_id: &str) {
    let now = Utc::now();
    let cols = [
        "number",
        "procedure_id",
        "revision_id",
        "owner_email",
        "status",
        "version",
        "archived",
        "correction_pending",
        "groupe_id",
        "title",
        "structure_name",
        "siret",
        "region_code",
        "departement_code",
        "cpam",
        "content_version",
        "created_at",
        "deposited_at",
        "updated_at",
        "deleted",
    ];
    let q = Query::insert()
        .into_table(Alias::new("dossiers"))
        .columns(cols.map(Alias::new))
        .values_panic([
            number.into(),
            "mst-2024-projet".into(),
            "r1".into(),
            "promoteur@asso.fr".into(),
            "en_construction".into(),
            2i64.into(),
            false.into(),
            false.into(),
            groupe_id.into(),
            "Projet".into(),
            "Asso".into(),
            "12345678901234".into(),
            "93".into(),
            "13".into(),
            "CPAM des Bouches-du-Rhône (13)".into(),
            1i64.into(),
            now.into(),
            now.into(),
            now.into(),
            false.into(),
        ])
        .to_owned();
    db.execute(&q).await.expect("insert dossier");
}

async fn insert_follow(db: &DatabaseConnection, number: i64, email: &str) {
    let q = Query::insert()
        .into_table(Alias::new("follows"))
        .columns(["dossier_number", "email", "followed_at"].map(Alias::new))
        .values_panic([number.into(), email.into(), Utc::now().into()])
        .to_owned();
    db.execute(&q).await.expect("insert follow");
}

async fn current_follows(db: &DatabaseConnection, email: &str) -> usize {
    let q = Query::select()
        .expr(Expr::val(1))
        .from(Alias::new("follows"))
        .and_where(ExprTrait::eq(Expr::col(Alias::new("email")), email))
        .and_where(Expr::col(Alias::new("unfollowed_at")).is_null())
        .to_owned();
    db.query_all(&q).await.expect("follows").len()
}

fn outcomes(report: &ImportReport) -> Vec<(u32, &str, &str, LineOutcome)> {
    report
        .lines
        .iter()
        .map(|l| {
            (
                l.line,
                l.email.as_str(),
                l.groupe.as_str(),
                l.outcome.clone(),
            )
        })
        .collect()
}

fn rejected(reason: &str) -> LineOutcome {
    LineOutcome::Rejected(reason.to_owned())
}

/// A roster as the CNAMTS sends it: Excel's "CSV UTF-8" (BOM, ";" separated, CRLF), accents,
/// labels and CPAM values in any case, a bad email, an unknown groupe, a duplicate line, a blank
/// line, a quoted cell holding the separator and a malformed line.
const CNAMTS_ROSTER: &str = "\u{feff}Adresse e-mail;CPAM / Groupe;Nom Prénom\r\n\
jean.dupont@assurance-maladie.fr;CPAM des Bouches-du-Rhône (13);Jean Dupont\r\n\
Hélène.Martin@assurance-maladie.fr;cpam des bouches du rhone (13);Hélène Martin\r\n\
HELENE.MARTIN@Assurance-Maladie.fr;CPAM des Bouches-du-Rhône (13);Hélène Martin\r\n\
claire.lefebvre@assurance-maladie.fr;CPAM DES FLANDRES;Claire Lefèbvre\r\n\
marc.petit@assurance-maladie;CPAM des Flandres (59);Marc Petit\r\n\
sophie.bernard@assurance-maladie.fr;CPAM de Paris (75);Sophie Bernard\r\n\
jean.dupont@assurance-maladie.fr;CPAM des Bouches-du-Rhône (13);Jean Dupont\r\n\
\r\n\
paul.durand@assurance-maladie.fr;\"CPAM des Flandres (59)\";\"Durand; Paul\"\r\n\
n'importe quoi\r\n\
jean.dupont@assurance-maladie.fr;CPAM des Flandres (59);Jean Dupont\r\n\
anne.roux@assurance-maladie.fr;CPAM des Bouches-du-Rhône (13);Anne Roux-Leroy\r\n\
luc.moreau@assurance-maladie.fr;CPAM des Bouches-du-Rhône (13);Luc Moreau\r\n";

async fn import(app: &TestApp, file: &str, options: ImportOptions) -> ImportReport {
    app.instruction
        .import_roster(&admin(), options, file.as_bytes())
        .await
        .expect("import")
}

// ---------------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_cnamts_roster_is_imported_with_a_report_for_each_line() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    let g59 = flandres(&app).await;
    // Known before the import: Anne under another name, Luc under the same name.
    for (email, name) in [
        ("anne.roux@assurance-maladie.fr", "Anne Roux"),
        ("luc.moreau@assurance-maladie.fr", "Luc Moreau"),
    ] {
        app.instruction
            .add_instructeur(&admin(), email, &g13.id, name)
            .await
            .expect("add");
    }

    let report = import(&app, CNAMTS_ROSTER, ImportOptions::default()).await;

    let b13 = "CPAM des Bouches-du-Rhône (13)";
    assert_eq!(
        outcomes(&report),
        vec![
            (
                2,
                "jean.dupont@assurance-maladie.fr",
                b13,
                LineOutcome::Added
            ),
            (
                3,
                "Hélène.Martin@assurance-maladie.fr",
                "cpam des bouches du rhone (13)",
                rejected("Adresse électronique invalide")
            ),
            (
                4,
                "HELENE.MARTIN@Assurance-Maladie.fr",
                b13,
                LineOutcome::Added
            ),
            (
                5,
                "claire.lefebvre@assurance-maladie.fr",
                "CPAM DES FLANDRES",
                LineOutcome::Added
            ),
            (
                6,
                "marc.petit@assurance-maladie",
                "CPAM des Flandres (59)",
                rejected("Adresse électronique invalide")
            ),
            (
                7,
                "sophie.bernard@assurance-maladie.fr",
                "CPAM de Paris (75)",
                rejected("Groupe inconnu : CPAM de Paris (75)")
            ),
            (
                8,
                "jean.dupont@assurance-maladie.fr",
                b13,
                rejected("Ligne en double : cet instructeur figure déjà dans ce groupe ligne 2")
            ),
            (
                10,
                "paul.durand@assurance-maladie.fr",
                "CPAM des Flandres (59)",
                LineOutcome::Added
            ),
            (
                11,
                "n'importe quoi",
                "",
                rejected("Ligne mal formée : 1 colonne(s) au lieu de 3")
            ),
            (
                12,
                "jean.dupont@assurance-maladie.fr",
                "CPAM des Flandres (59)",
                LineOutcome::Added
            ),
            (
                13,
                "anne.roux@assurance-maladie.fr",
                b13,
                LineOutcome::Updated
            ),
            (
                14,
                "luc.moreau@assurance-maladie.fr",
                b13,
                LineOutcome::Unchanged
            ),
        ]
    );
    assert_eq!(
        (
            report.added,
            report.updated,
            report.unchanged,
            report.rejected,
            report.dry_run
        ),
        (5, 1, 1, 5, false)
    );

    // What the roster now says.
    let (members_13, _) = app
        .instruction
        .instructeurs(&admin(), Some(&g13.id), "", 0, "")
        .await
        .unwrap();
    let emails: Vec<_> = members_13.iter().map(|i| i.email.as_str()).collect();
    assert_eq!(
        emails,
        [
            "anne.roux@assurance-maladie.fr",
            "helene.martin@assurance-maladie.fr",
            "jean.dupont@assurance-maladie.fr",
            "luc.moreau@assurance-maladie.fr",
        ]
    );
    assert_eq!(members_13[0].name, "Anne Roux-Leroy");
    let jean = &members_13[2];
    let jean_groupes: Vec<_> = jean.groupes.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        jean_groupes,
        ["CPAM des Bouches-du-Rhône", "CPAM des Flandres"]
    );
    let (members_59, _) = app
        .instruction
        .instructeurs(&admin(), Some(&g59.id), "", 0, "")
        .await
        .unwrap();
    let paul = members_59
        .iter()
        .find(|i| i.email == "paul.durand@assurance-maladie.fr")
        .expect("paul");
    assert_eq!(paul.name, "Durand; Paul");
    assert!(
        app.instruction
            .is_declared("Helene.Martin@assurance-maladie.fr")
            .await
            .unwrap()
    );
    assert!(
        !app.instruction
            .is_declared("sophie.bernard@assurance-maladie.fr")
            .await
            .unwrap()
    );
    let mut jean_ids = app
        .instruction
        .groupes_of("jean.dupont@assurance-maladie.fr")
        .await
        .unwrap();
    jean_ids.sort();
    let mut expected = vec![g13.id.clone(), g59.id.clone()];
    expected.sort();
    assert_eq!(jean_ids, expected);
    let g13_now = app.instruction.groupe(&admin(), &g13.id).await.unwrap();
    assert_eq!(g13_now.instructeur_count, 4);
}

#[tokio::test]
async fn importing_the_same_roster_again_changes_nothing() {
    let app = spawn_app().await;
    bouches_du_rhone(&app).await;
    flandres(&app).await;
    let first = import(&app, CNAMTS_ROSTER, ImportOptions::default()).await;
    let again = import(&app, CNAMTS_ROSTER, ImportOptions::default()).await;
    assert_eq!((again.added, again.updated), (0, 0));
    assert_eq!(again.rejected, first.rejected);
    for (before, after) in first.lines.iter().zip(&again.lines) {
        assert_eq!(before.line, after.line);
        match &before.outcome {
            LineOutcome::Rejected(_) => {
                assert_eq!(after.outcome, before.outcome, "line {}", before.line)
            }
            _ => assert_eq!(
                after.outcome,
                LineOutcome::Unchanged,
                "line {}",
                before.line
            ),
        }
    }
}

#[tokio::test]
async fn a_dry_run_reports_without_writing_anything() {
    let app = spawn_app().await;
    bouches_du_rhone(&app).await;
    let options = ImportOptions {
        dry_run: true,
        create_missing_groupes: true,
    };
    let report = import(&app, CNAMTS_ROSTER, options).await;
    assert!(report.dry_run);
    // "CPAM des Flandres" would be created, so its lines would be added.
    assert_eq!(report.lines[3].outcome, LineOutcome::Added);
    assert!(report.added >= 5, "{report:?}");

    let (groupes, _) = app.instruction.groupes(&admin(), 0, "").await.unwrap();
    assert_eq!(groupes.len(), 1, "no groupe was created");
    let (instructeurs, _) = app
        .instruction
        .instructeurs(&admin(), None, "", 0, "")
        .await
        .unwrap();
    assert!(instructeurs.is_empty(), "nobody was declared");
    assert!(
        !app.instruction
            .is_declared("jean.dupont@assurance-maladie.fr")
            .await
            .unwrap()
    );

    // The same import for real writes what the dry run announced.
    let real = import(
        &app,
        CNAMTS_ROSTER,
        ImportOptions {
            dry_run: false,
            ..options
        },
    )
    .await;
    assert_eq!(outcomes(&real), outcomes(&report));
    assert!(
        app.instruction
            .is_declared("jean.dupont@assurance-maladie.fr")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn missing_groupes_are_created_on_request_and_then_route_their_cpam() {
    let app = spawn_app().await;
    let file = "email,groupe,nom\nsophie.bernard@assurance-maladie.fr,CPAM de Paris (75),Sophie Bernard\n\
                remi.blanc@assurance-maladie.fr,cpam de paris (75),Rémi Blanc\n";
    let report = import(
        &app,
        file,
        ImportOptions {
            dry_run: false,
            create_missing_groupes: true,
        },
    )
    .await;
    assert_eq!((report.added, report.rejected), (2, 0), "{report:?}");
    let (groupes, _) = app.instruction.groupes(&admin(), 0, "").await.unwrap();
    assert_eq!(groupes.len(), 1);
    assert_eq!(groupes[0].label, "CPAM de Paris (75)");
    assert_eq!(groupes[0].cpam_values, ["CPAM de Paris (75)"]);
    assert_eq!(groupes[0].instructeur_count, 2);
    let routed = app
        .instruction
        .route("CPAM de Paris (75)", "75")
        .await
        .unwrap();
    assert_eq!(
        routed,
        Some((groupes[0].id.clone(), groupes[0].label.clone()))
    );
}

#[tokio::test]
async fn a_roster_without_its_columns_or_not_in_utf8_is_refused_whole() {
    let app = spawn_app().await;
    bouches_du_rhone(&app).await;
    for file in [
        b"email;nom\njean@x.fr;Jean\n".as_slice(),
        b"",
        b"email;groupe\nd\xe9j\xe0@x.fr;CPAM des Bouches-du-Rh\xf4ne (13)\n",
    ] {
        let err = app
            .instruction
            .import_roster(&admin(), ImportOptions::default(), file)
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::BadRequest(_)), "{err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_dossier_goes_to_the_groupe_of_its_cpam_else_of_its_departement_else_the_default() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    let ain = groupe(
        &app,
        "CPAM de l'Ain",
        &["CPAM de l'Ain (01)"],
        &["01"],
        false,
    )
    .await;
    let r = |g: &GroupeView| Some((g.id.clone(), g.label.clone()));

    let route = |cpam: &'static str, dep: &'static str| {
        let instruction = app.instruction.clone();
        async move { instruction.route(cpam, dep).await.unwrap() }
    };
    assert_eq!(route("CPAM des Bouches-du-Rhône (13)", "").await, r(&g13));
    assert_eq!(
        route("cpam des bouches du rhone (13)", "").await,
        r(&g13),
        "case and accents"
    );
    assert_eq!(route("", "13").await, r(&g13), "by département");
    assert_eq!(
        route("CPAM inconnue", "13").await,
        r(&g13),
        "unknown CPAM: by département"
    );
    assert_eq!(
        route("CPAM de l'Ain (01)", "13").await,
        r(&ain),
        "the CPAM answer wins"
    );
    assert_eq!(route("", "2A").await, None, "no default groupe");

    let national = groupe(&app, "Groupe national", &[], &[], true).await;
    assert_eq!(route("", "2A").await, r(&national));
    assert_eq!(route("", "").await, r(&national));
    assert_eq!(route("", "13").await, r(&g13));

    // A new default takes the flag.
    let other = groupe(&app, "Autre groupe", &[], &[], true).await;
    assert_eq!(route("", "2A").await, r(&other));
    let national = app
        .instruction
        .groupe(&admin(), &national.id)
        .await
        .unwrap();
    assert!(!national.is_default);
    assert_eq!(national.version, 2, "clearing the flag is a change");
}

#[tokio::test]
async fn every_cpam_of_the_forms_drop_down_routes_to_its_own_groupe() {
    let app = spawn_app().await;
    let csv = include_str!("../../forms/data/cpam.csv");
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let mut per_dep = std::collections::HashMap::<&str, usize>::new();
    for r in &rows {
        *per_dep.entry(r[2]).or_default() += 1;
    }
    let mut created = Vec::new();
    for r in &rows {
        let (libelle, nom, dep) = (r[0], r[1], r[2]);
        // A département served by several CPAMs (59, 62, 64) is routed by the CPAM answer only.
        let deps: &[&str] = if per_dep[dep] == 1 { &[dep] } else { &[] };
        created.push((
            libelle,
            dep,
            groupe(&app, nom, &[libelle], deps, false).await,
        ));
    }
    for (libelle, dep, g) in &created {
        let expected = Some((g.id.clone(), g.label.clone()));
        assert_eq!(
            app.instruction.route(libelle, "").await.unwrap(),
            expected,
            "{libelle}"
        );
        if per_dep[dep] == 1 {
            assert_eq!(
                app.instruction.route("", dep).await.unwrap(),
                expected,
                "{dep}"
            );
        }
    }
    let (_, _, b13) = created.iter().find(|(_, d, _)| *d == "13").unwrap();
    assert_eq!(
        app.instruction.route("", "13").await.unwrap().map(|g| g.1),
        Some(b13.label.clone())
    );
    assert_eq!(app.instruction.route("", "59").await.unwrap(), None);
    // Pages of the groupe list, by label, cover every groupe once.
    let mut token = String::new();
    let mut labels = Vec::new();
    loop {
        let (page, next) = app.instruction.groupes(&admin(), 40, &token).await.unwrap();
        labels.extend(page.into_iter().map(|g| g.label));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(labels.len(), rows.len());
    let mut sorted = labels.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), rows.len());
}

#[tokio::test]
async fn a_cpam_value_or_departement_routes_to_one_groupe_only() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    let err = app
        .instruction
        .create_groupe(
            &admin(),
            NewGroupe {
                label: "Autre".into(),
                cpam_values: vec!["cpam des BOUCHES-DU-RHONE (13)".into()],
                departement_codes: vec!["2A".into(), "13".into()],
                is_default: false,
            },
        )
        .await
        .unwrap_err();
    let AppError::BadRequest(violations) = err else {
        panic!("expected violations, got {err:?}");
    };
    let fields: Vec<_> = violations.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["cpam_values[0]", "departement_codes[1]"]);
    assert!(
        violations[1].1.contains("CPAM des Bouches-du-Rhône"),
        "{violations:?}"
    );

    let err = app
        .instruction
        .create_groupe(
            &admin(),
            NewGroupe {
                label: "cpam des bouches du rhone".into(),
                ..NewGroupe::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::AlreadyExists("groupe", _)),
        "{err:?}"
    );

    let err = app
        .instruction
        .create_groupe(
            &admin(),
            NewGroupe {
                label: "Corse".into(),
                departement_codes: vec!["20".into(), "976".into()],
                ..NewGroupe::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AppError::BadRequest(v) if v.len() == 1 && v[0].0 == "departement_codes[0]"),
        "{err:?}"
    );

    // Its own keys can be rewritten; a stale version is refused.
    let patch = GroupePatch {
        departement_codes: Some(vec!["13".into(), "84".into()]),
        ..GroupePatch::default()
    };
    let updated = app
        .instruction
        .update_groupe(&admin(), &g13.id, g13.version, patch.clone())
        .await
        .unwrap();
    assert_eq!(updated.departement_codes, ["13", "84"]);
    assert_eq!(updated.cpam_values, g13.cpam_values);
    assert_eq!(updated.version, g13.version + 1);
    let err = app
        .instruction
        .update_groupe(&admin(), &g13.id, g13.version, patch)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::Stale { current, .. } if current == updated.version),
        "{err:?}"
    );
    assert_eq!(
        app.instruction.route("", "84").await.unwrap().map(|g| g.0),
        Some(g13.id.clone())
    );
}

// ---------------------------------------------------------------------------------------------
// Instructeurs and groupes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn adding_an_instructeur_twice_adds_him_once() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    let (view, added) = app
        .instruction
        .add_instructeur(
            &admin(),
            " Jean.Dupont@Assurance-Maladie.fr ",
            &g13.id,
            "Jean Dupont",
        )
        .await
        .unwrap();
    assert!(added);
    assert_eq!(view.email, "jean.dupont@assurance-maladie.fr");
    assert_eq!(view.groupes, [(g13.id.clone(), g13.label.clone())]);
    let (again, added) = app
        .instruction
        .add_instructeur(&admin(), "jean.dupont@assurance-maladie.fr", &g13.id, "")
        .await
        .unwrap();
    assert!(!added);
    assert_eq!(
        again.name, "Jean Dupont",
        "an empty name keeps the known one"
    );
    assert_eq!(again.added_at, view.added_at);

    let err = app
        .instruction
        .add_instructeur(&admin(), "jean.dupont", &g13.id, "")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AppError::BadRequest(v) if v[0].0 == "email"),
        "{err:?}"
    );
    let err = app
        .instruction
        .add_instructeur(&admin(), "jean.dupont@assurance-maladie.fr", "nope", "")
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::NotFound("groupe", _)), "{err:?}");
}

#[tokio::test]
async fn an_instructeur_removed_from_his_last_groupe_leaves_the_roster_and_his_follows_end() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    let g59 = flandres(&app).await;
    let jean = "jean.dupont@assurance-maladie.fr";
    for g in [&g13, &g59] {
        app.instruction
            .add_instructeur(&admin(), jean, &g.id, "Jean")
            .await
            .unwrap();
    }
    insert_dossier(app.db(), 1, &g13.id).await;
    insert_dossier(app.db(), 2, &g59.id).await;
    insert_follow(app.db(), 1, jean).await;
    insert_follow(app.db(), 2, jean).await;

    let view = app
        .instruction
        .remove_instructeur(&admin(), jean, Some(&g13.id))
        .await
        .unwrap();
    assert_eq!(view.groupes, [(g59.id.clone(), g59.label.clone())]);
    assert_eq!(
        current_follows(app.db(), jean).await,
        1,
        "only the follow in the groupe left ends"
    );
    // Again: nothing to do, he is still declared.
    app.instruction
        .remove_instructeur(&admin(), jean, Some(&g13.id))
        .await
        .unwrap();
    assert!(app.instruction.is_declared(jean).await.unwrap());

    let view = app
        .instruction
        .remove_instructeur(&admin(), "JEAN.DUPONT@assurance-maladie.fr", Some(&g59.id))
        .await
        .unwrap();
    assert!(view.groupes.is_empty());
    assert_eq!(current_follows(app.db(), jean).await, 0);
    assert!(!app.instruction.is_declared(jean).await.unwrap());
    assert!(app.instruction.groupes_of(jean).await.unwrap().is_empty());
    let err = app
        .instruction
        .remove_instructeur(&admin(), jean, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::NotFound("instructeur", _)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_groupe_with_dossiers_cannot_be_deleted() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    let g59 = flandres(&app).await;
    app.instruction
        .add_instructeur(&admin(), "jean@assurance-maladie.fr", &g59.id, "")
        .await
        .unwrap();
    insert_dossier(app.db(), 1, &g13.id).await;

    let err = app
        .instruction
        .delete_groupe(&admin(), &g13.id, g13.version)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AppError::WrongState {
                reason: "GROUPE_IN_USE",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(app.instruction.groupe(&admin(), &g13.id).await.is_ok());

    let err = app
        .instruction
        .delete_groupe(&admin(), &g59.id, g59.version + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::Stale { .. }), "{err:?}");
    app.instruction
        .delete_groupe(&admin(), &g59.id, g59.version)
        .await
        .unwrap();
    assert!(matches!(
        app.instruction.groupe(&admin(), &g59.id).await,
        Err(AppError::NotFound("groupe", _))
    ));
    assert!(
        !app.instruction
            .is_declared("jean@assurance-maladie.fr")
            .await
            .unwrap()
    );
    assert_eq!(
        app.instruction
            .route("CPAM des Flandres (59)", "")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn instructeurs_are_listed_by_email_a_page_at_a_time() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    let g59 = flandres(&app).await;
    let mut file = String::from("email;groupe;nom\n");
    for i in 0..25 {
        let g = if i % 2 == 0 {
            "CPAM des Bouches-du-Rhône (13)"
        } else {
            "CPAM des Flandres (59)"
        };
        file.push_str(&format!("agent{i:02}@assurance-maladie.fr;{g};Agent {i}\n"));
    }
    file.push_str("a_b@assurance-maladie.fr;CPAM des Flandres (59);\n");
    assert_eq!(
        import(&app, &file, ImportOptions::default()).await.added,
        26
    );

    let mut token = String::new();
    let mut emails = Vec::new();
    loop {
        let (page, next) = app
            .instruction
            .instructeurs(&admin(), None, "AGENT", 10, &token)
            .await
            .unwrap();
        assert!(page.len() <= 10);
        emails.extend(page.into_iter().map(|i| i.email));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(emails.len(), 25);
    assert!(emails.windows(2).all(|w| w[0] < w[1]));
    let (of_13, _) = app
        .instruction
        .instructeurs(&admin(), Some(&g13.id), "", 0, "")
        .await
        .unwrap();
    assert_eq!(of_13.len(), 13);
    let (of_59, _) = app
        .instruction
        .instructeurs(&admin(), Some(&g59.id), "a_", 0, "")
        .await
        .unwrap();
    assert_eq!(of_59.len(), 1, "`_` in a prefix is no wildcard");
    let err = app
        .instruction
        .instructeurs(&admin(), None, "", 0, "garbage")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AppError::BadRequest(v) if v[0].0 == "page_token"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn only_an_admin_changes_the_roster() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    app.instruction
        .add_instructeur(&admin(), "jean@assurance-maladie.fr", &g13.id, "")
        .await
        .unwrap();
    for who in [
        person("jean@assurance-maladie.fr", &[Role::Instructeur]),
        person("promoteur@asso.fr", &[Role::Promoteur]),
        person("forms@mst.internal", &[Role::System]),
    ] {
        let i = &app.instruction;
        let forbidden = |r: Result<(), AppError>| matches!(r, Err(AppError::Forbidden(_)));
        assert!(forbidden(
            i.create_groupe(
                &who,
                NewGroupe {
                    label: "X".into(),
                    ..Default::default()
                }
            )
            .await
            .map(drop)
        ));
        assert!(forbidden(
            i.update_groupe(
                &who,
                &g13.id,
                1,
                GroupePatch {
                    is_default: Some(true),
                    ..Default::default()
                }
            )
            .await
            .map(drop)
        ));
        assert!(forbidden(i.delete_groupe(&who, &g13.id, 1).await));
        assert!(forbidden(
            i.add_instructeur(&who, "x@y.fr", &g13.id, "")
                .await
                .map(drop)
        ));
        assert!(forbidden(
            i.remove_instructeur(&who, "jean@assurance-maladie.fr", None)
                .await
                .map(drop)
        ));
        assert!(forbidden(
            i.import_roster(&who, ImportOptions::default(), CNAMTS_ROSTER.as_bytes())
                .await
                .map(drop)
        ));
    }
    assert!(
        app.instruction
            .is_declared("jean@assurance-maladie.fr")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_instructeur_reads_his_own_groupes_only_and_a_promoteur_none() {
    let app = spawn_app().await;
    let g13 = bouches_du_rhone(&app).await;
    let g59 = flandres(&app).await;
    app.instruction
        .add_instructeur(&admin(), "jean@assurance-maladie.fr", &g13.id, "")
        .await
        .unwrap();
    let jean = person("jean@assurance-maladie.fr", &[Role::Instructeur]);
    let (groupes, _) = app.instruction.groupes(&jean, 0, "").await.unwrap();
    assert_eq!(
        groupes.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        [g13.id.as_str()]
    );
    assert!(matches!(
        app.instruction.groupe(&jean, &g59.id).await,
        Err(AppError::NotFound(..))
    ));
    assert!(matches!(
        app.instruction
            .instructeurs(&jean, Some(&g59.id), "", 0, "")
            .await,
        Err(AppError::NotFound(..))
    ));
    // Not on the roster: PERMISSION_DENIED, as every instructeur RPC answers him (the
    // authorization matrix, tests/e2e/authz.rs).
    let undeclared = person("paul@assurance-maladie.fr", &[Role::Instructeur]);
    assert!(matches!(
        app.instruction.groupes(&undeclared, 0, "").await,
        Err(AppError::Forbidden(_))
    ));
    let promoteur = person("promoteur@asso.fr", &[Role::Promoteur]);
    assert!(matches!(
        app.instruction.groupes(&promoteur, 0, "").await,
        Err(AppError::Forbidden(_))
    ));
    let system = person("messagerie@mst.internal", &[Role::System]);
    let (members, _) = app
        .instruction
        .instructeurs(&system, Some(&g13.id), "", 0, "")
        .await
        .unwrap();
    assert_eq!(members.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Over gRPC
// ---------------------------------------------------------------------------------------------

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Server {
    async fn start(instruction: Instruction) -> Server {
        let auth = Authenticator::new(AuthSettings::embedded())
            .await
            .expect("authenticator");
        let service =
            RosterServiceServer::with_interceptor(RosterApi::new(instruction), auth.interceptor());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        stopped.await.ok();
                    },
                ),
        );
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn client(&self) -> RosterServiceClient<tonic::transport::Channel> {
        RosterServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server");
        }
    }
}

fn authed<T>(message: T, email: &str, roles: &[Role]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let token = mint_dev(email, roles, Duration::from_secs(300)).expect("token");
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

fn as_admin<T>(message: T) -> tonic::Request<T> {
    authed(message, "admin@mst.test", &[Role::Admin])
}

fn upload(file: &[u8], chunk: usize) -> Vec<pb::ImportRosterRequest> {
    let mut messages = vec![pb::ImportRosterRequest {
        payload: Some(Payload::Metadata(pb::ImportRosterMetadata {
            file_name: "instructeurs.csv".into(),
            dry_run: false,
            create_missing_groupes: false,
        })),
    }];
    messages.extend(file.chunks(chunk).map(|c| pb::ImportRosterRequest {
        payload: Some(Payload::Chunk(c.to_vec())),
    }));
    messages
}

#[tokio::test]
async fn the_roster_is_imported_over_grpc_in_chunks() {
    let app = spawn_app().await;
    bouches_du_rhone(&app).await;
    flandres(&app).await;
    let server = Server::start(app.instruction.clone()).await;
    let mut client = server.client().await;

    // Small chunks, cutting multi-byte characters in two.
    let messages = upload(CNAMTS_ROSTER.as_bytes(), 7);
    let response = client
        .import_roster(authed(
            tokio_stream::iter(messages),
            "admin@mst.test",
            &[Role::Admin],
        ))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(
        (
            response.added,
            response.updated,
            response.unchanged,
            response.rejected
        ),
        (7, 0, 0, 5)
    );
    assert_eq!(response.lines.len(), 12);
    let line7 = &response.lines[5];
    assert_eq!(line7.line, 7);
    assert_eq!(line7.outcome, pb::RosterLineOutcome::Rejected as i32);
    assert_eq!(line7.reason, "Groupe inconnu : CPAM de Paris (75)");

    let err = client
        .import_roster(authed(
            tokio_stream::iter(upload(b"email;groupe\n", 100)),
            "jean@assurance-maladie.fr",
            &[Role::Instructeur],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .import_roster(tonic::Request::new(tokio_stream::iter(upload(
            b"email;groupe\n",
            100,
        ))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_roster_over_5_mb_is_refused_as_resource_exhausted() {
    let app = spawn_app().await;
    bouches_du_rhone(&app).await;
    let server = Server::start(app.instruction.clone()).await;
    let mut client = server.client().await;
    let mut file = String::from("email;groupe;nom\n");
    let mut i = 0;
    while file.len() <= MAX_ROSTER_BYTES {
        file.push_str(&format!(
            "agent{i:07}@assurance-maladie.fr;CPAM des Bouches-du-Rhône (13);Agent {i}\n"
        ));
        i += 1;
    }
    let err = client
        .import_roster(authed(
            tokio_stream::iter(upload(file.as_bytes(), 1024 * 1024)),
            "admin@mst.test",
            &[Role::Admin],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let (instructeurs, _) = app
        .instruction
        .instructeurs(&admin(), None, "", 0, "")
        .await
        .unwrap();
    assert!(instructeurs.is_empty());
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn groupes_are_managed_over_grpc_with_precise_statuses() {
    let app = spawn_app().await;
    let server = Server::start(app.instruction.clone()).await;
    let mut client = server.client().await;

    let created = client
        .create_groupe(as_admin(pb::CreateGroupeRequest {
            label: "CPAM des Bouches-du-Rhône".into(),
            cpam_values: vec!["CPAM des Bouches-du-Rhône (13)".into()],
            departement_codes: vec!["13".into()],
            is_default: false,
        }))
        .await
        .expect("create")
        .into_inner()
        .groupe
        .expect("groupe");
    assert_eq!(created.version, 1);
    assert!(created.created_at.is_some());

    let err = client
        .create_groupe(authed(
            pb::CreateGroupeRequest {
                label: "X".into(),
                ..Default::default()
            },
            "p@asso.fr",
            &[Role::Promoteur],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .create_groupe(as_admin(pb::CreateGroupeRequest {
            label: "Corse".into(),
            departement_codes: vec!["2C".into()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .create_groupe(as_admin(pb::CreateGroupeRequest {
            label: "cpam des bouches-du-rhone".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let updated = client
        .update_groupe(as_admin(pb::UpdateGroupeRequest {
            groupe_id: created.id.clone(),
            expected_version: 1,
            groupe: Some(pb::Groupe {
                is_default: true,
                label: "ignored".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["is_default".into()],
            }),
        }))
        .await
        .expect("update")
        .into_inner()
        .groupe
        .expect("groupe");
    assert!(updated.is_default);
    assert_eq!(
        updated.label, created.label,
        "fields outside the mask are kept"
    );
    assert_eq!(updated.version, 2);
    let err = client
        .update_groupe(as_admin(pb::UpdateGroupeRequest {
            groupe_id: created.id.clone(),
            expected_version: 1,
            groupe: Some(pb::Groupe::default()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["is_default".into()],
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    let added = client
        .add_instructeur(as_admin(pb::AddInstructeurRequest {
            email: "Jean@Assurance-Maladie.fr".into(),
            groupe_id: created.id.clone(),
            name: "Jean".into(),
        }))
        .await
        .expect("add")
        .into_inner();
    assert!(added.added);
    assert_eq!(
        added.instructeur.expect("instructeur").groupes[0].label,
        created.label
    );

    insert_dossier(app.db(), 7, &created.id).await;
    let err = client
        .delete_groupe(as_admin(pb::DeleteGroupeRequest {
            groupe_id: created.id.clone(),
            expected_version: 2,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = client
        .get_groupe(as_admin(pb::GetGroupeRequest {
            groupe_id: "nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let listed = client
        .list_instructeurs(authed(
            pb::ListInstructeursRequest {
                groupe_id: created.id.clone(),
                ..Default::default()
            },
            "jean@assurance-maladie.fr",
            &[Role::Instructeur],
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.instructeurs.len(), 1);
    drop(client);
    server.stop().await;
}
