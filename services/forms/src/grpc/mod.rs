//! The gRPC face of the forms service: `FormsService` (promoteurs), `ProcedureAdminService`
//! (admins) and `FormsInternalService` (other services). Each handler authenticates through the
//! kit interceptor, converts the request to domain inputs (`convert`), calls a use case, and maps
//! `AppError` to a status with rich details.

pub mod convert;

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use mst_kit::auth::{Principal, principal};
use mst_proto::forms as pb;
use mst_proto::forms::forms_internal_service_server::FormsInternalService;
use mst_proto::forms::forms_service_server::FormsService;
use mst_proto::forms::procedure_admin_service_server::ProcedureAdminService;
use tonic::{Request, Response, Status, Streaming};

use crate::app::{
    AppError, DossierView, Forms, LoadOutcome, ProcedureView, RevisionState, RevisionView, Scope,
};
use crate::deposit::Deposits;
use crate::domain::procedure::Access;
use crate::domain::referentiel::Referentiel;

/// A boxed response stream.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The handlers, over the use cases.
#[derive(Clone, Debug)]
pub struct Api {
    forms: Forms,
    deposits: Deposits,
}

impl Api {
    /// Handlers over `forms`, depositing through `deposits`.
    pub fn new(forms: Forms, deposits: Deposits) -> Self {
        Self { forms, deposits }
    }
}

fn caller<T>(req: &Request<T>) -> Result<Principal, Status> {
    principal(req).map_err(Status::from)
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Status {
    AppError::BadRequest(vec![(field.into(), message.into())]).into()
}

fn bad_all(v: Vec<(String, String)>) -> Status {
    AppError::BadRequest(v).into()
}

fn procedure_to_pb(view: &ProcedureView) -> pb::Procedure {
    let now = chrono::Utc::now();
    let row = &view.row;
    pb::Procedure {
        id: row.id.clone(),
        title: row.title.clone(),
        description: row.description.clone(),
        kind: convert::kind_to_pb(view.kind) as i32,
        estimated_filling_time: Some(prost_types::Duration {
            seconds: row.estimated_filling_secs,
            nanos: 0,
        }),
        closing_at: row.closing_at.map(convert::timestamp),
        notice: None,
        published_revision_id: row.published_revision_id.clone().unwrap_or_default(),
        draft_revision_id: row.draft_revision_id.clone(),
        state: if view.is_closed(now) && row.published_revision_id.is_some() {
            pb::ProcedureState::Closed
        } else if row.published_revision_id.is_some() {
            pb::ProcedureState::Published
        } else {
            pb::ProcedureState::Draft
        } as i32,
        version: row.version,
        created_at: Some(convert::timestamp(row.created_at)),
        updated_at: Some(convert::timestamp(row.updated_at)),
    }
}

fn revision_to_pb(view: &RevisionView) -> pb::Revision {
    pb::Revision {
        id: view.row.id.clone(),
        procedure_id: view.row.procedure_id.clone(),
        number: view.row.number,
        state: match view.state {
            RevisionState::Draft => pb::RevisionState::Draft,
            RevisionState::Published => pb::RevisionState::Published,
            RevisionState::Superseded => pb::RevisionState::Superseded,
        } as i32,
        fields: convert::field_definitions_to_pb(&view.form),
        version: view.row.version,
        created_at: Some(convert::timestamp(view.row.created_at)),
        published_at: view.row.published_at.map(convert::timestamp),
    }
}

fn access_to_pb(access: Access) -> pb::DossierAccess {
    match access {
        Access::Owner => pb::DossierAccess::Owner,
        Access::Invitee => pb::DossierAccess::Invitee,
        Access::Instructeur => pb::DossierAccess::Instructeur,
        Access::Expert => pb::DossierAccess::Expert,
        Access::System => pb::DossierAccess::System,
    }
}

/// The full dossier message of a view.
pub fn dossier_to_pb(view: &DossierView) -> pb::Dossier {
    let row = &view.row;
    pb::Dossier {
        number: row.number,
        procedure: Some(view.procedure.reference()),
        revision_id: row.revision_id.clone(),
        owner_email: row.owner_email.clone(),
        status: convert::status_to_pb(view.status) as i32,
        version: row.version,
        champs: convert::answers_to_pb(&view.form, &view.answers),
        hidden_field_ids: view.hidden.iter().map(|f| f.as_str().to_owned()).collect(),
        headline: Some(pb::DossierHeadline {
            title: row.title.clone(),
            structure_name: row.structure_name.clone(),
            siret: row.siret.clone(),
            region_code: row.region_code.clone(),
            departement_code: row.departement_code.clone(),
            cpam: row.cpam.clone(),
        }),
        frozen: row.frozen_by.is_some() || !view.status.is_editable(),
        correction_pending: row.correction_pending,
        invitee_emails: view.invitees.clone(),
        access: access_to_pb(view.access) as i32,
        duplicated_from: row.duplicated_from,
        created_at: Some(convert::timestamp(row.created_at)),
        updated_at: Some(convert::timestamp(row.updated_at)),
        deposited_at: row.deposited_at.map(convert::timestamp),
    }
}

fn invitation_to_pb(inv: crate::store::invitation::Model) -> pb::Invitation {
    pb::Invitation {
        id: inv.id,
        number: inv.dossier_number,
        invitee_email: inv.invitee_email,
        invited_by_email: inv.invited_by,
        message: inv.message,
        created_at: Some(convert::timestamp(inv.created_at)),
    }
}

fn history_kind(kind: &str) -> pb::ChangeKind {
    match kind {
        "set" => pb::ChangeKind::Set,
        "cleared" => pb::ChangeKind::Cleared,
        "row_added" => pb::ChangeKind::RowAdded,
        "row_removed" => pb::ChangeKind::RowRemoved,
        "file_added" => pb::ChangeKind::FileAdded,
        _ => pb::ChangeKind::Unspecified,
    }
}

fn stored_value(json: Option<&str>) -> Option<pb::ChampValue> {
    let value: crate::domain::value::Value = serde_json::from_str(json?).ok()?;
    Some(convert::value_to_pb(&value))
}

#[tonic::async_trait]
impl FormsService for Api {
    async fn list_procedures(
        &self,
        request: Request<pb::ListProceduresRequest>,
    ) -> Result<Response<pb::ListProceduresResponse>, Status> {
        let who = caller(&request)?;
        let pb::ListProceduresRequest {
            page_size,
            page_token,
            kind,
            include_closed,
        } = request.into_inner();
        let kind = match mst_proto::events::DossierKind::try_from(kind) {
            Ok(mst_proto::events::DossierKind::Unspecified) => None,
            Ok(k) => convert::kind_from_pb(k),
            Err(_) => return Err(bad("kind", "Type de démarche inconnu")),
        };
        let (procedures, next) = self
            .forms
            .procedures(&who, kind, include_closed, page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListProceduresResponse {
            procedures: procedures.iter().map(procedure_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn get_procedure(
        &self,
        request: Request<pb::GetProcedureRequest>,
    ) -> Result<Response<pb::GetProcedureResponse>, Status> {
        let who = caller(&request)?;
        let pb::GetProcedureRequest {
            procedure_id,
            include_published_revision,
        } = request.into_inner();
        let view = self.forms.procedure(&procedure_id).await?;
        if view.row.published_revision_id.is_none() && !who.has(mst_kit::auth::Role::Admin) {
            return Err(AppError::NotFound("procedure", procedure_id).into());
        }
        let published_revision = match (&view.row.published_revision_id, include_published_revision)
        {
            (Some(id), true) => Some(revision_to_pb(&self.forms.revision(id).await?)),
            _ => None,
        };
        Ok(Response::new(pb::GetProcedureResponse {
            procedure: Some(procedure_to_pb(&view)),
            published_revision,
        }))
    }

    async fn get_revision(
        &self,
        request: Request<pb::GetRevisionRequest>,
    ) -> Result<Response<pb::GetRevisionResponse>, Status> {
        let who = caller(&request)?;
        let pb::GetRevisionRequest { revision_id } = request.into_inner();
        let view = self.forms.revision(&revision_id).await?;
        if view.state == RevisionState::Draft && !who.has(mst_kit::auth::Role::Admin) {
            return Err(AppError::NotFound("revision", revision_id).into());
        }
        Ok(Response::new(pb::GetRevisionResponse {
            revision: Some(revision_to_pb(&view)),
        }))
    }

    type DownloadNoticeStream = ResponseStream<pb::DownloadNoticeResponse>;

    async fn download_notice(
        &self,
        request: Request<pb::DownloadNoticeRequest>,
    ) -> Result<Response<Self::DownloadNoticeStream>, Status> {
        let _who = caller(&request)?;
        let pb::DownloadNoticeRequest { procedure_id } = request.into_inner();
        let (notice, content) = self.forms.notice_content(&procedure_id).await?;
        let header = mst_proto::events::DownloadHeader {
            file_name: notice.file.name.clone(),
            content_type: notice.file.content_type.clone(),
            size_bytes: i64::try_from(notice.file.size).ok(),
        };
        Ok(Response::new(download_stream(
            header,
            content,
            |h| pb::DownloadNoticeResponse {
                payload: Some(pb::download_notice_response::Payload::Header(h)),
            },
            |c| pb::DownloadNoticeResponse {
                payload: Some(pb::download_notice_response::Payload::Chunk(c)),
            },
        )))
    }

    async fn create_dossier(
        &self,
        request: Request<pb::CreateDossierRequest>,
    ) -> Result<Response<pb::CreateDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::CreateDossierRequest {
            procedure_id,
            request_id,
        } = request.into_inner();
        let request_id = request_key(&request_id)?;
        let view = self
            .forms
            .create_dossier(&who, &procedure_id, request_id.as_deref())
            .await?;
        Ok(Response::new(pb::CreateDossierResponse {
            dossier: Some(dossier_to_pb(&view)),
        }))
    }

    async fn get_dossier(
        &self,
        request: Request<pb::GetDossierRequest>,
    ) -> Result<Response<pb::GetDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::GetDossierRequest { number } = request.into_inner();
        let view = self.forms.dossier(&who, number).await?;
        Ok(Response::new(pb::GetDossierResponse {
            dossier: Some(dossier_to_pb(&view)),
        }))
    }

    async fn list_dossiers(
        &self,
        request: Request<pb::ListDossiersRequest>,
    ) -> Result<Response<pb::ListDossiersResponse>, Status> {
        let who = caller(&request)?;
        let pb::ListDossiersRequest {
            page_size,
            page_token,
            scope,
            procedure_id,
            statuses,
        } = request.into_inner();
        let scope = match pb::DossierScope::try_from(scope) {
            Ok(pb::DossierScope::Unspecified | pb::DossierScope::All) => Scope::All,
            Ok(pb::DossierScope::Owned) => Scope::Owned,
            Ok(pb::DossierScope::Invited) => Scope::Invited,
            Err(_) => return Err(bad("scope", "Portée inconnue")),
        };
        let mut parsed = Vec::new();
        for (i, s) in statuses.into_iter().enumerate() {
            let status = mst_proto::events::DossierStatus::try_from(s)
                .ok()
                .and_then(convert::status_from_pb)
                .ok_or_else(|| bad(format!("statuses[{i}]"), "Statut inconnu"))?;
            parsed.push(status);
        }
        let procedure = (!procedure_id.is_empty()).then_some(procedure_id.as_str());
        let (rows, next) = self
            .forms
            .dossiers(&who, scope, procedure, &parsed, page_size, &page_token)
            .await?;
        let dossiers = rows
            .into_iter()
            .map(|(row, procedure, access)| {
                let status = crate::domain::procedure::Status::parse(&row.status)
                    .map(convert::status_to_pb)
                    .unwrap_or(mst_proto::events::DossierStatus::Unspecified);
                pb::DossierSummary {
                    number: row.number,
                    procedure: Some(procedure.reference()),
                    status: status as i32,
                    title: row.title,
                    access: access_to_pb(access) as i32,
                    version: row.version,
                    created_at: Some(convert::timestamp(row.created_at)),
                    updated_at: Some(convert::timestamp(row.updated_at)),
                    deposited_at: row.deposited_at.map(convert::timestamp),
                }
            })
            .collect();
        Ok(Response::new(pb::ListDossiersResponse {
            dossiers,
            next_page_token: next,
        }))
    }

    async fn update_dossier(
        &self,
        request: Request<pb::UpdateDossierRequest>,
    ) -> Result<Response<pb::UpdateDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::UpdateDossierRequest {
            number,
            expected_version,
            patches,
        } = request.into_inner();
        let mut parsed = Vec::with_capacity(patches.len());
        let mut violations = Vec::new();
        for (i, p) in patches.into_iter().enumerate() {
            match convert::patch(p, i) {
                Ok(p) => parsed.push(p),
                Err(v) => violations.push(v),
            }
        }
        if !violations.is_empty() {
            return Err(bad_all(violations));
        }
        let view = self
            .forms
            .update_dossier(&who, number, expected_version, parsed)
            .await?;
        Ok(Response::new(pb::UpdateDossierResponse {
            dossier: Some(dossier_to_pb(&view)),
        }))
    }

    async fn duplicate_dossier(
        &self,
        request: Request<pb::DuplicateDossierRequest>,
    ) -> Result<Response<pb::DuplicateDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::DuplicateDossierRequest { number, request_id } = request.into_inner();
        let request_id = request_key(&request_id)?;
        let view = self
            .forms
            .duplicate_dossier(&who, number, request_id.as_deref())
            .await?;
        Ok(Response::new(pb::DuplicateDossierResponse {
            dossier: Some(dossier_to_pb(&view)),
        }))
    }

    async fn delete_dossier(
        &self,
        request: Request<pb::DeleteDossierRequest>,
    ) -> Result<Response<pb::DeleteDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::DeleteDossierRequest {
            number,
            expected_version,
        } = request.into_inner();
        self.forms
            .delete_dossier(&who, number, expected_version)
            .await?;
        Ok(Response::new(pb::DeleteDossierResponse {}))
    }

    async fn invite_to_dossier(
        &self,
        request: Request<pb::InviteToDossierRequest>,
    ) -> Result<Response<pb::InviteToDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::InviteToDossierRequest {
            number,
            invitee_email,
            message,
        } = request.into_inner();
        let inv = self
            .forms
            .invite(&who, number, &invitee_email, &message)
            .await?;
        Ok(Response::new(pb::InviteToDossierResponse {
            invitation: Some(invitation_to_pb(inv)),
        }))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let who = caller(&request)?;
        let pb::ListInvitationsRequest { number } = request.into_inner();
        let invitations = self.forms.invitations(&who, number).await?;
        Ok(Response::new(pb::ListInvitationsResponse {
            invitations: invitations.into_iter().map(invitation_to_pb).collect(),
        }))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::RevokeInvitationResponse>, Status> {
        let who = caller(&request)?;
        let pb::RevokeInvitationRequest {
            number,
            invitation_id,
        } = request.into_inner();
        self.forms
            .revoke_invitation(&who, number, &invitation_id)
            .await?;
        Ok(Response::new(pb::RevokeInvitationResponse {}))
    }

    async fn deposit_dossier(
        &self,
        request: Request<pb::DepositDossierRequest>,
    ) -> Result<Response<pb::DepositDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::DepositDossierRequest {
            number,
            expected_version,
        } = request.into_inner();
        let view = self
            .deposits
            .deposit(&self.forms, &who, number, expected_version)
            .await?;
        Ok(Response::new(pb::DepositDossierResponse {
            dossier: Some(dossier_to_pb(&view)),
        }))
    }

    async fn get_dossier_history(
        &self,
        request: Request<pb::GetDossierHistoryRequest>,
    ) -> Result<Response<pb::GetDossierHistoryResponse>, Status> {
        let who = caller(&request)?;
        let pb::GetDossierHistoryRequest {
            number,
            page_size,
            page_token,
            field_id,
            since,
        } = request.into_inner();
        let since = since
            .as_ref()
            .map(|ts| convert::datetime(ts, "since"))
            .transpose()
            .map_err(|(f, m)| bad(f, m))?;
        let field = (!field_id.is_empty()).then_some(field_id.as_str());
        let page = self
            .forms
            .history(&who, number, field, since, page_size, &page_token)
            .await?;
        let entries = page
            .entries
            .into_iter()
            .map(|e| {
                let label = crate::domain::value::ChampPath::parse(&e.field_path)
                    .ok()
                    .and_then(|p| {
                        page.form
                            .entry(p.field_id())
                            .map(|en| en.field.label.clone())
                    })
                    .unwrap_or_default();
                pb::HistoryEntry {
                    version: e.version,
                    at: Some(convert::timestamp(e.at)),
                    actor: Some(mst_proto::events::Actor {
                        email: e.actor_email,
                        role: mst_proto::events::Role::Promoteur as i32,
                    }),
                    field_path: e.field_path,
                    field_label: label,
                    kind: history_kind(&e.kind) as i32,
                    old_value: stored_value(e.old_value.as_deref()),
                    new_value: stored_value(e.new_value.as_deref()),
                }
            })
            .collect();
        Ok(Response::new(pb::GetDossierHistoryResponse {
            entries,
            next_page_token: page.next,
        }))
    }

    async fn upload_champ_file(
        &self,
        request: Request<Streaming<pb::UploadChampFileRequest>>,
    ) -> Result<Response<pb::UploadChampFileResponse>, Status> {
        use pb::upload_champ_file_request::Payload;
        let who = caller(&request)?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .and_then(|m| m.payload)
            .ok_or_else(|| {
                bad(
                    "metadata",
                    "Les métadonnées du fichier doivent être envoyées en premier",
                )
            })?;
        let Payload::Metadata(meta) = first else {
            return Err(bad(
                "metadata",
                "Les métadonnées du fichier doivent être envoyées en premier",
            ));
        };
        let pb::UploadChampFileMetadata {
            number,
            field_id,
            row,
            file_name,
            content_type,
            size_bytes,
            expected_version,
        } = meta;
        let path =
            convert::champ_path(&field_id, row.as_ref(), "metadata").map_err(|(f, m)| bad(f, m))?;
        let size = declared_size(size_bytes)?;
        let chunks = stream.map(|m| match m {
            Ok(pb::UploadChampFileRequest {
                payload: Some(Payload::Chunk(bytes)),
            }) => Ok(bytes::Bytes::from(bytes)),
            Ok(_) => Err("métadonnées répétées au milieu du fichier".to_owned()),
            Err(s) => Err(s.message().to_owned()),
        });
        let meta = crate::app::UploadMeta {
            number,
            path,
            file_name,
            content_type,
            size,
            expected_version,
        };
        let (file, version) = self.forms.upload_file(&who, meta, Box::pin(chunks)).await?;
        Ok(Response::new(pb::UploadChampFileResponse {
            file: Some(convert::file_ref_to_pb(&file)),
            version,
        }))
    }

    type DownloadChampFileStream = ResponseStream<pb::DownloadChampFileResponse>;

    async fn download_champ_file(
        &self,
        request: Request<pb::DownloadChampFileRequest>,
    ) -> Result<Response<Self::DownloadChampFileStream>, Status> {
        let who = caller(&request)?;
        let pb::DownloadChampFileRequest { number, file_id } = request.into_inner();
        let download = self.forms.file(&who, number, &file_id).await?;
        let content = self.forms.file_content(&download).await?;
        let header = mst_proto::events::DownloadHeader {
            file_name: download.row.name.clone(),
            content_type: download.row.content_type.clone(),
            size_bytes: Some(download.row.size),
        };
        Ok(Response::new(download_stream(
            header,
            content,
            |h| pb::DownloadChampFileResponse {
                payload: Some(pb::download_champ_file_response::Payload::Header(h)),
            },
            |c| pb::DownloadChampFileResponse {
                payload: Some(pb::download_champ_file_response::Payload::Chunk(c)),
            },
        )))
    }

    type GetDossierPdfStream = ResponseStream<pb::GetDossierPdfResponse>;

    async fn get_dossier_pdf(
        &self,
        request: Request<pb::GetDossierPdfRequest>,
    ) -> Result<Response<Self::GetDossierPdfStream>, Status> {
        let who = caller(&request)?;
        let pb::GetDossierPdfRequest { number } = request.into_inner();
        let view = self.forms.dossier(&who, number).await?;
        let document = crate::render::pdf_document(&view, Referentiel::official());
        let generated = crate::render::datetime_fr(chrono::Utc::now());
        let bytes = tokio::task::spawn_blocking(move || crate::pdf::render(&document, &generated))
            .await
            .map_err(|e| Status::internal(format!("PDF rendering failed: {e}")))?;
        let header = mst_proto::events::DownloadHeader {
            file_name: format!("dossier-{number}.pdf"),
            content_type: crate::pdf::CONTENT_TYPE.to_owned(),
            size_bytes: i64::try_from(bytes.len()).ok(),
        };
        let content: crate::files::ByteStream =
            Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(bytes))]));
        Ok(Response::new(download_stream(
            header,
            content,
            |h| pb::GetDossierPdfResponse {
                payload: Some(pb::get_dossier_pdf_response::Payload::Header(h)),
            },
            |c| pb::GetDossierPdfResponse {
                payload: Some(pb::get_dossier_pdf_response::Payload::Chunk(c)),
            },
        )))
    }
}

/// Largest chunk sent in a download stream.
const CHUNK: usize = 64 * 1024;

/// A download: the header, then the content in chunks of at most 64 KiB.
fn download_stream<T: Send + 'static>(
    header: mst_proto::events::DownloadHeader,
    content: crate::files::ByteStream,
    wrap_header: impl Fn(mst_proto::events::DownloadHeader) -> T + Send + 'static,
    wrap_chunk: impl Fn(Vec<u8>) -> T + Send + Sync + 'static,
) -> ResponseStream<T> {
    let wrap_chunk = std::sync::Arc::new(wrap_chunk);
    let chunks = content.flat_map(move |part| {
        let wrap = wrap_chunk.clone();
        let items: Vec<Result<T, Status>> = match part {
            Ok(bytes) => bytes.chunks(CHUNK).map(|c| Ok(wrap(c.to_vec()))).collect(),
            Err(e) => {
                tracing::error!(error = %e, "reading a stored file failed");
                vec![Err(Status::internal("lecture du fichier impossible"))]
            }
        };
        futures::stream::iter(items)
    });
    Box::pin(futures::stream::once(async move { Ok(wrap_header(header)) }).chain(chunks))
}

/// The size an upload's metadata declares: positive.
fn declared_size(size_bytes: i64) -> Result<u64, Status> {
    u64::try_from(size_bytes)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            bad(
                "metadata.size_bytes",
                "La taille du fichier doit être positive",
            )
        })
}

/// A client idempotency key: empty means none; otherwise at most 64 printable ASCII characters.
fn request_key(key: &str) -> Result<Option<String>, Status> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > 64 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "request_id",
            "Identifiant de requête invalide (64 caractères ASCII au plus)",
        ));
    }
    Ok(Some(key.to_owned()))
}

#[tonic::async_trait]
impl ProcedureAdminService for Api {
    async fn create_procedure(
        &self,
        request: Request<pb::CreateProcedureRequest>,
    ) -> Result<Response<pb::CreateProcedureResponse>, Status> {
        let who = caller(&request)?;
        // Admin only, before the id is looked at: others must not learn which ids exist.
        if !who.has(mst_kit::auth::Role::Admin) {
            return Err(AppError::Forbidden(format!("{} lacks role admin", who.email)).into());
        }
        let pb::CreateProcedureRequest {
            procedure_id: id,
            title,
            description,
            kind,
            estimated_filling_time,
            closing_at,
        } = request.into_inner();
        let def = pb::ProcedureDefinition {
            id,
            title,
            description,
            kind,
            estimated_filling_time,
            closing_at,
            fields: Vec::new(),
        };
        let def = convert::procedure_definition(def, "").map_err(bad_all)?;
        if self.forms.procedure(def.id.as_str()).await.is_ok() {
            return Err(AppError::AlreadyExists("procedure", def.id.to_string()).into());
        }
        let (procedure, _, _) = self.forms.load_procedure(&who, def, false).await?;
        Ok(Response::new(pb::CreateProcedureResponse {
            procedure: Some(procedure_to_pb(&procedure)),
        }))
    }

    async fn update_procedure(
        &self,
        request: Request<pb::UpdateProcedureRequest>,
    ) -> Result<Response<pb::UpdateProcedureResponse>, Status> {
        let who = caller(&request)?;
        let pb::UpdateProcedureRequest {
            procedure_id,
            expected_version,
            procedure,
            update_mask,
        } = request.into_inner();
        let pb::Procedure {
            title,
            description,
            estimated_filling_time,
            closing_at,
            ..
        } = procedure.unwrap_or_default();
        let mut update = crate::app::ProcedureUpdate::default();
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(bad(
                "update_mask",
                "Indiquez au moins un attribut à modifier",
            ));
        }
        for path in paths {
            match path.as_str() {
                "title" => {
                    update.title = Some(
                        convert::procedure_title(title.clone(), "procedure.title")
                            .map_err(|(f, m)| bad(f, m))?,
                    );
                }
                "description" => update.description = Some(description.clone()),
                "estimated_filling_time" => {
                    let d = convert::duration(
                        estimated_filling_time.as_ref(),
                        "procedure.estimated_filling_time",
                    )
                    .map_err(|(f, m)| bad(f, m))?;
                    update.estimated_filling_secs =
                        Some(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                }
                "closing_at" => {
                    update.closing_at = Some(
                        closing_at
                            .as_ref()
                            .map(|ts| convert::datetime(ts, "procedure.closing_at"))
                            .transpose()
                            .map_err(|(f, m)| bad(f, m))?,
                    );
                }
                other => {
                    return Err(bad(
                        "update_mask",
                        format!("Attribut inconnu ou non modifiable : {other}"),
                    ));
                }
            }
        }
        let view = self
            .forms
            .update_procedure(&who, &procedure_id, expected_version, update)
            .await?;
        Ok(Response::new(pb::UpdateProcedureResponse {
            procedure: Some(procedure_to_pb(&view)),
        }))
    }

    async fn upload_notice(
        &self,
        request: Request<Streaming<pb::UploadNoticeRequest>>,
    ) -> Result<Response<pb::UploadNoticeResponse>, Status> {
        use pb::upload_notice_request::Payload;
        let who = caller(&request)?;
        let mut stream = request.into_inner();
        let Some(Payload::Metadata(meta)) = stream.message().await?.and_then(|m| m.payload) else {
            return Err(bad(
                "metadata",
                "Les métadonnées de la notice doivent être envoyées en premier",
            ));
        };
        let pb::UploadNoticeMetadata {
            procedure_id,
            file_name,
            content_type,
            size_bytes,
        } = meta;
        let size = declared_size(size_bytes)?;
        let chunks = stream.map(|m| match m {
            Ok(pb::UploadNoticeRequest {
                payload: Some(Payload::Chunk(bytes)),
            }) => Ok(bytes::Bytes::from(bytes)),
            Ok(_) => Err("métadonnées répétées au milieu du fichier".to_owned()),
            Err(s) => Err(s.message().to_owned()),
        });
        let view = self
            .forms
            .set_notice(
                &who,
                &procedure_id,
                &file_name,
                &content_type,
                size,
                Box::pin(chunks),
            )
            .await?;
        Ok(Response::new(pb::UploadNoticeResponse {
            procedure: Some(procedure_to_pb(&view)),
        }))
    }

    async fn list_revisions(
        &self,
        request: Request<pb::ListRevisionsRequest>,
    ) -> Result<Response<pb::ListRevisionsResponse>, Status> {
        let who = caller(&request)?;
        let pb::ListRevisionsRequest {
            procedure_id,
            page_size,
            page_token,
        } = request.into_inner();
        let (revisions, next) = self
            .forms
            .revisions(&who, &procedure_id, page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListRevisionsResponse {
            revisions: revisions.iter().map(revision_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn update_draft_revision(
        &self,
        request: Request<pb::UpdateDraftRevisionRequest>,
    ) -> Result<Response<pb::UpdateDraftRevisionResponse>, Status> {
        let who = caller(&request)?;
        let pb::UpdateDraftRevisionRequest {
            procedure_id,
            expected_version,
            fields,
        } = request.into_inner();
        let form = convert::form_definition(fields, "fields").map_err(bad_all)?;
        let revision = self
            .forms
            .update_draft(&who, &procedure_id, expected_version, form)
            .await?;
        Ok(Response::new(pb::UpdateDraftRevisionResponse {
            revision: Some(revision_to_pb(&revision)),
        }))
    }

    async fn publish_revision(
        &self,
        request: Request<pb::PublishRevisionRequest>,
    ) -> Result<Response<pb::PublishRevisionResponse>, Status> {
        let who = caller(&request)?;
        let pb::PublishRevisionRequest {
            procedure_id,
            expected_version,
        } = request.into_inner();
        let (procedure, revision) = self
            .forms
            .publish(&who, &procedure_id, expected_version)
            .await?;
        Ok(Response::new(pb::PublishRevisionResponse {
            procedure: Some(procedure_to_pb(&procedure)),
            published_revision: Some(revision_to_pb(&revision)),
        }))
    }

    async fn load_procedure(
        &self,
        request: Request<pb::LoadProcedureRequest>,
    ) -> Result<Response<pb::LoadProcedureResponse>, Status> {
        let who = caller(&request)?;
        let pb::LoadProcedureRequest { source, publish } = request.into_inner();
        let def = match source {
            Some(pb::load_procedure_request::Source::Definition(def)) => def,
            Some(pb::load_procedure_request::Source::BuiltinId(id)) => {
                crate::builtin::definition(&id)
                    .ok_or_else(|| {
                        bad(
                            "builtin_id",
                            format!(
                                "Démarche intégrée inconnue : « {id} » (connues : {})",
                                crate::builtin::IDS.join(", ")
                            ),
                        )
                    })?
                    .map_err(|e| {
                        Status::internal(format!("shipped definition {id} is invalid: {e}"))
                    })?
            }
            None => {
                return Err(bad(
                    "source",
                    "Indiquez une définition ou l'identifiant d'une démarche intégrée",
                ));
            }
        };
        let def = convert::procedure_definition(def, "definition").map_err(bad_all)?;
        let (procedure, revision, outcome) = self.forms.load_procedure(&who, def, publish).await?;
        Ok(Response::new(pb::LoadProcedureResponse {
            procedure: Some(procedure_to_pb(&procedure)),
            revision: Some(revision_to_pb(&revision)),
            outcome: match outcome {
                LoadOutcome::Created => pb::LoadOutcome::Created,
                LoadOutcome::Updated => pb::LoadOutcome::Updated,
                LoadOutcome::Unchanged => pb::LoadOutcome::Unchanged,
            } as i32,
        }))
    }
}

#[tonic::async_trait]
impl FormsInternalService for Api {
    async fn freeze_dossier(
        &self,
        request: Request<pb::FreezeDossierRequest>,
    ) -> Result<Response<pb::FreezeDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::FreezeDossierRequest {
            number,
            operation_id,
            target_status: _,
            status_version: _,
        } = request.into_inner();
        if operation_id.is_empty() || operation_id.len() > 64 {
            return Err(bad("operation_id", "Identifiant d'opération invalide"));
        }
        let (content_version, already_frozen) =
            self.forms.freeze(&who, number, &operation_id).await?;
        Ok(Response::new(pb::FreezeDossierResponse {
            content_version,
            already_frozen,
        }))
    }

    async fn unfreeze_dossier(
        &self,
        request: Request<pb::UnfreezeDossierRequest>,
    ) -> Result<Response<pb::UnfreezeDossierResponse>, Status> {
        let who = caller(&request)?;
        let pb::UnfreezeDossierRequest {
            number,
            operation_id,
            reason,
            status_version,
        } = request.into_inner();
        let frozen = match pb::UnfreezeReason::try_from(reason) {
            Ok(pb::UnfreezeReason::Rollback) => {
                self.forms.unfreeze(&who, number, &operation_id).await?
            }
            Ok(pb::UnfreezeReason::ReturnedToConstruction) => {
                self.forms
                    .returned_to_construction(&who, number, status_version)
                    .await?
            }
            _ => return Err(bad("reason", "Motif de dégel inconnu")),
        };
        Ok(Response::new(pb::UnfreezeDossierResponse { frozen }))
    }

    type StreamDossiersStream = ResponseStream<pb::StreamDossiersResponse>;

    async fn stream_dossiers(
        &self,
        request: Request<pb::StreamDossiersRequest>,
    ) -> Result<Response<Self::StreamDossiersStream>, Status> {
        let who = caller(&request)?;
        let pb::StreamDossiersRequest {
            procedure_id,
            numbers,
            statuses,
        } = request.into_inner();
        let mut parsed = Vec::new();
        for (i, s) in statuses.into_iter().enumerate() {
            parsed.push(
                mst_proto::events::DossierStatus::try_from(s)
                    .ok()
                    .and_then(convert::status_from_pb)
                    .ok_or_else(|| bad(format!("statuses[{i}]"), "Statut inconnu"))?,
            );
        }
        // Check the caller and the procedure before streaming, so errors come as a status.
        self.forms
            .procedure_dossiers(&who, &procedure_id, &numbers, &parsed, 0, 1)
            .await?;
        let forms = self.forms.clone();
        let stream = futures::stream::unfold(Some(0i64), move |after| {
            let (forms, who, procedure_id, numbers, parsed) = (
                forms.clone(),
                who.clone(),
                procedure_id.clone(),
                numbers.clone(),
                parsed.clone(),
            );
            async move {
                let after = after?;
                match forms
                    .procedure_dossiers(&who, &procedure_id, &numbers, &parsed, after, 200)
                    .await
                {
                    Ok(page) if page.is_empty() => None,
                    Ok(page) => {
                        let next = page.last().map(|v| v.row.number);
                        let items: Vec<Result<pb::StreamDossiersResponse, Status>> = page
                            .iter()
                            .map(|v| {
                                Ok(pb::StreamDossiersResponse {
                                    dossier: Some(dossier_to_pb(v)),
                                })
                            })
                            .collect();
                        Some((futures::stream::iter(items), next))
                    }
                    Err(e) => Some((futures::stream::iter(vec![Err(Status::from(e))]), None)),
                }
            }
        })
        .flatten();
        Ok(Response::new(Box::pin(stream)))
    }
}
