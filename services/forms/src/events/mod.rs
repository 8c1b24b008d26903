//! Handlers of the events forms consumes: the instruction service's status changes, mirrored in
//! forms' lists and in what may still be edited (a return to en_construction also releases any
//! freeze a lost synchronous call left behind).

use mst_bus::{ConsumerSpec, Delivery, Handler, HandlerError};
use mst_proto::Event as _;
use mst_proto::events as ev;
use sea_orm::DatabaseTransaction;

use crate::app::Forms;
use crate::domain::procedure::Status;

/// The durable consumer of the forms service.
pub fn spec() -> ConsumerSpec {
    ConsumerSpec::new(
        "forms",
        &[
            ev::DossierStatusChanged::SUBJECT,
            ev::DossierCorrectionResolved::SUBJECT,
        ],
    )
}

/// Mirrors the instruction service's status changes.
#[derive(Clone, Debug)]
pub struct StatusMirror {
    forms: Forms,
}

impl StatusMirror {
    /// Handlers over `forms`.
    pub fn new(forms: Forms) -> Self {
        Self { forms }
    }
}

fn status(s: i32) -> Option<Status> {
    match ev::DossierStatus::try_from(s).ok()? {
        ev::DossierStatus::Brouillon => Some(Status::Brouillon),
        ev::DossierStatus::EnConstruction => Some(Status::EnConstruction),
        ev::DossierStatus::EnInstruction => Some(Status::EnInstruction),
        ev::DossierStatus::Accepte => Some(Status::Accepte),
        ev::DossierStatus::Refuse => Some(Status::Refuse),
        ev::DossierStatus::SansSuite => Some(Status::SansSuite),
        ev::DossierStatus::Unspecified => None,
    }
}

impl Handler for StatusMirror {
    async fn handle(&self, txn: &DatabaseTransaction, d: &Delivery) -> Result<(), HandlerError> {
        let transient = |e: crate::app::AppError| HandlerError::Transient(anyhow::anyhow!("{e}"));
        if d.subject == ev::DossierStatusChanged::SUBJECT {
            let e = d.decode::<ev::DossierStatusChanged>()?;
            let Some(to) = status(e.to_status) else {
                return Err(HandlerError::Permanent(anyhow::anyhow!(
                    "status change without a target status"
                )));
            };
            let pending =
                (e.transition == ev::DossierTransition::DemanderCorrection as i32).then_some(true);
            self.forms
                .mirror_status(txn, e.number, to, e.status_version, pending)
                .await
                .map_err(transient)?;
            Ok(())
        } else if d.subject == ev::DossierCorrectionResolved::SUBJECT {
            let e = d.decode::<ev::DossierCorrectionResolved>()?;
            self.forms
                .mirror_status(
                    txn,
                    e.number,
                    Status::EnConstruction,
                    e.status_version,
                    Some(false),
                )
                .await
                .map_err(transient)?;
            Ok(())
        } else {
            Err(HandlerError::Permanent(anyhow::anyhow!(
                "unexpected subject {}",
                d.subject
            )))
        }
    }
}
