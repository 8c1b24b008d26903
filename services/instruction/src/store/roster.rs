//! Persistence of the roster: groupes instructeurs, their routing keys (`groupe_routes`), the
//! declared instructeurs and their memberships (tables of `mst_migrations::instruction`).
//!
//! Functions take any connection (the pool or a transaction), so that a use case decides what
//! commits together. The roster is small (about a hundred groupes, a few thousand instructeurs):
//! the use cases load whole tables where that keeps the logic simple (case- and
//! accent-insensitive matching is done in Rust, the same on SQLite and PostgreSQL).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, LikeExpr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement,
};

/// `groupes`.
pub mod groupe {
    use sea_orm::entity::prelude::*;

    /// A groupe instructeur.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "groupes")]
    pub struct Model {
        /// Groupe id (UUID v7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Label, unique.
        pub label: String,
        /// Whether dossiers matching no groupe are routed here.
        pub is_default: bool,
        /// Optimistic version, 1 at creation.
        pub version: i64,
        /// Created at.
        pub created_at: DateTimeUtc,
    }

    /// No relations declared (queries join explicitly).
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `groupe_routes`: the CPAM values and départements routed to a groupe.
pub mod groupe_route {
    use sea_orm::entity::prelude::*;

    /// One routing key of a groupe.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "groupe_routes")]
    pub struct Model {
        /// Groupe.
        #[sea_orm(primary_key, auto_increment = false)]
        pub groupe_id: String,
        /// [`super::KIND_CPAM`] or [`super::KIND_DEPARTEMENT`].
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        /// The CPAM answer value, or the INSEE code of the département.
        #[sea_orm(primary_key, auto_increment = false)]
        pub value: String,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `instructeurs`: the declared instructeurs.
pub mod instructeur {
    use sea_orm::entity::prelude::*;

    /// A declared instructeur.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "instructeurs")]
    pub struct Model {
        /// Email, lower-cased.
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        /// Name as given by the roster (may be empty).
        pub name: String,
        /// When first declared.
        pub added_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `groupe_instructeurs`: who belongs to which groupe.
pub mod groupe_instructeur {
    use sea_orm::entity::prelude::*;

    /// A membership.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "groupe_instructeurs")]
    pub struct Model {
        /// Groupe.
        #[sea_orm(primary_key, auto_increment = false)]
        pub groupe_id: String,
        /// Instructeur email.
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        /// When he joined the groupe.
        pub added_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `groupe_routes.kind` of a CPAM answer value.
pub const KIND_CPAM: &str = "cpam";
/// `groupe_routes.kind` of a département code.
pub const KIND_DEPARTEMENT: &str = "departement";

/// Rows per multi-row INSERT (well under SQLite's and PostgreSQL's bind-parameter limits).
const INSERT_BATCH: usize = 500;

/// Serialises roster writers. On PostgreSQL, a transaction-scoped advisory lock: the checks that
/// span rows (label unique without regard to case, one groupe per routing key, one default
/// groupe) then hold against concurrent admins. On SQLite, transactions begun with
/// `begin_write` already hold the database write lock.
pub async fn lock_roster<C: ConnectionTrait>(txn: &C) -> Result<(), DbErr> {
    /// Arbitrary key of the roster lock ("roster" in ASCII).
    const ROSTER_LOCK_KEY: i64 = 0x726f_7374_6572;
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [ROSTER_LOCK_KEY.into()],
        ))
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Groupes and routes
// ---------------------------------------------------------------------------------------------

/// A groupe by id.
pub async fn groupe<C: ConnectionTrait>(db: &C, id: &str) -> Result<Option<groupe::Model>, DbErr> {
    groupe::Entity::find_by_id(id.to_owned()).one(db).await
}

/// Every groupe, by label.
pub async fn all_groupes<C: ConnectionTrait>(db: &C) -> Result<Vec<groupe::Model>, DbErr> {
    groupe::Entity::find()
        .order_by_asc(groupe::Column::Label)
        .all(db)
        .await
}

/// Groupes by label, after `after` (keyset pagination), at most `limit`; only `ids` when given.
pub async fn groupes_page<C: ConnectionTrait>(
    db: &C,
    ids: Option<&[String]>,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<groupe::Model>, DbErr> {
    let mut q = groupe::Entity::find().order_by_asc(groupe::Column::Label);
    if let Some(ids) = ids {
        q = q.filter(groupe::Column::Id.is_in(ids.iter().cloned()));
    }
    if let Some(after) = after {
        q = q.filter(groupe::Column::Label.gt(after));
    }
    q.limit(limit).all(db).await
}

/// Groupes by ids (any order).
pub async fn groupes_by_ids<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
) -> Result<Vec<groupe::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    groupe::Entity::find()
        .filter(groupe::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await
}

/// The default groupe, if any.
pub async fn default_groupe<C: ConnectionTrait>(db: &C) -> Result<Option<groupe::Model>, DbErr> {
    groupe::Entity::find()
        .filter(groupe::Column::IsDefault.eq(true))
        .order_by_asc(groupe::Column::Label)
        .one(db)
        .await
}

/// Inserts a groupe row.
pub async fn insert_groupe<C: ConnectionTrait>(db: &C, row: groupe::Model) -> Result<(), DbErr> {
    groupe::Entity::insert(groupe::ActiveModel::from(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Writes the label, default flag and version of a groupe if its version is still `expected`;
/// returns whether it was.
pub async fn update_groupe<C: ConnectionTrait>(
    db: &C,
    id: &str,
    expected: i64,
    label: &str,
    is_default: bool,
) -> Result<bool, DbErr> {
    let done = groupe::Entity::update_many()
        .col_expr(groupe::Column::Label, Expr::value(label))
        .col_expr(groupe::Column::IsDefault, Expr::value(is_default))
        .col_expr(groupe::Column::Version, Expr::value(expected + 1))
        .filter(groupe::Column::Id.eq(id))
        .filter(groupe::Column::Version.eq(expected))
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

/// Clears the default flag of every groupe but `except` (bumping their versions).
pub async fn clear_default<C: ConnectionTrait>(db: &C, except: &str) -> Result<(), DbErr> {
    groupe::Entity::update_many()
        .col_expr(groupe::Column::IsDefault, Expr::value(false))
        .col_expr(
            groupe::Column::Version,
            Expr::col(groupe::Column::Version).add(1),
        )
        .filter(groupe::Column::IsDefault.eq(true))
        .filter(groupe::Column::Id.ne(except))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes a groupe, its routes and its memberships if its version is still `expected`; returns
/// whether it was. (The foreign keys cascade too, but SQLite enforces them only when the
/// connection enabled them.)
pub async fn delete_groupe<C: ConnectionTrait>(
    db: &C,
    id: &str,
    expected: i64,
) -> Result<bool, DbErr> {
    groupe_route::Entity::delete_many()
        .filter(groupe_route::Column::GroupeId.eq(id))
        .exec(db)
        .await?;
    groupe_instructeur::Entity::delete_many()
        .filter(groupe_instructeur::Column::GroupeId.eq(id))
        .exec(db)
        .await?;
    let done = groupe::Entity::delete_many()
        .filter(groupe::Column::Id.eq(id))
        .filter(groupe::Column::Version.eq(expected))
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

/// Whether a dossier is routed to the groupe.
pub async fn groupe_in_use<C: ConnectionTrait>(db: &C, id: &str) -> Result<bool, DbErr> {
    let q = Query::select()
        .expr(Expr::val(1))
        .from(Alias::new("dossiers"))
        .and_where(ExprTrait::eq(Expr::col(Alias::new("groupe_id")), id))
        .limit(1)
        .to_owned();
    Ok(db.query_one(&q).await?.is_some())
}

/// Every route of `kind`.
pub async fn routes_of_kind<C: ConnectionTrait>(
    db: &C,
    kind: &str,
) -> Result<Vec<groupe_route::Model>, DbErr> {
    groupe_route::Entity::find()
        .filter(groupe_route::Column::Kind.eq(kind))
        .all(db)
        .await
}

/// The groupes routed by exactly (`kind`, `value`).
pub async fn route_exact<C: ConnectionTrait>(
    db: &C,
    kind: &str,
    value: &str,
) -> Result<Vec<String>, DbErr> {
    Ok(groupe_route::Entity::find()
        .filter(groupe_route::Column::Kind.eq(kind))
        .filter(groupe_route::Column::Value.eq(value))
        .order_by_asc(groupe_route::Column::GroupeId)
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.groupe_id)
        .collect())
}

/// The routes of these groupes, by groupe id, each list in insertion-independent value order.
pub async fn routes_of<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
) -> Result<HashMap<String, Vec<groupe_route::Model>>, DbErr> {
    let mut out: HashMap<String, Vec<groupe_route::Model>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows = groupe_route::Entity::find()
        .filter(groupe_route::Column::GroupeId.is_in(ids.iter().cloned()))
        .order_by_asc(groupe_route::Column::Kind)
        .order_by_asc(groupe_route::Column::Value)
        .all(db)
        .await?;
    for r in rows {
        out.entry(r.groupe_id.clone()).or_default().push(r);
    }
    Ok(out)
}

/// Replaces the routes of `kind` of a groupe by `values`.
pub async fn replace_routes<C: ConnectionTrait>(
    db: &C,
    groupe_id: &str,
    kind: &str,
    values: &[String],
) -> Result<(), DbErr> {
    groupe_route::Entity::delete_many()
        .filter(groupe_route::Column::GroupeId.eq(groupe_id))
        .filter(groupe_route::Column::Kind.eq(kind))
        .exec(db)
        .await?;
    for batch in values.chunks(INSERT_BATCH) {
        groupe_route::Entity::insert_many(batch.iter().map(|v| groupe_route::ActiveModel {
            groupe_id: Set(groupe_id.to_owned()),
            kind: Set(kind.to_owned()),
            value: Set(v.clone()),
        }))
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// Number of instructeurs of each of these groupes (absent: none).
pub async fn instructeur_counts<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
) -> Result<HashMap<String, i64>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = groupe_instructeur::Entity::find()
        .select_only()
        .column(groupe_instructeur::Column::GroupeId)
        .column_as(groupe_instructeur::Column::Email.count(), "n")
        .filter(groupe_instructeur::Column::GroupeId.is_in(ids.iter().cloned()))
        .group_by(groupe_instructeur::Column::GroupeId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// Instructeurs and memberships
// ---------------------------------------------------------------------------------------------

/// An instructeur by (lower-cased) email.
pub async fn instructeur<C: ConnectionTrait>(
    db: &C,
    email: &str,
) -> Result<Option<instructeur::Model>, DbErr> {
    instructeur::Entity::find_by_id(email.to_owned())
        .one(db)
        .await
}

/// Every instructeur.
pub async fn all_instructeurs<C: ConnectionTrait>(
    db: &C,
) -> Result<Vec<instructeur::Model>, DbErr> {
    instructeur::Entity::find().all(db).await
}

/// Every membership.
pub async fn all_memberships<C: ConnectionTrait>(
    db: &C,
) -> Result<Vec<groupe_instructeur::Model>, DbErr> {
    groupe_instructeur::Entity::find().all(db).await
}

/// The groupe ids of an instructeur, in id order.
pub async fn groupe_ids_of<C: ConnectionTrait>(db: &C, email: &str) -> Result<Vec<String>, DbErr> {
    groupe_instructeur::Entity::find()
        .select_only()
        .column(groupe_instructeur::Column::GroupeId)
        .filter(groupe_instructeur::Column::Email.eq(email))
        .order_by_asc(groupe_instructeur::Column::GroupeId)
        .into_tuple()
        .all(db)
        .await
}

/// The memberships of these instructeurs.
pub async fn memberships_of<C: ConnectionTrait>(
    db: &C,
    emails: &[String],
) -> Result<Vec<groupe_instructeur::Model>, DbErr> {
    if emails.is_empty() {
        return Ok(Vec::new());
    }
    groupe_instructeur::Entity::find()
        .filter(groupe_instructeur::Column::Email.is_in(emails.iter().cloned()))
        .all(db)
        .await
}

/// Instructeurs by email after `after`, at most `limit`; only members of one of `groupe_ids` and
/// emails starting with `prefix` (lower case) when given.
pub async fn instructeurs_page<C: ConnectionTrait>(
    db: &C,
    groupe_ids: Option<&[String]>,
    prefix: Option<&str>,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<instructeur::Model>, DbErr> {
    let mut q = instructeur::Entity::find().order_by_asc(instructeur::Column::Email);
    if let Some(groupe_ids) = groupe_ids {
        let members = Query::select()
            .column(groupe_instructeur::Column::Email)
            .from(groupe_instructeur::Entity)
            .and_where(groupe_instructeur::Column::GroupeId.is_in(groupe_ids.iter().cloned()))
            .to_owned();
        q = q.filter(instructeur::Column::Email.in_subquery(members));
    }
    if let Some(prefix) = prefix {
        let escaped: String = prefix
            .chars()
            .flat_map(|c| match c {
                '\\' | '%' | '_' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        q = q.filter(
            Expr::col(instructeur::Column::Email)
                .like(LikeExpr::new(format!("{escaped}%")).escape('\\')),
        );
    }
    if let Some(after) = after {
        q = q.filter(instructeur::Column::Email.gt(after));
    }
    q.limit(limit).all(db).await
}

/// Declares instructeurs (rows already present are left alone).
pub async fn insert_instructeurs<C: ConnectionTrait>(
    db: &C,
    rows: &[instructeur::Model],
) -> Result<(), DbErr> {
    for batch in rows.chunks(INSERT_BATCH) {
        instructeur::Entity::insert_many(batch.iter().cloned().map(instructeur::ActiveModel::from))
            .on_conflict_do_nothing()
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Adds memberships (those already present are left alone).
pub async fn insert_memberships<C: ConnectionTrait>(
    db: &C,
    rows: &[groupe_instructeur::Model],
) -> Result<(), DbErr> {
    for batch in rows.chunks(INSERT_BATCH) {
        groupe_instructeur::Entity::insert_many(
            batch
                .iter()
                .cloned()
                .map(groupe_instructeur::ActiveModel::from),
        )
        .on_conflict_do_nothing()
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// Renames an instructeur.
pub async fn set_instructeur_name<C: ConnectionTrait>(
    db: &C,
    email: &str,
    name: &str,
) -> Result<(), DbErr> {
    instructeur::Entity::update_many()
        .col_expr(instructeur::Column::Name, Expr::value(name))
        .filter(instructeur::Column::Email.eq(email))
        .exec(db)
        .await?;
    Ok(())
}

/// Removes an instructeur from a groupe, or from every groupe when `groupe_id` is `None`;
/// returns the number of memberships removed.
pub async fn delete_memberships<C: ConnectionTrait>(
    db: &C,
    email: &str,
    groupe_id: Option<&str>,
) -> Result<u64, DbErr> {
    let mut q = groupe_instructeur::Entity::delete_many()
        .filter(groupe_instructeur::Column::Email.eq(email));
    if let Some(groupe_id) = groupe_id {
        q = q.filter(groupe_instructeur::Column::GroupeId.eq(groupe_id));
    }
    Ok(q.exec(db).await?.rows_affected)
}

/// Deletes the instructeurs that belong to no groupe any more (among `emails`).
pub async fn delete_instructeurs_without_groupe<C: ConnectionTrait>(
    db: &C,
    emails: &[String],
) -> Result<u64, DbErr> {
    if emails.is_empty() {
        return Ok(0);
    }
    let members = Query::select()
        .column(groupe_instructeur::Column::Email)
        .from(groupe_instructeur::Entity)
        .to_owned();
    Ok(instructeur::Entity::delete_many()
        .filter(instructeur::Column::Email.is_in(emails.iter().cloned()))
        .filter(instructeur::Column::Email.not_in_subquery(members))
        .exec(db)
        .await?
        .rows_affected)
}

/// The emails of the members of a groupe.
pub async fn member_emails<C: ConnectionTrait>(
    db: &C,
    groupe_id: &str,
) -> Result<Vec<String>, DbErr> {
    groupe_instructeur::Entity::find()
        .select_only()
        .column(groupe_instructeur::Column::Email)
        .filter(groupe_instructeur::Column::GroupeId.eq(groupe_id))
        .into_tuple()
        .all(db)
        .await
}

/// Ends the current follows of `email` — on the dossiers routed to `groupe_id`, or on every
/// dossier when `None` — at `at`. Follow history rows stay (`follows.unfollowed_at` is set).
pub async fn end_follows<C: ConnectionTrait>(
    db: &C,
    email: &str,
    groupe_id: Option<&str>,
    at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let follows = Alias::new("follows");
    let mut q = Query::update();
    q.table(follows.clone())
        .value(Alias::new("unfollowed_at"), at)
        .and_where(ExprTrait::eq(Expr::col(Alias::new("email")), email))
        .and_where(Expr::col(Alias::new("unfollowed_at")).is_null());
    if let Some(groupe_id) = groupe_id {
        let routed = Query::select()
            .column(Alias::new("number"))
            .from(Alias::new("dossiers"))
            .and_where(ExprTrait::eq(Expr::col(Alias::new("groupe_id")), groupe_id))
            .to_owned();
        q.and_where(Expr::col(Alias::new("dossier_number")).in_subquery(routed));
    }
    Ok(db.execute(&q).await?.rows_affected())
}
