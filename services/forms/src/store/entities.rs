//! sea-orm entities of the forms tables (created by `mst_migrations::forms`).

/// `procedures`.
pub mod procedure {
    use sea_orm::entity::prelude::*;

    /// A procedure row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "procedures")]
    pub struct Model {
        /// Stable id (`mst-2024-projet`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Title.
        pub title: String,
        /// Object of the procedure.
        pub description: String,
        /// `projet` or `action`.
        pub kind: String,
        /// Estimated filling time in seconds.
        pub estimated_filling_secs: i64,
        /// Closing instant.
        pub closing_at: Option<DateTimeUtc>,
        /// Notice document: its file reference and storage key, as JSON.
        pub notice: Option<String>,
        /// Published revision.
        pub published_revision_id: Option<String>,
        /// Draft revision.
        pub draft_revision_id: String,
        /// `draft`, `published`, `closed`.
        pub state: String,
        /// Version.
        pub version: i64,
        /// Created at.
        pub created_at: DateTimeUtc,
        /// Updated at.
        pub updated_at: DateTimeUtc,
    }

    /// No relations declared (queries join explicitly).
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `revisions`.
pub mod revision {
    use sea_orm::entity::prelude::*;

    /// A revision row; `definition` is the form as JSON (domain serde format).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "revisions")]
    pub struct Model {
        /// Revision id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Procedure.
        pub procedure_id: String,
        /// 1, 2, …
        pub number: i32,
        /// `draft`, `published`, `superseded`.
        pub state: String,
        /// The fields, as JSON.
        pub definition: String,
        /// Version of the draft.
        pub version: i64,
        /// Created at.
        pub created_at: DateTimeUtc,
        /// Published at.
        pub published_at: Option<DateTimeUtc>,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `dossiers`.
pub mod dossier {
    use sea_orm::entity::prelude::*;

    /// A dossier row: answers as JSON plus the headline columns lists and searches use.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dossiers")]
    pub struct Model {
        /// Dossier number.
        #[sea_orm(primary_key)]
        pub number: i64,
        /// Procedure.
        pub procedure_id: String,
        /// Revision the dossier was created on.
        pub revision_id: String,
        /// Owner.
        pub owner_email: String,
        /// Mirrored status (`brouillon`, `en_construction`, …).
        pub status: String,
        /// Status version of the last mirrored status event.
        pub status_version: i64,
        /// Content version.
        pub version: i64,
        /// Answers (domain serde JSON).
        pub answers: String,
        /// Headline: title.
        pub title: String,
        /// Headline: structure name.
        pub structure_name: String,
        /// Headline: SIRET.
        pub siret: String,
        /// Headline: région.
        pub region_code: String,
        /// Headline: département.
        pub departement_code: String,
        /// Headline: CPAM.
        pub cpam: String,
        /// Operation holding a freeze (I1), if any.
        pub frozen_by: Option<String>,
        /// When that hold was taken.
        pub frozen_at: Option<DateTimeUtc>,
        /// A correction request waits for the owner.
        pub correction_pending: bool,
        /// Source of a duplicate.
        pub duplicated_from: Option<i64>,
        /// Idempotency key of the create/duplicate call.
        pub create_request_id: Option<String>,
        /// Created at.
        pub created_at: DateTimeUtc,
        /// Content last changed at.
        pub updated_at: DateTimeUtc,
        /// First deposit.
        pub deposited_at: Option<DateTimeUtc>,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `champ_history`.
pub mod history {
    use sea_orm::entity::prelude::*;

    /// One field-level change.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "champ_history")]
    pub struct Model {
        /// Order of changes.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Dossier.
        pub dossier_number: i64,
        /// Content version produced.
        pub version: i64,
        /// When.
        pub at: DateTimeUtc,
        /// Who.
        pub actor_email: String,
        /// `owner` or `invitee`.
        pub actor_role: String,
        /// Champ path.
        pub field_path: String,
        /// Top-level field id (filtering).
        pub top_field_id: String,
        /// `set`, `cleared`, `row_added`, `row_removed`, `file_added`.
        pub kind: String,
        /// Previous value (JSON).
        pub old_value: Option<String>,
        /// New value (JSON).
        pub new_value: Option<String>,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `invitations`.
pub mod invitation {
    use sea_orm::entity::prelude::*;

    /// An invitation to co-edit a dossier.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invitations")]
    pub struct Model {
        /// Invitation id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Dossier.
        pub dossier_number: i64,
        /// Invitee, lower-cased.
        pub invitee_email: String,
        /// Inviter.
        pub invited_by: String,
        /// Personal message.
        pub message: String,
        /// When.
        pub created_at: DateTimeUtc,
        /// When revoked.
        pub revoked_at: Option<DateTimeUtc>,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `files`.
pub mod file {
    use sea_orm::entity::prelude::*;

    /// A stored file attached to a champ.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "files")]
    pub struct Model {
        /// File id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Dossier.
        pub dossier_number: i64,
        /// Champ path.
        pub field_path: String,
        /// Original name.
        pub name: String,
        /// Checked media type.
        pub content_type: String,
        /// Size in bytes.
        pub size: i64,
        /// SHA-256, hex.
        pub sha256: String,
        /// Key in the object store.
        pub storage_key: String,
        /// Uploader.
        pub uploaded_by: String,
        /// When.
        pub created_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
