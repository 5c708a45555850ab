//! Fuzzes `issuer::fuzzing::id_token_hint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| issuer::fuzzing::id_token_hint(data));
