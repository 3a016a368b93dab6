//! One SQLite file, one engine. An engine takes an exclusive lock on
//! `FILE.lock` beside the database for its whole life and writes its
//! process id and API address there; a second engine on the same file finds
//! the lock taken and refuses to start, naming the file and the first
//! engine. Two engines claiming from one file would each believe it owned
//! every lease (PostgreSQL is for several nodes).
//!
//! The lock is the kernel's (`flock`): it goes with the process, so a
//! `kill -9` leaves no stale lock behind, only a file that the next engine
//! locks and rewrites.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::super::StoreError;

/// The lock held by the engine that owns a SQLite file.
#[derive(Debug)]
pub struct EngineLock {
    file: File,
    path: PathBuf,
}

impl EngineLock {
    /// Locks `db`'s lock file, or says who holds it.
    pub fn acquire(db: &Path) -> Result<EngineLock, StoreError> {
        let path = lock_path(db);
        let cannot = |error: std::io::Error| StoreError::Lock {
            path: path.display().to_string(),
            message: error.to_string(),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(cannot)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StoreError::InUse {
                    db: db.display().to_string(),
                    holder: describe(&holder),
                });
            }
            Err(TryLockError::Error(error)) => return Err(cannot(error)),
        }
        let mut lock = EngineLock { file, path };
        lock.record(&[("pid", &std::process::id().to_string())]);
        Ok(lock)
    }

    /// Writes who holds the lock (`key=value` lines), for the message a
    /// second engine shows.
    pub fn record(&mut self, facts: &[(&str, &str)]) {
        let text: String = facts.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(text.as_bytes()));
        if let Err(error) = written {
            tracing::warn!(%error, path = %self.path.display(), "cannot write the engine lock file");
        }
    }
}

/// `steadfast.db` → `steadfast.db.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// " (pid 123, API http://127.0.0.1:8787)" from the lock file's lines.
fn describe(holder: &str) -> String {
    let facts: Vec<String> = holder
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter_map(|(key, value)| match key {
            "pid" => Some(format!("pid {value}")),
            "api" => Some(format!("API {value}")),
            _ => None,
        })
        .collect();
    if facts.is_empty() {
        String::new()
    } else {
        format!(" ({})", facts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("steadfast.db");
        let mut first = EngineLock::acquire(&db).unwrap();
        first.record(&[("pid", "42"), ("api", "http://127.0.0.1:8787")]);
        let error = EngineLock::acquire(&db).unwrap_err().to_string();
        assert!(error.contains(&db.display().to_string()), "{error}");
        assert!(
            error.contains("pid 42, API http://127.0.0.1:8787"),
            "{error}"
        );
        drop(first);
        // Released with its holder: the next engine takes it.
        EngineLock::acquire(&db).unwrap();
    }
}
