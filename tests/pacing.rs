//! Pacing that adapts, end to end: the real engine on a real SQLite file
//! against partners on loopback. `quick_retry` tries again within one
//! attempt when a connection drops, and records how many times.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A partner that drops (resets) its first `drops` connections after
/// reading the request, then answers `200` to every request; counts the
/// connections it saw.
struct Dropping {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl Dropping {
    async fn start(drops: usize) -> Dropping {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let n = seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    let _ = socket.read(&mut buffer).await;
                    if n < drops {
                        // An RST, as a crashed or overloaded server sends.
                        let _ = socket.set_zero_linger();
                        drop(socket);
                        return;
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Dropping { url, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn policy(quick: &str) -> String {
    format!(
        r#"
templates:
  two: {{ retries: 1, initial: 10ms, jitter: none }}
channels:
  partner:
    http: {{ url: "${{PARTNER}}/in" }}
    {quick}
flows:
  send:
    steps: [ {{ name: deliver, channel: partner, retry: two }} ]
"#
    )
}

async fn run(quick: &str, drops: usize) -> (Value, Dropping) {
    let partner = Dropping::start(drops).await;
    let policies = policy_dir(&[("p.yaml", &policy(quick))]);
    let node = TestNode::start(policies.path(), &[("PARTNER", partner.url.as_str())]).await;
    let id = node.submit_ok("send", json!({"n": 1}), None).await;
    let job = node.wait_final(&id).await;
    node.shutdown().await;
    (job, partner)
}

#[tokio::test]
async fn a_dropped_connection_is_tried_again_within_the_attempt() {
    let (job, partner) = run(
        "quick_retry: { attempts: 2, delay: 10ms, on: [connect, reset] }",
        2,
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "no durable retry spent: {job:#}");
    assert_eq!(attempts[0]["status"], 200);
    assert_eq!(attempts[0]["quick_tries"], 2);
    assert_eq!(partner.connections(), 3);
}

#[tokio::test]
async fn quick_tries_run_out_and_the_durable_retry_takes_over() {
    let (job, partner) = run("quick_retry: { attempts: 1, delay: 10ms, on: reset }", 3).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert_eq!(attempts[0]["error"], "reset");
    assert_eq!(attempts[0]["quick_tries"], 1);
    assert_eq!(attempts[0]["outcome"], "retry");
    // The second attempt: one more drop, then the answer.
    assert_eq!(attempts[1]["status"], 200);
    assert_eq!(attempts[1]["quick_tries"], 1);
    assert_eq!(partner.connections(), 4);
}

#[tokio::test]
async fn kinds_not_named_and_channels_without_quick_retry_get_no_quick_try() {
    // `on: [connect]` does not cover a reset.
    let (job, partner) = run("quick_retry: { attempts: 3, on: [connect] }", 1).await;
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["error"], "reset", "{job:#}");
    assert_eq!(attempts[0]["quick_tries"], 0);
    assert_eq!(partner.connections(), 2, "one per durable attempt");

    let (job, _) = run("", 1).await;
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert_eq!(attempts[0]["quick_tries"], 0);
}
