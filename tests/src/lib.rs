//! End-to-end harness for the filter: loads the compiled `.wasm` into a proxy-wasm host and plays requests
//! against a real issuer. The issuer's own HTTP tests live in `issuer/tests/`.
