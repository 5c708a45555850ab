//! Fuzzes `issuer::fuzzing::login_form`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| issuer::fuzzing::login_form(data));
