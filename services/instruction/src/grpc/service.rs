//! `InstructionService`: every RPC delegates to the handler of its area (workflow, board,
//! annotations and avis, export).

use mst_kit::files::FileStore;
use mst_proto::instruction as pb;
use mst_proto::instruction::instruction_service_server::InstructionService;
use tonic::{Request, Response, Status, Streaming};

use super::{avis, board, export, workflow};
use crate::app::Instruction;
use crate::app::avis::AvisFiles;

/// The instructeurs' API.
#[derive(Clone, Debug)]
pub struct Api {
    instruction: Instruction,
    justificatifs: FileStore,
    avis_files: std::sync::Arc<AvisFiles>,
}

impl Api {
    /// Handlers over `instruction`, storing justificatifs and avis files in `files`.
    pub fn new(instruction: Instruction, files: FileStore) -> Self {
        Self {
            instruction,
            avis_files: std::sync::Arc::new(AvisFiles::new(files.clone())),
            justificatifs: files,
        }
    }
}

#[tonic::async_trait]
impl InstructionService for Api {
    async fn get_dashboard(
        &self,
        r: Request<pb::GetDashboardRequest>,
    ) -> Result<Response<pb::GetDashboardResponse>, Status> {
        board::get_dashboard(&self.instruction, r).await
    }

    async fn list_dossiers(
        &self,
        r: Request<pb::ListDossiersRequest>,
    ) -> Result<Response<pb::ListDossiersResponse>, Status> {
        board::list_dossiers(&self.instruction, r).await
    }

    async fn get_dossier(
        &self,
        r: Request<pb::GetDossierRequest>,
    ) -> Result<Response<pb::GetDossierResponse>, Status> {
        workflow::get_dossier(&self.instruction, r).await
    }

    async fn get_column_preferences(
        &self,
        r: Request<pb::GetColumnPreferencesRequest>,
    ) -> Result<Response<pb::GetColumnPreferencesResponse>, Status> {
        board::get_column_preferences(&self.instruction, r).await
    }

    async fn update_column_preferences(
        &self,
        r: Request<pb::UpdateColumnPreferencesRequest>,
    ) -> Result<Response<pb::UpdateColumnPreferencesResponse>, Status> {
        board::update_column_preferences(&self.instruction, r).await
    }

    async fn follow_dossier(
        &self,
        r: Request<pb::FollowDossierRequest>,
    ) -> Result<Response<pb::FollowDossierResponse>, Status> {
        workflow::follow(&self.instruction, r).await
    }

    async fn unfollow_dossier(
        &self,
        r: Request<pb::UnfollowDossierRequest>,
    ) -> Result<Response<pb::UnfollowDossierResponse>, Status> {
        workflow::unfollow(&self.instruction, r).await
    }

    async fn list_people_involved(
        &self,
        r: Request<pb::ListPeopleInvolvedRequest>,
    ) -> Result<Response<pb::ListPeopleInvolvedResponse>, Status> {
        workflow::people_involved(&self.instruction, r).await
    }

    async fn upload_justificatif(
        &self,
        r: Request<Streaming<pb::UploadJustificatifRequest>>,
    ) -> Result<Response<pb::UploadJustificatifResponse>, Status> {
        workflow::upload_justificatif(&self.instruction, &self.justificatifs, r).await
    }

    type DownloadJustificatifStream = workflow::DownloadJustificatifStream;

    async fn download_justificatif(
        &self,
        r: Request<pb::DownloadJustificatifRequest>,
    ) -> Result<Response<Self::DownloadJustificatifStream>, Status> {
        workflow::download_justificatif(&self.instruction, &self.justificatifs, r).await
    }

    async fn passer_en_instruction(
        &self,
        r: Request<pb::PasserEnInstructionRequest>,
    ) -> Result<Response<pb::PasserEnInstructionResponse>, Status> {
        workflow::passer_en_instruction(&self.instruction, r).await
    }

    async fn repasser_en_construction(
        &self,
        r: Request<pb::RepasserEnConstructionRequest>,
    ) -> Result<Response<pb::RepasserEnConstructionResponse>, Status> {
        workflow::repasser_en_construction(&self.instruction, r).await
    }

    async fn demander_correction(
        &self,
        r: Request<pb::DemanderCorrectionRequest>,
    ) -> Result<Response<pb::DemanderCorrectionResponse>, Status> {
        workflow::demander_correction(&self.instruction, r).await
    }

    async fn accepter(
        &self,
        r: Request<pb::AccepterRequest>,
    ) -> Result<Response<pb::AccepterResponse>, Status> {
        workflow::accepter(&self.instruction, r).await
    }

    async fn refuser(
        &self,
        r: Request<pb::RefuserRequest>,
    ) -> Result<Response<pb::RefuserResponse>, Status> {
        workflow::refuser(&self.instruction, r).await
    }

    async fn classer_sans_suite(
        &self,
        r: Request<pb::ClasserSansSuiteRequest>,
    ) -> Result<Response<pb::ClasserSansSuiteResponse>, Status> {
        workflow::classer_sans_suite(&self.instruction, r).await
    }

    async fn repasser_en_instruction(
        &self,
        r: Request<pb::RepasserEnInstructionRequest>,
    ) -> Result<Response<pb::RepasserEnInstructionResponse>, Status> {
        workflow::repasser_en_instruction(&self.instruction, r).await
    }

    async fn archive_dossier(
        &self,
        r: Request<pb::ArchiveDossierRequest>,
    ) -> Result<Response<pb::ArchiveDossierResponse>, Status> {
        workflow::archive(&self.instruction, r).await
    }

    async fn unarchive_dossier(
        &self,
        r: Request<pb::UnarchiveDossierRequest>,
    ) -> Result<Response<pb::UnarchiveDossierResponse>, Status> {
        workflow::unarchive(&self.instruction, r).await
    }

    async fn bulk_action(
        &self,
        r: Request<pb::BulkActionRequest>,
    ) -> Result<Response<pb::BulkActionResponse>, Status> {
        workflow::bulk(&self.instruction, r).await
    }

    async fn get_annotation_definitions(
        &self,
        r: Request<pb::GetAnnotationDefinitionsRequest>,
    ) -> Result<Response<pb::GetAnnotationDefinitionsResponse>, Status> {
        avis::get_annotation_definitions(&self.instruction, r).await
    }

    async fn update_annotation_definitions(
        &self,
        r: Request<pb::UpdateAnnotationDefinitionsRequest>,
    ) -> Result<Response<pb::UpdateAnnotationDefinitionsResponse>, Status> {
        avis::update_annotation_definitions(&self.instruction, r).await
    }

    async fn get_annotations(
        &self,
        r: Request<pb::GetAnnotationsRequest>,
    ) -> Result<Response<pb::GetAnnotationsResponse>, Status> {
        avis::get_annotations(&self.instruction, r).await
    }

    async fn update_annotations(
        &self,
        r: Request<pb::UpdateAnnotationsRequest>,
    ) -> Result<Response<pb::UpdateAnnotationsResponse>, Status> {
        avis::update_annotations(&self.instruction, r).await
    }

    async fn request_avis(
        &self,
        r: Request<pb::RequestAvisRequest>,
    ) -> Result<Response<pb::RequestAvisResponse>, Status> {
        avis::request_avis(&self.instruction, r).await
    }

    async fn give_avis(
        &self,
        r: Request<Streaming<pb::GiveAvisRequest>>,
    ) -> Result<Response<pb::GiveAvisResponse>, Status> {
        avis::give_avis(&self.instruction, &self.avis_files, r).await
    }

    async fn revoke_avis(
        &self,
        r: Request<pb::RevokeAvisRequest>,
    ) -> Result<Response<pb::RevokeAvisResponse>, Status> {
        avis::revoke_avis(&self.instruction, r).await
    }

    async fn list_avis(
        &self,
        r: Request<pb::ListAvisRequest>,
    ) -> Result<Response<pb::ListAvisResponse>, Status> {
        avis::list_avis(&self.instruction, r).await
    }

    async fn list_my_avis_requests(
        &self,
        r: Request<pb::ListMyAvisRequestsRequest>,
    ) -> Result<Response<pb::ListMyAvisRequestsResponse>, Status> {
        avis::list_my_avis_requests(&self.instruction, r).await
    }

    type DownloadAvisFileStream = avis::DownloadAvisFileStream;

    async fn download_avis_file(
        &self,
        r: Request<pb::DownloadAvisFileRequest>,
    ) -> Result<Response<Self::DownloadAvisFileStream>, Status> {
        avis::download_avis_file(&self.instruction, &self.avis_files, r).await
    }

    type ExportDossiersStream = export::ExportStream;

    async fn export_dossiers(
        &self,
        r: Request<pb::ExportDossiersRequest>,
    ) -> Result<Response<Self::ExportDossiersStream>, Status> {
        export::export_dossiers(&self.instruction, r).await
    }

    async fn get_statistics(
        &self,
        r: Request<pb::GetStatisticsRequest>,
    ) -> Result<Response<pb::GetStatisticsResponse>, Status> {
        workflow::statistics(&self.instruction, r).await
    }
}
