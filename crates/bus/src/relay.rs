//! The outbox relay: publishes committed outbox rows in order and marks them published.
//!
//! Each round takes the oldest pending rows (up to a batch), publishes them all to JetStream with
//! `Nats-Msg-Id` = event id and the stored trace context, awaits the PubAcks in order, and marks the
//! acknowledged rows published. A crash between the PubAck and the mark only causes a re-publish
//! that the stream drops as a duplicate (and consumers are idempotent anyway). While NATS is down,
//! publishing fails, rows stay pending and the relay retries with backoff; the client reconnects
//! by itself.
//!
//! On PostgreSQL several replicas of a service may run a relay: a transaction-scoped advisory lock
//! lets one of them work at a time, which keeps the publication order. On SQLite the database
//! belongs to one process.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait, prelude::*,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::entity;
use crate::stream::Bus;

/// Advisory lock key of the relay (any constant; one per database).
const RELAY_LOCK_KEY: i64 = 0x6d73_745f_7265_6c61; // "mst_rela"

/// Wakes the relay right after a commit, so events do not wait for the next poll.
#[derive(Debug, Clone, Default)]
pub struct RelayHandle {
    notify: Arc<Notify>,
}

impl RelayHandle {
    /// Tells the relay there is something to publish.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Publishes the outbox of one database.
#[derive(Debug, Clone)]
pub struct Relay {
    db: DatabaseConnection,
    bus: Bus,
    handle: RelayHandle,
    /// Rows per round.
    pub batch: u64,
    /// Poll interval when idle (events written without a wake-up are still published).
    pub poll: Duration,
    /// How long published rows are kept before being purged.
    pub retention: Duration,
}

impl Relay {
    /// A relay over `db`'s outbox publishing on `bus`.
    pub fn new(db: DatabaseConnection, bus: Bus) -> Self {
        Self {
            db,
            bus,
            handle: RelayHandle::default(),
            batch: 256,
            poll: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// The handle use cases call after committing events.
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// Runs until `shutdown`, then publishes what is pending one last time.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut last_purge = tokio::time::Instant::now();
        loop {
            match self.publish_pending().await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n as u64 >= self.batch {
                        continue;
                    }
                    if shutdown.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = self.handle.notify.notified() => {}
                        () = tokio::time::sleep(self.poll) => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "outbox relay round failed");
                    if shutdown.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if last_purge.elapsed() > Duration::from_secs(600) {
                last_purge = tokio::time::Instant::now();
                if let Err(error) = self.purge().await {
                    tracing::warn!(error = %error, "outbox purge failed");
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// One round: publishes up to `batch` pending rows; returns how many were published.
    pub async fn publish_pending(&self) -> anyhow::Result<usize> {
        match self.db.get_database_backend() {
            DatabaseBackend::Postgres => {
                let txn = self.db.begin().await?;
                let locked = txn
                    .query_one_raw(Statement::from_sql_and_values(
                        DatabaseBackend::Postgres,
                        "SELECT pg_try_advisory_xact_lock($1) AS locked",
                        [RELAY_LOCK_KEY.into()],
                    ))
                    .await?
                    .map(|row| row.try_get::<bool>("", "locked"))
                    .transpose()?
                    .unwrap_or(false);
                if !locked {
                    txn.rollback().await?;
                    return Ok(0);
                }
                let n = self.round(&txn).await;
                txn.commit().await?;
                n
            }
            _ => self.round(&self.db).await,
        }
    }

    async fn round<C: ConnectionTrait>(&self, db: &C) -> anyhow::Result<usize> {
        let rows = entity::Entity::find()
            .filter(entity::Column::PublishedAt.is_null())
            .order_by_asc(entity::Column::Seq)
            .limit(self.batch)
            .all(db)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Pipeline the publishes, then await the acks in order.
        let mut pending: Vec<(i64, PublishAckFuture)> = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in rows {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, row.event_id.as_str());
            headers.insert("Content-Type", crate::CONTENT_TYPE);
            headers.insert(crate::SCHEMA_HEADER, row.schema.as_str());
            if let Some(tp) = &row.traceparent {
                headers.insert("traceparent", tp.as_str());
            }
            if let Some(ts) = &row.tracestate {
                headers.insert("tracestate", ts.as_str());
            }
            let subject = self.bus.subject(&row.subject);
            match self
                .bus
                .jetstream
                .publish_with_headers(subject, headers, row.payload.into())
                .await
            {
                Ok(ack) => pending.push((row.seq, ack)),
                Err(e) => {
                    failure = Some(anyhow::Error::from(e));
                    break;
                }
            }
        }
        let mut acked = Vec::with_capacity(pending.len());
        for (seq, ack) in pending {
            match ack.await {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(seq, "event already in the stream (duplicate)");
                    }
                    acked.push(seq);
                }
                Err(e) => {
                    failure.get_or_insert(anyhow::Error::from(e));
                    break;
                }
            }
        }
        if !acked.is_empty() {
            entity::Entity::update_many()
                .col_expr(entity::Column::PublishedAt, Expr::value(Utc::now()))
                .filter(entity::Column::Seq.is_in(acked.iter().copied()))
                .exec(db)
                .await?;
            tracing::debug!(count = acked.len(), "outbox rows published");
        }
        match failure {
            Some(e) if acked.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, published = acked.len(), "partial outbox round");
                Ok(acked.len())
            }
            None => Ok(acked.len()),
        }
    }

    /// Deletes published rows older than the retention.
    pub async fn purge(&self) -> anyhow::Result<u64> {
        let cutoff = Utc::now() - chrono::Duration::from_std(self.retention)?;
        let res = entity::Entity::delete_many()
            .filter(entity::Column::PublishedAt.lt(cutoff))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }
}
