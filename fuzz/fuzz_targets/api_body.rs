//! A request body of the job API: whatever is accepted is kept byte for
//! byte, and nothing panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steadfast::fuzzing::api_body(data);
});
