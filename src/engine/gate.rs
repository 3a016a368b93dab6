//! What stands between a claimed job and its channel, and what follows the
//! answer: the channel's circuit breaker, its concurrency and rate limits
//! (`Executor::gate`), and its `refresh_auth` (`Executor::send`).
//!
//! None of this burns an attempt:
//!
//! - Breaker open, and the step has a fallback after the current channel:
//!   the job moves to that fallback at once (a fresh series), without
//!   touching the channel. The job's history records why: a row with
//!   outcome `skipped`, error `breaker_open`, decision `fallback`, attempt
//!   number 0 (not counted in `attempts_total`).
//! - Breaker open, and no fallback after this channel: the job is
//!   `suspended`, reason `breaker_open`, until the breaker lets a probe
//!   through. No row: nothing was tried.
//! - No concurrency or rate slot within [`WAIT_IN_PLACE`]: the job goes
//!   back to `pending` until a slot is expected. No row, no failure.
//!
//! Time spent held this way does not count against the step's
//! `total_timeout`. After the answer, the attempt's verdict is reported to
//! the breaker (see [`crate::channels::breaker`] for what counts).

use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::OwnedSemaphorePermit;

use super::executor::{held_through, Executor};
use crate::channels::breaker::{later, Admission, Observed, Ticket};
use crate::channels::rate::{RateSlot, WAIT_IN_PLACE};
use crate::channels::Delivery;
use crate::model::{
    BreakerConfig, Channel, ChannelKind, CompiledPolicy, DeliveryResult, Outcome, Step,
};
use crate::retry::{classify, Verdict};
use crate::store::{AttemptRecord, JobRecord, JobState, Transition};

/// The reason a job is suspended while its channel's breaker is open, and
/// the error of the row that records a skip to the fallback.
pub const BREAKER_OPEN: &str = "breaker_open";

/// The outcome of a row that records a channel not attempted.
pub const SKIPPED: &str = "skipped";

/// Where a job stands in its flow, for the gate.
pub(super) struct At<'a> {
    pub job: &'a JobRecord,
    pub policy: &'a CompiledPolicy,
    pub step: &'a Step,
    pub step_index: usize,
    pub channel_index: usize,
    pub channel: &'a Channel,
}

/// The gate's answer.
pub(super) enum Gate {
    /// Send now; finish the slot with the verdict.
    Go(Slot),
    /// Not now: where the job goes instead.
    Hold(Box<Transition>),
}

/// An attempt let through: holds its concurrency place and breaker ticket
/// until [`Slot::finish`].
pub(super) struct Slot {
    breaker: Option<(Ticket, BreakerConfig)>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// Reports the attempt's verdict to the channel's breaker and frees the
    /// concurrency place.
    pub fn finish(self, verdict: &Verdict, result: &DeliveryResult, at: Timestamp) {
        if let Some((ticket, config)) = self.breaker {
            let answer = match result {
                Ok(response) => response.status.to_string(),
                Err(error) => error.kind.as_str().to_string(),
            };
            ticket.report(
                &config,
                Observed {
                    at,
                    outcome: verdict.outcome,
                    answer,
                },
            );
        }
    }
}

/// One attempt's answer, judged, after any token refresh.
pub(super) struct Sent {
    pub result: DeliveryResult,
    pub verdict: Verdict,
    /// What happened around the answer (a token refresh), for the
    /// attempt's `error_message`.
    pub note: Option<String>,
    pub finished: Timestamp,
}

impl Executor {
    /// Asks the channel's breaker, then waits (briefly) for a concurrency
    /// place and a rate slot.
    pub(super) async fn gate(&self, at: &At<'_>) -> Gate {
        let channel = at.channel;
        let now = self.clock.now();
        let breaker = match &channel.breaker {
            None => None,
            Some(config) => match self.channels.breakers().admit(&channel.name, config, now) {
                Admission::Pass(ticket) => Some((ticket, config.clone())),
                Admission::Refused { until, .. } => {
                    return Gate::Hold(Box::new(self.breaker_open(at, until, now)))
                }
            },
        };
        let permit = match channel.concurrency {
            None => None,
            Some(limit) => match self.concurrency_place(&channel.name, limit, now).await {
                Some(permit) => Some(permit),
                None => {
                    let now = self.clock.now();
                    // When a place frees is unknown: come back within the
                    // next wait, spread so that the jobs handed back do not
                    // all return at once.
                    let back = later(now, WAIT_IN_PLACE.mul_f64(1.0 + fastrand::f64()));
                    metrics::counter!("steadfast_channel_waits_total",
                        "channel" => channel.name.clone(), "limit" => "concurrency")
                    .increment(1);
                    return Gate::Hold(Box::new(self.hand_back(at, back, now)));
                }
            },
        };
        if let Some(rate) = channel.rate {
            let now = self.clock.now();
            match self
                .channels
                .limits()
                .reserve(&channel.name, rate, now, WAIT_IN_PLACE)
            {
                RateSlot::Now => {}
                RateSlot::At(slot) => self.clock.sleep_until(slot).await,
                RateSlot::Defer(slot) => {
                    metrics::counter!("steadfast_channel_waits_total",
                        "channel" => channel.name.clone(), "limit" => "rate")
                    .increment(1);
                    return Gate::Hold(Box::new(self.hand_back(at, slot, now)));
                }
            }
        }
        Gate::Go(Slot {
            breaker,
            _permit: permit,
        })
    }

    /// A place among the channel's `limit` attempts in flight, waiting for
    /// one up to [`WAIT_IN_PLACE`].
    async fn concurrency_place(
        &self,
        channel: &str,
        limit: u32,
        now: Timestamp,
    ) -> Option<OwnedSemaphorePermit> {
        let semaphore = self.channels.limits().concurrency(channel, limit);
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        let wait = self.clock.sleep_until(later(now, WAIT_IN_PLACE));
        tokio::select! {
            permit = semaphore.acquire_owned() => permit.ok(),
            _ = wait => None,
        }
    }

    /// Sends once and judges the answer. When the classifier answers
    /// `refresh_auth` and the channel has one: refreshes the token once and
    /// sends once more, within this attempt; a second `refresh_auth` is a
    /// permanent failure. Without `refresh_auth` on the channel, that
    /// answer is a permanent failure at once.
    pub(super) async fn send(
        &self,
        channel: &Channel,
        delivery: &Delivery<'_>,
        step: &Step,
    ) -> Sent {
        let (result, seen) = self.channels.send(channel, delivery).await;
        let finished = self.clock.now();
        let mut verdict = classify(step.classifier.as_deref(), &result, &step.retry, finished);
        if verdict.outcome != Outcome::RefreshAuth {
            return Sent {
                result,
                verdict,
                note: None,
                finished,
            };
        }
        let refresh = match &channel.kind {
            ChannelKind::Http(http) => http.refresh_auth.as_deref(),
            ChannelKind::File(_) => None,
        };
        let Some(refresh) = refresh else {
            verdict.outcome = Outcome::Fail;
            let note = format!(
                "rule `{}` asked to refresh the token, but channel `{}` has no `refresh_auth`",
                verdict.rule, channel.name
            );
            return Sent {
                result,
                verdict,
                note: Some(note),
                finished,
            };
        };
        let refreshed = self
            .channels
            .refresh_token(&channel.name, refresh, seen, finished)
            .await;
        if let Err(error) = refreshed {
            tracing::warn!(channel = %channel.name, %error, transient = error.transient,
                "refreshing the channel's token failed");
            metrics::counter!("steadfast_auth_refreshes_total",
                "channel" => channel.name.clone(), "result" => "error")
            .increment(1);
            verdict.outcome = if error.transient {
                Outcome::Retry
            } else {
                Outcome::Fail
            };
            let note = format!(
                "rule `{}` asked to refresh the token; the refresh failed: {error}",
                verdict.rule
            );
            return Sent {
                result,
                verdict,
                note: Some(note),
                finished: self.clock.now(),
            };
        }
        metrics::counter!("steadfast_auth_refreshes_total",
            "channel" => channel.name.clone(), "result" => "success")
        .increment(1);
        tracing::info!(channel = %channel.name, rule = %verdict.rule,
            "token refreshed; sending once more");
        let first_rule = verdict.rule;
        let (result, _) = self.channels.send(channel, delivery).await;
        let finished = self.clock.now();
        let mut verdict = classify(step.classifier.as_deref(), &result, &step.retry, finished);
        let note = if verdict.outcome == Outcome::RefreshAuth {
            verdict.outcome = Outcome::Fail;
            format!(
                "asked to refresh the token again (rule `{}`) right after a refresh: \
                 a permanent failure",
                verdict.rule
            )
        } else {
            format!("token refreshed after rule `{first_rule}`; this is the answer once refreshed")
        };
        Sent {
            result,
            verdict,
            note: Some(note),
            finished,
        }
    }

    /// The breaker of the job's channel is open until `until`: go to the
    /// next fallback, or wait for the probe.
    fn breaker_open(&self, at: &At<'_>, until: Timestamp, now: Timestamp) -> Transition {
        let (job, step, channel) = (at.job, at.step, &at.channel.name);
        if at.channel_index + 1 < step.channel_count() {
            let fallback = at.channel_index + 1;
            metrics::counter!("steadfast_breaker_rejections_total",
                "channel" => channel.clone(), "action" => "fallback")
            .increment(1);
            tracing::debug!(job = %job.id, flow = %job.flow, step = %step.name, %channel,
                fallback = step.channel_at(fallback).unwrap_or_default(),
                "breaker open: straight to the fallback");
            let mut transition = self.wait_until(at, now, now);
            transition.attempt = Some(AttemptRecord {
                job_id: job.id.clone(),
                step: step.name.clone(),
                channel: channel.clone(),
                attempt: 0,
                started_at: now,
                finished_at: now,
                status: None,
                error: Some(BREAKER_OPEN.to_string()),
                error_message: Some(format!(
                    "not attempted: the circuit breaker of channel `{channel}` is open until {until}"
                )),
                outcome: SKIPPED.to_string(),
                rule: None,
                decision: "fallback".to_string(),
                delay_ms: Some(0),
                next_at: Some(now),
                policy_version: at.policy.version.to_string(),
            });
            transition.channel_index = fallback as u32;
            transition.series_attempts = 0;
            transition.series_started_at = None;
            transition.held_ms = 0;
            transition
        } else {
            metrics::counter!("steadfast_breaker_rejections_total",
                "channel" => channel.clone(), "action" => "suspend")
            .increment(1);
            tracing::debug!(job = %job.id, flow = %job.flow, step = %step.name, %channel,
                %until, "breaker open: suspended until the probe");
            let mut transition = self.wait_until(at, until, now);
            transition.to = JobState::Suspended;
            transition.reason = Some(BREAKER_OPEN.to_string());
            transition
        }
    }

    /// No slot soon: back to `pending` until `back`, nothing attempted.
    fn hand_back(&self, at: &At<'_>, back: Timestamp, now: Timestamp) -> Transition {
        tracing::debug!(job = %at.job.id, channel = %at.channel.name, %back,
            "no slot on the channel yet; the job waits");
        self.wait_until(at, back, now)
    }

    /// The job stays where it is, with nothing attempted, until `until`;
    /// the wait does not count against `total_timeout` of a series under
    /// way.
    fn wait_until(&self, at: &At<'_>, until: Timestamp, now: Timestamp) -> Transition {
        let job = at.job;
        let waited = Duration::try_from(until.duration_since(now)).unwrap_or_default();
        Transition {
            step_index: at.step_index as u32,
            step: at.step.name.clone(),
            channel_index: at.channel_index as u32,
            held_ms: held_through(job, waited),
            next_at: Some(until),
            policy_version: at.policy.version.to_string(),
            ..self.unattempted(job, now)
        }
    }
}
