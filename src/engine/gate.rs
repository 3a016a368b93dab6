//! What stands between a claimed job and its channel, and what follows the
//! answer: the channel's circuit breaker, its concurrency and rate limits
//! ([`ChannelGate::admit`]), and its `refresh_auth` ([`ChannelGate::send`]). I/O only:
//! a refusal is an [`Event`] for the state machine, which decides where the
//! job goes (to the fallback, `suspended` with reason `breaker_open`, or
//! back to `pending` until a slot is expected; see
//! [`crate::lifecycle::machine`]).
//!
//! A concurrency place or rate slot is waited for in place up to
//! [`WAIT_IN_PLACE`]. After the answer, the attempt's verdict is reported to
//! the breaker (see [`crate::channels::breaker`] for what counts).

use jiff::Timestamp;
use tokio::sync::OwnedSemaphorePermit;

use crate::channels::breaker::{later, Admission, Observed, Ticket};
use crate::channels::rate::{RateSlot, WAIT_IN_PLACE};
use crate::channels::{Delivery, RefreshError, SharedChannels};
use crate::clock::SharedClock;
use crate::lifecycle::Event;
use crate::model::{
    BreakerConfig, Channel, ChannelKind, DeliveryResult, Outcome, RetryTemplate, Step,
};
use crate::retry::{classify, Verdict};

/// The gate's answer.
pub(super) enum Gate {
    /// Send now; finish the slot with the verdict.
    Go(Slot),
    /// Not now: [`Event::BreakerOpen`] or [`Event::NoSlot`].
    Refused(Event),
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
    /// Tries sent again at once within the attempt (the channel's
    /// `quick_retry`).
    pub quick_tries: u32,
}

/// The channels' shared state on this node, and the clock: all a gate
/// needs.
pub(super) struct ChannelGate<'a> {
    pub channels: &'a SharedChannels,
    pub clock: &'a SharedClock,
}

impl ChannelGate<'_> {
    /// Asks the channel's breaker, then waits (briefly) for a concurrency
    /// place and a rate slot.
    pub async fn admit(&self, channel: &Channel) -> Gate {
        let now = self.clock.now();
        let breaker = match &channel.breaker {
            None => None,
            Some(config) => match self.channels.breakers().admit(&channel.name, config, now) {
                Admission::Pass(ticket) => Some((ticket, config.clone())),
                Admission::Refused { until, .. } => {
                    return Gate::Refused(Event::BreakerOpen { until })
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
                    return Gate::Refused(Event::NoSlot { until: back });
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
                    return Gate::Refused(Event::NoSlot { until: slot });
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
    /// `refresh_auth` (or the partner 401 on a channel with `auth.oauth2`)
    /// and the channel has a token request: fetches a token once and sends
    /// once more, within this attempt; a second such answer is a permanent
    /// failure. Without a token request on the channel, `refresh_auth` is a
    /// permanent failure at once. An `auth.oauth2` channel fetches its
    /// token before sending when it has none or it expired.
    /// `template`: the step's template for this job (a `retry` entry's,
    /// when one applies), which caps a `Retry-After`.
    pub async fn send(
        &self,
        channel: &Channel,
        delivery: &Delivery<'_>,
        step: &Step,
        template: &RetryTemplate,
    ) -> Sent {
        let refresh = match &channel.kind {
            ChannelKind::Http(http) => http.refresh_auth.as_deref(),
            ChannelKind::File(_) | ChannelKind::Pool(_) => None,
        };
        let client_credentials = refresh.is_some_and(|r| r.client_credentials);
        if let Some(refresh) = refresh.filter(|r| r.client_credentials) {
            let now = self.clock.now();
            let (needed, seen) = self.channels.token_needed(&channel.name, now);
            if needed {
                let fetched = self
                    .channels
                    .refresh_token(&channel.name, refresh, seen, now)
                    .await;
                if let Err(error) = fetched {
                    let result: DeliveryResult = Err(crate::model::TransportError {
                        kind: crate::model::ErrorKind::Other,
                        message: format!("no token to send with: {error}"),
                    });
                    let finished = self.clock.now();
                    let verdict = classify(step.classifier.as_deref(), &result, template, finished);
                    return self.refresh_failed(channel, result, verdict, error, None);
                }
                refreshed(channel, "before sending");
            }
        }
        let (result, seen, quick_tries) = self.send_with_quick_retry(channel, delivery).await;
        let finished = self.clock.now();
        let mut verdict = classify(step.classifier.as_deref(), &result, template, finished);
        let unauthorized = |result: &DeliveryResult| {
            client_credentials && matches!(result, Ok(response) if response.status == 401)
        };
        let (why, after) = if verdict.outcome == Outcome::RefreshAuth {
            (
                format!("rule `{}` asked to refresh the token", verdict.rule),
                format!("after rule `{}`", verdict.rule),
            )
        } else if unauthorized(&result) {
            (
                "the partner answered 401".to_string(),
                "after a 401".to_string(),
            )
        } else {
            return Sent {
                result,
                verdict,
                note: None,
                finished,
                quick_tries,
            };
        };
        let Some(refresh) = refresh else {
            verdict.outcome = Outcome::Fail;
            let note = format!(
                "{why}, but channel `{}` has no `refresh_auth`",
                channel.name
            );
            return Sent {
                result,
                verdict,
                note: Some(note),
                finished,
                quick_tries,
            };
        };
        let refreshed_now = self
            .channels
            .refresh_token(&channel.name, refresh, seen, finished)
            .await;
        if let Err(error) = refreshed_now {
            return self.refresh_failed(channel, result, verdict, error, Some(&why));
        }
        refreshed(channel, &why);
        let (result, _) = self.channels.send(channel, delivery).await;
        let finished = self.clock.now();
        let mut verdict = classify(step.classifier.as_deref(), &result, template, finished);
        let note = if verdict.outcome == Outcome::RefreshAuth || unauthorized(&result) {
            verdict.outcome = Outcome::Fail;
            format!(
                "asked to refresh the token again (rule `{}`) right after a refresh: \
                 a permanent failure",
                verdict.rule
            )
        } else {
            format!("token refreshed {after}; this is the answer once refreshed")
        };
        Sent {
            result,
            verdict,
            note: Some(note),
            finished,
            quick_tries,
        }
    }

    /// Sends, and sends again after the channel's `quick_retry` delay while
    /// the failure is of a kind it names and quick tries remain. Returns
    /// the last answer, the token generation it was sent with, and the
    /// quick tries made.
    async fn send_with_quick_retry(
        &self,
        channel: &Channel,
        delivery: &Delivery<'_>,
    ) -> (DeliveryResult, u64, u32) {
        let mut quick_tries = 0;
        loop {
            let (result, seen) = self.channels.send(channel, delivery).await;
            let Some(quick) = &channel.quick_retry else {
                return (result, seen, quick_tries);
            };
            let named = matches!(&result, Err(error) if quick.on.contains(&error.kind));
            if !named || quick_tries >= quick.attempts {
                return (result, seen, quick_tries);
            }
            quick_tries += 1;
            metrics::counter!("steadfast_quick_retries_total", "channel" => channel.name.clone())
                .increment(1);
            let wake = later(self.clock.now(), quick.delay);
            self.clock.sleep_until(wake).await;
        }
    }

    /// The attempt when fetching a token failed: a retry when the token
    /// server may answer later, a permanent failure when it refused.
    fn refresh_failed(
        &self,
        channel: &Channel,
        result: DeliveryResult,
        mut verdict: Verdict,
        error: RefreshError,
        why: Option<&str>,
    ) -> Sent {
        tracing::warn!(channel = %channel.name, %error, transient = error.transient,
            "fetching the channel's token failed");
        metrics::counter!("steadfast_auth_refreshes_total",
            "channel" => channel.name.clone(), "result" => "error")
        .increment(1);
        verdict.outcome = if error.transient {
            Outcome::Retry
        } else {
            Outcome::Fail
        };
        let note = match why {
            Some(why) => format!("{why}; the refresh failed: {error}"),
            None => format!("the token request before sending failed: {error}"),
        };
        Sent {
            result,
            verdict,
            note: Some(note),
            finished: self.clock.now(),
            quick_tries: 0,
        }
    }
}

/// Counts and logs a token fetched.
fn refreshed(channel: &Channel, why: &str) {
    metrics::counter!("steadfast_auth_refreshes_total",
        "channel" => channel.name.clone(), "result" => "success")
    .increment(1);
    tracing::info!(channel = %channel.name, why, "token fetched");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::channels::Channels;
    use crate::clock::{later, ManualClock};
    use crate::compile::compile;
    use crate::model::{CompiledPolicy, Outcome as Verdicts, Response};
    use crate::policy::{EnvMode, Format, SourceFile};

    fn policy(dir: &std::path::Path) -> CompiledPolicy {
        let text = format!(
            "classifiers:\n  refresh:\n    rules:\n      - {{ match: {{ status: 200 }}, outcome: refresh_auth }}\n\
             channels:\n  fragile: {{ file: {{ dir: '{d}/f' }}, circuit_breaker: {{ failures: 1, cooldown: 30s }} }}\n  \
             single: {{ file: {{ dir: '{d}/s' }}, concurrency: 1 }}\n  \
             slow: {{ file: {{ dir: '{d}/r' }}, rate: 1/10s }}\n\
             flows:\n  f:\n    steps:\n      - {{ name: a, channel: fragile }}\n      \
             - {{ name: b, channel: single }}\n      - {{ name: c, channel: slow }}\n      \
             - {{ name: d, channel: fragile, classify: refresh }}\n",
            d = dir.display()
        );
        let compiled = compile(
            &[SourceFile::new("p.yaml", text, Format::Yaml)],
            &EnvMode::Placeholders,
        );
        assert!(!compiled.has_errors(), "{:#?}", compiled.diagnostics);
        compiled.policy.expect("compiles")
    }

    /// A node's channel state and a manual clock, for gates.
    struct Node {
        channels: SharedChannels,
        manual: ManualClock,
        clock: SharedClock,
    }

    impl Node {
        fn new() -> Self {
            let manual = ManualClock::new(t0());
            Node {
                channels: Arc::new(Channels::new().expect("channels")),
                clock: Arc::new(manual.clone()),
                manual,
            }
        }

        fn gate(&self) -> ChannelGate<'_> {
            ChannelGate {
                channels: &self.channels,
                clock: &self.clock,
            }
        }
    }

    fn t0() -> Timestamp {
        "2026-05-04T10:00:00Z".parse().expect("a time")
    }

    fn failed() -> (Verdict, DeliveryResult) {
        let result: DeliveryResult = Ok(Response {
            status: 503,
            retry_after: None,
            body: String::new(),
            headers: Vec::new(),
        });
        let verdict = Verdict {
            outcome: Verdicts::Retry,
            rule: "test".into(),
            retry_after: None,
        };
        (verdict, result)
    }

    #[tokio::test]
    async fn an_open_breaker_refuses_until_its_probe() {
        let dir = tempfile::tempdir().expect("a directory");
        let p = policy(dir.path());
        let node = Node::new();
        let gate = node.gate();
        let fragile = p.channel("fragile").expect("a channel");
        let Gate::Go(slot) = gate.admit(fragile).await else {
            panic!("a closed breaker lets the attempt through");
        };
        let (verdict, result) = failed();
        slot.finish(&verdict, &result, t0());
        match gate.admit(fragile).await {
            Gate::Refused(Event::BreakerOpen { until }) => {
                assert_eq!(until, later(t0(), Duration::from_secs(30)));
            }
            Gate::Refused(other) => panic!("refused for {other:?}"),
            Gate::Go(_) => panic!("an open breaker let an attempt through"),
        }
    }

    #[tokio::test]
    async fn a_full_channel_hands_the_job_back_after_waiting_in_place() {
        let dir = tempfile::tempdir().expect("a directory");
        let p = policy(dir.path());
        let node = Node::new();
        let single = p.channel("single").expect("a channel");
        let Gate::Go(_held) = node.gate().admit(single).await else {
            panic!("the first place is free");
        };
        let second = node.gate();
        let waiting = second.admit(single);
        let advance = async {
            tokio::task::yield_now().await;
            node.manual.advance(WAIT_IN_PLACE);
        };
        let (refused, ()) = tokio::join!(waiting, advance);
        match refused {
            Gate::Refused(Event::NoSlot { until }) => {
                let earliest = later(t0(), WAIT_IN_PLACE);
                assert!(until >= earliest, "{until} before {earliest}");
            }
            Gate::Refused(other) => panic!("refused for {other:?}"),
            Gate::Go(_) => panic!("a second place on a channel of one"),
        }
    }

    #[tokio::test]
    async fn a_rate_slot_too_far_off_hands_the_job_back_until_it() {
        let dir = tempfile::tempdir().expect("a directory");
        let p = policy(dir.path());
        let node = Node::new();
        let gate = node.gate();
        let slow = p.channel("slow").expect("a channel");
        assert!(matches!(gate.admit(slow).await, Gate::Go(_)));
        match gate.admit(slow).await {
            Gate::Refused(Event::NoSlot { until }) => {
                assert_eq!(until, later(t0(), Duration::from_secs(10)));
            }
            Gate::Refused(other) => panic!("refused for {other:?}"),
            Gate::Go(_) => panic!("two attempts within one slot of 1/10s"),
        }
    }

    #[tokio::test]
    async fn refresh_auth_without_a_refresh_on_the_channel_is_a_permanent_failure() {
        let dir = tempfile::tempdir().expect("a directory");
        let p = policy(dir.path());
        let node = Node::new();
        let gate = node.gate();
        let flow = p.flow("f").expect("a flow");
        let step = &flow.steps[3];
        let delivery = Delivery {
            job_id: "j",
            flow: "f",
            step: "d",
            idempotency_key: "k",
            payload: "{}",
            deadline: None,
            traceparent: None,
            keep_headers: false,
        };
        let sent = gate
            .send(
                p.channel("fragile").expect("a channel"),
                &delivery,
                step,
                &step.retry,
            )
            .await;
        assert_eq!(sent.verdict.outcome, Verdicts::Fail);
        assert!(
            sent.note
                .as_deref()
                .is_some_and(|n| n.contains("no `refresh_auth`")),
            "{:?}",
            sent.note
        );
    }
}
