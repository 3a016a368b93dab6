//! Rows of the step log as records, shared by both stores: the two schemas
//! hold the same columns with the same types (times as milliseconds since
//! the epoch, counts as integers), so one decoding serves SQLite and
//! PostgreSQL, and a change to a record is made once.

use jiff::Timestamp;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{
    AttemptRecord, InsightCount, JobRecord, NodeRecord, PausedFlow, PayloadEdit, StateCounts,
    StoreError, StoreResult,
};
use crate::lifecycle::{JobState, Word};

/// The column reads the decoders need, for any sqlx row whose database
/// decodes text and 64-bit integers.
pub(super) trait Columns {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
}

impl<R> Columns for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> StoreResult<String> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        Ok(self.try_get(column)?)
    }
}

pub(super) fn ms(at: Timestamp) -> i64 {
    at.as_millisecond()
}

pub(super) fn opt_ms(at: Option<Timestamp>) -> Option<i64> {
    at.map(ms)
}

fn timestamp(column: &str, value: i64) -> StoreResult<Timestamp> {
    Timestamp::from_millisecond(value)
        .map_err(|error| StoreError::Corrupt(format!("{column} = {value}: {error}")))
}

pub(super) fn opt_timestamp(column: &str, value: Option<i64>) -> StoreResult<Option<Timestamp>> {
    value.map(|value| timestamp(column, value)).transpose()
}

fn time_of(row: &impl Columns, column: &str) -> StoreResult<Timestamp> {
    timestamp(column, row.int(column)?)
}

fn opt_time_of(row: &impl Columns, column: &str) -> StoreResult<Option<Timestamp>> {
    opt_timestamp(column, row.opt_int(column)?)
}

fn count_of(row: &impl Columns, column: &str) -> StoreResult<u32> {
    let value = row.int(column)?;
    u32::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{column} = {value} is not a count")))
}

/// A stored word of the job's life.
fn word_of<W: Word>(row: &impl Columns, column: &str) -> StoreResult<W> {
    W::parse(&row.text(column)?).map_err(|error| StoreError::Corrupt(format!("{column}: {error}")))
}

fn opt_word_of<W: Word>(row: &impl Columns, column: &str) -> StoreResult<Option<W>> {
    row.opt_text(column)?
        .map(|text| {
            W::parse(&text).map_err(|error| StoreError::Corrupt(format!("{column}: {error}")))
        })
        .transpose()
}

pub(super) fn job_from_row(row: &impl Columns) -> StoreResult<JobRecord> {
    Ok(JobRecord {
        id: row.text("id")?,
        flow: row.text("flow")?,
        state: word_of(row, "state")?,
        step_index: count_of(row, "step_index")?,
        step: row.text("step")?,
        channel_index: count_of(row, "channel_index")?,
        attempt: count_of(row, "attempt")?,
        series_started_at: opt_time_of(row, "series_started_at")?,
        held_ms: row.int("held_ms")?,
        next_at: opt_time_of(row, "next_at")?,
        reason: opt_word_of(row, "reason")?,
        idempotency_key: row.text("idempotency_key")?,
        payload: row.text("payload")?,
        policy_version: row.text("policy_version")?,
        created_at: time_of(row, "created_at")?,
        updated_at: time_of(row, "updated_at")?,
        attempts_total: count_of(row, "attempts_total")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_until: opt_time_of(row, "lease_until")?,
        traceparent: row.opt_text("traceparent")?,
        priority: i32::try_from(row.int("priority")?)
            .map_err(|_| StoreError::Corrupt("priority out of range".into()))?,
        responses: row.opt_text("responses")?,
        branches: row.opt_text("branches")?,
        slowed: count_of(row, "slowed")?,
        notify_at: opt_time_of(row, "notify_at")?,
        notify_attempts: count_of(row, "notify_attempts")?,
    })
}

pub(super) fn jobs_from_rows<R: Columns>(rows: &[R]) -> StoreResult<Vec<JobRecord>> {
    rows.iter().map(job_from_row).collect()
}

pub(super) fn attempt_from_row(row: &impl Columns) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        job_id: row.text("job_id")?,
        step: row.text("step")?,
        channel: row.text("channel")?,
        attempt: count_of(row, "attempt")?,
        started_at: time_of(row, "started_at")?,
        finished_at: time_of(row, "finished_at")?,
        status: row
            .opt_int("status")?
            .map(|status| {
                u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("status = {status}")))
            })
            .transpose()?,
        error: row.opt_text("error")?,
        error_message: row.opt_text("error_message")?,
        outcome: word_of(row, "outcome")?,
        rule: row.opt_text("rule")?,
        decision: word_of(row, "decision")?,
        delay_ms: row.opt_int("delay_ms")?,
        next_at: opt_time_of(row, "next_at")?,
        policy_version: row.text("policy_version")?,
        member: row.opt_text("member")?,
        quick_tries: count_of(row, "quick_tries")?,
    })
}

pub(super) fn node_from_row(row: &impl Columns) -> StoreResult<NodeRecord> {
    Ok(NodeRecord {
        id: row.text("id")?,
        version: row.text("version")?,
        started_at: time_of(row, "started_at")?,
        heartbeat_at: time_of(row, "heartbeat_at")?,
        running: u64::try_from(row.int("running")?).unwrap_or(0),
    })
}

pub(super) fn paused_flow_from_row(row: &impl Columns) -> StoreResult<PausedFlow> {
    Ok(PausedFlow {
        flow: row.text("flow")?,
        paused_at: time_of(row, "paused_at")?,
        paused_by: row.text("paused_by")?,
    })
}

pub(super) fn insight_count_from_row(row: &impl Columns) -> StoreResult<InsightCount> {
    Ok(InsightCount {
        channel: row.text("channel")?,
        hour: row.int("hour")?,
        metric: row.text("metric")?,
        key: row.text("key")?,
        count: row.int("count")?,
    })
}

/// Counts by state from the row of [`super::sql::Sql::count_by_state`].
pub(super) fn state_counts(row: &impl Columns) -> StoreResult<StateCounts> {
    let count =
        |column: &str| -> StoreResult<u64> { Ok(u64::try_from(row.int(column)?).unwrap_or(0)) };
    let (total, waiting) = (count("total")?, count("waiting")?);
    let suspended = count("suspended")?;
    let mut counts = StateCounts::new();
    counts.insert(JobState::Pending, waiting.saturating_sub(suspended));
    counts.insert(JobState::Running, count("running")?);
    counts.insert(JobState::Suspended, suspended);
    counts.insert(JobState::Dead, count("dead")?);
    counts.insert(JobState::Cancelled, count("cancelled")?);
    let others: u64 = counts.values().sum();
    counts.insert(JobState::Succeeded, total.saturating_sub(others));
    Ok(counts)
}

/// Counts by flow and state from rows of `flow, state, n`.
pub(super) fn counts_by_flow<R: Columns>(
    rows: &[R],
) -> StoreResult<std::collections::BTreeMap<String, StateCounts>> {
    let mut counts: std::collections::BTreeMap<String, StateCounts> = Default::default();
    for row in rows {
        let state: crate::lifecycle::JobState = word_of(row, "state")?;
        let n = u64::try_from(row.int("n")?).unwrap_or(0);
        counts
            .entry(row.text("flow")?)
            .or_default()
            .insert(state, n);
    }
    Ok(counts)
}

pub(super) fn payload_edit_from_row(row: &impl Columns) -> StoreResult<PayloadEdit> {
    Ok(PayloadEdit {
        job_id: row.text("job_id")?,
        old_payload: row.text("old_payload")?,
        new_payload: row.text("new_payload")?,
        editor: row.text("editor")?,
        edited_at: time_of(row, "edited_at")?,
    })
}

/// Payloads are compared as JSON values, so key order and spacing do not
/// make a resubmission a conflict.
pub(super) fn same_payload(stored: &str, submitted: &str) -> bool {
    if stored == submitted {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(stored),
        serde_json::from_str::<serde_json::Value>(submitted),
    ) {
        (Ok(stored), Ok(submitted)) => stored == submitted,
        _ => false,
    }
}
