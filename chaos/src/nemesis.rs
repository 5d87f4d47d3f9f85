//! The fault schedule: a pure function of the seed, so a seed reproduces the same faults.

use std::{fmt, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng};

/// A process the nemesis can hit. Each service and each sidecar is its own OS process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Kafka,
    Postgres,
    /// A service process (index into [`crate::stack::APPS`]).
    App(usize),
    /// A service's daprd (index into [`crate::stack::APPS`]).
    Sidecar(usize),
}

/// What is done to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL, stay down for `down`, start again.
    Kill,
    /// PostgreSQL: an immediate shutdown (crash recovery on start), down for `down`.
    Restart,
    /// SIGSTOP for `down` (longer than the timeouts around it), then SIGCONT.
    Pause,
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// When it is due, from the start of the load.
    pub at: Duration,
    pub kind: Kind,
    pub target: Target,
    /// How long the target stays down or paused before it is healed.
    pub down: Duration,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kill => "SIGKILL",
            Self::Restart => "restart(immediate)",
            Self::Pause => "SIGSTOP",
        })
    }
}

/// The schedule of `count` faults over `window` for a stack of `apps` service processes
/// (names only used for weights: index 0 and 1 are the two task-service replicas).
///
/// Faults are spread evenly with jitter and run one after another (the nemesis heals each
/// before the next), so the two task-service replicas are never down together.
pub fn schedule(seed: u64, count: usize, window: Duration, apps: usize) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let slot = window.as_secs_f64() / count.max(1) as f64;
    (0..count)
        .map(|i| {
            let at = Duration::from_secs_f64(slot * i as f64 + rng.random_range(0.0..slot * 0.5));
            let roll = rng.random_range(0..100u32);
            let (kind, target, down) = match roll {
                // Kafka and PostgreSQL: the shared infrastructure.
                0..10 => (Kind::Kill, Target::Kafka, rng.random_range(1..6)),
                10..20 => (Kind::Restart, Target::Postgres, rng.random_range(1..4)),
                // A service process (task-service replicas included).
                20..55 => (
                    Kind::Kill,
                    Target::App(rng.random_range(0..apps)),
                    rng.random_range(1..5),
                ),
                // A sidecar.
                55..80 => (
                    Kind::Kill,
                    Target::Sidecar(rng.random_range(0..apps)),
                    rng.random_range(1..5),
                ),
                // A pause past the request (10 s) and publish (5 s) deadlines.
                _ => {
                    let target = match rng.random_range(0..4u32) {
                        0 => Target::Sidecar(rng.random_range(0..apps)),
                        1 => Target::Kafka,
                        _ => Target::App(rng.random_range(0..apps)),
                    };
                    (Kind::Pause, target, rng.random_range(11..16))
                }
            };
            Fault {
                at,
                kind,
                target,
                down: Duration::from_secs(down),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule() {
        let w = Duration::from_secs(120);
        assert_eq!(schedule(7, 30, w, 6), schedule(7, 30, w, 6));
        assert_ne!(schedule(7, 30, w, 6), schedule(8, 30, w, 6));
    }

    #[test]
    fn faults_are_in_order_inside_the_window() {
        let w = Duration::from_secs(120);
        let s = schedule(42, 40, w, 6);
        assert_eq!(s.len(), 40);
        assert!(s.windows(2).all(|p| p[0].at <= p[1].at), "{s:?}");
        assert!(s.iter().all(|f| f.at < w));
        assert!(s.iter().all(|f| match f.target {
            Target::App(i) | Target::Sidecar(i) => i < 6,
            _ => true,
        }));
    }
}
