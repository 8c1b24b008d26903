//! Use cases of the messagerie, transport-agnostic: event handlers that queue emails and write
//! thread entries ([`events`]), the outgoing queue and its sender ([`queue`]), the threads
//! ([`thread`]), the notices (delayed "nouveau message" emails, digests, preferences —
//! [`notices`]), and the contact of brouillon owners, notifications and delivery log
//! ([`contact`]).

pub mod contact;
pub mod events;
pub mod notices;
pub mod queue;
pub mod thread;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike as _, NaiveDate, TimeZone as _, Utc};
use mst_bus::RelayHandle;
use mst_kit::auth::ServiceToken;
use mst_kit::error::ApiError;
use mst_kit::files::FileStore;
use mst_proto::events as ev;
use mst_proto::instruction::instruction_internal_service_client::InstructionInternalServiceClient;
use sea_orm::DatabaseConnection;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::smtp::Mailer;
use crate::templates::Catalogue;

/// Producer name in event metadata.
pub const PRODUCER: &str = "messagerie";

/// Timing and sender settings the use cases need.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Delay before a new instructeur message is emailed to the promoteur (coalescing window).
    pub message_delay: Duration,
    /// First retry delay after a failed delivery (doubles each time).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts before a delivery is marked failed.
    pub max_attempts: i32,
    /// How often the sender and the notice scheduler look for due work.
    pub poll: Duration,
    /// Whether the daily digest runs by itself at 9:00 Europe/Paris on weekdays.
    pub digest_scheduler: bool,
}

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// As answered to the client.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Database error.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A template failed to render.
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Api(e) => e,
            AppError::Db(e) => e.into(),
            other => ApiError::Unexpected(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<AppError> for tonic::Status {
    fn from(e: AppError) -> Self {
        ApiError::from(e).into()
    }
}

/// Client of instruction's internal API, with this service's token.
pub type InstructionClient =
    InstructionInternalServiceClient<InterceptedService<Channel, ServiceToken>>;

struct Inner {
    db: DatabaseConnection,
    relay: RelayHandle,
    catalogue: Catalogue,
    mailer: Mailer,
    files: FileStore,
    instruction: InstructionClient,
    timing: Timing,
    mail_domain: String,
    wake_sender: tokio::sync::Notify,
    wake_resolver: tokio::sync::Notify,
}

/// The messagerie's use cases (cheap to clone).
#[derive(Clone)]
pub struct Messagerie {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Messagerie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Messagerie")
    }
}

impl Messagerie {
    /// Use cases over `db`, sending with `mailer`.
    pub fn new(
        db: DatabaseConnection,
        relay: RelayHandle,
        mailer: Mailer,
        files: FileStore,
        instruction: InstructionClient,
        timing: Timing,
    ) -> Self {
        let mail_domain = mailer.from().email.domain().to_owned();
        Self {
            inner: Arc::new(Inner {
                db,
                relay,
                catalogue: Catalogue::new(),
                mailer,
                files,
                instruction,
                timing,
                mail_domain,
                wake_sender: tokio::sync::Notify::new(),
                wake_resolver: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    fn timing(&self) -> &Timing {
        &self.inner.timing
    }

    /// A background worker's loop: runs `pass` again while it reports more work (and no
    /// shutdown), then waits for `wake`, the poll interval or `shutdown`, until `shutdown`.
    /// `worker` names it in the logs.
    async fn work<F, Fut>(
        &self,
        worker: &str,
        wake: &tokio::sync::Notify,
        shutdown: &tokio_util::sync::CancellationToken,
        mut pass: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, AppError>>,
    {
        loop {
            loop {
                match pass().await {
                    Ok(true) if !shutdown.is_cancelled() => {}
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, worker, "cannot read the work due; retried at the next poll");
                        break;
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(self.timing().poll) => {}
            }
        }
        tracing::info!(worker, "stopped");
    }
}

/// Lower-cased, trimmed, distinct addresses in order.
pub fn distinct_recipients<'a>(emails: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in emails {
        let e = e.trim().to_lowercase();
        if !e.is_empty() && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// The time of an event, or now.
pub fn occurred_at(metadata: Option<&ev::EventMetadata>) -> DateTime<Utc> {
    metadata
        .and_then(|m| m.occurred_at.as_ref())
        .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .unwrap_or_else(Utc::now)
}

/// Offset of Europe/Paris at `at`: CET (+1 h), CEST (+2 h) from the last Sunday of March 01:00
/// UTC to the last Sunday of October 01:00 UTC (EU rule since 1996).
pub fn paris_offset(at: DateTime<Utc>) -> chrono::FixedOffset {
    fn last_sunday(year: i32, month: u32) -> NaiveDate {
        let mut d = NaiveDate::from_ymd_opt(year, month, 31).unwrap_or_default();
        while d.weekday() != chrono::Weekday::Sun {
            d = d.pred_opt().unwrap_or(d);
        }
        d
    }
    let year = at.year();
    let start = Utc.from_utc_datetime(
        &last_sunday(year, 3)
            .and_hms_opt(1, 0, 0)
            .unwrap_or_default(),
    );
    let end = Utc.from_utc_datetime(
        &last_sunday(year, 10)
            .and_hms_opt(1, 0, 0)
            .unwrap_or_default(),
    );
    let hours = if at >= start && at < end { 2 } else { 1 };
    chrono::FixedOffset::east_opt(hours * 3600).unwrap_or_else(|| chrono::Offset::fix(&Utc))
}

/// `at` in Paris time.
pub fn paris(at: DateTime<Utc>) -> DateTime<chrono::FixedOffset> {
    at.with_timezone(&paris_offset(at))
}

/// "27/11/2026" in Paris time.
pub fn french_date(at: DateTime<Utc>) -> String {
    paris(at).format("%d/%m/%Y").to_string()
}

/// "27/11/2026 à 10:05" in Paris time.
pub fn french_datetime(at: DateTime<Utc>) -> String {
    paris(at).format("%d/%m/%Y à %H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_time_follows_summer_time() {
        let winter = Utc.with_ymd_and_hms(2026, 1, 15, 8, 0, 0).unwrap();
        assert_eq!(paris(winter).format("%H:%M").to_string(), "09:00");
        let summer = Utc.with_ymd_and_hms(2026, 7, 15, 7, 0, 0).unwrap();
        assert_eq!(paris(summer).format("%H:%M").to_string(), "09:00");
        // 2026: summer time from Sunday 29 March 01:00 UTC to Sunday 25 October 01:00 UTC.
        let before = Utc.with_ymd_and_hms(2026, 3, 29, 0, 59, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
        assert_eq!(paris_offset(before).local_minus_utc(), 3600);
        assert_eq!(paris_offset(after).local_minus_utc(), 7200);
        let back = Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0).unwrap();
        assert_eq!(paris_offset(back).local_minus_utc(), 3600);
        assert_eq!(
            french_date(Utc.with_ymd_and_hms(2026, 12, 31, 23, 30, 0).unwrap()),
            "01/01/2027"
        );
    }

    #[test]
    fn recipients_are_lower_cased_and_distinct() {
        assert_eq!(
            distinct_recipients(["A@x.org", "a@x.org ", "", "b@y.org"]),
            vec!["a@x.org".to_owned(), "b@y.org".to_owned()]
        );
    }
}
