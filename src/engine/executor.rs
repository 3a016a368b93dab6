//! Runs one attempt of a claimed job under the policy in force when it
//! starts, and turns the interpreter's decision into a [`Transition`].
//!
//! Before the attempt, the step's calendar may hold the job (see
//! [`hold_at`]): it is then suspended with the hold's reason and end, no
//! attempt is made and none recorded, and the hold's length is added to the
//! series' held time so that it never counts against `total_timeout`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::gate::{At, Gate, Sent};
use super::interpreter::{decide, hold_at, Hold, Next, Position};
use super::LivePolicy;
use crate::channels::{Deadline, Delivery, SharedChannels};
use crate::clock::{later, SharedClock};
use crate::model::{
    CompiledPolicy, DeliveryResult, ErrorKind, Flow, Outcome, RetryTemplate, TransportError,
};
use crate::retry::classify;
use crate::store::view::JobView;
use crate::store::{AttemptRecord, JobRecord, JobState, SharedStepLog, Transition};

/// How long a job whose flow or step vanished waits before it is looked at
/// again (a reload may bring it back).
pub const VANISHED_RECHECK: Duration = Duration::from_secs(30);

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
    pub stats: Arc<dyn super::AttemptObserver>,
    pub metrics: Arc<crate::telemetry::AttemptMetrics>,
}

impl Executor {
    /// Runs the next attempt of `job`, timed by the worker's `deadline`,
    /// and returns where it goes.
    pub async fn attempt(&self, job: &JobRecord, deadline: &Deadline) -> Transition {
        let policy = self.policy.current();
        let started = self.clock.now();
        if let Some(due) = job.next_at {
            let lag = started.duration_since(due).as_secs_f64().max(0.0);
            self.metrics.claim_lag(lag);
        }
        let Some(flow) = policy.flow(&job.flow) else {
            return self.vanished(job, &policy, started, "flow_removed");
        };
        let Some(step_index) = step_index_of(flow, job) else {
            return self.vanished(job, &policy, started, "flow_removed");
        };
        let step = &flow.steps[step_index];
        if let Some(hold) = hold_at(step, started) {
            return self.held(job, &policy, step_index, started, hold);
        }
        let (channel_index, channel_name) = channel_of(step, job);
        let Some(channel) = policy.channel(channel_name) else {
            return self.vanished(job, &policy, started, "flow_removed");
        };

        let key = step_idempotency_key(&job.idempotency_key, step_index, &step.name);
        let delivery = Delivery {
            job_id: &job.id,
            flow: &job.flow,
            step: &step.name,
            idempotency_key: &key,
            payload: &job.payload,
            deadline: Some(deadline),
        };
        let at = At {
            job,
            policy: &policy,
            step,
            step_index,
            channel_index,
            channel,
        };
        let slot = match self.gate(&at).await {
            Gate::Go(slot) => slot,
            Gate::Hold(transition) => return *transition,
        };
        let started = self.clock.now();
        let Sent {
            result,
            verdict,
            note,
            finished,
        } = self.send(channel, &delivery, step).await;
        slot.finish(&verdict, &result, finished);
        self.conclude(
            &at,
            flow,
            Answered {
                started,
                finished,
                result,
                verdict,
                note,
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
            self.conclude_internal(job, &message, now)
        }));
        match decided {
            Ok(Some(transition)) => transition,
            _ => Transition {
                to: JobState::Dead,
                reason: Some("permanent".to_string()),
                attempt: Some(AttemptRecord {
                    job_id: job.id.clone(),
                    step: job.step.clone(),
                    channel: String::new(),
                    attempt: job.attempt + 1,
                    started_at: now,
                    finished_at: now,
                    status: None,
                    error: Some(ErrorKind::Internal.as_str().to_string()),
                    error_message: Some(message),
                    outcome: Outcome::Fail.as_str().to_string(),
                    rule: None,
                    decision: "dead".to_string(),
                    delay_ms: None,
                    next_at: None,
                    policy_version: job.policy_version.clone(),
                }),
                next_at: None,
                ..self.unattempted(job, now)
            },
        }
    }

    /// [`Executor::conclude`] for an `internal` error at `now`; `None` when
    /// the job's flow, step or channel is gone.
    fn conclude_internal(
        &self,
        job: &JobRecord,
        message: &str,
        now: Timestamp,
    ) -> Option<Transition> {
        let policy = self.policy.current();
        let flow = policy.flow(&job.flow)?;
        let step_index = step_index_of(flow, job)?;
        let step = &flow.steps[step_index];
        let (channel_index, channel_name) = channel_of(step, job);
        let channel = policy.channel(channel_name)?;
        let result: DeliveryResult = Err(TransportError {
            kind: ErrorKind::Internal,
            message: message.to_string(),
        });
        let verdict = classify(step.classifier.as_deref(), &result, &step.retry, now);
        let at = At {
            job,
            policy: &policy,
            step,
            step_index,
            channel_index,
            channel,
        };
        Some(self.conclude(
            &at,
            flow,
            Answered {
                started: now,
                finished: now,
                result,
                verdict,
                note: None,
            },
        ))
    }

    /// Decides where a job goes after an attempt's answer and builds the
    /// transition that records it.
    fn conclude(&self, at: &At<'_>, flow: &Flow, answered: Answered) -> Transition {
        let At {
            job,
            policy,
            step,
            step_index,
            channel_index,
            ..
        } = *at;
        let Answered {
            started,
            finished,
            result,
            verdict,
            note,
        } = answered;
        let channel_name = step.channel_at(channel_index).unwrap_or(&step.channel);
        let attempts = job.attempt + 1;
        let series_started_at = match (job.attempt, job.series_started_at) {
            (0, _) | (_, None) => started,
            (_, Some(at)) => at,
        };
        let position = Position {
            step_index,
            channel_index,
            attempts,
            series_started_at,
            held: Duration::from_millis(job.held_ms.max(0) as u64),
        };
        let next = decide(flow, &position, &verdict, finished, fastrand::f64());
        self.stats.attempted(&job.flow, finished, attempts > 1);

        let seconds = finished.duration_since(started).as_secs_f64().max(0.0);
        self.metrics.attempt(
            &job.flow,
            &step.name,
            channel_name,
            verdict.outcome,
            seconds,
        );
        log_attempt(
            job,
            &step.name,
            channel_name,
            attempts,
            &result,
            &verdict.rule,
            &next,
        );

        let (status, error, error_message) = split_result(&result);
        let error_message = note.or(error_message);
        let (delay_ms, next_at) = match &next {
            Next::Retry { at, delay } => (Some(delay.as_millis() as i64), Some(*at)),
            Next::Suspend { delay, hold, .. } => (Some(delay.as_millis() as i64), Some(hold.until)),
            Next::Fallback { .. } | Next::NextStep { .. } => (Some(0), Some(finished)),
            Next::Succeeded | Next::Dead { .. } => (None, None),
        };
        let record = AttemptRecord {
            job_id: job.id.clone(),
            step: step.name.clone(),
            channel: channel_name.to_string(),
            attempt: attempts,
            started_at: started,
            finished_at: finished,
            status,
            error,
            error_message,
            outcome: verdict.outcome.as_str().to_string(),
            rule: Some(verdict.rule.clone()),
            decision: next.decision().to_string(),
            delay_ms,
            next_at,
            policy_version: policy.version.to_string(),
        };
        let mut transition = Transition {
            job_id: job.id.clone(),
            owner: self.owner.to_string(),
            lease_until: job.lease_until,
            attempt: Some(record),
            to: JobState::Pending,
            step_index: step_index as u32,
            step: step.name.clone(),
            channel_index: channel_index as u32,
            series_attempts: attempts,
            series_started_at: Some(series_started_at),
            held_ms: job.held_ms,
            next_at,
            reason: None,
            policy_version: policy.version.to_string(),
            notify_at: None,
            now: finished,
        };
        match next {
            Next::Retry { at, .. } => match self.quotas.admit(&job.flow, finished) {
                Ok(()) => {
                    metrics::counter!("steadfast_retries_total",
                        "flow" => job.flow.clone(), "reason" => retry_reason(&result))
                    .increment(1);
                }
                Err(over) => {
                    // Over quota: wait for the next window instead of retrying
                    // now; the wait does not count against total_timeout.
                    metrics::counter!("steadfast_quota_rejections_total",
                        "flow" => job.flow.clone(), "scope" => over.scope.as_str())
                    .increment(1);
                    transition.to = JobState::Suspended;
                    transition.reason = Some("quota".to_string());
                    let until = over.until.max(at);
                    transition.next_at = Some(until);
                    let waited = until.duration_since(at).unsigned_abs();
                    transition.held_ms = add_held(job.held_ms, waited);
                    if let Some(record) = transition.attempt.as_mut() {
                        record.decision = "suspend".to_string();
                        record.next_at = Some(until);
                    }
                }
            },
            Next::Suspend { at, hold, .. } => {
                transition.to = JobState::Suspended;
                transition.reason = Some(hold.reason.as_str().to_string());
                transition.held_ms = add_held(job.held_ms, hold.length_from(at));
                count_hold(job, &step.name, hold);
            }
            Next::Fallback { channel_index } => {
                transition.channel_index = channel_index as u32;
                fresh_series(&mut transition);
            }
            Next::NextStep { step_index } => {
                transition.step_index = step_index as u32;
                transition.step = flow.steps[step_index].name.clone();
                transition.channel_index = 0;
                fresh_series(&mut transition);
            }
            Next::Succeeded => {
                transition.to = JobState::Succeeded;
                self.metrics
                    .succeeded(&job.flow, job.attempts_total.saturating_add(1));
            }
            Next::Dead { reason } => {
                metrics::counter!("steadfast_dead_letters_total",
                    "flow" => job.flow.clone(), "reason" => reason.as_str())
                .increment(1);
                transition.to = JobState::Dead;
                transition.reason = Some(reason.as_str().to_string());
                transition.notify_at = flow.on_dead.as_ref().map(|_| finished);
            }
        }
        transition
    }
}

/// Where the job's step is in `flow`. A reload may have reordered steps:
/// the name is followed, not the index.
fn step_index_of(flow: &Flow, job: &JobRecord) -> Option<usize> {
    match flow.steps.get(job.step_index as usize) {
        Some(step) if step.name == job.step => Some(job.step_index as usize),
        _ => flow.step_index(&job.step),
    }
}

/// The channel the job's next attempt uses on `step`, by index and name
/// (a reload may have removed fallbacks: the last one left stands in).
fn channel_of<'s>(step: &'s crate::model::Step, job: &JobRecord) -> (usize, &'s str) {
    let channel_index = (job.channel_index as usize).min(step.channel_count() - 1);
    let name = step.channel_at(channel_index).unwrap_or(&step.channel);
    (channel_index, name)
}

/// What an attempt brought back, with its times.
struct Answered {
    started: Timestamp,
    finished: Timestamp,
    result: DeliveryResult,
    verdict: crate::retry::Verdict,
    note: Option<String>,
}

impl Executor {
    /// Suspends a job that its step's calendar holds at `now`, without an
    /// attempt. The hold counts as held time of the series under way; before
    /// a series' first attempt there is no deadline running to protect.
    fn held(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        step_index: usize,
        now: Timestamp,
        hold: Hold,
    ) -> Transition {
        tracing::debug!(job = %job.id, flow = %job.flow, step = %job.step,
            reason = hold.reason.as_str(), until = %hold.until, "held by the step's calendar");
        count_hold(job, &job.step, hold);
        Transition {
            to: JobState::Suspended,
            step_index: step_index as u32,
            held_ms: held_through(job, hold.length_from(now)),
            next_at: Some(hold.until),
            reason: Some(hold.reason.as_str().to_string()),
            policy_version: policy.version.to_string(),
            ..self.unattempted(job, now)
        }
    }

    /// Suspends a job whose flow, step or channel is no longer in the policy;
    /// it is looked at again later, never dropped.
    fn vanished(
        &self,
        job: &JobRecord,
        policy: &CompiledPolicy,
        now: Timestamp,
        reason: &str,
    ) -> Transition {
        tracing::warn!(job = %job.id, flow = %job.flow, step = %job.step, reason,
            "job's flow or step is not in the policy in force; suspended");
        Transition {
            to: JobState::Suspended,
            next_at: Some(later(now, VANISHED_RECHECK)),
            reason: Some(reason.to_string()),
            policy_version: policy.version.to_string(),
            ..self.unattempted(job, now)
        }
    }

    /// Hands a claimed job back without an attempt: `pending`, due when it
    /// was, where it was in its flow. For a job that waited so long for a
    /// worker that its lease might run out during the attempt.
    pub fn release(&self, job: &JobRecord) -> Transition {
        let now = self.clock.now();
        Transition {
            next_at: Some(job.next_at.unwrap_or(now)),
            ..self.unattempted(job, now)
        }
    }

    /// The job as it stands, with nothing attempted: `pending` where it is
    /// in its flow and its series, under the lease it was claimed with. The
    /// transitions that attempt nothing start from here.
    pub(super) fn unattempted(&self, job: &JobRecord, now: Timestamp) -> Transition {
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
            notify_at: None,
            now,
        }
    }

    /// Sends a dead job to its flow's `on_dead` channel, retried with the
    /// `standard` template, recorded as an attempt of step `on_dead`.
    pub async fn notify(&self, job: &JobRecord, deadline: &Deadline) {
        let policy = self.policy.current();
        let target = notify_target(&policy, &job.flow)
            .and_then(|(flow, name)| Some((flow, policy.channel(&name)?.clone(), name)));
        let Some((flow, channel, channel_name)) = target else {
            self.notification_skipped(job, &policy).await;
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
        };
        let started = self.clock.now();
        let result = self.channels.deliver(&channel.kind, &delivery).await;
        let finished = self.clock.now();
        // Notifications retry like the built-in `standard` template.
        let template = RetryTemplate::standard();
        let verdict = classify(None, &result, &template, finished);
        let attempt = job.notify_attempts + 1;
        let (decision, next_at) = match verdict.outcome {
            Outcome::Success => ("notified", None),
            Outcome::Fail => ("gave_up", None),
            Outcome::Retry | Outcome::RefreshAuth => {
                match crate::retry::delay_before_retry(&template, attempt, fastrand::f64()) {
                    Some(delay) => {
                        let wait = verdict.retry_after.unwrap_or(delay);
                        ("retry", Some(later(finished, wait)))
                    }
                    None => ("gave_up", None),
                }
            }
        };
        metrics::counter!("steadfast_notifications_total",
            "flow" => job.flow.clone(), "result" => decision)
        .increment(1);
        let (status, error, error_message) = split_result(&result);
        let record = AttemptRecord {
            job_id: job.id.clone(),
            step: ON_DEAD_STEP.to_string(),
            channel: channel_name,
            attempt,
            started_at: started,
            finished_at: finished,
            status,
            error,
            error_message,
            outcome: verdict.outcome.as_str().to_string(),
            rule: Some(verdict.rule),
            decision: decision.to_string(),
            delay_ms: next_at.map(|at: Timestamp| at.duration_since(finished).as_millis() as i64),
            next_at,
            policy_version: policy.version.to_string(),
        };
        if let Err(error) = self.store.notification_record(record, next_at).await {
            tracing::error!(%error, job = %job.id, "cannot record the notification attempt");
        }
    }

    /// The flow or its `on_dead` is gone from the policy: nothing to send,
    /// and nothing owed any more.
    async fn notification_skipped(&self, job: &JobRecord, policy: &CompiledPolicy) {
        let now = self.clock.now();
        let record = AttemptRecord {
            job_id: job.id.clone(),
            step: ON_DEAD_STEP.to_string(),
            channel: String::new(),
            attempt: job.notify_attempts + 1,
            started_at: now,
            finished_at: now,
            status: None,
            error: None,
            error_message: Some("the flow has no on_dead notify channel any more".into()),
            outcome: "skipped".to_string(),
            rule: None,
            decision: "skipped".to_string(),
            delay_ms: None,
            next_at: None,
            policy_version: policy.version.to_string(),
        };
        if let Err(error) = self.store.notification_record(record, None).await {
            tracing::error!(%error, job = %job.id, "cannot record the skipped notification");
        }
    }
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

/// `held_ms` with `more` added, saturating.
/// The job's held time once it has waited `wait` without an attempt (a
/// calendar hold, an open breaker, a rate slot). Before a series' first
/// attempt there is no deadline running to protect, so nothing is added.
pub(super) fn held_through(job: &JobRecord, wait: Duration) -> i64 {
    if job.attempt > 0 {
        add_held(job.held_ms, wait)
    } else {
        job.held_ms
    }
}

fn add_held(held_ms: i64, more: Duration) -> i64 {
    let more = i64::try_from(more.as_millis()).unwrap_or(i64::MAX);
    held_ms.max(0).saturating_add(more)
}

fn count_hold(job: &JobRecord, step: &str, hold: Hold) {
    metrics::counter!("steadfast_holds_total",
        "flow" => job.flow.clone(), "step" => step.to_string(),
        "reason" => hold.reason.as_str())
    .increment(1);
}

fn fresh_series(transition: &mut Transition) {
    transition.series_attempts = 0;
    transition.series_started_at = None;
    transition.held_ms = 0;
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
    attempt: u32,
    result: &DeliveryResult,
    rule: &str,
    next: &Next,
) {
    let answer = match result {
        Ok(response) => response.status.to_string(),
        Err(error) => error.kind.to_string(),
    };
    tracing::debug!(job = %job.id, flow = %job.flow, step, channel, attempt, answer, rule,
        decision = next.decision(), "attempt");
}
