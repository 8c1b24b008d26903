//! The event-bus tables every service has: the transactional `outbox` and the consumers'
//! `processed_events` (see the `mst-bus` crate, which owns the rows).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Seq,
    EventId,
    Subject,
    Schema,
    Payload,
    Traceparent,
    Tracestate,
    CreatedAt,
    PublishedAt,
}

#[derive(DeriveIden)]
enum ProcessedEvents {
    Table,
    Consumer,
    EventId,
    ProcessedAt,
}

/// Creates `outbox` and `processed_events`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_bus_plumbing"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Seq))
                    .col(string_len_uniq(Outbox::EventId, 64))
                    .col(string_len(Outbox::Subject, 255))
                    .col(string_len(Outbox::Schema, 255))
                    .col(blob(Outbox::Payload))
                    .col(string_len_null(Outbox::Traceparent, 128))
                    .col(text_null(Outbox::Tracestate))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::PublishedAt))
                    .to_owned(),
            )
            .await?;
        // The relay's query: pending rows in order. A partial index keeps it small on PostgreSQL
        // and SQLite alike.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE published_at IS NULL",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("outbox_published_at")
                    .table(Outbox::Table)
                    .col(Outbox::PublishedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProcessedEvents::Table)
                    .if_not_exists()
                    .col(string_len(ProcessedEvents::Consumer, 128))
                    .col(string_len(ProcessedEvents::EventId, 64))
                    .col(timestamp_with_time_zone(ProcessedEvents::ProcessedAt))
                    .primary_key(
                        Index::create()
                            .col(ProcessedEvents::Consumer)
                            .col(ProcessedEvents::EventId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ProcessedEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Outbox::Table).to_owned())
            .await
    }
}
