//! Snapshots (insta) of `steadfast validate` on broken policy files: one
//! fixture per kind of mistake under `tests/fixtures/broken/`, and the
//! likely mistakes that are warnings under `tests/fixtures/warnings/`.
//!
//! After a deliberate change of wording, review and accept new snapshots
//! with `cargo insta review` (or `INSTA_UPDATE=always cargo test --test
//! validate_snapshots`, then read the diff of `tests/snapshots/`).

use std::path::Path;
use std::process::Command;

/// Runs `steadfast validate ARGS…` from the repository root, so that paths
/// in the output are the relative ones given.
fn validate(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .arg("validate")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env_remove("RUST_LOG")
        .output()
        .expect("steadfast runs");
    format!(
        "$ steadfast validate {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        output
            .status
            .code()
            .map_or("signal".to_string(), |c| c.to_string()),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    )
}

macro_rules! snapshot {
    ($name:ident, $($arg:expr),+) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), validate(&[$($arg),+]));
        }
    };
}

snapshot!(syntax_yaml, "--no-env", "tests/fixtures/broken/syntax.yaml");
snapshot!(syntax_toml, "--no-env", "tests/fixtures/broken/syntax.toml");
snapshot!(wrong_types, "--no-env", "tests/fixtures/broken/type.yaml");
snapshot!(
    unknown_keys,
    "--no-env",
    "tests/fixtures/broken/unknown-key.yaml"
);
snapshot!(
    unknown_references,
    "--no-env",
    "tests/fixtures/broken/unknown-reference.yaml"
);
snapshot!(
    bad_regexes,
    "--no-env",
    "tests/fixtures/broken/bad-regex.yaml"
);
snapshot!(
    bad_durations,
    "--no-env",
    "tests/fixtures/broken/bad-duration.yaml"
);
snapshot!(
    duplicate_names,
    "--no-env",
    "tests/fixtures/broken/duplicate-name"
);
snapshot!(
    every_broken_file_at_once,
    "--no-env",
    "tests/fixtures/broken/syntax.yaml",
    "tests/fixtures/broken/bad-regex.yaml",
    "tests/fixtures/broken/bad-duration.yaml"
);
snapshot!(
    missing_path,
    "--no-env",
    "tests/fixtures/broken/not-there.yaml"
);
snapshot!(
    likely_mistakes_are_warnings,
    "--no-env",
    "tests/fixtures/warnings/warnings.yaml"
);
snapshot!(
    warnings_fail_with_deny_warnings,
    "--no-env",
    "--deny-warnings",
    "tests/fixtures/warnings/warnings.yaml"
);
snapshot!(
    json_for_scripts,
    "--no-env",
    "--format",
    "json",
    "tests/fixtures/broken/bad-regex.yaml"
);

#[test]
fn a_missing_variable_is_an_error_without_no_env() {
    let out = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["validate", "tests/fixtures/broken/needs-env.yaml"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env_remove("STEADFAST_FIXTURE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        "tests/fixtures/broken/needs-env.yaml:5:33: error: \
         channels.acme-api.http.headers.Authorization: environment variable \
         `STEADFAST_FIXTURE_TOKEN` is not set\n"
    );
    let placeholders = validate(&["--no-env", "tests/fixtures/broken/needs-env.yaml"]);
    assert!(placeholders.contains("exit: 0"), "{placeholders}");
}
