//! The counters of a consumer service: how many events its handlers answered how, kept
//! in-process (read as a snapshot by tests and at shutdown) and in one Prometheus counter;
//! and the subscriptions of a consumer of one event type, which count what they do not route.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use dapr_appcallback::{Event, Outcome, Route, Subscriptions};
use prost::Message;

use crate::Counters;

/// One outcome counted in-process and in the Prometheus counter `metric{result}`.
#[derive(Debug)]
pub struct Counter {
    n: AtomicU64,
    metric: &'static str,
    result: &'static str,
}

impl Counter {
    /// A counter at 0 for the label `result` of the Prometheus counter `metric`.
    pub const fn new(metric: &'static str, result: &'static str) -> Self {
        Self {
            n: AtomicU64::new(0),
            metric,
            result,
        }
    }

    /// Counts one answer here and in `metric{result}`; returns `outcome`, so a handler can
    /// end with `stats.retried.count(Outcome::Retry)`.
    pub fn count<T>(&self, outcome: T) -> T {
        self.add_one();
        outcome
    }

    /// Counts one answer here and in `metric{result}`.
    pub fn add_one(&self) {
        self.n.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(self.metric, "result" => self.result).increment(1);
    }

    /// Counts `n` answers at once (a batch's) here and in `metric{result}`.
    pub fn add(&self, n: u64) {
        self.n.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(self.metric, "result" => self.result).increment(n);
    }

    /// How many were counted so far.
    pub fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

/// Declares a service's counters: a struct of [`Counter`]s, one per outcome, labelled by its
/// field name in one Prometheus counter, and its point-in-time copy with a public `u64` per
/// outcome and `handled()` (their sum: every answer given). The struct implements
/// [`Counters`](crate::Counters), so a [`Served`](crate::Served) reports it, and, given
/// `family <not ours>, <dropped>;` before `metric`, [`FamilyCounters`](crate::FamilyCounters) with those two
/// of its counters, for [`one_of_family`](crate::one_of_family); given `bulk <retried>;`
/// after it, [`BulkCounters`](crate::BulkCounters) too, for
/// [`one_of_family_bulk`](crate::one_of_family_bulk).
///
/// ```
/// todo_service::counters! {
///     /// How the events on `orders` ended.
///     pub struct Stats;
///     /// A point-in-time copy of [`Stats`].
///     pub struct StatsSnapshot;
///     metric "orders_handled_total";
///     /// Orders shipped.
///     shipped,
///     /// Events answered RETRY.
///     retried,
/// }
/// let stats = Stats::default();
/// assert!(stats.shipped.count(true));
/// assert_eq!(todo_service::Counters::snapshot(&stats).handled(), 1);
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $stats:ident;
        $(#[$snapshot_meta:meta])*
        $snapshot_vis:vis struct $snapshot:ident;
        $(family $not_ours:ident, $dropped:ident; $(bulk $retried:ident;)?)?
        metric $metric:literal;
        $( $(#[$field_meta:meta])* $field:ident ),+ $(,)?
    ) => {
        $(#[$meta])*
        #[doc = concat!("\n\nEach outcome is also counted in the Prometheus counter `", $metric, "{result}`.")]
        #[derive(Debug)]
        $vis struct $stats {
            $( $field: $crate::Counter, )+
        }

        impl ::std::default::Default for $stats {
            fn default() -> Self {
                Self {
                    $( $field: $crate::Counter::new($metric, stringify!($field)), )+
                }
            }
        }

        $(#[$snapshot_meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $snapshot_vis struct $snapshot {
            $( $(#[$field_meta])* pub $field: u64, )+
        }

        impl $snapshot {
            /// Every answer given, RETRYs included.
            pub fn handled(&self) -> u64 {
                0 $( + self.$field )+
            }
        }

        impl $crate::Counters for $stats {
            type Snapshot = $snapshot;
            fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $( $field: self.$field.get(), )+
                }
            }
        }

        $(
            impl $crate::FamilyCounters for $stats {
                fn not_ours(&self) -> &$crate::Counter {
                    &self.$not_ours
                }
                fn dropped(&self) -> &$crate::Counter {
                    &self.$dropped
                }
            }
            $(
                impl $crate::BulkCounters for $stats {
                    fn retried(&self) -> &$crate::Counter {
                        &self.$retried
                    }
                }
            )?
        )?
    };
}

/// The counters of a consumer that takes one event type of a producer's family: besides its
/// own outcomes, what it is sent and does not route.
pub trait FamilyCounters: Counters {
    /// Events of the family's other types (SUCCESS, untouched).
    fn not_ours(&self) -> &Counter;
    /// Events answered DROP, among them those of no type it knows.
    fn dropped(&self) -> &Counter;
}

/// The subscriptions of `consumer`, which takes the one event type `route` names (see
/// [`Route::event_type`]) of a producer's `family`: those events go to `handle` (with the
/// consumer); the family's other types on the topic (and those the producer adds later) are
/// acknowledged untouched and counted in [`not_ours`](FamilyCounters::not_ours); anything
/// else (another version of the type, a stranger's type) is DROPped to the dead-letter topic
/// and counted in [`dropped`](FamilyCounters::dropped). Events that do not decode as `M` are
/// DROPped by the AppCallback runtime before they reach `handle`, and are not counted.
pub fn one_of_family<H, C, M, F, Fut>(
    route: Route,
    family: &str,
    counters: Arc<C>,
    consumer: Arc<H>,
    handle: F,
) -> Subscriptions
where
    H: Send + Sync + 'static,
    C: FamilyCounters,
    M: Message + Default + Send + 'static,
    F: Fn(Arc<H>, Event<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let dropped = counters.clone();
    Subscriptions::builder()
        .route(route.clone(), move |e| handle(consumer.clone(), e))
        .family(
            &route,
            family,
            move |_| counters.not_ours().add_one(),
            move |_| dropped.dropped().add_one(),
        )
        .build()
}
