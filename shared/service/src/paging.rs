//! Paged listings: opaque page tokens bound to their query, bounded page sizes and time
//! filters, the same in every service that lists.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tonic::Status;

/// Where the previous page ended, and the filters of the query it belongs to: serialised
/// as URL-safe base64 of JSON, opaque to the caller. A service's token is a struct of plain
/// fields that names its query with [`PageToken::query`].
pub trait PageToken: Serialize + DeserializeOwned {
    /// The filters of the query, which must not change between pages.
    fn query(&self) -> &str;

    /// The `next_page_token` to hand the caller.
    fn encode(&self) -> String {
        // Serialising a struct of plain fields cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The token of a request (`None` for the first page), checked against its query:
    /// INVALID_ARGUMENT naming `page_token` when this service did not issue it or issued it
    /// for other filters.
    fn decode(s: &str, query: &str) -> Result<Option<Self>, Status> {
        if s.trim().is_empty() {
            return Ok(None);
        }
        let token: Option<Self> = URL_SAFE_NO_PAD
            .decode(s.trim())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match token {
            Some(t) if t.query() == query => Ok(Some(t)),
            Some(_) => Err(Status::invalid_argument(
                "page_token: it belongs to a query with other filters",
            )),
            None => Err(Status::invalid_argument(
                "page_token: not a token this service issued (pass next_page_token as given)",
            )),
        }
    }
}

/// The token of a listing ordered by a time and an id: where the last row returned stands
/// in that order, and the query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct After {
    /// The last row's time (its sort key).
    pub at: i64,
    /// The last row's id (the tie-breaker).
    pub id: String,
    /// The filters of the query, which must not change between pages.
    pub q: String,
}

impl PageToken for After {
    fn query(&self) -> &str {
        &self.q
    }
}

/// The page size a request asks for: `default` for 0, at most `max`; INVALID_ARGUMENT
/// naming `page_size` when negative.
pub fn page_size(n: i32, default: u64, max: u64) -> Result<u64, Status> {
    match u64::try_from(n) {
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.min(max)),
        Err(_) => Err(Status::invalid_argument("page_size: must not be negative")),
    }
}

/// A time filter of a request in microseconds since the epoch (`None` when unset);
/// INVALID_ARGUMENT naming `field` when it is not a valid timestamp.
pub fn micros(field: &str, t: Option<&prost_types::Timestamp>) -> Result<Option<i64>, Status> {
    t.map(|t| {
        todo_proto::from_timestamp(t)
            .map(|d| d.timestamp_micros())
            .ok_or_else(|| Status::invalid_argument(format!("{field}: not a valid timestamp")))
    })
    .transpose()
}

/// The `since`/`until` filters of a request in microseconds, each [`micros`]; when both
/// are set, `until` must come after `since` (INVALID_ARGUMENT naming `until`).
pub fn time_range(
    since: Option<&prost_types::Timestamp>,
    until: Option<&prost_types::Timestamp>,
) -> Result<(Option<i64>, Option<i64>), Status> {
    let (since, until) = (micros("since", since)?, micros("until", until)?);
    match (since, until) {
        (Some(s), Some(u)) if u <= s => Err(Status::invalid_argument("until: must be after since")),
        range => Ok(range),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Token {
        last: i64,
        q: String,
    }

    impl PageToken for Token {
        fn query(&self) -> &str {
            &self.q
        }
    }

    #[test]
    fn tokens_belong_to_their_query() {
        let t = Token {
            last: 7,
            q: "q1".into(),
        };
        assert_eq!(Token::decode(&t.encode(), "q1").unwrap(), Some(t));
        let t = Token::decode(
            &Token {
                last: 7,
                q: "q1".into(),
            }
            .encode(),
            "q2",
        )
        .unwrap_err();
        assert!(t.message().starts_with("page_token:"), "{t:?}");
        assert!(Token::decode("garbage!", "q1").is_err());
        assert_eq!(Token::decode(" ", "q1").unwrap(), None);
    }

    #[test]
    fn after_tokens_round_trip() {
        let t = After {
            at: 5,
            id: "x".into(),
            q: "q".into(),
        };
        assert_eq!(After::decode(&t.encode(), "q").unwrap(), Some(t));
    }

    #[test]
    fn page_sizes_are_bounded_and_never_negative() {
        assert_eq!(page_size(0, 50, 500).unwrap(), 50);
        assert_eq!(page_size(7, 50, 500).unwrap(), 7);
        assert_eq!(page_size(10_000, 50, 500).unwrap(), 500);
        assert!(
            page_size(-1, 50, 500)
                .unwrap_err()
                .message()
                .starts_with("page_size:")
        );
    }

    #[test]
    fn time_filters_name_their_field() {
        assert_eq!(micros("since", None).unwrap(), None);
        let t = prost_types::Timestamp {
            seconds: 1,
            nanos: 5_000,
        };
        assert_eq!(micros("since", Some(&t)).unwrap(), Some(1_000_005));
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(
            micros("until", Some(&bad))
                .unwrap_err()
                .message()
                .starts_with("until:")
        );
        let later = prost_types::Timestamp {
            seconds: 2,
            nanos: 0,
        };
        assert_eq!(
            time_range(Some(&t), Some(&later)).unwrap(),
            (Some(1_000_005), Some(2_000_000))
        );
        assert!(
            time_range(Some(&later), Some(&t))
                .unwrap_err()
                .message()
                .starts_with("until:")
        );
        assert!(
            time_range(Some(&bad), None)
                .unwrap_err()
                .message()
                .starts_with("since:")
        );
    }
}
