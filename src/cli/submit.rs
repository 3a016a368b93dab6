//! `steadfast submit FLOW --payload JSON [--key K]` and
//! `steadfast submit FLOW --file jobs.ndjson`.

use crate::compile::{PRIORITY_MAX, PRIORITY_MIN};
use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::client::{encode, ApiClient, ServerArgs};
use super::{CliResult, Failure, OutputArgs};

/// Jobs sent per batch request with `--file`.
const BATCH: usize = 500;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The flow that delivers the job.
    flow: String,
    /// The job's payload, as JSON.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    payload: Option<String>,
    /// The idempotency key (default: one the engine generates).
    #[arg(long)]
    key: Option<String>,
    /// When the first attempt is due, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME")]
    run_at: Option<String>,
    /// -100..100: within the flow, due jobs of higher priority start first
    /// (default: the flow's `priority`).
    #[arg(long, allow_hyphen_values = true, conflicts_with = "file",
          value_parser = clap::value_parser!(i64).range(PRIORITY_MIN..=PRIORITY_MAX))]
    priority: Option<i64>,
    /// Many jobs, one JSON object per line: `{"payload": …, "idempotency_key"?: …,
    /// "priority"?: …}`.
    #[arg(long, value_name = "NDJSON")]
    file: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(args: SubmitArgs) -> CliResult {
    let client = ApiClient::new(&args.server)?;
    match &args.file {
        Some(file) => submit_file(&client, &args, file).await,
        None => submit_one(&client, &args).await,
    }
}

async fn submit_one(client: &ApiClient, args: &SubmitArgs) -> CliResult {
    let raw = args.payload.as_deref().unwrap_or("null");
    let payload = raw_payload(raw)?;
    if let Some(run_at) = &args.run_at {
        run_at.parse::<jiff::Timestamp>().map_err(|e| {
            Failure::BadInput(anyhow!(
                "--run-at `{run_at}`: {e}; write RFC 3339, e.g. 2026-12-01T09:00:00Z"
            ))
        })?;
    }
    let body = SubmitBody {
        payload,
        idempotency_key: args.key.as_deref(),
        run_at: args.run_at.as_deref(),
        priority: args.priority,
    };
    let path = format!("/v1/flows/{}/jobs", encode(&args.flow));
    let (status, answer) = client.post_json(&path, &body).await?;
    if args.output.json() {
        println!("{answer}");
    } else {
        let id = answer.get("id").and_then(Value::as_str).unwrap_or_default();
        println!("{id}");
        if status.as_u16() == 200 {
            eprintln!("(the key was already submitted: this is the existing job)");
        }
    }
    Ok(())
}

async fn submit_file(client: &ApiClient, args: &SubmitArgs, file: &PathBuf) -> CliResult {
    let reader = std::fs::File::open(file)
        .map(std::io::BufReader::new)
        .with_context(|| format!("cannot open {}", file.display()))
        .map_err(Failure::BadInput)?;
    let mut lines = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line
            .with_context(|| format!("reading {}", file.display()))
            .map_err(Failure::BadInput)?;
        if line.trim().is_empty() {
            continue;
        }
        serde_json::from_str::<Value>(&line).map_err(|e| {
            Failure::BadInput(anyhow!("{}:{}: not valid JSON: {e}", file.display(), n + 1))
        })?;
        lines.push(line);
    }
    let progress = ProgressBar::new(lines.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let path = format!("/v1/flows/{}/jobs:batch", encode(&args.flow));
    let (mut created, mut existing, mut failed) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for (chunk_index, chunk) in lines.chunks(BATCH).enumerate() {
        let body = chunk.join("\n").into_bytes();
        let (_, answer) = client
            .call(
                reqwest::Method::POST,
                &path,
                Some(("application/x-ndjson", body)),
            )
            .await?;
        for result in answer["results"].as_array().into_iter().flatten() {
            if let Some(error) = result.get("error") {
                failed += 1;
                let line = chunk_index * BATCH + result["index"].as_u64().unwrap_or(0) as usize + 1;
                failures.push(format!(
                    "line {line}: {}",
                    error.as_str().unwrap_or_default()
                ));
            } else if result["created"] == json!(true) {
                created += 1;
            } else {
                existing += 1;
            }
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    if args.output.json() {
        println!(
            "{}",
            json!({ "created": created, "existing": existing, "failed": failed, "errors": failures })
        );
    } else {
        println!("{created} created, {existing} already submitted, {failed} failed");
        for failure in failures.iter().take(20) {
            eprintln!("  {failure}");
        }
    }
    if failed > 0 {
        return Err(Failure::CheckFailed);
    }
    Ok(())
}

/// The body of one submission; the payload goes as typed, byte for byte.
#[derive(serde::Serialize)]
struct SubmitBody<'a> {
    payload: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i64>,
}

/// `--payload` as the JSON it is, refused here with the engine's own check
/// so that a typo is caught before anything is sent.
pub(crate) fn raw_payload(text: &str) -> Result<&RawValue, Failure> {
    let bad = |e: &dyn std::fmt::Display| {
        Failure::BadInput(anyhow!(
            "--payload is not valid JSON ({e}); quote it for the shell, e.g. --payload '{{\"id\": 1}}'"
        ))
    };
    crate::payload::check(text).map_err(|e| bad(&e))?;
    serde_json::from_str(text).map_err(|e| bad(&e))
}
