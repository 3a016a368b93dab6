//! The job state machine: [`next`] takes where a job stands, what just
//! happened to it, the policy in force and the time, and returns the
//! [`Move`]: what kind of move it is, and everything the step log stores
//! about the job afterwards. Nothing here reads a clock, a channel or the
//! database; the executor gathers the event (a claim, a breaker's refusal,
//! the partner's answer, a quota's refusal…), applies the move, and the
//! stores write it as they are given it.
//!
//! The events, and the moves they lead to:
//!
//! | event | moves |
//! | --- | --- |
//! | [`Event::Claimed`] | `Attempt`; `Hold` (calendar; flow, step or channel gone) |
//! | [`Event::Paused`] | `Hold` (`paused`) |
//! | [`Event::SlowedDown`] | `Hold` (`slowed`) |
//! | [`Event::BreakerOpen`] | `Skip` to the next fallback; `Hold` (`breaker_open`) |
//! | [`Event::NoSlot`], [`Event::HandedBack`] | `Wait` |
//! | [`Event::Answered`] | `Retry`, `RetryHeld` (calendar), `Fallback`, `NextStep`, `Succeeded`, `Dead` |
//! | [`Event::OverQuota`] | `RetryHeld` (`quota`) |
//! | [`Event::NotifyAnswered`] | `NotifyRetry`, `Notified`, `NotifyGaveUp` |
//! | [`Event::NotifyGone`] | `NotifySkipped` |
//!
//! # Held time
//!
//! Time a job waits without an attempt (a calendar, an open breaker, a
//! quota, a concurrency or rate slot, a pause, `slow_down`) is added to the
//! series' `held`, which the deadline check subtracts: it never counts
//! against `total_timeout`. So is the time a due retry waits for the
//! engine to claim it (a backlog, engine health giving retries a smaller
//! share, the engine stopped): the series is held from the time it was
//! due. Before a series' first attempt nothing is added: the deadline runs
//! from that attempt.

use std::time::Duration;

use jiff::Timestamp;

use super::interpret::{decide, hold_at, Attempted, Then};
use super::{Decision, JobState, Reason};
use crate::clock::later;
use crate::model::{Channel, CompiledPolicy, Flow, Outcome, RetryTemplate, Step};
use crate::retry::{delay_before_retry, Verdict};

/// How long a job whose flow, step or channel vanished waits before it is
/// looked at again (a reload may bring it back).
pub const VANISHED_RECHECK: Duration = Duration::from_secs(30);

/// How long a job of a paused flow waits before it is looked at again,
/// should the resume that makes it due at once be missed.
pub const PAUSED_RECHECK: Duration = Duration::from_secs(3600);

/// Where a job stands, as the step log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub flow: String,
    /// The step's name: a reload may reorder steps, and the name is followed.
    pub step: String,
    pub step_index: usize,
    /// 0 the primary channel, `k` the k-th fallback.
    pub channel_index: usize,
    /// Attempts made in the current series (this channel of this step).
    pub attempts: u32,
    /// When the series' first attempt started.
    pub series_started_at: Option<Timestamp>,
    /// Time the series spent held, which does not count against
    /// `total_timeout`.
    pub held: Duration,
    /// When the job was due.
    pub due: Option<Timestamp>,
    /// Notification attempts made (a dead job's `on_dead`).
    pub notify_attempts: u32,
    /// The step's `retry` entry whose `when` holds for the job (`None`: the
    /// step's own template). Evaluated by the executor at each attempt, as
    /// the payload may have been edited.
    pub retry_choice: Option<usize>,
    /// The attempt number from which the channel's history says retries
    /// do not succeed (the template's `adapt`), as the executor read it
    /// before deciding (`None`: no cut).
    pub adapt_cut: Option<u32>,
}

impl Position {
    /// A job just submitted to `flow`, due at `due`.
    pub fn fresh(flow: &Flow, due: Timestamp) -> Self {
        Self {
            flow: flow.name.clone(),
            step: flow
                .steps
                .first()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            step_index: 0,
            channel_index: 0,
            attempts: 0,
            series_started_at: None,
            held: Duration::ZERO,
            due: Some(due),
            notify_attempts: 0,
            retry_choice: None,
            adapt_cut: None,
        }
    }

    /// Where the job stands once `landing` is applied (the step's name
    /// looked up in `flow`, the job's flow).
    pub fn landed(&self, flow: &Flow, landing: &Landing) -> Self {
        Self {
            flow: self.flow.clone(),
            step: flow
                .steps
                .get(landing.step_index)
                .map_or_else(|| self.step.clone(), |s| s.name.clone()),
            step_index: landing.step_index,
            channel_index: landing.channel_index,
            attempts: landing.attempts,
            series_started_at: landing.series_started_at,
            held: landing.held,
            due: landing.next_at,
            notify_attempts: landing.notify_attempts,
            retry_choice: self.retry_choice,
            adapt_cut: self.adapt_cut,
        }
    }
}

/// What happened to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Claimed by a worker, about to be attempted.
    Claimed,
    /// Claimed, but its flow is paused by an operator.
    Paused,
    /// Claimed, but its channel is past its `slow_down` threshold: no
    /// attempt before `until`.
    SlowedDown { until: Timestamp },
    /// Claimed at the start of a step whose `when` does not hold for the
    /// job: the step is skipped.
    WhenFalse,
    /// The channel's circuit breaker refused the attempt; it lets a probe
    /// through at `until`.
    BreakerOpen { until: Timestamp },
    /// No concurrency place or rate slot on the channel before `until`.
    NoSlot { until: Timestamp },
    /// Claimed, but handed back unattempted (its lease might run out during
    /// the attempt).
    HandedBack,
    /// The attempt that started at `started` was judged `verdict` (the
    /// event's time is when it finished). `jitter` is uniform in `[0, 1)`.
    Answered {
        started: Timestamp,
        verdict: Verdict,
        jitter: f64,
    },
    /// The retry [`Event::Answered`] led to (`Move::Retry` at `retry_at`,
    /// after `delay`) is over the retry quota until `until`. The position
    /// is the same as for that `Answered`.
    OverQuota {
        started: Timestamp,
        retry_at: Timestamp,
        delay: Duration,
        until: Timestamp,
    },
    /// The dead job's notification was judged `verdict`.
    NotifyAnswered { verdict: Verdict, jitter: f64 },
    /// The flow or its `on_dead` is gone: nothing to notify.
    NotifyGone,
}

/// The kind of a move, with what sets it apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MoveKind {
    /// Send the attempt now, to this step and channel.
    Attempt {
        step_index: usize,
        channel_index: usize,
    },
    /// Nothing attempted: `pending` again until `until`.
    Wait {
        until: Timestamp,
    },
    /// Nothing attempted: `suspended` for `reason` until `until`.
    Hold {
        until: Timestamp,
        reason: Reason,
    },
    /// Nothing attempted: the channel's breaker is open until `until`, so
    /// the job goes to fallback `channel_index` now. The skip is recorded.
    Skip {
        channel_index: usize,
        until: Timestamp,
    },
    /// The same channel again at `at`, after `delay`.
    Retry {
        at: Timestamp,
        delay: Duration,
    },
    /// The same channel again, but the retry due at `due` is held for
    /// `reason` (a calendar, a quota) until `until`.
    RetryHeld {
        due: Timestamp,
        delay: Duration,
        until: Timestamp,
        reason: Reason,
    },
    /// Retries ran out: a fresh series on fallback `channel_index`, now.
    Fallback {
        channel_index: usize,
    },
    /// The step succeeded: the next step, now.
    NextStep {
        step_index: usize,
    },
    /// The step's `when` does not hold: the next step now, or, after the
    /// last step, the job succeeded (`None`). Recorded, not an attempt.
    StepSkipped {
        next_step: Option<usize>,
    },
    Succeeded,
    Dead {
        reason: Reason,
    },
    /// The notification again at `at`.
    NotifyRetry {
        at: Timestamp,
        delay: Duration,
    },
    Notified,
    NotifyGaveUp,
    NotifySkipped,
}

impl MoveKind {
    /// The decision an attempt row records for this move; `None` for the
    /// moves that record no row.
    pub fn decision(self) -> Option<Decision> {
        Some(match self {
            MoveKind::Attempt { .. } | MoveKind::Wait { .. } | MoveKind::Hold { .. } => {
                return None
            }
            MoveKind::Skip { .. } | MoveKind::Fallback { .. } => Decision::Fallback,
            MoveKind::Retry { .. } | MoveKind::NotifyRetry { .. } => Decision::Retry,
            MoveKind::RetryHeld { .. } => Decision::Suspend,
            MoveKind::NextStep { .. } => Decision::NextStep,
            MoveKind::Succeeded => Decision::Succeeded,
            MoveKind::Dead { .. } => Decision::Dead,
            MoveKind::Notified => Decision::Notified,
            MoveKind::NotifyGaveUp => Decision::GaveUp,
            MoveKind::NotifySkipped => Decision::Skipped,
            MoveKind::StepSkipped { next_step: Some(_) } => Decision::NextStep,
            MoveKind::StepSkipped { next_step: None } => Decision::Succeeded,
        })
    }

    /// The wait before the next attempt the row records (0 for a move on
    /// at once), for the moves that record one.
    pub fn delay(self) -> Option<Duration> {
        match self {
            MoveKind::Retry { delay, .. }
            | MoveKind::RetryHeld { delay, .. }
            | MoveKind::NotifyRetry { delay, .. } => Some(delay),
            MoveKind::Skip { .. }
            | MoveKind::Fallback { .. }
            | MoveKind::NextStep { .. }
            | MoveKind::StepSkipped { .. } => Some(Duration::ZERO),
            _ => None,
        }
    }
}

/// A move: its kind, and the job as the step log holds it afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub kind: MoveKind,
    pub landing: Landing,
}

/// The job after a move, field for field as the step log stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Landing {
    pub state: JobState,
    pub step_index: usize,
    pub channel_index: usize,
    pub attempts: u32,
    pub series_started_at: Option<Timestamp>,
    pub held: Duration,
    pub next_at: Option<Timestamp>,
    pub reason: Option<Reason>,
    /// Attempts of the job this move records (0 or 1): a skip or a
    /// notification is not an attempt of the job.
    pub attempts_added: u32,
    /// When the `on_dead` notification is due; `None`: none owed.
    pub notify_at: Option<Timestamp>,
    pub notify_attempts: u32,
}

impl Move {
    /// The decision the move's attempt row records.
    pub fn decision(&self) -> Option<Decision> {
        self.kind.decision()
    }

    /// Whether the job is looked after: final, or waiting with a time to
    /// be looked at again (or being attempted now).
    pub fn keeps_the_job(&self) -> bool {
        let l = &self.landing;
        match l.state {
            JobState::Succeeded | JobState::Cancelled => true,
            JobState::Dead => true,
            JobState::Pending | JobState::Suspended => l.next_at.is_some(),
            JobState::Running => matches!(self.kind, MoveKind::Attempt { .. }),
        }
    }
}

/// Where the job's step and channel are in `policy`.
pub struct Located<'p> {
    pub flow: &'p Flow,
    pub step_index: usize,
    pub step: &'p Step,
    pub channel_index: usize,
    pub channel: &'p Channel,
}

/// Finds the job's flow, step (by name when a reload moved it) and channel
/// (the last one left when a reload removed fallbacks); `None` when one is
/// gone.
pub fn locate<'p>(policy: &'p CompiledPolicy, at: &Position) -> Option<Located<'p>> {
    let flow = policy.flow(&at.flow)?;
    let step_index = match flow.steps.get(at.step_index) {
        Some(step) if step.name == at.step => at.step_index,
        _ => flow.step_index(&at.step)?,
    };
    let step = &flow.steps[step_index];
    let channel_index = at.channel_index.min(step.channel_count() - 1);
    let channel = policy.channel(step.channel_at(channel_index)?)?;
    Some(Located {
        flow,
        step_index,
        step,
        channel_index,
        channel,
    })
}

/// The retry template of notifications: the built-in `standard`.
pub fn notify_template() -> RetryTemplate {
    RetryTemplate::standard()
}

/// What follows `event` for a job at `at`, under `policy`, at `now`.
pub fn next(at: &Position, event: &Event, policy: &CompiledPolicy, now: Timestamp) -> Move {
    let located = || locate(policy, at);
    match event {
        Event::Claimed => match located() {
            Some(located) => claimed(at, &located, now),
            None => vanished(at, event, now),
        },
        Event::BreakerOpen { until } => match located() {
            Some(located) => breaker_open(at, &located, *until, now),
            None => vanished(at, event, now),
        },
        Event::WhenFalse => match located() {
            Some(located) => when_false(at, &located, now),
            None => vanished(at, event, now),
        },
        Event::Paused => hold(
            at,
            at.step_index,
            later(now, PAUSED_RECHECK),
            Reason::Paused,
            now,
        ),
        Event::SlowedDown { until } => hold(at, at.step_index, *until, Reason::Slowed, now),
        Event::NoSlot { until } => wait(at, *until, now),
        Event::HandedBack => wait(at, at.due.unwrap_or(now), now),
        Event::Answered {
            started,
            verdict,
            jitter,
        } => match located() {
            Some(located) => answered(at, &located, *started, verdict, *jitter, now),
            None => vanished(at, event, now),
        },
        Event::OverQuota {
            started,
            retry_at,
            delay,
            until,
        } => match located() {
            Some(located) => over_quota(at, &located, *started, *retry_at, *delay, *until),
            None => vanished(at, event, now),
        },
        Event::NotifyAnswered { verdict, jitter } => notified(at, verdict, *jitter, now),
        Event::NotifyGone => Move {
            kind: MoveKind::NotifySkipped,
            landing: Landing {
                notify_attempts: at.notify_attempts.saturating_add(1),
                notify_at: None,
                ..Landing::staying(at).dead()
            },
        },
    }
}

impl Landing {
    /// The job where it is, nothing changed: `pending`.
    fn staying(at: &Position) -> Self {
        Self {
            state: JobState::Pending,
            step_index: at.step_index,
            channel_index: at.channel_index,
            attempts: at.attempts,
            series_started_at: at.series_started_at,
            held: at.held,
            next_at: at.due,
            reason: None,
            attempts_added: 0,
            notify_at: None,
            notify_attempts: at.notify_attempts,
        }
    }

    fn dead(self) -> Self {
        Self {
            state: JobState::Dead,
            next_at: None,
            ..self
        }
    }

    /// A fresh series on `step_index`'s channel `channel_index`, due now.
    fn fresh_series(self, step_index: usize, channel_index: usize, now: Timestamp) -> Self {
        Self {
            state: JobState::Pending,
            step_index,
            channel_index,
            attempts: 0,
            series_started_at: None,
            held: Duration::ZERO,
            next_at: Some(now),
            reason: None,
            ..self
        }
    }
}

/// The series' held time once it waits, unattempted, until `until`
/// (decided at `now`): all of it from the time the job was due, so that
/// the time it waited for the engine past that (a backlog, retries held
/// back by engine health, the engine stopped) counts as held too. Nothing
/// counts before a series' first attempt: the series starts with it.
fn held_through(at: &Position, now: Timestamp, until: Timestamp) -> Duration {
    if at.attempts == 0 {
        return at.held;
    }
    let from = at.due.map_or(now, |due| due.min(now));
    at.held.saturating_add(until_from(from, until))
}

fn until_from(now: Timestamp, until: Timestamp) -> Duration {
    Duration::try_from(now.duration_until(until)).unwrap_or_default()
}

fn wait(at: &Position, until: Timestamp, now: Timestamp) -> Move {
    Move {
        kind: MoveKind::Wait { until },
        landing: Landing {
            held: held_through(at, now, until),
            next_at: Some(until),
            ..Landing::staying(at)
        },
    }
}

fn hold(
    at: &Position,
    step_index: usize,
    until: Timestamp,
    reason: Reason,
    now: Timestamp,
) -> Move {
    Move {
        kind: MoveKind::Hold { until, reason },
        landing: Landing {
            state: JobState::Suspended,
            step_index,
            held: held_through(at, now, until),
            next_at: Some(until),
            reason: Some(reason),
            ..Landing::staying(at)
        },
    }
}

/// The job's flow, step or channel is not in the policy in force: it is
/// looked at again later, never dropped. After an answer the attempt is
/// still recorded (its decision `suspend`).
fn vanished(at: &Position, event: &Event, now: Timestamp) -> Move {
    let until = later(now, VANISHED_RECHECK);
    let mut moved = hold(at, at.step_index, until, Reason::FlowRemoved, now);
    if let Event::Answered { .. } | Event::OverQuota { .. } = event {
        moved.kind = MoveKind::RetryHeld {
            due: now,
            delay: Duration::ZERO,
            until,
            reason: Reason::FlowRemoved,
        };
        moved.landing.attempts_added = 1;
        moved.landing.attempts = at.attempts.saturating_add(1);
    }
    moved
}

fn claimed(at: &Position, located: &Located<'_>, now: Timestamp) -> Move {
    if let Some(held) = hold_at(located.step, now) {
        return hold(at, located.step_index, held.until, held.reason, now);
    }
    Move {
        kind: MoveKind::Attempt {
            step_index: located.step_index,
            channel_index: located.channel_index,
        },
        landing: Landing {
            state: JobState::Running,
            step_index: located.step_index,
            channel_index: located.channel_index,
            ..Landing::staying(at)
        },
    }
}

/// The step's `when` does not hold: on to the next step, or done.
fn when_false(at: &Position, located: &Located<'_>, now: Timestamp) -> Move {
    let next_step = located.step_index + 1;
    if next_step < located.flow.steps.len() {
        Move {
            kind: MoveKind::StepSkipped {
                next_step: Some(next_step),
            },
            landing: Landing::staying(at).fresh_series(next_step, 0, now),
        }
    } else {
        Move {
            kind: MoveKind::StepSkipped { next_step: None },
            landing: Landing {
                state: JobState::Succeeded,
                step_index: located.step_index,
                next_at: None,
                ..Landing::staying(at)
            },
        }
    }
}

fn breaker_open(at: &Position, located: &Located<'_>, until: Timestamp, now: Timestamp) -> Move {
    let fallback = located.channel_index + 1;
    if fallback < located.step.channel_count() {
        Move {
            kind: MoveKind::Skip {
                channel_index: fallback,
                until,
            },
            landing: Landing::staying(at).fresh_series(located.step_index, fallback, now),
        }
    } else {
        hold(at, located.step_index, until, Reason::BreakerOpen, now)
    }
}

/// The series once the attempt that started at `started` is counted.
fn attempted(at: &Position, located: &Located<'_>, started: Timestamp) -> Attempted {
    Attempted {
        step_index: located.step_index,
        channel_index: located.channel_index,
        attempts: at.attempts.saturating_add(1),
        series_started_at: match (at.attempts, at.series_started_at) {
            (0, _) | (_, None) => started,
            (_, Some(first)) => first,
        },
        held: held_through(at, started, started),
        retry_choice: at.retry_choice,
        adapt_cut: at.adapt_cut,
    }
}

fn answered(
    at: &Position,
    located: &Located<'_>,
    started: Timestamp,
    verdict: &Verdict,
    jitter: f64,
    now: Timestamp,
) -> Move {
    let series = attempted(at, located, started);
    let next = decide(located.flow, &series, verdict, now, jitter);
    let counted = Landing {
        step_index: located.step_index,
        channel_index: located.channel_index,
        attempts: series.attempts,
        series_started_at: Some(series.series_started_at),
        held: series.held,
        attempts_added: 1,
        ..Landing::staying(at)
    };
    match next {
        Then::Retry { at: when, delay } => Move {
            kind: MoveKind::Retry { at: when, delay },
            landing: Landing {
                next_at: Some(when),
                ..counted
            },
        },
        Then::Suspend {
            at: due,
            delay,
            hold,
        } => Move {
            kind: MoveKind::RetryHeld {
                due,
                delay,
                until: hold.until,
                reason: hold.reason,
            },
            landing: Landing {
                state: JobState::Suspended,
                held: series.held.saturating_add(hold.length_from(due)),
                next_at: Some(hold.until),
                reason: Some(hold.reason),
                ..counted
            },
        },
        Then::Fallback { channel_index } => Move {
            kind: MoveKind::Fallback { channel_index },
            landing: counted.fresh_series(located.step_index, channel_index, now),
        },
        Then::NextStep { step_index } => Move {
            kind: MoveKind::NextStep { step_index },
            landing: counted.fresh_series(step_index, 0, now),
        },
        Then::Succeeded => Move {
            kind: MoveKind::Succeeded,
            landing: Landing {
                state: JobState::Succeeded,
                next_at: None,
                ..counted
            },
        },
        Then::Dead { reason } => Move {
            kind: MoveKind::Dead { reason },
            landing: Landing {
                reason: Some(reason),
                notify_at: located.flow.on_dead.as_ref().map(|_| now),
                ..counted.dead()
            },
        },
    }
}

/// A retry over quota waits for the quota's next window (never before the
/// retry was due); the wait is held time.
fn over_quota(
    at: &Position,
    located: &Located<'_>,
    started: Timestamp,
    retry_at: Timestamp,
    delay: Duration,
    until: Timestamp,
) -> Move {
    let series = attempted(at, located, started);
    let until = until.max(retry_at);
    Move {
        kind: MoveKind::RetryHeld {
            due: retry_at,
            delay,
            until,
            reason: Reason::Quota,
        },
        landing: Landing {
            state: JobState::Suspended,
            step_index: located.step_index,
            channel_index: located.channel_index,
            attempts: series.attempts,
            series_started_at: Some(series.series_started_at),
            held: series.held.saturating_add(until_from(retry_at, until)),
            next_at: Some(until),
            reason: Some(Reason::Quota),
            attempts_added: 1,
            ..Landing::staying(at)
        },
    }
}

/// A notification is retried like the built-in `standard` template.
fn notified(at: &Position, verdict: &Verdict, jitter: f64, now: Timestamp) -> Move {
    let attempt = at.notify_attempts.saturating_add(1);
    let dead = Landing {
        notify_attempts: attempt,
        notify_at: None,
        ..Landing::staying(at).dead()
    };
    let kind = match verdict.outcome {
        Outcome::Success => MoveKind::Notified,
        Outcome::Fail => MoveKind::NotifyGaveUp,
        Outcome::Retry | Outcome::RefreshAuth => {
            match delay_before_retry(&notify_template(), attempt, jitter) {
                Some(delay) => {
                    let delay = verdict.retry_after.unwrap_or(delay);
                    MoveKind::NotifyRetry {
                        at: later(now, delay),
                        delay,
                    }
                }
                None => MoveKind::NotifyGaveUp,
            }
        }
    };
    let notify_at = match kind {
        MoveKind::NotifyRetry { at, .. } => Some(at),
        _ => None,
    };
    Move {
        kind,
        landing: Landing { notify_at, ..dead },
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
