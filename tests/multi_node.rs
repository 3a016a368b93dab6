//! Several engine processes (the real `steadfast` binary) on one PostgreSQL
//! database: every job is delivered, and by one node only; a node killed
//! with `kill -9` loses nothing, its jobs finish on the others once its
//! leases expire. The database is a private server the test starts
//! (tests/common/postgres.rs); without server binaries the tests are skipped
//! outside CI.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const JOBS: usize = 5_000;

/// Each node names itself in a header, so the partner knows who sent what.
const POLICY: &str = r#"
templates:
  fast: { retries: 10, initial: 20ms, jitter: none }
channels:
  partner:
    http: { url: "${PARTNER}/in", timeout: 2s, headers: { X-Node: "${NODE}" } }
flows:
  shared:
    steps: [{ name: deliver, channel: partner, retry: fast }]
"#;

/// Short, so a killed node's jobs come back within the test's patience; far
/// above the partner's answer time and the channel timeout.
const LEASE: &str = "4s";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Engine {
    child: Child,
    base: String,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_engine(name: &str, policies: &std::path::Path, db: &str, partner: &str) -> Engine {
    spawn_node(name, policies, db, partner, &["--lease", LEASE])
}

/// A node for each of `names`, started by `spawn` and healthy.
async fn start_healthy(
    client: &reqwest::Client,
    names: &[&str],
    spawn: impl Fn(&str) -> Engine,
) -> Vec<Engine> {
    let engines: Vec<Engine> = names.iter().map(|name| spawn(name)).collect();
    for engine in &engines {
        wait_healthy(client, &engine.base, Duration::from_secs(30)).await;
    }
    engines
}

/// `steadfast run` as node `name`, with `extra` arguments.
fn spawn_node(
    name: &str,
    policies: &std::path::Path,
    db: &str,
    partner: &str,
    extra: &[&str],
) -> Engine {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["run", "--workers", "16"])
        .args(extra)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--policies")
        .arg(policies)
        .arg("--db")
        .arg(db)
        .env("PARTNER", partner)
        .env("NODE", name)
        .env("STEADFAST_NODE_ID", name)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the steadfast binary");
    Engine {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn submit_all(client: &reqwest::Client, engines: &[Engine]) {
    // Spread over the nodes, in batches of 500, as clients behind a load
    // balancer would.
    for (n, chunk) in (0..JOBS).collect::<Vec<_>>().chunks(500).enumerate() {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|n| json!({ "payload": { "n": n }, "idempotency_key": format!("job-{n}") }))
            .collect();
        let base = &engines[n % engines.len()].base;
        let url = format!("{base}/v1/flows/shared/jobs:batch");
        let answer = post_json(client, url, &batch).await;
        assert_eq!(answer["created"], chunk.len(), "{answer}");
    }
}

async fn wait_all_succeeded(client: &reqwest::Client, base: &str, within: Duration) {
    let every = Duration::from_millis(200);
    let what = format!("not all {JOBS} jobs succeeded");
    eventually(within, every, what, async || {
        let succeeded = count_in_state(client, base, "succeeded").await;
        if succeeded == JOBS {
            return Ok(());
        }
        let pending = count_in_state(client, base, "pending").await;
        let running = count_in_state(client, base, "running").await;
        Err(format!(
            "{succeeded} succeeded, {pending} pending, {running} running"
        ))
    })
    .await;
    for state in ["pending", "running", "suspended", "dead"] {
        assert_eq!(count_in_state(client, base, state).await, 0, "{state}");
    }
}

/// Which nodes delivered each key (in order of arrival).
fn senders(partner: &Partner) -> HashMap<String, Vec<String>> {
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for request in partner.requests() {
        by_key
            .entry(request.idempotency_key)
            .or_default()
            .push(request.node);
    }
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_job_once() {
    let Some(db) = postgres::fresh_database().await else {
        return;
    };
    let partner = Partner::start(|_| status(200)).await;
    let policies = policy_dir(&[("shared.yaml", POLICY)]);
    let client = common::http_client();
    let engines = start_healthy(&client, &["n1", "n2", "n3"], |name| {
        spawn_engine(name, policies.path(), &db, &partner.url)
    })
    .await;
    submit_all(&client, &engines).await;
    wait_all_succeeded(&client, &engines[0].base, Duration::from_secs(180)).await;

    let by_key = senders(&partner);
    assert_eq!(by_key.len(), JOBS, "every key reached the partner");
    let twice: Vec<_> = by_key.iter().filter(|(_, nodes)| nodes.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} keys were delivered more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for nodes in by_key.values() {
        *per_node.entry(nodes[0].as_str()).or_default() += 1;
    }
    eprintln!("deliveries per node: {per_node:?}");
    assert!(
        per_node.len() >= 2,
        "the work was shared between nodes: {per_node:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_jobs_finish_on_the_others() {
    let Some(db) = postgres::fresh_database().await else {
        return;
    };
    // Slow answers, so that the kill lands while the victim holds claims.
    let partner = Partner::start(|_| delayed(Duration::from_millis(5), status(200))).await;
    let policies = policy_dir(&[("shared.yaml", POLICY)]);
    let client = common::http_client();
    let mut engines = start_healthy(&client, &["n1", "n2", "n3"], |name| {
        spawn_engine(name, policies.path(), &db, &partner.url)
    })
    .await;
    submit_all(&client, &engines).await;

    // Polled often: the kill must come while most jobs are still waiting.
    let every = Duration::from_millis(5);
    let what = "deliveries never started on n3";
    eventually(Duration::from_secs(60), every, what, async || {
        let requests = partner.requests();
        let on_n3 = requests.iter().any(|r| r.node == "n3");
        if on_n3 && requests.len() >= JOBS / 5 {
            Ok(())
        } else {
            Err(format!(
                "{} requests, n3 among them: {on_n3}",
                requests.len()
            ))
        }
    })
    .await;
    let mut victim = engines.pop().unwrap();
    victim.child.kill().unwrap(); // SIGKILL: no shutdown, no lease release
    victim.child.wait().unwrap();
    let delivered_before = partner.requests().len();
    assert!(
        delivered_before < JOBS,
        "the kill came too late to test anything"
    );

    wait_all_succeeded(&client, &engines[0].base, Duration::from_secs(180)).await;
    let by_key = senders(&partner);
    assert_eq!(by_key.len(), JOBS, "no job lost");
    // At least once: a job n3 sent but did not record may go out again, from
    // a survivor, under the same key; nothing else is sent twice.
    for (key, nodes) in &by_key {
        if nodes.len() > 1 {
            assert_eq!(nodes[0], "n3", "{key} sent twice by {nodes:?}");
            assert!(!nodes[1..].contains(&"n3".to_string()), "{key}: {nodes:?}");
        }
    }
}

/// Waits until the partner holds `count` requests of node `node` in flight.
async fn wait_in_flight(partner: &Partner, node: &str, count: usize) {
    let what = format!("{node} never had {count} requests in flight");
    eventually(Duration::from_secs(30), POLL, what, async || {
        let seen = partner.requests().iter().filter(|r| r.node == node).count();
        if seen >= count {
            Ok(())
        } else {
            Err(format!("{seen} so far"))
        }
    })
    .await;
}

/// Waits until all `count` jobs succeeded; how long that took from `since`.
async fn all_succeeded(
    client: &reqwest::Client,
    base: &str,
    count: usize,
    since: std::time::Instant,
    within: Duration,
) -> Duration {
    let what = format!("not all {count} jobs succeeded");
    eventually(within, Duration::from_millis(50), what, async || {
        let succeeded = count_in_state(client, base, "succeeded").await;
        if succeeded == count {
            Ok(())
        } else {
            let running = count_in_state(client, base, "running").await;
            Err(format!("{succeeded} succeeded, {running} running"))
        }
    })
    .await;
    since.elapsed()
}

/// A node killed with `kill -9` while its attempts hang: its jobs are
/// back and delivered by another node within the node timeout (3 s here)
/// and a second or two, not after their 300 s lease; `GET /v1/nodes` shows
/// it dead, the survivor live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_jobs_are_back_within_the_node_timeout() {
    let Some(db) = postgres::fresh_database().await else {
        return;
    };
    // n2's requests hang; n1's are answered at once.
    let partner = Partner::start(|r| {
        if r.node == "n2" {
            delayed(Duration::from_secs(60), status(200))
        } else {
            status(200)
        }
    })
    .await;
    let hanging = POLICY.replace("timeout: 2s", "timeout: 120s");
    let policies = policy_dir(&[("shared.yaml", hanging.as_str())]);
    let client = common::http_client();
    let timeout = ["--node-timeout", "3s"];
    let mut victim = spawn_node("n2", policies.path(), &db, &partner.url, &timeout);
    wait_healthy(&client, &victim.base, Duration::from_secs(30)).await;
    // As many as its 16 workers hold in flight at once.
    submit_batch(&client, &victim, "few", 0..16).await;
    wait_in_flight(&partner, "n2", 16).await;
    victim.child.kill().unwrap(); // SIGKILL: no shutdown, no lease release
    victim.child.wait().unwrap();
    let killed = std::time::Instant::now();

    let survivor = spawn_node("n1", policies.path(), &db, &partner.url, &timeout);
    wait_healthy(&client, &survivor.base, Duration::from_secs(30)).await;
    let took = all_succeeded(&client, &survivor.base, 16, killed, Duration::from_secs(60)).await;
    eprintln!("the dead node's jobs were delivered {took:?} after the kill");
    // 3 s of silence (counted from its last heartbeat, up to 2 s before
    // the kill), a rescue each second, the delivery, and the survivor's own
    // start: far from the 300 s lease.
    assert!(took < Duration::from_secs(10), "{took:?}");

    let nodes: Value = get_json(&client, format!("{}/v1/nodes", survivor.base)).await;
    let state = |id: &str| {
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| (n["live"].as_bool().unwrap(), n["running"].as_u64().unwrap()))
    };
    assert_eq!(state("n1"), Some((true, 0)), "{nodes:#}");
    assert_eq!(state("n2"), Some((false, 0)), "{nodes:#}");
}

/// A node restarted under its id after `kill -9` takes its own unfinished
/// claims back at start: with a node timeout of a minute, its jobs are
/// delivered in seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_takes_its_own_claims_back_at_start() {
    let Some(db) = postgres::fresh_database().await else {
        return;
    };
    let hang = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let partner = {
        let hang = hang.clone();
        Partner::start(move |_| {
            if hang.load(std::sync::atomic::Ordering::SeqCst) {
                delayed(Duration::from_secs(60), status(200))
            } else {
                status(200)
            }
        })
        .await
    };
    let hanging = POLICY.replace("timeout: 2s", "timeout: 120s");
    let policies = policy_dir(&[("shared.yaml", hanging.as_str())]);
    let client = common::http_client();
    let timeout = ["--node-timeout", "60s"];
    let mut first = spawn_node("n1", policies.path(), &db, &partner.url, &timeout);
    wait_healthy(&client, &first.base, Duration::from_secs(30)).await;
    submit_batch(&client, &first, "few", 0..10).await;
    wait_in_flight(&partner, "n1", 10).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let killed = std::time::Instant::now();

    let again = spawn_node("n1", policies.path(), &db, &partner.url, &timeout);
    wait_healthy(&client, &again.base, Duration::from_secs(30)).await;
    let took = all_succeeded(&client, &again.base, 10, killed, Duration::from_secs(50)).await;
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// Two live processes cannot be one node: the second refuses to start
/// (exit 2) and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_node_with_the_same_id_refuses_to_start() {
    let Some(db) = postgres::fresh_database().await else {
        return;
    };
    let partner = Partner::start(|_| status(200)).await;
    let policies = policy_dir(&[("shared.yaml", POLICY)]);
    let client = common::http_client();
    let first = spawn_engine("n1", policies.path(), &db, &partner.url);
    wait_healthy(&client, &first.base, Duration::from_secs(30)).await;
    let second = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["run", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--policies")
        .arg(policies.path())
        .arg("--db")
        .arg(&db)
        .env("PARTNER", &partner.url)
        .env("NODE", "n1")
        .env("STEADFAST_NODE_ID", "n1")
        .output()
        .expect("run the steadfast binary");
    assert_eq!(second.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("node id `n1` is taken by a live node"),
        "{stderr}"
    );
    // The first is untouched.
    wait_healthy(&client, &first.base, Duration::from_secs(5)).await;
}

/// PostgreSQL restarted under load: meanwhile submissions answer 503 with
/// `Retry-After` and `/readyz` 503; the node reconnects by itself, writes
/// the results of the attempts that were in flight, and every job
/// acknowledged before, during or after the outage is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing_acknowledged() {
    let Some(server) = postgres::start_private() else {
        return;
    };
    let db = server.fresh_database().await;
    let partner = Partner::start(|_| delayed(Duration::from_millis(20), status(200))).await;
    let policies = policy_dir(&[("shared.yaml", POLICY)]);
    let client = common::http_client();
    let node = spawn_node("n1", policies.path(), &db, &partner.url, &[]);
    wait_healthy(&client, &node.base, Duration::from_secs(30)).await;
    let jobs = 1_500;
    submit_batch(&client, &node, "load", 0..jobs).await;
    wait_in_flight(&partner, "n1", 200).await;

    server.halt();
    let refused = client
        .post(format!("{}/v1/flows/shared/jobs", node.base))
        .json(&json!({ "payload": {}, "idempotency_key": "during" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "5");
    let ready = client
        .get(format!("{}/readyz", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let delivered_during = partner.requests().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.resume().unwrap();

    let what = "/readyz never answered 200 again";
    eventually(Duration::from_secs(30), POLL, what, async || {
        let ready = client.get(format!("{}/readyz", node.base)).send().await;
        match ready {
            Ok(answer) if answer.status() == 200 => Ok(()),
            Ok(answer) => Err(answer.status().to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    let after = client
        .post(format!("{}/v1/flows/shared/jobs", node.base))
        .json(&json!({ "payload": {}, "idempotency_key": "after" }))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 201);
    let since = std::time::Instant::now();
    all_succeeded(
        &client,
        &node.base,
        jobs + 1,
        since,
        Duration::from_secs(120),
    )
    .await;
    let by_key = senders(&partner);
    assert_eq!(by_key.len(), jobs + 1, "every acknowledged job delivered");
    assert!(
        !by_key.contains_key("during"),
        "the refused one was not stored"
    );
    assert!(delivered_during < jobs, "the outage came while delivering");
}

/// `rate: 20/s` is the cluster's: three nodes together send the partner
/// about 20 a second, not 60, each taking its share as it counts the live
/// nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_the_whole_cluster() {
    let Some(db) = postgres::fresh_database().await else {
        return;
    };
    let partner = Partner::start(|_| status(200)).await;
    let limited = POLICY.replace("    http: { url:", "    rate: 20/s\n    http: { url:");
    let policies = policy_dir(&[("shared.yaml", limited.as_str())]);
    let client = common::http_client();
    let engines = start_healthy(&client, &["n1", "n2", "n3"], |name| {
        spawn_node(name, policies.path(), &db, &partner.url, &[])
    })
    .await;
    // Every node has counted the others (a heartbeat every 2 s).
    let what = "the nodes never saw each other";
    eventually(Duration::from_secs(15), POLL, what, async || {
        let nodes: Value = client
            .get(format!("{}/v1/nodes", engines[0].base))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let live = nodes["nodes"]
            .as_array()
            .map_or(0, |n| n.iter().filter(|n| n["live"] == true).count());
        let channel: Value = client
            .get(format!("{}/v1/channels/partner", engines[2].base))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if live == 3 && channel["rate"]["nodes"] == 3 {
            Ok(())
        } else {
            Err(format!("{live} live; {}", channel["rate"]))
        }
    })
    .await;
    // Let every node's share settle before the load.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = 240;
    let started = std::time::Instant::now();
    submit_batch(&client, &engines[0], "rate", 0..jobs).await;
    all_succeeded(
        &client,
        &engines[0].base,
        jobs,
        started,
        Duration::from_secs(60),
    )
    .await;

    let mut at: Vec<Duration> = partner
        .requests()
        .iter()
        .map(|r| r.at.saturating_duration_since(started))
        .collect();
    at.sort();
    let span = at.last().copied().unwrap_or_default();
    // The nodes' bursts (6 each) come first; then 20 a second at most.
    let busiest = at
        .iter()
        .enumerate()
        .map(|(i, &from)| {
            at[i..]
                .iter()
                .take_while(|&&t| t < from + Duration::from_secs(1))
                .count()
        })
        .skip(18)
        .max()
        .unwrap_or(0);
    eprintln!("{jobs} jobs over {span:?}; busiest second (bursts aside): {busiest}");
    assert!(busiest <= 24, "{busiest} requests in one second");
    assert!(
        span >= Duration::from_secs(9),
        "{jobs} jobs in {span:?}: more than 20 a second"
    );
}

/// A breaker opened on one node is open on every node: the partner's
/// primary endpoint fails only for n1, yet once n1's breaker opens, n2 and
/// n3 send nothing more to it and deliver by the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_by_one_node_routes_every_nodes_jobs_to_the_fallback() {
    let Some(db) = postgres::fresh_database().await else {
        return;
    };
    let partner = Partner::start(|r| {
        if r.path == "/in" && r.node == "n1" {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    const BREAKER_POLICY: &str = r#"
templates:
  once: { retries: 1, initial: 20ms, jitter: none }
channels:
  partner:
    circuit_breaker: { failures: 2, cooldown: 120s }
    http: { url: "${PARTNER}/in", timeout: 2s, headers: { X-Node: "${NODE}" } }
  backup:
    http: { url: "${PARTNER}/backup", timeout: 2s, headers: { X-Node: "${NODE}" } }
flows:
  shared:
    steps: [{ name: deliver, channel: partner, retry: once, fallback: [backup] }]
"#;
    let policies = policy_dir(&[("shared.yaml", BREAKER_POLICY)]);
    let client = common::http_client();
    let engines = start_healthy(&client, &["n1", "n2", "n3"], |name| {
        spawn_node(name, policies.path(), &db, &partner.url, &[])
    })
    .await;
    let breaker = async |engine: &Engine| -> Value {
        let channel: Value =
            get_json(&client, format!("{}/v1/channels/partner", engine.base)).await;
        channel["breaker"].clone()
    };
    // Jobs until n1 has failed twice and opened its breaker.
    let mut submitted = 0;
    let what = "n1's breaker never opened";
    eventually(Duration::from_secs(30), POLL, what, async || {
        submit_batch(&client, &engines[0], "b", submitted..submitted + 10).await;
        submitted += 10;
        let state = breaker(&engines[0]).await["state"].clone();
        if state == "open" {
            Ok(())
        } else {
            Err(state.to_string())
        }
    })
    .await;
    let opened = std::time::Instant::now();
    for engine in &engines[1..] {
        let what = "another node's breaker stayed closed";
        eventually(Duration::from_secs(5), POLL, what, async || {
            let b = breaker(engine).await;
            if b["state"] == "open" {
                Ok(())
            } else {
                Err(b.to_string())
            }
        })
        .await;
        let b = breaker(engine).await;
        assert!(
            b["reason"]
                .as_str()
                .is_some_and(|r| r.contains("opened on node n1")),
            "{b}"
        );
    }
    let took = opened.elapsed();
    eprintln!("every node's breaker open {took:?} after n1's");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // From now on no node sends to the primary: everything goes to backup.
    let to_primary = partner.requests_to("/in").len();
    for engine in &engines {
        submit_batch(&client, engine, "b", submitted..submitted + 30).await;
        submitted += 30;
    }
    let since = std::time::Instant::now();
    all_succeeded(
        &client,
        &engines[1].base,
        submitted,
        since,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        partner.requests_to("/in").len(),
        to_primary,
        "a node sent to the primary behind an open breaker"
    );
    assert!(partner.requests_to("/backup").len() >= 90);
}

/// Jobs `keys` (keys `{prefix}-{n}`) submitted to `engine` in one batch.
async fn submit_batch(
    client: &reqwest::Client,
    engine: &Engine,
    prefix: &str,
    keys: std::ops::Range<usize>,
) {
    let batch: Vec<Value> = keys
        .map(|n| json!({ "payload": { "n": n }, "idempotency_key": format!("{prefix}-{n}") }))
        .collect();
    let answer = client
        .post(format!("{}/v1/flows/shared/jobs:batch", engine.base))
        .json(&batch)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        answer.text().await.unwrap()
    );
}

/// Waits until `count` jobs are in `state`.
async fn wait_in_state(
    client: &reqwest::Client,
    base: &str,
    state: &str,
    count: usize,
    within: Duration,
) {
    let what = format!("never {count} jobs {state}");
    eventually(within, Duration::from_millis(200), what, async || {
        let seen = count_in_state(client, base, state).await;
        if seen == count {
            Ok(())
        } else {
            Err(format!("{seen} {state}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_on_one_node_holds_the_flow_on_every_node_until_resumed_on_another() {
    let Some(db) = postgres::fresh_database().await else {
        return;
    };
    let partner = Partner::start(|_| status(200)).await;
    let policies = policy_dir(&[("shared.yaml", POLICY)]);
    let client = common::http_client();
    let engines = start_healthy(&client, &["p1", "p2"], |name| {
        spawn_engine(name, policies.path(), &db, &partner.url)
    })
    .await;
    let paused: Value = post_empty(
        &client,
        format!("{}/v1/flows/shared/pause", engines[0].base),
    )
    .await;
    assert_eq!(paused["paused"], true, "{paused}");
    // Every node reads the paused flows once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Jobs submitted through either node wait, suspended `paused`, with
    // nothing sent.
    let mut ids = Vec::new();
    for (n, engine) in engines.iter().enumerate() {
        for k in 0..20 {
            let job =
                json!({ "payload": { "n": k }, "idempotency_key": format!("paused-{n}-{k}") });
            let url = format!("{}/v1/flows/shared/jobs", engine.base);
            let answer = post_json(&client, url, &job).await;
            ids.push(answer["id"].as_str().expect("created").to_string());
        }
    }
    let base = engines[1].base.clone();
    wait_in_state(
        &client,
        &base,
        "suspended",
        ids.len(),
        Duration::from_secs(10),
    )
    .await;
    assert!(partner.requests().is_empty(), "nothing sent while paused");
    let job: Value = get_json(&client, format!("{base}/v1/jobs/{}", ids[0])).await;
    assert_eq!(job["reason"], "paused", "{job}");
    assert_eq!(job["attempts"], json!([]), "nothing burnt");

    // Resumed through the other node: delivered, each once.
    let resumed: Value = post_empty(&client, format!("{base}/v1/flows/shared/resume")).await;
    assert_eq!(resumed["resumed"], 40, "{resumed}");
    wait_in_state(
        &client,
        &base,
        "succeeded",
        ids.len(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(partner.requests().len(), ids.len(), "each sent once");
}
