//! Schema migrations, applied at start.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001CreateEntries)]
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditEntries {
    Table,
    Seq,
    EventId,
    EventType,
    TaskId,
    UserId,
    OccurredAt,
    RecordedAt,
    Actor,
    TraceId,
    CloudEventId,
    Payload,
}

struct M0001CreateEntries;

impl MigrationName for M0001CreateEntries {
    fn name(&self) -> &str {
        "m0001_create_audit_entries"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001CreateEntries {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use AuditEntries as E;
        m.create_table(
            Table::create()
                .table(E::Table)
                .if_not_exists()
                .col(big_pk_auto(E::Seq))
                .col(string(E::EventId))
                .col(string(E::EventType))
                .col(string(E::TaskId))
                .col(string(E::UserId))
                .col(big_integer(E::OccurredAt))
                .col(big_integer(E::RecordedAt))
                .col(string(E::Actor))
                .col(string(E::TraceId))
                .col(string(E::CloudEventId))
                .col(blob(E::Payload))
                .to_owned(),
        )
        .await?;
        // One entry per event id: redeliveries insert nothing.
        // A task's history and a user's activity, both in the order things happened;
        // and the pruner's range.
        let indexes: [(&str, bool, &[E]); 4] = [
            ("ux_audit_event", true, &[E::EventId]),
            (
                "ix_audit_task",
                false,
                &[E::UserId, E::TaskId, E::OccurredAt, E::EventId],
            ),
            (
                "ix_audit_user",
                false,
                &[E::UserId, E::OccurredAt, E::EventId],
            ),
            ("ix_audit_occurred", false, &[E::OccurredAt]),
        ];
        todo_service::db::create_indexes(m, E::Table, &indexes).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(AuditEntries::Table).to_owned())
            .await
    }
}
