//! Group commit: attempt results go to the step log in batched transactions.
//!
//! Executors hand their [`Transition`] to one writer task. It takes every
//! result that arrived while the previous transaction was being written and
//! commits them together, so the commit rate follows the load without an
//! artificial delay. A crash before the commit means the attempt runs again
//! with the same `Idempotency-Key`: at least once, never silently lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::store::{SharedStepLog, Transition};

/// The most results committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Hands results to the writer task.
#[derive(Clone)]
pub struct ResultWriter {
    tx: mpsc::Sender<Transition>,
}

impl ResultWriter {
    /// Starts the writer task; it ends once every `ResultWriter` clone is
    /// dropped and the queue is committed. `committed` is notified after each
    /// commit, since a committed result may make a job due at once.
    pub fn start(store: SharedStepLog, committed: Arc<Notify>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let task = tokio::spawn(run(store, rx, committed));
        (Self { tx }, task)
    }

    /// Queues a result; waits only when the queue is full (back-pressure on
    /// the executors when the database falls behind).
    pub async fn submit(&self, transition: Transition) {
        if self.tx.send(transition).await.is_err() {
            tracing::error!("result writer stopped; the attempt will run again after restart");
        }
    }
}

async fn run(store: SharedStepLog, mut rx: mpsc::Receiver<Transition>, committed: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut backoff = Duration::from_millis(50);
        loop {
            match store.transitions_apply(batch.clone()).await {
                Ok(applied) => {
                    let stale = applied.iter().filter(|ok| !**ok).count();
                    if stale > 0 {
                        tracing::warn!(
                            stale,
                            "results for jobs no longer leased here were dropped"
                        );
                    }
                    break;
                }
                Err(error) => {
                    // The jobs stay `running` under our lease: retrying the
                    // commit is safe, dropping it would lose the attempt.
                    tracing::error!(%error, batch = batch.len(), "committing results failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
        committed.notify_one();
    }
}
