//! Running a checked [`Case`] through [`crate::simulate`] and comparing what
//! happened with what it expects, fact by fact.

use crate::lifecycle::{JobState, Reason};
use crate::model::CompiledPolicy;
use crate::policy::Pos;
use crate::simulate::{simulate, End, JitterSplit, Options, Run, SimAttempt, SimError};

use super::case::{Case, ExpectAttempt, Fact, MAX_ANSWERS};
use super::expect::{Bounds, ShowAt, ShowDelay};

/// One way a run differs from its case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Where the expectation is written.
    pub pos: Pos,
    /// The attempt it is about (1-based), if any.
    pub attempt: Option<u32>,
    pub message: String,
}

/// A case and what came of it.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub case: Case,
    pub run: Result<Run, SimError>,
    pub mismatches: Vec<Mismatch>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Runs one case, calendars included (see [`crate::simulate`]).
pub fn run_case(policy: &CompiledPolicy, case: Case) -> CaseResult {
    let mut answers = case.answers.clone().into_iter();
    let run = simulate(
        policy,
        &case.flow,
        case.step_index,
        case.start,
        Options {
            limit: MAX_ANSWERS + 1,
            split: JitterSplit::Refuse,
            history: Default::default(),
        },
        Some(&case.job),
        |_| answers.next(),
    );
    let mismatches = match &run {
        Ok(run) => compare(&case, run),
        Err(err) => vec![Mismatch {
            pos: case.pos,
            attempt: None,
            message: err.to_string(),
        }],
    };
    CaseResult {
        case,
        run,
        mismatches,
    }
}

/// The job's state at the end.
pub fn end_state(end: &End) -> JobState {
    match end {
        End::Succeeded => JobState::Succeeded,
        End::Dead(_) => JobState::Dead,
        End::Pending { held: Some(_), .. } => JobState::Suspended,
        End::Pending { held: None, .. } | End::Limit => JobState::Pending,
    }
}

/// The end state as the API names it.
pub fn state_word(end: &End) -> &'static str {
    end_state(end).as_str()
}

/// Why the job is dead or suspended at the end.
pub fn end_reason(end: &End) -> Option<Reason> {
    match end {
        End::Dead(reason) => Some(*reason),
        End::Pending { held, .. } => *held,
        End::Succeeded | End::Limit => None,
    }
}

fn compare(case: &Case, run: &Run) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let expect = &case.expect;
    if let Some((pos, attempts)) = &expect.attempts {
        for (expected, actual) in attempts.iter().zip(&run.attempts) {
            compare_attempt(case, expected, actual, &mut out);
        }
        if attempts.len() != run.attempts.len() {
            out.push(Mismatch {
                pos: *pos,
                attempt: None,
                message: format!(
                    "attempts: expected {}, got {}",
                    attempts.len(),
                    run.attempts.len()
                ),
            });
        }
    }
    let last = run.attempts.last();
    if let Some((pos, state)) = expect.state {
        let actual = end_state(&run.end);
        // `pending` says "waiting for its next attempt", held or not, as it
        // did before holds were told apart.
        let waiting = state == JobState::Pending && actual == JobState::Suspended;
        if actual != state && !waiting {
            let why = match &run.end {
                End::Dead(reason) => format!(" ({})", reason.as_str()),
                End::Pending {
                    held: Some(reason), ..
                } => {
                    format!(" ({reason}: the answers ran out while it is held)")
                }
                End::Pending { .. } => " (the answers ran out while it would try again)".into(),
                _ => String::new(),
            };
            out.push(mismatch(
                pos,
                None,
                format!("state: expected {state}, got {actual}{why}"),
            ));
        }
    }
    if let Some((pos, reason)) = expect.reason {
        let actual = end_reason(&run.end);
        if actual != Some(reason) {
            let actual = actual.map_or("none (the job is neither dead nor held)", Reason::as_str);
            out.push(mismatch(
                pos,
                None,
                format!("reason: expected {reason}, got {actual}"),
            ));
        }
    }
    if let Some((pos, step)) = &expect.step {
        let actual = match &run.end {
            End::Pending { step_index, .. } => case.flow.steps.get(*step_index).map(|s| &s.name),
            _ => last.map(|a| &a.step),
        };
        if actual != Some(step) {
            out.push(mismatch(
                *pos,
                None,
                format!(
                    "step: expected {step}, got {}",
                    actual.map_or("none", String::as_str)
                ),
            ));
        }
    }
    if let Some((pos, channel)) = &expect.channel {
        let actual = last.map(|a| a.channel.as_str());
        if actual != Some(channel.as_str()) {
            out.push(mismatch(
                *pos,
                None,
                format!(
                    "channel: expected {channel}, got {}",
                    actual.unwrap_or("none (no attempt was made)")
                ),
            ));
        }
    }
    out
}

fn compare_attempt(
    case: &Case,
    expected: &ExpectAttempt,
    actual: &SimAttempt,
    out: &mut Vec<Mismatch>,
) {
    let n = actual.number;
    let mut differs = |fact_pos: Pos, key: &str, written: &str, got: String| {
        out.push(mismatch(
            fact_pos,
            Some(n),
            format!("attempt {n}: {key}: expected {written}, got {got}"),
        ));
    };
    let text = |fact: &Option<Fact<String>>, got: &str| {
        fact.as_ref()
            .filter(|f| f.value != got)
            .map(|f| (f.pos, f.written.clone()))
    };
    if let Some((pos, written)) = text(&expected.step, &actual.step) {
        differs(pos, "step", &written, actual.step.clone());
    }
    if let Some((pos, written)) = text(&expected.channel, &actual.channel) {
        differs(pos, "channel", &written, actual.channel.clone());
    }
    if let Some(f) = expected
        .outcome
        .as_ref()
        .filter(|f| f.value != actual.outcome)
    {
        differs(
            f.pos,
            "outcome",
            &f.written,
            if actual.rule.is_empty() {
                actual.outcome.to_string()
            } else {
                format!("{} (rule {})", actual.outcome, actual.rule)
            },
        );
    }
    if let Some((pos, written)) = text(&expected.rule, &actual.rule) {
        differs(pos, "rule", &written, actual.rule.clone());
    }
    if let Some(f) = expected
        .decision
        .as_ref()
        .filter(|f| f.value != actual.decision)
    {
        differs(f.pos, "decision", &f.written, actual.decision.to_string());
    }
    if let Some(f) = &expected.at {
        let lo = crate::simulate::offset(case.start, actual.at.lo);
        let hi = crate::simulate::offset(case.start, actual.at.hi);
        if !f.value.contains(lo, hi) {
            let mut got = ShowAt(case.start, &actual.at).to_string();
            if !f.written.starts_with('+') && actual.at.is_exact() {
                // Written as a time: show one to compare with.
                got = format!("{} ({got})", actual.at.mid);
            }
            differs(
                f.pos,
                "at",
                &f.written,
                got + &jitter_hint(&f.value, lo != hi),
            );
        }
    }
    if let Some(f) = &expected.delay {
        match &actual.delay {
            Some(delay) if f.value.contains(delay.lo, delay.hi) => {}
            Some(delay) => {
                let got = ShowDelay(delay).to_string();
                differs(
                    f.pos,
                    "delay",
                    &f.written,
                    got + &jitter_hint(&f.value, !delay.is_exact()),
                );
            }
            None => differs(
                f.pos,
                "delay",
                &f.written,
                format!("none (the decision is {})", actual.decision),
            ),
        }
    }
    if let Some(f) = &expected.body {
        match &actual.body {
            Some(body) if *body == f.value => {}
            Some(body) => differs(f.pos, "body", &f.written, body.to_string()),
            None => differs(
                f.pos,
                "body",
                &f.written,
                match &actual.note {
                    Some(expression) if actual.outcome != crate::lifecycle::Outcome::Skipped => {
                        format!("none: expression `{expression}` failed (error kind `mapping`)")
                    }
                    _ => "none (the step has no `body`: it sends the payload as submitted)"
                        .to_string(),
                },
            ),
        }
    }
}

/// Says why an exact expectation fails against a jittered time.
fn jitter_hint(expected: &Bounds, jittered: bool) -> String {
    if jittered && expected.lo == expected.hi {
        " (the template jitters: write bounds such as `±20%`, or a range)".to_string()
    } else {
        String::new()
    }
}

fn mismatch(pos: Pos, attempt: Option<u32>, message: String) -> Mismatch {
    Mismatch {
        pos,
        attempt,
        message,
    }
}
