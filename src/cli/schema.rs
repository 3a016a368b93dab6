//! `steadfast schema`: prints the JSON Schema of policy files, for editors
//! (yaml-language-server, taplo) and for CI. The copy committed in
//! `schemas/policy.schema.json` is this output. `--openapi` prints the
//! HTTP API's OpenAPI document instead (`schemas/openapi.json`).

use super::CliResult;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// The OpenAPI 3.1 document of the HTTP API (as `GET /v1/openapi.json`)
    /// instead of the policy files' schema.
    #[arg(long)]
    pub openapi: bool,
}

pub fn run(args: SchemaArgs) -> CliResult {
    if args.openapi {
        print!("{}", crate::api::openapi::document());
    } else {
        print!("{}", schema_text());
    }
    Ok(())
}

/// The schema as printed: pretty JSON ending in a newline.
pub fn schema_text() -> String {
    let schema = crate::policy::policy_schema();
    // A `Value` always serializes.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
