//! The use case on a real database, without forms: authorization, and errors before the
//! first byte (the full path with forms is the e2e stack's).

use std::collections::BTreeSet;

use chrono::Utc;
use mst_bus::RelayHandle;
use mst_instruction::app::board::Tab;
use mst_instruction::app::export::{ExportRequest, Format};
use mst_instruction::app::roster::NewGroupe;
use mst_instruction::app::{AppError, DepositInput, FormsFreeze, Headline, Instruction};
use mst_kit::auth::{Principal, Role};
use mst_kit::config::DatabaseSettings;
use mst_migrations::MigratorTrait;
use mst_proto::events as ev;
use mst_testkit::TestDb;

const PROCEDURE: &str = "proc-mst";

fn person(email: &str, roles: &[Role]) -> Principal {
    Principal {
        email: email.to_owned(),
        name: None,
        roles: roles.iter().copied().collect::<BTreeSet<_>>(),
    }
}

fn request(format: Format) -> ExportRequest {
    ExportRequest {
        procedure_id: PROCEDURE.into(),
        format,
        tab: Tab::Tous,
        statuses: vec![],
        followed_by_me: false,
        deposited_after: None,
        deposited_before: None,
        groupe_ids: vec![],
        text: String::new(),
        repetition_field_id: None,
        include_annotations: false,
    }
}

#[tokio::test]
async fn only_declared_instructeurs_and_admins_export_and_forms_is_needed_for_answers() {
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
    let i = Instruction::new(db, RelayHandle::default(), FormsFreeze::unconfigured());
    let admin = person("admin@mst.test", &[Role::Admin]);
    let mut groupes = Vec::new();
    for (label, cpam, dep) in [("CPAM 13", "CPAM 13", "13"), ("CPAM 59", "CPAM 59", "59")] {
        let g = i
            .create_groupe(
                &admin,
                NewGroupe {
                    label: label.into(),
                    cpam_values: vec![cpam.into()],
                    departement_codes: vec![dep.into()],
                    is_default: false,
                },
            )
            .await
            .expect("groupe");
        groupes.push(g.id);
    }
    i.add_instructeur(&admin, "alice@assurance-maladie.fr", &groupes[0], "")
        .await
        .expect("alice");
    i.add_instructeur(&admin, "clara@assurance-maladie.fr", &groupes[1], "")
        .await
        .expect("clara");
    i.record_deposit(
        &person("forms@mst.internal", &[Role::System]),
        DepositInput {
            number: 1,
            deposit_id: "dep-1".into(),
            procedure: ev::ProcedureRef {
                id: PROCEDURE.into(),
                title: "Mon soutien territorial".into(),
                kind: ev::DossierKind::Projet as i32,
            },
            revision_id: "rev-1".into(),
            owner_email: "porteur@example.org".into(),
            invitee_emails: vec![],
            content_version: 1,
            headline: Headline {
                title: "Projet".into(),
                structure_name: "Asso".into(),
                siret: "12345678901234".into(),
                region_code: "93".into(),
                departement_code: "13".into(),
                cpam: "CPAM 13".into(),
            },
            created_at: Utc::now(),
        },
    )
    .await
    .expect("deposit");

    // A promoteur, an undeclared instructeur: denied.
    for who in [
        person("porteur@example.org", &[Role::Promoteur]),
        person("zoe@assurance-maladie.fr", &[Role::Instructeur]),
    ] {
        let err = i.export(&who, request(Format::Csv)).await.map(|_| ());
        assert!(matches!(err, Err(AppError::Forbidden(_))), "{err:?}");
    }
    // Another groupe's groupe in the filter: refused.
    let mut other = request(Format::Csv);
    other.groupe_ids = vec![groupes[0].clone()];
    let err = i
        .export(
            &person("clara@assurance-maladie.fr", &[Role::Instructeur]),
            other,
        )
        .await
        .map(|_| ());
    assert!(matches!(err, Err(AppError::BadRequest(_))), "{err:?}");
    // Unknown procedure.
    let mut unknown = request(Format::Xlsx);
    unknown.procedure_id = "nope".into();
    let err = i.export(&admin, unknown).await.map(|_| ());
    assert!(matches!(err, Err(AppError::NotFound(..))), "{err:?}");

    // Clara (groupe 59) sees no dossier, but the columns come from the procedure's published
    // revision in forms: without forms, unavailable before the first byte.
    let err = i
        .export(
            &person("clara@assurance-maladie.fr", &[Role::Instructeur]),
            request(Format::Csv),
        )
        .await
        .map(|_| ());
    assert!(matches!(err, Err(AppError::Unavailable(_))), "{err:?}");

    // Alice sees dossier 1, whose answers are in forms: unavailable before the first byte.
    let err = i
        .export(
            &person("alice@assurance-maladie.fr", &[Role::Instructeur]),
            request(Format::Xlsx),
        )
        .await
        .map(|_| ());
    assert!(matches!(err, Err(AppError::Unavailable(_))), "{err:?}");
}
