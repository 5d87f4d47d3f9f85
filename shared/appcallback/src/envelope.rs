//! The structured CloudEvent envelope Dapr writes to Kafka, read back from a raw payload.
//!
//! daprd's bulk path builds its `TopicEventCERequest` from `data` alone, so a binary event
//! (carried as `data_base64`) would arrive empty; a `rawPayload` subscription hands over the
//! envelope whole and this module reads it.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;

/// What a handler needs of a CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloudEvent {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub traceparent: Option<String>,
    pub data: Vec<u8>,
}

impl CloudEvent {
    /// The envelope in `bytes`, when they are a JSON CloudEvent (an object with a
    /// `specversion`); `None` for anything else (then the bytes are the payload itself).
    /// Binary data comes from `data_base64`. Undecodable base64 yields no data: an empty
    /// payload, which a protobuf route reads as a message with no fields set, so handlers
    /// refuse it as they refuse any message without its required fields (DROP), rather
    /// than a retry that can never succeed.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.first() != Some(&b'{') {
            return None;
        }
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else {
            return None;
        };
        map.get("specversion")?;
        let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
        let data = match (map.get("data_base64"), map.get("data")) {
            (Some(Value::String(b64)), _) => STANDARD.decode(b64).unwrap_or_default(),
            (_, Some(Value::String(s))) => s.clone().into_bytes(),
            (_, Some(Value::Null)) | (_, None) => Vec::new(),
            (_, Some(other)) => other.to_string().into_bytes(),
        };
        Some(Self {
            id: text("id").unwrap_or_default(),
            event_type: text("type").unwrap_or_default(),
            source: text("source").unwrap_or_default(),
            traceparent: text("traceparent"),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_data_comes_from_data_base64() {
        let ce = br#"{"specversion":"1.0","id":"e1","type":"todo.task.created.v1","source":"task-service","datacontenttype":"application/octet-stream","data_base64":"AAEC/w==","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
        let parsed = CloudEvent::parse(ce);
        assert_eq!(
            parsed,
            Some(CloudEvent {
                id: "e1".into(),
                event_type: "todo.task.created.v1".into(),
                source: "task-service".into(),
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                data: vec![0, 1, 2, 255],
            })
        );
    }

    #[test]
    fn text_and_json_data_are_their_bytes() {
        let text = br#"{"specversion":"1.0","id":"a","type":"t","data":"hello"}"#;
        assert_eq!(
            CloudEvent::parse(text).map(|c| c.data),
            Some(b"hello".to_vec())
        );
        let json = br#"{"specversion":"1.0","id":"a","type":"t","data":{"k":1}}"#;
        assert_eq!(
            CloudEvent::parse(json).map(|c| c.data),
            Some(br#"{"k":1}"#.to_vec())
        );
    }

    #[test]
    fn anything_else_is_not_an_envelope() {
        assert_eq!(CloudEvent::parse(&[0x0a, 0x01, 0x41]), None);
        assert_eq!(CloudEvent::parse(b"{not json"), None);
        assert_eq!(CloudEvent::parse(br#"{"id":"no specversion"}"#), None);
        assert_eq!(CloudEvent::parse(b""), None);
    }
}
