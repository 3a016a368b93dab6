//! The step log's rarer writes (leases handed back or rescued, dead-job
//! notifications, operators' retries, edits and cancels, resumed jobs), run
//! on the writer thread like the hot path's: SQLite has one writer, and
//! this process writes through one connection, in one queue.

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use super::super::rows::{ms, opt_ms};
use super::super::{
    AttemptRecord, InsightCount, JobFilter, JobState, JobUpdate, Membership, NotificationClaim,
    Reason, RetryBatch, StoreResult,
};
use super::writer::{begin, job_from_written, record_attempt, INSERT_ATTEMPT};
use super::SQL;

pub(super) fn leases_release(connection: &mut Connection, owner: &str) -> StoreResult<u64> {
    let changed = connection
        .prepare_cached(&SQL.leases_release)?
        .execute(params![owner])?;
    Ok(changed as u64)
}

pub(super) fn leases_rescue(
    connection: &mut Connection,
    now: Timestamp,
    alive_after: Timestamp,
) -> StoreResult<u64> {
    let changed = connection
        .prepare_cached(&SQL.leases_rescue)?
        .execute(params![ms(now), ms(alive_after)])?;
    Ok(changed as u64)
}

/// `statement` of [`SQL`] for `node` at `now` (an entry, a heartbeat).
pub(super) fn node_write(
    connection: &mut Connection,
    statement: &str,
    node: &Membership,
    now: Timestamp,
) -> StoreResult<()> {
    connection.prepare_cached(statement)?.execute(params![
        node.id,
        node.instance,
        node.version,
        ms(now)
    ])?;
    Ok(())
}

pub(super) fn flow_pause(
    connection: &mut Connection,
    flow: &str,
    by: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let inserted = connection
        .prepare_cached(&SQL.flow_pause)?
        .execute(params![flow, ms(now), by])?;
    Ok(inserted == 1)
}

pub(super) fn flow_resume(
    connection: &mut Connection,
    flow: &str,
    now: Timestamp,
) -> StoreResult<Option<u64>> {
    let tx = begin(connection)?;
    let unpaused = tx
        .prepare_cached(&SQL.flow_unpause)?
        .execute(params![flow])?;
    let resumed = if unpaused == 1 {
        let count = tx.prepare_cached(&SQL.resume_flow)?.execute(params![
            Reason::Paused.as_str(),
            ms(now),
            flow
        ])?;
        Some(count as u64)
    } else {
        None
    };
    tx.commit()?;
    Ok(resumed)
}

pub(super) fn flow_resume_sweep(
    connection: &mut Connection,
    flow: &str,
    now: Timestamp,
) -> StoreResult<u64> {
    let swept = connection
        .prepare_cached(&SQL.resume_flow_unless_paused)?
        .execute(params![Reason::Paused.as_str(), ms(now), flow])?;
    Ok(swept as u64)
}

/// Forgets the nodes silent since before `before` that hold no job.
pub(super) fn nodes_forget(connection: &mut Connection, before: Timestamp) -> StoreResult<()> {
    connection
        .prepare_cached(&SQL.nodes_forget)?
        .execute(params![ms(before)])?;
    Ok(())
}

/// Deletes up to `limit` jobs in `state` changed before `before`, with
/// their attempts and payload edits (the writer's connection checks no
/// foreign keys: children go first).
pub(super) fn jobs_prune(
    connection: &mut Connection,
    state: JobState,
    before: Timestamp,
    limit: u32,
) -> StoreResult<u64> {
    let tx = begin(connection)?;
    let ids: Vec<String> = {
        let mut select = tx.prepare_cached(&SQL.prunable)?;
        let rows = select.query_map(
            params![state.as_str(), ms(before), i64::from(limit)],
            |row| row.get(0),
        )?;
        rows.collect::<Result<_, _>>()?
    };
    {
        let mut attempts = tx.prepare_cached("DELETE FROM attempts WHERE job_id = ?1")?;
        let mut edits = tx.prepare_cached("DELETE FROM payload_edits WHERE job_id = ?1")?;
        let mut jobs = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
        for id in &ids {
            attempts.execute(params![id])?;
            edits.execute(params![id])?;
            jobs.execute(params![id])?;
        }
    }
    tx.commit()?;
    Ok(ids.len() as u64)
}

pub(super) fn node_leave(connection: &mut Connection, node: &Membership) -> StoreResult<()> {
    connection
        .prepare_cached(&SQL.node_leave)?
        .execute(params![node.id, node.instance])?;
    Ok(())
}

/// Leases up to `limit` dead jobs whose notification is due (their
/// `notify_at` moved to `lease_until`). The limit is cast: see
/// `writer::CLAIM_FLOW`.
pub(super) fn notifications_claim_due(
    connection: &mut Connection,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> StoreResult<Vec<NotificationClaim>> {
    let tx = begin(connection)?;
    let mut claims = Vec::new();
    {
        let mut statement = tx.prepare_cached(&SQL.notifications_claim)?;
        let mut rows = statement.query(params![
            ms(now),
            ms(lease_until),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])?;
        while let Some(row) = rows.next()? {
            claims.push(NotificationClaim {
                job: job_from_written(row)?,
            });
        }
    }
    tx.commit()?;
    Ok(claims)
}

pub(super) fn notification_record(
    connection: &mut Connection,
    attempt: &AttemptRecord,
    next_at: Option<Timestamp>,
) -> StoreResult<()> {
    let tx = begin(connection)?;
    tx.prepare_cached(&SQL.notification_counted)?
        .execute(params![attempt.job_id, opt_ms(next_at)])?;
    record_attempt(
        &mut tx.prepare_cached(INSERT_ATTEMPT)?,
        &attempt.job_id,
        attempt,
    )?;
    tx.commit()?;
    Ok(())
}

/// Moves the next dead jobs matching `filter` (after `after`, oldest
/// first) to `pending`, the k-th due `k × spacing_us` after `first_at`.
pub(super) fn jobs_retry_batch(
    connection: &mut Connection,
    filter: &JobFilter,
    after: Option<&str>,
    limit: u32,
    first_at: Timestamp,
    spacing_us: i64,
) -> StoreResult<RetryBatch> {
    let tx = begin(connection)?;
    let ids: Vec<String> = {
        let mut select = tx.prepare_cached(&SQL.dead_to_retry())?;
        let rows = select.query_map(
            params![
                JobState::Dead.as_str(),
                filter.flow,
                filter.step,
                filter.status,
                filter.error,
                filter.rule,
                opt_ms(filter.since),
                opt_ms(filter.until),
                filter.key,
                after,
                i64::from(limit.max(1)),
            ],
            |row| row.get(0),
        )?;
        rows.collect::<Result<_, _>>()?
    };
    let mut batch = RetryBatch::default();
    {
        let mut retry = tx.prepare_cached(&SQL.retry_dead)?;
        for (k, id) in ids.into_iter().enumerate() {
            let at = ms(first_at).saturating_add(spacing_us.saturating_mul(k as i64) / 1000);
            let changed = retry.execute(params![id, at])?;
            batch.matched += 1;
            batch.retried += changed as u64;
            batch.last_id = Some(id);
        }
    }
    tx.commit()?;
    Ok(batch)
}

/// Makes the jobs suspended for `reason` due at `now`.
pub(super) fn jobs_resume(
    connection: &mut Connection,
    reason: Reason,
    now: Timestamp,
) -> StoreResult<u64> {
    let changed = connection
        .prepare_cached(&SQL.resume)?
        .execute(params![reason.as_str(), ms(now)])?;
    Ok(changed as u64)
}

/// An operator's change: `Some(true)` made, `Some(false)` refused (the job
/// is in another state), `None` no such job.
pub(super) fn job_update(
    connection: &mut Connection,
    id: &str,
    update: &JobUpdate,
) -> StoreResult<Option<bool>> {
    let tx = begin(connection)?;
    let changed = match update {
        JobUpdate::Retry { at } => tx
            .prepare_cached(&SQL.retry_dead)?
            .execute(params![id, ms(*at)])?,
        JobUpdate::EditPayload {
            payload,
            editor,
            at,
        } => {
            // The audit row is written first, from the row being replaced,
            // under the same state guard as the update.
            tx.prepare_cached(&SQL.edit_audit)?
                .execute(params![id, payload, editor, ms(*at)])?;
            tx.prepare_cached(&SQL.edit_payload)?
                .execute(params![id, payload, ms(*at)])?
        }
        JobUpdate::Cancel { at } => tx
            .prepare_cached(&SQL.cancel)?
            .execute(params![id, ms(*at)])?,
    };
    let exists = changed == 1
        || tx
            .prepare_cached(&SQL.job_exists)?
            .query_row(params![id], |_| Ok(()))
            .optional()?
            .is_some();
    tx.commit()?;
    Ok(exists.then_some(changed == 1))
}

pub(super) fn insights_add(
    connection: &mut Connection,
    counts: &[InsightCount],
) -> StoreResult<()> {
    let tx = begin(connection)?;
    {
        let mut add = tx.prepare_cached(&SQL.insight_add)?;
        for count in counts {
            add.execute(params![
                count.channel,
                count.hour,
                count.metric,
                count.key,
                count.count
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn insights_prune(connection: &mut Connection, before_hour: i64) -> StoreResult<u64> {
    let deleted = connection
        .prepare_cached(&SQL.insights_prune)?
        .execute(params![before_hour])?;
    Ok(deleted as u64)
}

pub(super) fn channel_errors_add(
    connection: &mut Connection,
    counts: &[(String, i64, i64)],
) -> StoreResult<()> {
    let tx = begin(connection)?;
    {
        let mut add = tx.prepare_cached(&SQL.channel_errors_add)?;
        for (channel, second, count) in counts {
            add.execute(params![channel, second, count])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn channel_errors_prune(connection: &mut Connection, before: i64) -> StoreResult<u64> {
    let deleted = connection
        .prepare_cached(&SQL.channel_errors_prune)?
        .execute(params![before])?;
    Ok(deleted as u64)
}
