//! Dossier threads: automatic email entries (written by the event handlers), messages with
//! attachments, tombstones, and who may read or write them (the same people as the dossier, as
//! instruction's `CheckDossierAccess` answers).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use mst_kit::auth::{Principal, Role};
use mst_kit::error::ApiError;
use mst_kit::files::FileError;
use mst_proto::events as ev;
use mst_proto::instruction as ipb;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, TransactionTrait as _,
};

use super::{AppError, Messagerie, PRODUCER};
use crate::store::{attachment, entry};
use crate::templates::Rendered;

/// Longest message body, in characters.
pub const MAX_BODY_CHARS: usize = 20_000;
/// Most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 10;
/// Media types accepted for attachments.
pub const ACCEPTED_TYPES: &[&str] = &[
    "application/pdf",
    "image/png",
    "image/jpeg",
    "text/plain",
    "text/csv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/msword",
    "application/vnd.ms-excel",
];

/// How the caller reaches a dossier's thread.
#[derive(Debug, Clone)]
pub struct ThreadAccess {
    /// Role the caller writes under.
    pub role: ev::Role,
    /// Whether writes are refused (archived dossier).
    pub archived: bool,
}

/// An entry with its attachments.
#[derive(Debug, Clone)]
pub struct EntryView {
    /// The row.
    pub entry: entry::Model,
    /// Its attachments (empty once deleted).
    pub attachments: Vec<attachment::Model>,
}

/// A message being posted: access checked, attachments not stored yet.
#[derive(Debug, Clone)]
pub struct PostDraft {
    access: ThreadAccess,
    number: i64,
    entry_id: String,
    request_key: Option<String>,
}

/// One attachment announced in a PostMessage stream.
#[derive(Debug, Clone)]
pub struct AttachmentMeta {
    /// File name as sent.
    pub file_name: String,
    /// Declared type.
    pub content_type: String,
    /// Declared size.
    pub size: i64,
}

fn sanitize_file_name(name: &str) -> Option<String> {
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

fn not_found(number: i64) -> AppError {
    ApiError::NotFound {
        resource: "dossier",
        id: number.to_string(),
    }
    .into()
}

impl Messagerie {
    /// Next position in `number`'s thread.
    async fn next_sequence<C: ConnectionTrait>(
        &self,
        db: &C,
        number: i64,
    ) -> Result<i64, AppError> {
        let last: Option<i64> = entry::Entity::find()
            .select_only()
            .column_as(entry::Column::Sequence.max(), "max")
            .filter(entry::Column::Number.eq(number))
            .into_tuple::<Option<i64>>()
            .one(db)
            .await?
            .flatten();
        Ok(last.unwrap_or(0) + 1)
    }

    /// Appends the copy of an automatic email to the thread (once per event).
    pub(crate) async fn append_automatic_email<C: ConnectionTrait>(
        &self,
        txn: &C,
        number: i64,
        source: &str,
        rendered: &Rendered,
        at: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let exists = entry::Entity::find()
            .filter(entry::Column::SourceEventId.eq(source))
            .one(txn)
            .await?;
        if exists.is_some() {
            return Ok(());
        }
        let sequence = self.next_sequence(txn, number).await?;
        entry::Entity::insert(entry::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            number: Set(number),
            sequence: Set(sequence),
            kind: Set("email".into()),
            author_email: Set(PRODUCER.into()),
            author_role: Set(ev::Role::System as i32),
            subject: Set(rendered.subject.clone()),
            body: Set(rendered.text.clone()),
            template: Set(rendered.template.clone()),
            source_event_id: Set(Some(source.to_owned())),
            request_key: Set(None),
            created_at: Set(at),
            deleted_at: Set(None),
        })
        .exec_without_returning(txn)
        .await?;
        Ok(())
    }

    /// Who `who` is to dossier `number`'s thread: NOT_FOUND when he may not read the dossier,
    /// FAILED_PRECONDITION `NO_THREAD` for a brouillon.
    pub async fn thread_access(
        &self,
        who: &Principal,
        number: i64,
    ) -> Result<ThreadAccess, AppError> {
        let role = if who.has(Role::Instructeur) {
            ev::Role::Instructeur
        } else {
            ev::Role::Promoteur
        };
        let mut client = self.inner.instruction.clone();
        let answer = client
            .check_dossier_access(ipb::CheckDossierAccessRequest {
                number,
                email: who.email.clone(),
                role: role as i32,
            })
            .await
            .map_err(|s| {
                AppError::Api(ApiError::Unavailable(format!(
                    "instruction CheckDossierAccess: {}",
                    s.message()
                )))
            })?
            .into_inner();
        if !answer.allowed {
            return Err(not_found(number));
        }
        if answer.status == ev::DossierStatus::Brouillon as i32
            || answer.status == ev::DossierStatus::Unspecified as i32
        {
            return Err(ApiError::wrong_state(
                "NO_THREAD",
                "DOSSIER_STATUS_BROUILLON",
                "Un brouillon n'a pas de messagerie : déposez le dossier pour écrire au service instructeur.",
            )
            .into());
        }
        let has = |r: ipb::AccessRelation| answer.relations.contains(&(r as i32));
        // A CPAM instructeur may also be an invitee of the dossier (the promoteur asked him to
        // read it before the deposit): signed in as instructeur, he writes as the instructeur.
        let role = if role == ev::Role::Instructeur && has(ipb::AccessRelation::Instructeur) {
            ev::Role::Instructeur
        } else if has(ipb::AccessRelation::Owner) || has(ipb::AccessRelation::Invitee) {
            ev::Role::Promoteur
        } else if has(ipb::AccessRelation::Instructeur) {
            ev::Role::Instructeur
        } else {
            ev::Role::Expert
        };
        Ok(ThreadAccess {
            role,
            archived: answer.archived,
        })
    }

    fn writable(access: &ThreadAccess) -> Result<(), AppError> {
        if access.archived {
            return Err(ApiError::wrong_state(
                "ARCHIVED",
                "archive",
                "Le dossier est archivé : sa messagerie est en lecture seule.",
            )
            .into());
        }
        Ok(())
    }

    async fn with_attachments<C: ConnectionTrait>(
        &self,
        db: &C,
        entries: Vec<entry::Model>,
    ) -> Result<Vec<EntryView>, AppError> {
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let all = if ids.is_empty() {
            Vec::new()
        } else {
            attachment::Entity::find()
                .filter(attachment::Column::EntryId.is_in(ids))
                .order_by_asc(attachment::Column::Position)
                .all(db)
                .await?
        };
        Ok(entries
            .into_iter()
            .map(|e| {
                let attachments = if e.deleted_at.is_some() {
                    Vec::new()
                } else {
                    all.iter().filter(|a| a.entry_id == e.id).cloned().collect()
                };
                EntryView {
                    entry: e,
                    attachments,
                }
            })
            .collect())
    }

    /// A page of the thread after position `after`, oldest first; the flag says whether the
    /// caller may write.
    pub async fn list_messages(
        &self,
        who: &Principal,
        number: i64,
        after: i64,
        page_size: u64,
    ) -> Result<(Vec<EntryView>, bool, bool), AppError> {
        let access = self.thread_access(who, number).await?;
        let mut rows = entry::Entity::find()
            .filter(entry::Column::Number.eq(number))
            .filter(entry::Column::Sequence.gt(after))
            .order_by_asc(entry::Column::Sequence)
            .limit(page_size + 1)
            .all(self.db())
            .await?;
        let more = rows.len() as u64 > page_size;
        rows.truncate(page_size as usize);
        Ok((
            self.with_attachments(self.db(), rows).await?,
            !access.archived,
            more,
        ))
    }

    /// Starts posting a message: checks access and that the thread is writable. Returns the
    /// entry of an earlier call with the same `request_id` (idempotent retry), or the draft to
    /// store attachments under and commit.
    pub async fn begin_post(
        &self,
        who: &Principal,
        number: i64,
        request_id: &str,
    ) -> Result<Result<EntryView, PostDraft>, AppError> {
        let access = self.thread_access(who, number).await?;
        Self::writable(&access)?;
        let request_key = (!request_id.is_empty()).then(|| format!("{}:{request_id}", who.email));
        if let Some(key) = &request_key
            && let Some(existing) = entry::Entity::find()
                .filter(entry::Column::RequestKey.eq(key.as_str()))
                .one(self.db())
                .await?
        {
            let mut views = self.with_attachments(self.db(), vec![existing]).await?;
            if let Some(view) = views.pop() {
                return Ok(Ok(view));
            }
        }
        Ok(Err(PostDraft {
            access,
            number,
            entry_id: uuid::Uuid::now_v7().to_string(),
            request_key,
        }))
    }

    /// Removes attachments stored for a post that failed.
    pub async fn discard(&self, stored: &[attachment::Model]) {
        for a in stored {
            self.inner.files.delete(&a.storage_key).await;
        }
    }

    /// Stores one attachment of `draft` read from `chunks` (checked: name, type, declared and
    /// actual size under the limit, content matching the type). Nothing stays on failure.
    pub async fn store_attachment<S>(
        &self,
        draft: &PostDraft,
        position: usize,
        field: &str,
        meta: &AttachmentMeta,
        chunks: S,
    ) -> Result<attachment::Model, AppError>
    where
        S: Stream<Item = Result<Bytes, String>> + Unpin,
    {
        let invalid = |m: String| AppError::Api(ApiError::invalid(field, m));
        let name = sanitize_file_name(&meta.file_name)
            .ok_or_else(|| invalid("Nom de fichier invalide".into()))?;
        let limit = self.inner.files.max_bytes;
        if meta.size < 0 {
            return Err(invalid("Taille annoncée invalide".into()));
        }
        if meta.size as u64 > limit {
            return Err(ApiError::TooLarge {
                what: format!("La pièce jointe « {name} »"),
                limit_bytes: limit,
            }
            .into());
        }
        let content_type = meta.content_type.trim().to_ascii_lowercase();
        if !ACCEPTED_TYPES.contains(&content_type.as_str()) {
            return Err(invalid(format!(
                "Type de fichier non accepté : {content_type}"
            )));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let key = format!("messages/{}/{id}", draft.entry_id);
        let stored = self
            .inner
            .files
            .put_stream(&key, &content_type, meta.size as u64, limit, chunks)
            .await
            .map_err(|e| match e {
                FileError::TooLarge(limit) => AppError::Api(ApiError::TooLarge {
                    what: format!("La pièce jointe « {name} »"),
                    limit_bytes: limit,
                }),
                FileError::TypeMismatch { declared } => invalid(format!(
                    "Le contenu du fichier ne correspond pas au type déclaré ({declared})"
                )),
                FileError::SizeMismatch { declared, received } => invalid(format!(
                    "Taille reçue ({received} octets) différente de la taille annoncée ({declared} octets)"
                )),
                FileError::Stream(e) => invalid(format!("Envoi interrompu : {e}")),
                FileError::Store(e) => AppError::Api(ApiError::Unexpected(e.into())),
            })?;
        Ok(attachment::Model {
            id,
            entry_id: draft.entry_id.clone(),
            position: i32::try_from(position).unwrap_or(i32::MAX),
            file_name: name,
            content_type,
            size: i64::try_from(stored.size).unwrap_or(i64::MAX),
            sha256: stored.sha256,
            storage_key: stored.key,
        })
    }

    /// Commits the message of `draft` with its stored attachments and `MessagePosted`.
    pub async fn commit_message(
        &self,
        who: &Principal,
        draft: &PostDraft,
        body: String,
        stored: &[attachment::Model],
    ) -> Result<EntryView, AppError> {
        let (access, number, entry_id, request_key) = (
            &draft.access,
            draft.number,
            draft.entry_id.as_str(),
            draft.request_key.clone(),
        );
        let procedure = crate::store::dossier::Entity::find_by_id(number)
            .one(self.db())
            .await?
            .map(|d| ev::ProcedureRef {
                id: d.procedure_id,
                title: d.procedure_title,
                kind: ev::DossierKind::Unspecified as i32,
            });
        // Two writers may race for the next position: the unique (number, sequence) index
        // refuses one, which retries.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let txn = mst_bus::db::begin_write(self.db()).await?;
            let sequence = self.next_sequence(&txn, number).await?;
            let row = entry::Model {
                id: entry_id.to_owned(),
                number,
                sequence,
                kind: "message".into(),
                author_email: who.email.clone(),
                author_role: access.role as i32,
                subject: String::new(),
                body: body.clone(),
                template: String::new(),
                source_event_id: None,
                request_key: request_key.clone(),
                created_at: Utc::now(),
                deleted_at: None,
            };
            let am: entry::ActiveModel = row.clone().into();
            if let Err(e) = entry::Entity::insert(am).exec_without_returning(&txn).await {
                txn.rollback().await?;
                if attempt < 5 {
                    continue;
                }
                return Err(e.into());
            }
            for a in stored {
                let am: attachment::ActiveModel = a.clone().into();
                attachment::Entity::insert(am)
                    .exec_without_returning(&txn)
                    .await?;
            }
            mst_bus::enqueue_event(
                &txn,
                &ev::MessagePosted {
                    metadata: Some(ev::EventMetadata::new(
                        PRODUCER,
                        ev::Actor {
                            email: who.email.clone(),
                            role: access.role as i32,
                        },
                    )),
                    message_id: entry_id.to_owned(),
                    number,
                    procedure: procedure.clone(),
                    attachment_count: i32::try_from(stored.len()).unwrap_or(i32::MAX),
                    sequence,
                },
            )
            .await?;
            txn.commit().await?;
            self.inner.relay.wake();
            return Ok(EntryView {
                entry: row,
                attachments: stored.to_vec(),
            });
        }
    }

    /// Deletes the caller's own message: a tombstone stays, its attachments are removed.
    pub async fn delete_message(
        &self,
        who: &Principal,
        message_id: &str,
    ) -> Result<EntryView, AppError> {
        let missing = || -> AppError {
            ApiError::NotFound {
                resource: "message",
                id: message_id.to_owned(),
            }
            .into()
        };
        let row = entry::Entity::find_by_id(message_id.to_owned())
            .one(self.db())
            .await?
            .ok_or_else(missing)?;
        let access = match self.thread_access(who, row.number).await {
            Ok(a) => a,
            Err(AppError::Api(ApiError::NotFound { .. })) => return Err(missing()),
            Err(e) => return Err(e),
        };
        if row.kind != "message" || row.author_email != who.email {
            return Err(ApiError::PermissionDenied(
                "Seul l'auteur d'un message peut le supprimer.".into(),
            )
            .into());
        }
        Self::writable(&access)?;
        if row.deleted_at.is_none() {
            let txn = self.db().begin().await?;
            entry::Entity::update_many()
                .col_expr(entry::Column::DeletedAt, Expr::value(Some(Utc::now())))
                .col_expr(entry::Column::Body, Expr::value(""))
                .filter(entry::Column::Id.eq(message_id))
                .exec(&txn)
                .await?;
            let gone = attachment::Entity::find()
                .filter(attachment::Column::EntryId.eq(message_id))
                .all(&txn)
                .await?;
            txn.commit().await?;
            for a in gone {
                self.inner.files.delete(&a.storage_key).await;
            }
        }
        let row = entry::Entity::find_by_id(message_id.to_owned())
            .one(self.db())
            .await?
            .ok_or_else(missing)?;
        Ok(EntryView {
            entry: row,
            attachments: Vec::new(),
        })
    }

    /// An attachment the caller may read, and its content.
    pub async fn attachment(
        &self,
        who: &Principal,
        attachment_id: &str,
    ) -> Result<(attachment::Model, mst_kit::files::ByteStream), AppError> {
        let missing = || -> AppError {
            ApiError::NotFound {
                resource: "pièce jointe",
                id: attachment_id.to_owned(),
            }
            .into()
        };
        let a = attachment::Entity::find_by_id(attachment_id.to_owned())
            .one(self.db())
            .await?
            .ok_or_else(missing)?;
        let e = entry::Entity::find_by_id(a.entry_id.clone())
            .one(self.db())
            .await?
            .ok_or_else(missing)?;
        if e.deleted_at.is_some() {
            return Err(missing());
        }
        match self.thread_access(who, e.number).await {
            Ok(_) => {}
            Err(AppError::Api(ApiError::NotFound { .. })) => return Err(missing()),
            Err(err) => return Err(err),
        }
        let stream = self
            .inner
            .files
            .get_stream(&a.storage_key)
            .await
            .map_err(|e| AppError::Api(ApiError::Unexpected(e.into())))?;
        Ok((a, stream))
    }
}
