//! The committed JSON Schema is what `steadfast schema` prints, and every
//! shipped policy file points editors at it.

use std::path::Path;
use std::process::Command;

fn repository(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_committed_schema_is_current() {
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .arg("schema")
        .output()
        .expect("steadfast runs");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    let committed = std::fs::read_to_string(repository("schemas/policy.schema.json"))
        .expect("schemas/policy.schema.json exists");
    assert!(
        printed == committed,
        "schemas/policy.schema.json is out of date with the policy types; regenerate it \
         with:\n\n    cargo run -- schema > schemas/policy.schema.json\n"
    );
    let schema: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(schema["title"], "steadfast policy file");
}

#[test]
fn shipped_policy_files_name_the_schema() {
    for dir in ["policies", "examples"] {
        for entry in std::fs::read_dir(repository(dir)).unwrap() {
            let path = entry.unwrap().path();
            let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let expected = match ext {
                "yaml" | "yml" => "# yaml-language-server: $schema=../schemas/policy.schema.json",
                "toml" => "#:schema ../schemas/policy.schema.json",
                _ => continue,
            };
            assert_eq!(first, expected, "{}: first line", path.display());
        }
    }
}

/// The committed OpenAPI document is what the code generates, and what a
/// running engine serves.
#[test]
fn the_committed_openapi_document_is_current() {
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["schema", "--openapi"])
        .output()
        .expect("steadfast runs");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    let committed = std::fs::read_to_string(repository("schemas/openapi.json"))
        .expect("schemas/openapi.json exists");
    assert!(
        printed == committed,
        "schemas/openapi.json is out of date with the API's handlers; regenerate it \
         with:\n\n    cargo run -- schema --openapi > schemas/openapi.json\n"
    );
    let document: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    // Every route of the API is described, each operation with its own id.
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/v1/flows/{flow}/jobs",
        "/v1/flows/{flow}/jobs:batch",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/retry",
        "/v1/jobs/{id}/cancel",
        "/v1/dlq/retry",
        "/v1/operations/{id}",
        "/v1/channels",
        "/v1/channels/{name}",
        "/v1/nodes",
        "/v1/flows",
        "/v1/flows/{flow}/pause",
        "/v1/flows/{flow}/resume",
        "/v1/policies",
        "/v1/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path} is not described");
    }
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().expect("a path item").values())
        .map(|operation| operation["operationId"].as_str().expect("an operationId"))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids are unique");
}
