//! A parallel step's branches: each channel of `parallel: [A, B]` is
//! delivered and retried on its own, as if it were a step of its own, by
//! the same state machine. Where each branch stands lives in the job's
//! `branches` column, so that a restart loses nothing; the job waits for
//! its earliest branch, moves on when every branch succeeded, and goes to
//! the dead-letter queue when one branch runs out (the others' history
//! kept). A retry from the dead-letter queue starts the step again with
//! only the branches that had not succeeded.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::lifecycle::{Move, MoveKind, Position, Reason};

/// Where one branch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchState {
    Pending,
    Succeeded,
    Dead,
}

/// One branch's series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    pub state: BranchState,
    /// Attempts in the branch's current series.
    #[serde(default)]
    pub attempts: u32,
    /// When its next attempt is due (a pending branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_started_at: Option<Timestamp>,
    /// Time the series was held (a calendar, a breaker), which does not
    /// count against `total_timeout`.
    #[serde(default)]
    pub held_ms: u64,
    /// Why a dead branch died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

impl Branch {
    fn fresh(now: Timestamp) -> Self {
        Self {
            state: BranchState::Pending,
            attempts: 0,
            next_at: Some(now),
            series_started_at: None,
            held_ms: 0,
            reason: None,
        }
    }

    /// Whether the branch has an attempt due at `now`.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.state == BranchState::Pending && self.next_at.is_none_or(|at| at <= now)
    }

    /// The branch as the state machine sees it: a series on the step's one
    /// channel.
    pub fn position(&self, job: &Position) -> Position {
        Position {
            channel_index: 0,
            attempts: self.attempts,
            series_started_at: self.series_started_at,
            held: Duration::from_millis(self.held_ms),
            due: self.next_at,
            notify_attempts: 0,
            ..job.clone()
        }
    }

    /// The branch waiting, unattempted, until `until` (a breaker, a slot,
    /// `slow_down`; decided at `now`): held from the time it was due, as
    /// the state machine holds a job, so the wait never counts against
    /// `total_timeout`. Nothing is held before the series' first attempt.
    pub fn waiting(&self, now: Timestamp, until: Timestamp) -> Self {
        let from = self.next_at.map_or(now, |due| due.min(now));
        let held = if self.attempts == 0 {
            0
        } else {
            let wait = Duration::try_from(from.duration_until(until)).unwrap_or_default();
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
        };
        Self {
            next_at: Some(until),
            held_ms: self.held_ms.saturating_add(held),
            ..self.clone()
        }
    }

    /// The branch after the machine's `moved` for it.
    pub fn after(&self, moved: &Move) -> Self {
        let landing = &moved.landing;
        let series = Self {
            attempts: landing.attempts,
            series_started_at: landing.series_started_at,
            held_ms: u64::try_from(landing.held.as_millis()).unwrap_or(u64::MAX),
            ..self.clone()
        };
        match moved.kind {
            MoveKind::Retry { at, .. } => Self {
                state: BranchState::Pending,
                next_at: Some(at),
                ..series
            },
            MoveKind::RetryHeld { until, .. } => Self {
                state: BranchState::Pending,
                next_at: Some(until),
                ..series
            },
            MoveKind::NextStep { .. } | MoveKind::Succeeded => Self {
                state: BranchState::Succeeded,
                next_at: None,
                ..series
            },
            MoveKind::Dead { reason } => Self {
                state: BranchState::Dead,
                next_at: None,
                reason: Some(reason),
                ..series
            },
            // A parallel step has no fallback: a branch whose retries ran
            // out is dead.
            MoveKind::Fallback { .. } => Self {
                state: BranchState::Dead,
                next_at: None,
                reason: Some(Reason::Exhausted),
                ..series
            },
            // Waits: due again when the move says.
            _ => Self {
                next_at: landing.next_at.or(self.next_at),
                ..series
            },
        }
    }
}

/// Every parallel step's branches of one job, by step then channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Branches(BTreeMap<String, BTreeMap<String, Branch>>);

/// What the job does once its due branches were attempted.
#[derive(Debug, Clone, PartialEq)]
pub enum Outlook {
    /// Every branch succeeded: the step is done.
    AllSucceeded,
    /// A branch is dead: so is the job.
    Dead { branch: String },
    /// Branches are pending: the job is due at the earliest.
    Waiting { until: Timestamp },
}

impl Branches {
    /// As the step log holds them (`None`: none yet). Text that does not
    /// parse starts every branch afresh rather than losing the job.
    pub fn from_log(text: Option<&str>) -> Self {
        text.and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }

    pub fn to_log(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// The branches of `step` over `channels`, each present. `restart`
    /// (the step starts, or starts again after a retry from the dead-letter
    /// queue): every branch that has not succeeded starts a fresh series,
    /// due at `now`; the succeeded ones are not sent again.
    pub fn of_step(
        &mut self,
        step: &str,
        channels: &[String],
        restart: bool,
        now: Timestamp,
    ) -> &mut BTreeMap<String, Branch> {
        let branches = self.0.entry(step.to_string()).or_default();
        branches.retain(|name, _| channels.contains(name));
        for channel in channels {
            let branch = branches
                .entry(channel.clone())
                .or_insert_with(|| Branch::fresh(now));
            if restart && branch.state != BranchState::Succeeded {
                *branch = Branch::fresh(now);
            }
        }
        branches
    }

    pub fn step(&self, step: &str) -> Option<&BTreeMap<String, Branch>> {
        self.0.get(step)
    }
}

/// Where a step's `branches` leave the job.
pub fn outlook(branches: &BTreeMap<String, Branch>, now: Timestamp) -> Outlook {
    if let Some((name, _)) = branches.iter().find(|(_, b)| b.state == BranchState::Dead) {
        return Outlook::Dead {
            branch: name.clone(),
        };
    }
    match branches
        .values()
        .filter(|b| b.state == BranchState::Pending)
        .map(|b| b.next_at.unwrap_or(now))
        .min()
    {
        Some(until) => Outlook::Waiting { until },
        None => Outlook::AllSucceeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn channels(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_step_is_done_when_every_branch_succeeded_and_waits_for_the_earliest() {
        let mut all = Branches::default();
        let branches = all.of_step("announce", &channels(&["a", "b", "c"]), true, t(0));
        assert_eq!(outlook(branches, t(0)), Outlook::Waiting { until: t(0) });
        branches.get_mut("a").unwrap().state = BranchState::Succeeded;
        branches.get_mut("b").unwrap().next_at = Some(t(30));
        branches.get_mut("c").unwrap().next_at = Some(t(10));
        assert_eq!(outlook(branches, t(1)), Outlook::Waiting { until: t(10) });
        for name in ["b", "c"] {
            branches.get_mut(name).unwrap().state = BranchState::Succeeded;
        }
        assert_eq!(outlook(branches, t(1)), Outlook::AllSucceeded);
    }

    #[test]
    fn a_dead_branch_makes_the_step_dead_and_a_restart_resends_only_what_failed() {
        let mut all = Branches::default();
        let names = channels(&["a", "b", "c"]);
        let branches = all.of_step("announce", &names, true, t(0));
        branches.get_mut("a").unwrap().state = BranchState::Succeeded;
        let b = branches.get_mut("b").unwrap();
        b.state = BranchState::Dead;
        b.attempts = 5;
        b.reason = Some(Reason::Exhausted);
        branches.get_mut("c").unwrap().attempts = 2;
        assert_eq!(
            outlook(branches, t(5)),
            Outlook::Dead {
                branch: "b".to_string()
            }
        );
        // Through the log and back, then restarted (a retry from the
        // dead-letter queue).
        let mut back = Branches::from_log(Some(&all.to_log()));
        let branches = back.of_step("announce", &names, true, t(100));
        assert_eq!(branches["a"].state, BranchState::Succeeded);
        for name in ["b", "c"] {
            assert_eq!(branches[name], Branch::fresh(t(100)), "{name}");
        }
        assert!(!branches["a"].is_due(t(100)));
        assert!(branches["b"].is_due(t(100)));
    }

    #[test]
    fn a_branch_waiting_is_held_from_its_due_time_once_its_series_began() {
        let fresh = Branch::fresh(t(0));
        assert_eq!(
            fresh.waiting(t(5), t(35)).held_ms,
            0,
            "not before a first attempt"
        );
        let retrying = Branch {
            attempts: 1,
            next_at: Some(t(10)),
            series_started_at: Some(t(0)),
            held_ms: 2_000,
            ..fresh
        };
        // Due at 10, found at 12 behind an open breaker until 40.
        let waiting = retrying.waiting(t(12), t(40));
        assert_eq!(waiting.next_at, Some(t(40)));
        assert_eq!(waiting.held_ms, 2_000 + 30_000);
    }

    #[test]
    fn unreadable_branches_start_afresh() {
        let mut all = Branches::from_log(Some("not json"));
        let branches = all.of_step("s", &channels(&["a"]), false, t(0));
        assert_eq!(branches["a"], Branch::fresh(t(0)));
    }
}
