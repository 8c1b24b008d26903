//! The dashboard, list and column-preference RPCs of `mst.instruction.v1.InstructionService`, as
//! handler functions the service implementation delegates to: proto → use-case arguments, the
//! `app::board` use cases, results → proto.

use mst_kit::auth::principal;
use mst_proto::events as ev;
use mst_proto::instruction as pb;
use tonic::{Request, Response, Status};

use super::datetime;
use crate::app::board::{ListRequest, SortKey, Tab};
use crate::app::{AppError, Instruction, procedure_ref, status_to_pb};
use crate::domain::Status as DossierStatus;

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

/// `GetDashboard`.
#[tracing::instrument(skip_all)]
pub async fn get_dashboard(
    i: &Instruction,
    request: Request<pb::GetDashboardRequest>,
) -> Result<Response<pb::GetDashboardResponse>, Status> {
    let who = principal(&request)?;
    let pb::GetDashboardRequest { procedure_id } = request.into_inner();
    let procedure_id = procedure_id.trim();
    let entries = i
        .dashboard(&who, (!procedure_id.is_empty()).then_some(procedure_id))
        .await?;
    Ok(Response::new(pb::GetDashboardResponse {
        entries: entries
            .into_iter()
            .map(|e| pb::DashboardEntry {
                procedure: Some(procedure_ref(&e.procedure)),
                groupe: Some(pb::GroupeRef {
                    id: e.groupe_id,
                    label: e.groupe_label,
                }),
                counters: Some(pb::Counters {
                    a_suivre: e.counts.a_suivre,
                    suivis: e.counts.suivis,
                    traites: e.counts.traites,
                    tous: e.counts.tous,
                    archives: e.counts.archives,
                }),
            })
            .collect(),
    }))
}

/// `ListDossiers`.
#[tracing::instrument(skip_all)]
pub async fn list_dossiers(
    i: &Instruction,
    request: Request<pb::ListDossiersRequest>,
) -> Result<Response<pb::ListDossiersResponse>, Status> {
    let who = principal(&request)?;
    let pb::ListDossiersRequest {
        procedure_id,
        tab,
        filter,
        sort,
        columns,
        page_size,
        page_token,
    } = request.into_inner();
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
    let pb::Sort { field, descending } = sort.unwrap_or(pb::Sort {
        field: pb::SortField::UpdatedAt as i32,
        descending: true,
    });
    let sort = match pb::SortField::try_from(field) {
        Ok(pb::SortField::Unspecified | pb::SortField::UpdatedAt) => SortKey::UpdatedAt,
        Ok(pb::SortField::Number) => SortKey::Number,
        Ok(pb::SortField::DepositedAt) => SortKey::DepositedAt,
        Ok(pb::SortField::Status) => SortKey::Status,
        Ok(pb::SortField::Title) => SortKey::Title,
        Ok(pb::SortField::StructureName) => SortKey::StructureName,
        Err(_) => return Err(bad("sort.field", "Tri inconnu")),
    };
    if procedure_id.trim().is_empty() {
        return Err(bad("procedure_id", "La démarche est obligatoire"));
    }
    let page = i
        .list_dossiers(
            &who,
            ListRequest {
                procedure_id: procedure_id.trim().to_owned(),
                tab,
                statuses,
                followed_by_me,
                deposited_after: deposited_after.as_ref().and_then(datetime),
                deposited_before: deposited_before.as_ref().and_then(datetime),
                groupe_ids,
                text,
                sort,
                descending,
                columns,
                page_size,
                page_token,
            },
        )
        .await?;
    Ok(Response::new(pb::ListDossiersResponse {
        rows: page
            .rows
            .into_iter()
            .map(|r| pb::DossierRow {
                number: r.row.number,
                status: r
                    .row
                    .status
                    .parse::<DossierStatus>()
                    .map(|s| status_to_pb(s) as i32)
                    .unwrap_or_default(),
                version: r.row.version,
                followed_by_me: r.followed_by_me,
                archived: r.row.archived,
                correction_pending: r.row.correction_pending,
                // Not tracked yet (needs read marks per instructeur).
                has_news: false,
                cells: r
                    .cells
                    .into_iter()
                    .map(|(column_id, text)| pb::Cell { column_id, text })
                    .collect(),
            })
            .collect(),
        columns: page
            .columns
            .into_iter()
            .map(|(id, label)| pb::ColumnDefinition { id, label })
            .collect(),
        next_page_token: page.next_page_token,
        total_count: page.total_count,
        total_count_capped: page.total_count_capped,
    }))
}

/// `GetColumnPreferences`.
#[tracing::instrument(skip_all)]
pub async fn get_column_preferences(
    i: &Instruction,
    request: Request<pb::GetColumnPreferencesRequest>,
) -> Result<Response<pb::GetColumnPreferencesResponse>, Status> {
    let who = principal(&request)?;
    let pb::GetColumnPreferencesRequest { procedure_id } = request.into_inner();
    let (available, selected) = i.column_preferences(&who, procedure_id.trim()).await?;
    Ok(Response::new(pb::GetColumnPreferencesResponse {
        available: available
            .into_iter()
            .map(|(id, label)| pb::ColumnDefinition { id, label })
            .collect(),
        selected,
    }))
}

/// `UpdateColumnPreferences`.
#[tracing::instrument(skip_all)]
pub async fn update_column_preferences(
    i: &Instruction,
    request: Request<pb::UpdateColumnPreferencesRequest>,
) -> Result<Response<pb::UpdateColumnPreferencesResponse>, Status> {
    let who = principal(&request)?;
    let pb::UpdateColumnPreferencesRequest {
        procedure_id,
        columns,
    } = request.into_inner();
    let selected = i
        .update_column_preferences(&who, procedure_id.trim(), columns)
        .await?;
    Ok(Response::new(pb::UpdateColumnPreferencesResponse {
        selected,
    }))
}
