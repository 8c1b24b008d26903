//! The one mapping from application errors to gRPC statuses.
//!
//! Each service keeps its own `AppError` (what its use cases can fail with) and converts it into
//! [`ApiError`]; this module alone decides the status code and the `google.rpc` rich details
//! (`BadRequest` field violations, `PreconditionFailure`, `ResourceInfo`, `ErrorInfo`) that clients
//! read. Unexpected errors are logged with their cause chain and answered with a generic message.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Domain used in `google.rpc.ErrorInfo`.
pub const ERROR_DOMAIN: &str = "mst-dossiers";

/// One invalid field of a request: the path of the field and a French message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field (`champs.p_siret`, `expected_version`, …).
    pub field: String,
    /// French, user-facing description of what is wrong.
    pub description: String,
}

impl Violation {
    /// A violation on `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Every way a request can fail, as clients see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; every violation is listed (INVALID_ARGUMENT + BadRequest).
    #[error("invalid request ({} violation(s))", .0.len())]
    Invalid(Vec<Violation>),
    /// The resource does not exist, or the caller may not know it exists (NOT_FOUND).
    #[error("{resource} {id} not found")]
    NotFound {
        /// Kind of resource (`dossier`, `procedure`, …).
        resource: &'static str,
        /// Its identifier as the client gave it.
        id: String,
    },
    /// The resource is not in a state that allows the operation (FAILED_PRECONDITION).
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. `DOSSIER_EN_INSTRUCTION`.
        reason: String,
        /// Human-readable message (French).
        message: String,
        /// Extra `ErrorInfo` metadata, e.g. `current_status`.
        metadata: HashMap<String, String>,
        /// Precondition violations (type, subject, description).
        violations: Vec<(String, String, String)>,
    },
    /// The client's expected version is stale (ABORTED); the current version is given back.
    #[error("version conflict: expected {expected}, current {current}")]
    VersionConflict {
        /// Kind of resource.
        resource: &'static str,
        /// Identifier of the resource.
        id: String,
        /// Version the client sent.
        expected: i64,
        /// Version now stored.
        current: i64,
    },
    /// Authenticated, but not allowed (PERMISSION_DENIED).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// No valid credentials (UNAUTHENTICATED).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A size or quota limit was exceeded (RESOURCE_EXHAUSTED).
    #[error("too large: {what} exceeds {limit_bytes} bytes")]
    TooLarge {
        /// What was too large (`pièce jointe`, …).
        what: String,
        /// The configured limit.
        limit_bytes: u64,
    },
    /// The resource already exists (ALREADY_EXISTS).
    #[error("{resource} {id} already exists")]
    AlreadyExists {
        /// Kind of resource.
        resource: &'static str,
        /// Its identifier.
        id: String,
    },
    /// A dependency is temporarily unavailable (UNAVAILABLE); the client may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else: logged with its cause chain, answered with a generic message (INTERNAL).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    /// FAILED_PRECONDITION because the resource is in `current_status` (reason e.g.
    /// `INVALID_TRANSITION`, `DOSSIER_FROZEN`); `message` names the state in French.
    pub fn wrong_state(
        reason: impl Into<String>,
        current_status: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::FailedPrecondition {
            reason: reason.into(),
            message: message.into(),
            metadata: HashMap::from([("current_status".to_owned(), current_status.into())]),
            violations: Vec::new(),
        }
    }

    /// A single field violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![Violation::new(field, description)])
    }
}

/// Whether a database error says the database is unreachable, restarting or busy — a retry may
/// succeed and nothing was changed — rather than a bug: no connection from the pool in time, a
/// broken connection, PostgreSQL's connection exceptions (SQLSTATE class 08), operator
/// intervention (57P: shutdown, crash recovery, not yet accepting connections) and too many
/// connections (53300), SQLite's busy and locked codes.
pub fn db_unavailable(e: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::{DbErr, RuntimeErr};
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Io(_)
                | Sqlx::Tls(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed
                | Sqlx::BeginFailed => true,
                Sqlx::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "53300"
                        || code
                            .parse::<u32>()
                            .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
                }),
                _ => false,
            }
        }
        _ => false,
    }
}

impl From<sea_orm::DbErr> for ApiError {
    /// UNAVAILABLE when the database is out of reach for now ([`db_unavailable`]), else INTERNAL.
    fn from(e: sea_orm::DbErr) -> Self {
        if db_unavailable(&e) {
            ApiError::Unavailable(format!("database: {e}"))
        } else {
            ApiError::Unexpected(e.into())
        }
    }
}

fn info(reason: &str, metadata: HashMap<String, String>) -> ErrorDetails {
    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata)
}

/// An id echoed in an error, cut to 100 characters: a client sending a megabyte as an id must get
/// its NOT_FOUND, not an HTTP/2 error because the `grpc-message` header outgrew the limit.
fn clip(id: String) -> String {
    if id.chars().count() <= 100 {
        id
    } else {
        let mut cut: String = id.chars().take(100).collect();
        cut.push('…');
        cut
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::Invalid(violations) => {
                let message = match violations.as_slice() {
                    [one] => format!("{} : {}", one.field, one.description),
                    many => format!("{} champs invalides", many.len()),
                };
                let fv: Vec<FieldViolation> = violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.description))
                    .collect();
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(fv),
                )
            }
            ApiError::NotFound { resource, id } => {
                let id = clip(id);
                Status::with_error_details(
                    Code::NotFound,
                    format!("{resource} {id} introuvable"),
                    ErrorDetails::with_resource_info(resource, id, "", "not found"),
                )
            }
            ApiError::FailedPrecondition {
                reason,
                message,
                metadata,
                violations,
            } => {
                let mut details = info(&reason, metadata);
                if !violations.is_empty() {
                    details.set_precondition_failure(
                        violations
                            .into_iter()
                            .map(|(t, s, d)| tonic_types::PreconditionViolation::new(t, s, d))
                            .collect::<Vec<_>>(),
                    );
                }
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            ApiError::VersionConflict {
                resource,
                id,
                expected,
                current,
            } => {
                let metadata = HashMap::from([
                    ("resource".to_owned(), resource.to_owned()),
                    ("id".to_owned(), id.clone()),
                    ("expected_version".to_owned(), expected.to_string()),
                    ("current_version".to_owned(), current.to_string()),
                ]);
                Status::with_error_details(
                    Code::Aborted,
                    format!(
                        "{resource} {id} a été modifié entre-temps (version attendue {expected}, version actuelle {current})"
                    ),
                    info("STALE_VERSION", metadata),
                )
            }
            ApiError::PermissionDenied(reason) => {
                tracing::info!(%reason, "permission denied");
                Status::permission_denied("accès refusé")
            }
            ApiError::Unauthenticated(reason) => {
                tracing::info!(%reason, "unauthenticated request");
                Status::unauthenticated("authentification requise")
            }
            ApiError::TooLarge { what, limit_bytes } => {
                let metadata = HashMap::from([("limit_bytes".to_owned(), limit_bytes.to_string())]);
                Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("{what} dépasse la taille maximale de {limit_bytes} octets"),
                    info("TOO_LARGE", metadata),
                )
            }
            ApiError::AlreadyExists { resource, id } => {
                let id = clip(id);
                Status::with_error_details(
                    Code::AlreadyExists,
                    format!("{resource} {id} existe déjà"),
                    ErrorDetails::with_resource_info(resource, id, "", "already exists"),
                )
            }
            ApiError::Unavailable(reason) => {
                tracing::warn!(%reason, "dependency unavailable");
                Status::unavailable("service momentanément indisponible, réessayez")
            }
            ApiError::Unexpected(error) => {
                tracing::error!(error = ?error, "unexpected error");
                Status::internal("erreur interne")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn invalid_input_becomes_invalid_argument_with_every_field_violation() {
        let status = Status::from(ApiError::Invalid(vec![
            Violation::new(
                "champs.p_siret",
                "Le numéro SIRET doit comporter 14 chiffres",
            ),
            Violation::new("champs.p_email", "Adresse électronique invalide"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["champs.p_siret", "champs.p_email"]);
    }

    #[test]
    fn stale_version_becomes_aborted_carrying_the_current_version() {
        let status = Status::from(ApiError::VersionConflict {
            resource: "dossier",
            id: "42".into(),
            expected: 3,
            current: 5,
        });
        assert_eq!(status.code(), Code::Aborted);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(
            info.metadata.get("current_version").map(String::as_str),
            Some("5")
        );
    }

    #[test]
    fn a_wrong_state_names_the_current_status() {
        let status = Status::from(ApiError::wrong_state(
            "INVALID_TRANSITION",
            "en_instruction",
            "Le dossier est en instruction",
        ));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_TRANSITION");
        assert_eq!(
            info.metadata.get("current_status").map(String::as_str),
            Some("en_instruction")
        );
    }

    #[test]
    fn unexpected_errors_do_not_leak_their_cause() {
        let status = Status::from(ApiError::Unexpected(anyhow::anyhow!("password=secret")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn an_unreachable_database_is_unavailable_and_anything_else_internal() {
        use sea_orm::sqlx::Error as Sqlx;
        use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};
        use std::sync::Arc;
        let sqlx = |e: Sqlx| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for (e, code) in [
            (
                DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
                Code::Unavailable,
            ),
            (
                DbErr::Conn(RuntimeErr::Internal("refused".into())),
                Code::Unavailable,
            ),
            (sqlx(Sqlx::Io(refused)), Code::Unavailable),
            (sqlx(Sqlx::PoolTimedOut), Code::Unavailable),
            (sqlx(Sqlx::PoolClosed), Code::Unavailable),
            (sqlx(Sqlx::RowNotFound), Code::Internal),
            (sqlx(Sqlx::Protocol("bad".into())), Code::Internal),
            (DbErr::RecordNotFound("x".into()), Code::Internal),
            (DbErr::Custom("x".into()), Code::Internal),
        ] {
            let what = format!("{e:?}");
            assert_eq!(Status::from(ApiError::from(e)).code(), code, "{what}");
        }
    }

    #[test]
    fn each_kind_maps_to_its_code() {
        let cases = [
            (
                ApiError::NotFound {
                    resource: "dossier",
                    id: "1".into(),
                },
                Code::NotFound,
            ),
            (
                ApiError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (ApiError::Unauthenticated("x".into()), Code::Unauthenticated),
            (
                ApiError::TooLarge {
                    what: "fichier".into(),
                    limit_bytes: 1,
                },
                Code::ResourceExhausted,
            ),
            (
                ApiError::FailedPrecondition {
                    reason: "DOSSIER_EN_INSTRUCTION".into(),
                    message: "le dossier est en instruction".into(),
                    metadata: HashMap::new(),
                    violations: vec![],
                },
                Code::FailedPrecondition,
            ),
            (
                ApiError::AlreadyExists {
                    resource: "groupe",
                    id: "g".into(),
                },
                Code::AlreadyExists,
            ),
            (ApiError::Unavailable("nats".into()), Code::Unavailable),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }
}
