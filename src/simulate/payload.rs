//! What a flow's expressions make of one payload, step by step: whether
//! each step's `when` holds, which `retry` entry applies, and the body each
//! channel of the step would be sent. `explain --payload` shows it; the
//! values come from the same expressions the executor evaluates.

use serde_json::Value;

use super::JobInput;
use crate::model::Flow;

/// One step's expressions, evaluated for the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub step: String,
    /// The step's `when` and whether it holds (or why it failed).
    pub when: Option<(String, Result<bool, String>)>,
    /// The `retry` entry whose `when` holds: its index and condition;
    /// `None`: the step's own template. The template's name either way.
    pub retry: RetryReport,
    /// The body sent to each of the step's channels (primary first), or
    /// why it cannot be built; `None` where the payload goes as submitted.
    pub bodies: Vec<(String, Option<Result<Value, String>>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryReport {
    pub entry: Option<(usize, String)>,
    pub template: String,
    /// An entry's `when` failed: the template is not known.
    pub error: Option<String>,
}

/// Every step of `flow`, for `job` (whose `responses` stand for the answers
/// of steps the report cannot run).
pub fn report(flow: &Flow, job: &JobInput, created_at: jiff::Timestamp) -> Vec<StepReport> {
    let scope = job.scope(flow, created_at, &job.responses);
    flow.steps
        .iter()
        .map(|step| {
            let when = step.when.as_ref().map(|when| {
                (
                    when.source().to_string(),
                    when.holds(&scope).map_err(|e| e.message),
                )
            });
            let mut retry = RetryReport {
                entry: None,
                template: step.retry.name.clone(),
                error: None,
            };
            for (index, entry) in step.retry_when.iter().enumerate() {
                match entry.when.holds(&scope) {
                    Ok(true) => {
                        retry.entry = Some((index, entry.when.source().to_string()));
                        retry.template = entry.template_name.clone();
                        break;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        retry.error = Some(error.to_string());
                        break;
                    }
                }
            }
            let build = |index: usize| {
                step.body_at(index)
                    .map(|mapping| mapping.build(&scope).map_err(|e| e.to_string()))
            };
            // A parallel step sends its body to every branch.
            let bodies = if step.is_parallel() {
                step.parallel
                    .iter()
                    .map(|channel| (channel.clone(), build(0)))
                    .collect()
            } else {
                (0..step.channel_count())
                    .filter_map(|index| Some((step.channel_at(index)?.to_string(), build(index))))
                    .collect()
            };
            StepReport {
                step: step.name.clone(),
                when,
                retry,
                bodies,
            }
        })
        .collect()
}
