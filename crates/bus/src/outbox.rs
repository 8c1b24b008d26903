//! The transactional outbox: events are rows written in the caller's transaction.
//!
//! The table (`outbox`) is created by each service's migrations (`mst-migrations`); this module
//! owns the rows. `seq` orders publication; `event_id` is the message id the stream deduplicates
//! on; the trace context of the writer's span is stored so the event continues its trace.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, ConnectionTrait};
use uuid::Uuid;

/// The `outbox` table.
pub mod entity {
    use super::*;

    /// One event waiting to be (or already) published.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        /// Publication order.
        #[sea_orm(primary_key)]
        pub seq: i64,
        /// Event id (UUID), sent as `Nats-Msg-Id`.
        #[sea_orm(unique)]
        pub event_id: String,
        /// Subject without the deployment prefix, e.g. `dossier.status_changed.v1`.
        pub subject: String,
        /// Fully-qualified protobuf message name of the payload.
        pub schema: String,
        /// Encoded protobuf payload.
        pub payload: Vec<u8>,
        /// W3C `traceparent` of the span that wrote the event.
        pub traceparent: Option<String>,
        /// W3C `tracestate`.
        pub tracestate: Option<String>,
        /// When the row was written.
        pub created_at: DateTime<Utc>,
        /// When the stream acknowledged it; `None` while pending.
        pub published_at: Option<DateTime<Utc>>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An event to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// Event id; also `metadata.event_id` inside the payload.
    pub event_id: Uuid,
    /// Subject without prefix (see [`crate::subjects`]).
    pub subject: String,
    /// Fully-qualified message name, e.g. `mst.events.v1.DossierStatusChanged`.
    pub schema: String,
    /// Encoded payload.
    pub payload: Vec<u8>,
}

impl OutgoingEvent {
    /// Encodes `message` as the payload of an event with id `event_id`.
    pub fn new<M: prost::Message>(
        event_id: Uuid,
        subject: impl Into<String>,
        schema: impl Into<String>,
        message: &M,
    ) -> Self {
        Self {
            event_id,
            subject: subject.into(),
            schema: schema.into(),
            payload: message.encode_to_vec(),
        }
    }
}

impl OutgoingEvent {
    /// The outbox row of a contract event; its id is the one in its metadata.
    pub fn from_event<E: mst_proto::Event>(event: &E) -> Result<Self, DbErr> {
        let id = event
            .metadata()
            .map(|m| m.event_id.as_str())
            .unwrap_or_default();
        let event_id = Uuid::parse_str(id)
            .map_err(|e| DbErr::Custom(format!("{} has no valid event id: {e}", E::SCHEMA)))?;
        Ok(Self::new(event_id, E::SUBJECT, E::SCHEMA, event))
    }
}

/// Writes a contract event to the outbox within `db` (see [`enqueue`]).
pub async fn enqueue_event<C: ConnectionTrait, E: mst_proto::Event>(
    db: &C,
    event: &E,
) -> Result<(), DbErr> {
    enqueue(db, OutgoingEvent::from_event(event)?).await
}

/// Writes `event` to the outbox within `db` — pass the use case's transaction, so the event
/// commits or rolls back with the state change. The current span's trace context goes with it.
pub async fn enqueue<C: ConnectionTrait>(db: &C, event: OutgoingEvent) -> Result<(), DbErr> {
    let trace = crate::trace::current_context_headers();
    entity::ActiveModel {
        event_id: Set(event.event_id.to_string()),
        subject: Set(event.subject),
        schema: Set(event.schema),
        payload: Set(event.payload),
        traceparent: Set(trace.get("traceparent").cloned()),
        tracestate: Set(trace.get("tracestate").cloned().filter(|s| !s.is_empty())),
        created_at: Set(Utc::now()),
        published_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Number of rows not yet published (for health and metrics).
pub async fn pending<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    entity::Entity::find()
        .filter(entity::Column::PublishedAt.is_null())
        .count(db)
        .await
}
