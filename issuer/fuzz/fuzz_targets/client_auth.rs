//! Fuzzes `issuer::fuzzing::client_auth`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| issuer::fuzzing::client_auth(data));
