//! Taking events in: each bulk delivery is decoded, and what decodes is written in one
//! transaction, one entry per event id.
//!
//! Answers per entry: SUCCESS when stored or already stored (a redelivery inserts
//! nothing: `ON CONFLICT (event_id) DO NOTHING`), DROP for an event that can never be
//! stored (undecodable, unknown type or version, missing ids: Dapr moves it to the
//! dead-letter topic while the rest of the batch is stored), RETRY for every decoded entry
//! of a batch whose transaction failed (the database is down: nothing half-written).

use std::sync::Arc;

use chrono::Utc;
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    DatabaseConnection, DbErr, EntityTrait, TransactionTrait,
};
use todo_topology::Topics;

use crate::{
    db::entry,
    entry::{NewEntry, from_event},
};

todo_service::counters! {
    /// What the consumer did since start, event by event.
    pub struct Stats;
    /// A point-in-time copy of [`Stats`].
    pub struct StatsSnapshot;
    metric "audit_events_handled_total";
    /// Entries written.
    recorded,
    /// Events already recorded (redeliveries, republished outbox rows): nothing written.
    duplicates,
    /// Events DROPped to the dead-letter topic.
    dropped,
    /// Events answered RETRY because their batch could not be written.
    retried,
}

/// The consumer: decodes, writes, counts.
#[derive(Debug)]
pub struct Ingest {
    /// The connection writes go through (on SQLite: one connection of its own).
    writer: DatabaseConnection,
    stats: Arc<Stats>,
    /// Dropped with the consumer (when the server stops): ends the background work
    /// holding a receiver.
    lifetime: tokio::sync::watch::Sender<()>,
}

impl Ingest {
    pub fn new(writer: DatabaseConnection, stats: Arc<Stats>) -> Self {
        Self {
            writer,
            stats,
            lifetime: tokio::sync::watch::channel(()).0,
        }
    }

    /// A receiver whose `changed()` fails once the consumer is gone.
    pub fn lifetime(&self) -> tokio::sync::watch::Receiver<()> {
        self.lifetime.subscribe()
    }

    /// The AppCallback routes: every event on `task-events` and on `reminders`, in bulk
    /// (raw payload: see [`Route::bulk_raw`]), each topic dead-lettered to its `-dlq`.
    pub fn subscriptions(self: &Arc<Self>, topics: &Topics, bulk: (i32, i32)) -> Subscriptions {
        let route = |topic: &str, dlq: &str| {
            Route::new(todo_topology::components::PUBSUB, topic, dlq).bulk_raw(bulk.0, bulk.1)
        };
        let mut builder = Subscriptions::builder();
        for (topic, dlq) in [
            (&topics.task_events, &topics.task_events_dead_letter),
            (&topics.reminders, &topics.reminders_dead_letter),
        ] {
            let me = self.clone();
            builder = builder.route_batch(route(topic, dlq), move |events| {
                let me = me.clone();
                async move { me.handle(events).await }
            });
        }
        builder.build()
    }

    /// One bulk delivery: one outcome per event, in order.
    pub async fn handle(&self, events: Vec<Event<Vec<u8>>>) -> Vec<Outcome> {
        metrics::counter!("audit_batches_total").increment(1);
        let mut outcomes = vec![Outcome::Success; events.len()];
        let mut stored = Vec::with_capacity(events.len());
        let mut entries = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            match from_event(&e.event_type, &e.message, &e.id, e.traceparent.as_deref()) {
                Ok(entry) => {
                    stored.push(i);
                    entries.push(entry);
                }
                Err(why) => {
                    tracing::warn!(
                        topic = %e.topic,
                        event_type = %e.event_type,
                        cloud_event_id = %e.id,
                        reason = %why,
                        "audit: event refused, dropping to the dead-letter topic"
                    );
                    metrics::counter!("audit_events_dropped_total", "reason" => why.label())
                        .increment(1);
                    self.stats.dropped.add_one();
                    outcomes[i] = Outcome::Drop;
                }
            }
        }
        if entries.is_empty() {
            return outcomes;
        }
        // One entry per stored index.
        let n = stored.len() as u64;
        match self.write(entries).await {
            Ok(inserted) => {
                let duplicates = n - inserted.min(n);
                self.stats.recorded.add(inserted);
                self.stats.duplicates.add(duplicates);
            }
            Err(e) => {
                tracing::warn!(error = %e, entries = n, "audit: batch not written, retrying it");
                self.stats.retried.add(n);
                for i in stored {
                    outcomes[i] = Outcome::Retry;
                }
            }
        }
        outcomes
    }

    /// Writes the entries in one transaction; returns how many were new.
    async fn write(&self, entries: Vec<NewEntry>) -> Result<u64, DbErr> {
        let recorded_at = Utc::now().timestamp_micros();
        let occurred: Vec<i64> = entries.iter().map(|e| e.occurred_at).collect();
        let models = entries.into_iter().map(|e| entry::ActiveModel {
            seq: NotSet,
            event_id: Set(e.event_id),
            event_type: Set(e.event_type),
            task_id: Set(e.task_id),
            user_id: Set(e.user_id),
            occurred_at: Set(e.occurred_at),
            recorded_at: Set(recorded_at),
            actor: Set(e.actor),
            trace_id: Set(e.trace_id),
            cloud_event_id: Set(e.cloud_event_id),
            payload: Set(e.payload),
        });
        let txn = self.writer.begin().await?;
        let inserted = entry::Entity::insert_many(models)
            .on_conflict_do_nothing_on([entry::Column::EventId])
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        let inserted = match inserted {
            sea_orm::TryInsertResult::Inserted(n) => n,
            sea_orm::TryInsertResult::Conflicted | sea_orm::TryInsertResult::Empty => 0,
        };
        // Lag: from the change to its entry being committed, for each entry of the batch.
        let committed = Utc::now().timestamp_micros();
        for at in occurred {
            let lag = (committed - at).max(0) as f64 / 1e6;
            metrics::histogram!("audit_lag_seconds").record(lag);
        }
        Ok(inserted)
    }
}
