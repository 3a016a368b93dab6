//! `steadfast jobs list|show|retry|cancel`.

use serde_json::Value;

use super::client::{encode, ApiClient, ServerArgs};
use super::output::{cell, print_table, time};
use super::{CliResult, OutputArgs};

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// A page of jobs, newest first.
    List {
        /// pending, running, suspended, succeeded, dead or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        flow: Option<String>,
        #[arg(long)]
        step: Option<String>,
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
            flow,
            step,
            limit,
            cursor,
            server,
            output,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (name, value) in [
                ("state", state),
                ("flow", flow),
                ("step", step),
                ("cursor", cursor),
            ] {
                if let Some(value) = value {
                    query.push(format!("{name}={}", encode(&value)));
                }
            }
            let client = ApiClient::new(&server)?;
            let page = client.get(&format!("/v1/jobs?{}", query.join("&"))).await?;
            if output.json() {
                println!("{page}");
            } else {
                print_job_list(&page);
            }
            Ok(())
        }
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

fn print_job(job: &Value) {
    let fields = [
        ("id", cell(&job["id"])),
        ("flow", cell(&job["flow"])),
        ("state", cell(&job["state"])),
        ("step", cell(&job["step"])),
        ("reason", cell(&job["reason"])),
        ("next at", time(&job["next_at"])),
        ("idempotency key", cell(&job["idempotency_key"])),
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
            let answer = match (a["status"].as_u64(), a["error"].as_str()) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => error.to_string(),
                _ => "-".to_string(),
            };
            vec![
                time(&a["started_at"]),
                cell(&a["step"]),
                cell(&a["channel"]),
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
}
