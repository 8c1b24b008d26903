//! Event plumbing shared by every mst-dossiers service — no domain logic lives here.
//!
//! Publishing follows the transactional outbox: a use case writes its state change and an
//! [`outbox`] row in one database transaction; the [`relay`] publishes committed rows to JetStream
//! with `Nats-Msg-Id` = event id, awaits each PubAck, then marks the rows published. Nothing is
//! published that did not commit, and nothing committed stays unpublished (retries are
//! deduplicated by the stream).
//!
//! Consuming goes through durable pull consumers ([`consumer`]): the handler's effect and a
//! processed-event row commit in one transaction, the message is acked only after that commit,
//! transient failures are redelivered with backoff, poison messages go to a dead-letter stream.
//! W3C trace context travels in NATS headers ([`trace`]), so one trace follows an event from the
//! gRPC call that produced it to every consumer.

#![forbid(unsafe_code)]

pub mod consumer;
pub mod db;
pub mod outbox;
pub mod relay;
pub mod stream;
pub mod subjects;
pub mod trace;

pub use consumer::{Consumer, ConsumerSpec, Delivery, Handler, HandlerError};
pub use outbox::{OutgoingEvent, enqueue, enqueue_event};
pub use relay::{Relay, RelayHandle};
pub use stream::{Bus, BusSettings};

/// Header carrying the fully-qualified protobuf message name of the payload.
pub const SCHEMA_HEADER: &str = "Mst-Schema";
/// Content type of every event payload.
pub const CONTENT_TYPE: &str = "application/protobuf";
