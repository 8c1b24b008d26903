//! Tests of the workflow: the full transition table against an independent specification
//! (an explicit list of the 35 accepted cases plus the refusal rules), named cases for each
//! rule, an exhaustive exploration of the reachable states, and property tests over random
//! command sequences.

use std::collections::{BTreeSet, VecDeque};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::domain::error::ErrorCategory;
use crate::domain::table::{sample_context, sample_justificatif, transition_table};

use ActorKind as A;
use CommandKind as C;
use Status as S;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 8, 29, 9, 30, 0).unwrap()
}

fn open() -> Context {
    sample_context(now(), false)
}

fn closed() -> Context {
    sample_context(now(), true)
}

fn state(key: StateKey) -> DossierState {
    key.sample_state().unwrap()
}

fn plain(status: Status) -> DossierState {
    state(StateKey::plain(status))
}

fn archived(status: Status) -> DossierState {
    state(StateKey::archived(status))
}

fn pending_correction() -> DossierState {
    state(StateKey {
        status: S::EnConstruction,
        archived: false,
        correction_pending: true,
    })
}

fn owner() -> Actor {
    A::Owner.sample()
}

fn instructeur() -> Actor {
    A::InstructeurOfGroupe.sample()
}

/// Another instructeur of the groupe, who follows none of the sample states (the sample
/// instructeur follows those he passed en instruction).
fn colleague() -> Actor {
    Actor::Instructeur {
        email: String::from("collegue@cpam13.example"),
        of_groupe: true,
    }
}

fn system() -> Actor {
    A::System.sample()
}

fn motivation(text: &str) -> Motivation {
    Motivation::parse(text).unwrap()
}

fn message(text: &str) -> Message {
    Message::parse(text).unwrap()
}

fn status_change(transition: &Transition) -> &StatusChange {
    match &transition.event.kind {
        EventKind::StatusChanged(change) => change,
        other => panic!("expected a status change, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The specification, written independently of `apply`.
// ---------------------------------------------------------------------------------------------

/// When a case of the explicit list applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    Open,
    Closed,
}

impl When {
    fn holds(self, procedure_closed: bool) -> bool {
        match self {
            When::Always => true,
            When::Open => !procedure_closed,
            When::Closed => procedure_closed,
        }
    }
}

const BROUILLON: StateKey = StateKey::plain(S::Brouillon);
const CONSTRUCTION: StateKey = StateKey::plain(S::EnConstruction);
const CORRECTION: StateKey = StateKey {
    status: S::EnConstruction,
    archived: false,
    correction_pending: true,
};
const INSTRUCTION: StateKey = StateKey::plain(S::EnInstruction);
const ACCEPTE: StateKey = StateKey::plain(S::Accepte);
const REFUSE: StateKey = StateKey::plain(S::Refuse);
const SANS_SUITE: StateKey = StateKey::plain(S::SansSuite);
const ACCEPTE_ARCHIVED: StateKey = StateKey::archived(S::Accepte);
const REFUSE_ARCHIVED: StateKey = StateKey::archived(S::Refuse);
const SANS_SUITE_ARCHIVED: StateKey = StateKey::archived(S::SansSuite);

/// Every accepted (state, procedure, actor, command) case and the state it leads to — DESIGN.md
/// §3, issue 4 and the gRPC contract, line by line. Everything else is refused.
#[rustfmt::skip]
const ACCEPTED: &[(StateKey, When, ActorKind, CommandKind, StateKey)] = &[
    (BROUILLON,           When::Open,   A::Owner,               C::Deposer,                 CONSTRUCTION),
    (CORRECTION,          When::Always, A::Owner,               C::ResolveCorrection,       CONSTRUCTION),
    (CONSTRUCTION,        When::Always, A::InstructeurOfGroupe, C::PasserEnInstruction,     INSTRUCTION),
    (CONSTRUCTION,        When::Closed, A::System,              C::PasserEnInstructionAuto, INSTRUCTION),
    (CORRECTION,          When::Closed, A::System,              C::PasserEnInstructionAuto, INSTRUCTION),
    (INSTRUCTION,         When::Always, A::InstructeurOfGroupe, C::RepasserEnConstruction,  CONSTRUCTION),
    (INSTRUCTION,         When::Always, A::InstructeurOfGroupe, C::DemanderCorrection,      CORRECTION),
    (INSTRUCTION,         When::Always, A::InstructeurOfGroupe, C::Accepter,                ACCEPTE),
    (INSTRUCTION,         When::Always, A::InstructeurOfGroupe, C::Refuser,                 REFUSE),
    (INSTRUCTION,         When::Always, A::InstructeurOfGroupe, C::ClasserSansSuite,        SANS_SUITE),
    (ACCEPTE,             When::Always, A::InstructeurOfGroupe, C::RepasserEnInstruction,   INSTRUCTION),
    (REFUSE,              When::Always, A::InstructeurOfGroupe, C::RepasserEnInstruction,   INSTRUCTION),
    (SANS_SUITE,          When::Always, A::InstructeurOfGroupe, C::RepasserEnInstruction,   INSTRUCTION),
    (ACCEPTE,             When::Always, A::InstructeurOfGroupe, C::Archive,                 ACCEPTE_ARCHIVED),
    (REFUSE,              When::Always, A::InstructeurOfGroupe, C::Archive,                 REFUSE_ARCHIVED),
    (SANS_SUITE,          When::Always, A::InstructeurOfGroupe, C::Archive,                 SANS_SUITE_ARCHIVED),
    (ACCEPTE_ARCHIVED,    When::Always, A::InstructeurOfGroupe, C::Unarchive,               ACCEPTE),
    (REFUSE_ARCHIVED,     When::Always, A::InstructeurOfGroupe, C::Unarchive,               REFUSE),
    (SANS_SUITE_ARCHIVED, When::Always, A::InstructeurOfGroupe, C::Unarchive,               SANS_SUITE),
];

/// Where the explicit list sends a case; `None` when it is refused.
fn specified_target(
    key: StateKey,
    procedure_closed: bool,
    actor: ActorKind,
    command: CommandKind,
) -> Option<StateKey> {
    ACCEPTED
        .iter()
        .find(|(from, when, who, what, _)| {
            *from == key && when.holds(procedure_closed) && *who == actor && *what == command
        })
        .map(|(_, _, _, _, to)| *to)
}

/// The refusal of a case the list does not accept, by the contract's rules: role, then
/// visibility, then state.
fn specified_refusal(
    key: StateKey,
    procedure_closed: bool,
    actor: ActorKind,
    command: CommandKind,
) -> TransitionError {
    let role_ok = match command {
        C::Deposer | C::ResolveCorrection => actor == A::Owner,
        C::PasserEnInstructionAuto => actor == A::System,
        _ => matches!(actor, A::InstructeurOfGroupe | A::InstructeurOtherGroupe),
    };
    if !role_ok {
        return TransitionError::Forbidden;
    }
    let instructeur_command = !matches!(
        command,
        C::Deposer | C::ResolveCorrection | C::PasserEnInstructionAuto
    );
    if instructeur_command && (actor == A::InstructeurOtherGroupe || key.status == S::Brouillon) {
        return TransitionError::NotFound;
    }
    let current = key.status;
    let invalid = TransitionError::InvalidTransition { current, command };
    match command {
        C::Deposer if current == S::Brouillon => {
            assert!(procedure_closed, "an open deposit is accepted");
            TransitionError::ProcedureClosed { current }
        }
        C::PasserEnInstruction if key.correction_pending => {
            TransitionError::CorrectionPending { current }
        }
        C::PasserEnInstructionAuto if current == S::EnConstruction => {
            TransitionError::ClosingDateNotReached { current }
        }
        C::RepasserEnInstruction if current.is_decided() => {
            TransitionError::Archived { current, command }
        }
        C::Archive if current.is_decided() => TransitionError::Archived { current, command },
        C::Archive => TransitionError::NotDecided { current },
        C::Unarchive => TransitionError::NotArchived { current },
        _ => invalid,
    }
}

/// The event an accepted sample command must yield.
fn specified_event(before: &DossierState, command: CommandKind, after: StateKey) -> EventKind {
    let Some(transition) = command.transition() else {
        return match command {
            C::ResolveCorrection => EventKind::CorrectionResolved,
            C::Archive => EventKind::Archived {
                status: before.status(),
            },
            C::Unarchive => EventKind::Unarchived {
                status: before.status(),
            },
            _ => unreachable!("{command} is a transition"),
        };
    };
    let sample_message = Some(Message::sample().into_string());
    let sample_motivation = Some(Motivation::sample().into_string());
    EventKind::StatusChanged(StatusChange {
        from: before.status(),
        to: after.status,
        transition,
        motivation: match command {
            C::RepasserEnConstruction | C::DemanderCorrection => sample_message,
            C::Refuser | C::ClasserSansSuite => sample_motivation,
            _ => None,
        },
        justificatif: (command == C::Refuser).then(sample_justificatif),
        correction_reason: (command == C::DemanderCorrection)
            .then_some(CorrectionReason::Incomplete),
    })
}

/// Checks one outcome of `apply` against the specification; shared by the table test and the
/// property tests.
fn check_against_specification(
    before: &DossierState,
    procedure_closed: bool,
    actor: &Actor,
    command: CommandKind,
    outcome: &Result<Transition, TransitionError>,
) -> Result<(), String> {
    let key = before.key();
    let case = format!(
        "{key} × {} × {} × {command}",
        if procedure_closed { "closed" } else { "open" },
        actor.kind()
    );
    match (
        specified_target(key, procedure_closed, actor.kind(), command),
        outcome,
    ) {
        (Some(target), Ok(transition)) => {
            let after = &transition.state;
            if after.key() != target {
                return Err(format!("{case}: reached {} not {target}", after.key()));
            }
            if after.version() != before.version() + 1
                || transition.event.version != after.version()
            {
                return Err(format!("{case}: version not incremented by one"));
            }
            if transition.event.actor != *actor {
                return Err(format!("{case}: wrong actor in the event"));
            }
            let mut followers = before.followers().clone();
            if command == C::PasserEnInstruction {
                let newly = followers.insert(actor.email().to_owned());
                let expected = newly.then(|| actor.email().to_owned());
                if transition.auto_follow != expected {
                    return Err(format!("{case}: auto_follow {:?}", transition.auto_follow));
                }
            } else if transition.auto_follow.is_some() {
                return Err(format!("{case}: unexpected auto_follow"));
            }
            if *after.followers() != followers {
                return Err(format!("{case}: followers changed"));
            }
            Ok(())
        }
        (Some(target), Err(err)) => Err(format!("{case}: refused ({err}) instead of → {target}")),
        (None, Ok(transition)) => Err(format!(
            "{case}: accepted (→ {}) but should be refused",
            transition.state.key()
        )),
        (None, Err(err)) => {
            let expected = specified_refusal(key, procedure_closed, actor.kind(), command);
            if *err == expected {
                Ok(())
            } else {
                Err(format!(
                    "{case}: refused with {err:?}, expected {expected:?}"
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The full table.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_table_has_one_row_per_state_procedure_actor_and_command() {
    let rows: Vec<_> = transition_table(now()).collect();
    assert_eq!(rows.len(), 10 * 2 * 8 * 12);
    let cases: BTreeSet<_> = rows
        .iter()
        .map(|row| (row.key, row.procedure_closed, row.actor, row.command))
        .collect();
    assert_eq!(cases.len(), rows.len(), "no case twice");
}

#[test]
fn every_row_of_the_table_matches_the_specification() {
    let mut failures = Vec::new();
    for row in transition_table(now()) {
        assert_eq!(row.before.key(), row.key);
        if let Err(failure) = check_against_specification(
            &row.before,
            row.procedure_closed,
            &row.actor.sample(),
            row.command,
            &row.outcome,
        ) {
            failures.push(failure);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn exactly_the_35_specified_cases_are_accepted() {
    let accepted: Vec<_> = transition_table(now())
        .filter(|row| row.outcome.is_ok())
        .map(|row| (row.key, row.procedure_closed, row.actor, row.command))
        .collect();
    // 19 listed cases: the deposit (open procedure only), the automatic passage from two keys
    // (closed only), and 16 cases whatever the closing date, counted once per procedure state.
    assert_eq!(ACCEPTED.len(), 19);
    assert_eq!(accepted.len(), 1 + 2 + 16 * 2);
    let listed: BTreeSet<_> = accepted
        .iter()
        .map(|(key, _, actor, command)| (*key, *actor, *command))
        .collect();
    assert_eq!(listed.len(), ACCEPTED.len());
}

#[test]
fn every_accepted_row_yields_exactly_the_specified_event() {
    for row in transition_table(now()) {
        let Ok(transition) = &row.outcome else {
            continue;
        };
        let expected = specified_event(&row.before, row.command, transition.state.key());
        assert_eq!(
            transition.event.kind, expected,
            "{} × {} × {}",
            row.key, row.actor, row.command
        );
        assert_eq!(transition.event.at, now());
        assert_eq!(transition.event.version, row.before.version() + 1);
    }
}

#[test]
fn exactly_the_commands_that_end_the_promoteurs_editing_have_forms_freeze_first() {
    let ending: BTreeSet<_> = transition_table(now())
        .filter(|row| {
            row.outcome
                .as_ref()
                .is_ok_and(|t| !row.key.status.is_frozen() && t.state.status().is_frozen())
        })
        .map(|row| row.command)
        .collect();
    let freezing: BTreeSet<_> = CommandKind::ALL
        .into_iter()
        .filter(|c| c.freezes_forms())
        .collect();
    assert_eq!(
        ending,
        BTreeSet::from([C::PasserEnInstruction, C::PasserEnInstructionAuto])
    );
    assert_eq!(freezing, ending);
}

#[test]
fn every_refused_row_leaves_the_dossier_as_it_was() {
    for row in transition_table(now()) {
        if row.outcome.is_err() {
            // The borrowed state is what the next command sees: same key, version, followers.
            assert_eq!(row.before, row.key.sample_state().unwrap());
        }
    }
}

#[test]
fn every_refusal_has_a_reason_a_category_and_a_french_message() {
    for row in transition_table(now()) {
        let Err(err) = row.outcome else { continue };
        let reason = err.reason();
        assert!(
            !reason.is_empty() && reason.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{reason}"
        );
        let message = err.message_fr();
        let numbered = err.message_fr_for(42);
        match err.current_status() {
            Some(current) => {
                assert_eq!(err.category(), ErrorCategory::FailedPrecondition);
                assert_eq!(current, row.key.status);
                let label = current.label_fr();
                assert!(message.starts_with("Le dossier est "), "{message}");
                assert!(message.contains(label), "{message} lacks « {label} »");
                assert!(numbered.starts_with("Le dossier n° 42 est "), "{numbered}");
            }
            None => {
                assert_ne!(err.category(), ErrorCategory::FailedPrecondition);
                // Forbidden and not found must not reveal the state.
                for status in Status::ALL {
                    assert!(!message.contains(status.label_fr()), "{message}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// States.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_new_brouillon_is_at_version_one_with_no_follower() {
    let brouillon = DossierState::brouillon();
    assert_eq!(brouillon.key(), StateKey::plain(S::Brouillon));
    assert_eq!(brouillon.version(), INITIAL_VERSION);
    assert_eq!(INITIAL_VERSION, 1);
    assert!(brouillon.followers().is_empty());
}

#[test]
fn every_consistent_key_is_reached_along_its_path_and_no_other_key_has_one() {
    for status in Status::ALL {
        for archived in [false, true] {
            for correction_pending in [false, true] {
                let key = StateKey {
                    status,
                    archived,
                    correction_pending,
                };
                assert_eq!(key.is_consistent(), StateKey::ALL.contains(&key), "{key}");
                match key.path_from_brouillon() {
                    Some(path) => {
                        let sample = key.sample_state().unwrap();
                        assert_eq!(sample.key(), key);
                        assert_eq!(sample.version(), INITIAL_VERSION + path.len() as i64);
                    }
                    None => {
                        assert!(!key.is_consistent(), "{key}");
                        assert_eq!(key.sample_state(), None);
                    }
                }
            }
        }
    }
}

#[test]
fn restore_accepts_exactly_the_consistent_keys() {
    for status in Status::ALL {
        for archived in [false, true] {
            for correction_pending in [false, true] {
                let key = StateKey {
                    status,
                    archived,
                    correction_pending,
                };
                let restored =
                    DossierState::restore(status, archived, correction_pending, 7, BTreeSet::new());
                assert_eq!(restored.is_ok(), key.is_consistent(), "{key}");
            }
        }
    }
}

#[test]
fn restore_names_what_is_inconsistent() {
    assert_eq!(
        DossierState::restore(S::EnInstruction, true, false, 3, BTreeSet::new()),
        Err(InconsistentState::ArchivedUndecided(S::EnInstruction))
    );
    assert_eq!(
        DossierState::restore(S::EnInstruction, false, true, 3, BTreeSet::new()),
        Err(InconsistentState::CorrectionPendingOutsideConstruction(
            S::EnInstruction
        ))
    );
    assert_eq!(
        DossierState::restore(S::Brouillon, false, false, 0, BTreeSet::new()),
        Err(InconsistentState::VersionBelowInitial(0))
    );
    assert_eq!(
        DossierState::restore(
            S::Brouillon,
            false,
            false,
            1,
            BTreeSet::from([String::from("a@b.example")])
        ),
        Err(InconsistentState::FollowedBrouillon)
    );
    let restored = DossierState::restore(
        S::Accepte,
        true,
        false,
        9,
        BTreeSet::from([String::from("a@b.example")]),
    )
    .unwrap();
    assert_eq!(restored.status(), S::Accepte);
    assert!(restored.is_archived());
    assert!(!restored.is_correction_pending());
    assert_eq!(restored.version(), 9);
    assert!(restored.is_followed_by("a@b.example"));
}

/// Breadth-first over everything any actor can do from a brouillon, procedure open or closed:
/// the reachable keys are exactly the ten consistent ones.
#[test]
fn the_reachable_states_are_exactly_the_consistent_ones() {
    let mut seen = BTreeSet::from([DossierState::brouillon().key()]);
    let mut queue = VecDeque::from([DossierState::brouillon()]);
    while let Some(current) = queue.pop_front() {
        for procedure_closed in [false, true] {
            for actor in ActorKind::ALL {
                for command in CommandKind::ALL {
                    let context = sample_context(now(), procedure_closed);
                    if let Ok(t) = apply(&current, &actor.sample(), command.sample(), context) {
                        let key = t.state.key();
                        assert!(key.is_consistent(), "{key} reached");
                        if seen.insert(key) {
                            queue.push_back(t.state);
                        }
                    }
                }
            }
        }
    }
    assert_eq!(seen, StateKey::ALL.into_iter().collect());
}

// ---------------------------------------------------------------------------------------------
// Deposit and correction resolution.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_owner_deposits_a_brouillon() {
    let brouillon = DossierState::brouillon();
    let t = apply(&brouillon, &owner(), Command::Deposer, open()).unwrap();
    assert_eq!(t.state.status(), S::EnConstruction);
    assert_eq!(t.state.version(), 2);
    assert_eq!(
        t.event,
        WorkflowEvent {
            actor: owner(),
            at: now(),
            version: 2,
            kind: EventKind::StatusChanged(StatusChange {
                from: S::Brouillon,
                to: S::EnConstruction,
                transition: TransitionKind::Deposer,
                motivation: None,
                justificatif: None,
                correction_reason: None,
            }),
        }
    );
    assert_eq!(t.auto_follow, None);
}

#[test]
fn a_deposit_before_the_closing_date_is_accepted() {
    let context = Context {
        now: now(),
        closing_at: Some(now() + TimeDelta::seconds(1)),
    };
    assert!(
        apply(
            &DossierState::brouillon(),
            &owner(),
            Command::Deposer,
            context
        )
        .is_ok()
    );
}

#[test]
fn a_deposit_at_or_after_the_closing_date_is_refused_as_procedure_closed() {
    for closing_at in [now(), now() - TimeDelta::days(30)] {
        let context = Context {
            now: now(),
            closing_at: Some(closing_at),
        };
        let err = apply(
            &DossierState::brouillon(),
            &owner(),
            Command::Deposer,
            context,
        )
        .unwrap_err();
        assert_eq!(
            err,
            TransitionError::ProcedureClosed {
                current: S::Brouillon
            }
        );
        assert_eq!(err.reason(), "PROCEDURE_CLOSED");
        assert_eq!(
            err.message_fr_for(42),
            "Le dossier n° 42 est en brouillon et la démarche est close : il ne peut plus être \
             déposé"
        );
    }
}

#[test]
fn only_the_owner_deposits() {
    for actor in ActorKind::ALL.into_iter().filter(|a| *a != A::Owner) {
        assert_eq!(
            apply(
                &DossierState::brouillon(),
                &actor.sample(),
                Command::Deposer,
                open()
            ),
            Err(TransitionError::Forbidden),
            "{actor}"
        );
    }
}

#[test]
fn depositing_a_deposited_dossier_is_an_invalid_transition_naming_its_state() {
    let err = apply(&plain(S::EnInstruction), &owner(), Command::Deposer, open()).unwrap_err();
    assert_eq!(
        err,
        TransitionError::InvalidTransition {
            current: S::EnInstruction,
            command: C::Deposer
        }
    );
    assert_eq!(err.reason(), "INVALID_TRANSITION");
    assert_eq!(err.category(), ErrorCategory::FailedPrecondition);
    assert_eq!(err.current_status(), Some(S::EnInstruction));
    assert_eq!(
        err.message_fr(),
        "Le dossier est en instruction : il ne peut pas être déposé"
    );
    assert_eq!(
        err.message_fr_for(42),
        "Le dossier n° 42 est en instruction : il ne peut pas être déposé"
    );
}

#[test]
fn record_deposit_resolves_a_pending_correction_and_deposits_anything_else() {
    assert_eq!(
        pending_correction().deposit_command(),
        Command::ResolveCorrection
    );
    for key in StateKey::ALL.into_iter().filter(|k| *k != CORRECTION) {
        assert_eq!(state(key).deposit_command(), Command::Deposer, "{key}");
    }
    // en_construction without a pending correction: INVALID_TRANSITION naming the state.
    let constructing = plain(S::EnConstruction);
    let err = apply(
        &constructing,
        &owner(),
        constructing.deposit_command(),
        open(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "INVALID_TRANSITION");
    assert_eq!(err.current_status(), Some(S::EnConstruction));
}

#[test]
fn resubmitting_after_a_correction_clears_it_and_keeps_the_dossier_en_construction() {
    let before = pending_correction();
    let t = apply(&before, &owner(), Command::ResolveCorrection, open()).unwrap();
    assert_eq!(t.state.key(), CONSTRUCTION);
    assert_eq!(t.state.version(), before.version() + 1);
    assert_eq!(t.event.kind, EventKind::CorrectionResolved);
    assert_eq!(t.event.version, t.state.version());
    // The instructeur may pass it en instruction again.
    assert!(
        apply(
            &t.state,
            &instructeur(),
            Command::PasserEnInstruction,
            open()
        )
        .is_ok()
    );
}

#[test]
fn a_correction_can_be_resolved_after_the_closing_date() {
    assert!(
        apply(
            &pending_correction(),
            &owner(),
            Command::ResolveCorrection,
            closed()
        )
        .is_ok()
    );
}

#[test]
fn resolving_without_a_pending_correction_is_an_invalid_transition() {
    let err = apply(
        &plain(S::EnConstruction),
        &owner(),
        Command::ResolveCorrection,
        open(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TransitionError::InvalidTransition {
            current: S::EnConstruction,
            command: C::ResolveCorrection
        }
    );
    assert_eq!(
        err.message_fr(),
        "Le dossier est en construction et aucune correction n'est demandée : il ne peut pas \
         être redéposé"
    );
}

#[test]
fn an_invitee_can_neither_deposit_nor_resubmit() {
    let invitee = A::Invitee.sample();
    assert_eq!(
        apply(
            &DossierState::brouillon(),
            &invitee,
            Command::Deposer,
            open()
        ),
        Err(TransitionError::Forbidden)
    );
    assert_eq!(
        apply(
            &pending_correction(),
            &invitee,
            Command::ResolveCorrection,
            open()
        ),
        Err(TransitionError::Forbidden)
    );
}

// ---------------------------------------------------------------------------------------------
// Passage en instruction.
// ---------------------------------------------------------------------------------------------

#[test]
fn passer_en_instruction_auto_follows_the_instructeur() {
    let before = plain(S::EnConstruction);
    assert!(before.followers().is_empty());
    let t = apply(
        &before,
        &instructeur(),
        Command::PasserEnInstruction,
        open(),
    )
    .unwrap();
    assert_eq!(t.state.status(), S::EnInstruction);
    let email = instructeur().email().to_owned();
    assert_eq!(t.auto_follow, Some(email.clone()));
    assert!(t.state.is_followed_by(&email));
    assert_eq!(
        status_change(&t).transition,
        TransitionKind::PasserEnInstruction
    );
}

#[test]
fn an_instructeur_who_already_follows_is_not_followed_twice() {
    let followed = follow(&plain(S::EnConstruction), &instructeur())
        .unwrap()
        .state;
    let t = apply(
        &followed,
        &instructeur(),
        Command::PasserEnInstruction,
        open(),
    )
    .unwrap();
    assert_eq!(t.auto_follow, None);
    assert_eq!(t.state.followers().len(), 1);
}

#[test]
fn passer_en_instruction_is_refused_while_a_correction_is_pending() {
    let err = apply(
        &pending_correction(),
        &instructeur(),
        Command::PasserEnInstruction,
        open(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TransitionError::CorrectionPending {
            current: S::EnConstruction
        }
    );
    assert_eq!(err.reason(), "CORRECTION_PENDING");
    assert_eq!(err.category(), ErrorCategory::FailedPrecondition);
    assert_eq!(
        err.message_fr_for(7),
        "Le dossier n° 7 est en construction avec une demande de correction en attente : il ne \
         pourra passer en instruction qu'une fois corrigé et redéposé par le demandeur"
    );
}

#[test]
fn the_automatic_passage_moves_an_en_construction_dossier_at_the_closing_date() {
    let t = apply(
        &plain(S::EnConstruction),
        &system(),
        Command::PasserEnInstructionAuto,
        closed(),
    )
    .unwrap();
    assert_eq!(t.state.key(), INSTRUCTION);
    assert_eq!(t.event.actor, system());
    assert_eq!(
        status_change(&t).transition,
        TransitionKind::PasserEnInstructionAuto
    );
    assert_eq!(t.auto_follow, None, "the system follows nothing");
    assert!(t.state.followers().is_empty());
}

#[test]
fn the_automatic_passage_ignores_a_pending_correction_and_clears_it() {
    let t = apply(
        &pending_correction(),
        &system(),
        Command::PasserEnInstructionAuto,
        closed(),
    )
    .unwrap();
    assert_eq!(t.state.key(), INSTRUCTION);
    assert!(!t.state.is_correction_pending());
}

#[test]
fn the_automatic_passage_waits_for_the_closing_date() {
    let before = plain(S::EnConstruction);
    let not_yet = Context {
        now: now(),
        closing_at: Some(now() + TimeDelta::minutes(1)),
    };
    for context in [open(), not_yet] {
        let err = apply(
            &before,
            &system(),
            Command::PasserEnInstructionAuto,
            context,
        )
        .unwrap_err();
        assert_eq!(
            err,
            TransitionError::ClosingDateNotReached {
                current: S::EnConstruction
            }
        );
        assert_eq!(err.reason(), "CLOSING_DATE_NOT_REACHED");
    }
}

#[test]
fn only_the_system_passes_a_dossier_automatically() {
    for actor in ActorKind::ALL.into_iter().filter(|a| *a != A::System) {
        assert_eq!(
            apply(
                &plain(S::EnConstruction),
                &actor.sample(),
                Command::PasserEnInstructionAuto,
                closed()
            ),
            Err(TransitionError::Forbidden),
            "{actor}"
        );
    }
}

#[test]
fn the_closing_instant_itself_counts_as_closed() {
    let at = now();
    let context = |closing_at| Context {
        now: at,
        closing_at,
    };
    assert!(!context(None).procedure_closed());
    assert!(!context(Some(at + TimeDelta::nanoseconds(1))).procedure_closed());
    assert!(context(Some(at)).procedure_closed());
    assert!(context(Some(at - TimeDelta::days(1))).procedure_closed());
}

// ---------------------------------------------------------------------------------------------
// From en instruction.
// ---------------------------------------------------------------------------------------------

#[test]
fn repasser_en_construction_carries_the_optional_message() {
    let before = plain(S::EnInstruction);
    let with = apply(
        &before,
        &instructeur(),
        Command::RepasserEnConstruction {
            message: Some(message("Merci de compléter le budget.")),
        },
        open(),
    )
    .unwrap();
    assert_eq!(with.state.key(), CONSTRUCTION);
    assert_eq!(
        status_change(&with).motivation.as_deref(),
        Some("Merci de compléter le budget.")
    );
    let without = apply(
        &before,
        &instructeur(),
        Command::RepasserEnConstruction { message: None },
        open(),
    )
    .unwrap();
    assert_eq!(status_change(&without).motivation, None);
}

#[test]
fn demander_correction_returns_the_dossier_en_construction_with_a_pending_correction() {
    let before = plain(S::EnInstruction);
    let t = apply(
        &before,
        &instructeur(),
        Command::DemanderCorrection {
            message: message("Le SIRET ne correspond pas à la structure."),
            reason: CorrectionReason::Incorrect,
        },
        open(),
    )
    .unwrap();
    assert_eq!(t.state.key(), CORRECTION);
    assert_eq!(
        t.event.kind,
        EventKind::StatusChanged(StatusChange {
            from: S::EnInstruction,
            to: S::EnConstruction,
            transition: TransitionKind::DemanderCorrection,
            motivation: Some(String::from("Le SIRET ne correspond pas à la structure.")),
            justificatif: None,
            correction_reason: Some(CorrectionReason::Incorrect),
        })
    );
}

#[test]
fn a_correction_is_asked_only_of_a_dossier_en_instruction() {
    for key in StateKey::ALL.into_iter().filter(|k| *k != INSTRUCTION) {
        let err = apply(
            &state(key),
            &instructeur(),
            C::DemanderCorrection.sample(),
            open(),
        )
        .unwrap_err();
        let expected = if key.status == S::Brouillon {
            TransitionError::NotFound
        } else {
            TransitionError::InvalidTransition {
                current: key.status,
                command: C::DemanderCorrection,
            }
        };
        assert_eq!(err, expected, "{key}");
    }
}

#[test]
fn the_decisions_carry_their_motivation_and_justificatif() {
    let before = plain(S::EnInstruction);
    let justificatif = sample_justificatif();
    let cases = [
        (
            Command::Accepter {
                motivation: None,
                justificatif: None,
            },
            S::Accepte,
            TransitionKind::Accepter,
            None,
            None,
        ),
        (
            Command::Accepter {
                motivation: Some(motivation("Projet conforme.")),
                justificatif: Some(justificatif.clone()),
            },
            S::Accepte,
            TransitionKind::Accepter,
            Some("Projet conforme."),
            Some(justificatif.clone()),
        ),
        (
            Command::Refuser {
                motivation: motivation("Hors périmètre."),
                justificatif: None,
            },
            S::Refuse,
            TransitionKind::Refuser,
            Some("Hors périmètre."),
            None,
        ),
        (
            Command::ClasserSansSuite {
                motivation: motivation("Le porteur a renoncé."),
                justificatif: Some(justificatif.clone()),
            },
            S::SansSuite,
            TransitionKind::ClasserSansSuite,
            Some("Le porteur a renoncé."),
            Some(justificatif),
        ),
    ];
    for (command, to, transition, motivation, justificatif) in cases {
        let t = apply(&before, &instructeur(), command, open()).unwrap();
        assert_eq!(t.state.key(), StateKey::plain(to));
        assert_eq!(
            *status_change(&t),
            StatusChange {
                from: S::EnInstruction,
                to,
                transition,
                motivation: motivation.map(String::from),
                justificatif,
                correction_reason: None,
            }
        );
    }
}

#[test]
fn a_decision_needs_a_dossier_en_instruction() {
    for command in [C::Accepter, C::Refuser, C::ClasserSansSuite] {
        let err = apply(
            &plain(S::EnConstruction),
            &instructeur(),
            command.sample(),
            open(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            TransitionError::InvalidTransition {
                current: S::EnConstruction,
                command
            }
        );
    }
    let err = apply(
        &plain(S::Refuse),
        &instructeur(),
        C::Accepter.sample(),
        open(),
    )
    .unwrap_err();
    assert_eq!(
        err.message_fr(),
        "Le dossier est refusé : il ne peut pas être accepté"
    );
}

// ---------------------------------------------------------------------------------------------
// Decided dossiers, archives.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_decided_dossier_accepts_nothing_but_reopening_archiving_and_unarchiving() {
    for key in StateKey::ALL.into_iter().filter(|k| k.status.is_decided()) {
        for command in CommandKind::ALL {
            for procedure_closed in [false, true] {
                let outcome = apply(
                    &state(key),
                    &instructeur(),
                    command.sample(),
                    sample_context(now(), procedure_closed),
                );
                if outcome.is_ok() {
                    assert!(
                        matches!(
                            command,
                            C::RepasserEnInstruction | C::Archive | C::Unarchive
                        ),
                        "{key} accepted {command}"
                    );
                }
            }
        }
    }
}

#[test]
fn repasser_en_instruction_reopens_a_decision_with_an_optional_message() {
    for status in [S::Accepte, S::Refuse, S::SansSuite] {
        let t = apply(
            &plain(status),
            &instructeur(),
            Command::RepasserEnInstruction {
                message: Some(message("Nouvelle pièce reçue.")),
            },
            open(),
        )
        .unwrap();
        assert_eq!(t.state.key(), INSTRUCTION);
        let change = status_change(&t);
        assert_eq!(change.from, status);
        assert_eq!(change.transition, TransitionKind::RepasserEnInstruction);
        assert_eq!(change.motivation.as_deref(), Some("Nouvelle pièce reçue."));
    }
}

#[test]
fn repasser_en_instruction_needs_a_decided_dossier() {
    let err = apply(
        &plain(S::EnInstruction),
        &instructeur(),
        C::RepasserEnInstruction.sample(),
        open(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "INVALID_TRANSITION");
    assert_eq!(
        err.message_fr(),
        "Le dossier est en instruction : il ne peut pas repasser en instruction"
    );
}

#[test]
fn an_archived_dossier_must_be_unarchived_before_repasser_en_instruction() {
    let err = apply(
        &archived(S::Accepte),
        &instructeur(),
        C::RepasserEnInstruction.sample(),
        open(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TransitionError::Archived {
            current: S::Accepte,
            command: C::RepasserEnInstruction
        }
    );
    assert_eq!(err.reason(), "ARCHIVED");
    assert_eq!(
        err.message_fr(),
        "Le dossier est accepté et archivé : il doit être désarchivé avant de repasser en \
         instruction"
    );
    let unarchived = apply(
        &archived(S::Accepte),
        &instructeur(),
        Command::Unarchive,
        open(),
    )
    .unwrap()
    .state;
    assert!(
        apply(
            &unarchived,
            &instructeur(),
            C::RepasserEnInstruction.sample(),
            open()
        )
        .is_ok()
    );
}

#[test]
fn archiving_flags_a_decided_dossier_and_keeps_its_status() {
    for status in [S::Accepte, S::Refuse, S::SansSuite] {
        let before = plain(status);
        let t = apply(&before, &instructeur(), Command::Archive, open()).unwrap();
        assert_eq!(t.state.key(), StateKey::archived(status));
        assert_eq!(t.event.kind, EventKind::Archived { status });
        assert_eq!(t.event.version, before.version() + 1);
        let back = apply(&t.state, &instructeur(), Command::Unarchive, open()).unwrap();
        assert_eq!(back.state.key(), StateKey::plain(status));
        assert_eq!(back.event.kind, EventKind::Unarchived { status });
        assert_eq!(back.state.version(), before.version() + 2);
    }
}

#[test]
fn archiving_an_archived_dossier_is_refused_as_archived() {
    let err = apply(
        &archived(S::SansSuite),
        &instructeur(),
        Command::Archive,
        open(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        TransitionError::Archived {
            current: S::SansSuite,
            command: C::Archive
        }
    );
    assert_eq!(
        err.message_fr(),
        "Le dossier est classé sans suite et déjà archivé"
    );
}

#[test]
fn only_decided_dossiers_are_archived() {
    for status in [S::EnConstruction, S::EnInstruction] {
        let err = apply(&plain(status), &instructeur(), Command::Archive, open()).unwrap_err();
        assert_eq!(err, TransitionError::NotDecided { current: status });
        assert_eq!(err.reason(), "NOT_DECIDED");
    }
    let err = apply(
        &plain(S::EnInstruction),
        &instructeur(),
        Command::Archive,
        open(),
    )
    .unwrap_err();
    assert_eq!(
        err.message_fr(),
        "Le dossier est en instruction : seul un dossier accepté, refusé ou classé sans suite \
         peut être archivé"
    );
}

#[test]
fn unarchiving_a_dossier_that_is_not_archived_is_refused() {
    let err = apply(
        &plain(S::Refuse),
        &instructeur(),
        Command::Unarchive,
        open(),
    )
    .unwrap_err();
    assert_eq!(err, TransitionError::NotArchived { current: S::Refuse });
    assert_eq!(err.reason(), "NOT_ARCHIVED");
    assert_eq!(
        err.message_fr(),
        "Le dossier est refusé et n'est pas archivé : il ne peut pas être désarchivé"
    );
}

// ---------------------------------------------------------------------------------------------
// Authorization (invariant I4).
// ---------------------------------------------------------------------------------------------

#[test]
fn an_instructeur_never_sees_a_brouillon() {
    let brouillon = DossierState::brouillon();
    for actor in [A::InstructeurOfGroupe, A::InstructeurOtherGroupe] {
        for command in CommandKind::ALL
            .into_iter()
            .filter(|c| c.performer() == Performer::Instructeur)
        {
            assert_eq!(
                apply(&brouillon, &actor.sample(), command.sample(), open()),
                Err(TransitionError::NotFound),
                "{actor} {command}"
            );
        }
        assert_eq!(
            follow(&brouillon, &actor.sample()),
            Err(TransitionError::NotFound)
        );
    }
}

#[test]
fn an_instructeur_of_another_groupe_does_not_see_the_dossier() {
    let other = A::InstructeurOtherGroupe.sample();
    for key in StateKey::ALL {
        for command in CommandKind::ALL
            .into_iter()
            .filter(|c| c.performer() == Performer::Instructeur)
        {
            let err = apply(&state(key), &other, command.sample(), open()).unwrap_err();
            assert_eq!(err, TransitionError::NotFound, "{key} {command}");
            assert_eq!(err.category(), ErrorCategory::NotFound);
            assert_eq!(err.message_fr_for(13), "Le dossier n° 13 est introuvable");
        }
    }
}

#[test]
fn undeclared_instructeurs_admins_promoteurs_and_the_system_cannot_instruct() {
    let denied = [
        A::Owner,
        A::Invitee,
        A::UndeclaredInstructeur,
        A::Admin,
        A::System,
        A::Other,
    ];
    for key in StateKey::ALL {
        for actor in denied {
            for command in CommandKind::ALL
                .into_iter()
                .filter(|c| c.performer() == Performer::Instructeur)
            {
                let err =
                    apply(&state(key), &actor.sample(), command.sample(), open()).unwrap_err();
                assert_eq!(err, TransitionError::Forbidden, "{key} {actor} {command}");
                assert_eq!(err.category(), ErrorCategory::PermissionDenied);
                assert_eq!(err.reason(), "FORBIDDEN");
                assert_eq!(
                    err.message_fr(),
                    "Vous n'êtes pas autorisé à effectuer cette action sur ce dossier"
                );
            }
        }
    }
}

#[test]
fn a_refused_role_is_reported_before_the_state() {
    // A promoteur trying to archive an en_construction dossier learns that he may not, not
    // that the dossier is not decided.
    assert_eq!(
        apply(
            &plain(S::EnConstruction),
            &owner(),
            Command::Archive,
            open()
        ),
        Err(TransitionError::Forbidden)
    );
    // An instructeur of another groupe learns nothing of a pending correction.
    assert_eq!(
        apply(
            &pending_correction(),
            &A::InstructeurOtherGroupe.sample(),
            Command::PasserEnInstruction,
            open()
        ),
        Err(TransitionError::NotFound)
    );
}

// ---------------------------------------------------------------------------------------------
// Follows.
// ---------------------------------------------------------------------------------------------

#[test]
fn following_is_idempotent_and_leaves_the_version_alone() {
    let before = plain(S::EnInstruction);
    let first = follow(&before, &colleague()).unwrap();
    assert!(first.changed);
    assert_eq!(first.state.version(), before.version());
    assert_eq!(first.state.key(), before.key());
    assert!(first.state.is_followed_by(colleague().email()));
    let again = follow(&first.state, &colleague()).unwrap();
    assert!(!again.changed);
    assert_eq!(again.state, first.state);
}

#[test]
fn several_instructeurs_follow_and_each_unfollows_only_himself() {
    let colleague = colleague();
    let both = follow(
        &follow(&plain(S::EnConstruction), &instructeur())
            .unwrap()
            .state,
        &colleague,
    )
    .unwrap()
    .state;
    assert_eq!(both.followers().len(), 2);
    let left = unfollow(&both, &colleague).unwrap();
    assert!(left.changed);
    assert_eq!(
        left.state.followers().iter().collect::<Vec<_>>(),
        [instructeur().email()]
    );
    let again = unfollow(&left.state, &colleague).unwrap();
    assert!(!again.changed);
    assert_eq!(again.state.version(), both.version());
}

#[test]
fn decided_and_archived_dossiers_can_be_followed() {
    for key in StateKey::ALL.into_iter().filter(|k| k.status.is_decided()) {
        assert!(follow(&state(key), &colleague()).unwrap().changed, "{key}");
    }
}

#[test]
fn only_instructeurs_of_the_groupe_follow() {
    let dossier = plain(S::EnConstruction);
    for actor in ActorKind::ALL {
        let outcome = follow(&dossier, &actor.sample());
        let unfollowed = unfollow(&dossier, &actor.sample());
        match actor {
            A::InstructeurOfGroupe => {
                assert!(outcome.is_ok());
                assert!(unfollowed.is_ok());
            }
            A::InstructeurOtherGroupe => {
                assert_eq!(outcome, Err(TransitionError::NotFound));
                assert_eq!(unfollowed, Err(TransitionError::NotFound));
            }
            _ => {
                assert_eq!(outcome, Err(TransitionError::Forbidden), "{actor}");
                assert_eq!(unfollowed, Err(TransitionError::Forbidden), "{actor}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary.
// ---------------------------------------------------------------------------------------------

#[test]
fn command_names_are_the_transition_names_or_their_own() {
    for command in CommandKind::ALL {
        match command.transition() {
            Some(transition) => assert_eq!(command.as_str(), transition.as_str()),
            None => assert!(matches!(
                command.as_str(),
                "resolve_correction" | "archive" | "unarchive"
            )),
        }
    }
    let names: BTreeSet<_> = CommandKind::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), CommandKind::ALL.len());
}

#[test]
fn every_transition_kind_is_produced_by_exactly_one_command() {
    for transition in TransitionKind::ALL {
        let commands: Vec<_> = CommandKind::ALL
            .into_iter()
            .filter(|c| c.transition() == Some(transition))
            .collect();
        assert_eq!(commands.len(), 1, "{transition}");
    }
}

#[test]
fn actor_kinds_and_emails_round_trip() {
    for kind in ActorKind::ALL {
        let actor = kind.sample();
        assert_eq!(actor.kind(), kind);
        assert!(!actor.email().is_empty());
    }
    assert_eq!(system().email(), "instruction");
}

#[test]
fn state_keys_display_their_flags() {
    assert_eq!(CORRECTION.to_string(), "en_construction+correction_pending");
    assert_eq!(StateKey::archived(S::Refuse).to_string(), "refuse+archived");
    assert_eq!(INSTRUCTION.to_string(), "en_instruction");
}

// ---------------------------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------------------------

/// One random step of a dossier's life.
#[derive(Debug, Clone)]
enum Step {
    Apply {
        actor: Actor,
        command: Command,
        closing: Closing,
    },
    Follow(Actor),
    Unfollow(Actor),
}

/// Where the closing date stands at a step.
#[derive(Debug, Clone, Copy)]
enum Closing {
    None,
    Future,
    Passed,
}

const INSTRUCTEURS: [&str; 3] = [
    "instructeur@cpam13.example",
    "collegue@cpam13.example",
    "cheffe@cpam13.example",
];

fn any_actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        proptest::sample::select(ActorKind::ALL.to_vec()).prop_map(ActorKind::sample),
        proptest::sample::select(INSTRUCTEURS.to_vec()).prop_map(|email| Actor::Instructeur {
            email: email.to_owned(),
            of_groupe: true,
        }),
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::from("Pièce manquante.")),
        "[ a-zA-Zéèà'.\n]{1,40}",
    ]
}

fn any_motivation() -> impl Strategy<Value = Motivation> {
    any_text().prop_map(|text| Motivation::parse(&text).unwrap_or_else(|_| Motivation::sample()))
}

fn any_message() -> impl Strategy<Value = Message> {
    any_text().prop_map(|text| Message::parse(&text).unwrap_or_else(|_| Message::sample()))
}

fn any_justificatif() -> impl Strategy<Value = Option<FileRef>> {
    proptest::option::of(Just(sample_justificatif()))
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Deposer),
        Just(Command::ResolveCorrection),
        Just(Command::PasserEnInstruction),
        Just(Command::PasserEnInstructionAuto),
        proptest::option::of(any_message())
            .prop_map(|message| Command::RepasserEnConstruction { message }),
        (
            any_message(),
            proptest::sample::select(CorrectionReason::ALL.to_vec())
        )
            .prop_map(|(message, reason)| Command::DemanderCorrection { message, reason }),
        (proptest::option::of(any_motivation()), any_justificatif()).prop_map(
            |(motivation, justificatif)| Command::Accepter {
                motivation,
                justificatif
            }
        ),
        (any_motivation(), any_justificatif()).prop_map(|(motivation, justificatif)| {
            Command::Refuser {
                motivation,
                justificatif,
            }
        }),
        (any_motivation(), any_justificatif()).prop_map(|(motivation, justificatif)| {
            Command::ClasserSansSuite {
                motivation,
                justificatif,
            }
        }),
        proptest::option::of(any_message())
            .prop_map(|message| Command::RepasserEnInstruction { message }),
        Just(Command::Archive),
        Just(Command::Unarchive),
    ]
}

fn any_closing() -> impl Strategy<Value = Closing> {
    prop_oneof![
        Just(Closing::None),
        Just(Closing::Future),
        Just(Closing::Passed)
    ]
}

/// Half of the commands go to the actor allowed to run them, so that sequences make progress
/// through the workflow instead of being refused most of the time.
fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any_command(), any_actor(), any_closing()).prop_map(|(command, actor, closing)| {
            Step::Apply { actor, command, closing }
        }),
        4 => (any_command(), any_closing(), proptest::sample::select(INSTRUCTEURS.to_vec()))
            .prop_map(|(command, closing, email)| {
                let actor = match command.kind().performer() {
                    Performer::Instructeur => Actor::Instructeur {
                        email: email.to_owned(),
                        of_groupe: true,
                    },
                    performer => performer.sample_actor().sample(),
                };
                Step::Apply { actor, command, closing }
            }),
        1 => any_actor().prop_map(Step::Follow),
        1 => any_actor().prop_map(Step::Unfollow),
    ]
}

/// The invariants every state must satisfy.
fn check_invariants(state: &DossierState) -> Result<(), TestCaseError> {
    prop_assert!(!state.is_archived() || state.status().is_decided());
    prop_assert!(!state.is_correction_pending() || state.status() == S::EnConstruction);
    prop_assert!(state.version() >= INITIAL_VERSION);
    prop_assert!(state.status().is_deposited() || state.followers().is_empty());
    let restored = DossierState::restore(
        state.status(),
        state.is_archived(),
        state.is_correction_pending(),
        state.version(),
        state.followers().clone(),
    );
    prop_assert_eq!(restored.as_ref(), Ok(state));
    Ok(())
}

/// What an accepted command's event says must be what happened to the state.
fn check_event(
    before: &DossierState,
    transition: &Transition,
    actor: &Actor,
    at: DateTime<Utc>,
    command: &Command,
) -> Result<(), TestCaseError> {
    let after = &transition.state;
    let event = &transition.event;
    prop_assert_eq!(after.version(), before.version() + 1);
    prop_assert_eq!(event.version, after.version());
    prop_assert_eq!(event.at, at);
    prop_assert_eq!(&event.actor, actor);
    match &event.kind {
        EventKind::StatusChanged(change) => {
            prop_assert_eq!(Some(change.transition), command.kind().transition());
            prop_assert_eq!(change.from, before.status());
            prop_assert_eq!(change.to, after.status());
            prop_assert_eq!(change.to, change.transition.target());
            prop_assert_ne!(change.from, change.to);
            prop_assert_eq!(after.is_archived(), before.is_archived());
            prop_assert_eq!(
                change.correction_reason.is_some(),
                change.transition == TransitionKind::DemanderCorrection
            );
            let (motivation, justificatif) = match command {
                Command::RepasserEnConstruction { message }
                | Command::RepasserEnInstruction { message } => {
                    (message.as_ref().map(|m| m.as_str().to_owned()), None)
                }
                Command::DemanderCorrection { message, .. } => {
                    (Some(message.as_str().to_owned()), None)
                }
                Command::Accepter {
                    motivation,
                    justificatif,
                } => (
                    motivation.as_ref().map(|m| m.as_str().to_owned()),
                    justificatif.clone(),
                ),
                Command::Refuser {
                    motivation,
                    justificatif,
                }
                | Command::ClasserSansSuite {
                    motivation,
                    justificatif,
                } => (Some(motivation.as_str().to_owned()), justificatif.clone()),
                _ => (None, None),
            };
            prop_assert_eq!(&change.motivation, &motivation);
            prop_assert_eq!(&change.justificatif, &justificatif);
        }
        EventKind::CorrectionResolved => {
            prop_assert_eq!(command, &Command::ResolveCorrection);
            prop_assert!(before.is_correction_pending() && !after.is_correction_pending());
            prop_assert_eq!(after.status(), S::EnConstruction);
        }
        EventKind::Archived { status } => {
            prop_assert_eq!(command, &Command::Archive);
            prop_assert!(!before.is_archived() && after.is_archived());
            prop_assert_eq!(*status, after.status());
            prop_assert_eq!(before.status(), after.status());
        }
        EventKind::Unarchived { status } => {
            prop_assert_eq!(command, &Command::Unarchive);
            prop_assert!(before.is_archived() && !after.is_archived());
            prop_assert_eq!(*status, after.status());
            prop_assert_eq!(before.status(), after.status());
        }
    }
    if before.status().is_decided() {
        prop_assert!(
            matches!(
                command,
                Command::RepasserEnInstruction { .. } | Command::Archive | Command::Unarchive
            ),
            "a decided dossier accepted {:?}",
            command
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_sequence_of_commands_reaches_an_inconsistent_state(
        steps in proptest::collection::vec(any_step(), 1..120)
    ) {
        let mut state = DossierState::brouillon();
        let mut at = now();
        let mut accepted = 0_i64;
        for step in steps {
            at += TimeDelta::minutes(7);
            match step {
                Step::Apply { actor, command, closing } => {
                    let context = Context {
                        now: at,
                        closing_at: match closing {
                            Closing::None => None,
                            Closing::Future => Some(at + TimeDelta::days(1)),
                            Closing::Passed => Some(at - TimeDelta::days(1)),
                        },
                    };
                    let kind = command.kind();
                    let outcome = apply(&state, &actor, command.clone(), context);
                    check_against_specification(
                        &state,
                        context.procedure_closed(),
                        &actor,
                        kind,
                        &outcome,
                    )
                    .map_err(TestCaseError::fail)?;
                    // Refused: `state` was only borrowed and stays as it was.
                    if let Ok(transition) = outcome {
                        check_event(&state, &transition, &actor, at, &command)?;
                        accepted += 1;
                        state = transition.state;
                    }
                }
                Step::Follow(actor) => {
                    if let Ok(outcome) = follow(&state, &actor) {
                        prop_assert_eq!(outcome.changed, !state.is_followed_by(actor.email()));
                        prop_assert!(outcome.state.is_followed_by(actor.email()));
                        prop_assert_eq!(outcome.state.key(), state.key());
                        prop_assert_eq!(outcome.state.version(), state.version());
                        state = outcome.state;
                    }
                }
                Step::Unfollow(actor) => {
                    if let Ok(outcome) = unfollow(&state, &actor) {
                        prop_assert_eq!(outcome.changed, state.is_followed_by(actor.email()));
                        prop_assert!(!outcome.state.is_followed_by(actor.email()));
                        prop_assert_eq!(outcome.state.key(), state.key());
                        prop_assert_eq!(outcome.state.version(), state.version());
                        state = outcome.state;
                    }
                }
            }
            check_invariants(&state)?;
        }
        // The version counts the accepted commands, no more, no less.
        prop_assert_eq!(state.version(), INITIAL_VERSION + accepted);
    }

    #[test]
    fn applying_a_command_never_touches_the_input_state(
        key in proptest::sample::select(StateKey::ALL.to_vec()),
        actor in any_actor(),
        command in any_command(),
        closing in any_closing(),
    ) {
        let before = key.sample_state().unwrap();
        let snapshot = before.clone();
        let context = Context {
            now: now(),
            closing_at: match closing {
                Closing::None => None,
                Closing::Future => Some(now() + TimeDelta::days(1)),
                Closing::Passed => Some(now() - TimeDelta::days(1)),
            },
        };
        let first = apply(&before, &actor, command.clone(), context);
        prop_assert_eq!(&before, &snapshot);
        // Pure: the same inputs give the same outcome.
        prop_assert_eq!(apply(&before, &actor, command, context), first);
    }
}
