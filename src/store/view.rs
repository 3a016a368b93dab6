//! Jobs and attempts as users see them: in the API, the CLI's `--json`, and
//! the body an `on_dead` notification sends.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{AttemptRecord, JobRecord, JobState, PayloadEdit};
use crate::payload::embed;

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    pub flow: String,
    pub state: JobState,
    pub step: String,
    /// The channel the next attempt uses: 0 the primary, `k` the k-th
    /// fallback.
    pub channel_index: u32,
    /// The stored bytes, embedded unchanged.
    #[schema(value_type = serde_json::Value)]
    pub payload: Box<RawValue>,
    pub idempotency_key: String,
    /// Within its flow, due jobs of higher priority start first.
    pub priority: i32,
    /// How many times its channel's `slow_down` delayed it.
    pub slowed: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub next_at: Option<Timestamp>,
    /// Why the job is suspended or dead.
    pub reason: Option<crate::lifecycle::Reason>,
    pub policy_version: String,
    pub attempts_total: u32,
    /// Present on a single job; omitted in lists.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attempts: Option<Vec<AttemptRecord>>,
    /// Every payload an operator replaced, oldest first; on a single job.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_edits: Option<Vec<PayloadEditView>>,
    /// The branches of its parallel steps, by step then channel (`state`,
    /// `attempts`, `next_at`, `reason`); on a single job that has any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub branches: Option<serde_json::Value>,
}

/// One payload edit as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayloadEditView {
    pub editor: String,
    pub edited_at: Timestamp,
    #[schema(value_type = serde_json::Value)]
    pub old_payload: Box<RawValue>,
    #[schema(value_type = serde_json::Value)]
    pub new_payload: Box<RawValue>,
}

impl From<PayloadEdit> for PayloadEditView {
    fn from(edit: PayloadEdit) -> Self {
        Self {
            editor: edit.editor,
            edited_at: edit.edited_at,
            old_payload: embed(&edit.old_payload),
            new_payload: embed(&edit.new_payload),
        }
    }
}

impl JobView {
    pub fn new(job: JobRecord, attempts: Option<Vec<AttemptRecord>>) -> Self {
        let payload = embed(&job.payload);
        Self {
            id: job.id,
            flow: job.flow,
            state: job.state,
            step: job.step,
            channel_index: job.channel_index,
            payload,
            idempotency_key: job.idempotency_key,
            created_at: job.created_at,
            updated_at: job.updated_at,
            next_at: job.next_at,
            reason: job.reason,
            policy_version: job.policy_version,
            attempts_total: job.attempts_total,
            priority: job.priority,
            slowed: job.slowed,
            branches: attempts
                .is_some()
                .then_some(job.branches.as_deref())
                .flatten()
                .and_then(|text| serde_json::from_str(text).ok()),
            attempts,
            payload_edits: None,
        }
    }
}
