//! Persistence of the instructeur tools: annotation definitions (one JSON list per procedure),
//! annotation values (one row per dossier and annotation, with the set's version in
//! `annotation_sets`) and avis externes.

use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, QueryOrder, QuerySelect};

/// `annotation_definitions`: the ordered definitions of a procedure, as JSON.
pub mod definitions {
    use sea_orm::entity::prelude::*;

    /// The definitions of one procedure.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "annotation_definitions")]
    pub struct Model {
        /// Procedure.
        #[sea_orm(primary_key, auto_increment = false)]
        pub procedure_id: String,
        /// Version (1 after the first update).
        pub version: i64,
        /// JSON array of definitions.
        pub definitions: String,
        /// Who last changed them.
        pub updated_by_email: String,
        /// When.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `annotation_sets`: the version of a dossier's annotations.
pub mod annotation_set {
    use sea_orm::entity::prelude::*;

    /// The version of one dossier's annotations.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "annotation_sets")]
    pub struct Model {
        /// Dossier.
        #[sea_orm(primary_key, auto_increment = false)]
        pub dossier_number: i64,
        /// Version (1 after the first update).
        pub version: i64,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `annotation_values`: one filled annotation.
pub mod annotation_value {
    use sea_orm::entity::prelude::*;

    /// One value.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "annotation_values")]
    pub struct Model {
        /// Dossier.
        #[sea_orm(primary_key, auto_increment = false)]
        pub dossier_number: i64,
        /// Definition id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub annotation_id: String,
        /// Typed value, JSON.
        pub value: String,
        /// Who set it.
        pub updated_by_email: String,
        /// When.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `avis`: an avis request and its answer.
pub mod avis_row {
    use sea_orm::entity::prelude::*;

    /// One avis.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "avis")]
    pub struct Model {
        /// Id (UUID v7: ordered by creation).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Dossier.
        pub dossier_number: i64,
        /// Procedure of the dossier.
        pub procedure_id: String,
        /// Expert, lower-cased.
        pub expert_email: String,
        /// Question.
        pub question: String,
        /// Answer for the requester only.
        pub confidential: bool,
        /// `pending`, `given` or `revoked`.
        pub state: String,
        /// Requesting instructeur.
        pub requested_by_email: String,
        /// Client idempotency key.
        pub request_id: String,
        /// When requested.
        pub requested_at: DateTimeUtc,
        /// Answer.
        pub answer: Option<String>,
        /// When answered.
        pub answered_at: Option<DateTimeUtc>,
        /// When revoked.
        pub revoked_at: Option<DateTimeUtc>,
        /// Object-store key of the answer's file.
        pub file_key: Option<String>,
        /// File name.
        pub file_name: Option<String>,
        /// Media type.
        pub file_content_type: Option<String>,
        /// Size.
        pub file_size_bytes: Option<i64>,
        /// Hex SHA-256.
        pub file_sha256: Option<String>,
        /// Version (1 when requested).
        pub version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The definitions row of a procedure.
pub async fn definitions_of<C: ConnectionTrait>(
    db: &C,
    procedure_id: &str,
) -> Result<Option<definitions::Model>, DbErr> {
    definitions::Entity::find_by_id(procedure_id.to_owned())
        .one(db)
        .await
}

/// The version row of a dossier's annotations.
pub async fn annotation_set_of<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Option<annotation_set::Model>, DbErr> {
    annotation_set::Entity::find_by_id(number).one(db).await
}

/// Every stored value of a dossier (including those of removed definitions).
pub async fn annotation_values_of<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Vec<annotation_value::Model>, DbErr> {
    annotation_value::Entity::find()
        .filter(annotation_value::Column::DossierNumber.eq(number))
        .all(db)
        .await
}

/// Every stored value of these dossiers (exports: one query per page of dossiers).
pub async fn annotation_values_of_many<C: ConnectionTrait>(
    db: &C,
    numbers: &[i64],
) -> Result<Vec<annotation_value::Model>, DbErr> {
    annotation_value::Entity::find()
        .filter(annotation_value::Column::DossierNumber.is_in(numbers.iter().copied()))
        .all(db)
        .await
}

/// Removes one value.
pub async fn delete_annotation_value<C: ConnectionTrait>(
    db: &C,
    number: i64,
    annotation_id: &str,
) -> Result<(), DbErr> {
    annotation_value::Entity::delete_many()
        .filter(annotation_value::Column::DossierNumber.eq(number))
        .filter(annotation_value::Column::AnnotationId.eq(annotation_id))
        .exec(db)
        .await?;
    Ok(())
}

/// An avis by id.
pub async fn avis_by_id<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<Option<avis_row::Model>, DbErr> {
    avis_row::Entity::find_by_id(id.to_owned()).one(db).await
}

/// An avis by id, its row locked until the transaction ends (PostgreSQL).
pub async fn avis_for_update<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<Option<avis_row::Model>, DbErr> {
    avis_row::Entity::find_by_id(id.to_owned())
        .lock_exclusive()
        .one(db)
        .await
}

/// The avis an instructeur already created with `request_id`.
pub async fn avis_by_request<C: ConnectionTrait>(
    db: &C,
    requested_by: &str,
    request_id: &str,
) -> Result<Option<avis_row::Model>, DbErr> {
    avis_row::Entity::find()
        .filter(avis_row::Column::RequestedByEmail.eq(requested_by))
        .filter(avis_row::Column::RequestId.eq(request_id))
        .one(db)
        .await
}

/// The avis of a dossier, oldest first.
pub async fn avis_of_dossier<C: ConnectionTrait>(
    db: &C,
    number: i64,
) -> Result<Vec<avis_row::Model>, DbErr> {
    avis_row::Entity::find()
        .filter(avis_row::Column::DossierNumber.eq(number))
        .order_by_asc(avis_row::Column::Id)
        .all(db)
        .await
}

/// A page of the avis asked of `expert`, newest first: ids below `before` (exclusive) when
/// given, in `states` when not empty, at most `limit`.
pub async fn avis_of_expert<C: ConnectionTrait>(
    db: &C,
    expert: &str,
    states: &[&str],
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<avis_row::Model>, DbErr> {
    let mut q = avis_row::Entity::find().filter(avis_row::Column::ExpertEmail.eq(expert));
    if !states.is_empty() {
        q = q.filter(avis_row::Column::State.is_in(states.iter().copied()));
    }
    if let Some(before) = before {
        q = q.filter(avis_row::Column::Id.lt(before));
    }
    q.order_by_desc(avis_row::Column::Id)
        .limit(limit)
        .all(db)
        .await
}
