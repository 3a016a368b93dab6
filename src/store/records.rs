//! The rows of the step log, as the rest of the engine sees them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::lifecycle::{Decision, JobState, Outcome, Reason};

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub flow: String,
    pub idempotency_key: String,
    /// The payload as JSON text.
    pub payload: String,
    /// The name of the flow's first step.
    pub step: String,
    pub created_at: Timestamp,
    /// When the first attempt is due.
    pub next_at: Timestamp,
    pub policy_version: String,
    /// The W3C `traceparent` the submission carried: every attempt's span
    /// continues that trace.
    pub traceparent: Option<String>,
    /// Within its flow, due jobs of higher priority start first
    /// (-100..=100).
    pub priority: i32,
}

#[derive(Debug, Clone)]
pub enum InsertOutcome {
    Created(JobRecord),
    /// The same key and payload: the job that already exists.
    Existing(JobRecord),
    /// The same key with another payload.
    Conflict(JobRecord),
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub flow: String,
    pub state: JobState,
    /// Position in the flow: the index and name of the current step.
    pub step_index: u32,
    pub step: String,
    /// 0 is the step's primary channel, `k` its k-th fallback.
    pub channel_index: u32,
    /// Attempts made on the current channel of the current step.
    pub attempt: u32,
    /// First attempt on the current channel, for `total_timeout`.
    pub series_started_at: Option<Timestamp>,
    /// Time the current series spent held by calendars or breakers, which
    /// does not count against `total_timeout`.
    pub held_ms: i64,
    pub next_at: Option<Timestamp>,
    /// Why the job is suspended or dead.
    pub reason: Option<Reason>,
    pub idempotency_key: String,
    pub payload: String,
    pub policy_version: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Attempts over the job's whole life, notifications excluded.
    pub attempts_total: u32,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    /// When the `on_dead` notification is next due (`None`: none owed).
    pub notify_at: Option<Timestamp>,
    /// Notification attempts made so far.
    pub notify_attempts: u32,
    /// The W3C `traceparent` the submission carried.
    pub traceparent: Option<String>,
    /// Within its flow, due jobs of higher priority start first.
    pub priority: i32,
    /// The answers of earlier steps that later steps' expressions read, a
    /// JSON object by step name (see [`crate::expr::Responses`]).
    pub responses: Option<String>,
    /// The branches of its parallel steps (see
    /// [`crate::engine::branches::Branches`]).
    pub branches: Option<String>,
    /// How many times its channel's `slow_down` delayed it (for
    /// `max_delays`).
    pub slowed: u32,
}

#[cfg(test)]
impl JobRecord {
    /// A job of `flow` at its first step, due, created and leased to node
    /// `a` until `at`: the fixture of the unit tests that hold claimed jobs.
    pub(crate) fn claimed_for_test(id: &str, flow: &str, key: &str, at: Timestamp) -> Self {
        Self {
            id: id.into(),
            flow: flow.into(),
            state: JobState::Running,
            step_index: 0,
            step: "deliver".into(),
            channel_index: 0,
            attempt: 0,
            series_started_at: None,
            held_ms: 0,
            next_at: Some(at),
            reason: None,
            idempotency_key: key.into(),
            payload: "{}".into(),
            policy_version: "v1".into(),
            created_at: at,
            updated_at: at,
            attempts_total: 0,
            lease_owner: Some("a".into()),
            lease_until: Some(at),
            notify_at: None,
            notify_attempts: 0,
            traceparent: None,
            priority: 0,
            responses: None,
            branches: None,
            slowed: 0,
        }
    }
}

pub type ClaimedJob = JobRecord;

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub job_id: String,
    pub step: String,
    pub channel: String,
    /// 1-based attempt number on this channel of this step; 0 on a row that
    /// records a channel not attempted (outcome `skipped`: its breaker was
    /// open).
    pub attempt: u32,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// The HTTP status, when the partner answered.
    pub status: Option<u16>,
    /// The error kind (`timeout`, `connect`, …) when it did not.
    pub error: Option<String>,
    pub error_message: Option<String>,
    /// The classifier's verdict, or `skipped`.
    pub outcome: Outcome,
    /// The rule that decided: `classifier[index]`, `builtin[index]`, a rule
    /// name, or `default`.
    pub rule: Option<String>,
    /// What the engine did next.
    pub decision: Decision,
    pub delay_ms: Option<i64>,
    pub next_at: Option<Timestamp>,
    pub policy_version: String,
    /// The member channel a pool sent this attempt to (`channel` is the
    /// pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Tries sent again at once within this attempt (the channel's
    /// `quick_retry`); the answer recorded is the last one's.
    #[serde(default)]
    pub quick_tries: u32,
}

/// The result of one attempt: the attempt row to append and where the job
/// goes. Applied only while the job is `running` under `owner`.
#[derive(Debug, Clone)]
pub struct Transition {
    pub job_id: String,
    pub owner: String,
    /// The lease the job was claimed under, as the claim returned it. With
    /// `owner` it fences the write: a transition applies only while the job
    /// is still held under that same lease, so a node that claimed the job
    /// again after its lease expired (even this node) does not get an older
    /// claim's result written over its own.
    pub lease_until: Option<Timestamp>,
    pub attempt: Option<AttemptRecord>,
    pub to: JobState,
    pub step_index: u32,
    pub step: String,
    pub channel_index: u32,
    pub series_attempts: u32,
    pub series_started_at: Option<Timestamp>,
    pub held_ms: i64,
    pub next_at: Option<Timestamp>,
    pub reason: Option<Reason>,
    pub policy_version: String,
    /// Attempts of the job the transition records (0 or 1), added to
    /// `attempts_total`: decided by the state machine, not the store.
    pub attempts_added: u32,
    /// Added to the job's `slowed` (1 when its channel's `slow_down`
    /// delayed it).
    pub slowed_added: u32,
    /// Set when the job dies and its flow has an `on_dead` notification.
    pub notify_at: Option<Timestamp>,
    /// The job's kept step responses, when this move adds one (`None`:
    /// unchanged).
    pub responses: Option<String>,
    /// The job's parallel branches, when this move changes them (`None`:
    /// unchanged).
    pub branches: Option<String>,
    /// The attempts of a parallel step's branches this move records, after
    /// `attempt`.
    pub branch_attempts: Vec<AttemptRecord>,
    pub now: Timestamp,
}

/// A node sharing the step log, as `GET /v1/nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// The steadfast version it runs.
    pub version: String,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    /// Jobs it holds `running`.
    pub running: u64,
}

/// How long finished jobs are kept; `None`: for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub succeeded: Option<std::time::Duration>,
    pub cancelled: Option<std::time::Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        let month = Some(std::time::Duration::from_secs(30 * 86_400));
        Self {
            succeeded: month,
            cancelled: month,
        }
    }
}

impl Retention {
    /// The states pruned, each with its age.
    pub fn ages(&self) -> Vec<(JobState, std::time::Duration)> {
        [
            (JobState::Succeeded, self.succeeded),
            (JobState::Cancelled, self.cancelled),
        ]
        .into_iter()
        .filter_map(|(state, age)| Some((state, age?)))
        .collect()
    }
}

/// One count of a channel's hour (see `pacing::insights`): added to by
/// every node, summed by readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsightCount {
    pub channel: String,
    /// The hour's start, in milliseconds since the epoch.
    pub hour: i64,
    /// `attempts`, `successes`, `errors` or `latency`.
    pub metric: String,
    /// The attempt number, error kind or latency bucket.
    pub key: String,
    pub count: i64,
}

/// A flow an operator paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedFlow {
    pub flow: String,
    pub paused_at: Timestamp,
    /// The API token's name, or `local`.
    pub paused_by: String,
}

/// This process's membership: its node id, and its run under that id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub id: String,
    /// Unique to this process: tells its heartbeats from an earlier run's.
    pub instance: String,
    pub version: String,
}

/// A dead job whose notification is due.
#[derive(Debug, Clone)]
pub struct NotificationClaim {
    pub job: JobRecord,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub flow: Option<String>,
    pub step: Option<String>,
    /// The HTTP status of the job's last attempt (notifications excluded).
    pub status: Option<u16>,
    /// The error kind of the job's last attempt (`timeout`, `connect`, …).
    pub error: Option<String>,
    /// The rule that decided the job's last attempt (`builtin[3]`, a name…).
    pub rule: Option<String>,
    /// `updated_at >= since`: for a dead job, when it died (or was edited).
    pub since: Option<Timestamp>,
    /// `updated_at < until`.
    pub until: Option<Timestamp>,
    /// Text the idempotency key contains (case as written).
    pub key: Option<String>,
    /// At most this many (the store caps it at 1000).
    pub limit: u32,
    /// The last id of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

pub type StateCounts = BTreeMap<JobState, u64>;

/// An operator's change to one job.
#[derive(Debug, Clone)]
pub enum JobUpdate {
    /// `dead` → `pending`: the failed step starts afresh on its primary
    /// channel (series count reset, history kept).
    Retry { at: Timestamp },
    /// Replace the payload of a `dead`, `pending` or `suspended` job; the old
    /// payload is kept in the audit table with who changed it and when.
    EditPayload {
        payload: String,
        editor: String,
        at: Timestamp,
    },
    /// `pending`, `suspended` or `dead` → `cancelled`.
    Cancel { at: Timestamp },
}

/// An operator's replacement of a job's payload, kept for audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadEdit {
    pub job_id: String,
    pub old_payload: String,
    pub new_payload: String,
    /// The API token's name, or `local` when the API has no tokens.
    pub editor: String,
    pub edited_at: Timestamp,
}

/// What one batch of a bulk retry did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryBatch {
    /// Jobs the batch looked at (dead and matching the filter, id > after).
    pub matched: u64,
    /// Of those, jobs moved to `pending`.
    pub retried: u64,
    /// The greatest id looked at: `after` for the next batch; `None` when
    /// nothing matched (the bulk retry is done).
    pub last_id: Option<String>,
}
