//! The delivery log a bulk delivery at a time: the due reminders daprd hands over together
//! are claimed in one state transaction, delivered one by one (each user's in order), then
//! recorded in one read and one transaction: three state calls per batch instead of three per
//! reminder. The guarantees are those of crate::delivery_log, reminder by reminder; anything
//! unusual sends a reminder down the single path ([`DeliveryLog::deliver_once`]).
//!
//! # Claim
//!
//! One transaction of create-only writes (first-write concurrency, no ETag), one per
//! reminder, all under one token of the batch. It commits whole or not at all: Dapr's SQL
//! state stores (state.sqlite, state.postgresql) run a transaction's writes in one SQL
//! transaction, and a create on a key that exists fails it. When it fails, one bulk read of
//! the claims tells, reminder by reminder: no claim (claimed again), `delivered` (a duplicate,
//! skipped), ours (an earlier attempt committed, its answer lost: its lease is renewed with
//! its ETag), anyone else's, or unreadable: left to the single path, which waits, takes over
//! or dead-letters it as it does for a lone event. The transaction is then tried again with
//! what is left. A batch holding one reminder twice takes the single path throughout.
//!
//! # Deliver and record, in rounds
//!
//! Each user's reminders go through the channel in their order, several users at once, until
//! a user reaches one left to the single path. Those delivered are then recorded together:
//! one bulk read of their claims (for the ETags) and of the touched users' lists, and one
//! transaction that marks every claim `delivered` and writes each of those lists once, with
//! all of its user's new notifications; a lost race (an ETag changed) reads again, and a race
//! lost too often records them one by one. Only then are the reminders left to the single
//! path handled (they may wait for another handling's claim: nothing delivered waits
//! unrecorded meanwhile), and the next round goes on after them. One round is the common case.
//!
//! As with single events, a channel that fails releases its reminder's claim and answers
//! RETRY, and the user's later reminders in the batch are held back (RETRY, their claims
//! released): Kafka redelivers them after it.
//!
//! # What batching changes
//!
//! * The claims of a batch share one lease, taken before its first delivery. A reminder is
//!   delivered under it only while half of it is left; later, its claim is renewed first
//!   (the single path, under the batch's token). So in a batch a channel call must stay under
//!   half the lease (`NOTIFICATION_CLAIM_LEASE_MS`), not under the whole of it, or a reminder
//!   may be taken over and delivered twice.
//! * The process dying between a batch's claim and its record leaves reminders delivered and
//!   not recorded: after their lease they are taken over and delivered again. The window is a
//!   round's channel calls and one transaction, instead of one channel call.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use chrono::Utc;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tracing::Instrument;

use crate::{
    channel::Channel,
    delivery_log::{
        ClaimRecord, ClaimStatus, DeliveryLog, LogError, MAX_ATTEMPTS, Once, OnceError, Record,
        backoff, delivered_key, inbox_key, lost_race, retrying, to_json,
    },
    notification::Notification,
    state::{Versioned, Write},
};

/// What a batch does with one of its reminders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Claimed by the batch: deliver, then record with the batch.
    Deliver,
    /// Delivered before: skip.
    Duplicate(Box<Notification>),
    /// The single path, as a handling of its own: someone else's claim, one that cannot be
    /// read, a reminder twice in the batch, a claim transaction that kept failing.
    Alone,
    /// Claimed by the batch too long ago: the single path under the batch's token, which
    /// renews the claim before delivering.
    Renew,
}

/// What the read after a failed claim transaction found for one reminder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// No claim (or an expired one): claim it again.
    Missing,
    /// Delivered before.
    Delivered(Box<Notification>),
    /// Claimed under our token (an earlier attempt committed): renew it with this ETag.
    Ours { etag: String },
    /// Anyone else's claim, or one that cannot be read: for the single path.
    Other,
}

/// What the claim `key`, read as `stored`, means to the batch `token`.
pub(crate) fn judge(key: &str, stored: Option<&Versioned>, token: &str) -> Found {
    let Some(stored) = stored else {
        return Found::Missing;
    };
    match ClaimRecord::parse(key, &stored.data) {
        Ok(c) if c.status == ClaimStatus::Delivered => Found::Delivered(Box::new(c.notification)),
        Ok(c) if c.token == token => Found::Ours {
            etag: stored.etag.clone(),
        },
        Ok(_) | Err(_) => Found::Other,
    }
}

/// The indexes of `ns` grouped by user, each user's in their order, the users in the order
/// of their first reminder.
pub(crate) fn by_user(ns: &[Notification]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for (i, n) in ns.iter().enumerate() {
        let at = *group_of.entry(n.user_id.as_str()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(at) {
            group.push(i);
        }
    }
    groups
}

/// Whether a reminder of a user comes twice in `ns`.
pub(crate) fn repeats(ns: &[Notification]) -> bool {
    let mut seen = HashSet::with_capacity(ns.len());
    !ns.iter()
        .all(|n| seen.insert((n.user_id.as_str(), n.reminder_id.as_str())))
}

/// How recording a delivery ended, as [`DeliveryLog::deliver_once`] says it.
fn once_of(key: &str, recorded: Result<Record, LogError>) -> Once {
    match recorded {
        Ok(Record::Recorded) => Once::Delivered,
        Ok(Record::TakenOver) => Once::DeliveredTakenOver,
        Ok(Record::Gone) => Once::DeliveredUnrecorded(LogError::Corrupt {
            key: key.to_owned(),
            reason: "the claim vanished while delivering".to_owned(),
        }),
        Err(e) => Once::DeliveredUnrecorded(e),
    }
}

/// The span a reminder of a batch is handled in.
fn span_of(n: &Notification) -> tracing::Span {
    tracing::info_span!(
        "reminder_due",
        reminder_id = %n.reminder_id,
        task_id = %n.task_id,
        user_id = %n.user_id,
        event_id = %n.event_id,
    )
}

/// One reminder of a batch, and what is left to do with it.
#[derive(Debug)]
struct Entry {
    /// Its place in the batch.
    i: usize,
    n: Notification,
    step: Step,
}

/// One user's reminders of a batch, not yet answered, in their order.
#[derive(Debug, Default)]
struct Group {
    entries: VecDeque<Entry>,
    /// An earlier reminder was answered RETRY: the rest are held back.
    retrying: bool,
}

/// The two phases of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Deliver what the batch claimed (and skip duplicates), up to the first reminder left to
    /// the single path.
    Deliver,
    /// The single path for the reminders at the head, up to the next the batch claimed.
    Alone,
}

impl Group {
    fn has_work(&self, phase: Phase) -> bool {
        match self.entries.front() {
            None => false,
            Some(_) if self.retrying => true,
            Some(e) => match phase {
                Phase::Deliver => matches!(e.step, Step::Deliver | Step::Duplicate(_)),
                Phase::Alone => matches!(e.step, Step::Alone | Step::Renew),
            },
        }
    }
}

/// What a phase of a group did.
#[derive(Debug, Default)]
struct Done {
    answered: Vec<(usize, Result<Once, OnceError>)>,
    /// Delivered under the batch's claim, to record.
    delivered: Vec<(usize, Notification)>,
}

/// What every group task of a batch shares.
#[derive(Debug)]
struct Batch {
    log: DeliveryLog,
    channel: Arc<dyn Channel>,
    token: String,
    /// Until when a reminder may be delivered under the batch's claim: half its lease.
    fresh_until: Instant,
    users_at_once: Arc<Semaphore>,
}

impl Batch {
    /// One phase of one group; see the module docs.
    async fn run(self: Arc<Self>, mut group: Group, phase: Phase) -> (Group, Done) {
        // Held until the phase ends; the semaphore is never closed, so this cannot fail.
        let _permit = self.users_at_once.clone().acquire_owned().await.ok();
        let mut done = Done::default();
        while let Some(front) = group.entries.front_mut() {
            if !group.retrying {
                let stale = front.step == Step::Deliver && Instant::now() >= self.fresh_until;
                if stale {
                    front.step = Step::Renew;
                }
                let ours = match phase {
                    Phase::Deliver => matches!(front.step, Step::Deliver | Step::Duplicate(_)),
                    Phase::Alone => matches!(front.step, Step::Alone | Step::Renew),
                };
                if !ours {
                    break;
                }
            }
            let Some(entry) = group.entries.pop_front() else {
                break;
            };
            if group.retrying {
                self.hold_back(entry, &mut done).await;
                continue;
            }
            let Entry { i, n, step } = entry;
            let answer = match step {
                Step::Duplicate(earlier) => Ok(Once::Duplicate(earlier)),
                Step::Deliver => match self.deliver(&n).await {
                    Ok(()) => {
                        done.delivered.push((i, n));
                        continue;
                    }
                    Err(e) => Err(e),
                },
                Step::Alone => {
                    let token = uuid::Uuid::new_v4().to_string();
                    self.single(n, token).await
                }
                Step::Renew => self.single(n, self.token.clone()).await,
            };
            if let Err(e) = &answer {
                group.retrying = !e.is_final();
            }
            done.answered.push((i, answer));
        }
        (group, done)
    }

    /// Delivers `n`, claimed by the batch, through the channel (in a task of its own, so a
    /// panicking channel fails this reminder alone); a failed delivery releases the claim.
    async fn deliver(&self, n: &Notification) -> Result<(), OnceError> {
        let span = span_of(n);
        let channel = self.channel.clone();
        let owned = n.clone();
        let sent = tokio::spawn(async move { channel.deliver(&owned).await }.instrument(span));
        match sent.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => {
                let release = self.release(n).await.err();
                Err(OnceError::Delivery { source, release })
            }
            Err(e) if e.is_panic() => Err(OnceError::Panicked(e.to_string())),
            Err(e) => Err(OnceError::Unfinished(e.to_string())),
        }
    }

    /// The single path for `n`, as the handling `token`.
    async fn single(&self, n: Notification, token: String) -> Result<Once, OnceError> {
        let span = span_of(&n);
        let log = self.log.clone();
        let channel = self.channel.clone();
        let handled = tokio::spawn(
            async move { log.deliver_once_as(&n, channel.as_ref(), &token).await }.instrument(span),
        );
        match handled.await {
            Ok(answer) => answer,
            Err(e) if e.is_panic() => Err(OnceError::Panicked(e.to_string())),
            Err(e) => Err(OnceError::Unfinished(e.to_string())),
        }
    }

    /// Answers `entry` RETRY unhandled, releasing the batch's claim on it.
    async fn hold_back(&self, entry: Entry, done: &mut Done) {
        if matches!(entry.step, Step::Deliver | Step::Renew)
            && let Err(e) = self.release(&entry.n).await
        {
            tracing::warn!(
                error = %e,
                reminder_id = %entry.n.reminder_id,
                "could not release the claim of a held back reminder: its retry waits for the lease"
            );
        }
        done.answered.push((entry.i, Err(OnceError::HeldBack)));
    }

    async fn release(&self, n: &Notification) -> Result<(), LogError> {
        let deadline = Instant::now() + self.log.lease;
        retrying(deadline, "releasing the claim", || {
            self.log.release(n, &self.token)
        })
        .await
    }
}

impl DeliveryLog {
    /// Delivers the reminders of one bulk delivery, each unless it was delivered before;
    /// see the module docs. One answer per reminder, in their order, as
    /// [`Self::deliver_once`] gives it; `users_at_once` bounds how many users' reminders are
    /// handled at the same time.
    pub async fn deliver_batch(
        &self,
        ns: Vec<Notification>,
        channel: Arc<dyn Channel>,
        users_at_once: Arc<Semaphore>,
    ) -> Vec<Result<Once, OnceError>> {
        let token = uuid::Uuid::new_v4().to_string();
        let (steps, claimed_at) = if repeats(&ns) {
            (vec![Step::Alone; ns.len()], Instant::now())
        } else {
            let deadline = Instant::now() + self.lease;
            match retrying(deadline, "claiming a batch", || {
                self.claim_batch(&ns, &token)
            })
            .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    let e = Arc::new(e);
                    let mut failed = Vec::with_capacity(ns.len());
                    for _ in &ns {
                        failed.push(Err(OnceError::Claim(LogError::Batch(e.clone()))));
                    }
                    return failed;
                }
            }
        };
        let mut answers: Vec<Option<Result<Once, OnceError>>> = ns.iter().map(|_| None).collect();
        let users = by_user(&ns);
        let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
        let mut ns: Vec<Option<Notification>> = ns.into_iter().map(Some).collect();
        let mut groups: Vec<Group> = Vec::new();
        for indexes in users {
            let mut group = Group::default();
            for i in indexes {
                if let (Some(n), Some(step)) = (
                    ns.get_mut(i).and_then(Option::take),
                    steps.get_mut(i).and_then(Option::take),
                ) {
                    group.entries.push_back(Entry { i, n, step });
                }
            }
            groups.push(group);
        }
        let batch = Arc::new(Batch {
            log: self.clone(),
            channel,
            token,
            fresh_until: claimed_at + self.lease / 2,
            users_at_once,
        });
        while !groups.is_empty() {
            let (back, done) = Self::phase(&batch, groups, Phase::Deliver).await;
            let delivered = self.answer(&mut answers, done);
            if !delivered.is_empty() {
                for (i, once) in self.record_delivered(&batch.token, delivered).await {
                    if let Some(slot) = answers.get_mut(i) {
                        *slot = Some(Ok(once));
                    }
                }
            }
            let (back, done) = Self::phase(&batch, back, Phase::Alone).await;
            self.answer(&mut answers, done);
            groups = back.into_iter().filter(|g| !g.entries.is_empty()).collect();
        }
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(match answer {
                Some(answer) => answer,
                None => Err(OnceError::Unfinished(
                    "its group of the batch did not finish".to_owned(),
                )),
            });
        }
        out
    }

    /// Runs `phase` for every group with something to do in it, each in a task of its own.
    async fn phase(batch: &Arc<Batch>, groups: Vec<Group>, phase: Phase) -> (Vec<Group>, Done) {
        let mut back = Vec::with_capacity(groups.len());
        let mut running = JoinSet::new();
        for group in groups {
            if group.has_work(phase) {
                running.spawn(batch.clone().run(group, phase).in_current_span());
            } else {
                back.push(group);
            }
        }
        let mut all = Done::default();
        while let Some(ran) = running.join_next().await {
            match ran {
                Ok((group, done)) => {
                    back.push(group);
                    all.answered.extend(done.answered);
                    all.delivered.extend(done.delivered);
                }
                // Only a bug or a runtime shutting down gets here: the group's reminders
                // are answered RETRY.
                Err(e) => tracing::error!(error = %e, "a group of the batch did not finish"),
            }
        }
        (back, all)
    }

    /// Files `done`'s answers; hands back what it delivered.
    fn answer(
        &self,
        answers: &mut [Option<Result<Once, OnceError>>],
        done: Done,
    ) -> Vec<(usize, Notification)> {
        for (i, answer) in done.answered {
            if let Some(slot) = answers.get_mut(i) {
                *slot = Some(answer);
            }
        }
        done.delivered
    }

    /// Records `delivered` (claimed under `token`) together, or one by one when their
    /// transaction keeps losing races: each one's outcome.
    async fn record_delivered(
        &self,
        token: &str,
        delivered: Vec<(usize, Notification)>,
    ) -> Vec<(usize, Once)> {
        let deadline = Instant::now() + self.lease;
        let refs: Vec<&Notification> = delivered.iter().map(|(_, n)| n).collect();
        let recorded = retrying(deadline, "recording a batch", || async {
            match self.record_batch(&refs, token).await {
                Err(LogError::Contended { .. }) => Ok(None),
                other => other.map(Some),
            }
        })
        .await;
        let key = |n: &Notification| delivered_key(&n.user_id, &n.reminder_id);
        match recorded {
            Ok(Some(records)) => delivered
                .iter()
                .zip(records)
                .map(|((i, n), r)| (*i, once_of(&key(n), r)))
                .collect(),
            Ok(None) => {
                tracing::info!(
                    reminders = delivered.len(),
                    "a batch's record kept losing races: recording its reminders one by one"
                );
                let mut out = Vec::with_capacity(delivered.len());
                for (i, n) in &delivered {
                    let deadline = Instant::now() + self.lease;
                    let r = retrying(deadline, "recording the delivery", || self.record(n, token))
                        .await;
                    out.push((*i, once_of(&key(n), r)));
                }
                out
            }
            Err(e) => {
                let e = Arc::new(e);
                delivered
                    .iter()
                    .map(|(i, _)| (*i, Once::DeliveredUnrecorded(LogError::Batch(e.clone()))))
                    .collect()
            }
        }
    }

    /// Claims `ns` (no reminder twice) for the batch `token`: one transaction when nobody had
    /// any of them. Each one's step, and when the lease of the claims written began.
    async fn claim_batch(
        &self,
        ns: &[Notification],
        token: &str,
    ) -> Result<(Vec<Step>, Instant), LogError> {
        let keys: Vec<String> = ns
            .iter()
            .map(|n| delivered_key(&n.user_id, &n.reminder_id))
            .collect();
        let mut steps: Vec<Option<Step>> = vec![None; ns.len()];
        // Still to claim: the index, and the ETag of our own claim found (none: create it).
        let mut pending: Vec<(usize, Option<String>)> = (0..ns.len()).map(|i| (i, None)).collect();
        let mut claimed_at = Instant::now();
        let mut attempt = 0;
        while !pending.is_empty() {
            claimed_at = Instant::now();
            let now = Utc::now();
            let writes = pending
                .iter()
                .filter_map(|(i, etag)| {
                    let (key, n) = (keys.get(*i)?, ns.get(*i)?);
                    let value = to_json(&ClaimRecord {
                        v: ClaimRecord::VERSION,
                        status: ClaimStatus::Claimed,
                        token: token.to_owned(),
                        lease_until: self.lease_from(now),
                        notification: n.clone(),
                    });
                    Some(match etag {
                        None => Write::Create {
                            key: key.clone(),
                            value,
                            ttl: self.retention,
                        },
                        Some(etag) => Write::Replace {
                            key: key.clone(),
                            value,
                            etag: etag.clone(),
                            ttl: self.retention,
                        },
                    })
                })
                .collect();
            let Err(failed) = self.store.transact(writes).await else {
                for (i, _) in pending.drain(..) {
                    steps[i] = Some(Step::Deliver);
                }
                break;
            };
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                tracing::info!(
                    attempts = attempt,
                    error = %failed,
                    reminders = pending.len(),
                    "a batch's claims kept failing: claiming them one by one"
                );
                for (i, _) in pending.drain(..) {
                    steps[i] = Some(Step::Alone);
                }
                break;
            }
            // Some key exists (or the store is away: then this read fails, and the whole
            // claim is tried again from the start).
            let read: Vec<&str> = pending
                .iter()
                .filter_map(|(i, _)| keys.get(*i).map(String::as_str))
                .collect();
            let stored = self.store.get_many(&read).await?;
            let pending_len = pending.len();
            let mut left = Vec::with_capacity(pending_len);
            for ((i, _), stored) in pending.into_iter().zip(stored) {
                let key = keys.get(i).map_or("", String::as_str);
                match judge(key, stored.as_ref(), token) {
                    Found::Missing => left.push((i, None)),
                    Found::Ours { etag } => left.push((i, Some(etag))),
                    Found::Delivered(earlier) => steps[i] = Some(Step::Duplicate(earlier)),
                    Found::Other => steps[i] = Some(Step::Alone),
                }
            }
            tracing::debug!(attempt, error = %failed, left = left.len(), "a batch's claim transaction failed: read the claims, trying again");
            if left.len() == pending_len && left.iter().all(|(_, etag)| etag.is_none()) {
                // Nothing in the way was found (a busy store?): pause before trying again.
                backoff(attempt).await;
            }
            pending = left;
        }
        let steps = steps
            .into_iter()
            .map(|s| s.unwrap_or(Step::Alone))
            .collect();
        Ok((steps, claimed_at))
    }

    /// Marks the claims of `token` on `ns` (delivered, no reminder twice) delivered and lists
    /// them, in one transaction: each one's outcome (or why its claim cannot be read).
    async fn record_batch(
        &self,
        ns: &[&Notification],
        token: &str,
    ) -> Result<Vec<Result<Record, LogError>>, LogError> {
        let claim_keys: Vec<String> = ns
            .iter()
            .map(|n| delivered_key(&n.user_id, &n.reminder_id))
            .collect();
        let mut users: Vec<&str> = Vec::new();
        for n in ns {
            if !users.contains(&n.user_id.as_str()) {
                users.push(&n.user_id);
            }
        }
        let list_keys: Vec<String> = users.iter().map(|u| inbox_key(u)).collect();
        let keys: Vec<&str> = claim_keys
            .iter()
            .chain(&list_keys)
            .map(String::as_str)
            .collect();
        let mut attempt = 0;
        loop {
            let mut claims = self.store.get_many(&keys).await?;
            let lists = claims.split_off(claim_keys.len().min(claims.len()));
            let (writes, results) =
                self.plan_record(ns, &claim_keys, claims, &users, &list_keys, lists, token);
            if writes.is_empty() {
                return Ok(results);
            }
            let Err(failed) = self.store.transact(writes).await else {
                return Ok(results);
            };
            // A list or a claim changed under us, or the store is away: read again.
            let failed = lost_race(&mut attempt, "a batch's claims and lists", failed)?;
            tracing::debug!(attempt, error = %failed, "a batch's record lost a race: reading again");
            backoff(attempt).await;
        }
    }

    /// The transaction that records `ns` given their claims and their users' lists as read
    /// (in the order of `claim_keys` and `users`), and each one's outcome should it commit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plan_record(
        &self,
        ns: &[&Notification],
        claim_keys: &[String],
        claims: Vec<Option<Versioned>>,
        users: &[&str],
        list_keys: &[String],
        lists: Vec<Option<Versioned>>,
        token: &str,
    ) -> (Vec<Write>, Vec<Result<Record, LogError>>) {
        let mut writes = Vec::new();
        let mut results = Vec::with_capacity(ns.len());
        let mut listed: HashMap<&str, Vec<&Notification>> = HashMap::new();
        for ((n, key), stored) in ns.iter().zip(claim_keys).zip(claims) {
            let Some(stored) = stored else {
                results.push(Ok(Record::Gone));
                continue;
            };
            let mut claim = match ClaimRecord::parse(key, &stored.data) {
                Ok(claim) => claim,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            if claim.token != token {
                results.push(Ok(Record::TakenOver));
                continue;
            }
            results.push(Ok(Record::Recorded));
            if claim.status == ClaimStatus::Delivered {
                // Our earlier attempt committed; its answer was lost.
                continue;
            }
            claim.status = ClaimStatus::Delivered;
            writes.push(Write::Replace {
                key: key.clone(),
                value: to_json(&claim),
                etag: stored.etag,
                ttl: self.retention,
            });
            listed.entry(n.user_id.as_str()).or_default().push(n);
        }
        for ((user, key), stored) in users.iter().zip(list_keys).zip(lists) {
            if let Some(new) = listed.get(user) {
                writes.push(self.list_write(key, stored, new.iter().copied()));
            }
        }
        (writes, results)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use chrono::DateTime;

    use super::*;
    use crate::{delivery_log::Inbox, state::StateStore};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn n(user: &str, reminder_id: &str, delivered_at: &str) -> Notification {
        Notification {
            user_id: user.into(),
            ..Notification::delivered_at(reminder_id, at(delivered_at))
        }
    }

    fn log() -> DeliveryLog {
        let store =
            StateStore::lazy("http://127.0.0.1:1", "s", None, Duration::from_secs(1)).unwrap();
        DeliveryLog::new(
            store,
            Duration::from_secs(24 * 3600),
            3,
            Duration::from_secs(15),
        )
    }

    fn claim(status: ClaimStatus, token: &str, n: &Notification, etag: &str) -> Versioned {
        Versioned {
            data: to_json(&ClaimRecord {
                v: ClaimRecord::VERSION,
                status,
                token: token.into(),
                lease_until: at("2030-01-02T00:00:15Z"),
                notification: n.clone(),
            }),
            etag: etag.into(),
        }
    }

    #[test]
    fn users_keep_their_order_and_repeats_are_seen() {
        let t = "2030-01-02T00:00:00Z";
        let batch = [
            n("a", "1", t),
            n("b", "2", t),
            n("a", "3", t),
            n("c", "4", t),
            n("b", "5", t),
        ];
        assert_eq!(by_user(&batch), [vec![0, 2], vec![1, 4], vec![3]]);
        assert!(by_user(&[]).is_empty());
        assert!(!repeats(&batch));
        // The same reminder id under another user is another reminder.
        assert!(!repeats(&[n("a", "1", t), n("b", "1", t)]));
        assert!(repeats(&[n("a", "1", t), n("b", "2", t), n("a", "1", t)]));
    }

    #[test]
    fn a_failed_claim_is_judged_by_what_was_read() {
        let x = n("a", "1", "2030-01-02T00:00:00Z");
        assert_eq!(judge("k", None, "me"), Found::Missing);
        assert_eq!(
            judge(
                "k",
                Some(&claim(ClaimStatus::Delivered, "other", &x, "1")),
                "me"
            ),
            Found::Delivered(Box::new(x.clone()))
        );
        assert_eq!(
            judge("k", Some(&claim(ClaimStatus::Claimed, "me", &x, "7")), "me"),
            Found::Ours { etag: "7".into() }
        );
        assert_eq!(
            judge(
                "k",
                Some(&claim(ClaimStatus::Claimed, "other", &x, "1")),
                "me"
            ),
            Found::Other
        );
        let garbage = Versioned {
            data: b"nope".to_vec(),
            etag: "1".into(),
        };
        assert_eq!(judge("k", Some(&garbage), "me"), Found::Other);
    }

    // A tokio runtime: the (never dialled) sidecar channel is built inside one.
    #[tokio::test]
    async fn a_batch_record_writes_each_list_once_with_all_its_new_notifications() {
        let log = log();
        let a1 = n("a", "a1", "2030-01-02T00:00:01Z");
        let b1 = n("b", "b1", "2030-01-02T00:00:02Z");
        let a2 = n("a", "a2", "2030-01-02T00:00:03Z");
        let taken = n("b", "b2", "2030-01-02T00:00:04Z");
        let gone = n("c", "c1", "2030-01-02T00:00:05Z");
        let done = n("c", "c2", "2030-01-02T00:00:06Z");
        let ns = [&a1, &b1, &a2, &taken, &gone, &done];
        let claim_keys: Vec<String> = ns
            .iter()
            .map(|n| delivered_key(&n.user_id, &n.reminder_id))
            .collect();
        let claims = vec![
            Some(claim(ClaimStatus::Claimed, "me", &a1, "ea1")),
            Some(claim(ClaimStatus::Claimed, "me", &b1, "eb1")),
            Some(claim(ClaimStatus::Claimed, "me", &a2, "ea2")),
            Some(claim(ClaimStatus::Claimed, "other", &taken, "eb2")),
            None,
            Some(claim(ClaimStatus::Delivered, "me", &done, "ec2")),
        ];
        let users = ["a", "b", "c"];
        let list_keys: Vec<String> = users.iter().map(|u| inbox_key(u)).collect();
        // a's list has an older one (and the cap is 3); b has none yet; c's is not touched.
        let mut a_list = Inbox::default();
        a_list.insert(
            n("a", "a0", "2030-01-02T00:00:00Z"),
            at("2030-01-01T00:00:00Z"),
            3,
        );
        let lists = vec![
            Some(Versioned {
                data: to_json(&a_list),
                etag: "la".into(),
            }),
            None,
            Some(Versioned {
                data: b"{}".to_vec(),
                etag: "lc".into(),
            }),
        ];
        let (writes, results) =
            log.plan_record(&ns, &claim_keys, claims, &users, &list_keys, lists, "me");
        let outcomes: Vec<_> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            outcomes,
            [
                Record::Recorded,
                Record::Recorded,
                Record::Recorded,
                Record::TakenOver,
                Record::Gone,
                Record::Recorded
            ]
        );
        // Three claims marked delivered with their ETags, then a's list and b's, once each.
        assert_eq!(writes.len(), 5, "{writes:?}");
        for (w, etag) in writes.iter().zip(["ea1", "eb1", "ea2"]) {
            let Write::Replace { value, etag: e, .. } = w else {
                panic!("{w:?}");
            };
            assert_eq!(e, etag);
            let c = ClaimRecord::parse("k", value).unwrap();
            assert_eq!(c.status, ClaimStatus::Delivered);
            assert_eq!(c.token, "me");
        }
        let Write::Replace {
            key, value, etag, ..
        } = &writes[3]
        else {
            panic!("{:?}", writes[3]);
        };
        assert_eq!((key.as_str(), etag.as_str()), ("inbox:a", "la"));
        let a: Inbox = serde_json::from_slice(value).unwrap();
        let ids: Vec<&str> = a
            .notifications
            .iter()
            .map(|n| n.reminder_id.as_str())
            .collect();
        assert_eq!(ids, ["a2", "a1", "a0"], "newest first");
        let Write::Create { key, value, .. } = &writes[4] else {
            panic!("{:?}", writes[4]);
        };
        assert_eq!(key, "inbox:b");
        let b: Inbox = serde_json::from_slice(value).unwrap();
        assert_eq!(b.notifications, [b1]);
    }

    // A tokio runtime: the (never dialled) sidecar channel is built inside one.
    #[tokio::test]
    async fn a_batch_record_already_committed_writes_nothing() {
        let log = log();
        let a1 = n("a", "a1", "2030-01-02T00:00:01Z");
        let (writes, results) = log.plan_record(
            &[&a1],
            &[delivered_key("a", "a1")],
            vec![Some(claim(ClaimStatus::Delivered, "me", &a1, "e"))],
            &["a"],
            &[inbox_key("a")],
            vec![None],
            "me",
        );
        assert!(writes.is_empty());
        assert_eq!(
            results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [Record::Recorded]
        );
    }
}
