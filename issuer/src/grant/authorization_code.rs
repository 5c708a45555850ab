//! `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6). A code is redeemed once; a replay
//! is answered with `invalid_grant` and revokes the refresh tokens the first redemption issued (§4.1.2).

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::{first_refresh_token, issue, revoke_family, Issue, NewFamily, TokenResponse};
use crate::config::Client;
use crate::http::Form;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::{AuthCode, StorageError};
use crate::token::random_b64;

fn pkce_matches(method: Option<&str>, challenge: &str, verifier: &str) -> bool {
    let valid = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = match method {
        Some("S256") => B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes())),
        _ => verifier.to_owned(),
    };
    valid && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// Exchanges a code for tokens.
pub async fn exchange(state: &AppState, client: &Client, form: &Form) -> Result<TokenResponse, TokenError> {
    let code_id = form.require("code")?;
    let code = match state.storage.get_auth_code(code_id).await {
        Ok(c) => c,
        Err(StorageError::NotFound) => {
            return Err(TokenError::InvalidGrant("authorization code is invalid or expired"))
        }
        Err(e) => return Err(e.into()),
    };
    if code.client_id != client.id {
        return Err(TokenError::InvalidGrant("authorization code was issued to another client"));
    }
    if code.redeemed_at.is_some() {
        return Err(replayed(state, code).await);
    }
    let now = state.clock.now();
    if now > code.expiry {
        return Err(TokenError::InvalidGrant("authorization code is invalid or expired"));
    }
    match form.get("redirect_uri") {
        Some(uri) if uri == code.redirect_uri => {}
        None if client.redirect_uris.len() == 1 => {}
        None => return Err(TokenError::InvalidRequest("missing parameter redirect_uri".into())),
        Some(_) => return Err(TokenError::InvalidGrant("redirect_uri does not match the authorization request")),
    }
    match (&code.code_challenge, form.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => {
            if !pkce_matches(code.code_challenge_method.as_deref(), challenge, verifier) {
                return Err(TokenError::InvalidGrant("code_verifier does not match the code_challenge"));
            }
        }
        (Some(_), None) => return Err(TokenError::InvalidGrant("code_verifier is required")),
        (None, Some(_)) => {
            return Err(TokenError::InvalidGrant(
                "code_verifier given, but the authorization request had no code_challenge",
            ))
        }
        (None, None) => {}
    }

    let family_id = random_b64::<16>();
    let fam = family_id.clone();
    let redeemed = state
        .storage
        .update_auth_code(
            code_id,
            Box::new(move |mut c| {
                if c.redeemed_at.is_some() {
                    return Err(StorageError::Conflict);
                }
                c.redeemed_at = Some(now);
                c.family_id = Some(fam);
                Ok(c)
            }),
        )
        .await;
    let code = match redeemed {
        Ok(c) => c,
        Err(StorageError::Conflict) => {
            let c = state.storage.get_auth_code(code_id).await?;
            return Err(replayed(state, c).await);
        }
        Err(StorageError::NotFound) => {
            return Err(TokenError::InvalidGrant("authorization code is invalid or expired"))
        }
        Err(e) => return Err(e.into()),
    };

    let refresh_token = first_refresh_token(
        state,
        NewFamily {
            family_id: &family_id,
            client_id: &client.id,
            scopes: &code.scopes,
            nonce: code.nonce.as_deref(),
            identity: &code.identity,
            auth_time: code.auth_time,
            now,
            session_id: code.session_id.as_deref(),
        },
    )
    .await?;
    issue(
        state,
        Issue {
            client_id: &client.id,
            scopes: &code.scopes,
            identity: &code.identity,
            nonce: code.nonce.as_deref(),
            auth_time: code.auth_time,
            iat: now,
            // The browser session's id; a code from before sessions existed names its family.
            sid: Some(code.session_id.as_deref().unwrap_or(&family_id)),
            refresh_token,
            grant: "authorization_code",
        },
    )
    .await
}

async fn replayed(state: &AppState, code: AuthCode) -> TokenError {
    tracing::warn!(target: "audit", event = "code_replay", client = %code.client_id, sub = %state.config.subject(&code.identity));
    if let Some(family) = &code.family_id {
        if let Err(e) = revoke_family(state, family, "code_replay").await {
            return e;
        }
    }
    TokenError::InvalidGrant("authorization code was already used")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(Some("S256"), challenge, verifier));
        assert!(!pkce_matches(Some("S256"), challenge, &verifier.replace('d', "e")));
        assert!(!pkce_matches(Some("plain"), challenge, verifier));
        assert!(pkce_matches(Some("plain"), verifier, verifier));
        assert!(!pkce_matches(Some("plain"), "short", "short"), "verifier shorter than 43 characters");
    }
}
