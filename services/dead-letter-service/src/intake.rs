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

use std::sync::Arc;

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

/// Most dead letters per bulk delivery, and how long daprd waits to fill one (ms).
const BULK_MAX_MESSAGES: i32 = 100;
const BULK_MAX_AWAIT_MS: i32 = 100;

todo_service::counters! {
    /// What the consumer did since start, message by message.
    pub struct Stats;
    /// A point-in-time copy of [`Stats`].
    pub struct StatsSnapshot;
    metric "dead_letters_handled_total";
    /// Dead letters recorded for the first time.
    recorded,
    /// Replayed dead letters that came back (dead-lettered again).
    again,
    /// Redeliveries of a dead letter already recorded: nothing changed.
    duplicates,
    /// Deliveries answered RETRY because the database could not take them.
    unstored,
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

/// Records the dead letter `e` of `topic` at `now` (microseconds): inserted once per
/// (dead-letter topic, CloudEvent id); a replayed record that arrives again goes back to
/// pending.
pub async fn record(
    db: &DatabaseConnection,
    topic: String,
    e: &Event<Vec<u8>>,
    now: i64,
) -> Result<Arrival, DbErr> {
    use dead_letter::Column as C;
    let decoded = payload::decode(&e.event_type, &e.message);
    let row = dead_letter::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        topic: Set(topic),
        dead_letter_topic: Set(e.topic.clone()),
        cloud_event_id: Set(e.id.clone()),
        event_type: Set(e.event_type.clone()),
        source: Set(e.source.clone()),
        traceparent: Set(e.traceparent.clone().unwrap_or_default()),
        partition_key: Set(decoded.user_id),
        payload: Set(e.message.clone()),
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
        .filter(C::DeadLetterTopic.eq(e.topic.as_str()))
        .filter(C::CloudEventId.eq(e.id.as_str()))
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

    /// The AppCallback routes: every message on each `<topic>-dlq`, whatever its type,
    /// dead-lettered to itself (see the module docs). Raw payloads (bulk, `rawPayload`):
    /// daprd hands over each Kafka message as it is and the runtime reads the CloudEvent
    /// envelope when there is one, so bytes that are not a CloudEvent at all are recorded
    /// too. (Without it daprd cannot parse them, sends them to the subscription's
    /// dead-letter topic, which is this same topic, and reads them again: a hot loop that
    /// never records them.)
    pub fn subscriptions(self: &Arc<Self>, topics: &Topics) -> Subscriptions {
        let mut builder = Subscriptions::builder();
        for (topic, dlq) in topics.with_dead_letters() {
            let me = self.clone();
            let topic = topic.to_owned();
            let route = Route::new(PUBSUB, dlq, dlq).bulk_raw(BULK_MAX_MESSAGES, BULK_MAX_AWAIT_MS);
            builder = builder.route_batch(route, move |events: Vec<Event<Vec<u8>>>| {
                let (me, topic) = (me.clone(), topic.clone());
                async move {
                    let mut outcomes = Vec::with_capacity(events.len());
                    for e in events {
                        outcomes.push(me.handle(topic.clone(), e).await);
                    }
                    outcomes
                }
            });
        }
        builder.build()
    }

    /// One dead letter of `topic`.
    pub async fn handle(&self, topic: String, e: Event<Vec<u8>>) -> Outcome {
        let labels = [("topic", topic.clone()), ("type", e.event_type.clone())];
        match record(&self.writer, topic, &e, Utc::now().timestamp_micros()).await {
            Ok(arrival @ (Arrival::New | Arrival::Again)) => {
                let (counter, what) = if arrival == Arrival::New {
                    (&self.stats.recorded, "dead letter recorded")
                } else {
                    (
                        &self.stats.again,
                        "a replayed dead letter was dead-lettered again: pending once more",
                    )
                };
                tracing::warn!(
                    dead_letter_topic = %e.topic,
                    event_type = %e.event_type,
                    cloud_event_id = %e.id,
                    source = %e.source,
                    "{what}"
                );
                counter.add_one();
                metrics::counter!("dead_letters_total", &labels).increment(1);
                Outcome::Success
            }
            Ok(Arrival::Duplicate) => {
                self.stats.duplicates.add_one();
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
                self.stats.unstored.add_one();
                metrics::counter!("dead_letters_unstored_total", "topic" => e.topic).increment(1);
                Outcome::Retry
            }
        }
    }
}
