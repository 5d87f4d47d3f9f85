//! The delivery log: which reminders were delivered, kept in a Dapr state store so that
//! every replica and every restart agrees, and listed per user.
//!
//! # Keys
//!
//! * `delivered:<user>:<reminder>` — the claim: the [`Notification`] as delivered. Written
//!   with first-write concurrency and no ETag, which creates the key or fails if it exists:
//!   of two replicas handling the same reminder, exactly one commits. Its TTL is the
//!   retention (`ttlInSeconds`); a reminder redelivered after that would be delivered again,
//!   so the retention must exceed how long Kafka can redeliver (its topic retention).
//! * `inbox:<user>` — the user's list for `ListNotifications`: the latest notifications,
//!   newest first, pruned to the retention and capped. Written with first-write concurrency
//!   and the ETag it was read with (optimistic concurrency); a writer that lost the race
//!   reads again and retries.
//!
//! The claim and the list are written in **one state transaction**, so they never disagree:
//! a recorded delivery is always listed, a listed one is always recorded. The state query
//! API would avoid the list, but it is Alpha and state.sqlite does not implement it; one
//! key per user works on every transactional store (SQLite, PostgreSQL).
//!
//! # Record, then deliver: at most once
//!
//! The handler records first and delivers after the commit. If the process dies between the
//! two, the redelivered event finds the claim and is skipped: that notification is listed but
//! its log line was never written. The other order (deliver, then record) would instead write
//! the line twice after such a crash, and — worse — two replicas racing on a redelivered
//! event would both write it. The window is small: nothing is awaited between the commit and
//! the log write, and the handler runs in its own task so a cancelled request (timeout,
//! shutdown) does not cut it. A channel that fails returns an error; the claim is then
//! released (deleted with its ETag, with the list entry, in one transaction) and the event
//! retried, so a failed delivery is not remembered as done.
//!
//! Keys are escaped (`%`, `:` and `|` as `%25`, `%3A`, `%7C`) so any id is a valid key and
//! the parts cannot run into each other or into Dapr's `||` key prefix separator.

use std::{cmp::Ordering, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    notification::Notification,
    state::{StateError, StateStore, Versioned, Write},
};

/// How often a write that lost a race is tried again before the event is retried.
const MAX_ATTEMPTS: u32 = 10;

/// `s` made safe as one part of a key.
pub fn key_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
    out
}

/// The claim of one user's reminder.
pub fn delivered_key(user_id: &str, reminder_id: &str) -> String {
    format!("delivered:{}:{}", key_part(user_id), key_part(reminder_id))
}

/// A user's list.
pub fn inbox_key(user_id: &str) -> String {
    format!("inbox:{}", key_part(user_id))
}

/// The order of a list: most recently delivered first, then by reminder id (descending),
/// so that the order is total and a page token can name a position.
pub fn newest_first(a: &Notification, b: &Notification) -> Ordering {
    b.delivered_at
        .cmp(&a.delivered_at)
        .then_with(|| b.reminder_id.cmp(&a.reminder_id))
}

/// The stored value of `inbox:<user>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    /// The format's version, for whoever changes it later.
    #[serde(default)]
    pub v: u32,
    #[serde(default)]
    pub notifications: Vec<Notification>,
}

impl Inbox {
    const VERSION: u32 = 1;

    /// Adds `n` (replacing an entry of the same reminder), drops what is older than
    /// `cutoff`, and keeps the newest `max`.
    pub fn insert(&mut self, n: Notification, cutoff: DateTime<Utc>, max: usize) {
        self.v = Self::VERSION;
        self.notifications
            .retain(|e| e.reminder_id != n.reminder_id);
        self.notifications.push(n);
        self.notifications.retain(|e| e.delivered_at >= cutoff);
        self.notifications.sort_by(newest_first);
        self.notifications.truncate(max);
    }

    /// Removes the entry of `reminder_id`; whether there was one.
    pub fn remove(&mut self, reminder_id: &str) -> bool {
        let before = self.notifications.len();
        self.notifications.retain(|e| e.reminder_id != reminder_id);
        self.notifications.len() != before
    }

    /// The entries delivered at or after `cutoff`, newest first.
    pub fn current(mut self, cutoff: DateTime<Utc>) -> Vec<Notification> {
        self.notifications.retain(|e| e.delivered_at >= cutoff);
        self.notifications.sort_by(newest_first);
        self.notifications
    }
}

/// What recording a notification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// This call recorded it: deliver it now.
    New,
    /// It was recorded before (a redelivery, or another replica): do nothing. Carries the
    /// earlier record when it could be read.
    AlreadyDelivered(Option<Box<Notification>>),
}

/// Why the delivery log could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StateError),
    #[error(
        "{key}: gave up after {attempts} attempts while concurrent writers kept changing it (last error: {last})"
    )]
    Contended {
        key: String,
        attempts: u32,
        last: StateError,
    },
    #[error("{key} holds data that is not a notification list: {reason}")]
    Corrupt { key: String, reason: String },
}

/// The delivery log over one state store component.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    store: StateStore,
    retention: Duration,
    list_max: usize,
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings, numbers and instants: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

async fn backoff(attempt: u32) {
    let base = rand::random_range(5..=20_u64);
    tokio::time::sleep(Duration::from_millis(base << attempt.min(4))).await;
}

impl DeliveryLog {
    /// `retention`: how long a delivery is remembered (and listed); `list_max`: how many
    /// notifications a user's list keeps.
    pub fn new(store: StateStore, retention: Duration, list_max: usize) -> Self {
        Self {
            store,
            retention,
            list_max,
        }
    }

    /// The component name, for logs.
    pub fn store_name(&self) -> &str {
        self.store.name()
    }

    fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::TimeDelta::from_std(self.retention)
            .ok()
            .and_then(|r| now.checked_sub_signed(r))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn read_inbox(key: &str, stored: Option<&Versioned>) -> Result<Inbox, LogError> {
        match stored {
            None => Ok(Inbox::default()),
            Some(v) => serde_json::from_slice(&v.data).map_err(|e| LogError::Corrupt {
                key: key.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Records `n` as delivered, with its user's list, unless it already is.
    pub async fn record(&self, n: &Notification) -> Result<Recorded, LogError> {
        let claim_key = delivered_key(&n.user_id, &n.reminder_id);
        let list_key = inbox_key(&n.user_id);
        let claim = to_json(n);
        let mut attempt = 0;
        loop {
            let stored = self.store.get(&list_key).await?;
            let mut inbox = match Self::read_inbox(&list_key, stored.as_ref()) {
                Ok(inbox) => inbox,
                // The claims are what keep deliveries single; the list is for reading. A list
                // that cannot be read must not stop deliveries: start it again, loudly.
                Err(e) => {
                    tracing::error!(error = %e, "replacing an unreadable notification list");
                    Inbox::default()
                }
            };
            inbox.insert(n.clone(), self.cutoff(n.delivered_at), self.list_max);
            let list = to_json(&inbox);
            let list_write = match stored {
                Some(v) => Write::Replace {
                    key: list_key.clone(),
                    value: list,
                    etag: v.etag,
                    ttl: self.retention,
                },
                None => Write::Create {
                    key: list_key.clone(),
                    value: list,
                    ttl: self.retention,
                },
            };
            let writes = vec![
                Write::Create {
                    key: claim_key.clone(),
                    value: claim.clone(),
                    ttl: self.retention,
                },
                list_write,
            ];
            let Err(failed) = self.store.transact(writes).await else {
                return Ok(Recorded::New);
            };
            // Which precondition failed? The claim existing means delivered before; if the
            // store is away this read fails too and the event is retried.
            if let Some(earlier) = self.store.get(&claim_key).await? {
                let earlier = serde_json::from_slice::<Notification>(&earlier.data)
                    .ok()
                    .map(Box::new);
                return Ok(Recorded::AlreadyDelivered(earlier));
            }
            // Otherwise the list changed under us (another delivery to the same user).
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(LogError::Contended {
                    key: list_key,
                    attempts: attempt,
                    last: failed,
                });
            }
            tracing::debug!(attempt, error = %failed, key = %list_key, "state transaction lost a race: reading again");
            backoff(attempt).await;
        }
    }

    /// Undoes [`Self::record`] for a notification whose delivery failed, so the retried
    /// event delivers it. Only the claim `n` itself made is removed (not a later one).
    pub async fn release(&self, n: &Notification) -> Result<(), LogError> {
        let claim_key = delivered_key(&n.user_id, &n.reminder_id);
        let list_key = inbox_key(&n.user_id);
        let mut attempt = 0;
        loop {
            let Some(claim) = self.store.get(&claim_key).await? else {
                return Ok(());
            };
            let ours = serde_json::from_slice::<Notification>(&claim.data)
                .is_ok_and(|c| c.event_id == n.event_id && c.delivered_at == n.delivered_at);
            if !ours {
                return Ok(());
            }
            let mut writes = vec![Write::Delete {
                key: claim_key.clone(),
                etag: claim.etag,
            }];
            if let Some(stored) = self.store.get(&list_key).await? {
                let mut inbox = Self::read_inbox(&list_key, Some(&stored))?;
                if inbox.remove(&n.reminder_id) {
                    writes.push(Write::Replace {
                        key: list_key.clone(),
                        value: to_json(&inbox),
                        etag: stored.etag,
                        ttl: self.retention,
                    });
                }
            }
            let Err(failed) = self.store.transact(writes).await else {
                return Ok(());
            };
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(LogError::Contended {
                    key: list_key,
                    attempts: attempt,
                    last: failed,
                });
            }
            backoff(attempt).await;
        }
    }

    /// `user_id`'s notifications still within the retention at `now`, newest first.
    pub async fn list(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Notification>, LogError> {
        let key = inbox_key(user_id);
        let stored = self.store.get(&key).await?;
        Ok(Self::read_inbox(&key, stored.as_ref())?.current(self.cutoff(now)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn n(reminder_id: &str, delivered_at: &str) -> Notification {
        Notification {
            reminder_id: reminder_id.into(),
            task_id: "t".into(),
            user_id: "alice".into(),
            task_title: String::new(),
            due_time: None,
            remind_at: at("2030-01-01T00:00:00Z"),
            delivered_at: at(delivered_at),
            lateness_ms: 0,
            fire_lateness_ms: None,
            channel: "log".into(),
            event_id: String::new(),
        }
    }

    fn ids(list: &[Notification]) -> Vec<&str> {
        list.iter().map(|n| n.reminder_id.as_str()).collect()
    }

    #[test]
    fn keys_escape_their_parts() {
        assert_eq!(delivered_key("alice", "r-1"), "delivered:alice:r-1");
        assert_eq!(inbox_key("alice"), "inbox:alice");
        // Without escaping these two would share a key.
        assert_ne!(delivered_key("a:b", "c"), delivered_key("a", "b:c"));
        assert_eq!(delivered_key("a||b", "%"), "delivered:a%7C%7Cb:%25");
        assert!(!inbox_key("x||y").contains("||"));
        for (a, b) in [("%3A", ":"), ("%25", "%"), ("%7C", "|")] {
            assert_ne!(key_part(a), key_part(b), "{a} vs {b}");
        }
    }

    #[test]
    fn the_list_keeps_the_newest_within_retention_and_cap() {
        let cutoff = at("2030-01-01T00:00:00Z");
        let mut inbox = Inbox::default();
        inbox.insert(n("b", "2030-01-02T00:00:00Z"), cutoff, 3);
        inbox.insert(n("a", "2030-01-03T00:00:00Z"), cutoff, 3);
        inbox.insert(n("c", "2030-01-03T00:00:00Z"), cutoff, 3);
        assert_eq!(inbox.v, Inbox::VERSION);
        assert_eq!(ids(&inbox.notifications), ["c", "a", "b"], "ties by id");

        // Same reminder again: replaced, not doubled.
        inbox.insert(n("b", "2030-01-04T00:00:00Z"), cutoff, 3);
        assert_eq!(ids(&inbox.notifications), ["b", "c", "a"]);

        // Over the cap: the oldest goes.
        inbox.insert(n("d", "2030-01-05T00:00:00Z"), cutoff, 3);
        assert_eq!(ids(&inbox.notifications), ["d", "b", "c"]);

        // Past the retention: pruned on write and hidden on read.
        inbox.insert(
            n("e", "2030-01-06T00:00:00Z"),
            at("2030-01-03T12:00:00Z"),
            3,
        );
        assert_eq!(ids(&inbox.notifications), ["e", "d", "b"]);
        let current = inbox.clone().current(at("2030-01-04T12:00:00Z"));
        assert_eq!(ids(&current), ["e", "d"]);

        assert!(inbox.remove("d"));
        assert!(!inbox.remove("d"));
        assert_eq!(ids(&inbox.notifications), ["e", "b"]);
    }

    #[test]
    fn the_stored_list_is_versioned_json() {
        let mut inbox = Inbox::default();
        inbox.insert(
            n("a", "2030-01-02T00:00:00Z"),
            at("2030-01-01T00:00:00Z"),
            10,
        );
        let json: serde_json::Value = serde_json::from_slice(&to_json(&inbox)).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["notifications"][0]["reminder_id"], "a");
        assert_eq!(
            serde_json::from_value::<Inbox>(json).unwrap(),
            inbox,
            "round trip"
        );
        assert!(
            DeliveryLog::read_inbox("k", None)
                .unwrap()
                .notifications
                .is_empty()
        );
        let garbage = Versioned {
            data: b"nope".to_vec(),
            etag: "1".into(),
        };
        assert!(matches!(
            DeliveryLog::read_inbox("k", Some(&garbage)),
            Err(LogError::Corrupt { .. })
        ));
    }
}
