//! Entry points for the `cargo fuzz` targets in `filter/fuzz/`: each feeds arbitrary bytes to one parser
//! that sees attacker-controlled input (cookies, JWTs) or operator input (configuration). Not an API.

use std::time::Duration;

use crate::config::FilterConfig;
use crate::discovery::{parse_jwks, Jwks};
use crate::session::{Keyring, LoginFlow, Session};
use crate::token::{verify, Expectations};

/// Configuration parsing must never panic.
pub fn config(data: &[u8]) {
    let _ = FilterConfig::parse(data);
}

/// Opening a cookie (session or login flow) must never panic.
pub fn cookie(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let keyring = Keyring::new(&[[7; 32], [9; 32]]);
    let _ = keyring.open::<Session>("_tokengate", value, 0);
    let _ = keyring.open::<LoginFlow>("_tokengate_csrf_00000000", value, 0);
}

/// JWT verification and JWKS parsing must never panic.
pub fn jwt(data: &[u8]) {
    let _ = parse_jwks(data);
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let jwks = parse_jwks(
        br#"{"keys":[{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .unwrap_or_else(|_| Jwks::default());
    let want = Expectations {
        issuer: "https://dex.example.com",
        client_id: "kube",
        audiences: &[],
        nonce: Some("n"),
        clock_skew: Duration::from_secs(60),
        now: 1_700_000_000,
    };
    let _ = verify(token, &jwks, &want);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_entry_points_survive_garbage() {
        for input in [&b""[..], b"{", b"\xff\xfe", b"a.b.c", b"eyJhbGciOiJub25lIn0.e30.", b"AQ", b"{\"keys\":[{}]}"] {
            config(input);
            cookie(input);
            jwt(input);
        }
    }
}
