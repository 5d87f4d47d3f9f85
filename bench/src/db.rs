//! Which databases a benchmark runs task-service on (`BENCH_DATABASES`, `DATABASE_URL_PG`).

use anyhow::{bail, ensure};
use todo_harness::pg::ADMIN_URL_VAR;

/// The PostgreSQL server `just pg-up` starts.
pub const DEFAULT_PG: &str = "postgres://todo:todo@127.0.0.1:15432/todo";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }

    /// Where a run's fresh database lives, for the report.
    pub fn fresh(self) -> &'static str {
        match self {
            Self::Sqlite => "fresh file in a temporary directory, WAL, synchronous=NORMAL",
            Self::Postgres => "fresh database on DATABASE_URL_PG, dropped afterwards",
        }
    }
}

/// The databases named by `BENCH_DATABASES` (`sqlite,postgres` when unset), and whether
/// they were named.
pub fn databases_from_env() -> anyhow::Result<(Vec<Db>, bool)> {
    let (databases, named) = match std::env::var("BENCH_DATABASES") {
        Err(std::env::VarError::NotPresent) => (vec![Db::Sqlite, Db::Postgres], false),
        Err(e) => bail!("BENCH_DATABASES: {e}"),
        Ok(v) => (
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| match s.to_ascii_lowercase().as_str() {
                    "sqlite" => Ok(Db::Sqlite),
                    "postgres" | "postgresql" | "pg" => Ok(Db::Postgres),
                    other => {
                        bail!("BENCH_DATABASES: unknown database {other:?} (sqlite, postgres)")
                    }
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            true,
        ),
    };
    ensure!(!databases.is_empty(), "BENCH_DATABASES names no database");
    Ok((databases, named))
}

/// The PostgreSQL server benchmark databases are created on: `DATABASE_URL_PG`, or
/// [`DEFAULT_PG`].
pub fn pg_admin_url() -> String {
    std::env::var(ADMIN_URL_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PG.to_owned())
}
