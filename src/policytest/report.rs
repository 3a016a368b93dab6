//! A suite's results for people (a diff per failing case, with the attempts
//! that ran), for scripts (JSON) and for CI systems (JUnit XML).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::expect::{ShowAt, ShowDelay};
use super::run::{end_reason, state_word, CaseResult};
use super::Suite;
use crate::model::DeliveryResult;
use crate::policy::{has_errors, Diagnostic};
use crate::simulate::{Answer, End, Run, SimAttempt};

/// The report for a terminal. Lines of failing cases name the
/// `file:line:col` of the expectation that failed.
pub fn text(suite: &Suite) -> String {
    let mut out = String::new();
    if has_errors(&suite.policy_diagnostics) {
        for d in &suite.policy_diagnostics {
            let _ = writeln!(out, "{d}");
        }
        out.push_str("the policy has errors: no test case ran (see `steadfast validate`)\n");
        return out;
    }
    for d in &suite.diagnostics {
        let _ = writeln!(out, "{d}");
    }
    for result in &suite.results {
        let case = &result.case;
        let at = format!(
            "{}:{}:{}",
            case.file.display(),
            case.pos.line,
            case.pos.column
        );
        if result.passed() {
            let _ = writeln!(out, "ok    {at}  {}", case.name);
            continue;
        }
        let _ = writeln!(out, "FAIL  {at}  {}", case.name);
        for m in &result.mismatches {
            let _ = writeln!(
                out,
                "      {}:{}:{}: {}",
                case.file.display(),
                m.pos.line,
                m.pos.column,
                m.message
            );
        }
        if let Ok(run) = &result.run {
            let step = &case.flow.steps[case.step_index].name;
            let _ = writeln!(
                out,
                "      what ran (flow {}, from step {step}, start {}):",
                case.flow.name, case.start
            );
            let marked: Vec<u32> = result.mismatches.iter().filter_map(|m| m.attempt).collect();
            out.push_str(&indent(&timeline(case.start, run, &marked), "        "));
            let _ = writeln!(out, "        then: {}", end_text(run, result));
        }
    }
    let invalid = suite.diagnostics.iter().filter(|d| d.is_error()).count();
    let _ = write!(
        out,
        "\nresult: {} passed, {} failed",
        suite.passed(),
        suite.failed()
    );
    if invalid > 0 {
        let _ = write!(
            out,
            "; {invalid} problems in test cases (those cases did not run)"
        );
    }
    out.push('\n');
    if suite.results.is_empty() && invalid == 0 {
        out.push_str(
            "no test cases found: write them in *.test.yaml files beside the policies, or \
             under `tests:` in a policy file\n",
        );
    }
    out
}

fn end_text(run: &Run, result: &CaseResult) -> String {
    match &run.end {
        End::Succeeded => "succeeded".to_string(),
        End::Dead(reason) => format!("dead ({})", reason.as_str()),
        End::Pending {
            step_index,
            next,
            held,
            ..
        } => format!(
            "{}: the answers ran out; step {} would try again at {}",
            held.map_or_else(|| "pending".to_string(), |r| format!("suspended ({r})")),
            result.case.flow.steps[*step_index].name,
            ShowAt(result.case.start, next)
        ),
        End::Limit => "stopped: too many attempts".to_string(),
    }
}

/// The attempts as a table; rows of `marked` attempts start with `!`.
pub fn timeline(start: jiff::Timestamp, run: &Run, marked: &[u32]) -> String {
    let held = run.attempts.iter().any(|a| a.hold.is_some());
    let mut header = [
        "", "#", "step", "channel", "answer", "outcome", "rule", "decision", "at", "delay",
    ]
    .map(str::to_string)
    .to_vec();
    if held {
        header.push("held".to_string());
    }
    let mut rows = vec![header];
    for a in &run.attempts {
        let mut row = vec![
            if marked.contains(&a.number) { "!" } else { "" }.to_string(),
            a.number.to_string(),
            a.step.clone(),
            a.channel.clone(),
            answer_text(&a.answer),
            a.outcome.to_string(),
            a.rule.clone(),
            a.decision.to_string(),
            ShowAt(start, &a.at).to_string(),
            a.delay
                .as_ref()
                .map_or("-".to_string(), |d| ShowDelay(d).to_string()),
        ];
        if held {
            // When the attempt was due before its calendar held it.
            row.push(a.hold.map_or(String::new(), |reason| {
                format!("{} from {}", reason.as_str(), a.due.mid)
            }));
        }
        rows.push(row);
    }
    table(&rows)
}

/// Rows as aligned columns.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// An answer in a few characters: `429 Retry-After: 30`, `200 {"status":…`.
pub fn answer_text(answer: &Answer) -> String {
    match answer {
        Answer::Failing => "failing".to_string(),
        Answer::Result(result) => result_text(result),
        Answer::BreakerOpen => "breaker open".to_string(),
        Answer::OverQuota(result) => format!("{} (over quota)", result_text(result)),
    }
}

fn result_text(result: &DeliveryResult) -> String {
    match result {
        Ok(response) => {
            let mut s = response.status.to_string();
            if let Some(retry_after) = &response.retry_after {
                let _ = write!(s, " Retry-After: {retry_after}");
            }
            let body: String = response.body.chars().take(24).collect();
            if !body.is_empty() {
                let more = if response.body.chars().count() > 24 {
                    "…"
                } else {
                    ""
                };
                let _ = write!(s, " {}{more}", body.replace(['\n', '\r'], " "));
            }
            s
        }
        Err(error) => error.kind.to_string(),
    }
}

/// The report for scripts.
pub fn json(suite: &Suite) -> Value {
    let cases: Vec<Value> = suite
        .results
        .iter()
        .map(|r| {
            let case = &r.case;
            let (attempts, end) = match &r.run {
                Ok(run) => (
                    run.attempts
                        .iter()
                        .map(|a| attempt_json(case.start, a))
                        .collect(),
                    end_json(run, r),
                ),
                Err(_) => (Vec::new(), Value::Null),
            };
            json!({
                "file": case.file,
                "line": case.pos.line,
                "column": case.pos.column,
                "name": case.name,
                "flow": case.flow.name,
                "step": case.flow.steps[case.step_index].name,
                "start": case.start.to_string(),
                "passed": r.passed(),
                "mismatches": r.mismatches.iter().map(|m| json!({
                    "line": m.pos.line,
                    "column": m.pos.column,
                    "attempt": m.attempt,
                    "message": m.message,
                })).collect::<Vec<_>>(),
                "attempts": attempts,
                "end": end,
            })
        })
        .collect();
    json!({
        "ok": suite.ok(),
        "passed": suite.passed(),
        "failed": suite.failed(),
        "policy_diagnostics": suite.policy_diagnostics,
        "diagnostics": suite.diagnostics,
        "cases": cases,
    })
}

fn attempt_json(start: jiff::Timestamp, a: &SimAttempt) -> Value {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let offset = |t| ms(crate::simulate::offset(start, t));
    json!({
        "number": a.number,
        "step": a.step,
        "channel": a.channel,
        "answer": answer_text(&a.answer),
        "outcome": a.outcome.as_str(),
        "rule": a.rule,
        "decision": a.decision,
        "at": a.at.mid.to_string(),
        "held": a.hold.map(|reason| json!({ "reason": reason.as_str(), "due": a.due.mid.to_string() })),
        "at_ms": { "min": offset(a.at.lo), "nominal": offset(a.at.mid), "max": offset(a.at.hi) },
        "delay_ms": a.delay.map(|d| json!({ "min": ms(d.lo), "nominal": ms(d.mid), "max": ms(d.hi) })),
    })
}

fn end_json(run: &Run, r: &CaseResult) -> Value {
    let reason = end_reason(&run.end).map(|reason| reason.as_str());
    let step = match &run.end {
        End::Pending { step_index, .. } => Some(r.case.flow.steps[*step_index].name.clone()),
        _ => run.attempts.last().map(|a| a.step.clone()),
    };
    json!({ "state": state_word(&run.end), "reason": reason, "step": step })
}

/// The report as JUnit XML: one `testsuite` per file, one `testcase` per
/// case; cases that could not run, and problems outside any case, are
/// `error`s.
pub fn junit(suite: &Suite) -> String {
    let mut files: Vec<&Path> = suite.files.iter().map(|p| p.as_path()).collect();
    for d in suite.policy_diagnostics.iter().chain(&suite.diagnostics) {
        if !files.contains(&d.file.as_path()) {
            files.push(d.file.as_path());
        }
    }
    let mut body = String::new();
    let (mut total, mut failures, mut errors) = (0usize, 0usize, 0usize);
    for file in files {
        let results: Vec<&CaseResult> = suite
            .results
            .iter()
            .filter(|r| r.case.file == file)
            .collect();
        let diags: Vec<&Diagnostic> = suite
            .policy_diagnostics
            .iter()
            .chain(&suite.diagnostics)
            .filter(|d| d.file == file && d.is_error())
            .collect();
        let failed = results.iter().filter(|r| !r.passed()).count();
        let name = escape_attr(&file.display().to_string());
        let _ = writeln!(
            body,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{failed}\" errors=\"{}\">",
            results.len() + diags.len(),
            diags.len()
        );
        for r in &results {
            let case = &r.case;
            let _ = write!(
                body,
                "    <testcase name=\"{}\" classname=\"{name}\" file=\"{name}\" line=\"{}\"",
                escape_attr(&case.name),
                case.pos.line
            );
            if r.passed() {
                body.push_str("/>\n");
                continue;
            }
            let first = r.mismatches.first().map_or("", |m| m.message.as_str());
            let mut detail = String::new();
            for m in &r.mismatches {
                let _ = writeln!(
                    detail,
                    "{}:{}:{}: {}",
                    file.display(),
                    m.pos.line,
                    m.pos.column,
                    m.message
                );
            }
            if let Ok(run) = &r.run {
                detail.push_str(&timeline(case.start, run, &[]));
            }
            let _ = write!(
                body,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                escape_attr(first),
                escape(&detail)
            );
        }
        for d in &diags {
            let _ = write!(
                body,
                "    <testcase name=\"{}\" classname=\"{name}\" file=\"{name}\" line=\"{}\">\n      \
                 <error message=\"{}\">{}</error>\n    </testcase>\n",
                escape_attr(if d.path.is_empty() { "file" } else { &d.path }),
                d.line,
                escape_attr(&d.message),
                escape(&d.to_string())
            );
        }
        body.push_str("  </testsuite>\n");
        total += results.len() + diags.len();
        failures += failed;
        errors += diags.len();
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"steadfast test\" \
         tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\">\n{body}</testsuites>\n"
    )
}

/// Escapes text for XML content.
fn escape(text: &str) -> String {
    escape_xml(text, false)
}

/// Escapes text for an XML attribute (newlines kept as `&#10;`).
fn escape_attr(text: &str) -> String {
    escape_xml(text, true)
}

/// Escapes `<`, `&`, quotes; drops characters XML 1.0 cannot hold.
fn escape_xml(text: &str, attr: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' if attr => out.push_str("&#10;"),
            '\n' => out.push('\n'),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped() {
        assert_eq!(
            escape_attr("a<b & \"c\"\u{1}\n"),
            "a&lt;b &amp; &quot;c&quot;&#10;"
        );
        assert_eq!(escape("x\ny"), "x\ny");
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".to_string(), "bb".to_string()],
            vec!["ccc".to_string(), "d".to_string()],
        ];
        assert_eq!(table(&rows), "a    bb\nccc  d\n");
    }
}
