//! A job on paper: the engine's own classifier ([`crate::retry::classify()`])
//! and state machine ([`crate::lifecycle::next`]) driven on a manual clock,
//! with answers supplied by the caller instead of a network, and the
//! caller's word for what the engine would otherwise learn from shared
//! state: that a channel's breaker is open ([`Answer::BreakerOpen`]), that
//! a retry is over the hourly quota ([`Answer::OverQuota`]). `steadfast
//! test` and `steadfast explain` both show what this computes, so what they
//! show is what the engine does.
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
//! Before each attempt the run gives the machine [`Event::Claimed`] at the
//! time the attempt is due, as the executor does when it claims the job, so
//! calendars hold it exactly as they would; held time does not count
//! against `total_timeout`. Concurrency and rate waits are not simulated.
//! A parallel step runs as one series whose answers stand for every branch
//! (`a+b` in the channel column): its branches share the template, and
//! with the same answers each one's timeline is the same.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::engine::prepare::{prepare, Prepared};
use crate::expr::{JobFacts, KeptResponse, Responses, Scope};
use crate::lifecycle::{
    next, template_at, Decision, Event, Move, MoveKind, Outcome, Position, Reason,
};
use crate::model::{CompiledPolicy, DeliveryResult, Flow, Outcome as Verdicts};
use crate::retry::quota::window_end;
use crate::retry::{classify, Verdict};

/// The jitter samples of the three lanes: lowest, middle, highest.
const SAMPLES: [f64; 3] = [0.0, 0.5, 1.0];

/// The most calendar holds in a row before an attempt (a calendar that
/// never opens stops there).
const MOST_HOPS: usize = 64;

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

/// What the partner does to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An answer (or a transport error), judged by the step's classifier.
    Result(DeliveryResult),
    /// A failure judged `retry` whatever the classifier says: a partner
    /// that keeps failing, for `explain`.
    Failing,
    /// The channel's circuit breaker is open when the attempt would go
    /// (it opened then, and lets a probe through after its `cooldown`):
    /// nothing is sent, the job goes to the step's next fallback (a row
    /// with outcome `skipped`) or waits for the probe.
    BreakerOpen,
    /// This answer, and the retry it calls for is over the hourly retry
    /// quota: the job waits for the next full hour (`suspended`, reason
    /// `quota`).
    OverQuota(DeliveryResult),
}

/// What the caller is asked for: the attempt about to be made.
#[derive(Debug, Clone, Copy)]
pub struct Upcoming {
    /// 1-based, over the whole job.
    pub number: u32,
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
    /// When it was due, before any hold.
    pub due: Span,
    /// When it starts.
    pub at: Span,
    /// Why it waited past `due`: a calendar, an open breaker, a quota.
    pub hold: Option<Reason>,
    pub answer: Answer,
    /// `skipped` for a channel whose breaker was open.
    pub outcome: Outcome,
    /// The rule that decided (`explain`'s failures: `failing`; none for a
    /// skip).
    pub rule: String,
    /// What follows.
    pub decision: Decision,
    /// The wait before the next attempt of the same channel, for a retry.
    pub delay: Option<DurationSpan>,
    /// The partner's `Retry-After`, when the rule honoured it.
    pub retry_after: Option<Duration>,
    /// With [`JitterSplit::FollowNominal`]: what the engine would do after
    /// this attempt with the shortest and the longest delays, when that
    /// differs from the nominal path.
    pub split: Option<(&'static str, &'static str)>,
    /// The body the step's `body` built for this attempt, when the run was
    /// given the job ([`JobInput`]) and the step maps one.
    pub body: Option<serde_json::Value>,
    /// The step's `retry` entry whose `when` held (its index), if any.
    pub retry_entry: Option<usize>,
    /// The expression that failed (error kind `mapping`), or, for a step
    /// skipped, the `when` that did not hold.
    pub note: Option<String>,
}

/// The job a run reads when its flow's expressions do: its payload, key,
/// priority, and the responses of steps before the first one run.
#[derive(Debug, Clone, Default)]
pub struct JobInput {
    /// JSON text.
    pub payload: String,
    pub key: String,
    pub priority: i32,
    pub responses: Responses,
}

impl JobInput {
    fn scope(&self, flow: &Flow, created_at: Timestamp, responses: &Responses) -> Scope {
        Scope::new(
            &self.payload,
            JobFacts {
                id: "explain",
                key: &self.key,
                flow: &flow.name,
                priority: self.priority,
                created_at,
            },
            responses,
        )
    }
}

/// How a simulated job ends.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Succeeded,
    Dead(Reason),
    /// The caller had no more answers: the job waits for its next attempt,
    /// `pending`, or `suspended` for `held` (a calendar, a breaker, a quota).
    Pending {
        step_index: usize,
        channel_index: usize,
        next: Span,
        held: Option<Reason>,
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
        "answer {answer} is `breaker: open`, but it falls to channel `{channel}`, which has \
         no `circuit_breaker` (its breaker is never open): give the channel one, or write \
         the partner's answer instead"
    )]
    NoBreaker { answer: u32, channel: String },
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The most attempts before the run stops with [`End::Limit`].
    pub limit: u32,
    pub split: JitterSplit,
    /// Where each channel's history cuts the retries of templates that
    /// `adapt`: the first attempt number not made, by channel (`explain
    /// --history`). Empty: no history.
    pub history: std::collections::BTreeMap<String, u32>,
}

/// Where one lane stands: the job's position, and when its next attempt is
/// due before any hold.
#[derive(Debug, Clone)]
struct Lane {
    position: Position,
    /// When the next attempt is due, before any hold: what `due` reports.
    due: Timestamp,
    /// Why it waits past `due`, as the move that put it there said.
    held: Option<Reason>,
}

impl Lane {
    /// Claims the lane's job when it is due, as the scheduler would, and
    /// again at the end of each hold the machine answers with (a
    /// maintenance window may end off hours); returns when the attempt
    /// starts and why it waited.
    fn claim(&mut self, policy: &CompiledPolicy, flow: &Flow) -> (Timestamp, Option<Reason>) {
        let mut at = self.position.due.unwrap_or(self.due);
        let mut reason = self.held;
        for _ in 0..MOST_HOPS {
            let claimed = next(&self.position, &Event::Claimed, policy, at);
            self.position = self.position.landed(flow, &claimed.landing);
            match claimed.kind {
                MoveKind::Hold { until, reason: why } if until > at => {
                    reason.get_or_insert(why);
                    at = until;
                }
                _ => break,
            }
        }
        (at, reason)
    }

    /// What the lane's job does with `answer`, in an attempt starting at
    /// `at`; `None` for a breaker whose channel has none.
    fn answer(
        &self,
        policy: &CompiledPolicy,
        answer: &Answer,
        at: Timestamp,
        sample: f64,
        history: &std::collections::BTreeMap<String, u32>,
    ) -> Result<(Move, Option<Verdict>), String> {
        let position = &self.position;
        let flow = policy.flow(&position.flow);
        let step = flow.and_then(|flow| flow.steps.get(position.step_index));
        let Some(step) = step else {
            return Err(position.step.clone());
        };
        let channel = step
            .channel_at(position.channel_index)
            .unwrap_or(&step.channel);
        // The cut history makes, for a template that adapts.
        let adapts = template_at(step, at, position.retry_choice).adapt.is_some();
        let cut = history.get(channel).copied().filter(|_| adapts);
        let cut_position;
        let position = match cut {
            Some(cut) => {
                cut_position = Position {
                    adapt_cut: Some(cut),
                    ..position.clone()
                };
                &cut_position
            }
            None => position,
        };
        let result = match answer {
            Answer::BreakerOpen => {
                let Some(breaker) = policy.channel(channel).and_then(|c| c.breaker.as_ref()) else {
                    return Err(channel.to_string());
                };
                let until = crate::clock::later(at, breaker.cooldown);
                let event = Event::BreakerOpen { until };
                return Ok((next(position, &event, policy, at), None));
            }
            Answer::Result(result) | Answer::OverQuota(result) => Some(result),
            Answer::Failing => None,
        };
        let verdict = match result {
            Some(result) => classify(step.classifier.as_deref(), result, &step.retry, at),
            None => Verdict {
                outcome: Verdicts::Retry,
                rule: "failing".to_string(),
                retry_after: None,
            },
        };
        let answered = Event::Answered {
            started: at,
            verdict: verdict.clone(),
            jitter: sample,
        };
        let mut moved = next(position, &answered, policy, at);
        if let (
            Answer::OverQuota(_),
            MoveKind::Retry {
                at: retry_at,
                delay,
            },
        ) = (answer, moved.kind)
        {
            let over = Event::OverQuota {
                started: at,
                retry_at,
                delay,
                until: window_end(at),
            };
            moved = next(position, &over, policy, at);
        }
        Ok((moved, Some(verdict)))
    }

    /// Applies `moved`, made at `at`.
    fn apply(&mut self, flow: &Flow, moved: &Move, at: Timestamp) {
        self.position = self.position.landed(flow, &moved.landing);
        self.due = match moved.kind {
            MoveKind::RetryHeld { due, .. } => due,
            _ => moved.landing.next_at.unwrap_or(at),
        };
        self.held = match moved.kind {
            MoveKind::RetryHeld { reason, .. } | MoveKind::Hold { reason, .. } => Some(reason),
            _ => None,
        };
    }
}

/// Runs a job of `flow` (a flow of `policy`) from `step_index`, its first
/// attempt due at `start`, asking `partner` for each attempt's answer
/// (`None`: no more). With `job`, the steps' expressions (`when`, `retry`
/// entries, `body`) are evaluated as the executor does; without, they are
/// not (the step runs, with its own template).
pub fn simulate(
    policy: &CompiledPolicy,
    flow: &Flow,
    step_index: usize,
    start: Timestamp,
    options: Options,
    job: Option<&JobInput>,
    mut partner: impl FnMut(Upcoming) -> Option<Answer>,
) -> Result<Run, SimError> {
    let Some(first) = flow.steps.get(step_index) else {
        return Err(SimError::NoSuchStep {
            flow: flow.name.clone(),
            step: format!("#{step_index}"),
        });
    };
    let position = Position {
        step: first.name.clone(),
        step_index,
        ..Position::fresh(flow, start)
    };
    let mut lanes: [Lane; 3] = std::array::from_fn(|_| Lane {
        position: position.clone(),
        due: start,
        held: None,
    });
    let mut attempts = Vec::new();
    let mut number = 0u32;
    // Answers given so far (a breaker that holds the job takes one and
    // records no attempt).
    let mut answered = 0u32;
    let mut responses = job.map(|j| j.responses.clone()).unwrap_or_default();
    loop {
        let (step_index, channel_index) = (
            lanes[1].position.step_index,
            lanes[1].position.channel_index,
        );
        if number >= options.limit {
            return Ok(Run {
                attempts,
                end: End::Limit,
            });
        }
        // The step's expressions, asked as the executor asks them at the
        // claim: skip the step, choose the template, build the body.
        let mut built = None;
        let mut retry_entry = None;
        let mut mapping_failed = None;
        let step = &flow.steps[step_index];
        if let (Some(job), true) = (job, step.reads_the_job()) {
            let scope = job.scope(flow, start, &responses);
            let step_starts = lanes[1].position.attempts == 0 && channel_index == 0;
            match prepare(step, channel_index, step_starts, &scope) {
                Prepared::Skip => {
                    number += 1;
                    let due = Span::of(lanes.each_ref().map(|l| l.due));
                    let mut moves = Vec::with_capacity(3);
                    for lane in &mut lanes {
                        let at = lane.position.due.unwrap_or(lane.due);
                        moves.push(next(&lane.position, &Event::WhenFalse, policy, at));
                    }
                    let nominal = moves[1].clone();
                    attempts.push(SimAttempt {
                        number,
                        step_index,
                        step: step.name.clone(),
                        channel_index,
                        channel: step.channel.clone(),
                        series_attempt: 0,
                        template: step.retry.name.clone(),
                        due,
                        at: due,
                        hold: None,
                        answer: Answer::Failing,
                        outcome: Outcome::Skipped,
                        rule: String::new(),
                        decision: nominal.decision().unwrap_or(Decision::NextStep),
                        delay: None,
                        retry_after: None,
                        split: None,
                        body: None,
                        retry_entry: None,
                        note: step.when.as_ref().map(|w| w.source().to_string()),
                    });
                    for (lane, moved) in lanes.iter_mut().zip(&moves) {
                        let at = lane.position.due.unwrap_or(lane.due);
                        lane.apply(flow, moved, at);
                    }
                    if nominal.kind == (MoveKind::StepSkipped { next_step: None }) {
                        return Ok(Run {
                            attempts,
                            end: End::Succeeded,
                        });
                    }
                    continue;
                }
                Prepared::Send { body, retry_choice } => {
                    for lane in &mut lanes {
                        lane.position.retry_choice = retry_choice;
                    }
                    retry_entry = retry_choice;
                    built = body.and_then(|text| serde_json::from_str(&text).ok());
                }
                Prepared::Failed(error) => mapping_failed = Some(error),
            }
        }
        let answer = match &mapping_failed {
            Some(error) => Answer::Result(Err(crate::model::TransportError {
                kind: crate::model::ErrorKind::Mapping,
                message: error.to_string(),
            })),
            None => match partner(Upcoming { number: number + 1 }) {
                Some(answer) => answer,
                None => {
                    return Ok(Run {
                        attempts,
                        end: End::Pending {
                            step_index,
                            channel_index,
                            next: Span::of(
                                lanes.each_ref().map(|l| l.position.due.unwrap_or(l.due)),
                            ),
                            held: lanes[1].held,
                        },
                    })
                }
            },
        };
        answered += 1;

        let due = Span::of(lanes.each_ref().map(|l| l.due));
        let mut holds = [None; 3];
        let mut starts = [start; 3];
        for ((lane, at), hold) in lanes.iter_mut().zip(&mut starts).zip(&mut holds) {
            (*at, *hold) = lane.claim(policy, flow);
        }
        let hold = holds[1].or(holds[2]).or(holds[0]);
        let (step_index, channel_index) = (
            lanes[1].position.step_index,
            lanes[1].position.channel_index,
        );
        let step = &flow.steps[step_index];
        // A parallel step's branches share the template and, here, the
        // answers: one timeline stands for each of them.
        let parallel_name = step.is_parallel().then(|| step.parallel.join("+"));
        let channel = parallel_name
            .as_deref()
            .unwrap_or_else(|| step.channel_at(channel_index).unwrap_or(&step.channel));

        let mut moves: Vec<Move> = Vec::with_capacity(3);
        let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(3);
        for ((lane, sample), at) in lanes.iter().zip(SAMPLES).zip(starts) {
            let (moved, verdict) = lane
                .answer(policy, &answer, at, sample, &options.history)
                .map_err(|channel| SimError::NoBreaker {
                    answer: answered,
                    channel,
                })?;
            moves.push(moved);
            verdicts.push(verdict);
        }
        let mut split = None;
        if !same_path(&moves[0].kind, &moves[1].kind) || !same_path(&moves[1].kind, &moves[2].kind)
        {
            let (lo, hi) = (describe(&moves[0].kind), describe(&moves[2].kind));
            if options.split == JitterSplit::Refuse {
                return Err(SimError::DependsOnJitter {
                    attempt: number + 1,
                    lo,
                    hi,
                });
            }
            split = Some((lo, hi));
            for i in [0, 2] {
                if !same_path(&moves[i].kind, &moves[1].kind) {
                    moves[i] = follow(&moves[1], starts[i]);
                }
            }
        }
        let nominal = moves[1].clone();
        // A breaker that holds the job records nothing: the next attempt
        // shows the wait.
        let recorded = !matches!(nominal.kind, MoveKind::Hold { .. });
        if recorded {
            number += 1;
            let delays: Option<Vec<Duration>> = moves
                .iter()
                .map(|m| match m.kind {
                    MoveKind::Retry { delay, .. } | MoveKind::RetryHeld { delay, .. } => {
                        Some(delay)
                    }
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
                series_attempt: lanes[1].position.attempts + u32::from(verdict.is_some()),
                template: template_at(step, starts[1], lanes[1].position.retry_choice)
                    .name
                    .clone(),
                due,
                at: Span::of(starts),
                hold,
                answer: answer.clone(),
                outcome: verdict
                    .as_ref()
                    .map_or(Outcome::Skipped, |v| v.outcome.into()),
                rule: verdict.as_ref().map(|v| v.rule.clone()).unwrap_or_default(),
                decision: nominal.decision().unwrap_or(Decision::Suspend),
                delay: delays.map(|d| DurationSpan::of([d[0], d[1], d[2]])),
                retry_after: verdict.and_then(|v| v.retry_after),
                split,
                body: built.take(),
                retry_entry,
                note: mapping_failed.as_ref().map(|e| e.expression.clone()),
            });
        }
        if let (MoveKind::NextStep { .. }, Answer::Result(Ok(response))) = (nominal.kind, &answer) {
            if flow.kept_responses.contains(&step.name) {
                responses.insert(
                    &step.name,
                    KeptResponse::new(response.status, &response.headers, &response.body),
                );
            }
        }
        for ((lane, moved), at) in lanes.iter_mut().zip(&moves).zip(starts) {
            lane.apply(flow, moved, at);
        }
        match nominal.kind {
            MoveKind::Succeeded => {
                return Ok(Run {
                    attempts,
                    end: End::Succeeded,
                })
            }
            MoveKind::Dead { reason } => {
                return Ok(Run {
                    attempts,
                    end: End::Dead(reason),
                })
            }
            _ => {}
        }
    }
}

/// The nominal lane's move for an outer lane that would have gone another
/// way: the same path, at the outer lane's own time where it has one.
fn follow(nominal: &Move, start: Timestamp) -> Move {
    let mut moved = nominal.clone();
    match &mut moved.kind {
        MoveKind::Retry { at, .. } => {
            *at = (*at).max(start);
            moved.landing.next_at = Some(*at);
        }
        MoveKind::RetryHeld { due, .. } => *due = (*due).max(start),
        _ => {}
    }
    moved
}

/// Whether two lanes' moves lead the same way (times aside).
fn same_path(a: &MoveKind, b: &MoveKind) -> bool {
    match (a, b) {
        (
            MoveKind::Retry { .. } | MoveKind::RetryHeld { .. },
            MoveKind::Retry { .. } | MoveKind::RetryHeld { .. },
        ) => true,
        (MoveKind::Hold { reason: x, .. }, MoveKind::Hold { reason: y, .. }) => x == y,
        (
            MoveKind::Skip {
                channel_index: x, ..
            },
            MoveKind::Skip {
                channel_index: y, ..
            },
        ) => x == y,
        _ => a == b,
    }
}

fn describe(kind: &MoveKind) -> &'static str {
    match kind {
        MoveKind::Retry { .. } | MoveKind::RetryHeld { .. } => "retry",
        MoveKind::Fallback { .. } | MoveKind::Skip { .. } => "go to the next fallback",
        MoveKind::NextStep { .. } => "move to the next step",
        MoveKind::StepSkipped { .. } => "skip the step",
        MoveKind::Succeeded => "succeed",
        MoveKind::Dead { .. } => "give up (dead)",
        MoveKind::Hold { .. } | MoveKind::Wait { .. } => "wait",
        MoveKind::Attempt { .. } => "attempt",
        MoveKind::NotifyRetry { .. }
        | MoveKind::Notified
        | MoveKind::NotifyGaveUp
        | MoveKind::NotifySkipped => "notify",
    }
}

/// `at` as an offset from `start`, for display and matching.
pub fn offset(start: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(start.duration_until(at)).unwrap_or_default()
}

pub mod payload;

#[cfg(test)]
mod tests;
