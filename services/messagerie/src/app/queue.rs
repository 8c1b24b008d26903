//! The outgoing-mail queue and delivery log: [`Messagerie::enqueue_mail`] writes one row per
//! (cause, recipient) in the caller's transaction — the unique `dedup_key` makes a redelivered or
//! replayed event queue nothing twice (invariant I3) — and [`Messagerie::run_sender`] delivers
//! due rows, retrying with exponential backoff while the relay is unreachable, and publishes
//! `MailSent` in the transaction that marks a row sent.

use std::time::Duration;
use tracing::Instrument as _;

use chrono::Utc;
use futures::StreamExt as _;
use mst_proto::events as ev;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use super::{AppError, Messagerie, PRODUCER};
use crate::smtp::{Outgoing, SendError};
use crate::store::mail;
use crate::templates::Rendered;

/// How long a sender holds a row it is delivering before another sender may take it.
const LEASE: Duration = Duration::from_secs(120);

/// How many emails one sender hands to the SMTP pool at a time.
const SEND_CONCURRENCY: usize = 4;

/// What to queue.
#[derive(Debug, Clone)]
pub struct NewMail<'a> {
    /// Unique cause of this email for this recipient, e.g. `<event id>:<recipient>`.
    pub dedup_key: String,
    /// Recipient.
    pub recipient: &'a str,
    /// Content.
    pub rendered: &'a Rendered,
    /// Dossier, if any.
    pub number: Option<i64>,
    /// Events it answers.
    pub source_event_ids: Vec<String>,
}

impl Messagerie {
    /// The Message-ID of the email with `dedup_key`: a hash of it at the sender's domain, so the
    /// same event and recipient always give the same Message-ID.
    pub fn message_id(&self, dedup_key: &str) -> String {
        let digest = sha2::Sha256::digest(dedup_key.as_bytes());
        format!("{}@{}", &hex::encode(digest)[..40], self.inner.mail_domain)
    }

    /// Queues an email in `txn`; returns its delivery id, or `None` when that cause already
    /// queued one.
    pub async fn enqueue_mail<C: ConnectionTrait>(
        &self,
        txn: &C,
        m: NewMail<'_>,
    ) -> Result<Option<String>, AppError> {
        let now = Utc::now();
        let id = uuid::Uuid::now_v7().to_string();
        let inserted = mail::Entity::insert(mail::ActiveModel {
            id: Set(id.clone()),
            message_id: Set(self.message_id(&m.dedup_key)),
            dedup_key: Set(m.dedup_key),
            recipient: Set(m.recipient.to_lowercase()),
            template: Set(m.rendered.template.clone()),
            subject: Set(m.rendered.subject.clone()),
            body_text: Set(m.rendered.text.clone()),
            body_html: Set(m.rendered.html.clone()),
            number: Set(m.number),
            source_event_ids: Set(m.source_event_ids.join("\n")),
            status: Set(mail::QUEUED.into()),
            attempts: Set(0),
            last_error: Set(String::new()),
            queued_at: Set(now),
            sent_at: Set(None),
            next_attempt_at: Set(now),
            trace_context: Set(
                serde_json::to_string(&mst_bus::trace::current_context_headers())
                    .unwrap_or_default(),
            ),
        })
        .on_conflict_do_nothing_on([mail::Column::DedupKey])
        .exec_without_returning(txn)
        .await?;
        Ok(matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0).then_some(id))
    }

    /// Wakes the sender (after a commit that queued emails).
    pub fn wake_sender(&self) {
        self.inner.wake_sender.notify_one();
    }

    /// Delivers due emails (those queued before a restart first) until `shutdown`.
    pub async fn run_sender(self, shutdown: CancellationToken) {
        let this = &self;
        self.work(
            "mail sender",
            &self.inner.wake_sender,
            &shutdown,
            || async move { this.send_due().await.map(|attempted| attempted > 0) },
        )
        .await;
        self.inner.mailer.close().await;
    }

    /// One pass over the due emails; returns how many were attempted. The rows are claimed in
    /// one transaction, sent [`SEND_CONCURRENCY`] at a time, and their outcomes (with the
    /// `MailSent` events) recorded in one more transaction: two commits per pass, not two per
    /// email. Each row keeps the time its SMTP server accepted it.
    pub async fn send_due(&self) -> Result<usize, AppError> {
        let now = Utc::now();
        let due = mail::Entity::find()
            .filter(mail::Column::Status.eq(mail::QUEUED))
            .filter(mail::Column::NextAttemptAt.lte(now))
            .order_by_asc(mail::Column::NextAttemptAt)
            .limit(64)
            .all(self.db())
            .await?;
        let count = due.len();
        if count == 0 {
            return Ok(0);
        }
        let claimed = self.claim(due).await?;
        let outcomes: Vec<(mail::Model, Result<chrono::DateTime<Utc>, SendError>)> =
            futures::stream::iter(claimed)
                .map(|row| async move {
                    let outcome = self.send_one(&row).await;
                    (row, outcome)
                })
                .buffered(SEND_CONCURRENCY)
                .collect()
                .await;
        if let Err(error) = self.record(&outcomes).await {
            // The rows stay claimed: another pass takes them after the lease (same Message-ID).
            tracing::warn!(%error, count = outcomes.len(), "mail sender: cannot record deliveries");
        }
        Ok(count)
    }

    /// Claims `due` rows: only one sender moves a row's `attempts` from the value it read, and
    /// holds the row for [`LEASE`].
    async fn claim(&self, due: Vec<mail::Model>) -> Result<Vec<mail::Model>, AppError> {
        let lease_end = Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in due {
            let update = mail::Entity::update_many()
                .col_expr(mail::Column::Attempts, Expr::value(row.attempts + 1))
                .col_expr(mail::Column::NextAttemptAt, Expr::value(lease_end))
                .filter(mail::Column::Id.eq(row.id.as_str()))
                .filter(mail::Column::Status.eq(mail::QUEUED))
                .filter(mail::Column::Attempts.eq(row.attempts))
                .exec(&txn)
                .await?;
            if update.rows_affected == 1 {
                claimed.push(row);
            }
        }
        txn.commit().await?;
        Ok(claimed)
    }

    /// Sends one claimed row in its own span (child of the causing event's trace); returns when
    /// the SMTP server accepted it.
    async fn send_one(&self, row: &mail::Model) -> Result<chrono::DateTime<Utc>, SendError> {
        let span = tracing::info_span!(
            "mail.send",
            otel.name = "smtp send",
            otel.kind = "client",
            delivery = %row.id,
            template = %row.template,
        );
        let parent: std::collections::HashMap<String, String> =
            serde_json::from_str(&row.trace_context).unwrap_or_default();
        mst_bus::trace::set_parent_from_map(&span, &parent);
        let outgoing = Outgoing {
            to: row.recipient.clone(),
            message_id: row.message_id.clone(),
            rendered: Rendered {
                template: row.template.clone(),
                subject: row.subject.clone(),
                text: row.body_text.clone(),
                html: row.body_html.clone(),
            },
        };
        async {
            self.inner.mailer.send(&outgoing).await?;
            tracing::info!(delivery = %row.id, template = %row.template, attempts = row.attempts + 1, "mail sent");
            Ok(Utc::now())
        }
        .instrument(span)
        .await
    }

    /// Records what happened to each sent row in one transaction: `sent` with `MailSent`, or
    /// queued again with a backoff, or `failed` with the reason.
    async fn record(
        &self,
        outcomes: &[(mail::Model, Result<chrono::DateTime<Utc>, SendError>)],
    ) -> Result<(), AppError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let txn = mst_kit::db::begin_write(self.db()).await?;
        let mut sent = 0;
        for (row, outcome) in outcomes {
            let attempts = row.attempts + 1;
            match outcome {
                Ok(accepted_at) => {
                    sent += 1;
                    mail::Entity::update_many()
                        .col_expr(mail::Column::Status, Expr::value(mail::SENT))
                        .col_expr(mail::Column::SentAt, Expr::value(Some(*accepted_at)))
                        .col_expr(mail::Column::LastError, Expr::value(""))
                        .filter(mail::Column::Id.eq(row.id.as_str()))
                        .exec(&txn)
                        .await?;
                    let sources: Vec<String> =
                        row.source_event_ids.lines().map(str::to_owned).collect();
                    let mut metadata = ev::EventMetadata::new(
                        PRODUCER,
                        ev::Actor {
                            email: PRODUCER.into(),
                            role: ev::Role::System as i32,
                        },
                    );
                    metadata.causation_id = sources.first().cloned().unwrap_or_default();
                    mst_bus::enqueue_event(
                        &txn,
                        &ev::MailSent {
                            metadata: Some(metadata),
                            delivery_id: row.id.clone(),
                            source_event_ids: sources,
                            recipient: row.recipient.clone(),
                            template: row.template.clone(),
                            message_id: row.message_id.clone(),
                            number: row.number,
                            subject: row.subject.clone(),
                        },
                    )
                    .await?;
                }
                Err(e) => {
                    let (status, next, reason) = match e {
                        SendError::Permanent(reason) => (mail::FAILED, now, reason.clone()),
                        SendError::Transient(reason) if attempts >= self.timing().max_attempts => (
                            mail::FAILED,
                            now,
                            format!("{reason} (abandon après {attempts} tentatives)"),
                        ),
                        SendError::Transient(reason) => {
                            (mail::QUEUED, now + self.backoff(attempts), reason.clone())
                        }
                    };
                    tracing::warn!(delivery = %row.id, attempts, status, error = %reason, "mail not delivered");
                    mail::Entity::update_many()
                        .col_expr(mail::Column::Status, Expr::value(status))
                        .col_expr(mail::Column::NextAttemptAt, Expr::value(next))
                        .col_expr(mail::Column::LastError, Expr::value(reason))
                        .filter(mail::Column::Id.eq(row.id.as_str()))
                        .exec(&txn)
                        .await?;
                }
            }
        }
        txn.commit().await?;
        if sent > 0 {
            self.inner.relay.wake();
        }
        Ok(())
    }

    /// Delay before attempt `attempts + 1`: base × 2^(attempts − 1), at most the maximum.
    pub fn backoff(&self, attempts: i32) -> chrono::Duration {
        let t = self.timing();
        chrono::Duration::from_std(backoff_delay(t.retry_base, t.retry_max, attempts))
            .unwrap_or_default()
    }
}

/// `base × 2^(attempts − 1)`, at most `max`.
pub fn backoff_delay(base: Duration, max: Duration, attempts: i32) -> Duration {
    let factor = 2u32.saturating_pow(u32::try_from(attempts.saturating_sub(1)).unwrap_or(0));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    #[test]
    fn retries_back_off_exponentially_up_to_the_maximum() {
        let (base, max) = (
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(60),
        );
        let delays: Vec<u64> = (1..=8)
            .map(|a| super::backoff_delay(base, max, a).as_secs())
            .collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(super::backoff_delay(base, max, i32::MAX).as_secs(), 60);
    }
}
