//! The dossier workflow: deposits recorded for forms, instructeur transitions (with the forms
//! freeze that makes invariant I1 hold), follows, access checks, and the projections of forms'
//! events. Every accepted command writes a traitement and its event in the transaction that
//! changes the status.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use mst_kit::auth::{Principal, Role, ServiceToken};
use mst_proto::events::{self as ev, EventMetadata};
use mst_proto::forms::forms_internal_service_client::FormsInternalServiceClient;
use mst_proto::forms::{FreezeDossierRequest, UnfreezeDossierRequest, UnfreezeReason};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{AppError, Instruction, PRODUCER, require};
use crate::domain::{
    Actor, Command, Context, DossierState, EventKind, Status, StatusChange, TransitionKind,
    WorkflowEvent, apply,
};
use crate::store::{self, deposit, dossier, follow, invitee, procedure, traitement};

pub(crate) type FormsClient = FormsInternalServiceClient<InterceptedService<Channel, ServiceToken>>;

/// The forms service's freeze API (invariant I1), called before a dossier passes en instruction.
#[derive(Clone, Debug)]
pub struct FormsFreeze {
    client: Option<FormsClient>,
    service: Option<FormsServiceClient>,
}

/// The forms service's public API, with this service's token (procedure and revision reads).
pub(crate) type FormsServiceClient = mst_proto::forms::forms_service_client::FormsServiceClient<
    InterceptedService<Channel, ServiceToken>,
>;

impl FormsFreeze {
    /// Freezes through the forms service at `channel`, authenticated with `token`.
    pub fn new(channel: Channel, token: ServiceToken) -> Self {
        Self {
            client: Some(FormsInternalServiceClient::with_interceptor(
                channel.clone(),
                token.clone(),
            )),
            service: Some(
                mst_proto::forms::forms_service_client::FormsServiceClient::with_interceptor(
                    channel, token,
                ),
            ),
        }
    }

    /// No forms service configured: every transition that needs a freeze fails as unavailable
    /// (used where only the roster or deposits are exercised).
    pub fn unconfigured() -> Self {
        Self {
            client: None,
            service: None,
        }
    }

    /// The forms service's public API client.
    pub(crate) fn service(&self) -> Result<FormsServiceClient, AppError> {
        self.service
            .clone()
            .ok_or_else(|| AppError::Unavailable("no forms service configured".into()))
    }

    pub(crate) fn client(&self) -> Result<FormsClient, AppError> {
        self.client
            .clone()
            .ok_or_else(|| AppError::Unavailable("no forms service configured".into()))
    }

    async fn freeze(
        &self,
        number: i64,
        operation_id: &str,
        status_version: i64,
    ) -> Result<i64, AppError> {
        let response = self
            .client()?
            .freeze_dossier(FreezeDossierRequest {
                number,
                operation_id: operation_id.to_owned(),
                target_status: ev::DossierStatus::EnInstruction as i32,
                status_version,
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::FailedPrecondition => AppError::WrongState {
                    reason: "DOSSIER_FROZEN",
                    current: Status::EnConstruction.as_str().into(),
                    message: format!("Le dossier n° {number} est déjà en cours de transition"),
                },
                _ => AppError::Unavailable(format!("forms freeze: {}", s.message())),
            })?;
        Ok(response.into_inner().content_version)
    }

    async fn rollback(&self, number: i64, operation_id: &str) {
        let Ok(mut client) = self.client() else {
            return;
        };
        let request = UnfreezeDossierRequest {
            number,
            operation_id: operation_id.to_owned(),
            reason: UnfreezeReason::Rollback as i32,
            status_version: 0,
        };
        if let Err(s) = client.unfreeze_dossier(request).await {
            tracing::warn!(dossier = number, error = %s, "could not release a freeze after a failed transition");
        }
    }

    async fn returned(&self, number: i64, operation_id: &str, status_version: i64) {
        let Ok(mut client) = self.client() else {
            return;
        };
        let request = UnfreezeDossierRequest {
            number,
            operation_id: operation_id.to_owned(),
            reason: UnfreezeReason::ReturnedToConstruction as i32,
            status_version,
        };
        if let Err(s) = client.unfreeze_dossier(request).await {
            // The forms consumer of the status event releases it too.
            tracing::warn!(dossier = number, error = %s, "could not tell forms the dossier is editable again");
        }
    }
}

/// A dossier as an instructeur sees it.
#[derive(Debug, Clone)]
pub struct DossierView {
    /// The row.
    pub row: dossier::Model,
    /// Its procedure, when known.
    pub procedure: Option<procedure::Model>,
    /// Its groupe's label.
    pub groupe_label: Option<String>,
    /// Status history.
    pub traitements: Vec<traitement::Model>,
    /// Current followers.
    pub followers: Vec<follow::Model>,
    /// Current invitees.
    pub invitees: Vec<invitee::Model>,
    /// Whether the caller follows it.
    pub followed_by_me: bool,
}

/// The result of an accepted command.
pub type Transition = DossierView;

/// What forms sends with a deposit.
#[derive(Debug, Clone)]
pub struct DepositInput {
    /// Dossier number.
    pub number: i64,
    /// Idempotency key.
    pub deposit_id: String,
    /// Procedure.
    pub procedure: ev::ProcedureRef,
    /// Revision.
    pub revision_id: String,
    /// Owner.
    pub owner_email: String,
    /// Current invitees.
    pub invitee_emails: Vec<String>,
    /// Content version deposited.
    pub content_version: i64,
    /// Headline.
    pub headline: Headline,
    /// Creation time of the brouillon.
    pub created_at: DateTime<Utc>,
}

/// Headline columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headline {
    /// Title.
    pub title: String,
    /// Structure.
    pub structure_name: String,
    /// SIRET.
    pub siret: String,
    /// Région.
    pub region_code: String,
    /// Département.
    pub departement_code: String,
    /// CPAM.
    pub cpam: String,
}

/// The answer to a deposit (stored for idempotent replays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositResult {
    /// Whether a pending correction was resolved (else: brouillon → en_construction).
    pub correction_resolved: bool,
    /// Status version after.
    pub status_version: i64,
    /// Routed groupe (id, label).
    pub groupe: Option<(String, String)>,
    /// First deposit time.
    pub deposited_at: DateTime<Utc>,
}

/// How a person relates to a dossier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Owner.
    Owner,
    /// Current invitee.
    Invitee,
    /// Declared instructeur of its groupe (deposited dossiers only).
    Instructeur,
    /// Follower.
    Follower,
    /// Expert with a pending or given avis.
    Expert,
}

/// The answer to an access check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessAnswer {
    /// Every relation that holds.
    pub relations: Vec<Relation>,
    /// The dossier's status and version, archived flag, when known.
    pub state: Option<(Status, i64, bool)>,
}

fn parse_status(s: &str) -> Result<Status, AppError> {
    s.parse::<Status>()
        .map_err(|_| AppError::Unexpected(anyhow::anyhow!("unknown stored status {s:?}")))
}

/// The domain state of a stored dossier.
fn state_of(row: &dossier::Model, followers: &[follow::Model]) -> Result<DossierState, AppError> {
    let followers: BTreeSet<String> = followers.iter().map(|f| f.email.clone()).collect();
    DossierState::restore(
        parse_status(&row.status)?,
        row.archived,
        row.correction_pending,
        row.version,
        followers,
    )
    .map_err(|e| {
        AppError::Unexpected(anyhow::anyhow!(
            "dossier {} is inconsistent: {e:?}",
            row.number
        ))
    })
}

/// The event enum of a status.
pub fn status_to_pb(status: Status) -> ev::DossierStatus {
    match status {
        Status::Brouillon => ev::DossierStatus::Brouillon,
        Status::EnConstruction => ev::DossierStatus::EnConstruction,
        Status::EnInstruction => ev::DossierStatus::EnInstruction,
        Status::Accepte => ev::DossierStatus::Accepte,
        Status::Refuse => ev::DossierStatus::Refuse,
        Status::SansSuite => ev::DossierStatus::SansSuite,
    }
}

/// The event enum of a transition.
pub fn transition_to_pb(t: TransitionKind) -> ev::DossierTransition {
    match t {
        TransitionKind::Deposer => ev::DossierTransition::Deposer,
        TransitionKind::PasserEnInstruction => ev::DossierTransition::PasserEnInstruction,
        TransitionKind::PasserEnInstructionAuto => ev::DossierTransition::PasserEnInstructionAuto,
        TransitionKind::RepasserEnConstruction => ev::DossierTransition::RepasserEnConstruction,
        TransitionKind::DemanderCorrection => ev::DossierTransition::DemanderCorrection,
        TransitionKind::Accepter => ev::DossierTransition::Accepter,
        TransitionKind::Refuser => ev::DossierTransition::Refuser,
        TransitionKind::ClasserSansSuite => ev::DossierTransition::ClasserSansSuite,
        TransitionKind::RepasserEnInstruction => ev::DossierTransition::RepasserEnInstruction,
    }
}

fn role_of(actor: &Actor) -> (&'static str, ev::Role) {
    match actor {
        Actor::Owner { .. } | Actor::Invitee { .. } => ("promoteur", ev::Role::Promoteur),
        Actor::Instructeur { .. } | Actor::UndeclaredInstructeur { .. } => {
            ("instructeur", ev::Role::Instructeur)
        }
        Actor::Admin { .. } => ("admin", ev::Role::Admin),
        Actor::System { .. } => ("system", ev::Role::System),
        Actor::Other { .. } => ("other", ev::Role::Unspecified),
    }
}

impl Instruction {
    /// Writes the traitement, the status columns, the event and the dashboard counters of an
    /// accepted command, in `txn`; returns the dossier as it now is, with what was read on the
    /// way, so the answer needs no second read.
    async fn commit_transition<C: ConnectionTrait>(
        &self,
        txn: &C,
        c: Commit<'_>,
    ) -> Result<DossierView, AppError> {
        let Commit {
            row,
            procedure,
            mut followers,
            state,
            event,
            traitement_id,
            content_version,
            auto_follow,
            groupe_id,
            invitee_emails,
        } = c;
        let now = event.at;
        let (role_name, role) = role_of(&event.actor);
        let mut active: dossier::ActiveModel = row.clone().into();
        active.status = Set(state.status().as_str().to_owned());
        active.version = Set(state.version());
        active.archived = Set(state.is_archived());
        active.correction_pending = Set(state.is_correction_pending());
        active.content_version = Set(content_version);
        active.updated_at = Set(now);
        if groupe_id.is_some() {
            active.groupe_id = Set(groupe_id.clone());
        }
        let (from, to, transition, motivation, justificatif, reason) = match &event.kind {
            EventKind::StatusChanged(StatusChange {
                from,
                to,
                transition,
                motivation,
                justificatif,
                correction_reason,
            }) => {
                match to {
                    Status::EnConstruction if row.deposited_at.is_none() => {
                        active.deposited_at = Set(Some(now))
                    }
                    Status::EnInstruction => active.en_instruction_at = Set(Some(now)),
                    s if s.is_decided() => active.decided_at = Set(Some(now)),
                    _ => {}
                }
                (
                    *from,
                    *to,
                    transition.as_str().to_owned(),
                    motivation.clone(),
                    justificatif.clone(),
                    *correction_reason,
                )
            }
            EventKind::CorrectionResolved => (
                state.status(),
                state.status(),
                "correction_resolved".into(),
                None,
                None,
                None,
            ),
            EventKind::Archived { status } => {
                active.archived_at = Set(Some(now));
                (*status, *status, "archive".into(), None, None, None)
            }
            EventKind::Unarchived { status } => {
                active.archived_at = Set(None);
                (*status, *status, "unarchive".into(), None, None, None)
            }
        };
        let saved = active.update(txn).await?;
        if let EventKind::StatusChanged(StatusChange {
            justificatif: Some(j),
            ..
        }) = &event.kind
        {
            self.use_justificatif(txn, &j.id, traitement_id).await?;
        }
        traitement::ActiveModel {
            id: Set(traitement_id.to_owned()),
            dossier_number: Set(row.number),
            from_status: Set(from.as_str().to_owned()),
            to_status: Set(to.as_str().to_owned()),
            transition: Set(transition),
            actor_email: Set(event.actor.email().to_owned()),
            actor_role: Set(role_name.to_owned()),
            motivation: Set(motivation.clone().unwrap_or_default()),
            justificatif: Set(justificatif.as_ref().map(|j| {
                serde_json::json!({"id": j.id, "file_name": j.file_name, "content_type": j.content_type, "size_bytes": j.size_bytes, "sha256": j.sha256}).to_string()
            })),
            correction_reason: Set(reason.map(|r| r.as_str().to_owned())),
            status_version: Set(state.version()),
            content_version: Set(content_version),
            at: Set(now),
        }
        .insert(txn)
        .await?;
        if let Some(email) = auto_follow {
            let added = follow::ActiveModel {
                dossier_number: Set(row.number),
                email: Set(email.to_owned()),
                followed_at: Set(now),
                unfollowed_at: Set(None),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            followers.push(added);
        }
        let procedure_ref = procedure.map_or_else(
            || ev::ProcedureRef {
                id: row.procedure_id.clone(),
                ..Default::default()
            },
            procedure_ref,
        );
        let metadata = Some(EventMetadata::new(
            PRODUCER,
            ev::Actor {
                email: event.actor.email().to_owned(),
                role: role as i32,
            },
        ));
        let invitees = store::invitees(txn, row.number).await?;
        match &event.kind {
            EventKind::StatusChanged(change) => {
                let e = ev::DossierStatusChanged {
                    metadata,
                    number: row.number,
                    procedure: Some(procedure_ref.clone()),
                    from_status: status_to_pb(change.from) as i32,
                    to_status: status_to_pb(change.to) as i32,
                    transition: transition_to_pb(change.transition) as i32,
                    motivation: change.motivation.clone().unwrap_or_default(),
                    justificatif: change.justificatif.as_ref().map(|j| ev::FileRef {
                        id: j.id.clone(),
                        file_name: j.file_name.clone(),
                        content_type: j.content_type.clone(),
                        size_bytes: i64::try_from(j.size_bytes).unwrap_or(i64::MAX),
                        sha256: j.sha256.clone(),
                    }),
                    groupe_id: saved.groupe_id.clone().unwrap_or_default(),
                    owner_email: row.owner_email.clone(),
                    invitee_emails: invitee_emails
                        .unwrap_or_else(|| invitees.iter().map(|i| i.email.clone()).collect()),
                    status_version: state.version(),
                    traitement_id: traitement_id.to_owned(),
                    correction_reason: change
                        .correction_reason
                        .map(|r| match r {
                            crate::domain::CorrectionReason::Incorrect => {
                                ev::CorrectionReason::Incorrect
                            }
                            crate::domain::CorrectionReason::Incomplete => {
                                ev::CorrectionReason::Incomplete
                            }
                            crate::domain::CorrectionReason::Outdated => {
                                ev::CorrectionReason::Outdated
                            }
                            crate::domain::CorrectionReason::Other => ev::CorrectionReason::Other,
                        })
                        .unwrap_or(ev::CorrectionReason::Unspecified)
                        as i32,
                    content_version,
                };
                mst_bus::enqueue_event(txn, &e).await?;
            }
            EventKind::CorrectionResolved => {
                let e = ev::DossierCorrectionResolved {
                    metadata,
                    number: row.number,
                    procedure: Some(procedure_ref.clone()),
                    correction_traitement_id: traitement_id.to_owned(),
                    status_version: state.version(),
                    content_version,
                };
                mst_bus::enqueue_event(txn, &e).await?;
            }
            EventKind::Archived { status } => {
                let e = ev::DossierArchived {
                    metadata,
                    number: row.number,
                    procedure: Some(procedure_ref.clone()),
                    status: status_to_pb(*status) as i32,
                    status_version: state.version(),
                };
                mst_bus::enqueue_event(txn, &e).await?;
            }
            EventKind::Unarchived { status } => {
                let e = ev::DossierUnarchived {
                    metadata,
                    number: row.number,
                    procedure: Some(procedure_ref.clone()),
                    status: status_to_pb(*status) as i32,
                    status_version: state.version(),
                };
                mst_bus::enqueue_event(txn, &e).await?;
            }
        }
        super::board::sync_row(
            txn,
            &saved,
            followers.iter().map(|f| f.email.clone()).collect(),
        )
        .await?;
        let groupe_label = self.groupe_of_row(txn, &saved).await?.map(|(_, l)| l);
        Ok(DossierView {
            procedure: procedure.cloned(),
            groupe_label,
            traitements: store::traitements(txn, row.number).await?,
            invitees,
            followed_by_me: followers.iter().any(|f| f.email == event.actor.email()),
            followers,
            row: saved,
        })
    }

    /// Records a deposit forms made (brouillon → en_construction, or the resolution of a pending
    /// correction). Idempotent per deposit id. Role: system.
    pub async fn record_deposit(
        &self,
        who: &Principal,
        input: DepositInput,
    ) -> Result<DepositResult, AppError> {
        require(who, Role::System)?;
        let now = Utc::now();
        let number = input.number;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        if let Some(done) = deposit::Entity::find_by_id(input.deposit_id.clone())
            .one(&txn)
            .await?
        {
            txn.rollback().await?;
            return Ok(serde_json::from_str(&done.response)?);
        }
        self.upsert_procedure_ref(&txn, &input.procedure).await?;
        let row = match store::dossier_for_update(&txn, number).await? {
            Some(row) => row,
            None => {
                self.insert_brouillon(
                    &txn,
                    number,
                    &input.procedure.id,
                    &input.revision_id,
                    &input.owner_email,
                    input.created_at,
                )
                .await?;
                store::dossier_for_update(&txn, number)
                    .await?
                    .ok_or_else(|| AppError::NotFound("dossier", number.to_string()))?
            }
        };
        if row.owner_email != input.owner_email {
            return Err(AppError::Forbidden(format!(
                "{} does not own dossier {number}",
                input.owner_email
            )));
        }
        let followers = store::followers(&txn, number).await?;
        let state = state_of(&row, &followers)?;
        let procedure = store::procedure(&txn, &row.procedure_id).await?;
        let closing_at = procedure.as_ref().and_then(|p| p.closing_at);
        let command = state.deposit_command();
        let resolving = matches!(command, Command::ResolveCorrection);
        let t = apply(
            &state,
            &Actor::Owner {
                email: row.owner_email.clone(),
            },
            command,
            Context { now, closing_at },
        )
        .map_err(|e| AppError::transition(number, e))?;
        let h = &input.headline;
        let groupe = if resolving {
            None
        } else {
            super::roster::route_on(&txn, &h.cpam, &h.departement_code).await?
        };
        let mut active: dossier::ActiveModel = row.clone().into();
        active.title = Set(h.title.clone());
        active.structure_name = Set(h.structure_name.clone());
        active.siret = Set(h.siret.clone());
        active.region_code = Set(h.region_code.clone());
        active.departement_code = Set(h.departement_code.clone());
        active.cpam = Set(h.cpam.clone());
        let row = active.update(&txn).await?;
        let traitement_id = uuid::Uuid::now_v7().to_string();
        let committed = self
            .commit_transition(
                &txn,
                Commit {
                    row: &row,
                    procedure: procedure.as_ref(),
                    followers,
                    state: &t.state,
                    event: &t.event,
                    traitement_id: &traitement_id,
                    content_version: input.content_version,
                    auto_follow: None,
                    groupe_id: groupe.as_ref().map(|(id, _)| id.clone()),
                    invitee_emails: Some(input.invitee_emails.clone()),
                },
            )
            .await?;
        let result = DepositResult {
            correction_resolved: resolving,
            status_version: t.state.version(),
            groupe: match groupe {
                Some(g) => Some(g),
                None => committed.row.groupe_id.clone().zip(committed.groupe_label),
            },
            deposited_at: row.deposited_at.unwrap_or(now),
        };
        deposit::ActiveModel {
            deposit_id: Set(input.deposit_id),
            dossier_number: Set(number),
            response: Set(serde_json::to_string(&result)?),
            at: Set(now),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        self.relay().wake();
        tracing::info!(dossier = number, resolved = resolving, "deposit recorded");
        Ok(result)
    }

    async fn groupe_of_row<C: ConnectionTrait>(
        &self,
        db: &C,
        row: &dossier::Model,
    ) -> Result<Option<(String, String)>, AppError> {
        let Some(id) = &row.groupe_id else {
            return Ok(None);
        };
        let label = store::roster::groupe(db, id)
            .await?
            .map(|g| g.label)
            .unwrap_or_default();
        Ok(Some((id.clone(), label)))
    }

    async fn upsert_procedure_ref<C: ConnectionTrait>(
        &self,
        db: &C,
        p: &ev::ProcedureRef,
    ) -> Result<(), AppError> {
        let kind = if p.kind == ev::DossierKind::Action as i32 {
            "action"
        } else {
            "projet"
        };
        procedure::Entity::insert(procedure::ActiveModel {
            id: Set(p.id.clone()),
            title: Set(p.title.clone()),
            kind: Set(kind.into()),
            closing_at: Set(None),
            version: Set(0),
        })
        .on_conflict_do_nothing()
        .exec(db)
        .await?;
        Ok(())
    }

    async fn insert_brouillon<C: ConnectionTrait>(
        &self,
        db: &C,
        number: i64,
        procedure_id: &str,
        revision_id: &str,
        owner: &str,
        created_at: DateTime<Utc>,
    ) -> Result<(), AppError> {
        dossier::Entity::insert(dossier::ActiveModel {
            number: Set(number),
            procedure_id: Set(procedure_id.to_owned()),
            revision_id: Set(revision_id.to_owned()),
            owner_email: Set(owner.to_owned()),
            status: Set(Status::Brouillon.as_str().to_owned()),
            version: Set(1),
            archived: Set(false),
            correction_pending: Set(false),
            groupe_id: Set(None),
            title: Set(String::new()),
            structure_name: Set(String::new()),
            siret: Set(String::new()),
            region_code: Set(String::new()),
            departement_code: Set(String::new()),
            cpam: Set(String::new()),
            content_version: Set(1),
            created_at: Set(created_at),
            deposited_at: Set(None),
            en_instruction_at: Set(None),
            decided_at: Set(None),
            archived_at: Set(None),
            updated_at: Set(created_at),
            deleted: Set(false),
        })
        .on_conflict_do_nothing()
        .exec(db)
        .await?;
        Ok(())
    }

    /// The workflow actor of a caller on a dossier: an instructeur is checked against the roster
    /// and the dossier's groupe.
    /// Refuses, before any dossier is looked up, a caller who can reach no dossier through this
    /// API: without the instructeur role (or admin, for reads when `admin_reads`, or system), or
    /// an instructeur not declared on the roster. Checking this first keeps the answer the same
    /// whether the dossier exists or not (I4: no existence leak).
    /// Returns the caller's [`Groupes`] for [`actor_for`].
    pub(crate) async fn gate(
        &self,
        who: &Principal,
        admin_reads: bool,
    ) -> Result<Groupes, AppError> {
        let groupes = if who.has(Role::Instructeur) {
            self.groupes_of(&who.email).await?
        } else {
            Vec::new()
        };
        if who.has(Role::System) || (admin_reads && who.has(Role::Admin)) {
            return Ok(Groupes(groupes));
        }
        if !who.has(Role::Instructeur) {
            return Err(AppError::Forbidden(format!(
                "{} n'est pas instructeur",
                who.email
            )));
        }
        if groupes.is_empty() {
            return Err(AppError::Forbidden(format!(
                "{} n'est pas un instructeur déclaré",
                who.email
            )));
        }
        Ok(Groupes(groupes))
    }
}

/// The groupes of a caller who passed [`Instruction::gate`] (empty unless an instructeur).
#[derive(Debug, Clone)]
pub(crate) struct Groupes(Vec<String>);

/// The workflow actor of a caller on a dossier, the caller's groupes known.
fn actor_for(who: &Principal, groupes: &Groupes, row: &dossier::Model) -> Actor {
    let Groupes(groupes) = groupes;
    if who.has(Role::System) {
        return Actor::System {
            service: who.email.clone(),
        };
    }
    if who.has(Role::Instructeur) {
        return if groupes.is_empty() {
            Actor::UndeclaredInstructeur {
                email: who.email.clone(),
            }
        } else {
            Actor::Instructeur {
                email: who.email.clone(),
                of_groupe: row.groupe_id.as_ref().is_some_and(|g| groupes.contains(g)),
            }
        };
    }
    if who.email == row.owner_email {
        return Actor::Owner {
            email: who.email.clone(),
        };
    }
    if who.has(Role::Admin) {
        return Actor::Admin {
            email: who.email.clone(),
        };
    }
    Actor::Other {
        email: who.email.clone(),
    }
}

/// The events' reference to a stored procedure.
pub fn procedure_ref(p: &procedure::Model) -> ev::ProcedureRef {
    ev::ProcedureRef {
        id: p.id.clone(),
        title: p.title.clone(),
        kind: if p.kind == "action" {
            ev::DossierKind::Action
        } else {
            ev::DossierKind::Projet
        } as i32,
    }
}

/// What deciding a command read, and the transition it plans.
struct Decided {
    followers: Vec<follow::Model>,
    state: DossierState,
    procedure: Option<procedure::Model>,
    planned: crate::domain::Transition,
}

/// Decides `command` on `row` as read in `db` (with its followers and procedure): authorization
/// and state first, so a caller who may not act learns nothing of versions, then the version.
async fn decide<C: ConnectionTrait>(
    db: &C,
    who: &Principal,
    groupes: &Groupes,
    row: &dossier::Model,
    expected_version: i64,
    command: Command,
    now: DateTime<Utc>,
) -> Result<Decided, AppError> {
    let number = row.number;
    let actor = actor_for(who, groupes, row);
    let followers = store::followers(db, number).await?;
    let state = state_of(row, &followers)?;
    let procedure = store::procedure(db, &row.procedure_id).await?;
    let context = Context {
        now,
        closing_at: procedure.as_ref().and_then(|p| p.closing_at),
    };
    let planned =
        apply(&state, &actor, command, context).map_err(|e| AppError::transition(number, e))?;
    if row.version != expected_version {
        return Err(AppError::Stale {
            resource: "dossier",
            id: number.to_string(),
            expected: expected_version,
            current: row.version,
        });
    }
    Ok(Decided {
        followers,
        state,
        procedure,
        planned,
    })
}

/// What [`Instruction::commit_transition`] writes.
struct Commit<'a> {
    /// The dossier, locked, before the change.
    row: &'a dossier::Model,
    /// Its procedure, when known.
    procedure: Option<&'a procedure::Model>,
    /// Its followers before the change.
    followers: Vec<follow::Model>,
    /// The state after the change.
    state: &'a DossierState,
    /// What happened.
    event: &'a WorkflowEvent,
    /// Id of the traitement row.
    traitement_id: &'a str,
    /// Content version the change saw.
    content_version: i64,
    /// Who starts following it (the instructeur passing it en instruction).
    auto_follow: Option<&'a str>,
    /// The groupe it is routed to (a deposit).
    groupe_id: Option<String>,
    /// The invitees the status event names, when the caller knows them better than this
    /// service's projection (forms, at a deposit: an invitation made just before may not have
    /// reached instruction yet); else the projection's.
    invitee_emails: Option<Vec<String>>,
}

impl Instruction {
    /// Applies an instructeur's command at `expected_version`. Passing en instruction first has
    /// forms freeze the dossier (I1): a save racing the transition either landed before the
    /// freeze — and is part of what is examined — or is refused; the freeze is released if the
    /// transition then fails, and the transition commits only within the freeze lease
    /// ([`mst_kit::FREEZE_LEASE`]) of asking for the freeze (forms releases an abandoned hold
    /// only after it).
    pub async fn transition(
        &self,
        who: &Principal,
        number: i64,
        expected_version: i64,
        command: Command,
    ) -> Result<DossierView, AppError> {
        let groupes = self.gate(who, false).await?;
        let now = Utc::now();
        let traitement_id = uuid::Uuid::now_v7().to_string();
        // Only passing en instruction, by an instructeur or at the closing date, can freeze (en
        // construction → en instruction): decide it first outside any transaction (authorization
        // and state), so that a refused command freezes nothing. Every other command is decided
        // once, in its transaction.
        let mut planned_freeze = None;
        if command.kind().freezes_forms() {
            let row = store::dossier(self.db(), number)
                .await?
                .ok_or_else(|| AppError::NotFound("dossier", number.to_string()))?;
            let d = decide(
                self.db(),
                who,
                &groupes,
                &row,
                expected_version,
                command.clone(),
                now,
            )
            .await?;
            if d.state.status() == Status::EnConstruction
                && d.planned.state.status() == Status::EnInstruction
            {
                planned_freeze = Some(d.planned.state.version());
            }
        }
        // The lease starts before the freeze is asked for: forms measures it from later.
        let lease = planned_freeze.map(|_| std::time::Instant::now() + self.freeze_lease);
        let frozen_content = match planned_freeze {
            Some(version) => Some(self.forms.freeze(number, &traitement_id, version).await?),
            None => None,
        };
        let result = self
            .commit_command(
                who,
                &groupes,
                number,
                expected_version,
                command,
                now,
                &traitement_id,
                frozen_content,
                lease,
            )
            .await;
        match &result {
            Err(_) if planned_freeze.is_some() => self.forms.rollback(number, &traitement_id).await,
            Ok((view, before))
                if view.row.status == Status::EnConstruction.as_str()
                    && *before != Status::EnConstruction =>
            {
                self.forms
                    .returned(number, &traitement_id, view.row.version)
                    .await;
            }
            _ => {}
        }
        result.map(|(view, _)| view)
    }

    /// Decides and commits `command` in one transaction on the locked dossier; returns the
    /// dossier as it now is and the status it had. `frozen_content` is the content version forms
    /// froze (passing en instruction), else the dossier's own is kept.
    #[allow(clippy::too_many_arguments)]
    async fn commit_command(
        &self,
        who: &Principal,
        groupes: &Groupes,
        number: i64,
        expected_version: i64,
        command: Command,
        now: DateTime<Utc>,
        traitement_id: &str,
        frozen_content: Option<i64>,
        lease: Option<std::time::Instant>,
    ) -> Result<(DossierView, Status), AppError> {
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| AppError::NotFound("dossier", number.to_string()))?;
        let Decided {
            followers,
            state,
            procedure,
            planned: t,
        } = decide(&txn, who, groupes, &row, expected_version, command, now).await?;
        let view = self
            .commit_transition(
                &txn,
                Commit {
                    row: &row,
                    procedure: procedure.as_ref(),
                    followers,
                    state: &t.state,
                    event: &t.event,
                    traitement_id,
                    content_version: frozen_content.unwrap_or(row.content_version),
                    auto_follow: t.auto_follow.as_deref(),
                    groupe_id: None,
                    invitee_emails: None,
                },
            )
            .await?;
        if lease.is_some_and(|deadline| std::time::Instant::now() >= deadline) {
            // Forms may release the hold once the lease is over: committing now could let a
            // save land after the passage en instruction (I1). Roll back; the caller releases.
            return Err(AppError::Unavailable(format!(
                "dossier {number}: the forms freeze outlived its lease, nothing was committed"
            )));
        }
        txn.commit().await?;
        self.relay().wake();
        Ok((view, state.status()))
    }

    /// The view of `row` for `me`, read in `db`.
    async fn view_of<C: ConnectionTrait>(
        &self,
        db: &C,
        row: dossier::Model,
        me: &str,
    ) -> Result<DossierView, AppError> {
        let number = row.number;
        let followers = store::followers(db, number).await?;
        Ok(DossierView {
            procedure: store::procedure(db, &row.procedure_id).await?,
            groupe_label: self.groupe_of_row(db, &row).await?.map(|(_, l)| l),
            traitements: store::traitements(db, number).await?,
            invitees: store::invitees(db, number).await?,
            followed_by_me: followers.iter().any(|f| f.email == me),
            followers,
            row,
        })
    }

    /// A dossier for a declared instructeur of its groupe (never a brouillon) or an admin.
    pub async fn dossier(&self, who: &Principal, number: i64) -> Result<DossierView, AppError> {
        let groupes = self.gate(who, true).await?;
        let row = store::dossier(self.db(), number)
            .await?
            .ok_or_else(|| AppError::NotFound("dossier", number.to_string()))?;
        let visible = match actor_for(who, &groupes, &row) {
            Actor::Instructeur {
                of_groupe: true, ..
            }
            | Actor::Admin { .. } => row.status != Status::Brouillon.as_str() && !row.deleted,
            _ => false,
        };
        if !visible {
            return Err(AppError::NotFound("dossier", number.to_string()));
        }
        self.view_of(self.db(), row, &who.email).await
    }

    /// Follows (or, with `follow = false`, unfollows) a dossier; idempotent.
    pub async fn set_follow(
        &self,
        who: &Principal,
        number: i64,
        follow_it: bool,
    ) -> Result<DossierView, AppError> {
        let groupes = self.gate(who, false).await?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let row = store::dossier_for_update(&txn, number)
            .await?
            .ok_or_else(|| AppError::NotFound("dossier", number.to_string()))?;
        let actor = actor_for(who, &groupes, &row);
        let followers = store::followers(&txn, number).await?;
        let state = state_of(&row, &followers)?;
        let outcome = if follow_it {
            crate::domain::follow(&state, &actor)
        } else {
            crate::domain::unfollow(&state, &actor)
        }
        .map_err(|e| AppError::transition(number, e))?;
        if outcome.changed {
            let now = Utc::now();
            if follow_it {
                follow::ActiveModel {
                    dossier_number: Set(number),
                    email: Set(who.email.clone()),
                    followed_at: Set(now),
                    unfollowed_at: Set(None),
                    ..Default::default()
                }
                .insert(&txn)
                .await?;
            } else {
                store::close_follow(&txn, number, &who.email, now).await?;
            }
            super::board::sync_dossier(&txn, number).await?;
        }
        let view = self.view_of(&txn, row, &who.email).await?;
        txn.commit().await?;
        Ok(view)
    }

    /// How `email` relates to dossier `number`. Role: system.
    pub async fn check_access(
        &self,
        who: &Principal,
        number: i64,
        email: &str,
        instructeur: bool,
    ) -> Result<AccessAnswer, AppError> {
        require(who, Role::System)?;
        let db = self.db();
        let Some(row) = store::dossier(db, number).await? else {
            return Ok(AccessAnswer {
                relations: Vec::new(),
                state: None,
            });
        };
        let status = parse_status(&row.status)?;
        let mut relations = Vec::new();
        if row.owner_email == email {
            relations.push(Relation::Owner);
        }
        if store::invitees(db, number)
            .await?
            .iter()
            .any(|i| i.email == email)
        {
            relations.push(Relation::Invitee);
        }
        if instructeur && status != Status::Brouillon && !row.deleted {
            let groupes = self.groupes_of(email).await?;
            if row.groupe_id.as_ref().is_some_and(|g| groupes.contains(g)) {
                relations.push(Relation::Instructeur);
                if store::followers(db, number)
                    .await?
                    .iter()
                    .any(|f| f.email == email)
                {
                    relations.push(Relation::Follower);
                }
            }
        }
        if self.is_expert_of(number, email).await? {
            relations.push(Relation::Expert);
        }
        Ok(AccessAnswer {
            relations,
            state: Some((status, row.version, row.archived)),
        })
    }

    /// The groupes of `email` (empty: not a declared instructeur). Role: system.
    pub async fn instructeur_groupes(
        &self,
        who: &Principal,
        email: &str,
    ) -> Result<Vec<String>, AppError> {
        require(who, Role::System)?;
        self.groupes_of(email).await
    }

    /// The declared instructeurs of a deposited dossier's groupe with their follow flag
    /// (messagerie's notices). Role: system.
    pub async fn dossier_instructeurs(
        &self,
        who: &Principal,
        number: i64,
    ) -> Result<Vec<(String, bool)>, AppError> {
        require(who, Role::System)?;
        let db = self.db();
        let Some(row) = store::dossier(db, number).await? else {
            return Ok(Vec::new());
        };
        if row.deleted || parse_status(&row.status)? == Status::Brouillon {
            return Ok(Vec::new());
        }
        let followers: Vec<String> = store::followers(db, number)
            .await?
            .into_iter()
            .map(|f| f.email)
            .collect();
        let mut members = match &row.groupe_id {
            Some(g) => store::roster::member_emails(db, g).await?,
            None => Vec::new(),
        };
        members.sort();
        members.dedup();
        Ok(members
            .into_iter()
            .map(|email| {
                let following = followers.contains(&email);
                (email, following)
            })
            .collect())
    }

    /// Projection of forms' `DossierCreated`: the brouillon exists (idempotent).
    pub async fn on_dossier_created<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::DossierCreated,
    ) -> Result<(), AppError> {
        if let Some(p) = &e.procedure {
            self.upsert_procedure_ref(txn, p).await?;
        }
        let created = e
            .metadata
            .as_ref()
            .and_then(|m| m.occurred_at.as_ref())
            .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
            .unwrap_or_else(Utc::now);
        let procedure_id = e
            .procedure
            .as_ref()
            .map(|p| p.id.clone())
            .unwrap_or_default();
        self.insert_brouillon(
            txn,
            e.number,
            &procedure_id,
            &e.revision_id,
            &e.owner_email,
            created,
        )
        .await
    }

    /// Projection of forms' invitation events.
    pub async fn on_invitation<C: ConnectionTrait>(
        &self,
        txn: &C,
        number: i64,
        invitation_id: &str,
        email: &str,
        revoked: bool,
    ) -> Result<(), AppError> {
        let now = Utc::now();
        if revoked {
            invitee::Entity::update_many()
                .col_expr(invitee::Column::Until, Expr::value(now))
                .filter(invitee::Column::DossierNumber.eq(number))
                .filter(invitee::Column::InvitationId.eq(invitation_id))
                .exec(txn)
                .await?;
        } else {
            invitee::Entity::insert(invitee::ActiveModel {
                dossier_number: Set(number),
                invitation_id: Set(invitation_id.to_owned()),
                email: Set(email.to_owned()),
                since: Set(now),
                until: Set(None),
            })
            .on_conflict_do_nothing()
            .exec(txn)
            .await?;
        }
        Ok(())
    }

    /// Projection of forms' `DossierDeleted`.
    pub async fn on_dossier_deleted<C: ConnectionTrait>(
        &self,
        txn: &C,
        number: i64,
    ) -> Result<(), AppError> {
        dossier::Entity::update_many()
            .col_expr(dossier::Column::Deleted, Expr::value(true))
            .filter(dossier::Column::Number.eq(number))
            .filter(dossier::Column::Status.eq(Status::Brouillon.as_str()))
            .exec(txn)
            .await?;
        super::board::sync_dossier(txn, number).await?;
        Ok(())
    }

    /// Projection of forms' `ProcedureChanged` (titles, closing date), ignoring stale versions.
    pub async fn on_procedure_changed<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::ProcedureChanged,
    ) -> Result<(), AppError> {
        let Some(p) = &e.procedure else { return Ok(()) };
        self.upsert_procedure_ref(txn, p).await?;
        let closing_at = e
            .closing_at
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, 0));
        procedure::Entity::update_many()
            .col_expr(procedure::Column::Title, Expr::value(p.title.clone()))
            .col_expr(procedure::Column::ClosingAt, Expr::value(closing_at))
            .col_expr(procedure::Column::Version, Expr::value(e.version))
            .filter(procedure::Column::Id.eq(p.id.clone()))
            .filter(procedure::Column::Version.lt(e.version))
            .exec(txn)
            .await?;
        Ok(())
    }

    /// Projection of forms' `DossierContentChanged`: the content version instructeurs see.
    pub async fn on_content_changed<C: ConnectionTrait>(
        &self,
        txn: &C,
        number: i64,
        version: i64,
    ) -> Result<(), AppError> {
        dossier::Entity::update_many()
            .col_expr(dossier::Column::ContentVersion, Expr::value(version))
            .filter(dossier::Column::Number.eq(number))
            .filter(dossier::Column::ContentVersion.lt(version))
            .exec(txn)
            .await?;
        Ok(())
    }
}

impl Instruction {
    /// Passes en instruction every en_construction dossier of every procedure whose closing date
    /// has passed, each with its traitement, forms freeze and event; returns how many moved.
    /// Failures are logged and retried at the next run.
    pub async fn close_due_procedures(&self, now: DateTime<Utc>) -> Result<usize, AppError> {
        use sea_orm::{QueryOrder, QuerySelect};
        let due: Vec<String> = procedure::Entity::find()
            .filter(procedure::Column::ClosingAt.lte(now))
            .all(self.db())
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let system = Principal {
            email: PRODUCER.to_owned(),
            name: None,
            roles: [Role::System].into(),
        };
        let mut moved = 0;
        let mut after = 0i64;
        loop {
            let batch = dossier::Entity::find()
                .filter(dossier::Column::ProcedureId.is_in(due.clone()))
                .filter(dossier::Column::Status.eq(Status::EnConstruction.as_str()))
                .filter(dossier::Column::Deleted.eq(false))
                .filter(dossier::Column::Number.gt(after))
                .order_by_asc(dossier::Column::Number)
                .limit(200)
                .all(self.db())
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.number;
            for row in batch {
                match self
                    .transition(
                        &system,
                        row.number,
                        row.version,
                        Command::PasserEnInstructionAuto,
                    )
                    .await
                {
                    Ok(_) => moved += 1,
                    Err(e) => {
                        tracing::warn!(dossier = row.number, error = %e, "automatic passage en instruction failed; will retry")
                    }
                }
            }
        }
        if moved > 0 {
            tracing::info!(moved, "closing date passed: dossiers moved en instruction");
        }
        Ok(moved)
    }

    /// Runs [`Instruction::close_due_procedures`] every `every` until `shutdown`.
    pub async fn run_closing_scheduler(
        self,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(e) = self.close_due_procedures(Utc::now()).await {
                tracing::warn!(error = %e, "closing-date scheduler run failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// How a person is involved in a dossier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Involvement {
    /// Owner.
    Owner,
    /// Invitee.
    Invitee,
    /// Follower.
    Follower,
    /// Instructeur who ran a transition.
    Instructeur,
    /// Expert asked for an avis.
    Expert,
}

/// One person involved, since when, until when (former).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Email.
    pub email: String,
    /// How.
    pub involvement: Involvement,
    /// Since.
    pub since: DateTime<Utc>,
    /// Until (former involvement).
    pub until: Option<DateTime<Utc>>,
}

impl Instruction {
    /// Everyone involved in a dossier (owner, invitees, followers, instructeurs who acted), when
    /// they joined and, with `include_former`, those who left. Readers of the dossier only.
    pub async fn people_involved(
        &self,
        who: &Principal,
        number: i64,
        include_former: bool,
    ) -> Result<Vec<Person>, AppError> {
        let view = self.dossier(who, number).await?;
        let mut people = vec![Person {
            email: view.row.owner_email.clone(),
            involvement: Involvement::Owner,
            since: view.row.created_at,
            until: None,
        }];
        let invitees = if include_former {
            invitee::Entity::find()
                .filter(invitee::Column::DossierNumber.eq(number))
                .all(self.db())
                .await?
        } else {
            view.invitees.clone()
        };
        people.extend(invitees.into_iter().map(|i| Person {
            email: i.email,
            involvement: Involvement::Invitee,
            since: i.since,
            until: i.until,
        }));
        let follows = if include_former {
            follow::Entity::find()
                .filter(follow::Column::DossierNumber.eq(number))
                .all(self.db())
                .await?
        } else {
            view.followers.clone()
        };
        people.extend(follows.into_iter().map(|f| Person {
            email: f.email,
            involvement: Involvement::Follower,
            since: f.followed_at,
            until: f.unfollowed_at,
        }));
        let mut seen = BTreeSet::new();
        for t in view
            .traitements
            .iter()
            .filter(|t| t.actor_role == "instructeur")
        {
            if seen.insert(t.actor_email.clone()) {
                people.push(Person {
                    email: t.actor_email.clone(),
                    involvement: Involvement::Instructeur,
                    since: t.at,
                    until: None,
                });
            }
        }
        let avis = crate::store::avis::avis_row::Entity::find()
            .filter(crate::store::avis::avis_row::Column::DossierNumber.eq(number))
            .all(self.db())
            .await?;
        people.extend(
            avis.into_iter()
                .filter(|a| include_former || a.revoked_at.is_none())
                .map(|a| Person {
                    email: a.expert_email,
                    involvement: Involvement::Expert,
                    since: a.requested_at,
                    until: a.revoked_at,
                }),
        );
        people.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.email.cmp(&b.email)));
        Ok(people)
    }
}
