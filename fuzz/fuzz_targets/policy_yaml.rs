//! A YAML policy file: whatever compiles runs without a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        steadfast::fuzzing::policy_file(text, steadfast::policy::Format::Yaml);
    }
});
