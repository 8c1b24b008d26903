//! Instructeur tools on the database chosen by `MST_TEST_DB` (SQLite by default, PostgreSQL with
//! `MST_TEST_DB=postgres`): annotations privées (definitions, values, validation, versions,
//! visibility) and avis externes (request, answer with a file, revocation, confidentiality,
//! events in the outbox), through the use cases.

use std::collections::BTreeSet;

use chrono::Utc;
use futures::StreamExt;
use mst_bus::RelayHandle;
use mst_instruction::app::avis::{
    AnnotationDefinition, AnnotationKind, AnnotationPatch, AnnotationValue, AvisAnswer,
    AvisFileInput, AvisFiles, AvisState, GiveAvisError, MAX_AVIS_FILE_BYTES, NewAvis,
};
use mst_instruction::app::roster::NewGroupe;
use mst_instruction::app::{AppError, DepositInput, FormsFreeze, Headline, Instruction};
use mst_kit::auth::{Principal, Role};
use mst_kit::config::DatabaseSettings;
use mst_migrations::MigratorTrait;
use mst_proto::events as ev;
use mst_testkit::TestDb;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

struct TestApp {
    instruction: Instruction,
    files: AvisFiles,
    files_dir: tempfile::TempDir,
    _db: TestDb,
}

impl TestApp {
    fn db(&self) -> &DatabaseConnection {
        self.instruction.db()
    }
}

const PROCEDURE: &str = "mst-2024-projet";
const JEAN: &str = "jean@assurance-maladie.fr";
const MARIE: &str = "marie@assurance-maladie.fr";
const PAUL: &str = "paul@assurance-maladie.fr";
const EXPERT: &str = "expert@ars.fr";

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

fn instructeur(email: &str) -> Principal {
    person(email, &[Role::Instructeur])
}

fn expert() -> Principal {
    person(EXPERT, &[Role::Expert])
}

/// A fresh database with two groupes (13: Jean and Marie; 59: Paul) and dossier 1 deposited and
/// routed to the 13.
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
    let files_dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp {
        instruction: Instruction::new(db, RelayHandle::default(), FormsFreeze::unconfigured()),
        files: AvisFiles::local(files_dir.path()).expect("avis files"),
        files_dir,
        _db: test_db,
    };
    let i = &app.instruction;
    for (label, dep, members) in [
        ("CPAM des Bouches-du-Rhône", "13", &[JEAN, MARIE][..]),
        ("CPAM des Flandres", "59", &[PAUL][..]),
    ] {
        let g = i
            .create_groupe(
                &admin(),
                NewGroupe {
                    label: label.into(),
                    cpam_values: Vec::new(),
                    departement_codes: vec![dep.into()],
                    is_default: false,
                },
            )
            .await
            .expect("groupe");
        for m in members {
            i.add_instructeur(&admin(), m, &g.id, "")
                .await
                .expect("instructeur");
        }
    }
    deposit(&app, 1, "13").await;
    app
}

async fn deposit(app: &TestApp, number: i64, departement: &str) {
    app.instruction
        .record_deposit(
            &person("forms@system", &[Role::System]),
            DepositInput {
                number,
                deposit_id: format!("deposit-{number}"),
                procedure: ev::ProcedureRef {
                    id: PROCEDURE.into(),
                    title: "Projet MST".into(),
                    kind: ev::DossierKind::Projet as i32,
                },
                revision_id: "r1".into(),
                owner_email: "promoteur@asso.fr".into(),
                invitee_emails: Vec::new(),
                content_version: 1,
                headline: Headline {
                    title: "Projet".into(),
                    departement_code: departement.into(),
                    ..Headline::default()
                },
                created_at: Utc::now(),
            },
        )
        .await
        .expect("deposit");
}

fn definition(id: &str, kind: AnnotationKind) -> AnnotationDefinition {
    AnnotationDefinition {
        id: id.into(),
        label: id.replace('_', " "),
        description: String::new(),
        kind,
        options: Vec::new(),
        max_length: None,
        min: None,
        max: None,
    }
}

fn definitions() -> Vec<AnnotationDefinition> {
    vec![
        AnnotationDefinition {
            max_length: Some(20),
            ..definition("avis_rapporteur", AnnotationKind::Text)
        },
        definition("commentaire", AnnotationKind::Textarea),
        AnnotationDefinition {
            min: Some("0".into()),
            max: Some("100".into()),
            ..definition("note", AnnotationKind::Integer)
        },
        AnnotationDefinition {
            min: Some("0".into()),
            ..definition("montant_propose", AnnotationKind::Decimal)
        },
        definition("date_comite", AnnotationKind::Date),
        definition("vu", AnnotationKind::Checkbox),
        definition("eligible", AnnotationKind::YesNo),
        AnnotationDefinition {
            options: vec!["faible".into(), "moyenne".into(), "haute".into()],
            ..definition("priorite", AnnotationKind::DropDown)
        },
    ]
}

fn set(id: &str, value: AnnotationValue) -> AnnotationPatch {
    AnnotationPatch::Set(id.into(), value)
}

fn violations(e: AppError) -> Vec<String> {
    match e {
        AppError::BadRequest(v) => v.into_iter().map(|(f, _)| f).collect(),
        other => panic!("expected a bad request, got {other:?}"),
    }
}

fn new_avis(number: i64, confidential: bool) -> NewAvis {
    NewAvis {
        number,
        expert_email: " Expert@ARS.fr ".into(),
        question: "Le budget vous paraît-il réaliste ?".into(),
        confidential,
        request_id: uuid::Uuid::new_v4().to_string(),
    }
}

fn chunks(
    parts: Vec<Vec<u8>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, AppError>> + Unpin + Send {
    futures::stream::iter(parts.into_iter().map(Ok))
}

fn pdf(len: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n".to_vec();
    v.resize(len, b'x');
    v
}

/// Number of files under the avis directory.
fn stored_files(app: &TestApp) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() { walk(&p) } else { 1 }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(app.files_dir.path())
}

/// The outbox subjects, in order.
async fn outbox_subjects(db: &DatabaseConnection) -> Vec<String> {
    let q = Query::select()
        .column(Alias::new("subject"))
        .from(Alias::new("outbox"))
        .and_where(Expr::col(Alias::new("subject")).like("%avis%"))
        .order_by(Alias::new("seq"), sea_orm::sea_query::Order::Asc)
        .to_owned();
    db.query_all(&q)
        .await
        .expect("outbox")
        .iter()
        .map(|r| r.try_get::<String>("", "subject").expect("subject"))
        .collect()
}

async fn outbox_count(db: &DatabaseConnection) -> usize {
    let q = Query::select()
        .expr(Expr::val(1))
        .from(Alias::new("outbox"))
        .and_where(ExprTrait::eq(Expr::val(1), 1))
        .to_owned();
    db.query_all(&q).await.expect("outbox").len()
}

// ---------------------------------------------------------------------------------------------
// Annotations privées
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn definitions_and_values_round_trip() {
    let app = spawn_app().await;
    let i = &app.instruction;
    let empty = i
        .annotation_definitions(&instructeur(JEAN), PROCEDURE)
        .await
        .expect("definitions");
    assert_eq!((empty.definitions.len(), empty.version), (0, 0));
    let saved = i
        .update_annotation_definitions(&admin(), PROCEDURE, 0, definitions())
        .await
        .expect("define");
    assert_eq!(saved.version, 1);
    let read = i
        .annotation_definitions(&instructeur(PAUL), PROCEDURE)
        .await
        .expect("definitions");
    assert_eq!(read.definitions, definitions());
    assert_eq!(read.version, 1);

    let values = vec![
        set("avis_rapporteur", AnnotationValue::Text("Favorable".into())),
        set(
            "commentaire",
            AnnotationValue::Text("Ligne 1\nLigne 2".into()),
        ),
        set("note", AnnotationValue::Integer(87)),
        set(
            "montant_propose",
            AnnotationValue::Decimal("1500.50".into()),
        ),
        set("date_comite", AnnotationValue::Date("2025-03-14".into())),
        set("vu", AnnotationValue::Checkbox(true)),
        set("eligible", AnnotationValue::YesNo(false)),
        set("priorite", AnnotationValue::DropDown("haute".into())),
    ];
    let after = i
        .update_annotations(&instructeur(JEAN), 1, 0, values)
        .await
        .expect("annotate");
    assert_eq!(after.version, 1);
    let seen = i
        .annotations(&instructeur(MARIE), 1)
        .await
        .expect("annotations");
    assert_eq!(seen.version, 1);
    let ids: Vec<&str> = seen
        .annotations
        .iter()
        .map(|a| a.annotation_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "avis_rapporteur",
            "commentaire",
            "note",
            "montant_propose",
            "date_comite",
            "vu",
            "eligible",
            "priorite"
        ]
    );
    assert_eq!(
        seen.annotations[3].value,
        AnnotationValue::Decimal("1500.50".into())
    );
    assert!(seen.annotations.iter().all(|a| a.updated_by_email == JEAN));

    let cleared = i
        .update_annotations(
            &instructeur(MARIE),
            1,
            1,
            vec![AnnotationPatch::Clear("note".into())],
        )
        .await
        .expect("clear");
    assert_eq!(cleared.version, 2);
    assert!(
        cleared
            .annotations
            .iter()
            .all(|a| a.annotation_id != "note")
    );
    // Admins read.
    assert_eq!(i.annotations(&admin(), 1).await.expect("admin").version, 2);

    // A removed definition hides its value, which comes back with it.
    let fewer: Vec<_> = definitions()
        .into_iter()
        .filter(|d| d.id != "priorite")
        .collect();
    i.update_annotation_definitions(&admin(), PROCEDURE, 1, fewer)
        .await
        .expect("redefine");
    let seen = i
        .annotations(&instructeur(JEAN), 1)
        .await
        .expect("annotations");
    assert!(
        seen.annotations
            .iter()
            .all(|a| a.annotation_id != "priorite")
    );
    i.update_annotation_definitions(&admin(), PROCEDURE, 2, definitions())
        .await
        .expect("redefine");
    let seen = i
        .annotations(&instructeur(JEAN), 1)
        .await
        .expect("annotations");
    assert!(
        seen.annotations
            .iter()
            .any(|a| a.annotation_id == "priorite")
    );
}

#[tokio::test]
async fn invalid_definitions_are_listed_and_only_admins_define() {
    let app = spawn_app().await;
    let i = &app.instruction;
    let mut bad = definitions();
    bad[1].id = "avis_rapporteur".into(); // duplicate
    bad[2].options = vec!["x".into()]; // options on an integer
    bad[3].min = Some("10".into());
    bad[3].max = Some("2".into()); // min > max
    bad[7].options.clear(); // drop-down without options
    bad[0].id = "1abc".into();
    let e = i
        .update_annotation_definitions(&admin(), PROCEDURE, 0, bad)
        .await
        .expect_err("invalid");
    assert_eq!(
        violations(e),
        [
            "definitions[0].id",
            "definitions[2].options",
            "definitions[3].max",
            "definitions[7].options"
        ]
    );
    let e = i
        .update_annotation_definitions(&instructeur(JEAN), PROCEDURE, 0, definitions())
        .await
        .expect_err("instructeur");
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
    let e = i
        .update_annotation_definitions(&admin(), "inconnue", 0, definitions())
        .await
        .expect_err("unknown procedure");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");
    i.update_annotation_definitions(&admin(), PROCEDURE, 0, definitions())
        .await
        .expect("define");
    let e = i
        .update_annotation_definitions(&admin(), PROCEDURE, 0, definitions())
        .await
        .expect_err("stale");
    assert!(
        matches!(
            e,
            AppError::Stale {
                current: 1,
                expected: 0,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn invalid_values_are_listed_and_nothing_changes() {
    let app = spawn_app().await;
    let i = &app.instruction;
    i.update_annotation_definitions(&admin(), PROCEDURE, 0, definitions())
        .await
        .expect("define");
    let e = i
        .update_annotations(
            &instructeur(JEAN),
            1,
            0,
            vec![
                set("vu", AnnotationValue::Checkbox(true)),
                set("avis_rapporteur", AnnotationValue::Text("x".repeat(21))),
                set("note", AnnotationValue::Integer(101)),
                set("montant_propose", AnnotationValue::Decimal("1e3".into())),
                set("date_comite", AnnotationValue::Date("2025-02-30".into())),
                set("priorite", AnnotationValue::DropDown("urgente".into())),
                set("eligible", AnnotationValue::Text("oui".into())),
                set("inconnue", AnnotationValue::Checkbox(true)),
                set(
                    "avis_rapporteur",
                    AnnotationValue::Text("deux\nlignes".into()),
                ),
            ],
        )
        .await
        .expect_err("invalid");
    assert_eq!(
        violations(e),
        [
            "patches[1]",
            "patches[2]",
            "patches[3]",
            "patches[4]",
            "patches[5]",
            "patches[6]",
            "patches[7]",
            "patches[8]"
        ]
    );
    let seen = i
        .annotations(&instructeur(JEAN), 1)
        .await
        .expect("annotations");
    assert_eq!((seen.annotations.len(), seen.version), (0, 0));
}

#[tokio::test]
async fn a_stale_annotation_version_is_aborted() {
    let app = spawn_app().await;
    let i = &app.instruction;
    i.update_annotation_definitions(&admin(), PROCEDURE, 0, definitions())
        .await
        .expect("define");
    i.update_annotations(
        &instructeur(JEAN),
        1,
        0,
        vec![set("vu", AnnotationValue::Checkbox(true))],
    )
    .await
    .expect("first");
    let e = i
        .update_annotations(
            &instructeur(MARIE),
            1,
            0,
            vec![set("vu", AnnotationValue::Checkbox(false))],
        )
        .await
        .expect_err("stale");
    assert!(
        matches!(
            e,
            AppError::Stale {
                expected: 0,
                current: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), tonic::Code::Aborted);
    let seen = i
        .annotations(&instructeur(JEAN), 1)
        .await
        .expect("annotations");
    assert_eq!(seen.annotations[0].value, AnnotationValue::Checkbox(true));
}

#[tokio::test]
async fn annotations_are_hidden_from_another_groupe_and_from_promoteurs() {
    let app = spawn_app().await;
    let i = &app.instruction;
    i.update_annotation_definitions(&admin(), PROCEDURE, 0, definitions())
        .await
        .expect("define");
    let e = i
        .annotations(&instructeur(PAUL), 1)
        .await
        .expect_err("paul");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::NotFound);
    let e = i
        .update_annotations(
            &instructeur(PAUL),
            1,
            0,
            vec![set("vu", AnnotationValue::Checkbox(true))],
        )
        .await
        .expect_err("paul");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");
    let e = i
        .annotations(&person("promoteur@asso.fr", &[Role::Promoteur]), 1)
        .await
        .expect_err("promoteur");
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
    let e = i
        .annotations(&instructeur("undeclared@assurance-maladie.fr"), 1)
        .await
        .expect_err("undeclared");
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
    let e = i
        .annotations(&instructeur(JEAN), 999)
        .await
        .expect_err("missing");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");
    // Admins read but do not write.
    let e = i
        .update_annotations(
            &admin(),
            1,
            0,
            vec![set("vu", AnnotationValue::Checkbox(true))],
        )
        .await
        .expect_err("admin");
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Avis externes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_expert_answers_with_a_file_that_downloads_back() {
    let app = spawn_app().await;
    let i = &app.instruction;
    let asked = i
        .request_avis(&instructeur(JEAN), new_avis(1, false))
        .await
        .expect("request");
    assert_eq!(asked.row.expert_email, EXPERT);
    assert_eq!(asked.row.state, "pending");
    assert_eq!(asked.row.version, 1);
    assert_eq!(asked.procedure.title, "Projet MST");

    let inbox = i
        .my_avis_requests(&expert(), &[AvisState::Pending], 0, "")
        .await
        .expect("inbox");
    assert_eq!(inbox.avis.len(), 1);
    assert_eq!(
        inbox.avis[0].row.question,
        "Le budget vous paraît-il réaliste ?"
    );

    let content = pdf(150_000);
    let parts: Vec<Vec<u8>> = content.chunks(40_000).map(<[u8]>::to_vec).collect();
    let given = i
        .give_avis(
            &expert(),
            &app.files,
            AvisAnswer {
                avis_id: asked.row.id.clone(),
                expected_version: 1,
                answer: "Réaliste, à condition de recruter au premier trimestre.".into(),
                file: Some(AvisFileInput {
                    file_name: "../avis.pdf".into(),
                    content_type: "application/pdf".into(),
                    size_bytes: content.len() as i64,
                }),
            },
            chunks(parts),
        )
        .await
        .expect("give");
    assert_eq!(given.row.state, "given");
    assert_eq!(given.row.version, 2);
    assert_eq!(given.row.file_name.as_deref(), Some("avis.pdf"));
    assert_eq!(given.row.file_size_bytes, Some(content.len() as i64));

    for who in [expert(), instructeur(MARIE), instructeur(JEAN)] {
        let download = i
            .download_avis_file(&who, &app.files, &asked.row.id)
            .await
            .expect("download");
        assert_eq!(download.file_name, "avis.pdf");
        assert_eq!(download.content_type, "application/pdf");
        let pieces: Vec<Vec<u8>> = download.chunks.map(|c| c.expect("chunk")).collect().await;
        assert!(pieces.iter().all(|p| p.len() <= 64 * 1024));
        assert_eq!(pieces.concat(), content);
    }
    let e = i
        .download_avis_file(&instructeur(PAUL), &app.files, &asked.row.id)
        .await
        .expect_err("paul");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");

    // Answered once only.
    let e = i
        .give_avis(
            &expert(),
            &app.files,
            AvisAnswer {
                avis_id: asked.row.id.clone(),
                expected_version: 2,
                answer: "Encore".into(),
                file: None,
            },
            chunks(Vec::new()),
        )
        .await
        .expect_err("twice");
    assert!(
        matches!(
            e,
            GiveAvisError::App(AppError::WrongState {
                reason: "AVIS_CLOSED",
                ..
            })
        ),
        "{e:?}"
    );
    let listed = i.list_avis(&instructeur(MARIE), 1).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].redacted);
    assert!(listed[0].row.answer.is_some());
}

#[tokio::test]
async fn a_file_over_the_limit_or_of_the_wrong_size_or_type_is_refused_and_not_stored() {
    let app = spawn_app().await;
    let i = &app.instruction;
    let asked = i
        .request_avis(&instructeur(JEAN), new_avis(1, false))
        .await
        .expect("request");
    let answer = |size: i64, content_type: &str| AvisAnswer {
        avis_id: asked.row.id.clone(),
        expected_version: 1,
        answer: "Avis".into(),
        file: Some(AvisFileInput {
            file_name: "avis.pdf".into(),
            content_type: content_type.into(),
            size_bytes: size,
        }),
    };
    // Declared over the limit: refused before reading.
    let e = i
        .give_avis(
            &expert(),
            &app.files,
            answer(MAX_AVIS_FILE_BYTES as i64 + 1, "application/pdf"),
            chunks(Vec::new()),
        )
        .await
        .expect_err("declared too large");
    assert!(matches!(e, GiveAvisError::TooLarge(_)), "{e:?}");
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::ResourceExhausted
    );
    // Sent over the limit while declaring less: refused as soon as the limit is crossed.
    let mut parts = vec![pdf(1024 * 1024)];
    parts.extend(std::iter::repeat_n(vec![b'x'; 1024 * 1024], 20));
    let e = i
        .give_avis(
            &expert(),
            &app.files,
            answer(MAX_AVIS_FILE_BYTES as i64, "application/pdf"),
            chunks(parts),
        )
        .await
        .expect_err("sent too large");
    assert!(
        matches!(
            e,
            GiveAvisError::App(AppError::BadRequest(_)) | GiveAvisError::TooLarge(_)
        ),
        "{e:?}"
    );
    // Fewer bytes than declared.
    let e = i
        .give_avis(
            &expert(),
            &app.files,
            answer(2_000, "application/pdf"),
            chunks(vec![pdf(1_000)]),
        )
        .await
        .expect_err("short");
    assert!(
        matches!(e, GiveAvisError::App(AppError::BadRequest(_))),
        "{e:?}"
    );
    // Content not matching the declared type.
    let e = i
        .give_avis(
            &expert(),
            &app.files,
            answer(1_000, "image/png"),
            chunks(vec![pdf(1_000)]),
        )
        .await
        .expect_err("type");
    assert!(
        matches!(e, GiveAvisError::App(AppError::BadRequest(_))),
        "{e:?}"
    );
    assert_eq!(stored_files(&app), 0, "nothing stored on refusal");
    let still = i.list_avis(&instructeur(JEAN), 1).await.expect("list");
    assert_eq!(
        (still[0].row.state.as_str(), still[0].row.version),
        ("pending", 1)
    );
}

#[tokio::test]
async fn the_expert_cannot_answer_after_revocation() {
    let app = spawn_app().await;
    let i = &app.instruction;
    let asked = i
        .request_avis(&instructeur(JEAN), new_avis(1, false))
        .await
        .expect("request");
    // Only the requester revokes; another groupe does not see it.
    let e = i
        .revoke_avis(&instructeur(MARIE), &asked.row.id, 1)
        .await
        .expect_err("marie");
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
    let e = i
        .revoke_avis(&instructeur(PAUL), &asked.row.id, 1)
        .await
        .expect_err("paul");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");
    let e = i
        .revoke_avis(&instructeur(JEAN), &asked.row.id, 7)
        .await
        .expect_err("stale");
    assert!(matches!(e, AppError::Stale { current: 1, .. }), "{e:?}");
    let revoked = i
        .revoke_avis(&instructeur(JEAN), &asked.row.id, 1)
        .await
        .expect("revoke");
    assert_eq!(
        (revoked.row.state.as_str(), revoked.row.version),
        ("revoked", 2)
    );
    assert!(revoked.row.revoked_at.is_some());

    let e = i
        .give_avis(
            &expert(),
            &app.files,
            AvisAnswer {
                avis_id: asked.row.id.clone(),
                expected_version: 2,
                answer: "Trop tard".into(),
                file: Some(AvisFileInput {
                    file_name: "avis.pdf".into(),
                    content_type: "application/pdf".into(),
                    size_bytes: 1_000,
                }),
            },
            chunks(vec![pdf(1_000)]),
        )
        .await
        .expect_err("revoked");
    let GiveAvisError::App(e) = e else {
        panic!("expected an app error")
    };
    assert!(
        matches!(
            e,
            AppError::WrongState {
                reason: "AVIS_CLOSED",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(stored_files(&app), 0);
    let e = i
        .revoke_avis(&instructeur(JEAN), &asked.row.id, 2)
        .await
        .expect_err("twice");
    assert!(
        matches!(
            e,
            AppError::WrongState {
                reason: "AVIS_CLOSED",
                ..
            }
        ),
        "{e:?}"
    );
    // The expert still sees the request in his inbox, without its question.
    let inbox = i
        .my_avis_requests(&expert(), &[], 0, "")
        .await
        .expect("inbox");
    assert_eq!(inbox.avis.len(), 1);
    assert!(inbox.avis[0].row.question.is_empty());
    // Someone else with the id gets nothing.
    let e = i
        .give_avis(
            &person("autre@ars.fr", &[Role::Expert]),
            &app.files,
            AvisAnswer {
                avis_id: asked.row.id.clone(),
                expected_version: 2,
                answer: "?".into(),
                file: None,
            },
            chunks(Vec::new()),
        )
        .await
        .expect_err("other");
    assert!(
        matches!(e, GiveAvisError::App(AppError::NotFound(..))),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_confidential_answer_is_redacted_for_the_other_instructeurs() {
    let app = spawn_app().await;
    let i = &app.instruction;
    let asked = i
        .request_avis(&instructeur(JEAN), new_avis(1, true))
        .await
        .expect("request");
    let content = pdf(3_000);
    i.give_avis(
        &expert(),
        &app.files,
        AvisAnswer {
            avis_id: asked.row.id.clone(),
            expected_version: 1,
            answer: "Avis réservé".into(),
            file: Some(AvisFileInput {
                file_name: "avis.pdf".into(),
                content_type: "application/pdf".into(),
                size_bytes: content.len() as i64,
            }),
        },
        chunks(vec![content]),
    )
    .await
    .expect("give");
    let mine = i.list_avis(&instructeur(JEAN), 1).await.expect("jean");
    assert!(!mine[0].redacted);
    assert_eq!(mine[0].row.answer.as_deref(), Some("Avis réservé"));
    let hers = i.list_avis(&instructeur(MARIE), 1).await.expect("marie");
    assert!(hers[0].redacted);
    assert!(hers[0].row.answer.is_none() && hers[0].row.file_key.is_none());
    let e = i
        .download_avis_file(&instructeur(MARIE), &app.files, &asked.row.id)
        .await
        .expect_err("marie");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");
    i.download_avis_file(&instructeur(JEAN), &app.files, &asked.row.id)
        .await
        .expect("jean");
    let e = i.list_avis(&instructeur(PAUL), 1).await.expect_err("paul");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");
}

#[tokio::test]
async fn each_avis_event_is_written_to_the_outbox_with_its_change() {
    let app = spawn_app().await;
    let i = &app.instruction;
    let before = outbox_count(app.db()).await;
    let first = i
        .request_avis(&instructeur(JEAN), new_avis(1, false))
        .await
        .expect("request");
    // Idempotent per request id: the same avis, no second event.
    let mut again = new_avis(1, false);
    again.request_id = first.row.request_id.clone();
    let replay = i
        .request_avis(&instructeur(JEAN), again)
        .await
        .expect("replay");
    assert_eq!(replay.row.id, first.row.id);
    let second = i
        .request_avis(&instructeur(JEAN), new_avis(1, true))
        .await
        .expect("request");
    i.give_avis(
        &expert(),
        &app.files,
        AvisAnswer {
            avis_id: first.row.id.clone(),
            expected_version: 1,
            answer: "Favorable".into(),
            file: None,
        },
        chunks(Vec::new()),
    )
    .await
    .expect("give");
    i.revoke_avis(&instructeur(JEAN), &second.row.id, 1)
        .await
        .expect("revoke");
    let subjects = outbox_subjects(app.db()).await;
    assert_eq!(subjects.len(), 4, "{subjects:?}");
    for (subject, suffix) in subjects.iter().zip([
        "avis.requested.v1",
        "avis.requested.v1",
        "avis.given.v1",
        "avis.revoked.v1",
    ]) {
        assert!(subject.ends_with(suffix), "{subject} vs {suffix}");
    }
    assert_eq!(outbox_count(app.db()).await, before + 4);
    // A refused command writes nothing.
    let e = i
        .request_avis(
            &instructeur(JEAN),
            NewAvis {
                expert_email: "pas-une-adresse".into(),
                question: " ".into(),
                ..new_avis(1, false)
            },
        )
        .await
        .expect_err("invalid");
    assert_eq!(violations(e), ["expert_email", "question"]);
    let e = i
        .request_avis(&instructeur(PAUL), new_avis(1, false))
        .await
        .expect_err("paul");
    assert!(matches!(e, AppError::NotFound(..)), "{e:?}");
    assert_eq!(outbox_count(app.db()).await, before + 4);
}

#[tokio::test]
async fn the_experts_inbox_pages_newest_first() {
    let app = spawn_app().await;
    let i = &app.instruction;
    deposit(&app, 2, "13").await;
    let mut ids = Vec::new();
    for n in [1, 2, 1] {
        ids.push(
            i.request_avis(&instructeur(MARIE), new_avis(n, false))
                .await
                .expect("request")
                .row
                .id,
        );
    }
    let page = i
        .my_avis_requests(&expert(), &[], 2, "")
        .await
        .expect("page 1");
    let got: Vec<_> = page.avis.iter().map(|a| a.row.id.clone()).collect();
    assert_eq!(got, [ids[2].clone(), ids[1].clone()]);
    assert!(!page.next_page_token.is_empty());
    let page2 = i
        .my_avis_requests(&expert(), &[], 2, &page.next_page_token)
        .await
        .expect("page 2");
    assert_eq!(page2.avis.len(), 1);
    assert_eq!(page2.avis[0].row.id, ids[0]);
    assert!(page2.next_page_token.is_empty());
    let e = i
        .my_avis_requests(&expert(), &[], 2, "n'importe quoi")
        .await
        .expect_err("token");
    assert_eq!(violations(e), ["page_token"]);
    let none = i
        .my_avis_requests(&person("autre@ars.fr", &[]), &[], 0, "")
        .await
        .expect("other");
    assert!(none.avis.is_empty());
}

async fn set_dossier(db: &DatabaseConnection, number: i64, column: &str, value: sea_orm::Value) {
    let q = Query::update()
        .table(Alias::new("dossiers"))
        .value(Alias::new(column), value)
        .and_where(ExprTrait::eq(Expr::col(Alias::new("number")), number))
        .to_owned();
    db.execute(&q).await.expect("update dossier");
}

#[tokio::test]
async fn no_avis_is_asked_on_a_decided_or_archived_dossier() {
    let app = spawn_app().await;
    let i = &app.instruction;
    set_dossier(app.db(), 1, "status", "accepte".into()).await;
    let e = i
        .request_avis(&instructeur(JEAN), new_avis(1, false))
        .await
        .expect_err("decided");
    assert!(
        matches!(
            e,
            AppError::WrongState {
                reason: "DOSSIER_DECIDED",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::FailedPrecondition
    );
    set_dossier(app.db(), 1, "status", "en_instruction".into()).await;
    set_dossier(app.db(), 1, "archived", true.into()).await;
    let e = i
        .request_avis(&instructeur(JEAN), new_avis(1, false))
        .await
        .expect_err("archived");
    assert!(
        matches!(
            e,
            AppError::WrongState {
                reason: "ARCHIVED",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(outbox_subjects(app.db()).await.is_empty());
}

#[tokio::test]
async fn the_expert_reads_the_dossier_until_revoked() {
    let app = spawn_app().await;
    let i = &app.instruction;
    assert!(!i.is_expert_of(1, EXPERT).await.expect("before"));
    let asked = i
        .request_avis(&instructeur(JEAN), new_avis(1, false))
        .await
        .expect("request");
    assert!(i.is_expert_of(1, "EXPERT@ars.fr").await.expect("pending"));
    i.revoke_avis(&instructeur(JEAN), &asked.row.id, 1)
        .await
        .expect("revoke");
    assert!(!i.is_expert_of(1, EXPERT).await.expect("revoked"));
}

fn request<T>(who: Principal, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.extensions_mut().insert(who);
    r
}

#[tokio::test]
async fn the_grpc_handlers_convert_both_ways() {
    use mst_instruction::grpc::avis as h;
    use mst_proto::instruction as pb;
    let app = spawn_app().await;
    let i = &app.instruction;
    let defs = h::update_annotation_definitions(
        i,
        request(
            admin(),
            pb::UpdateAnnotationDefinitionsRequest {
                procedure_id: PROCEDURE.into(),
                expected_version: 0,
                definitions: vec![
                    pb::AnnotationDefinition {
                        id: "montant".into(),
                        label: "Montant".into(),
                        r#type: pb::AnnotationType::Decimal as i32,
                        max: Some("1000".into()),
                        ..Default::default()
                    },
                    pb::AnnotationDefinition {
                        id: "sans_type".into(),
                        label: "Sans type".into(),
                        ..Default::default()
                    },
                ],
            },
        ),
    )
    .await
    .expect_err("unspecified type");
    assert_eq!(defs.code(), tonic::Code::InvalidArgument);
    let defs = h::update_annotation_definitions(
        i,
        request(
            admin(),
            pb::UpdateAnnotationDefinitionsRequest {
                procedure_id: PROCEDURE.into(),
                expected_version: 0,
                definitions: vec![pb::AnnotationDefinition {
                    id: "montant".into(),
                    label: "Montant".into(),
                    r#type: pb::AnnotationType::Decimal as i32,
                    max: Some("1000".into()),
                    ..Default::default()
                }],
            },
        ),
    )
    .await
    .expect("define")
    .into_inner();
    assert_eq!(defs.version, 1);
    let patch = |value: &str, expected_version| pb::UpdateAnnotationsRequest {
        number: 1,
        expected_version,
        patches: vec![pb::AnnotationPatch {
            annotation_id: "montant".into(),
            operation: Some(pb::annotation_patch::Operation::Set(pb::AnnotationValue {
                value: Some(pb::annotation_value::Value::Decimal(value.into())),
            })),
        }],
    };
    let e = h::update_annotations(i, request(instructeur(JEAN), patch("1000.01", 0)))
        .await
        .expect_err("out of bounds");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    h::update_annotations(i, request(instructeur(JEAN), patch("999.99", 0)))
        .await
        .expect("annotate");
    let e = h::update_annotations(i, request(instructeur(JEAN), patch("1", 0)))
        .await
        .expect_err("stale");
    assert_eq!(e.code(), tonic::Code::Aborted);
    let got = h::get_annotations(
        i,
        request(instructeur(MARIE), pb::GetAnnotationsRequest { number: 1 }),
    )
    .await
    .expect("get")
    .into_inner();
    let set = got.annotations.expect("set");
    assert_eq!(set.version, 1);
    assert_eq!(
        set.annotations[0].value,
        Some(pb::AnnotationValue {
            value: Some(pb::annotation_value::Value::Decimal("999.99".into()))
        })
    );
    let e = h::get_annotations(
        i,
        request(instructeur(PAUL), pb::GetAnnotationsRequest { number: 1 }),
    )
    .await
    .expect_err("paul");
    assert_eq!(e.code(), tonic::Code::NotFound);

    let asked = h::request_avis(
        i,
        request(
            instructeur(JEAN),
            pb::RequestAvisRequest {
                number: 1,
                expert_email: EXPERT.into(),
                question: "Qu'en pensez-vous ?".into(),
                confidential: true,
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        ),
    )
    .await
    .expect("request")
    .into_inner()
    .avis
    .expect("avis");
    assert_eq!(asked.state, pb::AvisState::Pending as i32);
    assert_eq!(asked.version, 1);
    let content = pdf(70_000);
    i.give_avis(
        &expert(),
        &app.files,
        AvisAnswer {
            avis_id: asked.id.clone(),
            expected_version: 1,
            answer: "Favorable".into(),
            file: Some(AvisFileInput {
                file_name: "avis.pdf".into(),
                content_type: "application/pdf".into(),
                size_bytes: content.len() as i64,
            }),
        },
        chunks(vec![content.clone()]),
    )
    .await
    .expect("give");
    let listed = h::list_avis(
        i,
        request(instructeur(MARIE), pb::ListAvisRequest { number: 1 }),
    )
    .await
    .expect("list")
    .into_inner()
    .avis;
    assert!(listed[0].redacted && listed[0].answer.is_empty() && listed[0].answer_file.is_none());
    let listed = h::list_avis(
        i,
        request(instructeur(JEAN), pb::ListAvisRequest { number: 1 }),
    )
    .await
    .expect("list")
    .into_inner()
    .avis;
    let file = listed[0].answer_file.clone().expect("file");
    assert_eq!(file.size_bytes, content.len() as i64);
    assert_eq!(file.sha256.len(), 64);
    let mine = h::list_my_avis_requests(
        i,
        request(
            expert(),
            pb::ListMyAvisRequestsRequest {
                states: vec![pb::AvisState::Given as i32],
                page_size: 0,
                page_token: String::new(),
            },
        ),
    )
    .await
    .expect("inbox")
    .into_inner();
    assert_eq!(mine.avis.len(), 1);
    let mut stream = h::download_avis_file(
        i,
        &app.files,
        request(
            expert(),
            pb::DownloadAvisFileRequest {
                avis_id: asked.id.clone(),
            },
        ),
    )
    .await
    .expect("download")
    .into_inner();
    let mut header = None;
    let mut body = Vec::new();
    while let Some(message) = stream.next().await {
        match message.expect("message").payload {
            Some(pb::download_avis_file_response::Payload::Header(h)) => header = Some(h),
            Some(pb::download_avis_file_response::Payload::Chunk(c)) => body.extend(c),
            None => panic!("empty message"),
        }
    }
    assert_eq!(
        header.expect("header").size_bytes,
        Some(content.len() as i64)
    );
    assert_eq!(body, content);
    let e = h::download_avis_file(
        i,
        &app.files,
        request(
            instructeur(MARIE),
            pb::DownloadAvisFileRequest {
                avis_id: asked.id.clone(),
            },
        ),
    )
    .await
    .err()
    .expect("marie");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = h::revoke_avis(
        i,
        request(
            instructeur(JEAN),
            pb::RevokeAvisRequest {
                avis_id: asked.id,
                expected_version: 2,
            },
        ),
    )
    .await
    .expect_err("given");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
}
