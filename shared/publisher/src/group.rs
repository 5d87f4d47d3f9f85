//! Group publish: events handed over one by one by concurrent callers go out together in
//! one bulk call, the way group commit shares a transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::{OutgoingEvent, PublishError, Publisher};

/// One caller's event and where its answer goes.
struct Job {
    event: OutgoingEvent,
    answer: oneshot::Sender<Result<(), PublishError>>,
}

/// A handle on a task that publishes the events of concurrent callers in shared bulk calls.
///
/// Every event handed over while the previous call was out (up to `max` of them) goes in the
/// next one; an event that arrives while nothing is out goes at once, alone, with
/// [`Publisher::publish`]. Each caller is answered for its own event: `Ok` once Dapr
/// acknowledged it, or the error of its entry or of the whole call. A call never carries two
/// events of one key: those go in successive calls (waves), the later only once the earlier
/// was acknowledged, and when the earlier failed the later is answered with a transient
/// error unpublished, so each key's events reach Kafka in the order they were handed over.
#[derive(Debug, Clone)]
pub struct GroupPublisher {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("event", &self.event.id)
            .finish()
    }
}

impl GroupPublisher {
    /// Starts the publishing task (on the current Tokio runtime); it ends when the last
    /// handle is dropped.
    pub fn new(publisher: Publisher, max: usize) -> Self {
        let max = max.max(1);
        let (jobs, queue) = mpsc::channel(max * 4);
        tokio::spawn(run(publisher, queue, max));
        Self { jobs }
    }

    /// Publishes `event` with the others handed over meanwhile; returns when Dapr
    /// acknowledged it (Kafka has it) or with why not.
    pub async fn publish(&self, event: OutgoingEvent) -> Result<(), PublishError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { event, answer })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> PublishError {
    PublishError::InGroup {
        message: "the group publisher stopped".into(),
        transient: true,
    }
}

async fn run(publisher: Publisher, mut queue: mpsc::Receiver<Job>, max: usize) {
    let mut jobs = Vec::with_capacity(max);
    while queue.recv_many(&mut jobs, max).await > 0 {
        // A group that panics answers its callers (their answer senders are dropped: a
        // transient "stopped" error each), and the publisher goes on with the next.
        let group = publish_group(&publisher, std::mem::take(&mut jobs));
        if let Err(panic) = std::panic::AssertUnwindSafe(group).catch_unwind().await {
            tracing::error!(
                ?panic,
                "group publish panicked; its callers are told to retry"
            );
        }
    }
}

/// The same failure for every job it concerns (the errors themselves do not clone).
fn shared(e: &PublishError) -> PublishError {
    match e {
        PublishError::Sidecar(status) => PublishError::Sidecar(status.clone()),
        other => PublishError::InGroup {
            message: other.to_string(),
            transient: other.is_transient(),
        },
    }
}

/// The jobs as successive waves per topic: wave *n* has the *n*-th job of each key, in the
/// order handed over (pure).
fn waves<T>(jobs: Vec<T>, topic_and_key: impl Fn(&T) -> (String, String)) -> Vec<Vec<T>> {
    let mut by_topic: BTreeMap<String, Vec<(String, T)>> = BTreeMap::new();
    for job in jobs {
        let (topic, key) = topic_and_key(&job);
        by_topic.entry(topic).or_default().push((key, job));
    }
    let mut waves: Vec<Vec<T>> = Vec::new();
    for jobs in by_topic.into_values() {
        let mut topic_waves: Vec<Vec<T>> = Vec::new();
        let mut depth: HashMap<String, usize> = HashMap::new();
        for (key, job) in jobs {
            let n = depth.entry(key).or_insert(0);
            if topic_waves.len() <= *n {
                topic_waves.push(Vec::new());
            }
            topic_waves[*n].push(job);
            *n += 1;
        }
        waves.extend(topic_waves);
    }
    waves
}

async fn publish_group(publisher: &Publisher, jobs: Vec<Job>) {
    let mut failed_keys: HashSet<(String, String)> = HashSet::new();
    for wave in waves(jobs, |j| (j.event.topic.clone(), j.event.key.clone())) {
        let (held, wave): (Vec<Job>, Vec<Job>) = wave
            .into_iter()
            .partition(|j| failed_keys.contains(&(j.event.topic.clone(), j.event.key.clone())));
        for job in held {
            let _ = job.answer.send(Err(PublishError::InGroup {
                message: "an earlier event of its key failed to publish".into(),
                transient: true,
            }));
        }
        if let [job] = wave.as_slice() {
            let result = publisher.publish(&job.event).await;
            if result.is_err() {
                failed_keys.insert((job.event.topic.clone(), job.event.key.clone()));
            }
            if let Some(job) = wave.into_iter().next() {
                let _ = job.answer.send(result);
            }
            continue;
        }
        let events: Vec<OutgoingEvent> = wave.iter().map(|j| j.event.clone()).collect();
        match publisher.publish_bulk(&events).await {
            Ok(outcome) => {
                let failed: HashMap<String, String> = outcome.failed.into_iter().collect();
                for job in wave {
                    let result = match failed.get(&job.event.id) {
                        None => Ok(()),
                        Some(error) => {
                            failed_keys.insert((job.event.topic.clone(), job.event.key.clone()));
                            Err(PublishError::InGroup {
                                message: format!("the sidecar failed this entry: {error}"),
                                transient: true,
                            })
                        }
                    };
                    let _ = job.answer.send(result);
                }
            }
            // The sidecar refused the whole call for good (a bad entry, a token): find out
            // which events it refuses, one at a time, rather than failing them all.
            Err(e) if !e.is_transient() => {
                for job in wave {
                    let result = publisher.publish(&job.event).await;
                    if result.is_err() {
                        failed_keys.insert((job.event.topic.clone(), job.event.key.clone()));
                    }
                    let _ = job.answer.send(result);
                }
            }
            Err(e) => {
                for job in wave {
                    failed_keys.insert((job.event.topic.clone(), job.event.key.clone()));
                    let _ = job.answer.send(Err(shared(&e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wave_never_holds_two_events_of_one_key_and_topics_go_apart() {
        let jobs = vec![
            ("t", "a", 1),
            ("t", "a", 2),
            ("t", "b", 3),
            ("u", "a", 4),
            ("t", "a", 5),
        ];
        let got: Vec<Vec<i32>> = waves(jobs, |(t, k, _)| (t.to_string(), k.to_string()))
            .into_iter()
            .map(|w| w.into_iter().map(|(_, _, n)| n).collect())
            .collect();
        assert_eq!(got, [vec![1, 3], vec![2], vec![5], vec![4]]);
    }

    #[test]
    fn a_shared_failure_keeps_its_kind() {
        let e = PublishError::Sidecar(tonic::Status::internal("kafka down"));
        assert!(shared(&e).answered_failed());
        let e = PublishError::MixedTopics("a".into(), "b".into());
        assert!(!shared(&e).is_transient());
    }
}
