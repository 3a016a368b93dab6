//! `steadfast flows list|pause FLOW|resume FLOW`.

use serde_json::Value;

use super::client::{encode, ApiClient, ServerArgs};
use super::output::{cell, print_table, time};
use super::{CliResult, OutputArgs};

#[derive(Debug, clap::Subcommand)]
pub enum FlowsCommand {
    /// The flows with their jobs by state, paused or not.
    List {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Holds a flow's due jobs (`suspended`, reason `paused`, no attempt
    /// burnt) on every node until it is resumed.
    Pause {
        flow: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Lifts a flow's pause: the jobs it held are due at once.
    Resume {
        flow: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

const STATES: [&str; 6] = [
    "pending",
    "running",
    "suspended",
    "succeeded",
    "dead",
    "cancelled",
];

pub async fn run(command: FlowsCommand) -> CliResult {
    match command {
        FlowsCommand::List { server, output } => {
            let client = ApiClient::new(&server)?;
            let answer = client.get("/v1/flows").await?;
            if output.json() {
                println!("{answer}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = answer["flows"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|flow| {
                    let mut row = vec![
                        cell(&flow["name"]),
                        if flow["paused"] == true {
                            format!("paused since {}", time(&flow["paused_at"]))
                        } else if flow["in_policy"] == false {
                            "not in the policy".to_string()
                        } else {
                            "running".to_string()
                        },
                    ];
                    row.extend(
                        STATES
                            .iter()
                            .map(|state| cell(flow["jobs"].get(state).unwrap_or(&Value::from(0)))),
                    );
                    row
                })
                .collect();
            let states: Vec<String> = STATES.iter().map(|s| s.to_uppercase()).collect();
            let mut header = vec!["FLOW", "STATUS"];
            header.extend(states.iter().map(String::as_str));
            print_table(&header, &rows);
            Ok(())
        }
        FlowsCommand::Pause { flow, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/flows/{}/pause", encode(&flow));
            let (_, answer) = client.post_json(&path, &Value::Null).await?;
            if answer["changed"] == true {
                println!("{flow} paused: its due jobs wait until `steadfast flows resume {flow}`");
            } else {
                println!("{flow} was already paused");
            }
            Ok(())
        }
        FlowsCommand::Resume { flow, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/flows/{}/resume", encode(&flow));
            let (_, answer) = client.post_json(&path, &Value::Null).await?;
            if answer["changed"] == true {
                println!(
                    "{flow} resumed: {} held jobs due now",
                    cell(&answer["resumed"])
                );
            } else {
                println!("{flow} was not paused");
            }
            Ok(())
        }
    }
}
