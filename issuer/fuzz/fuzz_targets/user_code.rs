//! Fuzzes `issuer::fuzzing::user_code`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| issuer::fuzzing::user_code(data));
