//! Replays every input the fuzz targets kept (`fuzz/corpus/TARGET`: the
//! seeds and what the fuzzer found interesting; `fuzz/artifacts/TARGET`:
//! inputs that once crashed, kept after the fix) through the same property
//! checks the targets run (`steadfast::fuzzing`). A regression of a fixed
//! crash fails here, in the ordinary `cargo test`, with no nightly needed.

use std::path::{Path, PathBuf};

use steadfast::policy::Format;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "artifacts"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for file in files {
        // A file the fuzzer replaced while this ran (fuzzing in the same
        // directory) is skipped; the committed corpus does not move.
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes)));
        assert!(outcome.is_ok(), "{} fails its property", file.display());
    }
}

#[test]
fn the_yaml_policy_corpus_replays_without_a_panic() {
    replay("policy_yaml", |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            steadfast::fuzzing::policy_file(text, Format::Yaml);
        }
    });
}

#[test]
fn the_toml_policy_corpus_replays_without_a_panic() {
    replay("policy_toml", |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            steadfast::fuzzing::policy_file(text, Format::Toml);
        }
    });
}

#[test]
fn the_api_body_corpus_keeps_every_accepted_payload_byte_for_byte() {
    replay("api_body", steadfast::fuzzing::api_body);
}
