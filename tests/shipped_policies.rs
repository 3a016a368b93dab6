//! Every policy file the repository ships compiles cleanly and its test
//! cases pass: the ones the demo runs (`policies/`) and the ones users copy
//! from (`examples/`).

use std::path::{Path, PathBuf};

use steadfast::compile::load_policy;
use steadfast::policy::{is_policy_file_name, is_test_file_name, EnvMode};
use steadfast::policytest::{run_suite, text};

fn repository(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
}

fn assert_clean(paths: &[PathBuf]) {
    let compilation = load_policy(paths, &EnvMode::Placeholders);
    let shown: Vec<String> = compilation
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(shown.is_empty(), "{paths:?}:\n{}", shown.join("\n"));
    let policy = compilation.policy.expect("a policy without diagnostics");
    assert!(!policy.flows.is_empty(), "{paths:?} defines no flow");
}

fn assert_cases_pass(paths: &[PathBuf]) {
    let suite = run_suite(paths, &EnvMode::Placeholders);
    assert!(suite.ok(), "{paths:?}:\n{}", text(&suite));
    assert!(suite.passed() > 0, "{paths:?} has no test case");
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repository("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn the_demo_policies_compile_without_warnings() {
    assert_clean(&[repository("policies")]);
}

#[test]
fn the_demo_policies_pass_their_test_cases() {
    assert_cases_pass(&[repository("policies")]);
}

#[test]
fn each_example_compiles_on_its_own() {
    let examples: Vec<PathBuf> = examples()
        .into_iter()
        .filter(|path| is_policy_file_name(path))
        .collect();
    assert!(!examples.is_empty());
    for example in examples {
        assert_clean(&[example]);
    }
}

/// `payments.yaml` is tested by `payments.test.yaml` (or `.test.toml`).
#[test]
fn each_example_passes_its_test_cases() {
    let files = examples();
    for example in files.iter().filter(|p| is_policy_file_name(p)) {
        let stem = example.file_stem().unwrap().to_str().unwrap();
        let tests: Vec<&PathBuf> = files
            .iter()
            .filter(|p| {
                is_test_file_name(p)
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{stem}.test.")))
            })
            .collect();
        assert!(!tests.is_empty(), "{} has no test file", example.display());
        let mut paths = vec![example.clone()];
        paths.extend(tests.into_iter().cloned());
        assert_cases_pass(&paths);
    }
}
