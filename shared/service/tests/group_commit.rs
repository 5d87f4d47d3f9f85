//! Group commit on the real databases: writes queued together share one commit, a write
//! that fails rolls back alone, and an answer comes only after the commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryOrder,
    Statement,
};
use todo_service::db::{GroupTxn, GroupWriter, MAX_GROUP, insert_later};

/// A row a write inserts late (held to its group's end), numbered in its owner's
/// sequence: the shape of the task service's outbox.
mod held {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "held")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub name: String,
        pub owner: String,
        pub n: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

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

/// A fresh SQLite database in its own directory (kept while the `TempDir` lives), made by
/// `ddl`.
async fn sqlite(ddl: &[&str]) -> (tempfile::TempDir, DatabaseConnection) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/g.db?mode=rwc", dir.path().display());
    let pool = Database::connect(&url).await.unwrap();
    for statement in ddl {
        pool.execute_unprepared(statement).await.unwrap();
    }
    (dir, pool)
}

/// Runs `test` with the service's SQLite writer and a pool of a fresh WAL database, as the
/// services open them.
async fn with_sqlite_writer<F, Fut>(test: F)
where
    F: FnOnce(DatabaseConnection, DatabaseConnection) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/g.db?mode=rwc", dir.path().display());
    let pool = Database::connect(&url).await.unwrap();
    pool.execute_unprepared("PRAGMA journal_mode=WAL")
        .await
        .unwrap();
    let writer = todo_service::db::writer(&url, &pool).await.unwrap();
    test(writer, pool).await;
}

/// Runs `test` with a pool of a fresh PostgreSQL database named after `name`, dropped after.
async fn with_postgres<F, Fut>(name: &str, test: F)
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let admin = std::env::var(todo_harness::pg::ADMIN_URL_VAR)
        .expect("DATABASE_URL_PG names the PostgreSQL server (`just pg-up`)");
    let (name, url) = todo_harness::pg::create_database(&admin, name)
        .await
        .unwrap();
    let pool = Database::connect(&url).await.unwrap();
    test(pool.clone()).await;
    pool.close().await.unwrap();
    todo_harness::pg::drop_database(&admin, &name)
        .await
        .unwrap();
}

/// The table most tests write.
const ITEM: &str = "CREATE TABLE item (name TEXT PRIMARY KEY, owner TEXT NOT NULL)";

async fn insert(txn: &impl ConnectionTrait, name: String, user: String) -> Result<(), DbErr> {
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
    writer.execute_unprepared(ITEM).await.unwrap();
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
    with_sqlite_writer(|writer, pool| writes_share_commits_and_fail_alone(writer, pool, 1)).await;
}

#[tokio::test]
async fn postgres_four_lanes() {
    with_postgres("group_commit", |pool| {
        writes_share_commits_and_fail_alone(pool.clone(), pool, 4)
    })
    .await;
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_and_the_group_goes_on() {
    let (_dir, pool) = sqlite(&[ITEM]).await;
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

/// The table of [`defaulted`].
const DEFAULTED: &str = "CREATE TABLE defaulted (name TEXT PRIMARY KEY, n BIGINT DEFAULT 42)";

/// A row with a column that has a default (`n`, 42): a row may leave it unset.
mod defaulted {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "defaulted")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub n: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Held rows of one table that set different columns are not inserted in one statement
/// (there a row's unset column would be NULL, not its default): the group runs again with
/// every insert at once, and every row gets what it would have got alone. (A lone write
/// holding a single table's row first: on PostgreSQL that is one plain INSERT.)
#[tokio::test]
async fn sqlite_held_rows_of_different_shapes_keep_their_defaults() {
    let (_dir, pool) = sqlite(&[]).await;
    held_rows_of_different_shapes_keep_their_defaults(pool).await;
}

#[tokio::test]
async fn postgres_held_rows_of_different_shapes_keep_their_defaults() {
    with_postgres(
        "group_shapes",
        held_rows_of_different_shapes_keep_their_defaults,
    )
    .await;
}

async fn held_rows_of_different_shapes_keep_their_defaults(pool: DatabaseConnection) {
    pool.execute_unprepared(DEFAULTED).await.unwrap();
    // A lone write holding one table's row.
    let group = GroupWriter::new(pool.clone(), 1, MAX_GROUP);
    group
        .write("u", |txn| {
            Box::pin(insert_later(
                txn,
                [defaulted::ActiveModel {
                    name: Set("alone".into()),
                    n: NotSet,
                }],
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        defaulted::Entity::find_by_id("alone")
            .one(&pool)
            .await
            .unwrap()
            .and_then(|r| r.n),
        Some(42)
    );
    defaulted::Entity::delete_by_id("alone")
        .exec(&pool)
        .await
        .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100i64 {
        let group = group.clone();
        calls.spawn(async move {
            group
                .write("u", move |txn| {
                    Box::pin(async move {
                        let n = if i % 2 == 0 { Set(Some(i)) } else { NotSet };
                        insert_later(
                            txn,
                            [defaulted::ActiveModel {
                                name: Set(format!("d{i}")),
                                n,
                            }],
                        )
                        .await
                    })
                })
                .await
        });
    }
    while let Some(joined) = calls.join_next().await {
        joined.unwrap().unwrap();
    }
    let rows = defaulted::Entity::find().all(&pool).await.unwrap();
    assert_eq!(rows.len(), 100);
    for r in rows {
        let i: i64 = r.name[1..].parse().unwrap();
        let expected = if i % 2 == 0 { i } else { 42 };
        assert_eq!(r.n, Some(expected), "{}", r.name);
    }
    let (groups, writes) = group.groups_and_writes();
    assert!(groups < writes, "no two writes shared a group");
    assert!(group.regrouped() > 0, "no group ran again");
}

/// Takes the next number of `owner`'s sequence (at once), then holds a row named `name`
/// carrying it: a duplicate name fails only when the held rows are inserted.
async fn numbered(txn: &GroupTxn<'_>, name: String, owner: String) -> Result<i64, DbErr> {
    let backend = txn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "INSERT INTO counter (owner, n) VALUES ($1, 1) \
             ON CONFLICT (owner) DO UPDATE SET n = counter.n + 1 RETURNING n"
        }
        _ => {
            "INSERT INTO counter (owner, n) VALUES (?, 1) \
             ON CONFLICT (owner) DO UPDATE SET n = counter.n + 1 RETURNING n"
        }
    };
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [owner.clone().into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no number".into()))?;
    let n: i64 = row.try_get("", "n")?;
    insert_later(
        txn,
        [held::ActiveModel {
            seq: NotSet,
            name: Set(name.clone()),
            owner: Set(owner),
            n: Set(n),
        }],
    )
    .await?;
    // And a row of another table: on SQLite both tables' inserts go in one call.
    insert_later(
        txn,
        [defaulted::ActiveModel {
            name: Set(name),
            n: Set(Some(n)),
        }],
    )
    .await?;
    Ok(n)
}

/// 300 writes from 60 users, 150 at once and then 150 more, each taking its owner's next
/// number at once and holding a row back, one in ten of the second half with a duplicate
/// name (which fails only when the held rows are inserted): every duplicate fails alone with its own error, every other write is
/// committed when answered, and each owner's held rows are inserted in the order of their
/// numbers, with no gap (a failed write's number was rolled back with it).
async fn held_inserts_keep_order_and_fail_alone(
    writer: DatabaseConnection,
    reader: DatabaseConnection,
    lanes: usize,
) {
    let backend = writer.get_database_backend();
    let seq = match backend {
        DbBackend::Postgres => "seq BIGSERIAL PRIMARY KEY",
        _ => "seq INTEGER PRIMARY KEY AUTOINCREMENT",
    };
    for ddl in [
        format!(
            "CREATE TABLE held ({seq}, name TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, n BIGINT NOT NULL)"
        ),
        "CREATE TABLE counter (owner TEXT PRIMARY KEY, n BIGINT NOT NULL)".to_owned(),
        DEFAULTED.to_owned(),
    ] {
        writer.execute_unprepared(&ddl).await.unwrap();
    }
    let group = GroupWriter::new(writer, lanes, MAX_GROUP);
    let (mut ok, mut duplicates) = (0, 0);
    // Name → (write, number) of every write answered Ok.
    let mut answered_ok = std::collections::HashMap::new();
    // First 150 writes with no duplicate (their groups insert what they held), then 150
    // with one.
    for half in [0..150u32, 150..300] {
        let mut calls = tokio::task::JoinSet::new();
        for i in half {
            let group = group.clone();
            calls.spawn(async move {
                // A duplicate is its original's owner's (one lane, no lock cycle between
                // lanes).
                let (name, owner) = if i >= 150 && i % 10 == 9 {
                    (format!("n{}", i - 1), format!("u{}", (i - 1) % 60))
                } else {
                    (format!("n{i}"), format!("u{}", i % 60))
                };
                let named = (name.clone(), owner.clone());
                let result = group
                    .write(&owner.clone(), move |txn| {
                        Box::pin(numbered(txn, name.clone(), owner.clone()))
                    })
                    .await;
                (i, named, result)
            });
        }
        while let Some(joined) = calls.join_next().await {
            match joined.unwrap() {
                (_, (name, owner), Ok(n)) => {
                    answered_ok.insert(name, (n, owner));
                    ok += 1;
                }
                (i, (name, _), Err(e)) => {
                    assert_eq!(
                        todo_service::db::kind(&e),
                        todo_service::db::Kind::Duplicate,
                        "write {i}: {e}"
                    );
                    // Whichever of a pair ran second failed.
                    assert!(
                        i >= 150 && (i % 10 == 8 || i % 10 == 9),
                        "write {i} ({name}) failed: {e}"
                    );
                    duplicates += 1;
                }
            }
        }
    }
    assert_eq!((ok, duplicates), (285, 15));
    let rows = held::Entity::find()
        .order_by_asc(held::Column::Seq)
        .all(&reader)
        .await
        .unwrap();
    assert_eq!(rows.len(), 285);
    // Each write answered Ok is the one whose row committed, with the number it was told.
    for r in &rows {
        let told = answered_ok
            .get(&r.name)
            .unwrap_or_else(|| panic!("{} committed, but no write of it was answered Ok", r.name));
        assert_eq!(&(r.n, r.owner.clone()), told, "{r:?}");
    }
    let mut other: Vec<(String, Option<i64>)> = defaulted::Entity::find()
        .all(&reader)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.n))
        .collect();
    other.sort();
    let mut expected: Vec<(String, Option<i64>)> =
        rows.iter().map(|r| (r.name.clone(), Some(r.n))).collect();
    expected.sort();
    assert_eq!(
        other, expected,
        "the other table's rows, each with its values"
    );
    let mut next = std::collections::HashMap::new();
    for r in &rows {
        let expected = next.entry(r.owner.clone()).or_insert(1);
        assert_eq!(
            r.n, *expected,
            "{}'s rows out of order or with a gap: {rows:?}",
            r.owner
        );
        *expected += 1;
    }
    let (groups, writes) = group.groups_and_writes();
    assert!(groups < writes, "no group held anything ({groups} groups)");
    assert!(
        group.held_rows() > 0,
        "no row was held back in {groups} groups of {writes} writes"
    );
    assert!(
        group.regrouped() > 0,
        "no group ran again after its held rows failed"
    );
}

#[tokio::test]
async fn sqlite_held_inserts() {
    with_sqlite_writer(|writer, pool| held_inserts_keep_order_and_fail_alone(writer, pool, 1))
        .await;
}

#[tokio::test]
async fn postgres_held_inserts() {
    with_postgres("group_held", |pool| {
        held_inserts_keep_order_and_fail_alone(pool.clone(), pool, 4)
    })
    .await;
}

/// `write_then`'s step runs once the write committed, also when its caller went away after
/// queueing it (a cancelled request), and not for a write that failed.
#[tokio::test]
async fn the_after_commit_step_runs_when_the_caller_is_gone() {
    let (_dir, pool) = sqlite(&[ITEM]).await;
    let group = GroupWriter::new(pool.clone(), 1, MAX_GROUP);
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let started_tx = std::sync::Mutex::new(Some(started_tx));
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let caller = {
        let group = group.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            group
                .write_then(
                    "u",
                    move |txn| {
                        let started = started_tx.lock().unwrap().take();
                        let mut release = release.clone();
                        Box::pin(async move {
                            insert(txn, "cancelled".into(), "u".into()).await?;
                            if let Some(s) = started {
                                let _ = s.send(());
                            }
                            // Holds the transaction until the caller was cancelled.
                            let _ = release.wait_for(|r| *r).await;
                            Ok::<_, DbErr>(7u32)
                        })
                    },
                    move |v: &u32| {
                        let _ = done_tx.send(*v);
                    },
                )
                .await
        })
    };
    started.await.unwrap();
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    release_tx.send(true).unwrap();
    // (Bounded, so that a step that never runs fails the test instead of hanging it.)
    let ran = tokio::time::timeout(std::time::Duration::from_secs(60), done.recv()).await;
    assert_eq!(ran, Ok(Some(7)), "the step ran for the cancelled write");
    assert_eq!(count(&pool).await, 1, "and the write committed");
    // A failing write's step does not run.
    let err = group
        .write_then(
            "u",
            |txn| Box::pin(insert(txn, "cancelled".into(), "u".into())),
            move |_: &()| {
                let _ = done_tx.send(0);
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        todo_service::db::kind(&err),
        todo_service::db::Kind::Duplicate
    );
    drop(group);
    assert_eq!(done.recv().await, None, "no step ran for the failed write");
}

/// A write inserting a child row of `parent`, answering its name.
fn child(
    name: &'static str,
    parent: &'static str,
) -> impl for<'t> Fn(&'t GroupTxn<'t>) -> futures::future::BoxFuture<'t, Result<&'static str, DbErr>>
+ Send
+ Sync
+ 'static {
    move |txn| {
        Box::pin(async move {
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO child (name, parent) VALUES (?, ?)",
                [name.into(), parent.into()],
            ))
            .await?;
            Ok(name)
        })
    }
}

/// A write whose group's COMMIT fails is answered with that error and rolled back, but its
/// after-commit step runs: a failed COMMIT's outcome can be unknown (PostgreSQL may have
/// committed before the acknowledgement was lost), and whoever reads what it may have
/// written must not be left to a poll. Here SQLite refuses the COMMIT for a deferred
/// foreign key; the next write goes through.
#[tokio::test]
async fn a_failed_commit_still_runs_the_step_and_answers_the_error() {
    let (_dir, pool) = sqlite(&[
        "CREATE TABLE parent (id TEXT PRIMARY KEY)",
        "CREATE TABLE child (name TEXT PRIMARY KEY, parent TEXT NOT NULL \
         REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
    ])
    .await;
    let group = GroupWriter::new(pool.clone(), 1, MAX_GROUP);
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let step = |tx: tokio::sync::mpsc::UnboundedSender<&'static str>| {
        move |v: &&'static str| {
            let _ = tx.send(*v);
        }
    };
    let err = group
        .write_then("u", child("orphan", "nobody"), step(done_tx.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    assert_eq!(
        done.try_recv(),
        Ok("orphan"),
        "the step ran for the failed commit"
    );
    pool.execute_unprepared("INSERT INTO parent (id) VALUES ('p')")
        .await
        .unwrap();
    let ok = group
        .write_then("u", child("kept", "p"), step(done_tx))
        .await
        .unwrap();
    assert_eq!(ok, "kept");
    assert_eq!(done.try_recv(), Ok("kept"));
    let names: Vec<String> = pool
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT name FROM child ORDER BY name",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String>("", "name").unwrap())
        .collect();
    assert_eq!(names, ["kept"], "nothing of the failed commit stayed");
}

/// When a later statement of the held inserts fails (here the second table's, after the
/// first table's rows went in), nothing of the first stays: in a group the failing write
/// fails alone and the others commit both their rows; alone, it fails with nothing written.
#[tokio::test]
async fn sqlite_a_failing_second_table_fails_its_write_alone() {
    let (_dir, pool) = sqlite(&[]).await;
    a_failing_second_table_fails_its_write_alone(pool).await;
}

/// The same on PostgreSQL, where the held tables' inserts are one `WITH` statement.
#[tokio::test]
async fn postgres_a_failing_second_table_fails_its_write_alone() {
    with_postgres("group_second", a_failing_second_table_fails_its_write_alone).await;
}

async fn a_failing_second_table_fails_its_write_alone(pool: DatabaseConnection) {
    let seq = match pool.get_database_backend() {
        DbBackend::Postgres => "seq BIGSERIAL PRIMARY KEY",
        _ => "seq INTEGER PRIMARY KEY AUTOINCREMENT",
    };
    for ddl in [
        format!(
            "CREATE TABLE held ({seq}, name TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, n BIGINT NOT NULL)"
        ),
        DEFAULTED.to_owned(),
        "INSERT INTO defaulted (name, n) VALUES ('taken', 1)".to_owned(),
    ] {
        pool.execute_unprepared(&ddl).await.unwrap();
    }
    let group = GroupWriter::new(pool.clone(), 1, MAX_GROUP);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40u32 {
        let group = group.clone();
        let d = if i == 17 {
            "taken".to_owned()
        } else {
            format!("d{i}")
        };
        let h = format!("h{i}");
        calls.spawn(async move {
            let r = group
                .write("u", move |txn| {
                    Box::pin(hold_both(txn, h.clone(), d.clone()))
                })
                .await;
            (i, r)
        });
    }
    while let Some(joined) = calls.join_next().await {
        match joined.unwrap() {
            (17, r) => assert_eq!(
                todo_service::db::kind(&r.unwrap_err()),
                todo_service::db::Kind::Duplicate
            ),
            (i, r) => r.unwrap_or_else(|e| panic!("write {i}: {e}")),
        }
    }
    let (groups, writes) = group.groups_and_writes();
    assert!(groups < writes, "no two writes shared a group");
    // Alone (nothing else queued), the same failure.
    let alone = group
        .write("u", |txn| {
            Box::pin(hold_both(txn, "h-alone".into(), "taken".into()))
        })
        .await
        .unwrap_err();
    assert_eq!(
        todo_service::db::kind(&alone),
        todo_service::db::Kind::Duplicate
    );
    let mut names: Vec<String> = held::Entity::find()
        .all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..40)
        .filter(|i| *i != 17)
        .map(|i| format!("h{i}"))
        .collect();
    expected.sort();
    assert_eq!(names, expected, "the failing writes' first rows are gone");
    assert_eq!(
        defaulted::Entity::find().all(&pool).await.unwrap().len(),
        40
    );
}

/// Holds a row of `held` named `h`, then one of `defaulted` named `d`.
async fn hold_both(txn: &GroupTxn<'_>, h: String, d: String) -> Result<(), DbErr> {
    insert_later(
        txn,
        [held::ActiveModel {
            seq: NotSet,
            name: Set(h),
            owner: Set("u".into()),
            n: Set(0),
        }],
    )
    .await?;
    insert_later(
        txn,
        [defaulted::ActiveModel {
            name: Set(d),
            n: Set(Some(0)),
        }],
    )
    .await
}
