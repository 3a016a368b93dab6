//! `steadfast schema`: prints the JSON Schema of policy files, for editors
//! (yaml-language-server, taplo) and for CI. The copy committed in
//! `schemas/policy.schema.json` is this output.

use super::CliResult;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn run(_args: SchemaArgs) -> CliResult {
    print!("{}", schema_text());
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
