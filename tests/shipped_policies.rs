//! Every policy file the repository ships compiles cleanly: the ones the
//! demo runs (`policies/`) and the ones users copy from (`examples/`).

use std::path::{Path, PathBuf};

use steadfast::compile::load_policy;
use steadfast::policy::EnvMode;

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

#[test]
fn the_demo_policies_compile_without_warnings() {
    assert_clean(&[repository("policies")]);
}

#[test]
fn each_example_compiles_on_its_own() {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repository("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| steadfast::policy::is_policy_file_name(path))
        .collect();
    examples.sort();
    assert!(!examples.is_empty());
    for example in examples {
        assert_clean(&[example]);
    }
}
