//! Group commit on the real databases: writes queued together share one commit, a write
//! that fails rolls back alone, and an answer comes only after the commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement};
use todo_service::db::{GroupWriter, MAX_GROUP};

async fn count(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM item",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn insert(
    txn: &sea_orm::DatabaseTransaction,
    name: String,
    user: String,
) -> Result<(), DbErr> {
    let backend = txn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "INSERT INTO item (name, owner) VALUES ($1, $2)",
        _ => "INSERT INTO item (name, owner) VALUES (?, ?)",
    };
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [name.into(), user.into()],
    ))
    .await?;
    Ok(())
}

/// 300 writes from 100 users at once, one in ten a duplicate name: every duplicate fails
/// alone (unique violation), every other write is committed when its answer arrives, and
/// the writes shared commits.
async fn writes_share_commits_and_fail_alone(
    writer: DatabaseConnection,
    reader: DatabaseConnection,
    lanes: usize,
) {
    writer
        .execute_unprepared("CREATE TABLE item (name TEXT PRIMARY KEY, owner TEXT NOT NULL)")
        .await
        .unwrap();
    let group = GroupWriter::new(writer, lanes, MAX_GROUP);
    let reader = Arc::new(reader);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let group = group.clone();
        let reader = reader.clone();
        calls.spawn(async move {
            // Every tenth write takes the name of the write before it.
            // (Same user, as the service's duplicates are: one lane, no lock cycle.)
            let (name, user) = if i % 10 == 9 {
                (format!("n{}", i - 1), format!("u{}", (i - 1) % 100))
            } else {
                (format!("n{i}"), format!("u{}", i % 100))
            };
            let looked_up = name.clone();
            let result = group
                .write(&user.clone(), move |txn| {
                    Box::pin(insert(txn, name.clone(), user.clone()))
                })
                .await;
            // Answered: the row is visible to any other connection (it committed).
            let visible = reader
                .query_one_raw(Statement::from_sql_and_values(
                    reader.get_database_backend(),
                    match reader.get_database_backend() {
                        DbBackend::Postgres => "SELECT name FROM item WHERE name = $1",
                        _ => "SELECT name FROM item WHERE name = ?",
                    },
                    [looked_up.into()],
                ))
                .await
                .unwrap()
                .is_some();
            (i, result, visible)
        });
    }
    let mut ok = 0;
    let mut duplicates = 0;
    while let Some(joined) = calls.join_next().await {
        let (i, result, visible) = joined.unwrap();
        match result {
            Ok(()) => {
                assert!(visible, "write {i} answered before its commit");
                ok += 1;
            }
            Err(e) => {
                assert_eq!(
                    todo_service::db::kind(&e),
                    todo_service::db::Kind::Duplicate,
                    "write {i}: {e}"
                );
                assert!(visible, "the first write of that name committed");
                duplicates += 1;
            }
        }
    }
    // Pairs (8, 9), (18, 19), …: whichever of the two ran first won.
    assert_eq!((ok, duplicates), (270, 30));
    assert_eq!(count(&reader).await, 270);
    let (groups, writes) = group.groups_and_writes();
    assert_eq!(writes, 300);
    assert!(
        groups < writes,
        "300 writes at once shared no commit ({groups} groups)"
    );
    // Only a group with a failing write runs again (with savepoints); 30 duplicates can
    // have made at most 30 groups do so, and the 270 others committed on the first run.
    assert!(
        group.regrouped() <= 30,
        "{} groups ran again for 30 failing writes",
        group.regrouped()
    );
}

#[tokio::test]
async fn sqlite_one_lane() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/g.db?mode=rwc", dir.path().display());
    let pool = Database::connect(&url).await.unwrap();
    pool.execute_unprepared("PRAGMA journal_mode=WAL")
        .await
        .unwrap();
    let writer = todo_service::db::writer(&url, &pool).await.unwrap();
    writes_share_commits_and_fail_alone(writer, pool, 1).await;
}

#[tokio::test]
async fn postgres_four_lanes() {
    let admin = std::env::var(todo_harness::pg::ADMIN_URL_VAR)
        .expect("DATABASE_URL_PG names the PostgreSQL server (`just pg-up`)");
    let (name, url) = todo_harness::pg::create_database(&admin, "group_commit")
        .await
        .unwrap();
    let pool = Database::connect(&url).await.unwrap();
    writes_share_commits_and_fail_alone(pool.clone(), pool.clone(), 4).await;
    pool.close().await.unwrap();
    todo_harness::pg::drop_database(&admin, &name)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_and_the_group_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/g.db?mode=rwc", dir.path().display());
    let pool = Database::connect(&url).await.unwrap();
    pool.execute_unprepared("CREATE TABLE item (name TEXT PRIMARY KEY, owner TEXT NOT NULL)")
        .await
        .unwrap();
    let group = GroupWriter::new(pool.clone(), 1, MAX_GROUP);
    // A write that inserts, then fails with an error of its own: its insert is undone.
    let mut calls = Vec::new();
    for i in 0..20u32 {
        let group = group.clone();
        calls.push(tokio::spawn(async move {
            group
                .write("u", move |txn| {
                    Box::pin(async move {
                        insert(txn, format!("n{i}"), "u".into()).await?;
                        if i % 2 == 1 {
                            return Err(DbErr::Custom(format!("write {i} refuses")));
                        }
                        Ok(i)
                    })
                })
                .await
        }));
    }
    let mut committed = Vec::new();
    for c in calls {
        if let Ok(i) = c.await.unwrap() {
            committed.push(i);
        }
    }
    assert_eq!(committed, (0..20).step_by(2).collect::<Vec<_>>());
    assert_eq!(count(&pool).await, 10);
}
