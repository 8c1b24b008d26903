//! Persistence of the forms service: sea-orm entities and the queries the use cases need.
//! Functions take any connection (the pool or a transaction) so that a use case decides what
//! commits together; JSON columns hold domain types in their serde form.

pub mod entities;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};

pub use entities::{dossier, file, history, invitation, procedure, revision};

/// A procedure by id.
pub async fn procedure<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<Option<procedure::Model>, DbErr> {
    procedure::Entity::find_by_id(id.to_owned()).one(db).await
}

/// Procedures ordered by id, after `after` (keyset pagination).
pub async fn procedures<C: ConnectionTrait>(
    db: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<procedure::Model>, DbErr> {
    let mut q = procedure::Entity::find().order_by_asc(procedure::Column::Id);
    if let Some(after) = after {
        q = q.filter(procedure::Column::Id.gt(after));
    }
    q.limit(limit).all(db).await
}

/// A revision by id.
pub async fn revision<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<Option<revision::Model>, DbErr> {
    revision::Entity::find_by_id(id.to_owned()).one(db).await
}

/// Highest revision number of a procedure (0 when none).
pub async fn last_revision_number<C: ConnectionTrait>(
    db: &C,
    procedure_id: &str,
) -> Result<i32, DbErr> {
    Ok(revision::Entity::find()
        .filter(revision::Column::ProcedureId.eq(procedure_id))
        .order_by_desc(revision::Column::Number)
        .one(db)
        .await?
        .map_or(0, |r| r.number))
}

/// A dossier by number.
pub async fn dossier<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Option<dossier::Model>, DbErr> {
    dossier::Entity::find_by_id(number).one(db).await
}

/// A dossier by number, its row locked until the transaction ends (PostgreSQL; SQLite
/// transactions begun with `begin_write` already hold the database write lock).
pub async fn dossier_for_update<C: ConnectionTrait>(
    txn: &C,
    number: i64,
) -> Result<Option<dossier::Model>, DbErr> {
    dossier::Entity::find_by_id(number)
        .lock_exclusive()
        .one(txn)
        .await
}

/// The dossier a create/duplicate request already made, if any.
pub async fn dossier_by_request<C: ConnectionTrait>(
    db: &C,
    request_id: &str,
) -> Result<Option<dossier::Model>, DbErr> {
    dossier::Entity::find()
        .filter(dossier::Column::CreateRequestId.eq(request_id))
        .one(db)
        .await
}

/// Active invitation of `email` on `number`.
pub async fn active_invitation<C: ConnectionTrait>(
    db: &C,
    number: i64,
    email: &str,
) -> Result<Option<invitation::Model>, DbErr> {
    invitation::Entity::find()
        .filter(invitation::Column::DossierNumber.eq(number))
        .filter(invitation::Column::InviteeEmail.eq(email))
        .filter(invitation::Column::RevokedAt.is_null())
        .one(db)
        .await
}

/// Active invitations of a dossier, oldest first.
pub async fn invitations<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Vec<invitation::Model>, DbErr> {
    invitation::Entity::find()
        .filter(invitation::Column::DossierNumber.eq(number))
        .filter(invitation::Column::RevokedAt.is_null())
        .order_by_asc(invitation::Column::CreatedAt)
        .order_by_asc(invitation::Column::Id)
        .all(db)
        .await
}

/// Revokes an invitation; returns whether it was active.
pub async fn revoke_invitation<C: ConnectionTrait>(
    db: &C,
    number: i64,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<invitation::Model>, DbErr> {
    let Some(inv) = invitation::Entity::find_by_id(id.to_owned())
        .filter(invitation::Column::DossierNumber.eq(number))
        .filter(invitation::Column::RevokedAt.is_null())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let mut active: invitation::ActiveModel = inv.clone().into();
    active.revoked_at = Set(Some(now));
    active.update(db).await?;
    Ok(Some(inv))
}

/// Which dossiers a list covers for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Owned and invited.
    All,
    /// Owned.
    Owned,
    /// Invited.
    Invited,
}

/// A page of the caller's dossiers, most recently updated first; `after` is the
/// `(updated_at, number)` of the last row of the previous page.
pub async fn dossiers_of<C: ConnectionTrait>(
    db: &C,
    email: &str,
    scope: Scope,
    procedure_id: Option<&str>,
    statuses: &[&str],
    after: Option<(DateTime<Utc>, i64)>,
    limit: u64,
) -> Result<Vec<dossier::Model>, DbErr> {
    let invited = sea_orm::sea_query::Query::select()
        .column(invitation::Column::DossierNumber)
        .from(invitation::Entity)
        .and_where(invitation::Column::InviteeEmail.eq(email))
        .and_where(invitation::Column::RevokedAt.is_null())
        .to_owned();
    let who = match scope {
        Scope::Owned => Condition::all().add(dossier::Column::OwnerEmail.eq(email)),
        Scope::Invited => Condition::all().add(dossier::Column::Number.in_subquery(invited)),
        Scope::All => Condition::any()
            .add(dossier::Column::OwnerEmail.eq(email))
            .add(dossier::Column::Number.in_subquery(invited)),
    };
    let mut q = dossier::Entity::find().filter(who);
    if let Some(p) = procedure_id {
        q = q.filter(dossier::Column::ProcedureId.eq(p));
    }
    if !statuses.is_empty() {
        q = q.filter(dossier::Column::Status.is_in(statuses.iter().copied()));
    }
    if let Some((at, number)) = after {
        q = q.filter(
            Condition::any().add(dossier::Column::UpdatedAt.lt(at)).add(
                Condition::all()
                    .add(dossier::Column::UpdatedAt.eq(at))
                    .add(dossier::Column::Number.lt(number)),
            ),
        );
    }
    q.order_by_desc(dossier::Column::UpdatedAt)
        .order_by_desc(dossier::Column::Number)
        .limit(limit)
        .all(db)
        .await
}

/// A page of a dossier's history, most recent first, before history id `before`.
pub async fn history_page<C: ConnectionTrait>(
    db: &C,
    number: i64,
    field_id: Option<&str>,
    since: Option<DateTime<Utc>>,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<history::Model>, DbErr> {
    let mut q = history::Entity::find().filter(history::Column::DossierNumber.eq(number));
    if let Some(f) = field_id {
        q = q.filter(history::Column::TopFieldId.eq(f));
    }
    if let Some(since) = since {
        q = q.filter(history::Column::At.gte(since));
    }
    if let Some(before) = before {
        q = q.filter(history::Column::Id.lt(before));
    }
    q.order_by_desc(history::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Number of dossiers created on a revision (a revision with dossiers cannot be rewritten).
pub async fn dossiers_on_revision<C: ConnectionTrait>(
    db: &C,
    revision_id: &str,
) -> Result<u64, DbErr> {
    dossier::Entity::find()
        .filter(dossier::Column::RevisionId.eq(revision_id))
        .count(db)
        .await
}

/// Sets the freeze holder of a dossier.
pub async fn set_frozen_by<C: ConnectionTrait>(
    db: &C,
    number: i64,
    holder: Option<&str>,
) -> Result<(), DbErr> {
    dossier::Entity::update_many()
        .col_expr(
            dossier::Column::FrozenBy,
            Expr::value(holder.map(str::to_owned)),
        )
        .col_expr(
            dossier::Column::FrozenAt,
            Expr::value(holder.map(|_| chrono::Utc::now())),
        )
        .filter(dossier::Column::Number.eq(number))
        .exec(db)
        .await?;
    Ok(())
}

/// Dossiers holding a freeze taken at or before `cutoff` (or at an unknown time), oldest
/// first, at most `limit`.
pub async fn stale_freezes<C: ConnectionTrait>(
    db: &C,
    cutoff: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> Result<Vec<dossier::Model>, DbErr> {
    use sea_orm::{QueryOrder, QuerySelect};
    dossier::Entity::find()
        .filter(dossier::Column::FrozenBy.is_not_null())
        .filter(
            sea_orm::Condition::any()
                .add(dossier::Column::FrozenAt.is_null())
                .add(dossier::Column::FrozenAt.lte(cutoff)),
        )
        .order_by_asc(dossier::Column::FrozenAt)
        .limit(limit)
        .all(db)
        .await
}

/// Releases the hold of `operation_id` on dossier `number` if the dossier is still at
/// `status_version`; whether it did.
pub async fn release_freeze<C: ConnectionTrait>(
    db: &C,
    number: i64,
    operation_id: &str,
    status_version: i64,
) -> Result<bool, DbErr> {
    let res = dossier::Entity::update_many()
        .col_expr(
            dossier::Column::FrozenBy,
            Expr::value(Option::<String>::None),
        )
        .filter(dossier::Column::Number.eq(number))
        .filter(dossier::Column::FrozenBy.eq(operation_id))
        .filter(dossier::Column::StatusVersion.eq(status_version))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}
