//! Schema migrations, applied at start.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001CreateDeadLetters)]
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum DeadLetters {
    Table,
    Id,
    Topic,
    DeadLetterTopic,
    CloudEventId,
    EventType,
    Source,
    Traceparent,
    PartitionKey,
    Payload,
    PayloadJson,
    DecodeError,
    FirstSeenAt,
    LastSeenAt,
    TimesDeadLettered,
    Status,
    ReplayCount,
    LastReplayedAt,
    ReplayedBy,
    DiscardedAt,
    DiscardedBy,
}

struct M0001CreateDeadLetters;

impl MigrationName for M0001CreateDeadLetters {
    fn name(&self) -> &str {
        "m0001_create_dead_letters"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001CreateDeadLetters {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use DeadLetters as D;
        m.create_table(
            Table::create()
                .table(D::Table)
                .if_not_exists()
                .col(string(D::Id).primary_key())
                .col(string(D::Topic))
                .col(string(D::DeadLetterTopic))
                .col(string(D::CloudEventId))
                .col(string(D::EventType))
                .col(string(D::Source))
                .col(string(D::Traceparent))
                .col(string(D::PartitionKey))
                .col(blob(D::Payload))
                .col(text(D::PayloadJson))
                .col(text(D::DecodeError))
                .col(big_integer(D::FirstSeenAt))
                .col(big_integer(D::LastSeenAt))
                .col(integer(D::TimesDeadLettered))
                .col(string(D::Status))
                .col(integer(D::ReplayCount))
                .col(big_integer_null(D::LastReplayedAt))
                .col(string(D::ReplayedBy))
                .col(big_integer_null(D::DiscardedAt))
                .col(string(D::DiscardedBy))
                .to_owned(),
        )
        .await?;
        // One row per dead-lettered message (a redelivery from the -dlq topic adds none);
        // lists newest first.
        let indexes: [(&str, bool, &[D]); 2] = [
            (
                "ux_dead_letters_event",
                true,
                &[D::DeadLetterTopic, D::CloudEventId],
            ),
            ("ix_dead_letters_seen", false, &[D::LastSeenAt, D::Id]),
        ];
        todo_service::db::create_indexes(m, D::Table, &indexes).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(DeadLetters::Table).to_owned())
            .await
    }
}
