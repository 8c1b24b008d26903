//! The gRPC face of the instruction service. `InstructionInternalService` (deposits and access
//! checks for the other services) is served here; the roster has its own module.

pub mod avis;
pub mod board;
pub mod export;
pub mod roster;
pub mod service;
pub mod workflow;

use chrono::{DateTime, Utc};
use mst_kit::auth::principal;
use mst_proto::events as ev;
use mst_proto::instruction as pb;
use mst_proto::instruction::instruction_internal_service_server::InstructionInternalService;
use tonic::{Request, Response, Status};

use crate::app::{AppError, DepositInput, Headline, Instruction, Relation, status_to_pb};

/// The internal API handlers.
#[derive(Clone, Debug)]
pub struct InternalApi {
    instruction: Instruction,
}

impl InternalApi {
    /// Handlers over `instruction`.
    pub fn new(instruction: Instruction) -> Self {
        Self { instruction }
    }
}

fn bad(field: &str, message: &str) -> Status {
    AppError::BadRequest(vec![(field.to_owned(), message.to_owned())]).into()
}

/// A protobuf timestamp as a UTC instant (out of range → `None`).
pub fn datetime(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
}

/// A UTC instant as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[tonic::async_trait]
impl InstructionInternalService for InternalApi {
    async fn record_deposit(
        &self,
        request: Request<pb::RecordDepositRequest>,
    ) -> Result<Response<pb::RecordDepositResponse>, Status> {
        let who = principal(&request)?;
        // Service tokens only, checked before the request is read: a human caller is denied
        // whatever he sends.
        crate::app::require(&who, mst_kit::auth::Role::System)?;
        let pb::RecordDepositRequest {
            number,
            deposit_id,
            procedure,
            revision_id,
            owner_email,
            invitee_emails,
            content_version,
            headline,
            created_at,
        } = request.into_inner();
        if number <= 0 {
            return Err(bad("number", "Numéro de dossier invalide"));
        }
        if deposit_id.is_empty() || deposit_id.len() > 64 {
            return Err(bad("deposit_id", "Identifiant de dépôt invalide"));
        }
        let Some(procedure) = procedure.filter(|p| !p.id.is_empty()) else {
            return Err(bad("procedure", "Démarche manquante"));
        };
        if owner_email.is_empty() {
            return Err(bad("owner_email", "Propriétaire manquant"));
        }
        let h = headline.unwrap_or_default();
        let input = DepositInput {
            number,
            deposit_id,
            procedure,
            revision_id,
            owner_email: owner_email.to_lowercase(),
            invitee_emails,
            content_version,
            headline: Headline {
                title: h.title,
                structure_name: h.structure_name,
                siret: h.siret,
                region_code: h.region_code,
                departement_code: h.departement_code,
                cpam: h.cpam,
            },
            created_at: created_at
                .as_ref()
                .and_then(datetime)
                .unwrap_or_else(Utc::now),
        };
        let result = self.instruction.record_deposit(&who, input).await?;
        Ok(Response::new(pb::RecordDepositResponse {
            outcome: if result.correction_resolved {
                pb::DepositOutcome::CorrectionResolved
            } else {
                pb::DepositOutcome::Deposited
            } as i32,
            status: ev::DossierStatus::EnConstruction as i32,
            status_version: result.status_version,
            groupe: result.groupe.map(|(id, label)| pb::GroupeRef { id, label }),
            deposited_at: Some(timestamp(result.deposited_at)),
        }))
    }

    async fn check_dossier_access(
        &self,
        request: Request<pb::CheckDossierAccessRequest>,
    ) -> Result<Response<pb::CheckDossierAccessResponse>, Status> {
        let who = principal(&request)?;
        let pb::CheckDossierAccessRequest {
            number,
            email,
            role,
        } = request.into_inner();
        if email.trim().is_empty() {
            return Err(bad("email", "Adresse électronique manquante"));
        }
        let role = ev::Role::try_from(role).unwrap_or(ev::Role::Unspecified);
        if role == ev::Role::Unspecified {
            return Err(bad("role", "Rôle manquant"));
        }
        let answer = self
            .instruction
            .check_access(
                &who,
                number,
                &email.trim().to_lowercase(),
                role == ev::Role::Instructeur,
            )
            .await?;
        let (status, status_version, archived) = match answer.state {
            Some((s, v, a)) => (status_to_pb(s), v, a),
            None => (ev::DossierStatus::Unspecified, 0, false),
        };
        Ok(Response::new(pb::CheckDossierAccessResponse {
            allowed: !answer.relations.is_empty(),
            relations: answer
                .relations
                .iter()
                .map(|r| match r {
                    Relation::Owner => pb::AccessRelation::Owner,
                    Relation::Invitee => pb::AccessRelation::Invitee,
                    Relation::Instructeur => pb::AccessRelation::Instructeur,
                    Relation::Follower => pb::AccessRelation::Follower,
                    Relation::Expert => pb::AccessRelation::Expert,
                } as i32)
                .collect(),
            status: status as i32,
            archived,
            status_version,
        }))
    }

    async fn list_dossier_instructeurs(
        &self,
        request: Request<pb::ListDossierInstructeursRequest>,
    ) -> Result<Response<pb::ListDossierInstructeursResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListDossierInstructeursRequest { number } = request.into_inner();
        let instructeurs = self
            .instruction
            .dossier_instructeurs(&who, number)
            .await?
            .into_iter()
            .map(|(email, following)| pb::DossierInstructeur { email, following })
            .collect();
        Ok(Response::new(pb::ListDossierInstructeursResponse {
            instructeurs,
        }))
    }

    async fn get_instructeur_status(
        &self,
        request: Request<pb::GetInstructeurStatusRequest>,
    ) -> Result<Response<pb::GetInstructeurStatusResponse>, Status> {
        let who = principal(&request)?;
        let pb::GetInstructeurStatusRequest { email } = request.into_inner();
        if email.trim().is_empty() {
            return Err(bad("email", "Adresse électronique manquante"));
        }
        let groupe_ids = self
            .instruction
            .instructeur_groupes(&who, &email.trim().to_lowercase())
            .await?;
        Ok(Response::new(pb::GetInstructeurStatusResponse {
            declared: !groupe_ids.is_empty(),
            groupe_ids,
        }))
    }
}
