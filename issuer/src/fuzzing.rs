//! Entry points for the `cargo fuzz` targets in `issuer/fuzz/`: each feeds arbitrary bytes to the parsers
//! behind one endpoint or to the configuration loader, the same functions the handlers call. Their contract
//! is "an error, never a panic"; where a parser promises more (a normalised user code reads back the same),
//! the entry point asserts it. Not an API.
//!
//! Targets that need a header and a body take the input's first line as the header value and the rest as
//! the body.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue};

use crate::config::Config;
use crate::http::device::{display_user_code, normalize_user_code};
use crate::http::login::PasswordLogin;
use crate::http::logout::parse_id_token_hint;
use crate::http::{parse_client_credentials, Form};
use crate::keys::{Algorithm, PublicKey, Signer};
use crate::token::IdTokenClaims;

/// The configuration loader (`Config::load` without the file read): YAML syntax, typed keys, validation.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // No environment: `$VAR` expansion sees every variable unset.
    let _ = Config::parse("fuzz.yaml", text, &|_| None);
}

/// The token endpoint's form and client authentication (`client_secret_basic`, `client_secret_post`,
/// `none`): the first line is the `Authorization` header, the rest the form body.
pub fn client_auth(data: &[u8]) {
    let (first, body) = split_line(data);
    let mut headers = form_headers();
    if let Ok(v) = HeaderValue::from_bytes(first) {
        headers.insert(header::AUTHORIZATION, v);
    }
    let Ok(form) = Form::parse(&headers, &Bytes::copy_from_slice(body)) else { return };
    let _ = form.require("grant_type");
    if let Ok(c) = parse_client_credentials(&headers, &form) {
        assert!(!c.id.is_empty() || c.basic, "a form client_id is never empty (empty counts as absent)");
    }
}

/// `id_token_hint` at `/logout`: the input as a query string (`GET /logout?…`), and, when it is JSON, as the
/// claims of a hint this issuer signed (so the claims parser is reached past the signature check).
pub fn id_token_hint(data: &[u8]) {
    let keys = hint_keys();
    if let Ok(query) = std::str::from_utf8(data) {
        if let Ok(form) = Form::from_query(Some(query)) {
            let _ = parse_id_token_hint(&form, &keys.1);
        }
    }
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(token) = keys.0.sign_jwt(&claims) else { return };
    let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("id_token_hint", &token).finish();
    let Ok(form) = Form::from_query(Some(&query)) else { return };
    let parsed = parse_id_token_hint(&form, &keys.1);
    let expected = serde_json::from_value::<IdTokenClaims>(claims).is_ok();
    assert_eq!(parsed.is_ok(), expected, "a hint signed by the issuer is accepted exactly when its claims parse");
}

/// The device flow's user code, as typed into `/device` (form body) or carried in `verification_uri_complete`
/// (query string). A normalised code displays and normalises back to itself.
pub fn user_code(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check_user_code(text);
    if let Ok(form) = Form::from_query(Some(text)) {
        if let Some(typed) = form.get("user_code") {
            check_user_code(typed);
        }
    }
    if let Ok(form) = Form::parse(&form_headers(), &Bytes::copy_from_slice(data)) {
        if let Some(typed) = form.get("user_code") {
            check_user_code(typed.trim());
        }
    }
}

/// The login form (`POST /login`): the first line is the `Cookie` header (the CSRF and session cookies),
/// the rest the form body.
pub fn login_form(data: &[u8]) {
    let (first, body) = split_line(data);
    let mut headers = form_headers();
    if let Ok(v) = HeaderValue::from_bytes(first) {
        headers.insert(header::COOKIE, v);
    }
    let _ = crate::http::authorize::cookie(&headers, crate::http::authorize::CSRF_COOKIE);
    if let Some(c) = crate::http::authorize::cookie(&headers, crate::session::DEFAULT_COOKIE_NAME) {
        let _ = crate::session::SessionCookie::parse(c);
    }
    let Ok(form) = Form::parse(&headers, &Bytes::copy_from_slice(body)) else { return };
    let _ = (form.get("req"), form.get("csrf"));
    let fields = PasswordLogin::parse(&form);
    if fields.validate().is_ok() {
        assert!(!fields.login.is_empty() && !fields.password.is_empty(), "validate lets no empty field through");
        assert_eq!(fields.login, fields.login.trim(), "the login is trimmed");
    }
}

fn check_user_code(typed: &str) {
    if let Some(code) = normalize_user_code(typed) {
        let shown = display_user_code(&code);
        assert_eq!(normalize_user_code(&shown).as_deref(), Some(code.as_str()), "{typed:?} shown as {shown:?}");
    }
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn form_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    h
}

/// One Ed25519 signing key per process (key generation is too slow to repeat per input) and its public half.
fn hint_keys() -> &'static (Signer, Vec<PublicKey>) {
    static KEYS: OnceLock<(Signer, Vec<PublicKey>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let stored = crate::keys::generate(Algorithm::EdDsa).expect("Ed25519 key generation");
        let signer = Signer::from_stored(&stored).expect("a freshly generated key loads");
        let public = vec![signer.public_key()];
        (signer, public)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_entry_points_survive_garbage() {
        let inputs: [&[u8]; 10] = [
            b"",
            b"\n",
            b"\xff\xfe",
            b"issuer: [",
            b"Basic Og==\ngrant_type=x",
            b"Basic \xff\nclient_id=a&client_id=b",
            b"id_token_hint=a.b.c",
            b"{\"sub\":1}",
            b"user_code=wdjb-mjht",
            b"issuer_csrf=x; dex_session=y\nlogin=%20a%20&password=p&remember_me=1",
        ];
        for input in inputs {
            config(input);
            client_auth(input);
            id_token_hint(input);
            user_code(input);
            login_form(input);
        }
    }
}
