//! The tonic implementations of `AppCallback`, `AppCallbackHealthCheck` and `AppCallbackAlpha`.

use dapr::dapr::proto::common::v1::{InvokeRequest, InvokeResponse};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    proto::{
        BindingEventRequest, BindingEventResponse, HealthCheckResponse, JobEventRequest,
        JobEventResponse, ListInputBindingsResponse, ListTopicSubscriptionsResponse,
        TopicEventBulkRequest, TopicEventBulkResponse, TopicEventBulkResponseEntry,
        TopicEventRequest, TopicEventResponse,
        app_callback_alpha_server::{AppCallbackAlpha, AppCallbackAlphaServer},
        app_callback_health_check_server::{AppCallbackHealthCheck, AppCallbackHealthCheckServer},
        app_callback_server::{AppCallback, AppCallbackServer},
        topic_event_bulk_request_entry::Event as BulkEvent,
        topic_event_response::TopicEventResponseStatus,
    },
    routes::{Outcome, RawEvent, Subscriptions},
};

/// Serves Dapr's callbacks from a [`Subscriptions`] table.
#[derive(Debug, Clone)]
pub struct AppCallbackService {
    subscriptions: Subscriptions,
}

impl AppCallbackService {
    pub fn new(subscriptions: Subscriptions) -> Self {
        Self { subscriptions }
    }

    /// The `dapr.proto.runtime.v1.AppCallback` server.
    pub fn app_callback_server(&self) -> AppCallbackServer<Self> {
        AppCallbackServer::new(self.clone())
    }

    /// The `dapr.proto.runtime.v1.AppCallbackHealthCheck` server.
    pub fn health_check_server(&self) -> AppCallbackHealthCheckServer<Self> {
        AppCallbackHealthCheckServer::new(self.clone())
    }

    /// The `dapr.proto.runtime.v1.AppCallbackAlpha` server (bulk delivery on older runtimes).
    pub fn alpha_server(&self) -> AppCallbackAlphaServer<Self> {
        AppCallbackAlphaServer::new(self.clone())
    }

    async fn bulk(&self, req: TopicEventBulkRequest) -> TopicEventBulkResponse {
        let started = std::time::Instant::now();
        let positions: Vec<String> = req.entries.iter().map(|e| e.entry_id.clone()).collect();
        let mut answered = Vec::with_capacity(req.entries.len());
        let mut ids = Vec::with_capacity(req.entries.len());
        let mut events = Vec::with_capacity(req.entries.len());
        for entry in req.entries {
            let id = entry.entry_id.clone();
            match bulk_entry(&req.topic, &req.pubsub_name, entry) {
                Some(raw) => {
                    ids.push(id);
                    events.push(raw);
                }
                None => {
                    tracing::warn!(entry_id = %id, topic = %req.topic, "bulk entry without a readable event: dropping");
                    answered.push((id, Outcome::Drop));
                }
            }
        }
        let span = tracing::info_span!("bulk", topic = %req.topic, entries = events.len());
        let outcomes = self
            .subscriptions
            .dispatch_bulk(events)
            .instrument(span)
            .await;
        answered.extend(ids.into_iter().zip(outcomes));
        let answered = no_drop_out_of_place(&positions, answered);
        let topic = req.topic;
        metrics::histogram!("event_batch_seconds", "topic" => topic.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("event_batch_entries", "topic" => topic.clone())
            .record(answered.len() as f64);
        let statuses = answered
            .into_iter()
            .map(|(entry_id, outcome)| {
                consumed(&topic, outcome);
                TopicEventBulkResponseEntry {
                    entry_id,
                    status: TopicEventResponseStatus::from(outcome) as i32,
                }
            })
            .collect();
        TopicEventBulkResponse { statuses }
    }

    async fn handle(&self, raw: RawEvent) -> Outcome {
        let span = raw.span();
        let subs = self.subscriptions.clone();
        let topic = raw.topic.clone();
        async move {
            let started = std::time::Instant::now();
            let outcome = subs.dispatch(raw).await;
            tracing::Span::current().record("outcome", tracing::field::debug(outcome));
            tracing::debug!(?outcome, "handled");
            consumed(&topic, outcome);
            metrics::histogram!("event_handler_seconds", "topic" => topic)
                .record(started.elapsed().as_secs_f64());
            outcome
        }
        .instrument(span)
        .await
    }
}

/// daprd 1.18 (`postman/grpc.DeliverBulk`) dead-letters a DROPped bulk entry by its index
/// in the first delivery (its entry id, `"0"`, `"1"`, …), looked up in the entries of the
/// delivery at hand; a resiliency retry delivers only the entries that failed, so there it
/// dead-letters another entry, or panics (index out of range) and dies. A DROP of an entry
/// not at its first place is therefore answered RETRY: the entry comes back until daprd's
/// retries are exhausted, and daprd then dead-letters the failed entries of the first
/// delivery, by their own bytes. Later, in the same place, nothing changes.
fn no_drop_out_of_place(
    positions: &[String],
    answered: Vec<(String, Outcome)>,
) -> Vec<(String, Outcome)> {
    answered
        .into_iter()
        .map(|(id, outcome)| {
            // (Looked up for DROPs only: a bulk of thousands is mostly SUCCESS.)
            if outcome != Outcome::Drop {
                return (id, outcome);
            }
            let here = positions.iter().position(|p| *p == id);
            let first = id.parse::<usize>().ok();
            if first.is_some() && first != here {
                tracing::warn!(
                    entry_id = %id,
                    position = ?here,
                    "DROP of an entry of a bulk retry: answering RETRY (daprd would dead-letter another entry); it is dead-lettered when daprd's retries are exhausted"
                );
                (id, Outcome::Retry)
            } else {
                (id, outcome)
            }
        })
        .collect()
}

/// Counts a handled event (recorded only when the service installed a metrics recorder).
fn consumed(topic: &str, outcome: Outcome) {
    let label = match outcome {
        Outcome::Success => "success",
        Outcome::Retry => "retry",
        Outcome::Drop => "drop",
    };
    metrics::counter!("events_consumed_total", "topic" => topic.to_owned(), "outcome" => label)
        .increment(1);
}

/// One entry of a bulk delivery as an event; `None` when it carries none.
fn bulk_entry(
    topic: &str,
    pubsub_name: &str,
    entry: crate::proto::TopicEventBulkRequestEntry,
) -> Option<RawEvent> {
    match entry.event? {
        BulkEvent::CloudEvent(ce) => Some(RawEvent {
            traceparent: traceparent(ce.extensions.as_ref()),
            id: ce.id,
            event_type: ce.r#type,
            source: ce.source,
            topic: topic.to_owned(),
            pubsub_name: pubsub_name.to_owned(),
            data: ce.data,
        }),
        // rawPayload: the Kafka message as it is, which is the CloudEvent envelope Dapr
        // made at publish time, or (from a raw publisher) the bytes alone.
        BulkEvent::Bytes(bytes) => Some(match crate::envelope::CloudEvent::parse(&bytes) {
            Some(ce) => RawEvent {
                id: ce.id,
                event_type: ce.event_type,
                source: ce.source,
                topic: topic.to_owned(),
                pubsub_name: pubsub_name.to_owned(),
                traceparent: ce.traceparent,
                data: ce.data,
            },
            None => RawEvent {
                id: entry.entry_id,
                event_type: entry
                    .metadata
                    .get("cloudevent.type")
                    .cloned()
                    .unwrap_or_default(),
                source: String::new(),
                topic: topic.to_owned(),
                pubsub_name: pubsub_name.to_owned(),
                traceparent: entry.metadata.get("traceparent").cloned(),
                data: bytes,
            },
        }),
    }
}

/// The W3C `traceparent` a CloudEvent carried in its extensions.
fn traceparent(ext: Option<&prost_types::Struct>) -> Option<String> {
    use prost_types::value::Kind;
    ext?.fields.get("traceparent").and_then(|v| match &v.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    })
}

#[tonic::async_trait]
impl AppCallback for AppCallbackService {
    async fn on_invoke(
        &self,
        _request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        Err(Status::unimplemented(
            "service invocation is not served by this app",
        ))
    }

    async fn list_topic_subscriptions(
        &self,
        _request: Request<()>,
    ) -> Result<Response<ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(ListTopicSubscriptionsResponse {
            subscriptions: self.subscriptions.topic_subscriptions(),
        }))
    }

    async fn on_topic_event(
        &self,
        request: Request<TopicEventRequest>,
    ) -> Result<Response<TopicEventResponse>, Status> {
        let header_trace = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.into_inner();
        let raw = RawEvent {
            traceparent: traceparent(req.extensions.as_ref()).or(header_trace),
            id: req.id,
            event_type: req.r#type,
            source: req.source,
            topic: req.topic,
            pubsub_name: req.pubsub_name,
            data: req.data,
        };
        let outcome = self.handle(raw).await;
        Ok(Response::new(TopicEventResponse {
            status: TopicEventResponseStatus::from(outcome) as i32,
        }))
    }

    async fn list_input_bindings(
        &self,
        _request: Request<()>,
    ) -> Result<Response<ListInputBindingsResponse>, Status> {
        Ok(Response::new(ListInputBindingsResponse::default()))
    }

    async fn on_binding_event(
        &self,
        _request: Request<BindingEventRequest>,
    ) -> Result<Response<BindingEventResponse>, Status> {
        Err(Status::unimplemented(
            "input bindings are not served by this app",
        ))
    }

    async fn on_bulk_topic_event(
        &self,
        request: Request<TopicEventBulkRequest>,
    ) -> Result<Response<TopicEventBulkResponse>, Status> {
        Ok(Response::new(self.bulk(request.into_inner()).await))
    }

    async fn on_job_event(
        &self,
        _request: Request<JobEventRequest>,
    ) -> Result<Response<JobEventResponse>, Status> {
        Err(Status::unimplemented("jobs are not served by this app"))
    }
}

#[tonic::async_trait]
impl AppCallbackHealthCheck for AppCallbackService {
    async fn health_check(
        &self,
        _request: Request<()>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {}))
    }
}

#[tonic::async_trait]
impl AppCallbackAlpha for AppCallbackService {
    async fn on_bulk_topic_event_alpha1(
        &self,
        request: Request<TopicEventBulkRequest>,
    ) -> Result<Response<TopicEventBulkResponse>, Status> {
        Ok(Response::new(self.bulk(request.into_inner()).await))
    }

    async fn on_job_event_alpha1(
        &self,
        _request: Request<JobEventRequest>,
    ) -> Result<Response<JobEventResponse>, Status> {
        Err(Status::unimplemented("jobs are not served by this app"))
    }
}

#[cfg(test)]
mod out_of_place_tests {
    use super::{Outcome, no_drop_out_of_place};

    #[test]
    fn a_drop_on_a_bulk_retry_is_a_retry_unless_in_its_first_place() {
        let answer = |ids: &[&str], outcomes: &[Outcome]| {
            let positions: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
            let answered = positions
                .iter()
                .cloned()
                .zip(outcomes.iter().copied())
                .collect();
            no_drop_out_of_place(&positions, answered)
                .into_iter()
                .map(|(_, o)| o)
                .collect::<Vec<_>>()
        };
        use Outcome::*;
        // A first delivery: entry ids are the places.
        assert_eq!(
            answer(&["0", "1", "2"], &[Success, Drop, Retry]),
            [Success, Drop, Retry]
        );
        // A retry of entries 0, 2 and 5: 0 is in its place, 2 and 5 are not.
        assert_eq!(
            answer(&["0", "2", "5"], &[Drop, Drop, Drop]),
            [Drop, Retry, Retry]
        );
        assert_eq!(
            answer(&["0", "2", "5"], &[Success, Success, Retry]),
            [Success, Success, Retry]
        );
        // Ids that are no places (another component): untouched.
        assert_eq!(answer(&["a", "b"], &[Drop, Drop]), [Drop, Drop]);
    }
}
