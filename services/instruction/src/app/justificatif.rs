//! Justificatifs of decisions: an instructeur of the dossier uploads the file first (streamed,
//! capped, type-checked), then names its upload id in Accepter, Refuser or ClasserSansSuite on
//! the same dossier within 24 hours, once. The owner, invitees and instructeurs download it.

use bytes::Bytes;
use chrono::{Duration, Utc};
use futures::Stream;
use mst_kit::auth::{Principal, Role};
use mst_kit::files::{ByteStream, FileError, FileStore};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{ConnectionTrait, Set};

use super::{AppError, Instruction};
use crate::domain::FileRef;

/// Media types accepted as justificatifs.
pub const ACCEPTED: &[&str] = &["application/pdf", "image/png", "image/jpeg"];

/// How long an upload may wait for its decision.
pub const VALIDITY_HOURS: i64 = 24;

/// The `justificatifs` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// An uploaded justificatif.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "justificatifs")]
    pub struct Model {
        /// Upload id handed to the client.
        #[sea_orm(primary_key, auto_increment = false)]
        pub upload_id: String,
        /// Dossier.
        pub dossier_number: i64,
        /// Uploader.
        pub uploaded_by: String,
        /// File id (FileRef.id).
        pub file_id: String,
        /// File name.
        pub file_name: String,
        /// Media type.
        pub content_type: String,
        /// Size in bytes.
        pub size: i64,
        /// SHA-256.
        pub sha256: String,
        /// Key in the store.
        pub storage_key: String,
        /// Uploaded at.
        pub created_at: DateTimeUtc,
        /// Usable until.
        pub expires_at: DateTimeUtc,
        /// Traitement that used it.
        pub used_by: Option<String>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn file_ref(row: &entity::Model) -> FileRef {
    FileRef {
        id: row.file_id.clone(),
        file_name: row.file_name.clone(),
        content_type: row.content_type.clone(),
        size_bytes: u64::try_from(row.size).unwrap_or(0),
        sha256: row.sha256.clone(),
    }
}

fn unknown(upload_id: &str) -> AppError {
    AppError::BadRequest(vec![(
        "justificatif_upload_id".into(),
        format!("Justificatif inconnu, expiré ou déjà utilisé : {upload_id}"),
    )])
}

impl Instruction {
    /// Stores a justificatif for a coming decision on `number`. Instructeur of the dossier.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_justificatif<S>(
        &self,
        who: &Principal,
        files: &FileStore,
        number: i64,
        file_name: &str,
        content_type: &str,
        size: u64,
        chunks: S,
    ) -> Result<entity::Model, AppError>
    where
        S: Stream<Item = Result<Bytes, String>> + Unpin,
    {
        if !who.has(Role::Instructeur) {
            return Err(AppError::Forbidden(format!(
                "{} is not an instructeur",
                who.email
            )));
        }
        self.dossier(who, number).await?;
        let name: String = file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let name = name.trim().to_owned();
        let content_type = content_type.trim().to_ascii_lowercase();
        let mut violations = Vec::new();
        if name.is_empty() {
            violations.push((
                "metadata.file_name".to_owned(),
                "Nom de fichier invalide".to_owned(),
            ));
        }
        if !ACCEPTED.contains(&content_type.as_str()) {
            violations.push((
                "metadata.content_type".to_owned(),
                "Le justificatif doit être un PDF, un PNG ou un JPEG".to_owned(),
            ));
        }
        if size == 0 {
            violations.push((
                "metadata.size_bytes".to_owned(),
                "La taille du fichier doit être positive".to_owned(),
            ));
        }
        if !violations.is_empty() {
            return Err(AppError::BadRequest(violations));
        }
        if size > files.max_bytes {
            return Err(AppError::TooLarge {
                what: format!("Le justificatif « {name} »"),
                limit_bytes: files.max_bytes,
            });
        }
        let file_id = uuid::Uuid::now_v7().to_string();
        let key = format!("justificatifs/{number}/{file_id}");
        let stored = files
            .put_stream(&key, &content_type, size, files.max_bytes, chunks)
            .await
            .map_err(|e| match e {
                FileError::TooLarge(limit) => AppError::TooLarge {
                    what: format!("Le justificatif « {name} »"),
                    limit_bytes: limit,
                },
                FileError::Store(e) => AppError::Unexpected(e.into()),
                other => AppError::BadRequest(vec![(
                    "chunk".into(),
                    format!("Justificatif refusé : {other}"),
                )]),
            })?;
        let now = Utc::now();
        let row = entity::ActiveModel {
            upload_id: Set(uuid::Uuid::now_v7().to_string()),
            dossier_number: Set(number),
            uploaded_by: Set(who.email.clone()),
            file_id: Set(file_id),
            file_name: Set(name),
            content_type: Set(content_type),
            size: Set(i64::try_from(stored.size).unwrap_or(i64::MAX)),
            sha256: Set(stored.sha256),
            storage_key: Set(key.clone()),
            created_at: Set(now),
            expires_at: Set(now + Duration::hours(VALIDITY_HOURS)),
            used_by: Set(None),
        };
        match row.insert(self.db()).await {
            Ok(row) => Ok(row),
            Err(e) => {
                files.delete(&key).await;
                Err(e.into())
            }
        }
    }

    /// The justificatif an upload id names, if it is usable for a decision on `number` now.
    pub async fn justificatif_for_decision(
        &self,
        number: i64,
        upload_id: &str,
    ) -> Result<FileRef, AppError> {
        let row = entity::Entity::find_by_id(upload_id.to_owned())
            .one(self.db())
            .await?
            .filter(|r| {
                r.dossier_number == number && r.used_by.is_none() && r.expires_at > Utc::now()
            })
            .ok_or_else(|| unknown(upload_id))?;
        Ok(file_ref(&row))
    }

    /// Marks the justificatif with `file_id` used by `traitement_id`, in the decision's
    /// transaction; fails if another decision used it first.
    pub(crate) async fn use_justificatif<C: ConnectionTrait>(
        &self,
        txn: &C,
        file_id: &str,
        traitement_id: &str,
    ) -> Result<(), AppError> {
        let res = entity::Entity::update_many()
            .col_expr(entity::Column::UsedBy, Expr::value(traitement_id))
            .filter(entity::Column::FileId.eq(file_id))
            .filter(entity::Column::UsedBy.is_null())
            .exec(txn)
            .await?;
        if res.rows_affected != 1 {
            return Err(unknown(file_id));
        }
        Ok(())
    }

    /// A decision's justificatif and its content, for the dossier's owner, invitees,
    /// instructeurs, or a service.
    pub async fn justificatif_file(
        &self,
        who: &Principal,
        files: &FileStore,
        number: i64,
        file_id: &str,
    ) -> Result<(entity::Model, ByteStream), AppError> {
        let allowed = if who.has(Role::System) {
            true
        } else if who.has(Role::Instructeur) || who.has(Role::Admin) {
            self.dossier(who, number).await.is_ok()
        } else {
            let access = self
                .check_access(&system(), number, &who.email, false)
                .await?;
            // Owner and invitees (the decision email links to it); not an expert.
            access.relations.iter().any(|r| {
                matches!(
                    r,
                    super::workflow::Relation::Owner | super::workflow::Relation::Invitee
                )
            })
        };
        let not_found = || AppError::NotFound("justificatif", file_id.to_owned());
        if !allowed {
            return Err(not_found());
        }
        let row = entity::Entity::find()
            .filter(entity::Column::FileId.eq(file_id))
            .filter(entity::Column::DossierNumber.eq(number))
            .filter(entity::Column::UsedBy.is_not_null())
            .one(self.db())
            .await?
            .ok_or_else(not_found)?;
        let content = files
            .get_stream(&row.storage_key)
            .await
            .map_err(|e| AppError::Unexpected(e.into()))?;
        Ok((row, content))
    }
}

fn system() -> Principal {
    Principal {
        email: super::PRODUCER.to_owned(),
        name: None,
        roles: [Role::System].into(),
    }
}
