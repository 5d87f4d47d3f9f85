//! Latency figures (HDR histograms in µs) and the lines every benchmark report prints.

use std::time::Duration;

use hdrhistogram::Histogram;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use todo_harness::processes::{ProcessSet, USAGE_NOTE, UsageRow, usage_table};

/// A latency histogram: 1 µs .. 1 h, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

/// Microseconds of `d`, at least 1 (the histogram's lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Microseconds as milliseconds with one decimal.
pub fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// The value at quantile `q` in ms, or "–" for an empty histogram.
pub fn quantile(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "–".to_owned()
    } else {
        ms(h.value_at_quantile(q))
    }
}

/// The command line that reproduces this run: the `BENCH_*` variables that were set and
/// those of `passed_through`, then `cargo run` of binary `bin`; plus the `just` recipe when
/// nothing was set.
pub fn command(bin: &str, passed_through: &[&str]) -> String {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BENCH_") || passed_through.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    let plain = vars.is_empty();
    vars.push(format!("cargo run --release -p todo-bench --bin {bin}"));
    let command = format!("`{}`", vars.join(" "));
    if plain {
        format!("{command} (`just {}`)", bin.replace('_', "-"))
    } else {
        command
    }
}

/// The database server's version (SQLite's or PostgreSQL's), or "unknown".
pub async fn server_version(db: &DatabaseConnection) -> String {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => "SHOW server_version",
        _ => "SELECT sqlite_version()",
    };
    match db.query_one_raw(Statement::from_string(backend, sql)).await {
        Ok(Some(row)) => row
            .try_get_by_index::<String>(0)
            .unwrap_or_else(|_| "unknown".to_owned()),
        _ => "unknown".to_owned(),
    }
}

/// The CPU-per-operation block of a report: `title`, the processes measured (names and
/// pids), the table of `rows` (CPU ms per `unit` of each process, peak RSS), and how the
/// figures were read.
pub fn usage_block(
    title: &str,
    processes: &ProcessSet,
    unit: &str,
    rows: &[UsageRow<'_>],
) -> String {
    format!(
        "### {title}: CPU ms per {unit} and peak RSS, by process\n\n\
         processes: {}\n\n{}\n{USAGE_NOTE}\n",
        processes.describe(),
        usage_table(unit, rows)
    )
}
