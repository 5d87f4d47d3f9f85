//! Opening a service's own database (SQLite by default, PostgreSQL by URL) with its
//! migrations, and one writer connection for SQLite.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;

/// Opens the database at `url` and applies `M`'s pending migrations.
///
/// SQLite runs in WAL mode with a busy timeout, so readers never block the writer.
pub async fn connect<M: MigratorTrait>(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbErr::Custom(format!("creating {}: {e}", dir.display())))?;
    }
    let db = Database::connect(options(url, max_connections)).await?;
    M::up(&db, None).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA optimize").await?;
    }
    Ok(db)
}

/// The connection every write transaction goes through, next to `pool` (from [`connect`],
/// which reads use).
///
/// SQLite lets one connection write at a time; a writer that finds the lock taken sleeps
/// in SQLite's busy handler (1, 2, 5, 10, … up to 100 ms) instead of being woken when it
/// frees, which made the slowest creates wait hundreds of milliseconds under load. So on
/// SQLite the writes get a pool of their own with one connection: they queue in order in
/// the pool (woken the moment it frees), while reads keep the other connections (WAL:
/// readers never wait for the writer). PostgreSQL locks rows, not the database: its
/// writes share `pool`.
pub async fn writer(url: &str, pool: &DatabaseConnection) -> Result<DatabaseConnection, DbErr> {
    // (An in-memory SQLite database exists once per connection: it cannot be shared.)
    if pool.get_database_backend() != DbBackend::Sqlite || sqlite_path(url).is_none() {
        return Ok(pool.clone());
    }
    Database::connect(options(url, 1)).await
}

/// How long a pooled connection may sit unused before it is pinged on its next acquire.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(30);

fn options(url: &str, max_connections: u32) -> ConnectOptions {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // Ping a connection before handing it out only when it sat idle for a while (sqlx
        // pings on every acquire by default, and again on every release). On SQLite a ping
        // is one more round trip to the connection's thread per transaction, on PostgreSQL
        // one more to the server. The ping on release still drops a connection that broke
        // while in use; one that broke while idle in the pool for less than this (a server
        // restart) fails its next statement once, which callers see as UNAVAILABLE.
        .test_before_acquire_if_idle_for(IDLE_BEFORE_PING)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .create_if_missing(true)
        });
    opts
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn finds_the_sqlite_file() {
        assert_eq!(
            sqlite_path("sqlite://.data/tasks.db?mode=rwc"),
            Some(".data/tasks.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x/y"), None);
    }
}
