//! The dossier state machine (DESIGN.md §3), as one pure function:
//! [`apply`]`(state, actor, command, context) -> Result<Transition, TransitionError>`.
//!
//! ```text
//! brouillon ──deposer (owner; not after the closing date)──> en_construction
//! en_construction ──passer_en_instruction (instructeur of the groupe; auto-follows;
//!                   refused while a correction is pending)──> en_instruction
//! en_construction ──passer_en_instruction_auto (system, at the closing date)──> en_instruction
//! en_instruction ──repasser_en_construction | demander_correction──> en_construction
//! en_construction + correction pending ──resolve_correction (owner resubmits)──> en_construction
//! en_instruction ──accepter | refuser | classer_sans_suite──> accepte | refuse | sans_suite
//! accepte | refuse | sans_suite ──repasser_en_instruction (not archived)──> en_instruction
//! archive / unarchive: decided dossiers only (a flag, not a state)
//! ```
//!
//! Every accepted command increments the status version by exactly one and yields exactly one
//! [`WorkflowEvent`]; a refused one yields a [`TransitionError`] and nothing else (the input
//! state is borrowed, so it cannot have changed). Checks run in the order of the gRPC contract:
//! role ([`TransitionError::Forbidden`]), then visibility ([`TransitionError::NotFound`]), then
//! state (FAILED_PRECONDITION reasons). Free texts arrive already parsed ([`super::text`]).
//!
//! Following is not a workflow command: [`follow`] and [`unfollow`] are idempotent, emit no
//! event and leave the status version alone (a follow must not make another instructeur's
//! pending transition stale).

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::error::TransitionError;
use super::status::{CorrectionReason, Status, TransitionKind};
use super::text::{Message, Motivation};

/// Status version of a new brouillon; each accepted command adds one.
pub const INITIAL_VERSION: i64 = 1;

/// What the workflow knows of a dossier: all its guards need, nothing more. Always consistent
/// (see [`DossierState::restore`]): fields are private, and only [`apply`], [`follow`] and
/// [`unfollow`] derive new states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DossierState {
    status: Status,
    archived: bool,
    correction_pending: bool,
    version: i64,
    followers: BTreeSet<String>,
}

/// A stored combination the workflow can never produce (a corrupt row).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InconsistentState {
    /// Only decided dossiers are archived.
    #[error("a dossier {0} cannot be archived")]
    ArchivedUndecided(Status),
    /// A correction is pending only while the dossier waits en construction for it.
    #[error("a dossier {0} cannot have a pending correction")]
    CorrectionPendingOutsideConstruction(Status),
    /// Versions start at [`INITIAL_VERSION`].
    #[error("status version {0} is below {INITIAL_VERSION}")]
    VersionBelowInitial(i64),
    /// Nobody can follow a brouillon, and a dossier never returns to brouillon.
    #[error("a brouillon cannot have followers")]
    FollowedBrouillon,
}

impl DossierState {
    /// A new brouillon: not archived, no correction, version [`INITIAL_VERSION`], no follower.
    pub fn brouillon() -> Self {
        Self {
            status: Status::Brouillon,
            archived: false,
            correction_pending: false,
            version: INITIAL_VERSION,
            followers: BTreeSet::new(),
        }
    }

    /// Rebuilds a state from stored parts, refusing any combination [`apply`] cannot reach:
    /// archived ⇒ decided; correction pending ⇒ en_construction; version ≥ 1; a brouillon has
    /// no follower.
    pub fn restore(
        status: Status,
        archived: bool,
        correction_pending: bool,
        version: i64,
        followers: BTreeSet<String>,
    ) -> Result<Self, InconsistentState> {
        if archived && !status.is_decided() {
            return Err(InconsistentState::ArchivedUndecided(status));
        }
        if correction_pending && status != Status::EnConstruction {
            return Err(InconsistentState::CorrectionPendingOutsideConstruction(
                status,
            ));
        }
        if version < INITIAL_VERSION {
            return Err(InconsistentState::VersionBelowInitial(version));
        }
        if status == Status::Brouillon && !followers.is_empty() {
            return Err(InconsistentState::FollowedBrouillon);
        }
        Ok(Self {
            status,
            archived,
            correction_pending,
            version,
            followers,
        })
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Whether archived (decided dossiers only).
    pub fn is_archived(&self) -> bool {
        self.archived
    }

    /// Whether a correction request waits for the owner's resubmission (en_construction only).
    pub fn is_correction_pending(&self) -> bool {
        self.correction_pending
    }

    /// Status version: incremented by every accepted command; the `expected_version` of the
    /// RPCs and the `status_version` of the events.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Emails of the instructeurs following the dossier.
    pub fn followers(&self) -> &BTreeSet<String> {
        &self.followers
    }

    /// Whether `email` follows the dossier.
    pub fn is_followed_by(&self, email: &str) -> bool {
        self.followers.contains(email)
    }

    /// The status, archive flag and correction flag: what decides a command's outcome.
    pub fn key(&self) -> StateKey {
        StateKey {
            status: self.status,
            archived: self.archived,
            correction_pending: self.correction_pending,
        }
    }

    /// The command forms' `RecordDeposit` stands for: resubmitting a dossier with a pending
    /// correction resolves it, anything else is a deposit (refused unless a brouillon, with
    /// INVALID_TRANSITION naming the current state, as the internal API documents).
    pub fn deposit_command(&self) -> Command {
        if self.status == Status::EnConstruction && self.correction_pending {
            Command::ResolveCorrection
        } else {
            Command::Deposer
        }
    }
}

/// The part of a [`DossierState`] that decides outcomes, for enumerating the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    /// Status.
    pub status: Status,
    /// Archive flag.
    pub archived: bool,
    /// Pending correction flag.
    pub correction_pending: bool,
}

impl StateKey {
    /// The ten consistent keys (see [`DossierState::restore`]), in workflow order.
    pub const ALL: [StateKey; 10] = [
        StateKey::plain(Status::Brouillon),
        StateKey::plain(Status::EnConstruction),
        StateKey {
            status: Status::EnConstruction,
            archived: false,
            correction_pending: true,
        },
        StateKey::plain(Status::EnInstruction),
        StateKey::plain(Status::Accepte),
        StateKey::archived(Status::Accepte),
        StateKey::plain(Status::Refuse),
        StateKey::archived(Status::Refuse),
        StateKey::plain(Status::SansSuite),
        StateKey::archived(Status::SansSuite),
    ];

    /// `status`, not archived, no pending correction.
    pub const fn plain(status: Status) -> Self {
        Self {
            status,
            archived: false,
            correction_pending: false,
        }
    }

    /// `status`, archived, no pending correction.
    pub const fn archived(status: Status) -> Self {
        Self {
            status,
            archived: true,
            correction_pending: false,
        }
    }

    /// Whether [`DossierState::restore`] accepts this combination.
    pub const fn is_consistent(self) -> bool {
        (!self.archived || self.status.is_decided())
            && (!self.correction_pending || matches!(self.status, Status::EnConstruction))
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.status.as_str())?;
        if self.archived {
            f.write_str("+archived")?;
        }
        if self.correction_pending {
            f.write_str("+correction_pending")?;
        }
        Ok(())
    }
}

/// Who applies a command, as the app layer established it from the token, the roster, the
/// routing and the dossier's owner. Emails are lower-cased at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The promoteur who owns the dossier.
    Owner {
        /// His email.
        email: String,
    },
    /// A promoteur invited to co-edit the dossier: edits, never deposits nor instructs.
    Invitee {
        /// His email.
        email: String,
    },
    /// An instructeur declared on the roster.
    Instructeur {
        /// His email.
        email: String,
        /// Whether the dossier is routed to one of his groupes.
        of_groupe: bool,
    },
    /// A caller with the instructeur role who is not (or no longer) on the roster.
    UndeclaredInstructeur {
        /// His email.
        email: String,
    },
    /// An administrator: reads everything, runs no transition.
    Admin {
        /// His email.
        email: String,
    },
    /// A service acting on its own (the closing-date scheduler).
    System {
        /// Service name, e.g. "instruction".
        service: String,
    },
    /// Anyone else: another promoteur, an expert, an ambassadeur.
    Other {
        /// His email.
        email: String,
    },
}

impl Actor {
    /// The actor's email (the service name for [`Actor::System`]).
    pub fn email(&self) -> &str {
        match self {
            Actor::Owner { email }
            | Actor::Invitee { email }
            | Actor::Instructeur { email, .. }
            | Actor::UndeclaredInstructeur { email }
            | Actor::Admin { email }
            | Actor::Other { email } => email,
            Actor::System { service } => service,
        }
    }

    /// The actor's kind, without his identity.
    pub const fn kind(&self) -> ActorKind {
        match self {
            Actor::Owner { .. } => ActorKind::Owner,
            Actor::Invitee { .. } => ActorKind::Invitee,
            Actor::Instructeur {
                of_groupe: true, ..
            } => ActorKind::InstructeurOfGroupe,
            Actor::Instructeur {
                of_groupe: false, ..
            } => ActorKind::InstructeurOtherGroupe,
            Actor::UndeclaredInstructeur { .. } => ActorKind::UndeclaredInstructeur,
            Actor::Admin { .. } => ActorKind::Admin,
            Actor::System { .. } => ActorKind::System,
            Actor::Other { .. } => ActorKind::Other,
        }
    }
}

/// The kinds of [`Actor`], for enumerating the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActorKind {
    /// [`Actor::Owner`].
    Owner,
    /// [`Actor::Invitee`].
    Invitee,
    /// [`Actor::Instructeur`] with `of_groupe: true`.
    InstructeurOfGroupe,
    /// [`Actor::Instructeur`] with `of_groupe: false`.
    InstructeurOtherGroupe,
    /// [`Actor::UndeclaredInstructeur`].
    UndeclaredInstructeur,
    /// [`Actor::Admin`].
    Admin,
    /// [`Actor::System`].
    System,
    /// [`Actor::Other`].
    Other,
}

impl ActorKind {
    /// Every kind.
    pub const ALL: [ActorKind; 8] = [
        ActorKind::Owner,
        ActorKind::Invitee,
        ActorKind::InstructeurOfGroupe,
        ActorKind::InstructeurOtherGroupe,
        ActorKind::UndeclaredInstructeur,
        ActorKind::Admin,
        ActorKind::System,
        ActorKind::Other,
    ];

    /// Stable snake_case name (test names, logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::Owner => "owner",
            ActorKind::Invitee => "invitee",
            ActorKind::InstructeurOfGroupe => "instructeur_of_groupe",
            ActorKind::InstructeurOtherGroupe => "instructeur_other_groupe",
            ActorKind::UndeclaredInstructeur => "undeclared_instructeur",
            ActorKind::Admin => "admin",
            ActorKind::System => "system",
            ActorKind::Other => "other",
        }
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Performer {
    /// The dossier's owner (through forms `DepositDossier` → `RecordDeposit`).
    Owner,
    /// The system (closing-date scheduler).
    System,
    /// A declared instructeur of the dossier's groupe, on a deposited dossier.
    Instructeur,
}

/// Reference to a stored justificatif, carried into the event. Built by the app layer from an
/// upload it checked; the workflow only passes it on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileRef {
    /// Opaque id, unique within the instruction service.
    pub id: String,
    /// Sanitised original file name.
    pub file_name: String,
    /// Media type checked at upload.
    pub content_type: String,
    /// Exact size in bytes.
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// A workflow command with its (already parsed) arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// brouillon → en_construction.
    Deposer,
    /// The owner resubmits after a correction request: stays en_construction, the pending
    /// correction is cleared (`DossierCorrectionResolved`).
    ResolveCorrection,
    /// en_construction → en_instruction; the instructeur follows the dossier.
    PasserEnInstruction,
    /// en_construction → en_instruction at the procedure's closing date.
    PasserEnInstructionAuto,
    /// en_instruction → en_construction.
    RepasserEnConstruction {
        /// Optional message to the promoteur.
        message: Option<Message>,
    },
    /// en_instruction → en_construction with a pending correction.
    DemanderCorrection {
        /// What to correct.
        message: Message,
        /// Why.
        reason: CorrectionReason,
    },
    /// en_instruction → accepte.
    Accepter {
        /// Optional motivation.
        motivation: Option<Motivation>,
        /// Optional justificatif.
        justificatif: Option<FileRef>,
    },
    /// en_instruction → refuse.
    Refuser {
        /// Required motivation.
        motivation: Motivation,
        /// Optional justificatif.
        justificatif: Option<FileRef>,
    },
    /// en_instruction → sans_suite.
    ClasserSansSuite {
        /// Required motivation.
        motivation: Motivation,
        /// Optional justificatif.
        justificatif: Option<FileRef>,
    },
    /// accepte | refuse | sans_suite → en_instruction (not archived).
    RepasserEnInstruction {
        /// Optional message to the promoteur.
        message: Option<Message>,
    },
    /// Archives a decided dossier.
    Archive,
    /// Unarchives an archived dossier.
    Unarchive,
}

impl Command {
    /// The command's kind, without its arguments.
    pub const fn kind(&self) -> CommandKind {
        match self {
            Command::Deposer => CommandKind::Deposer,
            Command::ResolveCorrection => CommandKind::ResolveCorrection,
            Command::PasserEnInstruction => CommandKind::PasserEnInstruction,
            Command::PasserEnInstructionAuto => CommandKind::PasserEnInstructionAuto,
            Command::RepasserEnConstruction { .. } => CommandKind::RepasserEnConstruction,
            Command::DemanderCorrection { .. } => CommandKind::DemanderCorrection,
            Command::Accepter { .. } => CommandKind::Accepter,
            Command::Refuser { .. } => CommandKind::Refuser,
            Command::ClasserSansSuite { .. } => CommandKind::ClasserSansSuite,
            Command::RepasserEnInstruction { .. } => CommandKind::RepasserEnInstruction,
            Command::Archive => CommandKind::Archive,
            Command::Unarchive => CommandKind::Unarchive,
        }
    }
}

/// The kinds of [`Command`], for errors and for enumerating the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandKind {
    /// [`Command::Deposer`].
    Deposer,
    /// [`Command::ResolveCorrection`].
    ResolveCorrection,
    /// [`Command::PasserEnInstruction`].
    PasserEnInstruction,
    /// [`Command::PasserEnInstructionAuto`].
    PasserEnInstructionAuto,
    /// [`Command::RepasserEnConstruction`].
    RepasserEnConstruction,
    /// [`Command::DemanderCorrection`].
    DemanderCorrection,
    /// [`Command::Accepter`].
    Accepter,
    /// [`Command::Refuser`].
    Refuser,
    /// [`Command::ClasserSansSuite`].
    ClasserSansSuite,
    /// [`Command::RepasserEnInstruction`].
    RepasserEnInstruction,
    /// [`Command::Archive`].
    Archive,
    /// [`Command::Unarchive`].
    Unarchive,
}

impl CommandKind {
    /// Every kind.
    pub const ALL: [CommandKind; 12] = [
        CommandKind::Deposer,
        CommandKind::ResolveCorrection,
        CommandKind::PasserEnInstruction,
        CommandKind::PasserEnInstructionAuto,
        CommandKind::RepasserEnConstruction,
        CommandKind::DemanderCorrection,
        CommandKind::Accepter,
        CommandKind::Refuser,
        CommandKind::ClasserSansSuite,
        CommandKind::RepasserEnInstruction,
        CommandKind::Archive,
        CommandKind::Unarchive,
    ];

    /// Stable snake_case name: the transition's name for status changes, else
    /// `resolve_correction`, `archive`, `unarchive` (`ErrorInfo.metadata.transition`).
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandKind::Deposer => TransitionKind::Deposer.as_str(),
            CommandKind::ResolveCorrection => "resolve_correction",
            CommandKind::PasserEnInstruction => TransitionKind::PasserEnInstruction.as_str(),
            CommandKind::PasserEnInstructionAuto => {
                TransitionKind::PasserEnInstructionAuto.as_str()
            }
            CommandKind::RepasserEnConstruction => TransitionKind::RepasserEnConstruction.as_str(),
            CommandKind::DemanderCorrection => TransitionKind::DemanderCorrection.as_str(),
            CommandKind::Accepter => TransitionKind::Accepter.as_str(),
            CommandKind::Refuser => TransitionKind::Refuser.as_str(),
            CommandKind::ClasserSansSuite => TransitionKind::ClasserSansSuite.as_str(),
            CommandKind::RepasserEnInstruction => TransitionKind::RepasserEnInstruction.as_str(),
            CommandKind::Archive => "archive",
            CommandKind::Unarchive => "unarchive",
        }
    }

    /// Who may run it.
    pub const fn performer(self) -> Performer {
        match self {
            CommandKind::Deposer | CommandKind::ResolveCorrection => Performer::Owner,
            CommandKind::PasserEnInstructionAuto => Performer::System,
            CommandKind::PasserEnInstruction
            | CommandKind::RepasserEnConstruction
            | CommandKind::DemanderCorrection
            | CommandKind::Accepter
            | CommandKind::Refuser
            | CommandKind::ClasserSansSuite
            | CommandKind::RepasserEnInstruction
            | CommandKind::Archive
            | CommandKind::Unarchive => Performer::Instructeur,
        }
    }

    /// The status transition it performs when accepted; `None` for the three commands that
    /// change no status (resolve correction, archive, unarchive).
    pub const fn transition(self) -> Option<TransitionKind> {
        match self {
            CommandKind::Deposer => Some(TransitionKind::Deposer),
            CommandKind::PasserEnInstruction => Some(TransitionKind::PasserEnInstruction),
            CommandKind::PasserEnInstructionAuto => Some(TransitionKind::PasserEnInstructionAuto),
            CommandKind::RepasserEnConstruction => Some(TransitionKind::RepasserEnConstruction),
            CommandKind::DemanderCorrection => Some(TransitionKind::DemanderCorrection),
            CommandKind::Accepter => Some(TransitionKind::Accepter),
            CommandKind::Refuser => Some(TransitionKind::Refuser),
            CommandKind::ClasserSansSuite => Some(TransitionKind::ClasserSansSuite),
            CommandKind::RepasserEnInstruction => Some(TransitionKind::RepasserEnInstruction),
            CommandKind::ResolveCorrection | CommandKind::Archive | CommandKind::Unarchive => None,
        }
    }

    /// Whether an accepted command may take a dossier from en construction to en instruction,
    /// which ends the promoteur's editing: forms must freeze the dossier before such a command
    /// commits (I1), whether an instructeur or the closing date runs it.
    pub const fn freezes_forms(self) -> bool {
        matches!(
            self,
            CommandKind::PasserEnInstruction | CommandKind::PasserEnInstructionAuto
        )
    }

    /// French infinitive completing « il ne peut pas … » (« être déposé », « passer en
    /// instruction »).
    pub const fn infinitive_fr(self) -> &'static str {
        match self {
            CommandKind::Deposer => "être déposé",
            CommandKind::ResolveCorrection => "être redéposé après une correction",
            CommandKind::PasserEnInstruction => "passer en instruction",
            CommandKind::PasserEnInstructionAuto => "passer automatiquement en instruction",
            CommandKind::RepasserEnConstruction => "repasser en construction",
            CommandKind::DemanderCorrection => "faire l'objet d'une demande de correction",
            CommandKind::Accepter => "être accepté",
            CommandKind::Refuser => "être refusé",
            CommandKind::ClasserSansSuite => "être classé sans suite",
            CommandKind::RepasserEnInstruction => "repasser en instruction",
            CommandKind::Archive => "être archivé",
            CommandKind::Unarchive => "être désarchivé",
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a command is applied, and the procedure's closing date at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The time of the command: the event's `at`.
    pub now: DateTime<Utc>,
    /// The procedure's closing date; `None` when it has none.
    pub closing_at: Option<DateTime<Utc>>,
}

impl Context {
    /// Whether the closing date has passed: deposits are refused, the automatic passage en
    /// instruction is due. The closing instant itself counts as closed.
    pub fn procedure_closed(&self) -> bool {
        self.closing_at
            .is_some_and(|closing_at| self.now >= closing_at)
    }
}

/// The one event an accepted command yields (mapped by the app layer to the traitement row and
/// the outbox message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowEvent {
    /// Who applied the command (`EventMetadata.actor`, `Traitement.actor`).
    pub actor: Actor,
    /// When ([`Context::now`]).
    pub at: DateTime<Utc>,
    /// Status version after the command.
    pub version: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What an accepted command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The status changed (`DossierStatusChanged`).
    StatusChanged(StatusChange),
    /// A pending correction was resolved by the owner; still en_construction
    /// (`DossierCorrectionResolved`).
    CorrectionResolved,
    /// A decided dossier was archived (`DossierArchived`).
    Archived {
        /// Its (decided) status.
        status: Status,
    },
    /// An archived dossier was unarchived (`DossierUnarchived`).
    Unarchived {
        /// Its (decided) status.
        status: Status,
    },
}

/// A status change, as written to the traitement and `DossierStatusChanged`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// Status before.
    pub from: Status,
    /// Status after (always `transition.target()`).
    pub to: Status,
    /// The transition applied.
    pub transition: TransitionKind,
    /// Motivation of a decision, or the message to the promoteur.
    pub motivation: Option<String>,
    /// Justificatif of a decision.
    pub justificatif: Option<FileRef>,
    /// Reason of a correction request (set only for [`TransitionKind::DemanderCorrection`]).
    pub correction_reason: Option<CorrectionReason>,
}

/// The result of an accepted command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state; its version is the old one plus one.
    pub state: DossierState,
    /// The one event to record and publish.
    pub event: WorkflowEvent,
    /// The instructeur who started following through this command (passer en instruction
    /// auto-follows); `None` when he already followed or for any other command. The app layer
    /// records the follow with its history.
    pub auto_follow: Option<String>,
}

/// The result of [`follow`] or [`unfollow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowOutcome {
    /// The state after the call (same version).
    pub state: DossierState,
    /// Whether the followers changed (false for a repeated call: both are idempotent).
    pub changed: bool,
}

/// Applies `command` by `actor` to `state` at `context.now`.
///
/// On success, returns the new state (version + 1) and exactly one event. On refusal, the
/// reason; nothing changed.
pub fn apply(
    state: &DossierState,
    actor: &Actor,
    command: Command,
    context: Context,
) -> Result<Transition, TransitionError> {
    let kind = command.kind();
    let actor_email = authorize(state, actor, kind.performer())?;
    let current = state.status;
    let invalid = TransitionError::InvalidTransition {
        current,
        command: kind,
    };
    let mut next = state.clone();
    let mut auto_follow = None;

    let event = match command {
        Command::Deposer => match current {
            Status::Brouillon if context.procedure_closed() => {
                Err(TransitionError::ProcedureClosed { current })
            }
            Status::Brouillon => Ok(next.change(TransitionKind::Deposer, Details::default())),
            Status::EnConstruction
            | Status::EnInstruction
            | Status::Accepte
            | Status::Refuse
            | Status::SansSuite => Err(invalid),
        },
        // Allowed after the closing date too: the owner must be able to answer a correction
        // requested after it, or the dossier would be stuck en construction.
        Command::ResolveCorrection => match current {
            Status::EnConstruction if state.correction_pending => {
                next.correction_pending = false;
                Ok(EventKind::CorrectionResolved)
            }
            Status::Brouillon
            | Status::EnConstruction
            | Status::EnInstruction
            | Status::Accepte
            | Status::Refuse
            | Status::SansSuite => Err(invalid),
        },
        Command::PasserEnInstruction => match current {
            Status::EnConstruction if state.correction_pending => {
                Err(TransitionError::CorrectionPending { current })
            }
            Status::EnConstruction => {
                if next.followers.insert(actor_email.to_owned()) {
                    auto_follow = Some(actor_email.to_owned());
                }
                Ok(next.change(TransitionKind::PasserEnInstruction, Details::default()))
            }
            Status::Brouillon
            | Status::EnInstruction
            | Status::Accepte
            | Status::Refuse
            | Status::SansSuite => Err(invalid),
        },
        // A pending correction does not hold the closing date back (as in DS): the dossier
        // passes en instruction as deposited, and the request lapses — a correction is only
        // pending while the dossier is en construction.
        Command::PasserEnInstructionAuto => match current {
            Status::EnConstruction if !context.procedure_closed() => {
                Err(TransitionError::ClosingDateNotReached { current })
            }
            Status::EnConstruction => {
                next.correction_pending = false;
                Ok(next.change(TransitionKind::PasserEnInstructionAuto, Details::default()))
            }
            Status::Brouillon
            | Status::EnInstruction
            | Status::Accepte
            | Status::Refuse
            | Status::SansSuite => Err(invalid),
        },
        Command::RepasserEnConstruction { message } => match current {
            Status::EnInstruction => Ok(next.change(
                TransitionKind::RepasserEnConstruction,
                Details {
                    motivation: message.map(Message::into_string),
                    ..Details::default()
                },
            )),
            Status::Brouillon
            | Status::EnConstruction
            | Status::Accepte
            | Status::Refuse
            | Status::SansSuite => Err(invalid),
        },
        Command::DemanderCorrection { message, reason } => match current {
            Status::EnInstruction => {
                next.correction_pending = true;
                Ok(next.change(
                    TransitionKind::DemanderCorrection,
                    Details {
                        motivation: Some(message.into_string()),
                        correction_reason: Some(reason),
                        ..Details::default()
                    },
                ))
            }
            Status::Brouillon
            | Status::EnConstruction
            | Status::Accepte
            | Status::Refuse
            | Status::SansSuite => Err(invalid),
        },
        Command::Accepter {
            motivation,
            justificatif,
        } => next.decide(
            TransitionKind::Accepter,
            motivation.map(Motivation::into_string),
            justificatif,
            invalid,
        ),
        Command::Refuser {
            motivation,
            justificatif,
        } => next.decide(
            TransitionKind::Refuser,
            Some(motivation.into_string()),
            justificatif,
            invalid,
        ),
        Command::ClasserSansSuite {
            motivation,
            justificatif,
        } => next.decide(
            TransitionKind::ClasserSansSuite,
            Some(motivation.into_string()),
            justificatif,
            invalid,
        ),
        Command::RepasserEnInstruction { message } => match current {
            Status::Accepte | Status::Refuse | Status::SansSuite if state.archived => {
                Err(TransitionError::Archived {
                    current,
                    command: kind,
                })
            }
            Status::Accepte | Status::Refuse | Status::SansSuite => Ok(next.change(
                TransitionKind::RepasserEnInstruction,
                Details {
                    motivation: message.map(Message::into_string),
                    ..Details::default()
                },
            )),
            Status::Brouillon | Status::EnConstruction | Status::EnInstruction => Err(invalid),
        },
        Command::Archive => match current {
            Status::Accepte | Status::Refuse | Status::SansSuite if state.archived => {
                Err(TransitionError::Archived {
                    current,
                    command: kind,
                })
            }
            Status::Accepte | Status::Refuse | Status::SansSuite => {
                next.archived = true;
                Ok(EventKind::Archived { status: current })
            }
            Status::Brouillon | Status::EnConstruction | Status::EnInstruction => {
                Err(TransitionError::NotDecided { current })
            }
        },
        Command::Unarchive => {
            if state.archived {
                next.archived = false;
                Ok(EventKind::Unarchived { status: current })
            } else {
                Err(TransitionError::NotArchived { current })
            }
        }
    }?;

    // Cannot overflow in practice: at one command per nanosecond, i64 lasts 292 years.
    next.version = state.version + 1;
    Ok(Transition {
        event: WorkflowEvent {
            actor: actor.clone(),
            at: context.now,
            version: next.version,
            kind: event,
        },
        state: next,
        auto_follow,
    })
}

/// The calling instructeur follows the dossier. Idempotent; any deposited status, archived
/// included. Refused like an instructeur command: [`TransitionError::Forbidden`] for another
/// role, [`TransitionError::NotFound`] outside his groupes or on a brouillon.
pub fn follow(state: &DossierState, actor: &Actor) -> Result<FollowOutcome, TransitionError> {
    let email = authorize(state, actor, Performer::Instructeur)?;
    let mut next = state.clone();
    let changed = next.followers.insert(email.to_owned());
    Ok(FollowOutcome {
        state: next,
        changed,
    })
}

/// The calling instructeur stops following the dossier. Idempotent; same checks as [`follow`].
pub fn unfollow(state: &DossierState, actor: &Actor) -> Result<FollowOutcome, TransitionError> {
    let email = authorize(state, actor, Performer::Instructeur)?;
    let mut next = state.clone();
    let changed = next.followers.remove(email);
    Ok(FollowOutcome {
        state: next,
        changed,
    })
}

/// Role check, then visibility; returns the actor's email (service name for the system).
fn authorize<'a>(
    state: &DossierState,
    actor: &'a Actor,
    performer: Performer,
) -> Result<&'a str, TransitionError> {
    match (performer, actor) {
        (Performer::Owner, Actor::Owner { email }) => Ok(email),
        (Performer::System, Actor::System { service }) => Ok(service),
        (
            Performer::Instructeur,
            Actor::Instructeur {
                email,
                of_groupe: true,
            },
        ) if state.status.is_deposited() => Ok(email),
        // Invisible to him: another groupe's dossier, or a brouillon (never routed).
        (Performer::Instructeur, Actor::Instructeur { .. }) => Err(TransitionError::NotFound),
        (
            Performer::Owner,
            Actor::Invitee { .. }
            | Actor::Instructeur { .. }
            | Actor::UndeclaredInstructeur { .. }
            | Actor::Admin { .. }
            | Actor::System { .. }
            | Actor::Other { .. },
        )
        | (
            Performer::System,
            Actor::Owner { .. }
            | Actor::Invitee { .. }
            | Actor::Instructeur { .. }
            | Actor::UndeclaredInstructeur { .. }
            | Actor::Admin { .. }
            | Actor::Other { .. },
        )
        | (
            Performer::Instructeur,
            Actor::Owner { .. }
            | Actor::Invitee { .. }
            | Actor::UndeclaredInstructeur { .. }
            | Actor::Admin { .. }
            | Actor::System { .. }
            | Actor::Other { .. },
        ) => Err(TransitionError::Forbidden),
    }
}

/// Optional parts of a status change.
#[derive(Default)]
struct Details {
    motivation: Option<String>,
    justificatif: Option<FileRef>,
    correction_reason: Option<CorrectionReason>,
}

impl DossierState {
    /// Moves to `transition`'s target and describes the change.
    fn change(&mut self, transition: TransitionKind, details: Details) -> EventKind {
        let from = self.status;
        self.status = transition.target();
        EventKind::StatusChanged(StatusChange {
            from,
            to: self.status,
            transition,
            motivation: details.motivation,
            justificatif: details.justificatif,
            correction_reason: details.correction_reason,
        })
    }

    /// A decision (accepter, refuser, classer sans suite): from en_instruction only.
    fn decide(
        &mut self,
        transition: TransitionKind,
        motivation: Option<String>,
        justificatif: Option<FileRef>,
        invalid: TransitionError,
    ) -> Result<EventKind, TransitionError> {
        match self.status {
            Status::EnInstruction => Ok(self.change(
                transition,
                Details {
                    motivation,
                    justificatif,
                    correction_reason: None,
                },
            )),
            Status::Brouillon
            | Status::EnConstruction
            | Status::Accepte
            | Status::Refuse
            | Status::SansSuite => Err(invalid),
        }
    }
}

#[cfg(test)]
mod tests;
