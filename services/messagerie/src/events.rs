//! The messagerie's durable consumer: every event that notifies someone (DESIGN.md §4).

use mst_bus::{ConsumerSpec, Delivery, Handler, HandlerError};
use mst_proto::Event as _;
use mst_proto::events as ev;
use sea_orm::DatabaseTransaction;

use crate::app::{AppError, Messagerie};

/// The durable consumer of the messagerie service.
pub fn spec() -> ConsumerSpec {
    ConsumerSpec::new(
        "messagerie",
        &[
            ev::ProcedureChanged::SUBJECT,
            ev::DossierCreated::SUBJECT,
            ev::DossierContentChanged::SUBJECT,
            ev::DossierInvited::SUBJECT,
            ev::DossierInvitationRevoked::SUBJECT,
            ev::DossierDeleted::SUBJECT,
            ev::DossierStatusChanged::SUBJECT,
            ev::DossierCorrectionResolved::SUBJECT,
            ev::DossierArchived::SUBJECT,
            ev::DossierUnarchived::SUBJECT,
            ev::AvisRequested::SUBJECT,
            ev::AvisGiven::SUBJECT,
            ev::MessagePosted::SUBJECT,
        ],
    )
}

/// Applies events to the messagerie.
#[derive(Clone, Debug)]
pub struct Events {
    messagerie: Messagerie,
}

impl Events {
    /// Handlers over `messagerie`.
    pub fn new(messagerie: Messagerie) -> Self {
        Self { messagerie }
    }
}

fn classify(e: AppError) -> HandlerError {
    match e {
        // A template that cannot render will not render on the next attempt either.
        AppError::Template(e) => HandlerError::Permanent(anyhow::anyhow!("template: {e}")),
        other => HandlerError::Transient(anyhow::anyhow!("{other}")),
    }
}

impl Handler for Events {
    async fn handle(&self, txn: &DatabaseTransaction, d: &Delivery) -> Result<(), HandlerError> {
        let m = &self.messagerie;
        let result = match d.subject.as_str() {
            s if s == ev::ProcedureChanged::SUBJECT => {
                m.on_procedure_changed(txn, &d.decode()?).await
            }
            s if s == ev::DossierCreated::SUBJECT => m.on_dossier_created(txn, &d.decode()?).await,
            s if s == ev::DossierContentChanged::SUBJECT => {
                m.on_content_changed(txn, &d.decode()?).await
            }
            s if s == ev::DossierInvited::SUBJECT => m.on_invited(txn, &d.decode()?).await,
            s if s == ev::DossierInvitationRevoked::SUBJECT => {
                m.on_invitation_revoked(txn, &d.decode()?).await
            }
            s if s == ev::DossierDeleted::SUBJECT => m.on_dossier_deleted(txn, &d.decode()?).await,
            s if s == ev::DossierStatusChanged::SUBJECT => {
                m.on_status_changed(txn, &d.decode()?).await
            }
            s if s == ev::DossierCorrectionResolved::SUBJECT => {
                m.on_correction_resolved(txn, &d.decode()?).await
            }
            s if s == ev::DossierArchived::SUBJECT => {
                let e: ev::DossierArchived = d.decode()?;
                m.on_archive_flag(txn, e.number, e.status_version, true)
                    .await
            }
            s if s == ev::DossierUnarchived::SUBJECT => {
                let e: ev::DossierUnarchived = d.decode()?;
                m.on_archive_flag(txn, e.number, e.status_version, false)
                    .await
            }
            s if s == ev::AvisRequested::SUBJECT => m.on_avis_requested(txn, &d.decode()?).await,
            s if s == ev::AvisGiven::SUBJECT => m.on_avis_given(txn, &d.decode()?).await,
            s if s == ev::MessagePosted::SUBJECT => m.on_message_posted(txn, &d.decode()?).await,
            other => {
                return Err(HandlerError::Permanent(anyhow::anyhow!(
                    "unexpected subject {other}"
                )));
            }
        };
        result.map_err(classify)
    }

    /// The emails and notice requests the handled events queued are committed: the sender and
    /// the notice resolver can take them now.
    fn committed(&self) {
        self.messagerie.wake_sender();
        self.messagerie.wake_resolver();
    }
}
