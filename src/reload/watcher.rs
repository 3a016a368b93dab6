//! Watches the policy paths and reloads when they change.
//!
//! The whole set is read again on any change, so what matters is only that
//! some event arrives, never which. Each policy path is watched, and so is
//! its parent directory, non-recursively:
//!
//! - an editor's write-to-temp-and-rename, files added or removed: events
//!   in the policy directory;
//! - the directory replaced (`mv new policies`, `rm -r` then `mkdir`) or a
//!   `current -> rev-N` symlink swapped (git-sync's `--link`): events in
//!   the parent naming the policy path. The watch on the old directory then
//!   watches nothing useful, so after every reload each watched path whose
//!   identity (device and inode, symlinks followed) changed is watched anew,
//!   and read once more in case something changed before the watch existed;
//! - a Kubernetes ConfigMap's `..data` symlink swap: a rename inside the
//!   policy directory; files are read through their symlinks on reload.
//!
//! Events are debounced (an editor's save or a checkout is a burst), and
//! events in the parent about other paths (the step log's WAL, say) and
//! plain reads (our own) are ignored. A periodic rescan reads and hashes the
//! files in case an event was missed (an overflowed event queue, a network
//! file system); it reloads only when they differ from what was seen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    new_debouncer, DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache,
};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::reloader::Reloader;
use crate::clock::SharedClock;
use crate::engine::interpreter::signed;
use crate::policy::is_policy_file_name;

/// How the watcher paces itself.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// How long events must settle before a reload (at least 10 ms).
    pub debounce: Duration,
    /// How often the files are read and hashed in case an event was missed;
    /// zero turns the rescan off.
    pub rescan: Duration,
}

/// The shortest debounce used, whatever is asked.
const MIN_DEBOUNCE: Duration = Duration::from_millis(10);

impl WatchConfig {
    pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(300);
    pub const DEFAULT_RESCAN: Duration = Duration::from_secs(30);
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            debounce: Self::DEFAULT_DEBOUNCE,
            rescan: Self::DEFAULT_RESCAN,
        }
    }
}

/// A running watcher; stops with [`PolicyWatcher::stop`] or when dropped.
pub struct PolicyWatcher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

type FileDebouncer = Debouncer<RecommendedWatcher, RecommendedCache>;

impl PolicyWatcher {
    /// Starts watching the reloader's paths. Never fails: when file events
    /// are unavailable (an exhausted inotify limit, say) the error is logged
    /// and the periodic rescan alone keeps the policies current.
    pub fn start(reloader: Arc<Reloader>, config: WatchConfig, clock: SharedClock) -> Self {
        let roots: Vec<PathBuf> = reloader
            .paths()
            .iter()
            .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
            .collect();
        let changed = Arc::new(Notify::new());
        // The debouncer polls every quarter of this: never zero.
        let debounce = config.debounce.max(MIN_DEBOUNCE);
        let debouncer = match start_debouncer(&roots, debounce, changed.clone()) {
            Ok(debouncer) => Some(debouncer),
            Err(error) => {
                tracing::error!(%error, rescan = ?config.rescan,
                    "cannot watch the policy files; changes are picked up by the periodic rescan only");
                None
            }
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(watch_loop(
            reloader, config, clock, roots, debouncer, changed, stopped,
        ));
        PolicyWatcher { stop, task }
    }

    /// Stops watching; waits for a reload in progress to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "policy watcher task failed");
        }
    }
}

fn start_debouncer(
    roots: &[PathBuf],
    debounce: Duration,
    changed: Arc<Notify>,
) -> notify::Result<FileDebouncer> {
    let roots = roots.to_vec();
    new_debouncer(debounce, None, move |result: DebounceEventResult| {
        let relevant = match result {
            Ok(events) => events.iter().any(|event| is_relevant(event, &roots)),
            Err(errors) => {
                // Lost or unreadable events: read the files to be sure.
                for error in errors {
                    tracing::debug!(%error, "policy watcher error");
                }
                true
            }
        };
        if relevant {
            changed.notify_one();
        }
    })
}

/// Whether an event may mean the policy files changed.
fn is_relevant(event: &DebouncedEvent, roots: &[PathBuf]) -> bool {
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        // A file written and closed counts; opening or reading (which our
        // own reload does) does not.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event
        .paths
        .iter()
        .any(|path| roots.iter().any(|root| concerns(path, root)))
}

/// Whether a change at `path` can change what loading `root` reads: the
/// root itself (replaced, removed, a symlink swapped), a policy file in it,
/// or a Kubernetes `..data`-style entry. Not an editor's swap or backup
/// file, nor anything else in the root's parent.
fn concerns(path: &Path, root: &Path) -> bool {
    if path == root {
        return true;
    }
    match path.strip_prefix(root) {
        Ok(rest) => {
            let name = rest.to_string_lossy();
            name.starts_with("..") || is_policy_file_name(path)
        }
        Err(_) => false,
    }
}

async fn watch_loop(
    reloader: Arc<Reloader>,
    config: WatchConfig,
    clock: SharedClock,
    roots: Vec<PathBuf>,
    mut debouncer: Option<FileDebouncer>,
    changed: Arc<Notify>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut watches = Watches::new(&roots);
    if let Some(debouncer) = debouncer.as_mut() {
        watches.arm(debouncer);
    }
    // Whatever changed between the first load and the watches being armed.
    report(reloader.rescan().await);
    loop {
        let rescan = (!config.rescan.is_zero()).then(|| clock.now() + signed(config.rescan));
        tokio::select! {
            _ = &mut stopped => break,
            _ = changed.notified() => {
                report(reloader.reload_on_change().await);
            }
            _ = async {
                match rescan {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => report(reloader.rescan().await),
        }
        if let Some(debouncer) = debouncer.as_mut() {
            if watches.arm(debouncer) {
                // A directory or symlink target replaced: read it again in
                // case it changed before its watch existed.
                changed.notify_one();
            }
        }
    }
    if let Some(debouncer) = debouncer {
        // Signals the debouncer's thread to stop without waiting for it.
        debouncer.stop_nonblocking();
    }
}

fn report(outcome: Option<super::ReloadOutcome>) {
    if let Some(outcome) = outcome {
        tracing::debug!(result = outcome.result(), "policy files read again");
    }
}

/// The paths watched (each policy path and its parent) and the identity of
/// what each was when its watch was added.
struct Watches {
    armed: HashMap<PathBuf, Option<Identity>>,
    order: Vec<PathBuf>,
}

impl Watches {
    fn new(roots: &[PathBuf]) -> Self {
        let mut order = Vec::new();
        for root in roots {
            for path in [Some(root.as_path()), root.parent()].into_iter().flatten() {
                if !order.iter().any(|p: &PathBuf| p == path) {
                    order.push(path.to_path_buf());
                }
            }
        }
        Watches {
            armed: HashMap::new(),
            order,
        }
    }

    /// Watches every path whose identity changed since it was last armed
    /// (or that could not be watched before). Returns whether any was
    /// armed anew after the first time.
    fn arm(&mut self, debouncer: &mut FileDebouncer) -> bool {
        let mut rearmed = false;
        for path in &self.order {
            let identity = identity(path);
            let previous = self.armed.get(path);
            if previous.is_some_and(|armed| *armed == identity) {
                continue;
            }
            // The old watch follows the old directory: drop it (it may
            // already be gone with its directory).
            let _ = debouncer.unwatch(path);
            if identity.is_none() {
                // Not there (yet): the parent's watch sees it appear.
                self.armed.insert(path.clone(), None);
                continue;
            }
            match debouncer.watch(path, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "watching");
                    rearmed |= previous.is_some();
                    self.armed.insert(path.clone(), identity);
                }
                Err(error) => {
                    // Tried again after the next reload or rescan.
                    tracing::warn!(%error, path = %path.display(), "cannot watch");
                    self.armed.remove(path);
                }
            }
        }
        rearmed
    }
}

/// What a path is now (symlinks followed): replaced directories and swapped
/// symlinks change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
}

#[cfg(unix)]
fn identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(Identity {
        device: metadata.dev(),
        inode: metadata.ino(),
    })
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<Identity> {
    // No inode to compare: a path is re-armed only when it disappears and
    // comes back; the rescan covers the rest.
    std::fs::metadata(path).ok().map(|_| Identity {
        device: 0,
        inode: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, Event, ModifyKind};
    use std::time::Instant;

    fn event(kind: EventKind, path: &str) -> DebouncedEvent {
        DebouncedEvent::new(
            Event::new(kind).add_path(PathBuf::from(path)),
            Instant::now(),
        )
    }

    #[test]
    fn only_changes_under_a_policy_path_are_relevant() {
        let roots = vec![PathBuf::from("/srv/policies")];
        let created = EventKind::Create(CreateKind::File);
        assert!(is_relevant(&event(created, "/srv/policies/a.yaml"), &roots));
        // The directory itself, seen from its parent's watch.
        assert!(is_relevant(&event(created, "/srv/policies"), &roots));
        // Its neighbours in the parent are not.
        assert!(!is_relevant(&event(created, "/srv/policies.old"), &roots));
        assert!(!is_relevant(
            &event(EventKind::Modify(ModifyKind::Any), "/srv/steadfast.db-wal"),
            &roots
        ));
        // Our own reads are not; a write that finished is.
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!is_relevant(&event(open, "/srv/policies/a.yaml"), &roots));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(is_relevant(&event(written, "/srv/policies/a.yaml"), &roots));
        // Editors' swap and backup files are not loaded, so not relevant;
        // a ConfigMap's `..data` swap is.
        for ignored in [
            "/srv/policies/.a.yaml.swp",
            "/srv/policies/a.yaml~",
            "/srv/policies/notes.md",
        ] {
            assert!(!is_relevant(&event(created, ignored), &roots), "{ignored}");
        }
        let renamed = EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::Any));
        assert!(is_relevant(&event(renamed, "/srv/policies/..data"), &roots));
        // An explicit file, seen from its directory's watch.
        let file = vec![PathBuf::from("/srv/one.toml")];
        assert!(is_relevant(&event(created, "/srv/one.toml"), &file));
        assert!(!is_relevant(&event(created, "/srv/two.toml"), &file));
    }

    #[test]
    fn each_path_and_its_parent_are_watched_once() {
        let watches = Watches::new(&[PathBuf::from("/a/p"), PathBuf::from("/a/q")]);
        assert_eq!(
            watches.order,
            vec![
                PathBuf::from("/a/p"),
                PathBuf::from("/a"),
                PathBuf::from("/a/q")
            ]
        );
    }
}
