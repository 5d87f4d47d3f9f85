//! notification-service: each due reminder is delivered once, and users can list what was.
//!
//! It subscribes to `reminders` (CloudEvent type `todo.reminder.due.v1`, message
//! `todo.events.v1.ReminderEvent`; the scheduled and cancelled types are acknowledged
//! untouched) and delivers through a [`channel::Channel`]; the first writes one structured
//! JSON line per notification on stdout ([`channel::JsonLogChannel`]).
//!
//! Idempotent across redeliveries, restarts, sidecar crashes and replicas: before delivering,
//! a handling claims the reminder in a Dapr state store (component [`STATE_STORE`]; create-only
//! write, a lease, a TTL); after delivering, it marks it delivered in one transaction with the
//! user's list, a whole bulk delivery of reminders at a time ([`delivery_batch`]). A reminder
//! already delivered is skipped; one being delivered elsewhere is
//! waited for; a claim whose handling died is taken over when its lease runs out. What each
//! fault costs is in [`delivery_log`]. `todo.notifications.v1.NotificationService/ListNotifications` pages
//! through the caller's own notifications.
//!
//! Answers: SUCCESS when delivered or already delivered; DROP, with a log line saying why,
//! for an event that can never succeed (undecodable, missing user or reminder id, unknown
//! type; it lands on `reminders-dlq`); RETRY when the channel failed, or the state store
//! stayed away longer than the claim lease.

pub mod api;
pub mod app;
pub mod auth;
pub mod channel;
pub mod config;
pub mod delivery_batch;
pub mod delivery_log;
pub mod notification;
pub mod reminders;
pub mod state;

pub use app::{App, build, build_with_channel, shutdown_signal};
pub use config::Config;

/// The state store component holding the delivery log (metadata.name in
/// dapr-components/statestore-notifications.yaml).
pub const STATE_STORE: &str = "notification-state";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use todo_topology::app_ids;

    /// The component in dapr-components/ carries the name used here, is the SQLite store,
    /// and is loaded only by this service's sidecar.
    #[test]
    fn the_state_store_component_matches() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../dapr-components/statestore-notifications.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("Component"));
        assert_eq!(doc["metadata"]["name"].as_str(), Some(super::STATE_STORE));
        assert_eq!(doc["spec"]["type"].as_str(), Some("state.sqlite"));
        let scopes: Vec<&str> = doc["scopes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert_eq!(scopes, [app_ids::NOTIFICATION_SERVICE]);
    }
}
