//! sea-orm entities of the messagerie's tables (see `migrations/src/messagerie_m0002.rs`).

/// The procedures the messagerie knows (from `ProcedureChanged`).
pub mod procedure {
    use sea_orm::entity::prelude::*;

    /// One procedure.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "msg_procedures")]
    pub struct Model {
        /// Procedure id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Title (email subjects).
        pub title: String,
        /// Highest version applied (0 when only seen on a dossier event).
        pub version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The messagerie's projection of a dossier: who receives its emails, its status, archive flag.
pub mod dossier {
    use sea_orm::entity::prelude::*;

    /// One dossier.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "msg_dossiers")]
    pub struct Model {
        /// Dossier number.
        #[sea_orm(primary_key, auto_increment = false)]
        pub number: i64,
        /// Procedure id.
        pub procedure_id: String,
        /// Procedure title (email subjects).
        pub procedure_title: String,
        /// Owner's email.
        pub owner_email: String,
        /// Invitees' emails, newline-separated, sorted.
        pub invitees: String,
        /// `mst.events.v1.DossierStatus` value.
        pub status: i32,
        /// Highest status version applied (0 before any status event).
        pub status_version: i64,
        /// Archived (thread read-only).
        pub archived: bool,
        /// Deleted brouillon.
        pub deleted: bool,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl Model {
        /// The invitees as a list.
        pub fn invitee_list(&self) -> Vec<String> {
            self.invitees
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        }
    }
}

/// Entries of the dossier threads.
pub mod entry {
    use sea_orm::entity::prelude::*;

    /// One thread entry: a message (`kind = "message"`) or an automatic email (`"email"`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "thread_entries")]
    pub struct Model {
        /// Entry id (UUID v7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Dossier number.
        pub number: i64,
        /// Position in the thread, from 1.
        pub sequence: i64,
        /// `message` or `email`.
        pub kind: String,
        /// Author (or the recipient-less system for an email).
        pub author_email: String,
        /// `mst.events.v1.Role` value of the author.
        pub author_role: i32,
        /// Subject of an automatic email; empty for a message.
        pub subject: String,
        /// Body (plain text).
        pub body: String,
        /// Template of an automatic email; empty for a message.
        pub template: String,
        /// Event that caused an automatic email (unique: one entry per event).
        pub source_event_id: Option<String>,
        /// `author:request_id` of a posted message (idempotent retries).
        pub request_key: Option<String>,
        /// When created.
        pub created_at: DateTimeUtc,
        /// When deleted (a tombstone stays).
        pub deleted_at: Option<DateTimeUtc>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Attachments of messages.
pub mod attachment {
    use sea_orm::entity::prelude::*;

    /// One stored attachment.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_attachments")]
    pub struct Model {
        /// Attachment id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Thread entry id.
        pub entry_id: String,
        /// Order in the message.
        pub position: i32,
        /// File name.
        pub file_name: String,
        /// Media type.
        pub content_type: String,
        /// Size in bytes.
        pub size: i64,
        /// SHA-256 hex.
        pub sha256: String,
        /// Key in the file store.
        pub storage_key: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The outgoing-mail queue, which is also the delivery log.
pub mod mail {
    use sea_orm::entity::prelude::*;

    /// Waiting to be sent (first try or retry).
    pub const QUEUED: &str = "queued";
    /// Accepted by the relay.
    pub const SENT: &str = "sent";
    /// Given up.
    pub const FAILED: &str = "failed";

    /// One email to one recipient.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outgoing_mails")]
    pub struct Model {
        /// Delivery id (UUID v7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `<source event id>:<recipient>` (or a digest key): unique, so an event queues one
        /// email per recipient however often it is delivered (invariant I3).
        pub dedup_key: String,
        /// Recipient address (lower-case).
        pub recipient: String,
        /// Template name.
        pub template: String,
        /// Subject (single line).
        pub subject: String,
        /// Plain-text body.
        pub body_text: String,
        /// HTML body.
        pub body_html: String,
        /// Message-ID without angle brackets, derived from the dedup key.
        pub message_id: String,
        /// Dossier number; none for a digest.
        pub number: Option<i64>,
        /// Source event ids, newline-separated.
        pub source_event_ids: String,
        /// `queued`, `sent` or `failed`.
        pub status: String,
        /// Attempts so far.
        pub attempts: i32,
        /// Last error, empty if none.
        pub last_error: String,
        /// When queued.
        pub queued_at: DateTimeUtc,
        /// When sent.
        pub sent_at: Option<DateTimeUtc>,
        /// Next attempt (also the lease of the sender working on it).
        pub next_attempt_at: DateTimeUtc,
        /// W3C trace context (JSON) of the transaction that queued it: sending continues the
        /// trace of the causing event.
        pub trace_context: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Notices waiting to be grouped into one email: the delayed "nouveau message" email of the
/// promoteur (`channel = "message"`) and the instructeurs' daily digest (`"digest"`).
pub mod notice {
    use sea_orm::entity::prelude::*;

    /// Channel of the promoteur's delayed "nouveau message" email.
    pub const MESSAGE: &str = "message";
    /// Channel of the daily digest.
    pub const DIGEST: &str = "digest";

    /// One pending notice.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pending_notices")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `<channel>:<event id>:<recipient>`, unique.
        pub dedup_key: String,
        /// `message` or `digest`.
        pub channel: String,
        /// Recipient.
        pub recipient: String,
        /// What happened (`new_dossier`, `new_message`, `new_avis`, `dossier_modified`).
        pub kind: String,
        /// Dossier number.
        pub number: i64,
        /// Procedure id.
        pub procedure_id: String,
        /// Procedure title.
        pub procedure_title: String,
        /// Event id.
        pub source_event_id: String,
        /// When it happened.
        pub created_at: DateTimeUtc,
        /// Not sent before.
        pub due_at: DateTimeUtc,
        /// The email that carried it, once grouped.
        pub mail_id: Option<String>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Instructeur notices whose recipients are still to be asked of instruction.
pub mod notice_request {
    use sea_orm::entity::prelude::*;

    /// One event concerning the instructeurs of a dossier's groupe.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notice_requests")]
    pub struct Model {
        /// Id (UUID v7: in the order recorded).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `<kind>:<event id>`, unique.
        pub dedup_key: String,
        /// `new_dossier`, `new_message` or `dossier_modified`.
        pub kind: String,
        /// Dossier number.
        pub number: i64,
        /// Procedure id.
        pub procedure_id: String,
        /// Procedure title.
        pub procedure_title: String,
        /// Event id.
        pub source_event_id: String,
        /// When it happened.
        pub occurred_at: DateTimeUtc,
        /// Failed attempts to ask instruction.
        pub attempts: i32,
        /// Why the last attempt failed.
        pub last_error: String,
        /// Not tried before.
        pub next_attempt_at: DateTimeUtc,
        /// W3C trace headers (JSON) of the event's handling.
        pub trace_context: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Instructeurs' notification preferences per procedure.
pub mod preference {
    use sea_orm::entity::prelude::*;

    /// Preferences of one instructeur for one procedure.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notice_preferences")]
    pub struct Model {
        /// Instructeur email.
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        /// Procedure id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub procedure_id: String,
        /// `kind=instant,digest` lines, e.g. `new_message=1,0`.
        pub settings: String,
        /// Version.
        pub version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Notifications of brouillon owners (ContactBrouillonOwners).
pub mod notification {
    use sea_orm::entity::prelude::*;

    /// One notification.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifications")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Recipient (owner of the brouillon).
        pub recipient: String,
        /// Dossier number.
        pub number: i64,
        /// Procedure id.
        pub procedure_id: String,
        /// Procedure title.
        pub procedure_title: String,
        /// Sender (instructeur).
        pub sender_email: String,
        /// Subject.
        pub subject: String,
        /// Body.
        pub body: String,
        /// `request_id:number`, unique (idempotent retries).
        pub request_key: String,
        /// When sent.
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
