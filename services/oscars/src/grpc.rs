//! The gRPC face of the oscars service: `OscarsService` (ambassadeurs and admins, bearer token)
//! and `OscarsPublicService` (anonymous). Requests are destructured field by field, so a new
//! proto field fails the build until it is handled; errors go through `mst_kit::ApiError`.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use mst_kit::ApiError;
use mst_kit::auth::principal;
use mst_proto::events as ev;
use mst_proto::oscars as pb;
use mst_proto::oscars::oscars_public_service_server::OscarsPublicService;
use mst_proto::oscars::oscars_service_server::OscarsService;
use tonic::{Request, Response, Status};

use crate::app::Oscars;
use crate::ratelimit::RateLimiter;

/// `OscarsService` handlers.
#[derive(Clone, Debug)]
pub struct Api {
    oscars: Oscars,
}

impl Api {
    /// Handlers over `oscars`.
    pub fn new(oscars: Oscars) -> Self {
        Self { oscars }
    }
}

/// ALREADY_EXISTS for a SIRET already in the base, naming its promoteur in
/// `ErrorInfo.metadata.promoteur_id` (and `ResourceInfo`); other errors as usual.
fn siret_taken(e: ApiError) -> Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    match e {
        ApiError::AlreadyExists {
            resource: "promoteur",
            id,
        } => {
            let mut details = ErrorDetails::with_error_info(
                "SIRET_TAKEN",
                mst_kit::error::ERROR_DOMAIN,
                std::collections::HashMap::from([("promoteur_id".to_owned(), id.clone())]),
            );
            details.set_resource_info("promoteur", id.clone(), "", "already exists");
            Status::with_error_details(
                tonic::Code::AlreadyExists,
                format!("Ce SIRET est déjà celui du promoteur {id}"),
                details,
            )
        }
        other => other.into(),
    }
}

fn required_id(field: &str, id: &str) -> Result<(), Status> {
    if id.trim().is_empty() {
        return Err(ApiError::invalid(field, "Identifiant manquant").into());
    }
    Ok(())
}

#[tonic::async_trait]
impl OscarsService for Api {
    #[tracing::instrument(skip_all)]
    async fn list_work_queue(
        &self,
        request: Request<pb::ListWorkQueueRequest>,
    ) -> Result<Response<pb::ListWorkQueueResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListWorkQueueRequest {
            filter,
            page_size,
            page_token,
        } = request.into_inner();
        let page = self
            .oscars
            .work_queue(&who, filter.unwrap_or_default(), page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListWorkQueueResponse {
            fiches: page.items,
            next_page_token: page.next,
            total_count: page.total,
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn get_fiche(
        &self,
        request: Request<pb::GetFicheRequest>,
    ) -> Result<Response<pb::GetFicheResponse>, Status> {
        let who = principal(&request)?;
        let pb::GetFicheRequest { fiche_id } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let v = self.oscars.get_fiche(&who, &fiche_id).await?;
        Ok(Response::new(pb::GetFicheResponse {
            fiche: Some(v.fiche),
            promoteur: v.promoteur,
            correction_count: v.correction_count,
            missing_for_publication: v.missing,
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn suggest_projet(
        &self,
        request: Request<pb::SuggestProjetRequest>,
    ) -> Result<Response<pb::SuggestProjetResponse>, Status> {
        let who = principal(&request)?;
        let pb::SuggestProjetRequest { fiche_id, limit } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let suggestions = self.oscars.suggest_projet(&who, &fiche_id, limit).await?;
        Ok(Response::new(pb::SuggestProjetResponse { suggestions }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn chain_to_projet(
        &self,
        request: Request<pb::ChainToProjetRequest>,
    ) -> Result<Response<pb::ChainToProjetResponse>, Status> {
        let who = principal(&request)?;
        let pb::ChainToProjetRequest {
            fiche_id,
            expected_version,
            projet_fiche_id,
        } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let fiche = self
            .oscars
            .chain_to_projet(&who, &fiche_id, expected_version, &projet_fiche_id)
            .await?;
        Ok(Response::new(pb::ChainToProjetResponse {
            fiche: Some(fiche),
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn suggest_previous_year(
        &self,
        request: Request<pb::SuggestPreviousYearRequest>,
    ) -> Result<Response<pb::SuggestPreviousYearResponse>, Status> {
        let who = principal(&request)?;
        let pb::SuggestPreviousYearRequest { fiche_id, limit } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let suggestions = self
            .oscars
            .suggest_previous_year(&who, &fiche_id, limit)
            .await?;
        Ok(Response::new(pb::SuggestPreviousYearResponse {
            suggestions,
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn chain_to_previous(
        &self,
        request: Request<pb::ChainToPreviousRequest>,
    ) -> Result<Response<pb::ChainToPreviousResponse>, Status> {
        let who = principal(&request)?;
        let pb::ChainToPreviousRequest {
            fiche_id,
            expected_version,
            previous_fiche_id,
        } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let fiche = self
            .oscars
            .chain_to_previous(&who, &fiche_id, expected_version, &previous_fiche_id)
            .await?;
        Ok(Response::new(pb::ChainToPreviousResponse {
            fiche: Some(fiche),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn find_promoteurs(
        &self,
        request: Request<pb::FindPromoteursRequest>,
    ) -> Result<Response<pb::FindPromoteursResponse>, Status> {
        let who = principal(&request)?;
        let matches = self
            .oscars
            .find_promoteurs(&who, request.into_inner())
            .await?;
        Ok(Response::new(pb::FindPromoteursResponse { matches }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_promoteur(
        &self,
        request: Request<pb::GetPromoteurRequest>,
    ) -> Result<Response<pb::GetPromoteurResponse>, Status> {
        let who = principal(&request)?;
        let pb::GetPromoteurRequest { promoteur_id } = request.into_inner();
        required_id("promoteur_id", &promoteur_id)?;
        let promoteur = self.oscars.get_promoteur(&who, &promoteur_id).await?;
        Ok(Response::new(pb::GetPromoteurResponse {
            promoteur: Some(promoteur),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_promoteur(
        &self,
        request: Request<pb::CreatePromoteurRequest>,
    ) -> Result<Response<pb::CreatePromoteurResponse>, Status> {
        let who = principal(&request)?;
        let pb::CreatePromoteurRequest {
            promoteur,
            request_id,
        } = request.into_inner();
        let Some(promoteur) = promoteur else {
            return Err(ApiError::invalid("promoteur", "Promoteur manquant").into());
        };
        let promoteur = self
            .oscars
            .create_promoteur(&who, promoteur, &request_id)
            .await
            .map_err(siret_taken)?;
        Ok(Response::new(pb::CreatePromoteurResponse {
            promoteur: Some(promoteur),
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn attach_promoteur(
        &self,
        request: Request<pb::AttachPromoteurRequest>,
    ) -> Result<Response<pb::AttachPromoteurResponse>, Status> {
        let who = principal(&request)?;
        let pb::AttachPromoteurRequest {
            fiche_id,
            expected_version,
            promoteur_id,
        } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        required_id("promoteur_id", &promoteur_id)?;
        let fiche = self
            .oscars
            .attach_promoteur(&who, &fiche_id, expected_version, &promoteur_id)
            .await?;
        Ok(Response::new(pb::AttachPromoteurResponse {
            fiche: Some(fiche),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn merge_promoteurs(
        &self,
        request: Request<pb::MergePromoteursRequest>,
    ) -> Result<Response<pb::MergePromoteursResponse>, Status> {
        let who = principal(&request)?;
        let pb::MergePromoteursRequest { survivor, merged } = request.into_inner();
        let Some(survivor) = survivor.filter(|s| !s.promoteur_id.is_empty()) else {
            return Err(ApiError::invalid("survivor", "Promoteur conservé manquant").into());
        };
        let (promoteur, n) = self.oscars.merge_promoteurs(&who, survivor, merged).await?;
        Ok(Response::new(pb::MergePromoteursResponse {
            promoteur: Some(promoteur),
            repointed_fiche_count: n,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_promoteur(
        &self,
        request: Request<pb::UpdatePromoteurRequest>,
    ) -> Result<Response<pb::UpdatePromoteurResponse>, Status> {
        let who = principal(&request)?;
        let pb::UpdatePromoteurRequest {
            promoteur_id,
            expected_version,
            promoteur,
            update_mask,
        } = request.into_inner();
        required_id("promoteur_id", &promoteur_id)?;
        let promoteur = self
            .oscars
            .update_promoteur(
                &who,
                &promoteur_id,
                expected_version,
                promoteur.unwrap_or_default(),
                update_mask.map(|m| m.paths).unwrap_or_default(),
            )
            .await
            .map_err(siret_taken)?;
        Ok(Response::new(pb::UpdatePromoteurResponse {
            promoteur: Some(promoteur),
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn correct_fiche(
        &self,
        request: Request<pb::CorrectFicheRequest>,
    ) -> Result<Response<pb::CorrectFicheResponse>, Status> {
        let who = principal(&request)?;
        let pb::CorrectFicheRequest {
            fiche_id,
            expected_version,
            corrections,
        } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let (fiche, corrections) = self
            .oscars
            .correct(&who, &fiche_id, expected_version, corrections)
            .await?;
        Ok(Response::new(pb::CorrectFicheResponse {
            fiche: Some(fiche),
            corrections,
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn list_corrections(
        &self,
        request: Request<pb::ListCorrectionsRequest>,
    ) -> Result<Response<pb::ListCorrectionsResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListCorrectionsRequest {
            fiche_id,
            page_size,
            page_token,
        } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let page = self
            .oscars
            .corrections(&who, &fiche_id, page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListCorrectionsResponse {
            corrections: page.items,
            next_page_token: page.next,
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn publish_fiche(
        &self,
        request: Request<pb::PublishFicheRequest>,
    ) -> Result<Response<pb::PublishFicheResponse>, Status> {
        let who = principal(&request)?;
        let pb::PublishFicheRequest {
            fiche_id,
            expected_version,
        } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let fiche = self
            .oscars
            .publish(&who, &fiche_id, expected_version)
            .await?;
        Ok(Response::new(pb::PublishFicheResponse {
            fiche: Some(fiche),
        }))
    }

    #[tracing::instrument(skip_all, fields(fiche = %request.get_ref().fiche_id))]
    async fn hide_fiche(
        &self,
        request: Request<pb::HideFicheRequest>,
    ) -> Result<Response<pb::HideFicheResponse>, Status> {
        let who = principal(&request)?;
        let pb::HideFicheRequest {
            fiche_id,
            expected_version,
        } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let fiche = self.oscars.hide(&who, &fiche_id, expected_version).await?;
        Ok(Response::new(pb::HideFicheResponse { fiche: Some(fiche) }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_ambassadeurs(
        &self,
        request: Request<pb::SetAmbassadeursRequest>,
    ) -> Result<Response<pb::SetAmbassadeursResponse>, Status> {
        let who = principal(&request)?;
        let pb::SetAmbassadeursRequest {
            region_code,
            expected_version,
            ambassadeurs,
        } = request.into_inner();
        let region = self
            .oscars
            .set_ambassadeurs(&who, &region_code, expected_version, ambassadeurs)
            .await?;
        Ok(Response::new(pb::SetAmbassadeursResponse {
            region: Some(region),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_ambassadeurs(
        &self,
        request: Request<pb::ListAmbassadeursRequest>,
    ) -> Result<Response<pb::ListAmbassadeursResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListAmbassadeursRequest { region_code } = request.into_inner();
        let regions = self.oscars.list_ambassadeurs(&who, &region_code).await?;
        Ok(Response::new(pb::ListAmbassadeursResponse { regions }))
    }
}

/// `OscarsPublicService` handlers (anonymous).
#[derive(Clone, Debug)]
pub struct PublicApi {
    oscars: Oscars,
    limiter: RateLimiter,
}

impl PublicApi {
    /// Handlers over `oscars`, each client address limited by `limiter`.
    pub fn new(oscars: Oscars, limiter: RateLimiter) -> Self {
        Self { oscars, limiter }
    }

    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let client = request.remote_addr().map(|a| a.ip());
        if self.limiter.allow(client, std::time::Instant::now()) {
            Ok(())
        } else {
            Err(Status::resource_exhausted(
                "trop de requêtes : réessayez dans quelques secondes",
            ))
        }
    }
}

/// The response stream of `ExportPublicFiches`.
pub type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportPublicFichesResponse, Status>> + Send>>;

/// Largest chunk of an export message.
const CHUNK: usize = 64 * 1024;

#[tonic::async_trait]
impl OscarsPublicService for PublicApi {
    #[tracing::instrument(skip_all)]
    async fn list_public_fiches(
        &self,
        request: Request<pb::ListPublicFichesRequest>,
    ) -> Result<Response<pb::ListPublicFichesResponse>, Status> {
        self.admit(&request)?;
        let pb::ListPublicFichesRequest {
            filter,
            page_size,
            page_token,
        } = request.into_inner();
        let page = self
            .oscars
            .public_list(&filter.unwrap_or_default(), page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListPublicFichesResponse {
            fiches: page.items,
            next_page_token: page.next,
            total_count: page.total,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_public_fiche(
        &self,
        request: Request<pb::GetPublicFicheRequest>,
    ) -> Result<Response<pb::GetPublicFicheResponse>, Status> {
        self.admit(&request)?;
        let pb::GetPublicFicheRequest { fiche_id } = request.into_inner();
        required_id("fiche_id", &fiche_id)?;
        let fiche = self.oscars.public_get(&fiche_id).await?;
        Ok(Response::new(pb::GetPublicFicheResponse {
            fiche: Some(fiche),
        }))
    }

    type ExportPublicFichesStream = ExportStream;

    #[tracing::instrument(skip_all)]
    async fn export_public_fiches(
        &self,
        request: Request<pb::ExportPublicFichesRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        self.admit(&request)?;
        let pb::ExportPublicFichesRequest { filter, format } = request.into_inner();
        let csv = match pb::PublicExportFormat::try_from(format) {
            Ok(pb::PublicExportFormat::Csv) => true,
            Ok(pb::PublicExportFormat::Json) => false,
            _ => {
                return Err(ApiError::invalid("format", "Choisissez le format JSON ou CSV").into());
            }
        };
        let filter = filter.unwrap_or_default();
        // Malformed filters are refused before the stream starts.
        crate::app::public::condition(&filter)?;
        let date = chrono::Utc::now().format("%Y-%m-%d");
        let header = pb::ExportPublicFichesResponse {
            payload: Some(pb::export_public_fiches_response::Payload::Header(
                ev::DownloadHeader {
                    file_name: format!("fiches-oscars-{date}.{}", if csv { "csv" } else { "json" }),
                    content_type: if csv {
                        "text/csv; charset=utf-8"
                    } else {
                        "application/json"
                    }
                    .to_owned(),
                    size_bytes: None,
                },
            )),
        };
        let chunks = self.oscars.export(filter, csv).flat_map(|item| {
            let messages: Vec<Result<pb::ExportPublicFichesResponse, Status>> = match item {
                Ok(bytes) => bytes
                    .chunks(CHUNK)
                    .map(|c| {
                        Ok(pb::ExportPublicFichesResponse {
                            payload: Some(pb::export_public_fiches_response::Payload::Chunk(
                                c.to_vec(),
                            )),
                        })
                    })
                    .collect(),
                Err(e) => vec![Err(Status::from(e))],
            };
            futures::stream::iter(messages)
        });
        let stream = futures::stream::once(async move { Ok(header) }).chain(chunks);
        Ok(Response::new(Box::pin(stream)))
    }
}
