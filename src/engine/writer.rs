//! Group commit: attempt results wait here for the scheduler's next cycle,
//! which commits every result that arrived while the previous cycle was
//! being written, in the same transaction as its next claim.
//!
//! So the commit rate follows the load without an artificial delay. A crash
//! before the commit means the attempt runs again with the same
//! `Idempotency-Key`: at least once, never silently lost.

use tokio::sync::mpsc;

use crate::store::Transition;

/// The most results committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// Hands results to the scheduler.
#[derive(Clone)]
pub struct ResultWriter {
    tx: mpsc::Sender<Transition>,
}

/// The results waiting for a commit; read by the scheduler only.
pub struct ResultQueue {
    rx: mpsc::Receiver<Transition>,
}

/// A writer for the executors and the queue it fills.
pub fn channel() -> (ResultWriter, ResultQueue) {
    let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
    (ResultWriter { tx }, ResultQueue { rx })
}

impl ResultWriter {
    /// Queues a result; waits only when the queue is full (back-pressure on
    /// the executors when the database falls behind).
    pub async fn submit(&self, transition: Transition) {
        if self.tx.send(transition).await.is_err() {
            tracing::error!("result writer stopped; the attempt will run again after restart");
        }
    }
}

impl ResultQueue {
    /// Waits for at least one result and adds it, and any others already
    /// queued, to `batch` (up to [`MAX_BATCH`]). Cancel-safe. Returns false
    /// once every writer is gone and the queue is empty.
    pub async fn wait(&mut self, batch: &mut Vec<Transition>) -> bool {
        let room = MAX_BATCH.saturating_sub(batch.len()).max(1);
        self.rx.recv_many(batch, room).await > 0
    }

    /// Adds the results already queued to `batch`, without waiting.
    pub fn take_ready(&mut self, batch: &mut Vec<Transition>) {
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(transition) => batch.push(transition),
                Err(_) => break,
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}
