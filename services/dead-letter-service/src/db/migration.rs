//! Schema migrations, applied at start.

use todo_service::db::{CreateTables, EntityTable};

todo_service::migrator!(pub Migrator: [M0001_CREATE_DEAD_LETTERS]);

use super::dead_letter::{Column as D, Entity};

/// One row per dead-lettered message (a redelivery from the -dlq topic adds none); lists
/// newest first.
const DEAD_LETTERS: EntityTable<Entity> = EntityTable {
    entity: Entity,
    indexes: &[
        (
            "ux_dead_letters_event",
            true,
            &[D::DeadLetterTopic, D::CloudEventId],
        ),
        ("ix_dead_letters_seen", false, &[D::LastSeenAt, D::Id]),
    ],
};

const M0001_CREATE_DEAD_LETTERS: CreateTables = CreateTables {
    name: "m0001_create_dead_letters",
    tables: &[&DEAD_LETTERS],
};

// What the released migration made.
todo_service::released_schema!(Migrator: 1 => r#"
CREATE TABLE "dead_letters" ( "id" varchar NOT NULL PRIMARY KEY, "topic" varchar NOT NULL, "dead_letter_topic" varchar NOT NULL, "cloud_event_id" varchar NOT NULL, "event_type" varchar NOT NULL, "source" varchar NOT NULL, "traceparent" varchar NOT NULL, "partition_key" varchar NOT NULL, "payload" blob NOT NULL, "payload_json" text NOT NULL, "decode_error" text NOT NULL, "first_seen_at" integer NOT NULL, "last_seen_at" integer NOT NULL, "times_dead_lettered" integer NOT NULL, "status" varchar NOT NULL, "replay_count" integer NOT NULL, "last_replayed_at" integer NULL, "replayed_by" varchar NOT NULL, "discarded_at" integer NULL, "discarded_by" varchar NOT NULL )
CREATE UNIQUE INDEX "ux_dead_letters_event" ON "dead_letters" ("dead_letter_topic", "cloud_event_id")
CREATE INDEX "ix_dead_letters_seen" ON "dead_letters" ("last_seen_at", "id")
"#);
