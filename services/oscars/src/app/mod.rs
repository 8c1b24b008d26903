//! Use cases of the oscars service: the import of accepted dossiers (and the withdrawal of those
//! leaving accepté), the restoration of fiches from the feed on a replay, the ambassadeur's work
//! and the public read API. Every change of a fiche bumps its version and writes its feed event in
//! the same transaction (outbox).

pub mod ambassadeur;
pub mod import;
pub mod public;

use chrono::{DateTime, Utc};
use mst_bus::RelayHandle;
use mst_kit::ApiError;
use mst_kit::auth::{Principal, Role, ServiceToken};
use mst_proto::events::{self as ev, EventMetadata};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};
use sha2::Digest as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::store::{self, fiche};

/// Producer name in event metadata.
pub const PRODUCER: &str = "oscars";

/// The forms internal API with this service's token (reads dossiers with their answers).
pub type FormsClient = mst_proto::forms::forms_internal_service_client::FormsInternalServiceClient<
    InterceptedService<Channel, ServiceToken>,
>;

/// The oscars use cases over a database, the outbox relay and the forms service.
#[derive(Clone, Debug)]
pub struct Oscars {
    db: DatabaseConnection,
    relay: RelayHandle,
    forms: FormsClient,
}

impl Oscars {
    /// Use cases over `db`, waking `relay` after commits, reading dossiers from `forms`.
    pub fn new(db: DatabaseConnection, relay: RelayHandle, forms: FormsClient) -> Self {
        Self { db, relay, forms }
    }

    /// Wakes the outbox relay (after a commit that queued feed events).
    pub fn wake_relay(&self) {
        self.relay.wake();
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }
}

/// A UUID derived from `parts` (SHA-256, shaped as a v4 UUID): the same inputs give the same id,
/// so a replay of the stream rebuilds the same fiche ids and republishes the same event ids
/// (which JetStream deduplicates within its window).
pub fn derived_id(parts: &[&str]) -> uuid::Uuid {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Id of the fiche of dossier `number`.
pub fn fiche_id_of(number: i64) -> String {
    derived_id(&["oscars-fiche", &number.to_string()]).to_string()
}

/// A protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Event metadata for an event caused by `who` (or by this service when `None`).
fn metadata(
    event_id: uuid::Uuid,
    who: Option<&Principal>,
    causation: &str,
    at: DateTime<Utc>,
) -> EventMetadata {
    let actor = match who {
        Some(p) => ev::Actor {
            email: p.email.clone(),
            role: if p.has(Role::Admin) {
                ev::Role::Admin
            } else {
                ev::Role::Ambassadeur
            } as i32,
        },
        None => ev::Actor {
            email: PRODUCER.to_owned(),
            role: ev::Role::System as i32,
        },
    };
    EventMetadata {
        event_id: event_id.to_string(),
        occurred_at: Some(timestamp(at)),
        producer: PRODUCER.to_owned(),
        actor: Some(actor),
        causation_id: causation.to_owned(),
    }
}

/// Which feed event a fiche change publishes.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// First import.
    Imported,
    /// Made visible.
    Published,
    /// Changed; the changed field names.
    Updated(Vec<String>),
    /// Left the public view.
    Withdrawn(ev::FicheWithdrawalReason),
}

/// Writes the feed event of `fiche` to the outbox within `txn`.
pub async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    event_id: uuid::Uuid,
    who: Option<&Principal>,
    causation: &str,
    fiche: &ev::Fiche,
    what: FeedEvent,
) -> Result<(), sea_orm::DbErr> {
    let meta = Some(metadata(event_id, who, causation, Utc::now()));
    let fiche = Some(fiche.clone());
    match what {
        FeedEvent::Imported => {
            mst_bus::outbox::enqueue_event(
                txn,
                &ev::OscarsFicheImported {
                    metadata: meta,
                    fiche,
                },
            )
            .await
        }
        FeedEvent::Published => {
            mst_bus::outbox::enqueue_event(
                txn,
                &ev::OscarsFichePublished {
                    metadata: meta,
                    fiche,
                },
            )
            .await
        }
        FeedEvent::Updated(changed_fields) => {
            mst_bus::outbox::enqueue_event(
                txn,
                &ev::OscarsFicheUpdated {
                    metadata: meta,
                    fiche,
                    changed_fields,
                },
            )
            .await
        }
        FeedEvent::Withdrawn(reason) => {
            mst_bus::outbox::enqueue_event(
                txn,
                &ev::OscarsFicheWithdrawn {
                    metadata: meta,
                    fiche,
                    reason: reason as i32,
                },
            )
            .await
        }
    }
}

/// The fiche row of dossier `number`.
pub async fn fiche_by_dossier<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Option<fiche::Model>, sea_orm::DbErr> {
    fiche::Entity::find()
        .filter(fiche::Column::DossierNumber.eq(number))
        .one(db)
        .await
}

/// Decodes a stored fiche, a corrupt one being unexpected.
pub fn decoded(row: &fiche::Model) -> Result<ev::Fiche, ApiError> {
    store::decode(&row.content).map_err(ApiError::Unexpected)
}
