//! Invariant I1 under races: an autosave racing "passer en instruction" either lands before the
//! freeze (and is part of what the instructeur examines) or is refused; no change ever commits
//! after the transition.

use std::time::Duration;

use mst_e2e::Stack;
use mst_instruction::domain::Command;
use mst_kit::auth::{Principal, Role};
use mst_proto::forms as pb;
use tonic::Code;

use crate::support::*;

fn instructeur() -> Principal {
    Principal {
        email: INSTRUCTEUR.into(),
        name: None,
        roles: [Role::Instructeur].into(),
    }
}

/// The dossier's version in the instruction service.
async fn version_in_instruction(stack: &Stack, number: i64) -> i64 {
    stack
        .instruction
        .dossier(&instructeur(), number)
        .await
        .unwrap()
        .row
        .version
}

#[tokio::test]
async fn an_autosave_racing_passer_en_instruction_never_commits_after_the_transition() {
    const ROUNDS: usize = 200;
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, "test-i1").await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, "test-i1").await;
    let d = update(&stack, OWNER, d.number, 1, complete_answers())
        .await
        .unwrap();
    deposit(&stack, OWNER, d.number, d.version).await.unwrap();
    let number = d.number;
    let me = instructeur();
    let (mut landed, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let before = owners_view(&stack, number).await;
        let status_version = version_in_instruction(&stack, number).await;
        let (save, transition) = tokio::join!(
            update(
                &stack,
                OWNER,
                number,
                before.version,
                vec![set("titre", text(&format!("Tour {round}")))]
            ),
            stack
                .instruction
                .transition(&me, number, status_version, Command::PasserEnInstruction),
        );
        let view =
            transition.unwrap_or_else(|e| panic!("round {round}: the transition failed: {e}"));
        let frozen_at = view
            .traitements
            .iter()
            .rev()
            .find(|t| t.transition == "passer_en_instruction")
            .map(|t| t.content_version)
            .unwrap();
        match save {
            Ok(saved) => {
                landed += 1;
                assert!(
                    saved.version <= frozen_at,
                    "round {round}: a save committed after the freeze"
                );
            }
            Err(status) => {
                refused += 1;
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "round {round}: {status:?}"
                );
            }
        }
        let after = owners_view(&stack, number).await;
        assert_eq!(
            after.version, frozen_at,
            "round {round}: the content moved after the transition"
        );
        assert!(after.frozen, "round {round}: the dossier must be frozen");
        // And a save now is refused.
        let late = update(
            &stack,
            OWNER,
            number,
            after.version,
            vec![set("titre", text("Trop tard"))],
        )
        .await;
        assert_eq!(
            late.unwrap_err().code(),
            Code::FailedPrecondition,
            "round {round}"
        );
        // Back en construction for the next round.
        stack
            .instruction
            .transition(
                &me,
                number,
                view.row.version,
                Command::RepasserEnConstruction { message: None },
            )
            .await
            .unwrap();
    }
    println!("I1: {ROUNDS} rounds, {landed} saves landed before the freeze, {refused} refused");
    assert_eq!(landed + refused, ROUNDS);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// A hold nobody releases (instruction stopped between the freeze and its commit) is released once
/// old enough, since instruction has committed nothing newer; a hold whose transition did commit,
/// while forms has not heard of it yet, becomes the committed status instead — never an edit after
/// the passage en instruction.
#[tokio::test]
async fn a_stale_freeze_is_released_only_when_its_transition_never_committed() {
    use mst_forms::freeze::Resolved;
    use mst_proto::events as ev;
    use sea_orm::ConnectionTrait as _;

    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, "test-stale-freeze").await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, "test-stale-freeze").await;
    let d = update(&stack, OWNER, d.number, 1, complete_answers())
        .await
        .unwrap();
    let d = deposit(&stack, OWNER, d.number, d.version).await.unwrap();
    let number = d.number;

    // The instruction service froze the dossier, then stopped before committing.
    forms_internal(&stack)
        .await
        .freeze_dossier(as_(
            "instruction@services.mst.local",
            &[Role::System],
            pb::FreezeDossierRequest {
                number,
                operation_id: "transition-never-committed".into(),
                target_status: ev::DossierStatus::EnInstruction as i32,
                status_version: 3,
            },
        ))
        .await
        .unwrap();
    let patch = || vec![set("titre", text("Après la reprise"))];
    let err = update(&stack, OWNER, number, d.version, patch())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // A young hold is left alone (its transition may still commit within its lease).
    let young = stack
        .forms_freezes
        .resolve(Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(young, Resolved::default());
    // Old enough, and instruction has nothing newer: released, the promoteur edits again.
    let old = stack.forms_freezes.resolve(Duration::ZERO).await.unwrap();
    assert_eq!(
        old,
        Resolved {
            released: 1,
            ..Resolved::default()
        }
    );
    let d = update(&stack, OWNER, number, d.version, patch())
        .await
        .unwrap();

    // A transition that outlives its lease commits nothing and releases its hold.
    let me = instructeur();
    let status_version = version_in_instruction(&stack, number).await;
    let err = stack
        .instruction
        .clone()
        .with_freeze_lease(Duration::ZERO)
        .transition(&me, number, status_version, Command::PasserEnInstruction)
        .await
        .unwrap_err();
    assert!(
        matches!(err, mst_instruction::app::AppError::Unavailable(_)),
        "{err:?}"
    );
    let after = stack.instruction.dossier(&me, number).await.unwrap().row;
    assert_eq!(
        (after.status.as_str(), after.version),
        ("en_construction", status_version)
    );
    let d = update(&stack, OWNER, number, d.version, patch())
        .await
        .unwrap();

    // Now a transition that did commit: instruction passes it en instruction, but forms' mirror
    // lags behind (put back as it was before the event, holding the transition's freeze).
    let status_version = version_in_instruction(&stack, number).await;
    stack
        .instruction
        .transition(&me, number, status_version, Command::PasserEnInstruction)
        .await
        .unwrap();
    // (Once forms has mirrored the event, so that it does not arrive after the rewind.)
    mst_testkit::wait_until(Duration::from_secs(10), || async {
        (owners_view(&stack, number).await.status == ev::DossierStatus::EnInstruction as i32)
            .then_some(())
    })
    .await
    .unwrap();
    let db = stack.forms_freezes.forms().db();
    db.execute_unprepared(&format!(
        "UPDATE dossiers SET status = 'en_construction', status_version = {status_version}, \
         frozen_by = 'transition-committed', frozen_at = NULL WHERE number = {number}"
    ))
    .await
    .unwrap();
    let resolved = stack.forms_freezes.resolve(Duration::ZERO).await.unwrap();
    assert_eq!(
        resolved,
        Resolved {
            mirrored: 1,
            ..Resolved::default()
        }
    );
    let now = owners_view(&stack, number).await;
    assert_eq!(now.status, ev::DossierStatus::EnInstruction as i32);
    let err = update(&stack, OWNER, number, d.version, patch())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
