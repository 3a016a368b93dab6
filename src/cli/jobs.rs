//! `steadfast jobs list|show|retry|cancel`.

use serde_json::Value;

use super::client::{encode, ApiClient, ServerArgs};
use super::output::{cell, print_table, time};
use super::{CliResult, OutputArgs};

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// A page of jobs, newest first.
    List {
        /// pending, running, suspended, succeeded, dead or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this job id (the `next_cursor` of a page).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// One job with its whole attempt history.
    Show {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Sends a dead job again: its failed step starts afresh.
    Retry {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Ends a pending, suspended or dead job on purpose.
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn run(command: JobsCommand) -> CliResult {
    match command {
        JobsCommand::List {
            state,
            filter,
            limit,
            cursor,
            server,
            output,
        } => list(state, &filter, limit, cursor, &server, &output).await,
        JobsCommand::Show { id, server, output } => {
            let client = ApiClient::new(&server)?;
            let job = client.get(&format!("/v1/jobs/{}", encode(&id))).await?;
            if output.json() {
                println!("{job}");
            } else {
                print_job(&job);
            }
            Ok(())
        }
        JobsCommand::Retry { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/jobs/{}/retry", encode(&id));
            let (_, job) = client.post_json(&path, &Value::Null).await?;
            println!("{} {}", cell(&job["id"]), cell(&job["state"]));
            Ok(())
        }
        JobsCommand::Cancel { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/jobs/{}/cancel", encode(&id));
            let (_, job) = client.post_json(&path, &Value::Null).await?;
            println!("{} {}", cell(&job["id"]), cell(&job["state"]));
            Ok(())
        }
    }
}

/// Which jobs, for `jobs list`, `dlq list` and `dlq retry --all`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    #[arg(long)]
    pub flow: Option<String>,
    #[arg(long)]
    pub step: Option<String>,
    /// The HTTP status of the last attempt, e.g. 503.
    #[arg(long)]
    pub status: Option<u16>,
    /// The error kind of the last attempt: timeout, connect, dns, reset, tls, io.
    #[arg(long)]
    pub error: Option<String>,
    /// The rule that decided the last attempt, e.g. `builtin[5]` or `acme[2]`.
    #[arg(long)]
    pub rule: Option<String>,
    /// Changed (for a dead job: died) at or after: RFC 3339, a time of day
    /// in UTC (02:10, the latest), or a duration back (2h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Changed before: RFC 3339, a time of day in UTC, or a duration back (30m).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Text the idempotency key contains.
    #[arg(long, value_name = "TEXT")]
    pub key: Option<String>,
}

impl FilterArgs {
    /// `(name, value)` pairs of the filters given.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("flow", self.flow.clone()),
            ("step", self.step.clone()),
            ("status", self.status.map(|s| s.to_string())),
            ("error", self.error.clone()),
            ("rule", self.rule.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("key", self.key.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect()
    }

    /// The filter as the API's JSON body takes it.
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        for (name, value) in self.pairs() {
            let value = match (name, value.parse::<u16>()) {
                ("status", Ok(n)) => Value::from(n),
                _ => Value::from(value),
            };
            object.insert(name.to_string(), value);
        }
        Value::Object(object)
    }
}

/// A page of jobs, as `jobs list` and `dlq list` print it.
pub async fn list(
    state: Option<String>,
    filter: &FilterArgs,
    limit: u32,
    cursor: Option<String>,
    server: &ServerArgs,
    output: &OutputArgs,
) -> CliResult {
    let mut query = vec![format!("limit={limit}")];
    let mut pairs = filter.pairs();
    pairs.extend(state.map(|s| ("state", s)));
    pairs.extend(cursor.map(|c| ("cursor", c)));
    for (name, value) in pairs {
        query.push(format!("{name}={}", encode(&value)));
    }
    let client = ApiClient::new(server)?;
    let page = client.get(&format!("/v1/jobs?{}", query.join("&"))).await?;
    if output.json() {
        println!("{page}");
    } else {
        print_job_list(&page);
    }
    Ok(())
}

fn print_job_list(page: &Value) {
    let rows: Vec<Vec<String>> = page["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| {
            vec![
                cell(&job["id"]),
                cell(&job["flow"]),
                cell(&job["state"]),
                cell(&job["step"]),
                cell(&job["attempts_total"]),
                time(&job["next_at"]),
                cell(&job["reason"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no jobs");
        return;
    }
    print_table(
        &["ID", "FLOW", "STATE", "STEP", "ATTEMPTS", "NEXT", "REASON"],
        &rows,
    );
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("more: --cursor {cursor}");
    }
}

pub fn print_job(job: &Value) {
    let fields = [
        ("id", cell(&job["id"])),
        ("flow", cell(&job["flow"])),
        ("state", cell(&job["state"])),
        ("step", cell(&job["step"])),
        ("reason", cell(&job["reason"])),
        ("next at", time(&job["next_at"])),
        ("idempotency key", cell(&job["idempotency_key"])),
        ("priority", cell(&job["priority"])),
        ("times slowed", cell(&job["slowed"])),
        ("created", time(&job["created_at"])),
        ("policy version", cell(&job["policy_version"])),
        ("payload", job["payload"].to_string()),
    ];
    for (name, value) in fields {
        println!("{name:>16}: {value}");
    }
    let rows: Vec<Vec<String>> = job["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let mut answer = match (a["status"].as_u64(), a["error"].as_str()) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => error.to_string(),
                _ => "-".to_string(),
            };
            // The channel's `quick_retry` tried again within the attempt.
            match a["quick_tries"].as_u64() {
                Some(1) => answer.push_str(" (+1 quick try)"),
                Some(n) if n > 1 => answer.push_str(&format!(" (+{n} quick tries)")),
                _ => {}
            }
            // A pool's attempt shows the member it went to.
            let channel = match a["member"].as_str() {
                Some(member) => format!("{}→{member}", cell(&a["channel"])),
                None => cell(&a["channel"]),
            };
            vec![
                time(&a["started_at"]),
                cell(&a["step"]),
                channel,
                cell(&a["attempt"]),
                answer,
                cell(&a["outcome"]),
                cell(&a["rule"]),
                cell(&a["decision"]),
                time(&a["next_at"]),
            ]
        })
        .collect();
    println!();
    if rows.is_empty() {
        println!("no attempts yet");
    } else {
        print_table(
            &[
                "STARTED", "STEP", "CHANNEL", "#", "ANSWER", "OUTCOME", "RULE", "DECISION", "NEXT",
            ],
            &rows,
        );
    }
    // What the last attempt said in words: a mapping error names its
    // expression, a transport error its cause, a skipped step its `when`.
    if let Some(message) = job["attempts"]
        .as_array()
        .and_then(|attempts| attempts.last())
        .and_then(|a| a["error_message"].as_str())
    {
        println!("last attempt: {message}");
    }
    if let Some(branches) = job["branches"].as_object() {
        for (step, channels) in branches {
            let states: Vec<String> = channels
                .as_object()
                .into_iter()
                .flatten()
                .map(|(channel, b)| format!("{channel} {}", cell(&b["state"])))
                .collect();
            println!("parallel step {step}: {}", states.join(", "));
        }
    }
    let edits: Vec<Vec<String>> = job["payload_edits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                time(&e["edited_at"]),
                cell(&e["editor"]),
                e["old_payload"].to_string(),
                e["new_payload"].to_string(),
            ]
        })
        .collect();
    if !edits.is_empty() {
        println!();
        println!("payload edits:");
        print_table(&["EDITED", "BY", "OLD PAYLOAD", "NEW PAYLOAD"], &edits);
    }
}
