//! Circuit breakers: one per channel that configures one, in this node's
//! memory, keyed by channel name (a breaker's state is its channel's, so
//! every step and flow that uses the channel shares it).
//!
//! ```text
//!            trips (failures in a row, or failure share over window)
//!   closed ───────────────────────────────────────────────▶ open
//!     ▲                                                      │ cooldown passes
//!     │ every probe succeeds            a probe fails        ▼
//!     └──────────────────────── half-open ──────────────▶ open (again)
//! ```
//!
//! What counts: an attempt judged `retry` (no answer, a 5xx, a 429, a busy
//! rule) is a failure; one judged `success` or `fail` is not, and ends a run
//! of failures: a 400 is the partner rejecting one payload, which shows the
//! channel is up. While open, [`Breakers::admit`] refuses until the cooldown
//! ends; then the breaker is half-open and lets `half_open_probes` attempts
//! through (the others are refused for [`PROBE_RECHECK`]); when all of them
//! succeed it closes, when one fails it opens again for a new cooldown.
//!
//! # Shared among nodes
//!
//! With several nodes on one PostgreSQL step log, a breaker opened (or
//! closed by its probe) on one node is published ([`Breakers::take_changes`])
//! and applied on the others within a second ([`Breakers::apply_remote`]):
//! they open too, naming the node, and hold open one cooldown longer than
//! the opener, so that the opener alone sends the half-open probe; its
//! verdict (closed, or open again) reaches them the same way. Should the
//! opener die, their longer cooldown ends and they probe themselves.
//!
//! Time comes from the caller (the engine's clock), so the state machine is
//! exact under test. Transitions are logged (`warn` when opening, `info`
//! otherwise) and exported as `steadfast_breaker_state{channel}` (0 closed,
//! 1 half-open, 2 open) and `steadfast_breaker_transitions_total{channel,to}`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::model::{BreakerConfig, Outcome};

/// How long an attempt refused while the half-open probes are in flight
/// waits before it asks again (never longer than the cooldown).
pub const PROBE_RECHECK: Duration = Duration::from_secs(1);

/// How many recent outcomes each breaker keeps for `GET /v1/channels`.
pub const RECENT: usize = 20;

/// How many counting buckets a `window` is cut into for `failure_ratio`:
/// the window slides by a tenth of its length.
const BUCKETS: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The value of the `steadfast_breaker_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// One attempt's result, as a breaker sees it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub at: Timestamp,
    pub outcome: Outcome,
    /// The status code or the error kind: `503`, `timeout`.
    pub answer: String,
}

impl Observed {
    /// Whether this attempt says the channel is sick.
    pub fn is_failure(&self) -> bool {
        self.outcome == Outcome::Retry
    }
}

/// The answer to "may an attempt go to this channel now?".
#[derive(Debug)]
pub enum Admission {
    /// Go; report the outcome through the ticket.
    Pass(Ticket),
    /// The breaker is open (or half-open with its probes in flight): do not
    /// send before `until`.
    Refused {
        until: Timestamp,
        state: BreakerState,
    },
}

/// Every breaker of this node.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    inner: Arc<Mutex<HashMap<String, Breaker>>>,
    /// This node's own openings and closings, to publish to the others.
    changes: Arc<Mutex<Vec<BreakerChange>>>,
    /// Told of each change, so that it is published at once.
    changed: Arc<tokio::sync::Notify>,
}

/// A breaker opened or closed on one node, as the others learn of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerChange {
    pub channel: String,
    pub open: bool,
    /// When it opened or closed.
    pub at: Timestamp,
    /// While open: when its opener lets a probe through.
    pub until: Timestamp,
    pub reason: String,
    /// The node it happened on (filled in when published).
    pub node: String,
}

impl Breakers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks `channel`'s breaker whether an attempt may go at `now`.
    pub fn admit(&self, channel: &str, config: &BreakerConfig, now: Timestamp) -> Admission {
        let mut map = self.lock();
        let breaker = entry(&mut map, channel, now);
        breaker.tick(channel, now);
        match breaker.state {
            BreakerState::Closed => Admission::Pass(self.ticket(channel, false, breaker)),
            BreakerState::Open => Admission::Refused {
                until: breaker.open_until,
                state: BreakerState::Open,
            },
            BreakerState::HalfOpen => {
                if breaker.probes_in_flight + breaker.probe_successes < config.half_open_probes {
                    breaker.probes_in_flight += 1;
                    Admission::Pass(self.ticket(channel, true, breaker))
                } else {
                    Admission::Refused {
                        until: later(now, PROBE_RECHECK.min(config.cooldown)),
                        state: BreakerState::HalfOpen,
                    }
                }
            }
        }
    }

    /// Resolves when this node's breakers have a change to publish.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// This node's own openings and closings since the last call, oldest
    /// first.
    pub fn take_changes(&self) -> Vec<BreakerChange> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Applies another node's opening or closing of `change.channel`'s
    /// breaker. An opening opens this node's too, until one `cooldown`
    /// after the opener's probe; a closing closes it (the opener's probe
    /// succeeded). Nothing changes when this node already went further.
    pub fn apply_remote(&self, change: &BreakerChange, config: &BreakerConfig) {
        let mut map = self.lock();
        let breaker = entry(&mut map, &change.channel, change.at);
        if change.open {
            let until = later(change.until, config.cooldown);
            if breaker.state == BreakerState::Closed
                || (breaker.state != BreakerState::Closed && breaker.open_until < until)
            {
                breaker.enter(&change.channel, BreakerState::Open, change.at);
                breaker.open_until = until;
                breaker.opened_total += 1;
                let reason = format!("opened on node {}: {}", change.node, change.reason);
                tracing::warn!(channel = %change.channel, %reason, probe_at = %until,
                    "circuit breaker opened by another node");
                breaker.reason = Some(reason);
            }
        } else if breaker.state != BreakerState::Closed && breaker.since <= change.at {
            breaker.close(&change.channel, change.at);
            breaker.reason = Some(format!(
                "closed on node {}: its probe succeeded",
                change.node
            ));
        }
    }

    /// When `channel`'s open breaker lets a probe through; `None` when it
    /// is not open at `now` (closed, or half-open and probing). Asks
    /// without taking an attempt's place, as a pool does to choose.
    pub fn open_until(&self, channel: &str, now: Timestamp) -> Option<Timestamp> {
        let mut map = self.lock();
        let breaker = map.get_mut(channel)?;
        breaker.tick(channel, now);
        (breaker.state == BreakerState::Open).then_some(breaker.open_until)
    }

    /// What `GET /v1/channels` shows of `channel`'s breaker at `now`.
    pub fn snapshot(&self, channel: &str, config: &BreakerConfig, now: Timestamp) -> Snapshot {
        let mut map = self.lock();
        let breaker = entry(&mut map, channel, now);
        breaker.tick(channel, now);
        let window = config.window.map(|window| {
            breaker.prune(window, now);
            let (requests, failures) = breaker.window_counts();
            WindowCounts { requests, failures }
        });
        Snapshot {
            state: breaker.state,
            since: breaker.since,
            reason: breaker.reason.clone(),
            probe_at: (breaker.state == BreakerState::Open).then_some(breaker.open_until),
            probes_in_flight: breaker.probes_in_flight,
            consecutive_failures: breaker.consecutive,
            window,
            opened_total: breaker.opened_total,
            recent: breaker.recent.iter().rev().cloned().collect(),
        }
    }

    fn publish(&self, change: BreakerChange) {
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        // Unpublished changes pile up only while nothing shares them (one
        // node): keep the latest.
        if changes.len() >= 1024 {
            changes.remove(0);
        }
        changes.push(change);
        self.changed.notify_one();
    }

    fn ticket(&self, channel: &str, probe: bool, breaker: &Breaker) -> Ticket {
        Ticket {
            breakers: self.clone(),
            channel: channel.to_string(),
            probe,
            generation: breaker.generation,
            done: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn entry<'m>(
    map: &'m mut HashMap<String, Breaker>,
    channel: &str,
    now: Timestamp,
) -> &'m mut Breaker {
    map.entry(channel.to_string()).or_insert_with(|| {
        metrics::gauge!("steadfast_breaker_state", "channel" => channel.to_string())
            .set(BreakerState::Closed.gauge());
        Breaker::new(now)
    })
}

/// An attempt let through: report its outcome with [`Ticket::report`]. A
/// ticket dropped unreported (the attempt was deferred before it was sent)
/// gives its probe place back.
#[derive(Debug)]
pub struct Ticket {
    breakers: Breakers,
    channel: String,
    probe: bool,
    /// The breaker's generation when admitted: a probe of an earlier
    /// half-open spell does not decide this one.
    generation: u64,
    done: bool,
}

impl Ticket {
    /// Whether this attempt is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Counts the attempt's outcome, and moves the breaker if it decides.
    pub fn report(mut self, config: &BreakerConfig, observed: Observed) {
        self.done = true;
        let mut map = self.breakers.lock();
        let breaker = entry(&mut map, &self.channel, observed.at);
        let current_probe = self.probe && self.generation == breaker.generation;
        if current_probe {
            breaker.probes_in_flight = breaker.probes_in_flight.saturating_sub(1);
        }
        breaker.record(config, &observed);
        let failed = observed.is_failure();
        match breaker.state {
            BreakerState::Closed if failed => {
                if let Some(reason) = breaker.trips(config, observed.at) {
                    breaker.open(&self.channel, config, observed.at, reason.clone());
                    let change = opened(&self.channel, breaker, reason);
                    drop(map);
                    self.breakers.publish(change);
                }
            }
            BreakerState::HalfOpen if current_probe => {
                if failed {
                    let reason = format!("a half-open probe failed ({})", observed.answer);
                    breaker.open(&self.channel, config, observed.at, reason.clone());
                    let change = opened(&self.channel, breaker, reason);
                    drop(map);
                    self.breakers.publish(change);
                } else {
                    breaker.probe_successes += 1;
                    if breaker.probe_successes >= config.half_open_probes {
                        breaker.close(&self.channel, observed.at);
                        let change = BreakerChange {
                            channel: self.channel.clone(),
                            open: false,
                            at: observed.at,
                            until: observed.at,
                            reason: "the half-open probe succeeded".into(),
                            node: String::new(),
                        };
                        drop(map);
                        self.breakers.publish(change);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done || !self.probe {
            return;
        }
        let mut map = self.breakers.lock();
        if let Some(breaker) = map.get_mut(&self.channel) {
            if breaker.generation == self.generation {
                breaker.probes_in_flight = breaker.probes_in_flight.saturating_sub(1);
            }
        }
    }
}

/// A breaker as `GET /v1/channels` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub state: BreakerState,
    /// When it entered this state.
    pub since: Timestamp,
    /// Why it last opened.
    pub reason: Option<String>,
    /// While open: when the first probe may go.
    pub probe_at: Option<Timestamp>,
    pub probes_in_flight: u32,
    pub consecutive_failures: u32,
    /// Attempts and failures within `window`, when one is configured.
    pub window: Option<WindowCounts>,
    /// How many times it opened since the node started.
    pub opened_total: u64,
    /// The latest outcomes, newest first.
    pub recent: Vec<Recent>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct WindowCounts {
    pub requests: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Recent {
    pub at: Timestamp,
    /// The classifier's verdict: `success`, `retry`, `fail`.
    pub outcome: &'static str,
    /// The status code or the error kind.
    pub answer: String,
    /// Whether the breaker counted it as a failure.
    pub failure: bool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Milliseconds since the epoch, a multiple of the bucket width.
    start_ms: i64,
    requests: u64,
    failures: u64,
}

#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    since: Timestamp,
    /// While open: when the cooldown ends.
    open_until: Timestamp,
    reason: Option<String>,
    /// Bumped at every state change.
    generation: u64,
    probes_in_flight: u32,
    probe_successes: u32,
    /// Failures in a row (reset by a success or a `fail`).
    consecutive: u32,
    /// The times of the latest failures in a row, at most `failures` of
    /// them: the oldest tells whether they fit in `window`.
    streak: VecDeque<Timestamp>,
    /// Counts over `window`, oldest first; `bucket_ms` wide.
    buckets: VecDeque<Bucket>,
    bucket_ms: i64,
    recent: VecDeque<Recent>,
    opened_total: u64,
}

impl Breaker {
    fn new(now: Timestamp) -> Self {
        Self {
            state: BreakerState::Closed,
            since: now,
            open_until: now,
            reason: None,
            generation: 0,
            probes_in_flight: 0,
            probe_successes: 0,
            consecutive: 0,
            streak: VecDeque::new(),
            buckets: VecDeque::new(),
            bucket_ms: 0,
            recent: VecDeque::new(),
            opened_total: 0,
        }
    }

    /// Open and past its cooldown: half-open.
    fn tick(&mut self, channel: &str, now: Timestamp) {
        if self.state == BreakerState::Open && now >= self.open_until {
            self.enter(channel, BreakerState::HalfOpen, now);
            tracing::info!(
                channel,
                "circuit breaker half-open: letting a probe through"
            );
        }
    }

    fn record(&mut self, config: &BreakerConfig, observed: &Observed) {
        let failed = observed.is_failure();
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            at: observed.at,
            outcome: observed.outcome.as_str(),
            answer: observed.answer.clone(),
            failure: failed,
        });
        if failed {
            self.consecutive = self.consecutive.saturating_add(1);
            let keep = config.failures.unwrap_or(1).max(1) as usize;
            while self.streak.len() >= keep {
                self.streak.pop_front();
            }
            self.streak.push_back(observed.at);
        } else {
            self.consecutive = 0;
            self.streak.clear();
        }
        if let Some(window) = config.window {
            let width = bucket_ms(window);
            if width != self.bucket_ms {
                self.buckets.clear();
                self.bucket_ms = width;
            }
            let start_ms = observed.at.as_millisecond().div_euclid(width) * width;
            match self.buckets.back_mut() {
                Some(last) if last.start_ms == start_ms => {
                    last.requests += 1;
                    last.failures += u64::from(failed);
                }
                _ => self.buckets.push_back(Bucket {
                    start_ms,
                    requests: 1,
                    failures: u64::from(failed),
                }),
            }
            self.prune(window, observed.at);
        }
    }

    /// Drops the buckets that ended before `now - window`.
    fn prune(&mut self, window: Duration, now: Timestamp) {
        let from_ms = now.as_millisecond() - duration_ms(window);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start_ms + self.bucket_ms <= from_ms)
        {
            self.buckets.pop_front();
        }
    }

    fn window_counts(&self) -> (u64, u64) {
        self.buckets
            .iter()
            .fold((0, 0), |(r, f), b| (r + b.requests, f + b.failures))
    }

    /// Why the breaker should open now, if it should.
    fn trips(&mut self, config: &BreakerConfig, now: Timestamp) -> Option<String> {
        if let Some(failures) = config.failures {
            let enough = self.streak.len() >= failures as usize;
            let recent_enough = match (config.window, self.streak.front()) {
                (Some(window), Some(oldest)) => *oldest >= earlier(now, window),
                _ => true,
            };
            if enough && recent_enough {
                return Some(match config.window {
                    Some(window) => format!(
                        "{failures} failures in a row within {}",
                        show_duration(window)
                    ),
                    None => format!("{failures} failures in a row"),
                });
            }
        }
        if let (Some(ratio), Some(window)) = (config.failure_ratio, config.window) {
            self.prune(window, now);
            let (requests, failures) = self.window_counts();
            if requests >= u64::from(ratio.min_requests)
                && requests > 0
                && failures as f64 >= ratio.ratio * requests as f64
            {
                return Some(format!(
                    "{failures} of {requests} attempts failed within {}",
                    show_duration(window)
                ));
            }
        }
        None
    }

    fn open(&mut self, channel: &str, config: &BreakerConfig, now: Timestamp, reason: String) {
        self.enter(channel, BreakerState::Open, now);
        self.open_until = later(now, config.cooldown);
        self.opened_total += 1;
        tracing::warn!(channel, %reason, probe_at = %self.open_until,
            "circuit breaker opened: no attempts on this channel until the probe");
        self.reason = Some(reason);
    }

    fn close(&mut self, channel: &str, now: Timestamp) {
        self.enter(channel, BreakerState::Closed, now);
        self.consecutive = 0;
        self.streak.clear();
        self.buckets.clear();
        tracing::info!(channel, "circuit breaker closed: the probe succeeded");
    }

    fn enter(&mut self, channel: &str, state: BreakerState, now: Timestamp) {
        self.state = state;
        self.since = now;
        self.generation += 1;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        metrics::gauge!("steadfast_breaker_state", "channel" => channel.to_string())
            .set(state.gauge());
        metrics::counter!("steadfast_breaker_transitions_total",
            "channel" => channel.to_string(), "to" => state.as_str())
        .increment(1);
    }
}

/// The change that publishes `breaker`'s opening.
fn opened(channel: &str, breaker: &Breaker, reason: String) -> BreakerChange {
    BreakerChange {
        channel: channel.to_string(),
        open: true,
        at: breaker.since,
        until: breaker.open_until,
        reason,
        node: String::new(),
    }
}

fn bucket_ms(window: Duration) -> i64 {
    (duration_ms(window) / i64::from(BUCKETS)).max(1)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `at + d`, saturating at the end of time (a cooldown of `99999999d` must
/// not panic).
pub(crate) fn later(at: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// `at - d`, saturating at the start of time.
pub(crate) fn earlier(at: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| at.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

/// `60s`, `1500ms`, `5m`: for messages.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms >= 600_000 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FailureRatio;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    fn consecutive(failures: u32, window: Option<u64>, cooldown: u64) -> BreakerConfig {
        BreakerConfig {
            failures: Some(failures),
            failure_ratio: None,
            window: window.map(Duration::from_millis),
            cooldown: Duration::from_millis(cooldown),
            half_open_probes: 1,
        }
    }

    fn ratio(ratio: f64, min_requests: u32, window: u64) -> BreakerConfig {
        BreakerConfig {
            failures: None,
            failure_ratio: Some(FailureRatio {
                ratio,
                min_requests,
            }),
            window: Some(Duration::from_millis(window)),
            cooldown: Duration::from_millis(1_000),
            half_open_probes: 1,
        }
    }

    fn observed(at: Timestamp, outcome: Outcome) -> Observed {
        Observed {
            at,
            outcome,
            answer: match outcome {
                Outcome::Success => "200",
                Outcome::Fail => "400",
                _ => "503",
            }
            .to_string(),
        }
    }

    /// Admits one attempt at `at` and reports `outcome`; panics if refused.
    fn attempt(b: &Breakers, config: &BreakerConfig, at: Timestamp, outcome: Outcome) {
        match b.admit("c", config, at) {
            Admission::Pass(ticket) => ticket.report(config, observed(at, outcome)),
            Admission::Refused { .. } => panic!("refused at {at}"),
        }
    }

    fn state(b: &Breakers, config: &BreakerConfig, at: Timestamp) -> BreakerState {
        b.snapshot("c", config, at).state
    }

    fn refused_until(b: &Breakers, config: &BreakerConfig, at: Timestamp) -> Option<Timestamp> {
        match b.admit("c", config, at) {
            Admission::Pass(_) => None,
            Admission::Refused { until, .. } => Some(until),
        }
    }

    /// What one node publishes, another applies: it opens too, naming the
    /// opener, one cooldown longer (the opener alone probes), and closes
    /// when the opener's probe succeeded.
    #[test]
    fn an_opening_and_its_probe_are_shared_with_other_nodes() {
        let (opener, other) = (Breakers::new(), Breakers::new());
        let c = consecutive(2, None, 30_000);
        attempt(&opener, &c, t(0), Outcome::Retry);
        assert!(opener.take_changes().is_empty(), "nothing to tell yet");
        attempt(&opener, &c, t(1), Outcome::Retry);
        let mut changes = opener.take_changes();
        assert_eq!(changes.len(), 1);
        assert!(changes[0].open);
        assert_eq!((changes[0].at, changes[0].until), (t(1), t(30_001)));
        changes[0].node = "n1".into();

        assert_eq!(state(&other, &c, t(2)), BreakerState::Closed);
        other.apply_remote(&changes[0], &c);
        let snap = other.snapshot("c", &c, t(2));
        assert_eq!(snap.state, BreakerState::Open);
        assert!(snap
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("node n1")));
        // The opener probes at 30 s; the other waits a cooldown more.
        assert_eq!(refused_until(&other, &c, t(30_002)), Some(t(60_001)));
        assert!(
            other.take_changes().is_empty(),
            "an applied change is not re-published"
        );

        // The opener's probe succeeds: both are closed.
        attempt(&opener, &c, t(30_002), Outcome::Success);
        let mut closed = opener.take_changes();
        assert_eq!(closed.len(), 1);
        assert!(!closed[0].open);
        closed[0].node = "n1".into();
        other.apply_remote(&closed[0], &c);
        assert_eq!(state(&other, &c, t(30_003)), BreakerState::Closed);
        assert!(refused_until(&other, &c, t(30_003)).is_none());
    }

    /// A closing older than this node's own opening does not close it.
    #[test]
    fn a_stale_closing_leaves_a_newer_opening_alone() {
        let b = Breakers::new();
        let c = consecutive(1, None, 30_000);
        attempt(&b, &c, t(10), Outcome::Retry);
        let old = BreakerChange {
            channel: "c".into(),
            open: false,
            at: t(5),
            until: t(5),
            reason: "probe".into(),
            node: "n2".into(),
        };
        b.apply_remote(&old, &c);
        assert_eq!(state(&b, &c, t(11)), BreakerState::Open);
    }

    #[test]
    fn opens_after_n_failures_in_a_row() {
        let b = Breakers::new();
        let c = consecutive(3, None, 30_000);
        attempt(&b, &c, t(0), Outcome::Retry);
        attempt(&b, &c, t(1), Outcome::Retry);
        // A success (or a permanent `fail`) ends the run.
        attempt(&b, &c, t(2), Outcome::Fail);
        attempt(&b, &c, t(3), Outcome::Retry);
        attempt(&b, &c, t(4), Outcome::Retry);
        assert_eq!(state(&b, &c, t(4)), BreakerState::Closed);
        assert_eq!(b.snapshot("c", &c, t(4)).consecutive_failures, 2);
        attempt(&b, &c, t(5), Outcome::Retry);
        let snap = b.snapshot("c", &c, t(5));
        assert_eq!(snap.state, BreakerState::Open);
        assert_eq!(snap.since, t(5));
        assert_eq!(snap.probe_at, Some(t(30_005)));
        assert_eq!(snap.reason.as_deref(), Some("3 failures in a row"));
        assert_eq!(snap.recent.len(), 6);
        assert_eq!(snap.recent[0].at, t(5), "newest first");
        assert_eq!(refused_until(&b, &c, t(6)), Some(t(30_005)));
    }

    #[test]
    fn failures_in_a_row_must_fit_the_window() {
        let b = Breakers::new();
        let c = consecutive(3, Some(60_000), 30_000);
        attempt(&b, &c, t(0), Outcome::Retry);
        attempt(&b, &c, t(50_000), Outcome::Retry);
        // Three in a row, but the first is 61s old: not yet.
        attempt(&b, &c, t(61_000), Outcome::Retry);
        assert_eq!(state(&b, &c, t(61_000)), BreakerState::Closed);
        // The last three (50s, 61s, 62s) fit in 60s.
        attempt(&b, &c, t(62_000), Outcome::Retry);
        let snap = b.snapshot("c", &c, t(62_000));
        assert_eq!(snap.state, BreakerState::Open);
        assert_eq!(
            snap.reason.as_deref(),
            Some("3 failures in a row within 60s")
        );
    }

    #[test]
    fn a_failure_ratio_needs_its_minimum_of_requests() {
        let b = Breakers::new();
        let c = ratio(0.5, 4, 10_000);
        attempt(&b, &c, t(0), Outcome::Retry);
        attempt(&b, &c, t(100), Outcome::Retry);
        attempt(&b, &c, t(200), Outcome::Retry);
        // 3 of 3 failed, but fewer than 4 attempts: closed.
        assert_eq!(state(&b, &c, t(200)), BreakerState::Closed);
        attempt(&b, &c, t(300), Outcome::Success);
        // 3 of 4: over half.
        let snap = b.snapshot("c", &c, t(300));
        assert_eq!(snap.state, BreakerState::Closed, "a success never trips");
        attempt(&b, &c, t(400), Outcome::Retry);
        let snap = b.snapshot("c", &c, t(400));
        assert_eq!(snap.state, BreakerState::Open);
        assert_eq!(
            snap.reason.as_deref(),
            Some("4 of 5 attempts failed within 10s")
        );
    }

    #[test]
    fn the_ratio_forgets_attempts_older_than_the_window() {
        let b = Breakers::new();
        let c = ratio(0.5, 4, 10_000);
        for i in 0..3 {
            attempt(&b, &c, t(i * 10), Outcome::Retry);
        }
        for i in 0..3 {
            attempt(&b, &c, t(5_000 + i * 10), Outcome::Success);
        }
        // 3 of 6 at 5s would trip on the next failure; at 12s the first
        // three have left the window: 1 failure of 4.
        attempt(&b, &c, t(12_000), Outcome::Retry);
        let snap = b.snapshot("c", &c, t(12_000));
        assert_eq!(snap.state, BreakerState::Closed);
        assert_eq!(
            snap.window,
            Some(WindowCounts {
                requests: 4,
                failures: 1
            })
        );
    }

    #[test]
    fn cooldown_then_a_successful_probe_closes() {
        let b = Breakers::new();
        let c = consecutive(2, None, 1_000);
        attempt(&b, &c, t(0), Outcome::Retry);
        attempt(&b, &c, t(10), Outcome::Retry);
        assert_eq!(refused_until(&b, &c, t(500)), Some(t(1_010)));
        assert_eq!(refused_until(&b, &c, t(1_009)), Some(t(1_010)));
        // Cooldown over: one probe passes, the others wait for it.
        let probe = match b.admit("c", &c, t(1_010)) {
            Admission::Pass(ticket) => ticket,
            Admission::Refused { .. } => panic!("the probe is let through"),
        };
        assert!(probe.is_probe());
        assert_eq!(state(&b, &c, t(1_010)), BreakerState::HalfOpen);
        assert_eq!(
            refused_until(&b, &c, t(1_020)),
            Some(t(2_020)),
            "a second attempt waits for the probe"
        );
        probe.report(&c, observed(t(1_050), Outcome::Success));
        let snap = b.snapshot("c", &c, t(1_050));
        assert_eq!(snap.state, BreakerState::Closed);
        assert_eq!(snap.consecutive_failures, 0);
        assert_eq!(snap.opened_total, 1);
        // Closed means counting from zero again.
        attempt(&b, &c, t(1_100), Outcome::Retry);
        assert_eq!(state(&b, &c, t(1_100)), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_opens_again_for_a_new_cooldown() {
        let b = Breakers::new();
        let c = consecutive(1, None, 1_000);
        attempt(&b, &c, t(0), Outcome::Retry);
        assert_eq!(state(&b, &c, t(0)), BreakerState::Open);
        attempt(&b, &c, t(1_000), Outcome::Retry);
        let snap = b.snapshot("c", &c, t(1_000));
        assert_eq!(snap.state, BreakerState::Open);
        assert_eq!(snap.probe_at, Some(t(2_000)));
        assert_eq!(
            snap.reason.as_deref(),
            Some("a half-open probe failed (503)")
        );
        assert_eq!(snap.opened_total, 2);
    }

    #[test]
    fn several_probes_must_all_succeed() {
        let b = Breakers::new();
        let c = BreakerConfig {
            half_open_probes: 2,
            ..consecutive(1, None, 1_000)
        };
        attempt(&b, &c, t(0), Outcome::Retry);
        attempt(&b, &c, t(1_000), Outcome::Success);
        assert_eq!(state(&b, &c, t(1_000)), BreakerState::HalfOpen);
        attempt(&b, &c, t(1_001), Outcome::Success);
        assert_eq!(state(&b, &c, t(1_001)), BreakerState::Closed);
    }

    #[test]
    fn a_dropped_probe_gives_its_place_back() {
        let b = Breakers::new();
        let c = consecutive(1, None, 1_000);
        attempt(&b, &c, t(0), Outcome::Retry);
        let probe = b.admit("c", &c, t(1_000));
        assert!(matches!(probe, Admission::Pass(_)));
        assert!(refused_until(&b, &c, t(1_001)).is_some());
        drop(probe);
        assert_eq!(refused_until(&b, &c, t(1_002)), None, "a new probe may go");
    }

    #[test]
    fn late_reports_do_not_decide_a_half_open_breaker() {
        let b = Breakers::new();
        let c = consecutive(1, None, 1_000);
        // Admitted while closed, answered after the breaker opened and
        // went half-open: counted, but not as the probe.
        let late = match b.admit("c", &c, t(0)) {
            Admission::Pass(ticket) => ticket,
            Admission::Refused { .. } => panic!("closed"),
        };
        attempt(&b, &c, t(1), Outcome::Retry);
        let probe = b.admit("c", &c, t(1_001));
        assert!(matches!(probe, Admission::Pass(_)));
        late.report(&c, observed(t(1_002), Outcome::Success));
        assert_eq!(state(&b, &c, t(1_002)), BreakerState::HalfOpen);
        drop(probe);
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(show_duration(Duration::from_secs(60)), "60s");
        assert_eq!(show_duration(Duration::from_secs(600)), "10m");
        assert_eq!(show_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }
}
