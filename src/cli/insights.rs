//! `steadfast insights CHANNEL`: what a channel's history says, from every
//! node: success by attempt number, error kinds, latency.

use anyhow::anyhow;

use super::client::{encode, ApiClient, ServerArgs};
use super::output::{cell, print_table};
use super::{CliResult, Failure, OutputArgs};

#[derive(Debug, clap::Args)]
pub struct InsightsArgs {
    /// A channel of the policy in force, or a pool's member.
    channel: String,
    /// How far back: 24h, 7d (default), at most 30d.
    #[arg(long)]
    window: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(args: InsightsArgs) -> CliResult {
    if let Some(window) = &args.window {
        crate::compile::parse_duration(window)
            .map_err(|e| Failure::BadInput(anyhow!("--window `{window}`: {e}")))?;
    }
    let client = ApiClient::new(&args.server)?;
    let mut path = format!("/v1/channels/{}/insights", encode(&args.channel));
    if let Some(window) = &args.window {
        path.push_str(&format!("?window={}", encode(window)));
    }
    let answer = client.get(&path).await?;
    if args.output.json() {
        println!("{answer}");
        return Ok(());
    }
    let percent = |rate: &serde_json::Value| match rate.as_f64() {
        Some(rate) => format!("{:.1}%", rate * 100.0),
        None => "-".to_string(),
    };
    println!(
        "{}: {} attempts since {}, {} succeeded ({}); latency p50 {} ms, p99 {} ms",
        cell(&answer["channel"]),
        cell(&answer["attempts"]),
        cell(&answer["since"]),
        cell(&answer["successes"]),
        percent(&answer["success_rate"]),
        cell(&answer["latency_ms"]["p50"]),
        cell(&answer["latency_ms"]["p99"]),
    );
    let rows: Vec<Vec<String>> = answer["by_attempt"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(number, rate)| {
            vec![
                number.clone(),
                cell(&rate["attempts"]),
                cell(&rate["successes"]),
                percent(&rate["success_rate"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no attempts in the window");
        return Ok(());
    }
    println!();
    print_table(&["ATTEMPT", "ATTEMPTS", "SUCCEEDED", "SUCCESS RATE"], &rows);
    let errors: Vec<String> = answer["errors"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(kind, count)| format!("{kind} {}", cell(count)))
        .collect();
    if !errors.is_empty() {
        println!("\nfailures: {}", errors.join(", "));
    }
    // The hours of the week that fare worst (all of them: `--json`).
    let mut hours: Vec<(f64, String)> = answer["by_hour_of_week"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(hour, rate)| {
            let success = rate["success_rate"].as_f64()?;
            let attempts = cell(&rate["attempts"]);
            Some((
                success,
                format!("{hour} {} ({attempts})", percent(&rate["success_rate"])),
            ))
        })
        .collect();
    hours.sort_by(|a, b| a.0.total_cmp(&b.0));
    if hours.len() > 1 {
        let worst: Vec<String> = hours.into_iter().take(5).map(|(_, text)| text).collect();
        println!("worst hours of the week (UTC): {}", worst.join(", "));
    }
    Ok(())
}
