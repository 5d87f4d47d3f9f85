//! Taking dead letters in: one subscription per `<topic>-dlq`, each message recorded once.
//!
//! Answers: SUCCESS when recorded or already recorded (a redelivery from the `-dlq` topic
//! adds nothing; a message dead-lettered again after a replay puts its record back to
//! pending and counts once more), RETRY when the database cannot take it. Never DROP:
//! whatever arrives is storable as bytes, decoded or not. The subscriptions' own
//! dead-letter topic is the `-dlq` topic itself, so a message whose retries ran out (the
//! database down for longer than the resiliency policy waits) goes back to the end of the
//! queue it came from instead of a topic nobody reads; each such turn is logged and counted
//! (`dead_letters_unstored_total`).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use chrono::Utc;
use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait},
};
use todo_topology::{Topics, components::PUBSUB};

use crate::{
    db::{dead_letter, status},
    payload,
};

/// What the consumer did since start (also exported as Prometheus metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Dead letters recorded for the first time.
    pub recorded: AtomicU64,
    /// Replayed dead letters that came back (dead-lettered again).
    pub again: AtomicU64,
    /// Redeliveries of a dead letter already recorded: nothing changed.
    pub duplicates: AtomicU64,
    /// Deliveries answered RETRY because the database could not take them.
    pub unstored: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub recorded: u64,
    pub again: u64,
    pub duplicates: u64,
    pub unstored: u64,
}

impl todo_service::Counters for Stats {
    type Snapshot = StatsSnapshot;
    fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            recorded: get(&self.recorded),
            again: get(&self.again),
            duplicates: get(&self.duplicates),
            unstored: get(&self.unstored),
        }
    }
}

/// How an arrival changed the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A new record.
    New,
    /// A replayed record dead-lettered again: pending once more.
    Again,
    /// Already recorded (and pending or discarded): nothing changed.
    Duplicate,
}

/// One message off a `-dlq` topic, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrived {
    pub topic: String,
    pub dead_letter_topic: String,
    pub cloud_event_id: String,
    pub event_type: String,
    pub source: String,
    pub traceparent: String,
    pub payload: Vec<u8>,
}

/// Records `m` at `now` (microseconds): inserted once per (dead-letter topic, CloudEvent
/// id); a replayed record that arrives again goes back to pending.
pub async fn record(db: &DatabaseConnection, m: Arrived, now: i64) -> Result<Arrival, DbErr> {
    use dead_letter::Column as C;
    let decoded = payload::decode(&m.event_type, &m.payload);
    let (dlt, ce_id) = (m.dead_letter_topic.clone(), m.cloud_event_id.clone());
    let row = dead_letter::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        topic: Set(m.topic),
        dead_letter_topic: Set(m.dead_letter_topic),
        cloud_event_id: Set(m.cloud_event_id),
        event_type: Set(m.event_type),
        source: Set(m.source),
        traceparent: Set(m.traceparent),
        partition_key: Set(decoded.user_id),
        payload: Set(m.payload),
        payload_json: Set(decoded.json),
        decode_error: Set(decoded.error),
        first_seen_at: Set(now),
        last_seen_at: Set(now),
        times_dead_lettered: Set(1),
        status: Set(status::PENDING.to_owned()),
        replay_count: Set(0),
        last_replayed_at: Set(None),
        replayed_by: Set(String::new()),
        discarded_at: Set(None),
        discarded_by: Set(String::new()),
    };
    let inserted = dead_letter::Entity::insert(row)
        .on_conflict_do_nothing_on([C::DeadLetterTopic, C::CloudEventId])
        .exec_without_returning(db)
        .await?;
    if matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
        return Ok(Arrival::New);
    }
    let again = dead_letter::Entity::update_many()
        .col_expr(C::Status, Expr::value(status::PENDING))
        .col_expr(C::LastSeenAt, Expr::value(now))
        .col_expr(C::TimesDeadLettered, Expr::col(C::TimesDeadLettered).add(1))
        .filter(C::DeadLetterTopic.eq(dlt))
        .filter(C::CloudEventId.eq(ce_id))
        .filter(C::Status.eq(status::REPLAYED))
        .exec(db)
        .await?;
    Ok(if again.rows_affected > 0 {
        Arrival::Again
    } else {
        Arrival::Duplicate
    })
}

/// The consumer: records and counts.
#[derive(Debug)]
pub struct Intake {
    /// The connection writes go through (on SQLite: one connection of its own).
    writer: DatabaseConnection,
    stats: Arc<Stats>,
}

impl Intake {
    pub fn new(writer: DatabaseConnection, stats: Arc<Stats>) -> Self {
        Self { writer, stats }
    }

    /// The AppCallback routes: every message on each `<topic>-dlq`, whatever its type, one
    /// at a time (binary payloads arrive whole on this path), dead-lettered to itself (see
    /// the module docs).
    pub fn subscriptions(self: &Arc<Self>, topics: &Topics) -> Subscriptions {
        let mut builder = Subscriptions::builder();
        for (topic, dlq) in topics.with_dead_letters() {
            let me = self.clone();
            let topic = topic.to_owned();
            builder = builder.route_bytes(Route::new(PUBSUB, dlq, dlq), move |e| {
                let (me, topic) = (me.clone(), topic.clone());
                async move { me.handle(topic, e).await }
            });
        }
        builder.build()
    }

    /// One dead letter of `topic`.
    pub async fn handle(&self, topic: String, e: Event<Vec<u8>>) -> Outcome {
        let labels = [("topic", topic.clone()), ("type", e.event_type.clone())];
        let arrived = Arrived {
            topic,
            dead_letter_topic: e.topic.clone(),
            cloud_event_id: e.id.clone(),
            event_type: e.event_type.clone(),
            source: e.source.clone(),
            traceparent: e.traceparent.clone().unwrap_or_default(),
            payload: e.message,
        };
        match record(&self.writer, arrived, Utc::now().timestamp_micros()).await {
            Ok(Arrival::New) => {
                tracing::warn!(
                    dead_letter_topic = %e.topic,
                    event_type = %e.event_type,
                    cloud_event_id = %e.id,
                    source = %e.source,
                    "dead letter recorded"
                );
                self.stats.recorded.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dead_letters_total", &labels).increment(1);
                Outcome::Success
            }
            Ok(Arrival::Again) => {
                tracing::warn!(
                    dead_letter_topic = %e.topic,
                    event_type = %e.event_type,
                    cloud_event_id = %e.id,
                    "a replayed dead letter was dead-lettered again: pending once more"
                );
                self.stats.again.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dead_letters_total", &labels).increment(1);
                Outcome::Success
            }
            Ok(Arrival::Duplicate) => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dead_letters_duplicates_total").increment(1);
                Outcome::Success
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    dead_letter_topic = %e.topic,
                    event_type = %e.event_type,
                    cloud_event_id = %e.id,
                    "dead letter not recorded (database): retrying"
                );
                self.stats.unstored.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dead_letters_unstored_total", "topic" => e.topic).increment(1);
                Outcome::Retry
            }
        }
    }
}
