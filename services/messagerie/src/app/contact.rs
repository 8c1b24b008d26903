//! Contact of brouillon owners, their notifications, and the delivery log.

use chrono::Utc;
use minijinja::context;
use mst_kit::auth::{Principal, Role};
use mst_kit::error::ApiError;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, Condition, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};

use super::queue::NewMail;
use super::{AppError, Messagerie};
use crate::store::{dossier, mail, notification, procedure};
use crate::templates::single_line;

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Dossier number, 0 for all.
    pub number: i64,
    /// Recipient, empty for all.
    pub recipient: String,
    /// Statuses (`queued`, `sent`, `failed`), empty for all.
    pub statuses: Vec<&'static str>,
    /// Source event id, empty for all.
    pub source_event_id: String,
}

impl Messagerie {
    /// Sends `subject`/`body` to the owner of every brouillon of `procedure_id`: a notification
    /// each and an email each. Idempotent per `request_id`. Returns (brouillons, owners).
    pub async fn contact_brouillon_owners(
        &self,
        who: &Principal,
        procedure_id: &str,
        subject: &str,
        body: &str,
        request_id: &str,
    ) -> Result<(usize, usize), AppError> {
        who.require(Role::Instructeur)?;
        let mut violations = Vec::new();
        if procedure_id.trim().is_empty() {
            violations.push(mst_kit::error::Violation::new(
                "procedure_id",
                "Démarche manquante",
            ));
        }
        if subject.trim().is_empty() {
            violations.push(mst_kit::error::Violation::new("subject", "Objet manquant"));
        } else if subject.chars().count() > 200 || subject.contains(['\r', '\n']) {
            violations.push(mst_kit::error::Violation::new(
                "subject",
                "L'objet tient sur une ligne de 200 caractères au plus",
            ));
        }
        if body.trim().is_empty() {
            violations.push(mst_kit::error::Violation::new("body", "Message vide"));
        } else if body.chars().count() > super::thread::MAX_BODY_CHARS {
            violations.push(mst_kit::error::Violation::new(
                "body",
                "Le message dépasse 20 000 caractères",
            ));
        }
        if uuid::Uuid::parse_str(request_id).is_err() {
            violations.push(mst_kit::error::Violation::new(
                "request_id",
                "Identifiant de requête invalide (UUID attendu)",
            ));
        }
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations).into());
        }
        self.require_declared(who).await?;
        self.require_procedure(procedure_id).await?;
        let brouillons = dossier::Entity::find()
            .filter(dossier::Column::ProcedureId.eq(procedure_id))
            .filter(dossier::Column::Status.eq(mst_proto::events::DossierStatus::Brouillon as i32))
            .filter(dossier::Column::Deleted.eq(false))
            .order_by_asc(dossier::Column::Number)
            .all(self.db())
            .await?;
        let mut owners: Vec<String> = brouillons.iter().map(|d| d.owner_email.clone()).collect();
        owners.sort();
        owners.dedup();
        let txn = mst_bus::db::begin_write(self.db()).await?;
        for d in &brouillons {
            let rendered = self.render(
                "contact_brouillon",
                context! {
                    sujet => single_line(subject),
                    numero => d.number,
                    demarche => d.procedure_title.clone(),
                    message => body,
                },
            )?;
            notification::Entity::insert(notification::ActiveModel {
                id: Set(uuid::Uuid::now_v7().to_string()),
                recipient: Set(d.owner_email.clone()),
                number: Set(d.number),
                procedure_id: Set(d.procedure_id.clone()),
                procedure_title: Set(d.procedure_title.clone()),
                sender_email: Set(who.email.clone()),
                subject: Set(single_line(subject)),
                body: Set(body.to_owned()),
                request_key: Set(format!("{request_id}:{}", d.number)),
                created_at: Set(Utc::now()),
            })
            .on_conflict_do_nothing_on([notification::Column::RequestKey])
            .exec_without_returning(&txn)
            .await?;
            self.enqueue_mail(
                &txn,
                NewMail {
                    dedup_key: format!("contact:{request_id}:{}:{}", d.number, d.owner_email),
                    recipient: &d.owner_email,
                    rendered: &rendered,
                    number: Some(d.number),
                    source_event_ids: vec![request_id.to_owned()],
                },
            )
            .await?;
        }
        txn.commit().await?;
        self.wake_sender();
        Ok((brouillons.len(), owners.len()))
    }

    /// PERMISSION_DENIED unless `who` is an instructeur on the roster (asked of instruction).
    pub async fn require_declared(&self, who: &Principal) -> Result<(), AppError> {
        who.require(Role::Instructeur)?;
        let mut client = self.inner.instruction.clone();
        let status = client
            .get_instructeur_status(mst_proto::instruction::GetInstructeurStatusRequest {
                email: who.email.clone(),
            })
            .await
            .map_err(|s| {
                AppError::Api(ApiError::Unavailable(format!(
                    "instruction GetInstructeurStatus: {}",
                    s.message()
                )))
            })?
            .into_inner();
        if !status.declared {
            return Err(ApiError::PermissionDenied(
                "Seuls les instructeurs déclarés peuvent contacter les usagers.".into(),
            )
            .into());
        }
        Ok(())
    }

    /// NOT_FOUND unless the messagerie knows procedure `id`.
    pub async fn require_procedure(&self, id: &str) -> Result<(), AppError> {
        match procedure::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
        {
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound {
                resource: "démarche",
                id: id.to_owned(),
            }
            .into()),
        }
    }

    /// Every procedure the messagerie knows, by id.
    pub async fn procedure_ids(&self) -> Result<Vec<String>, AppError> {
        Ok(procedure::Entity::find()
            .order_by_asc(procedure::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect())
    }

    /// The caller's notifications, newest first, from `offset`.
    pub async fn notifications(
        &self,
        who: &Principal,
        number: i64,
        offset: u64,
        page_size: u64,
    ) -> Result<(Vec<notification::Model>, bool), AppError> {
        let mut q = notification::Entity::find()
            .filter(notification::Column::Recipient.eq(who.email.as_str()));
        if number != 0 {
            q = q.filter(notification::Column::Number.eq(number));
        }
        let mut rows = q
            .order_by_desc(notification::Column::CreatedAt)
            .order_by_desc(notification::Column::Id)
            .offset(offset)
            .limit(page_size + 1)
            .all(self.db())
            .await?;
        let more = rows.len() as u64 > page_size;
        rows.truncate(page_size as usize);
        Ok((rows, more))
    }

    /// The delivery log, newest first, from `offset`. Role: admin or system.
    pub async fn deliveries(
        &self,
        who: &Principal,
        filter: &DeliveryFilter,
        offset: u64,
        page_size: u64,
    ) -> Result<(Vec<mail::Model>, bool), AppError> {
        if !who.has(Role::Admin) && !who.has(Role::System) {
            return Err(ApiError::PermissionDenied(
                "Le journal des envois est réservé aux administrateurs.".into(),
            )
            .into());
        }
        let mut q = mail::Entity::find();
        if filter.number != 0 {
            q = q.filter(mail::Column::Number.eq(filter.number));
        }
        if !filter.recipient.is_empty() {
            q = q.filter(mail::Column::Recipient.eq(filter.recipient.trim().to_lowercase()));
        }
        if !filter.statuses.is_empty() {
            q = q.filter(mail::Column::Status.is_in(filter.statuses.iter().copied()));
        }
        if !filter.source_event_id.is_empty() {
            let id = filter.source_event_id.as_str();
            q = q.filter(
                Condition::any()
                    .add(mail::Column::SourceEventIds.eq(id))
                    .add(mail::Column::SourceEventIds.starts_with(format!("{id}\n")))
                    .add(mail::Column::SourceEventIds.ends_with(format!("\n{id}")))
                    .add(mail::Column::SourceEventIds.contains(format!("\n{id}\n"))),
            );
        }
        let mut rows = q
            .order_by_desc(mail::Column::QueuedAt)
            .order_by_desc(mail::Column::Id)
            .offset(offset)
            .limit(page_size + 1)
            .all(self.db())
            .await?;
        let more = rows.len() as u64 > page_size;
        rows.truncate(page_size as usize);
        Ok((rows, more))
    }
}
