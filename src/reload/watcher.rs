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
//! Events in the policy directory are debounced (an editor's save or a
//! checkout is a burst); plain reads (our own) and files that are not
//! loaded (editors' swap files) are ignored. The parents are watched by a
//! plain watcher whose handler drops at once every event not about a policy
//! path, since a parent may be busy (the step log's WAL beside
//! `./policies`); what is left waits the same debounce. A periodic rescan
//! reads and hashes the files in case an event was missed (an overflowed
//! event queue, a network file system); it reloads only when they differ
//! from what was seen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    new_debouncer, DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache,
};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::reloader::Reloader;
use crate::clock::SharedClock;
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

/// The two watchers: the policy paths' (debounced) and their parents'.
struct Sources {
    files: Option<FileDebouncer>,
    parents: Option<RecommendedWatcher>,
}

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
        // The debouncer polls every quarter of this: never zero.
        let debounce = config.debounce.max(MIN_DEBOUNCE);
        let changed = Arc::new(Notify::new());
        let moved = Arc::new(Notify::new());
        let files = start_debouncer(&roots, debounce, changed.clone());
        let parents = start_parent_watcher(&roots, moved.clone());
        if let Some(error) = files.as_ref().err().or(parents.as_ref().err()) {
            tracing::error!(%error, rescan = ?config.rescan,
                "cannot watch the policy files; changes may be picked up by the periodic rescan only");
        }
        let sources = Sources {
            files: files.ok(),
            parents: parents.ok(),
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(watch_loop(
            Loop {
                reloader,
                rescan: config.rescan,
                debounce,
                clock,
                changed,
                moved,
            },
            Watches::new(&roots),
            sources,
            stopped,
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

/// Watches the parents for the policy paths themselves being created,
/// removed, renamed or replaced; every other event there is dropped in the
/// handler, before any buffering.
fn start_parent_watcher(
    roots: &[PathBuf],
    moved: Arc<Notify>,
) -> notify::Result<RecommendedWatcher> {
    let roots = roots.to_vec();
    notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let relevant = match result {
            Ok(event) => {
                event.need_rescan()
                    || (!matches!(event.kind, EventKind::Access(_))
                        && event.paths.iter().any(|path| roots.contains(path)))
            }
            Err(error) => {
                tracing::debug!(%error, "policy parent watcher error");
                true
            }
        };
        if relevant {
            moved.notify_one();
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
/// root itself (replaced, removed, a symlink swapped), a policy file
/// directly in it, or a Kubernetes `..data`-style entry. Not an editor's
/// swap or backup file.
fn concerns(path: &Path, root: &Path) -> bool {
    if path == root {
        return true;
    }
    match path.strip_prefix(root) {
        Ok(rest) if rest.components().count() == 1 => {
            rest.to_string_lossy().starts_with("..") || is_policy_file_name(path)
        }
        _ => false,
    }
}

/// What the watch loop works with.
struct Loop {
    reloader: Arc<Reloader>,
    rescan: Duration,
    debounce: Duration,
    clock: SharedClock,
    /// Debounced changes in the policy paths.
    changed: Arc<Notify>,
    /// The policy paths themselves changed, seen from their parents.
    moved: Arc<Notify>,
}

async fn watch_loop(
    l: Loop,
    mut watches: Watches,
    mut sources: Sources,
    mut stopped: oneshot::Receiver<()>,
) {
    watches.arm(&mut sources);
    // Whatever changed between the first load and the watches being armed.
    report(l.reloader.rescan().await);
    loop {
        let rescan = (!l.rescan.is_zero()).then(|| after(&l.clock, l.rescan));
        tokio::select! {
            _ = &mut stopped => break,
            _ = l.changed.notified() => report(l.reloader.reload_on_change().await),
            _ = l.moved.notified() => {
                // A directory swap is two renames, a removal and a mkdir:
                // let it finish before reading.
                l.clock.sleep_until(after(&l.clock, l.debounce)).await;
                report(l.reloader.reload_on_change().await);
            }
            _ = async {
                match rescan {
                    Some(at) => l.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => report(l.reloader.rescan().await),
        }
        if watches.arm(&mut sources) {
            // A directory or symlink target replaced: read it again in case
            // it changed before its watch existed.
            l.changed.notify_one();
        }
    }
    if let Some(files) = sources.files {
        // Signals the debouncer's thread to stop without waiting for it.
        files.stop_nonblocking();
    }
}

/// `wait` from now, saturating.
fn after(clock: &SharedClock, wait: Duration) -> Timestamp {
    let now = clock.now();
    SignedDuration::try_from(wait)
        .ok()
        .and_then(|wait| now.checked_add(wait).ok())
        .unwrap_or(Timestamp::MAX)
}

fn report(outcome: Option<super::ReloadOutcome>) {
    if let Some(outcome) = outcome {
        tracing::debug!(result = outcome.result(), "policy files read again");
    }
}

/// Which watcher watches a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    /// A policy path, by the debouncer.
    Root,
    /// A policy path's parent, by the parent watcher.
    Parent,
}

/// The paths watched and the identity of what each was when its watch was
/// added.
struct Watches {
    paths: Vec<(PathBuf, Role)>,
    armed: HashMap<(PathBuf, Role), Option<Identity>>,
}

impl Watches {
    fn new(roots: &[PathBuf]) -> Self {
        let mut paths: Vec<(PathBuf, Role)> = Vec::new();
        let roles = roots.iter().map(|root| (root.clone(), Role::Root)).chain(
            roots
                .iter()
                .filter_map(|root| Some((root.parent()?.to_path_buf(), Role::Parent))),
        );
        for entry in roles {
            if !paths.contains(&entry) {
                paths.push(entry);
            }
        }
        Watches {
            paths,
            armed: HashMap::new(),
        }
    }

    /// Watches every path whose identity changed since it was last armed
    /// (or that could not be watched before). Returns whether any was
    /// armed anew after the first time.
    fn arm(&mut self, sources: &mut Sources) -> bool {
        let mut rearmed = false;
        for (path, role) in &self.paths {
            let watcher: &mut dyn Watch = match role {
                Role::Root => match sources.files.as_mut() {
                    Some(files) => files,
                    None => continue,
                },
                Role::Parent => match sources.parents.as_mut() {
                    Some(parents) => parents,
                    None => continue,
                },
            };
            let key = (path.clone(), *role);
            let identity = identity(path);
            let previous = self.armed.get(&key).copied();
            if previous == Some(identity) {
                continue;
            }
            // The old watch follows the old directory: drop it (it may
            // already be gone with its directory).
            watcher.remove(path);
            if identity.is_none() {
                // Not there (yet): the parent's watch sees it appear.
                self.armed.insert(key, None);
                continue;
            }
            match watcher.add(path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), role = ?role, "watching");
                    rearmed |= previous.is_some();
                    self.armed.insert(key, identity);
                }
                Err(error) => {
                    // Tried again after the next reload or rescan.
                    tracing::warn!(%error, path = %path.display(), "cannot watch");
                    self.armed.remove(&key);
                }
            }
        }
        rearmed
    }
}

/// Adding and removing one non-recursive watch, whichever the watcher.
trait Watch {
    fn add(&mut self, path: &Path) -> notify::Result<()>;
    fn remove(&mut self, path: &Path);
}

impl Watch for FileDebouncer {
    fn add(&mut self, path: &Path) -> notify::Result<()> {
        self.watch(path, RecursiveMode::NonRecursive)
    }

    fn remove(&mut self, path: &Path) {
        // Not watched (or already gone with its directory): nothing to do.
        let _ = self.unwatch(path);
    }
}

impl Watch for RecommendedWatcher {
    fn add(&mut self, path: &Path) -> notify::Result<()> {
        notify::Watcher::watch(self, path, RecursiveMode::NonRecursive)
    }

    fn remove(&mut self, path: &Path) {
        let _ = notify::Watcher::unwatch(self, path);
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
            watches.paths,
            vec![
                (PathBuf::from("/a/p"), Role::Root),
                (PathBuf::from("/a/q"), Role::Root),
                (PathBuf::from("/a"), Role::Parent),
            ]
        );
    }
}
