//! The words of a job's life as the step log stores them: the job's state
//! and reason, and an attempt row's outcome and decision. Each is an enum
//! with one spelling, checked by the database (one `CHECK` per column,
//! written from [`Word::sql_check`]'s list), so that no store, handler or
//! executor spells one by hand.

use std::fmt;
use std::str::FromStr;

/// A closed set of words stored as text.
pub trait Word: Copy + Sized + 'static {
    /// What the set is called in messages: `job state`.
    const WHAT: &'static str;
    /// Every word, in the order messages list them.
    const ALL: &'static [Self];

    fn as_str(self) -> &'static str;

    /// Reads a stored or written word.
    fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|word| word.as_str() == text)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|w| w.as_str()).collect();
                format!(
                    "unknown {} `{text}`: expected one of {}",
                    Self::WHAT,
                    all.join(", ")
                )
            })
    }

    /// The SQL condition that `column` holds one of the words, written with
    /// `OR` rather than `IN`: SQLite builds a temporary b-tree for a
    /// constant `IN` list of more than two values at every row it checks
    /// (see `migrations/sqlite/0003_state_check.sql`).
    fn sql_check(column: &str) -> String {
        Self::ALL
            .iter()
            .map(|word| format!("{column} = '{}'", word.as_str()))
            .collect::<Vec<_>>()
            .join(" OR ")
    }
}

macro_rules! words {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl Word for $name {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = $name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// A word equals its text, so that checks read as the stored value.
        impl PartialEq<&str> for $name {
            fn eq(&self, text: &&str) -> bool {
                self.as_str() == *text
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, word: &$name) -> bool {
                *self == word.as_str()
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                <$name as Word>::parse(text)
            }
        }

        /// In the OpenAPI document: a string, one of the words.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text,)+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

words! {
    /// Where a job is in its life. Who moves a job out of each state:
    ///
    /// - `pending`: waiting for `next_at`; the scheduler claims it (→
    ///   `running`), an operator may cancel it.
    /// - `running`: claimed under a lease; the executor records the attempt
    ///   and moves it on (by [`crate::lifecycle::next`]), or the rescuer
    ///   returns it to `pending` when the lease expires.
    /// - `suspended`: held until `next_at` for a [`Reason`]; the scheduler
    ///   claims it like `pending`.
    /// - `succeeded`, `cancelled`: final.
    /// - `dead`: final until an operator retries it (→ `pending`).
    JobState, "job state" {
        Pending => "pending",
        Running => "running",
        Suspended => "suspended",
        Succeeded => "succeeded",
        Dead => "dead",
        Cancelled => "cancelled",
    }
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

words! {
    /// Why a job is `suspended` or `dead` (the job's `reason`).
    Reason, "reason" {
        /// Inside a maintenance window of the step's calendar, with
        /// `maintenance: suspend`.
        Maintenance => "maintenance",
        /// The step's calendar is closed, with `off_hours: hold`.
        OffHours => "off_hours",
        /// The channel's circuit breaker is open and the step has no
        /// fallback after it.
        BreakerOpen => "breaker_open",
        /// A retry over the hourly retry quota waits for the next window.
        Quota => "quota",
        /// The job's flow, step or channel is not in the policy in force.
        FlowRemoved => "flow_removed",
        /// An operator paused the job's flow.
        Paused => "paused",
        /// Held by its channel's `slow_down` (errors past the threshold)
        /// or by the engine's health, burning nothing.
        Slowed => "slowed",
        /// Dead: every channel's retries ran out.
        Exhausted => "exhausted",
        /// Dead: the classifier called the failure permanent.
        Permanent => "permanent",
        /// Dead: the channel's history says retries past this attempt
        /// number do not succeed (an `adapt` template).
        Adapted => "adapted",
    }
}

words! {
    /// What an attempt row says happened to the attempt: the classifier's
    /// verdict, or `skipped` for a channel not attempted.
    Outcome, "attempt outcome" {
        Success => "success",
        Retry => "retry",
        /// Permanent: the job goes dead without further attempts.
        Fail => "fail",
        RefreshAuth => "refresh_auth",
        /// Not attempted (its breaker was open, or its step's `when` did not
        /// hold; or, for a notification, nothing was left to notify).
        Skipped => "skipped",
    }
}

impl From<crate::model::Outcome> for Outcome {
    fn from(outcome: crate::model::Outcome) -> Self {
        match outcome {
            crate::model::Outcome::Success => Outcome::Success,
            crate::model::Outcome::Retry => Outcome::Retry,
            crate::model::Outcome::Fail => Outcome::Fail,
            crate::model::Outcome::RefreshAuth => Outcome::RefreshAuth,
        }
    }
}

words! {
    /// What the engine did after an attempt, as its row records it.
    Decision, "decision" {
        /// The same channel again at the row's `next_at`.
        Retry => "retry",
        /// The same channel again, after a hold (calendar or quota) ending
        /// at the row's `next_at`.
        Suspend => "suspend",
        /// The step's next channel, a fresh series, now.
        Fallback => "fallback",
        /// The flow's next step, now.
        NextStep => "next_step",
        Succeeded => "succeeded",
        Dead => "dead",
        /// Notifications: delivered.
        Notified => "notified",
        /// Notifications: retries ran out or the failure was permanent.
        GaveUp => "gave_up",
        /// Notifications: nothing left to notify (the flow or its `on_dead`
        /// is gone).
        Skipped => "skipped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<W: Word + PartialEq + fmt::Debug>() {
        for word in W::ALL {
            assert_eq!(W::parse(word.as_str()), Ok(*word));
        }
        let error = W::parse("nope").expect_err("not a word");
        assert!(error.contains(W::WHAT) && error.contains(W::ALL[0].as_str()));
    }

    #[test]
    fn every_word_reads_back_and_others_are_named_in_the_error() {
        round_trips::<JobState>();
        round_trips::<Reason>();
        round_trips::<Outcome>();
        round_trips::<Decision>();
    }

    #[test]
    fn checks_are_written_with_or() {
        assert_eq!(
            Outcome::sql_check("outcome"),
            "outcome = 'success' OR outcome = 'retry' OR outcome = 'fail' \
             OR outcome = 'refresh_auth' OR outcome = 'skipped'"
        );
    }

    #[test]
    fn words_serialize_as_their_text() {
        let json = serde_json::to_string(&Decision::NextStep).expect("serializes");
        assert_eq!(json, "\"next_step\"");
        let back: Reason = serde_json::from_str("\"breaker_open\"").expect("reads");
        assert_eq!(back, Reason::BreakerOpen);
        assert!(serde_json::from_str::<JobState>("\"lost\"").is_err());
    }
}
