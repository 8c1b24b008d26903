//! The closing date: every en_construction dossier of a procedure whose closing date passed moves
//! en instruction, each with its traitement, forms freeze and one status event.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use futures::StreamExt as _;
use mst_e2e::Stack;
use mst_kit::auth::Role;
use mst_proto::Event as _;
use mst_proto::events as ev;
use mst_proto::forms as pb;
use prost::Message as _;

use crate::support::*;

/// The admin sets the procedure's closing date a minute ago.
async fn close_a_minute_ago(stack: &Stack, procedure_id: &str) {
    let procedure = forms(stack)
        .await
        .get_procedure(admin(pb::GetProcedureRequest {
            procedure_id: procedure_id.into(),
            include_published_revision: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .procedure
        .unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    forms_admin(stack)
        .await
        .update_procedure(admin(pb::UpdateProcedureRequest {
            procedure_id: procedure_id.into(),
            expected_version: procedure.version,
            procedure: Some(pb::Procedure {
                closing_at: Some(past.into()),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["closing_at".into()],
            }),
        }))
        .await
        .unwrap();
}

/// `count` dossiers of `procedure_id` filled and deposited by the owner; their numbers.
async fn deposited(stack: &Stack, procedure_id: &str, count: usize) -> Vec<i64> {
    let mut numbers = Vec::new();
    for _ in 0..count {
        let d = create(stack, OWNER, procedure_id).await;
        let d = update(stack, OWNER, d.number, 1, complete_answers())
            .await
            .unwrap();
        deposit(stack, OWNER, d.number, d.version).await.unwrap();
        numbers.push(d.number);
    }
    numbers
}

/// One run of instruction's closing-date check, now; how many dossiers it moved.
async fn closing_run(stack: &Stack) -> usize {
    stack
        .instruction
        .close_due_procedures(chrono::Utc::now())
        .await
        .unwrap()
}

/// The first closing-date run that moves something (instruction learns a closing date from
/// forms' event, a moment after the admin set it); how many it moved.
async fn first_closing_run(stack: &Stack) -> usize {
    mst_testkit::wait_until(Duration::from_secs(20), || async {
        let moved = closing_run(stack).await;
        (moved > 0).then_some(moved)
    })
    .await
    .expect("a closing-date run moves a dossier")
}

#[tokio::test]
async fn the_instruction_service_runs_the_closing_date_scheduler_on_its_own() {
    let stack = Stack::start_with(&[("MST_CLOSING_CHECK_SECS", "1")])
        .await
        .unwrap();
    publish_test_procedure(&stack, "test-closing-auto").await;
    roster_cpam13(&stack).await;
    let number = deposited(&stack, "test-closing-auto", 1).await[0];
    close_a_minute_ago(&stack, "test-closing-auto").await;
    // Nobody calls close_due_procedures: the service's own scheduler moves the dossier.
    let status = mst_testkit::wait_until(Duration::from_secs(20), || {
        let stack = &stack;
        async move {
            let d = owners_view(stack, number).await;
            (d.status == ev::DossierStatus::EnInstruction as i32).then_some(d.status)
        }
    })
    .await
    .expect("the scheduler moves the dossier en instruction");
    assert_eq!(status, ev::DossierStatus::EnInstruction as i32);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn at_the_closing_date_every_en_construction_dossier_moves_en_instruction_with_its_event() {
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, "test-closing").await;
    roster_cpam13(&stack).await;
    let numbers = deposited(&stack, "test-closing", 3).await;
    // A brouillon stays a brouillon.
    let brouillon = create(&stack, OWNER, "test-closing").await;

    // The admin closes the procedure a minute ago; instruction learns it from the event.
    close_a_minute_ago(&stack, "test-closing").await;
    assert_eq!(first_closing_run(&stack).await, 3);
    assert_eq!(closing_run(&stack).await, 0, "nothing moves twice");

    for number in &numbers {
        let d = owners_view(&stack, *number).await;
        assert!(d.frozen, "dossier {number} is frozen for the promoteur");
        // I1: the moment the passage is acknowledged, forms refuses the promoteur's save.
        let refused = update(&stack, OWNER, *number, d.version, complete_answers())
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
    }
    let b = owners_view(&stack, brouillon.number).await;
    assert_eq!(b.status, ev::DossierStatus::Brouillon as i32);

    // One AUTO status event per dossier on the stream.
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let subject = format!("{}.{}", stack.prefix, ev::DossierStatusChanged::SUBJECT);
    let consumer = js
        .get_stream(stack.prefix.to_uppercase())
        .await
        .unwrap()
        .create_consumer(pull::Config {
            filter_subject: subject,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut auto = Vec::new();
    let mut messages = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        let e = ev::DossierStatusChanged::decode(m.payload.as_ref()).unwrap();
        if e.transition == ev::DossierTransition::PasserEnInstructionAuto as i32 {
            assert_eq!(e.to_status, ev::DossierStatus::EnInstruction as i32);
            assert_eq!(
                e.metadata.unwrap().actor.unwrap().role,
                ev::Role::System as i32
            );
            auto.push(e.number);
        }
    }
    auto.sort_unstable();
    assert_eq!(auto, numbers);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// The instruction service, as forms sees its calls.
const INSTRUCTION: &str = "instruction@services.mst.local";

/// The closing date's passage goes through forms' freeze like an instructeur's (I1): a dossier
/// held by a transition in flight is left for the next run, and moves once the hold is gone.
#[tokio::test]
async fn the_closing_date_leaves_a_dossier_frozen_by_a_transition_in_flight_for_its_next_run() {
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, "test-closing-held").await;
    roster_cpam13(&stack).await;
    let numbers = deposited(&stack, "test-closing-held", 2).await;
    let held = numbers[0];
    forms_internal(&stack)
        .await
        .freeze_dossier(as_(
            INSTRUCTION,
            &[Role::System],
            pb::FreezeDossierRequest {
                number: held,
                operation_id: "passage-in-flight".into(),
                target_status: ev::DossierStatus::EnInstruction as i32,
                status_version: 3,
            },
        ))
        .await
        .unwrap();

    close_a_minute_ago(&stack, "test-closing-held").await;
    // Once instruction knows the closing date, one run moves the free dossier only.
    assert_eq!(
        first_closing_run(&stack).await,
        1,
        "the held dossier must wait for its hold"
    );
    assert_eq!(closing_run(&stack).await, 0, "still held");

    forms_internal(&stack)
        .await
        .unfreeze_dossier(as_(
            INSTRUCTION,
            &[Role::System],
            pb::UnfreezeDossierRequest {
                number: held,
                operation_id: "passage-in-flight".into(),
                reason: pb::UnfreezeReason::Rollback as i32,
                status_version: 0,
            },
        ))
        .await
        .unwrap();
    assert_eq!(closing_run(&stack).await, 1, "the next run moves it");
    assert!(owners_view(&stack, held).await.frozen);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
