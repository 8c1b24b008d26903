//! The trace context an email was queued in (`outgoing_mails.trace_context`, W3C headers as
//! JSON): the sender's span continues the trace of the event that caused the email, even when it
//! is sent later or retried.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum OutgoingMails {
    Table,
    TraceContext,
}

/// Adds `outgoing_mails.trace_context`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_mail_trace"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OutgoingMails::Table)
                .add_column(text(OutgoingMails::TraceContext).default(""))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OutgoingMails::Table)
                .drop_column(OutgoingMails::TraceContext)
                .to_owned(),
        )
        .await
    }
}
