//! A deleted task stays deleted (issue 11 item 3): an occurrence request redelivered or
//! replayed after the user deleted that occurrence creates nothing, on SQLite and
//! PostgreSQL, through the real daprd and Kafka.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/live.rs"]
mod live;

use common::{Backend, as_user};
use live::{Feeder, Live};
use prost::Message;
use todo_harness::unique;
use todo_proto::todo::{
    events::v1::OccurrenceRequested,
    v1::{CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, Task},
};
use todo_topology::event_types;

fn request(user: &str, parent: &Task, task_id: &str, index: u32) -> OccurrenceRequested {
    OccurrenceRequested {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(todo_proto::to_timestamp(chrono::Utc::now())),
        user_id: user.to_owned(),
        task_id: task_id.to_owned(),
        series_id: parent.id.clone(),
        parent_task_id: parent.id.clone(),
        occurrence_index: index,
        due_time: Some(prost_types::Timestamp {
            seconds: 2_000_000_000 + i64::from(index) * 86_400,
            nanos: 0,
        }),
        template: Some(Task {
            title: "water the plants".into(),
            tags: vec!["home".into()],
            recurrence: Some(todo_proto::todo::v1::Recurrence {
                frequency: todo_proto::todo::v1::Frequency::Daily as i32,
                ..Default::default()
            }),
            ..Task::default()
        }),
    }
}

async fn a_deleted_occurrence_is_not_created_again(backend: Backend) {
    let live = Live::start(backend).await;
    let feeder = Feeder::start().await;
    let mut c = live.client().await;
    let user = unique("tomb");
    let parent = c
        .create_task(as_user(
            &user,
            CreateTaskRequest {
                task: Some(Task {
                    title: "water the plants".into(),
                    ..Task::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let next_id = uuid::Uuid::new_v4().to_string();
    let first = request(&user, &parent, &next_id, 1);
    let send = |m: &OccurrenceRequested| {
        let bytes = m.encode_to_vec();
        let feeder = &feeder;
        let topic = live.topics.task_occurrences.clone();
        let user = user.clone();
        async move {
            feeder
                .send(&topic, event_types::OCCURRENCE_REQUESTED, &user, bytes)
                .await
        }
    };
    send(&first).await;
    let created = |id: &str, events: &[(String, todo_proto::todo::events::v1::TaskEvent)]| {
        events
            .iter()
            .filter(|(t, e)| t == event_types::TASK_CREATED && e.task.as_ref().unwrap().id == id)
            .count()
    };
    live.wait_task_events(&user, |e| created(&next_id, e) == 1)
        .await;

    c.delete_task(as_user(
        &user,
        DeleteTaskRequest {
            id: next_id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    // The same request again (a redelivery or a replay from the dead-letter topic), twice,
    // then the series' following occurrence, which marks that the ones before were handled.
    send(&first).await;
    send(&first).await;
    let following = uuid::Uuid::new_v4().to_string();
    send(&request(&user, &parent, &following, 2)).await;
    live.wait_task_events(&user, |e| created(&following, e) == 1)
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let events = live.task_events(&user);
    assert_eq!(created(&next_id, &events), 1, "created once: {events:?}");
    let status = c
        .get_task(as_user(
            &user,
            GetTaskRequest {
                id: next_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "it stays deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_occurrence_is_not_created_again_sqlite() {
    a_deleted_occurrence_is_not_created_again(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_occurrence_is_not_created_again_postgres() {
    a_deleted_occurrence_is_not_created_again(Backend::Postgres).await;
}
