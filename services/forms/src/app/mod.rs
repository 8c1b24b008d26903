//! Use cases of the forms service, one async fn per command, transport-agnostic: they take the
//! caller and domain inputs, run in one database transaction with their outbox events, and
//! return views the gRPC layer turns into responses.

mod dossiers;
mod files;
mod procedures;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use mst_bus::RelayHandle;
use mst_kit::ApiError;
use mst_kit::auth::{Principal, Role};
use sea_orm::{DatabaseConnection, DbErr};

use crate::domain::form::FormDefinition;
use crate::domain::geo::Geo;
use crate::domain::procedure::Status;
use crate::domain::validate::Violation;
use crate::store;

pub use dossiers::{DossierView, HistoryPage, Patch, PatchOp, Scope};
pub use files::{Download, UploadMeta};
pub use procedures::{
    LoadOutcome, ProcedureUpdate, ProcedureView, RevisionState, RevisionView, StoredNotice,
};

/// Producer name in event metadata.
pub const PRODUCER: &str = "forms";

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Invalid answers: every violation, on champ paths.
    #[error("invalid answers")]
    Invalid(Vec<Violation>),
    /// Invalid request fields (path, French message).
    #[error("invalid request")]
    BadRequest(Vec<(String, String)>),
    /// Not found, or not visible to the caller.
    #[error("{0} {1} not found")]
    NotFound(&'static str, String),
    /// The caller may see the resource but not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Not allowed in the current state.
    #[error("{reason}: {message}")]
    WrongState {
        /// Machine-readable reason (`DOSSIER_FROZEN`, …).
        reason: &'static str,
        /// Current status (or state) name.
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
    /// A service this one depends on is unreachable; nothing changed, retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
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
            AppError::Invalid(violations) => ApiError::Invalid(
                violations
                    .into_iter()
                    .map(|v| mst_kit::Violation::new(v.path.to_string(), v.message))
                    .collect(),
            ),
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

/// Service limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Patches per UpdateDossier.
    pub max_patches: usize,
    /// Page size cap of lists.
    pub max_page_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_patches: 500,
            max_page_size: 500,
        }
    }
}

/// The forms use cases over one database.
#[derive(Clone)]
pub struct Forms {
    db: DatabaseConnection,
    relay: RelayHandle,
    geo: &'static dyn Geo,
    limits: Limits,
    files: crate::files::FileStore,
    forms_cache: Arc<RwLock<HashMap<String, Arc<FormDefinition>>>>,
    /// The instruction service, asked who else may read a dossier (instructeurs of its
    /// groupe, experts); `None`: only owners, invitees, admins and services read.
    instruction: Option<crate::deposit::Client>,
}

impl std::fmt::Debug for Forms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forms")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Forms {
    /// The service's database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }
}

impl Forms {
    /// Use cases over `db`, publishing through the relay behind `relay`, storing attachments in
    /// `files`.
    pub fn new(
        db: DatabaseConnection,
        relay: RelayHandle,
        geo: &'static dyn Geo,
        files: crate::files::FileStore,
    ) -> Self {
        Self {
            db,
            relay,
            geo,
            files,
            limits: Limits::default(),
            forms_cache: Arc::default(),
            instruction: None,
        }
    }

    /// The same, asking the instruction service at `channel` who may read a dossier besides
    /// its owner and invitees.
    pub fn with_instruction(
        mut self,
        channel: tonic::transport::Channel,
        token: mst_kit::auth::ServiceToken,
    ) -> Self {
        self.instruction = Some(
            mst_proto::instruction::instruction_internal_service_client::InstructionInternalServiceClient::with_interceptor(
                channel, token,
            ),
        );
        self
    }

    /// The form of a revision. Published revisions never change, so they are cached; a draft is
    /// read each time.
    async fn form_of(&self, revision_id: &str) -> Result<Arc<FormDefinition>, AppError> {
        if let Some(form) = self
            .forms_cache
            .read()
            .ok()
            .and_then(|c| c.get(revision_id).cloned())
        {
            return Ok(form);
        }
        let rev = store::revision(&self.db, revision_id)
            .await?
            .ok_or_else(|| AppError::NotFound("revision", revision_id.to_owned()))?;
        let form: FormDefinition = serde_json::from_str(&rev.definition)?;
        let form = Arc::new(form);
        if rev.state != "draft"
            && let Ok(mut cache) = self.forms_cache.write()
        {
            cache.insert(revision_id.to_owned(), form.clone());
        }
        Ok(form)
    }
}

/// The event actor of a caller.
fn actor(who: &Principal, role: Role) -> mst_proto::events::Actor {
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

fn require(who: &Principal, role: Role) -> Result<(), AppError> {
    if who.has(role) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "{} lacks role {role}",
            who.email
        )))
    }
}

fn status_of(stored: &str) -> Result<Status, AppError> {
    Status::parse(stored)
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("unknown stored status {stored:?}")))
}

fn page_size(requested: i32, default: u64, max: u64) -> u64 {
    match u64::try_from(requested) {
        Ok(0) | Err(_) => default,
        Ok(n) => n.min(max),
    }
}
