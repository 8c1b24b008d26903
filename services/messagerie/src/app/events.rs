//! What the messagerie does with each consumed event, inside the consumer's transaction (the
//! processed-event row commits with the queued emails, thread entries and projections). Emails
//! are keyed by the event id of the payload and the recipient, so even the same event published
//! again under another `Nats-Msg-Id` queues nothing twice.

use chrono::Utc;
use minijinja::context;
use mst_proto::events as ev;
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait, EntityTrait as _};

use super::queue::NewMail;
use super::{AppError, Messagerie, distinct_recipients, french_date, occurred_at};
use crate::store::{dossier, procedure};
use crate::templates::Rendered;

fn event_id(m: Option<&ev::EventMetadata>) -> String {
    m.map(|m| m.event_id.clone()).unwrap_or_default()
}

fn procedure_title(p: Option<&ev::ProcedureRef>) -> String {
    p.map(|p| {
        if p.title.is_empty() {
            p.id.clone()
        } else {
            p.title.clone()
        }
    })
    .unwrap_or_default()
}

/// The promoteur email of a transition, by template name.
pub fn status_template(t: ev::DossierTransition) -> Option<&'static str> {
    use ev::DossierTransition as T;
    Some(match t {
        T::Deposer => "dossier_depose",
        T::PasserEnInstruction | T::PasserEnInstructionAuto => "dossier_en_instruction",
        T::Accepter => "dossier_accepte",
        T::Refuser => "dossier_refuse",
        T::ClasserSansSuite => "dossier_sans_suite",
        T::RepasserEnInstruction => "dossier_reexamine",
        T::RepasserEnConstruction => "dossier_en_construction",
        T::DemanderCorrection => "dossier_a_corriger",
        T::Unspecified => return None,
    })
}

fn correction_reason(r: ev::CorrectionReason) -> &'static str {
    match r {
        ev::CorrectionReason::Incorrect => "une réponse est erronée",
        ev::CorrectionReason::Incomplete => "une réponse ou une pièce manque",
        ev::CorrectionReason::Outdated => "une pièce n'est plus valable",
        ev::CorrectionReason::Other | ev::CorrectionReason::Unspecified => "",
    }
}

impl Messagerie {
    pub(crate) fn render(&self, name: &str, ctx: minijinja::Value) -> Result<Rendered, AppError> {
        Ok(self.inner.catalogue.render(name, ctx)?)
    }

    async fn queue_for_each<C: ConnectionTrait>(
        &self,
        txn: &C,
        source: &str,
        recipients: &[String],
        rendered: &Rendered,
        number: i64,
    ) -> Result<(), AppError> {
        for r in recipients {
            self.enqueue_mail(
                txn,
                NewMail {
                    dedup_key: format!("{source}:{r}"),
                    recipient: r,
                    rendered,
                    number: Some(number),
                    source_event_ids: vec![source.to_owned()],
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn projection<C: ConnectionTrait>(
        &self,
        txn: &C,
        number: i64,
    ) -> Result<Option<dossier::Model>, AppError> {
        Ok(dossier::Entity::find_by_id(number).one(txn).await?)
    }

    async fn save_projection<C: ConnectionTrait>(
        &self,
        txn: &C,
        row: dossier::Model,
        existed: bool,
    ) -> Result<(), AppError> {
        let mut am: dossier::ActiveModel = row.into();
        am.updated_at = Set(Utc::now());
        if existed {
            am = am.reset_all();
            am.update(txn).await?;
        } else {
            am = am.reset_all();
            am.insert(txn).await?;
        }
        Ok(())
    }

    fn blank_projection(number: i64, p: Option<&ev::ProcedureRef>, owner: &str) -> dossier::Model {
        dossier::Model {
            number,
            procedure_id: p.map(|p| p.id.clone()).unwrap_or_default(),
            procedure_title: procedure_title(p),
            owner_email: owner.to_lowercase(),
            invitees: String::new(),
            status: ev::DossierStatus::Brouillon as i32,
            status_version: 0,
            archived: false,
            deleted: false,
            updated_at: Utc::now(),
        }
    }

    /// `ProcedureChanged`: the procedure and its newest title are known.
    pub async fn on_procedure_changed<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::ProcedureChanged,
    ) -> Result<(), AppError> {
        let Some(p) = &e.procedure else {
            return Ok(());
        };
        self.upsert_procedure(txn, p, e.version).await
    }

    async fn upsert_procedure<C: ConnectionTrait>(
        &self,
        txn: &C,
        p: &ev::ProcedureRef,
        version: i64,
    ) -> Result<(), AppError> {
        if p.id.is_empty() {
            return Ok(());
        }
        let row = procedure::Model {
            id: p.id.clone(),
            title: procedure_title(Some(p)),
            version,
        };
        match procedure::Entity::find_by_id(p.id.clone()).one(txn).await? {
            None => {
                procedure::Entity::insert(procedure::ActiveModel::from(row))
                    .on_conflict_do_nothing_on([procedure::Column::Id])
                    .exec_without_returning(txn)
                    .await?;
            }
            Some(old) if version > old.version => {
                procedure::Entity::update(procedure::ActiveModel::from(row).reset_all())
                    .exec(txn)
                    .await?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// `DossierCreated`: the brouillon is known; its owner gets its number.
    pub async fn on_dossier_created<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::DossierCreated,
    ) -> Result<(), AppError> {
        if let Some(p) = &e.procedure {
            self.upsert_procedure(txn, p, 0).await?;
        }
        if self.projection(txn, e.number).await?.is_none() {
            let row = Self::blank_projection(e.number, e.procedure.as_ref(), &e.owner_email);
            self.save_projection(txn, row, false).await?;
        }
        let rendered = self.render(
            "dossier_brouillon",
            context! { numero => e.number, demarche => procedure_title(e.procedure.as_ref()) },
        )?;
        let source = event_id(e.metadata.as_ref());
        let owner = distinct_recipients([e.owner_email.as_str()]);
        self.queue_for_each(txn, &source, &owner, &rendered, e.number)
            .await
    }

    /// `DossierInvited`: the invitee gets the invitation and the dossier's next emails.
    pub async fn on_invited<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::DossierInvited,
    ) -> Result<(), AppError> {
        let invitee = e.invitee_email.trim().to_lowercase();
        let inviter = e
            .metadata
            .as_ref()
            .and_then(|m| m.actor.as_ref())
            .map(|a| a.email.clone())
            .unwrap_or_default();
        let (mut row, existed) = match self.projection(txn, e.number).await? {
            Some(row) => (row, true),
            None => (
                Self::blank_projection(e.number, e.procedure.as_ref(), &inviter),
                false,
            ),
        };
        let mut invitees = row.invitee_list();
        if !invitees.contains(&invitee) {
            invitees.push(invitee.clone());
            invitees.sort();
            row.invitees = invitees.join("\n");
        }
        self.save_projection(txn, row, existed).await?;
        let rendered = self.render(
            "invitation",
            context! {
                numero => e.number,
                demarche => procedure_title(e.procedure.as_ref()),
                inviteur => inviter,
                message => e.message,
            },
        )?;
        let source = event_id(e.metadata.as_ref());
        self.queue_for_each(txn, &source, &[invitee], &rendered, e.number)
            .await
    }

    /// `DossierInvitationRevoked`: the former invitee receives nothing more.
    pub async fn on_invitation_revoked<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::DossierInvitationRevoked,
    ) -> Result<(), AppError> {
        if let Some(mut row) = self.projection(txn, e.number).await? {
            let gone = e.invitee_email.trim().to_lowercase();
            row.invitees = row
                .invitee_list()
                .into_iter()
                .filter(|i| *i != gone)
                .collect::<Vec<_>>()
                .join("\n");
            self.save_projection(txn, row, true).await?;
        }
        Ok(())
    }

    /// `DossierDeleted`: no longer a brouillon to contact.
    pub async fn on_dossier_deleted<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::DossierDeleted,
    ) -> Result<(), AppError> {
        if let Some(mut row) = self.projection(txn, e.number).await? {
            row.deleted = true;
            self.save_projection(txn, row, true).await?;
        }
        Ok(())
    }

    /// `DossierArchived` / `DossierUnarchived`: the thread becomes read-only / writable.
    pub async fn on_archive_flag<C: ConnectionTrait>(
        &self,
        txn: &C,
        number: i64,
        status_version: i64,
        archived: bool,
    ) -> Result<(), AppError> {
        if let Some(mut row) = self.projection(txn, number).await?
            && status_version > row.status_version
        {
            row.archived = archived;
            row.status_version = status_version;
            self.save_projection(txn, row, true).await?;
        }
        Ok(())
    }

    /// `DossierStatusChanged`: one email per recipient (owner and invitees) and one
    /// "Email automatique" thread entry, whatever the order events arrive in; the projection
    /// keeps the newest status only.
    pub async fn on_status_changed<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::DossierStatusChanged,
    ) -> Result<(), AppError> {
        let (mut row, existed) = match self.projection(txn, e.number).await? {
            Some(row) => (row, true),
            None => (
                Self::blank_projection(e.number, e.procedure.as_ref(), &e.owner_email),
                false,
            ),
        };
        if e.status_version > row.status_version {
            row.status = e.to_status;
            row.status_version = e.status_version;
            if !e.owner_email.is_empty() {
                row.owner_email = e.owner_email.to_lowercase();
            }
            let mut invitees = distinct_recipients(e.invitee_emails.iter().map(String::as_str));
            invitees.sort();
            row.invitees = invitees.join("\n");
            if let Some(p) = &e.procedure {
                row.procedure_id = p.id.clone();
                row.procedure_title = procedure_title(Some(p));
            }
        }
        self.save_projection(txn, row, existed).await?;

        let transition = ev::DossierTransition::try_from(e.transition)
            .unwrap_or(ev::DossierTransition::Unspecified);
        let Some(template) = status_template(transition) else {
            return Ok(());
        };
        let at = occurred_at(e.metadata.as_ref());
        let rendered = self.render(
            template,
            context! {
                numero => e.number,
                demarche => procedure_title(e.procedure.as_ref()),
                date => french_date(at),
                motivation => e.motivation,
                justificatif => e.justificatif.as_ref().map(|f| f.file_name.clone()).unwrap_or_default(),
                raison => correction_reason(ev::CorrectionReason::try_from(e.correction_reason).unwrap_or_default()),
            },
        )?;
        let source = event_id(e.metadata.as_ref());
        let recipients = distinct_recipients(
            std::iter::once(e.owner_email.as_str())
                .chain(e.invitee_emails.iter().map(String::as_str)),
        );
        self.queue_for_each(txn, &source, &recipients, &rendered, e.number)
            .await?;
        self.append_automatic_email(txn, e.number, &source, &rendered, at)
            .await?;
        if transition == ev::DossierTransition::Deposer {
            self.notice_instructeurs(
                txn,
                e.number,
                e.procedure.as_ref(),
                &source,
                super::notices::Kind::NewDossier,
                None,
                at,
            )
            .await?;
        }
        Ok(())
    }

    /// `AvisRequested`: the expert is asked for his avis.
    pub async fn on_avis_requested<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::AvisRequested,
    ) -> Result<(), AppError> {
        let instructeur = e
            .metadata
            .as_ref()
            .and_then(|m| m.actor.as_ref())
            .map(|a| a.email.clone())
            .unwrap_or_default();
        let rendered = self.render(
            "avis_demande",
            context! {
                numero => e.number,
                demarche => procedure_title(e.procedure.as_ref()),
                instructeur => instructeur,
            },
        )?;
        let source = event_id(e.metadata.as_ref());
        let expert = distinct_recipients([e.expert_email.as_str()]);
        self.queue_for_each(txn, &source, &expert, &rendered, e.number)
            .await
    }

    /// `AvisGiven`: the requesting instructeur is told, per his preferences.
    pub async fn on_avis_given<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::AvisGiven,
    ) -> Result<(), AppError> {
        let at = occurred_at(e.metadata.as_ref());
        let source = event_id(e.metadata.as_ref());
        self.notice_instructeurs(
            txn,
            e.number,
            e.procedure.as_ref(),
            &source,
            super::notices::Kind::NewAvis,
            Some(&e.requested_by_email),
            at,
        )
        .await
    }

    /// `DossierContentChanged` on a dossier en construction: followers are told per preferences.
    pub async fn on_content_changed<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::DossierContentChanged,
    ) -> Result<(), AppError> {
        if e.status != ev::DossierStatus::EnConstruction as i32 {
            return Ok(());
        }
        self.notice_modified(txn, e.number, e.procedure.as_ref(), e.metadata.as_ref())
            .await
    }

    /// The followers' « dossier modifié » notice for an event about dossier `number`.
    async fn notice_modified<C: ConnectionTrait>(
        &self,
        txn: &C,
        number: i64,
        procedure: Option<&ev::ProcedureRef>,
        metadata: Option<&ev::EventMetadata>,
    ) -> Result<(), AppError> {
        let at = occurred_at(metadata);
        let source = event_id(metadata);
        self.notice_instructeurs(
            txn,
            number,
            procedure,
            &source,
            super::notices::Kind::DossierModified,
            None,
            at,
        )
        .await
    }

    /// `DossierCorrectionResolved`: the owner resubmitted after a correction request; the
    /// followers are told as of a modification, per their preferences.
    pub async fn on_correction_resolved<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::DossierCorrectionResolved,
    ) -> Result<(), AppError> {
        self.notice_modified(txn, e.number, e.procedure.as_ref(), e.metadata.as_ref())
            .await
    }

    /// `MessagePosted`: an instructeur's (or expert's) message reaches the promoteur by email
    /// after the coalescing delay; a promoteur's message notifies the followers.
    pub async fn on_message_posted<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: &ev::MessagePosted,
    ) -> Result<(), AppError> {
        let at = occurred_at(e.metadata.as_ref());
        let source = event_id(e.metadata.as_ref());
        let author = e
            .metadata
            .as_ref()
            .and_then(|m| m.actor.clone())
            .unwrap_or_default();
        let role = ev::Role::try_from(author.role).unwrap_or_default();
        if role == ev::Role::Promoteur {
            return self
                .notice_instructeurs(
                    txn,
                    e.number,
                    e.procedure.as_ref(),
                    &source,
                    super::notices::Kind::NewMessage,
                    None,
                    at,
                )
                .await;
        }
        let Some(row) = self.projection(txn, e.number).await? else {
            return Ok(());
        };
        let recipients = distinct_recipients(
            std::iter::once(row.owner_email.as_str())
                .chain(row.invitee_list().iter().map(String::as_str)),
        );
        let recipients: Vec<String> = recipients
            .into_iter()
            .filter(|r| *r != author.email.to_lowercase())
            .collect();
        self.schedule_message_notices(txn, &row, &recipients, &source, at)
            .await
    }
}
