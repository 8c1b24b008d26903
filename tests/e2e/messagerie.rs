//! The messagerie end to end: events from the real forms and instruction services (or published
//! on NATS by the test) become French emails received by a real SMTP sink and entries of the
//! dossier's thread — each exactly once; messages with attachments; delayed and coalesced
//! notices; the daily digest.

use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use mst_e2e::Stack;
use mst_kit::auth::Role;
use mst_proto::events as ev;
use mst_proto::instruction as ipb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use mst_proto::messagerie as pb;
use mst_proto::messagerie::messagerie_service_client::MessagerieServiceClient;
use mst_testkit::ReceivedMail;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

const INVITEE: &str = "lucie.bernard@asso-souffle.example";
const EXPERT: &str = "dr.expert@tabacologie.example";
const PROCEDURE: &str = "test-messagerie";
const WAIT: Duration = Duration::from_secs(30);

async fn channel(url: String) -> Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn messagerie(stack: &Stack) -> MessagerieServiceClient<Channel> {
    MessagerieServiceClient::new(channel(stack.service("messagerie").url()).await)
        .max_decoding_message_size(64 * 1024 * 1024)
}

async fn instruction(stack: &Stack) -> InstructionServiceClient<Channel> {
    InstructionServiceClient::new(channel(stack.service("instruction").url()).await)
}

fn instructeur<T>(message: T) -> tonic::Request<T> {
    as_(INSTRUCTEUR, &[Role::Instructeur], message)
}

/// The decoded part `content_type` (`text/plain` or `text/html`) of a received email.
fn part(mail: &ReceivedMail, content_type: &str) -> String {
    let raw = mail.raw.replace("\r\n", "\n");
    let start = raw
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part in {}", mail.raw));
    let rest = &raw[start..];
    let body_start = rest.find("\n\n").unwrap() + 2;
    let body = &rest[body_start..];
    let end = body.find("\n--").unwrap_or(body.len());
    let b64: String = body[..end].split_whitespace().collect();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// Waits until every queued email left the queue, then returns every received email.
async fn quiet(stack: &Stack) -> Vec<ReceivedMail> {
    let mut client = messagerie(stack).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let queued = client
            .list_deliveries(admin(pb::ListDeliveriesRequest {
                statuses: vec![pb::DeliveryStatus::Queued as i32],
                page_size: 500,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if queued.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still queued: {queued:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.smtp.messages().await.unwrap()
}

/// The subjects received by `to`, in order.
fn subjects_for(mails: &[ReceivedMail], to: &str) -> Vec<String> {
    mails
        .iter()
        .filter(|m| m.is_for(to))
        .map(|m| m.subject.clone())
        .collect()
}

async fn thread(stack: &Stack, who: &str, number: i64) -> pb::ListMessagesResponse {
    messagerie(stack)
        .await
        .list_messages(promoteur(
            who,
            pb::ListMessagesRequest {
                number,
                page_size: 500,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

fn automatic_subjects(t: &pb::ListMessagesResponse) -> Vec<String> {
    t.entries
        .iter()
        .filter_map(|e| match &e.content {
            Some(pb::thread_entry::Content::AutomaticEmail(a)) => Some(a.subject.clone()),
            _ => None,
        })
        .collect()
}

/// A deposited dossier of OWNER, with INVITEE invited; returns (number, status version).
async fn deposited(stack: &Stack) -> (i64, i64) {
    publish_test_procedure(stack, PROCEDURE).await;
    roster_cpam13(stack).await;
    let d = create(stack, OWNER, PROCEDURE).await;
    forms(stack)
        .await
        .invite_to_dossier(promoteur(
            OWNER,
            mst_proto::forms::InviteToDossierRequest {
                number: d.number,
                invitee_email: INVITEE.into(),
                message: "Peux-tu compléter le budget ?".into(),
            },
        ))
        .await
        .unwrap();
    let d = update(stack, OWNER, d.number, d.version, complete_answers())
        .await
        .unwrap();
    deposit(stack, OWNER, d.number, d.version).await.unwrap();
    let version = instruction(stack)
        .await
        .get_dossier(instructeur(ipb::GetDossierRequest { number: d.number }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap()
        .version;
    (d.number, version)
}

#[tokio::test]
async fn every_status_change_emails_the_owner_and_the_invitee_once_and_enters_the_thread() {
    let stack = Stack::start().await.unwrap();
    let (n, mut v) = deposited(&stack).await;
    let mut client = instruction(&stack).await;
    macro_rules! step {
        ($rpc:ident, $req:expr) => {{
            v = client
                .$rpc(instructeur($req))
                .await
                .unwrap()
                .into_inner()
                .dossier
                .unwrap()
                .version;
        }};
    }
    step!(
        passer_en_instruction,
        ipb::PasserEnInstructionRequest {
            number: n,
            expected_version: v
        }
    );
    client
        .request_avis(instructeur(ipb::RequestAvisRequest {
            number: n,
            expert_email: EXPERT.into(),
            question: "Qu'en pensez-vous ?".into(),
            confidential: false,
            request_id: uuid::Uuid::new_v4().to_string(),
        }))
        .await
        .unwrap();
    step!(
        repasser_en_construction,
        ipb::RepasserEnConstructionRequest {
            number: n,
            expected_version: v,
            message: "Merci de revoir le budget.".into()
        }
    );
    step!(
        passer_en_instruction,
        ipb::PasserEnInstructionRequest {
            number: n,
            expected_version: v
        }
    );
    step!(
        demander_correction,
        ipb::DemanderCorrectionRequest {
            number: n,
            expected_version: v,
            message: "Le SIRET ne correspond pas.".into(),
            reason: ev::CorrectionReason::Incorrect as i32
        }
    );
    // The owner resubmits: the correction is resolved, the status does not change, no email.
    let d = forms(&stack)
        .await
        .get_dossier(promoteur(
            OWNER,
            mst_proto::forms::GetDossierRequest { number: n },
        ))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap();
    deposit(&stack, OWNER, n, d.version).await.unwrap();
    let resubmitted = client
        .get_dossier(instructeur(ipb::GetDossierRequest { number: n }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap()
        .version;
    assert!(resubmitted > v, "the resolution bumps the status version");
    v = resubmitted;
    step!(
        passer_en_instruction,
        ipb::PasserEnInstructionRequest {
            number: n,
            expected_version: v
        }
    );
    step!(
        refuser,
        ipb::RefuserRequest {
            number: n,
            expected_version: v,
            motivation: "Hors périmètre.".into(),
            justificatif_upload_id: String::new()
        }
    );
    step!(
        repasser_en_instruction,
        ipb::RepasserEnInstructionRequest {
            number: n,
            expected_version: v,
            message: String::new()
        }
    );
    step!(
        classer_sans_suite,
        ipb::ClasserSansSuiteRequest {
            number: n,
            expected_version: v,
            motivation: "Doublon.".into(),
            justificatif_upload_id: String::new()
        }
    );
    step!(
        repasser_en_instruction,
        ipb::RepasserEnInstructionRequest {
            number: n,
            expected_version: v,
            message: String::new()
        }
    );
    step!(
        accepter,
        ipb::AccepterRequest {
            number: n,
            expected_version: v,
            motivation: "Projet conforme.".into(),
            justificatif_upload_id: String::new()
        }
    );
    assert!(v > 0);

    let d = "Démarche de test";
    let status_subjects = vec![
        format!("Votre dossier n° {n} a bien été déposé ({d})"),
        format!("Votre dossier n° {n} va être examiné ({d})"),
        format!("Votre dossier n° {n} est repassé en construction ({d})"),
        format!("Votre dossier n° {n} va être examiné ({d})"),
        format!("Vous devez corriger votre dossier n° {n}"),
        format!("Votre dossier n° {n} va être examiné ({d})"),
        format!("Votre dossier n° {n} a été refusé ({d})"),
        format!("Votre dossier n° {n} est en train d'être réexaminé ({d})"),
        format!("Votre dossier n° {n} a été classé sans suite ({d})"),
        format!("Votre dossier n° {n} est en train d'être réexaminé ({d})"),
        format!("Votre dossier n° {n} a été accepté ({d})"),
    ];
    let brouillon = format!("Retrouvez votre brouillon n° {n} pour la démarche « {d} »");
    let expected_total = 1 + 1 + 2 * status_subjects.len() + 1;
    stack
        .smtp
        .wait_for(|_| true, expected_total, WAIT)
        .await
        .unwrap();
    let mails = quiet(&stack).await;
    assert_eq!(mails.len(), expected_total, "exactly the expected emails");

    let mut owner_expected = vec![brouillon];
    owner_expected.extend(status_subjects.iter().cloned());
    let mut owner = subjects_for(&mails, OWNER);
    let mut invitee = subjects_for(&mails, INVITEE);
    // Delivery order across pooled connections is not guaranteed: compare as multisets.
    owner.sort();
    owner_expected.sort();
    assert_eq!(owner, owner_expected);
    let mut invitee_expected = status_subjects.clone();
    invitee_expected.push("Participez à l'élaboration d'un dossier".into());
    invitee.sort();
    invitee_expected.sort();
    assert_eq!(invitee, invitee_expected);
    assert_eq!(
        subjects_for(&mails, EXPERT),
        vec![format!("Donnez votre avis sur le dossier n° {n} ({d})")]
    );
    // Every email went to exactly one recipient, with a Message-ID of the messagerie.
    for m in &mails {
        assert_eq!(m.to.len(), 1, "{:?}", m.to);
        assert!(
            m.header("Message-ID")
                .is_some_and(|id| id.ends_with("@mois-sans-tabac.example>"))
        );
    }
    // The instructeur (auto-follower) has the deposit and the resubmission in his digest queue
    // (default preferences: digest for both), and received no instant email.
    {
        use mst_messagerie::store::notice;
        use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};
        let kinds: Vec<String> = notice::Entity::find()
            .filter(notice::Column::Channel.eq(notice::DIGEST))
            .filter(notice::Column::Recipient.eq(INSTRUCTEUR))
            .order_by_asc(notice::Column::CreatedAt)
            .all(stack.messagerie.db())
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.kind)
            .collect();
        assert_eq!(kinds, vec!["new_dossier", "dossier_modified"]);
        assert!(subjects_for(&mails, INSTRUCTEUR).is_empty());
    }
    // The decision's motivation is in the email.
    let accepte = mails
        .iter()
        .find(|m| m.is_for(OWNER) && m.subject.contains("accepté"))
        .unwrap();
    assert!(part(accepte, "text/plain").contains("Projet conforme."));
    assert!(part(accepte, "text/html").contains("Projet conforme."));

    // The thread holds one automatic entry per status change, in order, for owner and invitee.
    let t = thread(&stack, OWNER, n).await;
    assert_eq!(automatic_subjects(&t), status_subjects);
    assert!(t.writable);
    assert_eq!(
        automatic_subjects(&thread(&stack, INVITEE, n).await),
        status_subjects
    );
    // Pages of 5 give the same thread; a tampered token is refused.
    let (mut token, mut paged) = (String::new(), Vec::new());
    loop {
        let page = messagerie(&stack)
            .await
            .list_messages(promoteur(
                OWNER,
                pb::ListMessagesRequest {
                    number: n,
                    page_size: 5,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 5);
        paged.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, t.entries);
    let err = messagerie(&stack)
        .await
        .list_messages(promoteur(
            OWNER,
            pb::ListMessagesRequest {
                number: n,
                page_size: 5,
                page_token: "n'importe quoi".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Strangers do not see it.
    let err = messagerie(&stack)
        .await
        .list_messages(promoteur(
            "inconnu@example.org",
            pb::ListMessagesRequest {
                number: n,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The delivery log tells the same story.
    let log = messagerie(&stack)
        .await
        .list_deliveries(admin(pb::ListDeliveriesRequest {
            number: n,
            recipient: OWNER.into(),
            page_size: 500,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(log.len(), owner_expected.len());
    assert!(
        log.iter()
            .all(|d| d.status == pb::DeliveryStatus::Sent as i32 && d.sent_at.is_some())
    );
    let err = messagerie(&stack)
        .await
        .list_deliveries(promoteur(OWNER, pb::ListDeliveriesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Every email sent is announced once on the event feed, with its own Message-ID.
    let deadline = tokio::time::Instant::now() + WAIT;
    let announced = loop {
        let announced = mail_sent_events(&stack).await;
        if announced.len() >= expected_total || tokio::time::Instant::now() >= deadline {
            break announced;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(announced.len(), expected_total);
    let mut ids: Vec<&str> = announced.iter().map(|e| e.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), expected_total);

    // Archived, the thread is read-only.
    client
        .archive_dossier(instructeur(ipb::ArchiveDossierRequest {
            number: n,
            expected_version: v,
        }))
        .await
        .unwrap();
    assert!(!thread(&stack, OWNER, n).await.writable);
    let err = messagerie(&stack)
        .await
        .post_message(promoteur(
            OWNER,
            tokio_stream::iter(post_stream(n, "Encore une question", &[], None)),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Replay: the messagerie forgets what it processed and its durable consumer is recreated
    // from the start of the stream. Every event is handled again; nothing is sent or written
    // twice (invariant I3).
    {
        use mst_bus::consumer::processed;
        use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
        let db = stack.messagerie.db();
        let handled = || async {
            processed::Entity::find()
                .filter(processed::Column::Consumer.eq("messagerie"))
                .count(db)
                .await
                .unwrap()
        };
        let before = handled().await;
        assert!(before as usize > status_subjects.len());
        processed::Entity::delete_many()
            .filter(processed::Column::Consumer.eq("messagerie"))
            .exec(db)
            .await
            .unwrap();
        let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
        js.get_stream(stack.prefix.to_uppercase())
            .await
            .unwrap()
            .delete_consumer("messagerie")
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while handled().await < before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replay did not finish"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = quiet(&stack).await;
        assert_eq!(after.len(), expected_total, "nothing sent twice");
        assert_eq!(
            automatic_subjects(&thread(&stack, OWNER, n).await),
            status_subjects
        );
    }
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// Every `MailSent` on the stack's stream so far.
async fn mail_sent_events(stack: &Stack) -> Vec<ev::MailSent> {
    use async_nats::jetstream::consumer::pull;
    use prost::Message as _;
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let consumer = js
        .get_stream(stack.prefix.to_uppercase())
        .await
        .unwrap()
        .create_consumer(pull::Config {
            filter_subject: format!(
                "{}.{}",
                stack.prefix,
                <ev::MailSent as mst_proto::Event>::SUBJECT
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut messages = consumer
        .fetch()
        .max_messages(1000)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    while let Some(m) = messages.next().await {
        out.push(ev::MailSent::decode(m.unwrap().payload.as_ref()).unwrap());
    }
    out
}

fn status_event(
    number: i64,
    owner: &str,
    title: &str,
    motivation: &str,
) -> ev::DossierStatusChanged {
    ev::DossierStatusChanged {
        motivation: motivation.into(),
        ..acceptance_event(number, (PROCEDURE, title), owner, 5)
    }
}

#[tokio::test]
async fn the_same_event_delivered_three_times_sends_one_email() {
    let stack = Stack::start().await.unwrap();
    let event = status_event(9001, "triple@example.org", "Démarche", "");
    // The outbox relay's id, then two republications under fresh message ids (a replay).
    for msg_id in ["first", "second", "third"] {
        publish(&stack, &event, msg_id).await;
    }
    // A later event: once its email is out, the three copies before it were handled.
    let marker = status_event(9002, "marker@example.org", "Démarche", "");
    let id = marker.metadata.as_ref().unwrap().event_id.clone();
    publish(&stack, &marker, &id).await;
    stack
        .smtp
        .wait_for(|m| m.is_for("marker@example.org"), 1, WAIT)
        .await
        .unwrap();
    // All four deliveries were handled (none failing and waiting for a retry or a dead letter).
    use mst_bus::consumer::processed;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let handled = processed::Entity::find()
            .filter(processed::Column::Consumer.eq("messagerie"))
            .filter(processed::Column::EventId.is_in(["first", "second", "third", id.as_str()]))
            .count(stack.messagerie.db())
            .await
            .unwrap();
        if handled == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{handled} of 4 handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mails = quiet(&stack).await;
    assert_eq!(subjects_for(&mails, "triple@example.org").len(), 1);
    assert_eq!(mails.len(), 2);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn emails_queued_while_smtp_is_down_all_go_out_once_it_is_back() {
    let mut stack = Stack::start().await.unwrap();
    stack.smtp.stop().await.unwrap();
    let recipients: Vec<String> = (0..5).map(|i| format!("panne{i}@example.org")).collect();
    for (i, r) in recipients.iter().enumerate() {
        let e = status_event(9100 + i as i64, r, "Démarche", "");
        let id = e.metadata.as_ref().unwrap().event_id.clone();
        publish(&stack, &e, &id).await;
    }
    // Every email is queued and has been retried at least twice, with the reason logged.
    let mut client = messagerie(&stack).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = client
            .list_deliveries(admin(pb::ListDeliveriesRequest {
                page_size: 100,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if log.len() == 5
            && log.iter().all(|d| {
                d.status == pb::DeliveryStatus::Queued as i32
                    && d.attempts >= 2
                    && !d.last_error.is_empty()
                    && d.next_attempt_at.is_some()
            })
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not retried: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stack.smtp.messages().await.unwrap().is_empty());
    stack.smtp.start_again().await.unwrap();
    stack.smtp.wait_for(|_| true, 5, WAIT).await.unwrap();
    let mails = quiet(&stack).await;
    assert_eq!(mails.len(), 5);
    for r in &recipients {
        assert_eq!(subjects_for(&mails, r).len(), 1, "{r}");
    }
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn script_and_line_breaks_in_user_content_arrive_escaped_with_intact_headers() {
    let stack = Stack::start().await.unwrap();
    let e = status_event(
        9200,
        "victime@example.org",
        "Démarche\r\nBcc: pirate@evil.example\r\nX-Injected: oui",
        "<script>alert('x')</script>\r\nSuite",
    );
    let id = e.metadata.as_ref().unwrap().event_id.clone();
    publish(&stack, &e, &id).await;
    let invited = ev::DossierInvited {
        metadata: Some(ev::EventMetadata::new(
            "forms",
            ev::Actor {
                email: "inviteur@example.org".into(),
                role: ev::Role::Promoteur as i32,
            },
        )),
        number: 9201,
        procedure: Some(ev::ProcedureRef {
            id: PROCEDURE.into(),
            title: "Démarche\nSubject: faux".into(),
            kind: 1,
        }),
        invitation_id: "inv-1".into(),
        invitee_email: "invite@example.org".into(),
        message: "<b>Bonjour</b><script>document.cookie</script>".into(),
        version: 1,
    };
    let id = invited.metadata.as_ref().unwrap().event_id.clone();
    publish(&stack, &invited, &id).await;
    let mails = stack.smtp.wait_for(|_| true, 2, WAIT).await.unwrap();
    for m in &mails {
        assert_eq!(m.to.len(), 1);
        assert!(m.header("Bcc").is_none(), "{}", m.raw);
        assert!(m.header("X-Injected").is_none(), "{}", m.raw);
        assert_eq!(
            m.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("Subject"))
                .count(),
            1
        );
        assert!(!m.subject.contains('\n') && !m.subject.contains('\r'));
        let html = part(m, "text/html");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
    let victim = mails
        .iter()
        .find(|m| m.is_for("victime@example.org"))
        .unwrap();
    assert_eq!(
        victim.subject,
        "Votre dossier n° 9200 a été accepté (Démarche Bcc: pirate@evil.example X-Injected: oui)"
    );
    assert!(part(victim, "text/plain").contains("<script>alert('x')</script>"));
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

fn post_stream(
    number: i64,
    body: &str,
    files: &[(&str, &str, Vec<u8>)],
    declared: Option<i64>,
) -> Vec<pb::PostMessageRequest> {
    use pb::post_message_request::Payload;
    let mut out = vec![pb::PostMessageRequest {
        payload: Some(Payload::Metadata(pb::PostMessageMetadata {
            number,
            body: body.into(),
            attachment_count: files.len() as i32,
            request_id: uuid::Uuid::new_v4().to_string(),
        })),
    }];
    for (name, content_type, bytes) in files {
        out.push(pb::PostMessageRequest {
            payload: Some(Payload::Attachment(pb::AttachmentHeader {
                file_name: (*name).into(),
                content_type: (*content_type).into(),
                size_bytes: declared.unwrap_or(bytes.len() as i64),
            })),
        });
        for c in bytes.chunks(1024 * 1024) {
            out.push(pb::PostMessageRequest {
                payload: Some(Payload::Chunk(c.to_vec())),
            });
        }
    }
    out
}

async fn download(stack: &Stack, who: &str, id: &str) -> Result<(String, Vec<u8>), tonic::Status> {
    let mut s = messagerie(stack)
        .await
        .download_attachment(promoteur(
            who,
            pb::DownloadAttachmentRequest {
                attachment_id: id.into(),
            },
        ))
        .await?
        .into_inner();
    let mut name = String::new();
    let mut bytes = Vec::new();
    while let Some(m) = s.next().await {
        match m?.payload {
            Some(pb::download_attachment_response::Payload::Header(h)) => name = h.file_name,
            Some(pb::download_attachment_response::Payload::Chunk(c)) => bytes.extend(c),
            None => {}
        }
    }
    Ok((name, bytes))
}

fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test]
async fn messages_carry_attachments_and_notify_the_other_side() {
    let stack = Stack::start().await.unwrap();
    let (n, _) = deposited(&stack).await;
    instruction(&stack)
        .await
        .follow_dossier(instructeur(ipb::FollowDossierRequest { number: n }))
        .await
        .unwrap();
    let mut client = messagerie(&stack).await;

    // Two attachments on one message round-trip byte for byte.
    let pdf: Vec<u8> = b"%PDF-1.4\n"
        .iter()
        .copied()
        .chain((0..3_000_000u32).map(|i| (i % 251) as u8))
        .collect();
    let txt = "Budget prévisionnel\n<script>alert(1)</script>\n"
        .repeat(1000)
        .into_bytes();
    let posted = client
        .post_message(promoteur(
            OWNER,
            tokio_stream::iter(post_stream(
                n,
                "Voici les pièces <script>x</script>",
                &[
                    ("budget.pdf", "application/pdf", pdf.clone()),
                    ("notes.txt", "text/plain", txt.clone()),
                ],
                None,
            )),
        ))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    let Some(pb::thread_entry::Content::Message(m)) = &posted.content else {
        panic!("{posted:?}")
    };
    assert_eq!(m.attachments.len(), 2);
    assert_eq!(m.body, "Voici les pièces <script>x</script>");
    let (name, bytes) = download(&stack, INVITEE, &m.attachments[0].id)
        .await
        .unwrap();
    assert_eq!((name.as_str(), bytes == pdf), ("budget.pdf", true));
    let (name, bytes) = download(&stack, OWNER, &m.attachments[1].id).await.unwrap();
    assert_eq!((name.as_str(), bytes == txt), ("notes.txt", true));
    let err = download(&stack, "inconnu@example.org", &m.attachments[0].id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // 21 MB is refused and nothing is stored.
    let dir = stack.files_dir().join("messagerie");
    let files_before = count_files(&dir);
    let entries_before = thread(&stack, OWNER, n).await.entries.len();
    let big = vec![b'a'; 21 * 1000 * 1000];
    for declared in [None, Some(1000)] {
        let err = client
            .post_message(promoteur(
                OWNER,
                tokio_stream::iter(post_stream(
                    n,
                    "gros",
                    &[("gros.txt", "text/plain", big.clone())],
                    declared,
                )),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    }
    assert_eq!(thread(&stack, OWNER, n).await.entries.len(), entries_before);
    assert_eq!(count_files(&dir), files_before);

    // The follower hears of the promoteur's message at once (default preference: instant).
    stack
        .smtp
        .wait_for(
            |m| m.is_for(INSTRUCTEUR) && m.subject.starts_with("Nouveau message"),
            1,
            WAIT,
        )
        .await
        .unwrap();

    // Two instructeur messages in a row: one coalesced email per promoteur after the delay.
    for body in ["Bien reçu.", "Pouvez-vous préciser le public visé ?"] {
        client
            .post_message(instructeur(tokio_stream::iter(post_stream(
                n,
                body,
                &[],
                None,
            ))))
            .await
            .unwrap();
    }
    let subject = format!("Nouveau message pour votre dossier n° {n} (Démarche de test)");
    stack
        .smtp
        .wait_for(|m| m.subject == subject, 2, WAIT)
        .await
        .unwrap();
    let mails = quiet(&stack).await;
    let news: Vec<&ReceivedMail> = mails.iter().filter(|m| m.subject == subject).collect();
    assert_eq!(news.len(), 2, "one for the owner, one for the invitee");
    assert!(news.iter().any(|m| m.is_for(OWNER)) && news.iter().any(|m| m.is_for(INVITEE)));
    assert!(part(news[0], "text/plain").contains("2 nouveaux messages"));

    // Only the author deletes; a tombstone stays and the attachments go.
    let err = client
        .delete_message(instructeur(pb::DeleteMessageRequest {
            message_id: posted.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let tomb = client
        .delete_message(promoteur(
            OWNER,
            pb::DeleteMessageRequest {
                message_id: posted.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert!(matches!(
        tomb.content,
        Some(pb::thread_entry::Content::Tombstone(_))
    ));
    let err = download(&stack, OWNER, &m.attachments[0].id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let t = thread(&stack, OWNER, n).await;
    assert!(
        t.entries.iter().any(|e| e.id == posted.id
            && matches!(e.content, Some(pb::thread_entry::Content::Tombstone(_))))
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_brouillon_has_no_thread() {
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, PROCEDURE).await;
    let d = create(&stack, OWNER, PROCEDURE).await;
    stack
        .smtp
        .wait_for(|m| m.is_for(OWNER), 1, WAIT)
        .await
        .unwrap();
    let err = messagerie(&stack)
        .await
        .list_messages(promoteur(
            OWNER,
            pb::ListMessagesRequest {
                number: d.number,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn the_daily_digest_lists_a_days_events_for_a_follower_in_one_email() {
    let stack = Stack::start().await.unwrap();
    let (n, _) = deposited(&stack).await;
    instruction(&stack)
        .await
        .follow_dossier(instructeur(ipb::FollowDossierRequest { number: n }))
        .await
        .unwrap();
    // The messagerie has caught up with the procedure and the deposit.
    stack
        .smtp
        .wait_for(|m| m.subject.contains("a bien été déposé"), 2, WAIT)
        .await
        .unwrap();
    let mut client = messagerie(&stack).await;
    // Messages only in the digest for this procedure.
    let prefs = client
        .update_notification_preferences(instructeur(pb::UpdateNotificationPreferencesRequest {
            procedure_id: PROCEDURE.into(),
            expected_version: 0,
            settings: vec![pb::NoticeSetting {
                kind: pb::NoticeKind::NewMessage as i32,
                instant: false,
                daily_digest: true,
            }],
        }))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert_eq!(prefs.version, 1);
    let err = client
        .update_notification_preferences(instructeur(pb::UpdateNotificationPreferencesRequest {
            procedure_id: PROCEDURE.into(),
            expected_version: 0,
            settings: vec![],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let err = client
        .get_notification_preferences(instructeur(pb::GetNotificationPreferencesRequest {
            procedure_id: "inconnue".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let all = client
        .get_notification_preferences(instructeur(pb::GetNotificationPreferencesRequest {
            procedure_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .preferences;
    let mine = all.iter().find(|p| p.procedure_id == PROCEDURE).unwrap();
    assert_eq!(mine.version, 1);
    assert!(
        mine.settings
            .iter()
            .any(|s| s.kind == pb::NoticeKind::NewMessage as i32 && !s.instant && s.daily_digest)
    );
    for body in ["Premier message", "Second message"] {
        client
            .post_message(promoteur(
                OWNER,
                tokio_stream::iter(post_stream(n, body, &[], None)),
            ))
            .await
            .unwrap();
    }
    // The deposit (new dossier: digest by default) and the two messages reach the digest
    // queue through events; wait for the three, then run the 9:00 digest.
    use mst_messagerie::store::notice;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending = notice::Entity::find()
            .filter(notice::Column::Channel.eq(notice::DIGEST))
            .filter(notice::Column::Recipient.eq(INSTRUCTEUR))
            .count(stack.messagerie.db())
            .await
            .unwrap();
        if pending == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} pending notices"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.messagerie.run_digest().await.unwrap(), 1);
    let mails = quiet(&stack).await;
    let mine: Vec<&ReceivedMail> = mails.iter().filter(|m| m.is_for(INSTRUCTEUR)).collect();
    assert_eq!(mine.len(), 1, "no instant email, one digest: {mine:?}");
    assert!(
        mine[0].subject.starts_with("Résumé quotidien"),
        "{}",
        mine[0].subject
    );
    let text = part(mine[0], "text/plain");
    assert_eq!(
        text.matches(&format!(
            "Nouveau message : dossier n° {n} (Démarche de test), 2 fois, la dernière le"
        ))
        .count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches(&format!("Nouveau dossier déposé : dossier n° {n}"))
            .count(),
        1,
        "{text}"
    );
    // Nothing is sent twice: a second run has nothing left.
    assert_eq!(stack.messagerie.run_digest().await.unwrap(), 0);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn contacting_brouillon_owners_notifies_and_emails_each_owner() {
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, PROCEDURE).await;
    roster_cpam13(&stack).await;
    let other = "paul.durand@asso-air.example";
    let a = create(&stack, OWNER, PROCEDURE).await;
    let b = create(&stack, OWNER, PROCEDURE).await;
    let c = create(&stack, other, PROCEDURE).await;
    // The messagerie knows the three brouillons once their "brouillon" emails are out.
    stack.smtp.wait_for(|_| true, 3, WAIT).await.unwrap();
    let mut client = messagerie(&stack).await;
    let request = pb::ContactBrouillonOwnersRequest {
        procedure_id: PROCEDURE.into(),
        subject: "Clôture\r\nBcc: x@evil.example".into(),
        body: "La démarche ferme vendredi <b>à midi</b>.".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let err = client
        .contact_brouillon_owners(instructeur(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a subject on two lines");
    let request = pb::ContactBrouillonOwnersRequest {
        subject: "Clôture de la démarche".into(),
        ..request
    };
    let err = client
        .contact_brouillon_owners(promoteur(OWNER, request.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // An instructeur token of someone not on the roster reaches nobody.
    let err = client
        .contact_brouillon_owners(as_(
            "pas.declare@cpam13.example",
            &[Role::Instructeur],
            request.clone(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .contact_brouillon_owners(instructeur(pb::ContactBrouillonOwnersRequest {
            procedure_id: "inconnue".into(),
            ..request.clone()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for _ in 0..2 {
        // The retry (same request id) changes nothing.
        let answer = client
            .contact_brouillon_owners(instructeur(request.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((answer.brouillon_count, answer.recipient_count), (3, 2));
    }
    let mails = quiet(&stack).await;
    let contact: Vec<&ReceivedMail> = mails
        .iter()
        .filter(|m| m.subject.starts_with("Clôture de la démarche"))
        .collect();
    assert_eq!(contact.len(), 3);
    assert_eq!(contact.iter().filter(|m| m.is_for(OWNER)).count(), 2);
    assert_eq!(contact.iter().filter(|m| m.is_for(other)).count(), 1);
    assert!(part(contact[0], "text/html").contains("&lt;b&gt;à midi&lt;&#x2f;b&gt;"));
    let notes = client
        .list_notifications(promoteur(OWNER, pb::ListNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    let mut numbers: Vec<i64> = notes.iter().map(|n| n.number).collect();
    numbers.sort();
    assert_eq!(numbers, vec![a.number, b.number]);
    assert!(notes.iter().all(|n| n.subject == "Clôture de la démarche"));
    let theirs = client
        .list_notifications(promoteur(other, pb::ListNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].number, c.number);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn an_expert_reads_and_writes_the_thread_while_his_avis_stands() {
    let stack = Stack::start().await.unwrap();
    let (n, _) = deposited(&stack).await;
    fn expert<T>(m: T) -> tonic::Request<T> {
        as_(EXPERT, &[Role::Promoteur], m)
    }
    let mut client = messagerie(&stack).await;
    let list = |number| pb::ListMessagesRequest {
        number,
        ..Default::default()
    };
    let err = client.list_messages(expert(list(n))).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "no avis asked yet");
    let avis = instruction(&stack)
        .await
        .request_avis(instructeur(ipb::RequestAvisRequest {
            number: n,
            expert_email: EXPERT.into(),
            question: "Qu'en pensez-vous ?".into(),
            confidential: false,
            request_id: uuid::Uuid::new_v4().to_string(),
        }))
        .await
        .unwrap()
        .into_inner()
        .avis
        .unwrap();
    let t = client
        .list_messages(expert(list(n)))
        .await
        .unwrap()
        .into_inner();
    assert!(t.writable);
    let posted = client
        .post_message(expert(tokio_stream::iter(post_stream(
            n,
            "Avis favorable sous réserve.",
            &[],
            None,
        ))))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    let Some(pb::thread_entry::Content::Message(m)) = &posted.content else {
        panic!("{posted:?}")
    };
    assert_eq!(
        m.author.as_ref().map(|a| (a.email.as_str(), a.role)),
        Some((EXPERT, ev::Role::Expert as i32))
    );
    // The promoteur side hears of it like of an instructeur's message.
    let subject = format!("Nouveau message pour votre dossier n° {n} (Démarche de test)");
    stack
        .smtp
        .wait_for(|m| m.subject == subject, 2, WAIT)
        .await
        .unwrap();
    // Once the avis is revoked the thread is out of his reach.
    instruction(&stack)
        .await
        .revoke_avis(instructeur(ipb::RevokeAvisRequest {
            avis_id: avis.id,
            expected_version: avis.version,
        }))
        .await
        .unwrap();
    let err = client.list_messages(expert(list(n))).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
