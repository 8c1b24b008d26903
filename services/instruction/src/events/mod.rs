//! Handlers of the events instruction consumes: forms' procedure and dossier events, kept as
//! projections (procedure titles and closing dates, brouillons, invitees, content versions,
//! deletions) for routing, lists and access checks.

use mst_bus::{ConsumerSpec, Delivery, Handler, HandlerError};
use mst_proto::Event as _;
use mst_proto::events as ev;
use sea_orm::DatabaseTransaction;

use crate::app::{AppError, Instruction};

/// The durable consumer of the instruction service.
pub fn spec() -> ConsumerSpec {
    ConsumerSpec::new(
        "instruction",
        &[
            ev::ProcedureChanged::SUBJECT,
            ev::DossierCreated::SUBJECT,
            ev::DossierContentChanged::SUBJECT,
            ev::DossierInvited::SUBJECT,
            ev::DossierInvitationRevoked::SUBJECT,
            ev::DossierDeleted::SUBJECT,
        ],
    )
}

/// Applies forms' events to instruction's projections.
#[derive(Clone, Debug)]
pub struct FormsEvents {
    instruction: Instruction,
}

impl FormsEvents {
    /// Handlers over `instruction`.
    pub fn new(instruction: Instruction) -> Self {
        Self { instruction }
    }
}

fn transient(e: AppError) -> HandlerError {
    HandlerError::Transient(anyhow::anyhow!("{e}"))
}

impl Handler for FormsEvents {
    async fn handle(&self, txn: &DatabaseTransaction, d: &Delivery) -> Result<(), HandlerError> {
        let i = &self.instruction;
        match d.subject.as_str() {
            s if s == ev::ProcedureChanged::SUBJECT => i
                .on_procedure_changed(txn, &d.decode::<ev::ProcedureChanged>()?)
                .await
                .map_err(transient),
            s if s == ev::DossierCreated::SUBJECT => i
                .on_dossier_created(txn, &d.decode::<ev::DossierCreated>()?)
                .await
                .map_err(transient),
            s if s == ev::DossierContentChanged::SUBJECT => {
                let e = d.decode::<ev::DossierContentChanged>()?;
                i.on_content_changed(txn, e.number, e.version)
                    .await
                    .map_err(transient)
            }
            s if s == ev::DossierInvited::SUBJECT => {
                let e = d.decode::<ev::DossierInvited>()?;
                i.on_invitation(txn, e.number, &e.invitation_id, &e.invitee_email, false)
                    .await
                    .map_err(transient)
            }
            s if s == ev::DossierInvitationRevoked::SUBJECT => {
                let e = d.decode::<ev::DossierInvitationRevoked>()?;
                i.on_invitation(txn, e.number, &e.invitation_id, &e.invitee_email, true)
                    .await
                    .map_err(transient)
            }
            s if s == ev::DossierDeleted::SUBJECT => {
                let e = d.decode::<ev::DossierDeleted>()?;
                i.on_dossier_deleted(txn, e.number).await.map_err(transient)
            }
            other => Err(HandlerError::Permanent(anyhow::anyhow!(
                "unexpected subject {other}"
            ))),
        }
    }
}
