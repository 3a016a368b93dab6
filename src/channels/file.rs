//! The `file` channel: a spool directory with one JSON file per job, named by
//! the job's idempotency key so that a replayed write replaces itself.
//!
//! Written atomically: a temporary file in the same directory, fsync, rename,
//! fsync of the directory. A reader never sees half a file, and a file that
//! exists survives a power cut.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::{Delivery, DeliveryResult, Response, TransportError};
use crate::model::{ErrorKind, FileChannel};

pub struct FileSpool;

impl FileSpool {
    pub async fn write(channel: &FileChannel, delivery: &Delivery<'_>) -> DeliveryResult {
        let payload: serde_json::Value =
            serde_json::from_str(delivery.payload).unwrap_or(serde_json::Value::Null);
        let envelope = serde_json::json!({
            "id": delivery.job_id,
            "flow": delivery.flow,
            "step": delivery.step,
            "idempotency_key": delivery.idempotency_key,
            "payload": payload,
        });
        let file_name = format!("{}.json", safe_file_name(delivery.idempotency_key));
        let dir = channel.dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec_pretty(&envelope).map_err(std::io::Error::other)?;
            write_atomically(&dir, &file_name, &bytes)
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(Response {
                status: 200,
                retry_after: None,
                body: String::new(),
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

/// Keeps keys readable but never lets one escape the directory.
fn safe_file_name(key: &str) -> String {
    let name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match name.trim_start_matches('.') {
        "" => "_".to_string(),
        _ if name.starts_with('.') => format!("_{name}"),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_spool() {
        assert_eq!(safe_file_name("lead-42:deliver"), "lead-42:deliver");
        assert_eq!(safe_file_name("../../etc/passwd"), "_.._.._etc_passwd");
        assert_eq!(safe_file_name(".."), "_");
        assert_eq!(safe_file_name(".hidden"), "_.hidden");
        assert_eq!(safe_file_name("a/b c"), "a_b_c");
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
        };
        FileSpool::write(&channel, &delivery).await.unwrap();
        delivery.payload = r#"{"n":2}"#;
        let answer = FileSpool::write(&channel, &delivery).await.unwrap();
        assert_eq!(answer.status, 200);
        let files: Vec<_> = fs::read_dir(&channel.dir).unwrap().collect();
        assert_eq!(files.len(), 1, "no temp file left, one file per key");
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(channel.dir.join("k1.json")).unwrap()).unwrap();
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
        };
        let error = FileSpool::write(&channel, &delivery).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Io);
    }
}
