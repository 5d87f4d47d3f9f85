//! What can go wrong with a recurrence, in the domain's words.

use std::fmt;

/// The sub-field of the API's `Recurrence` message an [`RecurrenceError::InvalidRecurrence`]
/// is about, so the API can name it in a field violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `recurrence.frequency`
    Frequency,
    /// `recurrence.interval`
    Interval,
    /// `recurrence.by_weekday`
    ByWeekday,
    /// `recurrence.rrule`
    Rrule,
    /// `recurrence.anchor`
    Anchor,
    /// `recurrence.until`
    Until,
    /// `recurrence.count`
    Count,
}

impl Field {
    /// The field's path in the API, e.g. `recurrence.rrule`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Frequency => "recurrence.frequency",
            Self::Interval => "recurrence.interval",
            Self::ByWeekday => "recurrence.by_weekday",
            Self::Rrule => "recurrence.rrule",
            Self::Anchor => "recurrence.anchor",
            Self::Until => "recurrence.until",
            Self::Count => "recurrence.count",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a recurrence was rejected or could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// The rule is malformed; `field` names the offending sub-field.
    #[error("invalid {field}: {reason}")]
    InvalidRecurrence {
        /// The sub-field at fault.
        field: Field,
        /// What is wrong with it, for the person who sent it.
        reason: String,
    },
    /// The task's time zone is not an IANA time zone name.
    #[error("unknown time zone {name:?}: expected an IANA name such as \"Europe/Berlin\"")]
    UnknownTimeZone {
        /// The name as given.
        name: String,
    },
    /// A valid rule for which the engine found no next occurrence within its search limits
    /// (for instance a rule that can only match dates centuries away).
    #[error("no next occurrence: {reason}")]
    NoOccurrence {
        /// Why the search stopped.
        reason: String,
    },
}

impl RecurrenceError {
    pub(crate) fn invalid(field: Field, reason: impl Into<String>) -> Self {
        Self::InvalidRecurrence {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn no_occurrence(reason: impl Into<String>) -> Self {
        Self::NoOccurrence {
            reason: reason.into(),
        }
    }
}
