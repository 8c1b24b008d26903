//! The seed's guide as one executable scenario, each step checked from the outside (gRPC
//! answers, emails received by the SMTP sink, events on the feed, spans at an OTLP collector),
//! with the four services as separate processes on real NATS, databases and SMTP.

use std::time::Duration;

use mst_e2e::Services;
use mst_e2e::processes::ProcessStack;
use mst_kit::auth::Role;
use mst_proto::events as ev;
use mst_proto::forms as fpb;
use mst_proto::instruction as ipb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use mst_proto::messagerie as mpb;
use mst_proto::messagerie::messagerie_service_client::MessagerieServiceClient;
use mst_proto::oscars as opb;
use mst_testkit::{Collector, ReceivedMail};
use tonic::Code;
use tonic::transport::Channel;

use crate::mst_procedures::{
    INSTRUCTEUR_13, PROJET, PROMOTEUR, cpam_of, open_procedures, pdf, roster_groupe, siret,
    try_create,
};
use crate::oscars::{
    PROJET_TITLE, Subscriber, accept, assert_once_and_in_order, configure_ambassadeurs,
    deposit_action, fiche_of, fill_projet, kinds, oscars, paca, public,
};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn channel(url: String) -> Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn instruction(stack: &impl Services) -> InstructionServiceClient<Channel> {
    InstructionServiceClient::new(channel(stack.url("instruction")).await)
}

async fn messagerie(stack: &impl Services) -> MessagerieServiceClient<Channel> {
    MessagerieServiceClient::new(channel(stack.url("messagerie")).await)
}

fn instructeur<T>(message: T) -> tonic::Request<T> {
    as_(INSTRUCTEUR_13, &[Role::Instructeur], message)
}

/// The one email to `to` whose subject is `subject`, once it arrived (30 s at most).
async fn mail(stack: &ProcessStack, to: &str, subject: &str) -> ReceivedMail {
    mst_testkit::wait_until(WAIT, || async {
        let mails = stack.smtp.messages().await.ok()?;
        let found: Vec<ReceivedMail> = mails
            .into_iter()
            .filter(|m| m.is_for(to) && m.subject == subject)
            .collect();
        assert!(found.len() <= 1, "« {subject} » to {to} twice");
        found.into_iter().next()
    })
    .await
    .unwrap_or_else(|e| {
        let got: Vec<(Vec<String>, String)> = futures::executor::block_on(stack.smtp.messages())
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.to, m.subject))
            .collect();
        panic!("no « {subject} » to {to}: {e}; received {got:#?}")
    })
}

async fn counters(stack: &impl Services) -> ipb::Counters {
    instruction(stack)
        .await
        .get_dashboard(instructeur(ipb::GetDashboardRequest {
            procedure_id: PROJET.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .find_map(|e| e.counters)
        .unwrap_or_default()
}

async fn version(stack: &impl Services, number: i64) -> i64 {
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

/// The promoteur's save of one field at the current version.
async fn save(
    stack: &impl Services,
    number: i64,
    value: &str,
) -> Result<fpb::Dossier, tonic::Status> {
    let v = promoteurs_view(stack, PROMOTEUR, number).await.version;
    update(
        stack,
        PROMOTEUR,
        number,
        v,
        vec![set("p_contexte", text(value))],
    )
    .await
}

fn post(number: i64, body: &str, file: Option<(&str, Vec<u8>)>) -> Vec<mpb::PostMessageRequest> {
    use mpb::post_message_request::Payload;
    let mut out = vec![mpb::PostMessageRequest {
        payload: Some(Payload::Metadata(mpb::PostMessageMetadata {
            number,
            body: body.into(),
            attachment_count: i32::from(file.is_some()),
            request_id: uuid::Uuid::new_v4().to_string(),
        })),
    }];
    if let Some((name, bytes)) = file {
        out.push(mpb::PostMessageRequest {
            payload: Some(Payload::Attachment(mpb::AttachmentHeader {
                file_name: name.into(),
                content_type: "application/pdf".into(),
                size_bytes: bytes.len() as i64,
            })),
        });
        out.push(mpb::PostMessageRequest {
            payload: Some(Payload::Chunk(bytes)),
        });
    }
    out
}

#[tokio::test]
async fn the_guide_from_the_first_keystroke_to_the_public_map_across_the_four_processes() {
    let collector = Collector::start().await.unwrap();
    let endpoint = collector.endpoint();
    let mut stack = ProcessStack::start(
        env!("CARGO_BIN_EXE_mst-service"),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await
    .unwrap();
    let mut feed = Subscriber::new(&stack, "oscars-externe").await;
    open_procedures(&stack).await;
    let cpam = cpam_of("13");
    roster_groupe(&stack, &cpam, "13").await;
    configure_ambassadeurs(&stack).await;
    let siret = siret("78452316", "0001");
    let demarche = "Mois sans tabac 2024 – Appel à projets Assurance Maladie";

    // 1. A Projet brouillon: its number by email; autosaves; invisible to the instructeur.
    let d = try_create(&stack, PROMOTEUR, PROJET).await.unwrap();
    let n = d.number;
    let created = mail(
        &stack,
        PROMOTEUR,
        &format!("Retrouvez votre brouillon n° {n} pour la démarche « {demarche} – Projet »"),
    )
    .await;
    assert!(created.raw.contains(&n.to_string()));
    let v = fill_projet(&stack, &d, 2024, &siret, &cpam, PROJET_TITLE).await;
    let err = instruction(&stack)
        .await
        .get_dossier(instructeur(ipb::GetDossierRequest { number: n }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "a brouillon is never shown");

    // 2. He invites the CPAM instructeur, who edits one field.
    let invitee = INSTRUCTEUR_13;
    forms(&stack)
        .await
        .invite_to_dossier(promoteur(
            PROMOTEUR,
            fpb::InviteToDossierRequest {
                number: n,
                invitee_email: invitee.into(),
                message: "Pouvez-vous relire notre budget ?".into(),
            },
        ))
        .await
        .unwrap();
    mail(&stack, invitee, "Participez à l'élaboration d'un dossier").await;
    let edited = update(
        &stack,
        invitee,
        n,
        v,
        vec![set(
            "p_indicateurs",
            text("Nombre d'inscrits au défi et de consultations."),
        )],
    )
    .await
    .unwrap();

    // 3. Deposit: en construction, the email, 1 « à suivre », still editable.
    let deposited = deposit(&stack, PROMOTEUR, n, edited.version).await.unwrap();
    assert_eq!(deposited.status, ev::DossierStatus::EnConstruction as i32);
    mail(
        &stack,
        PROMOTEUR,
        &format!("Votre dossier n° {n} a bien été déposé ({demarche} – Projet)"),
    )
    .await;
    assert_eq!(counters(&stack).await.a_suivre, 1);
    save(&stack, n, "Quartiers Nord : forte prévalence du tabagisme.")
        .await
        .unwrap();

    // 4. Followed, passed en instruction: the email; the promoteur's next save is refused.
    let mut client = instruction(&stack).await;
    client
        .follow_dossier(instructeur(ipb::FollowDossierRequest { number: n }))
        .await
        .unwrap();
    let c = counters(&stack).await;
    assert_eq!((c.a_suivre, c.suivis), (0, 1));
    client
        .passer_en_instruction(instructeur(ipb::PasserEnInstructionRequest {
            number: n,
            expected_version: version(&stack, n).await,
        }))
        .await
        .unwrap();
    mail(
        &stack,
        PROMOTEUR,
        &format!("Votre dossier n° {n} va être examiné ({demarche} – Projet)"),
    )
    .await;
    let err = save(&stack, n, "Trop tard").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // 5. Messages with an attachment; the automatic emails show in the thread.
    let mut m = messagerie(&stack).await;
    m.post_message(instructeur(futures::stream::iter(post(
        n,
        "Bonjour, pourriez-vous préciser le calendrier des ateliers ?",
        Some(("grille-evaluation.pdf", pdf("Grille d'évaluation"))),
    ))))
    .await
    .unwrap();
    mail(
        &stack,
        PROMOTEUR,
        &format!("Nouveau message pour votre dossier n° {n} ({demarche} – Projet)"),
    )
    .await;
    m.post_message(promoteur(
        PROMOTEUR,
        futures::stream::iter(post(n, "Les ateliers ont lieu chaque mardi matin.", None)),
    ))
    .await
    .unwrap();
    let thread = m
        .list_messages(promoteur(
            PROMOTEUR,
            mpb::ListMessagesRequest {
                number: n,
                page_size: 100,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (mut messages, mut automatic, mut attachments) = (0, Vec::new(), 0);
    for e in &thread.entries {
        match &e.content {
            Some(mpb::thread_entry::Content::Message(msg)) => {
                messages += 1;
                attachments += msg.attachments.len();
            }
            Some(mpb::thread_entry::Content::AutomaticEmail(a)) => {
                automatic.push(a.subject.clone())
            }
            _ => {}
        }
    }
    assert_eq!((messages, attachments), (2, 1));
    assert!(
        automatic.iter().any(|s| s.contains("a bien été déposé"))
            && automatic.iter().any(|s| s.contains("va être examiné")),
        "{automatic:?}"
    );

    // 6. Back en construction; the promoteur corrects; en instruction again.
    client
        .repasser_en_construction(instructeur(ipb::RepasserEnConstructionRequest {
            number: n,
            expected_version: version(&stack, n).await,
            message: "Merci de préciser les dates des ateliers.".into(),
        }))
        .await
        .unwrap();
    mail(
        &stack,
        PROMOTEUR,
        &format!("Votre dossier n° {n} est repassé en construction ({demarche} – Projet)"),
    )
    .await;
    save(
        &stack,
        n,
        "Ateliers chaque mardi matin d'octobre à novembre.",
    )
    .await
    .unwrap();
    client
        .passer_en_instruction(instructeur(ipb::PasserEnInstructionRequest {
            number: n,
            expected_version: version(&stack, n).await,
        }))
        .await
        .unwrap();

    // 7. Accepted with a motivation: the email, « traité », read-only, an invisible fiche.
    client
        .accepter(instructeur(ipb::AccepterRequest {
            number: n,
            expected_version: version(&stack, n).await,
            motivation: "Projet conforme au cahier des charges, budget cohérent.".into(),
            justificatif_upload_id: String::new(),
        }))
        .await
        .unwrap();
    let accepted = mail(
        &stack,
        PROMOTEUR,
        &format!("Votre dossier n° {n} a été accepté ({demarche} – Projet)"),
    )
    .await;
    assert!(!accepted.raw.is_empty());
    assert_eq!(counters(&stack).await.traites, 1);
    assert_eq!(
        save(&stack, n, "Après décision").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let projet_fiche = fiche_of(&stack, n, 1).await;
    assert!(!projet_fiche.visible);
    assert_eq!(projet_fiche.status(), ev::FicheStatus::Importe);

    // 8. An Action linked to the Projet goes the same way.
    let a = deposit_action(
        &stack,
        &siret,
        &cpam,
        n,
        "Stand d'information au centre social Saint-Louis",
        "Centre social Saint-Louis",
    )
    .await;
    accept(&stack, a).await;
    mail(
        &stack,
        PROMOTEUR,
        &format!("Votre dossier n° {a} a été accepté ({demarche} – Action)"),
    )
    .await;
    let action_fiche = fiche_of(&stack, a, 1).await;

    // 9. The ambassadeur chains, attaches the promoteur, corrects a typo, publishes both.
    let mut o = oscars(&stack).await;
    let chained = o
        .chain_to_projet(paca(opb::ChainToProjetRequest {
            fiche_id: action_fiche.id.clone(),
            expected_version: action_fiche.version,
            projet_fiche_id: projet_fiche.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    let p = o
        .create_promoteur(paca(opb::CreatePromoteurRequest {
            promoteur: Some(opb::Promoteur {
                siret: siret.clone(),
                raison_sociale: "Association Souffle".into(),
                type_structure: "Association".into(),
                adresse: "12 rue d'Italie 13006 Marseille".into(),
                commune_code: "13055".into(),
                ..Default::default()
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
        }))
        .await
        .unwrap()
        .into_inner()
        .promoteur
        .unwrap();
    let mut current = Vec::new();
    for (id, v) in [
        (projet_fiche.id.clone(), projet_fiche.version),
        (chained.id.clone(), chained.version),
    ] {
        let f = o
            .attach_promoteur(paca(opb::AttachPromoteurRequest {
                fiche_id: id,
                expected_version: v,
                promoteur_id: p.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .fiche
            .unwrap();
        current.push((f.id, f.version));
    }
    let corrected = o
        .correct_fiche(paca(opb::CorrectFicheRequest {
            fiche_id: current[0].0.clone(),
            expected_version: current[0].1,
            corrections: vec![opb::FieldCorrection {
                field: "title".into(),
                value: Some(opb::FicheFieldValue {
                    value: Some(opb::fiche_field_value::Value::Text(
                        "Mois sans tabac 2024 dans les quartiers Nord de Marseille (13)".into(),
                    )),
                }),
            }],
        }))
        .await
        .unwrap()
        .into_inner()
        .fiche
        .unwrap();
    current[0].1 = corrected.version;
    for (id, v) in &current {
        let f = o
            .publish_fiche(paca(opb::PublishFicheRequest {
                fiche_id: id.clone(),
                expected_version: *v,
            }))
            .await
            .unwrap()
            .into_inner()
            .fiche
            .unwrap();
        assert!(f.visible);
    }
    let listed = public(&stack)
        .await
        .list_public_fiches(opb::ListPublicFichesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 2);
    assert!(
        listed
            .fiches
            .iter()
            .any(|f| f.title.ends_with("quartiers Nord de Marseille (13)"))
    );
    // The outside subscriber: each fiche imported once and published once, with the four
    // updates in between (chaining, two attachments, the correction), each event once in order.
    let items = feed.take(2 + 4 + 2).await;
    assert_once_and_in_order(&items);
    let k = kinds(&items);
    assert_eq!(k.get("oscars.fiche.imported.v1"), Some(&2), "{k:?}");
    assert_eq!(k.get("oscars.fiche.published.v1"), Some(&2), "{k:?}");
    assert_eq!(feed.pending().await, 0);

    // 10. One trace: the decision RPC, the status event, the email sending and the fiche import.
    let spans = mst_testkit::wait_until(WAIT, || async {
        let spans = collector.spans();
        let decision = spans.iter().find(|s| {
            s.service == "mst-instruction" && s.name.ends_with("InstructionService/Accepter")
        })?;
        let in_trace = |service: &str, name: &str| {
            spans.iter().any(|s| {
                s.trace_id == decision.trace_id && s.service == service && s.name.contains(name)
            })
        };
        (in_trace("mst-messagerie", "smtp send")
            && in_trace("mst-oscars", "dossier.status_changed.v1"))
        .then_some(spans.len())
    })
    .await;
    assert!(spans.is_ok(), "{:#?}", collector.spans());
    stack.stop(Duration::from_secs(10)).await.unwrap();
    let _ = &mut stack;
}
