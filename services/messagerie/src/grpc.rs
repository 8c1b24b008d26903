//! `mst.messagerie.v1.MessagerieService`: proto → use cases → proto, errors as rich statuses.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use mst_kit::auth::principal;
use mst_kit::error::ApiError;
use mst_proto::events as ev;
use mst_proto::messagerie as pb;
use pb::messagerie_service_server::MessagerieService;
use tonic::{Request, Response, Status, Streaming};

use crate::app::Messagerie;
use crate::app::contact::DeliveryFilter;
use crate::app::notices::Kind;
use crate::app::thread::{AttachmentMeta, EntryView, MAX_ATTACHMENTS, MAX_BODY_CHARS};
use crate::store::mail;

/// The gRPC API.
#[derive(Debug, Clone)]
pub struct Api {
    messagerie: Messagerie,
}

impl Api {
    /// The API over `messagerie`.
    pub fn new(messagerie: Messagerie) -> Self {
        Self { messagerie }
    }
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn page_size(requested: i32) -> u64 {
    match requested {
        n if n <= 0 => 50,
        n => u64::try_from(n).unwrap_or(50).min(500),
    }
}

fn parse_token(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse::<u64>()
        .map_err(|_| ApiError::invalid("page_token", "Jeton de page invalide").into())
}

fn entry_to_pb(view: EntryView, caller: &str, writable: bool) -> pb::ThreadEntry {
    let e = view.entry;
    let author = ev::Actor {
        email: e.author_email.clone(),
        role: e.author_role,
    };
    let content = if let Some(deleted_at) = e.deleted_at {
        pb::thread_entry::Content::Tombstone(pb::Tombstone {
            author: Some(author),
            deleted_at: Some(ts(deleted_at)),
        })
    } else if e.kind == "email" {
        pb::thread_entry::Content::AutomaticEmail(pb::AutomaticEmail {
            subject: e.subject.clone(),
            body: e.body.clone(),
            template: e.template.clone(),
            source_event_id: e.source_event_id.clone().unwrap_or_default(),
        })
    } else {
        pb::thread_entry::Content::Message(pb::Message {
            deletable: writable && e.author_email == caller,
            author: Some(author),
            body: e.body.clone(),
            attachments: view
                .attachments
                .into_iter()
                .map(|a| ev::FileRef {
                    id: a.id,
                    file_name: a.file_name,
                    content_type: a.content_type,
                    size_bytes: a.size,
                    sha256: a.sha256,
                })
                .collect(),
        })
    };
    pb::ThreadEntry {
        id: e.id,
        number: e.number,
        sequence: e.sequence,
        created_at: Some(ts(e.created_at)),
        content: Some(content),
    }
}

fn delivery_status(s: &str) -> pb::DeliveryStatus {
    match s {
        mail::SENT => pb::DeliveryStatus::Sent,
        mail::FAILED => pb::DeliveryStatus::Failed,
        _ => pb::DeliveryStatus::Queued,
    }
}

/// The PostMessage stream after its metadata: each attachment's chunks in turn.
struct Parts {
    inner: Streaming<pb::PostMessageRequest>,
    /// A header read while looking for chunks: it starts the next attachment.
    pending_header: Option<pb::AttachmentHeader>,
    /// The stream ended, or failed (the error is given once).
    done: bool,
}

impl Parts {
    async fn next_header(&mut self) -> Result<Option<pb::AttachmentHeader>, Status> {
        if let Some(h) = self.pending_header.take() {
            return Ok(Some(h));
        }
        while !self.done {
            match self.inner.message().await? {
                None => self.done = true,
                Some(pb::PostMessageRequest {
                    payload: Some(pb::post_message_request::Payload::Attachment(h)),
                }) => return Ok(Some(h)),
                Some(pb::PostMessageRequest {
                    payload: Some(pb::post_message_request::Payload::Chunk(_)),
                }) => {
                    return Err(ApiError::invalid(
                        "chunk",
                        "Contenu reçu avant l'en-tête de la pièce jointe",
                    )
                    .into());
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        "metadata",
                        "Les métadonnées ne peuvent être envoyées qu'en premier",
                    )
                    .into());
                }
            }
        }
        Ok(None)
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        if self.done || self.pending_header.is_some() {
            return None;
        }
        match self.inner.message().await {
            Ok(None) => {
                self.done = true;
                None
            }
            Ok(Some(pb::PostMessageRequest {
                payload: Some(pb::post_message_request::Payload::Chunk(c)),
            })) => {
                if c.len() > 1024 * 1024 {
                    self.done = true;
                    return Some(Err("bloc de plus de 1 Mio".into()));
                }
                Some(Ok(Bytes::from(c)))
            }
            Ok(Some(pb::PostMessageRequest {
                payload: Some(pb::post_message_request::Payload::Attachment(h)),
            })) => {
                self.pending_header = Some(h);
                None
            }
            Ok(Some(_)) => {
                self.done = true;
                Some(Err("message inattendu dans le flux".into()))
            }
            Err(s) => {
                self.done = true;
                Some(Err(s.message().to_owned()))
            }
        }
    }
}

type ChunkStream<'a> = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send + 'a>>;

#[tonic::async_trait]
impl MessagerieService for Api {
    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListMessagesRequest {
            number,
            page_size: size,
            page_token,
        } = request.into_inner();
        let after = parse_token(&page_token)?;
        let (entries, writable, more) = self
            .messagerie
            .list_messages(
                &who,
                number,
                i64::try_from(after).unwrap_or(i64::MAX),
                page_size(size),
            )
            .await?;
        let next_page_token = if more {
            entries
                .last()
                .map(|e| e.entry.sequence.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListMessagesResponse {
            entries: entries
                .into_iter()
                .map(|e| entry_to_pb(e, &who.email, writable))
                .collect(),
            next_page_token,
            writable,
        }))
    }

    async fn post_message(
        &self,
        request: Request<Streaming<pb::PostMessageRequest>>,
    ) -> Result<Response<pb::PostMessageResponse>, Status> {
        let who = principal(&request)?;
        let mut inner = request.into_inner();
        let Some(pb::PostMessageRequest {
            payload: Some(pb::post_message_request::Payload::Metadata(meta)),
        }) = inner.message().await?
        else {
            return Err(ApiError::invalid(
                "metadata",
                "Le flux doit commencer par les métadonnées",
            )
            .into());
        };
        let pb::PostMessageMetadata {
            number,
            body,
            attachment_count,
            request_id,
        } = meta;
        let mut violations = Vec::new();
        if body.chars().count() > MAX_BODY_CHARS {
            violations.push(mst_kit::error::Violation::new(
                "metadata.body",
                "Le message dépasse 20 000 caractères",
            ));
        }
        // Control characters other than line breaks and tabs (a NUL byte fails in PostgreSQL
        // `text` and in emails).
        if body
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            violations.push(mst_kit::error::Violation::new(
                "metadata.body",
                "Le message contient des caractères non autorisés",
            ));
        }
        if attachment_count < 0 {
            violations.push(mst_kit::error::Violation::new(
                "metadata.attachment_count",
                "Nombre de pièces jointes invalide",
            ));
        }
        if body.trim().is_empty() && attachment_count <= 0 {
            violations.push(mst_kit::error::Violation::new(
                "metadata.body",
                "Le message est vide",
            ));
        }
        if !request_id.is_empty() && uuid::Uuid::parse_str(&request_id).is_err() {
            violations.push(mst_kit::error::Violation::new(
                "metadata.request_id",
                "Identifiant de requête invalide (UUID attendu)",
            ));
        }
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations).into());
        }
        if attachment_count as usize > MAX_ATTACHMENTS {
            return Err(ApiError::TooLarge {
                what: format!("Le nombre de pièces jointes ({attachment_count})"),
                limit_bytes: MAX_ATTACHMENTS as u64,
            }
            .into());
        }
        let count = attachment_count as usize;
        let draft = match self
            .messagerie
            .begin_post(&who, number, &request_id)
            .await?
        {
            Ok(existing) => {
                return Ok(Response::new(pb::PostMessageResponse {
                    entry: Some(entry_to_pb(existing, &who.email, true)),
                }));
            }
            Err(draft) => draft,
        };
        let mut parts = Parts {
            inner,
            pending_header: None,
            done: false,
        };
        let mut stored = Vec::new();
        let outcome: Result<(), Status> = async {
            for i in 0..count {
                let Some(h) = parts.next_header().await? else {
                    return Err(ApiError::invalid(
                        "metadata.attachment_count",
                        format!("{count} pièce(s) jointe(s) annoncée(s), {i} reçue(s)"),
                    )
                    .into());
                };
                let meta = AttachmentMeta {
                    file_name: h.file_name,
                    content_type: h.content_type,
                    size: h.size_bytes,
                };
                let chunks: ChunkStream<'_> =
                    Box::pin(futures::stream::unfold(&mut parts, |p| async move {
                        p.next_chunk().await.map(|c| (c, p))
                    }));
                let a = self
                    .messagerie
                    .store_attachment(&draft, i, &format!("attachments[{i}]"), &meta, chunks)
                    .await?;
                stored.push(a);
            }
            if parts.next_header().await?.is_some() {
                return Err(ApiError::invalid(
                    "metadata.attachment_count",
                    format!("Plus de {count} pièce(s) jointe(s) reçue(s)"),
                )
                .into());
            }
            Ok(())
        }
        .await;
        if let Err(status) = outcome {
            self.messagerie.discard(&stored).await;
            return Err(status);
        }
        let view = match self
            .messagerie
            .commit_message(&who, &draft, body, &stored)
            .await
        {
            Ok(view) => view,
            Err(e) => {
                self.messagerie.discard(&stored).await;
                return Err(e.into());
            }
        };
        Ok(Response::new(pb::PostMessageResponse {
            entry: Some(entry_to_pb(view, &who.email, true)),
        }))
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        let who = principal(&request)?;
        let pb::DeleteMessageRequest { message_id } = request.into_inner();
        let view = self.messagerie.delete_message(&who, &message_id).await?;
        Ok(Response::new(pb::DeleteMessageResponse {
            entry: Some(entry_to_pb(view, &who.email, true)),
        }))
    }

    type DownloadAttachmentStream =
        Pin<Box<dyn Stream<Item = Result<pb::DownloadAttachmentResponse, Status>> + Send>>;

    async fn download_attachment(
        &self,
        request: Request<pb::DownloadAttachmentRequest>,
    ) -> Result<Response<Self::DownloadAttachmentStream>, Status> {
        use pb::download_attachment_response::Payload;
        let who = principal(&request)?;
        let pb::DownloadAttachmentRequest { attachment_id } = request.into_inner();
        let (a, content) = self.messagerie.attachment(&who, &attachment_id).await?;
        let header = pb::DownloadAttachmentResponse {
            payload: Some(Payload::Header(ev::DownloadHeader {
                file_name: a.file_name,
                content_type: a.content_type,
                size_bytes: Some(a.size),
            })),
        };
        let chunks = content.flat_map(|r| {
            let items: Vec<Result<pb::DownloadAttachmentResponse, Status>> = match r {
                Ok(bytes) => bytes
                    .chunks(64 * 1024)
                    .map(|c| {
                        Ok(pb::DownloadAttachmentResponse {
                            payload: Some(Payload::Chunk(c.to_vec())),
                        })
                    })
                    .collect(),
                Err(e) => {
                    tracing::error!(error = %e, "reading an attachment");
                    vec![Err(Status::internal(
                        "lecture de la pièce jointe impossible",
                    ))]
                }
            };
            futures::stream::iter(items)
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(header) }).chain(chunks),
        )))
    }

    async fn contact_brouillon_owners(
        &self,
        request: Request<pb::ContactBrouillonOwnersRequest>,
    ) -> Result<Response<pb::ContactBrouillonOwnersResponse>, Status> {
        let who = principal(&request)?;
        let pb::ContactBrouillonOwnersRequest {
            procedure_id,
            subject,
            body,
            request_id,
        } = request.into_inner();
        let (brouillons, owners) = self
            .messagerie
            .contact_brouillon_owners(&who, &procedure_id, &subject, &body, &request_id)
            .await?;
        Ok(Response::new(pb::ContactBrouillonOwnersResponse {
            brouillon_count: i32::try_from(brouillons).unwrap_or(i32::MAX),
            recipient_count: i32::try_from(owners).unwrap_or(i32::MAX),
        }))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListNotificationsRequest {
            page_size: size,
            page_token,
            number,
        } = request.into_inner();
        let offset = parse_token(&page_token)?;
        let size = page_size(size);
        let (rows, more) = self
            .messagerie
            .notifications(&who, number, offset, size)
            .await?;
        let next = if more {
            (offset + size).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows
                .into_iter()
                .map(|n| pb::Notification {
                    id: n.id,
                    number: n.number,
                    procedure: Some(ev::ProcedureRef {
                        id: n.procedure_id,
                        title: n.procedure_title,
                        kind: ev::DossierKind::Unspecified as i32,
                    }),
                    sender: Some(ev::Actor {
                        email: n.sender_email,
                        role: ev::Role::Instructeur as i32,
                    }),
                    subject: n.subject,
                    body: n.body,
                    created_at: Some(ts(n.created_at)),
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn get_notification_preferences(
        &self,
        request: Request<pb::GetNotificationPreferencesRequest>,
    ) -> Result<Response<pb::GetNotificationPreferencesResponse>, Status> {
        let who = principal(&request)?;
        who.require(mst_kit::auth::Role::Instructeur)?;
        let pb::GetNotificationPreferencesRequest { procedure_id } = request.into_inner();
        let procedures = if procedure_id.is_empty() {
            self.messagerie.procedure_ids().await?
        } else {
            self.messagerie.require_procedure(&procedure_id).await?;
            vec![procedure_id]
        };
        let mut preferences = Vec::new();
        for p in procedures {
            let (settings, version) = self.messagerie.preferences(&who.email, &p).await?;
            preferences.push(prefs_to_pb(p, settings, version));
        }
        Ok(Response::new(pb::GetNotificationPreferencesResponse {
            preferences,
        }))
    }

    async fn update_notification_preferences(
        &self,
        request: Request<pb::UpdateNotificationPreferencesRequest>,
    ) -> Result<Response<pb::UpdateNotificationPreferencesResponse>, Status> {
        let who = principal(&request)?;
        who.require(mst_kit::auth::Role::Instructeur)?;
        let pb::UpdateNotificationPreferencesRequest {
            procedure_id,
            expected_version,
            settings,
        } = request.into_inner();
        let mut violations = Vec::new();
        if procedure_id.trim().is_empty() {
            violations.push(mst_kit::error::Violation::new(
                "procedure_id",
                "Démarche manquante",
            ));
        }
        let mut changes: Vec<(Kind, bool, bool)> = Vec::new();
        for (i, s) in settings.iter().enumerate() {
            match Kind::from_pb(s.kind) {
                None => violations.push(mst_kit::error::Violation::new(
                    format!("settings[{i}].kind"),
                    "Type de notification manquant ou inconnu",
                )),
                Some(k) if changes.iter().any(|(c, _, _)| *c == k) => {
                    violations.push(mst_kit::error::Violation::new(
                        format!("settings[{i}].kind"),
                        "Type de notification répété",
                    ))
                }
                Some(k) => changes.push((k, s.instant, s.daily_digest)),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::Invalid(violations).into());
        }
        self.messagerie.require_procedure(&procedure_id).await?;
        let (settings, version) = self
            .messagerie
            .update_preferences(&who.email, &procedure_id, expected_version, &changes)
            .await?;
        Ok(Response::new(pb::UpdateNotificationPreferencesResponse {
            preferences: Some(prefs_to_pb(procedure_id, settings, version)),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListDeliveriesRequest {
            number,
            recipient,
            statuses,
            source_event_id,
            page_size: size,
            page_token,
        } = request.into_inner();
        let offset = parse_token(&page_token)?;
        let size = page_size(size);
        let mut filter = DeliveryFilter {
            number,
            recipient,
            statuses: Vec::new(),
            source_event_id,
        };
        for (i, s) in statuses.iter().enumerate() {
            filter
                .statuses
                .push(match pb::DeliveryStatus::try_from(*s) {
                    Ok(pb::DeliveryStatus::Queued) => mail::QUEUED,
                    Ok(pb::DeliveryStatus::Sent) => mail::SENT,
                    Ok(pb::DeliveryStatus::Failed) => mail::FAILED,
                    _ => {
                        return Err(ApiError::invalid(
                            format!("statuses[{i}]"),
                            "État d'envoi inconnu",
                        )
                        .into());
                    }
                });
        }
        let (rows, more) = self
            .messagerie
            .deliveries(&who, &filter, offset, size)
            .await?;
        let next = if more {
            (offset + size).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows
                .into_iter()
                .map(|m| {
                    let status = delivery_status(&m.status);
                    pb::Delivery {
                        id: m.id,
                        recipient: m.recipient,
                        template: m.template,
                        subject: m.subject,
                        status: status as i32,
                        attempts: m.attempts,
                        last_error: m.last_error,
                        message_id: m.message_id,
                        source_event_ids: m.source_event_ids.lines().map(str::to_owned).collect(),
                        number: m.number,
                        queued_at: Some(ts(m.queued_at)),
                        sent_at: m.sent_at.map(ts),
                        next_attempt_at: (status == pb::DeliveryStatus::Queued)
                            .then(|| ts(m.next_attempt_at)),
                    }
                })
                .collect(),
            next_page_token: next,
        }))
    }
}

fn prefs_to_pb(
    procedure_id: String,
    settings: crate::app::notices::Settings,
    version: i64,
) -> pb::ProcedurePreferences {
    pb::ProcedurePreferences {
        procedure_id,
        settings: settings
            .into_iter()
            .map(|(k, instant, digest)| pb::NoticeSetting {
                kind: k.to_pb(),
                instant,
                daily_digest: digest,
            })
            .collect(),
        version,
    }
}
