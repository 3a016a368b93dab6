//! What a step's expressions decide for one attempt, before anything is
//! sent: whether the step runs at all (`when`), which `retry` entry applies,
//! and the body to send. Pure: the executor does the I/O around it, and
//! `explain` asks the same questions of a payload.

use crate::expr::{EvalError, JobFacts, Responses, Scope};
use crate::model::Step;
use crate::store::JobRecord;

/// The step's decision for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Send `body` (`None`: the payload as submitted), retrying by `retry`
    /// entry `retry_choice` (`None`: the step's own template).
    Send {
        body: Option<String>,
        retry_choice: Option<usize>,
    },
    /// The step's `when` does not hold: skip it.
    Skip,
    /// An expression failed: an attempt with error kind `mapping`.
    Failed(EvalError),
}

/// What `job` shows an expression.
pub fn facts(job: &JobRecord) -> JobFacts<'_> {
    JobFacts {
        id: &job.id,
        key: &job.idempotency_key,
        flow: &job.flow,
        priority: job.priority,
        created_at: job.created_at,
    }
}

/// The scope of `job`'s expressions.
pub fn scope_of(job: &JobRecord) -> Scope {
    Scope::new(
        &job.payload,
        facts(job),
        &Responses::from_log(job.responses.as_deref()),
    )
}

/// Runs `step`'s expressions for an attempt on channel `channel_index`.
/// `step_starts`: the step's first attempt (only then is `when` asked).
pub fn prepare(step: &Step, channel_index: usize, step_starts: bool, scope: &Scope) -> Prepared {
    match run(step, channel_index, step_starts, scope) {
        Ok(prepared) => prepared,
        Err(error) => Prepared::Failed(error),
    }
}

fn run(
    step: &Step,
    channel_index: usize,
    step_starts: bool,
    scope: &Scope,
) -> Result<Prepared, EvalError> {
    if step_starts {
        if let Some(when) = &step.when {
            if !when.holds(scope)? {
                return Ok(Prepared::Skip);
            }
        }
    }
    let mut retry_choice = None;
    for (index, entry) in step.retry_when.iter().enumerate() {
        if entry.when.holds(scope)? {
            retry_choice = Some(index);
            break;
        }
    }
    let body = match step.body_at(channel_index) {
        None => None,
        Some(mapping) => Some(mapping.render(scope)?),
    };
    Ok(Prepared::Send { body, retry_choice })
}
