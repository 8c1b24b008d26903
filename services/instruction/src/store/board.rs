//! Persistence of the instructeur dashboard and lists: the dashboard counters and what each
//! dossier contributes to them (`dashboard_counters`, `dashboard_members`), the list query with
//! its keyset pagination, and the column preferences.
//!
//! Counters are maintained by [`sync_dossier`], called in the transaction of every change of a
//! dossier's status, archive flag, groupe or followers: it recomputes what the dossier contributes,
//! compares it with what it contributed (`dashboard_members`) and applies the difference. It is
//! idempotent, so calling it twice, or after a change that did not touch the buckets, is harmless.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{ExprTrait, Func, LikeExpr, OnConflict, Query, SimpleExpr};
use sea_orm::{Condition, ConnectionTrait, Order, QueryOrder, QuerySelect, QueryTrait, Set};

use super::{dossier, follow};
use crate::domain::Status;

/// `dashboard_counters`: one bucket of one procedure × groupe.
pub mod counter {
    use sea_orm::entity::prelude::*;

    /// A counter.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dashboard_counters")]
    pub struct Model {
        /// Procedure.
        #[sea_orm(primary_key, auto_increment = false)]
        pub procedure_id: String,
        /// Groupe ("" for dossiers routed to no groupe).
        #[sea_orm(primary_key, auto_increment = false)]
        pub groupe_id: String,
        /// `a_suivre`, `traites`, `tous` or `archives`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub bucket: String,
        /// Number of dossiers.
        pub n: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `dashboard_members`: the buckets a dossier is counted in.
pub mod member {
    use sea_orm::entity::prelude::*;

    /// What one dossier contributes.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dashboard_members")]
    pub struct Model {
        /// Dossier.
        #[sea_orm(primary_key, auto_increment = false)]
        pub dossier_number: i64,
        /// Procedure.
        pub procedure_id: String,
        /// Groupe ("" for none).
        pub groupe_id: String,
        /// [`super::Buckets`] bits.
        pub mask: i32,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `dashboard_suivis`: the « suivis » counter of one instructeur in one procedure × groupe.
pub mod suivi_counter {
    use sea_orm::entity::prelude::*;

    /// A counter.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dashboard_suivis")]
    pub struct Model {
        /// Instructeur (lower case).
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        /// Procedure.
        #[sea_orm(primary_key, auto_increment = false)]
        pub procedure_id: String,
        /// Groupe ("" for dossiers routed to no groupe).
        #[sea_orm(primary_key, auto_increment = false)]
        pub groupe_id: String,
        /// Number of dossiers.
        pub n: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `dashboard_suivis_members`: the instructeurs whose « suivis » a dossier is counted in.
pub mod suivi_member {
    use sea_orm::entity::prelude::*;

    /// One counted follow.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dashboard_suivis_members")]
    pub struct Model {
        /// Dossier.
        #[sea_orm(primary_key, auto_increment = false)]
        pub dossier_number: i64,
        /// Follower (lower case).
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        /// Procedure.
        pub procedure_id: String,
        /// Groupe ("" for none).
        pub groupe_id: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `column_preferences`: the list columns of an instructeur for a procedure.
pub mod column_preference {
    use sea_orm::entity::prelude::*;

    /// A saved choice.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "column_preferences")]
    pub struct Model {
        /// Instructeur (lower case).
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        /// Procedure.
        #[sea_orm(primary_key, auto_increment = false)]
        pub procedure_id: String,
        /// Column ids (JSON array), in order.
        pub columns: String,
        /// Last saved.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The maintained buckets a dossier can be counted in (suivis, per instructeur, is counted from
/// `follows` instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets(i32);

impl Buckets {
    /// Deposited, followed by nobody, not decided, not archived.
    pub const A_SUIVRE: i32 = 1;
    /// Decided, not archived.
    pub const TRAITES: i32 = 2;
    /// Deposited, not archived.
    pub const TOUS: i32 = 4;
    /// Archived.
    pub const ARCHIVES: i32 = 8;
    /// Every bucket with its stored name.
    pub const NAMED: [(i32, &'static str); 4] = [
        (Self::A_SUIVRE, "a_suivre"),
        (Self::TRAITES, "traites"),
        (Self::TOUS, "tous"),
        (Self::ARCHIVES, "archives"),
    ];

    /// The buckets of a dossier in `status` (brouillons and deleted dossiers are in none).
    pub fn of(status: Status, archived: bool, deleted: bool, followed: bool) -> Self {
        if !status.is_deposited() || deleted {
            return Self(0);
        }
        if archived {
            return Self(Self::ARCHIVES);
        }
        let mut bits = Self::TOUS;
        if status.is_decided() {
            bits |= Self::TRAITES;
        } else if !followed {
            bits |= Self::A_SUIVRE;
        }
        Self(bits)
    }

    /// Raw bits.
    pub const fn bits(self) -> i32 {
        self.0
    }
}

/// Adds `delta` to one instructeur's « suivis » counter (creating it at `delta`).
async fn bump_suivis<C: ConnectionTrait>(
    db: &C,
    m: &suivi_member::Model,
    delta: i64,
) -> Result<(), DbErr> {
    suivi_counter::Entity::insert(suivi_counter::ActiveModel {
        email: Set(m.email.clone()),
        procedure_id: Set(m.procedure_id.clone()),
        groupe_id: Set(m.groupe_id.clone()),
        n: Set(delta),
    })
    .on_conflict(
        OnConflict::columns([
            suivi_counter::Column::Email,
            suivi_counter::Column::ProcedureId,
            suivi_counter::Column::GroupeId,
        ])
        .value(
            suivi_counter::Column::N,
            Expr::col((suivi_counter::Entity, suivi_counter::Column::N)).add(delta),
        )
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Brings the « suivis » counters up to date with dossier `row`: each open follower of a
/// deposited, undecided, non-archived dossier counts it once.
async fn sync_suivis<C: ConnectionTrait>(
    db: &C,
    row: &dossier::Model,
    status: Option<Status>,
    followers: Vec<String>,
) -> Result<(), DbErr> {
    let counted = status.is_some_and(|s| s.is_deposited() && !s.is_decided())
        && !row.archived
        && !row.deleted;
    let groupe = row.groupe_id.clone().unwrap_or_default();
    let mut want: Vec<suivi_member::Model> = if counted {
        followers
            .into_iter()
            .map(|email| suivi_member::Model {
                dossier_number: row.number,
                email,
                procedure_id: row.procedure_id.clone(),
                groupe_id: groupe.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    want.sort_by(|a, b| a.email.cmp(&b.email));
    want.dedup_by(|a, b| a.email == b.email);
    let have = suivi_member::Entity::find()
        .filter(suivi_member::Column::DossierNumber.eq(row.number))
        .all(db)
        .await?;
    for old in have.iter().filter(|m| !want.contains(m)) {
        bump_suivis(db, old, -1).await?;
        suivi_member::Entity::delete_by_id((old.dossier_number, old.email.clone()))
            .exec(db)
            .await?;
    }
    for new in want.iter().filter(|m| !have.contains(m)) {
        bump_suivis(db, new, 1).await?;
        let model: suivi_member::ActiveModel = new.clone().into();
        suivi_member::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([
                    suivi_member::Column::DossierNumber,
                    suivi_member::Column::Email,
                ])
                .update_columns([
                    suivi_member::Column::ProcedureId,
                    suivi_member::Column::GroupeId,
                ])
                .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Adds `delta` to one counter (creating it at `delta`).
async fn bump<C: ConnectionTrait>(
    db: &C,
    procedure_id: &str,
    groupe_id: &str,
    bucket: &str,
    delta: i64,
) -> Result<(), DbErr> {
    counter::Entity::insert(counter::ActiveModel {
        procedure_id: Set(procedure_id.to_owned()),
        groupe_id: Set(groupe_id.to_owned()),
        bucket: Set(bucket.to_owned()),
        n: Set(delta),
    })
    .on_conflict(
        OnConflict::columns([
            counter::Column::ProcedureId,
            counter::Column::GroupeId,
            counter::Column::Bucket,
        ])
        .value(
            counter::Column::N,
            Expr::col((counter::Entity, counter::Column::N)).add(delta),
        )
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Brings the counters up to date with dossier `number` as it is now in `db` (its status, archive
/// flag, groupe, deletion and whether anybody follows it). Call it in the transaction that changed
/// the dossier, after the change; idempotent.
pub async fn sync_dossier<C: ConnectionTrait>(db: &C, number: i64) -> Result<(), DbErr> {
    let Some(row) = dossier::Entity::find_by_id(number).one(db).await? else {
        return Ok(());
    };
    let followers: Vec<String> = follow::Entity::find()
        .select_only()
        .column(follow::Column::Email)
        .filter(follow::Column::DossierNumber.eq(number))
        .filter(follow::Column::UnfollowedAt.is_null())
        .into_tuple()
        .all(db)
        .await?;
    sync_row(db, &row, followers).await
}

/// [`sync_dossier`] for `row` as it now is in `db`, its current `followers` (emails) in hand.
pub async fn sync_row<C: ConnectionTrait>(
    db: &C,
    row: &dossier::Model,
    followers: Vec<String>,
) -> Result<(), DbErr> {
    let number = row.number;
    let followed = !followers.is_empty();
    // An unknown stored status counts nowhere (the workflow refuses such rows anyway).
    let status = row.status.parse::<Status>().ok();
    sync_suivis(db, row, status, followers).await?;
    let now = status
        .map(|s| Buckets::of(s, row.archived, row.deleted, followed))
        .unwrap_or(Buckets(0));
    let groupe = row.groupe_id.clone().unwrap_or_default();
    let before = member::Entity::find_by_id(number).one(db).await?;
    let unchanged = match &before {
        Some(m) => {
            m.mask == now.bits() && m.procedure_id == row.procedure_id && m.groupe_id == groupe
        }
        None => now.bits() == 0,
    };
    if unchanged {
        return Ok(());
    }
    if let Some(m) = &before {
        for (bit, name) in Buckets::NAMED {
            if m.mask & bit != 0 {
                bump(db, &m.procedure_id, &m.groupe_id, name, -1).await?;
            }
        }
    }
    for (bit, name) in Buckets::NAMED {
        if now.bits() & bit != 0 {
            bump(db, &row.procedure_id, &groupe, name, 1).await?;
        }
    }
    if now.bits() == 0 {
        member::Entity::delete_by_id(number).exec(db).await?;
    } else {
        member::Entity::insert(member::ActiveModel {
            dossier_number: Set(number),
            procedure_id: Set(row.procedure_id.clone()),
            groupe_id: Set(groupe),
            mask: Set(now.bits()),
        })
        .on_conflict(
            OnConflict::column(member::Column::DossierNumber)
                .update_columns([
                    member::Column::ProcedureId,
                    member::Column::GroupeId,
                    member::Column::Mask,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// The dossiers `email` follows now (open follows). Before ending his follows in bulk, collect
/// them; after, [`sync_dossier`] each (they may have become « à suivre »).
pub async fn followed_numbers<C: ConnectionTrait>(db: &C, email: &str) -> Result<Vec<i64>, DbErr> {
    follow::Entity::find()
        .select_only()
        .column(follow::Column::DossierNumber)
        .filter(follow::Column::Email.eq(email))
        .filter(follow::Column::UnfollowedAt.is_null())
        .into_tuple()
        .all(db)
        .await
}

/// The maintained counters of these groupes (every groupe when `None`), optionally of one
/// procedure: a primary-key range read, independent of the number of dossiers.
pub async fn counters<C: ConnectionTrait>(
    db: &C,
    groupes: Option<&[String]>,
    procedure_id: Option<&str>,
) -> Result<Vec<counter::Model>, DbErr> {
    let mut q = counter::Entity::find();
    if let Some(groupes) = groupes {
        q = q.filter(counter::Column::GroupeId.is_in(groupes.iter().cloned()));
    }
    if let Some(p) = procedure_id {
        q = q.filter(counter::Column::ProcedureId.eq(p));
    }
    q.all(db).await
}

/// The maintained « suivis » counters of `email` in these groupes (every groupe when `None`),
/// optionally of one procedure: a primary-key range read, independent of the number of dossiers
/// and of how many he follows.
pub async fn suivis<C: ConnectionTrait>(
    db: &C,
    email: &str,
    groupes: Option<&[String]>,
    procedure_id: Option<&str>,
) -> Result<Vec<(String, String, i64)>, DbErr> {
    let mut q = suivi_counter::Entity::find().filter(suivi_counter::Column::Email.eq(email));
    if let Some(groupes) = groupes {
        q = q.filter(suivi_counter::Column::GroupeId.is_in(groupes.iter().cloned()));
    }
    if let Some(p) = procedure_id {
        q = q.filter(suivi_counter::Column::ProcedureId.eq(p));
    }
    Ok(q.all(db)
        .await?
        .into_iter()
        .map(|c| (c.procedure_id, c.groupe_id, c.n))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------------------------

/// Tab of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Deposited, followed by nobody, not decided, not archived.
    ASuivre,
    /// Followed by the caller, not decided, not archived.
    Suivis,
    /// Decided, not archived.
    Traites,
    /// Deposited, not archived.
    Tous,
    /// Archived.
    Archives,
}

/// Sort key of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Number.
    Number,
    /// First deposit.
    DepositedAt,
    /// Last change.
    UpdatedAt,
    /// Status name.
    Status,
    /// Title.
    Title,
    /// Structure name.
    StructureName,
}

impl SortKey {
    fn column(self) -> dossier::Column {
        match self {
            SortKey::Number => dossier::Column::Number,
            SortKey::DepositedAt => dossier::Column::DepositedAt,
            SortKey::UpdatedAt => dossier::Column::UpdatedAt,
            SortKey::Status => dossier::Column::Status,
            SortKey::Title => dossier::Column::Title,
            SortKey::StructureName => dossier::Column::StructureName,
        }
    }
}

/// The value of the sort key of the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum KeyValue {
    /// Number.
    Int(i64),
    /// Dates.
    At(DateTime<Utc>),
    /// Texts.
    Text(String),
}

impl KeyValue {
    /// The key of `row` under `key`.
    pub fn of(key: SortKey, row: &dossier::Model) -> Self {
        match key {
            SortKey::Number => KeyValue::Int(row.number),
            SortKey::DepositedAt => KeyValue::At(row.deposited_at.unwrap_or(row.created_at)),
            SortKey::UpdatedAt => KeyValue::At(row.updated_at),
            SortKey::Status => KeyValue::Text(row.status.clone()),
            SortKey::Title => KeyValue::Text(row.title.clone()),
            SortKey::StructureName => KeyValue::Text(row.structure_name.clone()),
        }
    }

    fn value(&self) -> sea_orm::Value {
        match self {
            KeyValue::Int(n) => (*n).into(),
            KeyValue::At(at) => (*at).into(),
            KeyValue::Text(s) => s.clone().into(),
        }
    }
}

/// A list query, already authorized: `groupes` are the groupes the caller may see.
#[derive(Debug, Clone)]
pub struct ListSpec {
    /// Procedure.
    pub procedure_id: String,
    /// Groupes to list (never empty).
    pub groupes: Vec<String>,
    /// The caller (suivis, followed by me).
    pub me: String,
    /// Tab.
    pub tab: Tab,
    /// Only these statuses (empty: all deposited ones).
    pub statuses: Vec<Status>,
    /// Only dossiers the caller follows.
    pub followed_by_me: bool,
    /// Deposited at or after.
    pub deposited_after: Option<DateTime<Utc>>,
    /// Deposited before.
    pub deposited_before: Option<DateTime<Utc>>,
    /// Words of the free text (lower case), each matching the number exactly or the title or
    /// structure name as a substring.
    pub words: Vec<String>,
    /// Sort key.
    pub sort: SortKey,
    /// Descending.
    pub descending: bool,
}

fn open_follows(email: Option<&str>) -> sea_orm::sea_query::SelectStatement {
    let mut q = Query::select();
    q.column(follow::Column::DossierNumber)
        .from(follow::Entity)
        .and_where(Expr::col(follow::Column::UnfollowedAt).is_null());
    if let Some(email) = email {
        q.and_where(ExprTrait::eq(Expr::col(follow::Column::Email), email));
    }
    q
}

fn undecided() -> [&'static str; 2] {
    [
        Status::EnConstruction.as_str(),
        Status::EnInstruction.as_str(),
    ]
}

fn decided() -> [&'static str; 3] {
    [
        Status::Accepte.as_str(),
        Status::Refuse.as_str(),
        Status::SansSuite.as_str(),
    ]
}

fn escape_like(word: &str) -> String {
    word.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn lower(col: dossier::Column) -> SimpleExpr {
    Func::lower(Expr::col((dossier::Entity, col))).into()
}

/// The filter of a list (without the cursor).
fn condition(spec: &ListSpec) -> Condition {
    let mut c = Condition::all()
        .add(dossier::Column::ProcedureId.eq(spec.procedure_id.clone()))
        .add(dossier::Column::GroupeId.is_in(spec.groupes.iter().cloned()))
        .add(dossier::Column::Status.ne(Status::Brouillon.as_str()))
        .add(dossier::Column::Deleted.eq(false));
    c = match spec.tab {
        Tab::ASuivre => c
            .add(dossier::Column::Archived.eq(false))
            .add(dossier::Column::Status.is_in(undecided()))
            .add(dossier::Column::Number.not_in_subquery(open_follows(None))),
        Tab::Suivis => c
            .add(dossier::Column::Archived.eq(false))
            .add(dossier::Column::Status.is_in(undecided()))
            .add(dossier::Column::Number.in_subquery(open_follows(Some(&spec.me)))),
        Tab::Traites => c
            .add(dossier::Column::Archived.eq(false))
            .add(dossier::Column::Status.is_in(decided())),
        Tab::Tous => c.add(dossier::Column::Archived.eq(false)),
        Tab::Archives => c.add(dossier::Column::Archived.eq(true)),
    };
    if !spec.statuses.is_empty() {
        c = c.add(dossier::Column::Status.is_in(spec.statuses.iter().map(|s| s.as_str())));
    }
    if spec.followed_by_me {
        c = c.add(dossier::Column::Number.in_subquery(open_follows(Some(&spec.me))));
    }
    if let Some(after) = spec.deposited_after {
        c = c.add(dossier::Column::DepositedAt.gte(after));
    }
    if let Some(before) = spec.deposited_before {
        c = c.add(dossier::Column::DepositedAt.lt(before));
    }
    for word in &spec.words {
        let pattern = format!("%{}%", escape_like(word));
        let mut any = Condition::any()
            .add(lower(dossier::Column::Title).like(LikeExpr::new(pattern.clone()).escape('\\')))
            .add(lower(dossier::Column::StructureName).like(LikeExpr::new(pattern).escape('\\')));
        if let Ok(n) = word.trim_start_matches(['n', '°', ' ']).parse::<i64>() {
            any = any.add(dossier::Column::Number.eq(n));
        }
        c = c.add(any);
    }
    c
}

impl ListSpec {
    /// Whether only the tab filters (no status, follow, date or text filter).
    pub fn is_whole_tab(&self) -> bool {
        self.statuses.is_empty()
            && !self.followed_by_me
            && self.deposited_after.is_none()
            && self.deposited_before.is_none()
            && self.words.is_empty()
    }
}

/// How many dossiers match `spec` (all pages), and whether that is only a lower bound.
///
/// A whole tab is read from the maintained counters (exact, a primary-key read). With filters,
/// the matching dossiers are counted up to `cap` only: beyond, the count says « more than
/// `cap` » (`true`) instead of reading every matching dossier of the procedure.
pub async fn count<C: ConnectionTrait>(
    db: &C,
    spec: &ListSpec,
    cap: u64,
) -> Result<(u64, bool), DbErr> {
    if spec.is_whole_tab() {
        let n: i64 = if spec.tab == Tab::Suivis {
            suivis(db, &spec.me, Some(&spec.groupes), Some(&spec.procedure_id))
                .await?
                .iter()
                .map(|(_, _, n)| n)
                .sum()
        } else {
            let bucket = match spec.tab {
                Tab::ASuivre => "a_suivre",
                Tab::Traites => "traites",
                Tab::Archives => "archives",
                Tab::Tous | Tab::Suivis => "tous",
            };
            counters(db, Some(&spec.groupes), Some(&spec.procedure_id))
                .await?
                .iter()
                .filter(|c| c.bucket == bucket)
                .map(|c| c.n)
                .sum()
        };
        return Ok((u64::try_from(n).unwrap_or(0), false));
    }
    let matching = dossier::Entity::find()
        .select_only()
        .column(dossier::Column::Number)
        .filter(condition(spec))
        .limit(cap + 1)
        .into_query();
    let mut q = Query::select();
    q.expr_as(Func::count(Expr::val(1)), "n")
        .from_subquery(matching, "matching");
    let n = db
        .query_one(&q)
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    let n = u64::try_from(n).unwrap_or(0);
    Ok(if n > cap { (cap, true) } else { (n, false) })
}

/// One page of `spec` after the row `(key, number)` (from the start when `None`), `limit` rows.
pub async fn page<C: ConnectionTrait>(
    db: &C,
    spec: &ListSpec,
    after: Option<&(KeyValue, i64)>,
    limit: u64,
) -> Result<Vec<dossier::Model>, DbErr> {
    let col = spec.sort.column();
    let mut q = dossier::Entity::find().filter(condition(spec));
    if let Some((key, number)) = after {
        let (k, n) = (
            Expr::col((dossier::Entity, col)),
            Expr::col((dossier::Entity, dossier::Column::Number)),
        );
        let v = key.value();
        let cursor = if spec.descending {
            Condition::any().add(k.clone().lt(v.clone())).add(
                Condition::all()
                    .add(ExprTrait::eq(k.clone(), v.clone()))
                    .add(n.clone().lt(*number)),
            )
        } else {
            Condition::any()
                .add(k.clone().gt(v.clone()))
                .add(Condition::all().add(ExprTrait::eq(k, v)).add(n.gt(*number)))
        };
        q = q.filter(cursor);
    }
    let order = if spec.descending {
        Order::Desc
    } else {
        Order::Asc
    };
    q.order_by(col, order.clone())
        .order_by(dossier::Column::Number, order)
        .limit(limit)
        .all(db)
        .await
}

/// Every procedure instruction knows.
pub async fn all_procedures<C: ConnectionTrait>(
    db: &C,
) -> Result<Vec<super::procedure::Model>, DbErr> {
    super::procedure::Entity::find().all(db).await
}

/// Current followers of these dossiers, as (number, email).
pub async fn followers_of<C: ConnectionTrait>(
    db: &C,
    numbers: &[i64],
) -> Result<Vec<(i64, String)>, DbErr> {
    follow::Entity::find()
        .select_only()
        .column(follow::Column::DossierNumber)
        .column(follow::Column::Email)
        .filter(follow::Column::DossierNumber.is_in(numbers.iter().copied()))
        .filter(follow::Column::UnfollowedAt.is_null())
        .order_by_asc(follow::Column::FollowedAt)
        .into_tuple()
        .all(db)
        .await
}

// ---------------------------------------------------------------------------------------------
// Column preferences
// ---------------------------------------------------------------------------------------------

/// The saved columns of `email` for a procedure (`None`: never saved).
pub async fn column_preferences<C: ConnectionTrait>(
    db: &C,
    email: &str,
    procedure_id: &str,
) -> Result<Option<Vec<String>>, DbErr> {
    let row = column_preference::Entity::find_by_id((email.to_owned(), procedure_id.to_owned()))
        .one(db)
        .await?;
    Ok(row.and_then(|r| serde_json::from_str(&r.columns).ok()))
}

/// Saves the columns of `email` for a procedure; an empty list forgets the choice.
pub async fn save_column_preferences<C: ConnectionTrait>(
    db: &C,
    email: &str,
    procedure_id: &str,
    columns: &[String],
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    if columns.is_empty() {
        column_preference::Entity::delete_by_id((email.to_owned(), procedure_id.to_owned()))
            .exec(db)
            .await?;
        return Ok(());
    }
    let json = serde_json::to_string(columns).map_err(|e| DbErr::Custom(e.to_string()))?;
    column_preference::Entity::insert(column_preference::ActiveModel {
        email: Set(email.to_owned()),
        procedure_id: Set(procedure_id.to_owned()),
        columns: Set(json),
        updated_at: Set(at),
    })
    .on_conflict(
        OnConflict::columns([
            column_preference::Column::Email,
            column_preference::Column::ProcedureId,
        ])
        .update_columns([
            column_preference::Column::Columns,
            column_preference::Column::UpdatedAt,
        ])
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}
