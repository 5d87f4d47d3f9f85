//! Publishes protobuf events through the Dapr sidecar, as the design's rule 5 says:
//! content type `application/octet-stream` (so Dapr carries the bytes as `data_base64`),
//! the CloudEvent type through `cloudevent.type` metadata, the partition key through
//! `partitionKey`, and `dapr-api-token` when `DAPR_API_TOKEN` is set.

use std::{collections::HashMap, time::Duration};

mod group;
pub use group::GroupPublisher;

use backon::{ExponentialBuilder, Retryable};

use dapr::dapr::proto::runtime::v1::{
    BulkPublishRequest, BulkPublishRequestEntry, PublishEventRequest,
};
pub use dapr_sidecar::{Sidecar, SidecarConfig, SidecarError};
use tonic::Status;

/// The content type every event is published with (see the module docs).
pub const CONTENT_TYPE: &str = "application/octet-stream";
/// Publish metadata naming the CloudEvent type.
pub const META_CLOUDEVENT_TYPE: &str = "cloudevent.type";
/// Publish metadata naming the CloudEvent id.
pub const META_CLOUDEVENT_ID: &str = "cloudevent.id";
/// Publish metadata naming the Kafka partition key.
pub const META_PARTITION_KEY: &str = "partitionKey";

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// Unique id; becomes the CloudEvent id and, in a batch, the entry id.
    pub id: String,
    pub topic: String,
    /// The CloudEvent type, e.g. `todo.task.completed.v1`.
    pub event_type: String,
    /// The partition key (the user id): events with one key stay in order.
    pub key: String,
    /// The encoded protobuf message.
    pub data: Vec<u8>,
}

impl OutgoingEvent {
    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            (META_CLOUDEVENT_TYPE.to_owned(), self.event_type.clone()),
            (META_CLOUDEVENT_ID.to_owned(), self.id.clone()),
            (META_PARTITION_KEY.to_owned(), self.key.clone()),
        ])
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Unusable(#[from] SidecarError),
    #[error("the Dapr sidecar refused or failed the publish: {0}")]
    Sidecar(#[from] Status),
    #[error("a batch must publish to one topic; got {0} and {1}")]
    MixedTopics(String, String),
    /// A [`GroupPublisher`] call that failed for a reason shared with others of its call,
    /// or its entry alone.
    #[error("{message}")]
    InGroup { message: String, transient: bool },
}

impl PublishError {
    /// Whether the sidecar answered that the pub/sub failed the publish (Kafka down, a
    /// partition's leader moving: INTERNAL). The call is then over inside daprd (the Kafka
    /// components run with `producerRetryMax: "0"` and no outbound retry policy), so
    /// sending again at once cannot race the first attempt. A deadline, a cancellation or
    /// a broken connection may leave the first attempt running: those are not retried here.
    pub fn answered_failed(&self) -> bool {
        matches!(self, Self::Sidecar(s) if s.code() == tonic::Code::Internal)
    }

    /// Whether the event may have been published although the call failed: the call ran
    /// out of time or was cancelled (the channel's `call_timeout` answers CANCELLED), or
    /// failed in a way nobody named (UNKNOWN), so daprd may still have handed it to Kafka.
    /// A refused connection (UNAVAILABLE) or an answer saying what failed is a known
    /// failure: nothing was published.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Sidecar(s) if matches!(
                s.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown
            )
        )
    }

    /// Whether trying again later can help (the sidecar or Kafka being down).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Sidecar(s) => !matches!(
                s.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
            ),
            Self::Unusable(SidecarError::NotReady { .. }) => true,
            Self::InGroup { transient, .. } => *transient,
            Self::Unusable(_) | Self::MixedTopics(..) => false,
        }
    }
}

/// Entries of a batch the sidecar could not publish (the rest were published).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// (event id, error) for every entry that failed.
    pub failed: Vec<(String, String)>,
}

/// Where the sidecar is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// `http://127.0.0.1:<dapr grpc port>`.
    pub sidecar_address: String,
    /// The pub/sub component name.
    pub pubsub_name: String,
    /// `DAPR_API_TOKEN`.
    pub api_token: Option<String>,
    /// How long `connect` waits for the sidecar to answer.
    pub ready_timeout: Duration,
    /// Deadline of one publish call.
    pub call_timeout: Duration,
}

impl PublisherConfig {
    pub fn new(sidecar_address: impl Into<String>, pubsub_name: impl Into<String>) -> Self {
        Self {
            sidecar_address: sidecar_address.into(),
            pubsub_name: pubsub_name.into(),
            api_token: None,
            ready_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// A cheap-to-clone handle on the sidecar's publish API.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: dapr_sidecar::Client,
    pubsub_name: String,
    sidecar: Sidecar,
}

impl Publisher {
    /// Publishes to `pubsub_name` through the service's one sidecar channel.
    pub fn new(sidecar: &Sidecar, pubsub_name: impl Into<String>) -> Self {
        Self {
            client: sidecar.client(),
            pubsub_name: pubsub_name.into(),
            sidecar: sidecar.clone(),
        }
    }

    /// A publisher on a sidecar channel of its own, made lazily (it never waits; calls fail
    /// while the sidecar is away and work again when it is back).
    pub fn lazy(config: &PublisherConfig) -> Result<Self, PublishError> {
        let sidecar = Sidecar::lazy(
            &SidecarConfig::new(config.sidecar_address.clone())
                .api_token(config.api_token.clone())
                .call_timeout(config.call_timeout),
        )?;
        Ok(Self::new(&sidecar, config.pubsub_name.clone()))
    }

    /// Connects and waits, with exponential backoff, until the sidecar answers.
    pub async fn connect(config: &PublisherConfig) -> Result<Self, PublishError> {
        let publisher = Self::lazy(config)?;
        publisher.wait_ready(config.ready_timeout).await?;
        Ok(publisher)
    }

    /// Waits until the sidecar answers its metadata API.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), PublishError> {
        Ok(self.sidecar.wait_ready(timeout).await?)
    }

    /// Publishes one event; returns when Dapr acknowledged it (Kafka has it). A failure
    /// the sidecar answered ([`PublishError::answered_failed`], e.g. a partition's leader
    /// just elected) is tried again a few times within about 2 s ([`quick_retries`]):
    /// daprd itself does not retry publishes (see dapr-components/resiliency.yaml).
    pub async fn publish(&self, event: &OutgoingEvent) -> Result<(), PublishError> {
        (|| self.publish_once(event))
            .retry(quick_retries())
            .when(PublishError::answered_failed)
            .await
    }

    async fn publish_once(&self, event: &OutgoingEvent) -> Result<(), PublishError> {
        let mut client = self.client.clone();
        client
            .publish_event(PublishEventRequest {
                pubsub_name: self.pubsub_name.clone(),
                topic: event.topic.clone(),
                data: event.data.clone(),
                data_content_type: CONTENT_TYPE.to_owned(),
                metadata: event.metadata(),
            })
            .await?;
        Ok(())
    }

    /// Publishes a batch to one topic in one call. `Ok` lists the entries that failed
    /// (the others were published); `Err` means none is known to be published. A failure
    /// the sidecar answered is tried again like [`Self::publish`], the whole batch each
    /// time: entries already written are written again after. A batch with two events of
    /// one key can reach Kafka out of order that way (a failed early request, a later one
    /// written); a caller that needs each key's order sends one event per key per call
    /// (task-service's outbox relay does).
    pub async fn publish_bulk(
        &self,
        events: &[OutgoingEvent],
    ) -> Result<BulkOutcome, PublishError> {
        (|| self.publish_bulk_once(events))
            .retry(quick_retries())
            .when(PublishError::answered_failed)
            .await
    }

    async fn publish_bulk_once(
        &self,
        events: &[OutgoingEvent],
    ) -> Result<BulkOutcome, PublishError> {
        let Some(first) = events.first() else {
            return Ok(BulkOutcome::default());
        };
        if let Some(other) = events.iter().find(|e| e.topic != first.topic) {
            return Err(PublishError::MixedTopics(
                first.topic.clone(),
                other.topic.clone(),
            ));
        }
        let entries = events
            .iter()
            .map(|e| BulkPublishRequestEntry {
                entry_id: e.id.clone(),
                event: e.data.clone(),
                content_type: CONTENT_TYPE.to_owned(),
                metadata: e.metadata(),
            })
            .collect();
        let mut client = self.client.clone();
        let resp = client
            .bulk_publish_event(BulkPublishRequest {
                pubsub_name: self.pubsub_name.clone(),
                topic: first.topic.clone(),
                entries,
                metadata: HashMap::new(),
            })
            .await?
            .into_inner();
        Ok(BulkOutcome {
            failed: resp
                .failed_entries
                .into_iter()
                .map(|f| (f.entry_id, f.error))
                .collect(),
        })
    }
}

/// The retries of a publish the sidecar answered as failed: 3 more attempts, 100 ms to 1 s
/// apart with jitter (what daprd's outbound policy did before it was removed).
pub fn quick_retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(3)
        .with_jitter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failure_the_sidecar_answered_is_retried_at_once() {
        let answered = |code| PublishError::Sidecar(Status::new(code, "x")).answered_failed();
        assert!(answered(tonic::Code::Internal));
        // The first attempt may still be running inside daprd, or retrying cannot help.
        for code in [
            tonic::Code::DeadlineExceeded,
            tonic::Code::Cancelled,
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
            tonic::Code::InvalidArgument,
            tonic::Code::PermissionDenied,
        ] {
            assert!(!answered(code), "{code:?}");
        }
        assert!(!PublishError::MixedTopics("a".into(), "b".into()).answered_failed());
    }

    #[test]
    fn a_publish_that_timed_out_may_have_gone_through() {
        let unknown = |code| PublishError::Sidecar(Status::new(code, "x")).outcome_unknown();
        for code in [
            tonic::Code::DeadlineExceeded,
            tonic::Code::Cancelled,
            tonic::Code::Unknown,
        ] {
            assert!(unknown(code), "{code:?}");
        }
        for code in [
            tonic::Code::Internal,
            tonic::Code::Unavailable,
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
        ] {
            assert!(!unknown(code), "{code:?}");
        }
        assert!(!PublishError::MixedTopics("a".into(), "b".into()).outcome_unknown());
    }

    #[test]
    fn metadata_carries_type_id_and_key() {
        let e = OutgoingEvent {
            id: "e1".into(),
            topic: "t".into(),
            event_type: "x.v1".into(),
            key: "user-1".into(),
            data: vec![1],
        };
        let m = e.metadata();
        assert_eq!(m[META_CLOUDEVENT_TYPE], "x.v1");
        assert_eq!(m[META_PARTITION_KEY], "user-1");
        assert_eq!(m[META_CLOUDEVENT_ID], "e1");
    }

    #[test]
    fn invalid_argument_is_not_transient() {
        assert!(!PublishError::Sidecar(Status::invalid_argument("x")).is_transient());
        assert!(PublishError::Sidecar(Status::unavailable("x")).is_transient());
    }

    #[test]
    fn bad_address_is_reported() {
        let cfg = PublisherConfig::new("not a uri", "ps");
        assert!(matches!(
            Publisher::lazy(&cfg),
            Err(PublishError::Unusable(SidecarError::BadAddress { .. }))
        ));
    }
}
