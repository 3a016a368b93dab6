//! Hot reload: a debounced watcher on the policy paths.
//!
//! Any event re-reads *everything*: editors save by writing a temporary file
//! and renaming it, git-sync swaps a `..data` symlink, operators replace the
//! whole directory. None of these needs special handling when a change means
//! "load the paths again". After each reload the watches are set up afresh,
//! so a directory that was replaced is watched again; the parent directory
//! is watched too, to see the replacement happen. A slow rescan catches
//! anything the kernel's events missed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::compile::{compile, policy_version};
use crate::engine::LivePolicy;
use crate::panic_message;
use crate::policy::{has_errors, load_paths, EnvMode, Severity};

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new version is in force.
    Swapped { from: String, to: String },
    /// The files compile to the version already in force.
    Unchanged,
    /// The files have errors; the last good version stays in force.
    Rejected { errors: Vec<String> },
}

/// Loads and compiles the policy paths and swaps the result in.
pub struct Reloader {
    paths: Vec<PathBuf>,
    env: EnvMode,
    live: Arc<LivePolicy>,
    clock: SharedClock,
    /// The version of the sources last looked at, good or bad, so that the
    /// rescan stays quiet while nothing changes.
    last_seen: Mutex<Option<String>>,
}

impl Reloader {
    pub fn new(
        paths: Vec<PathBuf>,
        env: EnvMode,
        live: Arc<LivePolicy>,
        clock: SharedClock,
    ) -> Self {
        let seen = live.current().version.to_string();
        Reloader {
            paths,
            env,
            live,
            clock,
            last_seen: Mutex::new(Some(seen)),
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reloads now (file events, SIGHUP). Blocking: reads files.
    pub fn reload_now(&self) -> ReloadOutcome {
        self.reload(true).unwrap_or(ReloadOutcome::Unchanged)
    }

    /// Reloads only if the sources changed since the last look; `None` when
    /// they did not.
    fn reload(&self, always: bool) -> Option<ReloadOutcome> {
        let (sources, mut diagnostics) = load_paths(&self.paths);
        let version = policy_version(&sources).to_string();
        {
            let mut seen = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
            if !always && seen.as_deref() == Some(version.as_str()) && !has_errors(&diagnostics) {
                return None;
            }
            *seen = Some(version);
        }
        let mut compilation = compile(&sources, &self.env);
        diagnostics.append(&mut compilation.diagnostics);
        let now = self.clock.now();
        let policy = match compilation.policy {
            Some(policy) if !has_errors(&diagnostics) => policy,
            _ => {
                let errors: Vec<String> = diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(ToString::to_string)
                    .collect();
                tracing::error!(
                    errors = errors.len(),
                    "policy reload refused; the last good policy stays in force:\n{}",
                    errors.join("\n")
                );
                self.live.reject(errors.clone(), now);
                return Some(ReloadOutcome::Rejected { errors });
            }
        };
        for warning in diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
        {
            tracing::warn!("{warning}");
        }
        let from = self.live.current().version.to_string();
        let to = policy.version.to_string();
        if from == to {
            self.live.unchanged();
            return Some(ReloadOutcome::Unchanged);
        }
        tracing::info!(%from, %to, flows = policy.flows.len(), files = policy.files.len(),
            "policy reloaded");
        self.live.swap(policy, now);
        Some(ReloadOutcome::Swapped { from, to })
    }
}

/// How the watcher reacts.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Events closer together than this are one change.
    pub debounce: Duration,
    /// How often the sources are compared anyway; zero: never.
    pub rescan: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: Duration::from_millis(250),
            rescan: Duration::from_secs(5),
        }
    }
}

/// The running watcher; [`Watcher::stop`] ends it.
pub struct Watcher {
    force: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

type AfterSwap = Arc<dyn Fn() + Send + Sync>;

impl Watcher {
    /// Watches the reloader's paths; `after_swap` runs after each new
    /// version is put in force.
    pub fn start(
        reloader: Arc<Reloader>,
        config: WatchConfig,
        after_swap: AfterSwap,
    ) -> Result<Watcher, notify::Error> {
        let (changed_tx, changed) = mpsc::channel::<()>(1);
        // Watched and compared as absolute paths: the kernel's events name
        // absolute paths whatever was watched, so a relative `policies`
        // (the default `./policies` too) would never match one.
        let targets = absolute_paths(reloader.paths());
        let watched_paths = targets.clone();
        let mut debouncer = new_debouncer(
            // Zero would reload on every event of an editor's save.
            config.debounce.max(Duration::from_millis(10)),
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    // The parent directory's watch also sees its other
                    // files (a database beside `policies/`): only changes
                    // to the policy paths count.
                    let relevant = events
                        .iter()
                        .filter(|event| changes_content(&event.kind))
                        .flat_map(|event| event.paths.iter())
                        .any(|path| concerns(path, &targets));
                    if relevant {
                        // A full channel already holds a pending reload.
                        let _ = changed_tx.try_send(());
                    }
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!(%error, "watching the policy files");
                    }
                    let _ = changed_tx.try_send(());
                }
            },
        )?;
        arm(&mut debouncer, &watched_paths);
        let force = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(watch_loop(
            reloader,
            config,
            after_swap,
            debouncer,
            changed,
            force.clone(),
            stopped,
        ));
        Ok(Watcher { force, stop, task })
    }

    /// Reloads at once (SIGHUP).
    pub fn reload(&self) {
        self.force.notify_one();
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

async fn watch_loop(
    reloader: Arc<Reloader>,
    config: WatchConfig,
    after_swap: AfterSwap,
    mut debouncer: Debouncer,
    mut changed: mpsc::Receiver<()>,
    force: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut watched = identities(reloader.paths());
    // A zero period turns the rescan off (tokio's interval refuses zero).
    let mut rescan = (!config.rescan.is_zero()).then(|| {
        let mut every = tokio::time::interval(config.rescan);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every
    });
    if let Some(every) = &mut rescan {
        every.tick().await;
    }
    loop {
        let next_rescan = async {
            match &mut rescan {
                Some(every) => {
                    every.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let always = tokio::select! {
            _ = changed.recv() => true,
            _ = force.notified() => true,
            _ = next_rescan => false,
            _ = stopped.changed() => break,
        };
        let worker = reloader.clone();
        let outcome = tokio::select! {
            outcome = off_thread(move || worker.reload(always)) => match outcome {
                Ok(outcome) => outcome,
                Err(panic) => {
                    tracing::error!(%panic, "policy reload failed; the last good policy stays in force");
                    reloader.live.reject(vec![format!("the reload failed: {panic}")], reloader.clock.now());
                    None
                }
            },
            // A reload still compiling does not hold the engine up.
            _ = stopped.changed() => break,
        };
        if matches!(outcome, Some(ReloadOutcome::Swapped { .. })) {
            after_swap();
        }
        // Watching again is only needed when a directory was replaced;
        // doing it on every reload would itself raise events.
        let now_watched = identities(reloader.paths());
        if outcome.is_some() && now_watched != watched {
            arm(&mut debouncer, &absolute_paths(reloader.paths()));
            watched = now_watched;
        }
    }
    debouncer.stop_nonblocking();
}

/// The stack of the thread that compiles a reload: far more than any
/// bounded policy needs, so that compiling never takes a worker's stack.
const COMPILE_STACK: usize = 64 * 1024 * 1024;

/// Runs `work` on a thread of its own, so that a slow or deep compile never
/// holds a runtime thread; `Err` carries a panic's message.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("policy-reload".into())
        .stack_size(COMPILE_STACK)
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = done.send(outcome.map_err(|panic| panic_message(&panic)));
        });
    if let Err(error) = spawned {
        return Err(format!("cannot start the reload thread: {error}"));
    }
    result
        .await
        .unwrap_or_else(|_| Err("the reload thread ended without an answer".to_string()))
}

/// (Re)watches each path and its parent; paths that do not exist (a
/// directory being replaced) are picked up by the parent's watch.
fn arm(debouncer: &mut Debouncer, paths: &[PathBuf]) {
    for path in paths {
        let parent = parent_of(path);
        let _ = debouncer.unwatch(&parent);
        if let Err(error) = debouncer.watch(&parent, RecursiveMode::NonRecursive) {
            tracing::debug!(%error, path = %parent.display(), "cannot watch");
        }
        if path.is_dir() {
            let _ = debouncer.unwatch(path);
            if let Err(error) = debouncer.watch(path, RecursiveMode::Recursive) {
                tracing::warn!(%error, path = %path.display(), "cannot watch the policy directory");
            }
        }
    }
}

/// Which directory each path is now (device and inode), to notice one
/// replaced by another of the same name.
fn identities(paths: &[PathBuf]) -> Vec<Option<(u64, u64)>> {
    paths
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                Some((metadata.dev(), metadata.ino()))
            }
            #[cfg(not(unix))]
            {
                let _ = metadata;
                None
            }
        })
        .collect()
}

/// Whether an event can change what the files hold. Opening and reading
/// cannot — and the reload itself opens and reads every file, so counting
/// those would make each reload cause the next.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Each path made absolute against the working directory, lexically (a
/// path that does not exist yet stays watchable through its parent).
fn absolute_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
        .collect()
}

/// Whether a changed path is, or is inside, one of the policy paths. Both
/// sides are compared as absolute paths.
fn concerns(changed: &Path, targets: &[PathBuf]) -> bool {
    let changed = std::path::absolute(changed).unwrap_or_else(|_| changed.to_path_buf());
    targets.iter().any(|target| {
        let target = std::path::absolute(target).unwrap_or_else(|_| target.clone());
        // An event on the watched parent directory itself says nothing
        // about the policy path in it.
        if changed == parent_of(&target) {
            return false;
        }
        changed.starts_with(&target)
            || target.starts_with(&changed)
            || (changed.file_name().is_some() && changed.file_name() == target.file_name())
    })
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::{changes_content, concerns};
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
    use notify::EventKind;

    #[test]
    fn reading_the_files_is_not_a_change() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Any)));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
    }
    use std::path::{Path, PathBuf};

    #[test]
    fn only_changes_to_the_policy_paths_count() {
        let targets = [PathBuf::from("./policies")];
        assert!(concerns(Path::new("./policies/acme.yaml"), &targets));
        assert!(concerns(Path::new("policies/..data"), &targets));
        // The directory itself renamed into place.
        assert!(concerns(Path::new("./policies"), &targets));
        assert!(!concerns(Path::new("./steadfast.db-wal"), &targets));
        assert!(!concerns(Path::new("./policies.new"), &targets));
        assert!(!concerns(Path::new("."), &targets));
        // A relative target matches the absolute paths the kernel reports.
        let cwd = std::env::current_dir().unwrap();
        assert!(concerns(&cwd.join("policies/acme.yaml"), &targets));
        assert!(!concerns(&cwd.join("steadfast.db-wal"), &targets));
        assert!(!concerns(&cwd, &targets));
        let absolute = [PathBuf::from("/etc/steadfast/policies")];
        assert!(concerns(
            Path::new("/etc/steadfast/policies/a.toml"),
            &absolute
        ));
        assert!(!concerns(
            Path::new("/etc/steadfast/steadfast.toml"),
            &absolute
        ));
    }
}
