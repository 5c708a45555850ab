//! Fuzzes `filter::fuzzing::cookie`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| filter::fuzzing::cookie(data));
