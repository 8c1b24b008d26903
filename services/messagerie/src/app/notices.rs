//! Notices: the promoteur's delayed, coalesced "nouveau message" email; the instructeurs'
//! notices per their preferences per procedure (instant email and/or daily digest at 9:00
//! Europe/Paris on weekdays); the preferences themselves.

use chrono::{DateTime, Datelike as _, NaiveDate, Timelike as _, Utc};
use futures::StreamExt as _;
use minijinja::context;
use mst_kit::error::ApiError;
use mst_proto::events as ev;
use mst_proto::instruction as ipb;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::queue::NewMail;
use super::{AppError, Messagerie, french_datetime, paris};
use crate::store::{dossier, notice, notice_request, preference};

/// Notice requests read per pass.
pub const RESOLVE_BATCH: usize = 64;
/// Requests asked of instruction at once.
pub const RESOLVE_CONCURRENCY: usize = 8;
/// Longest wait before asking instruction again.
const RESOLVE_RETRY_MAX_SECS: i64 = 60;

/// What an instructeur notice is about.
#[derive(Clone, Copy)]
struct About<'a> {
    number: i64,
    procedure_id: &'a str,
    title: &'a str,
    source: &'a str,
    kind: Kind,
    at: DateTime<Utc>,
}

/// Kinds of instructeur notices (mst.messagerie.v1.NoticeKind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A dossier was deposited in the instructeur's groupe (default: digest).
    NewDossier,
    /// A promoteur posted a message on a followed dossier (default: instant).
    NewMessage,
    /// An expert gave an avis the instructeur asked for (default: instant).
    NewAvis,
    /// The promoteur modified a followed dossier en construction (default: digest).
    DossierModified,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [
        Kind::NewDossier,
        Kind::NewMessage,
        Kind::NewAvis,
        Kind::DossierModified,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewDossier => "new_dossier",
            Kind::NewMessage => "new_message",
            Kind::NewAvis => "new_avis",
            Kind::DossierModified => "dossier_modified",
        }
    }

    /// From a stored name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// (instant, digest) when never changed.
    pub fn default_setting(self) -> (bool, bool) {
        match self {
            Kind::NewDossier | Kind::DossierModified => (false, true),
            Kind::NewMessage | Kind::NewAvis => (true, false),
        }
    }

    /// From the proto enum.
    pub fn from_pb(k: i32) -> Option<Kind> {
        use mst_proto::messagerie::NoticeKind as N;
        match N::try_from(k).ok()? {
            N::NewDossier => Some(Kind::NewDossier),
            N::NewMessage => Some(Kind::NewMessage),
            N::NewAvis => Some(Kind::NewAvis),
            N::DossierModified => Some(Kind::DossierModified),
            N::Unspecified => None,
        }
    }

    /// To the proto enum.
    pub fn to_pb(self) -> i32 {
        use mst_proto::messagerie::NoticeKind as N;
        (match self {
            Kind::NewDossier => N::NewDossier,
            Kind::NewMessage => N::NewMessage,
            Kind::NewAvis => N::NewAvis,
            Kind::DossierModified => N::DossierModified,
        }) as i32
    }

    /// Title in the email (French).
    fn title(self) -> &'static str {
        match self {
            Kind::NewDossier => "Nouveau dossier déposé",
            Kind::NewMessage => "Nouveau message",
            Kind::NewAvis => "Nouvel avis d'expert",
            Kind::DossierModified => "Dossier modifié par l'usager",
        }
    }

    /// Sentence in the email (French).
    fn sentence(self) -> &'static str {
        match self {
            Kind::NewDossier => "Un nouveau dossier a été déposé dans votre groupe instructeur.",
            Kind::NewMessage => {
                "Un nouveau message a été posté dans la messagerie d'un dossier que vous suivez."
            }
            Kind::NewAvis => "Un expert a donné l'avis que vous aviez demandé.",
            Kind::DossierModified => {
                "L'usager a modifié un dossier en construction que vous suivez."
            }
        }
    }
}

/// Whether the daily digest is due at `now`: a weekday, 9:00 or later in Europe/Paris, and not
/// yet sent on that (Paris) day.
pub fn digest_due(now: DateTime<Utc>, last_sent_on: Option<NaiveDate>) -> bool {
    let local = paris(now);
    local.weekday().num_days_from_monday() < 5
        && local.hour() >= 9
        && last_sent_on != Some(local.date_naive())
}

/// The day whose digest counts as sent when the scheduler starts at `now`: today once 9:00 has
/// passed (a restart in the afternoon does not send a second digest), else none.
pub fn digest_day_at_start(now: DateTime<Utc>) -> Option<NaiveDate> {
    let local = paris(now);
    (local.hour() >= 9).then(|| local.date_naive())
}

/// One instructeur's settings for one procedure: (kind, instant, digest) for every kind.
pub type Settings = Vec<(Kind, bool, bool)>;

fn parse_settings(stored: &str) -> Settings {
    Kind::ALL
        .into_iter()
        .map(|k| {
            let (mut instant, mut digest) = k.default_setting();
            for line in stored.lines() {
                if let Some((name, flags)) = line.split_once('=')
                    && name == k.as_str()
                {
                    let mut f = flags.split(',');
                    instant = f.next() == Some("1");
                    digest = f.next() == Some("1");
                }
            }
            (k, instant, digest)
        })
        .collect()
}

fn format_settings(settings: &Settings) -> String {
    settings
        .iter()
        .map(|(k, i, d)| format!("{}={},{}", k.as_str(), u8::from(*i), u8::from(*d)))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Messagerie {
    /// The (instant, digest) setting of `email` for `kind` on `procedure_id`.
    async fn setting<C: ConnectionTrait>(
        &self,
        db: &C,
        email: &str,
        procedure_id: &str,
        kind: Kind,
    ) -> Result<(bool, bool), AppError> {
        let row = preference::Entity::find_by_id((email.to_owned(), procedure_id.to_owned()))
            .one(db)
            .await?;
        let settings = parse_settings(row.as_ref().map(|r| r.settings.as_str()).unwrap_or(""));
        Ok(settings
            .into_iter()
            .find(|(k, _, _)| *k == kind)
            .map(|(_, i, d)| (i, d))
            .unwrap_or(kind.default_setting()))
    }

    /// The instructeurs of a dossier's groupe (with their follow flag), from instruction.
    async fn dossier_instructeurs(
        &self,
        number: i64,
    ) -> Result<Vec<(String, bool)>, tonic::Status> {
        let mut client = self.inner.instruction.clone();
        let answer = client
            .list_dossier_instructeurs(ipb::ListDossierInstructeursRequest { number })
            .await?
            .into_inner();
        Ok(answer
            .instructeurs
            .into_iter()
            .map(|i| (i.email.to_lowercase(), i.following))
            .collect())
    }

    /// Tells the instructeurs concerned by `kind` on dossier `number`, per their preferences:
    /// `only` names the one instructeur concerned (avis): told at once; else the followers (or,
    /// for a new dossier, every instructeur of the groupe), whom instruction knows: the request
    /// is recorded in `txn` and resolved after the commit ([`Self::resolve_notice_requests`]),
    /// so the event stream never waits on instruction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn notice_instructeurs<C: ConnectionTrait>(
        &self,
        txn: &C,
        number: i64,
        procedure: Option<&ev::ProcedureRef>,
        source: &str,
        kind: Kind,
        only: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let procedure_id = procedure.map(|p| p.id.clone()).unwrap_or_default();
        let title = procedure
            .map(|p| {
                if p.title.is_empty() {
                    p.id.clone()
                } else {
                    p.title.clone()
                }
            })
            .unwrap_or_default();
        let about = About {
            number,
            procedure_id: &procedure_id,
            title: &title,
            source,
            kind,
            at,
        };
        match only {
            Some(email) => {
                self.deliver_notices(txn, &super::distinct_recipients([email]), &about)
                    .await
            }
            None => {
                notice_request::Entity::insert(notice_request::ActiveModel {
                    id: Set(uuid::Uuid::now_v7().to_string()),
                    dedup_key: Set(format!("{}:{source}", kind.as_str())),
                    kind: Set(kind.as_str().to_owned()),
                    number: Set(number),
                    procedure_id: Set(procedure_id.clone()),
                    procedure_title: Set(title.clone()),
                    source_event_id: Set(source.to_owned()),
                    occurred_at: Set(at),
                    attempts: Set(0),
                    last_error: Set(String::new()),
                    next_attempt_at: Set(Utc::now()),
                    trace_context: Set(serde_json::to_string(
                        &mst_bus::trace::current_context_headers(),
                    )
                    .unwrap_or_default()),
                })
                .on_conflict_do_nothing_on([notice_request::Column::DedupKey])
                .exec_without_returning(txn)
                .await?;
                Ok(())
            }
        }
    }

    /// Queues the instant email and/or the digest line of each of `recipients`, per their
    /// preferences for the procedure.
    async fn deliver_notices<C: ConnectionTrait>(
        &self,
        txn: &C,
        recipients: &[String],
        about: &About<'_>,
    ) -> Result<(), AppError> {
        let About {
            number,
            procedure_id,
            title,
            source,
            kind,
            at,
        } = *about;
        for r in recipients {
            let (instant, digest) = self.setting(txn, r, procedure_id, kind).await?;
            if instant {
                let rendered = self.render(
                    "notice",
                    context! {
                        numero => number,
                        demarche => title,
                        titre => kind.title(),
                        phrase => kind.sentence(),
                    },
                )?;
                self.enqueue_mail(
                    txn,
                    NewMail {
                        dedup_key: format!("{source}:{r}"),
                        recipient: r,
                        rendered: &rendered,
                        number: Some(number),
                        source_event_ids: vec![source.to_owned()],
                    },
                )
                .await?;
            }
            if digest {
                self.insert_notice(
                    txn,
                    notice::DIGEST,
                    r,
                    kind.as_str(),
                    number,
                    procedure_id,
                    title,
                    source,
                    at,
                    at,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Wakes the notice resolver (after a commit that recorded requests).
    pub fn wake_resolver(&self) {
        self.inner.wake_resolver.notify_one();
    }

    /// Resolves due notice requests until none is left or `shutdown`; then waits for a wake-up
    /// or the poll interval.
    pub async fn run_resolver(self, shutdown: CancellationToken) {
        let this = &self;
        self.work(
            "notice resolver",
            &self.inner.wake_resolver,
            &shutdown,
            || async move {
                this.resolve_notice_requests()
                    .await
                    .map(|due| due == RESOLVE_BATCH)
            },
        )
        .await;
    }

    /// One pass over the due notice requests (at most [`RESOLVE_BATCH`], oldest first, asked of
    /// instruction [`RESOLVE_CONCURRENCY`] at a time); returns how many were due. A request is
    /// deleted in the transaction that queues its notices, so a crash or a second replica never
    /// tells anyone twice (and the notices' own keys would refuse a second copy).
    pub async fn resolve_notice_requests(&self) -> Result<usize, AppError> {
        let due = notice_request::Entity::find()
            .filter(notice_request::Column::NextAttemptAt.lte(Utc::now()))
            .order_by_asc(notice_request::Column::Id)
            .limit(RESOLVE_BATCH as u64)
            .all(self.db())
            .await?;
        let count = due.len();
        let delivered: usize = futures::stream::iter(due)
            .map(|request| async move {
                match self.resolve_one(&request).await {
                    Ok(done) => usize::from(done),
                    Err(error) => {
                        tracing::warn!(%error, request = %request.id, "notice resolver: cannot record");
                        0
                    }
                }
            })
            .buffer_unordered(RESOLVE_CONCURRENCY)
            .fold(0, |sum, n| async move { sum + n })
            .await;
        if delivered > 0 {
            self.wake_sender();
        }
        Ok(count)
    }

    /// Resolves one request; true when its notices were queued now.
    async fn resolve_one(&self, request: &notice_request::Model) -> Result<bool, AppError> {
        let span = tracing::info_span!(
            "notice.resolve",
            number = request.number,
            kind = %request.kind,
            source = %request.source_event_id,
        );
        let parent: std::collections::HashMap<String, String> =
            serde_json::from_str(&request.trace_context).unwrap_or_default();
        mst_bus::trace::set_parent_from_map(&span, &parent);
        async {
            let Some(kind) = Kind::parse(&request.kind) else {
                tracing::error!(kind = %request.kind, "unknown notice kind: request dropped");
                self.drop_request(&request.id).await?;
                return Ok(false);
            };
            let instructeurs = match self.dossier_instructeurs(request.number).await {
                Ok(list) => list,
                Err(status) if status.code() == tonic::Code::NotFound => {
                    // Deleted since (or never routed): nobody to tell.
                    tracing::info!(
                        number = request.number,
                        "dossier unknown to instruction: notice dropped"
                    );
                    self.drop_request(&request.id).await?;
                    return Ok(false);
                }
                Err(status) => {
                    let attempts = request.attempts.saturating_add(1);
                    let retry = self
                        .backoff(attempts)
                        .min(chrono::Duration::seconds(RESOLVE_RETRY_MAX_SECS));
                    tracing::warn!(
                        code = ?status.code(),
                        error = status.message(),
                        attempts,
                        "instruction ListDossierInstructeurs failed; notice retried later"
                    );
                    notice_request::Entity::update_many()
                        .col_expr(notice_request::Column::Attempts, Expr::value(attempts))
                        .col_expr(
                            notice_request::Column::LastError,
                            Expr::value(format!("{:?}: {}", status.code(), status.message())),
                        )
                        .col_expr(
                            notice_request::Column::NextAttemptAt,
                            Expr::value(Utc::now() + retry),
                        )
                        .filter(notice_request::Column::Id.eq(request.id.as_str()))
                        .exec(self.db())
                        .await?;
                    return Ok(false);
                }
            };
            let recipients: Vec<String> = instructeurs
                .into_iter()
                .filter(|(_, following)| kind == Kind::NewDossier || *following)
                .map(|(email, _)| email)
                .collect();
            let txn = mst_bus::db::begin_write(self.db()).await?;
            let taken = notice_request::Entity::delete_by_id(request.id.clone())
                .exec(&txn)
                .await?;
            if taken.rows_affected == 0 {
                // Another replica resolved it.
                txn.rollback().await?;
                return Ok(false);
            }
            let about = About {
                number: request.number,
                procedure_id: &request.procedure_id,
                title: &request.procedure_title,
                source: &request.source_event_id,
                kind,
                at: request.occurred_at,
            };
            self.deliver_notices(&txn, &recipients, &about).await?;
            txn.commit().await?;
            Ok(true)
        }
        .instrument(span)
        .await
    }

    async fn drop_request(&self, id: &str) -> Result<(), AppError> {
        notice_request::Entity::delete_by_id(id.to_owned())
            .exec(self.db())
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_notice<C: ConnectionTrait>(
        &self,
        txn: &C,
        channel: &str,
        recipient: &str,
        kind: &str,
        number: i64,
        procedure_id: &str,
        procedure_title: &str,
        source: &str,
        at: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> Result<(), AppError> {
        notice::Entity::insert(notice::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            dedup_key: Set(format!("{channel}:{source}:{recipient}")),
            channel: Set(channel.into()),
            recipient: Set(recipient.into()),
            kind: Set(kind.into()),
            number: Set(number),
            procedure_id: Set(procedure_id.into()),
            procedure_title: Set(procedure_title.into()),
            source_event_id: Set(source.into()),
            created_at: Set(at),
            due_at: Set(due),
            mail_id: Set(None),
        })
        .on_conflict_do_nothing_on([notice::Column::DedupKey])
        .exec_without_returning(txn)
        .await?;
        Ok(())
    }

    /// Records that `recipients` must hear of a new message on `row`'s dossier once the
    /// coalescing delay has passed (counted from the first message not yet emailed).
    pub(crate) async fn schedule_message_notices<C: ConnectionTrait>(
        &self,
        txn: &C,
        row: &dossier::Model,
        recipients: &[String],
        source: &str,
        at: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let due = Utc::now()
            + chrono::Duration::from_std(self.timing().message_delay).unwrap_or_default();
        for r in recipients {
            self.insert_notice(
                txn,
                notice::MESSAGE,
                r,
                Kind::NewMessage.as_str(),
                row.number,
                &row.procedure_id,
                &row.procedure_title,
                source,
                at,
                due,
            )
            .await?;
        }
        Ok(())
    }

    /// Turns due "nouveau message" notices into one email per (recipient, dossier); returns the
    /// number of emails queued.
    pub async fn flush_message_notices(&self) -> Result<usize, AppError> {
        let now = Utc::now();
        let due = notice::Entity::find()
            .filter(notice::Column::Channel.eq(notice::MESSAGE))
            .filter(notice::Column::MailId.is_null())
            .filter(notice::Column::DueAt.lte(now))
            .order_by_asc(notice::Column::CreatedAt)
            .all(self.db())
            .await?;
        let mut groups: Vec<(String, i64)> = Vec::new();
        for n in &due {
            let key = (n.recipient.clone(), n.number);
            if !groups.contains(&key) {
                groups.push(key);
            }
        }
        let mut queued = 0;
        for (recipient, number) in groups {
            let txn = mst_bus::db::begin_write(self.db()).await?;
            // Every pending notice of the pair, due or not: one email for all of them.
            let pending = notice::Entity::find()
                .filter(notice::Column::Channel.eq(notice::MESSAGE))
                .filter(notice::Column::MailId.is_null())
                .filter(notice::Column::Recipient.eq(recipient.as_str()))
                .filter(notice::Column::Number.eq(number))
                .order_by_asc(notice::Column::CreatedAt)
                .all(&txn)
                .await?;
            let Some(first) = pending.first() else {
                txn.rollback().await?;
                continue;
            };
            let rendered = self.render(
                "nouveau_message",
                context! {
                    numero => number,
                    demarche => first.procedure_title.clone(),
                    count => pending.len(),
                },
            )?;
            let dedup_key = format!("message:{}:{recipient}", first.source_event_id);
            let inserted = self
                .enqueue_mail(
                    &txn,
                    NewMail {
                        dedup_key,
                        recipient: &recipient,
                        rendered: &rendered,
                        number: Some(number),
                        source_event_ids: pending
                            .iter()
                            .map(|n| n.source_event_id.clone())
                            .collect(),
                    },
                )
                .await?;
            let Some(mail_id) = inserted else {
                txn.rollback().await?;
                continue;
            };
            notice::Entity::update_many()
                .col_expr(notice::Column::MailId, Expr::value(Some(mail_id)))
                .filter(notice::Column::Id.is_in(pending.iter().map(|n| n.id.clone())))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            queued += 1;
        }
        if queued > 0 {
            self.wake_sender();
        }
        Ok(queued)
    }

    /// Sends every pending digest notice, one email per instructeur listing them; returns the
    /// number of digests queued. Runs by itself at 9:00 Europe/Paris on weekdays; tests and
    /// operators may call it at any time (nothing is ever sent twice).
    pub async fn run_digest(&self) -> Result<usize, AppError> {
        let now = Utc::now();
        let pending = notice::Entity::find()
            .filter(notice::Column::Channel.eq(notice::DIGEST))
            .filter(notice::Column::MailId.is_null())
            .filter(notice::Column::CreatedAt.lte(now))
            .order_by_asc(notice::Column::CreatedAt)
            .all(self.db())
            .await?;
        let mut recipients: Vec<String> = pending.iter().map(|n| n.recipient.clone()).collect();
        recipients.sort();
        recipients.dedup();
        let mut queued = 0;
        for r in recipients {
            let mine: Vec<&notice::Model> = pending.iter().filter(|n| n.recipient == r).collect();
            let Some(first) = mine.first() else { continue };
            // One line per (kind, dossier): a day of autosaves is one "dossier modifié" line.
            let mut lines: Vec<(&str, i64, &str, usize, DateTime<Utc>)> = Vec::new();
            for n in &mine {
                match lines
                    .iter_mut()
                    .find(|l| l.0 == n.kind.as_str() && l.1 == n.number)
                {
                    Some(line) => {
                        line.3 += 1;
                        line.4 = line.4.max(n.created_at);
                    }
                    None => lines.push((&n.kind, n.number, &n.procedure_title, 1, n.created_at)),
                }
            }
            let items: Vec<minijinja::Value> = lines
                .iter()
                .map(|(kind, number, title, count, last)| {
                    context! {
                        titre => Kind::parse(kind).map(Kind::title).unwrap_or("Activité"),
                        numero => number,
                        demarche => title,
                        count => count,
                        date => french_datetime(*last),
                    }
                })
                .collect();
            let rendered = self.render(
                "digest",
                context! { date => paris(now).format("%d/%m/%Y").to_string(), items => items },
            )?;
            let dedup_key = format!("digest:{}:{r}", first.id);
            let txn = mst_bus::db::begin_write(self.db()).await?;
            let inserted = self
                .enqueue_mail(
                    &txn,
                    NewMail {
                        dedup_key,
                        recipient: &r,
                        rendered: &rendered,
                        number: None,
                        source_event_ids: mine.iter().map(|n| n.source_event_id.clone()).collect(),
                    },
                )
                .await?;
            let Some(mail_id) = inserted else {
                // Another replica took them first.
                txn.rollback().await?;
                continue;
            };
            let marked = notice::Entity::update_many()
                .col_expr(notice::Column::MailId, Expr::value(Some(mail_id)))
                .filter(notice::Column::Id.is_in(mine.iter().map(|n| n.id.clone())))
                .filter(notice::Column::MailId.is_null())
                .exec(&txn)
                .await?;
            if marked.rows_affected != mine.len() as u64 {
                // Another replica took them first.
                txn.rollback().await?;
                continue;
            }
            txn.commit().await?;
            queued += 1;
        }
        if queued > 0 {
            self.wake_sender();
        }
        Ok(queued)
    }

    /// Flushes due message notices every poll and runs the digest at 9:00 Europe/Paris on
    /// weekdays, until `shutdown`.
    pub async fn run_scheduler(self, shutdown: CancellationToken) {
        // Started after 9:00: today's digest time has passed; the next one is tomorrow's.
        let mut last_digest = digest_day_at_start(Utc::now());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.timing().poll) => {}
            }
            if let Err(error) = self.flush_message_notices().await {
                tracing::warn!(%error, "cannot flush message notices");
            }
            let now = Utc::now();
            if self.timing().digest_scheduler && digest_due(now, last_digest) {
                match self.run_digest().await {
                    Ok(n) => {
                        tracing::info!(digests = n, "daily digest sent");
                        last_digest = Some(paris(now).date_naive());
                    }
                    Err(error) => tracing::warn!(%error, "daily digest failed; will retry"),
                }
            }
        }
    }

    /// The preferences of `email` for `procedure_id` (defaults filled in) and their version.
    pub async fn preferences(
        &self,
        email: &str,
        procedure_id: &str,
    ) -> Result<(Settings, i64), AppError> {
        let row = preference::Entity::find_by_id((email.to_owned(), procedure_id.to_owned()))
            .one(self.db())
            .await?;
        Ok(match row {
            Some(r) => (parse_settings(&r.settings), r.version),
            None => (parse_settings(""), 0),
        })
    }

    /// Replaces the preferences of `email` for `procedure_id` at `expected_version`.
    pub async fn update_preferences(
        &self,
        email: &str,
        procedure_id: &str,
        expected_version: i64,
        changes: &[(Kind, bool, bool)],
    ) -> Result<(Settings, i64), AppError> {
        let txn = mst_bus::db::begin_write(self.db()).await?;
        let row = preference::Entity::find_by_id((email.to_owned(), procedure_id.to_owned()))
            .one(&txn)
            .await?;
        let current = row.as_ref().map(|r| r.version).unwrap_or(0);
        if current != expected_version {
            txn.rollback().await?;
            return Err(ApiError::VersionConflict {
                resource: "préférences",
                id: procedure_id.to_owned(),
                expected: expected_version,
                current,
            }
            .into());
        }
        let settings: Settings = Kind::ALL
            .into_iter()
            .map(|k| {
                changes
                    .iter()
                    .find(|(c, _, _)| *c == k)
                    .copied()
                    .unwrap_or_else(|| {
                        let (i, d) = k.default_setting();
                        (k, i, d)
                    })
            })
            .collect();
        let version = current + 1;
        let am = preference::ActiveModel {
            email: Set(email.to_owned()),
            procedure_id: Set(procedure_id.to_owned()),
            settings: Set(format_settings(&settings)),
            version: Set(version),
        };
        if row.is_some() {
            preference::Entity::update(am).exec(&txn).await?;
        } else {
            preference::Entity::insert(am)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok((settings, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_due_at_nine_paris_time_on_weekdays_once_a_day() {
        use chrono::TimeZone as _;
        // Friday 27 November 2026, winter time (UTC+1): 9:00 Paris = 8:00 UTC.
        let before = Utc.with_ymd_and_hms(2026, 11, 27, 7, 59, 0).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        assert!(!digest_due(before, None));
        assert!(digest_due(at, None));
        let friday = NaiveDate::from_ymd_opt(2026, 11, 27);
        assert!(!digest_due(at, friday), "once a day");
        assert!(digest_due(at, NaiveDate::from_ymd_opt(2026, 11, 26)));
        // Saturday and Sunday: never.
        let saturday = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
        assert!(!digest_due(saturday, friday));
        // Summer time (UTC+2): 9:00 Paris = 7:00 UTC.
        let summer = Utc.with_ymd_and_hms(2026, 6, 15, 7, 0, 0).unwrap();
        assert!(digest_due(summer, None));
        assert!(!digest_due(summer - chrono::Duration::minutes(1), None));
        // A start in the afternoon does not send today's digest again; a start at dawn does.
        assert_eq!(digest_day_at_start(at), friday);
        assert_eq!(digest_day_at_start(before), None);
    }

    #[test]
    fn settings_round_trip_and_default() {
        let defaults = parse_settings("");
        assert_eq!(defaults[0], (Kind::NewDossier, false, true));
        assert_eq!(defaults[1], (Kind::NewMessage, true, false));
        let mut changed = defaults.clone();
        changed[1] = (Kind::NewMessage, false, true);
        assert_eq!(parse_settings(&format_settings(&changed)), changed);
    }
}
