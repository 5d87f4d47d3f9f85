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
///
/// On SQLite the writer does not checkpoint the WAL itself (below a safety bound, see
/// [`WRITER_CHECKPOINT_PAGES`]). A checkpoint syncs the WAL and the database file: two
/// fsyncs, several milliseconds each on a slow disk, and the writer's own checkpoints
/// (every 1,000 pages by default: every ~170 lone task creates) held every queued write
/// behind them. A task checkpoints on a connection of `pool` instead, without waiting on
/// readers or the writer (`PASSIVE`), every [`CHECKPOINT_EVERY`] while the WAL grows (less
/// often while it does not); it stops when `pool` is closed. Once a checkpoint has caught
/// up, the writer starts the WAL again from its beginning and syncs its header: short
/// intervals keep what that sync has to flush small.
pub async fn writer(url: &str, pool: &DatabaseConnection) -> Result<DatabaseConnection, DbErr> {
    // (An in-memory SQLite database exists once per connection: it cannot be shared.)
    if pool.get_database_backend() != DbBackend::Sqlite || sqlite_path(url).is_none() {
        return Ok(pool.clone());
    }
    let writer = Database::connect(options_with(url, 1, Some(WRITER_CHECKPOINT_PAGES))).await?;
    tokio::spawn(checkpoint_in_background(pool.clone()));
    Ok(writer)
}

/// How often the background task checkpoints a SQLite database's WAL while it grows.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(25);

/// How often it looks while the WAL does not grow (the interval doubles up to this). A
/// look at a WAL with nothing to copy is a query and no I/O. Kept short because the first
/// checkpoint after a quiet spell syncs everything written since: with 1 s, writes that
/// resumed at 1,000 creates/s left ~1 s of WAL for it, and its 36 ms sync held the writer
/// as long (the slowest create of the burst waited 37 ms).
const CHECKPOINT_IDLE: Duration = Duration::from_millis(100);

/// The WAL's size, in pages, at which the writer checkpoints on its own after all: only
/// when the background checkpoints fall behind (readers holding old snapshots), so the WAL
/// stays bounded (64 MiB of 4 KiB pages).
pub const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

async fn checkpoint_in_background(pool: DatabaseConnection) {
    use sea_orm::Statement;
    // (A SQLite `DatabaseConnection` from `Database::connect` is sqlx's pool: `writer`
    // checked the backend before spawning this.)
    let sqlite = pool.get_sqlite_connection_pool().clone();
    let closed = sqlite.close_event();
    tokio::pin!(closed);
    let checkpoint = Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(PASSIVE)");
    let (mut pause, mut seen) = (CHECKPOINT_EVERY, None);
    loop {
        tokio::select! {
            () = &mut closed => return,
            () = tokio::time::sleep(pause) => {}
        }
        // One row: busy, the WAL's frames, the frames checkpointed.
        match pool.query_one_raw(checkpoint.clone()).await {
            Ok(row) => {
                let frames = row.and_then(|r| r.try_get_by_index::<i64>(1).ok());
                pause = if frames != seen {
                    CHECKPOINT_EVERY
                } else {
                    (pause * 2).min(CHECKPOINT_IDLE)
                };
                seen = frames;
            }
            Err(_) if sqlite.is_closed() => return,
            Err(e) => {
                tracing::warn!(error = %e, "checkpointing the SQLite WAL failed; retrying");
                pause = CHECKPOINT_IDLE;
            }
        }
    }
}

/// Prepared statements the SQLite writer, and each PostgreSQL connection, keeps (sqlx keeps
/// 100 by default).
const WRITER_STATEMENT_CACHE: usize = 1024;

/// How long a pooled connection may sit unused before it is pinged on its next acquire.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(30);

fn options(url: &str, max_connections: u32) -> ConnectOptions {
    options_with(url, max_connections, None)
}

/// [`options`], with SQLite's automatic checkpoint at `checkpoint_pages` WAL pages instead
/// of its default 1,000. (sea-orm keeps one SQLite options mapping: it is all set here.)
fn options_with(url: &str, max_connections: u32, checkpoint_pages: Option<u32>) -> ConnectOptions {
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
        .map_sqlx_sqlite_opts(move |o| {
            let o = o
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .create_if_missing(true);
            match checkpoint_pages {
                // The writer: its texts vary with each group's shape (how many rows of which
                // tables it held), so it keeps more prepared statements than sqlx's 100,
                // and the statements every write runs stay cached among them.
                Some(pages) => o
                    .pragma("wal_autocheckpoint", pages.to_string())
                    .statement_cache_capacity(WRITER_STATEMENT_CACHE),
                None => o,
            }
        })
        // A group commit's held inserts are one statement whose text varies with the
        // group's shape (how many rows of which tables, see todo_service::db), so each
        // connection keeps more prepared statements than sqlx's 100, and the statements
        // every write runs stay cached among them.
        .map_sqlx_postgres_opts(|o| o.statement_cache_capacity(WRITER_STATEMENT_CACHE));
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
