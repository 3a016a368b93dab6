//! The step log's contract, one conformance suite run against every
//! implementation: a real SQLite file and a real PostgreSQL database (a
//! private server the tests start; see tests/common/postgres.rs). Idempotent
//! inserts, claims (also concurrent ones), guarded transitions, leases,
//! paging, operator updates.

#[path = "common/postgres.rs"]
mod pg;

use jiff::{SignedDuration, Timestamp};
use steadfast::store::{
    self, AttemptRecord, Decision, InsertOutcome, JobFilter, JobRecord, JobState, JobUpdate,
    Membership, NewJob, Outcome, Reason, SharedStepLog, Transition,
};

struct Db {
    log: SharedStepLog,
    _dir: Option<tempfile::TempDir>,
}

async fn open_sqlite() -> Option<Db> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    Some(Db {
        log: store::open(&url).await.unwrap(),
        _dir: Some(dir),
    })
}

/// A fresh database on the binary's PostgreSQL server; `None` when the
/// server binaries are missing (outside CI).
async fn open_postgres() -> Option<Db> {
    let url = pg::fresh_database().await?;
    Some(Db {
        log: store::open(&url).await.unwrap(),
        _dir: None,
    })
}

/// Runs every case against each store: `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = super::open_sqlite().await.unwrap();
                    super::$case(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = super::open_postgres().await else { return };
                    super::$case(db).await;
                }
            )*
        }
    };
}

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn new_job(n: u32, next_at: Timestamp) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        flow: "leads".into(),
        idempotency_key: format!("key-{n}"),
        payload: format!(r#"{{"n":{n}}}"#),
        step: "deliver".into(),
        created_at: t(0),
        next_at,
        policy_version: "v1".into(),
        traceparent: None,
        priority: 0,
    }
}

/// A job of `flow` rather than `leads`.
async fn insert_into(db: &Db, flow: &str, n: u32, next_at: Timestamp) -> JobRecord {
    let job = NewJob {
        flow: flow.into(),
        ..new_job(n, next_at)
    };
    match db.log.job_insert(job).await.unwrap() {
        InsertOutcome::Created(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

async fn insert(db: &Db, n: u32, next_at: Timestamp) -> JobRecord {
    match db.log.job_insert(new_job(n, next_at)).await.unwrap() {
        InsertOutcome::Created(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

fn attempt_of(job: &JobRecord, at: Timestamp, decision: Decision) -> AttemptRecord {
    AttemptRecord {
        job_id: job.id.clone(),
        step: job.step.clone(),
        channel: "api".into(),
        attempt: job.attempt + 1,
        started_at: at,
        finished_at: at,
        status: Some(503),
        error: None,
        error_message: None,
        outcome: Outcome::Retry,
        rule: Some("builtin[1]".into()),
        decision,
        delay_ms: Some(2000),
        next_at: Some(at + SignedDuration::from_secs(2)),
        policy_version: "v1".into(),
        member: None,
        quick_tries: 0,
    }
}

fn retry_later(job: &JobRecord, owner: &str, at: Timestamp) -> Transition {
    Transition {
        job_id: job.id.clone(),
        owner: owner.into(),
        lease_until: job.lease_until,
        attempt: Some(attempt_of(job, at, Decision::Retry)),
        to: JobState::Pending,
        step_index: 0,
        step: job.step.clone(),
        channel_index: 0,
        series_attempts: job.attempt + 1,
        series_started_at: Some(at),
        held_ms: 0,
        next_at: Some(at + SignedDuration::from_secs(2)),
        reason: None,
        policy_version: "v1".into(),
        attempts_added: 1,
        slowed_added: 0,
        notify_at: None,
        responses: None,
        branches: None,
        branch_attempts: Vec::new(),
        now: at,
    }
}

fn die(job: &JobRecord, owner: &str, at: Timestamp, notify: bool) -> Transition {
    Transition {
        to: JobState::Dead,
        next_at: None,
        reason: Some(Reason::Permanent),
        notify_at: notify.then_some(at),
        ..retry_later(job, owner, at)
    }
}

async fn insert_is_idempotent_on_flow_and_key(db: Db) {
    let first = insert(&db, 1, t(0)).await;

    let mut same = new_job(1, t(5));
    same.payload = r#"{ "n": 1 }"#.into(); // same JSON, other spacing
    match db.log.job_insert(same).await.unwrap() {
        InsertOutcome::Existing(job) => assert_eq!(job.id, first.id),
        other => panic!("{other:?}"),
    }
    let mut other_payload = new_job(1, t(5));
    other_payload.payload = r#"{"n":2}"#.into();
    match db.log.job_insert(other_payload).await.unwrap() {
        InsertOutcome::Conflict(job) => assert_eq!(job.payload, r#"{"n":1}"#),
        other => panic!("{other:?}"),
    }
    let mut other_flow = new_job(1, t(5));
    other_flow.flow = "orders".into();
    assert!(matches!(
        db.log.job_insert(other_flow).await.unwrap(),
        InsertOutcome::Created(_)
    ));
}

async fn a_batch_reports_each_item_in_order(db: Db) {
    insert(&db, 1, t(0)).await;
    let mut conflicting = new_job(1, t(0));
    conflicting.payload = r#"{"n":"changed"}"#.into();
    let outcomes = db
        .log
        .jobs_insert_batch(vec![new_job(2, t(0)), new_job(1, t(0)), conflicting])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], InsertOutcome::Created(_)));
    assert!(matches!(outcomes[1], InsertOutcome::Existing(_)));
    assert!(matches!(outcomes[2], InsertOutcome::Conflict(_)));
}

/// Single submissions at once, as webhooks arrive: the store may commit
/// them together (group commit), but each gets the answer for its own
/// job, and a key is still created once.
async fn concurrent_single_submissions_each_get_their_own_answer(db: Db) {
    let log = db.log.clone();
    let mut tasks = Vec::new();
    for n in 0..200u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let job = new_job(n, t(0));
            let (id, key, payload) = (
                job.id.clone(),
                job.idempotency_key.clone(),
                job.payload.clone(),
            );
            match log.job_insert(job).await.unwrap() {
                InsertOutcome::Created(record) => {
                    assert_eq!(
                        (record.id, record.idempotency_key, record.payload),
                        (id, key, payload)
                    );
                    "unique"
                }
                other => panic!("{other:?}"),
            }
        }));
    }
    for n in 0..50u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut job = new_job(1_000 + n, t(0));
            job.idempotency_key = "dup".into();
            job.payload = r#"{"same":true}"#.into();
            match log.job_insert(job).await.unwrap() {
                InsertOutcome::Created(_) => "dup created",
                InsertOutcome::Existing(_) => "dup existing",
                other => panic!("{other:?}"),
            }
        }));
    }
    for n in 0..20u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut job = new_job(2_000 + n, t(0));
            job.idempotency_key = "clash".into();
            job.payload = format!(r#"{{"v":{n}}}"#);
            match log.job_insert(job).await.unwrap() {
                InsertOutcome::Created(_) => "clash created",
                InsertOutcome::Conflict(_) => "clash conflict",
                other => panic!("{other:?}"),
            }
        }));
    }
    let mut seen = std::collections::BTreeMap::new();
    for task in tasks {
        *seen.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        seen,
        [
            ("clash conflict", 19),
            ("clash created", 1),
            ("dup created", 1),
            ("dup existing", 49),
            ("unique", 200),
        ]
        .into_iter()
        .collect()
    );
    let counts = log.jobs_count_by_state().await.unwrap();
    assert_eq!(counts.get(&JobState::Pending), Some(&202), "{counts:?}");
}

/// A request the database refuses (PostgreSQL text cannot hold NUL) fails
/// alone, not the submissions that happened to share its commit.
async fn one_refused_submission_does_not_fail_the_others(db: Db) {
    let log = db.log.clone();
    let mut good = Vec::new();
    for n in 0..60u32 {
        let log = log.clone();
        good.push(tokio::spawn(async move {
            log.job_insert(new_job(n, t(0))).await
        }));
    }
    let mut bad = new_job(999, t(0));
    bad.idempotency_key = "nul\u{0}key".into();
    let bad = tokio::spawn({
        let log = log.clone();
        async move { log.job_insert(bad).await }
    });
    for task in good {
        assert!(matches!(task.await.unwrap(), Ok(InsertOutcome::Created(_))));
    }
    // SQLite stores it; PostgreSQL refuses it: either way, alone.
    let _ = bad.await.unwrap();
}

async fn claims_take_due_jobs_earliest_first_and_only_once(db: Db) {
    let late = insert(&db, 1, t(30)).await;
    let early = insert(&db, 2, t(10)).await;
    let future = insert(&db, 3, t(100)).await;

    let claimed = db.log.jobs_claim_due("a", t(50), t(350), 10).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [early.id.as_str(), late.id.as_str()]);
    assert!(claimed
        .iter()
        .all(|j| j.state == JobState::Running && j.lease_owner.as_deref() == Some("a")));

    // Another node sees nothing more until the future job is due.
    assert!(db
        .log
        .jobs_claim_due("b", t(50), t(350), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(db.log.next_due_at().await.unwrap(), Some(t(100)));
    let claimed = db
        .log
        .jobs_claim_due("b", t(100), t(400), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, future.id);
}

async fn claims_respect_the_limit(db: Db) {
    for n in 0..5 {
        insert(&db, n, t(n as i64)).await;
    }
    assert_eq!(
        db.log
            .jobs_claim_due("a", t(10), t(310), 3)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        db.log
            .jobs_claim_due("a", t(10), t(310), 0)
            .await
            .unwrap()
            .len(),
        0
    );
}

async fn a_backlog_in_one_flow_does_not_starve_another(db: Db) {
    for n in 0..50 {
        insert(&db, n, t(n as i64)).await;
    }
    let mut newcomer = new_job(1000, t(60));
    newcomer.flow = "orders".into();
    db.log.job_insert(newcomer).await.unwrap();

    // One round of 10 at t(100): the orders job is due last of all 51, yet
    // it is in the round.
    let round = db
        .log
        .jobs_claim_due("a", t(100), t(400), 10)
        .await
        .unwrap();
    assert_eq!(round.len(), 10);
    assert_eq!(round.iter().filter(|j| j.flow == "orders").count(), 1);
    // The leads taken are still the earliest of their flow.
    let leads: Vec<u32> = round
        .iter()
        .filter(|j| j.flow == "leads")
        .map(|j| j.idempotency_key[4..].parse().unwrap())
        .collect();
    assert_eq!(leads, (0..9).collect::<Vec<u32>>());

    // With one flow left, it gets the whole round.
    let round = db
        .log
        .jobs_claim_due("a", t(100), t(400), 10)
        .await
        .unwrap();
    assert_eq!(round.len(), 10);
    assert!(round.iter().all(|j| j.flow == "leads"));
}

async fn insert_with_priority(db: &Db, flow: &str, n: u32, next_at: Timestamp, priority: i32) {
    let job = NewJob {
        flow: flow.into(),
        priority,
        ..new_job(n, next_at)
    };
    assert!(matches!(
        db.log.job_insert(job).await.unwrap(),
        InsertOutcome::Created(job) if job.priority == priority
    ));
}

fn keys(round: &[JobRecord], flow: &str) -> Vec<u32> {
    let mut keys: Vec<u32> = round
        .iter()
        .filter(|j| j.flow == flow)
        .map(|j| j.idempotency_key[4..].parse().unwrap())
        .collect();
    keys.sort();
    keys
}

async fn higher_priority_jobs_of_a_flow_are_claimed_first_and_flows_stay_fair(db: Db) {
    // A backlog in `leads`: 20 jobs at priority 0 waiting longest, 5 at
    // priority 10 submitted later, 3 at -5 waiting longest of all; and a
    // backlog of 20 in `orders` at priority 0.
    for n in 0..20 {
        insert_with_priority(&db, "leads", n, t(n as i64), 0).await;
        insert_with_priority(&db, "orders", 100 + n, t(n as i64), 0).await;
    }
    for n in 20..25 {
        insert_with_priority(&db, "leads", n, t(50 + n as i64), 10).await;
    }
    for n in 25..28 {
        insert_with_priority(&db, "leads", n, t(0), -5).await;
    }
    // A future job at the highest priority is not due.
    insert_with_priority(&db, "leads", 99, t(1000), 100).await;

    let round = db
        .log
        .jobs_claim_due("a", t(100), t(400), 10)
        .await
        .unwrap();
    // Each flow keeps its share of the round, whatever the priorities.
    assert_eq!(keys(&round, "leads"), [20, 21, 22, 23, 24]);
    assert_eq!(keys(&round, "orders"), [100, 101, 102, 103, 104]);
    // Within the round, higher priority comes first.
    assert!(round
        .windows(2)
        .all(|pair| pair[0].priority >= pair[1].priority));

    let round = db
        .log
        .jobs_claim_due("a", t(100), t(400), 10)
        .await
        .unwrap();
    assert_eq!(keys(&round, "leads"), [0, 1, 2, 3, 4]);

    // The lowest priority waits until the higher ones are claimed.
    let rest = db
        .log
        .jobs_claim_due("a", t(100), t(400), 100)
        .await
        .unwrap();
    assert_eq!(
        keys(&rest, "leads"),
        (5..20).chain(25..28).collect::<Vec<u32>>()
    );
    assert_eq!(
        db.log.next_due_at().await.unwrap(),
        Some(t(1000)),
        "the future job is next"
    );
}

async fn a_steps_kept_response_survives_later_moves(db: Db) {
    insert(&db, 1, t(0)).await;
    let job = db.log.jobs_claim_due("a", t(1), t(301), 1).await.unwrap()[0].clone();
    assert_eq!(job.responses, None);
    let kept = r#"{"score":{"status":200,"headers":{},"body":"{\"score\":72}"}}"#;
    let next_step = Transition {
        to: JobState::Pending,
        step_index: 1,
        step: "confirm".into(),
        series_attempts: 0,
        next_at: Some(t(2)),
        responses: Some(kept.into()),
        ..retry_later(&job, "a", t(2))
    };
    assert_eq!(
        db.log.transitions_apply(vec![next_step]).await.unwrap(),
        [true]
    );
    let job = db.log.jobs_claim_due("a", t(3), t(303), 1).await.unwrap()[0].clone();
    assert_eq!(job.responses.as_deref(), Some(kept));
    // A move that adds none keeps what is there.
    db.log
        .transitions_apply(vec![retry_later(&job, "a", t(4))])
        .await
        .unwrap();
    let job = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(job.responses.as_deref(), Some(kept));
}

async fn a_parallel_steps_branch_attempts_and_branches_are_recorded_together(db: Db) {
    insert(&db, 1, t(0)).await;
    let job = db.log.jobs_claim_due("a", t(1), t(301), 1).await.unwrap()[0].clone();
    let branch = |channel: &str| AttemptRecord {
        channel: channel.into(),
        // A quick try within the attempt is kept with it.
        quick_tries: u32::from(channel == "a") * 2,
        ..attempt_of(&job, t(2), Decision::Retry)
    };
    let branches = r#"{"announce":{"a":{"state":"pending","attempts":1},"b":{"state":"succeeded","attempts":1}}}"#;
    let waiting = Transition {
        attempt: None,
        branch_attempts: vec![branch("a"), branch("b")],
        attempts_added: 2,
        branches: Some(branches.into()),
        ..retry_later(&job, "a", t(2))
    };
    assert_eq!(
        db.log.transitions_apply(vec![waiting]).await.unwrap(),
        [true]
    );
    let attempts = db.log.attempts_list(&job.id).await.unwrap();
    let channels: Vec<&str> = attempts.iter().map(|a| a.channel.as_str()).collect();
    assert_eq!(channels, ["a", "b"]);
    assert_eq!(
        attempts[0],
        branch("a"),
        "each attempt reads back as written"
    );
    let stored = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(stored.branches.as_deref(), Some(branches));
    assert_eq!(stored.attempts_total, 2);
    // A transition that did not apply records none of them.
    let stale = Transition {
        attempt: None,
        branch_attempts: vec![branch("a")],
        ..retry_later(&job, "b", t(3))
    };
    assert_eq!(
        db.log.transitions_apply(vec![stale]).await.unwrap(),
        [false]
    );
    assert_eq!(db.log.attempts_list(&job.id).await.unwrap().len(), 2);
}

async fn a_transition_applies_only_under_the_owners_lease(db: Db) {
    insert(&db, 1, t(0)).await;
    let job = db.log.jobs_claim_due("a", t(1), t(301), 1).await.unwrap()[0].clone();

    let stale = retry_later(&job, "b", t(2));
    assert_eq!(
        db.log.transitions_apply(vec![stale]).await.unwrap(),
        [false]
    );
    assert!(db.log.attempts_list(&job.id).await.unwrap().is_empty());

    let mine = retry_later(&job, "a", t(2));
    assert_eq!(
        db.log.transitions_apply(vec![mine.clone()]).await.unwrap(),
        [true]
    );
    // Applying it again (a duplicate commit) moves nothing.
    assert_eq!(db.log.transitions_apply(vec![mine]).await.unwrap(), [false]);
    // Nor does a batch that carries the same job twice move it twice.
    let again = db.log.jobs_claim_due("a", t(10), t(310), 1).await.unwrap()[0].clone();
    let twice = vec![
        retry_later(&again, "a", t(11)),
        retry_later(&again, "a", t(12)),
    ];
    assert_eq!(
        db.log.transitions_apply(twice).await.unwrap(),
        [true, false]
    );
    assert_eq!(db.log.attempts_list(&job.id).await.unwrap().len(), 2);

    let stored = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Pending);
    assert_eq!(stored.attempt, 2);
    assert_eq!(stored.attempts_total, 2);
    assert_eq!(stored.next_at, Some(t(13)));
    assert_eq!(stored.lease_owner, None);
    assert_eq!(stored.lease_until, None);
    let attempts = db.log.attempts_list(&job.id).await.unwrap();
    assert_eq!(attempts[0].status, Some(503));
    assert_eq!(attempts[0].next_at, Some(t(4)));
    assert_eq!(attempts[1].started_at, t(11));
}

/// A node holds claimed jobs in memory until a worker is free; if one waits
/// past its lease, it is rescued and may be claimed again by the same node.
/// The older claim's result must not land over the newer claim.
async fn a_result_under_an_expired_lease_does_not_apply_over_a_new_claim(db: Db) {
    insert(&db, 1, t(0)).await;
    let first = db.log.jobs_claim_due("a", t(1), t(10), 1).await.unwrap()[0].clone();
    assert_eq!(db.log.leases_rescue(t(11), t(11)).await.unwrap(), 1);
    let second = db.log.jobs_claim_due("a", t(12), t(400), 1).await.unwrap()[0].clone();
    assert_eq!(second.id, first.id);

    assert_eq!(
        db.log
            .transitions_apply(vec![retry_later(&first, "a", t(13))])
            .await
            .unwrap(),
        [false]
    );
    let stored = db.log.job_get(&first.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Running);
    assert_eq!(stored.lease_until, Some(t(400)));
    assert!(db.log.attempts_list(&first.id).await.unwrap().is_empty());

    assert_eq!(
        db.log
            .transitions_apply(vec![retry_later(&second, "a", t(14))])
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(db.log.attempts_list(&first.id).await.unwrap().len(), 1);
}

async fn released_and_expired_leases_return_jobs_to_pending(db: Db) {
    let a = insert(&db, 1, t(0)).await;
    let b = insert(&db, 2, t(0)).await;
    let claimed = db.log.jobs_claim_due("a", t(1), t(10), 1).await.unwrap();
    assert_eq!(claimed[0].id, a.id);
    db.log.jobs_claim_due("b", t(1), t(1000), 1).await.unwrap();

    // Node a's lease expired at t(10); node b's has not.
    assert_eq!(db.log.leases_rescue(t(11), t(11)).await.unwrap(), 1);
    assert_eq!(
        db.log.job_get(&a.id).await.unwrap().unwrap().state,
        JobState::Pending
    );
    assert_eq!(
        db.log.job_get(&b.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    // A transition from a's lost lease no longer applies.
    assert_eq!(
        db.log
            .transitions_apply(vec![retry_later(&claimed[0], "a", t(12))])
            .await
            .unwrap(),
        [false]
    );

    assert_eq!(db.log.leases_release("b").await.unwrap(), 1);
    let counts = db.log.jobs_count_by_state().await.unwrap();
    assert_eq!(counts[&JobState::Pending], 2);
    assert_eq!(counts[&JobState::Running], 0);
    assert_eq!(counts[&JobState::Dead], 0);
}

async fn dead_jobs_owe_a_notification_until_it_is_recorded(db: Db) {
    insert(&db, 1, t(0)).await;
    let job = db.log.jobs_claim_due("a", t(1), t(301), 1).await.unwrap()[0].clone();
    db.log
        .transitions_apply(vec![die(&job, "a", t(2), true)])
        .await
        .unwrap();

    let claims = db
        .log
        .notifications_claim_due(t(3), t(63), 10)
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    // Claimed: not due again until the claim runs out.
    assert!(db
        .log
        .notifications_claim_due(t(4), t(64), 10)
        .await
        .unwrap()
        .is_empty());

    let mut attempt = attempt_of(&claims[0].job, t(5), Decision::Notified);
    attempt.step = "on_dead".into();
    db.log.notification_record(attempt, None).await.unwrap();
    let stored = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(stored.notify_at, None);
    assert_eq!(stored.notify_attempts, 1);
    // The notification is in the history but is not a delivery attempt.
    assert_eq!(stored.attempts_total, 1);
    assert_eq!(db.log.attempts_list(&job.id).await.unwrap().len(), 2);
    assert!(db
        .log
        .notifications_claim_due(t(100), t(160), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn pages_go_newest_first_and_cursors_reach_every_job_once(db: Db) {
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(insert(&db, n, t(0)).await.id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = db
            .log
            .jobs_list(&JobFilter {
                limit: 3,
                cursor: cursor.clone(),
                ..JobFilter::default()
            })
            .await
            .unwrap();
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let filtered = db
        .log
        .jobs_list(&JobFilter {
            state: Some(JobState::Dead),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(filtered.jobs.is_empty());
    assert_eq!(filtered.next_cursor, None);
}

async fn operator_updates_are_guarded_by_state(db: Db) {
    insert(&db, 1, t(0)).await;
    let job = db.log.jobs_claim_due("a", t(1), t(301), 1).await.unwrap()[0].clone();

    // Running: no edit, no retry, no cancel.
    let edit = JobUpdate::EditPayload {
        payload: r#"{"n":"fixed"}"#.into(),
        editor: "ops@example.com".into(),
        at: t(2),
    };
    assert_eq!(
        db.log.job_update(&job.id, edit.clone()).await.unwrap(),
        Some(false)
    );
    assert_eq!(
        db.log
            .job_update(&job.id, JobUpdate::Cancel { at: t(2) })
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        db.log
            .job_update("no-such-job", JobUpdate::Cancel { at: t(2) })
            .await
            .unwrap(),
        None
    );

    db.log
        .transitions_apply(vec![die(&job, "a", t(3), false)])
        .await
        .unwrap();
    assert_eq!(db.log.job_update(&job.id, edit).await.unwrap(), Some(true));
    assert_eq!(
        db.log
            .job_update(&job.id, JobUpdate::Retry { at: t(4) })
            .await
            .unwrap(),
        Some(true)
    );
    let retried = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(retried.state, JobState::Pending);
    assert_eq!(retried.payload, r#"{"n":"fixed"}"#);
    assert_eq!(retried.attempt, 0);
    assert_eq!(retried.channel_index, 0);
    assert_eq!(retried.next_at, Some(t(4)));
    assert_eq!(retried.reason, None);
    // History is kept across a retry.
    assert_eq!(retried.attempts_total, 1);

    // Only dead jobs are retried; pending ones may be cancelled.
    assert_eq!(
        db.log
            .job_update(&job.id, JobUpdate::Retry { at: t(5) })
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        db.log
            .job_update(&job.id, JobUpdate::Cancel { at: t(5) })
            .await
            .unwrap(),
        Some(true)
    );
    let cancelled = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(db
        .log
        .jobs_claim_due("a", t(100), t(400), 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_log_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let id = {
        let log = store::open(&url).await.unwrap();
        match log.job_insert(new_job(1, t(0))).await.unwrap() {
            InsertOutcome::Created(job) => job.id,
            other => panic!("{other:?}"),
        }
    };
    let log = store::open(&url).await.unwrap();
    let job = log.job_get(&id).await.unwrap().unwrap();
    assert_eq!(job.payload, r#"{"n":1}"#);
}

#[tokio::test]
async fn urls_the_store_cannot_open_are_refused_by_name() {
    let error = match store::open("mysql://u:pw@db/x").await {
        Err(error) => error.to_string(),
        Ok(_) => panic!("opened a mysql URL"),
    };
    assert!(error.contains("mysql://u:***@db/x"), "{error}");
    assert!(!error.contains("pw"), "{error}");
}

/// Four claimers race over the same due jobs: each job is claimed exactly
/// once, whatever the interleaving.
async fn concurrent_claims_never_take_a_job_twice(db: Db) {
    let jobs: Vec<NewJob> = (0..400).map(|n| new_job(n, t(n as i64 % 7))).collect();
    db.log.jobs_insert_batch(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for claimer in 0..4 {
        let log = db.log.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("node-{claimer}");
            let mut ids = Vec::new();
            loop {
                let claimed = log.jobs_claim_due(&owner, t(10), t(100), 7).await.unwrap();
                if claimed.is_empty() {
                    break;
                }
                ids.extend(claimed.into_iter().map(|job| job.id));
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 400, "every job claimed");
    assert_eq!(distinct.len(), 400, "no job claimed twice");
}

/// Transitions of one job in one batch apply in order: the second sees the
/// first's result, and one after the job left `running` is refused.
async fn a_batch_may_move_one_job_twice(db: Db) {
    let job = insert(&db, 1, t(0)).await;
    let claimed = db.log.jobs_claim_due("a", t(0), t(100), 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let mut first = retry_later(&claimed[0], "a", t(1));
    first.to = JobState::Running;
    let second = retry_later(&claimed[0], "a", t(2));
    let third = retry_later(&claimed[0], "a", t(3));
    let applied = db
        .log
        .transitions_apply(vec![first, second, third])
        .await
        .unwrap();
    assert_eq!(applied, vec![true, true, false]);
    assert_eq!(db.log.attempts_list(&job.id).await.unwrap().len(), 2);
    let stored = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Pending);
    assert_eq!(stored.attempts_total, 2);
    assert_eq!(stored.lease_owner, None);
}

async fn dead_jobs_filter_by_last_attempt_and_time_and_retry_in_spaced_batches(db: Db) {
    for n in 0..5 {
        insert(&db, n, t(0)).await;
    }
    let mut claimed = db.log.jobs_claim_due("a", t(1), t(301), 10).await.unwrap();
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<String> = claimed.iter().map(|j| j.id.clone()).collect();
    // Job k dies at t(10k); job 1 on a timeout, the rest on a 503; job 0's
    // on_dead notification comes later and must not count as its last attempt.
    let transitions = claimed
        .iter()
        .enumerate()
        .map(|(k, job)| {
            let mut transition = die(job, "a", t(10 * k as i64), false);
            if k == 1 {
                let attempt = transition.attempt.as_mut().unwrap();
                attempt.status = None;
                attempt.error = Some("timeout".into());
                attempt.rule = Some("builtin[9]".into());
            }
            transition
        })
        .collect();
    db.log.transitions_apply(transitions).await.unwrap();
    let mut notification = attempt_of(&claimed[0], t(60), Decision::Notified);
    notification.step = "on_dead".into();
    notification.status = Some(200);
    db.log
        .notification_record(notification, None)
        .await
        .unwrap();

    let dead = |filter: JobFilter| JobFilter {
        state: Some(JobState::Dead),
        limit: 100,
        ..filter
    };
    let listed = |filter: JobFilter| {
        let log = db.log.clone();
        async move {
            let mut ids: Vec<String> = log
                .jobs_list(&filter)
                .await
                .unwrap()
                .jobs
                .into_iter()
                .map(|j| j.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        db.log
            .jobs_count(&dead(JobFilter::default()))
            .await
            .unwrap(),
        5
    );
    let by_status = listed(dead(JobFilter {
        status: Some(503),
        ..JobFilter::default()
    }))
    .await;
    assert_eq!(
        by_status,
        vec![
            ids[0].clone(),
            ids[2].clone(),
            ids[3].clone(),
            ids[4].clone()
        ]
    );
    let by_error = dead(JobFilter {
        error: Some("timeout".into()),
        ..JobFilter::default()
    });
    assert_eq!(listed(by_error.clone()).await, vec![ids[1].clone()]);
    assert_eq!(db.log.jobs_count(&by_error).await.unwrap(), 1);
    let by_rule = dead(JobFilter {
        rule: Some("builtin[1]".into()),
        ..JobFilter::default()
    });
    assert_eq!(db.log.jobs_count(&by_rule).await.unwrap(), 4);
    let window = dead(JobFilter {
        since: Some(t(20)),
        until: Some(t(40)),
        ..JobFilter::default()
    });
    assert_eq!(listed(window).await, vec![ids[2].clone(), ids[3].clone()]);

    // Bulk retry: ascending ids, `limit` per batch, `after` continues; the
    // k-th job of a batch is due at first_at + k × spacing.
    let everything = JobFilter::default();
    let first = db
        .log
        .jobs_retry_batch(&everything, None, 2, t(100), 1_500_000)
        .await
        .unwrap();
    assert_eq!((first.matched, first.retried), (2, 2));
    assert_eq!(first.last_id.as_deref(), Some(ids[1].as_str()));
    let job0 = db.log.job_get(&ids[0]).await.unwrap().unwrap();
    let job1 = db.log.job_get(&ids[1]).await.unwrap().unwrap();
    assert_eq!(job0.state, JobState::Pending);
    assert_eq!(
        (job0.attempt, job0.channel_index, job0.reason),
        (0, 0, None)
    );
    assert_eq!(job0.next_at, Some(t(100)));
    assert_eq!(
        job1.next_at,
        Some(t(100) + SignedDuration::from_millis(1500))
    );
    assert_eq!(
        db.log.attempts_list(&ids[0]).await.unwrap().len(),
        2,
        "history kept"
    );
    let second = db
        .log
        .jobs_retry_batch(&everything, first.last_id.as_deref(), 10, t(103), 0)
        .await
        .unwrap();
    assert_eq!((second.matched, second.retried), (3, 3));
    let done = db
        .log
        .jobs_retry_batch(&everything, second.last_id.as_deref(), 10, t(103), 0)
        .await
        .unwrap();
    assert_eq!(done, store::RetryBatch::default());
    assert_eq!(
        db.log
            .jobs_count(&dead(JobFilter::default()))
            .await
            .unwrap(),
        0
    );

    // Payload edits are listed oldest first, with who and when.
    for (n, editor) in [(1, "alice"), (2, "bob")] {
        let update = JobUpdate::EditPayload {
            payload: format!(r#"{{"edited":{n}}}"#),
            editor: editor.into(),
            at: t(200 + n),
        };
        assert_eq!(
            db.log.job_update(&ids[0], update).await.unwrap(),
            Some(true)
        );
    }
    let edits = db.log.payload_edits_list(&ids[0]).await.unwrap();
    assert_eq!(edits.len(), 2);
    assert_eq!(edits[0].old_payload, r#"{"n":0}"#);
    assert_eq!(edits[0].new_payload, r#"{"edited":1}"#);
    assert_eq!(
        (edits[1].editor.as_str(), edits[1].edited_at),
        ("bob", t(202))
    );
    assert!(db.log.payload_edits_list(&ids[1]).await.unwrap().is_empty());
}

/// Every state counted (the job gauges) and listed, each through what the
/// store keeps for it.
async fn jobs_are_counted_and_listed_in_every_state(db: Db) {
    for n in 0..12 {
        insert(&db, n, t(0)).await;
    }
    insert(&db, 99, t(1000)).await;
    let claimed = db.log.jobs_claim_due("a", t(1), t(300), 12).await.unwrap();
    assert_eq!(claimed.len(), 12);
    let to = |job: &JobRecord, state: JobState, next_at: Option<Timestamp>| Transition {
        to: state,
        next_at,
        reason: (state == JobState::Suspended).then_some(Reason::OffHours),
        ..retry_later(job, "a", t(2))
    };
    let mut moves = Vec::new();
    moves.extend(
        claimed[0..2]
            .iter()
            .map(|j| to(j, JobState::Succeeded, None)),
    );
    moves.extend(claimed[2..6].iter().map(|j| die(j, "a", t(2), false)));
    moves.push(to(&claimed[6], JobState::Suspended, Some(t(100))));
    moves.extend(claimed[7..9].iter().map(|j| retry_later(j, "a", t(2))));
    assert!(db
        .log
        .transitions_apply(moves)
        .await
        .unwrap()
        .iter()
        .all(|applied| *applied));
    assert_eq!(
        db.log
            .job_update(&claimed[5].id, JobUpdate::Cancel { at: t(3) })
            .await
            .unwrap(),
        Some(true)
    );

    let expected = [
        (JobState::Pending, 3),
        (JobState::Running, 3),
        (JobState::Suspended, 1),
        (JobState::Succeeded, 2),
        (JobState::Dead, 3),
        (JobState::Cancelled, 1),
    ];
    let counts = db.log.jobs_count_by_state().await.unwrap();
    for (state, n) in expected {
        assert_eq!(counts[&state], n, "{state:?}");
        let filter = JobFilter {
            state: Some(state),
            limit: 100,
            ..JobFilter::default()
        };
        let listed = db.log.jobs_list(&filter).await.unwrap().jobs;
        assert_eq!(listed.len() as u64, n, "{state:?}");
        assert!(listed.iter().all(|job| job.state == state), "{state:?}");
        assert_eq!(db.log.jobs_count(&filter).await.unwrap(), n, "{state:?}");
    }
    assert_eq!(counts.len(), expected.len());
}

fn node(id: &str) -> Membership {
    Membership {
        id: id.into(),
        instance: format!("{id}-run-1"),
        version: "test".into(),
    }
}

/// A live node's claims stay its own however long ago their lease ran
/// out: its heartbeat keeps them. Once it falls silent, they come back.
async fn a_live_nodes_claims_are_not_taken_over(db: Db) {
    let job = insert(&db, 1, t(0)).await;
    db.log.node_join(&node("a"), t(0)).await.unwrap();
    db.log.jobs_claim_due("a", t(1), t(10), 1).await.unwrap();
    db.log.node_heartbeat(&node("a"), t(50)).await.unwrap();
    // At t(60) the lease is long gone, but a beat at t(50) is recent.
    assert_eq!(db.log.leases_rescue(t(60), t(45)).await.unwrap(), 0);
    assert_eq!(
        db.log.job_get(&job.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    // Silent since t(50): dead at t(70) with a 15 s timeout.
    assert_eq!(db.log.leases_rescue(t(70), t(55)).await.unwrap(), 1);
    let back = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!((back.state, back.lease_owner), (JobState::Pending, None));
}

/// A dead node's jobs come back as soon as it is known dead, long before
/// the lease it claimed them under would have run out.
async fn a_dead_nodes_jobs_come_back_before_their_lease_ends(db: Db) {
    let job = insert(&db, 1, t(0)).await;
    db.log.node_join(&node("a"), t(0)).await.unwrap();
    db.log.node_join(&node("b"), t(0)).await.unwrap();
    db.log.jobs_claim_due("a", t(1), t(300), 1).await.unwrap();
    db.log.node_heartbeat(&node("b"), t(19)).await.unwrap();
    assert_eq!(db.log.leases_rescue(t(20), t(5)).await.unwrap(), 1);
    assert_eq!(
        db.log.job_get(&job.id).await.unwrap().unwrap().state,
        JobState::Pending
    );
    let nodes = db.log.nodes_list().await.unwrap();
    let ids: Vec<(&str, u64)> = nodes.iter().map(|n| (n.id.as_str(), n.running)).collect();
    assert_eq!(ids, [("a", 0), ("b", 0)]);
    assert_eq!(nodes[1].heartbeat_at, t(19));
    // Live: beaten at or after the bound.
    assert_eq!(db.log.nodes_live(t(5)).await.unwrap(), 1);
    assert_eq!(db.log.nodes_live(t(19)).await.unwrap(), 1);
    assert_eq!(db.log.nodes_live(t(0)).await.unwrap(), 2);
    assert_eq!(db.log.nodes_live(t(20)).await.unwrap(), 0);
}

/// Nodes are listed with the jobs they hold; one that leaves is gone.
async fn nodes_are_listed_with_their_running_jobs_and_leave(db: Db) {
    insert(&db, 1, t(0)).await;
    insert(&db, 2, t(0)).await;
    db.log.node_join(&node("a"), t(0)).await.unwrap();
    db.log.jobs_claim_due("a", t(1), t(300), 2).await.unwrap();
    let nodes = db.log.nodes_list().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!((nodes[0].running, nodes[0].started_at), (2, t(0)));
    assert_eq!(nodes[0].version, "test");
    db.log.node_leave(&node("a")).await.unwrap();
    assert!(db.log.nodes_list().await.unwrap().is_empty());
}

/// A node silent for a day is forgotten when another enters, unless it
/// still holds jobs.
async fn nodes_silent_for_a_day_are_forgotten(db: Db) {
    insert(&db, 1, t(0)).await;
    db.log.node_join(&node("old"), t(0)).await.unwrap();
    db.log.node_join(&node("holder"), t(0)).await.unwrap();
    db.log
        .jobs_claim_due("holder", t(1), t(300), 1)
        .await
        .unwrap();
    let a_day_later = t(24 * 3600 + 10);
    db.log.node_join(&node("new"), a_day_later).await.unwrap();
    let ids: Vec<String> = db
        .log
        .nodes_list()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, ["holder", "new"]);
}

/// `job`, claimed by `owner`, held at `at` for its flow's pause: an hour,
/// counted as held time (the machine's move for a paused flow).
fn held_for_the_pause(job: &JobRecord, owner: &str, at: Timestamp) -> Transition {
    Transition {
        to: JobState::Suspended,
        reason: Some(Reason::Paused),
        next_at: Some(at + SignedDuration::from_secs(3600)),
        held_ms: 3_600_000,
        attempt: None,
        attempts_added: 0,
        slowed_added: 0,
        ..retry_later(job, owner, at)
    }
}

/// A paused flow: listed, paused once, its held jobs due at once on resume
/// with the unspent hold taken back from their held time.
async fn a_paused_flows_held_jobs_are_due_at_once_on_resume(db: Db) {
    let job = insert(&db, 1, t(0)).await;
    let other = insert_into(&db, "elsewhere", 2, t(0)).await;
    assert!(db.log.flow_pause("leads", "ops", t(1)).await.unwrap());
    assert!(
        !db.log.flow_pause("leads", "ops", t(2)).await.unwrap(),
        "already"
    );
    // Another flow paused too, whose jobs a resume of this one leaves.
    assert!(db.log.flow_pause("elsewhere", "ops", t(2)).await.unwrap());
    let claimed = db.log.jobs_claim_due("a", t(3), t(300), 10).await.unwrap();
    let moves: Vec<Transition> = claimed
        .iter()
        .map(|job| held_for_the_pause(job, "a", t(3)))
        .collect();
    assert_eq!(db.log.transitions_apply(moves).await.unwrap(), [true, true]);

    assert_eq!(db.log.flow_resume("leads", t(63)).await.unwrap(), Some(1));
    let resumed = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(resumed.next_at, Some(t(63)));
    // Held 60 s of the hour it was counted for.
    assert_eq!(resumed.held_ms, 60_000);
    let untouched = db.log.job_get(&other.id).await.unwrap().unwrap();
    assert_eq!(
        untouched.next_at,
        Some(t(3_603)),
        "another flow's job stays"
    );
    assert_eq!(db.log.flow_resume("leads", t(64)).await.unwrap(), None);
    let still: Vec<String> = db
        .log
        .flows_paused()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.flow)
        .collect();
    assert_eq!(still, ["elsewhere"]);

    let counts = db.log.jobs_count_by_flow().await.unwrap();
    assert_eq!(counts["leads"][&JobState::Suspended], 1);
    assert_eq!(counts["elsewhere"][&JobState::Suspended], 1);
}

/// Retention: finished jobs older than the cut go with their attempts, in
/// batches; newer ones, dead ones and other states stay.
async fn old_finished_jobs_are_pruned_with_their_attempts(db: Db) {
    let old = [insert(&db, 1, t(0)).await, insert(&db, 2, t(0)).await];
    let dead = insert(&db, 3, t(0)).await;
    let claimed = db.log.jobs_claim_due("a", t(1), t(300), 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let finish = |job: &JobRecord, to: JobState| Transition {
        to,
        next_at: None,
        reason: (to == JobState::Dead).then_some(Reason::Permanent),
        ..retry_later(job, "a", t(10))
    };
    let moves: Vec<Transition> = claimed
        .iter()
        .map(|job| {
            let to = if job.id == dead.id {
                JobState::Dead
            } else {
                JobState::Succeeded
            };
            finish(job, to)
        })
        .collect();
    db.log.transitions_apply(moves).await.unwrap();
    let recent = insert(&db, 4, t(20)).await;
    let claimed = db.log.jobs_claim_due("a", t(30), t(300), 1).await.unwrap();
    let mut done_later = finish(&claimed[0], JobState::Succeeded);
    done_later.now = t(40);
    db.log.transitions_apply(vec![done_later]).await.unwrap();

    assert_eq!(
        db.log
            .jobs_prunable(JobState::Succeeded, t(15))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.log.jobs_prunable(JobState::Dead, t(15)).await.unwrap(),
        1
    );
    assert_eq!(
        db.log
            .jobs_prune(JobState::Succeeded, t(15), 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.log
            .jobs_prune(JobState::Succeeded, t(15), 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.log
            .jobs_prune(JobState::Succeeded, t(15), 1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        db.log.job_get(&recent.id).await.unwrap().unwrap().state,
        JobState::Succeeded,
        "finished after the cut: kept"
    );
    for job in &old {
        assert!(
            db.log.job_get(&job.id).await.unwrap().is_none(),
            "{} kept",
            job.id
        );
        assert!(db.log.attempts_list(&job.id).await.unwrap().is_empty());
    }
    assert_eq!(
        db.log.job_get(&dead.id).await.unwrap().unwrap().state,
        JobState::Dead,
        "dead jobs are the pruner's only when asked"
    );
    assert_eq!(db.log.attempts_list(&dead.id).await.unwrap().len(), 1);
    assert_eq!(
        db.log
            .jobs_prune(JobState::Succeeded, t(5), 10)
            .await
            .unwrap(),
        0
    );
}

/// A submission's traceparent is kept with the job, through single and
/// batch inserts, and comes back with every claim.
async fn a_submissions_traceparent_stays_with_its_job(db: Db) {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let single = NewJob {
        traceparent: Some(traceparent.into()),
        ..new_job(1, t(0))
    };
    let InsertOutcome::Created(created) = db.log.job_insert(single).await.unwrap() else {
        panic!("expected a new job");
    };
    assert_eq!(created.traceparent.as_deref(), Some(traceparent));
    let batch = vec![
        NewJob {
            traceparent: Some(traceparent.into()),
            ..new_job(2, t(0))
        },
        new_job(3, t(0)),
    ];
    db.log.jobs_insert_batch(batch).await.unwrap();
    let claimed = db.log.jobs_claim_due("a", t(1), t(300), 10).await.unwrap();
    let mut seen: Vec<(String, Option<String>)> = claimed
        .into_iter()
        .map(|job| (job.idempotency_key, job.traceparent))
        .collect();
    seen.sort();
    let with = Some(traceparent.to_string());
    assert_eq!(
        seen,
        [
            ("key-1".to_string(), with.clone()),
            ("key-2".to_string(), with),
            ("key-3".to_string(), None),
        ]
    );
    let got = db.log.job_get(&created.id).await.unwrap().unwrap();
    assert_eq!(got.traceparent.as_deref(), Some(traceparent));
}

async fn insight_counts_add_up_across_flushes_and_are_pruned_by_hour(db: Db) {
    use steadfast::store::InsightCount;
    let count = |channel: &str, hour: i64, metric: &str, key: &str, n: i64| InsightCount {
        channel: channel.into(),
        hour,
        metric: metric.into(),
        key: key.into(),
        count: n,
    };
    const H: i64 = 3_600_000;
    // Two nodes' flushes of the same hour add up.
    let first = vec![
        count("acme", 10 * H, "attempts", "1", 3),
        count("acme", 10 * H, "successes", "1", 2),
        count("other", 10 * H, "attempts", "1", 7),
    ];
    db.log.insights_add(&first).await.unwrap();
    db.log
        .insights_add(&[
            count("acme", 10 * H, "attempts", "1", 4),
            count("acme", 11 * H, "errors", "status:503", 1),
        ])
        .await
        .unwrap();
    db.log.insights_add(&[]).await.unwrap();
    let acme = db.log.insights_of("acme", 10 * H).await.unwrap();
    assert_eq!(
        acme,
        vec![
            count("acme", 10 * H, "attempts", "1", 7),
            count("acme", 10 * H, "successes", "1", 2),
            count("acme", 11 * H, "errors", "status:503", 1),
        ]
    );
    assert_eq!(db.log.insights_of("acme", 11 * H).await.unwrap().len(), 1);
    assert_eq!(db.log.insights_prune(11 * H).await.unwrap(), 3);
    assert_eq!(db.log.insights_of("acme", 0).await.unwrap().len(), 1);
    assert!(db.log.insights_of("other", 0).await.unwrap().is_empty());
    // A flow's ended jobs are counted in the same table.
    let ends = [
        count("leads", 12 * H, "flow_ends", "dead", 1),
        count("leads", 12 * H, "flow_ends", "succeeded", 5),
    ];
    db.log.insights_add(&ends).await.unwrap();
    assert_eq!(db.log.insights_of("leads", 12 * H).await.unwrap(), ends);
}

async fn under_a_cut_retries_get_their_share_and_fresh_jobs_the_rest(db: Db) {
    // Ten retries due since t(2) (made by a failed attempt each), then
    // five fresh jobs due t(10)..t(14).
    for n in 0..10 {
        insert(&db, n, t(0)).await;
    }
    let claimed = db.log.jobs_claim_due("a", t(0), t(300), 10).await.unwrap();
    let retried: Vec<Transition> = claimed.iter().map(|j| retry_later(j, "a", t(0))).collect();
    db.log.transitions_apply(retried).await.unwrap();
    for n in 10..15 {
        insert(&db, n, t(i64::from(n))).await;
    }
    // Half the room for retries: 3 of 6, earliest due; 3 fresh, earliest due.
    db.log.set_retry_share(Some(0.5));
    let claimed = db.log.jobs_claim_due("a", t(20), t(320), 6).await.unwrap();
    let retries = claimed.iter().filter(|j| j.attempt > 0).count();
    let mut fresh: Vec<String> = claimed
        .iter()
        .filter(|j| j.attempt == 0)
        .map(|j| j.idempotency_key.clone())
        .collect();
    fresh.sort();
    assert_eq!(retries, 3, "{claimed:#?}");
    assert_eq!(fresh, ["key-10", "key-11", "key-12"]);
    // Fewer fresh jobs than room: the retries' share is all they get.
    db.log.set_retry_share(Some(0.1));
    let claimed = db.log.jobs_claim_due("b", t(20), t(320), 20).await.unwrap();
    let keys: Vec<u32> = claimed.iter().map(|j| j.attempt).collect();
    assert_eq!(keys.iter().filter(|a| **a > 0).count(), 2, "{keys:?}");
    assert_eq!(
        keys.iter().filter(|a| **a == 0).count(),
        2,
        "key-13, key-14"
    );
    // Without a cut, everything due, earliest first.
    db.log.set_retry_share(None);
    let claimed = db.log.jobs_claim_due("c", t(20), t(320), 20).await.unwrap();
    assert_eq!(claimed.len(), 5, "the last retries");
}

async fn the_last_attempt_of_each_job_is_read_in_one_go(db: Db) {
    let twice = insert(&db, 1, t(0)).await;
    let never = insert(&db, 2, t(0)).await;
    let once = insert(&db, 3, t(0)).await;
    for round in 0..2 {
        let claimed = db
            .log
            .jobs_claim_due("a", t(10 * round + 5), t(300), 10)
            .await
            .unwrap();
        let moves: Vec<Transition> = claimed
            .iter()
            .filter(|j| j.id == twice.id || (round == 0 && j.id == once.id))
            .map(|j| retry_later(j, "a", t(10 * round + 5)))
            .collect();
        db.log.transitions_apply(moves).await.unwrap();
        db.log.leases_release("a").await.unwrap();
    }
    let ids = vec![twice.id.clone(), never.id.clone(), once.id.clone()];
    let mut last = db.log.attempts_last_of(&ids).await.unwrap();
    last.sort_by_key(|a| a.job_id == once.id);
    let seen: Vec<(&str, u32)> = last
        .iter()
        .map(|a| (a.job_id.as_str(), a.attempt))
        .collect();
    assert_eq!(seen, [(twice.id.as_str(), 2), (once.id.as_str(), 1)]);
    assert!(db.log.attempts_last_of(&[]).await.unwrap().is_empty());
}

/// The sweep after a resume makes due the jobs still held for a pause no
/// longer in force, and leaves them while the flow is paused again.
async fn the_sweep_after_a_resume_frees_holds_unless_the_flow_is_paused_again(db: Db) {
    let job = insert(&db, 1, t(0)).await;
    assert!(db.log.flow_pause("leads", "ops", t(1)).await.unwrap());
    let claimed = db.log.jobs_claim_due("a", t(2), t(300), 10).await.unwrap();
    let hold = held_for_the_pause(&claimed[0], "a", t(2));
    assert_eq!(db.log.transitions_apply(vec![hold]).await.unwrap(), [true]);
    // Paused: the sweep leaves the hold.
    assert_eq!(db.log.flow_resume_sweep("leads", t(10)).await.unwrap(), 0);
    let held = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (held.state, held.next_at),
        (JobState::Suspended, Some(t(3_602)))
    );
    // The pause lifted while the hold was written (the resume's own update
    // did not see it: here, a resume whose instant is past the hold's end).
    assert_eq!(
        db.log.flow_resume("leads", t(4_000)).await.unwrap(),
        Some(0)
    );
    assert_eq!(db.log.flow_resume_sweep("leads", t(20)).await.unwrap(), 1);
    let freed = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(freed.next_at, Some(t(20)));
    assert_eq!(db.log.flow_resume_sweep("leads", t(21)).await.unwrap(), 0);
}

/// A node that has not yet heard of a resume holds a job for the pause:
/// the step log lands it pending and due instead (the resume's sweep came
/// before and would not see it); while the flow is paused, the hold stands.
async fn a_hold_for_a_pause_lifted_meanwhile_lands_the_job_due(db: Db) {
    let job = insert(&db, 1, t(0)).await;
    assert!(db.log.flow_pause("leads", "ops", t(1)).await.unwrap());
    let claimed = db
        .log
        .jobs_claim_due("stale", t(2), t(300), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // Resumed elsewhere while this node still thinks the flow paused.
    assert_eq!(db.log.flow_resume("leads", t(3)).await.unwrap(), Some(0));
    db.log
        .transitions_apply(vec![held_for_the_pause(&claimed[0], "stale", t(4))])
        .await
        .unwrap();
    let landed = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (landed.state, landed.reason, landed.next_at, landed.held_ms),
        (JobState::Pending, None, Some(t(4)), 0)
    );
    // Paused for real: the hold stands.
    assert!(db.log.flow_pause("leads", "ops", t(5)).await.unwrap());
    let claimed = db
        .log
        .jobs_claim_due("stale", t(6), t(300), 10)
        .await
        .unwrap();
    db.log
        .transitions_apply(vec![held_for_the_pause(&claimed[0], "stale", t(6))])
        .await
        .unwrap();
    let held = db.log.job_get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (held.state, held.reason),
        (JobState::Suspended, Some(Reason::Paused))
    );
}

conformance!(
    a_hold_for_a_pause_lifted_meanwhile_lands_the_job_due,
    the_last_attempt_of_each_job_is_read_in_one_go,
    under_a_cut_retries_get_their_share_and_fresh_jobs_the_rest,
    insight_counts_add_up_across_flushes_and_are_pruned_by_hour,
    a_submissions_traceparent_stays_with_its_job,
    insert_is_idempotent_on_flow_and_key,
    concurrent_single_submissions_each_get_their_own_answer,
    one_refused_submission_does_not_fail_the_others,
    a_batch_reports_each_item_in_order,
    claims_take_due_jobs_earliest_first_and_only_once,
    claims_respect_the_limit,
    a_backlog_in_one_flow_does_not_starve_another,
    higher_priority_jobs_of_a_flow_are_claimed_first_and_flows_stay_fair,
    a_steps_kept_response_survives_later_moves,
    a_parallel_steps_branch_attempts_and_branches_are_recorded_together,
    a_transition_applies_only_under_the_owners_lease,
    a_result_under_an_expired_lease_does_not_apply_over_a_new_claim,
    released_and_expired_leases_return_jobs_to_pending,
    dead_jobs_owe_a_notification_until_it_is_recorded,
    pages_go_newest_first_and_cursors_reach_every_job_once,
    operator_updates_are_guarded_by_state,
    concurrent_claims_never_take_a_job_twice,
    a_batch_may_move_one_job_twice,
    dead_jobs_filter_by_last_attempt_and_time_and_retry_in_spaced_batches,
    jobs_are_counted_and_listed_in_every_state,
    a_live_nodes_claims_are_not_taken_over,
    a_dead_nodes_jobs_come_back_before_their_lease_ends,
    nodes_are_listed_with_their_running_jobs_and_leave,
    a_paused_flows_held_jobs_are_due_at_once_on_resume,
    the_sweep_after_a_resume_frees_holds_unless_the_flow_is_paused_again,
    nodes_silent_for_a_day_are_forgotten,
    old_finished_jobs_are_pruned_with_their_attempts,
);

/// Two processes cannot be one node: the second with a live id is refused,
/// and the id is free again the moment the first is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_second_live_node_with_the_same_id() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let first = store::open(&url).await.unwrap();
    let second = store::open(&url).await.unwrap();
    first.node_join(&node("a"), t(0)).await.unwrap();
    let refused = second.node_join(&node("a"), t(1)).await.unwrap_err();
    assert!(
        matches!(&refused, store::StoreError::NodeIdInUse { id } if id == "a"),
        "{refused}"
    );
    second.node_join(&node("b"), t(1)).await.unwrap();
    drop(first);
    // The first process gone (its connections closed), the id is free.
    let mut joined = Err(refused);
    for _ in 0..50 {
        joined = second.node_join(&node("a"), t(2)).await;
        if joined.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    joined.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inserts_wake_every_process_sharing_the_log() {
    use std::sync::Arc;
    use std::time::Duration;
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let submitter = store::open(&url).await.unwrap();
    let idle = store::open(&url).await.unwrap();
    assert!(submitter.is_shared());
    let wake = Arc::new(tokio::sync::Notify::new());
    let watch = idle
        .inserts_watch(wake.clone())
        .expect("a shared log watches");
    // The first wake-up is the look it takes once it listens.
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .expect("listening");
    submitter.job_insert(new_job(1, t(0))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("woken by another process's insert");
    watch.abort();
}

#[tokio::test]
async fn sqlite_is_one_process_and_needs_no_watch() {
    let db = open_sqlite().await.unwrap();
    assert!(!db.log.is_shared());
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    assert!(db.log.inserts_watch(wake).is_none());
}

/// A node whose deliveries keep every pooled connection busy still beats:
/// the heartbeat goes over the node id's own connection, so the others do
/// not take a live node for dead and send its jobs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_heartbeats_go_through_while_the_pool_is_busy() {
    use sqlx::Connection;
    use std::time::Duration;
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let log = store::open(&format!("{url}?pool_max=2")).await.unwrap();
    log.node_join(&node("busy"), t(0)).await.unwrap();
    // Another session locks the jobs table: two reads of it wait there,
    // holding both pooled connections.
    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move { log.job_get("nobody").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let beat = tokio::time::timeout(
        Duration::from_secs(5),
        log.node_heartbeat(&node("busy"), t(10)),
    )
    .await;
    assert!(
        matches!(beat, Ok(Ok(()))),
        "the heartbeat waited for the pool: {beat:?}"
    );
    lock.rollback().await.unwrap();
    for read in waiting {
        read.await.unwrap().unwrap();
    }
}
