//! Database errors mapped to gRPC statuses by kind, not all to one code; opening a
//! service's own database.

mod group;
mod insert;
mod open;
mod tables;

pub use group::{GroupTxn, GroupWriter, InsertLater, Later, MAX_GROUP, insert_later};
pub use insert::insert_all;
pub use open::{CHECKPOINT_EVERY, WRITER_CHECKPOINT_PAGES, connect, writer};
pub use tables::{
    CreateTables, EntityTable, NewTable, TableSpec, assert_released_schema, sqlite_schema,
};

/// For [`migrator!`](crate::migrator): the migration crate, as the macro names it.
#[doc(hidden)]
pub use sea_orm_migration;

/// Declares a service's `Migrator`: the type sea-orm-migration runs, with the service's
/// migrations in the order they were released (each a [`CreateTables`], or any
/// `MigrationTrait` value). A released migration is never removed or moved.
///
/// ```ignore
/// todo_service::migrator!(pub Migrator: [M0001_CREATE_ENTRIES, M0002_ADD_ACTOR]);
/// ```
#[macro_export]
macro_rules! migrator {
    ($(#[$meta:meta])* $vis:vis $name:ident: [$($migration:expr),+ $(,)?]) => {
        $(#[$meta])*
        $vis struct $name;

        #[$crate::db::sea_orm_migration::async_trait::async_trait]
        impl $crate::db::sea_orm_migration::MigratorTrait for $name {
            fn migrations() -> Vec<Box<dyn $crate::db::sea_orm_migration::MigrationTrait>> {
                vec![$(Box::new($migration)),+]
            }
        }
    };
}

/// The test every service with a database has: the first `steps` migrations of `Migrator`
/// (the released ones) make `schema`, SQLite's copy of each statement, one a line (see
/// [`assert_released_schema`]). Any migration rewritten later then provably runs the same
/// statements. Needs tokio (with its test macro) in the calling crate.
///
/// ```ignore
/// todo_service::released_schema!(Migrator: 1 => r#"
/// CREATE TABLE "audit_entries" ( … )
/// "#);
/// ```
#[macro_export]
macro_rules! released_schema {
    ($migrator:ty: $steps:expr => $schema:expr $(,)?) => {
        #[cfg(test)]
        #[::tokio::test]
        async fn the_migrations_make_the_released_schema() {
            $crate::db::assert_released_schema::<$migrator>($steps, $schema).await;
        }
    };
}

use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};
use tonic::Status;

/// What kind of failure a database error is, for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A row with the same key exists (a unique constraint): ALREADY_EXISTS.
    Duplicate,
    /// The transaction lost to a concurrent one (serialization failure, deadlock, SQLite
    /// busy): ABORTED, the caller may simply try again.
    Contention,
    /// The database cannot be reached or the pool is exhausted: UNAVAILABLE.
    Unavailable,
    /// Anything else (a bug, corrupt data, a failed migration): INTERNAL, with an error id.
    Unexpected,
}

/// Sorts a database error into a [`Kind`].
pub fn kind(e: &DbErr) -> Kind {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = e.sql_err() {
        return Kind::Duplicate;
    }
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Kind::Unavailable,
        DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => {
            sqlx_kind(s)
        }
        _ => Kind::Unexpected,
    }
}

fn sqlx_kind(e: &sqlx::Error) -> Kind {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Kind::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
            Some("40001" | "40P01" | "55P03") => Kind::Contention,
            // PostgreSQL: connection exceptions, admin shutdown, cannot connect now,
            // too many connections.
            Some(c) if c.starts_with("08") => Kind::Unavailable,
            Some("57P01" | "57P02" | "57P03" | "53300") => Kind::Unavailable,
            // SQLite: SQLITE_BUSY and SQLITE_LOCKED (and their extended codes).
            Some(c) if is_sqlite_busy(c) => Kind::Contention,
            _ => Kind::Unexpected,
        },
        _ => Kind::Unexpected,
    }
}

/// SQLite's SQLITE_BUSY and SQLITE_LOCKED and their extended codes, by name: masking any
/// number's low byte also matched PostgreSQL's all-digit SQLSTATEs (22021, an invalid byte
/// in text; 42501, permission denied), which then read as "a concurrent change won; retry".
fn is_sqlite_busy(code: &str) -> bool {
    // BUSY, BUSY_RECOVERY, BUSY_SNAPSHOT, BUSY_TIMEOUT; LOCKED, LOCKED_SHAREDCACHE, LOCKED_VTAB.
    matches!(code, "5" | "261" | "517" | "773" | "6" | "262" | "518")
}

/// [`status`] as a function of the error, for `map_err`.
pub fn status_of(what: &'static str) -> impl Fn(DbErr) -> Status {
    move |e| status(&e, what)
}

/// The status for a database error of an operation described by `what`.
pub fn status(e: &DbErr, what: &str) -> Status {
    match kind(e) {
        Kind::Duplicate => Status::already_exists(format!("{what}: it already exists")),
        Kind::Contention => {
            tracing::warn!(error = %e, "{what}: lost to a concurrent transaction");
            Status::aborted(format!("{what}: a concurrent change won; retry"))
        }
        Kind::Unavailable => {
            tracing::error!(error = %e, "{what}: database unavailable");
            Status::unavailable(format!("{what}: the database is unavailable; retry later"))
        }
        Kind::Unexpected => crate::internal(e, what),
    }
}

/// SQLite's plan of `statement` on `db` (`EXPLAIN QUERY PLAN`): the `detail` of each step,
/// joined by `; `. For tests that pin a hot statement to the index it must use.
pub async fn sqlite_plan<C: sea_orm::ConnectionTrait>(
    db: &C,
    statement: sea_orm::Statement,
) -> Result<String, sea_orm::DbErr> {
    let explain = sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Sqlite,
        format!("EXPLAIN QUERY PLAN {}", statement.sql),
        statement.values.map(|v| v.0).unwrap_or_default(),
    );
    Ok(db
        .query_all_raw(explain)
        .await?
        .iter()
        .map(|r| r.try_get::<String>("", "detail").unwrap_or_default())
        .collect::<Vec<_>>()
        .join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_kind() {
        assert_eq!(
            kind(&DbErr::ConnectionAcquire(
                sea_orm::error::ConnAcquireErr::Timeout
            )),
            Kind::Unavailable
        );
        assert_eq!(
            kind(&DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(
                sqlx::Error::PoolTimedOut
            )))),
            Kind::Unavailable
        );
        assert_eq!(kind(&DbErr::Custom("x".into())), Kind::Unexpected);
        assert_eq!(
            status(&DbErr::Custom("x".into()), "reading").code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn sqlite_busy_and_locked_are_contention() {
        for code in ["5", "6", "261", "517", "262"] {
            assert!(is_sqlite_busy(code), "{code}");
        }
        // Regression: PostgreSQL's 22021 and 42501 end in the byte 5 and were contention.
        for code in ["1", "19", "2067", "x", "22021", "42501", "40001"] {
            assert!(!is_sqlite_busy(code), "{code}");
        }
    }
}
