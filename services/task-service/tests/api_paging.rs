//! The Task API's ListTasks on SQLite and on PostgreSQL: pages, filters and order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use todo_harness::on_both_databases;

use std::collections::HashSet;

use todo_proto::todo::v1::{CompleteTaskRequest, ListTasksRequest, Priority, Task, TaskStatus};

use common::{Backend, TestApp, api::*, as_user};

async fn pages_through_250_tasks_with_filters_and_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = app.client().await;
    for i in 0..250i64 {
        let mut t = new_task(&format!("task {i}"));
        t.priority = [1, 2, 3, 4][i as usize % 4];
        t.tags = if i % 5 == 0 {
            vec!["five".into()]
        } else {
            vec!["other".into()]
        };
        if i % 2 == 0 {
            t.due_time = Some(ts(2_000_000_000 - i * 60));
        }
        let made = c
            .create_task(as_user("pager", create(t)))
            .await
            .unwrap()
            .into_inner();
        if i % 3 == 0 {
            c.complete_task(as_user(
                "pager",
                CompleteTaskRequest {
                    id: made.id,
                    etag: String::new(),
                },
            ))
            .await
            .unwrap();
        }
    }
    // Someone else's tasks never show up.
    c.create_task(as_user("other", create(new_task("not yours"))))
        .await
        .unwrap();

    async fn all_pages(
        c: &mut todo_proto::todo::v1::task_service_client::TaskServiceClient<
            tonic::transport::Channel,
        >,
        req: ListTasksRequest,
    ) -> (Vec<Task>, usize) {
        let mut out = Vec::new();
        let mut pages = 0;
        let mut token = String::new();
        loop {
            let r = c
                .list_tasks(as_user(
                    "pager",
                    ListTasksRequest {
                        page_token: token.clone(),
                        ..req.clone()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(r.tasks.len() <= req.page_size.max(1) as usize || req.page_size == 0);
            out.extend(r.tasks);
            if r.next_page_token.is_empty() {
                return (out, pages);
            }
            token = r.next_page_token;
        }
    }

    // Default order (create time), default page size 50: 5 pages, every task once, in order.
    let (all, pages) = all_pages(&mut c, ListTasksRequest::default()).await;
    assert_eq!(all.len(), 250);
    assert_eq!(pages, 5);
    let ids: HashSet<_> = all.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids.len(), 250);
    let titles: Vec<_> = all.iter().map(|t| t.title.clone()).collect();
    assert_eq!(
        titles,
        (0..250).map(|i| format!("task {i}")).collect::<Vec<_>>()
    );

    // Due time ascending, pages of 7: tasks with a due time first (ascending), then the rest.
    let (by_due, _) = all_pages(
        &mut c,
        ListTasksRequest {
            page_size: 7,
            order_by: "due_time".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_due.len(), 250);
    let dues: Vec<i64> = by_due
        .iter()
        .filter_map(|t| t.due_time.map(|d| d.seconds))
        .collect();
    assert_eq!(dues.len(), 125);
    assert!(dues.windows(2).all(|w| w[0] <= w[1]));
    assert!(by_due[..125].iter().all(|t| t.due_time.is_some()));

    // Priority descending with a tag filter and a status filter.
    let (five_open, _) = all_pages(
        &mut c,
        ListTasksRequest {
            page_size: 9,
            order_by: "priority desc".into(),
            tag: "five".into(),
            status: TaskStatus::Open as i32,
            ..Default::default()
        },
    )
    .await;
    let expected = (0..250).filter(|i| i % 5 == 0 && i % 3 != 0).count();
    assert_eq!(five_open.len(), expected);
    assert!(
        five_open
            .iter()
            .all(|t| t.tags == vec!["five".to_owned()] && t.status == TaskStatus::Open as i32)
    );
    assert!(five_open.windows(2).all(|w| w[0].priority >= w[1].priority));

    // Priority filter and a due-time range.
    let (urgent, _) = all_pages(
        &mut c,
        ListTasksRequest {
            priority: Priority::Urgent as i32,
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(urgent.len(), 62);
    let (ranged, _) = all_pages(
        &mut c,
        ListTasksRequest {
            due_after: Some(ts(2_000_000_000 - 100 * 60)),
            due_before: Some(ts(2_000_000_000)),
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    // Even i in 2..=100 have due times in [t-6000, t).
    assert_eq!(ranged.len(), 50);

    // A token is tied to its query.
    let first = c
        .list_tasks(as_user(
            "pager",
            ListTasksRequest {
                page_size: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let err = c
        .list_tasks(as_user(
            "pager",
            ListTasksRequest {
                page_size: 10,
                page_token: first.next_page_token,
                order_by: "priority".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

on_both_databases!(2;
    pages_through_250_tasks_with_filters_and_order,
);
