//! Handlers of the instructeur workflow RPCs: read a dossier, follow, people involved, the
//! transitions, archives and bulk actions. Each converts the request, calls a use case and maps
//! the error; the service impl delegates to them.

use mst_kit::auth::{Principal, principal};
use mst_proto::events as ev;
use mst_proto::instruction as pb;
use tonic::{Request, Response, Status};

use super::timestamp;
use crate::app::{AppError, DossierView, Instruction, status_to_pb};
use crate::domain::{Command, CorrectionReason, Message, Motivation, TextError};

fn bad(field: &str, message: String) -> Status {
    AppError::BadRequest(vec![(field.to_owned(), message)]).into()
}

fn text_error(field: &str, e: &TextError) -> Status {
    bad(field, e.message_fr())
}

fn who<T>(request: &Request<T>) -> Result<Principal, Status> {
    principal(request).map_err(Status::from)
}

/// The instructeur's view of a dossier as its message.
pub fn dossier_to_pb(view: &DossierView) -> pb::Dossier {
    let row = &view.row;
    let status = row
        .status
        .parse::<crate::domain::Status>()
        .map(status_to_pb)
        .unwrap_or(ev::DossierStatus::Unspecified);
    let pending = row
        .correction_pending
        .then(|| {
            view.traitements
                .iter()
                .rev()
                .find(|t| t.transition == "demander_correction")
        })
        .flatten()
        .map(|t| pb::PendingCorrection {
            traitement_id: t.id.clone(),
            reason: t
                .correction_reason
                .as_deref()
                .and_then(|r| r.parse::<CorrectionReason>().ok())
                .map(|r| match r {
                    CorrectionReason::Incorrect => ev::CorrectionReason::Incorrect,
                    CorrectionReason::Incomplete => ev::CorrectionReason::Incomplete,
                    CorrectionReason::Outdated => ev::CorrectionReason::Outdated,
                    CorrectionReason::Other => ev::CorrectionReason::Other,
                })
                .unwrap_or(ev::CorrectionReason::Unspecified) as i32,
            message: t.motivation.clone(),
            requested_by_email: t.actor_email.clone(),
            requested_at: Some(timestamp(t.at)),
        });
    pb::Dossier {
        number: row.number,
        procedure: Some(ev::ProcedureRef {
            id: row.procedure_id.clone(),
            title: view
                .procedure
                .as_ref()
                .map(|p| p.title.clone())
                .unwrap_or_default(),
            kind: match view.procedure.as_ref().map(|p| p.kind.as_str()) {
                Some("action") => ev::DossierKind::Action,
                Some(_) => ev::DossierKind::Projet,
                None => ev::DossierKind::Unspecified,
            } as i32,
        }),
        status: status as i32,
        version: row.version,
        archived: row.archived,
        groupe: row.groupe_id.clone().map(|id| pb::GroupeRef {
            id,
            label: view.groupe_label.clone().unwrap_or_default(),
        }),
        owner_email: row.owner_email.clone(),
        invitee_emails: view.invitees.iter().map(|i| i.email.clone()).collect(),
        follower_emails: view.followers.iter().map(|f| f.email.clone()).collect(),
        followed_by_me: view.followed_by_me,
        headline: Some(mst_proto::forms::DossierHeadline {
            title: row.title.clone(),
            structure_name: row.structure_name.clone(),
            siret: row.siret.clone(),
            region_code: row.region_code.clone(),
            departement_code: row.departement_code.clone(),
            cpam: row.cpam.clone(),
        }),
        pending_correction: pending,
        content_version: row.content_version,
        traitements: view
            .traitements
            .iter()
            .filter_map(|t| {
                let transition = t.transition.parse::<crate::domain::TransitionKind>().ok()?;
                let parse = |s: &str| {
                    s.parse::<crate::domain::Status>()
                        .map(status_to_pb)
                        .unwrap_or(ev::DossierStatus::Unspecified)
                };
                Some(pb::Traitement {
                    id: t.id.clone(),
                    from_status: parse(&t.from_status) as i32,
                    to_status: parse(&t.to_status) as i32,
                    transition: crate::app::transition_to_pb(transition) as i32,
                    actor: Some(ev::Actor {
                        email: t.actor_email.clone(),
                        role: match t.actor_role.as_str() {
                            "instructeur" => ev::Role::Instructeur,
                            "promoteur" => ev::Role::Promoteur,
                            "system" => ev::Role::System,
                            "admin" => ev::Role::Admin,
                            _ => ev::Role::Unspecified,
                        } as i32,
                    }),
                    motivation: t.motivation.clone(),
                    justificatif: None,
                    correction_reason: ev::CorrectionReason::Unspecified as i32,
                    at: Some(timestamp(t.at)),
                    status_version: t.status_version,
                    content_version: t.content_version,
                })
            })
            .collect(),
        deposited_at: row.deposited_at.map(timestamp),
        en_instruction_at: row.en_instruction_at.map(timestamp),
        decided_at: row.decided_at.map(timestamp),
        archived_at: row.archived_at.map(timestamp),
        updated_at: Some(timestamp(row.updated_at)),
        avis_count: 0,
    }
}

/// `GetDossier`.
pub async fn get_dossier(
    i: &Instruction,
    request: Request<pb::GetDossierRequest>,
) -> Result<Response<pb::GetDossierResponse>, Status> {
    let who = who(&request)?;
    let pb::GetDossierRequest { number } = request.into_inner();
    let view = i.dossier(&who, number).await?;
    Ok(Response::new(pb::GetDossierResponse {
        dossier: Some(dossier_to_pb(&view)),
    }))
}

/// `FollowDossier` / `UnfollowDossier`.
pub async fn set_follow(
    i: &Instruction,
    who_: Principal,
    number: i64,
    follow: bool,
) -> Result<Vec<String>, Status> {
    let view = i.set_follow(&who_, number, follow).await?;
    Ok(view.followers.iter().map(|f| f.email.clone()).collect())
}

/// `FollowDossier`.
pub async fn follow(
    i: &Instruction,
    request: Request<pb::FollowDossierRequest>,
) -> Result<Response<pb::FollowDossierResponse>, Status> {
    let w = who(&request)?;
    let pb::FollowDossierRequest { number } = request.into_inner();
    Ok(Response::new(pb::FollowDossierResponse {
        follower_emails: set_follow(i, w, number, true).await?,
    }))
}

/// `UnfollowDossier`.
pub async fn unfollow(
    i: &Instruction,
    request: Request<pb::UnfollowDossierRequest>,
) -> Result<Response<pb::UnfollowDossierResponse>, Status> {
    let w = who(&request)?;
    let pb::UnfollowDossierRequest { number } = request.into_inner();
    Ok(Response::new(pb::UnfollowDossierResponse {
        follower_emails: set_follow(i, w, number, false).await?,
    }))
}

/// Runs `command` and answers the dossier.
async fn run(
    i: &Instruction,
    who: Principal,
    number: i64,
    expected_version: i64,
    command: Command,
) -> Result<pb::Dossier, Status> {
    let view = i
        .transition(&who, number, expected_version, command)
        .await?;
    Ok(dossier_to_pb(&view))
}

fn motivation(raw: &str) -> Result<Motivation, Status> {
    Motivation::parse(raw).map_err(|e| text_error("motivation", &e))
}

fn optional_motivation(raw: &str) -> Result<Option<Motivation>, Status> {
    Motivation::parse_optional(raw).map_err(|e| text_error("motivation", &e))
}

fn optional_message(raw: &str) -> Result<Option<Message>, Status> {
    Message::parse_optional(raw).map_err(|e| text_error("message", &e))
}

/// A decision's justificatif, from the upload id the instructeur got (none when empty).
async fn justificatif(
    i: &Instruction,
    number: i64,
    upload_id: &str,
) -> Result<Option<crate::domain::FileRef>, Status> {
    if upload_id.is_empty() {
        return Ok(None);
    }
    Ok(Some(i.justificatif_for_decision(number, upload_id).await?))
}

/// `PasserEnInstruction`.
pub async fn passer_en_instruction(
    i: &Instruction,
    request: Request<pb::PasserEnInstructionRequest>,
) -> Result<Response<pb::PasserEnInstructionResponse>, Status> {
    let w = who(&request)?;
    let pb::PasserEnInstructionRequest {
        number,
        expected_version,
    } = request.into_inner();
    let dossier = run(i, w, number, expected_version, Command::PasserEnInstruction).await?;
    Ok(Response::new(pb::PasserEnInstructionResponse {
        dossier: Some(dossier),
    }))
}

/// `RepasserEnConstruction`.
pub async fn repasser_en_construction(
    i: &Instruction,
    request: Request<pb::RepasserEnConstructionRequest>,
) -> Result<Response<pb::RepasserEnConstructionResponse>, Status> {
    let w = who(&request)?;
    let pb::RepasserEnConstructionRequest {
        number,
        expected_version,
        message,
    } = request.into_inner();
    let command = Command::RepasserEnConstruction {
        message: optional_message(&message)?,
    };
    let dossier = run(i, w, number, expected_version, command).await?;
    Ok(Response::new(pb::RepasserEnConstructionResponse {
        dossier: Some(dossier),
    }))
}

/// `DemanderCorrection`.
pub async fn demander_correction(
    i: &Instruction,
    request: Request<pb::DemanderCorrectionRequest>,
) -> Result<Response<pb::DemanderCorrectionResponse>, Status> {
    let w = who(&request)?;
    let pb::DemanderCorrectionRequest {
        number,
        expected_version,
        message,
        reason,
    } = request.into_inner();
    let message = Message::parse(&message).map_err(|e| text_error("message", &e))?;
    let reason = match ev::CorrectionReason::try_from(reason) {
        Ok(ev::CorrectionReason::Incorrect) => CorrectionReason::Incorrect,
        Ok(ev::CorrectionReason::Incomplete) => CorrectionReason::Incomplete,
        Ok(ev::CorrectionReason::Outdated) => CorrectionReason::Outdated,
        Ok(ev::CorrectionReason::Other) => CorrectionReason::Other,
        _ => {
            return Err(bad(
                "reason",
                "Indiquez le motif de la demande de correction".into(),
            ));
        }
    };
    let dossier = run(
        i,
        w,
        number,
        expected_version,
        Command::DemanderCorrection { message, reason },
    )
    .await?;
    Ok(Response::new(pb::DemanderCorrectionResponse {
        dossier: Some(dossier),
    }))
}

/// `Accepter`.
pub async fn accepter(
    i: &Instruction,
    request: Request<pb::AccepterRequest>,
) -> Result<Response<pb::AccepterResponse>, Status> {
    let w = who(&request)?;
    let pb::AccepterRequest {
        number,
        expected_version,
        motivation: m,
        justificatif_upload_id,
    } = request.into_inner();
    let command = Command::Accepter {
        motivation: optional_motivation(&m)?,
        justificatif: justificatif(i, number, &justificatif_upload_id).await?,
    };
    let dossier = run(i, w, number, expected_version, command).await?;
    Ok(Response::new(pb::AccepterResponse {
        dossier: Some(dossier),
    }))
}

/// `Refuser`.
pub async fn refuser(
    i: &Instruction,
    request: Request<pb::RefuserRequest>,
) -> Result<Response<pb::RefuserResponse>, Status> {
    let w = who(&request)?;
    let pb::RefuserRequest {
        number,
        expected_version,
        motivation: m,
        justificatif_upload_id,
    } = request.into_inner();
    let command = Command::Refuser {
        motivation: motivation(&m)?,
        justificatif: justificatif(i, number, &justificatif_upload_id).await?,
    };
    let dossier = run(i, w, number, expected_version, command).await?;
    Ok(Response::new(pb::RefuserResponse {
        dossier: Some(dossier),
    }))
}

/// `ClasserSansSuite`.
pub async fn classer_sans_suite(
    i: &Instruction,
    request: Request<pb::ClasserSansSuiteRequest>,
) -> Result<Response<pb::ClasserSansSuiteResponse>, Status> {
    let w = who(&request)?;
    let pb::ClasserSansSuiteRequest {
        number,
        expected_version,
        motivation: m,
        justificatif_upload_id,
    } = request.into_inner();
    let command = Command::ClasserSansSuite {
        motivation: motivation(&m)?,
        justificatif: justificatif(i, number, &justificatif_upload_id).await?,
    };
    let dossier = run(i, w, number, expected_version, command).await?;
    Ok(Response::new(pb::ClasserSansSuiteResponse {
        dossier: Some(dossier),
    }))
}

/// `RepasserEnInstruction`.
pub async fn repasser_en_instruction(
    i: &Instruction,
    request: Request<pb::RepasserEnInstructionRequest>,
) -> Result<Response<pb::RepasserEnInstructionResponse>, Status> {
    let w = who(&request)?;
    let pb::RepasserEnInstructionRequest {
        number,
        expected_version,
        message,
    } = request.into_inner();
    let command = Command::RepasserEnInstruction {
        message: optional_message(&message)?,
    };
    let dossier = run(i, w, number, expected_version, command).await?;
    Ok(Response::new(pb::RepasserEnInstructionResponse {
        dossier: Some(dossier),
    }))
}

/// `ArchiveDossier`.
pub async fn archive(
    i: &Instruction,
    request: Request<pb::ArchiveDossierRequest>,
) -> Result<Response<pb::ArchiveDossierResponse>, Status> {
    let w = who(&request)?;
    let pb::ArchiveDossierRequest {
        number,
        expected_version,
    } = request.into_inner();
    let dossier = run(i, w, number, expected_version, Command::Archive).await?;
    Ok(Response::new(pb::ArchiveDossierResponse {
        dossier: Some(dossier),
    }))
}

/// `UnarchiveDossier`.
pub async fn unarchive(
    i: &Instruction,
    request: Request<pb::UnarchiveDossierRequest>,
) -> Result<Response<pb::UnarchiveDossierResponse>, Status> {
    let w = who(&request)?;
    let pb::UnarchiveDossierRequest {
        number,
        expected_version,
    } = request.into_inner();
    let dossier = run(i, w, number, expected_version, Command::Unarchive).await?;
    Ok(Response::new(pb::UnarchiveDossierResponse {
        dossier: Some(dossier),
    }))
}

/// Most dossiers one bulk action may target.
pub const MAX_BULK: usize = 1000;

/// `BulkAction`: the same action on up to 1 000 dossiers, each with its own result.
pub async fn bulk(
    i: &Instruction,
    request: Request<pb::BulkActionRequest>,
) -> Result<Response<pb::BulkActionResponse>, Status> {
    let w = who(&request)?;
    // Role: declared instructeur, checked first so the per-dossier results never answer a
    // caller who may act on no dossier at all.
    i.gate(&w, false).await?;
    let pb::BulkActionRequest {
        action,
        targets,
        motivation: m,
    } = request.into_inner();
    if targets.is_empty() || targets.len() > MAX_BULK {
        return Err(bad(
            "targets",
            format!("Indiquez entre 1 et {MAX_BULK} dossiers"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, t) in targets.iter().enumerate() {
        if !seen.insert(t.number) {
            return Err(bad(
                &format!("targets[{k}].number"),
                format!("Dossier n° {} en double", t.number),
            ));
        }
    }
    let kind = pb::BulkActionKind::try_from(action).unwrap_or(pb::BulkActionKind::Unspecified);
    let command = |m: &str| -> Result<Option<Command>, Status> {
        Ok(match kind {
            pb::BulkActionKind::Follow => None,
            pb::BulkActionKind::PasserEnInstruction => Some(Command::PasserEnInstruction),
            pb::BulkActionKind::Accepter => Some(Command::Accepter {
                motivation: optional_motivation(m)?,
                justificatif: None,
            }),
            pb::BulkActionKind::Refuser => Some(Command::Refuser {
                motivation: motivation(m)?,
                justificatif: None,
            }),
            pb::BulkActionKind::ClasserSansSuite => Some(Command::ClasserSansSuite {
                motivation: motivation(m)?,
                justificatif: None,
            }),
            pb::BulkActionKind::Archiver => Some(Command::Archive),
            pb::BulkActionKind::Unspecified => return Err(bad("action", "Action inconnue".into())),
        })
    };
    let planned = command(&m)?;
    let mut results = Vec::with_capacity(targets.len());
    let (mut succeeded, mut failed) = (0, 0);
    for t in targets {
        let outcome = match &planned {
            None => i.set_follow(&w, t.number, true).await,
            Some(c) => {
                let expected = match t.expected_version {
                    Some(v) => v,
                    None => match i.dossier(&w, t.number).await {
                        Ok(v) => v.row.version,
                        Err(e) => {
                            failed += 1;
                            results.push(item(t.number, Err(e)));
                            continue;
                        }
                    },
                };
                i.transition(&w, t.number, expected, c.clone()).await
            }
        };
        if outcome.is_ok() {
            succeeded += 1;
        } else {
            failed += 1;
        }
        results.push(item(t.number, outcome));
    }
    Ok(Response::new(pb::BulkActionResponse {
        results,
        succeeded,
        failed,
    }))
}

fn item(number: i64, outcome: Result<DossierView, AppError>) -> pb::BulkItemResult {
    match outcome {
        Ok(view) => pb::BulkItemResult {
            number,
            code: 0,
            message: String::new(),
            status: view
                .row
                .status
                .parse::<crate::domain::Status>()
                .map(status_to_pb)
                .unwrap_or(ev::DossierStatus::Unspecified) as i32,
            version: view.row.version,
        },
        Err(e) => {
            let status = Status::from(e);
            pb::BulkItemResult {
                number,
                code: status.code() as i32,
                message: status.message().to_owned(),
                status: ev::DossierStatus::Unspecified as i32,
                version: 0,
            }
        }
    }
}

/// `GetStatistics`.
pub async fn statistics(
    i: &Instruction,
    request: Request<pb::GetStatisticsRequest>,
) -> Result<Response<pb::GetStatisticsResponse>, Status> {
    let w = who(&request)?;
    let pb::GetStatisticsRequest {
        procedure_id,
        groupe_id,
    } = request.into_inner();
    let groupe = (!groupe_id.is_empty()).then_some(groupe_id.as_str());
    let s = i.statistics(&w, &procedure_id, groupe).await?;
    Ok(Response::new(pb::GetStatisticsResponse {
        by_status: s
            .by_status
            .iter()
            .map(|(status, count)| pb::StatusCount {
                status: status_to_pb(*status) as i32,
                count: *count,
            })
            .collect(),
        deposits_per_week: s
            .deposits_per_week
            .iter()
            .map(|(week, count)| pb::WeeklyCount {
                week_start: week.format("%Y-%m-%d").to_string(),
                count: *count,
            })
            .collect(),
        median_deposit_to_decision: s.median_deposit_to_decision.map(|d| prost_types::Duration {
            seconds: d.num_seconds(),
            nanos: 0,
        }),
        total_deposited: s.total_deposited,
        total_decided: s.total_decided,
        computed_at: Some(timestamp(s.computed_at)),
    }))
}

/// `ListPeopleInvolved`.
pub async fn people_involved(
    i: &Instruction,
    request: Request<pb::ListPeopleInvolvedRequest>,
) -> Result<Response<pb::ListPeopleInvolvedResponse>, Status> {
    use crate::app::workflow::Involvement;
    let w = who(&request)?;
    let pb::ListPeopleInvolvedRequest {
        number,
        include_former,
    } = request.into_inner();
    let people = i.people_involved(&w, number, include_former).await?;
    Ok(Response::new(pb::ListPeopleInvolvedResponse {
        people: people
            .into_iter()
            .map(|p| pb::PersonInvolved {
                email: p.email,
                involvement: match p.involvement {
                    Involvement::Owner => pb::Involvement::Owner,
                    Involvement::Invitee => pb::Involvement::Invitee,
                    Involvement::Follower => pb::Involvement::Follower,
                    Involvement::Instructeur => pb::Involvement::Instructeur,
                    Involvement::Expert => pb::Involvement::Expert,
                } as i32,
                since: Some(timestamp(p.since)),
                until: p.until.map(timestamp),
            })
            .collect(),
    }))
}

/// `UploadJustificatif`: metadata, then chunks.
pub async fn upload_justificatif(
    i: &Instruction,
    files: &mst_kit::files::FileStore,
    request: Request<tonic::Streaming<pb::UploadJustificatifRequest>>,
) -> Result<Response<pb::UploadJustificatifResponse>, Status> {
    use futures::StreamExt as _;
    use pb::upload_justificatif_request::Payload;
    let w = who(&request)?;
    let mut stream = request.into_inner();
    let Some(Payload::Metadata(meta)) = stream.message().await?.and_then(|m| m.payload) else {
        return Err(bad(
            "metadata",
            "Les métadonnées du justificatif doivent être envoyées en premier".into(),
        ));
    };
    let pb::UploadJustificatifMetadata {
        number,
        file_name,
        content_type,
        size_bytes,
    } = meta;
    let size = u64::try_from(size_bytes).unwrap_or(0);
    let chunks = stream.map(|m| match m {
        Ok(pb::UploadJustificatifRequest {
            payload: Some(Payload::Chunk(bytes)),
        }) => Ok(bytes::Bytes::from(bytes)),
        Ok(_) => Err("métadonnées répétées au milieu du fichier".to_owned()),
        Err(s) => Err(s.message().to_owned()),
    });
    let row = i
        .upload_justificatif(
            &w,
            files,
            number,
            &file_name,
            &content_type,
            size,
            Box::pin(chunks),
        )
        .await?;
    Ok(Response::new(pb::UploadJustificatifResponse {
        upload_id: row.upload_id.clone(),
        file: Some(ev::FileRef {
            id: row.file_id,
            file_name: row.file_name,
            content_type: row.content_type,
            size_bytes: row.size,
            sha256: row.sha256,
        }),
        expires_at: Some(timestamp(row.expires_at)),
    }))
}

/// The stream of a download: a header, then chunks of at most 64 KiB.
pub type DownloadJustificatifStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::DownloadJustificatifResponse, Status>> + Send>,
>;

/// `DownloadJustificatif`.
pub async fn download_justificatif(
    i: &Instruction,
    files: &mst_kit::files::FileStore,
    request: Request<pb::DownloadJustificatifRequest>,
) -> Result<Response<DownloadJustificatifStream>, Status> {
    use futures::StreamExt as _;
    use pb::download_justificatif_response::Payload;
    let w = who(&request)?;
    let pb::DownloadJustificatifRequest { number, file_id } = request.into_inner();
    let (row, content) = i.justificatif_file(&w, files, number, &file_id).await?;
    let header = pb::DownloadJustificatifResponse {
        payload: Some(Payload::Header(ev::DownloadHeader {
            file_name: row.file_name,
            content_type: row.content_type,
            size_bytes: Some(row.size),
        })),
    };
    let chunks = content.flat_map(|part| {
        let items: Vec<Result<pb::DownloadJustificatifResponse, Status>> = match part {
            Ok(bytes) => bytes
                .chunks(64 * 1024)
                .map(|c| {
                    Ok(pb::DownloadJustificatifResponse {
                        payload: Some(Payload::Chunk(c.to_vec())),
                    })
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "reading a justificatif failed");
                vec![Err(Status::internal("lecture du fichier impossible"))]
            }
        };
        futures::stream::iter(items)
    });
    Ok(Response::new(Box::pin(
        futures::stream::once(async move { Ok(header) }).chain(chunks),
    )))
}
