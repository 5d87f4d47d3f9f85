//! A Dapr state store through the sidecar: read with ETag, write in one transaction.

use std::{collections::HashMap, time::Duration};

use dapr::dapr::proto::{
    common::v1::{
        Etag, StateItem, StateOptions,
        state_options::{StateConcurrency, StateConsistency},
    },
    runtime::v1::{
        ExecuteStateTransactionRequest, GetBulkStateRequest, GetStateRequest,
        TransactionalStateOperation,
    },
};
use tonic::Status;

use crate::{Client, Sidecar, SidecarConfig, SidecarError};

/// State item metadata that sets a time to live (understood by state.sqlite and
/// state.postgresql, among others).
pub const META_TTL: &str = "ttlInSeconds";

/// Why a state call failed. Every failure is worth retrying later: the sidecar or its store
/// being away is the common case, and a precondition that failed is re-read by the caller.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error("the Dapr sidecar failed the state call: {0}")]
    Call(#[from] Status),
    #[error("the state store failed to read {key}: {reason}")]
    Item { key: String, reason: String },
}

/// A stored value and the ETag it was read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub data: Vec<u8>,
    pub etag: String,
}

/// One write of a transaction. All writes use first-write concurrency: a write commits only
/// if the key is still as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Creates `key`; fails when it exists (and has not expired). With no ETag, first-write
    /// concurrency is exactly this in Dapr's SQL stores: `INSERT … WHERE NOT EXISTS`.
    Create {
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    },
    /// Replaces `key`; fails unless its ETag is still `etag`. Resets the TTL.
    Replace {
        key: String,
        value: Vec<u8>,
        etag: String,
        ttl: Duration,
    },
    /// Deletes `key`; fails unless its ETag is still `etag`.
    Delete { key: String, etag: String },
}

fn first_write() -> Option<StateOptions> {
    Some(StateOptions {
        concurrency: StateConcurrency::ConcurrencyFirstWrite as i32,
        consistency: StateConsistency::ConsistencyStrong as i32,
    })
}

fn ttl_metadata(ttl: Duration) -> HashMap<String, String> {
    HashMap::from([(META_TTL.to_owned(), ttl.as_secs().max(1).to_string())])
}

impl Write {
    fn into_operation(self) -> TransactionalStateOperation {
        let (operation_type, request) = match self {
            Self::Create { key, value, ttl } => (
                "upsert",
                StateItem {
                    key,
                    value,
                    etag: None,
                    metadata: ttl_metadata(ttl),
                    options: first_write(),
                },
            ),
            Self::Replace {
                key,
                value,
                etag,
                ttl,
            } => (
                "upsert",
                StateItem {
                    key,
                    value,
                    etag: Some(Etag { value: etag }),
                    metadata: ttl_metadata(ttl),
                    options: first_write(),
                },
            ),
            Self::Delete { key, etag } => (
                "delete",
                StateItem {
                    key,
                    etag: Some(Etag { value: etag }),
                    options: first_write(),
                    ..StateItem::default()
                },
            ),
        };
        TransactionalStateOperation {
            operation_type: operation_type.to_owned(),
            request: Some(request),
        }
    }
}

/// A cheap-to-clone handle on one state store component, through the sidecar.
#[derive(Debug, Clone)]
pub struct StateStore {
    client: Client,
    store: String,
}

impl StateStore {
    /// The store `store` on the shared sidecar channel.
    pub fn new(sidecar: &Sidecar, store: &str) -> Self {
        Self {
            client: sidecar.client(),
            store: store.to_owned(),
        }
    }

    /// A store on a sidecar of its own (tests and tools that have no [`Sidecar`] at hand).
    /// Connects lazily, like [`Sidecar::lazy`].
    pub fn lazy(
        sidecar_address: &str,
        store: &str,
        api_token: Option<&str>,
        call_timeout: Duration,
    ) -> Result<Self, StateError> {
        let config = SidecarConfig::new(sidecar_address)
            .api_token(api_token.map(str::to_owned))
            .call_timeout(call_timeout);
        Ok(Self::new(&Sidecar::lazy(&config)?, store))
    }

    /// The component name.
    pub fn name(&self) -> &str {
        &self.store
    }

    /// The value of `key` with its ETag, or `None` when it does not exist (or expired).
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let mut client = self.client.clone();
        let resp = client
            .get_state(GetStateRequest {
                store_name: self.store.clone(),
                key: key.to_owned(),
                consistency: StateConsistency::ConsistencyStrong as i32,
                metadata: HashMap::new(),
            })
            .await?
            .into_inner();
        // Dapr answers a missing key with empty data and no ETag.
        Ok(
            (!resp.etag.is_empty() || !resp.data.is_empty()).then_some(Versioned {
                data: resp.data,
                etag: resp.etag,
            }),
        )
    }

    /// The values of `keys`, in their order, in one call (`None` where a key does not
    /// exist). Each value comes with its ETag, as from [`Self::get`].
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Versioned>>, StateError> {
        let mut client = self.client.clone();
        let resp = client
            .get_bulk_state(GetBulkStateRequest {
                store_name: self.store.clone(),
                keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                parallelism: 0,
                metadata: HashMap::new(),
            })
            .await?
            .into_inner();
        let mut found: HashMap<String, Versioned> = HashMap::with_capacity(resp.items.len());
        for item in resp.items {
            if !item.error.is_empty() {
                return Err(StateError::Item {
                    key: item.key,
                    reason: item.error,
                });
            }
            if !item.etag.is_empty() || !item.data.is_empty() {
                found.insert(
                    item.key,
                    Versioned {
                        data: item.data,
                        etag: item.etag,
                    },
                );
            }
        }
        Ok(keys.iter().map(|k| found.remove(*k)).collect())
    }

    /// Applies `writes` atomically: all commit, or none does (any precondition failing
    /// fails the whole transaction).
    pub async fn transact(&self, writes: Vec<Write>) -> Result<(), StateError> {
        let mut client = self.client.clone();
        client
            .execute_state_transaction(ExecuteStateTransactionRequest {
                store_name: self.store.clone(),
                operations: writes.into_iter().map(Write::into_operation).collect(),
                metadata: HashMap::new(),
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn writes_use_first_write_concurrency_and_a_ttl() {
        let create = Write::Create {
            key: "k".into(),
            value: b"v".to_vec(),
            ttl: Duration::from_secs(90),
        }
        .into_operation();
        assert_eq!(create.operation_type, "upsert");
        let item = create.request.unwrap();
        assert_eq!(item.etag, None, "first-write with no ETag: create only");
        assert_eq!(
            item.options.unwrap().concurrency,
            StateConcurrency::ConcurrencyFirstWrite as i32
        );
        assert_eq!(item.metadata[META_TTL], "90");

        let replace = Write::Replace {
            key: "k".into(),
            value: vec![],
            etag: "e1".into(),
            ttl: Duration::from_millis(10),
        }
        .into_operation();
        let item = replace.request.unwrap();
        assert_eq!(item.etag.unwrap().value, "e1");
        assert_eq!(item.metadata[META_TTL], "1", "at least a second");

        let delete = Write::Delete {
            key: "k".into(),
            etag: "e2".into(),
        }
        .into_operation();
        assert_eq!(delete.operation_type, "delete");
        assert_eq!(delete.request.unwrap().etag.unwrap().value, "e2");
    }

    #[test]
    fn a_bad_address_is_reported() {
        let err = StateStore::lazy("not a uri", "s", None, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, StateError::Sidecar(SidecarError::BadAddress { .. })),
            "{err}"
        );
    }
}
