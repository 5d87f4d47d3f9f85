//! Builds the running application: the function `main` and the tests both call.

use std::{future::Future, net::SocketAddr, time::Duration};

use dapr_appcallback::{ApiTokenLayer, AppCallbackService, Route, Subscriptions};
use sea_orm::DatabaseConnection;
use todo_proto::todo::v1::task_service_server::TaskServiceServer;
use todo_topology::{components::PUBSUB, event_types, topics::dead_letter};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower::ServiceBuilder;
use tower_http::{
    classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier},
    trace::TraceLayer,
};

use crate::{
    api::TaskApi,
    auth::Authenticate,
    config::Config,
    db,
    events::Topics,
    outbox::{Relay, Wakeup},
};

/// A running task-service.
#[derive(Debug)]
pub struct App {
    /// Where it listens (the port the OS chose when the config asked for port 0).
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_relay: tokio::sync::watch::Sender<bool>,
    relay: JoinHandle<()>,
    scheduler: JoinHandle<()>,
}

/// What the request log calls a failure: the service's faults (INTERNAL, UNAVAILABLE,
/// DEADLINE_EXCEEDED, …), logged at ERROR. An answer about the caller's request (a task
/// that does not exist, a field that is invalid, a stale etag, missing credentials) is the
/// service working: a client polling for a task not created yet must not flood the log.
fn callers_mistakes_are_answers() -> GrpcErrorsAsFailures {
    [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unauthenticated,
    ]
    .into_iter()
    .fold(
        GrpcErrorsAsFailures::new(),
        GrpcErrorsAsFailures::with_success,
    )
}

/// Connects the database (applying migrations), binds the listener and starts serving
/// the Task API, health, reflection and Dapr's AppCallback on one port.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let db = db::connect(&config.database_url, config.database_max_connections).await?;
    let writer = db::writer(&config.database_url, &db).await?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TaskServiceServer<TaskApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(todo_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    if let Some(metrics_addr) = config.metrics_addr {
        todo_telemetry::serve_metrics(metrics_addr);
    }

    // The relay publishes through the sidecar; the API never waits on it.
    let mut publisher_config = dapr_publisher::PublisherConfig::new(
        config.dapr_grpc_endpoint.clone(),
        todo_topology::components::PUBSUB,
    );
    publisher_config.api_token = config.dapr_api_token.clone();
    // Longer than daprd's own retries (dapr-components/resiliency.yaml): abandoning a call
    // daprd is still working on would let a retry overtake it and reorder events.
    publisher_config.call_timeout = Duration::from_secs(60);
    let publisher = dapr_publisher::Publisher::lazy(&publisher_config)?;
    let wakeup = Wakeup::default();
    let (stop_relay, stop_rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(
        Relay::new(
            writer.clone(),
            publisher,
            config.relay.clone(),
            wakeup.clone(),
        )
        .run(stop_rx),
    );
    // Events left from before a restart go out now.
    wakeup.wake();

    let topics = Topics::new(&config.topic_prefix);
    let nudge = crate::reminders::Nudge::default();
    let scheduler = tokio::spawn(
        crate::reminders::Scheduler {
            db: writer.clone(),
            topics: topics.clone(),
            config: config.scheduler.clone(),
            nudge: nudge.clone(),
            relay: wakeup.clone(),
        }
        .run(stop_relay.subscribe()),
    );
    let occurrences = crate::occurrences::Occurrences {
        db: writer.clone(),
        topics: topics.clone(),
        wakeup: wakeup.clone(),
        nudge: nudge.clone(),
    };
    let subscriptions = Subscriptions::builder()
        .route(
            Route::new(
                PUBSUB,
                topics.task_occurrences.clone(),
                dead_letter(&topics.task_occurrences),
            )
            .event_type(event_types::OCCURRENCE_REQUESTED),
            move |e| {
                let o = occurrences.clone();
                async move { o.handle(e).await }
            },
        )
        .build();
    let api = TaskServiceServer::with_interceptor(
        TaskApi::new(
            db.clone(),
            writer,
            topics,
            wakeup,
            nudge,
            config.default_reminders.clone(),
        ),
        Authenticate(config.auth.clone()),
    );
    let callbacks = AppCallbackService::new(subscriptions);

    let (tx, rx) = oneshot::channel::<()>();
    let layers = ServiceBuilder::new()
        .layer(TraceLayer::new(SharedClassifier::new(
            callers_mistakes_are_answers(),
        )))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests,
        ))
        .layer(ApiTokenLayer::for_dapr_callbacks(
            config.app_api_token.clone(),
        ))
        .into_inner();
    let router = tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(layers)
        .add_service(api)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(callbacks.app_callback_server())
        .add_service(callbacks.health_check_server())
        .add_service(callbacks.alpha_server());
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        // Without TCP_NODELAY every small reply waits on a delayed ACK (~40 ms).
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        async {
            let _ = rx.await;
        },
    ));
    tracing::info!(%addr, database = %redact(&config.database_url), auth = ?config.auth, "task-service serving");
    Ok(App {
        addr,
        db,
        shutdown: Some(tx),
        server,
        stop_relay,
        relay,
        scheduler,
    })
}

impl App {
    /// Stops accepting, lets in-flight requests finish, then closes the database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await??;
        let _ = self.stop_relay.send(true);
        (&mut self.relay).await?;
        (&mut self.scheduler).await?;
        self.db.close().await?;
        Ok(())
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down: finishing in-flight requests");
        self.shutdown().await
    }
}

/// The database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

pub use todo_env::shutdown_signal;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tonic::codegen::http;
    use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

    use super::callers_mistakes_are_answers;

    /// Whether the request log calls an answer with this `grpc-status` a success.
    fn is_success(code: u16) -> bool {
        let response = http::Response::builder()
            .header("grpc-status", code.to_string())
            .body(())
            .unwrap();
        match callers_mistakes_are_answers().classify_response(&response) {
            ClassifiedResponse::Ready(result) => result.is_ok(),
            ClassifiedResponse::RequiresEos(_) => panic!("a trailers-only answer is final"),
        }
    }

    #[test]
    fn a_callers_mistake_is_an_answer_and_a_fault_is_a_failure() {
        // OK, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ABORTED, UNAUTHENTICATED
        for code in [0, 3, 5, 9, 10, 16] {
            assert!(is_success(code), "{code}");
        }
        // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS
        for code in [2, 4, 8, 13, 14, 15] {
            assert!(!is_success(code), "{code}");
        }
    }
}
