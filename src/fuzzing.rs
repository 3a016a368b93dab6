//! The properties the fuzz targets check, shared with the test that replays
//! their corpus (`tests/fuzz_corpus.rs`), so that `cargo test` checks every
//! input the fuzzers ever found interesting.
//!
//! - [`policy_file`]: whatever `validate` accepts, the engine loads and
//!   executes without a panic: every step of every flow is driven through
//!   the interpreter (calendars, backoff, deadlines, fallbacks) by a partner
//!   that keeps failing, one that answers `Retry-After`, and one whose
//!   attempts fail inside the engine.
//! - [`api_body`]: whatever a submission or an edit accepts is delivered as
//!   the exact bytes sent, by every channel, and nothing the API parses
//!   panics.
//!
//! Not part of the engine's API: public only for `fuzz/` and the tests.

use jiff::Timestamp;

use crate::compile::compile;
use crate::model::{DeliveryResult, ErrorKind, Response, TransportError};
use crate::policy::{has_errors, EnvMode, EnvSource, Format, SourceFile};
use crate::simulate::{simulate, Answer, JitterSplit, Options};

/// Attempts simulated per flow, step and partner: enough to walk any
/// schedule past its cap, few enough that a run stays fast.
const ATTEMPTS: u32 = 64;

/// Compiles `text` as one policy file; when it compiles without errors,
/// runs every flow through the interpreter. Panics only on a bug.
pub fn policy_file(text: &str, format: Format) {
    let name = match format {
        Format::Yaml => "fuzz.yaml",
        Format::Toml => "fuzz.toml",
    };
    let sources = [SourceFile::new(name, text, format)];
    // Every `${VAR}` is set, so that what the fuzzer explores is the
    // policy, not the environment.
    let env = EnvMode::from_source(AnyVar);
    let compilation = compile(&sources, &env);
    if has_errors(&compilation.diagnostics) {
        return;
    }
    let Some(policy) = compilation.policy else {
        return;
    };
    let starts: [Timestamp; 3] = [
        Timestamp::UNIX_EPOCH,
        // A Sunday night before a DST change in the Americas and Europe.
        Timestamp::from_second(1_774_742_400).unwrap_or(Timestamp::UNIX_EPOCH),
        // The far end of what a clock may say.
        Timestamp::from_second(253_402_207_200).unwrap_or(Timestamp::UNIX_EPOCH),
    ];
    let answers: [fn(u32) -> Answer; 4] = [
        |_| Answer::Failing,
        |n| {
            Answer::Result(Ok(Response {
                status: if n % 2 == 0 { 429 } else { 503 },
                retry_after: Some(if n % 3 == 0 {
                    "18446744073709551615".to_string()
                } else {
                    "Fri, 31 Dec 9999 23:59:59 GMT".to_string()
                }),
                body: "{\"status\": \"busy\"}".to_string(),
                headers: Vec::new(),
            }))
        },
        |_| Answer::Result(internal_error()),
        |n| {
            Answer::Result(Ok(Response {
                status: [200, 400, 401, 500][n as usize % 4],
                retry_after: None,
                body: String::new(),
                headers: Vec::new(),
            }))
        },
    ];
    for flow in policy.flows.values() {
        for step_index in 0..flow.steps.len() {
            for start in starts {
                for answer in answers {
                    let options = Options {
                        limit: ATTEMPTS,
                        split: JitterSplit::FollowNominal,
                        history: Default::default(),
                    };
                    let _ = simulate(
                        &policy,
                        flow,
                        step_index,
                        start,
                        options,
                        None,
                        |upcoming| Some(answer(upcoming.number)),
                    );
                }
            }
        }
    }
}

/// An environment in which every variable is a loopback URL.
struct AnyVar;

impl EnvSource for AnyVar {
    fn var(&self, _: &str) -> Option<String> {
        Some("http://127.0.0.1:9".to_string())
    }
}

fn internal_error() -> DeliveryResult {
    Err(TransportError {
        kind: ErrorKind::Internal,
        message: "fuzz".to_string(),
    })
}

/// Parses `bytes` the way the API parses a submission, a batch and a
/// payload edit. Whatever is accepted must pass the strict payload check
/// and be embedded byte for byte where channels send it.
pub fn api_body(bytes: &[u8]) {
    for payload in crate::api::jobs::accepted_payloads(bytes) {
        assert!(
            crate::payload::check(&payload).is_ok(),
            "accepted a payload the strict check refuses: {payload:?}"
        );
        let embedded = crate::payload::embed(&payload);
        assert_eq!(embedded.get(), payload, "the payload was not kept as sent");
    }
}
