//! Fuzzes `issuer::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| issuer::fuzzing::config(data));
