//! Durable pull consumers with exactly-once effects.
//!
//! Messages that arrive together are handled in one transaction (up to [`MAX_BATCH`], in order,
//! one commit then the acks); if any of them fails, the batch is rolled back and each goes
//! through the single-message path below, where its failure is classified.
//!
//! For each message: open a transaction, skip it if `(consumer, event_id)` is already in
//! `processed_events`, else run the handler inside the transaction and record the event id in the
//! same transaction, commit, and only then ack. A crash anywhere before the commit leaves nothing
//! behind and the message is redelivered; a crash after the commit but before the ack makes the
//! redelivery a no-op. Handler failures are classified: [`HandlerError::Transient`] → NAK with a
//! growing delay (up to `max_deliver` attempts), [`HandlerError::Permanent`] (or too many attempts,
//! or an undecodable payload) → the message is copied to the dead-letter stream with the reason,
//! then terminated, and an error is logged. Nothing is dropped silently.

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use bytes::Bytes;
use chrono::Utc;
use futures::{FutureExt as _, StreamExt as _};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::stream::Bus;

/// Most messages handled in one transaction.
const MAX_BATCH: usize = 128;

/// The `processed_events` table: which consumer handled which event.
pub mod processed {
    use super::*;

    /// One handled event.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "processed_events")]
    pub struct Model {
        /// Durable consumer name.
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        /// Event id (`Nats-Msg-Id`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        /// When the effect committed.
        pub processed_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A received event, as handlers see it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Event id (`Nats-Msg-Id`).
    pub event_id: String,
    /// Subject without the deployment prefix.
    pub subject: String,
    /// Encoded protobuf payload.
    pub payload: Bytes,
    /// Delivery attempt, from 1.
    pub attempt: i64,
    /// Stream sequence.
    pub stream_sequence: u64,
    /// Message headers.
    pub headers: Option<HeaderMap>,
}

impl Delivery {
    /// Decodes the payload; an undecodable payload is a permanent failure.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, HandlerError> {
        M::decode(self.payload.as_ref()).map_err(|e| {
            HandlerError::Permanent(anyhow::anyhow!("undecodable {} payload: {e}", self.subject))
        })
    }
}

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later (database busy, a service unreachable): redeliver after a delay.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed (malformed payload, broken invariant): dead-letter it.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl From<DbErr> for HandlerError {
    fn from(e: DbErr) -> Self {
        HandlerError::Transient(e.into())
    }
}

/// Handles one event inside the consumer's transaction. The effect must be written through `txn`
/// (or be idempotent by itself): it commits together with the processed-event row.
pub trait Handler: Send + Sync + 'static {
    /// Applies the event.
    fn handle(
        &self,
        txn: &DatabaseTransaction,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called after a transaction holding handled events committed (wake what reads their
    /// effects, e.g. a sender). Does nothing by default.
    fn committed(&self) {}
}

/// A durable consumer's configuration.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Durable name (one per consuming service; replicas share it and split the work).
    pub durable: String,
    /// Relative subjects it receives (see [`crate::subjects`]).
    pub subjects: Vec<String>,
    /// Attempts before a message is dead-lettered.
    pub max_deliver: i64,
    /// Delay before the n-th redelivery after a transient failure (the last one repeats).
    pub backoff: Vec<Duration>,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
}

impl ConsumerSpec {
    /// A consumer named `durable` on `subjects`, with production defaults (10 attempts, backoff
    /// 1 s, 5 s, 30 s, 2 min, 10 min).
    pub fn new(durable: impl Into<String>, subjects: &[&str]) -> Self {
        Self {
            durable: durable.into(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            max_deliver: 10,
            backoff: [1, 5, 30, 120, 600].map(Duration::from_secs).to_vec(),
            ack_wait: Duration::from_secs(30),
        }
    }

    fn delay(&self, attempt: i64) -> Duration {
        let i = usize::try_from(attempt.saturating_sub(1)).unwrap_or(0);
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// What happened to one message (returned for tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The effect committed.
    Handled,
    /// Already handled before: acked without running the handler.
    Duplicate,
    /// Transient failure: will be redelivered.
    Retried,
    /// Sent to the dead-letter stream.
    DeadLettered,
}

/// A running durable consumer.
pub struct Consumer<H> {
    db: DatabaseConnection,
    bus: Bus,
    spec: ConsumerSpec,
    handler: H,
    observer: Option<tokio::sync::mpsc::UnboundedSender<(String, Outcome)>>,
}

impl<H: Handler> Consumer<H> {
    /// A consumer applying `handler` to the events of `spec`, recording them in `db`.
    pub fn new(db: DatabaseConnection, bus: Bus, spec: ConsumerSpec, handler: H) -> Self {
        Self {
            db,
            bus,
            spec,
            handler,
            observer: None,
        }
    }

    /// Reports `(event id, outcome)` of every processed message on `observer` (tests, metrics).
    pub fn with_observer(
        mut self,
        observer: tokio::sync::mpsc::UnboundedSender<(String, Outcome)>,
    ) -> Self {
        self.observer = Some(observer);
        self
    }

    async fn pull_consumer(
        &self,
    ) -> anyhow::Result<async_nats::jetstream::consumer::Consumer<pull::Config>> {
        let stream = self
            .bus
            .jetstream
            .get_stream(&self.bus.settings.stream)
            .await?;
        let config = pull::Config {
            durable_name: Some(self.spec.durable.clone()),
            filter_subjects: self
                .spec
                .subjects
                .iter()
                .map(|s| self.bus.subject(s))
                .collect(),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: self.spec.ack_wait,
            // The server stops redelivering one attempt after ours, so our own count decides.
            max_deliver: self.spec.max_deliver + 1,
            max_ack_pending: 1000,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&self.spec.durable, config.clone())
            .await?;
        if consumer.cached_info().config.filter_subjects != config.filter_subjects {
            stream.create_consumer(config).await?;
        }
        Ok(consumer)
    }

    /// Consumes until `shutdown`; reconnects after NATS errors.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.consume(&shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(consumer = %self.spec.durable, error = %error, "consumer interrupted; resuming");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!(consumer = %self.spec.durable, "consumer stopped");
    }

    async fn consume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let consumer = self.pull_consumer().await?;
        let mut messages = consumer
            .stream()
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        tracing::info!(consumer = %self.spec.durable, "consuming");
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(message) = next else {
                anyhow::bail!("message stream ended");
            };
            // Whatever else has already arrived joins the batch (never waits for more).
            let mut batch = vec![message?];
            let mut interrupted = None;
            while batch.len() < MAX_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    Some(Some(Err(e))) => {
                        interrupted = Some(anyhow::Error::from(e));
                        break;
                    }
                    Some(None) => {
                        interrupted = Some(anyhow::anyhow!("message stream ended"));
                        break;
                    }
                    None => break,
                }
            }
            for (id, outcome) in self.process_batch(batch).await? {
                if let Some(observer) = &self.observer {
                    let _ = observer.send((id, outcome));
                }
            }
            if let Some(e) = interrupted {
                return Err(e);
            }
        }
    }

    /// Handles messages that arrived together in ONE transaction (one commit, then the acks),
    /// in their order. If any handler fails, that transaction is rolled back and each message
    /// goes through [`Consumer::process`] on its own, where failures are classified.
    pub async fn process_batch(
        &self,
        mut messages: Vec<async_nats::jetstream::Message>,
    ) -> anyhow::Result<Vec<(String, Outcome)>> {
        if messages.len() <= 1 {
            let mut out = Vec::new();
            if let Some(message) = messages.pop() {
                out.push(self.process(message).await?);
            }
            return Ok(out);
        }
        let deliveries = messages
            .iter()
            .map(|m| self.delivery(m))
            .collect::<anyhow::Result<Vec<_>>>()?;
        match self.apply_all(&messages, &deliveries).await {
            Ok(outcomes) => {
                self.handler.committed();
                futures::future::try_join_all(messages.iter().map(|m| async move {
                    m.double_ack()
                        .await
                        .map_err(|e| anyhow::anyhow!("ack: {e}"))
                }))
                .await?;
                Ok(deliveries
                    .into_iter()
                    .map(|d| d.event_id)
                    .zip(outcomes)
                    .collect())
            }
            Err(error) => {
                tracing::debug!(consumer = %self.spec.durable, %error, "batch rolled back; handling its messages one by one");
                let mut out = Vec::with_capacity(messages.len());
                for message in messages {
                    out.push(self.process(message).await?);
                }
                Ok(out)
            }
        }
    }

    async fn apply_all(
        &self,
        messages: &[async_nats::jetstream::Message],
        deliveries: &[Delivery],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let txn = crate::db::begin_write(&self.db).await?;
        let mut seen: std::collections::HashSet<String> = processed::Entity::find()
            .filter(processed::Column::Consumer.eq(self.spec.durable.as_str()))
            .filter(
                processed::Column::EventId.is_in(deliveries.iter().map(|d| d.event_id.as_str())),
            )
            .all(&txn)
            .await?
            .into_iter()
            .map(|row| row.event_id)
            .collect();
        let now = Utc::now();
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut rows = Vec::new();
        for (message, delivery) in messages.iter().zip(deliveries) {
            if !seen.insert(delivery.event_id.clone()) {
                outcomes.push(Outcome::Duplicate);
                continue;
            }
            let span = self.span(message, delivery);
            if let Err(e) = self.handler.handle(&txn, delivery).instrument(span).await {
                txn.rollback().await?;
                return Err(e);
            }
            rows.push(processed::ActiveModel {
                consumer: Set(self.spec.durable.clone()),
                event_id: Set(delivery.event_id.clone()),
                processed_at: Set(now),
            });
            outcomes.push(Outcome::Handled);
        }
        if !rows.is_empty() {
            processed::Entity::insert_many(rows).exec(&txn).await?;
        }
        txn.commit().await?;
        Ok(outcomes)
    }

    fn delivery(&self, message: &async_nats::jetstream::Message) -> anyhow::Result<Delivery> {
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (attempt, stream_sequence) = (info.delivered, info.stream_sequence);
        let headers = message.headers.clone();
        let event_id = headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| format!("seq-{stream_sequence}"));
        let subject =
            crate::subjects::relative(&self.bus.settings.subject_prefix, &message.subject)
                .unwrap_or(&message.subject)
                .to_owned();
        Ok(Delivery {
            event_id,
            subject,
            payload: message.payload.clone(),
            attempt,
            stream_sequence,
            headers,
        })
    }

    /// The consumer span of one delivery, child of the producer's trace context.
    fn span(&self, message: &async_nats::jetstream::Message, delivery: &Delivery) -> tracing::Span {
        let span = tracing::info_span!(
            "event.consume",
            otel.name = %format!("{} process", delivery.subject),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %message.subject,
            messaging.message.id = %delivery.event_id,
            messaging.consumer.group.name = %self.spec.durable,
            attempt = delivery.attempt,
        );
        crate::trace::set_parent_from(&span, delivery.headers.as_ref());
        span
    }

    /// Handles one message end to end (transaction, ack, dead letter); returns its event id and
    /// what happened.
    pub async fn process(
        &self,
        message: async_nats::jetstream::Message,
    ) -> anyhow::Result<(String, Outcome)> {
        let delivery = self.delivery(&message)?;
        let attempt = delivery.attempt;
        let span = self.span(&message, &delivery);
        let event_id = delivery.event_id.clone();
        let outcome = async {
            let outcome = match self.apply(&delivery).await {
                Ok(outcome) => outcome,
                Err(HandlerError::Transient(e)) if attempt < self.spec.max_deliver => {
                    let delay = self.spec.delay(attempt);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "transient failure; will retry");
                    message
                        .ack_with(AckKind::Nak(Some(delay)))
                        .await
                        .map_err(|e| anyhow::anyhow!("nak: {e}"))?;
                    return anyhow::Ok(Outcome::Retried);
                }
                Err(e) => {
                    self.dead_letter(&delivery, &e).await?;
                    message
                        .ack_with(AckKind::Term)
                        .await
                        .map_err(|e| anyhow::anyhow!("term: {e}"))?;
                    return Ok(Outcome::DeadLettered);
                }
            };
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            Ok(outcome)
        }
        .instrument(span)
        .await?;
        Ok((event_id, outcome))
    }

    async fn apply(&self, delivery: &Delivery) -> Result<Outcome, HandlerError> {
        let txn = crate::db::begin_write(&self.db).await?;
        let seen =
            processed::Entity::find_by_id((self.spec.durable.clone(), delivery.event_id.clone()))
                .one(&txn)
                .await?;
        if seen.is_some() {
            txn.rollback().await?;
            tracing::debug!("event already handled; acking");
            return Ok(Outcome::Duplicate);
        }
        if let Err(e) = self.handler.handle(&txn, delivery).await {
            txn.rollback().await?;
            return Err(e);
        }
        processed::ActiveModel {
            consumer: Set(self.spec.durable.clone()),
            event_id: Set(delivery.event_id.clone()),
            processed_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        self.handler.committed();
        Ok(Outcome::Handled)
    }

    async fn dead_letter(&self, delivery: &Delivery, error: &HandlerError) -> anyhow::Result<()> {
        let mut headers = delivery.headers.clone().unwrap_or_default();
        let reason: String = error.to_string().chars().take(1024).collect();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:{}", delivery.event_id, self.spec.durable).as_str(),
        );
        headers.insert("Mst-Original-Subject", delivery.subject.as_str());
        headers.insert("Mst-Original-Event-Id", delivery.event_id.as_str());
        headers.insert("Mst-Consumer", self.spec.durable.as_str());
        headers.insert("Mst-Attempts", delivery.attempt.to_string().as_str());
        headers.insert("Mst-Reason", reason.replace(['\r', '\n'], " ").as_str());
        let subject =
            crate::subjects::dead_letter(&self.bus.settings.subject_prefix, &self.spec.durable);
        self.bus
            .jetstream
            .publish_with_headers(subject, headers, delivery.payload.clone())
            .await?
            .await?;
        tracing::error!(
            alert = true,
            consumer = %self.spec.durable,
            event_id = %delivery.event_id,
            subject = %delivery.subject,
            attempts = delivery.attempt,
            reason = %reason,
            "event dead-lettered"
        );
        Ok(())
    }
}
