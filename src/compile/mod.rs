//! Pure compilation of policy definitions into the [`crate::model`].
//!
//! [`compile`] takes the sources' text and an [`EnvMode`], and returns every
//! diagnostic at once (errors and warnings, across all files) and, when
//! there is no error, the [`CompiledPolicy`]. No I/O, no clock; the
//! environment is read only through the `EnvMode`. [`load_policy`] is the
//! convenience that reads the files first.
//!
//! # Layout
//!
//! - `names`: one namespace per kind across all files; duplicates, valid
//!   names, references.
//! - `templates`, `classifiers`, `calendars`, `channels`, `flows`: one kind
//!   each, in that order (flows refer to the others).
//! - `lints`: warnings about likely mistakes in what compiled (retries
//!   past the deadline, rules never reached).
//! - `duration`: `1m30s` and `20%`.
//! - `version`: the [`PolicyVersion`](crate::model::PolicyVersion) hash.
//! - `context`: the files and diagnostics being built.

mod calendars;
mod channels;
mod classifiers;
mod context;
pub(crate) mod duration;
mod expressions;
mod flows;
mod lints;
mod names;
mod templates;
mod version;

use std::collections::BTreeSet;
use std::path::PathBuf;

pub use channels::DEFAULT_HTTP_TIMEOUT;
pub use duration::{format_duration, parse_duration, parse_jitter, DurationError, JitterError};
pub use flows::{DEFAULT_TEMPLATE, ON_DEAD_STEP, PRIORITY_MAX, PRIORITY_MIN};
pub use lints::{covers, retries_past_deadline, shadowed_rules, DeadlineCut};
pub use version::policy_version;

pub use crate::policy::{Diagnostic, EnvMode, Severity};

use self::context::Ctx;
use self::flows::{Compiled, Used};
use self::names::Registry;
use crate::model::{CompiledPolicy, RetryTemplate};
use crate::policy::{decode, has_errors, load_paths, ParsedFile, Redactor, Section, SourceFile};

/// What a compilation found.
#[derive(Debug, Clone)]
pub struct Compilation {
    /// Present only when no diagnostic is an error.
    pub policy: Option<CompiledPolicy>,
    /// Every error and warning, ordered by file (in load order), line and
    /// column.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        has_errors(&self.diagnostics)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// Reads `paths` (see [`load_paths`]) and compiles what was read. A path
/// that cannot be read is an error like any other: no policy is returned.
pub fn load_policy(paths: &[PathBuf], env: &EnvMode) -> Compilation {
    let (sources, mut diagnostics) = load_paths(paths);
    let mut compilation = compile(&sources, env);
    if has_errors(&diagnostics) {
        compilation.policy = None;
    }
    diagnostics.append(&mut compilation.diagnostics);
    compilation.diagnostics = diagnostics;
    compilation
}

/// Compiles a whole policy set. Names are global across `sources`; every
/// problem in every file is reported.
pub fn compile(sources: &[SourceFile], env: &EnvMode) -> Compilation {
    let mut diagnostics = Vec::new();
    let mut files: Vec<ParsedFile> = Vec::with_capacity(sources.len());
    for source in sources {
        let (file, diags) = decode(source, env);
        files.push(file);
        diagnostics.extend(diags);
    }

    let mut ctx = Ctx::new(&files);
    let registry = Registry::build(&mut ctx);

    let mut used = Used::default();
    let templates = templates::compile_templates(&mut ctx, &registry, &mut used.templates);
    let classifiers = classifiers::compile_classifiers(&mut ctx, &registry);
    let calendars = calendars::compile_calendars(&mut ctx, &registry);
    let mut channels = channels::compile_channels(&mut ctx, &registry);
    let compiled = Compiled {
        templates: &templates,
        classifiers: &classifiers,
        calendars: &calendars,
        channels: &channels,
    };
    let flows = flows::compile_flows(&mut ctx, &registry, &compiled, &mut used);
    // A flow that could not be decoded uses names nobody can see, and a
    // definition that failed has its own error: no "unused" guesses then.
    if registry.complete && !registry.has_broken(Section::Flows) {
        report_unused(&mut ctx, &registry, &compiled, &used);
    }
    lints::lint(&mut ctx, &registry, &compiled);
    channels::apply_step_breakers(&mut ctx, &registry, &mut channels, &used.breakers);
    diagnostics.extend(ctx.into_diagnostics());

    // The last guard: whatever a message says, it never shows a value that
    // came from the environment.
    let mut redactor = Redactor::default();
    for file in &files {
        for expansion in file.expansions.values() {
            for secret in &expansion.secrets {
                redactor.add(secret);
            }
        }
    }
    for d in &mut diagnostics {
        d.message = redactor.redact(&d.message);
    }
    let order = |d: &Diagnostic| {
        (
            sources.iter().position(|s| s.path == d.file),
            d.line,
            d.column,
        )
    };
    diagnostics.sort_by_key(order);

    let policy = (!has_errors(&diagnostics)).then(|| CompiledPolicy {
        version: policy_version(sources),
        files: sources.iter().map(|s| s.path.clone()).collect(),
        templates,
        classifiers,
        calendars,
        channels,
        flows,
    });
    Compilation {
        policy,
        diagnostics,
    }
}

fn report_unused(ctx: &mut Ctx<'_>, registry: &Registry<'_>, compiled: &Compiled<'_>, used: &Used) {
    let unused = |names: &BTreeSet<String>, name: &str| !names.contains(name);
    for entry in registry.templates.values() {
        let is_users = RetryTemplate::builtin(entry.name).is_none()
            && compiled.templates.contains_key(entry.name);
        if is_users && unused(&used.templates, entry.name) {
            ctx.warning_at_key(
                &entry.site,
                format_args!("template `{}` is not used by any step", entry.name),
            );
        }
    }
    for entry in registry.classifiers.values() {
        if compiled.classifiers.contains_key(entry.name) && unused(&used.classifiers, entry.name) {
            ctx.warning_at_key(
                &entry.site,
                format_args!("classifier `{}` is not used by any step", entry.name),
            );
        }
    }
    for entry in registry.calendars.values() {
        if compiled.calendars.contains_key(entry.name) && unused(&used.calendars, entry.name) {
            ctx.warning_at_key(
                &entry.site,
                format_args!(
                    "calendar `{}` is not used by any step's `hours`",
                    entry.name
                ),
            );
        }
    }
    for entry in registry.channels.values() {
        if compiled.channels.contains_key(entry.name) && unused(&used.channels, entry.name) {
            ctx.warning_at_key(
                &entry.site,
                format_args!(
                    "channel `{}` is not used by any step, fallback or on_dead",
                    entry.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
