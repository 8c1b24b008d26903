//! Use cases of the instruction service, transport-agnostic: the workflow (deposit, transitions
//! with the forms freeze of invariant I1, follows), access checks, and the roster.

pub mod avis;
pub mod board;
pub mod export;
pub mod justificatif;
pub mod roster;
pub mod stats;
pub mod workflow;

use mst_bus::RelayHandle;
use mst_kit::ApiError;
use mst_kit::auth::{Principal, Role};
use sea_orm::{DatabaseConnection, DbErr};

use crate::domain::{ErrorCategory, TransitionError};

pub use workflow::{
    AccessAnswer, DepositInput, DepositResult, DossierView, FormsFreeze, Headline, Relation,
    Transition, procedure_ref, status_to_pb, transition_to_pb,
};

/// Producer name in event metadata.
pub const PRODUCER: &str = "instruction";

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Invalid request fields (path, French message).
    #[error("invalid request")]
    BadRequest(Vec<(String, String)>),
    /// Not found, or not visible to the caller.
    #[error("{0} {1} not found")]
    NotFound(&'static str, String),
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Not allowed in the current state.
    #[error("{reason}: {message}")]
    WrongState {
        /// Machine-readable reason.
        reason: &'static str,
        /// Current status name.
        current: String,
        /// French message.
        message: String,
    },
    /// Stale expected version.
    #[error("stale version of {resource} {id}")]
    Stale {
        /// Resource kind.
        resource: &'static str,
        /// Its id.
        id: String,
        /// Sent.
        expected: i64,
        /// Stored.
        current: i64,
    },
    /// The id exists already.
    #[error("{0} {1} already exists")]
    AlreadyExists(&'static str, String),
    /// Over a size limit.
    #[error("{what} exceeds {limit_bytes} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// The limit.
        limit_bytes: u64,
    },
    /// A dependency (the forms service) is unreachable: retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl AppError {
    /// The error of a refused workflow command on dossier `number`.
    pub fn transition(number: i64, e: TransitionError) -> Self {
        match e.category() {
            ErrorCategory::NotFound => AppError::NotFound("dossier", number.to_string()),
            ErrorCategory::PermissionDenied => AppError::Forbidden(e.to_string()),
            ErrorCategory::FailedPrecondition => AppError::WrongState {
                reason: e.reason(),
                current: e
                    .current_status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                message: e.message_fr_for(number),
            },
        }
    }
}

impl From<DbErr> for AppError {
    /// Unavailable while the database is out of reach (the client may retry; nothing changed),
    /// else unexpected.
    fn from(e: DbErr) -> Self {
        if mst_kit::error::db_unavailable(&e) {
            AppError::Unavailable(format!("database: {e}"))
        } else {
            AppError::Unexpected(e.into())
        }
    }
}

impl From<serde_json::Error> for AppError {
    fn from(e: serde_json::Error) -> Self {
        AppError::Unexpected(e.into())
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::BadRequest(v) => ApiError::Invalid(
                v.into_iter()
                    .map(|(f, m)| mst_kit::Violation::new(f, m))
                    .collect(),
            ),
            AppError::NotFound(resource, id) => ApiError::NotFound { resource, id },
            AppError::Forbidden(why) => ApiError::PermissionDenied(why),
            AppError::WrongState {
                reason,
                current,
                message,
            } => ApiError::wrong_state(reason, current, message),
            AppError::Stale {
                resource,
                id,
                expected,
                current,
            } => ApiError::VersionConflict {
                resource,
                id,
                expected,
                current,
            },
            AppError::AlreadyExists(resource, id) => ApiError::AlreadyExists { resource, id },
            AppError::TooLarge { what, limit_bytes } => ApiError::TooLarge { what, limit_bytes },
            AppError::Unavailable(why) => ApiError::Unavailable(why),
            AppError::Unexpected(e) => ApiError::Unexpected(e),
        }
    }
}

impl From<AppError> for tonic::Status {
    fn from(e: AppError) -> Self {
        ApiError::from(e).into()
    }
}

/// The instruction use cases over one database.
#[derive(Clone)]
pub struct Instruction {
    db: DatabaseConnection,
    relay: RelayHandle,
    forms: FormsFreeze,
    freeze_lease: std::time::Duration,
}

impl std::fmt::Debug for Instruction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instruction")
    }
}

impl Instruction {
    /// Use cases over `db`, publishing through `relay`, freezing dossiers through `forms`.
    pub fn new(db: DatabaseConnection, relay: RelayHandle, forms: FormsFreeze) -> Self {
        Self {
            db,
            relay,
            forms,
            freeze_lease: mst_kit::FREEZE_LEASE,
        }
    }

    /// The same use cases committing a passage en instruction only within `lease` of asking for
    /// the freeze (default [`mst_kit::FREEZE_LEASE`], which forms relies on: only tests shorten
    /// it).
    pub fn with_freeze_lease(mut self, lease: std::time::Duration) -> Self {
        self.freeze_lease = lease;
        self
    }

    /// The database (roster use cases and tests).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The relay handle.
    pub fn relay(&self) -> &RelayHandle {
        &self.relay
    }

    /// The forms service client (freeze, dossier content for exports).
    pub fn forms(&self) -> &FormsFreeze {
        &self.forms
    }
}

/// The event actor of a caller.
pub fn actor(who: &Principal, role: Role) -> mst_proto::events::Actor {
    mst_proto::events::Actor {
        email: who.email.clone(),
        role: match role {
            Role::Promoteur => mst_proto::events::Role::Promoteur,
            Role::Instructeur => mst_proto::events::Role::Instructeur,
            Role::Expert => mst_proto::events::Role::Expert,
            Role::Ambassadeur => mst_proto::events::Role::Ambassadeur,
            Role::Admin => mst_proto::events::Role::Admin,
            Role::System => mst_proto::events::Role::System,
        } as i32,
    }
}

/// `Ok` when the caller holds `role`.
pub fn require(who: &Principal, role: Role) -> Result<(), AppError> {
    if who.has(role) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "{} lacks role {role}",
            who.email
        )))
    }
}

/// A page size: `requested` when positive, else `default`, capped at `max`.
pub fn page_size(requested: i32, default: u64, max: u64) -> u64 {
    match u64::try_from(requested) {
        Ok(0) | Err(_) => default,
        Ok(n) => n.min(max),
    }
}
