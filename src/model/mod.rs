//! The compiled policy: immutable, validated types the engine reads. Built
//! only by [`crate::compile`]; every name in here has been resolved.

mod answer;
mod classifier;
mod limits;
pub mod signing;
mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::calendar::Calendar;
pub use crate::expr::{Expr, Mapping};
pub use answer::{DeliveryResult, Response, TransportError, MAX_BODY};
pub use classifier::{Classifier, ErrorKind, Matcher, Outcome, RetryAfter, Rule, StatusPattern};
pub use limits::{
    BreakerConfig, FailureRatio, PathSegment, Rate, RefreshAuth, RefreshBody, TokenPath,
};
pub use signing::{Signing, SigningKey};
pub use template::{Adapt, Backoff, Jitter, RetryTemplate};

/// The step name under which `on_dead` notifications are recorded; no flow
/// may name a step so.
pub const ON_DEAD_STEP: &str = "on_dead";

/// A whole, consistent set of policy files, versioned by the hash of its
/// sources.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub version: PolicyVersion,
    /// The files this set was loaded from, in load order.
    pub files: Vec<PathBuf>,
    pub templates: BTreeMap<String, Arc<RetryTemplate>>,
    pub classifiers: BTreeMap<String, Arc<Classifier>>,
    pub calendars: BTreeMap<String, Arc<Calendar>>,
    pub channels: BTreeMap<String, Arc<Channel>>,
    pub flows: BTreeMap<String, Arc<Flow>>,
}

impl CompiledPolicy {
    pub fn flow(&self, name: &str) -> Option<&Arc<Flow>> {
        self.flows.get(name)
    }

    pub fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.channels.get(name)
    }

    pub fn calendar(&self, name: &str) -> Option<&Arc<Calendar>> {
        self.calendars.get(name)
    }
}

/// A short hex digest of the policy sources (file names and contents).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyVersion(pub String);

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    /// The priority of a job submitted without one.
    pub priority: i32,
    pub steps: Vec<Step>,
    pub on_dead: Option<OnDead>,
    /// The steps whose answers later steps' expressions read: kept in the
    /// step log when the step succeeds.
    pub kept_responses: BTreeSet<String>,
}

impl Flow {
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// The primary channel (a parallel step's first).
    pub channel: String,
    /// A parallel step's channels, each delivered and retried on its own
    /// (empty for a step with one channel).
    pub parallel: Vec<String>,
    /// Tried in order once the primary's retries run out.
    pub fallback: Vec<String>,
    /// The template when no `retry` entry with a `when` holds.
    pub retry: Arc<RetryTemplate>,
    /// `retry` entries with a `when`, in order: the first that holds for the
    /// job names the template instead of `retry`.
    pub retry_when: Vec<RetryWhen>,
    /// The step runs only when this holds; it is skipped otherwise.
    pub when: Option<Expr>,
    /// The request body built for each attempt (the payload unchanged when
    /// `None`).
    pub body: Option<Mapping>,
    /// A fallback's own body, by fallback (`None`: the step's `body`).
    pub fallback_bodies: Vec<Option<Mapping>>,
    /// The step's own classifier, tried before the built-in rules.
    pub classifier: Option<Arc<Classifier>>,
    /// Business hours and maintenance windows: when the step attempts, holds
    /// or retries with another template. `None`: any time, as `retry` says.
    pub hours: Option<StepHours>,
}

impl Step {
    /// The channel at `index`: 0 is the primary, `k` the k-th fallback.
    pub fn channel_at(&self, index: usize) -> Option<&str> {
        if index == 0 {
            Some(&self.channel)
        } else {
            self.fallback.get(index - 1).map(String::as_str)
        }
    }

    /// How many channels the step may use: the primary and its fallbacks.
    pub fn channel_count(&self) -> usize {
        1 + self.fallback.len()
    }

    /// The template of `retry` entry `choice` (`None`: the step's own).
    pub fn template(&self, choice: Option<usize>) -> &Arc<RetryTemplate> {
        choice
            .and_then(|index| self.retry_when.get(index))
            .map_or(&self.retry, |entry| &entry.template)
    }

    /// The body mapping of the channel at `index`: a fallback's own, else
    /// the step's; `None`: the payload as submitted.
    pub fn body_at(&self, index: usize) -> Option<&Mapping> {
        index
            .checked_sub(1)
            .and_then(|k| self.fallback_bodies.get(k))
            .and_then(Option::as_ref)
            .or(self.body.as_ref())
    }

    pub fn is_parallel(&self) -> bool {
        !self.parallel.is_empty()
    }

    /// Whether an attempt of the step evaluates an expression.
    pub fn reads_the_job(&self) -> bool {
        self.when.is_some()
            || !self.retry_when.is_empty()
            || self.body.is_some()
            || self.fallback_bodies.iter().any(Option::is_some)
    }
}

/// A `retry` entry with a `when`.
#[derive(Debug, Clone)]
pub struct RetryWhen {
    pub when: Expr,
    /// The template's name, as `explain` shows it.
    pub template_name: String,
    pub template: Arc<RetryTemplate>,
}

/// A step's `hours`: a calendar and what its closed times do to the step.
/// The rules apply to every attempt of the step, its fallback channels'
/// included.
#[derive(Debug, Clone)]
pub struct StepHours {
    pub calendar: Arc<Calendar>,
    /// `in_hours: { retry: T }`: the template while the calendar is open;
    /// `None`: the step's own.
    pub in_hours: Option<Arc<RetryTemplate>>,
    pub off_hours: OffHours,
    pub maintenance: MaintenanceRule,
}

/// What a step does while its calendar is closed (off hours, on a holiday,
/// or, unless the step suspends for maintenance, inside a window).
#[derive(Debug, Clone)]
pub enum OffHours {
    /// `off_hours` not written: attempts go on with the step's template.
    Attempt,
    /// `off_hours: hold`: no attempt until the calendar next opens.
    Hold,
    /// `off_hours: { retry: T }`: attempts go on; a failure while closed is
    /// retried (delays, retries, `total_timeout`) as template T says.
    Retry(Arc<RetryTemplate>),
}

/// What a step does inside one of its calendar's maintenance windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceRule {
    /// `maintenance` not written: a window is closed time like any other,
    /// and `off_hours` decides.
    AsOffHours,
    /// `maintenance: suspend`: no attempt inside a window; the job resumes
    /// at its end.
    Suspend,
}

#[derive(Debug, Clone)]
pub struct OnDead {
    /// A channel that receives the dead job.
    pub notify: String,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// Set under the channel or by a step that uses it as its primary.
    pub breaker: Option<BreakerConfig>,
    pub rate: Option<Rate>,
    /// The most attempts in flight at once.
    pub concurrency: Option<u32>,
    pub quick_retry: Option<QuickRetry>,
    pub slow_down: Option<SlowDown>,
}

/// Past `errors` failed attempts within `per`, new attempts wait a random
/// time in `delay`, each job at most `max_delays` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowDown {
    pub errors: u32,
    pub per: Duration,
    pub delay: (Duration, Duration),
    pub max_delays: u32,
}

impl SlowDown {
    pub const DEFAULT_MAX_DELAYS: u32 = 5;
    pub const MAX_PER: Duration = Duration::from_secs(3600);
    pub const MAX_DELAY: Duration = Duration::from_secs(3600);

    /// The wait for a uniform `sample` in `[0, 1)`.
    pub fn delay_for(&self, sample: f64) -> Duration {
        let (min, max) = self.delay;
        min + (max - min).mul_f64(sample.clamp(0.0, 1.0))
    }
}

/// Tries made again at once within one attempt, for the error kinds `on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickRetry {
    /// Tries after the first.
    pub attempts: u32,
    pub delay: Duration,
    pub on: Vec<ErrorKind>,
}

impl QuickRetry {
    pub const MAX_ATTEMPTS: u32 = 5;
    pub const MAX_DELAY: Duration = Duration::from_secs(10);
    pub const DEFAULT_DELAY: Duration = Duration::from_millis(200);
    pub const DEFAULT_ON: [ErrorKind; 2] = [ErrorKind::Connect, ErrorKind::Reset];
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    Http(HttpChannel),
    File(FileChannel),
    /// Each attempt goes to one member channel.
    Pool(Pool),
}

impl ChannelKind {
    pub fn kind_name(&self) -> &'static str {
        match self {
            ChannelKind::Http(_) => "http",
            ChannelKind::File(_) => "file",
            ChannelKind::Pool(_) => "pool",
        }
    }
}

/// A pool's members (channels that are not pools) and how it chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub members: Vec<PoolMember>,
    pub strategy: PoolStrategy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    pub name: String,
    /// Its share with `weighted` (1 otherwise).
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStrategy {
    RoundRobin,
    Weighted,
    /// The best recent success rate, then the lowest latency.
    Healthiest,
}

impl PoolStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolStrategy::RoundRobin => "round_robin",
            PoolStrategy::Weighted => "weighted",
            PoolStrategy::Healthiest => "healthiest",
        }
    }
}

/// An HTTP endpoint. Values may hold secrets expanded from `${ENV}`; they are
/// kept in [`Secret`] so that no `Debug` or log line prints them.
#[derive(Debug, Clone)]
pub struct HttpChannel {
    pub url: SecretUrl,
    /// The URL as written in the policy file (`${VAR}` not expanded): safe to
    /// show.
    pub url_display: String,
    pub method: String,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    /// How to get a fresh token when a classifier answers `refresh_auth`.
    pub refresh_auth: Option<Box<RefreshAuth>>,
    /// Standard Webhooks signatures on every request (`sign`).
    pub sign: Option<Box<Signing>>,
    /// The channel's own HTTP client, when `tls` gives it a client
    /// certificate or a CA of its own; the shared client otherwise.
    pub client: Option<reqwest::Client>,
}

/// A spool directory: one JSON file per job, written atomically.
#[derive(Debug, Clone)]
pub struct FileChannel {
    pub dir: PathBuf,
}

/// An endpoint's URL, which may hold a secret, parsed once when the policy
/// is compiled instead of at every request (parsing, with its IDNA mapping
/// of the host, was 2 % of the engine's CPU under load).
#[derive(Clone)]
pub struct SecretUrl {
    text: Secret,
    /// `None` when the text is no URL; the request then fails with the
    /// HTTP client's own error, as it would have.
    parsed: Option<reqwest::Url>,
}

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> Self {
        let text = Secret::new(value);
        let parsed = reqwest::Url::parse(text.expose()).ok();
        Self { text, parsed }
    }

    /// The URL as written (variables expanded), for the one place that must
    /// send it.
    pub fn expose(&self) -> &str {
        self.text.expose()
    }

    pub fn parsed(&self) -> Option<&reqwest::Url> {
        self.parsed.as_ref()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretUrl(***)")
    }
}

/// A string that may hold a secret: `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_url_is_parsed_once_and_never_printed() {
        let url = SecretUrl::new("https://user:hunter2@api.example/leads?key=k1");
        assert_eq!(format!("{url:?}"), "SecretUrl(***)");
        assert_eq!(
            url.expose(),
            "https://user:hunter2@api.example/leads?key=k1"
        );
        let parsed = url.parsed().expect("a URL");
        assert_eq!(
            (parsed.host_str(), parsed.path(), parsed.query()),
            (Some("api.example"), "/leads", Some("key=k1"))
        );
        assert!(SecretUrl::new("not a url").parsed().is_none());
    }
}
