//! The tasks database: connection (SQLite by default, PostgreSQL by URL) and migrations.

pub mod entities;
pub mod migration;

use sea_orm::{DatabaseConnection, DbErr};

pub use todo_service::db::writer;

/// How many lanes the Task API's group commit writes on: SQLite has one writer, so one;
/// PostgreSQL writes in parallel on half the pool (at least one), leaving the rest to reads.
pub fn write_lanes(url: &str, max_connections: u32) -> usize {
    if url.starts_with("sqlite:") {
        1
    } else {
        (max_connections as usize / 2).max(1)
    }
}

/// Opens the tasks database at `url` and applies pending migrations (see
/// [`todo_service::db::connect`]).
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    todo_service::db::connect::<migration::Migrator>(url, max_connections).await
}

// What the eight released migrations made (`tasks` with the columns M0004 and M0005 added,
// the reminders' task index replaced by M0008).
todo_service::released_schema!(migration::Migrator: 8 => r#"
CREATE TABLE "tasks" ( "id" uuid_text NOT NULL PRIMARY KEY, "user_id" varchar NOT NULL, "title" text NOT NULL, "description" text NOT NULL, "status" smallint NOT NULL, "priority" smallint NOT NULL, "tags" text NOT NULL, "due_time" integer NULL, "due_sort" integer NOT NULL, "time_zone" varchar NOT NULL, "recurrence" blob NULL, "reminders" blob NOT NULL, "series_id" uuid_text NULL, "parent_task_id" uuid_text NULL, "occurrence_index" integer NOT NULL, "create_time" integer NOT NULL, "update_time" integer NOT NULL, "complete_time" integer NULL, "version" integer NOT NULL, "request_id" varchar NULL , "series_start" integer NULL, "default_reminders" boolean NOT NULL DEFAULT FALSE)
CREATE INDEX "ix_tasks_user_create" ON "tasks" ("user_id", "create_time", "id")
CREATE INDEX "ix_tasks_user_due" ON "tasks" ("user_id", "due_sort", "id")
CREATE INDEX "ix_tasks_user_priority" ON "tasks" ("user_id", "priority", "id")
CREATE UNIQUE INDEX "ux_tasks_user_request" ON "tasks" ("user_id", "request_id")
CREATE TABLE "task_tags" ( "task_id" uuid_text NOT NULL, "tag" varchar NOT NULL, "user_id" varchar NOT NULL, PRIMARY KEY ("task_id", "tag"), FOREIGN KEY ("task_id") REFERENCES "tasks" ("id") ON DELETE CASCADE )
CREATE INDEX "ix_task_tags_user_tag" ON "task_tags" ("user_id", "tag")
CREATE TABLE "outbox" ( "seq" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "event_id" uuid_text NOT NULL, "topic" varchar NOT NULL, "event_type" varchar NOT NULL, "partition_key" varchar NOT NULL, "payload" blob NOT NULL, "created_at" integer NOT NULL )
CREATE TABLE "reminders" ( "reminder_id" uuid_text NOT NULL PRIMARY KEY, "task_id" uuid_text NOT NULL, "user_id" varchar NOT NULL, "task_title" text NOT NULL, "due_time" integer NULL, "remind_at" integer NOT NULL, "state" smallint NOT NULL )
CREATE INDEX "ix_reminders_state_at" ON "reminders" ("state", "remind_at")
CREATE TABLE "task_tombstones" ( "task_id" uuid_text NOT NULL PRIMARY KEY, "user_id" varchar NOT NULL, "deleted_at" integer NOT NULL )
CREATE TABLE "user_changes" ( "user_id" varchar NOT NULL PRIMARY KEY, "seq" integer NOT NULL )
CREATE INDEX "ix_reminders_task_state" ON "reminders" ("task_id", "state")
"#);
