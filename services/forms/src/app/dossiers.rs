//! Dossiers, promoteur side: create a brouillon, read, list, autosave with field-level patches
//! and an expected version, history, duplicate, delete, invitations; and the freeze the
//! instruction service holds while it moves a dossier en instruction (invariant I1).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use mst_kit::auth::{Principal, Role};
use mst_proto::events::{
    DossierContentChanged, DossierCreated, DossierDeleted, DossierInvitationRevoked,
    DossierInvited, EventMetadata,
};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use super::procedures::ProcedureView;
use super::{AppError, Forms, PRODUCER, actor, page_size, require, status_of};
use crate::domain::condition::visibility;
use crate::domain::form::{Constraints, FormDefinition};
use crate::domain::ids::{Email, FieldId, RowId};
use crate::domain::procedure::{Access, Headline, Status};
use crate::domain::validate::{Violation, check_add_row, parse_at};
use crate::domain::value::{Answers, ChampPath, Input, Value};
use crate::store::{self, dossier, history, invitation};

/// One change of an UpdateDossier call.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The answer concerned; for row operations, the REPETITION field.
    pub path: ChampPath,
    /// What to do.
    pub op: PatchOp,
}

/// Patch operations.
#[derive(Debug, Clone)]
pub enum PatchOp {
    /// Set (replace) the answer.
    Set(Input),
    /// Remove the answer.
    Clear,
    /// Append a row (no-op if it exists).
    AddRow(RowId),
    /// Remove a row (no-op if missing).
    RemoveRow(RowId),
}

/// Which dossiers a list covers.
pub use crate::store::Scope;

/// A dossier as its reader sees it.
#[derive(Debug, Clone)]
pub struct DossierView {
    /// The row.
    pub row: dossier::Model,
    /// Its procedure.
    pub procedure: ProcedureView,
    /// Its form.
    pub form: Arc<FormDefinition>,
    /// Its answers.
    pub answers: Answers,
    /// Mirrored status.
    pub status: Status,
    /// How the caller reaches it.
    pub access: Access,
    /// Top-level fields currently hidden.
    pub hidden: Vec<FieldId>,
    /// Current invitees.
    pub invitees: Vec<String>,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Entries, most recent first.
    pub entries: Vec<history::Model>,
    /// Token of the next page.
    pub next: String,
    /// The dossier's form (labels).
    pub form: Arc<FormDefinition>,
}

struct Change {
    path: ChampPath,
    kind: &'static str,
    old: Option<Value>,
    new: Option<Value>,
}

fn not_found(number: i64) -> AppError {
    AppError::NotFound("dossier", number.to_string())
}

fn parse_answers(row: &dossier::Model) -> Result<Answers, AppError> {
    Ok(serde_json::from_str(&row.answers)?)
}

fn stale(number: i64, expected: i64, current: i64) -> AppError {
    AppError::Stale {
        resource: "dossier",
        id: number.to_string(),
        expected,
        current,
    }
}

fn json(value: &Option<Value>) -> Result<Option<String>, AppError> {
    value
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(AppError::from)
}

impl Forms {
    /// How `who` reaches `row`: owner, active invitee, or not at all (NOT_FOUND, so that
    /// existence never leaks).
    async fn access<C: ConnectionTrait>(
        &self,
        db: &C,
        who: &Principal,
        row: &dossier::Model,
    ) -> Result<Access, AppError> {
        if row.owner_email == who.email {
            return Ok(Access::Owner);
        }
        if store::active_invitation(db, row.number, &who.email)
            .await?
            .is_some()
        {
            return Ok(Access::Invitee);
        }
        Err(not_found(row.number))
    }

    /// Like [`Self::access`] for an RPC only the owner or invitees may use: a caller who can
    /// read the dossier otherwise (an instructeur of its groupe, an expert, an admin) knows it
    /// exists and is PERMISSION_DENIED; anyone else still gets NOT_FOUND.
    async fn write_access<C: ConnectionTrait>(
        &self,
        db: &C,
        who: &Principal,
        row: &dossier::Model,
    ) -> Result<Access, AppError> {
        match self.access(db, who, row).await {
            Err(AppError::NotFound(..)) => {
                self.read_access(db, who, row).await?;
                Err(AppError::Forbidden(format!(
                    "{} may read dossier {} but not use this RPC on it",
                    who.email, row.number
                )))
            }
            other => other,
        }
    }

    /// How the caller may read `row`: as owner or invitee; as a service or an admin; as an
    /// instructeur of its groupe (never a brouillon) or an expert asked for an avis, as the
    /// instruction service answers. Anyone else: NOT_FOUND, whether or not it exists.
    pub(crate) async fn read_access<C: ConnectionTrait>(
        &self,
        db: &C,
        who: &Principal,
        row: &dossier::Model,
    ) -> Result<Access, AppError> {
        match self.access(db, who, row).await {
            Err(AppError::NotFound(..)) => {}
            other => return other,
        }
        if who.has(Role::System) || who.has(Role::Admin) {
            return Ok(Access::System);
        }
        let role = if who.has(Role::Instructeur) {
            mst_proto::events::Role::Instructeur
        } else if who.has(Role::Expert) {
            mst_proto::events::Role::Expert
        } else {
            return Err(not_found(row.number));
        };
        let Some(client) = &self.instruction else {
            return Err(not_found(row.number));
        };
        let answer = client
            .clone()
            .check_dossier_access(mst_proto::instruction::CheckDossierAccessRequest {
                number: row.number,
                email: who.email.to_lowercase(),
                role: role as i32,
            })
            .await
            .map_err(|s| {
                AppError::Unavailable(format!("instruction CheckDossierAccess: {}", s.message()))
            })?
            .into_inner();
        use mst_proto::instruction::AccessRelation as R;
        let has = |r: R| answer.relations.contains(&(r as i32));
        if !answer.allowed {
            Err(not_found(row.number))
        } else if has(R::Instructeur) && role == mst_proto::events::Role::Instructeur {
            Ok(Access::Instructeur)
        } else if has(R::Expert) {
            Ok(Access::Expert)
        } else {
            Err(not_found(row.number))
        }
    }

    async fn view<C: ConnectionTrait>(
        &self,
        db: &C,
        row: dossier::Model,
        access: Access,
    ) -> Result<DossierView, AppError> {
        let procedure = self.procedure_on(db, &row.procedure_id).await?;
        let form = self.form_of(&row.revision_id).await?;
        let answers = parse_answers(&row)?;
        let invitees = invitee_emails(db, row.number).await?;
        self.assemble(row, access, procedure, form, answers, invitees)
    }

    /// The view of `row` from its parts in hand.
    fn assemble(
        &self,
        row: dossier::Model,
        access: Access,
        procedure: ProcedureView,
        form: std::sync::Arc<FormDefinition>,
        answers: Answers,
        invitees: Vec<String>,
    ) -> Result<DossierView, AppError> {
        let vis = visibility(&form, &answers, self.geo);
        let hidden = form
            .fields()
            .iter()
            .filter(|f| !vis.is_visible(&f.id))
            .map(|f| f.id.clone())
            .collect();
        Ok(DossierView {
            status: status_of(&row.status)?,
            row,
            procedure,
            form,
            answers,
            access,
            hidden,
            invitees,
        })
    }

    /// Creates a brouillon on a published, open procedure. Idempotent per `request_id`.
    /// Role: promoteur.
    pub async fn create_dossier(
        &self,
        who: &Principal,
        procedure_id: &str,
        request_id: Option<&str>,
    ) -> Result<DossierView, AppError> {
        require(who, Role::Promoteur)?;
        if let Some(existing) = self.replayed_request(who, request_id).await? {
            return Ok(existing);
        }
        let procedure = self.procedure(procedure_id).await?;
        let now = Utc::now();
        let Some(revision_id) = procedure.row.published_revision_id.clone() else {
            return Err(AppError::WrongState {
                reason: "PROCEDURE_NOT_OPEN",
                current: "draft".into(),
                message: format!(
                    "La démarche « {} » n'est pas encore publiée",
                    procedure.row.title
                ),
            });
        };
        if procedure.is_closed(now) {
            return Err(closed(&procedure));
        }
        self.insert_dossier(
            who,
            &procedure,
            &revision_id,
            Answers::new(),
            None,
            request_id,
            now,
        )
        .await
    }

    async fn replayed_request(
        &self,
        who: &Principal,
        request_id: Option<&str>,
    ) -> Result<Option<DossierView>, AppError> {
        let Some(request_id) = request_id else {
            return Ok(None);
        };
        match store::dossier_by_request(&self.db, request_id).await? {
            Some(row) if row.owner_email == who.email => {
                Ok(Some(self.view(&self.db, row, Access::Owner).await?))
            }
            Some(_) => Err(AppError::BadRequest(vec![(
                "request_id".into(),
                "Cet identifiant de requête a déjà été utilisé".into(),
            )])),
            None => Ok(None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_dossier(
        &self,
        who: &Principal,
        procedure: &ProcedureView,
        revision_id: &str,
        answers: Answers,
        duplicated_from: Option<i64>,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<DossierView, AppError> {
        let form = self.form_of(revision_id).await?;
        let headline = Headline::of(&form, &answers);
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = dossier::ActiveModel {
            procedure_id: Set(procedure.row.id.clone()),
            revision_id: Set(revision_id.to_owned()),
            owner_email: Set(who.email.clone()),
            status: Set(Status::Brouillon.as_str().to_owned()),
            status_version: Set(0),
            version: Set(1),
            answers: Set(serde_json::to_string(&answers)?),
            title: Set(headline.title),
            structure_name: Set(headline.structure_name),
            siret: Set(headline.siret),
            region_code: Set(headline.region_code),
            departement_code: Set(headline.departement_code),
            cpam: Set(headline.cpam),
            frozen_by: Set(None),
            frozen_at: Set(None),
            correction_pending: Set(false),
            duplicated_from: Set(duplicated_from),
            create_request_id: Set(request_id.map(str::to_owned)),
            created_at: Set(now),
            updated_at: Set(now),
            deposited_at: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        // A duplicate gets its own copies of the files (deleting one dossier's file never
        // touches the other's).
        let row = if answers.iter().next().is_some() {
            let (copied, files) = self.copy_files(&answers, row.number, &who.email).await?;
            for f in files {
                let active: crate::store::file::ActiveModel = f.into();
                active.insert(&txn).await?;
            }
            let mut active: dossier::ActiveModel = row.into();
            active.answers = Set(serde_json::to_string(&copied)?);
            active.update(&txn).await?
        } else {
            row
        };
        let event = DossierCreated {
            metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Promoteur))),
            number: row.number,
            procedure: Some(procedure.reference()),
            revision_id: revision_id.to_owned(),
            owner_email: who.email.clone(),
            version: row.version,
            duplicated_from,
        };
        mst_bus::enqueue_event(&txn, &event).await?;
        txn.commit().await?;
        self.relay.wake();
        tracing::info!(dossier = row.number, procedure = %procedure.row.id, "brouillon created");
        self.view(&self.db, row, Access::Owner).await
    }

    /// A dossier the caller owns or was invited to.
    pub async fn dossier(&self, who: &Principal, number: i64) -> Result<DossierView, AppError> {
        let row = store::dossier(&self.db, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        let access = self.read_access(&self.db, who, &row).await?;
        self.view(&self.db, row, access).await
    }

    /// The caller's dossiers, most recently updated first.
    pub async fn dossiers(
        &self,
        who: &Principal,
        scope: Scope,
        procedure_id: Option<&str>,
        statuses: &[Status],
        page_size_req: i32,
        page_token: &str,
    ) -> Result<(Vec<(dossier::Model, ProcedureView, Access)>, String), AppError> {
        let limit = page_size(page_size_req, 50, self.limits.max_page_size);
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token)?)
        };
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = store::dossiers_of(
            &self.db,
            &who.email,
            scope,
            procedure_id,
            &statuses,
            after,
            limit + 1,
        )
        .await?;
        let more = rows.len() as u64 > limit;
        let mut procedures: HashMap<String, ProcedureView> = HashMap::new();
        let mut out = Vec::new();
        for row in rows.into_iter().take(limit as usize) {
            if !procedures.contains_key(&row.procedure_id) {
                let p = self.procedure(&row.procedure_id).await?;
                procedures.insert(row.procedure_id.clone(), p);
            }
            let procedure = procedures
                .get(&row.procedure_id)
                .cloned()
                .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("procedure cache")))?;
            let access = if row.owner_email == who.email {
                Access::Owner
            } else {
                Access::Invitee
            };
            out.push((row, procedure, access));
        }
        let next = match (more, out.last()) {
            (true, Some((row, _, _))) => encode_token(row.updated_at, row.number),
            _ => String::new(),
        };
        Ok((out, next))
    }

    /// Applies field-level patches, all or nothing, if `expected_version` is current and the
    /// dossier is editable. Durable when this returns. Owner or invitee.
    pub async fn update_dossier(
        &self,
        who: &Principal,
        number: i64,
        expected_version: i64,
        patches: Vec<Patch>,
    ) -> Result<DossierView, AppError> {
        if patches.len() > self.limits.max_patches {
            return Err(AppError::BadRequest(vec![(
                "patches".into(),
                format!(
                    "Au plus {} modifications par enregistrement",
                    self.limits.max_patches
                ),
            )]));
        }
        // Microseconds, as stored: the answer built from this equals a later read.
        let now = Utc::now().trunc_subsecs(6);
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        let access = self.write_access(&txn, who, &row).await?;
        ensure_editable(&row)?;
        if row.version != expected_version {
            return Err(stale(number, expected_version, row.version));
        }
        let form = self.form_of(&row.revision_id).await?;
        let mut answers = parse_answers(&row)?;
        let (changes, violations) = self
            .apply_patches(&txn, &row, &form, &mut answers, patches)
            .await?;
        if !violations.is_empty() {
            return Err(AppError::Invalid(violations));
        }
        if changes.is_empty() {
            txn.rollback().await?;
            return self.view(&self.db, row, access).await;
        }
        let version = row.version + 1;
        let headline = Headline::of(&form, &answers);
        // The row as the update below leaves it.
        let saved = dossier::Model {
            answers: serde_json::to_string(&answers)?,
            version,
            title: headline.title,
            structure_name: headline.structure_name,
            siret: headline.siret,
            region_code: headline.region_code,
            departement_code: headline.departement_code,
            cpam: headline.cpam,
            updated_at: now,
            ..row.clone()
        };
        let updated = dossier::Entity::update_many()
            .col_expr(dossier::Column::Answers, Expr::value(saved.answers.clone()))
            .col_expr(dossier::Column::Version, Expr::value(version))
            .col_expr(dossier::Column::Title, Expr::value(saved.title.clone()))
            .col_expr(
                dossier::Column::StructureName,
                Expr::value(saved.structure_name.clone()),
            )
            .col_expr(dossier::Column::Siret, Expr::value(saved.siret.clone()))
            .col_expr(
                dossier::Column::RegionCode,
                Expr::value(saved.region_code.clone()),
            )
            .col_expr(
                dossier::Column::DepartementCode,
                Expr::value(saved.departement_code.clone()),
            )
            .col_expr(dossier::Column::Cpam, Expr::value(saved.cpam.clone()))
            .col_expr(dossier::Column::UpdatedAt, Expr::value(now))
            .filter(dossier::Column::Number.eq(number))
            .filter(dossier::Column::Version.eq(expected_version))
            .filter(dossier::Column::FrozenBy.is_null())
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            // Only reachable if the row lock was not honoured; refuse rather than overwrite.
            return Err(stale(number, expected_version, row.version));
        }
        let mut changed_fields = BTreeSet::new();
        let mut entries = Vec::with_capacity(changes.len());
        for change in &changes {
            changed_fields.insert(change.path.field_id().as_str().to_owned());
            entries.push(history::ActiveModel {
                dossier_number: Set(number),
                version: Set(version),
                at: Set(now),
                actor_email: Set(who.email.clone()),
                actor_role: Set(access.as_str().to_owned()),
                field_path: Set(change.path.to_string()),
                top_field_id: Set(change.path.field_id().as_str().to_owned()),
                kind: Set(change.kind.to_owned()),
                old_value: Set(json(&change.old)?),
                new_value: Set(json(&change.new)?),
                ..Default::default()
            });
        }
        // One statement for every changed field.
        history::Entity::insert_many(entries)
            .exec_without_returning(&txn)
            .await?;
        let procedure = self.procedure_on(&txn, &row.procedure_id).await?;
        let event = DossierContentChanged {
            metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Promoteur))),
            number,
            version,
            changed_field_ids: changed_fields.into_iter().collect(),
            procedure: Some(procedure.reference()),
            status: crate::grpc::convert::status_to_pb(status_of(&row.status)?) as i32,
        };
        mst_bus::enqueue_event(&txn, &event).await?;
        let invitees = invitee_emails(&txn, number).await?;
        txn.commit().await?;
        self.relay.wake();
        self.assemble(saved, access, procedure, form, answers, invitees)
    }

    async fn apply_patches<C: ConnectionTrait>(
        &self,
        db: &C,
        row: &dossier::Model,
        form: &FormDefinition,
        answers: &mut Answers,
        patches: Vec<Patch>,
    ) -> Result<(Vec<Change>, Vec<Violation>), AppError> {
        let mut changes = Vec::new();
        let mut violations = Vec::new();
        for patch in patches {
            let path = patch.path;
            match patch.op {
                PatchOp::Set(input) => {
                    let value = match parse_at(form, &path, input, self.geo) {
                        Ok(v) => v,
                        Err(v) => {
                            violations.push(v);
                            continue;
                        }
                    };
                    if let Some(v) = self
                        .check_references(db, row, form, answers, &path, &value)
                        .await?
                    {
                        violations.push(v);
                        continue;
                    }
                    let old = answers.get_at(&path).cloned();
                    if old.as_ref() == Some(&value) {
                        continue;
                    }
                    match answers.set_at(&path, value.clone()) {
                        Ok(_) => changes.push(Change {
                            path,
                            kind: "set",
                            old,
                            new: Some(value),
                        }),
                        Err(e) => violations.push(Violation::new(path, e.message_fr())),
                    }
                }
                PatchOp::Clear => match answers.clear_at(&path) {
                    Ok(Some(old)) => changes.push(Change {
                        path,
                        kind: "cleared",
                        old: Some(old),
                        new: None,
                    }),
                    Ok(None) => {}
                    Err(e) => violations.push(Violation::new(path, e.message_fr())),
                },
                PatchOp::AddRow(row_id) => {
                    let rep = path.field_id().clone();
                    if let Err(v) = check_add_row(form, answers, &rep, &row_id) {
                        violations.push(v);
                        continue;
                    }
                    match answers.add_row(rep.clone(), row_id.clone()) {
                        Ok(true) => changes.push(Change {
                            path: ChampPath::Field(rep),
                            kind: "row_added",
                            old: None,
                            new: None,
                        }),
                        Ok(false) => {}
                        Err(e) => violations.push(Violation::new(path, e.message_fr())),
                    }
                }
                PatchOp::RemoveRow(row_id) => {
                    let rep = path.field_id().clone();
                    match answers.remove_row(&rep, &row_id) {
                        Ok(Some(removed)) => changes.push(Change {
                            path: ChampPath::Field(rep),
                            kind: "row_removed",
                            old: Some(Value::Repetition(vec![removed])),
                            new: None,
                        }),
                        Ok(None) => {}
                        Err(e) => violations.push(Violation::new(path, e.message_fr())),
                    }
                }
            }
        }
        Ok((changes, violations))
    }

    /// Checks what only the store can: a PIECE_JUSTIFICATIVE list may only keep files already
    /// attached; a DOSSIER_LINK must name a dossier of an allowed procedure (and of the same
    /// owner, and deposited, when the field says so). Unknown and foreign dossiers get the same
    /// message, so the check does not reveal other people's dossiers.
    async fn check_references<C: ConnectionTrait>(
        &self,
        db: &C,
        row: &dossier::Model,
        form: &FormDefinition,
        answers: &Answers,
        path: &ChampPath,
        value: &Value,
    ) -> Result<Option<Violation>, AppError> {
        match value {
            Value::Files(files) => {
                let current: BTreeSet<&str> = match answers.get_at(path) {
                    Some(Value::Files(f)) => f.iter().map(|f| f.id.as_str()).collect(),
                    _ => BTreeSet::new(),
                };
                if files.iter().any(|f| !current.contains(f.id.as_str())) {
                    return Ok(Some(Violation::new(
                        path.clone(),
                        "Un fichier s'ajoute en le téléversant ; cette liste peut seulement en retirer ou les réordonner",
                    )));
                }
                Ok(None)
            }
            Value::DossierLink(target) => {
                let Some(def) = form.entry(path.field_id()).map(|e| e.field) else {
                    return Ok(None);
                };
                let Constraints::DossierLink(c) = &def.constraints else {
                    return Ok(None);
                };
                let unreachable = || {
                    Ok(Some(Violation::new(
                        path.clone(),
                        format!(
                            "Le dossier n° {target} n'existe pas ou ne peut pas être lié à ce dossier"
                        ),
                    )))
                };
                if *target == row.number {
                    return unreachable();
                }
                let Some(linked) = store::dossier(db, *target).await? else {
                    return unreachable();
                };
                let reachable = linked.owner_email == row.owner_email
                    || store::active_invitation(db, linked.number, &row.owner_email)
                        .await?
                        .is_some();
                if !reachable || (c.same_owner && linked.owner_email != row.owner_email) {
                    return unreachable();
                }
                if !c.procedure_ids.is_empty() && !c.procedure_ids.contains(&linked.procedure_id) {
                    return Ok(Some(Violation::new(
                        path.clone(),
                        format!(
                            "Le dossier n° {target} ne relève pas de la démarche attendue ({})",
                            c.procedure_ids.join(", ")
                        ),
                    )));
                }
                if c.must_be_deposited && linked.status == Status::Brouillon.as_str() {
                    return Ok(Some(Violation::new(
                        path.clone(),
                        format!("Le dossier n° {target} doit d'abord être déposé"),
                    )));
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// The change history, most recent first. Owner or invitee.
    pub async fn history(
        &self,
        who: &Principal,
        number: i64,
        field_id: Option<&str>,
        since: Option<DateTime<Utc>>,
        page_size_req: i32,
        page_token: &str,
    ) -> Result<HistoryPage, AppError> {
        let row = store::dossier(&self.db, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        // Owner, invitees, instructeurs of its groupe, services and admins; an expert reads the
        // dossier but not who changed what.
        if self.read_access(&self.db, who, &row).await? == Access::Expert {
            return Err(AppError::Forbidden(format!(
                "{} is an expert of dossier {number}, not a reader of its history",
                who.email
            )));
        }
        let limit = page_size(page_size_req, 100, 1000);
        let before = if page_token.is_empty() {
            None
        } else {
            Some(page_token.parse::<i64>().map_err(|_| {
                AppError::BadRequest(vec![("page_token".into(), "Jeton de page invalide".into())])
            })?)
        };
        let mut entries =
            store::history_page(&self.db, number, field_id, since, before, limit + 1).await?;
        let next = if entries.len() as u64 > limit {
            entries.truncate(limit as usize);
            entries.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(HistoryPage {
            entries,
            next,
            form: self.form_of(&row.revision_id).await?,
        })
    }

    /// Copies a dossier into a new brouillon of its owner (same revision, same answers).
    /// Owner only; idempotent per `request_id`.
    pub async fn duplicate_dossier(
        &self,
        who: &Principal,
        number: i64,
        request_id: Option<&str>,
    ) -> Result<DossierView, AppError> {
        if let Some(existing) = self.replayed_request(who, request_id).await? {
            return Ok(existing);
        }
        let source = self.dossier(who, number).await?;
        if source.access != Access::Owner {
            return Err(AppError::Forbidden(
                "only the owner duplicates a dossier".into(),
            ));
        }
        let now = Utc::now();
        if source.procedure.is_closed(now) {
            return Err(closed(&source.procedure));
        }
        self.insert_dossier(
            who,
            &source.procedure,
            &source.row.revision_id,
            source.answers,
            Some(number),
            request_id,
            now,
        )
        .await
    }

    /// Deletes a brouillon. Owner only.
    pub async fn delete_dossier(
        &self,
        who: &Principal,
        number: i64,
        expected_version: i64,
    ) -> Result<(), AppError> {
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        if self.write_access(&txn, who, &row).await? != Access::Owner {
            return Err(AppError::Forbidden(
                "only the owner deletes a brouillon".into(),
            ));
        }
        let status = status_of(&row.status)?;
        if status != Status::Brouillon {
            return Err(AppError::WrongState {
                reason: "INVALID_TRANSITION",
                current: status.as_str().into(),
                message: format!(
                    "Le dossier n° {number} est {} : seul un brouillon peut être supprimé",
                    status.label_fr()
                ),
            });
        }
        if row.version != expected_version {
            return Err(stale(number, expected_version, row.version));
        }
        let procedure = self.procedure_on(&txn, &row.procedure_id).await?;
        dossier::Entity::delete_by_id(number).exec(&txn).await?;
        let event = DossierDeleted {
            metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Promoteur))),
            number,
            procedure: Some(procedure.reference()),
            owner_email: row.owner_email,
            version: row.version + 1,
        };
        mst_bus::enqueue_event(&txn, &event).await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(())
    }

    /// Invites someone to co-edit. Owner only; inviting the same person again returns the
    /// existing invitation.
    pub async fn invite(
        &self,
        who: &Principal,
        number: i64,
        invitee: &str,
        message: &str,
    ) -> Result<invitation::Model, AppError> {
        let email = Email::parse(invitee)
            .map_err(|e| AppError::BadRequest(vec![("invitee_email".into(), e.message_fr())]))?;
        let message = message.trim();
        if message.chars().count() > 2000
            || message
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            return Err(AppError::BadRequest(vec![(
                "message".into(),
                "Le message doit faire au plus 2 000 caractères, sans caractère de contrôle".into(),
            )]));
        }
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        if self.write_access(&txn, who, &row).await? != Access::Owner {
            return Err(AppError::Forbidden("only the owner invites".into()));
        }
        let status = status_of(&row.status)?;
        if !status.is_editable() {
            return Err(not_editable(number, status));
        }
        let email = email.as_str().to_lowercase();
        if email == row.owner_email {
            return Err(AppError::BadRequest(vec![(
                "invitee_email".into(),
                "Vous ne pouvez pas vous inviter vous-même".into(),
            )]));
        }
        if let Some(existing) = store::active_invitation(&txn, number, &email).await? {
            txn.rollback().await?;
            return Ok(existing);
        }
        let inv = invitation::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            dossier_number: Set(number),
            invitee_email: Set(email.clone()),
            invited_by: Set(who.email.clone()),
            message: Set(message.to_owned()),
            created_at: Set(Utc::now()),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await?;
        let procedure = self.procedure_on(&txn, &row.procedure_id).await?;
        let event = DossierInvited {
            metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Promoteur))),
            number,
            procedure: Some(procedure.reference()),
            invitation_id: inv.id.clone(),
            invitee_email: email,
            message: message.to_owned(),
            version: row.version,
        };
        mst_bus::enqueue_event(&txn, &event).await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(inv)
    }

    /// Current invitations. Owner or invitee.
    pub async fn invitations(
        &self,
        who: &Principal,
        number: i64,
    ) -> Result<Vec<invitation::Model>, AppError> {
        let row = store::dossier(&self.db, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        self.write_access(&self.db, who, &row).await?;
        Ok(store::invitations(&self.db, number).await?)
    }

    /// Revokes an invitation. Owner only.
    pub async fn revoke_invitation(
        &self,
        who: &Principal,
        number: i64,
        id: &str,
    ) -> Result<(), AppError> {
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        if self.write_access(&txn, who, &row).await? != Access::Owner {
            return Err(AppError::Forbidden(
                "only the owner revokes invitations".into(),
            ));
        }
        let Some(inv) = store::revoke_invitation(&txn, number, id, Utc::now()).await? else {
            return Err(AppError::NotFound("invitation", id.to_owned()));
        };
        let event = DossierInvitationRevoked {
            metadata: Some(EventMetadata::new(PRODUCER, actor(who, Role::Promoteur))),
            number,
            invitation_id: inv.id,
            invitee_email: inv.invitee_email,
            version: row.version,
        };
        mst_bus::enqueue_event(&txn, &event).await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(())
    }

    /// Holds a freeze on a dossier for `operation_id` (invariant I1): once this commits, every
    /// change is refused until the status mirror or an unfreeze releases it. Returns the frozen
    /// content version and whether the dossier was already frozen (by this operation, another
    /// one, or its status). Role: system.
    pub async fn freeze(
        &self,
        who: &Principal,
        number: i64,
        operation_id: &str,
    ) -> Result<(i64, bool), AppError> {
        require(who, Role::System)?;
        let txn = mst_kit::db::begin_write(&self.db).await?;
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        let already = row.frozen_by.is_some() || !status_of(&row.status)?.is_editable();
        match row.frozen_by.as_deref() {
            Some(holder) if holder != operation_id => {
                return Err(AppError::WrongState {
                    reason: "DOSSIER_FROZEN",
                    current: row.status.clone(),
                    message: format!("Le dossier n° {number} est déjà en cours de transition"),
                });
            }
            Some(_) => {}
            None => store::set_frozen_by(&txn, number, Some(operation_id)).await?,
        }
        txn.commit().await?;
        Ok((row.version, already))
    }

    /// Releases the freeze held by `operation_id` (a transition that did not commit); returns
    /// whether the dossier stays frozen. Role: system.
    pub async fn unfreeze(
        &self,
        who: &Principal,
        number: i64,
        operation_id: &str,
    ) -> Result<bool, AppError> {
        require(who, Role::System)?;
        dossier::Entity::update_many()
            .col_expr(
                dossier::Column::FrozenBy,
                Expr::value(Option::<String>::None),
            )
            .filter(dossier::Column::Number.eq(number))
            .filter(dossier::Column::FrozenBy.eq(operation_id))
            .exec(&self.db)
            .await?;
        let row = store::dossier(&self.db, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        Ok(row.frozen_by.is_some() || !status_of(&row.status)?.is_editable())
    }

    /// A transition back to en_construction committed at `status_version`: mirror it and release
    /// every hold. Role: system.
    pub async fn returned_to_construction(
        &self,
        who: &Principal,
        number: i64,
        status_version: i64,
    ) -> Result<bool, AppError> {
        require(who, Role::System)?;
        let txn = mst_kit::db::begin_write(&self.db).await?;
        store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| not_found(number))?;
        self.mirror_status(&txn, number, Status::EnConstruction, status_version, None)
            .await?;
        txn.commit().await?;
        Ok(false)
    }

    /// Records what the instruction service answered to a deposit: en_construction at
    /// `status_version`, the first deposit time, no pending correction.
    pub async fn record_deposit(
        &self,
        number: i64,
        status_version: i64,
        deposited_at: DateTime<Utc>,
        _correction_resolved: bool,
    ) -> Result<(), AppError> {
        let txn = mst_kit::db::begin_write(&self.db).await?;
        self.mirror_status(
            &txn,
            number,
            Status::EnConstruction,
            status_version,
            Some(false),
        )
        .await?;
        dossier::Entity::update_many()
            .col_expr(dossier::Column::DepositedAt, Expr::value(deposited_at))
            .filter(dossier::Column::Number.eq(number))
            .filter(dossier::Column::DepositedAt.is_null())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Mirrors a status the instruction service committed at `status_version`, ignoring stale
    /// versions. Leaving en_construction's frozen window (en_instruction, decisions) or returning
    /// to en_construction releases any hold: the status itself now says whether edits are allowed.
    pub(crate) async fn mirror_status<C: ConnectionTrait>(
        &self,
        db: &C,
        number: i64,
        status: Status,
        status_version: i64,
        correction_pending: Option<bool>,
    ) -> Result<bool, AppError> {
        // Only a newer version moves the status and releases holds: a late event must never
        // release a freeze taken for a later transition.
        let mut q = dossier::Entity::update_many()
            .col_expr(dossier::Column::Status, Expr::value(status.as_str()))
            .col_expr(dossier::Column::StatusVersion, Expr::value(status_version))
            .col_expr(
                dossier::Column::FrozenBy,
                Expr::value(Option::<String>::None),
            );
        if status != Status::EnConstruction {
            q = q.col_expr(dossier::Column::CorrectionPending, Expr::value(false));
        }
        let res = q
            .filter(dossier::Column::Number.eq(number))
            .filter(dossier::Column::StatusVersion.lt(status_version))
            .exec(db)
            .await?;
        // The correction flag of this very version may arrive after the status (a synchronous
        // unfreeze mirrors the status first, the event brings the flag).
        if let Some(pending) = correction_pending {
            dossier::Entity::update_many()
                .col_expr(
                    dossier::Column::CorrectionPending,
                    Expr::value(pending && status == Status::EnConstruction),
                )
                .filter(dossier::Column::Number.eq(number))
                .filter(dossier::Column::StatusVersion.eq(status_version))
                .exec(db)
                .await?;
        }
        Ok(res.rows_affected == 1)
    }
}

pub(super) fn ensure_editable(row: &dossier::Model) -> Result<(), AppError> {
    let status = status_of(&row.status)?;
    if !status.is_editable() {
        return Err(not_editable(row.number, status));
    }
    if row.frozen_by.is_some() {
        return Err(AppError::WrongState {
            reason: "DOSSIER_FROZEN",
            current: status.as_str().into(),
            message: format!(
                "Le dossier n° {} passe en instruction : il ne peut plus être modifié",
                row.number
            ),
        });
    }
    Ok(())
}

fn not_editable(number: i64, status: Status) -> AppError {
    AppError::WrongState {
        reason: "DOSSIER_NOT_EDITABLE",
        current: status.as_str().into(),
        message: format!(
            "Le dossier n° {number} est {} : il ne peut plus être modifié",
            status.label_fr()
        ),
    }
}

fn closed(procedure: &ProcedureView) -> AppError {
    AppError::WrongState {
        reason: "PROCEDURE_CLOSED",
        current: "closed".into(),
        message: format!("La démarche « {} » est close", procedure.row.title),
    }
}

fn encode_token(at: DateTime<Utc>, number: i64) -> String {
    format!("{}.{number}", at.timestamp_micros())
}

fn decode_token(token: &str) -> Result<(DateTime<Utc>, i64), AppError> {
    let bad = || AppError::BadRequest(vec![("page_token".into(), "Jeton de page invalide".into())]);
    let (micros, number) = token.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let number: i64 = number.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((at, number))
}

impl Forms {
    /// A page of the dossiers of a procedure for another service (exports, projections),
    /// ordered by number after `after`. Role: system.
    pub async fn procedure_dossiers(
        &self,
        who: &Principal,
        procedure_id: &str,
        numbers: &[i64],
        statuses: &[Status],
        after: i64,
        limit: u64,
    ) -> Result<Vec<DossierView>, AppError> {
        use sea_orm::{QueryOrder, QuerySelect};
        require(who, Role::System)?;
        let mut q = dossier::Entity::find()
            .filter(dossier::Column::ProcedureId.eq(procedure_id))
            .filter(dossier::Column::Number.gt(after));
        if !numbers.is_empty() {
            q = q.filter(dossier::Column::Number.is_in(numbers.iter().copied()));
        }
        if statuses.is_empty() {
            q = q.filter(dossier::Column::Status.ne(Status::Brouillon.as_str()));
        } else {
            q = q.filter(dossier::Column::Status.is_in(statuses.iter().map(|s| s.as_str())));
        }
        let rows = q
            .order_by_asc(dossier::Column::Number)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.view(&self.db, row, Access::Owner).await?);
        }
        Ok(out)
    }
}

/// The emails of a dossier's current invitees.
async fn invitee_emails<C: ConnectionTrait>(db: &C, number: i64) -> Result<Vec<String>, AppError> {
    Ok(store::invitations(db, number)
        .await?
        .into_iter()
        .map(|i| i.invitee_email)
        .collect())
}
