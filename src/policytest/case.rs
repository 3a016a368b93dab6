//! A test case as written ([`TestCaseDef`]) checked against the compiled
//! policy into a [`Case`] ready to run: its flow and step exist, its
//! answers are well formed, its expected times can be read. Every problem
//! is a diagnostic at its `file:line:col`.

use std::path::PathBuf;
use std::sync::Arc;

use jiff::Timestamp;

use super::expect::{parse_at, parse_delay, Bounds};
use crate::compile::{PRIORITY_MAX, PRIORITY_MIN};
use crate::expr::{KeptResponse, Responses};
use crate::lifecycle::{Decision, JobState, Outcome, Reason};
use crate::model::{
    CompiledPolicy, DeliveryResult, ErrorKind, Flow, Response, TransportError, MAX_BODY,
};
use crate::policy::cases::{
    AttemptOutcomeDef, DecisionDef, ExpectDef, ReasonDef, ResponseDef, StateDef, TestCaseDef,
};
use crate::policy::defs::ErrorKindDef;
use crate::policy::{CaseFile, Diagnostic, Pos};
use crate::simulate::{Answer, JobInput};

/// When a case's first attempt starts unless it says: a Monday morning.
pub const DEFAULT_START: &str = "2026-01-05T09:00:00Z";

/// The most answers one case may give (with `times`), to keep runs short.
pub const MAX_ANSWERS: u32 = 10_000;

/// A checked test case.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: PathBuf,
    /// The key path of the case in its file: `tests[2]`.
    pub path: String,
    pub pos: Pos,
    pub name: String,
    pub flow: Arc<Flow>,
    pub step_index: usize,
    pub start: Timestamp,
    pub answers: Vec<Answer>,
    /// The job the flow's expressions read.
    pub job: JobInput,
    pub expect: Expect,
}

/// What a case expects, each with where it was written.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub attempts: Option<(Pos, Vec<ExpectAttempt>)>,
    pub state: Option<(Pos, JobState)>,
    pub reason: Option<(Pos, Reason)>,
    pub step: Option<(Pos, String)>,
    pub channel: Option<(Pos, String)>,
}

/// One expected fact of one attempt, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact<T> {
    pub pos: Pos,
    /// As written, for messages.
    pub written: String,
    pub value: T,
}

#[derive(Debug, Clone, Default)]
pub struct ExpectAttempt {
    pub pos: Pos,
    pub step: Option<Fact<String>>,
    pub channel: Option<Fact<String>>,
    pub outcome: Option<Fact<Outcome>>,
    pub rule: Option<Fact<String>>,
    pub decision: Option<Fact<Decision>>,
    pub at: Option<Fact<Bounds>>,
    pub delay: Option<Fact<Bounds>>,
    pub body: Option<Fact<serde_json::Value>>,
}

/// Checks every decoded case of `file`; returns those that can run.
pub fn check_cases(
    file: &CaseFile,
    policy: &CompiledPolicy,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Case> {
    file.cases
        .iter()
        .filter_map(|(index, def)| {
            let mut checker = Checker {
                file,
                diags: &mut *diags,
                ok: true,
            };
            let case = checker.case(&format!("tests[{index}]"), def, policy);
            if checker.ok {
                case
            } else {
                None
            }
        })
        .collect()
}

struct Checker<'a> {
    file: &'a CaseFile,
    diags: &'a mut Vec<Diagnostic>,
    ok: bool,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(
            &self.file.path,
            self.file.at(path),
            path,
            message,
        ));
        self.ok = false;
    }

    fn case(&mut self, path: &str, def: &TestCaseDef, policy: &CompiledPolicy) -> Option<Case> {
        let flow = match policy.flow(&def.flow) {
            Some(flow) => Some(flow.clone()),
            None => {
                let known: Vec<&str> = policy.flows.keys().map(String::as_str).collect();
                self.error(
                    &format!("{path}.flow"),
                    format!(
                        "unknown flow `{}`; defined flows: {}",
                        def.flow,
                        list(&known)
                    ),
                );
                None
            }
        };
        let step_index = match (&flow, &def.step) {
            (Some(flow), Some(step)) => match flow.step_index(step) {
                Some(index) => Some(index),
                None => {
                    let message = unknown_step(flow, step);
                    self.error(&format!("{path}.step"), message);
                    None
                }
            },
            _ => Some(0),
        };
        let start = match &def.start {
            None => DEFAULT_START.parse().ok(),
            Some(text) => match text.parse::<Timestamp>() {
                Ok(start) => Some(start),
                Err(_) => {
                    self.error(
                        &format!("{path}.start"),
                        format!(
                            "bad start `{text}`: write an RFC 3339 time such as \
                             `2026-05-04T10:00:00Z`"
                        ),
                    );
                    None
                }
            },
        };
        let mut answers = Vec::new();
        let mut total: u32 = 0;
        for (i, response) in def.responses.iter().enumerate() {
            let at = format!("{path}.responses[{i}]");
            if let Some(answer) = self.answer(&at, response) {
                let times = response.times.unwrap_or(1);
                if times == 0 {
                    self.error(
                        &format!("{at}.times"),
                        "`times` must be at least 1 (leave the answer out instead)",
                    );
                }
                total = total.saturating_add(times);
                if total > MAX_ANSWERS {
                    self.error(
                        &format!("{at}.times"),
                        format!("a case may give at most {MAX_ANSWERS} answers"),
                    );
                    break;
                }
                answers.extend(std::iter::repeat_n(answer, times as usize));
            }
        }
        let expect = match (&flow, start) {
            (Some(flow), Some(start)) => {
                self.expect(&format!("{path}.expect"), &def.expect, flow, start)
            }
            _ => Expect::default(),
        };
        let job = self.job(path, def, flow.as_deref(), step_index);
        Some(Case {
            file: self.file.path.clone(),
            path: path.to_string(),
            pos: self.file.at(path),
            name: def.name.clone(),
            flow: flow?,
            step_index: step_index?,
            start: start?,
            answers,
            job: job?,
            expect,
        })
    }

    /// The job a case's expressions read: its payload, priority, and the
    /// answers of the steps before the one it starts at.
    fn job(
        &mut self,
        path: &str,
        def: &TestCaseDef,
        flow: Option<&Flow>,
        step_index: Option<usize>,
    ) -> Option<JobInput> {
        let payload = def
            .payload
            .as_ref()
            .map_or_else(|| "{}".to_string(), ToString::to_string);
        let priority = match def.priority {
            None => flow.map_or(0, |f| f.priority),
            Some(p) if (PRIORITY_MIN..=PRIORITY_MAX).contains(&p) => p as i32,
            Some(p) => {
                self.error(
                    &format!("{path}.priority"),
                    format!("priority {p} is out of range: write a whole number from -100 to 100"),
                );
                return None;
            }
        };
        let mut responses = Responses::default();
        for (step, response) in &def.step_responses {
            let at = format!("{path}.step_responses.{step}");
            if let (Some(flow), Some(first)) = (flow, step_index) {
                match flow.step_index(step) {
                    Some(index) if index < first => {}
                    Some(_) => {
                        self.error(
                            &at,
                            format!(
                                "step `{step}` is not before the step the case starts at: \
                                 its answer comes from the case's `responses`"
                            ),
                        );
                        continue;
                    }
                    None => {
                        let message = unknown_step(flow, step);
                        self.error(&at, message);
                        continue;
                    }
                }
            }
            match self.answer(&at, response) {
                Some(Answer::Result(Ok(answer))) => {
                    responses.insert(
                        step,
                        KeptResponse::new(answer.status, &answer.headers, &answer.body),
                    );
                }
                Some(_) => self.error(
                    &at,
                    "a step's answer here is an HTTP response: write `status` (and `body`, \
                     `headers`)",
                ),
                None => {}
            }
        }
        Some(JobInput {
            payload,
            key: "test".to_string(),
            priority,
            responses,
        })
    }

    fn answer(&mut self, path: &str, def: &ResponseDef) -> Option<Answer> {
        if def.breaker.is_some() {
            let extra = def.status.is_some()
                || def.error.is_some()
                || def.body.is_some()
                || def.message.is_some()
                || !def.headers.is_empty()
                || def.over_quota;
            if extra {
                self.error(
                    path,
                    "`breaker: open` sends nothing, so it takes no `status`, `error`, `body`, \
                     `headers`, `message` or `over_quota`: write the answer of the next \
                     attempt as an entry of its own",
                );
                return None;
            }
            return Some(Answer::BreakerOpen);
        }
        let answer = self.result(path, def)?;
        Some(match answer {
            Answer::Result(result) if def.over_quota => Answer::OverQuota(result),
            other => other,
        })
    }

    fn result(&mut self, path: &str, def: &ResponseDef) -> Option<Answer> {
        match (def.status, def.error) {
            (Some(status), None) => {
                if def.message.is_some() {
                    self.error(
                        &format!("{path}.message"),
                        "`message` goes with `error` (a transport error), not with `status`",
                    );
                }
                let Some(status) = u16::try_from(status)
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                else {
                    self.error(
                        &format!("{path}.status"),
                        format!("bad status {status}: write a code from 100 to 599"),
                    );
                    return None;
                };
                let retry_after = def
                    .headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
                    .map(|(_, value)| value.as_str().to_string());
                let mut body = match &def.body {
                    None => String::new(),
                    Some(serde_json::Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                };
                if body.len() > MAX_BODY {
                    let mut cut = MAX_BODY;
                    while !body.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    body.truncate(cut);
                }
                let headers = def
                    .headers
                    .iter()
                    .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str().to_string()))
                    .collect();
                Some(Answer::Result(Ok(Response {
                    status,
                    retry_after,
                    body,
                    headers,
                })))
            }
            (None, Some(kind)) => {
                if def.body.is_some() || !def.headers.is_empty() {
                    self.error(
                        path,
                        "a transport error has no `body` or `headers`: write `status` for an \
                         answer, or `error` (and `message`) for no answer",
                    );
                    return None;
                }
                let result: DeliveryResult = Err(TransportError {
                    kind: error_kind(kind),
                    message: def.message.clone().unwrap_or_default(),
                });
                Some(Answer::Result(result))
            }
            (Some(_), Some(_)) => {
                self.error(
                    path,
                    "write either `status` (an answer) or `error` (no answer), not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    path,
                    "an answer needs `status` (e.g. `status: 503`), `error` (e.g. \
                     `error: timeout`) or `breaker: open`",
                );
                None
            }
        }
    }

    fn expect(&mut self, path: &str, def: &ExpectDef, flow: &Flow, start: Timestamp) -> Expect {
        let mut expect = Expect::default();
        let at = |key: &str| format!("{path}.{key}");
        if let Some(state) = def.state {
            let state = match state {
                StateDef::Succeeded => JobState::Succeeded,
                StateDef::Dead => JobState::Dead,
                StateDef::Pending => JobState::Pending,
                StateDef::Suspended => JobState::Suspended,
            };
            expect.state = Some((self.file.at(&at("state")), state));
        }
        if let Some(reason) = def.reason {
            let reason = match reason {
                ReasonDef::Exhausted => Reason::Exhausted,
                ReasonDef::Permanent => Reason::Permanent,
                ReasonDef::Maintenance => Reason::Maintenance,
                ReasonDef::OffHours => Reason::OffHours,
                ReasonDef::BreakerOpen => Reason::BreakerOpen,
                ReasonDef::Quota => Reason::Quota,
            };
            expect.reason = Some((self.file.at(&at("reason")), reason));
        }
        if let Some(step) = &def.step {
            self.known_step(&at("step"), flow, step);
            expect.step = Some((self.file.at(&at("step")), step.clone()));
        }
        if let Some(channel) = &def.channel {
            self.known_channel(&at("channel"), flow, channel);
            expect.channel = Some((self.file.at(&at("channel")), channel.clone()));
        }
        if let Some(list) = &def.attempts {
            let mut attempts = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let base = format!("{path}.attempts[{i}]");
                let key = |k: &str| format!("{base}.{k}");
                let mut a = ExpectAttempt {
                    pos: self.file.at(&base),
                    ..ExpectAttempt::default()
                };
                if let Some(step) = &item.step {
                    self.known_step(&key("step"), flow, step);
                    a.step = Some(self.fact(&key("step"), step, step.clone()));
                }
                if let Some(channel) = &item.channel {
                    self.known_channel(&key("channel"), flow, channel);
                    a.channel = Some(self.fact(&key("channel"), channel, channel.clone()));
                }
                if let Some(outcome) = item.outcome {
                    let value = match outcome {
                        AttemptOutcomeDef::Success => Outcome::Success,
                        AttemptOutcomeDef::Retry => Outcome::Retry,
                        AttemptOutcomeDef::Fail => Outcome::Fail,
                        AttemptOutcomeDef::RefreshAuth => Outcome::RefreshAuth,
                        AttemptOutcomeDef::Skipped => Outcome::Skipped,
                    };
                    a.outcome = Some(self.fact(&key("outcome"), value.as_str(), value));
                }
                if let Some(rule) = &item.rule {
                    a.rule = Some(self.fact(&key("rule"), rule, rule.clone()));
                }
                if let Some(decision) = item.decision {
                    let value = match decision {
                        DecisionDef::Retry => Decision::Retry,
                        DecisionDef::Suspend => Decision::Suspend,
                        DecisionDef::Fallback => Decision::Fallback,
                        DecisionDef::NextStep => Decision::NextStep,
                        DecisionDef::Succeeded => Decision::Succeeded,
                        DecisionDef::Dead => Decision::Dead,
                    };
                    a.decision = Some(self.fact(&key("decision"), value.as_str(), value));
                }
                if let Some(text) = &item.at {
                    match parse_at(text, start) {
                        Ok(bounds) => a.at = Some(self.fact(&key("at"), text, bounds)),
                        Err(err) => self.error(&key("at"), format!("bad time `{text}`: {err}")),
                    }
                }
                if let Some(text) = &item.delay {
                    match parse_delay(text) {
                        Ok(bounds) => a.delay = Some(self.fact(&key("delay"), text, bounds)),
                        Err(err) => self.error(&key("delay"), format!("bad delay `{text}`: {err}")),
                    }
                }
                if let Some(body) = &item.body {
                    a.body = Some(self.fact(&key("body"), &body.to_string(), body.clone()));
                }
                attempts.push(a);
            }
            expect.attempts = Some((self.file.at(&at("attempts")), attempts));
        }
        expect
    }

    fn fact<T>(&self, path: &str, written: &str, value: T) -> Fact<T> {
        Fact {
            pos: self.file.at(path),
            written: written.to_string(),
            value,
        }
    }

    fn known_step(&mut self, path: &str, flow: &Flow, step: &str) {
        if flow.step_index(step).is_none() {
            let message = unknown_step(flow, step);
            self.error(path, message);
        }
    }

    fn known_channel(&mut self, path: &str, flow: &Flow, channel: &str) {
        let mut used: Vec<&str> = Vec::new();
        for step in &flow.steps {
            for i in 0..step.channel_count() {
                if let Some(name) = step.channel_at(i) {
                    if !used.contains(&name) {
                        used.push(name);
                    }
                }
            }
        }
        if !used.contains(&channel) {
            self.error(
                path,
                format!(
                    "flow `{}` uses no channel `{channel}`; its channels: {}",
                    flow.name,
                    list(&used)
                ),
            );
        }
    }
}

fn unknown_step(flow: &Flow, step: &str) -> String {
    let steps: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
    format!(
        "flow `{}` has no step `{step}`; its steps: {}",
        flow.name,
        list(&steps)
    )
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn error_kind(def: ErrorKindDef) -> ErrorKind {
    match def {
        ErrorKindDef::Timeout => ErrorKind::Timeout,
        ErrorKindDef::Connect => ErrorKind::Connect,
        ErrorKindDef::Dns => ErrorKind::Dns,
        ErrorKindDef::Reset => ErrorKind::Reset,
        ErrorKindDef::Tls => ErrorKind::Tls,
        ErrorKindDef::Io => ErrorKind::Io,
        ErrorKindDef::Internal => ErrorKind::Internal,
        ErrorKindDef::Mapping => ErrorKind::Mapping,
        ErrorKindDef::Other => ErrorKind::Other,
    }
}
