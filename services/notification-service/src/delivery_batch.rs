//! The delivery log a bulk delivery at a time: the due reminders daprd hands over together
//! are claimed in one state transaction, delivered one by one (each user's in order), then
//! recorded a chunk of users at a time, in one read and (usually) one transaction each: a few
//! state calls per batch instead of three per reminder. The guarantees are those of
//! crate::delivery_log, reminder by reminder; anything unusual sends a reminder down the
//! single path ([`DeliveryLog::deliver_once`]).
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
//! what is left. A reminder the batch holds twice is claimed once: its later copies take the
//! single path (after the first copy is recorded, they find it delivered).
//!
//! # Deliver and record, in rounds
//!
//! Each user's reminders go through the channel in their order, several users at once (a
//! permit each, shared by all batches), until a user reaches one left to the single path.
//! Those delivered are recorded while the other users' go on, a chunk of users at a time
//! ([`RECORD_USERS`]): as soon as that many users are done, once the batch stops delivering
//! under its claims (then each user's as soon as it is done) and when the last is done, so
//! nothing delivered waits for its record on users still queued for a permit. A chunk is one
//! bulk read of its claims (for the ETags) and of its users' whole lists, then transactions
//! of whole users (about [`RECORD_BYTES`] each) that mark the claims `delivered` and write
//! each list once, with all of its user's new notifications: a user's claims and list are
//! always written together. A lost race (an ETag changed) reads again; a chunk whose record
//! fails in any other way, or loses too often, is recorded one by one
//! ([`DeliveryLog::record`]). Only then are the reminders left to the single path handled
//! (they may wait for another handling's claim, holding no permit meanwhile: nothing
//! delivered waits unrecorded), and the next round goes on after them. One round is the
//! common case.
//!
//! As with single events, a channel that fails releases its reminder's claim and answers
//! RETRY, and the user's later reminders in the batch are held back (RETRY, their claims
//! released): Kafka redelivers them after it.
//!
//! # What batching changes
//!
//! * The claims of a batch share one lease, taken before its first delivery. A reminder is
//!   delivered under it only while two thirds of it are left ([`FRESH_PART`]: half, plus a
//!   margin); later, its claim is renewed first (the single path, under the batch's token).
//!   So in a batch **a channel call plus the record must stay under half the lease**
//!   (`NOTIFICATION_CLAIM_LEASE_MS`), not merely the channel call under the whole of it, or
//!   a reminder may be taken over and delivered twice.
//! * The process dying between a batch's claim and its record leaves reminders delivered and
//!   not recorded: after their lease they are taken over and delivered again. The window is
//!   up to a chunk of users' channel calls and their record, instead of one channel call.

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

/// Which reminders of `ns` are a later copy of one before them in `ns` (same user, same
/// reminder): only the first copy is claimed with the batch.
pub(crate) fn later_copies(ns: &[Notification]) -> Vec<bool> {
    let mut seen = HashSet::with_capacity(ns.len());
    ns.iter()
        .map(|n| !seen.insert((n.user_id.as_str(), n.reminder_id.as_str())))
        .collect()
}

/// The share of the lease during which a batch starts deliveries under its claims: past
/// it, a reminder's claim is renewed first (the single path). What is left (two thirds)
/// covers a channel call and the record, which must stay under half the lease, with a
/// margin for the wait between a group's end and its record.
pub(crate) const FRESH_PART: f64 = 1.0 / 3.0;

/// The most users whose deliveries are recorded together: one bulk read of their claims
/// and whole lists. With lists at their default cap (500 entries, about 200 to 350 KB each)
/// that read stays under the 4 MB a gRPC message may hold; a chunk that fails anyway is
/// recorded one by one.
pub(crate) const RECORD_USERS: usize = 8;

/// About the most bytes (keys and values) written in one record transaction; a user's
/// writes are never split, so one user over it has a transaction of its own.
pub(crate) const RECORD_BYTES: usize = 1 << 20;

/// The indexes of `users` (the user of each delivery) in chunks of at most `max_users`
/// users, each user's all in one chunk, in their order; users in the order of their first.
pub(crate) fn record_chunks(users: &[&str], max_users: usize) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    // How many users the last chunk has.
    let mut last_users = 0;
    let mut chunk_of: HashMap<&str, usize> = HashMap::new();
    for (i, user) in users.iter().enumerate() {
        let at = match chunk_of.get(user) {
            Some(&at) => at,
            None => {
                if chunks.is_empty() || last_users >= max_users.max(1) {
                    chunks.push(Vec::new());
                    last_users = 0;
                }
                last_users += 1;
                let at = chunks.len() - 1;
                chunk_of.insert(user, at);
                at
            }
        };
        if let Some(chunk) = chunks.get_mut(at) {
            chunk.push(i);
        }
    }
    chunks
}

/// How many bytes `w` sends.
fn write_len(w: &Write) -> usize {
    match w {
        Write::Create { key, value, .. } => key.len() + value.len(),
        Write::Replace {
            key, value, etag, ..
        } => key.len() + value.len() + etag.len(),
        Write::Delete { key, etag } => key.len() + etag.len(),
    }
}

/// Each user's writes (`per_user`) packed, in order, into transactions of about `max_bytes`
/// at most, never splitting a user's; users with nothing to write are left out.
pub(crate) fn transactions(per_user: Vec<Vec<Write>>, max_bytes: usize) -> Vec<Vec<Write>> {
    let mut out: Vec<Vec<Write>> = Vec::new();
    let mut bytes = 0;
    for writes in per_user {
        if writes.is_empty() {
            continue;
        }
        let size: usize = writes.iter().map(write_len).sum();
        match out.last_mut() {
            Some(last) if bytes + size <= max_bytes => {
                last.extend(writes);
                bytes += size;
            }
            _ => {
                out.push(writes);
                bytes = size;
            }
        }
    }
    out
}

/// Files the answers `answered`, by their place in the batch.
fn file(
    answers: &mut [Option<Result<Once, OnceError>>],
    answered: Vec<(usize, Result<Once, OnceError>)>,
) {
    for (i, answer) in answered {
        if let Some(slot) = answers.get_mut(i) {
            *slot = Some(answer);
        }
    }
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
    /// Until when a reminder may be delivered under the batch's claim: a third of its lease
    /// (see [`FRESH_PART`]).
    fresh_until: Instant,
    users_at_once: Arc<Semaphore>,
}

impl Batch {
    /// One phase of one group; see the module docs.
    async fn run(self: Arc<Self>, mut group: Group, phase: Phase) -> (Group, Done) {
        // Delivering under the batch's claims: held until the phase ends (the semaphore is
        // never closed, so this cannot fail). The single path takes one itself, and only
        // while it is not waiting on another handling's claim.
        let _permit = match phase {
            Phase::Deliver => self.users_at_once.clone().acquire_owned().await.ok(),
            Phase::Alone => None,
        };
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
        let gate = Some(self.users_at_once.clone());
        let handled = tokio::spawn(
            async move {
                log.deliver_once_gated(&n, channel.as_ref(), &token, gate)
                    .await
            }
            .instrument(span),
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
        // The first copy of each reminder is claimed with the batch; a later copy takes the
        // single path, after the first is recorded (it then finds it delivered).
        let later = later_copies(&ns);
        let firsts: Vec<Notification>;
        let to_claim: &[Notification] = if later.contains(&true) {
            firsts = ns
                .iter()
                .zip(&later)
                .filter(|(_, later)| !**later)
                .map(|(n, _)| n.clone())
                .collect();
            &firsts
        } else {
            &ns
        };
        let deadline = Instant::now() + self.lease;
        let (claimed, claimed_at) = match retrying(deadline, "claiming a batch", || {
            self.claim_batch(to_claim, &token)
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
        };
        let mut claimed = claimed.into_iter();
        let steps: Vec<Step> = later
            .iter()
            .map(|later| match later {
                true => Step::Alone,
                false => claimed.next().unwrap_or(Step::Alone),
            })
            .collect();
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
            fresh_until: claimed_at + self.lease.mul_f64(FRESH_PART),
            users_at_once,
        });
        while !groups.is_empty() {
            let back = self
                .phase(&batch, groups, Phase::Deliver, &mut answers)
                .await;
            let back = self.phase(&batch, back, Phase::Alone, &mut answers).await;
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

    /// Runs `phase` for every group with something to do in it, each in a task of its own,
    /// filing their answers in `answers`. What the groups deliver under the batch's claims is
    /// recorded while the others go on: as soon as [`RECORD_USERS`] users' deliveries wait,
    /// once the batch stops delivering under its claims (`fresh_until`: from then on each
    /// group's as soon as it finishes), and when the last group finishes. So a delivery never
    /// waits for its record on groups still queued for a permit.
    async fn phase(
        &self,
        batch: &Arc<Batch>,
        groups: Vec<Group>,
        phase: Phase,
        answers: &mut [Option<Result<Once, OnceError>>],
    ) -> Vec<Group> {
        let mut back = Vec::with_capacity(groups.len());
        let mut running = JoinSet::new();
        for group in groups {
            if group.has_work(phase) {
                running.spawn(batch.clone().run(group, phase).in_current_span());
            } else {
                back.push(group);
            }
        }
        let mut pending: Vec<(usize, Notification)> = Vec::new();
        let mut pending_users = 0;
        loop {
            tokio::select! {
                ran = running.join_next() => {
                    let Some(ran) = ran else { break };
                    match ran {
                        Ok((group, done)) => {
                            back.push(group);
                            file(answers, done.answered);
                            if !done.delivered.is_empty() {
                                pending_users += 1;
                                pending.extend(done.delivered);
                            }
                        }
                        // Only a bug or a runtime shutting down gets here: the group's
                        // reminders are answered RETRY.
                        Err(e) => tracing::error!(error = %e, "a group of the batch did not finish"),
                    }
                    let late = Instant::now() >= batch.fresh_until;
                    if !pending.is_empty() && (late || pending_users >= RECORD_USERS) {
                        self.flush(&batch.token, &mut pending, answers).await;
                        pending_users = 0;
                    }
                }
                () = tokio::time::sleep_until(batch.fresh_until), if !pending.is_empty() => {
                    self.flush(&batch.token, &mut pending, answers).await;
                    pending_users = 0;
                }
            }
        }
        if !pending.is_empty() {
            self.flush(&batch.token, &mut pending, answers).await;
        }
        back
    }

    /// Records `pending` (delivered under the batch's claims), filing each one's outcome.
    async fn flush(
        &self,
        token: &str,
        pending: &mut Vec<(usize, Notification)>,
        answers: &mut [Option<Result<Once, OnceError>>],
    ) {
        let delivered = std::mem::take(pending);
        for (i, once) in self.record_delivered(token, delivered).await {
            if let Some(slot) = answers.get_mut(i) {
                *slot = Some(Ok(once));
            }
        }
    }

    /// Records `delivered` (claimed under `token`) a chunk of users at a time (see
    /// [`record_chunks`]), each chunk in one read and its transactions; a chunk whose record
    /// fails in any way (lost races, a store away, a call too large) is recorded one by one
    /// through [`DeliveryLog::record`]. Each one's outcome.
    async fn record_delivered(
        &self,
        token: &str,
        delivered: Vec<(usize, Notification)>,
    ) -> Vec<(usize, Once)> {
        let key = |n: &Notification| delivered_key(&n.user_id, &n.reminder_id);
        let users: Vec<&str> = delivered.iter().map(|(_, n)| n.user_id.as_str()).collect();
        let mut out = Vec::with_capacity(delivered.len());
        for chunk in record_chunks(&users, RECORD_USERS) {
            let entries: Vec<&(usize, Notification)> =
                chunk.iter().filter_map(|&j| delivered.get(j)).collect();
            let refs: Vec<&Notification> = entries.iter().map(|(_, n)| n).collect();
            match self.record_batch(&refs, token).await {
                Ok(records) => {
                    for ((i, n), r) in entries.iter().map(|e| (e.0, &e.1)).zip(records) {
                        out.push((i, once_of(&key(n), r)));
                    }
                }
                Err(e) => {
                    tracing::info!(
                        error = %e,
                        reminders = entries.len(),
                        "recording a chunk of a batch failed: recording its reminders one by one"
                    );
                    for (i, n) in entries {
                        let deadline = Instant::now() + self.lease;
                        let r =
                            retrying(deadline, "recording the delivery", || self.record(n, token))
                                .await;
                        out.push((*i, once_of(&key(n), r)));
                    }
                }
            }
        }
        out
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
    /// them: one bulk read of the claims and their users' lists, then the writes in
    /// transactions of whole users (each user's claims with its list, so a listed
    /// notification is always recorded) of about [`RECORD_BYTES`] at most (see
    /// [`transactions`]). Each one's outcome (or why its claim cannot be read).
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
            let mut results: Vec<Option<Result<Record, LogError>>> =
                ns.iter().map(|_| None).collect();
            let mut per_user = Vec::with_capacity(users.len());
            for ((user, list_key), list) in users.iter().zip(&list_keys).zip(lists) {
                let mine: Vec<usize> = (0..ns.len())
                    .filter(|&i| ns.get(i).is_some_and(|n| n.user_id == *user))
                    .collect();
                let user_ns: Vec<&Notification> =
                    mine.iter().filter_map(|&i| ns.get(i).copied()).collect();
                let user_keys: Vec<String> = mine
                    .iter()
                    .filter_map(|&i| claim_keys.get(i).cloned())
                    .collect();
                let user_claims: Vec<Option<Versioned>> = mine
                    .iter()
                    .map(|&i| claims.get_mut(i).and_then(Option::take))
                    .collect();
                let (writes, records) = self.plan_record(
                    &user_ns,
                    &user_keys,
                    user_claims,
                    &[*user],
                    std::slice::from_ref(list_key),
                    vec![list],
                    token,
                );
                for (&i, r) in mine.iter().zip(records) {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(r);
                    }
                }
                per_user.push(writes);
            }
            let results = results
                .into_iter()
                .map(|r| r.unwrap_or(Ok(Record::Gone)))
                .collect();
            let mut failed = None;
            for writes in transactions(per_user, RECORD_BYTES) {
                // Each commits on its own; one that failed is found undone by the next read
                // (those that committed are then found delivered and left alone).
                if let Err(e) = self.store.transact(writes).await {
                    failed = Some(e);
                }
            }
            let Some(failed) = failed else {
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
    fn users_keep_their_order_and_later_copies_are_seen() {
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
        assert!(!later_copies(&batch).contains(&true));
        // The same reminder id under another user is another reminder.
        assert_eq!(
            later_copies(&[n("a", "1", t), n("b", "1", t)]),
            [false, false]
        );
        // Only the later copy of a repeated one.
        assert_eq!(
            later_copies(&[
                n("a", "1", t),
                n("b", "2", t),
                n("a", "1", t),
                n("a", "1", t)
            ]),
            [false, false, true, true]
        );
    }

    #[test]
    fn a_record_is_chunked_by_whole_users() {
        let users = ["a", "b", "a", "c", "d", "b", "e", "a"];
        assert_eq!(
            record_chunks(&users, 2),
            [vec![0, 1, 2, 5, 7], vec![3, 4], vec![6]],
            "a and b, c and d, e; each user's all in its chunk, in their order"
        );
        assert_eq!(record_chunks(&users, 8), [(0..8).collect::<Vec<_>>()]);
        assert_eq!(record_chunks(&users, 1).len(), 5);
        assert_eq!(
            record_chunks(&users, 0).len(),
            5,
            "at least one user a chunk"
        );
        assert!(record_chunks(&[], 8).is_empty());
        // A full batch: 100 users in chunks of RECORD_USERS.
        let many: Vec<String> = (0..100).map(|u| format!("u{u}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let chunks = record_chunks(&many, RECORD_USERS);
        assert_eq!(chunks.len(), 100_usize.div_ceil(RECORD_USERS));
        assert!(chunks.iter().all(|c| c.len() <= RECORD_USERS));
    }

    #[test]
    fn record_transactions_pack_whole_users_up_to_a_size() {
        let w = |key: &str, bytes: usize| Write::Create {
            key: key.into(),
            value: vec![b'x'; bytes],
            ttl: Duration::from_secs(1),
        };
        let keys = |tx: &Vec<Write>| -> Vec<String> {
            tx.iter()
                .map(|w| match w {
                    Write::Create { key, .. }
                    | Write::Replace { key, .. }
                    | Write::Delete { key, .. } => key.clone(),
                })
                .collect()
        };
        // Keys of one byte: a user's size is the sum of its values plus one a write.
        let per_user = vec![
            vec![w("1", 99), w("2", 199)],  // 300
            vec![],                         // nothing to write: left out
            vec![w("3", 399), w("4", 299)], // 700: with the first, 1000
            vec![w("5", 1)],                // 2: over 1000, a new one
            vec![w("6", 1999)],             // 2000: alone, though over the size
            vec![w("7", 9)],
        ];
        let txs = transactions(per_user, 1000);
        let got: Vec<Vec<String>> = txs.iter().map(keys).collect();
        assert_eq!(
            got,
            [vec!["1", "2", "3", "4"], vec!["5"], vec!["6"], vec!["7"]]
        );
        assert!(transactions(vec![vec![], vec![]], 1000).is_empty());
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
