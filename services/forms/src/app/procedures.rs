//! Procedures and their revisions: load a complete definition (idempotent), read, list, update
//! attributes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mst_kit::auth::{Principal, Role};
use mst_proto::events::{EventMetadata, ProcedureChanged, ProcedureRef};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};

use super::{AppError, Forms, PRODUCER, actor, page_size, require};
use crate::domain::form::FormDefinition;
use crate::domain::procedure::{Kind, ProcedureDefinition};
use crate::store::{self, procedure, revision};

/// What loading a definition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    /// The procedure was created.
    Created,
    /// Its attributes or draft changed (and were published if asked).
    Updated,
    /// It already matched.
    Unchanged,
}

/// Lifecycle of a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionState {
    /// Editable by admins.
    Draft,
    /// New dossiers are created on it.
    Published,
    /// Formerly published.
    Superseded,
}

/// A procedure as read.
#[derive(Debug, Clone)]
pub struct ProcedureView {
    /// The row.
    pub row: procedure::Model,
    /// Its kind.
    pub kind: Kind,
}

impl ProcedureView {
    fn new(row: procedure::Model) -> Result<Self, AppError> {
        let kind = Kind::parse(&row.kind)
            .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("unknown kind {:?}", row.kind)))?;
        Ok(Self { row, kind })
    }

    /// Whether the closing date has passed at `now`.
    pub fn is_closed(&self, now: DateTime<Utc>) -> bool {
        self.row.closing_at.is_some_and(|c| c <= now)
    }

    /// Whether new dossiers and deposits are accepted at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.row.published_revision_id.is_some() && !self.is_closed(now)
    }

    /// The reference carried by events.
    pub fn reference(&self) -> ProcedureRef {
        ProcedureRef {
            id: self.row.id.clone(),
            title: self.row.title.clone(),
            kind: match self.kind {
                Kind::Projet => mst_proto::events::DossierKind::Projet,
                Kind::Action => mst_proto::events::DossierKind::Action,
            } as i32,
        }
    }
}

/// A revision as read.
#[derive(Debug, Clone)]
pub struct RevisionView {
    /// The row.
    pub row: revision::Model,
    /// Its state.
    pub state: RevisionState,
    /// Its form.
    pub form: Arc<FormDefinition>,
}

fn revision_state(s: &str) -> RevisionState {
    match s {
        "published" => RevisionState::Published,
        "superseded" => RevisionState::Superseded,
        _ => RevisionState::Draft,
    }
}

/// Attributes an admin may change.
#[derive(Debug, Clone, Default)]
pub struct ProcedureUpdate {
    /// New title.
    pub title: Option<String>,
    /// New object.
    pub description: Option<String>,
    /// New estimated filling time in seconds.
    pub estimated_filling_secs: Option<i64>,
    /// New closing date (`Some(None)` clears it).
    pub closing_at: Option<Option<DateTime<Utc>>>,
}

async fn insert_revision<C: ConnectionTrait>(
    db: &C,
    procedure_id: &str,
    id: Option<String>,
    number: i32,
    state: &str,
    definition: &str,
    now: DateTime<Utc>,
) -> Result<String, AppError> {
    let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    revision::ActiveModel {
        id: Set(id.clone()),
        procedure_id: Set(procedure_id.to_owned()),
        number: Set(number),
        state: Set(state.to_owned()),
        definition: Set(definition.to_owned()),
        version: Set(1),
        created_at: Set(now),
        published_at: Set((state == "published").then_some(now)),
    }
    .insert(db)
    .await?;
    Ok(id)
}

impl Forms {
    /// Creates or updates a procedure from a complete definition, publishing it when asked and
    /// when it differs from the published revision. Loading the same definition twice changes
    /// nothing. Role: admin.
    pub async fn load_procedure(
        &self,
        who: &Principal,
        def: ProcedureDefinition,
        publish: bool,
    ) -> Result<(ProcedureView, RevisionView, LoadOutcome), AppError> {
        require(who, Role::Admin)?;
        let now = Utc::now();
        let definition = serde_json::to_string(&def.form)?;
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let existing = store::procedure(&txn, def.id.as_str()).await?;
        let (mut row, mut outcome, mut changed) = match existing {
            None => {
                let draft = uuid::Uuid::now_v7().to_string();
                let row = procedure::ActiveModel {
                    id: Set(def.id.as_str().to_owned()),
                    title: Set(def.title.clone()),
                    description: Set(def.description.clone()),
                    kind: Set(def.kind.as_str().to_owned()),
                    estimated_filling_secs: Set(secs(def.estimated_filling_time)),
                    closing_at: Set(def.closing_at),
                    notice: Set(None),
                    published_revision_id: Set(None),
                    draft_revision_id: Set(draft.clone()),
                    state: Set("draft".into()),
                    version: Set(1),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await?;
                insert_revision(&txn, &row.id, Some(draft), 1, "draft", &definition, now).await?;
                (row, LoadOutcome::Created, true)
            }
            Some(row) => {
                if row.kind != def.kind.as_str() {
                    return Err(AppError::WrongState {
                        reason: "KIND_MISMATCH",
                        current: row.kind.clone(),
                        message: format!(
                            "La démarche {} est de type {} : elle ne peut pas devenir de type {}",
                            row.id,
                            row.kind,
                            def.kind.as_str()
                        ),
                    });
                }
                let attrs_changed = row.title != def.title
                    || row.description != def.description
                    || row.estimated_filling_secs != secs(def.estimated_filling_time)
                    || row.closing_at != def.closing_at;
                let mut row = if attrs_changed {
                    let mut active: procedure::ActiveModel = row.into();
                    active.title = Set(def.title.clone());
                    active.description = Set(def.description.clone());
                    active.estimated_filling_secs = Set(secs(def.estimated_filling_time));
                    active.closing_at = Set(def.closing_at);
                    active.update(&txn).await?
                } else {
                    row
                };
                let draft = store::revision(&txn, &row.draft_revision_id)
                    .await?
                    .ok_or_else(|| {
                        AppError::Unexpected(anyhow::anyhow!("draft revision missing"))
                    })?;
                let draft_changed = draft.definition != definition;
                if draft_changed {
                    let version = draft.version + 1;
                    let mut active: revision::ActiveModel = draft.into();
                    active.definition = Set(definition.clone());
                    active.version = Set(version);
                    active.update(&txn).await?;
                }
                if attrs_changed || draft_changed {
                    let version = row.version + 1;
                    let mut active: procedure::ActiveModel = row.into();
                    active.version = Set(version);
                    active.updated_at = Set(now);
                    row = active.update(&txn).await?;
                }
                let outcome = if attrs_changed || draft_changed {
                    LoadOutcome::Updated
                } else {
                    LoadOutcome::Unchanged
                };
                (row, outcome, attrs_changed)
            }
        };
        if publish {
            let published = match &row.published_revision_id {
                Some(id) => store::revision(&txn, id).await?,
                None => None,
            };
            if published
                .as_ref()
                .is_none_or(|p| p.definition != definition)
            {
                row = publish_draft(&txn, row, published, now).await?;
                if outcome == LoadOutcome::Unchanged {
                    outcome = LoadOutcome::Updated;
                }
                changed = true;
            }
        }
        let view = ProcedureView::new(row)?;
        if changed {
            emit_changed(&txn, who, &view, now).await?;
        }
        txn.commit().await?;
        self.relay.wake();
        let shown = view
            .row
            .published_revision_id
            .clone()
            .filter(|_| publish)
            .unwrap_or_else(|| view.row.draft_revision_id.clone());
        let revision = self.revision(&shown).await?;
        Ok((view, revision, outcome))
    }

    /// A procedure by id (anyone authenticated may read procedures).
    pub async fn procedure(&self, id: &str) -> Result<ProcedureView, AppError> {
        self.procedure_on(&self.db, id).await
    }

    /// The same read on `db`: inside a transaction, pass it, so the request never holds one
    /// pooled connection while waiting for a second (under load that waits for the pool's
    /// timeout).
    pub async fn procedure_on<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
        id: &str,
    ) -> Result<ProcedureView, AppError> {
        let row = store::procedure(db, id)
            .await?
            .ok_or_else(|| AppError::NotFound("procedure", id.to_owned()))?;
        ProcedureView::new(row)
    }

    /// A revision by id.
    pub async fn revision(&self, id: &str) -> Result<RevisionView, AppError> {
        let row = store::revision(&self.db, id)
            .await?
            .ok_or_else(|| AppError::NotFound("revision", id.to_owned()))?;
        let form = self.form_of(id).await?;
        Ok(RevisionView {
            state: revision_state(&row.state),
            row,
            form,
        })
    }

    /// Published procedures (and drafts for admins), by id; `include_closed` keeps closed ones.
    pub async fn procedures(
        &self,
        who: &Principal,
        kind: Option<Kind>,
        include_closed: bool,
        page_size_req: i32,
        page_token: &str,
    ) -> Result<(Vec<ProcedureView>, String), AppError> {
        let limit = page_size(page_size_req, 50, self.limits.max_page_size);
        let now = Utc::now();
        let mut out = Vec::new();
        let mut after = (!page_token.is_empty()).then(|| page_token.to_owned());
        // Filter in pages of the id order until the page is full or the table ends.
        loop {
            let rows = store::procedures(&self.db, after.as_deref(), limit + 1).await?;
            let exhausted = rows.len() as u64 <= limit;
            for row in rows.into_iter().take(limit as usize) {
                after = Some(row.id.clone());
                let view = ProcedureView::new(row)?;
                let visible = view.row.published_revision_id.is_some() || who.has(Role::Admin);
                if visible
                    && kind.is_none_or(|k| k == view.kind)
                    && (include_closed || !view.is_closed(now))
                {
                    out.push(view);
                    if out.len() as u64 == limit {
                        let token = if exhausted {
                            String::new()
                        } else {
                            after.clone().unwrap_or_default()
                        };
                        return Ok((out, token));
                    }
                }
            }
            if exhausted {
                return Ok((out, String::new()));
            }
        }
    }

    /// Updates attributes of a procedure. Role: admin.
    pub async fn update_procedure(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
        update: ProcedureUpdate,
    ) -> Result<ProcedureView, AppError> {
        require(who, Role::Admin)?;
        let now = Utc::now();
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = store::procedure(&txn, id)
            .await?
            .ok_or_else(|| AppError::NotFound("procedure", id.to_owned()))?;
        if row.version != expected_version {
            return Err(AppError::Stale {
                resource: "procedure",
                id: id.to_owned(),
                expected: expected_version,
                current: row.version,
            });
        }
        let version = row.version + 1;
        let mut active: procedure::ActiveModel = row.into();
        if let Some(t) = update.title {
            active.title = Set(t);
        }
        if let Some(d) = update.description {
            active.description = Set(d);
        }
        if let Some(s) = update.estimated_filling_secs {
            active.estimated_filling_secs = Set(s);
        }
        if let Some(c) = update.closing_at {
            active.closing_at = Set(c);
        }
        active.version = Set(version);
        active.updated_at = Set(now);
        let view = ProcedureView::new(active.update(&txn).await?)?;
        emit_changed(&txn, who, &view, now).await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(view)
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Publishes the draft: it becomes published, the former published one superseded, and a new
/// draft copied from it is opened.
async fn publish_draft<C: ConnectionTrait>(
    txn: &C,
    row: procedure::Model,
    published: Option<revision::Model>,
    now: DateTime<Utc>,
) -> Result<procedure::Model, AppError> {
    let draft = store::revision(txn, &row.draft_revision_id)
        .await?
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("draft revision missing")))?;
    if let Some(old) = published {
        let mut active: revision::ActiveModel = old.into();
        active.state = Set("superseded".into());
        active.update(txn).await?;
    }
    let definition = draft.definition.clone();
    let published_id = draft.id.clone();
    let mut active: revision::ActiveModel = draft.into();
    active.state = Set("published".into());
    active.published_at = Set(Some(now));
    active.update(txn).await?;
    let number = store::last_revision_number(txn, &row.id).await? + 1;
    let new_draft = insert_revision(txn, &row.id, None, number, "draft", &definition, now).await?;
    let version = row.version + 1;
    let mut active: procedure::ActiveModel = row.into();
    active.published_revision_id = Set(Some(published_id));
    active.draft_revision_id = Set(new_draft);
    active.state = Set("published".into());
    active.version = Set(version);
    active.updated_at = Set(now);
    Ok(active.update(txn).await?)
}

async fn emit_changed<C: ConnectionTrait>(
    txn: &C,
    who: &Principal,
    view: &ProcedureView,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let event = ProcedureChanged {
        metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Admin))),
        procedure: Some(view.reference()),
        version: view.row.version,
        published_revision_id: view.row.published_revision_id.clone().unwrap_or_default(),
        closing_at: view.row.closing_at.map(crate::grpc::convert::timestamp),
        accepting_dossiers: view.is_open(now),
    };
    mst_bus::enqueue_event(txn, &event).await?;
    Ok(())
}

/// A procedure's notice document as stored in its row.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredNotice {
    /// The file.
    pub file: crate::domain::value::FileRef,
    /// Its key in the file store.
    pub key: String,
}

impl ProcedureView {
    /// The notice document, if one was uploaded.
    pub fn notice(&self) -> Option<StoredNotice> {
        self.row
            .notice
            .as_deref()
            .and_then(|n| serde_json::from_str(n).ok())
    }
}

impl Forms {
    /// Revisions of a procedure, newest first. Role: admin.
    pub async fn revisions(
        &self,
        who: &Principal,
        procedure_id: &str,
        page_size_req: i32,
        page_token: &str,
    ) -> Result<(Vec<RevisionView>, String), AppError> {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
        require(who, Role::Admin)?;
        self.procedure(procedure_id).await?;
        let limit = page_size(page_size_req, 50, self.limits.max_page_size);
        let mut q = revision::Entity::find()
            .filter(revision::Column::ProcedureId.eq(procedure_id))
            .order_by_desc(revision::Column::Number);
        if !page_token.is_empty() {
            let before: i32 = page_token.parse().map_err(|_| {
                AppError::BadRequest(vec![("page_token".into(), "Jeton de page invalide".into())])
            })?;
            q = q.filter(revision::Column::Number.lt(before));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let more = rows.len() as u64 > limit;
        let mut out = Vec::new();
        for row in rows.into_iter().take(limit as usize) {
            out.push(self.revision(&row.id).await?);
        }
        let next = match (more, out.last()) {
            (true, Some(r)) => r.row.number.to_string(),
            _ => String::new(),
        };
        Ok((out, next))
    }

    /// Replaces the fields of the draft revision at `expected_version`. Role: admin.
    pub async fn update_draft(
        &self,
        who: &Principal,
        procedure_id: &str,
        expected_version: i64,
        form: FormDefinition,
    ) -> Result<RevisionView, AppError> {
        require(who, Role::Admin)?;
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let p = store::procedure(&txn, procedure_id)
            .await?
            .ok_or_else(|| AppError::NotFound("procedure", procedure_id.to_owned()))?;
        let draft = store::revision(&txn, &p.draft_revision_id)
            .await?
            .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("draft revision missing")))?;
        if draft.version != expected_version {
            return Err(AppError::Stale {
                resource: "revision",
                id: draft.id.clone(),
                expected: expected_version,
                current: draft.version,
            });
        }
        let id = draft.id.clone();
        let version = draft.version + 1;
        let mut active: revision::ActiveModel = draft.into();
        active.definition = Set(serde_json::to_string(&form)?);
        active.version = Set(version);
        active.update(&txn).await?;
        txn.commit().await?;
        self.revision(&id).await
    }

    /// Publishes the draft revision at procedure version `expected_version`. Role: admin.
    pub async fn publish(
        &self,
        who: &Principal,
        procedure_id: &str,
        expected_version: i64,
    ) -> Result<(ProcedureView, RevisionView), AppError> {
        require(who, Role::Admin)?;
        let now = Utc::now();
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let p = store::procedure(&txn, procedure_id)
            .await?
            .ok_or_else(|| AppError::NotFound("procedure", procedure_id.to_owned()))?;
        if p.version != expected_version {
            return Err(AppError::Stale {
                resource: "procedure",
                id: procedure_id.to_owned(),
                expected: expected_version,
                current: p.version,
            });
        }
        let draft = store::revision(&txn, &p.draft_revision_id)
            .await?
            .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("draft revision missing")))?;
        let published = match &p.published_revision_id {
            Some(id) => store::revision(&txn, id).await?,
            None => None,
        };
        let form: FormDefinition = serde_json::from_str(&draft.definition)?;
        if form.fields().is_empty()
            || published
                .as_ref()
                .is_some_and(|r| r.definition == draft.definition)
        {
            return Err(AppError::WrongState {
                reason: "NOTHING_TO_PUBLISH",
                current: p.state.clone(),
                message: "Le brouillon de formulaire est vide ou identique à la version publiée"
                    .into(),
            });
        }
        let row = publish_draft(&txn, p, published, now).await?;
        let view = ProcedureView::new(row)?;
        emit_changed(&txn, who, &view, now).await?;
        txn.commit().await?;
        self.relay.wake();
        let published_id = view.row.published_revision_id.clone().unwrap_or_default();
        let revision = self.revision(&published_id).await?;
        Ok((view, revision))
    }

    /// Stores the notice document of a procedure (PDF), replacing the previous one. Role: admin.
    pub async fn set_notice<S>(
        &self,
        who: &Principal,
        procedure_id: &str,
        file_name: &str,
        content_type: &str,
        size: u64,
        chunks: S,
    ) -> Result<ProcedureView, AppError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, String>> + Unpin,
    {
        require(who, Role::Admin)?;
        let view = self.procedure(procedure_id).await?;
        let content_type = content_type.trim().to_ascii_lowercase();
        if content_type != "application/pdf" {
            return Err(AppError::BadRequest(vec![(
                "metadata.content_type".into(),
                "La notice doit être un document PDF".into(),
            )]));
        }
        let name = file_name
            .rsplit(['/', '\\'])
            .next()
            .map(|n| {
                n.chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            })
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                AppError::BadRequest(vec![(
                    "metadata.file_name".into(),
                    "Nom de fichier invalide".into(),
                )])
            })?;
        let limit = self.files.max_bytes;
        if size > limit {
            return Err(AppError::TooLarge {
                what: "La notice".into(),
                limit_bytes: limit,
            });
        }
        let id = uuid::Uuid::now_v7().to_string();
        let key = format!("procedures/{}/notice-{id}", view.row.id);
        let stored = self
            .files
            .put_stream(&key, &content_type, size, limit, chunks)
            .await
            .map_err(|e| match e {
                crate::files::FileError::TooLarge(limit) => AppError::TooLarge {
                    what: "La notice".into(),
                    limit_bytes: limit,
                },
                crate::files::FileError::Store(e) => AppError::Unexpected(e.into()),
                other => AppError::BadRequest(vec![(
                    "chunk".into(),
                    format!("Notice refusée : {other}"),
                )]),
            })?;
        let notice = StoredNotice {
            file: crate::domain::value::FileRef {
                id,
                name,
                content_type,
                size: stored.size,
                sha256: stored.sha256,
            },
            key: key.clone(),
        };
        let previous = view.notice();
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = store::procedure(&txn, procedure_id)
            .await?
            .ok_or_else(|| AppError::NotFound("procedure", procedure_id.to_owned()))?;
        let version = row.version + 1;
        let mut active: procedure::ActiveModel = row.into();
        active.notice = Set(Some(serde_json::to_string(&notice)?));
        active.version = Set(version);
        active.updated_at = Set(Utc::now());
        let updated = match active.update(&txn).await {
            Ok(r) => r,
            Err(e) => {
                self.files.delete(&key).await;
                return Err(e.into());
            }
        };
        txn.commit().await?;
        if let Some(old) = previous {
            self.files.delete(&old.key).await;
        }
        ProcedureView::new(updated)
    }

    /// The content of a procedure's notice.
    pub async fn notice_content(
        &self,
        procedure_id: &str,
    ) -> Result<(StoredNotice, crate::files::ByteStream), AppError> {
        let view = self.procedure(procedure_id).await?;
        let notice = view
            .notice()
            .ok_or_else(|| AppError::NotFound("notice", procedure_id.to_owned()))?;
        let stream = self
            .files
            .get_stream(&notice.key)
            .await
            .map_err(|e| AppError::Unexpected(e.into()))?;
        Ok((notice, stream))
    }
}
