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

async fn forms_dossier(stack: &Stack, number: i64) -> pb::Dossier {
    forms(stack)
        .await
        .get_dossier(promoteur(OWNER, pb::GetDossierRequest { number }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap()
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
        let before = forms_dossier(&stack, number).await;
        let status_version = stack
            .instruction
            .dossier(&me, number)
            .await
            .unwrap()
            .row
            .version;
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
        let after = forms_dossier(&stack, number).await;
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
