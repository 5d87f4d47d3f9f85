//! Schema migrations, applied at start.

use todo_service::db::{CreateTables, EntityTable};

todo_service::migrator!(pub Migrator: [M0001_CREATE_ENTRIES]);

use super::entry::{Column as E, Entity};

/// The audit log. One entry per event id: redeliveries insert nothing. A task's history
/// and a user's activity, both in the order things happened; and the pruner's range.
const ENTRIES: EntityTable<Entity> = EntityTable {
    entity: Entity,
    indexes: &[
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
    ],
};

const M0001_CREATE_ENTRIES: CreateTables = CreateTables {
    name: "m0001_create_audit_entries",
    tables: &[&ENTRIES],
};

// What the released migration made.
todo_service::released_schema!(Migrator: 1 => r#"
CREATE TABLE "audit_entries" ( "seq" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "event_id" varchar NOT NULL, "event_type" varchar NOT NULL, "task_id" varchar NOT NULL, "user_id" varchar NOT NULL, "occurred_at" integer NOT NULL, "recorded_at" integer NOT NULL, "actor" varchar NOT NULL, "trace_id" varchar NOT NULL, "cloud_event_id" varchar NOT NULL, "payload" blob NOT NULL )
CREATE UNIQUE INDEX "ux_audit_event" ON "audit_entries" ("event_id")
CREATE INDEX "ix_audit_task" ON "audit_entries" ("user_id", "task_id", "occurred_at", "event_id")
CREATE INDEX "ix_audit_user" ON "audit_entries" ("user_id", "occurred_at", "event_id")
CREATE INDEX "ix_audit_occurred" ON "audit_entries" ("occurred_at")
"#);
