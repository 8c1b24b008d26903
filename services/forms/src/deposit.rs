//! Depositing a dossier: forms checks completeness, then asks the instruction service — the
//! owner of the status — to record the deposit, and mirrors the answer.

use std::time::Duration;

use chrono::Utc;
use mst_kit::auth::{Principal, ServiceToken};
use mst_proto::instruction::instruction_internal_service_client::InstructionInternalServiceClient;
use mst_proto::instruction::{DepositOutcome, RecordDepositRequest};
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::app::{AppError, DossierView, Forms};
use crate::domain::procedure::{Access, Status as DossierStatus};
use crate::domain::referentiel::Referentiel;
use crate::domain::validate::check_for_deposit;

pub(crate) type Client =
    InstructionInternalServiceClient<InterceptedService<Channel, ServiceToken>>;

/// The deposit use case, with its client of the instruction service.
#[derive(Clone, Debug)]
pub struct Deposits {
    client: Client,
}

impl Deposits {
    /// Deposits through the instruction service at `channel`, authenticated with `token`.
    pub fn new(channel: Channel, token: ServiceToken) -> Self {
        Self {
            client: InstructionInternalServiceClient::with_interceptor(channel, token),
        }
    }

    /// Deposits (or resubmits after a correction request) dossier `number` at
    /// `expected_version`. Owner only; every required visible field must be valid, else
    /// INVALID_ARGUMENT lists every violation.
    pub async fn deposit(
        &self,
        forms: &Forms,
        who: &Principal,
        number: i64,
        expected_version: i64,
    ) -> Result<DossierView, Status> {
        let view = forms.dossier(who, number).await?;
        if view.access != Access::Owner {
            return Err(AppError::Forbidden("only the owner deposits".into()).into());
        }
        if view.row.version != expected_version {
            return Err(AppError::Stale {
                resource: "dossier",
                id: number.to_string(),
                expected: expected_version,
                current: view.row.version,
            }
            .into());
        }
        match view.status {
            DossierStatus::Brouillon if view.procedure.is_closed(Utc::now()) => {
                return Err(AppError::WrongState {
                    reason: "PROCEDURE_CLOSED",
                    current: view.status.as_str().into(),
                    message: format!(
                        "La démarche « {} » est close : le dossier ne peut plus être déposé",
                        view.procedure.row.title
                    ),
                }
                .into());
            }
            DossierStatus::Brouillon | DossierStatus::EnConstruction => {}
            other => {
                return Err(AppError::WrongState {
                    reason: "INVALID_TRANSITION",
                    current: other.as_str().into(),
                    message: format!(
                        "Le dossier n° {number} est {} : il ne peut pas être déposé",
                        other.label_fr()
                    ),
                }
                .into());
            }
        }
        let violations = check_for_deposit(&view.form, &view.answers, Referentiel::official());
        if !violations.is_empty() {
            return Err(AppError::Invalid(violations).into());
        }
        let row = &view.row;
        let request = RecordDepositRequest {
            number,
            deposit_id: uuid::Uuid::now_v7().to_string(),
            procedure: Some(view.procedure.reference()),
            revision_id: row.revision_id.clone(),
            owner_email: row.owner_email.clone(),
            invitee_emails: view.invitees.clone(),
            content_version: row.version,
            headline: Some(mst_proto::forms::DossierHeadline {
                title: row.title.clone(),
                structure_name: row.structure_name.clone(),
                siret: row.siret.clone(),
                region_code: row.region_code.clone(),
                departement_code: row.departement_code.clone(),
                cpam: row.cpam.clone(),
            }),
            created_at: Some(crate::grpc::convert::timestamp(row.created_at)),
        };
        // Retries reuse the deposit id: the instruction service answers a replay with the first
        // outcome, so a lost response never deposits twice.
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            match self.client.clone().record_deposit(request.clone()).await {
                Ok(r) => break r.into_inner(),
                // Unreachable, or no answer in time (the call's timeout): the outcome is
                // unknown, and the replay settles it.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                    ) && attempt < 4 =>
                {
                    tracing::warn!(
                        dossier = number,
                        attempt,
                        code = ?s.code(),
                        "instruction did not answer; retrying the deposit"
                    );
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(s) => return Err(s),
            }
        };
        let deposited_at = response
            .deposited_at
            .as_ref()
            .and_then(|ts| crate::grpc::convert::datetime(ts, "deposited_at").ok())
            .unwrap_or_else(Utc::now);
        let resolved = response.outcome == DepositOutcome::CorrectionResolved as i32;
        forms
            .record_deposit(number, response.status_version, deposited_at, resolved)
            .await?;
        Ok(forms.dossier(who, number).await?)
    }
}
