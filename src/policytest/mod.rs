//! Policy test cases: `steadfast test`.
//!
//! Test cases live beside the policies, in `*.test.yaml` / `*.test.toml`
//! files (which the policy loader skips) or under the reserved `tests` key
//! of a policy file. Each names a flow (and optionally the step to start
//! at), the partner's answers in order, a start time, and what should come
//! of it: each attempt's outcome, rule, decision, channel and time, and the
//! job's final state. Cases run through [`crate::simulate`]: the engine's
//! own classifier and interpreter on a manual clock, no network, in
//! milliseconds.
//!
//! # Layout
//!
//! - [`targets`]: which paths hold policy and which hold test cases.
//! - `case`: a case as written, checked against the compiled policy.
//! - `expect`: expected times and delays (`+2s`, `+2s±20%`, ranges).
//! - `run`: running a case and comparing, fact by fact.
//! - `report`: the text diff, JSON and JUnit XML.

mod case;
mod expect;
mod report;
mod run;

use std::fs;
use std::path::{Path, PathBuf};

pub use case::{Case, DEFAULT_START, MAX_ANSWERS};
pub use expect::{parse_at, parse_delay, Bounds, ExprError, ShowAt, ShowDelay};
pub use report::{json, junit, text};
pub use run::{run_case, state_word, CaseResult, Mismatch};

use crate::compile::compile;
use crate::policy::{
    decode_cases, has_errors, is_test_file_name, load_paths, CasesIn, Diagnostic, EnvMode,
    SourceFile,
};

/// Where the policy and the test cases are read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    /// Policy files and directories, as `validate` takes them.
    pub policy: Vec<PathBuf>,
    /// Test files: given, or found in the directories given.
    pub test_files: Vec<PathBuf>,
}

/// Sorts `paths` into policy and test files. A directory means its policy
/// files and the test files in it; a test file given alone runs against the
/// policy of its directory.
pub fn targets(paths: &[PathBuf]) -> Targets {
    let mut t = Targets::default();
    for path in paths {
        if path.is_dir() {
            t.policy.push(path.clone());
            t.test_files.extend(test_files_in(path));
        } else if is_test_file_name(path) {
            t.test_files.push(path.clone());
        } else {
            t.policy.push(path.clone());
        }
    }
    if t.policy.is_empty() {
        for file in &t.test_files {
            let dir = match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !t.policy.contains(&dir) {
                t.policy.push(dir);
            }
        }
    }
    t.test_files.sort();
    t.test_files.dedup();
    t
}

/// The test files directly in `dir` (an unreadable directory is reported
/// by the policy loader).
fn test_files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_test_file_name(p) && fs::metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    files.sort();
    files
}

/// Everything one `steadfast test` found and ran.
#[derive(Debug, Clone, Default)]
pub struct Suite {
    /// The policy's own problems; with an error among them no case ran.
    pub policy_diagnostics: Vec<Diagnostic>,
    /// Problems in the test cases (cases with one did not run).
    pub diagnostics: Vec<Diagnostic>,
    pub results: Vec<CaseResult>,
    /// The files whose cases were read, in order.
    pub files: Vec<PathBuf>,
}

impl Suite {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Whether the run succeeded: a sound policy, sound cases, at least one
    /// case, every case passing.
    pub fn ok(&self) -> bool {
        !has_errors(&self.policy_diagnostics)
            && !has_errors(&self.diagnostics)
            && !self.results.is_empty()
            && self.failed() == 0
    }
}

/// Loads the policy and the cases under `paths`, and runs every sound case.
pub fn run_suite(paths: &[PathBuf], env: &EnvMode) -> Suite {
    let targets = targets(paths);
    let (sources, mut policy_diagnostics) = load_paths(&targets.policy);
    let compilation = compile(&sources, env);
    policy_diagnostics.extend(compilation.diagnostics);
    let mut suite = Suite {
        policy_diagnostics,
        ..Suite::default()
    };
    let Some(policy) = compilation
        .policy
        .filter(|_| !has_errors(&suite.policy_diagnostics))
    else {
        return suite;
    };

    let mut case_sources: Vec<(SourceFile, CasesIn)> = sources
        .into_iter()
        .map(|s| (s, CasesIn::PolicyFile))
        .collect();
    for path in &targets.test_files {
        match fs::read_to_string(path) {
            Ok(text) => match SourceFile::from_path_and_text(path, text) {
                Some(source) => case_sources.push((source, CasesIn::TestFile)),
                None => suite.diagnostics.push(Diagnostic::error(
                    path,
                    crate::policy::Pos::UNKNOWN,
                    "",
                    "not a test file: the name must end in .test.yaml, .test.yml or .test.toml",
                )),
            },
            Err(err) => suite.diagnostics.push(Diagnostic::error(
                path,
                crate::policy::Pos::UNKNOWN,
                "",
                format!("cannot read: {err}"),
            )),
        }
    }
    case_sources.sort_by(|a, b| a.0.path.cmp(&b.0.path));

    for (source, kind) in &case_sources {
        let (file, mut diags) = decode_cases(source, *kind);
        if !file.cases.is_empty() || !diags.is_empty() {
            suite.files.push(file.path.clone());
        }
        let cases = case::check_cases(&file, &policy, &mut diags);
        suite.diagnostics.append(&mut diags);
        for case in cases {
            suite.results.push(run_case(&policy, case));
        }
    }
    suite
}

#[cfg(test)]
mod tests;
