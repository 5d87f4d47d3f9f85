//! An occurrence request delivered through daprd and Kafka creates the next task of a
//! series once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
#[path = "common/events.rs"]
mod stack;

use std::time::Duration;

use prost::Message;
use todo_harness::{Daprd, DaprdOptions, unique};
use todo_proto::todo::v1::{GetTaskRequest, Task};
use todo_topology::event_types;

use common::{Backend, as_user};
use stack::{Stack, new_task};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_occurrence_request_creates_the_next_task_once_even_when_delivered_twice() {
    use dapr_publisher::{OutgoingEvent, Publisher, PublisherConfig};
    use todo_proto::todo::events::v1::OccurrenceRequested;
    let stack = Stack::start(Backend::Sqlite, None).await;
    let mut c = stack.client().await;
    let user = unique("occ");
    let parent = c
        .create_task(as_user(&user, new_task("water the plants")))
        .await
        .unwrap()
        .into_inner();
    let next_id = uuid::Uuid::new_v4().to_string();
    let request = OccurrenceRequested {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(todo_proto::to_timestamp(chrono::Utc::now())),
        user_id: user.clone(),
        task_id: next_id.clone(),
        series_id: parent.id.clone(),
        parent_task_id: parent.id.clone(),
        occurrence_index: 1,
        due_time: Some(prost_types::Timestamp {
            seconds: 2_000_000_000,
            nanos: 0,
        }),
        template: Some(Task {
            title: "water the plants".into(),
            tags: vec!["home".into()],
            recurrence: Some(todo_proto::todo::v1::Recurrence {
                frequency: todo_proto::todo::v1::Frequency::Monthly as i32,
                ..Default::default()
            }),
            series_start_time: Some(prost_types::Timestamp {
                seconds: 1_990_000_000,
                nanos: 0,
            }),
            ..Task::default()
        }),
    };
    let publisher_sidecar = Daprd::start(DaprdOptions::new(unique("occ-pub"), None))
        .await
        .unwrap();
    let publisher = Publisher::connect(&PublisherConfig::new(
        publisher_sidecar.grpc_address(),
        todo_topology::components::PUBSUB,
    ))
    .await
    .unwrap();
    // The same request twice (a redelivery), then a bad one that must be dropped.
    for _ in 0..2 {
        publisher
            .publish(&OutgoingEvent {
                id: uuid::Uuid::now_v7().to_string(),
                topic: stack.topics.task_occurrences.clone(),
                event_type: event_types::OCCURRENCE_REQUESTED.to_owned(),
                key: user.clone(),
                data: request.encode_to_vec(),
            })
            .await
            .unwrap();
    }
    let created = stack
        .wait_for_events(&user, 2, Duration::from_secs(60))
        .await;
    let task = created[1].1.task.clone().unwrap();
    assert_eq!(task.id, next_id);
    assert_eq!(task.series_id, parent.id);
    assert_eq!(task.parent_task_id, parent.id);
    assert_eq!(task.occurrence_index, 1);
    assert_eq!(task.due_time.unwrap().seconds, 2_000_000_000);
    assert_eq!(
        task.series_start_time.unwrap().seconds,
        1_990_000_000,
        "the series keeps counting from its start"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (all, _) = stack.task_events();
    assert_eq!(
        all.iter().filter(|(_, e)| e.user_id == user).count(),
        2,
        "created once"
    );
    let got = c
        .get_task(as_user(&user, GetTaskRequest { id: next_id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, task);
}
