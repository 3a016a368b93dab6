//! Policy test cases as users write them: the `tests` list of a policy file
//! or of a `*.test.yaml` / `*.test.toml` file beside it. [`crate::policytest`]
//! checks and runs them.
//!
//! Like the policy `*Def`s, values stay close to the text (times, durations
//! and bounds are strings) so that every problem is reported with its
//! position, and unknown keys are errors.

use std::collections::BTreeMap;

use super::defs::{ErrorKindDef, Text};

/// One test case: a job, the partner's answers to its attempts, and what
/// should happen.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct TestCaseDef {
    /// What the case shows; reports name it.
    pub name: String,
    /// The flow the job is submitted to.
    pub flow: String,
    /// The step the job starts at; the flow's first step unless written.
    pub step: Option<String>,
    /// When the first attempt starts, in RFC 3339 (`2026-05-04T10:00:00Z`);
    /// 2026-01-05T09:00:00Z (a Monday) unless written.
    pub start: Option<String>,
    /// The partner's answers, one per attempt, in order. When they run out
    /// the job stays where it is: `pending`.
    #[serde(default)]
    pub responses: Vec<ResponseDef>,
    /// The job's payload, which the flow's expressions (`when`, `retry`
    /// entries, `body`) read; `{}` unless written.
    pub payload: Option<serde_json::Value>,
    /// The job's priority (`job.priority`); the flow's unless written.
    pub priority: Option<i64>,
    /// The answers of steps before `step` (`status`, `headers`, `body`),
    /// by step name, for the expressions that read
    /// `steps.NAME.response`. Steps the case runs keep their own.
    #[serde(default)]
    pub step_responses: BTreeMap<String, ResponseDef>,
    pub expect: ExpectDef,
}

/// One answer of the partner: an HTTP response (`status`, `headers`,
/// `body`) or a transport error (`error`, `message`); or `breaker: open`,
/// the channel's circuit breaker refusing the attempt.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ResponseDef {
    /// The HTTP status, 100 to 599.
    pub status: Option<i64>,
    /// Response headers; `Retry-After` is the one classifiers read.
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// The body: a string as is, anything else as its JSON text.
    pub body: Option<serde_json::Value>,
    /// A delivery that got no answer, by kind.
    pub error: Option<ErrorKindDef>,
    /// The transport error's message (what `error_message` rules read).
    pub message: Option<String>,
    /// The same answer this many attempts in a row; 1 unless written.
    pub times: Option<u32>,
    /// `open`: the channel's circuit breaker is open when this attempt
    /// would go (it lets a probe through after its `cooldown`); nothing is
    /// sent. The job goes to the step's next fallback, or waits for the
    /// probe, `suspended` with reason `breaker_open`.
    pub breaker: Option<BreakerDef>,
    /// `true`: the retry this answer calls for is over the hourly retry
    /// quota; it waits for the next full hour, `suspended` with reason
    /// `quota`.
    #[serde(default)]
    pub over_quota: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum BreakerDef {
    Open,
}

/// What the run should show. Only what is written is checked.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ExpectDef {
    /// Every attempt, in order: as many as the run makes.
    pub attempts: Option<Vec<ExpectAttemptDef>>,
    /// The job's state at the end: `succeeded`, `dead`, `suspended` (the
    /// responses ran out while it is held: a calendar, a breaker, a quota),
    /// or `pending` (they ran out while it would try again, held or not).
    pub state: Option<StateDef>,
    /// Why a dead job died (`exhausted`, `permanent`), or why a suspended
    /// one waits (`maintenance`, `off_hours`, `breaker_open`, `quota`).
    pub reason: Option<ReasonDef>,
    /// The step the job stands at in the end.
    pub step: Option<String>,
    /// The channel of the last attempt.
    pub channel: Option<String>,
}

/// One attempt's expected facts.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ExpectAttemptDef {
    pub step: Option<String>,
    /// The channel: the primary or a fallback.
    pub channel: Option<String>,
    /// The classifier's verdict, or `skipped` for a channel whose breaker
    /// was open.
    pub outcome: Option<AttemptOutcomeDef>,
    /// The rule that decided: its `name`, `classifier[index]`,
    /// `builtin[index]` or `default`.
    pub rule: Option<String>,
    /// What the engine does next.
    pub decision: Option<DecisionDef>,
    /// When the attempt starts: `+2s` after the first attempt, `+2s±20%`,
    /// `+2s±500ms`, a range `+1s600ms..+2s400ms`, or an RFC 3339 time.
    pub at: Option<String>,
    /// The wait chosen before the next attempt: `2s`, `2s±20%`, `1s..3s`.
    pub delay: Option<String>,
    /// The request body the step's `body` built for this attempt, as JSON.
    pub body: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum StateDef {
    Succeeded,
    Dead,
    Pending,
    Suspended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum ReasonDef {
    Exhausted,
    Permanent,
    Maintenance,
    OffHours,
    BreakerOpen,
    Quota,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum AttemptOutcomeDef {
    Success,
    Retry,
    Fail,
    RefreshAuth,
    /// Not attempted: the channel's breaker was open.
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum DecisionDef {
    Retry,
    /// A retry held: it falls where the step's calendar holds (it waits for
    /// the opening, or the maintenance window's end), or it is over quota.
    Suspend,
    Fallback,
    NextStep,
    Succeeded,
    Dead,
}
