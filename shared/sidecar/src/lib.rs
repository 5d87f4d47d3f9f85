//! One client of the Dapr sidecar: a lazily connected gRPC channel and the interceptor that
//! sends `dapr-api-token`, shared by everything a service asks of its sidecar (publishing,
//! state). Connecting lazily lets an app start before its sidecar, as daprd expects: calls
//! fail while the sidecar is away and work again when it is back.

pub mod state;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use dapr::dapr::proto::runtime::v1::{GetMetadataRequest, dapr_client::DaprClient};
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

/// The header the app sends on its calls to the sidecar when `DAPR_API_TOKEN` is set.
pub const DAPR_API_TOKEN_HEADER: &str = "dapr-api-token";

/// The generated client of the sidecar's API, with the token interceptor.
pub type Client = DaprClient<InterceptedService<Channel, ApiToken>>;

/// Why the sidecar cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SidecarError {
    #[error("invalid sidecar address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("DAPR_API_TOKEN is not a valid header value: {0}")]
    BadToken(String),
    #[error("the Dapr sidecar at {address} did not become ready within {waited:?}: {last}")]
    NotReady {
        address: String,
        waited: Duration,
        last: String,
    },
}

/// Adds `dapr-api-token` to every call when a token is configured.
#[derive(Debug, Clone)]
pub struct ApiToken(Option<AsciiMetadataValue>);

impl Interceptor for ApiToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert(DAPR_API_TOKEN_HEADER, t.clone());
        }
        Ok(req)
    }
}

/// Where the sidecar is and how calls to it are bounded.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// `http://127.0.0.1:<dapr grpc port>` (`DAPR_GRPC_ENDPOINT` / `DAPR_GRPC_PORT`).
    pub endpoint: String,
    /// `DAPR_API_TOKEN`.
    pub api_token: Option<String>,
    /// Deadline of one call.
    pub call_timeout: Duration,
    /// Deadline of one TCP connect.
    pub connect_timeout: Duration,
}

impl SidecarConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            api_token: None,
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// With `DAPR_API_TOKEN` (a blank token counts as none).
    pub fn api_token(mut self, token: Option<String>) -> Self {
        self.api_token = token.filter(|t| !t.is_empty());
        self
    }

    /// With this deadline per call.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
}

/// A cheap-to-clone handle on one service's sidecar: one HTTP/2 channel for every client
/// made from it.
#[derive(Debug, Clone)]
pub struct Sidecar {
    client: Client,
    address: String,
}

impl Sidecar {
    /// Makes the channel without connecting (see the crate docs).
    pub fn lazy(config: &SidecarConfig) -> Result<Self, SidecarError> {
        let bad = |reason: String| SidecarError::BadAddress {
            address: config.endpoint.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .timeout(config.call_timeout)
            .tcp_nodelay(true);
        let token = config
            .api_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(AsciiMetadataValue::try_from)
            .transpose()
            .map_err(|e| SidecarError::BadToken(e.to_string()))?;
        Ok(Self {
            client: DaprClient::with_interceptor(endpoint.connect_lazy(), ApiToken(token)),
            address: config.endpoint.clone(),
        })
    }

    /// The generated client on the shared channel.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The sidecar's address, for logs and errors.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Waits until the sidecar answers its metadata API, retrying with exponential backoff
    /// (50 ms doubling to 2 s) for at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), SidecarError> {
        let started = tokio::time::Instant::now();
        let probe = || async {
            let mut client = self.client();
            client.get_metadata(GetMetadataRequest {}).await.map(drop)
        };
        probe
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2))
                    .with_total_delay(Some(timeout))
                    .without_max_times(),
            )
            .notify(|status, delay| {
                tracing::debug!(error = %status, ?delay, "waiting for the Dapr sidecar");
            })
            .await
            .map_err(|status| SidecarError::NotReady {
                address: self.address.clone(),
                waited: started.elapsed(),
                last: status.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_bad_address_is_reported() {
        let err = Sidecar::lazy(&SidecarConfig::new("not a uri")).unwrap_err();
        assert!(matches!(err, SidecarError::BadAddress { .. }), "{err}");
    }

    #[test]
    fn a_token_that_is_no_header_value_is_reported() {
        let config = SidecarConfig::new("http://127.0.0.1:1").api_token(Some("a\nb".into()));
        assert!(matches!(
            Sidecar::lazy(&config),
            Err(SidecarError::BadToken(_))
        ));
    }

    #[tokio::test]
    async fn the_token_is_sent_on_every_call() {
        let mut with = ApiToken(Some(AsciiMetadataValue::from_static("t")));
        let req = with.call(Request::new(())).unwrap();
        assert_eq!(req.metadata().get(DAPR_API_TOKEN_HEADER).unwrap(), "t");
        let mut without = ApiToken(None);
        let req = without.call(Request::new(())).unwrap();
        assert!(req.metadata().get(DAPR_API_TOKEN_HEADER).is_none());
    }
}
