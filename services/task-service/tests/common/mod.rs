//! Test support: a task-service built by the same function `main` uses, on its own
//! database (a fresh SQLite file or a fresh PostgreSQL database), over a real connection.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod api;

use std::time::{SystemTime, UNIX_EPOCH};
use todo_service::cli::ServiceConfig as _;

use jsonwebtoken::{EncodingKey, Header, encode};
use task_service::{App, Config, auth::AuthMode};
use todo_proto::todo::v1::task_service_client::TaskServiceClient;
use tonic::{Request, transport::Channel};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub use todo_harness::Backend;

/// A fresh database URL for one test (a `tasks.db` in `dir`, or a new PostgreSQL database).
pub async fn fresh_database(backend: Backend, dir: &tempfile::TempDir) -> String {
    todo_harness::fresh_database(backend, dir, "tasks.db").await
}

pub struct TestApp {
    pub app: Option<App>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub backend: Backend,
}

pub fn config(url: &str, auth: AuthMode) -> Config {
    let mut c = Config::from_lookup(|k| match k {
        "AUTH_MODE" => Some("dev".to_owned()),
        "APP_ADDR" => Some("127.0.0.1:0".to_owned()),
        "METRICS_ADDR" => Some("off".to_owned()),
        "OUTBOX_POLL_MS" => Some("200".to_owned()),
        // No sidecar: events stay in the outbox, where a test can read them (a port nothing
        // listens on, never a daprd `just up` may have started on the default one).
        "DAPR_GRPC_ENDPOINT" => Some("http://127.0.0.1:1".to_owned()),
        _ => None,
    })
    .unwrap();
    c.database_url = url.to_owned();
    c.auth = auth;
    c
}

pub fn jwt_mode() -> AuthMode {
    AuthMode::jwt(jsonwebtoken::Algorithm::HS256, SECRET.as_bytes()).unwrap()
}

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, &dir).await;
        let app = task_service::build(config(&url, jwt_mode())).await.unwrap();
        Self {
            app: Some(app),
            url,
            dir,
            backend,
        }
    }

    pub fn addr(&self) -> String {
        format!("http://{}", self.app.as_ref().unwrap().addr)
    }

    pub async fn client(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::connect(self.addr()).await.unwrap()
    }

    /// Stops the server and starts a new one on the same database.
    pub async fn restart(&mut self) {
        self.app.take().unwrap().shutdown().await.unwrap();
        self.app = Some(
            task_service::build(config(&self.url, jwt_mode()))
                .await
                .unwrap(),
        );
    }
}

/// A signed token for `user`, expiring `ttl_secs` from now (negative: already expired).
pub fn token(user: &str, ttl_secs: i64) -> String {
    token_with(user, ttl_secs, SECRET)
}

pub fn token_with(user: &str, ttl_secs: i64, secret: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({ "sub": user, "exp": now + ttl_secs, "iat": now });
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A request carrying `user`'s bearer token.
pub fn as_user<T>(user: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token(user, 3600)).parse().unwrap(),
    );
    r
}
