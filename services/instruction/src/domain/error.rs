//! Why the workflow refused a command: [`TransitionError`], with the stable reason of the proto's
//! `ErrorInfo`, the gRPC [`ErrorCategory`] it belongs to and a French message for the user.
//!
//! A refusal changes nothing and emits no event. The messages of state errors name the current
//! state (« Le dossier n° 42 est en instruction : il ne peut pas être déposé »); those of
//! [`TransitionError::NotFound`] and [`TransitionError::Forbidden`] do not, since the caller may
//! not know it.

use thiserror::Error;

use super::status::Status;
use super::workflow::CommandKind;

/// How a refusal surfaces at the gRPC boundary (the `Code` is chosen there, not here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// The dossier is invisible to the actor (another groupe, or a brouillon for an
    /// instructeur): NOT_FOUND, so existence is not leaked.
    NotFound,
    /// The actor's role may not run the command: PERMISSION_DENIED.
    PermissionDenied,
    /// The command is not allowed in the dossier's state: FAILED_PRECONDITION with
    /// `ErrorInfo{reason, metadata: {current_status, transition}}`.
    FailedPrecondition,
}

/// A command refused by [`super::workflow::apply`] (or by [`super::workflow::follow`] /
/// [`super::workflow::unfollow`], which can only refuse for visibility or role).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransitionError {
    /// The command does not apply to the current status (reason `INVALID_TRANSITION`).
    #[error("{command} is not allowed on a dossier {current}")]
    InvalidTransition {
        /// Status of the dossier.
        current: Status,
        /// The refused command.
        command: CommandKind,
    },
    /// Passer en instruction while a correction request waits for the owner's resubmission
    /// (reason `CORRECTION_PENDING`).
    #[error("a correction is pending on the dossier {current}")]
    CorrectionPending {
        /// Status of the dossier (en_construction).
        current: Status,
    },
    /// The dossier is archived: archiving again, or re-opening before unarchiving (reason
    /// `ARCHIVED`).
    #[error("{command} is not allowed on an archived dossier {current}")]
    Archived {
        /// Status of the dossier (a decided one).
        current: Status,
        /// The refused command.
        command: CommandKind,
    },
    /// Unarchiving a dossier that is not archived (reason `NOT_ARCHIVED`).
    #[error("the dossier {current} is not archived")]
    NotArchived {
        /// Status of the dossier.
        current: Status,
    },
    /// Archiving a dossier that is not decided (reason `NOT_DECIDED`).
    #[error("cannot archive the undecided dossier {current}")]
    NotDecided {
        /// Status of the dossier.
        current: Status,
    },
    /// Depositing a brouillon after the procedure's closing date (reason `PROCEDURE_CLOSED`).
    #[error("the procedure is closed: the dossier {current} cannot be deposited")]
    ProcedureClosed {
        /// Status of the dossier (brouillon).
        current: Status,
    },
    /// The automatic passage en instruction before the procedure's closing date (reason
    /// `CLOSING_DATE_NOT_REACHED`): a scheduler bug, never a user's doing.
    #[error("the closing date is not reached: the dossier {current} cannot pass automatically")]
    ClosingDateNotReached {
        /// Status of the dossier (en_construction).
        current: Status,
    },
    /// The actor's role may not run this command (reason `FORBIDDEN`): a promoteur, an invitee,
    /// an admin or an undeclared instructeur for an instructeur command; anyone but the owner
    /// for a deposit; anyone but the system for the automatic passage.
    #[error("the actor may not do this")]
    Forbidden,
    /// The dossier is invisible to the instructeur (reason `NOT_FOUND`): routed to another
    /// groupe, or still a brouillon.
    #[error("dossier not found")]
    NotFound,
}

impl TransitionError {
    /// Stable machine reason for `google.rpc.ErrorInfo.reason`.
    pub const fn reason(&self) -> &'static str {
        match self {
            TransitionError::InvalidTransition { .. } => "INVALID_TRANSITION",
            TransitionError::CorrectionPending { .. } => "CORRECTION_PENDING",
            TransitionError::Archived { .. } => "ARCHIVED",
            TransitionError::NotArchived { .. } => "NOT_ARCHIVED",
            TransitionError::NotDecided { .. } => "NOT_DECIDED",
            TransitionError::ProcedureClosed { .. } => "PROCEDURE_CLOSED",
            TransitionError::ClosingDateNotReached { .. } => "CLOSING_DATE_NOT_REACHED",
            TransitionError::Forbidden => "FORBIDDEN",
            TransitionError::NotFound => "NOT_FOUND",
        }
    }

    /// Which gRPC family the refusal belongs to.
    pub const fn category(&self) -> ErrorCategory {
        match self {
            TransitionError::InvalidTransition { .. }
            | TransitionError::CorrectionPending { .. }
            | TransitionError::Archived { .. }
            | TransitionError::NotArchived { .. }
            | TransitionError::NotDecided { .. }
            | TransitionError::ProcedureClosed { .. }
            | TransitionError::ClosingDateNotReached { .. } => ErrorCategory::FailedPrecondition,
            TransitionError::Forbidden => ErrorCategory::PermissionDenied,
            TransitionError::NotFound => ErrorCategory::NotFound,
        }
    }

    /// Status of the dossier, for `ErrorInfo.metadata.current_status`; `None` for
    /// [`TransitionError::Forbidden`] and [`TransitionError::NotFound`], which must not reveal it.
    pub const fn current_status(&self) -> Option<Status> {
        match self {
            TransitionError::InvalidTransition { current, .. }
            | TransitionError::CorrectionPending { current }
            | TransitionError::Archived { current, .. }
            | TransitionError::NotArchived { current }
            | TransitionError::NotDecided { current }
            | TransitionError::ProcedureClosed { current }
            | TransitionError::ClosingDateNotReached { current } => Some(*current),
            TransitionError::Forbidden | TransitionError::NotFound => None,
        }
    }

    /// French message for the user, without the dossier number (« Le dossier est … »).
    pub fn message_fr(&self) -> String {
        self.render_fr("Le dossier")
    }

    /// French message for the user naming the dossier (« Le dossier n° 42 est … »).
    pub fn message_fr_for(&self, number: i64) -> String {
        self.render_fr(&format!("Le dossier n° {number}"))
    }

    fn render_fr(&self, subject: &str) -> String {
        match self {
            TransitionError::InvalidTransition {
                current: Status::EnConstruction,
                command: CommandKind::ResolveCorrection,
            } => format!(
                "{subject} est en construction et aucune correction n'est demandée : \
                 il ne peut pas être redéposé"
            ),
            TransitionError::InvalidTransition { current, command } => format!(
                "{subject} est {} : il ne peut pas {}",
                current.label_fr(),
                command.infinitive_fr()
            ),
            TransitionError::CorrectionPending { current } => format!(
                "{subject} est {} avec une demande de correction en attente : il ne pourra \
                 passer en instruction qu'une fois corrigé et redéposé par le demandeur",
                current.label_fr()
            ),
            TransitionError::Archived {
                current,
                command: CommandKind::Archive,
            } => format!("{subject} est {} et déjà archivé", current.label_fr()),
            TransitionError::Archived { current, command } => format!(
                "{subject} est {} et archivé : il doit être désarchivé avant de {}",
                current.label_fr(),
                command.infinitive_fr()
            ),
            TransitionError::NotArchived { current } => format!(
                "{subject} est {} et n'est pas archivé : il ne peut pas être désarchivé",
                current.label_fr()
            ),
            TransitionError::NotDecided { current } => format!(
                "{subject} est {} : seul un dossier accepté, refusé ou classé sans suite peut \
                 être archivé",
                current.label_fr()
            ),
            TransitionError::ProcedureClosed { current } => format!(
                "{subject} est {} et la démarche est close : il ne peut plus être déposé",
                current.label_fr()
            ),
            TransitionError::ClosingDateNotReached { current } => format!(
                "{subject} est {} mais la date de clôture de la démarche n'est pas atteinte : \
                 il ne peut pas passer automatiquement en instruction",
                current.label_fr()
            ),
            TransitionError::Forbidden => {
                String::from("Vous n'êtes pas autorisé à effectuer cette action sur ce dossier")
            }
            TransitionError::NotFound => format!("{subject} est introuvable"),
        }
    }
}
