//! Fuzzes `filter::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| filter::fuzzing::config(data));
