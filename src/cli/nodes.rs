//! `steadfast nodes`: the nodes sharing the step log of a running engine.

use super::client::{ApiClient, ServerArgs};
use super::output::{cell, print_table, time};
use super::{CliResult, OutputArgs};

#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(args: NodesArgs) -> CliResult {
    let client = ApiClient::new(&args.server)?;
    let answer = client.get("/v1/nodes").await?;
    if args.output.json() {
        println!("{answer}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = answer["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|node| {
            vec![
                cell(&node["id"]),
                if node["live"].as_bool() == Some(true) {
                    "live".to_string()
                } else {
                    "dead".to_string()
                },
                cell(&node["running"]),
                time(&node["heartbeat_at"]),
                time(&node["started_at"]),
                cell(&node["version"]),
            ]
        })
        .collect();
    print_table(
        &[
            "NODE",
            "STATE",
            "RUNNING",
            "LAST HEARTBEAT",
            "STARTED",
            "VERSION",
        ],
        &rows,
    );
    Ok(())
}
