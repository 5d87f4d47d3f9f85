//! ListTasks ordering and opaque page tokens (keyset pagination: stable under inserts).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

/// The key a list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderKey {
    CreateTime,
    DueTime,
    Priority,
}

/// `order_by` parsed: a key and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub key: OrderKey,
    pub desc: bool,
}

impl Order {
    /// Parses `"create_time"`, `"due_time desc"`, `"priority asc"`, …; empty is create_time.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        let key = match words.next() {
            None | Some("create_time") => OrderKey::CreateTime,
            Some("due_time") => OrderKey::DueTime,
            Some("priority") => OrderKey::Priority,
            Some(other) => {
                return Err(format!(
                    "cannot order by {other:?}: use create_time, due_time or priority, optionally followed by desc"
                ));
            }
        };
        let desc = match words.next() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(format!("unknown direction {other:?}: use asc or desc")),
        };
        if words.next().is_some() {
            return Err("order by one field".to_owned());
        }
        Ok(Self { key, desc })
    }
}

/// Where the previous page ended, and the query it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken {
    /// The sort key value of the last task returned.
    pub k: i64,
    /// The id of the last task returned (tie-breaker).
    pub i: uuid::Uuid,
    /// The filters and order of the query, which must not change between pages.
    pub q: String,
}

impl PageToken {
    pub fn encode(&self) -> String {
        // Serialising a struct of plain fields cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_orders() {
        assert_eq!(
            Order::parse("").unwrap(),
            Order {
                key: OrderKey::CreateTime,
                desc: false
            }
        );
        assert_eq!(
            Order::parse("due_time desc").unwrap(),
            Order {
                key: OrderKey::DueTime,
                desc: true
            }
        );
        assert!(Order::parse("title").is_err());
        assert!(Order::parse("priority sideways").is_err());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = PageToken {
            k: 5,
            i: uuid::Uuid::now_v7(),
            q: "x".into(),
        };
        assert_eq!(PageToken::decode(&t.encode()), Some(t));
        assert_eq!(PageToken::decode("not a token!"), None);
        assert_eq!(PageToken::decode("e30"), None);
    }
}
