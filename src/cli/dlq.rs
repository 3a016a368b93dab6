//! `steadfast dlq list|retry|edit|cancel`: dead-letter work.

use std::time::Duration;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::client::{encode, ApiClient, ServerArgs};
use super::jobs::{list, FilterArgs};
use super::output::cell;
use super::{CliResult, Failure, OutputArgs};

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Dead jobs, newest first, filtered by flow, step, last answer, rule, time.
    List {
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
    /// Sends dead jobs again: these ids, or with --all every dead job the
    /// filters match. Each starts its failed step afresh.
    Retry {
        /// Job ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead job matching the filters (none: every dead job).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// How fast retried jobs become due: 500/s, 30/m, 10000/h [default: 1000/s].
        #[arg(long)]
        rate: Option<String>,
        /// Schedules the retry off-peak: `02:00` (the next 02:00 in this
        /// machine's time zone) or an RFC 3339 time. The jobs wait
        /// `pending` until then.
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Replaces a dead, pending or suspended job's payload; the old one is
    /// kept with who changed it and when (see `jobs show`).
    Edit {
        id: String,
        /// The new payload, as JSON.
        #[arg(long)]
        payload: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Ends a dead (or pending, suspended) job on purpose.
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn run(command: DlqCommand) -> CliResult {
    match command {
        DlqCommand::List {
            filter,
            limit,
            cursor,
            server,
            output,
        } => {
            list(
                Some("dead".into()),
                &filter,
                limit,
                cursor,
                &server,
                &output,
            )
            .await
        }
        DlqCommand::Retry {
            ids,
            all,
            filter,
            rate,
            at,
            server,
            output,
        } => {
            let given = filter.pairs();
            if !all && !given.is_empty() {
                return Err(Failure::BadInput(anyhow!(
                    "--{} filters dead jobs for --all; give ids or --all, not both",
                    given[0].0
                )));
            }
            let mut body = if all {
                json!({ "filter": filter.to_json() })
            } else {
                json!({ "ids": ids })
            };
            if let Some(rate) = rate {
                crate::api::dlq::parse_rate(&json!(rate))
                    .map_err(|e| Failure::BadInput(anyhow!("--rate `{rate}`: {e}")))?;
                body["rate"] = json!(rate);
            }
            if let Some(at) = &at {
                let when = resolve_at(at, jiff::Timestamp::now(), &jiff::tz::TimeZone::system())
                    .map_err(|e| Failure::BadInput(anyhow!("--at `{at}`: {e}")))?;
                body["at"] = json!(when.to_string());
            }
            let client = ApiClient::new(&server)?;
            let (_, answer) = client.post_json("/v1/dlq/retry", &body).await?;
            let operation = answer["operation"]
                .as_str()
                .ok_or_else(|| Failure::Operation(anyhow!("the engine sent no operation id")))?
                .to_string();
            let finished = follow(&client, &operation, !output.json()).await?;
            if output.json() {
                println!("{finished}");
            } else if finished["scheduled"] == json!(true) {
                println!(
                    "{} scheduled to retry from {} at {}/s, {} skipped of {} matched \
                     (operation {operation}; they wait `pending` until then)",
                    cell(&finished["retried"]),
                    cell(&finished["runs_at"]),
                    cell(&finished["rate_per_second"]),
                    cell(&finished["skipped"]),
                    cell(&finished["matched"]),
                );
            } else {
                println!(
                    "{} retried, {} skipped of {} matched (operation {operation})",
                    cell(&finished["retried"]),
                    cell(&finished["skipped"]),
                    cell(&finished["matched"]),
                );
                for id in finished["skipped_ids"].as_array().into_iter().flatten() {
                    eprintln!("  skipped {} (not found, or no longer dead)", cell(id));
                }
            }
            if let Some(error) = finished["error"].as_str() {
                return Err(Failure::Operation(anyhow!("the retry stopped: {error}")));
            }
            Ok(())
        }
        DlqCommand::Edit {
            id,
            payload,
            server,
        } => {
            #[derive(serde::Serialize)]
            struct EditBody<'a> {
                payload: &'a serde_json::value::RawValue,
            }
            let payload = super::submit::raw_payload(&payload)?;
            let client = ApiClient::new(&server)?;
            let job = client
                .patch_json(&format!("/v1/jobs/{}", encode(&id)), &EditBody { payload })
                .await?;
            println!(
                "{} {} payload replaced; `steadfast dlq retry {}` sends it",
                cell(&job["id"]),
                cell(&job["state"]),
                cell(&job["id"])
            );
            Ok(())
        }
        DlqCommand::Cancel { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/jobs/{}/cancel", encode(&id));
            let (_, job) = client.post_json(&path, &Value::Null).await?;
            println!("{} {}", cell(&job["id"]), cell(&job["state"]));
            Ok(())
        }
    }
}

/// The time `--at` names: `HH:MM` is the next such time in `zone` after
/// `now`; anything else must be an RFC 3339 time.
fn resolve_at(
    text: &str,
    now: jiff::Timestamp,
    zone: &jiff::tz::TimeZone,
) -> Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(time) = text.parse::<jiff::civil::Time>() {
        if text.len() <= 8 {
            let today = now.to_zoned(zone.clone()).date();
            for date in [Some(today), today.tomorrow().ok()].into_iter().flatten() {
                let at = date
                    .to_datetime(time)
                    .to_zoned(zone.clone())
                    .map_err(|e| e.to_string())?
                    .timestamp();
                if at > now {
                    return Ok(at);
                }
            }
        }
    }
    text.parse::<jiff::Timestamp>().map_err(|_| {
        "write a time of day (`02:00`, the next one in this machine's time zone) or an RFC \
         3339 time (`2026-12-07T02:00:00Z`)"
            .to_string()
    })
}

/// Polls the operation until it is done, drawing a progress bar on a
/// terminal; returns its last report.
async fn follow(client: &ApiClient, operation: &str, show: bool) -> Result<Value, Failure> {
    let path = format!("/v1/operations/{}", encode(operation));
    let bar = if show {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} jobs retried  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    loop {
        let report = client.get(&path).await?;
        let count = |name: &str| report[name].as_u64().unwrap_or(0);
        bar.set_length(count("matched"));
        bar.set_position(count("retried") + count("skipped"));
        if report["done"] == json!(true) {
            bar.finish_and_clear();
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_at;
    use jiff::tz::TimeZone;
    use jiff::Timestamp;

    #[test]
    fn at_reads_the_next_time_of_day_or_an_rfc_3339_time() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let now: Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        // 02:00 has passed today in Paris: tomorrow's.
        assert_eq!(
            resolve_at("02:00", now, &paris).unwrap().to_string(),
            "2026-12-07T01:00:00Z"
        );
        // 18:30 is still ahead today.
        assert_eq!(
            resolve_at("18:30", now, &paris).unwrap().to_string(),
            "2026-12-06T17:30:00Z"
        );
        assert_eq!(
            resolve_at("2026-12-08T02:00:00+01:00", now, &paris)
                .unwrap()
                .to_string(),
            "2026-12-08T01:00:00Z"
        );
        let error = resolve_at("tonight", now, &paris).unwrap_err();
        assert!(error.contains("02:00"), "{error}");
        assert!(resolve_at("25:00", now, &paris).is_err());
    }
}
