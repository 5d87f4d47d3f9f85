//! The checker: what the clients were told (the ledger) against what the system did (the
//! task database, what reached Kafka, what each consumer recorded).

use std::collections::{BTreeMap, HashMap, HashSet};

use todo_proto::todo::{
    audit::v1::ActivityEntry,
    events::v1::{OccurrenceRequested, ReminderEvent, TaskChanged, TaskEvent, TaskEventKind},
};

use crate::{
    load::{Mutation, Op, Outcome},
    watch::{Connection, View, ViewTask},
};

/// A reminder row of the task database.
#[derive(Debug, Clone)]
pub struct DbReminder {
    pub reminder_id: String,
    pub user_id: String,
    pub remind_at_ms: i64,
    /// 0 pending, 1 fired, 2 cancelled.
    pub state: i16,
}

/// A task row of the task database.
#[derive(Debug, Clone)]
pub struct DbTask {
    pub user_id: String,
    pub version: i64,
    pub status: i32,
    pub title: String,
}

/// A record of dead-letter-service (ListDeadLetters), with what the logs say of it.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterSeen {
    /// The `-dlq` topic it arrived on.
    pub dead_letter_topic: String,
    pub cloud_event_id: String,
    pub event_type: String,
    /// The publishing app id.
    pub source: String,
    pub partition_key: String,
    pub times: i32,
    /// When it first arrived on the `-dlq` topic (RFC 3339, UTC).
    pub first_at: String,
    pub decode_error: String,
    /// The first service log line naming its id and a dead letter, if any (why it was
    /// dropped); empty when no service logged one (daprd gave up after its retries).
    pub logged: String,
}

/// Everything observed after the run.
#[derive(Debug, Default)]
pub struct Observed {
    /// Each topic's deliveries to the recording subscriber, in arrival order.
    pub task_events: Vec<TaskEvent>,
    pub task_updates: Vec<TaskChanged>,
    pub reminders: Vec<(String, ReminderEvent)>,
    pub occurrences: Vec<OccurrenceRequested>,
    /// Deliveries the recorder could not decode (topic, type).
    pub undecodable: Vec<(String, String)>,
    pub db_tasks: HashMap<String, DbTask>,
    pub tombstones: HashSet<String>,
    pub db_reminders: Vec<DbReminder>,
    pub user_changes: HashMap<String, u64>,
    pub outbox: i64,
    /// audit-service's entries per user (ListActivity).
    pub audit: HashMap<String, Vec<ActivityEntry>>,
    /// notification-service: reminder ids listed per user (ListNotifications).
    pub listed: HashMap<String, Vec<String>>,
    /// notification-service: "reminder delivered" lines per reminder id (its stdout).
    pub delivered_lines: HashMap<String, usize>,
    /// Milliseconds since the epoch when the observation was made.
    pub now_ms: i64,
    /// The WatchTasks watchers: each user's view now, every connection's changes, counts.
    pub views: HashMap<String, View>,
    pub connections: Vec<Connection>,
    pub watch_counts: BTreeMap<String, u64>,
    /// dead-letter-service's records (every topic, pending and replayed).
    pub dead_letters: Vec<DeadLetterSeen>,
    /// The CloudEvent type of the run's one deliberate dead letter (the canary), when one
    /// was sent: it must be recorded, and is the only dead letter allowed.
    pub canary_type: Option<String>,
}

/// The checker's counts and the violations it found.
#[derive(Debug, Default)]
pub struct Report {
    pub counts: BTreeMap<String, u64>,
    /// Violations by rule: rule → examples (all of them counted).
    pub violations: BTreeMap<&'static str, Vec<String>>,
}

impl Report {
    fn count(&mut self, key: &str, n: u64) {
        *self.counts.entry(key.to_owned()).or_default() += n;
    }

    fn violate(&mut self, rule: &'static str, what: String) {
        self.violations.entry(rule).or_default().push(what);
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn violation_count(&self) -> usize {
        self.violations.values().map(Vec::len).sum()
    }
}

/// The row version an etag (`"7"`) stands for.
pub fn version(etag: &str) -> Option<i64> {
    etag.trim_matches('"').parse().ok()
}

fn op_of(kind: TaskEventKind) -> Option<Op> {
    Some(match kind {
        TaskEventKind::Created => Op::Create,
        TaskEventKind::Updated => Op::Update,
        TaskEventKind::Completed => Op::Complete,
        TaskEventKind::Reopened => Op::Reopen,
        TaskEventKind::Deleted => Op::Delete,
        TaskEventKind::Unspecified => return None,
    })
}

fn kind_type(kind: TaskEventKind) -> &'static str {
    match kind {
        TaskEventKind::Created => "todo.task.created.v1",
        TaskEventKind::Updated => "todo.task.updated.v1",
        TaskEventKind::Completed => "todo.task.completed.v1",
        TaskEventKind::Reopened => "todo.task.reopened.v1",
        TaskEventKind::Deleted => "todo.task.deleted.v1",
        TaskEventKind::Unspecified => "",
    }
}

fn op_type(op: Op) -> &'static str {
    match op {
        Op::Create => "todo.task.created.v1",
        Op::Update => "todo.task.updated.v1",
        Op::Complete => "todo.task.completed.v1",
        Op::Reopen => "todo.task.reopened.v1",
        Op::Delete => "todo.task.deleted.v1",
    }
}

/// Whether the deliveries of each key (in arrival order) keep the documented order: the
/// last delivery of each element comes after the last delivery of every earlier element
/// ("the newest event is always the last one delivered"). Answers the first pair out of
/// order.
pub fn order_held(arrivals: &[u64]) -> Result<(), (u64, u64)> {
    let mut last: BTreeMap<u64, usize> = BTreeMap::new();
    for (pos, seq) in arrivals.iter().enumerate() {
        last.insert(*seq, pos);
    }
    let mut prev: Option<(u64, usize)> = None;
    for (seq, pos) in last {
        if let Some((ps, pp)) = prev
            && pp > pos
        {
            return Err((ps, seq));
        }
        prev = Some((seq, pos));
    }
    Ok(())
}

/// Runs every check.
pub fn check(ledger: &[Mutation], o: &Observed, users: &[String]) -> Report {
    let mut r = Report::default();
    let users_set: HashSet<&str> = users.iter().map(String::as_str).collect();

    // --- The ledger.
    for m in ledger {
        let key = match m.outcome {
            Outcome::Acked => "requests acknowledged".to_owned(),
            Outcome::Rejected(code) => format!("requests rejected: {code:?}"),
            Outcome::Unknown(code) => format!("requests with unknown outcome: {code:?}"),
        };
        r.count(&key, 1);
        if m.outcome == Outcome::Acked {
            r.count(&format!("acknowledged {:?}", m.op), 1);
        }
    }
    let acked: Vec<&Mutation> = ledger
        .iter()
        .filter(|m| m.outcome == Outcome::Acked)
        .collect();

    // --- What reached Kafka (task-events), first delivery of each event id.
    let mut seen: HashSet<&str> = HashSet::new();
    let mut events: Vec<&TaskEvent> = Vec::new();
    for e in &o.task_events {
        if seen.insert(e.event_id.as_str()) {
            events.push(e);
        }
    }
    r.count(
        "task-events published (distinct event ids)",
        events.len() as u64,
    );
    r.count(
        "task-events duplicate deliveries seen (absorbed by consumers)",
        (o.task_events.len() - events.len()) as u64,
    );
    for (topic, n, distinct) in [
        (
            "task-updates",
            o.task_updates.len(),
            o.task_updates
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<HashSet<_>>()
                .len(),
        ),
        (
            "reminders",
            o.reminders.len(),
            o.reminders
                .iter()
                .map(|(_, e)| e.event_id.as_str())
                .collect::<HashSet<_>>()
                .len(),
        ),
        (
            "task-occurrences",
            o.occurrences.len(),
            o.occurrences
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<HashSet<_>>()
                .len(),
        ),
    ] {
        r.count(
            &format!("{topic} published (distinct event ids)"),
            distinct as u64,
        );
        r.count(
            &format!("{topic} duplicate deliveries seen (absorbed by consumers)"),
            (n - distinct) as u64,
        );
    }
    for (topic, ty) in &o.undecodable {
        r.violate(
            "an event on a topic does not decode",
            format!("{topic}: {ty}"),
        );
    }
    let by_etag: HashMap<(&str, &str), &TaskEvent> = events
        .iter()
        .filter(|e| e.kind() != TaskEventKind::Deleted)
        .filter_map(|e| {
            e.task
                .as_ref()
                .map(|t| ((t.id.as_str(), t.etag.as_str()), *e))
        })
        .collect();
    let deleted: HashMap<&str, Vec<&TaskEvent>> = events
        .iter()
        .filter(|e| e.kind() == TaskEventKind::Deleted)
        .fold(HashMap::new(), |mut m, e| {
            if let Some(t) = &e.task {
                m.entry(t.id.as_str()).or_default().push(*e);
            }
            m
        });

    // audit-service's entries: by event id, and by (task id, etag, type).
    let mut audit_ids: HashMap<&str, usize> = HashMap::new();
    let mut audit_keys: HashSet<(&str, &str, &str)> = HashSet::new();
    for entries in o.audit.values() {
        for e in entries {
            *audit_ids.entry(e.event_id.as_str()).or_default() += 1;
            let etag = e.task.as_ref().map(|t| t.etag.as_str()).unwrap_or_default();
            let etag = if e.r#type == "todo.task.deleted.v1" {
                ""
            } else {
                etag
            };
            audit_keys.insert((e.task_id.as_str(), etag, e.r#type.as_str()));
        }
    }
    r.count(
        "audit entries",
        o.audit.values().map(|v| v.len() as u64).sum(),
    );

    // --- 1. Every acknowledged change is in the database, was published, and consumed.
    let mut last_acked: HashMap<&str, usize> = HashMap::new();
    for (i, m) in ledger.iter().enumerate() {
        if m.outcome == Outcome::Acked && !m.task_id.is_empty() {
            last_acked.insert(m.task_id.as_str(), i);
        }
    }
    for (id, &i) in &last_acked {
        let m = &ledger[i];
        let later_delete = ledger[i + 1..]
            .iter()
            .any(|l| l.task_id == m.task_id && l.op == Op::Delete && l.outcome != Outcome::Acked);
        let row = o.db_tasks.get(*id);
        match (m.op, row) {
            (Op::Delete, None) if o.tombstones.contains(*id) => {}
            (Op::Delete, _) => r.violate(
                "an acknowledged delete is not in the database",
                format!("{} task {id}", m.user),
            ),
            (_, Some(row)) => {
                if version(&m.etag).is_some_and(|v| row.version < v) {
                    r.violate(
                        "an acknowledged change is not in the database",
                        format!(
                            "{} {:?} task {id}: acknowledged {} but the row is at version {}",
                            m.user, m.op, m.etag, row.version
                        ),
                    );
                }
            }
            (_, None) if later_delete && o.tombstones.contains(*id) => {}
            (_, None) => r.violate(
                "an acknowledged change is not in the database",
                format!("{} {:?} task {id}: no row", m.user, m.op),
            ),
        }
    }
    let mut published_ok = 0u64;
    let mut audited_ok = 0u64;
    for m in &acked {
        if m.task_id.is_empty() {
            continue;
        }
        let (published, audited) = if m.op == Op::Delete {
            (
                deleted.contains_key(m.task_id.as_str()),
                audit_keys.contains(&(m.task_id.as_str(), "", "todo.task.deleted.v1")),
            )
        } else {
            let published = match by_etag.get(&(m.task_id.as_str(), m.etag.as_str())) {
                Some(e) => {
                    if op_of(e.kind()) != Some(m.op) && m.op != Op::Update {
                        r.violate(
                            "an acknowledged change was published as another kind",
                            format!(
                                "{} {:?} task {} {}: {:?}",
                                m.user,
                                m.op,
                                m.task_id,
                                m.etag,
                                e.kind()
                            ),
                        );
                    }
                    true
                }
                None => false,
            };
            let audited = by_etag
                .get(&(m.task_id.as_str(), m.etag.as_str()))
                .is_some_and(|e| {
                    audit_keys.contains(&(m.task_id.as_str(), m.etag.as_str(), kind_type(e.kind())))
                })
                || audit_keys.contains(&(m.task_id.as_str(), m.etag.as_str(), op_type(m.op)));
            (published, audited)
        };
        if published {
            published_ok += 1;
        } else {
            r.violate(
                "an acknowledged change was never published (lost)",
                format!("{} {:?} task {} {}", m.user, m.op, m.task_id, m.etag),
            );
        }
        if audited {
            audited_ok += 1;
        } else {
            r.violate(
                "an acknowledged change is not in the audit trail (not consumed)",
                format!("{} {:?} task {} {}", m.user, m.op, m.task_id, m.etag),
            );
        }
    }
    r.count("acknowledged changes found published", published_ok);
    r.count("acknowledged changes consumed by audit-service", audited_ok);

    // --- 2. No event for a change the API did not acknowledge (unknown outcomes may or may
    // not have happened; a definite refusal must have written nothing).
    let acked_keys: HashSet<(&str, &str)> = acked
        .iter()
        .map(|m| (m.task_id.as_str(), m.etag.as_str()))
        .collect();
    let acked_deletes: HashSet<&str> = acked
        .iter()
        .filter(|m| m.op == Op::Delete)
        .map(|m| m.task_id.as_str())
        .collect();
    let mut unknown_ops: HashMap<(&str, Op), usize> = HashMap::new();
    let mut unresolved_creates: HashMap<&str, i64> = HashMap::new();
    for m in ledger {
        match (m.op, m.outcome) {
            (Op::Create, Outcome::Unknown(_)) => {
                *unresolved_creates.entry(m.user.as_str()).or_default() += 1;
            }
            (Op::Create, Outcome::Acked) => {
                // A create answered on a retry with the same request id resolves one unknown.
                if let Some(n) = unresolved_creates.get_mut(m.user.as_str()) {
                    *n -= 1;
                }
            }
            (_, Outcome::Unknown(_)) => {
                *unknown_ops.entry((m.task_id.as_str(), m.op)).or_default() += 1;
            }
            _ => {}
        }
    }
    let mut unexplained_creates: HashMap<&str, i64> = HashMap::new();
    let mut unacked = 0u64;
    for e in &events {
        let Some(t) = &e.task else { continue };
        if !e.actor.starts_with("user:") {
            continue;
        }
        if !users_set.contains(e.user_id.as_str()) {
            r.violate(
                "an event of a user the driver did not run",
                format!("{} {:?} task {}", e.user_id, e.kind(), t.id),
            );
            continue;
        }
        let explained = match e.kind() {
            TaskEventKind::Deleted => acked_deletes.contains(t.id.as_str()),
            _ => acked_keys.contains(&(t.id.as_str(), t.etag.as_str())),
        };
        if explained {
            continue;
        }
        unacked += 1;
        let Some(op) = op_of(e.kind()) else { continue };
        if op == Op::Create {
            *unexplained_creates.entry(e.user_id.as_str()).or_default() += 1;
            continue;
        }
        match unknown_ops.get_mut(&(t.id.as_str(), op)) {
            Some(n) if *n > 0 => *n -= 1,
            _ => r.violate(
                "an event was published for a change the API did not acknowledge",
                format!("{} {:?} task {} {}", e.user_id, e.kind(), t.id, t.etag),
            ),
        }
    }
    for (user, n) in unexplained_creates {
        let allowed = unresolved_creates.get(user).copied().unwrap_or(0).max(0);
        if n > allowed {
            r.violate(
                "an event was published for a change the API did not acknowledge",
                format!("{user}: {n} creates published, {allowed} unanswered creates"),
            );
        }
    }
    r.count(
        "events of unanswered requests (allowed: may or may not have happened)",
        unacked,
    );

    // --- 3. Recurring: every completed recurring task has exactly one next occurrence.
    let mut next_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut creates_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in &events {
        if e.kind() != TaskEventKind::Created {
            continue;
        }
        let Some(t) = &e.task else { continue };
        creates_of
            .entry(t.id.as_str())
            .or_default()
            .insert(e.event_id.as_str());
        if !t.parent_task_id.is_empty() {
            next_of
                .entry(t.parent_task_id.as_str())
                .or_default()
                .insert(t.id.as_str());
        }
    }
    for (id, evs) in &creates_of {
        if evs.len() > 1 {
            r.violate(
                "a task was created twice (duplicate effect)",
                format!("task {id}: {} created events", evs.len()),
            );
        }
    }
    let mut completed_recurring: HashSet<&str> = HashSet::new();
    for m in &acked {
        if m.op == Op::Complete && m.recurring {
            completed_recurring.insert(m.task_id.as_str());
        }
    }
    let mut with_next = 0u64;
    for id in &completed_recurring {
        match next_of.get(id).map_or(0, HashSet::len) {
            1 => with_next += 1,
            n => r.violate(
                "a completed recurring task does not have exactly one next occurrence",
                format!("task {id}: {n}"),
            ),
        }
    }
    for (id, next) in &next_of {
        if next.len() > 1 {
            r.violate(
                "a recurring task has more than one next occurrence",
                format!("task {id}: {next:?}"),
            );
        }
    }
    r.count(
        "recurring completions acknowledged",
        completed_recurring.len() as u64,
    );
    r.count(
        "recurring completions with exactly one next occurrence (consumed by recurring-task-service and task-service)",
        with_next,
    );

    // --- 4. audit-service consumed every published task and reminder event, once.
    let mut published_ids: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event_id.as_str(), e.user_id.as_str()))
        .collect();
    let mut seen_rem: HashSet<&str> = HashSet::new();
    for (_, e) in &o.reminders {
        if seen_rem.insert(e.event_id.as_str()) {
            published_ids.push((e.event_id.as_str(), e.user_id.as_str()));
        }
    }
    let mut audit_consumed = 0u64;
    for (id, user) in &published_ids {
        if !users_set.contains(user) {
            continue;
        }
        match audit_ids.get(id).copied().unwrap_or(0) {
            0 => r.violate(
                "an event was published but audit-service never recorded it (lost)",
                format!("{user} event {id}"),
            ),
            1 => audit_consumed += 1,
            n => r.violate(
                "audit-service recorded an event more than once",
                format!("{user} event {id}: {n} entries"),
            ),
        }
    }
    r.count(
        "events consumed by audit-service (one entry each)",
        audit_consumed,
    );

    // --- 5. Reminders: each one due delivered exactly once, or cancelled; none twice.
    let listed: HashSet<&str> = o
        .listed
        .values()
        .flat_map(|v| v.iter().map(String::as_str))
        .collect();
    let mut fired_ids: HashSet<&str> = o
        .reminders
        .iter()
        .filter(|(ty, e)| ty == "todo.reminder.due.v1" && users_set.contains(e.user_id.as_str()))
        .map(|(_, e)| e.reminder_id.as_str())
        .collect();
    let mut cancelled = 0u64;
    let mut planned = 0u64;
    for d in &o.db_reminders {
        match d.state {
            1 => {
                if !fired_ids.contains(d.reminder_id.as_str()) {
                    r.violate(
                        "a fired reminder was never published (lost)",
                        format!("{} reminder {}", d.user_id, d.reminder_id),
                    );
                }
                fired_ids.insert(d.reminder_id.as_str());
            }
            2 => {
                cancelled += 1;
                if o.delivered_lines.contains_key(&d.reminder_id) {
                    r.violate(
                        "a cancelled reminder was delivered",
                        format!("{} reminder {}", d.user_id, d.reminder_id),
                    );
                }
            }
            _ => {
                planned += 1;
                if d.remind_at_ms < o.now_ms - 15_000 {
                    r.violate(
                        "a reminder due during the run never fired",
                        format!(
                            "{} reminder {} was due {} s ago",
                            d.user_id,
                            d.reminder_id,
                            (o.now_ms - d.remind_at_ms) / 1000
                        ),
                    );
                }
            }
        }
    }
    let fired = fired_ids.len() as u64;
    let mut delivered_once = 0u64;
    for id in &fired_ids {
        match o.delivered_lines.get(*id).copied().unwrap_or(0) {
            1 => delivered_once += 1,
            0 => r.violate(
                "a fired reminder was never delivered (lost)",
                format!("reminder {id}"),
            ),
            n => r.violate(
                "a reminder was delivered more than once",
                format!("reminder {id}: {n} times"),
            ),
        }
        if !listed.contains(id) {
            r.violate(
                "a delivered reminder is not listed by ListNotifications",
                format!("reminder {id}"),
            );
        }
    }
    for id in o.delivered_lines.keys() {
        if !fired_ids.contains(id.as_str()) {
            r.violate(
                "a reminder was delivered that the scheduler did not fire",
                format!("reminder {id}"),
            );
        }
    }
    r.count("reminders fired", fired);
    r.count(
        "reminders delivered exactly once (notification-service)",
        delivered_once,
    );
    r.count(
        "reminders cancelled (completed, deleted, rescheduled)",
        cancelled,
    );
    r.count("reminders still planned (due after the run)", planned);

    // --- 6. Per-user order on task-updates (user_seq) and task-events; no gap.
    let mut seq_of: HashMap<(&str, &str, i32), u64> = HashMap::new();
    let mut updates_by_user: HashMap<&str, Vec<u64>> = HashMap::new();
    for c in &o.task_updates {
        seq_of.insert((c.task_id.as_str(), c.etag.as_str(), c.kind), c.user_seq);
        updates_by_user
            .entry(c.user_id.as_str())
            .or_default()
            .push(c.user_seq);
    }
    for user in users {
        let arrivals = updates_by_user
            .get(user.as_str())
            .cloned()
            .unwrap_or_default();
        if let Err((a, b)) = order_held(&arrivals) {
            r.violate(
                "task-updates out of order for a user",
                format!("{user}: change {b} last delivered before change {a}"),
            );
        }
        let distinct: HashSet<u64> = arrivals.iter().copied().collect();
        let last = o.user_changes.get(user).copied().unwrap_or(0);
        let missing = (1..=last).filter(|s| !distinct.contains(s)).count();
        if missing > 0 || distinct.iter().any(|s| *s > last) {
            r.violate(
                "task-updates has a gap for a user",
                format!(
                    "{user}: {missing} of {last} changes never delivered (max seen {:?})",
                    distinct.iter().max()
                ),
            );
        }
        r.count(
            "task-updates changes delivered in order",
            distinct.len() as u64,
        );
    }
    let mut events_by_user: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &o.task_events {
        let Some(t) = &e.task else { continue };
        let etag = if e.kind() == TaskEventKind::Deleted {
            ""
        } else {
            t.etag.as_str()
        };
        if let Some(seq) = seq_of.get(&(t.id.as_str(), etag, e.kind)) {
            events_by_user
                .entry(e.user_id.as_str())
                .or_default()
                .push(*seq);
        }
    }
    for (user, arrivals) in &events_by_user {
        if let Err((a, b)) = order_held(arrivals) {
            r.violate(
                "task-events out of order for a user",
                format!("{user}: change {b} last delivered before change {a}"),
            );
        }
    }

    // --- 7. WatchTasks: each stream kept its user's order without a gap, and each
    // watcher's view converged to the database.
    for (k, v) in &o.watch_counts {
        r.count(k, *v);
    }
    for c in &o.connections {
        for fault in stream_faults(c) {
            r.violate(
                "a WatchTasks stream broke its user's order (a change repeated, went back or skipped)",
                format!("{}: {fault}", c.user),
            );
        }
    }
    let mut rows_of: HashMap<&str, HashMap<&str, ViewTask>> = HashMap::new();
    for (id, t) in &o.db_tasks {
        rows_of.entry(t.user_id.as_str()).or_default().insert(
            id.as_str(),
            ViewTask {
                version: t.version,
                status: t.status,
                title: t.title.clone(),
            },
        );
    }
    let mut converged = 0u64;
    for user in users {
        let rows = rows_of.remove(user.as_str()).unwrap_or_default();
        let Some(view) = o.views.get(user) else {
            r.violate(
                "a WatchTasks view does not match the database after quiescence",
                format!("{user}: the watcher never listed the user's tasks"),
            );
            continue;
        };
        let diffs = view_differences(view, &rows);
        if diffs.is_empty() {
            converged += 1;
        }
        for d in diffs {
            r.violate(
                "a WatchTasks view does not match the database after quiescence",
                format!("{user}: {d}"),
            );
        }
    }
    r.count("watch views equal to the database (users)", converged);

    // --- 8. Dead letters: the load is valid, so nothing may be dead-lettered (a consumer
    // DROPs only what can never succeed; a transient fault is RETRY, and daprd dead-letters
    // a RETRY only once its retries ran out). The canary is the one expected.
    let mut canaries = 0u64;
    for d in &o.dead_letters {
        if o.canary_type.as_deref() == Some(d.event_type.as_str()) {
            canaries += 1;
            continue;
        }
        r.violate(
            "an event of the valid load was dead-lettered",
            format!(
                "{} on {} (from {}, key {:?}, cloud event {}, {} time(s){}): {}",
                d.event_type,
                d.dead_letter_topic,
                d.source,
                d.partition_key,
                d.cloud_event_id,
                d.times,
                if d.decode_error.is_empty() {
                    String::new()
                } else {
                    format!(", does not decode: {}", d.decode_error)
                },
                if d.logged.is_empty() {
                    "no service logged a DROP of it: its subscriber's daprd dead-lettered it (retries ran out, or none configured)"
                } else {
                    d.logged.as_str()
                }
            ),
        );
    }
    r.count(
        "dead letters recorded by dead-letter-service (the canary excluded; must be 0)",
        o.dead_letters.len() as u64 - canaries,
    );
    // By topic and type, with when they came: dead letters come in bursts (one fault).
    let mut bursts: BTreeMap<(&str, &str), (&str, &str, u64)> = BTreeMap::new();
    for d in &o.dead_letters {
        if o.canary_type.as_deref() == Some(d.event_type.as_str()) {
            continue;
        }
        let at = d.first_at.as_str();
        let b = bursts
            .entry((d.dead_letter_topic.as_str(), d.event_type.as_str()))
            .or_insert((at, at, 0));
        b.0 = b.0.min(at);
        b.1 = b.1.max(at);
        b.2 += 1;
    }
    for ((topic, ty), (first, last, n)) in bursts {
        r.count(
            &format!("dead letters on {topic}: {ty}, first {first}, last {last}"),
            n,
        );
    }
    if let Some(ty) = &o.canary_type {
        r.count("canary dead letters recorded (must be 1)", canaries);
        if canaries != 1 {
            r.violate(
                "the canary was not recorded once by dead-letter-service (it does not see the -dlq topics)",
                format!("{canaries} records of type {ty}"),
            );
        }
    }

    // --- 9. Quiescence.
    if o.outbox != 0 {
        r.violate(
            "the outbox did not drain",
            format!("{} events left", o.outbox),
        );
    }
    let lost = [
        "never published",
        "never recorded",
        "never delivered",
        "not in the database",
    ]
    .iter()
    .map(|k| {
        r.violations
            .iter()
            .filter(|(rule, _)| rule.contains(k))
            .map(|(_, v)| v.len() as u64)
            .sum::<u64>()
    })
    .sum();
    r.count("lost (must be 0)", lost);
    let dup = r
        .violations
        .iter()
        .filter(|(rule, _)| rule.contains("more than once") || rule.contains("twice"))
        .map(|(_, v)| v.len() as u64)
        .sum();
    r.count("duplicate effects (must be 0)", dup);
    r
}

/// What is wrong with one WatchTasks connection: its changes must be the user's changes
/// `after + 1`, `after + 2`, … in that order (no repeat, no step back, no gap), and no
/// task's version may go back.
pub fn stream_faults(c: &Connection) -> Vec<String> {
    let mut faults = Vec::new();
    let mut expected = c.after + 1;
    let mut versions: HashMap<&str, i64> = HashMap::new();
    for s in &c.changes {
        if s.seq < expected {
            faults.push(format!(
                "change {} after change {} (opened after {})",
                s.seq,
                expected - 1,
                c.after
            ));
        } else if s.seq > expected {
            faults.push(format!(
                "change {} came next where {expected} was owed (opened after {}): {} change(s) skipped",
                s.seq,
                c.after,
                s.seq - expected
            ));
        }
        expected = expected.max(s.seq + 1);
        let last = versions.entry(s.task_id.as_str()).or_insert(s.version);
        if s.version < *last {
            faults.push(format!(
                "task {} went back from version {} to {} (change {})",
                s.task_id, last, s.version, s.seq
            ));
        }
        *last = (*last).max(s.version);
    }
    faults
}

/// How a watcher's view differs from the user's rows: missing or extra tasks, another
/// version, status or title.
pub fn view_differences(view: &View, rows: &HashMap<&str, ViewTask>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (id, row) in rows {
        match view.get(*id) {
            None => diffs.push(format!("task {id} (version {}) missing from the view", row.version)),
            Some(v) if v != row => diffs.push(format!(
                "task {id}: the view has version {} status {} {:?}, the row version {} status {} {:?}",
                v.version, v.status, v.title, row.version, row.status, row.title
            )),
            Some(_) => {}
        }
    }
    for (id, v) in view {
        if !rows.contains_key(id.as_str()) {
            diffs.push(format!(
                "task {id} (version {}) in the view but not in the database",
                v.version
            ));
        }
    }
    diffs.sort();
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_judged_by_the_last_delivery() {
        assert!(order_held(&[1, 2, 3]).is_ok());
        // A later change seen once early, then again after the retried one: allowed.
        assert!(order_held(&[1, 3, 2, 3]).is_ok());
        // Redelivery of an old one after a newer one: the newest is no longer last.
        assert_eq!(order_held(&[1, 2, 3, 2]), Err((2, 3)));
        assert_eq!(order_held(&[2, 1]), Err((1, 2)));
        assert!(order_held(&[]).is_ok());
    }

    use crate::watch::Seen;

    fn conn(after: u64, seqs: &[(u64, &str, i64)]) -> Connection {
        Connection {
            user: "u".into(),
            after,
            changes: seqs
                .iter()
                .map(|(seq, id, version)| Seen {
                    seq: *seq,
                    task_id: (*id).into(),
                    version: *version,
                })
                .collect(),
        }
    }

    #[test]
    fn a_stream_owes_the_changes_after_its_cursor_in_order() {
        assert!(stream_faults(&conn(4, &[(5, "a", 2), (6, "b", 1), (7, "a", 3)])).is_empty());
        assert!(stream_faults(&conn(4, &[])).is_empty());
        // A gap at the start, a repeat, a step back, a task going back.
        assert_eq!(stream_faults(&conn(4, &[(6, "a", 1)])).len(), 1);
        assert_eq!(
            stream_faults(&conn(0, &[(1, "a", 1), (1, "a", 1)])).len(),
            1
        );
        assert_eq!(
            stream_faults(&conn(
                0,
                &[(1, "a", 1), (2, "a", 2), (3, "b", 1), (2, "a", 2)]
            ))
            .len(),
            1
        );
        let back = stream_faults(&conn(0, &[(1, "a", 3), (2, "a", 2)]));
        assert_eq!(back.len(), 1, "{back:?}");
        assert!(back[0].contains("went back"), "{back:?}");
    }

    fn task(version: i64, status: i32, title: &str) -> ViewTask {
        ViewTask {
            version,
            status,
            title: title.into(),
        }
    }

    #[test]
    fn a_view_converges_only_when_every_task_matches_its_row() {
        let rows: HashMap<&str, ViewTask> =
            HashMap::from([("a", task(3, 1, "x")), ("b", task(1, 2, "y"))]);
        let mut view: HashMap<String, ViewTask> = rows
            .iter()
            .map(|(id, t)| ((*id).to_owned(), t.clone()))
            .collect();
        assert!(view_differences(&view, &rows).is_empty());
        // One version behind, a title off, a task missing, a task too many: each caught.
        view.insert("a".into(), task(2, 1, "x"));
        assert_eq!(view_differences(&view, &rows).len(), 1);
        view.insert("a".into(), task(3, 1, "z"));
        assert_eq!(view_differences(&view, &rows).len(), 1);
        view.insert("a".into(), task(3, 1, "x"));
        view.remove("b");
        assert_eq!(view_differences(&view, &rows).len(), 1);
        view.insert("b".into(), task(1, 2, "y"));
        view.insert("c".into(), task(1, 1, "deleted"));
        assert_eq!(view_differences(&view, &rows).len(), 1);
    }

    #[test]
    fn a_wrong_view_and_a_dead_letter_fail_the_run() {
        let users = vec!["u".to_owned()];
        let mut o = Observed {
            db_tasks: HashMap::from([(
                "a".to_owned(),
                DbTask {
                    user_id: "u".into(),
                    version: 2,
                    status: 1,
                    title: "x".into(),
                },
            )]),
            views: HashMap::from([(
                "u".to_owned(),
                HashMap::from([("a".to_owned(), task(2, 1, "x"))]),
            )]),
            canary_type: Some("canary".into()),
            dead_letters: vec![DeadLetterSeen {
                event_type: "canary".into(),
                ..DeadLetterSeen::default()
            }],
            ..Observed::default()
        };
        let r = check(&[], &o, &users);
        assert!(r.ok(), "{:?}", r.violations);
        // The view one version behind.
        o.views.insert(
            "u".into(),
            HashMap::from([("a".to_owned(), task(1, 1, "x"))]),
        );
        assert!(!check(&[], &o, &users).ok());
        o.views.insert(
            "u".into(),
            HashMap::from([("a".to_owned(), task(2, 1, "x"))]),
        );
        // A dead letter besides the canary; then the canary missing.
        o.dead_letters.push(DeadLetterSeen {
            event_type: "todo.task.completed.v1".into(),
            ..DeadLetterSeen::default()
        });
        assert!(!check(&[], &o, &users).ok());
        o.dead_letters.clear();
        assert!(!check(&[], &o, &users).ok());
        // No watcher view at all.
        o.dead_letters.push(DeadLetterSeen {
            event_type: "canary".into(),
            ..DeadLetterSeen::default()
        });
        o.views.clear();
        assert!(!check(&[], &o, &users).ok());
    }
}
