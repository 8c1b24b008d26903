//! The services as separate processes: they find each other, and a service killed with SIGKILL
//! comes back with everything it acknowledged (I2).

use std::time::Duration;

use mst_e2e::processes::ProcessStack;

use crate::support::*;

#[tokio::test]
async fn a_service_killed_mid_flight_restarts_with_every_acknowledged_save() {
    let mut stack = ProcessStack::start(env!("CARGO_BIN_EXE_mst-service"), &[])
        .await
        .unwrap();
    publish_test_procedure(&stack, "test-processes").await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, "test-processes").await;
    let saved = update(&stack, OWNER, d.number, d.version, complete_answers())
        .await
        .unwrap();

    stack.kill("forms").await.unwrap();
    assert!(forms_reachable(&stack).await.is_none(), "forms is down");
    stack.restart("forms").await.unwrap();

    // The acknowledged save is there, and the dossier goes on to its deposit through
    // instruction, which never stopped.
    let deposited = deposit(&stack, OWNER, d.number, saved.version)
        .await
        .unwrap();
    assert_eq!(
        deposited.status,
        mst_proto::events::DossierStatus::EnConstruction as i32
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

async fn forms_reachable(stack: &ProcessStack) -> Option<()> {
    tonic::transport::Endpoint::from_shared(stack.service("forms").url())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()
        .map(|_| ())
}

/// Spans exported over OTLP by two processes: a deposit (forms → instruction's RecordDeposit →
/// the status event → forms' status mirror) is one trace across both services.
#[tokio::test]
async fn a_deposit_is_one_trace_across_the_forms_and_instruction_processes() {
    let collector = mst_testkit::Collector::start().await.unwrap();
    let endpoint = collector.endpoint();
    let mut stack = ProcessStack::start(
        env!("CARGO_BIN_EXE_mst-service"),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await
    .unwrap();
    publish_test_procedure(&stack, "test-trace").await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, "test-trace").await;
    let d = update(&stack, OWNER, d.number, d.version, complete_answers())
        .await
        .unwrap();
    deposit(&stack, OWNER, d.number, d.version).await.unwrap();
    // The RPC forms makes to instruction, and the consumers of instruction's event, continue the
    // promoteur's call.
    let joined = mst_testkit::wait_until(Duration::from_secs(20), || async {
        let spans = collector.spans();
        let deposit = spans
            .iter()
            .find(|s| s.service == "mst-forms" && s.name.contains("DepositDossier"))?;
        let same = |service: &str, name: &str| {
            spans.iter().any(|s| {
                s.trace_id == deposit.trace_id && s.service == service && s.name.contains(name)
            })
        };
        (same("mst-instruction", "RecordDeposit")
            && same("mst-forms", "dossier.status_changed.v1 process"))
        .then_some(())
    })
    .await;
    assert!(joined.is_ok(), "{:#?}", collector.spans());
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// The instructeurs a notice concerns are asked of instruction after the event's commit, not
/// inside it: while instruction is down the messagerie's event stream goes on (an expert is
/// still asked for his avis at once, and no event waits for a redelivery), and the follower
/// hears of the promoteur's message, once, when instruction is back.
#[tokio::test]
async fn the_messagerie_goes_on_while_instruction_is_down_and_tells_followers_once_it_is_back() {
    use mst_kit::auth::Role;
    use mst_proto::events as ev;
    use mst_proto::instruction as ipb;
    const PROCEDURE: &str = "test-notice-requests";
    const EXPERT: &str = "dr.expert@tabacologie.example";
    const WAIT: Duration = Duration::from_secs(30);
    let mut stack = ProcessStack::start(env!("CARGO_BIN_EXE_mst-service"), &[])
        .await
        .unwrap();
    publish_test_procedure(&stack, PROCEDURE).await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, PROCEDURE).await;
    let d = update(&stack, OWNER, d.number, d.version, complete_answers())
        .await
        .unwrap();
    deposit(&stack, OWNER, d.number, d.version).await.unwrap();
    let instruction = tonic::transport::Endpoint::from_shared(stack.service("instruction").url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    ipb::instruction_service_client::InstructionServiceClient::new(instruction)
        .follow_dossier(as_(
            INSTRUCTEUR,
            &[Role::Instructeur],
            ipb::FollowDossierRequest { number: d.number },
        ))
        .await
        .unwrap();
    stack
        .smtp
        .wait_for(|m| m.is_for(OWNER), 1, WAIT)
        .await
        .unwrap();

    stack.kill("instruction").await.unwrap();
    let procedure = Some(ev::ProcedureRef {
        id: PROCEDURE.into(),
        title: "Démarche de test".into(),
        kind: ev::DossierKind::Projet as i32,
    });
    let actor = |email: &str, role: ev::Role| {
        Some(ev::EventMetadata::new(
            "test",
            ev::Actor {
                email: email.into(),
                role: role as i32,
            },
        ))
    };
    publish(
        &stack,
        &ev::MessagePosted {
            metadata: actor(OWNER, ev::Role::Promoteur),
            message_id: "m-1".into(),
            number: d.number,
            procedure: procedure.clone(),
            sequence: 3,
            ..Default::default()
        },
        "notice-requests-message",
    )
    .await;
    publish(
        &stack,
        &ev::AvisRequested {
            metadata: actor(INSTRUCTEUR, ev::Role::Instructeur),
            avis_id: "a-1".into(),
            number: d.number,
            procedure,
            expert_email: EXPERT.into(),
            ..Default::default()
        },
        "notice-requests-avis",
    )
    .await;
    stack
        .smtp
        .wait_for(|m| m.is_for(EXPERT), 1, WAIT)
        .await
        .unwrap();
    // Both events are acknowledged: none waits for a redelivery.
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let stream = js.get_stream(stack.prefix.to_uppercase()).await.unwrap();
    mst_testkit::wait_until(WAIT, || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("messagerie").await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await
    .unwrap();
    let told = |m: &mst_testkit::ReceivedMail| {
        m.is_for(INSTRUCTEUR) && m.subject.starts_with("Nouveau message")
    };
    let received = stack.smtp.messages().await.unwrap();
    assert!(!received.iter().any(told), "nobody to ask yet");

    stack.restart("instruction").await.unwrap();
    stack.smtp.wait_for(told, 1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = stack.smtp.messages().await.unwrap();
    assert_eq!(received.iter().filter(|m| told(m)).count(), 1, "told once");
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// While PostgreSQL is down, every service answers UNAVAILABLE (nothing changed, retry later),
/// not INTERNAL; once it is back they serve again with everything acknowledged before.
#[tokio::test]
async fn while_postgresql_is_down_the_services_answer_unavailable_then_recover() {
    use mst_kit::auth::Role;
    use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
    use mst_proto::messagerie::messagerie_service_client::MessagerieServiceClient;
    use mst_proto::oscars::oscars_public_service_client::OscarsPublicServiceClient;
    use mst_proto::{forms as fpb, instruction as ipb, messagerie as mpb, oscars as opb};
    use tonic::Code;
    if mst_testkit::Backend::from_env().unwrap() != mst_testkit::Backend::Postgres {
        eprintln!("skipped: MST_TEST_DB is not postgres (this test stops its own cluster)");
        return;
    }
    let pg = mst_testkit::Postgres::start().await.unwrap();
    let mut stack = ProcessStack::start_on(env!("CARGO_BIN_EXE_mst-service"), &[], &pg)
        .await
        .unwrap();
    publish_test_procedure(&stack, "test-pg-down").await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, "test-pg-down").await;
    let saved = update(&stack, OWNER, d.number, d.version, complete_answers())
        .await
        .unwrap();
    let lazy = |name: &str| {
        tonic::transport::Endpoint::from_shared(stack.service(name).url())
            .unwrap()
            .connect_lazy()
    };
    let forms = forms(&stack).await;
    let mut reader = forms.clone();
    let mut instruction = InstructionServiceClient::new(lazy("instruction"));
    let mut messagerie = MessagerieServiceClient::new(lazy("messagerie"));
    let mut oscars = OscarsPublicServiceClient::new(lazy("oscars"));
    let number = d.number;

    pg.stop().await.unwrap();
    let (read, write, dashboard, thread, fiches) = tokio::join!(
        reader.get_dossier(promoteur(OWNER, fpb::GetDossierRequest { number })),
        update(
            &stack,
            OWNER,
            number,
            saved.version,
            vec![set("nom_projet", text("Perdu ?"))]
        ),
        instruction.get_dashboard(as_(
            INSTRUCTEUR,
            &[Role::Instructeur],
            ipb::GetDashboardRequest::default()
        )),
        messagerie.list_messages(promoteur(
            OWNER,
            mpb::ListMessagesRequest {
                number,
                ..Default::default()
            }
        )),
        oscars.list_public_fiches(opb::ListPublicFichesRequest::default()),
    );
    let codes = [
        read.map(|_| ()).map_err(|s| s.code()),
        write.map(|_| ()).map_err(|s| s.code()),
        dashboard.map(|_| ()).map_err(|s| s.code()),
        thread.map(|_| ()).map_err(|s| s.code()),
        fiches.map(|_| ()).map_err(|s| s.code()),
    ];
    assert_eq!(codes, [Err(Code::Unavailable); 5]);

    pg.start_again().await.unwrap();
    let back = mst_testkit::wait_until(Duration::from_secs(30), || {
        let mut forms = forms.clone();
        async move {
            forms
                .get_dossier(promoteur(OWNER, fpb::GetDossierRequest { number }))
                .await
                .ok()
        }
    })
    .await
    .unwrap()
    .into_inner()
    .dossier
    .unwrap();
    assert_eq!(
        back.version, saved.version,
        "the refused write changed nothing"
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
