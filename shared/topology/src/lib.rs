//! Every name shared between the code and dapr-components/, defined once.
//!
//! A test in this crate reads dapr-components/ and fails when the two drift apart.

/// Dapr app ids.
pub mod app_ids {
    pub const TASK_SERVICE: &str = "task-service";
    pub const RECURRING_TASK_SERVICE: &str = "recurring-task-service";
    pub const NOTIFICATION_SERVICE: &str = "notification-service";
    pub const AUDIT_SERVICE: &str = "audit-service";
    pub const SYNC_SERVICE: &str = "sync-service";
    pub const DEAD_LETTER_SERVICE: &str = "dead-letter-service";
}

/// Each app and where it listens when `APP_ADDR` and `METRICS_ADDR` are unset: one machine
/// runs them all side by side, gRPC from 50051 and metrics from 9464, in the order the
/// apps came.
pub mod apps {
    use crate::app_ids;

    /// An app of the system: its id (its binary's name) and its default addresses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct App {
        pub id: &'static str,
        /// `APP_ADDR` when unset.
        pub listen: &'static str,
        /// `METRICS_ADDR` when unset.
        pub metrics: &'static str,
    }

    const fn app(id: &'static str, listen: &'static str, metrics: &'static str) -> App {
        App {
            id,
            listen,
            metrics,
        }
    }

    pub const TASK_SERVICE: App = app(app_ids::TASK_SERVICE, "127.0.0.1:50051", "127.0.0.1:9464");
    pub const RECURRING_TASK_SERVICE: App = app(
        app_ids::RECURRING_TASK_SERVICE,
        "127.0.0.1:50052",
        "127.0.0.1:9465",
    );
    pub const NOTIFICATION_SERVICE: App = app(
        app_ids::NOTIFICATION_SERVICE,
        "127.0.0.1:50053",
        "127.0.0.1:9466",
    );
    pub const AUDIT_SERVICE: App = app(app_ids::AUDIT_SERVICE, "127.0.0.1:50054", "127.0.0.1:9467");
    pub const SYNC_SERVICE: App = app(app_ids::SYNC_SERVICE, "127.0.0.1:50055", "127.0.0.1:9468");
    pub const DEAD_LETTER_SERVICE: App = app(
        app_ids::DEAD_LETTER_SERVICE,
        "127.0.0.1:50056",
        "127.0.0.1:9469",
    );
}

/// Dapr component names (metadata.name in dapr-components/).
pub mod components {
    /// The Kafka pub/sub component.
    pub const PUBSUB: &str = "kafka-pubsub";
    /// The same Kafka, with one consumer group per sidecar (`{appID}-{uuid}`): every
    /// replica of a subscriber receives every event (sync-service's `task-updates`).
    pub const BROADCAST_PUBSUB: &str = "kafka-broadcast";
    /// The Resiliency resource.
    pub const RESILIENCY: &str = "todo-resiliency";
    /// The Configuration resource (tracing, metrics).
    pub const CONFIGURATION: &str = "todo-config";
    /// The notification-service state store (its delivery log).
    pub const NOTIFICATION_STATE: &str = "notification-state";
}

/// Kafka topics.
pub mod topics {
    pub const TASK_EVENTS: &str = "task-events";
    pub const TASK_UPDATES: &str = "task-updates";
    pub const REMINDERS: &str = "reminders";
    pub const TASK_OCCURRENCES: &str = "task-occurrences";

    /// All topics the system uses.
    pub const ALL: [&str; 4] = [TASK_EVENTS, TASK_UPDATES, REMINDERS, TASK_OCCURRENCES];

    /// The dead-letter topic of a topic: where Dapr puts what a subscriber DROPs.
    pub fn dead_letter(topic: &str) -> String {
        format!("{topic}-dlq")
    }

    /// The environment variable that prefixes every topic name (`TOPIC_PREFIX`), so that
    /// tests (and several deployments sharing one cluster) stay apart. Empty in production.
    pub const PREFIX_VAR: &str = "TOPIC_PREFIX";

    /// `topic` under `prefix` (`<prefix>.<topic>`), or `topic` itself when the prefix is empty.
    pub fn namespaced(prefix: &str, topic: &str) -> String {
        if prefix.is_empty() {
            topic.to_owned()
        } else {
            format!("{prefix}.{topic}")
        }
    }
}

/// The system's topics as one deployment names them: every topic under the deployment's
/// `TOPIC_PREFIX`, with its dead-letter topic. Every service reads its topics from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Every change of a task, full snapshot (`task-events`).
    pub task_events: String,
    /// Changes for live clients (`task-updates`).
    pub task_updates: String,
    /// Reminder schedule and due reminders (`reminders`).
    pub reminders: String,
    /// Requested next occurrences of recurring tasks (`task-occurrences`).
    pub task_occurrences: String,
    /// Where Dapr puts what the consumers of each topic DROP (`<topic>-dlq`).
    pub task_events_dead_letter: String,
    pub task_updates_dead_letter: String,
    pub reminders_dead_letter: String,
    pub task_occurrences_dead_letter: String,
}

impl Topics {
    /// The topics under `prefix` (see [`topics::namespaced`]).
    pub fn new(prefix: &str) -> Self {
        let name = |topic| topics::namespaced(prefix, topic);
        let dlq = |topic| topics::dead_letter(&name(topic));
        Self {
            task_events: name(topics::TASK_EVENTS),
            task_updates: name(topics::TASK_UPDATES),
            reminders: name(topics::REMINDERS),
            task_occurrences: name(topics::TASK_OCCURRENCES),
            task_events_dead_letter: dlq(topics::TASK_EVENTS),
            task_updates_dead_letter: dlq(topics::TASK_UPDATES),
            reminders_dead_letter: dlq(topics::REMINDERS),
            task_occurrences_dead_letter: dlq(topics::TASK_OCCURRENCES),
        }
    }

    /// Each topic with its dead-letter topic: (`task-events`, `task-events-dlq`), …
    pub fn with_dead_letters(&self) -> [(&str, &str); 4] {
        [
            (&self.task_events, &self.task_events_dead_letter),
            (&self.task_updates, &self.task_updates_dead_letter),
            (&self.reminders, &self.reminders_dead_letter),
            (&self.task_occurrences, &self.task_occurrences_dead_letter),
        ]
        .map(|(t, d)| (t.as_str(), d.as_str()))
    }

    /// Every topic, then every dead-letter topic (for checking names against Kafka's limits).
    pub fn all(&self) -> Vec<String> {
        [
            &self.task_events,
            &self.task_updates,
            &self.reminders,
            &self.task_occurrences,
            &self.task_events_dead_letter,
            &self.task_updates_dead_letter,
            &self.reminders_dead_letter,
            &self.task_occurrences_dead_letter,
        ]
        .into_iter()
        .cloned()
        .collect()
    }
}

/// CloudEvent types (set by the publisher through `cloudevent.type` metadata).
pub mod event_types {
    pub const TASK_CREATED: &str = "todo.task.created.v1";
    pub const TASK_UPDATED: &str = "todo.task.updated.v1";
    pub const TASK_COMPLETED: &str = "todo.task.completed.v1";
    pub const TASK_REOPENED: &str = "todo.task.reopened.v1";
    pub const TASK_DELETED: &str = "todo.task.deleted.v1";
    pub const TASK_CHANGED: &str = "todo.task.changed.v1";
    pub const REMINDER_SCHEDULED: &str = "todo.reminder.scheduled.v1";
    pub const REMINDER_DUE: &str = "todo.reminder.due.v1";
    pub const REMINDER_CANCELLED: &str = "todo.reminder.cancelled.v1";
    pub const OCCURRENCE_REQUESTED: &str = "todo.occurrence.requested.v1";

    /// The families of types: a consumer that takes one type of a family acknowledges the
    /// others (and those a producer adds later) instead of dead-lettering them.
    pub const TASK_FAMILY: &str = "todo.task.";
    pub const REMINDER_FAMILY: &str = "todo.reminder.";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn resources() -> Vec<serde_yaml::Value> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dapr-components");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    out.push(serde::Deserialize::deserialize(doc).unwrap());
                }
            }
        }
        out
    }

    fn named(kind: &str, name: &str) -> bool {
        resources().iter().any(|r| {
            r["kind"].as_str() == Some(kind) && r["metadata"]["name"].as_str() == Some(name)
        })
    }

    #[test]
    fn dapr_components_use_the_names_defined_here() {
        assert!(named("Component", components::PUBSUB), "pub/sub component");
        assert!(
            named("Component", components::BROADCAST_PUBSUB),
            "broadcast pub/sub component"
        );
        assert!(named("Resiliency", components::RESILIENCY), "resiliency");
        assert!(
            named("Configuration", components::CONFIGURATION),
            "configuration"
        );
    }

    #[test]
    fn the_kafka_component_speaks_a_kafka_4_protocol_version() {
        let all = resources();
        let pubsub = all
            .iter()
            .find(|r| r["metadata"]["name"].as_str() == Some(components::PUBSUB))
            .unwrap();
        assert_eq!(pubsub["spec"]["type"].as_str(), Some("pubsub.kafka"));
        let version = pubsub["spec"]["metadata"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some("version"))
            .and_then(|m| m["value"].as_str())
            .unwrap();
        assert!(
            !version.starts_with("2.") && !version.starts_with("3.1."),
            "version {version}"
        );
    }

    #[test]
    fn topics_live_under_the_prefix_with_their_dead_letters() {
        let t = Topics::new("t1");
        assert_eq!(t.task_events, "t1.task-events");
        assert_eq!(Topics::new("").reminders, "reminders");
        assert!(t.all().contains(&"t1.task-occurrences-dlq".to_owned()));
        assert_eq!(t.all().len(), 8);
    }

    #[test]
    fn dead_letter_topics_are_suffixed() {
        assert_eq!(topics::dead_letter(topics::REMINDERS), "reminders-dlq");
    }
}

/// Who made a change, as events name it in their `actor` field.
pub mod actors {
    /// A Task API caller.
    pub fn user(user_id: &str) -> String {
        format!("user:{user_id}")
    }

    /// A service acting on its own (e.g. `service:recurring-task-service`).
    pub fn service(app_id: &str) -> String {
        format!("service:{app_id}")
    }
}
