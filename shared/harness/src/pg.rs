//! A fresh PostgreSQL database per test or benchmark run, created on the server at an admin
//! URL (`DATABASE_URL_PG`) and dropped at the end, so runs never see each other's rows.

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};

/// The variable that names the PostgreSQL server (`just pg-up` prints it).
pub const ADMIN_URL_VAR: &str = "DATABASE_URL_PG";

/// Creates `<prefix>_<uuid>` on the server at `admin_url`; answers its name and URL.
pub async fn create_database(admin_url: &str, prefix: &str) -> anyhow::Result<(String, String)> {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let conn = Database::connect(admin_url).await.with_context(|| {
        format!(
            "PostgreSQL at {} does not answer: start it with `just pg-up` (or point \
             {ADMIN_URL_VAR} at a server where the user may CREATE DATABASE)",
            redact(admin_url)
        )
    })?;
    let created = conn
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("CREATE DATABASE {name}"));
    conn.close().await?;
    created?;
    let base = admin_url
        .split('?')
        .next()
        .and_then(|u| u.rsplit_once('/'))
        .map(|(b, _)| b)
        .with_context(|| format!("{ADMIN_URL_VAR} has no /database part"))?;
    Ok((name.clone(), format!("{base}/{name}")))
}

/// Drops database `name` (made by [`create_database`]), closing its connections.
pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let conn = Database::connect(admin_url).await?;
    let dropped = conn
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .with_context(|| format!("DROP DATABASE {name}"));
    conn.close().await?;
    dropped?;
    Ok(())
}

/// The process id of the PostgreSQL server (the postmaster) at `admin_url`, when it runs on
/// this machine: the parent of the backend that answers `pg_backend_pid()`. Benchmarks
/// measure the server's CPU as the postmaster and its children.
pub async fn server_pid(admin_url: &str) -> anyhow::Result<u32> {
    use sea_orm::{DatabaseBackend, Statement};
    let conn = Database::connect(admin_url).await?;
    let row = conn
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT pg_backend_pid()",
        ))
        .await;
    // Read while the connection (so its backend) is alive: a closed backend exits.
    let stat = row?
        .context("pg_backend_pid() answered no row")?
        .try_get_by_index::<i32>(0)
        .map_err(anyhow::Error::from)
        .and_then(|backend| {
            std::fs::read_to_string(format!("/proc/{backend}/stat"))
                .with_context(|| format!("backend {backend} is not a process of this machine"))
        });
    conn.close().await?;
    let stat = stat?;
    crate::processes::parse_stat(&stat)
        .map(|s| s.ppid)
        .context("unreadable /proc/<backend>/stat")
}

/// The database URL without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}
