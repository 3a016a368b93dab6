//! Alerts: rules checked periodically on each node, sent to a channel of the
//! policies, at most once per rule and subject per `every`.
//!
//! - `dead_letters`: a flow's dead jobs over `over`;
//! - `breaker_open`: a channel's circuit breaker is open;
//! - `retry_share`: over `over` (a fraction) of a flow's attempts within
//!   `window` were retries.
//!
//! Each alert says which flow or channel, how many, since when, and the
//! command to run next. The counts behind `retry_share` are kept in memory
//! per node (per-minute buckets, a day at most).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::channels::{Delivery, SharedChannels};
use crate::clock::SharedClock;
use crate::engine::LivePolicy;
use crate::store::{JobFilter, JobState, SharedStepLog};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    DeadLetters,
    BreakerOpen,
    RetryShare,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::DeadLetters => "dead_letters",
            AlertKind::BreakerOpen => "breaker_open",
            AlertKind::RetryShare => "retry_share",
        }
    }
}

/// One `[[alerts]]` entry of steadfast.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub kind: AlertKind,
    /// The flow watched (`dead_letters`, `retry_share`); none: every flow.
    #[serde(default)]
    pub flow: Option<String>,
    /// The channel watched (`breaker_open`); none: every channel with a breaker.
    #[serde(default)]
    pub channel: Option<String>,
    /// `dead_letters`: a number of jobs; `retry_share`: a fraction (0.5).
    #[serde(default)]
    pub over: Option<f64>,
    /// `retry_share`: the window looked at (default 15m).
    #[serde(default)]
    pub window: Option<String>,
    /// The channel of the policies that receives the alert.
    pub notify: String,
    /// At most one alert per rule and flow or channel this often (default 15m).
    #[serde(default)]
    pub every: Option<String>,
}

/// The rules and how often they are checked.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub rules: Vec<Rule>,
    pub check_every: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            rules: Vec::new(),
            check_every: Duration::from_secs(30),
        }
    }
}

/// A rule with its durations read.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: AlertRule,
    pub window: Duration,
    pub every: Duration,
}

/// Checks the rules' shape: what each kind needs, durations.
pub fn compile(rules: &[AlertRule]) -> Result<Vec<Rule>, String> {
    rules
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let at = format!("alerts[{i}] ({})", spec.kind.as_str());
            let duration = |name: &str, text: &Option<String>, default: Duration| match text {
                None => Ok(default),
                Some(text) => crate::compile::parse_duration(text)
                    .map_err(|e| format!("{at}: `{name}` = `{text}`: {e}")),
            };
            match (spec.kind, spec.over) {
                (AlertKind::DeadLetters, None) => {
                    return Err(format!("{at}: set `over`, the number of dead jobs"))
                }
                (AlertKind::RetryShare, None) => {
                    return Err(format!("{at}: set `over`, a share such as 0.5"))
                }
                (AlertKind::RetryShare, Some(share)) if !(0.0..1.0).contains(&share) => {
                    return Err(format!(
                        "{at}: `over` = {share} is a share of attempts: between 0 and 1"
                    ))
                }
                _ => {}
            }
            if spec.notify.trim().is_empty() {
                return Err(format!("{at}: `notify` names a channel of the policies"));
            }
            Ok(Rule {
                spec: spec.clone(),
                window: duration("window", &spec.window, Duration::from_secs(900))?,
                every: duration("every", &spec.every, Duration::from_secs(900))?,
            })
        })
        .collect()
}

/// Per minute (since the epoch): (attempts, retries).
type Minutes = BTreeMap<i64, (u64, u64)>;

/// Attempts per flow per minute, first attempts and retries apart.
#[derive(Debug, Default)]
pub struct AttemptStats {
    minutes: Mutex<HashMap<String, Minutes>>,
}

const MINUTE_MS: i64 = 60_000;
const KEPT_MINUTES: i64 = 24 * 60;

impl AttemptStats {
    /// Counts an attempt of `flow` at `at`; `retry` when it was not the
    /// first attempt on its channel.
    pub fn record(&self, flow: &str, at: Timestamp, retry: bool) {
        let minute = at.as_millisecond().div_euclid(MINUTE_MS);
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        // The flow's name is copied once, not at every attempt.
        if !minutes.contains_key(flow) {
            minutes.insert(flow.to_string(), Minutes::new());
        }
        let Some(buckets) = minutes.get_mut(flow) else {
            return;
        };
        let slot = buckets.entry(minute).or_insert((0, 0));
        slot.0 += 1;
        slot.1 += u64::from(retry);
        // Forget what no window can reach.
        while buckets
            .first_key_value()
            .is_some_and(|(m, _)| *m < minute - KEPT_MINUTES)
        {
            buckets.pop_first();
        }
    }

    /// (attempts, retries) of `flow` within `window` before `now`.
    pub fn within(&self, flow: &str, window: Duration, now: Timestamp) -> (u64, u64) {
        let now_minute = now.as_millisecond().div_euclid(MINUTE_MS);
        let span = i64::try_from(window.as_millis() / MINUTE_MS as u128).unwrap_or(KEPT_MINUTES);
        let from = now_minute - span.clamp(1, KEPT_MINUTES);
        let minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        minutes.get(flow).map_or((0, 0), |buckets| {
            buckets
                .range(from..=now_minute)
                .fold((0, 0), |(a, r), (_, (x, y))| (a + x, r + y))
        })
    }
}

impl crate::engine::AttemptObserver for AttemptStats {
    fn attempted(&self, flow: &str, at: Timestamp, retry: bool) {
        self.record(flow, at, retry);
    }
}

/// Fewest attempts in a window for a share to mean something.
const MIN_SAMPLE: u64 = 10;

/// What the alerter reads and where it sends.
pub struct Alerter {
    pub rules: Vec<Rule>,
    pub store: SharedStepLog,
    pub policy: Arc<LivePolicy>,
    pub channels: SharedChannels,
    pub clock: SharedClock,
    pub stats: Arc<AttemptStats>,
    /// (rule, subject) → when the condition was first seen true.
    since: HashMap<(usize, String), Timestamp>,
    /// (rule, subject) → when the last alert went out.
    sent: HashMap<(usize, String), Timestamp>,
}

/// One condition found true.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub rule: usize,
    pub subject: String,
    pub body: serde_json::Value,
}

impl Alerter {
    pub fn new(
        rules: Vec<Rule>,
        store: SharedStepLog,
        policy: Arc<LivePolicy>,
        channels: SharedChannels,
        clock: SharedClock,
        stats: Arc<AttemptStats>,
    ) -> Self {
        Alerter {
            rules,
            store,
            policy,
            channels,
            clock,
            stats,
            since: HashMap::new(),
            sent: HashMap::new(),
        }
    }

    /// Checks every `every` until the task is aborted.
    pub async fn run(mut self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.check().await;
        }
    }

    /// Checks each rule once and sends what is due.
    pub async fn check(&mut self) {
        let now = self.clock.now();
        let mut firing = Vec::new();
        for index in 0..self.rules.len() {
            match self.evaluate(index, now).await {
                Ok(mut found) => firing.append(&mut found),
                Err(error) => tracing::warn!(%error, "an alert rule could not be checked"),
            }
        }
        for alert in firing {
            let key = (alert.rule, alert.subject.clone());
            let every = self.rules[alert.rule].every;
            let quiet = self
                .sent
                .get(&key)
                .is_none_or(|last| now.duration_since(*last).unsigned_abs() >= every);
            if quiet {
                self.sent.insert(key, now);
                self.send(&self.rules[alert.rule].spec, &alert).await;
            }
        }
    }

    /// Marks `subject` of rule `index` as firing now; returns since when.
    fn firing_since(&mut self, index: usize, subject: &str, now: Timestamp) -> Timestamp {
        *self
            .since
            .entry((index, subject.to_string()))
            .or_insert(now)
    }

    fn cleared(&mut self, index: usize, subject: &str) {
        self.since.remove(&(index, subject.to_string()));
    }

    async fn evaluate(
        &mut self,
        index: usize,
        now: Timestamp,
    ) -> Result<Vec<Firing>, crate::store::StoreError> {
        let rule = self.rules[index].clone();
        let policy = self.policy.current();
        let flows: Vec<String> = match &rule.spec.flow {
            Some(flow) => vec![flow.clone()],
            None => policy.flows.keys().cloned().collect(),
        };
        let mut firing = Vec::new();
        match rule.spec.kind {
            AlertKind::DeadLetters => {
                let over = rule.spec.over.unwrap_or(f64::MAX);
                for flow in flows {
                    let filter = JobFilter {
                        state: Some(JobState::Dead),
                        flow: Some(flow.clone()),
                        ..JobFilter::default()
                    };
                    let count = self.store.jobs_count(&filter).await?;
                    if (count as f64) <= over {
                        self.cleared(index, &flow);
                        continue;
                    }
                    let since = self.firing_since(index, &flow, now);
                    firing.push(Firing {
                        rule: index,
                        subject: flow.clone(),
                        body: json!({
                            "alert": "dead_letters", "flow": flow, "count": count,
                            "threshold": over, "since": since,
                            "message": format!(
                                "{count} dead jobs in flow {flow} (over {over}) since {since}"),
                            "next": format!(
                                "steadfast dlq list --flow {flow}; once the cause is fixed: \
                                 steadfast dlq retry --all --flow {flow}"),
                        }),
                    });
                }
            }
            AlertKind::RetryShare => {
                let over = rule.spec.over.unwrap_or(1.0);
                for flow in flows {
                    let (attempts, retries) = self.stats.within(&flow, rule.window, now);
                    let share = if attempts == 0 {
                        0.0
                    } else {
                        retries as f64 / attempts as f64
                    };
                    if attempts < MIN_SAMPLE || share <= over {
                        self.cleared(index, &flow);
                        continue;
                    }
                    let since = self.firing_since(index, &flow, now);
                    let window = crate::compile::format_duration(rule.window);
                    firing.push(Firing {
                        rule: index,
                        subject: flow.clone(),
                        body: json!({
                            "alert": "retry_share", "flow": flow, "count": retries,
                            "attempts": attempts, "share": share, "threshold": over,
                            "window": window, "since": since,
                            "message": format!(
                                "{retries} of {attempts} attempts of flow {flow} in the last \
                                 {window} were retries ({:.0}%, over {:.0}%) since {since}",
                                share * 100.0, over * 100.0),
                            "next": format!(
                                "steadfast jobs list --flow {flow} --state pending; \
                                 steadfast jobs show ID for the partner's answers"),
                        }),
                    });
                }
            }
            AlertKind::BreakerOpen => {
                let channels: Vec<_> = policy
                    .channels
                    .values()
                    .filter(|c| rule.spec.channel.as_ref().is_none_or(|n| *n == c.name))
                    .filter_map(|c| Some((c.name.clone(), c.breaker.clone()?)))
                    .collect();
                for (name, config) in channels {
                    let snapshot = self.channels.breakers().snapshot(&name, &config, now);
                    if snapshot.state != crate::channels::breaker::BreakerState::Open {
                        self.cleared(index, &name);
                        continue;
                    }
                    self.firing_since(index, &name, now);
                    let flows: Vec<&String> = policy
                        .flows
                        .values()
                        .filter(|f| f.steps.iter().any(|s| s.channel == name))
                        .map(|f| &f.name)
                        .collect();
                    firing.push(Firing {
                        rule: index,
                        subject: name.clone(),
                        body: json!({
                            "alert": "breaker_open", "channel": name, "flows": flows,
                            "count": snapshot.consecutive_failures,
                            "since": snapshot.since, "reason": snapshot.reason,
                            "probe_at": snapshot.probe_at,
                            "message": format!(
                                "the breaker of channel {name} is open since {} ({} failures in a row)",
                                snapshot.since, snapshot.consecutive_failures),
                            "next": format!(
                                "curl -s $STEADFAST_SERVER/v1/channels/{name}; \
                                 steadfast jobs list --state suspended"),
                        }),
                    });
                }
            }
        }
        Ok(firing)
    }

    async fn send(&self, rule: &AlertRule, alert: &Firing) {
        let policy = self.policy.current();
        let Some(channel) = policy.channel(&rule.notify) else {
            tracing::warn!(channel = %rule.notify, alert = rule.kind.as_str(),
                "the alert's notify channel is not in the policies; alert not sent");
            metrics::counter!("steadfast_alerts_total",
                "kind" => rule.kind.as_str(), "result" => "no_channel")
            .increment(1);
            return;
        };
        let id = uuid::Uuid::now_v7().to_string();
        let body = alert.body.to_string();
        let flow = alert.body["flow"].as_str().unwrap_or_default();
        let delivery = Delivery {
            job_id: &id,
            flow,
            step: "alert",
            idempotency_key: &id,
            payload: &body,
            deadline: None,
            traceparent: None,
            keep_headers: false,
        };
        let result = self.channels.deliver(&channel.kind, &delivery).await;
        let sent = matches!(&result, Ok(response) if (200..300).contains(&response.status));
        if !sent {
            tracing::warn!(channel = %rule.notify, alert = rule.kind.as_str(),
                "the alert could not be delivered");
        }
        metrics::counter!("steadfast_alerts_total",
            "kind" => rule.kind.as_str(), "result" => if sent { "sent" } else { "failed" })
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    #[test]
    fn shares_count_within_the_window() {
        let stats = AttemptStats::default();
        let now: Timestamp = "2026-11-23T05:30:00Z".parse().unwrap();
        let old = now - SignedDuration::from_mins(30);
        stats.record("a", old, true);
        for i in 0..4 {
            stats.record("a", now, i > 0);
        }
        assert_eq!(stats.within("a", Duration::from_secs(600), now), (4, 3));
        assert_eq!(stats.within("a", Duration::from_secs(3600), now), (5, 4));
        assert_eq!(stats.within("b", Duration::from_secs(600), now), (0, 0));
    }

    #[test]
    fn rules_need_what_their_kind_reads() {
        let rule = |kind, over| AlertRule {
            kind,
            flow: None,
            channel: None,
            over,
            window: None,
            notify: "ops".into(),
            every: None,
        };
        assert!(compile(&[rule(AlertKind::DeadLetters, None)])
            .unwrap_err()
            .contains("set `over`"));
        assert!(compile(&[rule(AlertKind::RetryShare, Some(3.0))])
            .unwrap_err()
            .contains("between 0 and 1"));
        let ok = compile(&[rule(AlertKind::BreakerOpen, None)]).unwrap();
        assert_eq!(ok[0].every, Duration::from_secs(900));
    }
}
