//! Retention: finished jobs older than their state's age (`[retention]`,
//! 30 days for `succeeded` and `cancelled` unless set; `dead` kept until
//! handled) are deleted with their attempts and payload edits, once a
//! minute, in batches of [`BATCH`] with a pause between them, so that the
//! deliveries' writes are never held up for long (on SQLite each batch is
//! one turn of the writer thread, in the queue with the scheduler's
//! cycles; on PostgreSQL nodes prune side by side, skipping each other's
//! rows).

use std::time::Duration;

use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::lifecycle::signed;
use crate::store::{Retention, SharedStepLog};

/// Jobs deleted per transaction.
pub const BATCH: u32 = 500;

/// How often the pruner looks.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The pause between two batches.
const BETWEEN_BATCHES: Duration = Duration::from_millis(10);

pub(super) struct Pruner {
    pub store: SharedStepLog,
    pub clock: SharedClock,
    pub retention: Retention,
}

impl Pruner {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if self.retention.ages().is_empty() {
            return;
        }
        loop {
            let now = self.clock.now();
            for (state, age) in self.retention.ages() {
                let before = now - signed(age);
                loop {
                    if *shutdown.borrow() {
                        return;
                    }
                    match self.store.jobs_prune(state, before, BATCH).await {
                        Ok(deleted) => {
                            metrics::counter!("steadfast_jobs_pruned_total",
                                "state" => state.as_str())
                            .increment(deleted);
                            if deleted < u64::from(BATCH) {
                                break;
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, state = state.as_str(), "pruning old jobs failed");
                            break;
                        }
                    }
                    tokio::time::sleep(BETWEEN_BATCHES).await;
                }
            }
            let sleep = self.clock.sleep_until(now + signed(PRUNE_EVERY));
            tokio::select! {
                _ = sleep => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jiff::Timestamp;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{InsertOutcome, JobState, NewJob, Transition};

    #[tokio::test]
    async fn finished_jobs_past_their_age_go_and_the_rest_stay() {
        let start: Timestamp = "2026-05-04T10:00:00Z".parse().expect("a time");
        let store = crate::store::open("sqlite::memory:").await.expect("a log");
        for n in 0..3 {
            let created = store
                .job_insert(NewJob {
                    id: format!("j{n}"),
                    flow: "f".into(),
                    idempotency_key: format!("k{n}"),
                    payload: "{}".into(),
                    step: "deliver".into(),
                    created_at: start,
                    next_at: start,
                    policy_version: "v".into(),
                    traceparent: None,
                    priority: 0,
                })
                .await
                .expect("inserted");
            assert!(matches!(created, InsertOutcome::Created(_)));
        }
        let claimed = store
            .jobs_claim_due("node", start, start + signed(Duration::from_secs(60)), 3)
            .await
            .expect("claimed");
        let to = [JobState::Succeeded, JobState::Cancelled, JobState::Dead];
        let moves: Vec<Transition> = claimed
            .iter()
            .zip(to)
            .map(|(job, to)| Transition {
                job_id: job.id.clone(),
                owner: "node".into(),
                lease_until: job.lease_until,
                attempt: None,
                to,
                step_index: 0,
                step: job.step.clone(),
                channel_index: 0,
                series_attempts: 0,
                series_started_at: None,
                held_ms: 0,
                next_at: None,
                reason: (to == JobState::Dead).then_some(crate::lifecycle::Reason::Permanent),
                policy_version: "v".into(),
                attempts_added: 0,
                slowed_added: 0,
                notify_at: None,
                responses: None,
                branches: None,
                branch_attempts: Vec::new(),
                now: start,
            })
            .collect();
        store.transitions_apply(moves).await.expect("applied");

        let clock = ManualClock::new(start + signed(Duration::from_secs(3_600)));
        let pruner = Pruner {
            store: store.clone(),
            clock: Arc::new(clock),
            retention: Retention {
                succeeded: Some(Duration::from_secs(60)),
                cancelled: None,
            },
        };
        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn(pruner.run(stopped));
        let gone = async {
            while store.job_get("j0").await.expect("read").is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the old succeeded job pruned");
        let _ = stop.send(true);
        running.await.expect("the pruner stops");
        assert!(
            store.job_get("j1").await.expect("read").is_some(),
            "cancelled: kept for ever"
        );
        assert!(
            store.job_get("j2").await.expect("read").is_some(),
            "dead: kept"
        );
    }
}
