//! The public export over several database pages: every visible fiche exactly once, invisible
//! ones never, in both formats — the CSV quoting values with commas, quotes and line breaks, the
//! JSON one well-formed array.

use std::collections::BTreeSet;

use chrono::Utc;
use futures::StreamExt as _;
use mst_oscars::app::Oscars;
use mst_oscars::store::fiche;
use mst_proto::events as ev;
use sea_orm::ActiveModelTrait as _;

/// Visible fiches: more than two export pages of 200.
const VISIBLE: usize = 450;

async fn oscars_with_fiches() -> (
    Oscars,
    BTreeSet<String>,
    mst_testkit::NatsServer,
    mst_testkit::TestDb,
) {
    let db = mst_testkit::TestDb::new().await.unwrap();
    let conn = sea_orm::Database::connect(db.url()).await.unwrap();
    mst_migrations::run("oscars", &conn, mst_migrations::Command::Up)
        .await
        .unwrap();
    let nats = mst_testkit::NatsServer::start().await.unwrap();
    let bus = mst_bus::Bus::connect(mst_bus::BusSettings::new(nats.url(), "EXPORT", "export"))
        .await
        .unwrap();
    let relay = mst_bus::Relay::new(conn.clone(), bus).handle();
    let token = mst_kit::auth::ServiceToken::for_service(
        &mst_kit::auth::AuthSettings::embedded(),
        "oscars",
    )
    .unwrap();
    let forms = mst_proto::forms::forms_internal_service_client::FormsInternalServiceClient::with_interceptor(
        tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
        token,
    );
    let mut visible = BTreeSet::new();
    let now = Utc::now();
    for i in 0..VISIBLE + 30 {
        let shown = i < VISIBLE;
        let f = ev::Fiche {
            id: uuid::Uuid::new_v4().to_string(),
            kind: ev::DossierKind::Action as i32,
            dossier_number: i as i64 + 1,
            year: 2024,
            module: "moisanstabac".into(),
            region_code: "93".into(),
            departement_code: "13".into(),
            commune_code: "13055".into(),
            title: format!("Fiche {i:04}, \"édition\" 2024"),
            status: if shown {
                ev::FicheStatus::Visible
            } else {
                ev::FicheStatus::EnCours
            } as i32,
            visible: shown,
            version: 3,
            description: "Première ligne,\nseconde ligne".into(),
            publics: vec!["Fumeurs".into(), "Étudiants".into()],
            internal: Some(ev::FicheInternal {
                cpam: "CPAM des Bouches-du-Rhône (13)".into(),
                montant_accorde: String::new(),
            }),
            ..Default::default()
        };
        if shown {
            visible.insert(f.id.clone());
        }
        let mut row = fiche::Model {
            id: f.id.clone(),
            dossier_number: f.dossier_number,
            kind: String::new(),
            year: 0,
            region_code: String::new(),
            departement_code: String::new(),
            commune_code: String::new(),
            status: String::new(),
            visible: false,
            promoteur_id: None,
            projet_fiche_id: None,
            previous_fiche_id: None,
            linked_projet_dossier: None,
            type_action: String::new(),
            publics_key: String::new(),
            search_text: String::new(),
            siret: String::new(),
            version: 0,
            dossier_status_version: 1,
            content: Vec::new(),
            original: Vec::new(),
            imported_at: now,
            updated_at: now,
            published_at: None,
        };
        fiche::columns(&mut row, &f);
        row.original = row.content.clone();
        fiche::ActiveModel::from(row).insert(&conn).await.unwrap();
    }
    (Oscars::new(conn, relay, forms), visible, nats, db)
}

async fn body(oscars: &Oscars, csv: bool) -> String {
    let mut stream = Box::pin(oscars.export(Default::default(), csv));
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn an_export_over_several_pages_holds_every_visible_fiche_once_in_both_formats() {
    let (oscars, visible, _nats, _db) = oscars_with_fiches().await;

    let csv = body(&oscars, true).await;
    assert!(csv.starts_with("Identifiant,Type de fiche,"));
    for id in &visible {
        assert_eq!(csv.matches(&format!("\n{id},")).count(), 1, "{id}");
    }
    assert!(
        csv.contains("\"Fiche 0001, \"\"édition\"\" 2024\""),
        "quoted title"
    );
    assert!(csv.contains("\"Première ligne,\nseconde ligne\""));
    assert!(!csv.contains("CPAM"), "internal fields stay out");
    let records = csv.matches("\n").count() - visible.len();
    assert_eq!(
        records,
        visible.len() + 1,
        "header + one line per fiche + one break inside each description"
    );

    let json = body(&oscars, false).await;
    let fiches: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let ids: BTreeSet<String> = fiches
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fiches.len(), VISIBLE);
    assert_eq!(ids, visible);
    assert!(fiches.iter().all(|f| f.get("internal").is_none()));
}
