//! A job on paper: the engine's own classifier ([`crate::retry::classify()`])
//! and interpreter ([`crate::engine::interpreter::decide`]) driven on a
//! manual clock, with answers supplied by the caller instead of a network.
//! `steadfast test` and `steadfast explain` both show what this computes, so
//! what they show is what the engine does.
//!
//! # Jitter as bounds
//!
//! The run is made in three lanes at once, with the jitter sample at its
//! lowest (0), middle (0.5) and highest (1): a delay only grows with the
//! sample, so every time is reported as a [`Span`] from the earliest to the
//! latest the engine could choose, with the middle lane's value as the one
//! to show (for `±p%` jitter, the delay before jitter). Without jitter the
//! three lanes agree and a span is one instant. When the lanes would decide
//! differently (a retry that fits under `total_timeout` only with luck),
//! [`JitterSplit`] says what to do: stop with [`SimError::DependsOnJitter`]
//! (no single answer is true: `test`), or follow the middle lane and mark
//! the attempt (`explain`).
//!
//! # What is left out
//!
//! Attempts take no time (the engine decides when an attempt finishes; a
//! partner that times out after 10s moves every later attempt by 10s).
//! Calendars are the engine's own: before each attempt the run asks
//! [`hold_at`] whether the step's `hours` hold it (as the executor does when
//! it claims the job), and a retry that falls where the step holds waits for
//! the hold's end; held time does not count against `total_timeout`.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;

pub use crate::engine::interpreter::HoldReason;
use crate::engine::interpreter::{
    decide, hold_at, signed, template_at, DeadReason, Next, Position,
};
use crate::model::{DeliveryResult, Flow, Outcome};
use crate::retry::{classify, Verdict};

/// The jitter samples of the three lanes: lowest, middle, highest.
const SAMPLES: [f64; 3] = [0.0, 0.5, 1.0];

/// An instant known within bounds: `lo ≤ mid ≤ hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub lo: Timestamp,
    /// The middle lane's value: what to show as "the" time.
    pub mid: Timestamp,
    pub hi: Timestamp,
}

impl Span {
    pub fn exact(at: Timestamp) -> Self {
        Self {
            lo: at,
            mid: at,
            hi: at,
        }
    }

    fn of(lanes: [Timestamp; 3]) -> Self {
        Self {
            lo: lanes.iter().copied().min().unwrap_or(lanes[1]),
            mid: lanes[1],
            hi: lanes.iter().copied().max().unwrap_or(lanes[1]),
        }
    }

    pub fn is_exact(&self) -> bool {
        self.lo == self.hi
    }
}

/// A duration known within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpan {
    pub lo: Duration,
    pub mid: Duration,
    pub hi: Duration,
}

impl DurationSpan {
    fn of(lanes: [Duration; 3]) -> Self {
        Self {
            lo: lanes.iter().copied().min().unwrap_or(lanes[1]),
            mid: lanes[1],
            hi: lanes.iter().copied().max().unwrap_or(lanes[1]),
        }
    }

    pub fn is_exact(&self) -> bool {
        self.lo == self.hi
    }
}

/// The zone of the calendar of `flow`'s step `step_index`, if it has one:
/// where its times are worth showing in local time.
pub fn step_zone(flow: &Flow, step_index: usize) -> Option<TimeZone> {
    let hours = flow.steps.get(step_index)?.hours.as_ref()?;
    Some(hours.calendar.timezone().clone())
}

/// When an attempt due at `due` may start under `step`'s calendar, and why
/// it waited. A hold may end where another begins (a maintenance window
/// that ends off hours), so this asks again until the step is free, as the
/// executor does each time it claims the job; a calendar that never opens
/// stops after a bounded number of hops.
fn release(step: &crate::model::Step, due: Timestamp) -> (Timestamp, Option<HoldReason>) {
    const MOST_HOPS: usize = 64;
    let mut at = due;
    let mut reason = None;
    for _ in 0..MOST_HOPS {
        match hold_at(step, at) {
            Some(hold) if hold.until > at => {
                reason.get_or_insert(hold.reason);
                at = hold.until;
            }
            _ => break,
        }
    }
    (at, reason)
}

/// What the partner does to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An answer (or a transport error), judged by the step's classifier.
    Result(DeliveryResult),
    /// A failure judged `retry` whatever the classifier says: a partner
    /// that keeps failing, for `explain`.
    Failing,
}

/// What the caller is asked for: the attempt about to be made.
#[derive(Debug, Clone, Copy)]
pub struct Upcoming<'a> {
    /// 1-based, over the whole job.
    pub number: u32,
    pub step: &'a str,
    pub channel: &'a str,
}

/// One simulated attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct SimAttempt {
    /// 1-based, over the whole job.
    pub number: u32,
    pub step_index: usize,
    pub step: String,
    /// 0 the primary, `k` the k-th fallback.
    pub channel_index: usize,
    pub channel: String,
    /// 1-based, within this channel's series.
    pub series_attempt: u32,
    /// The retry template in force.
    pub template: String,
    /// When it was due, before any calendar hold.
    pub due: Span,
    /// When it starts.
    pub at: Span,
    pub hold: Option<HoldReason>,
    pub answer: Answer,
    pub outcome: Outcome,
    /// The rule that decided (`explain`'s failures: `failing`).
    pub rule: String,
    /// What follows: the interpreter's decision word.
    pub decision: &'static str,
    /// The wait before the next attempt of the same channel, for a retry.
    pub delay: Option<DurationSpan>,
    /// The partner's `Retry-After`, when the rule honoured it.
    pub retry_after: Option<Duration>,
    /// With [`JitterSplit::FollowNominal`]: what the engine would do after
    /// this attempt with the shortest and the longest delays, when that
    /// differs from the nominal path.
    pub split: Option<(&'static str, &'static str)>,
}

/// How a simulated job ends.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Succeeded,
    Dead(DeadReason),
    /// The caller had no more answers: the job waits for its next attempt.
    Pending {
        step_index: usize,
        channel_index: usize,
        next: Span,
    },
    /// The attempt limit was reached first.
    Limit,
}

/// A simulated job: every attempt, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub attempts: Vec<SimAttempt>,
    pub end: End,
}

/// A run that has no single answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("flow `{flow}` has no step `{step}`")]
    NoSuchStep { flow: String, step: String },
    #[error(
        "after attempt {attempt}, jitter decides what comes next: with the shortest delays \
         the engine would {lo}, with the longest it would {hi}; give the template \
         `jitter: none`, or change the case so that it does not depend on luck"
    )]
    DependsOnJitter {
        attempt: u32,
        lo: &'static str,
        hi: &'static str,
    },
}

/// What to do when the lanes would decide differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterSplit {
    /// Stop with [`SimError::DependsOnJitter`] (`test`: no single answer).
    Refuse,
    /// Follow the middle lane and mark the attempt ([`SimAttempt::split`]):
    /// `explain` shows the nominal path and says where luck decides.
    FollowNominal,
}

/// How a run is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The most attempts before the run stops with [`End::Limit`].
    pub limit: u32,
    pub split: JitterSplit,
}

/// Where one lane stands: its own clock and position.
#[derive(Debug, Clone)]
struct Lane {
    /// When the next attempt is due.
    due: Timestamp,
    position: Position,
}

/// Runs a job of `flow` from `step_index`, its first attempt due at
/// `start`, asking `partner` for each attempt's answer (`None`: no more).
pub fn simulate(
    flow: &Flow,
    step_index: usize,
    start: Timestamp,
    options: Options,
    mut partner: impl FnMut(Upcoming<'_>) -> Option<Answer>,
) -> Result<Run, SimError> {
    if step_index >= flow.steps.len() {
        return Err(SimError::NoSuchStep {
            flow: flow.name.clone(),
            step: format!("#{step_index}"),
        });
    }
    let fresh = |step_index, channel_index, due| Lane {
        due,
        position: Position {
            step_index,
            channel_index,
            attempts: 0,
            series_started_at: due,
            held: Duration::ZERO,
        },
    };
    let mut lanes: [Lane; 3] = std::array::from_fn(|_| fresh(step_index, 0, start));
    let mut attempts = Vec::new();
    let mut number = 0u32;
    loop {
        let (step_index, channel_index) = (
            lanes[1].position.step_index,
            lanes[1].position.channel_index,
        );
        let step = &flow.steps[step_index];
        let channel = step.channel_at(channel_index).unwrap_or(&step.channel);
        if number >= options.limit {
            return Ok(Run {
                attempts,
                end: End::Limit,
            });
        }
        let Some(answer) = partner(Upcoming {
            number: number + 1,
            step: &step.name,
            channel,
        }) else {
            return Ok(Run {
                attempts,
                end: End::Pending {
                    step_index,
                    channel_index,
                    next: Span::of(lanes.each_ref().map(|l| l.due)),
                },
            });
        };
        number += 1;

        let due = Span::of(lanes.each_ref().map(|l| l.due));
        let mut hold = None;
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(3);
        let mut nexts: Vec<Next> = Vec::with_capacity(3);
        let mut starts = [start; 3];
        for (lane, (sample, started)) in lanes.iter_mut().zip(SAMPLES.iter().zip(&mut starts)) {
            let (at, reason) = release(step, lane.due);
            if reason.is_some() {
                hold = reason;
                // As in the executor: a hold before a series' first attempt
                // adds nothing, the deadline runs from that attempt.
                if lane.position.attempts > 0 {
                    let waited = Duration::try_from(lane.due.duration_until(at));
                    lane.position.held = lane
                        .position
                        .held
                        .saturating_add(waited.unwrap_or_default());
                }
            }
            *started = at;
            if lane.position.attempts == 0 {
                lane.position.series_started_at = at;
            }
            lane.position.attempts += 1;
            let verdict = match &answer {
                Answer::Result(result) => {
                    classify(step.classifier.as_deref(), result, &step.retry, at)
                }
                Answer::Failing => Verdict {
                    outcome: Outcome::Retry,
                    rule: "failing".to_string(),
                    retry_after: None,
                },
            };
            nexts.push(decide(flow, &lane.position, &verdict, at, *sample));
            verdicts.push(verdict);
        }
        let mut split = None;
        if !same_path(&nexts[0], &nexts[1]) || !same_path(&nexts[1], &nexts[2]) {
            let (lo, hi) = (describe(&nexts[0]), describe(&nexts[2]));
            if options.split == JitterSplit::Refuse {
                return Err(SimError::DependsOnJitter {
                    attempt: number,
                    lo,
                    hi,
                });
            }
            split = Some((lo, hi));
            for i in [0, 2] {
                if !same_path(&nexts[i], &nexts[1]) {
                    // The outer lane follows the nominal path, at its own
                    // time where it has one.
                    nexts[i] = match &nexts[1] {
                        Next::Retry { at, delay } => Next::Retry {
                            at: (*at).max(starts[i]),
                            delay: *delay,
                        },
                        Next::Suspend { at, delay, hold } => Next::Suspend {
                            at: (*at).max(starts[i]),
                            delay: *delay,
                            hold: *hold,
                        },
                        other => other.clone(),
                    };
                }
            }
        }
        let next = nexts[1].clone();
        let delays: Option<Vec<Duration>> = nexts
            .iter()
            .map(|n| match n {
                Next::Retry { delay, .. } | Next::Suspend { delay, .. } => Some(*delay),
                _ => None,
            })
            .collect();
        let verdict = verdicts.swap_remove(1);
        attempts.push(SimAttempt {
            number,
            step_index,
            step: step.name.clone(),
            channel_index,
            channel: channel.to_string(),
            series_attempt: lanes[1].position.attempts,
            template: template_at(step, starts[1]).name.clone(),
            due,
            at: Span::of(starts),
            hold,
            answer,
            outcome: verdict.outcome,
            rule: verdict.rule,
            decision: next.decision(),
            delay: delays.map(|d| DurationSpan::of([d[0], d[1], d[2]])),
            retry_after: verdict.retry_after,
            split,
        });
        for ((lane, next), at) in lanes.iter_mut().zip(&nexts).zip(starts) {
            match next {
                // The hold a suspension names is found again by `release`
                // before the next attempt, which also counts it as held.
                Next::Retry { at, .. } | Next::Suspend { at, .. } => lane.due = *at,
                Next::Fallback { channel_index } => {
                    *lane = fresh(lane.position.step_index, *channel_index, at);
                }
                Next::NextStep { step_index } => *lane = fresh(*step_index, 0, at),
                Next::Succeeded | Next::Dead { .. } => {}
            }
        }
        match next {
            Next::Succeeded => {
                return Ok(Run {
                    attempts,
                    end: End::Succeeded,
                })
            }
            Next::Dead { reason } => {
                return Ok(Run {
                    attempts,
                    end: End::Dead(reason),
                })
            }
            Next::Retry { .. }
            | Next::Suspend { .. }
            | Next::Fallback { .. }
            | Next::NextStep { .. } => {}
        }
    }
}

/// Whether two lanes' decisions lead the same way (times aside).
fn same_path(a: &Next, b: &Next) -> bool {
    match (a, b) {
        (Next::Retry { .. } | Next::Suspend { .. }, Next::Retry { .. } | Next::Suspend { .. }) => {
            true
        }
        _ => a == b,
    }
}

fn describe(next: &Next) -> &'static str {
    match next {
        Next::Retry { .. } | Next::Suspend { .. } => "retry",
        Next::Fallback { .. } => "go to the next fallback",
        Next::NextStep { .. } => "move to the next step",
        Next::Succeeded => "succeed",
        Next::Dead { .. } => "give up (dead)",
    }
}

/// `at` as an offset from `start`, for display and matching.
pub fn offset(start: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(start.duration_until(at)).unwrap_or_default()
}

/// `start + d`, saturating.
pub fn after(start: Timestamp, d: Duration) -> Timestamp {
    start.saturating_add(signed(d)).unwrap_or(start)
}

#[cfg(test)]
mod tests;
