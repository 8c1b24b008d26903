//! gRPC handlers of the instructeur tools (annotations privées, avis externes), as functions the
//! `InstructionService` implementation delegates to: proto → use-case arguments (every field
//! destructured), the use cases of `app::avis`, views → proto.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use mst_kit::auth::principal;
use mst_proto::events as ev;
use mst_proto::instruction as pb;
use tonic::{Request, Response, Status, Streaming};

use super::timestamp;
use crate::app::avis::{
    AnnotationDefinition, AnnotationKind, AnnotationPatch, AnnotationValue, AnnotationsView,
    AvisAnswer, AvisFileInput, AvisFiles, AvisState, AvisView, DefinitionsView, NewAvis,
};
use crate::app::{AppError, Instruction};

/// The stream DownloadAvisFile answers with.
pub type DownloadAvisFileStream =
    Pin<Box<dyn Stream<Item = Result<pb::DownloadAvisFileResponse, Status>> + Send>>;

fn bad(field: &str, message: impl Into<String>) -> Status {
    AppError::BadRequest(vec![(field.to_owned(), message.into())]).into()
}

fn kind_from_pb(t: i32) -> Option<AnnotationKind> {
    Some(match pb::AnnotationType::try_from(t).ok()? {
        pb::AnnotationType::Unspecified => return None,
        pb::AnnotationType::Text => AnnotationKind::Text,
        pb::AnnotationType::Textarea => AnnotationKind::Textarea,
        pb::AnnotationType::Integer => AnnotationKind::Integer,
        pb::AnnotationType::Decimal => AnnotationKind::Decimal,
        pb::AnnotationType::Date => AnnotationKind::Date,
        pb::AnnotationType::Checkbox => AnnotationKind::Checkbox,
        pb::AnnotationType::YesNo => AnnotationKind::YesNo,
        pb::AnnotationType::DropDown => AnnotationKind::DropDown,
    })
}

fn kind_to_pb(k: AnnotationKind) -> pb::AnnotationType {
    match k {
        AnnotationKind::Text => pb::AnnotationType::Text,
        AnnotationKind::Textarea => pb::AnnotationType::Textarea,
        AnnotationKind::Integer => pb::AnnotationType::Integer,
        AnnotationKind::Decimal => pb::AnnotationType::Decimal,
        AnnotationKind::Date => pb::AnnotationType::Date,
        AnnotationKind::Checkbox => pb::AnnotationType::Checkbox,
        AnnotationKind::YesNo => pb::AnnotationType::YesNo,
        AnnotationKind::DropDown => pb::AnnotationType::DropDown,
    }
}

fn definition_to_pb(d: AnnotationDefinition) -> pb::AnnotationDefinition {
    let AnnotationDefinition {
        id,
        label,
        description,
        kind,
        options,
        max_length,
        min,
        max,
    } = d;
    pb::AnnotationDefinition {
        id,
        label,
        description,
        r#type: kind_to_pb(kind) as i32,
        options,
        max_length: max_length.and_then(|n| i32::try_from(n).ok()),
        min,
        max,
    }
}

fn value_from_pb(v: pb::annotation_value::Value) -> AnnotationValue {
    use pb::annotation_value::Value;
    match v {
        Value::Text(t) => AnnotationValue::Text(t),
        Value::Integer(n) => AnnotationValue::Integer(n),
        Value::Decimal(d) => AnnotationValue::Decimal(d),
        Value::Date(d) => AnnotationValue::Date(d),
        Value::Checkbox(b) => AnnotationValue::Checkbox(b),
        Value::YesNo(b) => AnnotationValue::YesNo(b),
        Value::DropDown(s) => AnnotationValue::DropDown(s),
    }
}

fn value_to_pb(v: AnnotationValue) -> pb::AnnotationValue {
    use pb::annotation_value::Value;
    pb::AnnotationValue {
        value: Some(match v {
            AnnotationValue::Text(t) => Value::Text(t),
            AnnotationValue::Integer(n) => Value::Integer(n),
            AnnotationValue::Decimal(d) => Value::Decimal(d),
            AnnotationValue::Date(d) => Value::Date(d),
            AnnotationValue::Checkbox(b) => Value::Checkbox(b),
            AnnotationValue::YesNo(b) => Value::YesNo(b),
            AnnotationValue::DropDown(s) => Value::DropDown(s),
        }),
    }
}

fn definitions_to_pb(defs: Vec<AnnotationDefinition>) -> Vec<pb::AnnotationDefinition> {
    defs.into_iter().map(definition_to_pb).collect()
}

fn set_to_pb(view: AnnotationsView) -> (pb::AnnotationSet, Vec<pb::AnnotationDefinition>) {
    let AnnotationsView {
        number,
        annotations,
        version,
        definitions,
    } = view;
    (
        pb::AnnotationSet {
            number,
            annotations: annotations
                .into_iter()
                .map(|a| pb::Annotation {
                    annotation_id: a.annotation_id,
                    value: Some(value_to_pb(a.value)),
                    updated_by_email: a.updated_by_email,
                    updated_at: Some(timestamp(a.updated_at)),
                })
                .collect(),
            version,
        },
        definitions_to_pb(definitions),
    )
}

fn state_to_pb(state: &str) -> pb::AvisState {
    match state {
        "pending" => pb::AvisState::Pending,
        "given" => pb::AvisState::Given,
        "revoked" => pb::AvisState::Revoked,
        _ => pb::AvisState::Unspecified,
    }
}

/// An avis view as proto.
pub fn avis_to_pb(view: AvisView) -> pb::Avis {
    let AvisView {
        row,
        procedure,
        redacted,
    } = view;
    let answer_file = match (
        row.file_name,
        row.file_content_type,
        row.file_size_bytes,
        row.file_sha256,
    ) {
        (Some(file_name), Some(content_type), Some(size_bytes), Some(sha256)) => {
            Some(ev::FileRef {
                id: row.id.clone(),
                file_name,
                content_type,
                size_bytes,
                sha256,
            })
        }
        _ => None,
    };
    pb::Avis {
        state: state_to_pb(&row.state) as i32,
        id: row.id,
        number: row.dossier_number,
        procedure: Some(procedure),
        expert_email: row.expert_email,
        question: row.question,
        confidential: row.confidential,
        requested_by_email: row.requested_by_email,
        requested_at: Some(timestamp(row.requested_at)),
        answer: row.answer.unwrap_or_default(),
        answer_file,
        answered_at: row.answered_at.map(timestamp),
        revoked_at: row.revoked_at.map(timestamp),
        redacted,
        version: row.version,
    }
}

/// `GetAnnotationDefinitions`.
#[tracing::instrument(skip_all)]
pub async fn get_annotation_definitions(
    i: &Instruction,
    request: Request<pb::GetAnnotationDefinitionsRequest>,
) -> Result<Response<pb::GetAnnotationDefinitionsResponse>, Status> {
    let who = principal(&request)?;
    let pb::GetAnnotationDefinitionsRequest { procedure_id } = request.into_inner();
    let DefinitionsView {
        definitions,
        version,
    } = i.annotation_definitions(&who, &procedure_id).await?;
    Ok(Response::new(pb::GetAnnotationDefinitionsResponse {
        definitions: definitions_to_pb(definitions),
        version,
    }))
}

/// `UpdateAnnotationDefinitions`.
#[tracing::instrument(skip_all)]
pub async fn update_annotation_definitions(
    i: &Instruction,
    request: Request<pb::UpdateAnnotationDefinitionsRequest>,
) -> Result<Response<pb::UpdateAnnotationDefinitionsResponse>, Status> {
    let who = principal(&request)?;
    let pb::UpdateAnnotationDefinitionsRequest {
        procedure_id,
        expected_version,
        definitions,
    } = request.into_inner();
    let mut violations = Vec::new();
    let mut defs = Vec::with_capacity(definitions.len());
    for (n, d) in definitions.into_iter().enumerate() {
        let pb::AnnotationDefinition {
            id,
            label,
            description,
            r#type,
            options,
            max_length,
            min,
            max,
        } = d;
        let Some(kind) = kind_from_pb(r#type) else {
            violations.push((
                format!("definitions[{n}].type"),
                "Type d'annotation manquant ou inconnu".to_owned(),
            ));
            continue;
        };
        let max_length = match max_length.map(u32::try_from) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                violations.push((
                    format!("definitions[{n}].max_length"),
                    "La longueur maximale doit être positive".to_owned(),
                ));
                continue;
            }
        };
        defs.push(AnnotationDefinition {
            id,
            label,
            description,
            kind,
            options,
            max_length,
            min,
            max,
        });
    }
    if !violations.is_empty() {
        return Err(AppError::BadRequest(violations).into());
    }
    let DefinitionsView {
        definitions,
        version,
    } = i
        .update_annotation_definitions(&who, &procedure_id, expected_version, defs)
        .await?;
    Ok(Response::new(pb::UpdateAnnotationDefinitionsResponse {
        definitions: definitions_to_pb(definitions),
        version,
    }))
}

/// `GetAnnotations`.
#[tracing::instrument(skip_all, fields(dossier = request.get_ref().number))]
pub async fn get_annotations(
    i: &Instruction,
    request: Request<pb::GetAnnotationsRequest>,
) -> Result<Response<pb::GetAnnotationsResponse>, Status> {
    let who = principal(&request)?;
    let pb::GetAnnotationsRequest { number } = request.into_inner();
    let (annotations, definitions) = set_to_pb(i.annotations(&who, number).await?);
    Ok(Response::new(pb::GetAnnotationsResponse {
        annotations: Some(annotations),
        definitions,
    }))
}

/// `UpdateAnnotations`.
#[tracing::instrument(skip_all, fields(dossier = request.get_ref().number))]
pub async fn update_annotations(
    i: &Instruction,
    request: Request<pb::UpdateAnnotationsRequest>,
) -> Result<Response<pb::UpdateAnnotationsResponse>, Status> {
    use pb::annotation_patch::Operation;
    let who = principal(&request)?;
    let pb::UpdateAnnotationsRequest {
        number,
        expected_version,
        patches,
    } = request.into_inner();
    let mut violations = Vec::new();
    let mut changes = Vec::with_capacity(patches.len());
    for (n, p) in patches.into_iter().enumerate() {
        let pb::AnnotationPatch {
            annotation_id,
            operation,
        } = p;
        match operation {
            Some(Operation::Set(pb::AnnotationValue { value: Some(v) })) => {
                changes.push(AnnotationPatch::Set(annotation_id, value_from_pb(v)));
            }
            Some(Operation::Clear(true)) => changes.push(AnnotationPatch::Clear(annotation_id)),
            Some(Operation::Set(pb::AnnotationValue { value: None })) => {
                violations.push((format!("patches[{n}]"), "Valeur manquante".to_owned()));
            }
            Some(Operation::Clear(false)) | None => violations.push((
                format!("patches[{n}]"),
                "Opération manquante : « set » ou « clear »".to_owned(),
            )),
        }
    }
    if !violations.is_empty() {
        return Err(AppError::BadRequest(violations).into());
    }
    let (annotations, _) = set_to_pb(
        i.update_annotations(&who, number, expected_version, changes)
            .await?,
    );
    Ok(Response::new(pb::UpdateAnnotationsResponse {
        annotations: Some(annotations),
    }))
}

/// `RequestAvis`.
#[tracing::instrument(skip_all, fields(dossier = request.get_ref().number))]
pub async fn request_avis(
    i: &Instruction,
    request: Request<pb::RequestAvisRequest>,
) -> Result<Response<pb::RequestAvisResponse>, Status> {
    let who = principal(&request)?;
    let pb::RequestAvisRequest {
        number,
        expert_email,
        question,
        confidential,
        request_id,
    } = request.into_inner();
    let view = i
        .request_avis(
            &who,
            NewAvis {
                number,
                expert_email,
                question,
                confidential,
                request_id,
            },
        )
        .await?;
    Ok(Response::new(pb::RequestAvisResponse {
        avis: Some(avis_to_pb(view)),
    }))
}

/// `GiveAvis`: the metadata first, then the file's chunks, streamed to `files`.
#[tracing::instrument(skip_all)]
pub async fn give_avis(
    i: &Instruction,
    files: &AvisFiles,
    request: Request<Streaming<pb::GiveAvisRequest>>,
) -> Result<Response<pb::GiveAvisResponse>, Status> {
    use pb::give_avis_request::Payload;
    let who = principal(&request)?;
    let mut stream = request.into_inner();
    let metadata = match stream.next().await.transpose()? {
        Some(pb::GiveAvisRequest {
            payload: Some(Payload::Metadata(m)),
        }) => m,
        _ => {
            return Err(bad(
                "metadata",
                "Le premier message doit porter les métadonnées",
            ));
        }
    };
    let pb::GiveAvisMetadata {
        avis_id,
        expected_version,
        answer,
        file,
    } = metadata;
    let file = file.map(
        |pb::AvisFileMetadata {
             file_name,
             content_type,
             size_bytes,
         }| AvisFileInput {
            file_name,
            content_type,
            size_bytes,
        },
    );
    let chunks = stream.map(|message| match message {
        Ok(pb::GiveAvisRequest {
            payload: Some(Payload::Chunk(bytes)),
        }) => Ok(bytes),
        Ok(pb::GiveAvisRequest {
            payload: Some(Payload::Metadata(_)),
        }) => Err(AppError::BadRequest(vec![(
            "metadata".into(),
            "Les métadonnées ne peuvent être envoyées qu'une fois".into(),
        )])),
        Ok(pb::GiveAvisRequest { payload: None }) => Err(AppError::BadRequest(vec![(
            "payload".into(),
            "Message vide".into(),
        )])),
        Err(status) => Err(AppError::BadRequest(vec![(
            "chunk".into(),
            format!("Envoi interrompu : {}", status.message()),
        )])),
    });
    let view = i
        .give_avis(
            &who,
            files,
            AvisAnswer {
                avis_id,
                expected_version,
                answer,
                file,
            },
            Box::pin(chunks),
        )
        .await?;
    Ok(Response::new(pb::GiveAvisResponse {
        avis: Some(avis_to_pb(view)),
    }))
}

/// `RevokeAvis`.
#[tracing::instrument(skip_all)]
pub async fn revoke_avis(
    i: &Instruction,
    request: Request<pb::RevokeAvisRequest>,
) -> Result<Response<pb::RevokeAvisResponse>, Status> {
    let who = principal(&request)?;
    let pb::RevokeAvisRequest {
        avis_id,
        expected_version,
    } = request.into_inner();
    let view = i.revoke_avis(&who, &avis_id, expected_version).await?;
    Ok(Response::new(pb::RevokeAvisResponse {
        avis: Some(avis_to_pb(view)),
    }))
}

/// `ListAvis`.
#[tracing::instrument(skip_all, fields(dossier = request.get_ref().number))]
pub async fn list_avis(
    i: &Instruction,
    request: Request<pb::ListAvisRequest>,
) -> Result<Response<pb::ListAvisResponse>, Status> {
    let who = principal(&request)?;
    let pb::ListAvisRequest { number } = request.into_inner();
    let avis = i.list_avis(&who, number).await?;
    Ok(Response::new(pb::ListAvisResponse {
        avis: avis.into_iter().map(avis_to_pb).collect(),
    }))
}

/// `ListMyAvisRequests`.
#[tracing::instrument(skip_all)]
pub async fn list_my_avis_requests(
    i: &Instruction,
    request: Request<pb::ListMyAvisRequestsRequest>,
) -> Result<Response<pb::ListMyAvisRequestsResponse>, Status> {
    let who = principal(&request)?;
    let pb::ListMyAvisRequestsRequest {
        states,
        page_size,
        page_token,
    } = request.into_inner();
    let mut wanted = Vec::with_capacity(states.len());
    for (n, s) in states.into_iter().enumerate() {
        wanted.push(match pb::AvisState::try_from(s) {
            Ok(pb::AvisState::Pending) => AvisState::Pending,
            Ok(pb::AvisState::Given) => AvisState::Given,
            Ok(pb::AvisState::Revoked) => AvisState::Revoked,
            Ok(pb::AvisState::Unspecified) | Err(_) => {
                return Err(bad(&format!("states[{n}]"), "État d'avis inconnu"));
            }
        });
    }
    let page = i
        .my_avis_requests(&who, &wanted, page_size, &page_token)
        .await?;
    Ok(Response::new(pb::ListMyAvisRequestsResponse {
        avis: page.avis.into_iter().map(avis_to_pb).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// `DownloadAvisFile`: a header, then chunks of at most 64 KiB.
#[tracing::instrument(skip_all)]
pub async fn download_avis_file(
    i: &Instruction,
    files: &AvisFiles,
    request: Request<pb::DownloadAvisFileRequest>,
) -> Result<Response<DownloadAvisFileStream>, Status> {
    use pb::download_avis_file_response::Payload;
    let who = principal(&request)?;
    let pb::DownloadAvisFileRequest { avis_id } = request.into_inner();
    let download = i.download_avis_file(&who, files, &avis_id).await?;
    let header = pb::DownloadAvisFileResponse {
        payload: Some(Payload::Header(ev::DownloadHeader {
            file_name: download.file_name,
            content_type: download.content_type,
            size_bytes: Some(download.size_bytes),
        })),
    };
    let chunks = download.chunks.map(|chunk| match chunk {
        Ok(bytes) => Ok(pb::DownloadAvisFileResponse {
            payload: Some(Payload::Chunk(bytes)),
        }),
        Err(e) => {
            tracing::error!(error = ?e, "avis file read failed");
            Err(Status::from(e))
        }
    });
    let stream = futures::stream::once(async move { Ok(header) }).chain(chunks);
    Ok(Response::new(Box::pin(stream)))
}
