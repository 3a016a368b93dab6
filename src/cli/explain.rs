//! `steadfast explain FLOW [--step S] [--from TIME]`: the attempt timeline
//! the policy gives for a partner that keeps failing: each attempt's time
//! (UTC, and a zone's local time), the delay before it, the template in
//! force, calendar holds, the moment each fallback takes over, and when the
//! job would go dead. Computed by [`crate::simulate`], as `steadfast test`.

use std::path::PathBuf;

use anyhow::anyhow;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::output::print_table;
use super::{CliResult, Failure, OutputArgs};
use crate::clock::{Clock, SystemClock};
use crate::compile::{format_duration, load_policy, PRIORITY_MAX, PRIORITY_MIN};
use crate::expr::{KeptResponse, Responses};
use crate::lifecycle::{Decision, Reason};
use crate::model::{Flow, MaintenanceRule, OffHours};
use crate::policy::EnvMode;
use crate::simulate::payload::{self, StepReport};
use crate::simulate::{
    offset, simulate, step_zone, Answer, End, JitterSplit, JobInput, Options, Run, SimAttempt, Span,
};

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The flow to explain.
    flow: String,
    /// The step whose partner keeps failing; the flow's first unless given.
    #[arg(long, value_name = "S")]
    step: Option<String>,
    /// When the first attempt starts, in RFC 3339 (`2026-05-04T10:00:00Z`);
    /// now unless given.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// The policy directory.
    #[arg(long, default_value = "./policies", env = "STEADFAST_POLICIES")]
    policies: PathBuf,
    /// Treat `${VAR}` as placeholders (no secrets needed to explain).
    #[arg(long)]
    no_env: bool,
    /// Also show times in this zone (an IANA name such as
    /// `America/New_York`).
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// The most attempts shown.
    #[arg(long, default_value_t = 500)]
    limit: u32,
    /// A payload (JSON) to evaluate the flow's expressions against: which
    /// `when` and `retry` entries it selects and the body each step builds.
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// An earlier step's answer, for the expressions that read it:
    /// `STEP=JSON` (its body, status 200). Repeat for several steps.
    #[arg(long = "response", value_name = "STEP=JSON")]
    responses: Vec<String>,
    /// The job's priority, as `job.priority` (the flow's unless given).
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i32>,
    /// Reads each channel's history from the running engine (`--server`)
    /// and shows where it cuts the retries of templates that `adapt`.
    #[arg(long)]
    history: bool,
    #[command(flatten)]
    server: super::client::ServerArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// A cut history makes in a channel's retries, as `explain` shows it.
struct HistoryCut {
    channel: String,
    window: std::time::Duration,
    cut: crate::pacing::cuts::Cut,
}

/// Where the running engine's history of each channel of `flow` (from
/// `step_index` on) cuts the retries of the templates that adapt.
async fn history_cuts(
    args: &ExplainArgs,
    flow: &Flow,
    step_index: usize,
) -> Result<Vec<HistoryCut>, Failure> {
    let client = super::client::ApiClient::new(&args.server)?;
    let mut cuts = Vec::new();
    for step in flow.steps.iter().skip(step_index) {
        let templates =
            std::iter::once(&step.retry).chain(step.retry_when.iter().map(|e| &e.template));
        let Some(adapt) = templates.filter_map(|t| t.adapt).next() else {
            continue;
        };
        let channels = std::iter::once(&step.channel).chain(step.fallback.iter());
        for channel in channels {
            if cuts.iter().any(|c: &HistoryCut| &c.channel == channel) {
                continue;
            }
            let path = format!(
                "/v1/channels/{}/insights?window={}",
                super::client::encode(channel),
                format_duration(adapt.window)
            );
            let answer = client.get(&path).await?;
            let insights: crate::pacing::insights::Insights = serde_json::from_value(answer)
                .map_err(|e| {
                    Failure::Operation(anyhow!("the engine's insights for `{channel}`: {e}"))
                })?;
            if let Some(cut) = crate::pacing::cuts::cut_of(&insights, &adapt) {
                cuts.push(HistoryCut {
                    channel: channel.clone(),
                    window: adapt.window,
                    cut,
                });
            }
        }
    }
    Ok(cuts)
}

/// The job `--payload` (and `--response`, `--priority`) describe.
fn job_input(args: &ExplainArgs, flow: &Flow) -> Result<Option<JobInput>, Failure> {
    let Some(payload) = &args.payload else {
        if !args.responses.is_empty() {
            return Err(bad(
                "--response needs --payload: give the payload whose steps read it".to_string(),
            ));
        }
        return Ok(None);
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(payload) {
        return Err(bad(format!(
            "bad --payload: not JSON ({e}); write it in single quotes, e.g. \
             --payload '{{\"amount\": 12000}}'"
        )));
    }
    let mut responses = Responses::default();
    for given in &args.responses {
        let Some((step, body)) = given.split_once('=') else {
            return Err(bad(format!(
                "bad --response `{given}`: write STEP=JSON, e.g. --response score='{{\"score\": 72}}'"
            )));
        };
        if flow.step_index(step).is_none() {
            let steps: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
            return Err(bad(format!(
                "bad --response: flow `{}` has no step `{step}`; its steps: {}",
                flow.name,
                steps.join(", ")
            )));
        }
        responses.insert(
            step,
            KeptResponse {
                status: 200,
                headers: Default::default(),
                body: body.to_string(),
            },
        );
    }
    let priority = args.priority.unwrap_or(flow.priority);
    if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&i64::from(priority)) {
        return Err(bad(format!(
            "bad --priority {priority}: write a whole number from -100 to 100"
        )));
    }
    Ok(Some(JobInput {
        payload: payload.clone(),
        key: "explain".to_string(),
        priority,
        responses,
    }))
}

pub async fn run(args: ExplainArgs) -> CliResult {
    let env = if args.no_env {
        EnvMode::Placeholders
    } else {
        EnvMode::process()
    };
    let compilation = load_policy(std::slice::from_ref(&args.policies), &env);
    let Some(policy) = compilation.policy.as_ref() else {
        for d in compilation.errors() {
            eprintln!("{d}");
        }
        return Err(Failure::BadInput(anyhow!(
            "the policies in {} have errors (listed above); fix them first (`steadfast \
             validate {}`)",
            args.policies.display(),
            args.policies.display()
        )));
    };
    let Some(flow) = policy.flow(&args.flow) else {
        let known: Vec<&str> = policy.flows.keys().map(String::as_str).collect();
        return Err(bad(format!(
            "unknown flow `{}`; defined flows: {}",
            args.flow,
            known.join(", ")
        )));
    };
    let step_index = match &args.step {
        None => 0,
        Some(step) => flow.step_index(step).ok_or_else(|| {
            let steps: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
            bad(format!(
                "flow `{}` has no step `{step}`; its steps: {}",
                flow.name,
                steps.join(", ")
            ))
        })?,
    };
    let start = match &args.from {
        None => SystemClock.now(),
        Some(text) => text.parse::<Timestamp>().map_err(|_| {
            bad(format!(
                "bad --from `{text}`: write an RFC 3339 time such as 2026-05-04T10:00:00Z"
            ))
        })?,
    };
    let zone = match &args.tz {
        None => None,
        Some(name) => Some(TimeZone::get(name).map_err(|_| {
            bad(format!(
                "unknown time zone `{name}`: write an IANA name such as America/New_York"
            ))
        })?),
    };
    let zone = zone.or_else(|| step_zone(flow, step_index));
    let job = job_input(&args, flow)?;
    let history = if args.history {
        history_cuts(&args, flow, step_index).await?
    } else {
        Vec::new()
    };
    let run = simulate(
        policy,
        flow,
        step_index,
        start,
        Options {
            limit: args.limit.max(1),
            split: JitterSplit::FollowNominal,
            history: history
                .iter()
                .map(|h| (h.channel.clone(), h.cut.from))
                .collect(),
        },
        job.as_ref(),
        |_| Some(Answer::Failing),
    )
    .map_err(|e| bad(e.to_string()))?;
    let payload = job.as_ref().map(|job| payload::report(flow, job, start));
    let explained = Explained {
        flow,
        step_index,
        start,
        zone: zone.as_ref(),
        run: &run,
        payload: payload.as_deref(),
        history: args.history.then_some(history.as_slice()),
    };
    if args.output.json() {
        println!("{}", explained.json());
    } else {
        explained.print();
    }
    Ok(())
}

fn bad(message: String) -> Failure {
    Failure::BadInput(anyhow!(message))
}

struct Explained<'a> {
    flow: &'a Flow,
    step_index: usize,
    start: Timestamp,
    zone: Option<&'a TimeZone>,
    run: &'a Run,
    /// With `--payload`: each step's expressions for it.
    payload: Option<&'a [StepReport]>,
    /// With `--history`: the cuts the channels' histories make.
    history: Option<&'a [HistoryCut]>,
}

impl Explained<'_> {
    fn print(&self) {
        let step = &self.flow.steps[self.step_index];
        println!(
            "flow {}, step {}: a partner that keeps failing, first attempt at {}",
            self.flow.name,
            step.name,
            utc(self.start)
        );
        let jittered = self
            .run
            .attempts
            .iter()
            .any(|a| !a.at.is_exact() || a.delay.is_some_and(|d| !d.is_exact()));
        if jittered {
            println!(
                "times are nominal (before jitter); `jitter range` is how far jitter can move them"
            );
        }
        if let Some(report) = self.payload {
            println!();
            print_payload_report(report);
        }
        println!();
        let held = self.run.attempts.iter().any(|a| a.hold.is_some());
        let mut header = vec!["#", "channel", "try", "delay", "at (UTC)", "after"];
        let local_header = self.zone.map(|z| format!("at ({})", zone_name(z)));
        if let Some(h) = &local_header {
            header.push(h);
        }
        if jittered {
            header.push("jitter range");
        }
        if held {
            header.push("held");
        }
        header.extend(["template", "then"]);
        let mut previous: Option<&SimAttempt> = None;
        let mut rows = Vec::new();
        for a in &self.run.attempts {
            let mut row = vec![
                a.number.to_string(),
                a.channel.clone(),
                a.series_attempt.to_string(),
                delay_before(previous, a),
                utc(a.at.mid),
                format!("+{}", format_duration(offset(self.start, a.at.mid))),
            ];
            if let Some(zone) = self.zone {
                row.push(local(a.at.mid, zone));
            }
            if jittered {
                row.push(self.range(&a.at));
            }
            if held {
                row.push(match a.hold {
                    Some(reason) => format!("{} from {}", reason.as_str(), utc(a.due.mid)),
                    None => String::new(),
                });
            }
            row.push(a.template.clone());
            row.push(self.then(a));
            rows.push(row);
            previous = Some(a);
        }
        print_table(&header, &rows);
        println!();
        let mut parallel_seen = Vec::new();
        for a in &self.run.attempts {
            let Some(step) = self.flow.steps.get(a.step_index) else {
                continue;
            };
            if step.is_parallel() && !parallel_seen.contains(&a.step_index) {
                parallel_seen.push(a.step_index);
                println!(
                    "step {} is parallel: each of {} is delivered and retried on its own, \
                     each on this timeline; the job goes on when all succeeded, dead when one \
                     runs out",
                    step.name,
                    step.parallel.join(", ")
                );
            }
        }
        for a in self
            .run
            .attempts
            .iter()
            .filter(|a| a.series_attempt == 1 && a.channel_index > 0)
        {
            println!(
                "fallback {}: {} takes over at {} (attempt {})",
                a.channel_index,
                a.channel,
                utc(a.at.mid),
                a.number
            );
        }
        match (&self.run.end, self.run.attempts.last()) {
            (End::Dead(reason), Some(last)) => {
                let mut line = format!(
                    "dead at {} (+{}, attempt {})",
                    utc(last.at.mid),
                    format_duration(offset(self.start, last.at.mid)),
                    last.number
                );
                if !last.at.is_exact() {
                    line.push_str(&format!("; with jitter between {}", self.range(&last.at)));
                }
                let why = match reason {
                    Reason::Exhausted => "every channel's retries ran out",
                    Reason::Adapted => "the channel's history cut the retries (see below)",
                    _ => "a permanent failure",
                };
                println!("{line}: {why}");
            }
            (End::Limit, _) => println!(
                "stopped after {} attempts (--limit); the job is still retrying",
                self.run.attempts.len()
            ),
            _ => {}
        }
        match self.history {
            Some([]) => {
                println!("history: no cut (too few samples, or later attempts still succeed)")
            }
            Some(cuts) => {
                for h in cuts {
                    println!(
                        "history: attempts from #{} on `{}` succeeded {} of {} times in the \
                         last {}: no attempt #{} or later there",
                        h.cut.from,
                        h.channel,
                        h.cut.successes,
                        h.cut.attempts,
                        format_duration(h.window),
                        h.cut.from
                    );
                }
            }
            None => {}
        }
        let calendars = self.calendars();
        if calendars.is_empty() {
            match self.zone {
                None => println!(
                    "calendar: none applies; times are UTC (--tz ZONE adds a local column)"
                ),
                Some(_) => println!("calendar: none applies"),
            }
        }
        for (step, line) in calendars {
            println!("calendar of step {step}: {line}");
        }
        println!(
            "attempts take no time here: a partner that times out moves each later attempt by \
             up to the channel's timeout"
        );
    }

    /// Each step the run goes through that has `hours`, with what its
    /// calendar does to attempts, in words.
    fn calendars(&self) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        let mut lines = Vec::new();
        for a in &self.run.attempts {
            if seen.contains(&a.step_index) {
                continue;
            }
            seen.push(a.step_index);
            let Some(hours) = self
                .flow
                .steps
                .get(a.step_index)
                .and_then(|s| s.hours.as_ref())
            else {
                continue;
            };
            let mut parts = vec![format!(
                "{} ({})",
                hours.calendar.name(),
                zone_name(hours.calendar.timezone())
            )];
            if let Some(t) = &hours.in_hours {
                parts.push(format!("open: template {}", t.name));
            }
            parts.push(match &hours.off_hours {
                OffHours::Attempt => "closed: attempts go on".to_string(),
                OffHours::Hold => "closed: held until it opens".to_string(),
                OffHours::Retry(t) => format!("closed: template {}", t.name),
            });
            if hours.maintenance == MaintenanceRule::Suspend {
                parts.push("maintenance: suspended until the window ends".to_string());
            }
            parts.push("time held does not count against total_timeout".to_string());
            lines.push((a.step.clone(), parts.join("; ")));
        }
        lines
    }

    /// Earliest..latest as offsets from the first attempt, or blank.
    fn range(&self, span: &Span) -> String {
        if span.is_exact() {
            String::new()
        } else {
            format!(
                "+{}..+{}",
                format_duration(offset(self.start, span.lo)),
                format_duration(offset(self.start, span.hi))
            )
        }
    }

    fn then(&self, a: &SimAttempt) -> String {
        let step = &self.flow.steps[a.step_index];
        let mut then = match a.decision {
            Decision::Fallback => match step.channel_at(a.channel_index + 1) {
                Some(next) => format!("fallback to {next}"),
                None => "fallback".to_string(),
            },
            Decision::Dead => match &self.run.end {
                End::Dead(reason) => format!("dead ({})", reason.as_str()),
                _ => "dead".to_string(),
            },
            // The retry falls where the step's calendar holds: the next
            // row's `held` column says until when.
            Decision::Suspend => "retry (held)".to_string(),
            other => other.to_string(),
        };
        if let Some((shortest, longest)) = a.split {
            then.push_str(&format!(
                " (jitter decides: with the shortest delays {shortest}, with the longest \
                 {longest})"
            ));
        }
        then
    }

    fn json(&self) -> Value {
        let step = &self.flow.steps[self.step_index];
        let span = |s: &Span| {
            json!({
                "nominal": s.mid.to_string(),
                "earliest": s.lo.to_string(),
                "latest": s.hi.to_string(),
                "after_ms": offset(self.start, s.mid).as_millis() as u64,
            })
        };
        let mut previous: Option<&SimAttempt> = None;
        let attempts: Vec<Value> = self
            .run
            .attempts
            .iter()
            .map(|a| {
                let delay = previous
                    .filter(|p| p.channel_index == a.channel_index && p.step_index == a.step_index)
                    .and_then(|p| p.delay)
                    .map(|d| {
                        json!({
                            "nominal_ms": d.mid.as_millis() as u64,
                            "min_ms": d.lo.as_millis() as u64,
                            "max_ms": d.hi.as_millis() as u64,
                        })
                    });
                previous = Some(a);
                json!({
                    "number": a.number,
                    "step": a.step,
                    "channel": a.channel,
                    "channel_index": a.channel_index,
                    "try": a.series_attempt,
                    "template": a.template,
                    "delay_before": delay,
                    "due": span(&a.due),
                    "at": span(&a.at),
                    "local": self.zone.map(|z| local(a.at.mid, z)),
                    "hold": a.hold.map(|r| r.as_str()),
                    "then": a.decision,
                    "jitter_decides": a.split.map(|(shortest, longest)| json!({
                        "shortest_delays": shortest,
                        "longest_delays": longest,
                    })),
                })
            })
            .collect();
        let fallbacks: Vec<Value> = self
            .run
            .attempts
            .iter()
            .filter(|a| a.series_attempt == 1 && a.channel_index > 0)
            .map(|a| {
                json!({
                    "channel": a.channel,
                    "channel_index": a.channel_index,
                    "attempt": a.number,
                    "at": span(&a.at),
                })
            })
            .collect();
        let end = match (&self.run.end, self.run.attempts.last()) {
            (End::Dead(reason), Some(last)) => json!({
                "state": "dead",
                "reason": reason.as_str(),
                "attempt": last.number,
                "at": span(&last.at),
            }),
            _ => json!({ "state": "retrying", "reason": "limit" }),
        };
        json!({
            "flow": self.flow.name,
            "step": step.name,
            "from": self.start.to_string(),
            "zone": self.zone.map(zone_name),
            "calendars": self
                .calendars()
                .into_iter()
                .map(|(step, rule)| json!({ "step": step, "rule": rule }))
                .collect::<Vec<_>>(),
            "attempts": attempts,
            "fallbacks": fallbacks,
            "end": end,
            "payload": self.payload.map(payload_json),
            "history": self.history.map(|cuts| cuts.iter().map(|h| json!({
                "channel": h.channel,
                "window": format_duration(h.window),
                "cut_from_attempt": h.cut.from,
                "attempts": h.cut.attempts,
                "successes": h.cut.successes,
            })).collect::<Vec<_>>()),
        })
    }
}

/// With `--payload`: each step's `when`, `retry` entry and bodies.
fn print_payload_report(report: &[StepReport]) {
    println!("with this payload:");
    for step in report {
        let when = match &step.when {
            None => "runs (no `when`)".to_string(),
            Some((source, Ok(true))) => format!("runs: `{source}` holds"),
            Some((source, Ok(false))) => format!("skipped: `{source}` does not hold"),
            Some((source, Err(error))) => format!(
                "`{source}` fails: {}",
                with_hint(
                    &error.to_string(),
                    source.contains("steps."),
                    " (an attempt with error kind `mapping`)"
                )
            ),
        };
        println!("  step {}: {when}", step.step);
        let retry = match (&step.retry.entry, &step.retry.error) {
            (_, Some(error)) => format!("a `retry` entry fails: {error}"),
            (Some((index, source)), None) => {
                format!("{} (entry {index}: `{source}` holds)", step.retry.template)
            }
            (None, None) => step.retry.template.clone(),
        };
        println!("    retry: {retry}");
        for (channel, body) in &step.bodies {
            match body {
                None => println!("    body to {channel}: the payload as submitted"),
                Some(Ok(value)) => println!("    body to {channel}: {value}"),
                Some(Err(error)) => println!(
                    "    body to {channel}: cannot be built: {}",
                    with_hint(error, error.contains("steps."), "")
                ),
            }
        }
    }
}

/// `error` as `explain` shows it. Where the expression reads an earlier
/// step's answer, which `explain` only knows when given, the hint is to
/// give one (rather than a `default`, which a policy may not need);
/// `otherwise` follows the other errors.
fn with_hint(error: &str, reads_earlier: bool, otherwise: &str) -> String {
    const GIVE_ONE: &str = "it reads an earlier step's answer: give one with --response STEP=JSON";
    if !reads_earlier {
        return format!("{error}{otherwise}");
    }
    let default_hint = format!("({})", crate::expr::MISSING_FIELD_HINT);
    if error.contains(&default_hint) {
        error.replace(&default_hint, &format!("({GIVE_ONE})"))
    } else {
        format!("{error} ({GIVE_ONE})")
    }
}

fn payload_json(report: &[StepReport]) -> Value {
    let steps: Vec<Value> = report
        .iter()
        .map(|step| {
            json!({
                "step": step.step,
                "when": step.when.as_ref().map(|(source, held)| match held {
                    Ok(holds) => json!({ "expression": source, "holds": holds }),
                    Err(error) => json!({ "expression": source, "error": error }),
                }),
                "retry": {
                    "template": step.retry.template,
                    "entry": step.retry.entry.as_ref().map(|(index, source)| {
                        json!({ "index": index, "when": source })
                    }),
                    "error": step.retry.error,
                },
                "bodies": step.bodies.iter().map(|(channel, body)| json!({
                    "channel": channel,
                    "body": body.as_ref().and_then(|b| b.as_ref().ok()),
                    "error": body.as_ref().and_then(|b| b.as_ref().err()),
                    "as_submitted": body.is_none(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "steps": steps })
}

/// The wait before attempt `a`: the previous attempt's delay on the same
/// channel, `0s` where a fallback or the next step starts at once.
fn delay_before(previous: Option<&SimAttempt>, a: &SimAttempt) -> String {
    let Some(p) = previous else {
        return "-".to_string();
    };
    match p.delay {
        Some(d) if p.channel_index == a.channel_index && p.step_index == a.step_index => {
            format_duration(d.mid)
        }
        _ => "0s".to_string(),
    }
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

fn local(t: Timestamp, zone: &TimeZone) -> String {
    t.to_zoned(zone.clone())
        .strftime("%Y-%m-%d %H:%M:%S%.3f %Z")
        .to_string()
}

fn zone_name(zone: &TimeZone) -> String {
    zone.iana_name().unwrap_or("local").to_string()
}
