//! Persistence of the instruction service: sea-orm entities and queries. Functions take any
//! connection so that a use case decides what commits together.

pub mod avis;
pub mod board;
pub mod roster;

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, QueryOrder, QuerySelect};

/// `procedures` (projection of forms' `ProcedureChanged`).
pub mod procedure {
    use sea_orm::entity::prelude::*;

    /// A procedure as instruction knows it.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "procedures")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Title.
        pub title: String,
        /// `projet` or `action`.
        pub kind: String,
        /// Closing instant.
        pub closing_at: Option<DateTimeUtc>,
        /// Version of the last event applied.
        pub version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `dossiers`: the status and what lists and routing need.
pub mod dossier {
    use sea_orm::entity::prelude::*;

    /// A dossier row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dossiers")]
    pub struct Model {
        /// Number (from forms).
        #[sea_orm(primary_key, auto_increment = false)]
        pub number: i64,
        /// Procedure.
        pub procedure_id: String,
        /// Revision.
        pub revision_id: String,
        /// Owner.
        pub owner_email: String,
        /// Status.
        pub status: String,
        /// Status version.
        pub version: i64,
        /// Archived flag.
        pub archived: bool,
        /// A correction request waits for the owner.
        pub correction_pending: bool,
        /// Routed groupe.
        pub groupe_id: Option<String>,
        /// Headline.
        pub title: String,
        /// Headline.
        pub structure_name: String,
        /// Headline.
        pub siret: String,
        /// Headline.
        pub region_code: String,
        /// Headline.
        pub departement_code: String,
        /// Headline.
        pub cpam: String,
        /// Forms content version last seen.
        pub content_version: i64,
        /// Created at (forms).
        pub created_at: DateTimeUtc,
        /// First deposit.
        pub deposited_at: Option<DateTimeUtc>,
        /// Last passage en instruction.
        pub en_instruction_at: Option<DateTimeUtc>,
        /// Last decision.
        pub decided_at: Option<DateTimeUtc>,
        /// Archived at.
        pub archived_at: Option<DateTimeUtc>,
        /// Last change.
        pub updated_at: DateTimeUtc,
        /// Deleted brouillon.
        pub deleted: bool,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `traitements`: the status history.
pub mod traitement {
    use sea_orm::entity::prelude::*;

    /// One accepted workflow command.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "traitements")]
    pub struct Model {
        /// Id (also the freeze operation id).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Dossier.
        pub dossier_number: i64,
        /// Before.
        pub from_status: String,
        /// After.
        pub to_status: String,
        /// Transition or event kind.
        pub transition: String,
        /// Who.
        pub actor_email: String,
        /// Their role.
        pub actor_role: String,
        /// Motivation or message.
        pub motivation: String,
        /// Justificatif (JSON FileRef).
        pub justificatif: Option<String>,
        /// Correction reason.
        pub correction_reason: Option<String>,
        /// Status version after.
        pub status_version: i64,
        /// Forms content version at the time.
        pub content_version: i64,
        /// When.
        pub at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `follows`, with history (an unfollow closes the row).
pub mod follow {
    use sea_orm::entity::prelude::*;

    /// One follow period.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "follows")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Dossier.
        pub dossier_number: i64,
        /// Instructeur.
        pub email: String,
        /// Since.
        pub followed_at: DateTimeUtc,
        /// Until (open while following).
        pub unfollowed_at: Option<DateTimeUtc>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `dossier_invitees` (projection of forms' invitations).
pub mod invitee {
    use sea_orm::entity::prelude::*;

    /// One invitation period.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dossier_invitees")]
    pub struct Model {
        /// Dossier.
        #[sea_orm(primary_key, auto_increment = false)]
        pub dossier_number: i64,
        /// Invitation id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub invitation_id: String,
        /// Invitee.
        pub email: String,
        /// Since.
        pub since: DateTimeUtc,
        /// Until (revoked).
        pub until: Option<DateTimeUtc>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `deposits`: idempotency of `RecordDeposit`.
pub mod deposit {
    use sea_orm::entity::prelude::*;

    /// A recorded deposit attempt and its answer.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deposits")]
    pub struct Model {
        /// Idempotency key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub deposit_id: String,
        /// Dossier.
        pub dossier_number: i64,
        /// The answer (JSON).
        pub response: String,
        /// When.
        pub at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A dossier by number.
pub async fn dossier<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Option<dossier::Model>, DbErr> {
    dossier::Entity::find_by_id(number).one(db).await
}

/// A dossier by number, its row locked until the transaction ends (PostgreSQL; SQLite write
/// transactions hold the database lock already).
pub async fn dossier_for_update<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Option<dossier::Model>, DbErr> {
    dossier::Entity::find_by_id(number)
        .lock_exclusive()
        .one(db)
        .await
}

/// Current followers of a dossier.
pub async fn followers<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Vec<follow::Model>, DbErr> {
    follow::Entity::find()
        .filter(follow::Column::DossierNumber.eq(number))
        .filter(follow::Column::UnfollowedAt.is_null())
        .order_by_asc(follow::Column::FollowedAt)
        .all(db)
        .await
}

/// Current invitees of a dossier.
pub async fn invitees<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Vec<invitee::Model>, DbErr> {
    invitee::Entity::find()
        .filter(invitee::Column::DossierNumber.eq(number))
        .filter(invitee::Column::Until.is_null())
        .order_by_asc(invitee::Column::Since)
        .all(db)
        .await
}

/// Traitements of a dossier, oldest first.
pub async fn traitements<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Vec<traitement::Model>, DbErr> {
    traitement::Entity::find()
        .filter(traitement::Column::DossierNumber.eq(number))
        .order_by_asc(traitement::Column::StatusVersion)
        .all(db)
        .await
}

/// A procedure by id.
pub async fn procedure<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<Option<procedure::Model>, DbErr> {
    procedure::Entity::find_by_id(id.to_owned()).one(db).await
}

/// Closes the open follow of `email` on `number`.
pub async fn close_follow<C: ConnectionTrait>(
    db: &C,
    number: i64,
    email: &str,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    follow::Entity::update_many()
        .col_expr(follow::Column::UnfollowedAt, Expr::value(at))
        .filter(follow::Column::DossierNumber.eq(number))
        .filter(follow::Column::Email.eq(email))
        .filter(follow::Column::UnfollowedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}
