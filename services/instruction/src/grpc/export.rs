//! `ExportDossiers` of `mst.instruction.v1.InstructionService`, as a handler function the service
//! implementation delegates to: proto → [`ExportRequest`], the `app::export` use case, its byte
//! stream → a `DownloadHeader` then `chunk` messages.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use mst_kit::auth::principal;
use mst_proto::events as ev;
use mst_proto::instruction as pb;
use tonic::{Request, Response, Status};

use super::datetime;
use crate::app::board::Tab;
use crate::app::export::{ExportRequest, Format};
use crate::app::{AppError, Instruction};
use crate::domain::Status as DossierStatus;

/// The response stream of `ExportDossiers`.
pub type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportDossiersResponse, Status>> + Send>>;

fn bad(field: &str, message: impl Into<String>) -> Status {
    AppError::BadRequest(vec![(field.to_owned(), message.into())]).into()
}

fn status_of(i: usize, raw: i32) -> Result<DossierStatus, Status> {
    let field = format!("filter.statuses[{i}]");
    match ev::DossierStatus::try_from(raw) {
        Ok(ev::DossierStatus::Brouillon) => Ok(DossierStatus::Brouillon),
        Ok(ev::DossierStatus::EnConstruction) => Ok(DossierStatus::EnConstruction),
        Ok(ev::DossierStatus::EnInstruction) => Ok(DossierStatus::EnInstruction),
        Ok(ev::DossierStatus::Accepte) => Ok(DossierStatus::Accepte),
        Ok(ev::DossierStatus::Refuse) => Ok(DossierStatus::Refuse),
        Ok(ev::DossierStatus::SansSuite) => Ok(DossierStatus::SansSuite),
        Ok(ev::DossierStatus::Unspecified) | Err(_) => Err(bad(&field, "Statut inconnu")),
    }
}

/// `ExportDossiers`.
#[tracing::instrument(skip_all)]
pub async fn export_dossiers(
    i: &Instruction,
    request: Request<pb::ExportDossiersRequest>,
) -> Result<Response<ExportStream>, Status> {
    let who = principal(&request)?;
    let pb::ExportDossiersRequest {
        procedure_id,
        format,
        tab,
        filter,
        repetition_field_id,
        include_annotations,
    } = request.into_inner();
    let format = match pb::ExportFormat::try_from(format) {
        Ok(pb::ExportFormat::Csv) => Format::Csv,
        Ok(pb::ExportFormat::Xlsx) => Format::Xlsx,
        Ok(pb::ExportFormat::Unspecified) | Err(_) => {
            return Err(bad("format", "Choisissez le format CSV ou XLSX"));
        }
    };
    let tab = match pb::DossierTab::try_from(tab) {
        Ok(pb::DossierTab::Unspecified | pb::DossierTab::Tous) => Tab::Tous,
        Ok(pb::DossierTab::ASuivre) => Tab::ASuivre,
        Ok(pb::DossierTab::Suivis) => Tab::Suivis,
        Ok(pb::DossierTab::Traites) => Tab::Traites,
        Ok(pb::DossierTab::Archives) => Tab::Archives,
        Err(_) => return Err(bad("tab", "Onglet inconnu")),
    };
    let pb::DossierFilter {
        statuses,
        followed_by_me,
        deposited_after,
        deposited_before,
        groupe_ids,
        text,
    } = filter.unwrap_or_default();
    let statuses = statuses
        .into_iter()
        .enumerate()
        .map(|(n, s)| status_of(n, s))
        .collect::<Result<Vec<_>, _>>()?;
    if procedure_id.trim().is_empty() {
        return Err(bad("procedure_id", "La démarche est obligatoire"));
    }
    let repetition_field_id = repetition_field_id.trim();
    let export = i
        .export(
            &who,
            ExportRequest {
                procedure_id: procedure_id.trim().to_owned(),
                format,
                tab,
                statuses,
                followed_by_me,
                deposited_after: deposited_after.as_ref().and_then(datetime),
                deposited_before: deposited_before.as_ref().and_then(datetime),
                groupe_ids,
                text,
                // Ignored for XLSX (every repetition gets its sheet).
                repetition_field_id: (format == Format::Csv && !repetition_field_id.is_empty())
                    .then(|| repetition_field_id.to_owned()),
                include_annotations,
            },
        )
        .await?;
    let header = pb::ExportDossiersResponse {
        payload: Some(pb::export_dossiers_response::Payload::Header(
            ev::DownloadHeader {
                file_name: export.file_name,
                content_type: export.content_type.to_owned(),
                size_bytes: None,
            },
        )),
    };
    let chunks = export.body.map(|item| match item {
        Ok(bytes) => Ok(pb::ExportDossiersResponse {
            payload: Some(pb::export_dossiers_response::Payload::Chunk(bytes.to_vec())),
        }),
        Err(e) => Err(Status::from(e)),
    });
    let stream = futures::stream::once(async move { Ok(header) }).chain(chunks);
    Ok(Response::new(Box::pin(stream)))
}
