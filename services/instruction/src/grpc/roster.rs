//! `mst.instruction.v1.RosterService`: proto → use-case arguments, the roster use cases, views →
//! proto. The roster import's stream (metadata first, then chunks, at most
//! [`MAX_ROSTER_BYTES`]) is read here; everything else is in `app::roster`.

use futures::{Stream, StreamExt};
use mst_kit::ApiError;
use mst_kit::auth::{Principal, Role, principal};
use mst_proto::instruction as pb;
use mst_proto::instruction::import_roster_request::Payload;
use mst_proto::instruction::roster_service_server::RosterService;
use tonic::{Request, Response, Status, Streaming};

use super::timestamp;
use crate::app::roster::{
    GroupePatch, GroupeView, ImportOptions, ImportReport, InstructeurView, LineOutcome,
    MAX_ROSTER_BYTES, NewGroupe,
};
use crate::app::{AppError, Instruction, require};

/// The RosterService handlers.
#[derive(Clone, Debug)]
pub struct RosterApi {
    instruction: Instruction,
}

impl RosterApi {
    /// Handlers over `instruction`.
    pub fn new(instruction: Instruction) -> Self {
        Self { instruction }
    }
}

fn bad(field: &str, message: impl Into<String>) -> Status {
    AppError::BadRequest(vec![(field.to_owned(), message.into())]).into()
}

/// Reads an ImportRoster stream: the metadata, then the file, refused past `limit` bytes as soon
/// as the limit is crossed (RESOURCE_EXHAUSTED).
pub async fn read_import<S>(
    mut stream: S,
    limit: usize,
) -> Result<(pb::ImportRosterMetadata, Vec<u8>), Status>
where
    S: Stream<Item = Result<pb::ImportRosterRequest, Status>> + Unpin,
{
    let metadata = match stream.next().await.transpose()? {
        Some(pb::ImportRosterRequest {
            payload: Some(Payload::Metadata(m)),
        }) => m,
        _ => {
            return Err(bad(
                "metadata",
                "Le premier message doit porter les métadonnées",
            ));
        }
    };
    let mut file = Vec::new();
    while let Some(message) = stream.next().await.transpose()? {
        match message.payload {
            Some(Payload::Chunk(bytes)) => {
                if file.len().saturating_add(bytes.len()) > limit {
                    return Err(ApiError::TooLarge {
                        what: "Le fichier du tableau des instructeurs".into(),
                        limit_bytes: u64::try_from(limit).unwrap_or(u64::MAX),
                    }
                    .into());
                }
                file.extend_from_slice(&bytes);
            }
            Some(Payload::Metadata(_)) => {
                return Err(bad(
                    "metadata",
                    "Les métadonnées ne peuvent être envoyées qu'une fois",
                ));
            }
            None => return Err(bad("payload", "Message vide")),
        }
    }
    Ok((metadata, file))
}

fn groupe_to_pb(g: GroupeView) -> pb::Groupe {
    let GroupeView {
        id,
        label,
        cpam_values,
        departement_codes,
        is_default,
        instructeur_count,
        version,
        created_at,
    } = g;
    pb::Groupe {
        id,
        label,
        cpam_values,
        departement_codes,
        is_default,
        instructeur_count: i32::try_from(instructeur_count).unwrap_or(i32::MAX),
        version,
        created_at: Some(timestamp(created_at)),
    }
}

fn instructeur_to_pb(i: InstructeurView) -> pb::Instructeur {
    let InstructeurView {
        email,
        name,
        groupes,
        added_at,
    } = i;
    pb::Instructeur {
        email,
        name,
        groupes: groupes
            .into_iter()
            .map(|(id, label)| pb::GroupeRef { id, label })
            .collect(),
        added_at: Some(timestamp(added_at)),
    }
}

fn report_to_pb(r: ImportReport) -> pb::ImportRosterResponse {
    let ImportReport {
        lines,
        added,
        updated,
        unchanged,
        rejected,
        dry_run,
    } = r;
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    pb::ImportRosterResponse {
        lines: lines
            .into_iter()
            .map(|l| {
                let (outcome, reason) = match l.outcome {
                    LineOutcome::Added => (pb::RosterLineOutcome::Added, String::new()),
                    LineOutcome::Updated => (pb::RosterLineOutcome::Updated, String::new()),
                    LineOutcome::Unchanged => (pb::RosterLineOutcome::Unchanged, String::new()),
                    LineOutcome::Rejected(why) => (pb::RosterLineOutcome::Rejected, why),
                };
                pb::RosterLineReport {
                    line: count(l.line),
                    email: l.email,
                    groupe: l.groupe,
                    outcome: outcome as i32,
                    reason,
                }
            })
            .collect(),
        added: count(added),
        updated: count(updated),
        unchanged: count(unchanged),
        rejected: count(rejected),
        dry_run,
    }
}

/// The groupe patch named by an update mask; unknown paths are violations.
fn patch_of(
    groupe: Option<pb::Groupe>,
    mask: Option<prost_types::FieldMask>,
) -> Result<GroupePatch, AppError> {
    let pb::Groupe {
        id: _,
        label,
        cpam_values,
        departement_codes,
        is_default,
        instructeur_count: _,
        version: _,
        created_at: _,
    } = groupe.unwrap_or_default();
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(AppError::BadRequest(vec![(
            "update_mask".into(),
            "Indiquez les champs à modifier (label, cpam_values, departement_codes, is_default)"
                .into(),
        )]));
    }
    let mut patch = GroupePatch::default();
    let mut violations = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "label" => patch.label = Some(label.clone()),
            "cpam_values" => patch.cpam_values = Some(cpam_values.clone()),
            "departement_codes" => patch.departement_codes = Some(departement_codes.clone()),
            "is_default" => patch.is_default = Some(is_default),
            other => violations.push((
                format!("update_mask.paths[{i}]"),
                format!(
                    "Champ inconnu : « {other} » (attendu label, cpam_values, departement_codes ou is_default)"
                ),
            )),
        }
    }
    if violations.is_empty() {
        Ok(patch)
    } else {
        Err(AppError::BadRequest(violations))
    }
}

fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    Ok(principal(request)?)
}

#[tonic::async_trait]
impl RosterService for RosterApi {
    async fn import_roster(
        &self,
        request: Request<Streaming<pb::ImportRosterRequest>>,
    ) -> Result<Response<pb::ImportRosterResponse>, Status> {
        let who = caller(&request)?;
        // Refuse before reading up to 5 MB.
        require(&who, Role::Admin)?;
        let (metadata, file) = read_import(request.into_inner(), MAX_ROSTER_BYTES).await?;
        let pb::ImportRosterMetadata {
            file_name,
            dry_run,
            create_missing_groupes,
        } = metadata;
        tracing::info!(file_name = %file_name, bytes = file.len(), dry_run, "roster import");
        let report = self
            .instruction
            .import_roster(
                &who,
                ImportOptions {
                    dry_run,
                    create_missing_groupes,
                },
                &file,
            )
            .await?;
        Ok(Response::new(report_to_pb(report)))
    }

    async fn add_instructeur(
        &self,
        request: Request<pb::AddInstructeurRequest>,
    ) -> Result<Response<pb::AddInstructeurResponse>, Status> {
        let who = caller(&request)?;
        let pb::AddInstructeurRequest {
            email,
            groupe_id,
            name,
        } = request.into_inner();
        let (view, added) = self
            .instruction
            .add_instructeur(&who, &email, &groupe_id, &name)
            .await?;
        Ok(Response::new(pb::AddInstructeurResponse {
            instructeur: Some(instructeur_to_pb(view)),
            added,
        }))
    }

    async fn remove_instructeur(
        &self,
        request: Request<pb::RemoveInstructeurRequest>,
    ) -> Result<Response<pb::RemoveInstructeurResponse>, Status> {
        let who = caller(&request)?;
        let pb::RemoveInstructeurRequest { email, groupe_id } = request.into_inner();
        let view = self
            .instruction
            .remove_instructeur(
                &who,
                &email,
                (!groupe_id.is_empty()).then_some(groupe_id.as_str()),
            )
            .await?;
        Ok(Response::new(pb::RemoveInstructeurResponse {
            instructeur: Some(instructeur_to_pb(view)),
        }))
    }

    async fn list_instructeurs(
        &self,
        request: Request<pb::ListInstructeursRequest>,
    ) -> Result<Response<pb::ListInstructeursResponse>, Status> {
        let who = caller(&request)?;
        let pb::ListInstructeursRequest {
            groupe_id,
            email_prefix,
            page_size,
            page_token,
        } = request.into_inner();
        let (page, next_page_token) = self
            .instruction
            .instructeurs(
                &who,
                (!groupe_id.is_empty()).then_some(groupe_id.as_str()),
                &email_prefix,
                page_size,
                &page_token,
            )
            .await?;
        Ok(Response::new(pb::ListInstructeursResponse {
            instructeurs: page.into_iter().map(instructeur_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_groupe(
        &self,
        request: Request<pb::CreateGroupeRequest>,
    ) -> Result<Response<pb::CreateGroupeResponse>, Status> {
        let who = caller(&request)?;
        let pb::CreateGroupeRequest {
            label,
            cpam_values,
            departement_codes,
            is_default,
        } = request.into_inner();
        let view = self
            .instruction
            .create_groupe(
                &who,
                NewGroupe {
                    label,
                    cpam_values,
                    departement_codes,
                    is_default,
                },
            )
            .await?;
        Ok(Response::new(pb::CreateGroupeResponse {
            groupe: Some(groupe_to_pb(view)),
        }))
    }

    async fn get_groupe(
        &self,
        request: Request<pb::GetGroupeRequest>,
    ) -> Result<Response<pb::GetGroupeResponse>, Status> {
        let who = caller(&request)?;
        let pb::GetGroupeRequest { groupe_id } = request.into_inner();
        let view = self.instruction.groupe(&who, &groupe_id).await?;
        Ok(Response::new(pb::GetGroupeResponse {
            groupe: Some(groupe_to_pb(view)),
        }))
    }

    async fn list_groupes(
        &self,
        request: Request<pb::ListGroupesRequest>,
    ) -> Result<Response<pb::ListGroupesResponse>, Status> {
        let who = caller(&request)?;
        let pb::ListGroupesRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let (page, next_page_token) = self
            .instruction
            .groupes(&who, page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListGroupesResponse {
            groupes: page.into_iter().map(groupe_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_groupe(
        &self,
        request: Request<pb::UpdateGroupeRequest>,
    ) -> Result<Response<pb::UpdateGroupeResponse>, Status> {
        let who = caller(&request)?;
        let pb::UpdateGroupeRequest {
            groupe_id,
            expected_version,
            groupe,
            update_mask,
        } = request.into_inner();
        require(&who, Role::Admin)?;
        let patch = patch_of(groupe, update_mask)?;
        let view = self
            .instruction
            .update_groupe(&who, &groupe_id, expected_version, patch)
            .await?;
        Ok(Response::new(pb::UpdateGroupeResponse {
            groupe: Some(groupe_to_pb(view)),
        }))
    }

    async fn delete_groupe(
        &self,
        request: Request<pb::DeleteGroupeRequest>,
    ) -> Result<Response<pb::DeleteGroupeResponse>, Status> {
        let who = caller(&request)?;
        let pb::DeleteGroupeRequest {
            groupe_id,
            expected_version,
        } = request.into_inner();
        self.instruction
            .delete_groupe(&who, &groupe_id, expected_version)
            .await?;
        Ok(Response::new(pb::DeleteGroupeResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: &[u8]) -> Result<pb::ImportRosterRequest, Status> {
        Ok(pb::ImportRosterRequest {
            payload: Some(Payload::Chunk(bytes.to_vec())),
        })
    }

    fn metadata() -> Result<pb::ImportRosterRequest, Status> {
        Ok(pb::ImportRosterRequest {
            payload: Some(Payload::Metadata(pb::ImportRosterMetadata {
                file_name: "roster.csv".into(),
                dry_run: true,
                create_missing_groupes: false,
            })),
        })
    }

    #[tokio::test]
    async fn an_import_stream_is_metadata_then_chunks() {
        let stream = futures::stream::iter(vec![metadata(), chunk(b"email;"), chunk(b"groupe\n")]);
        let (m, file) = read_import(stream, 100).await.unwrap();
        assert!(m.dry_run);
        assert_eq!(file, b"email;groupe\n");
    }

    #[tokio::test]
    async fn an_import_stream_without_metadata_first_is_invalid() {
        let stream = futures::stream::iter(vec![chunk(b"x")]);
        let err = read_import(stream, 100).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let stream = futures::stream::iter(vec![metadata(), metadata()]);
        let err = read_import(stream, 100).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn an_import_stream_over_the_limit_is_resource_exhausted() {
        let stream =
            futures::stream::iter(vec![metadata(), chunk(&[b'a'; 60]), chunk(&[b'a'; 41])]);
        let err = read_import(stream, 100).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn an_update_mask_names_known_fields_only() {
        let groupe = pb::Groupe {
            label: "L".into(),
            is_default: true,
            ..Default::default()
        };
        let mask = prost_types::FieldMask {
            paths: vec!["label".into(), "is_default".into()],
        };
        let patch = patch_of(Some(groupe.clone()), Some(mask)).unwrap();
        assert_eq!(patch.label.as_deref(), Some("L"));
        assert_eq!(patch.is_default, Some(true));
        assert_eq!(patch.cpam_values, None);
        let mask = prost_types::FieldMask {
            paths: vec!["version".into()],
        };
        assert!(
            matches!(patch_of(Some(groupe.clone()), Some(mask)), Err(AppError::BadRequest(v)) if v[0].0 == "update_mask.paths[0]")
        );
        assert!(patch_of(Some(groupe), None).is_err());
    }
}
