//! One reload: read every policy file again, compile, and put the result in
//! force when it has no error; otherwise keep the last good set and record
//! why. Reloads run one at a time, whoever asks (the watcher, `SIGHUP`, a
//! rescan, a test).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{Mutex, Notify};

use super::LivePolicy;
use crate::clock::SharedClock;
use crate::compile::{compile, policy_version, Compilation};
use crate::model::{CompiledPolicy, PolicyVersion};
use crate::policy::{has_errors, load_paths, Diagnostic, EnvMode, Pos, SourceFile};
use crate::store::SharedStepLog;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new version is in force.
    Swapped {
        from: PolicyVersion,
        to: PolicyVersion,
    },
    /// The files are the set already in force.
    Unchanged { version: PolicyVersion },
    /// The files have errors (`file:line:col: error: message` each); the
    /// last good set stays in force.
    Rejected {
        /// The version of the rejected files.
        version: PolicyVersion,
        errors: Vec<String>,
    },
}

impl ReloadOutcome {
    /// `ok`, `unchanged` or `error`: the `result` label in `/metrics`.
    pub fn result(&self) -> &'static str {
        match self {
            ReloadOutcome::Swapped { .. } => "ok",
            ReloadOutcome::Unchanged { .. } => "unchanged",
            ReloadOutcome::Rejected { .. } => "error",
        }
    }
}

/// Why a reload runs; shown in its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// The watcher saw the files change.
    Change,
    /// `SIGHUP`.
    Signal,
    /// The periodic rescan found sources it had not seen.
    Rescan,
    /// A direct call ([`Reloader::reload_now`]).
    Request,
}

impl ReloadCause {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadCause::Change => "change",
            ReloadCause::Signal => "signal",
            ReloadCause::Rescan => "rescan",
            ReloadCause::Request => "request",
        }
    }
}

/// Reloads the policy files at `paths` into a [`LivePolicy`].
pub struct Reloader {
    paths: Vec<PathBuf>,
    env: EnvMode,
    live: Arc<LivePolicy>,
    clock: SharedClock,
    resume: Option<Resume>,
    /// Serialises reloads; remembers the last rejected version so that a
    /// rescan does not report the same broken files again and again.
    rejected: Mutex<Option<PolicyVersion>>,
}

/// Where jobs suspended because their flow vanished are woken when a
/// reload brings the flow back.
struct Resume {
    store: SharedStepLog,
    wake: Arc<Notify>,
}

/// The sources as read, before anything is compiled.
struct Loaded {
    version: PolicyVersion,
    sources: Vec<SourceFile>,
    /// Problems reading them (a path missing or unreadable).
    diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Whether these are exactly the sources of the set `in_force`.
    fn is(&self, in_force: &PolicyVersion) -> bool {
        self.diagnostics.is_empty() && &self.version == in_force
    }
}

impl Reloader {
    /// `paths` as given to `run` (`./policies`), read again on each reload
    /// with `env` for `${VAR}`.
    pub fn new(
        paths: Vec<PathBuf>,
        env: EnvMode,
        live: Arc<LivePolicy>,
        clock: SharedClock,
    ) -> Self {
        Self {
            paths,
            env,
            live,
            clock,
            resume: None,
            rejected: Mutex::new(None),
        }
    }

    /// After a reload, wakes the jobs of the flows in force that were
    /// suspended because their flow had vanished.
    pub fn resuming_jobs_in(mut self, store: SharedStepLog, wake: Arc<Notify>) -> Self {
        self.resume = Some(Resume { store, wake });
        self
    }

    /// The paths this reloader reads.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The policy it reloads into.
    pub fn live(&self) -> &Arc<LivePolicy> {
        &self.live
    }

    /// Reads the files and puts them in force if they compile. Always
    /// reports, even the errors it reported last time (tests, tools).
    pub async fn reload_now(&self) -> ReloadOutcome {
        self.forced(ReloadCause::Request).await
    }

    /// [`Self::reload_now`], logged as caused by `SIGHUP`.
    pub async fn reload_on_signal(&self) -> ReloadOutcome {
        self.forced(ReloadCause::Signal).await
    }

    /// A reload because the watcher saw the files change: quiet (`None`)
    /// when they are the files last rejected, so that an editor's swap
    /// file or a second save does not log the same errors again.
    pub async fn reload_on_change(&self) -> Option<ReloadOutcome> {
        self.reload(ReloadCause::Change).await
    }

    async fn forced(&self, cause: ReloadCause) -> ReloadOutcome {
        // `reload` answers every forced cause; the fallback is never used.
        self.reload(cause)
            .await
            .unwrap_or_else(|| ReloadOutcome::Unchanged {
                version: self.live.current().version.clone(),
            })
    }

    /// Reads the files and puts them in force if they compile. A signal or
    /// a request always reports; a change or a rescan answers `None` when
    /// the files are the ones last rejected, and a rescan also when they
    /// are the set in force.
    async fn reload(&self, cause: ReloadCause) -> Option<ReloadOutcome> {
        let mut rejected = self.rejected.lock().await;
        let loaded = self.load().await;
        let forced = matches!(cause, ReloadCause::Signal | ReloadCause::Request);
        if loaded.is(&self.live.current().version) {
            // An event (or a signal) that changed nothing, or a rejected
            // edit undone: what is on disk runs. A rescan that finds what
            // it found before counts nothing.
            let was_rejected = rejected.take().is_some();
            if cause == ReloadCause::Rescan && !was_rejected {
                return None;
            }
            return Some(self.unchanged(loaded.version, cause));
        }
        if !forced && rejected.as_ref() == Some(&loaded.version) {
            return None;
        }
        Some(self.apply(loaded, cause, &mut rejected).await)
    }

    /// The safety net behind the watcher: reads the files and reloads only
    /// when they differ both from the set in force and from the set last
    /// rejected. Returns `None` (and counts nothing) when there was nothing
    /// new. Cheap: reading and hashing a directory of small files.
    pub async fn rescan(&self) -> Option<ReloadOutcome> {
        self.reload(ReloadCause::Rescan).await
    }

    /// Reads and hashes the sources, on the blocking pool.
    async fn load(&self) -> Loaded {
        let paths = self.paths.clone();
        let task = tokio::task::spawn_blocking(move || {
            let (sources, mut diagnostics) = load_paths(&paths);
            if sources.is_empty() && diagnostics.is_empty() {
                // A directory emptied for a moment (removed and made again,
                // a checkout under way) must not suspend every job.
                let file = paths.first().map_or(Path::new("."), PathBuf::as_path);
                diagnostics.push(Diagnostic::error(
                    file,
                    Pos::UNKNOWN,
                    "",
                    "no policy files (*.yaml, *.yml, *.toml): a reload never empties the \
                     policy set; to run with no flows, leave a file that holds `{}`",
                ));
            }
            Loaded {
                version: policy_version(&sources),
                sources,
                diagnostics,
            }
        });
        task.await.unwrap_or_else(|error| Loaded {
            version: PolicyVersion("unknown".to_string()),
            sources: Vec::new(),
            diagnostics: vec![self.internal_error("reading", &error)],
        })
    }

    /// Compiles what was read (as `load_policy` does), on the blocking
    /// pool: a read problem is an error like any other.
    async fn compile(&self, loaded: Loaded) -> Compilation {
        let env = self.env.clone();
        let Loaded {
            sources,
            mut diagnostics,
            ..
        } = loaded;
        let task = tokio::task::spawn_blocking(move || {
            let mut compilation = compile(&sources, &env);
            if has_errors(&diagnostics) {
                compilation.policy = None;
            }
            diagnostics.append(&mut compilation.diagnostics);
            compilation.diagnostics = diagnostics;
            compilation
        });
        // A panic while compiling must not take the engine down: it is
        // reported like any other failed reload.
        task.await.unwrap_or_else(|error| Compilation {
            policy: None,
            diagnostics: vec![self.internal_error("compiling", &error)],
        })
    }

    fn internal_error(&self, doing: &str, error: &tokio::task::JoinError) -> Diagnostic {
        let file = self.paths.first().map_or(Path::new("."), PathBuf::as_path);
        Diagnostic::error(
            file,
            Pos::UNKNOWN,
            "",
            format!("internal error while {doing} the policies: {error}"),
        )
    }

    fn unchanged(&self, version: PolicyVersion, cause: ReloadCause) -> ReloadOutcome {
        self.live.unchanged(self.clock.now());
        tracing::debug!(%version, cause = cause.as_str(), "policies unchanged");
        ReloadOutcome::Unchanged { version }
    }

    async fn apply(
        &self,
        loaded: Loaded,
        cause: ReloadCause,
        rejected: &mut Option<PolicyVersion>,
    ) -> ReloadOutcome {
        let version = loaded.version.clone();
        let compilation = self.compile(loaded).await;
        let now = self.clock.now();
        let Some(policy) = compilation.policy else {
            let errors: Vec<String> = compilation
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect();
            for error in &errors {
                tracing::error!(cause = cause.as_str(), "{error}");
            }
            let in_force = self.live.current().version.clone();
            tracing::error!(cause = cause.as_str(), rejected = %version, in_force = %in_force,
                errors = errors.len(),
                "policy reload failed; the last good policies stay in force");
            self.live.reject(errors.clone(), now);
            *rejected = Some(version.clone());
            return ReloadOutcome::Rejected { version, errors };
        };
        for warning in compilation.diagnostics.iter().filter(|d| !d.is_error()) {
            tracing::warn!(cause = cause.as_str(), "{warning}");
        }
        *rejected = None;
        let flows: Vec<String> = policy.flows.keys().cloned().collect();
        let to = policy.version.clone();
        let old = self.live.swap(policy, now);
        tracing::info!(cause = cause.as_str(), from = %old.version, to = %to,
            files = self.live.current().files.len(), flows = flows.len(),
            added = ?added_flows(&old, &flows), removed = ?removed_flows(&old, &flows),
            "policies reloaded");
        self.resume_jobs(&flows, now).await;
        ReloadOutcome::Swapped {
            from: old.version.clone(),
            to,
        }
    }

    async fn resume_jobs(&self, flows: &[String], now: Timestamp) {
        let Some(resume) = &self.resume else {
            return;
        };
        match resume.store.jobs_resume_vanished(flows, now).await {
            Ok(0) => {}
            Ok(resumed) => {
                tracing::info!(
                    resumed,
                    "jobs suspended because their flow was removed resume"
                );
                resume.wake.notify_one();
            }
            // They are rechecked later all the same.
            Err(error) => tracing::error!(%error, "cannot wake jobs whose flow came back"),
        }
    }
}

fn added_flows(old: &CompiledPolicy, flows: &[String]) -> Vec<String> {
    flows
        .iter()
        .filter(|f| !old.flows.contains_key(*f))
        .cloned()
        .collect()
}

fn removed_flows(old: &CompiledPolicy, flows: &[String]) -> Vec<String> {
    old.flows
        .keys()
        .filter(|f| !flows.contains(f))
        .cloned()
        .collect()
}
