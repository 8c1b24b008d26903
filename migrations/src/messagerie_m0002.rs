//! The messagerie's tables: its projections of procedures (titles) and dossiers (recipients, status, archive flag), the
//! threads and their attachments, the outgoing-mail queue that is also the delivery log, the
//! pending notices (delayed "nouveau message" emails and daily digests), the instructeurs'
//! notification preferences and the brouillon notifications.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum MsgProcedures {
    Table,
    Id,
    Title,
    Version,
}

#[derive(DeriveIden)]
enum MsgDossiers {
    Table,
    Number,
    ProcedureId,
    ProcedureTitle,
    OwnerEmail,
    Invitees,
    Status,
    StatusVersion,
    Archived,
    Deleted,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ThreadEntries {
    Table,
    Id,
    Number,
    Sequence,
    Kind,
    AuthorEmail,
    AuthorRole,
    Subject,
    Body,
    Template,
    SourceEventId,
    RequestKey,
    CreatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum MessageAttachments {
    Table,
    Id,
    EntryId,
    Position,
    FileName,
    ContentType,
    Size,
    Sha256,
    StorageKey,
}

#[derive(DeriveIden)]
enum OutgoingMails {
    Table,
    Id,
    DedupKey,
    Recipient,
    Template,
    Subject,
    BodyText,
    BodyHtml,
    MessageId,
    Number,
    SourceEventIds,
    Status,
    Attempts,
    LastError,
    QueuedAt,
    SentAt,
    NextAttemptAt,
}

#[derive(DeriveIden)]
enum PendingNotices {
    Table,
    Id,
    DedupKey,
    Channel,
    Recipient,
    Kind,
    Number,
    ProcedureId,
    ProcedureTitle,
    SourceEventId,
    CreatedAt,
    DueAt,
    MailId,
}

#[derive(DeriveIden)]
enum NoticePreferences {
    Table,
    Email,
    ProcedureId,
    Settings,
    Version,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    Recipient,
    Number,
    ProcedureId,
    ProcedureTitle,
    SenderEmail,
    Subject,
    Body,
    RequestKey,
    CreatedAt,
}

/// Creates the messagerie tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_messagerie"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(MsgProcedures::Table)
                .if_not_exists()
                .col(string_len(MsgProcedures::Id, 128).primary_key())
                .col(text(MsgProcedures::Title))
                .col(big_integer(MsgProcedures::Version))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(MsgDossiers::Table)
                .if_not_exists()
                .col(big_integer(MsgDossiers::Number).primary_key())
                .col(string_len(MsgDossiers::ProcedureId, 128))
                .col(text(MsgDossiers::ProcedureTitle))
                .col(string_len(MsgDossiers::OwnerEmail, 254))
                .col(text(MsgDossiers::Invitees))
                .col(integer(MsgDossiers::Status))
                .col(big_integer(MsgDossiers::StatusVersion))
                .col(boolean(MsgDossiers::Archived))
                .col(boolean(MsgDossiers::Deleted))
                .col(timestamp_with_time_zone(MsgDossiers::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("msg_dossiers_procedure_status")
                .table(MsgDossiers::Table)
                .col(MsgDossiers::ProcedureId)
                .col(MsgDossiers::Status)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ThreadEntries::Table)
                .if_not_exists()
                .col(string_len(ThreadEntries::Id, 64).primary_key())
                .col(big_integer(ThreadEntries::Number))
                .col(big_integer(ThreadEntries::Sequence))
                .col(string_len(ThreadEntries::Kind, 16))
                .col(string_len(ThreadEntries::AuthorEmail, 254))
                .col(integer(ThreadEntries::AuthorRole))
                .col(text(ThreadEntries::Subject))
                .col(text(ThreadEntries::Body))
                .col(string_len(ThreadEntries::Template, 64))
                .col(string_len_null(ThreadEntries::SourceEventId, 64))
                .col(string_len_null(ThreadEntries::RequestKey, 320))
                .col(timestamp_with_time_zone(ThreadEntries::CreatedAt))
                .col(timestamp_with_time_zone_null(ThreadEntries::DeletedAt))
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            (
                "thread_entries_sequence",
                vec![ThreadEntries::Number, ThreadEntries::Sequence],
            ),
            ("thread_entries_source", vec![ThreadEntries::SourceEventId]),
            ("thread_entries_request", vec![ThreadEntries::RequestKey]),
        ] {
            let mut index = Index::create();
            index
                .if_not_exists()
                .name(name)
                .table(ThreadEntries::Table)
                .unique();
            for c in cols {
                index.col(c);
            }
            m.create_index(index.to_owned()).await?;
        }

        m.create_table(
            Table::create()
                .table(MessageAttachments::Table)
                .if_not_exists()
                .col(string_len(MessageAttachments::Id, 64).primary_key())
                .col(string_len(MessageAttachments::EntryId, 64))
                .col(integer(MessageAttachments::Position))
                .col(string_len(MessageAttachments::FileName, 255))
                .col(string_len(MessageAttachments::ContentType, 255))
                .col(big_integer(MessageAttachments::Size))
                .col(string_len(MessageAttachments::Sha256, 64))
                .col(string_len(MessageAttachments::StorageKey, 255))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("message_attachments_entry")
                .table(MessageAttachments::Table)
                .col(MessageAttachments::EntryId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(OutgoingMails::Table)
                .if_not_exists()
                .col(string_len(OutgoingMails::Id, 64).primary_key())
                .col(string_len_uniq(OutgoingMails::DedupKey, 400))
                .col(string_len(OutgoingMails::Recipient, 254))
                .col(string_len(OutgoingMails::Template, 64))
                .col(text(OutgoingMails::Subject))
                .col(text(OutgoingMails::BodyText))
                .col(text(OutgoingMails::BodyHtml))
                .col(string_len(OutgoingMails::MessageId, 255))
                .col(big_integer_null(OutgoingMails::Number))
                .col(text(OutgoingMails::SourceEventIds))
                .col(string_len(OutgoingMails::Status, 16))
                .col(integer(OutgoingMails::Attempts))
                .col(text(OutgoingMails::LastError))
                .col(timestamp_with_time_zone(OutgoingMails::QueuedAt))
                .col(timestamp_with_time_zone_null(OutgoingMails::SentAt))
                .col(timestamp_with_time_zone(OutgoingMails::NextAttemptAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("outgoing_mails_due")
                .table(OutgoingMails::Table)
                .col(OutgoingMails::Status)
                .col(OutgoingMails::NextAttemptAt)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PendingNotices::Table)
                .if_not_exists()
                .col(string_len(PendingNotices::Id, 64).primary_key())
                .col(string_len_uniq(PendingNotices::DedupKey, 400))
                .col(string_len(PendingNotices::Channel, 16))
                .col(string_len(PendingNotices::Recipient, 254))
                .col(string_len(PendingNotices::Kind, 32))
                .col(big_integer(PendingNotices::Number))
                .col(string_len(PendingNotices::ProcedureId, 128))
                .col(text(PendingNotices::ProcedureTitle))
                .col(string_len(PendingNotices::SourceEventId, 64))
                .col(timestamp_with_time_zone(PendingNotices::CreatedAt))
                .col(timestamp_with_time_zone(PendingNotices::DueAt))
                .col(string_len_null(PendingNotices::MailId, 64))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("pending_notices_due")
                .table(PendingNotices::Table)
                .col(PendingNotices::Channel)
                .col(PendingNotices::MailId)
                .col(PendingNotices::DueAt)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(NoticePreferences::Table)
                .if_not_exists()
                .col(string_len(NoticePreferences::Email, 254))
                .col(string_len(NoticePreferences::ProcedureId, 128))
                .col(text(NoticePreferences::Settings))
                .col(big_integer(NoticePreferences::Version))
                .primary_key(
                    Index::create()
                        .col(NoticePreferences::Email)
                        .col(NoticePreferences::ProcedureId),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Notifications::Table)
                .if_not_exists()
                .col(string_len(Notifications::Id, 64).primary_key())
                .col(string_len(Notifications::Recipient, 254))
                .col(big_integer(Notifications::Number))
                .col(string_len(Notifications::ProcedureId, 128))
                .col(text(Notifications::ProcedureTitle))
                .col(string_len(Notifications::SenderEmail, 254))
                .col(text(Notifications::Subject))
                .col(text(Notifications::Body))
                .col(string_len_uniq(Notifications::RequestKey, 400))
                .col(timestamp_with_time_zone(Notifications::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("notifications_recipient")
                .table(Notifications::Table)
                .col(Notifications::Recipient)
                .col(Notifications::CreatedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Notifications::Table.into_iden(),
            NoticePreferences::Table.into_iden(),
            PendingNotices::Table.into_iden(),
            OutgoingMails::Table.into_iden(),
            MessageAttachments::Table.into_iden(),
            ThreadEntries::Table.into_iden(),
            MsgDossiers::Table.into_iden(),
            MsgProcedures::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
