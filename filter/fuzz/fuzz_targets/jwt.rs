//! Fuzzes `filter::fuzzing::jwt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| filter::fuzzing::jwt(data));
