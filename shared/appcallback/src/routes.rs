//! Typed routes: which handler gets which (topic, CloudEvent type), and what it answered.

use std::{
    collections::HashMap, fmt, future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc,
};

use futures::FutureExt;
use prost::Message;
use tracing::Instrument;

use crate::proto::{
    BulkSubscribeConfig, TopicRoutes, TopicRule, TopicSubscription,
    topic_event_response::TopicEventResponseStatus,
};

/// What a handler says happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, or already done before (a redelivery).
    Success,
    /// A transient fault: deliver it again later.
    Retry,
    /// It can never succeed: Dapr moves it to the dead-letter topic.
    Drop,
}

impl From<Outcome> for TopicEventResponseStatus {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => Self::Success,
            Outcome::Retry => Self::Retry,
            Outcome::Drop => Self::Drop,
        }
    }
}

/// A decoded event handed to a handler.
#[derive(Debug, Clone)]
pub struct Event<M> {
    /// The CloudEvent id (set by Dapr, unique per publish).
    pub id: String,
    /// The CloudEvent type (e.g. `todo.task.completed.v1`).
    pub event_type: String,
    /// The CloudEvent source (the publishing app id).
    pub source: String,
    pub topic: String,
    pub pubsub_name: String,
    /// W3C trace context of the publisher, when the CloudEvent carried it.
    pub traceparent: Option<String>,
    /// The decoded protobuf message.
    pub message: M,
    /// The undecoded bytes, for handlers that forward or compare them.
    pub raw: Vec<u8>,
}

/// Where a route listens and where its failures go.
#[derive(Debug, Clone)]
pub struct Route {
    pub pubsub_name: String,
    pub topic: String,
    /// The CloudEvent type this handler takes; `None` takes every type on the topic.
    pub event_type: Option<String>,
    /// Where Dapr puts DROPped events and events that exhausted their retries.
    pub dead_letter_topic: String,
    /// Ask daprd for bulk delivery (`OnBulkTopicEvent`): at most this many messages per
    /// call, waiting at most this many milliseconds to fill one.
    pub bulk: Option<(i32, i32)>,
    /// Extra subscription metadata (e.g. `rawPayload`).
    pub metadata: HashMap<String, String>,
}

impl Route {
    /// A route for every event on `topic`, dead-lettered to `dead_letter_topic`.
    pub fn new(
        pubsub_name: impl Into<String>,
        topic: impl Into<String>,
        dead_letter_topic: impl Into<String>,
    ) -> Self {
        Self {
            pubsub_name: pubsub_name.into(),
            topic: topic.into(),
            event_type: None,
            dead_letter_topic: dead_letter_topic.into(),
            bulk: None,
            metadata: HashMap::new(),
        }
    }

    /// Only events of this CloudEvent type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Bulk delivery: at most `max_messages` per call, daprd waiting at most
    /// `max_await_ms` for a call to fill.
    pub fn bulk(mut self, max_messages: i32, max_await_ms: i32) -> Self {
        self.bulk = Some((max_messages, max_await_ms));
        self
    }

    /// Bulk delivery of each Kafka message as it is (`rawPayload`): the CloudEvent
    /// envelope arrives whole and the runtime reads its `data_base64`, which daprd's bulk
    /// path otherwise leaves out for binary events (DESIGN rule 5). Publishers need no
    /// change. daprd cannot apply routing rules to raw payloads, so the subscription it is
    /// given has none (see [`Subscriptions::topic_subscriptions`]): daprd hands over every
    /// type on the topic and the runtime routes by the type in the envelope.
    pub fn bulk_raw(self, max_messages: i32, max_await_ms: i32) -> Self {
        self.bulk(max_messages, max_await_ms)
            .metadata(RAW_PAYLOAD, "true")
    }

    /// Extra subscription metadata.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// The subscription metadata key that asks daprd for the message as it is in Kafka.
pub const RAW_PAYLOAD: &str = "rawPayload";

/// Whether subscription `metadata` asks for raw payloads, read as daprd reads it (Go's
/// `strconv.ParseBool`, in components-contrib's `metadata.IsRawPayload`).
fn is_raw_payload(metadata: &HashMap<String, String>) -> bool {
    matches!(
        metadata.get(RAW_PAYLOAD).map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type ErasedHandler = Arc<dyn Fn(RawEvent) -> BoxFuture + Send + Sync>;
type BatchFuture = Pin<Box<dyn Future<Output = Vec<Outcome>> + Send>>;
type ErasedBatch = Arc<dyn Fn(Vec<Event<Vec<u8>>>) -> BatchFuture + Send + Sync>;

/// How a route's handler takes its events.
#[derive(Clone)]
enum Handler {
    /// One event per call.
    One(ErasedHandler),
    /// A batch per call (all the entries of a bulk delivery for the route), one outcome each.
    Batch(ErasedBatch),
}

/// An event as it came from daprd, before decoding.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawEvent {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub topic: String,
    pub pubsub_name: String,
    pub traceparent: Option<String>,
    pub data: Vec<u8>,
}

struct Registered {
    route: Route,
    handler: Handler,
}

type IgnoredHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Told of each event on a topic that no route takes (and that is DROPped).
struct Unrouted {
    pubsub_name: String,
    topic: String,
    hook: IgnoredHook,
}

/// A family of CloudEvent types a service knowingly ignores on a topic.
struct Ignored {
    pubsub_name: String,
    topic: String,
    /// e.g. `todo.task.`: every type that starts with it.
    family: String,
    /// Called with the type of each event acknowledged this way (a service's own counter).
    on_ignored: IgnoredHook,
}

/// The routing table: built once at start, read by every call.
#[derive(Clone, Default)]
pub struct Subscriptions {
    routes: Arc<Vec<Registered>>,
    ignored: Arc<Vec<Ignored>>,
    unrouted: Arc<Vec<Unrouted>>,
}

impl fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| &r.route))
            .finish()
    }
}

/// Builds [`Subscriptions`] from typed handlers.
#[derive(Default)]
pub struct SubscriptionsBuilder {
    routes: Vec<Registered>,
    ignored: Vec<Ignored>,
    unrouted: Vec<Unrouted>,
}

impl Subscriptions {
    pub fn builder() -> SubscriptionsBuilder {
        SubscriptionsBuilder::default()
    }

    /// The `ListTopicSubscriptions` answer: one subscription per (pub/sub, topic), with a
    /// routing rule per CloudEvent type and a default route that catches unknown types
    /// (so they are DROPped to the dead-letter topic rather than silently acknowledged).
    ///
    /// A subscription with `rawPayload` gets no rule, only the default route: daprd 1.18
    /// evaluates rules on what it hands over, which for a raw payload is not the producer's
    /// CloudEvent. In bulk (`pkg/runtime/subscription/bulksubscription.go`) it evaluates
    /// `event.type == "…"` on the message as a string, which fails ("no such key: type"),
    /// and it dead-letters the entry without delivering it; one at a time it evaluates it
    /// on its own wrapper (type `com.dapr.event.sent`), which never matches. The runtime
    /// tells the types apart itself ([`Self::dispatch`], [`Self::dispatch_bulk`]), by the
    /// type it reads from the envelope.
    pub fn topic_subscriptions(&self) -> Vec<TopicSubscription> {
        let mut out: Vec<TopicSubscription> = Vec::new();
        for r in self.routes.iter().map(|r| &r.route) {
            let idx = match out
                .iter()
                .position(|s| s.pubsub_name == r.pubsub_name && s.topic == r.topic)
            {
                Some(i) => i,
                None => {
                    out.push(TopicSubscription {
                        pubsub_name: r.pubsub_name.clone(),
                        topic: r.topic.clone(),
                        metadata: HashMap::new(),
                        routes: Some(TopicRoutes {
                            rules: Vec::new(),
                            default: DEFAULT_PATH.to_owned(),
                        }),
                        dead_letter_topic: r.dead_letter_topic.clone(),
                        bulk_subscribe: None,
                    });
                    out.len() - 1
                }
            };
            let sub = &mut out[idx];
            sub.metadata
                .extend(r.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
            if let (Some(routes), Some(t)) = (sub.routes.as_mut(), &r.event_type) {
                routes.rules.push(TopicRule {
                    r#match: format!("event.type == \"{t}\""),
                    path: t.clone(),
                });
            }
            if let Some((max_messages_count, max_await_duration_ms)) = r.bulk {
                sub.bulk_subscribe = Some(BulkSubscribeConfig {
                    enabled: true,
                    max_messages_count,
                    max_await_duration_ms,
                });
            }
        }
        for sub in out.iter_mut().filter(|s| is_raw_payload(&s.metadata)) {
            if let Some(routes) = sub.routes.as_mut() {
                routes.rules.clear();
            }
        }
        out
    }

    /// Calls the handler for this event and says what happened. Never panics: a panicking
    /// handler is logged and the event DROPped (it would panic again on every redelivery).
    pub(crate) async fn dispatch(&self, event: RawEvent) -> Outcome {
        match self.resolve(&event) {
            Resolved::Answered(outcome) => outcome,
            Resolved::To(at) => match &self.routes[at].handler {
                Handler::One(handler) => caught(handler(event), Outcome::Drop).await,
                Handler::Batch(handler) => {
                    // A panic DROPs; an answer without an outcome for the entry is RETRY,
                    // as in a bulk delivery.
                    let outcomes =
                        caught(handler(vec![event.into_bytes_event()]).map(Some), None).await;
                    match outcomes {
                        Some(outcomes) => outcomes.first().copied().unwrap_or(Outcome::Retry),
                        None => Outcome::Drop,
                    }
                }
            },
        }
    }

    /// Handles the entries of one bulk delivery, answering one outcome per entry in their
    /// order: the entries a batch route takes go to its handler in one call (in their
    /// order), every other entry as [`Self::dispatch`] would.
    pub(crate) async fn dispatch_bulk(&self, events: Vec<RawEvent>) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Retry; events.len()];
        let mut batches: Vec<Batch> = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            match self.resolve(&event) {
                Resolved::Answered(outcome) => outcomes[i] = outcome,
                Resolved::To(at) => match &self.routes[at].handler {
                    Handler::One(handler) => {
                        let span = event.span();
                        outcomes[i] = caught(handler(event), Outcome::Drop).instrument(span).await;
                    }
                    Handler::Batch(_) => {
                        let batch = match batches.iter().position(|b| b.route == at) {
                            Some(b) => &mut batches[b],
                            None => {
                                batches.push(Batch {
                                    route: at,
                                    indexes: Vec::new(),
                                    events: Vec::new(),
                                });
                                let last = batches.len() - 1;
                                &mut batches[last]
                            }
                        };
                        batch.indexes.push(i);
                        batch.events.push(event.into_bytes_event());
                    }
                },
            }
        }
        for Batch {
            route,
            indexes,
            events,
        } in batches
        {
            let Handler::Batch(handler) = &self.routes[route].handler else {
                continue;
            };
            let (idx, evs) = (indexes, events);
            let n = evs.len();
            let answered = caught(handler(evs), vec![Outcome::Drop; n]).await;
            if answered.len() != n {
                tracing::error!(
                    expected = n,
                    answered = answered.len(),
                    "batch handler answered the wrong number of outcomes: retrying the batch"
                );
            }
            for (k, i) in idx.into_iter().enumerate() {
                outcomes[i] = answered.get(k).copied().unwrap_or(Outcome::Retry);
            }
        }
        outcomes
    }

    /// Who takes this event: a route, or nobody (then the answer is already known).
    fn resolve(&self, event: &RawEvent) -> Resolved {
        if let Some(ignored) = self.ignores(event) {
            tracing::debug!(event_type = %event.event_type, family = %ignored.family, "not ours: acknowledged");
            (ignored.on_ignored)(&event.event_type);
            return Resolved::Answered(Outcome::Success);
        }
        let Some(reg) = self.find(&event.pubsub_name, &event.topic, &event.event_type) else {
            for u in self.unrouted.iter().filter(|u| {
                u.topic == event.topic
                    && (event.pubsub_name.is_empty() || u.pubsub_name == event.pubsub_name)
            }) {
                (u.hook)(&event.event_type);
            }
            tracing::warn!(
                topic = %event.topic,
                event_type = %event.event_type,
                id = %event.id,
                "no handler for this topic and CloudEvent type: dropping to the dead-letter topic"
            );
            return Resolved::Answered(Outcome::Drop);
        };
        Resolved::To(reg)
    }

    /// The ignored family this event belongs to, when no route takes its exact type and it
    /// is not another version of a type a route takes (`todo.task.completed.v2` next to a
    /// route for `todo.task.completed.v1` is an unknown version: DROPped, not ignored).
    fn ignores(&self, event: &RawEvent) -> Option<&Ignored> {
        let on_topic = |topic: &str, pubsub: &str| {
            topic == event.topic && (event.pubsub_name.is_empty() || pubsub == event.pubsub_name)
        };
        let family = self.ignored.iter().find(|i| {
            on_topic(&i.topic, &i.pubsub_name) && event.event_type.starts_with(&i.family)
        })?;
        let unversioned = |t: &str| t.rsplit_once(".v").map_or(t, |(base, _)| base).to_owned();
        let routed = self.routes.iter().any(|r| {
            on_topic(&r.route.topic, &r.route.pubsub_name)
                && r.route
                    .event_type
                    .as_deref()
                    .is_some_and(|t| unversioned(t) == unversioned(&event.event_type))
        });
        (!routed).then_some(family)
    }

    /// The route for an event (its index): an exact type match first, then a catch-all
    /// for the topic.
    fn find(&self, pubsub: &str, topic: &str, event_type: &str) -> Option<usize> {
        let on_topic = || {
            self.routes.iter().enumerate().filter(move |(_, r)| {
                r.route.topic == topic && (pubsub.is_empty() || r.route.pubsub_name == pubsub)
            })
        };
        on_topic()
            .find(|(_, r)| r.route.event_type.as_deref() == Some(event_type))
            .or_else(|| on_topic().find(|(_, r)| r.route.event_type.is_none()))
            .map(|(i, _)| i)
    }
}

/// The entries of a bulk delivery one batch route takes.
struct Batch {
    /// The route's index in the table.
    route: usize,
    /// The entries' positions in the delivery.
    indexes: Vec<usize>,
    events: Vec<Event<Vec<u8>>>,
}

enum Resolved {
    Answered(Outcome),
    /// The index of the route in the table.
    To(usize),
}

/// Awaits a handler, turning a panic into `on_panic`: a panicking handler would panic
/// again on every redelivery, so its events are DROPped (to the dead-letter topic).
async fn caught<T>(fut: impl Future<Output = T>, on_panic: T) -> T {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(answer) => answer,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(panic = %why, "event handler panicked: dropping to the dead-letter topic");
            on_panic
        }
    }
}

impl RawEvent {
    /// The span an event is handled in (its `outcome` recorded when known).
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "event",
            topic = %self.topic,
            event_type = %self.event_type,
            event_id = %self.id,
            traceparent = self.traceparent.as_deref().unwrap_or(""),
            outcome = tracing::field::Empty,
        )
    }

    fn into_bytes_event(self) -> Event<Vec<u8>> {
        Event {
            message: self.data.clone(),
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            topic: self.topic,
            pubsub_name: self.pubsub_name,
            traceparent: self.traceparent,
            raw: self.data,
        }
    }
}

/// The default route path: events of a type no rule matched.
const DEFAULT_PATH: &str = "unrouted";

impl SubscriptionsBuilder {
    /// Registers `handler` for events on `route`, decoded as the protobuf message `M`.
    /// Events that do not decode as `M` are DROPped (to the dead-letter topic) and logged.
    pub fn route<M, F, Fut>(mut self, route: Route, handler: F) -> Self
    where
        M: Message + Default + Send + 'static,
        F: Fn(Event<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |raw: RawEvent| {
            let handler = handler.clone();
            Box::pin(async move {
                match M::decode(raw.data.as_slice()) {
                    Ok(message) => {
                        handler(Event {
                            id: raw.id,
                            event_type: raw.event_type,
                            source: raw.source,
                            topic: raw.topic,
                            pubsub_name: raw.pubsub_name,
                            traceparent: raw.traceparent,
                            message,
                            raw: raw.data,
                        })
                        .await
                    }
                    Err(err) => {
                        tracing::warn!(
                            error = %err,
                            message = std::any::type_name::<M>(),
                            bytes = raw.data.len(),
                            "event does not decode: dropping to the dead-letter topic"
                        );
                        Outcome::Drop
                    }
                }
            }) as BoxFuture
        });
        self.routes.push(Registered {
            route,
            handler: Handler::One(erased),
        });
        self
    }

    /// Registers `handler` for batches of events on `route` (give the route
    /// [`Route::bulk`] or [`Route::bulk_raw`]), bytes undecoded: each bulk delivery's
    /// entries for the route arrive in one call, in their order, and the handler answers
    /// one outcome per event in the same order (e.g. after one database transaction). An
    /// event delivered alone arrives as a batch of one. A missing outcome is RETRY.
    pub fn route_batch<F, Fut>(mut self, route: Route, handler: F) -> Self
    where
        F: Fn(Vec<Event<Vec<u8>>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Outcome>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ErasedBatch = Arc::new(move |events| {
            let handler = handler.clone();
            Box::pin(async move { handler(events).await }) as BatchFuture
        });
        self.routes.push(Registered {
            route,
            handler: Handler::Batch(erased),
        });
        self
    }

    /// Registers `handler` for events on `route` with their bytes undecoded (e.g. a
    /// dead-letter reader, which must take whatever was dropped).
    pub fn route_bytes<F, Fut>(mut self, route: Route, handler: F) -> Self
    where
        F: Fn(Event<Vec<u8>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |raw: RawEvent| {
            let handler = handler.clone();
            Box::pin(async move {
                handler(Event {
                    message: raw.data.clone(),
                    id: raw.id,
                    event_type: raw.event_type,
                    source: raw.source,
                    topic: raw.topic,
                    pubsub_name: raw.pubsub_name,
                    traceparent: raw.traceparent,
                    raw: raw.data,
                })
                .await
            }) as BoxFuture
        });
        self.routes.push(Registered {
            route,
            handler: Handler::One(erased),
        });
        self
    }

    /// Acknowledges (SUCCESS), on `route`'s topic, every event whose CloudEvent type starts
    /// with `family` (e.g. `todo.task.`) and that no route takes, calling `on_ignored` with
    /// its type. A consumer interested in one type of a producer's family says so once,
    /// here, instead of listing the others: a type the producer adds later is ignored too,
    /// not dead-lettered. Types outside the family, and other versions of a type a route
    /// takes, still go to the dead-letter topic.
    pub fn ignore(
        mut self,
        route: &Route,
        family: impl Into<String>,
        on_ignored: impl Fn(&str) + Send + Sync + 'static,
    ) -> Self {
        self.ignored.push(Ignored {
            pubsub_name: route.pubsub_name.clone(),
            topic: route.topic.clone(),
            family: family.into(),
            on_ignored: Arc::new(on_ignored),
        });
        self
    }

    /// Calls `hook` with the type of every event on `route`'s topic that no route takes and
    /// no ignored family covers: such an event is DROPped to the dead-letter topic (and
    /// logged); the hook lets a service count it.
    pub fn unrouted(mut self, route: &Route, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.unrouted.push(Unrouted {
            pubsub_name: route.pubsub_name.clone(),
            topic: route.topic.clone(),
            hook: Arc::new(hook),
        });
        self
    }

    /// [`Self::ignore`] and [`Self::unrouted`] at once: on `route`'s topic the types of
    /// `family` no route takes are acknowledged (`on_ignored`), anything else no route takes
    /// is DROPped (`on_dropped`).
    pub fn family(
        self,
        route: &Route,
        family: impl Into<String>,
        on_ignored: impl Fn(&str) + Send + Sync + 'static,
        on_dropped: impl Fn(&str) + Send + Sync + 'static,
    ) -> Self {
        self.ignore(route, family, on_ignored)
            .unrouted(route, on_dropped)
    }

    pub fn build(self) -> Subscriptions {
        Subscriptions {
            routes: Arc::new(self.routes),
            ignored: Arc::new(self.ignored),
            unrouted: Arc::new(self.unrouted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn raw(topic: &str, event_type: &str, data: Vec<u8>) -> RawEvent {
        RawEvent {
            id: "1".into(),
            event_type: event_type.into(),
            topic: topic.into(),
            pubsub_name: "ps".into(),
            data,
            ..RawEvent::default()
        }
    }

    fn subs() -> Subscriptions {
        Subscriptions::builder()
            .route(
                Route::new("ps", "t", "t-dlq").event_type("a.v1"),
                |_e: Event<Timestamp>| async { Outcome::Success },
            )
            .route(
                Route::new("ps", "t", "t-dlq").event_type("b.v1"),
                |_e: Event<Timestamp>| async { Outcome::Retry },
            )
            .route(
                Route::new("ps", "u", "u-dlq"),
                |e: Event<Timestamp>| async move {
                    if e.message.seconds == 42 {
                        panic!("boom")
                    } else {
                        Outcome::Success
                    }
                },
            )
            .build()
    }

    fn ts(seconds: i64) -> Vec<u8> {
        Timestamp { seconds, nanos: 0 }.encode_to_vec()
    }

    #[tokio::test]
    async fn routes_by_topic_and_type() {
        let s = subs();
        assert_eq!(s.dispatch(raw("t", "a.v1", ts(1))).await, Outcome::Success);
        assert_eq!(s.dispatch(raw("t", "b.v1", ts(1))).await, Outcome::Retry);
        assert_eq!(
            s.dispatch(raw("u", "anything", ts(1))).await,
            Outcome::Success
        );
    }

    #[tokio::test]
    async fn an_ignored_family_is_acknowledged_but_not_other_versions_or_families() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let dropped = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let drops = dropped.clone();
        let route = Route::new("ps", "t", "t-dlq");
        let s = Subscriptions::builder()
            .route(
                route.clone().event_type("todo.task.completed.v1"),
                |_e: Event<Timestamp>| async { Outcome::Success },
            )
            .ignore(&route, "todo.task.", move |t| {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(t.to_owned());
            })
            .unrouted(&route, move |t| {
                drops
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(t.to_owned());
            })
            .build();
        // Routed, ignored (a type the producer added later too), unknown version, stranger.
        let cases = [
            ("todo.task.completed.v1", Outcome::Success),
            ("todo.task.created.v1", Outcome::Success),
            ("todo.task.archived.v1", Outcome::Success),
            ("todo.task.completed.v2", Outcome::Drop),
            ("todo.reminder.due.v1", Outcome::Drop),
        ];
        for (event_type, expected) in cases {
            assert_eq!(
                s.dispatch(raw("t", event_type, ts(1))).await,
                expected,
                "{event_type}"
            );
        }
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(seen, ["todo.task.created.v1", "todo.task.archived.v1"]);
        let dropped = dropped.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(dropped, ["todo.task.completed.v2", "todo.reminder.due.v1"]);
        // Not on another topic.
        assert_eq!(
            s.dispatch(raw("other", "todo.task.created.v1", ts(1)))
                .await,
            Outcome::Drop
        );
    }

    #[tokio::test]
    async fn unknown_type_or_topic_is_dropped() {
        let s = subs();
        assert_eq!(s.dispatch(raw("t", "c.v1", ts(1))).await, Outcome::Drop);
        assert_eq!(s.dispatch(raw("nope", "a.v1", ts(1))).await, Outcome::Drop);
    }

    #[tokio::test]
    async fn undecodable_bytes_are_dropped() {
        let s = subs();
        assert_eq!(
            s.dispatch(raw("t", "a.v1", vec![0xff, 0xff, 0xff])).await,
            Outcome::Drop
        );
    }

    #[tokio::test]
    async fn a_panicking_handler_is_dropped_not_fatal() {
        let s = subs();
        assert_eq!(s.dispatch(raw("u", "x", ts(42))).await, Outcome::Drop);
        assert_eq!(s.dispatch(raw("u", "x", ts(1))).await, Outcome::Success);
    }

    #[test]
    fn subscriptions_group_rules_per_topic_with_dead_letters() {
        let list = subs().topic_subscriptions();
        assert_eq!(list.len(), 2);
        let t = &list[0];
        assert_eq!(t.topic, "t");
        assert_eq!(t.dead_letter_topic, "t-dlq");
        let routes = t.routes.as_ref().unwrap();
        assert_eq!(routes.rules.len(), 2);
        assert_eq!(routes.rules[0].r#match, "event.type == \"a.v1\"");
        assert_eq!(routes.default, DEFAULT_PATH);
        assert!(list.iter().all(|s| !s.dead_letter_topic.is_empty()));
    }

    /// Regression: a batch route handed one event alone (not in bulk) that answered no
    /// outcome had it DROPped to the dead-letter topic; a missing outcome is RETRY, as in
    /// a bulk delivery, and only a panic DROPs.
    #[tokio::test]
    async fn a_batch_route_without_an_outcome_for_a_lone_event_retries_it() {
        let s = Subscriptions::builder()
            .route_batch(
                Route::new("ps", "quiet", "quiet-dlq").bulk_raw(100, 10),
                |_events: Vec<Event<Vec<u8>>>| async move { Vec::new() },
            )
            .route_batch(
                Route::new("ps", "boom", "boom-dlq").bulk_raw(100, 10),
                |_events: Vec<Event<Vec<u8>>>| async move {
                    if true {
                        panic!("handler bug");
                    }
                    Vec::new()
                },
            )
            .build();
        assert_eq!(
            s.dispatch(raw("quiet", "a.v1", ts(1))).await,
            Outcome::Retry
        );
        assert_eq!(
            s.dispatch_bulk(vec![raw("quiet", "a.v1", ts(1))]).await,
            [Outcome::Retry]
        );
        assert_eq!(s.dispatch(raw("boom", "a.v1", ts(1))).await, Outcome::Drop);
    }

    #[tokio::test]
    async fn a_raw_payload_subscription_has_no_routing_rule_and_types_are_told_apart_here() {
        let s = Subscriptions::builder()
            .route_batch(
                Route::new("ps", "r", "r-dlq")
                    .event_type("a.v1")
                    .bulk_raw(100, 10),
                |events: Vec<Event<Vec<u8>>>| async move { vec![Outcome::Success; events.len()] },
            )
            .route(
                Route::new("ps", "r", "r-dlq").event_type("b.v1"),
                |_e: Event<Timestamp>| async { Outcome::Retry },
            )
            .route(
                Route::new("ps", "one", "one-dlq")
                    .event_type("a.v1")
                    .metadata(RAW_PAYLOAD, "True"),
                |_e: Event<Timestamp>| async { Outcome::Success },
            )
            .route(
                Route::new("ps", "typed", "typed-dlq")
                    .event_type("a.v1")
                    .metadata(RAW_PAYLOAD, "false"),
                |_e: Event<Timestamp>| async { Outcome::Success },
            )
            .build();
        let list = s.topic_subscriptions();
        let rules = |topic: &str| {
            let sub = list.iter().find(|s| s.topic == topic).unwrap();
            let routes = sub.routes.as_ref().unwrap();
            assert_eq!(routes.default, DEFAULT_PATH, "{topic}");
            routes.rules.len()
        };
        // daprd cannot match a raw payload's type (in bulk it dead-letters every entry).
        assert_eq!(rules("r"), 0);
        assert_eq!(rules("one"), 0);
        // Not raw: daprd matches the producer's type.
        assert_eq!(rules("typed"), 1);
        // The app routes by the type read from the envelope, and drops other types.
        let outcomes = s
            .dispatch_bulk(vec![
                raw("r", "a.v1", ts(1)),
                raw("r", "b.v1", ts(1)),
                raw("r", "c.v1", ts(1)),
            ])
            .await;
        assert_eq!(outcomes, [Outcome::Success, Outcome::Retry, Outcome::Drop]);
    }

    #[tokio::test]
    async fn a_batch_route_takes_its_entries_in_one_call_in_order() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
        let log = calls.clone();
        let route = Route::new("ps", "b", "b-dlq").bulk_raw(100, 10);
        let s = Subscriptions::builder()
            .route_batch(route.clone(), move |events: Vec<Event<Vec<u8>>>| {
                let log = log.clone();
                async move {
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(events.iter().map(|e| e.id.clone()).collect());
                    // Entry "bad" is refused, the rest stored.
                    events
                        .iter()
                        .map(|e| {
                            if e.id == "bad" {
                                Outcome::Drop
                            } else {
                                Outcome::Success
                            }
                        })
                        .collect()
                }
            })
            .route(
                Route::new("ps", "t", "t-dlq").event_type("a.v1"),
                |_e: Event<Timestamp>| async { Outcome::Retry },
            )
            .build();
        let ev = |topic: &str, id: &str| RawEvent {
            id: id.into(),
            ..raw(topic, "x.v1", vec![1])
        };
        let outcomes = s
            .dispatch_bulk(vec![
                ev("b", "1"),
                ev("t", "other-topic"),
                ev("b", "bad"),
                ev("b", "3"),
            ])
            .await;
        assert_eq!(
            outcomes,
            [
                Outcome::Success,
                Outcome::Drop,
                Outcome::Drop,
                Outcome::Success
            ]
        );
        let calls = calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(calls, [vec!["1", "bad", "3"]]);
        // Alone (OnTopicEvent), an event is a batch of one.
        assert_eq!(s.dispatch(ev("b", "4")).await, Outcome::Success);
        // The subscription asks for raw bulk delivery.
        let sub = &s.topic_subscriptions()[0];
        assert_eq!(
            sub.metadata.get(RAW_PAYLOAD).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            sub.bulk_subscribe.as_ref().map(|b| b.max_messages_count),
            Some(100)
        );
    }

    #[tokio::test]
    async fn a_batch_answering_too_few_outcomes_retries_the_rest() {
        let s = Subscriptions::builder()
            .route_batch(Route::new("ps", "b", "b-dlq"), |_events| async {
                vec![Outcome::Success]
            })
            .build();
        let outcomes = s
            .dispatch_bulk(vec![raw("b", "x", vec![]), raw("b", "x", vec![])])
            .await;
        assert_eq!(outcomes, [Outcome::Success, Outcome::Retry]);
    }

    #[test]
    fn outcome_maps_to_dapr_status() {
        assert_eq!(TopicEventResponseStatus::from(Outcome::Success) as i32, 0);
        assert_eq!(TopicEventResponseStatus::from(Outcome::Retry) as i32, 1);
        assert_eq!(TopicEventResponseStatus::from(Outcome::Drop) as i32, 2);
    }
}
