//! Retention: entries that occurred longer ago than `AUDIT_RETENTION_DAYS` are deleted in
//! the background, a bounded batch per statement, so a large backlog never holds a long
//! lock or a long transaction.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tokio::sync::watch;

use crate::db::entry::{self, Column};

/// Deletes, in batches of `batch`, the entries that occurred before `cutoff_micros`;
/// returns how many.
pub async fn prune_before(
    db: &DatabaseConnection,
    cutoff_micros: i64,
    batch: u64,
) -> Result<u64, DbErr> {
    let mut total = 0;
    loop {
        let seqs: Vec<i64> = entry::Entity::find()
            .select_only()
            .column(Column::Seq)
            .filter(Column::OccurredAt.lt(cutoff_micros))
            .order_by_asc(Column::OccurredAt)
            .limit(batch)
            .into_tuple()
            .all(db)
            .await?;
        if seqs.is_empty() {
            return Ok(total);
        }
        let n = seqs.len() as u64;
        let deleted = entry::Entity::delete_many()
            .filter(Column::Seq.is_in(seqs))
            .exec(db)
            .await?
            .rows_affected;
        total += deleted;
        metrics::counter!("audit_entries_pruned_total").increment(deleted);
        if n < batch {
            return Ok(total);
        }
        // Let the consumer's writes in between batches.
        tokio::task::yield_now().await;
    }
}

/// Prunes every `interval` until `stop`'s sender is dropped.
pub async fn run(
    db: DatabaseConnection,
    retention: Duration,
    batch: u64,
    interval: Duration,
    mut stop: watch::Receiver<()>,
) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        let cutoff = Utc::now()
            .checked_sub_signed(retention)
            .map_or(i64::MIN, |t| t.timestamp_micros());
        match prune_before(&db, cutoff, batch).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "audit: expired entries pruned"),
            Err(e) => tracing::warn!(error = %e, "audit: pruning failed; trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}
