//! The delivery log: which reminders were delivered, kept in a Dapr state store so that
//! every replica and every restart agrees, and listed per user.
//!
//! # Keys
//!
//! * `delivered:<user>:<reminder>` — the claim: a [`ClaimRecord`], `claimed` (someone is
//!   delivering it, under a lease) or `delivered`. Created with first-write concurrency and no
//!   ETag, which creates the key or fails if it exists: of two replicas handling the same
//!   reminder, exactly one claims it. Its TTL is the retention (`ttlInSeconds`); a reminder
//!   redelivered after that would be delivered again, so the retention must exceed how long
//!   Kafka can redeliver (its topic retention).
//! * `inbox:<user>` — the user's list for `ListNotifications`: the latest notifications,
//!   newest first, pruned to the retention and capped. Written with first-write concurrency
//!   and the ETag it was read with (optimistic concurrency); a writer that lost the race
//!   reads again and retries.
//!
//! # Claim, deliver, record
//!
//! [`DeliveryLog::deliver_once`] runs one delivery in three steps:
//!
//! 1. **Claim**: write `claimed` with a token of this handling and a lease (`lease_until`).
//!    Finding `delivered`: a duplicate, acknowledged without delivering. Finding our own
//!    token: our earlier write committed though its answer was lost (the sidecar died): we
//!    own it. Finding another token under a live lease: someone is delivering it right now,
//!    so wait until it is `delivered` (then skip) or its lease runs out (then take it over,
//!    replacing it with its ETag, so only one taker wins).
//! 2. **Deliver** through the channel. A channel that fails releases the claim (deleted with
//!    its ETag) and the event is retried, so a failed delivery is not remembered as done.
//! 3. **Record**: mark the claim `delivered` and add the notification to the user's list, in
//!    **one state transaction**, so that a listed notification is always recorded and a
//!    recorded one always listed.
//!
//! A delivery nobody else had costs three state calls: the create-only claim (read only
//! when it fails), one bulk read of the claim (for its ETag) and the list, and the
//! transaction. Dapr hands a partition's events over in bulk deliveries, and
//! crate::delivery_batch makes those same three calls once for a whole delivery (one
//! transaction of claims, one bulk read, one transaction of records), falling back to
//! [`DeliveryLog::deliver_once`] for a reminder whenever something is unusual; what that
//! changes in the windows below is said there.
//!
//! State calls that fail (the sidecar restarting, the store away) are retried inside the
//! handling, within the lease, before the event is given back to Dapr for a retry: the
//! handler runs in its own task, so it finishes even when the request that started it is
//! gone. Hence what each fault costs:
//!
//! * The **sidecar** dies (or its answers are lost) at any step: the handling goes on once
//!   it is back and completes; the redelivered event finds `claimed` (it waits) or
//!   `delivered` (it skips). Exactly once — as long as the sidecar is back within the lease:
//!   after a longer outage another replica may take the claim over and deliver again.
//! * **Two replicas** race on one reminder: one claims, the other waits and skips. Once.
//! * The **process** dies between claim and record: the claim's lease runs out and the
//!   redelivered event takes it over and delivers. If the line had already been written,
//!   the user gets it twice: the one window left, as short as one channel call, and chosen
//!   over the alternative (record before delivering), which would lose the reminder
//!   instead. Channels to outside providers should pass `reminder_id` as the provider's
//!   idempotency key to close it.
//! * A handling that outlives its lease (a channel slower than the lease) can be taken over
//!   and delivered twice; the lease (`NOTIFICATION_CLAIM_LEASE_MS`) must exceed the slowest
//!   channel call (in a batch, a channel call plus the record must stay under half the
//!   lease: see crate::delivery_batch).
//!
//! Leases compare wall clocks of the replicas; they are expected to agree to well within a
//! lease.
//!
//! Keys are escaped (`%`, `:` and `|` as `%25`, `%3A`, `%7C`) so any id is a valid key and
//! the parts cannot run into each other or into Dapr's `||` key prefix separator.

use std::{cmp::Ordering, future::Future, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{
    channel::{Channel, ChannelError},
    notification::Notification,
    state::{StateError, StateStore, Versioned, Write},
};

/// How often a write that lost a race is tried again before the event is retried.
pub(crate) const MAX_ATTEMPTS: u32 = 10;

/// The longest pause between two looks at a claim held by someone else.
const MAX_POLL: Duration = Duration::from_millis(500);

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

/// The key of the claim of one user's reminder.
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

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimStatus {
    /// Someone is delivering it (until `lease_until`, unless it records it first).
    Claimed,
    /// Delivered and listed.
    Delivered,
}

/// The stored value of `delivered:<user>:<reminder>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The format's version, for whoever changes it later.
    #[serde(default)]
    pub v: u32,
    pub status: ClaimStatus,
    /// Whose claim: a random token of one handling of one event.
    pub token: String,
    /// Until when a `claimed` record keeps other handlings out.
    pub lease_until: DateTime<Utc>,
    /// What is (being) delivered.
    pub notification: Notification,
}

impl ClaimRecord {
    pub(crate) const VERSION: u32 = 1;

    pub(crate) fn parse(key: &str, data: &[u8]) -> Result<Self, LogError> {
        serde_json::from_slice(data).map_err(|e| LogError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// What looking at (and maybe writing) a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This handling holds it: deliver.
    Ours,
    /// Delivered before (a redelivery, another replica): do nothing.
    Delivered(Box<Notification>),
    /// Another handling holds it until then.
    Held { until: DateTime<Utc> },
}

/// What recording a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Marked delivered and listed.
    Recorded,
    /// Our lease ran out and another handling took the claim over: it records (and delivers
    /// again).
    TakenOver,
    /// The claim is gone (released, or expired): nothing to record against.
    Gone,
}

/// How [`DeliveryLog::deliver_once`] ended.
#[derive(Debug)]
pub enum Once {
    /// This handling delivered and recorded it.
    Delivered,
    /// This handling delivered it, but another took the claim over after our lease ran out.
    DeliveredTakenOver,
    /// This handling delivered it, but could not record it: the claim stays `claimed` (a
    /// later redelivery would deliver it again) and it is not listed.
    DeliveredUnrecorded(LogError),
    /// Delivered before, or by another handling while this one waited: nothing done.
    Duplicate(Box<Notification>),
}

/// Why [`DeliveryLog::deliver_once`] delivered nothing; the event should be retried.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    #[error("claiming the delivery: {0}")]
    Claim(#[source] LogError),
    #[error("another handling still holds the claim (lease until {until})")]
    Held { until: DateTime<Utc> },
    #[error("delivering: {source}")]
    Delivery {
        #[source]
        source: ChannelError,
        /// Why the claim could not be released (the retried event then waits out its lease).
        release: Option<LogError>,
    },
    /// In a batch: an earlier reminder of the same user is retried, so this one is not
    /// handled (it would overtake it).
    #[error("held back behind an earlier reminder of the same user that is retried")]
    HeldBack,
    /// The channel panicked: it would again on every redelivery.
    #[error("the channel panicked: {0}")]
    Panicked(String),
    /// Its handling was cut short (the runtime shutting down).
    #[error("not finished: {0}")]
    Unfinished(String),
}

impl OnceError {
    /// Whether the event can never succeed (DROP, to the dead-letter topic) rather than
    /// being worth a retry: a claim that cannot be read, a channel that panics.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Claim(LogError::Corrupt { .. }) | Self::Panicked(_)
        )
    }
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
    #[error("{key} holds data that is not what the delivery log writes: {reason}")]
    Corrupt { key: String, reason: String },
    /// One failure of a call made for a whole batch, answered for each of its reminders.
    #[error(transparent)]
    Batch(std::sync::Arc<LogError>),
}

impl LogError {
    /// Whether trying again may help (a store away, a race); data that cannot be read will
    /// not read better later.
    pub(crate) fn transient(&self) -> bool {
        match self {
            Self::Corrupt { .. } => false,
            Self::Batch(e) => e.transient(),
            _ => true,
        }
    }
}

/// The delivery log over one state store component.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    pub(crate) store: StateStore,
    pub(crate) retention: Duration,
    list_max: usize,
    pub(crate) lease: Duration,
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings, numbers and instants: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The pauses between attempts at a state call: 20 ms doubling to 160 ms, each plus a
/// random jitter of up to itself (so at most 320 ms).
fn state_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(160))
        .with_jitter()
        .without_max_times()
}

/// The pause before the `attempt`th retry of a lost read-modify-write race.
fn backoff_delay(attempt: u32) -> Duration {
    use backon::BackoffBuilder;
    state_backoff()
        .with_min_delay(Duration::from_millis(5))
        .build()
        .nth(attempt as usize)
        .unwrap_or(Duration::from_millis(320))
}

pub(crate) async fn backoff(attempt: u32) {
    tokio::time::sleep(backoff_delay(attempt)).await;
}

/// Retries `call` while it fails with a transient error and `deadline` is not reached.
pub(crate) async fn retrying<T, F, Fut>(
    deadline: Instant,
    what: &str,
    call: F,
) -> Result<T, LogError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LogError>>,
{
    let left = deadline.saturating_duration_since(Instant::now());
    call.retry(state_backoff().with_total_delay(Some(left)))
        .sleep(tokio::time::sleep)
        .when(LogError::transient)
        .notify(|e, pause| tracing::debug!(error = %e, ?pause, "{what} failed: trying again"))
        .await
}

/// Counts a write that lost a race on `key`; past [`MAX_ATTEMPTS`] the handling gives up
/// (and the event is retried). Hands the error back for the caller's log.
pub(crate) fn lost_race(
    attempt: &mut u32,
    key: &str,
    failed: StateError,
) -> Result<StateError, LogError> {
    *attempt += 1;
    if *attempt >= MAX_ATTEMPTS {
        return Err(LogError::Contended {
            key: key.to_owned(),
            attempts: *attempt,
            last: failed,
        });
    }
    Ok(failed)
}

impl DeliveryLog {
    /// `retention`: how long a delivery is remembered (and listed); `list_max`: how many
    /// notifications a user's list keeps; `lease`: how long a claim keeps other handlings out.
    pub fn new(store: StateStore, retention: Duration, list_max: usize, lease: Duration) -> Self {
        Self {
            store,
            retention,
            list_max,
            lease,
        }
    }

    /// The component name, for logs.
    pub fn store_name(&self) -> &str {
        self.store.name()
    }

    pub(crate) fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::TimeDelta::from_std(self.retention)
            .ok()
            .and_then(|r| now.checked_sub_signed(r))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub(crate) fn lease_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::TimeDelta::from_std(self.lease)
            .ok()
            .and_then(|l| now.checked_add_signed(l))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub(crate) fn read_inbox(key: &str, stored: Option<&Versioned>) -> Result<Inbox, LogError> {
        match stored {
            None => Ok(Inbox::default()),
            Some(v) => serde_json::from_slice(&v.data).map_err(|e| LogError::Corrupt {
                key: key.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Delivers `n` through `channel` unless it was delivered before; see the module docs.
    /// Returns only when the outcome is settled: an `Err` delivered nothing.
    pub async fn deliver_once(
        &self,
        n: &Notification,
        channel: &dyn Channel,
    ) -> Result<Once, OnceError> {
        let token = uuid::Uuid::new_v4().to_string();
        self.deliver_once_as(n, channel, &token).await
    }

    /// [`Self::deliver_once`] as the handling `token`: a claim of `token` found in the store
    /// (written by an earlier call whose answer was lost, or by a batch of this handling,
    /// see crate::delivery_batch) is ours, and its lease is renewed before delivering.
    pub async fn deliver_once_as(
        &self,
        n: &Notification,
        channel: &dyn Channel,
        token: &str,
    ) -> Result<Once, OnceError> {
        self.deliver_once_gated(n, channel, token, None).await
    }

    /// [`Self::deliver_once_as`] holding a permit of `gate` (when given) while it claims,
    /// delivers and records, but not while it waits on another handling's claim (up to two
    /// leases): the permits are a batch's users at once, see crate::delivery_batch.
    pub(crate) async fn deliver_once_gated(
        &self,
        n: &Notification,
        channel: &dyn Channel,
        token: &str,
        gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    ) -> Result<Once, OnceError> {
        let started = Instant::now();
        // Store calls may be retried for a lease: past it, an unseen claim of ours may be
        // taken over anyway. Waiting on someone else's claim may take a lease more.
        let claim_deadline = started + self.lease;
        let wait_deadline = claim_deadline + self.lease;
        let mut polls = 0;
        // Taken before each look at the claim (so the lease of a claim won starts with the
        // permit in hand), dropped while waiting on another handling's claim; the gate is
        // never closed, so acquiring cannot fail.
        let _permit = loop {
            let permit = match &gate {
                Some(gate) => gate.clone().acquire_owned().await.ok(),
                None => None,
            };
            let claim = retrying(claim_deadline, "claiming", || self.claim(n, token))
                .await
                .map_err(OnceError::Claim)?;
            match claim {
                Claim::Ours => break permit,
                Claim::Delivered(earlier) => return Ok(Once::Duplicate(earlier)),
                Claim::Held { until } => {
                    let left = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    let pause = left.min(backoff_delay(polls + 3)).min(MAX_POLL);
                    if Instant::now() + pause >= wait_deadline {
                        return Err(OnceError::Held { until });
                    }
                    if polls == 0 {
                        tracing::info!(%until, "another handling holds this reminder: waiting");
                    }
                    polls += 1;
                    drop(permit);
                    tokio::time::sleep(pause).await;
                }
            }
        };
        if let Err(source) = channel.deliver(n).await {
            let release = retrying(started + self.lease, "releasing the claim", || {
                self.release(n, token)
            })
            .await
            .err();
            return Err(OnceError::Delivery { source, release });
        }
        // Delivered: from here on, recording is worth more patience than claiming was.
        let record_deadline = Instant::now() + self.lease;
        match retrying(record_deadline, "recording the delivery", || {
            self.record(n, token)
        })
        .await
        {
            Ok(Record::Recorded) => Ok(Once::Delivered),
            Ok(Record::TakenOver) => Ok(Once::DeliveredTakenOver),
            Ok(Record::Gone) => Ok(Once::DeliveredUnrecorded(LogError::Corrupt {
                key: delivered_key(&n.user_id, &n.reminder_id),
                reason: "the claim vanished while delivering".to_owned(),
            })),
            Err(e) => Ok(Once::DeliveredUnrecorded(e)),
        }
    }

    /// Claims `n` for the handling `token`, or says who has it. The create-only write comes
    /// first (one call when nobody had it); the claim is read only when that write fails.
    pub async fn claim(&self, n: &Notification, token: &str) -> Result<Claim, LogError> {
        let key = delivered_key(&n.user_id, &n.reminder_id);
        let ours = |now: DateTime<Utc>| ClaimRecord {
            v: ClaimRecord::VERSION,
            status: ClaimStatus::Claimed,
            token: token.to_owned(),
            lease_until: self.lease_from(now),
            notification: n.clone(),
        };
        let mut write = Write::Create {
            key: key.clone(),
            value: to_json(&ours(Utc::now())),
            ttl: self.retention,
        };
        let mut attempt = 0;
        loop {
            // A failed write lost a race (or the store is away): reading tells which.
            let Err(failed) = self.store.transact(vec![write]).await else {
                return Ok(Claim::Ours);
            };
            let failed = lost_race(&mut attempt, &key, failed)?;
            let now = Utc::now();
            write = match self.store.get(&key).await? {
                // Gone again (released, or expired) since the write failed: try again.
                None => Write::Create {
                    key: key.clone(),
                    value: to_json(&ours(now)),
                    ttl: self.retention,
                },
                Some(stored) => {
                    let found = ClaimRecord::parse(&key, &stored.data)?;
                    match found.status {
                        ClaimStatus::Delivered => {
                            return Ok(Claim::Delivered(Box::new(found.notification)));
                        }
                        // Ours: the write committed though its answer was lost. Renew the
                        // lease (with the ETag) before delivering under it: the retries may
                        // have used most of it up.
                        ClaimStatus::Claimed if found.token == token => Write::Replace {
                            key: key.clone(),
                            value: to_json(&ours(now)),
                            etag: stored.etag,
                            ttl: self.retention,
                        },
                        ClaimStatus::Claimed if found.lease_until > now => {
                            return Ok(Claim::Held {
                                until: found.lease_until,
                            });
                        }
                        ClaimStatus::Claimed => {
                            tracing::warn!(
                                lease_until = %found.lease_until,
                                earlier_event_id = %found.notification.event_id,
                                "taking over a claim whose lease ran out (its handling died?)"
                            );
                            Write::Replace {
                                key: key.clone(),
                                value: to_json(&ours(now)),
                                etag: stored.etag,
                                ttl: self.retention,
                            }
                        }
                    }
                }
            };
            tracing::debug!(attempt, error = %failed, %key, "claim write failed: read it, trying again");
        }
    }

    /// The write that adds `new` to the list `key`, read as `stored` (replaced with its
    /// ETag, or created when there was none).
    pub(crate) fn list_write<'a>(
        &self,
        key: &str,
        stored: Option<Versioned>,
        new: impl IntoIterator<Item = &'a Notification>,
    ) -> Write {
        let mut inbox = match Self::read_inbox(key, stored.as_ref()) {
            Ok(inbox) => inbox,
            // The claims are what keep deliveries single; the list is for reading. A list
            // that cannot be read must not stop deliveries: start it again, loudly.
            Err(e) => {
                tracing::error!(error = %e, "replacing an unreadable notification list");
                Inbox::default()
            }
        };
        for n in new {
            inbox.insert(n.clone(), self.cutoff(n.delivered_at), self.list_max);
        }
        let value = to_json(&inbox);
        match stored {
            Some(v) => Write::Replace {
                key: key.to_owned(),
                value,
                etag: v.etag,
                ttl: self.retention,
            },
            None => Write::Create {
                key: key.to_owned(),
                value,
                ttl: self.retention,
            },
        }
    }

    /// Marks the claim of `token` delivered and lists `n`, in one transaction.
    pub async fn record(&self, n: &Notification, token: &str) -> Result<Record, LogError> {
        let claim_key = delivered_key(&n.user_id, &n.reminder_id);
        let list_key = inbox_key(&n.user_id);
        let mut attempt = 0;
        loop {
            // The claim (for its ETag) and the list, in one call.
            let mut both = self
                .store
                .get_many(&[claim_key.as_str(), list_key.as_str()])
                .await?
                .into_iter();
            let (stored_claim, stored_list) = (both.next().flatten(), both.next().flatten());
            let Some(stored_claim) = stored_claim else {
                return Ok(Record::Gone);
            };
            let mut claim = ClaimRecord::parse(&claim_key, &stored_claim.data)?;
            if claim.token != token {
                return Ok(Record::TakenOver);
            }
            if claim.status == ClaimStatus::Delivered {
                // Our earlier attempt committed; its answer was lost.
                return Ok(Record::Recorded);
            }
            let list_write = self.list_write(&list_key, stored_list, [n]);
            claim.status = ClaimStatus::Delivered;
            let writes = vec![
                Write::Replace {
                    key: claim_key.clone(),
                    value: to_json(&claim),
                    etag: stored_claim.etag,
                    ttl: self.retention,
                },
                list_write,
            ];
            let Err(failed) = self.store.transact(writes).await else {
                return Ok(Record::Recorded);
            };
            // The list changed under us (another delivery to the same user), or the claim
            // did, or the store is away: reading again tells which.
            let failed = lost_race(&mut attempt, &list_key, failed)?;
            tracing::debug!(attempt, error = %failed, key = %list_key, "state transaction lost a race: reading again");
            backoff(attempt).await;
        }
    }

    /// Gives up the claim of `token` on a delivery that failed, so the retried event
    /// delivers it without waiting for the lease. Another handling's claim is left alone.
    pub async fn release(&self, n: &Notification, token: &str) -> Result<(), LogError> {
        let key = delivered_key(&n.user_id, &n.reminder_id);
        let mut attempt = 0;
        loop {
            let Some(stored) = self.store.get(&key).await? else {
                return Ok(());
            };
            let claim = ClaimRecord::parse(&key, &stored.data)?;
            if claim.token != token || claim.status != ClaimStatus::Claimed {
                return Ok(());
            }
            let delete = Write::Delete {
                key: key.clone(),
                etag: stored.etag,
            };
            let Err(failed) = self.store.transact(vec![delete]).await else {
                return Ok(());
            };
            lost_race(&mut attempt, &key, failed)?;
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
        Notification::delivered_at(reminder_id, at(delivered_at))
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
    fn the_stored_claim_is_versioned_json() {
        let claim = ClaimRecord {
            v: ClaimRecord::VERSION,
            status: ClaimStatus::Claimed,
            token: "t-1".into(),
            lease_until: at("2030-01-02T00:00:15Z"),
            notification: n("a", "2030-01-02T00:00:00Z"),
        };
        let json: serde_json::Value = serde_json::from_slice(&to_json(&claim)).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["status"], "claimed");
        assert_eq!(json["token"], "t-1");
        assert_eq!(json["lease_until"], "2030-01-02T00:00:15Z");
        assert_eq!(json["notification"]["reminder_id"], "a");
        let back = ClaimRecord::parse("k", json.to_string().as_bytes()).unwrap();
        assert_eq!(back, claim, "round trip");
        let delivered = br#"{"v":1,"status":"delivered","token":"t","lease_until":"2030-01-01T00:00:00Z","notification":{"reminder_id":"r","task_id":"t","user_id":"u","remind_at":"2030-01-01T00:00:00Z","delivered_at":"2030-01-01T00:00:00Z","lateness_ms":0,"channel":"log"}}"#;
        assert_eq!(
            ClaimRecord::parse("k", delivered).unwrap().status,
            ClaimStatus::Delivered
        );
        assert!(matches!(
            ClaimRecord::parse("k", b"{\"status\":\"maybe\"}"),
            Err(LogError::Corrupt { .. })
        ));
    }

    #[test]
    fn only_unreadable_data_is_not_worth_retrying() {
        let corrupt = LogError::Corrupt {
            key: "k".into(),
            reason: "x".into(),
        };
        assert!(!corrupt.transient());
        let away = LogError::Store(StateError::Call(tonic::Status::unavailable("gone")));
        assert!(away.transient());
        for attempt in 0..10 {
            let d = backoff_delay(attempt);
            assert!(
                d >= Duration::from_millis(5) && d <= Duration::from_millis(320),
                "{d:?}"
            );
        }
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
