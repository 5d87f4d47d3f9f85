//! The SQLite writer connection on a real file: it keeps the pool's durability settings,
//! leaves checkpoints to the background task, and that task keeps the WAL checkpointed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

async fn pragma(db: &DatabaseConnection, name: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("PRAGMA {name}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

struct NoMigrations;

#[todo_service::db::sea_orm_migration::async_trait::async_trait]
impl todo_service::db::sea_orm_migration::MigratorTrait for NoMigrations {
    fn migrations() -> Vec<Box<dyn todo_service::db::sea_orm_migration::MigrationTrait>> {
        Vec::new()
    }
}

#[tokio::test]
async fn the_writer_syncs_like_the_pool_and_the_background_task_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let pool = todo_service::db::connect::<NoMigrations>(&url, 4)
        .await
        .unwrap();
    let writer = todo_service::db::writer(&url, &pool).await.unwrap();

    // WAL, synchronous=NORMAL (1): a commit does not fsync, and the writer's own
    // checkpoint is only the safety bound.
    assert_eq!(pragma(&writer, "synchronous").await, 1);
    assert_eq!(pragma(&pool, "synchronous").await, 1);
    assert_eq!(
        pragma(&writer, "wal_autocheckpoint").await,
        i64::from(todo_service::db::WRITER_CHECKPOINT_PAGES)
    );

    writer
        .execute_unprepared("CREATE TABLE item (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        .await
        .unwrap();
    let before = std::fs::metadata(&file).unwrap().len();
    // ~2 MiB in 200 commits: far below the writer's own bound (64 MiB).
    for i in 0..200 {
        writer
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO item (id, body) VALUES (?, zeroblob(10000))",
                [i.into()],
            ))
            .await
            .unwrap();
    }
    // Only a checkpoint copies pages into the database file; the background task does it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let size = std::fs::metadata(&file).unwrap().len();
        if size >= before + 2_000_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the database file stayed at {size} bytes (from {before}): nothing checkpointed the WAL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await.unwrap();
}

/// The bundled SQLite is built without its two process-wide locks (`.cargo/config.toml`):
/// a build without that configuration would put every connection's page cache under one
/// mutex again, and every allocation under another.
#[tokio::test]
async fn sqlite_is_built_without_process_wide_locks() {
    let db = todo_service::db::connect::<NoMigrations>("sqlite::memory:", 1)
        .await
        .unwrap();
    let options: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA compile_options",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "memory statistics are kept: {options:?}"
    );
    assert!(
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "one page cache for every connection: {options:?}"
    );
}
