//! Runs one attempt of a claimed job under the policy in force when it
//! starts. The executor does the I/O and nothing else: it asks the gate
//! (breaker, concurrency, rate), sends, asks the retry quota, and feeds each
//! of those events to the state machine ([`crate::lifecycle::next`]); the
//! machine's move becomes the [`Transition`] the step log stores, with the
//! attempt's row when one was made.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::branches::{outlook, Branch, Branches, Outlook};
use super::gate::{ChannelGate, Gate, Sent};
use super::prepare::{self, Prepared};
use super::LivePolicy;
use crate::channels::{Deadline, Delivery, Pick, SharedChannels};
use crate::clock::SharedClock;
use crate::expr::{KeptResponse, Responses};
use crate::lifecycle::machine::notify_template;
use crate::lifecycle::{locate, next, Event, JobState, Move, MoveKind, Position, Reason};
use crate::model::{
    Channel, ChannelKind, CompiledPolicy, DeliveryResult, ErrorKind, Flow, Outcome as Verdicts,
    TransportError,
};
use crate::retry::classify;
use crate::store::view::JobView;
use crate::store::{AttemptRecord, JobRecord, Outcome, SharedStepLog, Transition};
use crate::telemetry::traces::AttemptFields;

pub use crate::model::ON_DEAD_STEP;

/// What every attempt needs.
#[derive(Clone)]
pub struct Executor {
    pub policy: Arc<LivePolicy>,
    pub channels: SharedChannels,
    pub clock: SharedClock,
    pub store: SharedStepLog,
    pub owner: Arc<str>,
    pub quotas: Arc<crate::retry::quota::RetryQuotas>,
    /// Flows an operator paused: their jobs are held, not attempted.
    pub paused: Arc<super::PausedFlows>,
    pub stats: Arc<dyn super::AttemptObserver>,
    pub metrics: Arc<crate::telemetry::AttemptMetrics>,
    /// A span per attempt, with `[telemetry] otlp_endpoint`.
    pub traces: Option<Arc<crate::telemetry::traces::Traces>>,
    /// Every attempt counted for its channel's insights.
    pub insights: Arc<crate::pacing::Recorder>,
    /// Where channels' histories cut `adapt` templates' retries.
    pub cuts: Arc<crate::pacing::Cuts>,
    /// Failed attempts per channel, for `slow_down`.
    pub errors: Arc<crate::pacing::ErrorWindows>,
    /// The engine's health, from each claim's lag.
    pub health: Arc<crate::pacing::health::EngineHealth>,
}

/// The attempt's note when history cut its retries.
fn adapted_note(cut: &crate::pacing::cuts::Cut, window: Duration, channel: &str) -> String {
    format!(
        "adapted: attempts from #{} on `{channel}` succeeded {} of {} times in the last {}; \
         no more retries here",
        cut.from,
        cut.successes,
        cut.attempts,
        crate::compile::format_duration(window)
    )
}

/// An attempt as the channel's insights count it.
fn counted<'a>(
    channel: &'a str,
    attempt: u32,
    result: &DeliveryResult,
    verdict: &crate::retry::Verdict,
    started: Timestamp,
    finished: Timestamp,
) -> crate::pacing::insights::Counted<'a> {
    let success = verdict.outcome == Verdicts::Success;
    let error = match result {
        _ if success => None,
        Ok(response) => Some(format!("status:{}", response.status)),
        Err(error) => Some(error.kind.as_str().to_string()),
    };
    crate::pacing::insights::Counted {
        channel,
        attempt,
        success,
        error,
        latency: finished.duration_since(started).unsigned_abs(),
        finished,
    }
}

/// The row that records an answered attempt (number `attempt` of its
/// series) and the move that followed it; the attempt's result comes back
/// for what else reads it.
fn attempt_row(
    job: &JobRecord,
    policy: &CompiledPolicy,
    answered: Answered,
    attempt: u32,
    moved: &Move,
) -> (AttemptRecord, DeliveryResult) {
    let (status, error, error_message) = split_result(&answered.result);
    // What a partner said when it refused is what an operator reads first.
    let refusal = match &answered.result {
        Ok(response) if answered.verdict.outcome != Verdicts::Success => {
            body_excerpt(&response.body)
        }
        _ => None,
    };
    let record = AttemptRecord {
        job_id: job.id.clone(),
        step: answered.step,
        channel: answered.channel,
        attempt,
        started_at: answered.started,
        finished_at: answered.finished,
        status,
        error,
        error_message: answered.note.or(error_message).or(refusal),
        outcome: answered.verdict.outcome.into(),
        rule: Some(answered.verdict.rule),
        decision: moved
            .decision()
            .unwrap_or(crate::lifecycle::Decision::Suspend),
        delay_ms: moved.kind.delay().map(millis),
        next_at: moved.landing.next_at,
        policy_version: policy.version.to_string(),
        member: answered.member,
        quick_tries: answered.quick_tries,
    };
    (record, answered.result)
}

/// The job's kept responses with `response`, the answer of `step`, added:
/// `None` when no later step reads it.
fn kept_responses(
    job: &JobRecord,
    policy: &CompiledPolicy,
    step: &str,
    response: &crate::model::Response,
) -> Option<String> {
    let flow = policy.flow(&job.flow)?;
    if !flow.kept_responses.contains(step) {
        return None;
    }
    let mut responses = Responses::from_log(job.responses.as_deref());
    responses.insert(
        step,
        KeptResponse::new(response.status, &response.headers, &response.body),
    );
    Some(responses.to_log())
}

/// Where one attempt goes (see [`Executor::route`]).
enum Route<'p> {
    Send {
        channel: &'p Channel,
        /// The member a pool picked.
        member: Option<String>,
    },
    /// Every member of the pool has its breaker open until then.
    AllOpen { until: Timestamp },
    /// The member picked is gone from the policy (a reload just now).
    Vanished,
}

/// Where `job` stands, for the state machine.
pub fn position_of(job: &JobRecord) -> Position {
    Position {
        flow: job.flow.clone(),
        step: job.step.clone(),
        step_index: job.step_index as usize,
        channel_index: job.channel_index as usize,
        attempts: job.attempt,
        series_started_at: job.series_started_at,
        held: Duration::from_millis(job.held_ms.max(0) as u64),
        due: job.next_at,
        notify_attempts: job.notify_attempts,
        retry_choice: None,
        adapt_cut: None,
    }
}

/// What an attempt brought back, with its times and where it went.
struct Answered {
    /// The step and channel attempted.
    step: String,
    channel: String,
    /// The member a pool sent it to.
    member: Option<String>,
    quick_tries: u32,
    /// The cut the channel's history makes (an `adapt` template), with the
    /// template's window.
    cut: Option<(crate::pacing::cuts::Cut, Duration)>,
    started: Timestamp,
    finished: Timestamp,
    result: DeliveryResult,
    verdict: crate::retry::Verdict,
    note: Option<String>,
}

impl Executor {
    /// Runs the next attempt of `job`, timed by the worker's `deadline`,
    /// and returns where it goes.
    pub async fn attempt(&self, job: &JobRecord, deadline: &Deadline) -> Transition {
        let policy = self.policy.current();
        let claimed_at = self.clock.now();
        if let Some(due) = job.next_at {
            let lag = claimed_at.duration_since(due).as_secs_f64().max(0.0);
            self.metrics.claim_lag(lag);
            self.health
                .observe(Duration::from_secs_f64(lag), claimed_at);
        }
        let mut position = position_of(job);
        let event = if self.paused.contains(&job.flow) {
            Event::Paused
        } else {
            Event::Claimed
        };
        let claimed = next(&position, &event, &policy, claimed_at);
        let MoveKind::Attempt { step_index, .. } = claimed.kind else {
            return self.unattempted(job, &policy, &claimed, claimed_at);
        };
        // The machine found the step and channel just now; should they be
        // gone, the job is handed back as it was rather than left running.
        let Some(located) = locate(&policy, &position) else {
            return self.release(job);
        };
        let mut body = None;
        if located.step.reads_the_job() {
            let step_starts = job.attempt == 0 && located.channel_index == 0;
            let scope = prepare::scope_of(job);
            match prepare::prepare(located.step, located.channel_index, step_starts, &scope) {
                Prepared::Send {
                    body: built,
                    retry_choice,
                } => {
                    body = built;
                    position.retry_choice = retry_choice;
                }
                Prepared::Skip => {
                    let skipped = next(&position, &Event::WhenFalse, &policy, claimed_at);
                    return self.unattempted(job, &policy, &skipped, claimed_at);
                }
                Prepared::Failed(error) => {
                    return self.mapping_failed(job, &policy, &position, &located, error);
                }
            }
        }
        if located.step.is_parallel() {
            return self
                .attempt_branches(job, &policy, &position, &located, body.as_deref())
                .await;
        }
        let step = located.step;
        let (channel, member) = match self.route(&policy, located.channel) {
            Route::Send { channel, member } => (channel, member),
            Route::AllOpen { until } => {
                let now = self.clock.now();
                let refused = next(&position, &Event::BreakerOpen { until }, &policy, now);
                return self.unattempted(job, &policy, &refused, now);
            }
            Route::Vanished => return self.release(job),
        };
        if let Some(slowed) = self.slowed_down(job, &policy, &position, channel) {
            return slowed;
        }

        let key = step_idempotency_key(&job.idempotency_key, step_index, &step.name);
        let gate = ChannelGate {
            channels: &self.channels,
            clock: &self.clock,
        };
        let slot = match gate.admit(channel).await {
            Gate::Go(slot) => slot,
            Gate::Refused(event) => {
                let now = self.clock.now();
                let refused = next(&position, &event, &policy, now);
                return self.unattempted(job, &policy, &refused, now);
            }
        };
        let span = self.traces.as_ref().map(|traces| {
            let fields = AttemptFields {
                job_id: &job.id,
                flow: &job.flow,
                step: &step.name,
                channel: &channel.name,
                attempt: job.attempt.saturating_add(1),
                policy_version: job.policy_version.as_str(),
            };
            traces.attempt(&fields, job.traceparent.as_deref())
        });
        let delivery = Delivery {
            job_id: &job.id,
            flow: &job.flow,
            step: &step.name,
            idempotency_key: &key,
            payload: body.as_deref().unwrap_or(&job.payload),
            deadline: Some(deadline),
            traceparent: span.as_ref().map(|span| span.traceparent.as_str()),
            keep_headers: located.flow.kept_responses.contains(&step.name),
        };
        let started = self.clock.now();
        let Sent {
            result,
            verdict,
            note,
            finished,
            quick_tries,
        } = gate
            .send(
                channel,
                &delivery,
                step,
                step.template(position.retry_choice),
            )
            .await;
        slot.finish(&verdict, &result, finished);
        self.count_attempt(
            channel,
            &counted(
                &channel.name,
                position.attempts.saturating_add(1),
                &result,
                &verdict,
                started,
                finished,
            ),
        );
        self.record_member_health(channel, member.as_deref(), &verdict, started, finished);
        if let Some(span) = span {
            let (status, error) = match &result {
                Ok(response) => (Some(response.status), None),
                Err(error) => (None, Some(error.kind.to_string())),
            };
            span.finish(
                verdict.outcome.as_str(),
                &verdict.rule,
                status,
                error.as_deref(),
            );
        }
        let template = step.template(position.retry_choice);
        let cut = self
            .adapt_cut(template, &channel.name, &verdict, finished)
            .await;
        position.adapt_cut = cut.as_ref().map(|(cut, _)| cut.from);
        self.conclude(
            job,
            &policy,
            &position,
            Answered {
                step: step.name.clone(),
                channel: located.channel.name.clone(),
                member,
                quick_tries,
                cut,
                started,
                finished,
                result,
                verdict,
                note,
            },
        )
    }

    /// Where an attempt on `channel` goes: the channel itself, or the
    /// member its pool picks now (that member's breaker, limits and
    /// sender then carry the attempt).
    fn route<'p>(&self, policy: &'p CompiledPolicy, channel: &'p Channel) -> Route<'p> {
        let ChannelKind::Pool(pool) = &channel.kind else {
            return Route::Send {
                channel,
                member: None,
            };
        };
        let pick = self.channels.pools().pick(
            &channel.name,
            pool,
            self.channels.breakers(),
            self.clock.now(),
        );
        match pick {
            Pick::Member(name) => match policy.channel(&name) {
                Some(member) => Route::Send {
                    channel: member.as_ref(),
                    member: Some(name),
                },
                None => Route::Vanished,
            },
            Pick::AllOpen { until } => Route::AllOpen { until },
        }
    }

    /// Feeds a pool's `healthiest` choice with an attempt on `member`.
    fn record_member_health(
        &self,
        channel: &Channel,
        member: Option<&str>,
        verdict: &crate::retry::Verdict,
        started: Timestamp,
        finished: Timestamp,
    ) {
        if member.is_some() {
            let latency = finished.duration_since(started).unsigned_abs();
            self.channels.pools().record(
                &channel.name,
                verdict.outcome == Verdicts::Success,
                latency,
            );
        }
    }

    /// Counts an attempt for `channel`'s insights and, on a channel that
    /// slows down, its failures.
    fn count_attempt(
        &self,
        channel: &crate::model::Channel,
        attempt: &crate::pacing::insights::Counted<'_>,
    ) {
        self.insights.record(attempt);
        if channel.slow_down.is_some() && !attempt.success {
            self.errors.failed(&channel.name, attempt.finished);
        }
    }

    /// The job held instead of attempted when `channel` is past its
    /// `slow_down` threshold and the job has delays left: suspended a
    /// random time within the channel's delay, reason `slowed`, nothing
    /// burnt.
    fn slowed_down(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        position: &Position,
        channel: &crate::model::Channel,
    ) -> Option<Transition> {
        let until = self.slowed_until(job, channel)?;
        let now = self.clock.now();
        let held = next(position, &Event::SlowedDown { until }, policy, now);
        let mut transition = self.unattempted(job, policy, &held, now);
        transition.slowed_added = 1;
        Some(transition)
    }

    /// Until when an attempt of `job` on `channel` waits, when the channel
    /// is past its `slow_down` threshold and the job has delays left: a
    /// random time within the channel's delay.
    fn slowed_until(&self, job: &JobRecord, channel: &crate::model::Channel) -> Option<Timestamp> {
        let slow = channel.slow_down.as_ref()?;
        if job.slowed >= slow.max_delays || !self.errors.is_over(&channel.name) {
            return None;
        }
        metrics::counter!("steadfast_slowed_total", "channel" => channel.name.clone()).increment(1);
        Some(crate::clock::later(
            self.clock.now(),
            slow.delay_for(fastrand::f64()),
        ))
    }

    /// The cut `channel`'s history makes in `template`'s retries, asked
    /// only when the answer calls for a retry and the template adapts.
    async fn adapt_cut(
        &self,
        template: &crate::model::RetryTemplate,
        channel: &str,
        verdict: &crate::retry::Verdict,
        now: Timestamp,
    ) -> Option<(crate::pacing::cuts::Cut, Duration)> {
        let adapt = template.adapt.as_ref()?;
        if !matches!(verdict.outcome, Verdicts::Retry | Verdicts::RefreshAuth) {
            return None;
        }
        let cut = self.cuts.cut(&self.store, channel, adapt, now).await?;
        Some((cut, adapt.window))
    }

    /// A parallel step: every branch due now is attempted at once, each
    /// decided by the state machine as a series of its own; the job then
    /// waits for its earliest branch, moves on when all succeeded, or dies
    /// with the first branch that does (see [`super::branches`]).
    async fn attempt_branches(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        position: &Position,
        located: &crate::lifecycle::Located<'_>,
        body: Option<&str>,
    ) -> Transition {
        let step = located.step;
        let now = self.clock.now();
        let mut all = Branches::from_log(job.branches.as_deref());
        // A job at the step's start (or retried from the dead-letter queue,
        // which starts the series again) sends every branch that has not
        // succeeded.
        let restart = job.attempt == 0;
        let branches = all.of_step(&step.name, &step.parallel, restart, now);
        let due: Vec<(String, Branch)> = branches
            .iter()
            .filter(|(_, branch)| branch.is_due(now))
            .map(|(name, branch)| (name.clone(), branch.clone()))
            .collect();
        let sent = futures_util::future::join_all(due.iter().map(|(name, branch)| {
            self.attempt_branch(job, policy, position, step, name, branch, body)
        }))
        .await;
        let mut records = Vec::new();
        let mut dead_move = None;
        let mut slowed = 0;
        for ((name, _), (branch, record, moved, delayed)) in due.iter().zip(sent) {
            slowed += u32::from(delayed);
            if let Some(moved) = moved.filter(|m| matches!(m.kind, MoveKind::Dead { .. })) {
                dead_move.get_or_insert(moved);
            }
            records.extend(record);
            branches.insert(name.clone(), branch);
        }
        let finished = self.clock.now();
        let total: u32 = branches.values().map(|b| b.attempts).sum();
        // The step as one answer: all branches succeeded, or (never seen:
        // a dead job is not claimed) a permanent failure rather than a loop.
        let settled = |outcome| {
            let answered = Event::Answered {
                started: finished,
                verdict: crate::retry::Verdict {
                    outcome,
                    rule: "parallel".to_string(),
                    retry_after: None,
                },
                jitter: 0.0,
            };
            next(position, &answered, policy, finished)
        };
        let moved = match outlook(branches, finished) {
            Outlook::AllSucceeded => settled(Verdicts::Success),
            Outlook::Dead { branch } => dead_move.unwrap_or_else(|| {
                tracing::warn!(job = %job.id, %branch, "a dead branch was claimed");
                settled(Verdicts::Fail)
            }),
            Outlook::Waiting { until } => {
                next(position, &Event::NoSlot { until }, policy, finished)
            }
        };
        let mut transition = self.transition(job, policy, &moved, finished);
        transition.attempts_added = u32::try_from(records.len()).unwrap_or(u32::MAX);
        if matches!(moved.kind, MoveKind::Wait { .. } | MoveKind::Dead { .. }) {
            // The job's count of the step's attempts, over its branches: a
            // retry from the dead-letter queue sets it to 0, which starts
            // the branches again.
            transition.series_attempts = total.max(1);
            transition.channel_index = 0;
        }
        transition.branches = Some(all.to_log());
        transition.branch_attempts = records;
        transition.slowed_added = slowed;
        transition
    }

    /// One branch's attempt: the branch after it, the attempt's row (none
    /// when the channel's breaker, limits or `slow_down` held it back), the
    /// machine's move for the branch, and whether `slow_down` delayed it.
    #[allow(clippy::too_many_arguments)]
    async fn attempt_branch(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        position: &Position,
        step: &crate::model::Step,
        name: &str,
        branch: &Branch,
        body: Option<&str>,
    ) -> (Branch, Option<AttemptRecord>, Option<Move>, bool) {
        let at = branch.position(position);
        let waiting = |until| branch.waiting(self.clock.now(), until);
        let vanished = || {
            let until = crate::clock::later(
                self.clock.now(),
                crate::lifecycle::machine::VANISHED_RECHECK,
            );
            (waiting(until), None, None, false)
        };
        let Some(branch_channel) = policy.channel(name) else {
            return vanished();
        };
        let (channel, member) = match self.route(policy, branch_channel) {
            Route::Send { channel, member } => (channel, member),
            Route::AllOpen { until } => return (waiting(until), None, None, false),
            Route::Vanished => return vanished(),
        };
        if let Some(until) = self.slowed_until(job, channel) {
            return (waiting(until), None, None, true);
        }
        let gate = ChannelGate {
            channels: &self.channels,
            clock: &self.clock,
        };
        let slot = match gate.admit(channel).await {
            Gate::Go(slot) => slot,
            Gate::Refused(Event::BreakerOpen { until } | Event::NoSlot { until }) => {
                return (waiting(until), None, None, false);
            }
            Gate::Refused(_) => return (branch.clone(), None, None, false),
        };
        let key = format!(
            "{}:{name}",
            step_idempotency_key(&job.idempotency_key, position.step_index, &step.name)
        );
        let delivery = Delivery {
            job_id: &job.id,
            flow: &job.flow,
            step: &step.name,
            idempotency_key: &key,
            payload: body.unwrap_or(&job.payload),
            // A worker's deadline times one attempt at a time; branches run
            // at once, so each gets a timer of its own.
            deadline: None,
            traceparent: None,
            keep_headers: false,
        };
        let started = self.clock.now();
        let template = step.template(position.retry_choice);
        let Sent {
            result,
            verdict,
            note,
            finished,
            quick_tries,
        } = gate.send(channel, &delivery, step, template).await;
        slot.finish(&verdict, &result, finished);
        self.count_attempt(
            channel,
            &counted(
                &channel.name,
                at.attempts.saturating_add(1),
                &result,
                &verdict,
                started,
                finished,
            ),
        );
        let answered = Event::Answered {
            started,
            verdict: verdict.clone(),
            jitter: fastrand::f64(),
        };
        self.record_member_health(channel, member.as_deref(), &verdict, started, finished);
        let cut = self
            .adapt_cut(template, &channel.name, &verdict, finished)
            .await;
        let mut at = at;
        at.adapt_cut = cut.as_ref().map(|(cut, _)| cut.from);
        let moved = next(&at, &answered, policy, finished);
        let note = with_adapted_note(
            note,
            cut.as_ref(),
            &at,
            &answered,
            &moved,
            policy,
            finished,
            &channel.name,
        );
        self.metrics.attempt(
            &job.flow,
            &step.name,
            name,
            verdict.outcome,
            finished.duration_since(started).as_secs_f64().max(0.0),
        );
        self.stats.attempted(&job.flow, finished, at.attempts > 0);
        log_attempt(job, &step.name, name, &result, &verdict.rule, &moved);
        let (record, _) = attempt_row(
            job,
            policy,
            Answered {
                step: step.name.clone(),
                channel: name.to_string(),
                member,
                quick_tries,
                cut: None,
                started,
                finished,
                result,
                verdict,
                note,
            },
            at.attempts.saturating_add(1),
            &moved,
        );
        (branch.after(&moved), Some(record), Some(moved), false)
    }

    /// The transition of an attempt whose expressions failed for this job:
    /// nothing is sent; the attempt is recorded with error kind `mapping`
    /// and decided by the step's classifier (by default a permanent
    /// failure: the payload needs an edit).
    fn mapping_failed(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        position: &Position,
        located: &crate::lifecycle::Located<'_>,
        error: crate::expr::EvalError,
    ) -> Transition {
        let now = self.clock.now();
        let result: DeliveryResult = Err(TransportError {
            kind: ErrorKind::Mapping,
            message: error.to_string(),
        });
        let verdict = classify(
            located.step.classifier.as_deref(),
            &result,
            located.step.template(position.retry_choice),
            now,
        );
        self.conclude(
            job,
            policy,
            position,
            Answered {
                step: located.step.name.clone(),
                channel: located.channel.name.clone(),
                member: None,
                quick_tries: 0,
                cut: None,
                started: now,
                finished: now,
                result,
                verdict,
                note: None,
            },
        )
    }

    /// The transition of an attempt that panicked: recorded with error kind
    /// `internal` and decided by the job's policy like any transport error,
    /// so that a bug never wedges a job (it would otherwise stay `running`
    /// until its lease ran out, and run into the same panic again). Should
    /// deciding panic too, the job goes to the dead-letter queue, where a
    /// person can look at it.
    pub fn after_panic(&self, job: &JobRecord, panic: &str) -> Transition {
        let now = self.clock.now();
        let message = format!("the engine failed during this attempt (a bug): {panic}");
        tracing::error!(job = %job.id, flow = %job.flow, step = %job.step, %message);
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let policy = self.policy.current();
            let position = position_of(job);
            let located = locate(&policy, &position);
            let result: DeliveryResult = Err(TransportError {
                kind: ErrorKind::Internal,
                message: message.clone(),
            });
            let (classifier, template) = match &located {
                Some(located) => (
                    located.step.classifier.as_deref(),
                    located.step.retry.clone(),
                ),
                None => (None, Arc::new(notify_template())),
            };
            let (step, channel) = match &located {
                Some(located) => (located.step.name.clone(), located.channel.name.clone()),
                None => (job.step.clone(), String::new()),
            };
            let verdict = classify(classifier, &result, &template, now);
            self.conclude(
                job,
                &policy,
                &position,
                Answered {
                    step,
                    channel,
                    member: None,
                    quick_tries: 0,
                    cut: None,
                    started: now,
                    finished: now,
                    result,
                    verdict,
                    note: None,
                },
            )
        }));
        decided.unwrap_or_else(|_| self.dead_after_double_panic(job, message, now))
    }

    /// The last resort when deciding itself panicked: dead, `permanent`,
    /// the attempt recorded, so that a person looks at the job.
    fn dead_after_double_panic(
        &self,
        job: &JobRecord,
        message: String,
        now: Timestamp,
    ) -> Transition {
        let record = AttemptRecord {
            job_id: job.id.clone(),
            step: job.step.clone(),
            channel: String::new(),
            attempt: job.attempt + 1,
            started_at: now,
            finished_at: now,
            status: None,
            error: Some(ErrorKind::Internal.as_str().to_string()),
            error_message: Some(message),
            outcome: Outcome::Fail,
            rule: None,
            decision: crate::lifecycle::Decision::Dead,
            delay_ms: None,
            next_at: None,
            policy_version: job.policy_version.clone(),
            member: None,
            quick_tries: 0,
        };
        Transition {
            to: JobState::Dead,
            reason: Some(Reason::Permanent),
            attempt: Some(record),
            attempts_added: 1,
            next_at: None,
            series_attempts: job.attempt + 1,
            ..self.as_it_stands(job, now)
        }
    }

    /// Decides where a job goes after an attempt's answer (asking the retry
    /// quota when the answer calls for a retry) and builds the transition
    /// that records it.
    fn conclude(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        position: &Position,
        answered: Answered,
    ) -> Transition {
        let Answered {
            step: attempted_step,
            channel,
            member,
            quick_tries,
            cut,
            started,
            finished,
            result,
            verdict,
            note,
        } = answered;
        let event = Event::Answered {
            started,
            verdict: verdict.clone(),
            jitter: fastrand::f64(),
        };
        let mut moved = next(position, &event, policy, finished);
        let note = with_adapted_note(
            note,
            cut.as_ref(),
            position,
            &event,
            &moved,
            policy,
            finished,
            member.as_deref().unwrap_or(&channel),
        );
        if let MoveKind::Retry { at, delay } = moved.kind {
            match self.quotas.admit(&job.flow, finished) {
                Ok(()) => {
                    metrics::counter!("steadfast_retries_total",
                        "flow" => job.flow.clone(), "reason" => retry_reason(&result))
                    .increment(1);
                }
                Err(over) => {
                    metrics::counter!("steadfast_quota_rejections_total",
                        "flow" => job.flow.clone(), "scope" => over.scope.as_str())
                    .increment(1);
                    let over_quota = Event::OverQuota {
                        started,
                        retry_at: at,
                        delay,
                        until: over.until,
                    };
                    moved = next(position, &over_quota, policy, finished);
                }
            }
        }
        self.count_move(job, &attempted_step, &moved, &channel);
        self.stats
            .attempted(&job.flow, finished, position.attempts > 0);
        self.metrics.attempt(
            &job.flow,
            &attempted_step,
            &channel,
            verdict.outcome,
            finished.duration_since(started).as_secs_f64().max(0.0),
        );
        if moved.kind == MoveKind::Succeeded {
            self.metrics
                .succeeded(&job.flow, job.attempts_total.saturating_add(1));
        }
        log_attempt(
            job,
            &attempted_step,
            &channel,
            &result,
            &verdict.rule,
            &moved,
        );

        let record = attempt_row(
            job,
            policy,
            Answered {
                step: attempted_step,
                channel,
                member,
                quick_tries,
                cut: None,
                started,
                finished,
                result,
                verdict,
                note,
            },
            position.attempts.saturating_add(1),
            &moved,
        );
        let mut transition = self.transition(job, policy, &moved, finished);
        if let (MoveKind::NextStep { .. }, Ok(response)) = (moved.kind, &record.1) {
            transition.responses = kept_responses(job, policy, &job.step, response);
        }
        transition.attempt = Some(record.0);
        transition
    }

    /// The transition of a move that attempted nothing: a hold, a wait, a
    /// skip to the fallback (recorded as a row of its own), a vanished flow.
    fn unattempted(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        moved: &Move,
        now: Timestamp,
    ) -> Transition {
        let mut transition = self.transition(job, policy, moved, now);
        let channel = locate(policy, &position_of(job))
            .map(|located| located.channel.name.clone())
            .unwrap_or_default();
        self.count_move(job, &job.step, moved, &channel);
        match moved.kind {
            MoveKind::Hold { until, reason } => {
                if reason == Reason::Paused {
                    tracing::debug!(job = %job.id, flow = %job.flow,
                        "the flow is paused; the job waits for its resume");
                } else if reason == Reason::FlowRemoved {
                    tracing::warn!(job = %job.id, flow = %job.flow, step = %job.step, %until,
                        "job's flow, step or channel is not in the policy in force; suspended");
                } else {
                    tracing::debug!(job = %job.id, flow = %job.flow, step = %job.step,
                        reason = reason.as_str(), %until, "held without an attempt");
                }
            }
            MoveKind::Wait { until } => {
                tracing::debug!(job = %job.id, flow = %job.flow, %until,
                    "no slot on the channel yet; the job waits");
            }
            MoveKind::StepSkipped { .. } => {
                let when = locate(policy, &position_of(job))
                    .and_then(|located| located.step.when.as_ref())
                    .map(|when| when.source().to_string())
                    .unwrap_or_default();
                tracing::debug!(job = %job.id, flow = %job.flow, step = %job.step,
                    "`when` does not hold: step skipped");
                transition.attempt = Some(AttemptRecord {
                    job_id: job.id.clone(),
                    step: job.step.clone(),
                    error_message: Some(format!(
                        "not attempted: the step's `when` ({when}) does not hold for this job"
                    )),
                    channel,
                    attempt: 0,
                    started_at: now,
                    finished_at: now,
                    status: None,
                    error: None,
                    outcome: Outcome::Skipped,
                    rule: None,
                    decision: moved
                        .decision()
                        .unwrap_or(crate::lifecycle::Decision::NextStep),
                    delay_ms: Some(0),
                    next_at: moved.landing.next_at,
                    policy_version: policy.version.to_string(),
                    member: None,
                    quick_tries: 0,
                });
            }
            MoveKind::Skip { until, .. } => {
                tracing::debug!(job = %job.id, flow = %job.flow, step = %job.step, %channel,
                    "breaker open: straight to the fallback");
                transition.attempt = Some(AttemptRecord {
                    job_id: job.id.clone(),
                    step: job.step.clone(),
                    error_message: Some(format!(
                        "not attempted: the circuit breaker of channel `{channel}` is open \
                         until {until}"
                    )),
                    channel,
                    attempt: 0,
                    started_at: now,
                    finished_at: now,
                    status: None,
                    error: Some(Reason::BreakerOpen.as_str().to_string()),
                    outcome: Outcome::Skipped,
                    rule: None,
                    decision: crate::lifecycle::Decision::Fallback,
                    delay_ms: Some(0),
                    next_at: Some(now),
                    policy_version: policy.version.to_string(),
                    member: None,
                    quick_tries: 0,
                });
            }
            _ => {}
        }
        transition
    }

    /// The metrics of a move (a hold's reason, a breaker's action, a death).
    fn count_move(&self, job: &JobRecord, step: &str, moved: &Move, channel: &str) {
        match moved.kind {
            MoveKind::Hold {
                reason: reason @ (Reason::Maintenance | Reason::OffHours),
                ..
            }
            | MoveKind::RetryHeld {
                reason: reason @ (Reason::Maintenance | Reason::OffHours),
                ..
            } => {
                metrics::counter!("steadfast_holds_total",
                    "flow" => job.flow.clone(), "step" => step.to_string(),
                    "reason" => reason.as_str())
                .increment(1);
            }
            MoveKind::Hold {
                reason: Reason::BreakerOpen,
                ..
            }
            | MoveKind::Skip { .. } => {
                let action = if matches!(moved.kind, MoveKind::Skip { .. }) {
                    "fallback"
                } else {
                    "suspend"
                };
                metrics::counter!("steadfast_breaker_rejections_total",
                    "channel" => channel.to_string(), "action" => action)
                .increment(1);
            }
            MoveKind::Dead { reason } => {
                metrics::counter!("steadfast_dead_letters_total",
                    "flow" => job.flow.clone(), "reason" => reason.as_str())
                .increment(1);
            }
            _ => {}
        }
    }

    /// The step log's view of `moved`: the job's fields as the move lands
    /// them, fenced by the lease the job was claimed with.
    fn transition(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        moved: &Move,
        now: Timestamp,
    ) -> Transition {
        let landing = &moved.landing;
        // Every move of a job passes here once: a job that ends is counted
        // for its flow's deliveries of the hour.
        match landing.state {
            JobState::Succeeded => self.insights.ended(&job.flow, now, "succeeded"),
            JobState::Dead => self.insights.ended(&job.flow, now, "dead"),
            _ => {}
        }
        Transition {
            to: landing.state,
            step_index: landing.step_index as u32,
            // Only a move to the next step changes the step's name (a step
            // found again after a reload moved it keeps its name; one that
            // vanished is kept by name until it comes back).
            step: match moved.kind {
                MoveKind::NextStep { step_index }
                | MoveKind::StepSkipped {
                    next_step: Some(step_index),
                } => step_name(policy.flow(&job.flow), step_index, &job.step),
                _ => job.step.clone(),
            },
            channel_index: landing.channel_index as u32,
            series_attempts: landing.attempts,
            series_started_at: landing.series_started_at,
            held_ms: millis(landing.held),
            next_at: landing.next_at,
            reason: landing.reason,
            policy_version: policy.version.to_string(),
            attempts_added: landing.attempts_added,
            notify_at: landing.notify_at,
            ..self.as_it_stands(job, now)
        }
    }

    /// Hands a claimed job back without an attempt: `pending`, due when it
    /// was, where it was in its flow. For a job that waited so long for a
    /// worker that its lease might run out during the attempt.
    pub fn release(&self, job: &JobRecord) -> Transition {
        let now = self.clock.now();
        let policy = self.policy.current();
        let moved = next(&position_of(job), &Event::HandedBack, &policy, now);
        Transition {
            policy_version: job.policy_version.clone(),
            ..self.transition(job, &policy, &moved, now)
        }
    }

    /// The job as it stands, with nothing attempted: `pending` where it is
    /// in its flow and its series, under the lease it was claimed with.
    fn as_it_stands(&self, job: &JobRecord, now: Timestamp) -> Transition {
        Transition {
            job_id: job.id.clone(),
            owner: self.owner.to_string(),
            lease_until: job.lease_until,
            attempt: None,
            to: JobState::Pending,
            step_index: job.step_index,
            step: job.step.clone(),
            channel_index: job.channel_index,
            series_attempts: job.attempt,
            series_started_at: job.series_started_at,
            held_ms: job.held_ms,
            next_at: job.next_at,
            reason: None,
            policy_version: job.policy_version.clone(),
            attempts_added: 0,
            slowed_added: 0,
            notify_at: None,
            responses: None,
            branches: None,
            branch_attempts: Vec::new(),
            now,
        }
    }

    /// Sends a dead job to its flow's `on_dead` channel, retried with the
    /// `standard` template, recorded as an attempt of step `on_dead`.
    pub async fn notify(&self, job: &JobRecord, deadline: &Deadline) {
        let policy = self.policy.current();
        let position = position_of(job);
        let target = notify_target(&policy, &job.flow)
            .and_then(|(flow, name)| Some((flow, policy.channel(&name)?.clone(), name)));
        let Some((flow, channel, channel_name)) = target else {
            let now = self.clock.now();
            let moved = next(&position, &Event::NotifyGone, &policy, now);
            let record = AttemptRecord {
                job_id: job.id.clone(),
                step: ON_DEAD_STEP.to_string(),
                channel: String::new(),
                attempt: moved.landing.notify_attempts,
                started_at: now,
                finished_at: now,
                status: None,
                error: None,
                error_message: Some("the flow has no on_dead notify channel any more".into()),
                outcome: Outcome::Skipped,
                rule: None,
                decision: crate::lifecycle::Decision::Skipped,
                delay_ms: None,
                next_at: None,
                policy_version: policy.version.to_string(),
                member: None,
                quick_tries: 0,
            };
            if let Err(error) = self.store.notification_record(record, None).await {
                tracing::error!(%error, job = %job.id, "cannot record the skipped notification");
            }
            return;
        };
        let attempts = match self.store.attempts_list(&job.id).await {
            Ok(attempts) => attempts,
            Err(error) => {
                tracing::error!(%error, job = %job.id, "cannot read attempts for the notification");
                return;
            }
        };
        let body = match serde_json::to_string(&JobView::new(job.clone(), Some(attempts))) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, job = %job.id, "cannot encode the notification");
                return;
            }
        };
        let key = format!("{}:{ON_DEAD_STEP}", job.idempotency_key);
        let delivery = Delivery {
            job_id: &job.id,
            flow: &flow.name,
            step: ON_DEAD_STEP,
            idempotency_key: &key,
            payload: &body,
            deadline: Some(deadline),
            traceparent: None,
            keep_headers: false,
        };
        let started = self.clock.now();
        let result = self.channels.deliver(&channel.kind, &delivery).await;
        let finished = self.clock.now();
        let verdict = classify(None, &result, &notify_template(), finished);
        let event = Event::NotifyAnswered {
            verdict: verdict.clone(),
            jitter: fastrand::f64(),
        };
        let moved = next(&position, &event, &policy, finished);
        let decision = moved
            .decision()
            .unwrap_or(crate::lifecycle::Decision::GaveUp);
        metrics::counter!("steadfast_notifications_total",
            "flow" => job.flow.clone(), "result" => decision.as_str())
        .increment(1);
        let (status, error, error_message) = split_result(&result);
        let record = AttemptRecord {
            job_id: job.id.clone(),
            step: ON_DEAD_STEP.to_string(),
            channel: channel_name,
            attempt: moved.landing.notify_attempts,
            started_at: started,
            finished_at: finished,
            status,
            error,
            error_message,
            outcome: verdict.outcome.into(),
            rule: Some(verdict.rule),
            decision,
            delay_ms: moved.kind.delay().map(millis),
            next_at: moved.landing.notify_at,
            policy_version: policy.version.to_string(),
            member: None,
            quick_tries: 0,
        };
        if let Err(error) = self
            .store
            .notification_record(record, moved.landing.notify_at)
            .await
        {
            tracing::error!(%error, job = %job.id, "cannot record the notification attempt");
        }
    }
}

/// The name of `flow`'s step `index`, or `fallback` when there is none.
fn step_name(flow: Option<&Arc<Flow>>, index: usize, fallback: &str) -> String {
    flow.and_then(|flow| flow.steps.get(index))
        .map_or_else(|| fallback.to_string(), |step| step.name.clone())
}

fn notify_target(policy: &CompiledPolicy, flow: &str) -> Option<(Arc<Flow>, String)> {
    let flow = policy.flow(flow)?;
    let notify = flow.on_dead.as_ref()?.notify.clone();
    Some((flow.clone(), notify))
}

/// Step 1 sends the submitted key unchanged; later steps `{key}:{step}`.
pub fn step_idempotency_key(job_key: &str, step_index: usize, step_name: &str) -> String {
    if step_index == 0 {
        job_key.to_string()
    } else {
        format!("{job_key}:{step_name}")
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Why a retry was decided, for `steadfast_retries_total{reason}`: the
/// status (`http_503`) or the error kind (`timeout`), a bounded set.
fn retry_reason(result: &DeliveryResult) -> String {
    match split_result(result) {
        (Some(status), _, _) => format!("http_{status}"),
        (None, Some(kind), _) => kind,
        _ => "other".to_string(),
    }
}

/// An attempt's note, with why history cut the retries when it made the
/// difference: the same answer without the cut would have been retried.
#[allow(clippy::too_many_arguments)]
fn with_adapted_note(
    note: Option<String>,
    cut: Option<&(crate::pacing::cuts::Cut, Duration)>,
    position: &Position,
    event: &Event,
    moved: &Move,
    policy: &CompiledPolicy,
    finished: Timestamp,
    channel: &str,
) -> Option<String> {
    let Some((cut, window)) = cut else {
        return note;
    };
    let uncut = Position {
        adapt_cut: None,
        ..position.clone()
    };
    if next(&uncut, event, policy, finished).kind == moved.kind {
        return note;
    }
    let why = adapted_note(cut, *window, channel);
    Some(match note {
        Some(note) => format!("{note}; {why}"),
        None => why,
    })
}

/// The most of a refusing answer's body an attempt keeps.
pub const ANSWER_EXCERPT: usize = 500;

/// The start of a body, whole characters only; `None` when blank.
fn body_excerpt(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    let mut end = body.len().min(ANSWER_EXCERPT);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < body.len() { "…" } else { "" };
    Some(format!("{}{more}", &body[..end]))
}

fn split_result(result: &DeliveryResult) -> (Option<u16>, Option<String>, Option<String>) {
    match result {
        Ok(response) => (Some(response.status), None, None),
        Err(error) => (
            None,
            Some(error.kind.as_str().to_string()),
            Some(error.message.clone()),
        ),
    }
}

fn log_attempt(
    job: &JobRecord,
    step: &str,
    channel: &str,
    result: &DeliveryResult,
    rule: &str,
    moved: &Move,
) {
    let answer = match result {
        Ok(response) => response.status.to_string(),
        Err(error) => error.kind.to_string(),
    };
    let decision = moved.decision().map_or("suspend", |d| d.as_str());
    tracing::debug!(job = %job.id, flow = %job.flow, step, channel,
        attempt = job.attempt + 1, answer, rule, decision, "attempt");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Decision;
    use crate::store::JobRecord;

    fn t0() -> Timestamp {
        "2026-05-04T10:00:00Z".parse().expect("a time")
    }

    #[test]
    fn a_refusals_body_is_kept_in_whole_characters() {
        assert_eq!(body_excerpt("  \n "), None);
        assert_eq!(body_excerpt(" busy ").as_deref(), Some("busy"));
        let long = "é".repeat(ANSWER_EXCERPT);
        let kept = body_excerpt(&long).expect("kept");
        assert!(kept.ends_with('…'));
        assert!(kept.len() <= ANSWER_EXCERPT + '…'.len_utf8());
        assert!(kept.trim_end_matches('…').chars().all(|c| c == 'é'));
    }

    async fn executor(dir: &std::path::Path) -> Executor {
        let text = format!(
            "channels:\n  spool: {{ file: {{ dir: '{d}/spool' }}, circuit_breaker: {{ failures: 1 }} }}\n  \
             backup: {{ file: {{ dir: '{d}/backup' }} }}\n\
             flows:\n  f:\n    steps:\n      - {{ name: deliver, channel: spool, fallback: backup }}\n      \
             - {{ name: confirm, channel: backup }}\n",
            d = dir.display()
        );
        crate::engine::testing::executor(&text, t0()).await
    }

    fn job() -> JobRecord {
        JobRecord::claimed_for_test("j1", "f", "k1", t0())
    }

    #[tokio::test]
    async fn a_delivered_step_moves_on_and_records_its_attempt() {
        let dir = tempfile::tempdir().expect("a directory");
        let executor = executor(dir.path()).await;
        let deadline = crate::channels::Deadlines::start().deadline();
        let transition = executor.attempt(&job(), &deadline).await;
        assert_eq!(transition.to, JobState::Pending);
        assert_eq!(
            (transition.step_index, transition.step.as_str()),
            (1, "confirm")
        );
        assert_eq!(transition.attempts_added, 1);
        assert_eq!(
            transition.series_attempts, 0,
            "a fresh series on the next step"
        );
        let row = transition.attempt.expect("the attempt recorded");
        assert_eq!(
            (row.step.as_str(), row.channel.as_str()),
            ("deliver", "spool")
        );
        assert_eq!(row.decision, Decision::NextStep);
        assert_eq!(row.attempt, 1);
        assert!(
            dir.path()
                .join("spool")
                .read_dir()
                .expect("spooled")
                .count()
                == 1
        );
    }

    #[tokio::test]
    async fn an_open_breaker_is_recorded_as_a_skip_to_the_fallback() {
        let dir = tempfile::tempdir().expect("a directory");
        let executor = executor(dir.path()).await;
        let spool = executor
            .policy
            .current()
            .channel("spool")
            .cloned()
            .expect("a channel");
        let config = spool.breaker.clone().expect("a breaker");
        // One failure opens it.
        if let crate::channels::breaker::Admission::Pass(ticket) =
            executor.channels.breakers().admit("spool", &config, t0())
        {
            ticket.report(
                &config,
                crate::channels::breaker::Observed {
                    at: t0(),
                    outcome: crate::model::Outcome::Retry,
                    answer: "503".into(),
                },
            );
        }
        let deadline = crate::channels::Deadlines::start().deadline();
        let transition = executor.attempt(&job(), &deadline).await;
        assert_eq!(transition.to, JobState::Pending);
        assert_eq!(transition.channel_index, 1, "on the fallback");
        assert_eq!(transition.attempts_added, 0, "a skip is not an attempt");
        let row = transition.attempt.expect("the skip recorded");
        assert_eq!(row.outcome, Outcome::Skipped);
        assert_eq!(row.decision, Decision::Fallback);
        assert_eq!(row.error.as_deref(), Some("breaker_open"));
        assert_eq!(row.attempt, 0);
        assert!(!dir.path().join("spool").exists(), "nothing sent");
    }

    #[tokio::test]
    async fn a_job_whose_flow_is_gone_waits_for_it_under_its_own_step() {
        let dir = tempfile::tempdir().expect("a directory");
        let executor = executor(dir.path()).await;
        let gone = JobRecord {
            flow: "removed".into(),
            ..job()
        };
        let deadline = crate::channels::Deadlines::start().deadline();
        let transition = executor.attempt(&gone, &deadline).await;
        assert_eq!(transition.to, JobState::Suspended);
        assert_eq!(transition.reason, Some(Reason::FlowRemoved));
        assert_eq!(transition.step, "deliver");
        assert!(transition.attempt.is_none());
        let released = executor.release(&job());
        assert_eq!(
            (released.to, released.next_at),
            (JobState::Pending, Some(t0()))
        );
    }
}
