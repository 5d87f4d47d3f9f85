//! Retention on the real databases: entries that occurred before the cutoff are deleted in
//! bounded batches; newer ones stay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use audit_service::{
    db,
    ingest::{Ingest, Stats},
    prune,
};
use chrono::Utc;
use common::{task, task_event};
use dapr_appcallback::{Event, Outcome};
use sea_orm::{EntityTrait, PaginatorTrait};
use todo_harness::{Backend, on_both_databases, unique};
use todo_proto::todo::events::v1::TaskEventKind;

fn event((ty, data, _): &common::Published) -> Event<Vec<u8>> {
    Event {
        id: uuid::Uuid::new_v4().to_string(),
        event_type: (*ty).to_owned(),
        source: "task-service".into(),
        topic: "task-events".into(),
        pubsub_name: "kafka-pubsub".into(),
        traceparent: None,
        message: data.clone(),
        raw: data.clone(),
    }
}

async fn expired_entries_are_pruned_in_batches(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = todo_harness::fresh_database(backend, &dir, "audit.db").await;
    let pool = db::connect(&url, 4).await.unwrap();
    let ingest = Ingest::new(pool.clone(), Arc::new(Stats::default()));
    let user = unique("old");
    let now = Utc::now();
    // 7 entries 40 days old, 3 from yesterday.
    let events: Vec<_> = (0..10)
        .map(|i| {
            let age = if i < 7 { 40 } else { 1 };
            let t = task(&user, &uuid::Uuid::now_v7().to_string(), "t", 1);
            let at = now - chrono::Duration::days(age) + chrono::Duration::seconds(i);
            task_event(TaskEventKind::Created, &t, &[], at)
        })
        .collect();
    let outcomes = ingest.handle(events.iter().map(event).collect()).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Success),
        "{outcomes:?}"
    );

    let cutoff = (now - chrono::Duration::days(30)).timestamp_micros();
    let pruned = prune::prune_before(&pool, cutoff, 2).await.unwrap();
    assert_eq!(pruned, 7);
    let left = db::entry::Entity::find().count(&pool).await.unwrap();
    assert_eq!(left, 3);
    assert_eq!(prune::prune_before(&pool, cutoff, 2).await.unwrap(), 0);
}

on_both_databases!(2; expired_entries_are_pruned_in_batches);
