//! Instructeur notices waiting for their recipients (`notice_requests`): an event that concerns
//! the instructeurs of a dossier's groupe (deposit, promoteur's message, modification) records a
//! request in the consumer's transaction; the recipients are asked of instruction afterwards,
//! outside it, so a slow or absent instruction service never holds the event stream.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum NoticeRequests {
    Table,
    Id,
    DedupKey,
    Kind,
    Number,
    ProcedureId,
    ProcedureTitle,
    SourceEventId,
    OccurredAt,
    Attempts,
    LastError,
    NextAttemptAt,
    TraceContext,
}

/// Creates `notice_requests`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_notice_requests"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(NoticeRequests::Table)
                .if_not_exists()
                .col(string_len(NoticeRequests::Id, 64).primary_key())
                .col(string_len_uniq(NoticeRequests::DedupKey, 400))
                .col(string_len(NoticeRequests::Kind, 32))
                .col(big_integer(NoticeRequests::Number))
                .col(string_len(NoticeRequests::ProcedureId, 128))
                .col(text(NoticeRequests::ProcedureTitle))
                .col(string_len(NoticeRequests::SourceEventId, 64))
                .col(timestamp_with_time_zone(NoticeRequests::OccurredAt))
                .col(integer(NoticeRequests::Attempts))
                .col(text(NoticeRequests::LastError))
                .col(timestamp_with_time_zone(NoticeRequests::NextAttemptAt))
                .col(text(NoticeRequests::TraceContext))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("notice_requests_due")
                .table(NoticeRequests::Table)
                .col(NoticeRequests::NextAttemptAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(NoticeRequests::Table).to_owned())
            .await
    }
}
