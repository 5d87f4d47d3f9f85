//! The server every service runs: its own gRPC services and AppCallback routes behind one
//! tower stack, with health, reflection and graceful shutdown.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use dapr_appcallback::{ApiTokenLayer, AppCallbackService, Subscriptions};
use todo_env::Common;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    body::Body,
    server::NamedService,
    service::{RoutesBuilder, interceptor::InterceptedService},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::ServiceBuilder as TowerStack;
use tower_http::{classify::SharedClassifier, trace::TraceLayer};

use crate::{RpcMetricsLayer, callers_mistakes_are_answers};

/// The reflection services' own names (advertised with the service's own).
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
const HEALTH: &str = "grpc.health.v1.Health";

/// Collects a service's gRPC services and subscriptions, then [`serve`s](Self::serve) them.
pub struct ServiceBuilder {
    name: &'static str,
    config: Common,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    subscriptions: Option<Subscriptions>,
    accept_http1: bool,
    grpc_web: bool,
}

impl ServiceBuilder {
    /// A service named `name` (its Dapr app id, for logs), served as `common` says
    /// (`APP_ADDR`, `REQUEST_TIMEOUT_MS`, `MAX_CONCURRENT_REQUESTS`, `APP_API_TOKEN`,
    /// `METRICS_ADDR`).
    pub fn new(name: &'static str, common: &Common) -> Self {
        Self {
            name,
            config: common.clone(),
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            subscriptions: None,
            accept_http1: false,
            grpc_web: false,
        }
    }

    /// Serves one of the service's own gRPC services (advertised by health and reflection).
    pub fn grpc<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// Serves one of the service's own APIs to its callers: [`Self::grpc`] behind caller
    /// authentication as `auth` says (`AUTH_MODE`), so that a handler sees only calls
    /// that carry a verified identity.
    pub fn authenticated<S>(self, service: S, auth: &todo_auth::AuthMode) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.grpc(InterceptedService::new(
            service,
            todo_auth::Authenticate(auth.clone()),
        ))
    }

    /// Serves Dapr's AppCallback (and its health check and bulk alpha API) from these routes.
    pub fn subscriptions(mut self, subscriptions: Subscriptions) -> Self {
        self.subscriptions = Some(subscriptions);
        self
    }

    /// Accepts HTTP/1.1 too (gRPC-Web from browsers).
    pub fn accept_http1(mut self) -> Self {
        self.accept_http1 = true;
        self
    }

    /// Serves gRPC-Web too (`tonic-web`, over HTTP/1.1 and HTTP/2), on the same port, so a
    /// browser can call the service's APIs.
    pub fn grpc_web(mut self) -> Self {
        self.accept_http1 = true;
        self.grpc_web = true;
        self
    }

    /// Binds the listener and starts serving; returns once the port is bound. Logs once
    /// what every service has: its address, APIs, sidecar and the topics it subscribes to.
    pub async fn serve(self) -> anyhow::Result<Running> {
        let Self {
            name,
            config,
            mut routes,
            names,
            subscriptions,
            accept_http1,
            grpc_web,
        } = self;
        if let Some(addr) = config.metrics_addr {
            todo_telemetry::serve_metrics(addr)?;
        }
        let has_callbacks = subscriptions.is_some();
        // What it subscribes to (and where each topic's dead letters go), for the log line.
        let (topics, dead_letters): (Vec<String>, Vec<String>) = subscriptions
            .iter()
            .flat_map(Subscriptions::topic_subscriptions)
            .map(|s| (s.topic, s.dead_letter_topic))
            .unzip();
        if let Some(subscriptions) = subscriptions {
            let callbacks = AppCallbackService::new(subscriptions);
            routes
                .add_service(callbacks.app_callback_server())
                .add_service(callbacks.health_check_server())
                .add_service(callbacks.alpha_server());
        }
        // Health reports Dapr's callbacks too; reflection advertises only the service's own
        // APIs (the callbacks are for the sidecar, and their descriptors are not served).
        let mut health_names = names.clone();
        if has_callbacks {
            health_names.push(
                <dapr_appcallback::proto::app_callback_server::AppCallbackServer<
                    AppCallbackService,
                > as NamedService>::NAME,
            );
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &health_names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        routes.add_service(health_service);
        let advertised: Vec<&'static str> = names
            .iter()
            .copied()
            .chain([HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA])
            .collect();
        let reflection = || {
            advertised.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(todo_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    // The error details the services send (google.rpc.BadRequest, …), so
                    // grpcurl can show why a request was rejected.
                    .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET),
                |b, name| b.with_service_name(*name),
            )
        };
        routes
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("APP_ADDR: cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;

        // Metrics are labelled by the services served here (Dapr's callbacks included);
        // any other path a caller sends is counted as unknown.
        let mut served = advertised.clone();
        if has_callbacks {
            served.extend(dapr_appcallback::SERVICE_NAMES);
        }
        let layers = TowerStack::new()
            .layer(RpcMetricsLayer::serving(served))
            .layer(TraceLayer::new(SharedClassifier::new(
                callers_mistakes_are_answers(),
            )))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                config.max_concurrent_requests,
            ))
            .layer(ApiTokenLayer::for_dapr_callbacks(
                config.app_api_token.clone(),
            ))
            // Innermost: a gRPC-Web call is seen by the layers above as the call it is.
            .option_layer(grpc_web.then(tonic_web::GrpcWebLayer::new))
            .into_inner();
        let router = tonic::transport::Server::builder()
            .timeout(config.request_timeout)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .accept_http1(accept_http1)
            .layer(layers)
            .add_routes(routes.routes());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(router.serve_with_incoming_shutdown(
            // Without TCP_NODELAY every small reply waits on a delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stopped.await;
            },
        ));
        tracing::info!(
            service = name,
            %addr,
            serves = ?health_names,
            sidecar = %config.dapr_grpc_endpoint,
            subscribes = ?topics,
            dead_letters = ?dead_letters,
            app_api_token = config.app_api_token.is_some(),
            grpc_web,
            metrics = ?config.metrics_addr,
            "serving"
        );
        Ok(Running {
            addr,
            name,
            names: health_names,
            health,
            stop: Some(stop),
            server,
        })
    }
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// Where it listens (the port the OS chose when the config asked for port 0).
    pub addr: SocketAddr,
    name: &'static str,
    names: Vec<&'static str>,
    health: HealthReporter,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// The health reporter, for a service that reports its own status changes.
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Reports NOT_SERVING, stops accepting, and waits for in-flight requests and event
    /// handlers to finish: an event whose answer was not sent is redelivered by Dapr.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for name in &self.names {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await??;
        tracing::info!(service = self.name, "stopped serving");
        Ok(())
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!(
            service = self.name,
            "shutting down: finishing in-flight requests"
        );
        self.shutdown().await
    }
}

/// What a service counts while it runs (its handlers' outcomes), read as a snapshot.
pub trait Counters: Send + Sync + 'static {
    type Snapshot: std::fmt::Debug;
    fn snapshot(&self) -> Self::Snapshot;
}

/// A running service together with its counters: what a consumer service's `build` returns.
#[derive(Debug)]
pub struct Served<C> {
    /// Where it listens (the port the OS chose when the config asked for port 0).
    pub addr: SocketAddr,
    counters: std::sync::Arc<C>,
    server: Running,
}

impl<C: Counters> Served<C> {
    pub fn new(server: Running, counters: std::sync::Arc<C>) -> Self {
        Self {
            addr: server.addr,
            counters,
            server,
        }
    }

    /// How the events handled so far ended.
    pub fn stats(&self) -> C::Snapshot {
        self.counters.snapshot()
    }

    /// Reports NOT_SERVING, stops accepting, and lets in-flight handlers finish (an event
    /// whose answer was not sent is redelivered by Dapr). Returns the counters at the end.
    pub async fn shutdown(self) -> anyhow::Result<C::Snapshot> {
        let name = self.server.name;
        self.server.shutdown().await?;
        let stats = self.counters.snapshot();
        tracing::info!(service = name, ?stats, "stopped");
        Ok(stats)
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down: finishing in-flight deliveries");
        self.shutdown().await.map(drop)
    }
}
