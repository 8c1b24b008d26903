//! Attached files of PIECE_JUSTIFICATIVE champs: upload (appended to the champ in one
//! transaction with its history entry and event), download, and the copies a duplicate makes.

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use mst_kit::auth::{Principal, Role};
use mst_proto::events::{DossierContentChanged, EventMetadata};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use super::{AppError, Forms, PRODUCER, actor, status_of};
use crate::domain::form::{Constraints, FieldType};
use crate::domain::procedure::{Access, Headline};
use crate::domain::validate::Violation;
use crate::domain::value::{Answers, ChampPath, FileRef, Value};
use crate::files::{DEFAULT_TYPES, FileError};
use crate::store::{self, dossier, file, history};

/// What the client says of a file before sending it.
#[derive(Debug, Clone)]
pub struct UploadMeta {
    /// Dossier.
    pub number: i64,
    /// The PIECE_JUSTIFICATIVE champ.
    pub path: ChampPath,
    /// File name (sanitised here).
    pub file_name: String,
    /// Declared media type.
    pub content_type: String,
    /// Declared size.
    pub size: u64,
    /// Optional expected content version.
    pub expected_version: Option<i64>,
}

/// A file ready to be streamed to a reader.
#[derive(Debug, Clone)]
pub struct Download {
    /// The row.
    pub row: file::Model,
}

/// A file name without directories or control characters, at most 255 bytes of UTF-8.
fn sanitize(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        return None;
    }
    let mut out = String::new();
    for c in clean.chars() {
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    Some(out)
}

fn invalid(path: &ChampPath, message: impl Into<String>) -> AppError {
    AppError::Invalid(vec![Violation::new(path.clone(), message)])
}

impl Forms {
    /// Stores a file sent as `chunks` and appends it to the champ. Owner or invitee of an
    /// editable dossier. Oversize content is refused before anything is kept.
    pub async fn upload_file<S>(
        &self,
        who: &Principal,
        meta: UploadMeta,
        chunks: S,
    ) -> Result<(FileRef, i64), AppError>
    where
        S: Stream<Item = Result<Bytes, String>> + Unpin,
    {
        let number = meta.number;
        let view = self.dossier(who, number).await?;
        if !view.access.edits() {
            return Err(AppError::Forbidden(format!(
                "{} reads dossier {number} but does not edit it",
                who.email
            )));
        }
        super::dossiers::ensure_editable(&view.row)?;
        let Some(entry) = view.form.entry(meta.path.field_id()) else {
            return Err(invalid(&meta.path, "Champ inconnu"));
        };
        if entry.field.field_type != FieldType::PieceJustificative {
            return Err(invalid(&meta.path, "Ce champ n'accepte pas de fichier"));
        }
        let (accepted, field_max, max_files) = match &entry.field.constraints {
            Constraints::File(c) => (
                c.accepted_content_types.clone(),
                c.max_size_bytes,
                c.max_files,
            ),
            _ => (Vec::new(), None, None),
        };
        let limit = field_max
            .unwrap_or(self.files.max_bytes)
            .min(self.files.max_bytes);
        let name = sanitize(&meta.file_name)
            .ok_or_else(|| invalid(&meta.path, "Nom de fichier invalide"))?;
        if meta.size > limit {
            return Err(AppError::TooLarge {
                what: format!("Le fichier « {name} »"),
                limit_bytes: limit,
            });
        }
        let content_type = meta.content_type.trim().to_ascii_lowercase();
        let allowed = if accepted.is_empty() {
            DEFAULT_TYPES.iter().any(|t| *t == content_type)
        } else {
            accepted.contains(&content_type)
        };
        if !allowed {
            return Err(invalid(
                &meta.path,
                format!("Type de fichier non accepté : {content_type}"),
            ));
        }
        let current = match view.answers.get_at(&meta.path) {
            Some(Value::Files(f)) => f.len(),
            _ => 0,
        };
        if current as u32 >= max_files.unwrap_or(10) {
            return Err(invalid(
                &meta.path,
                format!("Au plus {} fichiers pour ce champ", max_files.unwrap_or(10)),
            ));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let key = format!("dossiers/{number}/{id}");
        let stored = self
            .files
            .put_stream(&key, &content_type, meta.size, limit, chunks)
            .await
            .map_err(|e| match e {
                FileError::TooLarge(limit) => AppError::TooLarge {
                    what: format!("Le fichier « {name} »"),
                    limit_bytes: limit,
                },
                FileError::TypeMismatch { declared } => invalid(
                    &meta.path,
                    format!("Le contenu du fichier ne correspond pas au type déclaré ({declared})"),
                ),
                FileError::SizeMismatch { declared, received } => invalid(
                    &meta.path,
                    format!("Taille reçue ({received} octets) différente de la taille annoncée ({declared} octets)"),
                ),
                FileError::Stream(e) => AppError::BadRequest(vec![("chunk".into(), format!("Envoi interrompu : {e}"))]),
                FileError::Store(e) => AppError::Unexpected(e.into()),
            })?;
        let file_ref = FileRef {
            id: id.clone(),
            name,
            content_type,
            size: stored.size,
            sha256: stored.sha256,
        };
        match self.attach(who, view.access, &meta, &file_ref, &key).await {
            Ok(version) => Ok((file_ref, version)),
            Err(e) => {
                self.files.delete(&key).await;
                Err(e)
            }
        }
    }

    async fn attach(
        &self,
        who: &Principal,
        access: Access,
        meta: &UploadMeta,
        f: &FileRef,
        key: &str,
    ) -> Result<i64, AppError> {
        let number = meta.number;
        let now = Utc::now();
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| AppError::NotFound("dossier", number.to_string()))?;
        super::dossiers::ensure_editable(&row)?;
        if let Some(expected) = meta.expected_version
            && expected != row.version
        {
            return Err(AppError::Stale {
                resource: "dossier",
                id: number.to_string(),
                expected,
                current: row.version,
            });
        }
        let form = self.form_of(&row.revision_id).await?;
        let mut answers: Answers = serde_json::from_str(&row.answers)?;
        let old = answers.get_at(&meta.path).cloned();
        let mut files = match &old {
            Some(Value::Files(f)) => f.clone(),
            _ => Vec::new(),
        };
        files.push(f.clone());
        answers
            .set_at(&meta.path, Value::Files(files.clone()))
            .map_err(|e| invalid(&meta.path, e.message_fr()))?;
        let version = row.version + 1;
        let headline = Headline::of(&form, &answers);
        dossier::Entity::update_many()
            .col_expr(
                dossier::Column::Answers,
                Expr::value(serde_json::to_string(&answers)?),
            )
            .col_expr(dossier::Column::Version, Expr::value(version))
            .col_expr(dossier::Column::Title, Expr::value(headline.title))
            .col_expr(dossier::Column::UpdatedAt, Expr::value(now))
            .filter(dossier::Column::Number.eq(number))
            .filter(dossier::Column::Version.eq(row.version))
            .exec(&txn)
            .await?;
        file::ActiveModel {
            id: Set(f.id.clone()),
            dossier_number: Set(number),
            field_path: Set(meta.path.to_string()),
            name: Set(f.name.clone()),
            content_type: Set(f.content_type.clone()),
            size: Set(i64::try_from(f.size).unwrap_or(i64::MAX)),
            sha256: Set(f.sha256.clone()),
            storage_key: Set(key.to_owned()),
            uploaded_by: Set(who.email.clone()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        history::ActiveModel {
            dossier_number: Set(number),
            version: Set(version),
            at: Set(now),
            actor_email: Set(who.email.clone()),
            actor_role: Set(access.as_str().to_owned()),
            field_path: Set(meta.path.to_string()),
            top_field_id: Set(meta.path.field_id().as_str().to_owned()),
            kind: Set("file_added".to_owned()),
            old_value: Set(old.as_ref().map(serde_json::to_string).transpose()?),
            new_value: Set(Some(serde_json::to_string(&Value::Files(files))?)),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        let procedure = self.procedure_on(&txn, &row.procedure_id).await?;
        let event = DossierContentChanged {
            metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Promoteur))),
            number,
            version,
            changed_field_ids: vec![meta.path.field_id().as_str().to_owned()],
            procedure: Some(procedure.reference()),
            status: crate::grpc::convert::status_to_pb(status_of(&row.status)?) as i32,
        };
        mst_bus::enqueue_event(&txn, &event).await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(version)
    }

    /// A file of a dossier the caller may read.
    pub async fn file(
        &self,
        who: &Principal,
        number: i64,
        file_id: &str,
    ) -> Result<Download, AppError> {
        self.dossier(who, number).await?;
        let row = file::Entity::find_by_id(file_id.to_owned())
            .filter(file::Column::DossierNumber.eq(number))
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::NotFound("file", file_id.to_owned()))?;
        Ok(Download { row })
    }

    /// The content of a file.
    pub async fn file_content(
        &self,
        download: &Download,
    ) -> Result<crate::files::ByteStream, AppError> {
        self.files
            .get_stream(&download.row.storage_key)
            .await
            .map_err(|e| AppError::Unexpected(e.into()))
    }

    /// Copies the files a set of answers refers to into dossier `to`, returning the answers
    /// pointing at the copies (duplicate). Rows are inserted in `txn`'s dossier once it exists.
    pub(crate) async fn copy_files(
        &self,
        answers: &Answers,
        to: i64,
        who: &str,
    ) -> Result<(Answers, Vec<file::Model>), AppError> {
        let mut out = answers.clone();
        let mut rows = Vec::new();
        let now = Utc::now();
        let ids: Vec<(ChampPath, Vec<FileRef>)> = answers
            .iter()
            .filter_map(|(id, v)| match v {
                Value::Files(f) => Some((ChampPath::Field(id.clone()), f.clone())),
                _ => None,
            })
            .chain(answers.iter().flat_map(|(rep, v)| {
                match v {
                    Value::Repetition(rows) => rows
                        .iter()
                        .flat_map(|r| {
                            r.champs.iter().filter_map(|(child, v)| match v {
                                Value::Files(f) => Some((
                                    ChampPath::child(rep.clone(), r.id.clone(), child.clone()),
                                    f.clone(),
                                )),
                                _ => None,
                            })
                        })
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                }
            }))
            .collect();
        for (path, files) in ids {
            let mut copies = Vec::with_capacity(files.len());
            for f in files {
                let Some(source) = file::Entity::find_by_id(f.id.clone()).one(&self.db).await?
                else {
                    continue;
                };
                let id = uuid::Uuid::now_v7().to_string();
                let key = format!("dossiers/{to}/{id}");
                self.files
                    .copy(&source.storage_key, &key)
                    .await
                    .map_err(|e| AppError::Unexpected(e.into()))?;
                rows.push(file::Model {
                    id: id.clone(),
                    dossier_number: to,
                    field_path: path.to_string(),
                    name: source.name.clone(),
                    content_type: source.content_type.clone(),
                    size: source.size,
                    sha256: source.sha256.clone(),
                    storage_key: key,
                    uploaded_by: who.to_owned(),
                    created_at: now,
                });
                copies.push(FileRef { id, ..f });
            }
            out.set_at(&path, Value::Files(copies)).map_err(|e| {
                AppError::Unexpected(anyhow::anyhow!("copying files: {}", e.message_fr()))
            })?;
        }
        Ok((out, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn file_names_lose_directories_and_control_characters() {
        assert_eq!(sanitize("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(
            sanitize("C:\\Users\\x\\budget 2024.pdf").as_deref(),
            Some("budget 2024.pdf")
        );
        assert_eq!(sanitize("a\u{0}b\r\n.pdf").as_deref(), Some("ab.pdf"));
        assert_eq!(sanitize("  "), None);
        assert_eq!(sanitize(".."), None);
        assert!(sanitize(&"é".repeat(300)).unwrap().len() <= 255);
    }
}
