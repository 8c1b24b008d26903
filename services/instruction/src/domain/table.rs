//! The whole transition table, enumerated: every consistent [`StateKey`] × procedure open or
//! closed × [`ActorKind`] × [`CommandKind`], with the outcome [`apply`] decides for it.
//!
//! For the unit tests of [`super::workflow`] and for the gRPC-level table test, which drives a
//! real dossier to each key along [`StateKey::path_from_brouillon`], runs each command as each
//! actor, and checks the service agrees with [`TableRow::outcome`] (and publishes one event per
//! accepted row, none otherwise).

use chrono::{DateTime, Utc};

use super::error::TransitionError;
use super::status::CorrectionReason;
use super::text::{Message, Motivation};
use super::workflow::{
    Actor, ActorKind, Command, CommandKind, Context, DossierState, FileRef, Performer, StateKey,
    Transition, apply,
};

/// One (state, procedure, actor, command) case and what the workflow decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    /// The dossier's state before the command.
    pub key: StateKey,
    /// Whether the procedure's closing date has passed.
    pub procedure_closed: bool,
    /// Who runs the command ([`ActorKind::sample`]).
    pub actor: ActorKind,
    /// The command ([`CommandKind::sample`]).
    pub command: CommandKind,
    /// The state the command was applied to ([`StateKey::sample_state`]).
    pub before: DossierState,
    /// The outcome.
    pub outcome: Result<Transition, TransitionError>,
}

/// Every case of the table, 10 × 2 × 8 × 12 = 1 920 rows, at time `now` (a closed procedure
/// closed exactly at `now`; an open one has no closing date).
pub fn transition_table(now: DateTime<Utc>) -> impl Iterator<Item = TableRow> {
    StateKey::ALL.into_iter().flat_map(move |key| {
        // Every key of ALL has a sample state (tested): the `Option` never drops a row.
        key.sample_state().into_iter().flat_map(move |before| {
            [false, true].into_iter().flat_map(move |procedure_closed| {
                let before = before.clone();
                ActorKind::ALL.into_iter().flat_map(move |actor| {
                    let before = before.clone();
                    CommandKind::ALL.into_iter().map(move |command| {
                        let outcome = apply(
                            &before,
                            &actor.sample(),
                            command.sample(),
                            sample_context(now, procedure_closed),
                        );
                        TableRow {
                            key,
                            procedure_closed,
                            actor,
                            command,
                            before: before.clone(),
                            outcome,
                        }
                    })
                })
            })
        })
    })
}

/// A context at `now`: closed exactly at `now`, or without closing date.
pub fn sample_context(now: DateTime<Utc>, procedure_closed: bool) -> Context {
    Context {
        now,
        closing_at: procedure_closed.then_some(now),
    }
}

impl StateKey {
    /// The shortest command sequence leading a brouillon to this key (each command run by its
    /// [`Performer::sample_actor`], procedure open); `None` for an inconsistent key.
    pub const fn path_from_brouillon(self) -> Option<&'static [CommandKind]> {
        use super::status::Status as S;
        use CommandKind as C;
        match (self.status, self.archived, self.correction_pending) {
            (S::Brouillon, false, false) => Some(&[]),
            (S::EnConstruction, false, false) => Some(&[C::Deposer]),
            (S::EnConstruction, false, true) => {
                Some(&[C::Deposer, C::PasserEnInstruction, C::DemanderCorrection])
            }
            (S::EnInstruction, false, false) => Some(&[C::Deposer, C::PasserEnInstruction]),
            (S::Accepte, false, false) => Some(&[C::Deposer, C::PasserEnInstruction, C::Accepter]),
            (S::Accepte, true, false) => {
                Some(&[C::Deposer, C::PasserEnInstruction, C::Accepter, C::Archive])
            }
            (S::Refuse, false, false) => Some(&[C::Deposer, C::PasserEnInstruction, C::Refuser]),
            (S::Refuse, true, false) => {
                Some(&[C::Deposer, C::PasserEnInstruction, C::Refuser, C::Archive])
            }
            (S::SansSuite, false, false) => {
                Some(&[C::Deposer, C::PasserEnInstruction, C::ClasserSansSuite])
            }
            (S::SansSuite, true, false) => Some(&[
                C::Deposer,
                C::PasserEnInstruction,
                C::ClasserSansSuite,
                C::Archive,
            ]),
            (S::Brouillon | S::EnInstruction | S::Accepte | S::Refuse | S::SansSuite, _, true)
            | (S::Brouillon | S::EnConstruction | S::EnInstruction, true, _) => None,
        }
    }

    /// A state with this key, reached by applying [`Self::path_from_brouillon`] to a new
    /// brouillon (so its version and followers are those of a real dossier); `None` for an
    /// inconsistent key.
    pub fn sample_state(self) -> Option<DossierState> {
        let context = sample_context(DateTime::<Utc>::UNIX_EPOCH, false);
        self.path_from_brouillon()?
            .iter()
            .try_fold(DossierState::brouillon(), |state, command| {
                let actor = command.performer().sample_actor().sample();
                apply(&state, &actor, command.sample(), context)
                    .ok()
                    .map(|transition| transition.state)
            })
    }
}

impl Performer {
    /// The [`ActorKind`] allowed to run this performer's commands.
    pub const fn sample_actor(self) -> ActorKind {
        match self {
            Performer::Owner => ActorKind::Owner,
            Performer::System => ActorKind::System,
            Performer::Instructeur => ActorKind::InstructeurOfGroupe,
        }
    }
}

impl ActorKind {
    /// A fixed actor of this kind (stable emails, for tests).
    pub fn sample(self) -> Actor {
        let email = |email: &str| email.to_owned();
        match self {
            ActorKind::Owner => Actor::Owner {
                email: email("porteur@association.example"),
            },
            ActorKind::Invitee => Actor::Invitee {
                email: email("invite@association.example"),
            },
            ActorKind::InstructeurOfGroupe => Actor::Instructeur {
                email: email("instructeur@cpam13.example"),
                of_groupe: true,
            },
            ActorKind::InstructeurOtherGroupe => Actor::Instructeur {
                email: email("instructeur@cpam75.example"),
                of_groupe: false,
            },
            ActorKind::UndeclaredInstructeur => Actor::UndeclaredInstructeur {
                email: email("inconnu@cpam13.example"),
            },
            ActorKind::Admin => Actor::Admin {
                email: email("admin@assurance-maladie.example"),
            },
            ActorKind::System => Actor::System {
                service: email("instruction"),
            },
            ActorKind::Other => Actor::Other {
                email: email("autre@association.example"),
            },
        }
    }
}

impl CommandKind {
    /// A valid command of this kind. Optional parts vary so the table covers both: a message
    /// to repasser en construction but none to repasser en instruction, no motivation to
    /// accept, a justificatif to refuse but none to classer sans suite.
    pub fn sample(self) -> Command {
        match self {
            CommandKind::Deposer => Command::Deposer,
            CommandKind::ResolveCorrection => Command::ResolveCorrection,
            CommandKind::PasserEnInstruction => Command::PasserEnInstruction,
            CommandKind::PasserEnInstructionAuto => Command::PasserEnInstructionAuto,
            CommandKind::RepasserEnConstruction => Command::RepasserEnConstruction {
                message: Some(Message::sample()),
            },
            CommandKind::DemanderCorrection => Command::DemanderCorrection {
                message: Message::sample(),
                reason: CorrectionReason::Incomplete,
            },
            CommandKind::Accepter => Command::Accepter {
                motivation: None,
                justificatif: None,
            },
            CommandKind::Refuser => Command::Refuser {
                motivation: Motivation::sample(),
                justificatif: Some(sample_justificatif()),
            },
            CommandKind::ClasserSansSuite => Command::ClasserSansSuite {
                motivation: Motivation::sample(),
                justificatif: None,
            },
            CommandKind::RepasserEnInstruction => Command::RepasserEnInstruction { message: None },
            CommandKind::Archive => Command::Archive,
            CommandKind::Unarchive => Command::Unarchive,
        }
    }
}

/// A fixed justificatif reference.
pub fn sample_justificatif() -> FileRef {
    FileRef {
        id: String::from("justificatif-0001"),
        file_name: String::from("decision.pdf"),
        content_type: String::from("application/pdf"),
        size_bytes: 18_432,
        sha256: String::from("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    }
}
