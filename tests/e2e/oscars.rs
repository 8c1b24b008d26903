//! The OSCARS service (issue 6) through the real services and NATS: a realistic Projet and two
//! Actions filled, deposited, instructed and accepted become three invisible fiches; the
//! ambassadeur of the région chains, attaches the promoteur and publishes; the public API and the
//! feed show them; redeliveries and a full replay change nothing; leaving accepté withdraws;
//! another région's ambassadeur reaches nothing; merged promoteurs keep their names as aliases.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::StreamExt as _;
use mst_e2e::{Services, Stack};
use mst_kit::auth::Role;
use mst_kit::service::RunService as _;
use mst_proto::Event as _;
use mst_proto::events as ev;
use mst_proto::forms as fpb;
use mst_proto::forms::champ_value::Value as V;
use mst_proto::instruction as ipb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use mst_proto::oscars as pb;
use mst_proto::oscars::oscars_public_service_client::OscarsPublicServiceClient;
use mst_proto::oscars::oscars_service_client::OscarsServiceClient;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::mst_procedures::{
    ACTION, INSTRUCTEUR_13, PROJET, PROMOTEUR, autosave, choice, clear_closing_date, cpam_of,
    marseille_address, multi, open_procedures, pdf, roster_groupe, siret, try_create, upload_pdf,
};
use crate::support::*;

pub(crate) const AMBASSADEUR_PACA: &str = "lea.garcia@cres-paca.example";
pub(crate) const AMBASSADEUR_ARA: &str = "hugo.bernard@ireps-ara.example";
pub(crate) const PROJET_TITLE: &str = "Mois sans tabac 2024 dans les quartiers Nord de Marseille";
pub(crate) const STRUCTURE: &str = "Association Souffle – Prévention santé Marseille";

// ---------------------------------------------------------------------------------------------
// Clients and helpers
// ---------------------------------------------------------------------------------------------

async fn channel(url: String) -> Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn oscars_at(url: String) -> OscarsServiceClient<Channel> {
    OscarsServiceClient::new(channel(url).await)
}

pub(crate) async fn oscars(stack: &impl Services) -> OscarsServiceClient<Channel> {
    oscars_at(stack.url("oscars")).await
}

pub(crate) async fn public(stack: &impl Services) -> OscarsPublicServiceClient<Channel> {
    OscarsPublicServiceClient::new(channel(stack.url("oscars")).await)
}

async fn instruction(stack: &impl Services) -> InstructionServiceClient<Channel> {
    InstructionServiceClient::new(channel(stack.url("instruction")).await)
}

fn ambassadeur<T>(email: &str, message: T) -> tonic::Request<T> {
    as_(email, &[Role::Ambassadeur], message)
}

pub(crate) fn paca<T>(message: T) -> tonic::Request<T> {
    ambassadeur(AMBASSADEUR_PACA, message)
}

fn instructeur<T>(message: T) -> tonic::Request<T> {
    as_(INSTRUCTEUR_13, &[Role::Instructeur], message)
}

/// Polls `check` every 20 ms until it returns `Some`, for at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every fiche the admin sees (all statuses), by dossier number.
async fn all_fiches(client: &mut OscarsServiceClient<Channel>) -> BTreeMap<i64, ev::Fiche> {
    let filter = pb::WorkQueueFilter {
        statuses: vec![
            ev::FicheStatus::Importe as i32,
            ev::FicheStatus::EnCours as i32,
            ev::FicheStatus::Visible as i32,
            ev::FicheStatus::Retiree as i32,
        ],
        region_code: "93".into(),
        ..Default::default()
    };
    client
        .list_work_queue(admin(pb::ListWorkQueueRequest {
            filter: Some(filter),
            page_size: 500,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .fiches
        .into_iter()
        .map(|f| (f.dossier_number, f))
        .collect()
}

/// The fiche of dossier `number` once it exists with `version` at least.
pub(crate) async fn fiche_of(stack: &impl Services, number: i64, version: i64) -> ev::Fiche {
    let mut client = oscars(stack).await;
    eventually(&format!("the fiche of dossier {number}"), || {
        let mut client = client.clone();
        async move {
            all_fiches(&mut client)
                .await
                .remove(&number)
                .filter(|f| f.version >= version)
        }
    })
    .await;
    all_fiches(&mut client).await.remove(&number).unwrap()
}

pub(crate) async fn configure_ambassadeurs(stack: &impl Services) {
    let mut client = oscars(stack).await;
    for (region, email, structure) in [
        ("93", AMBASSADEUR_PACA, "CRES Provence-Alpes-Côte d'Azur"),
        ("84", AMBASSADEUR_ARA, "IREPS Auvergne-Rhône-Alpes"),
    ] {
        let r = client
            .set_ambassadeurs(admin(pb::SetAmbassadeursRequest {
                region_code: region.into(),
                expected_version: 0,
                ambassadeurs: vec![pb::Ambassadeur {
                    email: email.into(),
                    structure: structure.into(),
                }],
            }))
            .await
            .unwrap()
            .into_inner()
            .region
            .unwrap();
        assert_eq!(r.version, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Dossiers driven to accepté
// ---------------------------------------------------------------------------------------------

struct Accepted {
    siret: String,
    projet: i64,
    actions: [i64; 2],
}

/// A realistic Projet, filled and deposited.
async fn deposit_projet(stack: &impl Services, siret: &str, cpam: &str) -> i64 {
    deposit_projet_of(stack, PROJET, 2024, siret, cpam, PROJET_TITLE).await
}

/// A realistic Projet of `procedure` (edition `year`), filled and deposited.
async fn deposit_projet_of(
    stack: &impl Services,
    procedure: &str,
    year: i64,
    siret: &str,
    cpam: &str,
    title: &str,
) -> i64 {
    let d = try_create(stack, PROMOTEUR, procedure).await.unwrap();
    let version = fill_projet(stack, &d, year, siret, cpam, title).await;
    deposit(stack, PROMOTEUR, d.number, version)
        .await
        .unwrap_or_else(|e| panic!("deposit of the projet: {e:?}"));
    d.number
}

/// Fills brouillon `d` as a realistic Projet of edition `year` over three autosaves and two
/// uploads; returns its version.
pub(crate) async fn fill_projet(
    stack: &impl Services,
    d: &fpb::Dossier,
    year: i64,
    siret: &str,
    cpam: &str,
    title: &str,
) -> i64 {
    let patches = vec![
        set("p_siret", V::Siret(siret.into())),
        set("p_raison_sociale", text(STRUCTURE)),
        set("p_type_structure", choice("Association")),
        set(
            "p_adresse",
            marseille_address("12 rue d'Italie", "13006", 43.2886, 5.3822),
        ),
        set("p_contact_nom", text("Marie Dupont")),
        set("p_contact_email", V::Email(PROMOTEUR.into())),
        set("p_contact_tel", V::Phone("04 91 55 20 13".into())),
        set("p_aucun_lien_tabac", V::Checkbox(true)),
        set("p_region", V::Region("93".into())),
        set("p_departement", V::Departement("13".into())),
        set("p_cpam", choice(cpam)),
        set("p_titre", text(title)),
        set("p_edition", V::Integer(year)),
        set("p_renouvellement", V::YesNo(false)),
        set(
            "p_contexte",
            text("Les quartiers Nord de Marseille comptent une forte prévalence du tabagisme."),
        ),
        set(
            "p_objectif_general",
            text("Réduire le tabagisme des habitants des quartiers Nord de Marseille."),
        ),
        set(
            "p_objectifs_operationnels",
            text("Informer 1 500 habitants ; inscrire 200 fumeurs au défi."),
        ),
        set(
            "p_publics",
            multi(
                &["Jeunes, notamment en formation professionnelle et en insertion"],
                Some("Habitants des QPV"),
            ),
        ),
        set("p_niveau_geo", choice("Intercommunal")),
        add_row("p_communes", "c1"),
        set_in_row(
            "p_communes",
            "c1",
            "p_communes_commune",
            V::Commune("13055".into()),
        ),
        set("p_date_debut", V::Date(format!("{year}-10-07"))),
        set("p_date_fin", V::Date(format!("{year}-11-29"))),
        set("p_nb_actions", V::Integer(2)),
        set("p_nb_personnes_prevues", V::Integer(450)),
        set("p_avec_partenaires", V::YesNo(true)),
        add_row("p_partenaires", "pa1"),
        set_in_row(
            "p_partenaires",
            "pa1",
            "p_partenaire_nom",
            text("CSAPA Le Sémaphore"),
        ),
        set_in_row(
            "p_partenaires",
            "pa1",
            "p_partenaire_role",
            text("Tabacologie"),
        ),
        set(
            "p_relais",
            text("Orientation vers Tabac info service (39 89)."),
        ),
        set("p_indicateurs", text("Nombre d'inscrits au défi.")),
        set("p_budget_total", V::Decimal("5000.00".into())),
        set("p_montant_demande", V::Decimal("3000.00".into())),
        add_row("p_depenses", "d1"),
        set_in_row(
            "p_depenses",
            "d1",
            "p_dep_poste",
            choice("Supports de communication / impression"),
        ),
        set_in_row(
            "p_depenses",
            "d1",
            "p_dep_montant",
            V::Decimal("5000.00".into()),
        ),
        set_in_row("p_depenses", "d1", "p_dep_detail", text("Affiches")),
        set("p_avec_cofinancements", V::YesNo(true)),
        add_row("p_cofinancements", "f1"),
        set_in_row("p_cofinancements", "f1", "p_cof_financeur", choice("ARS")),
        set_in_row(
            "p_cofinancements",
            "f1",
            "p_cof_montant",
            V::Decimal("2000.00".into()),
        ),
        set_in_row("p_cofinancements", "f1", "p_cof_statut", choice("Acquis")),
        set("p_engagement_bilan", V::Checkbox(true)),
    ];
    // Three autosaves, as the form saves while the promoteur types.
    let mut d = d.clone();
    let third = patches.len().div_ceil(3);
    for chunk in patches.chunks(third) {
        d = autosave(stack, PROMOTEUR, &d, chunk.to_vec()).await;
    }
    let mut version = d.version;
    for (field, name) in [("p_pj_budget", "budget.pdf"), ("p_pj_rib", "rib.pdf")] {
        version = upload_pdf(stack, PROMOTEUR, d.number, field, name, pdf(name))
            .await
            .version;
    }
    version
}

/// A realistic Action of `projet`, filled and deposited.
pub(crate) async fn deposit_action(
    stack: &impl Services,
    siret: &str,
    cpam: &str,
    projet: i64,
    title: &str,
    lieu: &str,
) -> i64 {
    let a = try_create(stack, PROMOTEUR, ACTION).await.unwrap();
    let a = autosave(
        stack,
        PROMOTEUR,
        &a,
        vec![
            set("a_projet_dossier", V::DossierLink(projet)),
            set("a_siret", V::Siret(siret.into())),
            set("a_raison_sociale", text("Asso Souffle Marseille")),
            set("a_cpam", choice(cpam)),
            set("a_renouvellement", V::YesNo(false)),
            set("a_titre", text(title)),
            set("a_date_debut", V::Date("2024-10-15".into())),
            set("a_date_fin", V::Date("2024-11-26".into())),
            set("a_type_action", choice("Stand / journée d'information")),
            set(
                "a_objectifs",
                multi(
                    &["Accompagner l'arrêt (consultation, atelier collectif, substituts nicotiniques…)"],
                    None,
                ),
            ),
            set(
                "a_description",
                text("Un stand tenu par une tabacologue chaque mardi matin."),
            ),
            set("a_public", multi(&["Habitants / tout public", "Fumeurs"], None)),
            set("a_nb_personnes_prevues", V::Integer(120)),
            set("a_nom_lieu", text(lieu)),
            set("a_type_lieu", choice("Structure sociale / hébergement")),
            set(
                "a_adresse",
                marseille_address("172 rue de Lyon", "13015", 43.3420, 5.3548),
            ),
            set("a_commune", V::Commune("13055".into())),
            set("a_departement", V::Departement("13".into())),
            set("a_niveau_geo", choice("Communal")),
            set(
                "a_financeurs",
                multi(&["Assurance Maladie - Régime général", "ARS"], None),
            ),
            set(
                "a_contact_public_email",
                V::Email("mois-sans-tabac@asso-souffle.fr".into()),
            ),
        ],
    )
    .await;
    deposit(stack, PROMOTEUR, a.number, a.version)
        .await
        .unwrap_or_else(|e| panic!("deposit of the action: {e:?}"));
    a.number
}

/// The instruction status version of dossier `number`.
pub(crate) async fn status_version(stack: &impl Services, number: i64) -> i64 {
    instruction(stack)
        .await
        .get_dossier(instructeur(ipb::GetDossierRequest { number }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap()
        .version
}

/// Passes `number` en instruction and accepts it.
pub(crate) async fn accept(stack: &impl Services, number: i64) {
    let mut client = instruction(stack).await;
    let version = status_version(stack, number).await;
    let d = client
        .passer_en_instruction(instructeur(ipb::PasserEnInstructionRequest {
            number,
            expected_version: version,
        }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap();
    client
        .accepter(instructeur(ipb::AccepterRequest {
            number,
            expected_version: d.version,
            motivation: "Projet conforme au cahier des charges.".into(),
            justificatif_upload_id: String::new(),
        }))
        .await
        .unwrap();
}

/// Accepts again a dossier that left accepté.
async fn accept_again(stack: &impl Services, number: i64) {
    let version = status_version(stack, number).await;
    instruction(stack)
        .await
        .accepter(instructeur(ipb::AccepterRequest {
            number,
            expected_version: version,
            motivation: String::new(),
            justificatif_upload_id: String::new(),
        }))
        .await
        .unwrap();
}

async fn repasser_en_instruction(stack: &impl Services, number: i64) {
    let version = status_version(stack, number).await;
    instruction(stack)
        .await
        .repasser_en_instruction(instructeur(ipb::RepasserEnInstructionRequest {
            number,
            expected_version: version,
            message: "Pièce à vérifier".into(),
        }))
        .await
        .unwrap();
}

/// A Projet and two Actions linked to it, deposited and accepted; ambassadeurs configured.
async fn accepted_projet_and_actions(stack: &impl Services, with_actions: bool) -> Accepted {
    open_procedures(stack).await;
    let cpam = cpam_of("13");
    roster_groupe(stack, &cpam, "13").await;
    configure_ambassadeurs(stack).await;
    let siret = siret("78452316", "0001");
    let projet = deposit_projet(stack, &siret, &cpam).await;
    let mut actions = [0; 2];
    if with_actions {
        actions[0] = deposit_action(
            stack,
            &siret,
            &cpam,
            projet,
            "Stand d'information au centre social Saint-Louis",
            "Centre social Saint-Louis",
        )
        .await;
        actions[1] = deposit_action(
            stack,
            &siret,
            &cpam,
            projet,
            "Atelier collectif d'aide à l'arrêt à la Savine",
            "Maison de quartier de la Savine",
        )
        .await;
    }
    for n in std::iter::once(projet).chain(actions.into_iter().filter(|n| *n > 0)) {
        accept(stack, n).await;
    }
    Accepted {
        siret,
        projet,
        actions,
    }
}

// ---------------------------------------------------------------------------------------------
// The feed, as an external subscriber reads it
// ---------------------------------------------------------------------------------------------

/// One feed message: subject, event id, fiche, withdrawal reason.
#[derive(Debug, Clone)]
pub(crate) struct FeedItem {
    pub(crate) subject: String,
    pub(crate) event_id: String,
    pub(crate) fiche: ev::Fiche,
    pub(crate) reason: i32,
}

/// An external subscriber: its own durable pull consumer on `mst.oscars.fiche.>`, from the start.
pub(crate) struct Subscriber {
    consumer: PullConsumer,
    prefix: String,
}

impl Subscriber {
    pub(crate) async fn new(stack: &impl Services, durable: &str) -> Self {
        let js = async_nats::jetstream::new(async_nats::connect(stack.nats_url()).await.unwrap());
        let stream = js.get_stream(stack.prefix().to_uppercase()).await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(durable.into()),
                filter_subject: format!("{}.oscars.fiche.>", stack.prefix()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        Self {
            consumer,
            prefix: stack.prefix().to_owned(),
        }
    }

    /// Receives (and acks) messages until `n` have arrived, at most 20 s.
    pub(crate) async fn take(&mut self, n: usize) -> Vec<FeedItem> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} feed messages: {:?}",
                out.len(),
                out.iter()
                    .map(|i: &FeedItem| &i.subject)
                    .collect::<Vec<_>>()
            );
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(n - out.len())
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .unwrap();
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                let subject = m
                    .subject
                    .strip_prefix(&format!("{}.", self.prefix))
                    .unwrap()
                    .to_owned();
                let event_id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_owned())
                    .unwrap();
                let schema = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Mst-Schema"))
                    .map(|v| v.as_str().to_owned())
                    .unwrap();
                let (meta, fiche, reason) = match subject.as_str() {
                    s if s == ev::OscarsFicheImported::SUBJECT => {
                        let e = ev::OscarsFicheImported::decode(m.payload.as_ref()).unwrap();
                        assert_eq!(schema, "mst.events.v1.OscarsFicheImported");
                        (e.metadata, e.fiche, 0)
                    }
                    s if s == ev::OscarsFichePublished::SUBJECT => {
                        let e = ev::OscarsFichePublished::decode(m.payload.as_ref()).unwrap();
                        (e.metadata, e.fiche, 0)
                    }
                    s if s == ev::OscarsFicheUpdated::SUBJECT => {
                        let e = ev::OscarsFicheUpdated::decode(m.payload.as_ref()).unwrap();
                        assert!(!e.changed_fields.is_empty(), "{e:?}");
                        (e.metadata, e.fiche, 0)
                    }
                    s if s == ev::OscarsFicheWithdrawn::SUBJECT => {
                        let e = ev::OscarsFicheWithdrawn::decode(m.payload.as_ref()).unwrap();
                        (e.metadata, e.fiche, e.reason)
                    }
                    other => panic!("unexpected subject {other}"),
                };
                assert_eq!(meta.unwrap().event_id, event_id);
                m.double_ack().await.unwrap();
                out.push(FeedItem {
                    subject,
                    event_id,
                    fiche: fiche.unwrap(),
                    reason,
                });
            }
        }
        out
    }

    /// Messages left for this subscriber.
    pub(crate) async fn pending(&mut self) -> u64 {
        self.consumer.info().await.unwrap().num_pending
    }
}

pub(crate) fn kinds(items: &[FeedItem]) -> BTreeMap<&str, usize> {
    let mut out = BTreeMap::new();
    for i in items {
        *out.entry(i.subject.as_str()).or_default() += 1;
    }
    out
}

/// Each event once, and per fiche strictly increasing versions in delivery order.
pub(crate) fn assert_once_and_in_order(items: &[FeedItem]) {
    let mut ids = std::collections::BTreeSet::new();
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for i in items {
        assert!(ids.insert(&i.event_id), "event {} twice", i.event_id);
        let previous = last.insert(&i.fiche.id, i.fiche.version).unwrap_or(0);
        assert!(
            i.fiche.version > previous,
            "fiche {} went from version {previous} to {} ({})",
            i.fiche.id,
            i.fiche.version,
            i.subject
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_accepted_projet_and_two_actions_become_invisible_fiches_that_the_ambassadeur_chains_attaches_and_publishes()
 {
    let stack = Stack::start().await.unwrap();
    let mut feed = Subscriber::new(&stack, "oscars-ingest").await;
    let a = accepted_projet_and_actions(&stack, true).await;
    let mut client = oscars(&stack).await;

    // Three invisible fiches, status importé, in the PACA ambassadeur's work queue.
    let projet = fiche_of(&stack, a.projet, 1).await;
    let actions = [
        fiche_of(&stack, a.actions[0], 1).await,
        fiche_of(&stack, a.actions[1], 1).await,
    ];
    let queue = client
        .list_work_queue(paca(pb::ListWorkQueueRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.total_count, 3);
    for f in std::iter::once(&projet).chain(actions.iter()) {
        assert_eq!(f.status(), ev::FicheStatus::Importe);
        assert!(!f.visible);
        assert_eq!(
            (f.region_code.as_str(), f.departement_code.as_str()),
            ("93", "13")
        );
        assert_eq!(f.year, 2024);
        assert_eq!(f.module, "moisanstabac");
        assert!(f.promoteur_id.is_empty());
    }
    assert_eq!(projet.kind(), ev::DossierKind::Projet);
    assert_eq!(projet.title, PROJET_TITLE);
    assert_eq!(projet.commune_code, "13055");
    assert_eq!(
        projet.financeurs,
        ["Assurance Maladie - Régime général", "ARS"]
    );
    assert_eq!(projet.promoteur.as_ref().unwrap().raison_sociale, STRUCTURE);
    assert_eq!(projet.promoteur.as_ref().unwrap().siret, a.siret);
    let Some(ev::fiche::Details::ActionDetails(d)) = &actions[0].details else {
        panic!("action details")
    };
    assert_eq!(d.type_action, "Stand / journée d'information");
    assert_eq!(d.nom_lieu, "Centre social Saint-Louis");
    assert_eq!(d.latitude, Some(43.3420));
    assert_eq!(actions[0].publics, ["Habitants / tout public", "Fumeurs"]);
    let only_actions = client
        .list_work_queue(paca(pb::ListWorkQueueRequest {
            filter: Some(pb::WorkQueueFilter {
                kind: ev::DossierKind::Action as i32,
                departement_codes: vec!["13".into()],
                year: Some(2024),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_actions.total_count, 2);
    // Two pages of two, oldest import first; a token of other filters is refused.
    let first = client
        .list_work_queue(paca(pb::ListWorkQueueRequest {
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.fiches.len(), 2);
    assert_eq!(first.fiches[0].id, projet.id);
    let second = client
        .list_work_queue(paca(pb::ListWorkQueueRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.fiches.len(), 1);
    assert!(second.next_page_token.is_empty());
    let err = client
        .list_work_queue(paca(pb::ListWorkQueueRequest {
            filter: Some(pb::WorkQueueFilter {
                year: Some(2023),
                ..Default::default()
            }),
            page_size: 2,
            page_token: first.next_page_token.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Nothing public yet.
    let listed = public(&stack)
        .await
        .list_public_fiches(pb::ListPublicFichesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 0);

    // An action cannot be published yet: no promoteur, no projet — both listed.
    let err = client
        .publish_fiche(paca(pb::PublishFicheRequest {
            fiche_id: actions[0].id.clone(),
            expected_version: actions[0].version,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "FICHE_INCOMPLETE"
    );
    let missing: Vec<String> = err
        .get_details_precondition_failure()
        .unwrap()
        .violations
        .into_iter()
        .map(|v| v.subject)
        .collect();
    assert_eq!(missing, ["promoteur", "projet"]);

    // A projet is not chained to a projet; an action is not a projet.
    let err = client
        .suggest_projet(paca(pb::SuggestProjetRequest {
            fiche_id: projet.id.clone(),
            limit: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "NOT_AN_ACTION"
    );
    let err = client
        .chain_to_projet(paca(pb::ChainToProjetRequest {
            fiche_id: actions[0].id.clone(),
            expected_version: actions[0].version,
            projet_fiche_id: actions[1].id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "projet_fiche_id"
    );

    // Chain each action to the projet its dossier links to (the first suggestion).
    let mut current = BTreeMap::new();
    current.insert(projet.id.clone(), projet.version);
    for action in &actions {
        let s = client
            .suggest_projet(paca(pb::SuggestProjetRequest {
                fiche_id: action.id.clone(),
                limit: 0,
            }))
            .await
            .unwrap()
            .into_inner()
            .suggestions;
        let best = &s[0];
        assert_eq!(best.fiche.as_ref().unwrap().fiche_id, projet.id);
        assert!(
            best.reasons
                .contains(&(pb::SuggestionReason::DossierLink as i32))
        );
        let chained = client
            .chain_to_projet(paca(pb::ChainToProjetRequest {
                fiche_id: action.id.clone(),
                expected_version: action.version,
                projet_fiche_id: projet.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .fiche
            .unwrap();
        assert_eq!(chained.projet.as_ref().unwrap().title, PROJET_TITLE);
        assert_eq!(chained.status(), ev::FicheStatus::EnCours);
        current.insert(chained.id.clone(), chained.version);
    }

    // The promoteur base: nothing for this SIRET yet, created once, attached to the three.
    let found = client
        .find_promoteurs(paca(pb::FindPromoteursRequest {
            siret: a.siret.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(found.matches.is_empty());
    let request_id = uuid::Uuid::new_v4().to_string();
    let create = || pb::CreatePromoteurRequest {
        promoteur: Some(pb::Promoteur {
            siret: a.siret.clone(),
            raison_sociale: "Association Souffle".into(),
            type_structure: "Association".into(),
            adresse: "12 rue d'Italie 13006 Marseille".into(),
            commune_code: "13055".into(),
            site_web: "https://asso-souffle.fr".into(),
            ..Default::default()
        }),
        request_id: request_id.clone(),
    };
    let p = client
        .create_promoteur(paca(create()))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    let again = client
        .create_promoteur(paca(create()))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    assert_eq!(
        again.id, p.id,
        "a retried creation returns the first result"
    );
    for (id, version) in current.clone() {
        let f = client
            .attach_promoteur(paca(pb::AttachPromoteurRequest {
                fiche_id: id.clone(),
                expected_version: version,
                promoteur_id: p.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .fiche
            .unwrap();
        assert_eq!(
            f.promoteur.as_ref().unwrap().raison_sociale,
            "Association Souffle"
        );
        current.insert(id, f.version);
    }
    let p = client
        .get_promoteur(paca(pb::GetPromoteurRequest {
            promoteur_id: p.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    assert_eq!(p.fiche_count, 3);
    let mut aliases = p.aliases.clone();
    aliases.sort();
    assert_eq!(
        aliases,
        ["Asso Souffle Marseille", STRUCTURE],
        "the names the dossiers declared are kept as aliases"
    );

    // A correction is recorded with the original value, who and when.
    let corrected = client
        .correct_fiche(paca(pb::CorrectFicheRequest {
            fiche_id: projet.id.clone(),
            expected_version: current[&projet.id],
            corrections: vec![pb::FieldCorrection {
                field: "title".into(),
                value: Some(pb::FicheFieldValue {
                    value: Some(pb::fiche_field_value::Value::Text(
                        "Mois sans tabac 2024 dans les quartiers Nord".into(),
                    )),
                }),
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    let c = &corrected.corrections[0];
    assert_eq!(c.actor.as_ref().unwrap().email, AMBASSADEUR_PACA);
    assert_eq!(
        c.original_value.clone().unwrap().value,
        Some(pb::fiche_field_value::Value::Text(PROJET_TITLE.into()))
    );
    current.insert(projet.id.clone(), corrected.fiche.unwrap().version);
    let err = client
        .correct_fiche(paca(pb::CorrectFicheRequest {
            fiche_id: projet.id.clone(),
            expected_version: current[&projet.id],
            corrections: vec![
                pb::FieldCorrection {
                    field: "status".into(),
                    value: None,
                },
                pb::FieldCorrection {
                    field: "start_date".into(),
                    value: Some(pb::FicheFieldValue {
                        value: Some(pb::fiche_field_value::Value::Text("2024-13-01".into())),
                    }),
                },
                pb::FieldCorrection {
                    field: "publics".into(),
                    value: Some(pb::FicheFieldValue {
                        value: Some(pb::fiche_field_value::Value::Texts(pb::StringList {
                            values: vec!["Fumeurs".into(), "Martiens".into()],
                        })),
                    }),
                },
            ],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        ["corrections[0]", "corrections[1]", "corrections[2]"]
    );

    // Publish the three; a stale version is refused.
    let err = client
        .publish_fiche(paca(pb::PublishFicheRequest {
            fiche_id: projet.id.clone(),
            expected_version: current[&projet.id] - 1,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    for (id, version) in current.clone() {
        let f = client
            .publish_fiche(paca(pb::PublishFicheRequest {
                fiche_id: id.clone(),
                expected_version: version,
            }))
            .await
            .unwrap()
            .into_inner()
            .fiche
            .unwrap();
        assert!(f.visible);
        current.insert(id, f.version);
    }

    // The public API shows them, without the internal fields, filtered.
    let mut pub_client = public(&stack).await;
    let listed = pub_client
        .list_public_fiches(pb::ListPublicFichesRequest {
            filter: Some(pb::PublicFicheFilter {
                region_code: "93".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 3);
    assert!(
        listed
            .fiches
            .iter()
            .all(|f| f.internal.is_none() && f.visible)
    );
    let stands = pub_client
        .list_public_fiches(pb::ListPublicFichesRequest {
            filter: Some(pb::PublicFicheFilter {
                departement_code: "13".into(),
                commune_code: "13055".into(),
                year: Some(2024),
                type_action: "Stand / journée d'information".into(),
                target_public: "Fumeurs".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stands.total_count, 2, "both actions are stands for smokers");
    let none = pub_client
        .list_public_fiches(pb::ListPublicFichesRequest {
            filter: Some(pb::PublicFicheFilter {
                region_code: "84".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.total_count, 0);
    let err = pub_client
        .list_public_fiches(pb::ListPublicFichesRequest {
            filter: Some(pb::PublicFicheFilter {
                departement_code: "999".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Exports: CSV with a header and one line per fiche; JSON, an array of three fiches.
    for (format, check) in [
        (pb::PublicExportFormat::Csv, "csv"),
        (pb::PublicExportFormat::Json, "json"),
    ] {
        let mut stream = pub_client
            .export_public_fiches(pb::ExportPublicFichesRequest {
                filter: None,
                format: format as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let mut body = Vec::new();
        let mut header = None;
        while let Some(m) = stream.next().await {
            match m.unwrap().payload.unwrap() {
                pb::export_public_fiches_response::Payload::Header(h) => header = Some(h),
                pb::export_public_fiches_response::Payload::Chunk(c) => body.extend(c),
            }
        }
        let header = header.unwrap();
        assert!(header.file_name.ends_with(check), "{header:?}");
        let body = String::from_utf8(body).unwrap();
        if check == "csv" {
            assert!(body.lines().next().unwrap().contains("Porteur de l'action"));
            for id in current.keys() {
                assert_eq!(body.matches(&format!("\n{id},")).count(), 1, "{body}");
            }
            assert!(body.contains("Centre social Saint-Louis"));
            assert!(
                !body.contains("CPAM"),
                "internal fields stay out of the export"
            );
        } else {
            let fiches: Vec<&str> = body.matches("\"module\": \"moisanstabac\"").collect();
            assert_eq!(fiches.len(), 3, "{body}");
            assert!(body.starts_with('[') && body.ends_with(']'));
        }
    }

    // The feed, read by an external subscriber: each event once, in order per fiche.
    // 3 imported, 2 chained, 3 attached, 1 corrected, 3 published.
    let items = feed.take(12).await;
    assert_once_and_in_order(&items);
    let k = kinds(&items);
    assert_eq!(k[ev::OscarsFicheImported::SUBJECT], 3);
    assert_eq!(k[ev::OscarsFicheUpdated::SUBJECT], 6);
    assert_eq!(k[ev::OscarsFichePublished::SUBJECT], 3);
    assert_eq!(feed.pending().await, 0, "nothing published twice");
    for i in &items {
        assert_eq!(
            i.fiche.version,
            items
                .iter()
                .filter(|j| j.fiche.id == i.fiche.id && j.fiche.version <= i.fiche.version)
                .count() as i64,
            "every version of every fiche is in the feed"
        );
    }
    let last_projet = items
        .iter()
        .rev()
        .find(|i| i.fiche.id == projet.id)
        .unwrap();
    assert_eq!(last_projet.subject, ev::OscarsFichePublished::SUBJECT);
    assert_eq!(last_projet.fiche.version, current[&projet.id]);
    assert!(
        last_projet.fiche.internal.is_some(),
        "the feed carries the full fiche"
    );

    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn an_ambassadeur_of_another_region_can_neither_see_nor_touch_the_fiche() {
    let stack = Stack::start().await.unwrap();
    let a = accepted_projet_and_actions(&stack, false).await;
    let f = fiche_of(&stack, a.projet, 1).await;
    let mut client = oscars(&stack).await;
    let ara = |m| ambassadeur(AMBASSADEUR_ARA, m);

    let queue = client
        .list_work_queue(ara(pb::ListWorkQueueRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.total_count, 0);
    let err = client
        .list_work_queue(ambassadeur(
            AMBASSADEUR_ARA,
            pb::ListWorkQueueRequest {
                filter: Some(pb::WorkQueueFilter {
                    region_code: "93".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .get_fiche(ambassadeur(
            AMBASSADEUR_ARA,
            pb::GetFicheRequest {
                fiche_id: f.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .publish_fiche(ambassadeur(
            AMBASSADEUR_ARA,
            pb::PublishFicheRequest {
                fiche_id: f.id.clone(),
                expected_version: f.version,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .correct_fiche(ambassadeur(
            AMBASSADEUR_ARA,
            pb::CorrectFicheRequest {
                fiche_id: f.id.clone(),
                expected_version: f.version,
                corrections: vec![pb::FieldCorrection {
                    field: "title".into(),
                    value: None,
                }],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Not an ambassadeur of any région, or not an ambassadeur at all.
    for request in [
        ambassadeur(
            "personne@example.org",
            pb::GetFicheRequest {
                fiche_id: f.id.clone(),
            },
        ),
        promoteur(
            PROMOTEUR,
            pb::GetFicheRequest {
                fiche_id: f.id.clone(),
            },
        ),
    ] {
        let err = client.get_fiche(request).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    // An admin names the région of the work queue he reads.
    let err = client
        .list_work_queue(admin(pb::ListWorkQueueRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "filter.region_code"
    );
    // Only an admin configures ambassadeurs.
    let err = client
        .set_ambassadeurs(paca(pb::SetAmbassadeursRequest {
            region_code: "93".into(),
            expected_version: 1,
            ambassadeurs: vec![],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The PACA ambassadeur reaches it, and nothing changed.
    let seen = client
        .get_fiche(paca(pb::GetFicheRequest {
            fiche_id: f.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.fiche.unwrap().version, f.version);
    assert_eq!(seen.missing_for_publication, ["promoteur"]);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// Another oscars service on the stack's NATS and forms, on its own fresh database, with extra
/// settings.
struct ExtraOscars {
    url: String,
    shutdown: mst_kit::Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: mst_testkit::TestDb,
}

impl ExtraOscars {
    async fn start(stack: &Stack, extra: &[(&str, &str)]) -> Self {
        let db = mst_testkit::TestDb::new().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut env = mst_kit::config::Env::from_map([
            ("MST_DATABASE_URL", db.url().to_owned()),
            ("MST_NATS_URL", stack.nats.url()),
            ("MST_NATS_STREAM", stack.prefix.to_uppercase()),
            ("MST_NATS_SUBJECT_PREFIX", stack.prefix.clone()),
            ("MST_SHUTDOWN_GRACE_SECS", "5".to_owned()),
            ("MST_FORMS_URL", stack.url("forms")),
        ]);
        for (k, v) in extra {
            env.set(*k, *v);
        }
        let settings = mst_oscars::Settings::from_env(&mut env);
        env.finish().unwrap();
        let shutdown = mst_kit::Shutdown::new();
        let app = mst_oscars::App::build_on(settings, listener, shutdown.clone())
            .await
            .unwrap();
        Self {
            url,
            shutdown,
            task: tokio::spawn(app.run()),
            _db: db,
        }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

/// The `DossierStatusChanged` to accepté of dossier `number`, as stored on the stream.
async fn acceptance_message(stack: &Stack, number: i64) -> async_nats::jetstream::Message {
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let stream = js.get_stream(stack.prefix.to_uppercase()).await.unwrap();
    let consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("{}.{}", stack.prefix, ev::DossierStatusChanged::SUBJECT),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        let e = ev::DossierStatusChanged::decode(m.payload.as_ref()).unwrap();
        if e.number == number && e.to_status() == ev::DossierStatus::Accepte {
            return m;
        }
    }
    panic!("no acceptance of {number} on the stream")
}

/// A refusal handled before the re-opening that preceded it (redelivered after an oscars crash,
/// then stale) still withdraws the fiche: the status reached decides, not the transition. Found
/// by the chaos suite, where it left a live fiche for a refused dossier.
#[tokio::test]
async fn a_refusal_handled_before_the_reopening_that_preceded_it_withdraws_the_fiche() {
    let stack = Stack::start().await.unwrap();
    let a = accepted_projet_and_actions(&stack, false).await;
    fiche_of(&stack, a.projet, 1).await;

    // The refusal two versions after the acceptance, the re-opening in between not handled yet.
    let original = acceptance_message(&stack, a.projet).await;
    let mut refusal = ev::DossierStatusChanged::decode(original.payload.as_ref()).unwrap();
    refusal.from_status = ev::DossierStatus::EnInstruction as i32;
    refusal.to_status = ev::DossierStatus::Refuse as i32;
    refusal.transition = ev::DossierTransition::Refuser as i32;
    refusal.status_version += 2;
    let event_id = uuid::Uuid::now_v7().to_string();
    if let Some(m) = refusal.metadata.as_mut() {
        m.event_id = event_id.clone();
    }
    let mut headers = original.headers.clone().unwrap();
    headers.insert("Nats-Msg-Id", event_id.as_str());
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    js.publish_with_headers(
        original.subject.to_string(),
        headers,
        refusal.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let client = oscars(&stack).await;
    let withdrawn = eventually("the withdrawal of the refused dossier's fiche", || {
        let mut c = client.clone();
        async move {
            let f = all_fiches(&mut c).await.remove(&a.projet)?;
            (f.status() == ev::FicheStatus::Retiree).then_some(f)
        }
    })
    .await;
    assert!(!withdrawn.visible);
}

/// An acceptance handled after newer status changes of its dossier (its first handling failed
/// transiently — forms unreachable — while the refusal that followed went through, no fiche
/// existing yet) is stale: it imports nothing for a dossier that is no longer accepté. Found by
/// the chaos suite, where it left a live fiche for a refused dossier.
#[tokio::test]
async fn an_acceptance_handled_after_a_newer_refusal_of_its_dossier_imports_no_fiche() {
    let stack = Stack::start().await.unwrap();
    let a = accepted_projet_and_actions(&stack, false).await;
    fiche_of(&stack, a.projet, 1).await;

    // Another projet, passed en instruction then refused: never accepted, no fiche.
    let refused = deposit_projet(&stack, &a.siret, &cpam_of("13")).await;
    let mut client = instruction(&stack).await;
    let d = client
        .passer_en_instruction(instructeur(ipb::PasserEnInstructionRequest {
            number: refused,
            expected_version: status_version(&stack, refused).await,
        }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap();
    let refusal = client
        .refuser(instructeur(ipb::RefuserRequest {
            number: refused,
            expected_version: d.version,
            motivation: "Hors du cahier des charges.".into(),
            justificatif_upload_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap();

    // Its acceptance at the version before the refusal, handled only now (a copy of the other
    // projet's acceptance, renumbered, under new ids).
    let original = acceptance_message(&stack, a.projet).await;
    let mut late = ev::DossierStatusChanged::decode(original.payload.as_ref()).unwrap();
    late.number = refused;
    late.status_version = refusal.version - 1;
    let event_id = uuid::Uuid::now_v7().to_string();
    if let Some(m) = late.metadata.as_mut() {
        m.event_id = event_id.clone();
    }
    let mut headers = original.headers.clone().unwrap();
    headers.insert("Nats-Msg-Id", event_id.as_str());
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    js.publish_with_headers(
        original.subject.to_string(),
        headers,
        late.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // A marker after it: once its effect is visible, the late acceptance was handled.
    repasser_en_instruction(&stack, a.projet).await;
    let mut oscars_client = oscars(&stack).await;
    eventually("the marker's withdrawal", || {
        let mut c = oscars_client.clone();
        async move {
            let f = all_fiches(&mut c).await.remove(&a.projet)?;
            (f.status() == ev::FicheStatus::Retiree).then_some(())
        }
    })
    .await;
    let fiches = all_fiches(&mut oscars_client).await;
    assert!(
        !fiches.contains_key(&refused),
        "a fiche was imported for the refused dossier {refused}: {:?}",
        fiches.get(&refused).map(|f| f.status())
    );
}

#[tokio::test]
async fn the_same_acceptance_delivered_three_times_yields_one_fiche_and_a_full_replay_rebuilds_the_same_state()
 {
    let stack = Stack::start().await.unwrap();
    let a = accepted_projet_and_actions(&stack, true).await;
    let mut client = oscars(&stack).await;
    let projet = fiche_of(&stack, a.projet, 1).await;
    let action = fiche_of(&stack, a.actions[0], 1).await;
    fiche_of(&stack, a.actions[1], 1).await;

    // Some ambassadeur work, so the replay has more than imports to rebuild.
    let chained = client
        .chain_to_projet(paca(pb::ChainToProjetRequest {
            fiche_id: action.id.clone(),
            expected_version: action.version,
            projet_fiche_id: projet.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let p = client
        .create_promoteur(paca(pb::CreatePromoteurRequest {
            promoteur: Some(pb::Promoteur {
                siret: a.siret.clone(),
                raison_sociale: "Association Souffle".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    let attached = client
        .attach_promoteur(paca(pb::AttachPromoteurRequest {
            fiche_id: projet.id.clone(),
            expected_version: projet.version,
            promoteur_id: p.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    client
        .publish_fiche(paca(pb::PublishFicheRequest {
            fiche_id: projet.id.clone(),
            expected_version: attached.version,
        }))
        .await
        .unwrap();
    assert!(chained.projet.is_some());
    let mut feed = Subscriber::new(&stack, "oscars-redelivery").await;
    // 3 imported, chained, attached, published.
    feed.take(6).await;

    // The acceptance of the projet delivered twice more (a relay republishing it after the
    // duplicate window: same payload, new message id).
    let original = acceptance_message(&stack, a.projet).await;
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    for i in 0..2 {
        let mut headers = original.headers.clone().unwrap();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}-redelivered-{i}", uuid::Uuid::new_v4()).as_str(),
        );
        js.publish_with_headers(
            original.subject.to_string(),
            headers,
            original.payload.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // A marker after them: once its effect is visible, the redeliveries were handled.
    repasser_en_instruction(&stack, a.actions[1]).await;
    let withdrawn = eventually("the marker's withdrawal", || {
        let mut client = client.clone();
        async move {
            let f = all_fiches(&mut client).await.remove(&a.actions[1])?;
            (f.status() == ev::FicheStatus::Retiree).then_some(f)
        }
    })
    .await;
    assert!(!withdrawn.visible);
    let before = all_fiches(&mut client).await;
    assert_eq!(before.len(), 3, "one fiche per dossier");
    assert_eq!(
        before[&a.projet].version,
        attached.version + 1,
        "the redelivered acceptance changed nothing"
    );
    let items = feed.take(1).await;
    assert_eq!(items[0].subject, ev::OscarsFicheWithdrawn::SUBJECT);
    assert_eq!(feed.pending().await, 0, "no second import was published");

    // A full replay: a new oscars service on an empty database, with its own durable consumer,
    // rebuilds the same fiches from the stream.
    let extra = ExtraOscars::start(&stack, &[("MST_OSCARS_CONSUMER", "oscars-replay")]).await;
    let mut replayed = oscars_at(extra.url.clone()).await;
    let rebuilt = eventually("the replay", || {
        let mut replayed = replayed.clone();
        let before = before.clone();
        async move {
            let now = all_fiches(&mut replayed).await;
            (now == before).then_some(now)
        }
    })
    .await;
    assert_eq!(rebuilt[&a.projet].promoteur_id, p.id);
    assert!(rebuilt[&a.projet].visible);
    let restored = replayed
        .get_promoteur(admin(pb::GetPromoteurRequest {
            promoteur_id: p.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    assert_eq!(restored.siret, a.siret);
    // The replay republished nothing new: its events carry the ids of the first run.
    assert_eq!(feed.pending().await, 0);
    extra.stop().await;
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn repasser_en_instruction_withdraws_the_fiche_from_the_public_api_and_accepting_again_updates_the_same_fiche()
 {
    let stack = Stack::start().await.unwrap();
    let mut feed = Subscriber::new(&stack, "oscars-withdrawal").await;
    let a = accepted_projet_and_actions(&stack, false).await;
    let mut client = oscars(&stack).await;
    let f = fiche_of(&stack, a.projet, 1).await;

    // Two promoteurs for the same structure (one without SIRET), each on a fiche… here the same
    // fiche first gets the duplicate, then the merge re-points it to the survivor.
    let create = |siret: &str, name: &str| pb::CreatePromoteurRequest {
        promoteur: Some(pb::Promoteur {
            siret: siret.into(),
            raison_sociale: name.into(),
            commune_code: "13055".into(),
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let survivor = client
        .create_promoteur(paca(create(&a.siret, "Association Souffle")))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    let duplicate = client
        .create_promoteur(paca(create("", "Asso. Souffle Marseille")))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    let err = client
        .create_promoteur(paca(create(&a.siret, "Autre nom")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["promoteur_id"],
        survivor.id
    );
    let err = client
        .create_promoteur(paca(create("78452316000019", "SIRET faux")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let by_name = client
        .find_promoteurs(paca(pb::FindPromoteursRequest {
            name: "souffle".into(),
            commune_code: "13055".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name.matches.len(), 2);
    let f = client
        .attach_promoteur(paca(pb::AttachPromoteurRequest {
            fiche_id: f.id.clone(),
            expected_version: f.version,
            promoteur_id: duplicate.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let merged = client
        .merge_promoteurs(paca(pb::MergePromoteursRequest {
            survivor: Some(pb::MergeSource {
                promoteur_id: survivor.id.clone(),
                expected_version: survivor.version,
            }),
            merged: vec![pb::MergeSource {
                promoteur_id: duplicate.id.clone(),
                expected_version: duplicate.version + 1,
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.repointed_fiche_count, 1);
    let kept = merged.promoteur.unwrap();
    assert!(
        kept.aliases.contains(&"Asso. Souffle Marseille".to_owned()),
        "{kept:?}"
    );
    assert!(kept.aliases.contains(&STRUCTURE.to_owned()), "{kept:?}");
    assert_eq!(kept.fiche_count, 1);
    let gone = client
        .get_promoteur(paca(pb::GetPromoteurRequest {
            promoteur_id: duplicate.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    assert_eq!(gone.merged_into_id, survivor.id);
    let err = client
        .attach_promoteur(paca(pb::AttachPromoteurRequest {
            fiche_id: f.id.clone(),
            expected_version: f.version + 1,
            promoteur_id: duplicate.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let f = fiche_of(&stack, a.projet, f.version + 1).await;
    assert_eq!(
        f.promoteur_id, survivor.id,
        "the merge re-pointed the fiche"
    );

    // A correction, then published; then the dossier goes back en instruction: withdrawn.
    let corrected_title = "Mois sans tabac 2024 – quartiers Nord de Marseille";
    let f = client
        .correct_fiche(paca(pb::CorrectFicheRequest {
            fiche_id: f.id.clone(),
            expected_version: f.version,
            corrections: vec![pb::FieldCorrection {
                field: "title".into(),
                value: Some(pb::FicheFieldValue {
                    value: Some(pb::fiche_field_value::Value::Text(corrected_title.into())),
                }),
            }],
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let published = client
        .publish_fiche(paca(pb::PublishFicheRequest {
            fiche_id: f.id.clone(),
            expected_version: f.version,
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let mut pub_client = public(&stack).await;
    pub_client
        .get_public_fiche(pb::GetPublicFicheRequest {
            fiche_id: f.id.clone(),
        })
        .await
        .unwrap();
    repasser_en_instruction(&stack, a.projet).await;
    let withdrawn = fiche_of(&stack, a.projet, published.version + 1).await;
    assert_eq!(withdrawn.status(), ev::FicheStatus::Retiree);
    let err = pub_client
        .get_public_fiche(pb::GetPublicFicheRequest {
            fiche_id: f.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = pub_client
        .list_public_fiches(pb::ListPublicFichesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 0);
    let err = client
        .publish_fiche(paca(pb::PublishFicheRequest {
            fiche_id: f.id.clone(),
            expected_version: withdrawn.version,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Accepted again: the same fiche, refreshed, invisible until published again.
    accept_again(&stack, a.projet).await;
    let again = fiche_of(&stack, a.projet, withdrawn.version + 1).await;
    assert_eq!(again.id, f.id);
    assert_eq!(again.status(), ev::FicheStatus::Importe);
    assert!(!again.visible);
    assert_eq!(again.promoteur_id, survivor.id, "the attachment is kept");
    assert_eq!(
        again.title, corrected_title,
        "a correction of a field the dossier did not change is kept"
    );
    assert_eq!(again.description, f.description);

    // The feed: imported, attached, re-pointed, corrected, published, withdrawn (dossier left
    // accepté), updated (accepted again).
    let items = feed.take(7).await;
    assert_once_and_in_order(&items);
    let subjects: Vec<&str> = items.iter().map(|i| i.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            ev::OscarsFicheImported::SUBJECT,
            ev::OscarsFicheUpdated::SUBJECT,
            ev::OscarsFicheUpdated::SUBJECT,
            ev::OscarsFicheUpdated::SUBJECT,
            ev::OscarsFichePublished::SUBJECT,
            ev::OscarsFicheWithdrawn::SUBJECT,
            ev::OscarsFicheUpdated::SUBJECT,
        ]
    );
    assert_eq!(
        items[5].reason,
        ev::FicheWithdrawalReason::DossierLeftAccepte as i32
    );
    assert!(!items[5].fiche.visible);
    assert_eq!(feed.pending().await, 0);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// The shipped 2024 Projet procedure as last year's (every "2024" read as "2023"), loaded,
/// published and open.
async fn open_last_years_projet(stack: &Stack) -> String {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/forms/procedures/mst-2024-projet.json"
    ))
    .unwrap()
    .replace("2024", "2023");
    let definition: mst_proto::forms::ProcedureDefinition =
        mst_proto::json::decode("mst.forms.v1.ProcedureDefinition", &json).unwrap();
    let loaded = forms_admin(stack)
        .await
        .load_procedure(admin(mst_proto::forms::LoadProcedureRequest {
            source: Some(mst_proto::forms::load_procedure_request::Source::Definition(definition)),
            publish: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let procedure = loaded.procedure.unwrap();
    clear_closing_date(stack, &procedure).await;
    procedure.id
}

#[tokio::test]
async fn a_renewed_projet_is_chained_to_last_years_and_the_public_fiche_shows_it() {
    let stack = Stack::start().await.unwrap();
    open_procedures(&stack).await;
    let last_year = open_last_years_projet(&stack).await;
    assert_eq!(last_year, "mst-2023-projet");
    let cpam = cpam_of("13");
    roster_groupe(&stack, &cpam, "13").await;
    configure_ambassadeurs(&stack).await;
    let ours = siret("78452316", "0001");
    let theirs = siret("41236587", "0002");
    let title_2023 = "Mois sans tabac 2023 dans les quartiers Nord de Marseille";
    let old = deposit_projet_of(&stack, &last_year, 2023, &ours, &cpam, title_2023).await;
    let unrelated = deposit_projet_of(
        &stack,
        &last_year,
        2023,
        &theirs,
        &cpam,
        "Ateliers d'aide à l'arrêt en entreprise",
    )
    .await;
    let renewed = deposit_projet(&stack, &ours, &cpam).await;
    for n in [old, unrelated, renewed] {
        accept(&stack, n).await;
    }
    let old_fiche = fiche_of(&stack, old, 1).await;
    let unrelated_fiche = fiche_of(&stack, unrelated, 1).await;
    let f = fiche_of(&stack, renewed, 1).await;
    assert_eq!((old_fiche.year, f.year), (2023, 2024));
    let mut client = oscars(&stack).await;

    // Last year's fiche of the same SIRET with a similar title comes first.
    let s = client
        .suggest_previous_year(paca(pb::SuggestPreviousYearRequest {
            fiche_id: f.id.clone(),
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .suggestions;
    assert_eq!(s[0].fiche.as_ref().unwrap().fiche_id, old_fiche.id, "{s:?}");
    assert!(
        s[0].reasons
            .contains(&(pb::SuggestionReason::SameSiret as i32))
    );
    assert!(
        s[0].reasons
            .contains(&(pb::SuggestionReason::SimilarTitle as i32))
    );
    assert!(
        s.iter()
            .skip(1)
            .all(|x| x.score < s[0].score && x.fiche.as_ref().unwrap().fiche_id != f.id)
    );
    assert!(
        s.iter()
            .all(|x| x.fiche.as_ref().unwrap().fiche_id != unrelated_fiche.id
                || x.score < s[0].score)
    );

    // Not itself, not a later year.
    for (fiche, previous) in [(&f, &f), (&old_fiche, &f)] {
        let err = client
            .chain_to_previous(paca(pb::ChainToPreviousRequest {
                fiche_id: fiche.id.clone(),
                expected_version: fiche.version,
                previous_fiche_id: previous.id.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(
            err.get_details_bad_request().unwrap().field_violations[0].field,
            "previous_fiche_id"
        );
    }
    let chained = client
        .chain_to_previous(paca(pb::ChainToPreviousRequest {
            fiche_id: f.id.clone(),
            expected_version: f.version,
            previous_fiche_id: old_fiche.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let p = client
        .create_promoteur(paca(pb::CreatePromoteurRequest {
            promoteur: Some(pb::Promoteur {
                siret: ours.clone(),
                raison_sociale: "Association Souffle".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    let attached = client
        .attach_promoteur(paca(pb::AttachPromoteurRequest {
            fiche_id: f.id.clone(),
            expected_version: chained.version,
            promoteur_id: p.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    client
        .publish_fiche(paca(pb::PublishFicheRequest {
            fiche_id: f.id.clone(),
            expected_version: attached.version,
        }))
        .await
        .unwrap();

    // The public fiche: "Action chaînée avec : {titre} - {année}".
    let mut pub_client = public(&stack).await;
    let shown = pub_client
        .get_public_fiche(pb::GetPublicFicheRequest {
            fiche_id: f.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let link = shown.chained_previous.unwrap();
    assert_eq!((link.title.as_str(), link.year), (title_2023, 2023));
    let mut stream = pub_client
        .export_public_fiches(pb::ExportPublicFichesRequest {
            filter: Some(pb::PublicFicheFilter {
                year: Some(2024),
                ..Default::default()
            }),
            format: pb::PublicExportFormat::Csv as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let mut body = Vec::new();
    while let Some(m) = stream.next().await {
        if let Some(pb::export_public_fiches_response::Payload::Chunk(c)) = m.unwrap().payload {
            body.extend(c);
        }
    }
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.lines()
            .next()
            .unwrap()
            .ends_with("Action chaînée avec")
    );
    assert!(body.contains(&format!("{title_2023} - 2023")), "{body}");
    // Last year's fiche is not visible: the public API does not show it.
    let err = pub_client
        .get_public_fiche(pb::GetPublicFicheRequest {
            fiche_id: old_fiche.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn an_ambassadeur_hides_a_fiche_edits_its_promoteur_and_reads_the_corrections() {
    let stack = Stack::start().await.unwrap();
    let mut feed = Subscriber::new(&stack, "oscars-hide").await;
    let a = accepted_projet_and_actions(&stack, false).await;
    let mut client = oscars(&stack).await;
    let f = fiche_of(&stack, a.projet, 1).await;

    // The ambassadeur sees his région's configuration only; an admin sees both.
    let mine = client
        .list_ambassadeurs(paca(pb::ListAmbassadeursRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .regions;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].ambassadeurs[0].email, AMBASSADEUR_PACA);
    let all = client
        .list_ambassadeurs(admin(pb::ListAmbassadeursRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .regions;
    assert_eq!(all.len(), 2);
    let err = client
        .set_ambassadeurs(admin(pb::SetAmbassadeursRequest {
            region_code: "99".into(),
            expected_version: 0,
            ambassadeurs: vec![pb::Ambassadeur {
                email: "pas-une-adresse".into(),
                structure: String::new(),
            }],
        }))
        .await
        .unwrap_err();
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["region_code", "ambassadeurs[0].email"]);
    let err = client
        .set_ambassadeurs(admin(pb::SetAmbassadeursRequest {
            region_code: "93".into(),
            expected_version: 0,
            ambassadeurs: vec![],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "a stale région version");

    let p = client
        .create_promoteur(paca(pb::CreatePromoteurRequest {
            promoteur: Some(pb::Promoteur {
                siret: a.siret.clone(),
                raison_sociale: "Association Souffle".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    let f = client
        .attach_promoteur(paca(pb::AttachPromoteurRequest {
            fiche_id: f.id.clone(),
            expected_version: f.version,
            promoteur_id: p.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let mut version = f.version;
    for (title, description) in [
        ("Premier titre corrigé", "Première description"),
        ("Second titre corrigé", "Première description"),
    ] {
        version = client
            .correct_fiche(paca(pb::CorrectFicheRequest {
                fiche_id: f.id.clone(),
                expected_version: version,
                corrections: vec![
                    pb::FieldCorrection {
                        field: "title".into(),
                        value: Some(pb::FicheFieldValue {
                            value: Some(pb::fiche_field_value::Value::Text(title.into())),
                        }),
                    },
                    pb::FieldCorrection {
                        field: "description".into(),
                        value: Some(pb::FicheFieldValue {
                            value: Some(pb::fiche_field_value::Value::Text(description.into())),
                        }),
                    },
                ],
            }))
            .await
            .unwrap()
            .into_inner()
            .fiche
            .unwrap()
            .version;
    }
    // Two ambassadeurs correcting the same version at once: exactly one wins, the other is told
    // the version is stale, and only the winner's correction is recorded.
    let racing = |title: &'static str| {
        let mut client = client.clone();
        let id = f.id.clone();
        async move {
            client
                .correct_fiche(paca(pb::CorrectFicheRequest {
                    fiche_id: id,
                    expected_version: version,
                    corrections: vec![pb::FieldCorrection {
                        field: "title".into(),
                        value: Some(pb::FicheFieldValue {
                            value: Some(pb::fiche_field_value::Value::Text(title.into())),
                        }),
                    }],
                }))
                .await
        }
    };
    let (x, y) = tokio::join!(racing("Titre A"), racing("Titre B"));
    let (won, lost) = match (x, y) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.into_inner(), l),
        other => panic!("exactly one correction must win: {other:?}"),
    };
    assert_eq!(lost.code(), Code::Aborted);
    version = won.fiche.unwrap().version;
    let race_winner = won.corrections[0].clone();

    // Four changes recorded (the unchanged description of the second call is not), newest
    // first, each with the value the dossier had.
    let page = client
        .list_corrections(paca(pb::ListCorrectionsRequest {
            fiche_id: f.id.clone(),
            page_size: 2,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.corrections.len(), 2);
    assert_eq!(page.corrections[0].id, race_winner.id);
    assert_eq!(page.corrections[1].field, "title");
    let text_of = |v: &Option<pb::FicheFieldValue>| match v.as_ref().and_then(|v| v.value.clone()) {
        Some(pb::fiche_field_value::Value::Text(t)) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        text_of(&page.corrections[1].old_value),
        "Premier titre corrigé"
    );
    assert_eq!(
        text_of(&page.corrections[1].new_value),
        "Second titre corrigé"
    );
    assert_eq!(text_of(&page.corrections[1].original_value), PROJET_TITLE);
    let rest = client
        .list_corrections(paca(pb::ListCorrectionsRequest {
            fiche_id: f.id.clone(),
            page_size: 2,
            page_token: page.next_page_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut fields: Vec<&str> = rest.corrections.iter().map(|c| c.field.as_str()).collect();
    fields.sort();
    assert_eq!(fields, ["description", "title"]);
    assert!(rest.next_page_token.is_empty());
    let view = client
        .get_fiche(paca(pb::GetFicheRequest {
            fiche_id: f.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.correction_count, 4);
    assert!(view.missing_for_publication.is_empty());

    // Published, then hidden: out of the public API, a withdrawal on the feed.
    let published = client
        .publish_fiche(paca(pb::PublishFicheRequest {
            fiche_id: f.id.clone(),
            expected_version: version,
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let err = client
        .publish_fiche(paca(pb::PublishFicheRequest {
            fiche_id: f.id.clone(),
            expected_version: published.version,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "already visible");
    let hidden = client
        .hide_fiche(paca(pb::HideFicheRequest {
            fiche_id: f.id.clone(),
            expected_version: published.version,
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    assert_eq!(hidden.status(), ev::FicheStatus::EnCours);
    let err = public(&stack)
        .await
        .get_public_fiche(pb::GetPublicFicheRequest {
            fiche_id: f.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Editing the promoteur refreshes the fiche that shows it.
    let p = client
        .get_promoteur(paca(pb::GetPromoteurRequest {
            promoteur_id: p.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    let err = client
        .update_promoteur(paca(pb::UpdatePromoteurRequest {
            promoteur_id: p.id.clone(),
            expected_version: p.version,
            promoteur: Some(pb::Promoteur {
                email: "pas une adresse".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["email".into(), "version".into()],
            }),
        }))
        .await
        .unwrap_err();
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["promoteur.email", "update_mask.paths[1]"]);
    let updated = client
        .update_promoteur(paca(pb::UpdatePromoteurRequest {
            promoteur_id: p.id.clone(),
            expected_version: p.version,
            promoteur: Some(pb::Promoteur {
                telephone: "04 91 00 00 00".into(),
                site_web: "https://asso-souffle.fr".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["telephone".into(), "site_web".into()],
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    assert_eq!(updated.version, p.version + 1);
    let refreshed = fiche_of(&stack, a.projet, hidden.version + 1).await;
    assert_eq!(
        refreshed.promoteur.unwrap().site_web,
        "https://asso-souffle.fr"
    );

    // imported, attached, corrected ×3, published, hidden, promoteur edited.
    let items = feed.take(8).await;
    assert_once_and_in_order(&items);
    assert_eq!(items[6].subject, ev::OscarsFicheWithdrawn::SUBJECT);
    assert_eq!(
        items[6].reason,
        ev::FicheWithdrawalReason::HiddenByAmbassadeur as i32
    );
    let changed = &items[7];
    assert_eq!(changed.subject, ev::OscarsFicheUpdated::SUBJECT);
    assert_eq!(feed.pending().await, 0);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn the_public_api_limits_each_client_address_to_its_budget() {
    let stack = Stack::start().await.unwrap();
    let extra = ExtraOscars::start(
        &stack,
        &[
            ("MST_OSCARS_CONSUMER", "oscars-limited"),
            ("MST_OSCARS_PUBLIC_RATE", "0.001"),
            ("MST_OSCARS_PUBLIC_BURST", "2"),
        ],
    )
    .await;
    let mut client = OscarsPublicServiceClient::new(channel(extra.url.clone()).await);
    for _ in 0..2 {
        client
            .list_public_fiches(pb::ListPublicFichesRequest::default())
            .await
            .unwrap();
    }
    let err = client
        .list_public_fiches(pb::ListPublicFichesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let err = client
        .export_public_fiches(pb::ExportPublicFichesRequest {
            filter: None,
            format: pb::PublicExportFormat::Csv as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    extra.stop().await;
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// An acceptance can reach oscars before forms has mirrored its dossier's deposit (forms killed
/// after instruction committed the deposit but before its own commit: forms then learns the
/// statuses from the events). Forms does not list the dossier yet; oscars retries the event
/// instead of dead-lettering it — dead-lettered, that acceptance never became a fiche (found by
/// the chaos suite's 10,000-dossier run). Here forms keeps the dossier as a brouillon (the event
/// carries the brouillon's own status version, which forms' mirror ignores): the event waits
/// for a retry, nothing is dead-lettered, and once forms has moved past it, it is dropped as
/// stale.
#[tokio::test]
async fn an_acceptance_forms_does_not_list_yet_is_retried_not_dead_lettered() {
    let stack = Stack::start().await.unwrap();
    open_procedures(&stack).await;
    let cpam = cpam_of("13");
    roster_groupe(&stack, &cpam, "13").await;
    let d = try_create(&stack, PROMOTEUR, PROJET).await.unwrap();
    publish(
        &stack,
        &acceptance_event(d.number, (PROJET, PROJET_TITLE), PROMOTEUR, 0),
        "acceptance-before-forms-knows",
    )
    .await;
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let stream = js.get_stream(stack.prefix.to_uppercase()).await.unwrap();
    let dead_letters = || async {
        js.get_stream(format!("{}_DEADLETTER", stack.prefix.to_uppercase()))
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    };
    // Tried at once, then after the consumer's first backoff (1 s): still waiting, not dead.
    eventually("oscars has tried the acceptance twice", || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("oscars").await.ok()?;
            (info.num_redelivered >= 1 && info.num_ack_pending == 1).then_some(())
        }
    })
    .await;
    assert_eq!(dead_letters().await, 0, "nothing dead-lettered");

    // Forms moves past it (the real deposit): the old acceptance is then stale and acked.
    let version = fill_projet(
        &stack,
        &d,
        2024,
        &siret("78452316", "0001"),
        &cpam,
        PROJET_TITLE,
    )
    .await;
    deposit(&stack, PROMOTEUR, d.number, version).await.unwrap();
    eventually("the acceptance dropped as stale", || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("oscars").await.ok()?;
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
        }
    })
    .await;
    assert_eq!(dead_letters().await, 0, "nothing dead-lettered");
    let mut c = oscars(&stack).await;
    assert!(
        !all_fiches(&mut c).await.contains_key(&d.number),
        "no fiche"
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
