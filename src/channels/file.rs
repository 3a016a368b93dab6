//! The `file` channel: a spool directory with one JSON file per job, named by
//! the job's idempotency key so that a replayed write replaces itself.
//!
//! Written atomically: a temporary file in the same directory, fsync, rename,
//! fsync of the directory. A reader never sees half a file, and a file that
//! exists survives a power cut.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::value::RawValue;

use super::{Delivery, DeliveryResult, Response, TransportError};
use crate::model::{ErrorKind, FileChannel};

pub struct FileSpool;

/// What one spool file holds. The payload is embedded as its stored bytes:
/// key order, number precision and escapes exactly as submitted.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    id: &'a str,
    flow: &'a str,
    step: &'a str,
    idempotency_key: &'a str,
    payload: &'a RawValue,
}

impl FileSpool {
    pub async fn write(channel: &FileChannel, delivery: &Delivery<'_>) -> DeliveryResult {
        // A payload is checked JSON when accepted; text that is not is an
        // error, never a silent `null`.
        let payload: &RawValue =
            serde_json::from_str(delivery.payload).map_err(|e| TransportError {
                kind: ErrorKind::Internal,
                message: format!("the payload is not JSON and cannot be spooled: {e}"),
            })?;
        let envelope = Envelope {
            id: delivery.job_id,
            flow: delivery.flow,
            step: delivery.step,
            idempotency_key: delivery.idempotency_key,
            payload,
        };
        let bytes = serde_json::to_vec_pretty(&envelope).map_err(|e| TransportError {
            kind: ErrorKind::Internal,
            message: format!("cannot encode the spool file: {e}"),
        })?;
        let file_name = spool_file_name(delivery.idempotency_key);
        let dir = channel.dir.clone();
        let written =
            tokio::task::spawn_blocking(move || write_atomically(&dir, &file_name, &bytes)).await;
        match written {
            Ok(Ok(())) => Ok(Response {
                status: 200,
                retry_after: None,
                body: String::new(),
                headers: Vec::new(),
            }),
            Ok(Err(e)) => Err(TransportError {
                kind: ErrorKind::Io,
                message: format!("spool write to {} failed: {e}", channel.dir.display()),
            }),
            Err(e) => Err(TransportError {
                kind: ErrorKind::Io,
                message: format!("spool write task failed: {e}"),
            }),
        }
    }
}

fn write_atomically(dir: &Path, file_name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".spool-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(dir.join(file_name)).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

/// The longest readable prefix of a key kept in its file name, in bytes.
/// With `-`, 16 hex digits and `.json` the name stays far below the
/// 255-byte limit of common file systems.
const NAME_PREFIX_MAX: usize = 80;

/// A file name for a key: a readable, sanitised prefix of it plus a hash of
/// the whole key. Two different keys never share a file (`a/b` and `a_b`
/// sanitise alike but hash apart), every name fits a 255-byte file name,
/// the same key always maps to the same file, and no name escapes the
/// directory or hides as a dot file.
pub fn spool_file_name(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut prefix = String::new();
    for c in key.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@') {
            c
        } else {
            '_'
        };
        if prefix.len() + c.len_utf8() > NAME_PREFIX_MAX {
            break;
        }
        prefix.push(c);
    }
    let prefix = prefix.trim_start_matches('.');
    let digest = Sha256::digest(key.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    if prefix.is_empty() {
        format!("{hash}.json")
    } else {
        format!("{prefix}-{hash}.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_spool() {
        let name = spool_file_name("lead-42:deliver");
        assert!(name.starts_with("lead-42:deliver-"), "{name}");
        for key in ["../../etc/passwd", "..", ".hidden", "a/b c", "/", "\0"] {
            let name = spool_file_name(key);
            assert!(!name.starts_with('.'), "{key}: {name}");
            assert!(!name.contains('/'), "{key}: {name}");
            assert!(name.ends_with(".json"), "{key}: {name}");
        }
    }

    #[test]
    fn keys_that_sanitise_alike_get_their_own_files() {
        let names: std::collections::HashSet<String> = ["a/b", "a_b", "a b", "a\\b", "a\u{e9}b"]
            .iter()
            .map(|key| spool_file_name(key))
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(spool_file_name("a/b"), spool_file_name("a/b"));
    }

    #[test]
    fn every_name_fits_a_file_name() {
        for key in ["k".repeat(256), "\u{1F600}".repeat(64), "é".repeat(200)] {
            let name = spool_file_name(&key);
            assert!(name.len() <= 255, "{} bytes", name.len());
        }
        assert_ne!(
            spool_file_name(&format!("{}x", "k".repeat(300))),
            spool_file_name(&format!("{}y", "k".repeat(300)))
        );
    }

    #[tokio::test]
    async fn a_replayed_write_replaces_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let channel = FileChannel {
            dir: dir.path().join("spool"),
        };
        let mut delivery = Delivery {
            job_id: "j1",
            flow: "f",
            step: "s",
            idempotency_key: "k1",
            payload: r#"{"n":1}"#,
            deadline: None,
            traceparent: None,
            keep_headers: false,
        };
        FileSpool::write(&channel, &delivery).await.unwrap();
        delivery.payload = r#"{"n":2}"#;
        let answer = FileSpool::write(&channel, &delivery).await.unwrap();
        assert_eq!(answer.status, 200);
        let files: Vec<_> = fs::read_dir(&channel.dir).unwrap().collect();
        assert_eq!(files.len(), 1, "no temp file left, one file per key");
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(channel.dir.join(spool_file_name("k1"))).unwrap())
                .unwrap();
        assert_eq!(written["payload"]["n"], 2);
        assert_eq!(written["id"], "j1");
    }

    #[tokio::test]
    async fn an_unwritable_spool_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let channel = FileChannel {
            dir: blocker.join("spool"),
        };
        let delivery = Delivery {
            job_id: "j",
            flow: "f",
            step: "s",
            idempotency_key: "k",
            payload: "{}",
            deadline: None,
            traceparent: None,
            keep_headers: false,
        };
        let error = FileSpool::write(&channel, &delivery).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Io);
    }
}
