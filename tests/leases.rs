//! Leases end to end: a node claims jobs ahead of its workers, and those
//! wait in memory for a worker. When one waits so long that its lease runs
//! out, it is rescued and claimed again; it must still reach the partner
//! once. The real engine on a real SQLite file against a real HTTP partner on
//! loopback, with a manual clock so that the lease runs out exactly when the
//! test says.

mod common;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use serde_json::{json, Value};
use steadfast::clock::ManualClock;
use steadfast::engine::SchedulerConfig;

const POLICY: &str = r#"
channels:
  partner: { http: { url: "${PARTNER}/leads", timeout: 10s } }

flows:
  leads:
    steps:
      - name: deliver
        channel: partner
        retry: standard
"#;

const LEASE: Duration = Duration::from_secs(60);

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let what = format!("never {what}");
    eventually(Duration::from_secs(30), POLL, what, async || {
        done().await.then_some(()).ok_or("still waiting")
    })
    .await
}

/// A node with one worker and a lease of `LEASE`, on `clock` and a fresh
/// SQLite file, delivering `leads` to `partner`.
async fn one_worker_node(partner: &Partner, clock: &ManualClock) -> TestNode {
    let policies = policy_dir(&[("leads.yaml", POLICY)]);
    TestNode::start_clocked(
        policies.path(),
        &[("PARTNER", &partner.url)],
        clock.clone(),
        SchedulerConfig {
            workers: 1,
            lease: LEASE,
            ..SchedulerConfig::default()
        },
    )
    .await
}

/// Submits the job keyed `first` and waits until its attempt reached the
/// partner; returns its id.
async fn start_first_attempt(node: &TestNode, partner: &Partner) -> String {
    let first = node
        .submit_ok("leads", json!({ "lead": 1 }), Some("first"))
        .await;
    wait_until("sent the first job", async || {
        !partner.requests().is_empty()
    })
    .await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lease_ran_out_while_it_waited_for_a_worker_is_delivered_once() {
    let start: Timestamp = "2026-05-11T10:00:00Z".parse().expect("instant");
    let clock = ManualClock::new(start);
    // The first job's first attempt holds the only worker for two seconds of
    // real time, long enough for the test to move the engine's clock past
    // every lease taken so far.
    let partner = Partner::start(|r| {
        if r.idempotency_key == "first" && r.attempt == 1 {
            delayed(Duration::from_secs(2), status(200))
        } else {
            status(200)
        }
    })
    .await;
    // One worker: the second job waits in memory behind the first.
    let node = one_worker_node(&partner, &clock).await;
    let first = start_first_attempt(&node, &partner).await;
    let second = node
        .submit_ok("leads", json!({ "lead": 2 }), Some("second"))
        .await;
    // Claimed ahead: leased to this node, waiting for the worker.
    wait_until("claimed the second job", async || {
        node.job(&second).await["state"] == "running"
    })
    .await;
    assert_eq!(partner.requests().len(), 1);

    // Both leases run out: the engine rescues both jobs and claims them
    // again, while the first attempt is still in flight.
    clock.advance(LEASE + Duration::from_secs(10));

    let done = |job: &Value| job["state"] == "succeeded";
    wait_until("delivered both jobs", async || {
        done(&node.job(&first).await) && done(&node.job(&second).await)
    })
    .await;
    let second_sent = partner
        .requests()
        .iter()
        .filter(|r| r.idempotency_key == "second")
        .count();
    assert_eq!(
        second_sent, 1,
        "the job that waited past its lease reached the partner {second_sent} times"
    );
    let job = node.job(&second).await;
    assert_eq!(job["attempts_total"], 1, "{job:#}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_the_jobs_claimed_ahead_without_attempting_them() {
    let start: Timestamp = "2026-05-11T10:00:00Z".parse().expect("instant");
    let clock = ManualClock::new(start);
    // The first attempt holds the only worker while the node stops.
    let partner = Partner::start(|r| {
        if r.idempotency_key == "first" {
            delayed(Duration::from_millis(800), status(200))
        } else {
            status(200)
        }
    })
    .await;
    let node = one_worker_node(&partner, &clock).await;
    let db = node.db_dir.path().join("steadfast.db");
    let first = start_first_attempt(&node, &partner).await;
    let mut waiting = Vec::new();
    for n in 2..=4 {
        let key = format!("lead-{n}");
        waiting.push(
            node.submit_ok("leads", json!({ "lead": n }), Some(&key))
                .await,
        );
    }
    for id in &waiting {
        wait_until("claimed the jobs behind the first", async || {
            node.job(id).await["state"] == "running"
        })
        .await;
    }

    // Stopped, with the log's directory kept to read it afterwards.
    let TestNode { node, db_dir, .. } = node;
    node.shutdown().await;

    assert_eq!(
        partner.requests().len(),
        1,
        "only the attempt in flight reached the partner"
    );
    let log = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("the step log opens");
    let (state, attempts): (String, i64) =
        sqlx::query_as("SELECT state, attempts_total FROM jobs WHERE id = ?")
            .bind(&first)
            .fetch_one(&log)
            .await
            .expect("the first job");
    assert_eq!((state.as_str(), attempts), ("succeeded", 1));
    for id in &waiting {
        let (state, attempts, owner): (String, i64, Option<String>) =
            sqlx::query_as("SELECT state, attempts_total, lease_owner FROM jobs WHERE id = ?")
                .bind(id)
                .fetch_one(&log)
                .await
                .expect("a waiting job");
        assert_eq!(
            (state.as_str(), attempts, owner),
            ("pending", 0, None),
            "job {id} was handed back as it was"
        );
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE job_id = ?")
            .bind(id)
            .fetch_one(&log)
            .await
            .expect("attempts");
        assert_eq!(rows, 0, "job {id} has no attempt recorded");
    }
    drop(db_dir);
}
