//! What goes into tokens: scopes, ID-token and access-token claims, refresh-token strings. Signing is
//! `keys`' job; deciding *whether* to issue is the grants' job.

use aws_lc_rs::{digest, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::borrow::Borrow;

use crate::config::{Client, Config};
use crate::storage::Identity;

/// Prefix of Dex's cross-client scope: `audience:server:client_id:<peer>`.
pub const CROSS_CLIENT_PREFIX: &str = "audience:server:client_id:";

/// Scopes this issuer understands (besides cross-client ones).
pub const SCOPES: &[&str] = &["openid", "email", "profile", "groups", "offline_access"];

/// Claims this issuer may put into tokens.
pub const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "sid",
    "email",
    "email_verified",
    "name",
    "preferred_username",
    "groups",
];

/// Why a scope request is refused (`invalid_scope`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    /// `openid` is missing.
    #[error("the openid scope is required")]
    MissingOpenid,
    /// An unknown scope.
    #[error("unsupported scope {0:?}")]
    Unknown(String),
    /// A cross-client scope for a client that does not trust the requester.
    #[error("client {peer:?} does not trust {client:?}")]
    Untrusted {
        /// The peer named in the scope.
        peer: String,
        /// The requesting client.
        client: String,
    },
}

/// Parses and checks a space-separated scope list for `client`. `peers` are the clients the cross-client
/// scopes name ([`crate::state::AppState::scope_peers`]); a peer missing from it does not exist.
pub fn parse_scopes<C: std::borrow::Borrow<Client>>(
    client: &str,
    scope: &str,
    peers: &[C],
) -> Result<Vec<String>, ScopeError> {
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if let Some(peer) = s.strip_prefix(CROSS_CLIENT_PREFIX) {
            let trusted = peer == client
                || peers
                    .iter()
                    .map(Borrow::borrow)
                    .any(|p: &Client| p.id == peer && p.trusted_peers.iter().any(|t| t == client));
            if !trusted {
                return Err(ScopeError::Untrusted { peer: peer.to_owned(), client: client.to_owned() });
            }
        } else if !SCOPES.contains(&s) {
            return Err(ScopeError::Unknown(s.to_owned()));
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_owned());
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        return Err(ScopeError::MissingOpenid);
    }
    Ok(scopes)
}

fn has(scopes: &[String], s: &str) -> bool {
    scopes.iter().any(|x| x == s)
}

/// `aud` as OIDC allows it: a string for one audience, an array for several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `id` is among the audiences.
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Audience::One(a) => a == id,
            Audience::Many(v) => v.iter().any(|a| a == id),
        }
    }
}

/// OIDC Core §2 ID token claims (plus the profile/email claims and `groups`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience.
    pub aud: Audience,
    /// Authorized party: the client the token was issued to.
    pub azp: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Time of the login.
    pub auth_time: i64,
    /// The request's nonce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Access-token hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// Hash of the authorization code issued with the ID token at the authorization endpoint (hybrid flow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c_hash: Option<String>,
    /// Session id: the browser session (`crate::session`), or for grants without a browser (device,
    /// password) the refresh-token family. What RP-initiated logout ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// With the `email` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// With the `email` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// With the `profile` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// With the `profile` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// With the `groups` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// What access tokens look like on the wire: `oauth2.accessTokenFormat` (tokengate's own key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessTokenFormat {
    /// A JWT any resource server can verify against JWKS (RFC 9068, header `typ: at+jwt`), as Dex's access
    /// tokens are JWTs. Costs a second signature per token response.
    #[default]
    Jwt,
    /// [`seal_access_token`]: readable by this issuer only (`/userinfo`, `/token/introspect`).
    Opaque,
}

/// RFC 9068 §2.1: the JWS `typ` of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Access-token claims (RFC 9068 §2.2), the same in both formats. `/userinfo` and introspection read them
/// back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the ID token's `sub`.
    pub sub: String,
    /// The ID token's audience: the client, after the peers of any cross-client scope. RFC 9068 §3 would
    /// name the resource server; Dex's access tokens carry the client, and setups that check `aud` against
    /// the client id (kube-apiserver, Envoy `jwt_authn` `audiences`) keep working.
    pub aud: Audience,
    /// The client the token was issued to.
    pub client_id: String,
    /// Expiry (Unix seconds): the ID token's.
    pub exp: i64,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Time of the login (Unix seconds); absent from opaque tokens sealed before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Unique id.
    pub jti: String,
    /// The session the token was minted in, as in the ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The user's claims as of issue, filtered by scope.
    #[serde(flatten)]
    pub profile: serde_json::Map<String, Value>,
}

/// `preferred_username`: what the connector reported, or the display name when it reported none.
fn preferred_username(id: &Identity) -> String {
    if id.preferred_username.is_empty() {
        id.username.clone()
    } else {
        id.preferred_username.clone()
    }
}

/// Everything needed to mint one pair of tokens.
pub struct Mint<'a> {
    /// The configuration (issuer, lifetimes).
    pub config: &'a Config,
    /// Client the tokens are for.
    pub client_id: &'a str,
    /// Granted scopes.
    pub scopes: &'a [String],
    /// The user.
    pub identity: &'a Identity,
    /// The request's nonce.
    pub nonce: Option<&'a str>,
    /// Time of the login.
    pub auth_time: i64,
    /// Issue time.
    pub iat: i64,
    /// Session id.
    pub sid: Option<&'a str>,
    /// `sub` when the tokens are not a user's: the client id for the client credentials grant (RFC 9068
    /// §2.2). `None`: the identity's subject.
    pub subject: Option<&'a str>,
}

impl Mint<'_> {
    /// The `sub` of the tokens: [`Mint::subject`] when set, else the identity's in the configured format.
    pub fn sub(&self) -> String {
        self.subject.map_or_else(|| self.config.subject(self.identity), str::to_owned)
    }

    /// The profile claims the scopes allow.
    pub fn profile(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        let id = self.identity;
        if has(self.scopes, "email") {
            m.insert("email".into(), id.email.clone().into());
            m.insert("email_verified".into(), id.email_verified.into());
        }
        if has(self.scopes, "profile") {
            m.insert("name".into(), id.username.clone().into());
            m.insert("preferred_username".into(), preferred_username(id).into());
        }
        if has(self.scopes, "groups") {
            m.insert("groups".into(), id.groups.clone().into());
        }
        m
    }

    /// ID-token claims. The access token issued with it, if any, feeds `at_hash` and the authorization code
    /// issued with it (hybrid flow), if any, `c_hash` (OIDC Core §3.3.2.11), both for the signing algorithm
    /// `alg`.
    pub fn id_token(
        &self,
        alg: crate::keys::Algorithm,
        access_token: Option<&str>,
        code: Option<&str>,
    ) -> IdTokenClaims {
        let id = self.identity;
        IdTokenClaims {
            iss: self.config.issuer.as_str().trim_end_matches('/').to_owned(),
            sub: self.sub(),
            aud: audience(self.client_id, self.scopes),
            azp: self.client_id.to_owned(),
            exp: self.iat + self.config.expiry.id_tokens.as_secs() as i64,
            iat: self.iat,
            auth_time: self.auth_time,
            nonce: self.nonce.map(str::to_owned),
            at_hash: access_token.map(|t| crate::keys::left_half_hash(alg, t)),
            c_hash: code.map(|c| crate::keys::left_half_hash(alg, c)),
            sid: self.sid.map(str::to_owned),
            email: has(self.scopes, "email").then(|| id.email.clone()),
            email_verified: has(self.scopes, "email").then_some(id.email_verified),
            name: has(self.scopes, "profile").then(|| id.username.clone()),
            preferred_username: has(self.scopes, "profile").then(|| preferred_username(id)),
            groups: has(self.scopes, "groups").then(|| id.groups.clone()),
        }
    }

    /// Access-token claims; `jti` makes each token distinct.
    pub fn access_token(&self, jti: String) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: self.config.issuer.as_str().trim_end_matches('/').to_owned(),
            sub: self.sub(),
            aud: audience(self.client_id, self.scopes),
            client_id: self.client_id.to_owned(),
            exp: self.iat + self.config.expiry.id_tokens.as_secs() as i64,
            iat: self.iat,
            auth_time: Some(self.auth_time),
            scope: self.scopes.join(" "),
            jti,
            sid: self.sid.map(str::to_owned),
            profile: self.profile(),
        }
    }
}

/// The audience of tokens issued to `client_id` with `scopes`. Dex semantics: cross-client scopes name the
/// peers, and the requester is always in `aud` too, after them (OIDC Core §3.1.3.7 step 3: a client rejects
/// an ID token whose `aud` lacks its client_id); `azp` names the requester (§2).
pub fn audience(client_id: &str, scopes: &[String]) -> Audience {
    let mut aud: Vec<String> =
        scopes.iter().filter_map(|s| s.strip_prefix(CROSS_CLIENT_PREFIX)).map(str::to_owned).collect();
    if !aud.iter().any(|a| a == client_id) {
        aud.push(client_id.to_owned());
    }
    match <[String; 1]>::try_from(aud) {
        Ok([one]) => Audience::One(one),
        Err(many) => Audience::Many(many),
    }
}

// === access tokens ===

fn access_token_key(server_key: &[u8]) -> hmac::Key {
    let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, server_key), b"tokengate access-token key");
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

/// An opaque access token (`oauth2.accessTokenFormat: opaque`): the claims (base64url JSON) and an
/// HMAC-SHA256 over them, keyed from the server key. Opaque to clients, as RFC 6749 §1.4 has it: only this
/// issuer reads them (at `/userinfo` and `/token/introspect`), so they need no signature others can verify,
/// and a token response costs one asymmetric signature (the ID token's) instead of two.
pub fn seal_access_token(server_key: &[u8], claims: &AccessTokenClaims) -> Result<String, serde_json::Error> {
    let payload = B64.encode(serde_json::to_vec(claims)?);
    let mac = hmac::sign(&access_token_key(server_key), payload.as_bytes());
    Ok(format!("{payload}.{}", B64.encode(mac.as_ref())))
}

/// The claims of an access token this issuer sealed, or `None` if it did not (expiry is the caller's check).
pub fn open_access_token(server_key: &[u8], token: &str) -> Option<AccessTokenClaims> {
    let (payload, mac) = token.split_once('.')?;
    // Constant-time comparison inside `verify`.
    hmac::verify(&access_token_key(server_key), payload.as_bytes(), &B64.decode(mac).ok()?).ok()?;
    serde_json::from_slice(&B64.decode(payload).ok()?).ok()
}

/// Why an access token is refused at `/userinfo` (and inactive at introspection).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AccessTokenError {
    /// Neither a JWT signed by a published key nor an opaque token sealed with the server key.
    #[error("{}", self.description())]
    Invalid,
    /// A JWT of this issuer whose `typ` is not `at+jwt` (an ID token, RFC 9068 §4 step 2).
    #[error("{}", self.description())]
    NotAnAccessToken,
    /// Signed or sealed here, for another issuer URL (the configuration changed).
    #[error("{}", self.description())]
    WrongIssuer,
    /// `exp` is before `now`.
    #[error("{}", self.description())]
    Expired,
}

impl AccessTokenError {
    /// The message, for an RFC 6750 `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            AccessTokenError::Invalid => "the access token is not valid",
            AccessTokenError::NotAnAccessToken => "the token is not an access token",
            AccessTokenError::WrongIssuer => "the token is not an access token of this issuer",
            AccessTokenError::Expired => "the access token has expired",
        }
    }
}

/// Whether a JWS header marks an RFC 9068 access token: `typ` `at+jwt` or `application/at+jwt` (§4),
/// case-insensitively.
pub fn is_access_token_header(header: &Value) -> bool {
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ) == ACCESS_TOKEN_TYP
}

/// The claims of an access token in either format, whatever `oauth2.accessTokenFormat` says now (so
/// tokens issued before a format change keep working until they expire): a JWT must verify against one
/// of `keys` (JWKS: signing, next and retired keys) with `typ` `at+jwt` (or `application/at+jwt`, RFC
/// 9068 §4), anything else must open with `server_key`. Then `iss` must be `issuer` and `exp` not before
/// `now` (Unix seconds).
pub fn verify_access_token(
    issuer: &str,
    server_key: &[u8],
    keys: &[crate::keys::PublicKey],
    token: &str,
    now: i64,
) -> Result<AccessTokenClaims, AccessTokenError> {
    let claims = if token.split('.').count() == 3 {
        let (header, claims) = crate::keys::verify_jws(token, keys).ok_or(AccessTokenError::Invalid)?;
        if !is_access_token_header(&header) {
            return Err(AccessTokenError::NotAnAccessToken);
        }
        serde_json::from_value::<AccessTokenClaims>(claims).map_err(|_| AccessTokenError::Invalid)?
    } else {
        open_access_token(server_key, token).ok_or(AccessTokenError::Invalid)?
    };
    if claims.iss != issuer {
        return Err(AccessTokenError::WrongIssuer);
    }
    if claims.exp < now {
        return Err(AccessTokenError::Expired);
    }
    Ok(claims)
}

// === refresh-token strings ===

/// A refresh token as the client holds it: `<id>.<secret>`.
pub struct RefreshTokenString {
    /// Public id (the storage key).
    pub id: String,
    /// Secret half; only its hash is stored.
    pub secret: String,
}

impl RefreshTokenString {
    /// A fresh random token.
    pub fn random() -> Self {
        Self { id: random_b64::<16>(), secret: random_b64::<32>() }
    }

    /// Splits `<id>.<secret>`.
    pub fn parse(s: &str) -> Option<Self> {
        let (id, secret) = s.split_once('.')?;
        let ok = |p: &str| {
            !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (ok(id) && ok(secret)).then(|| Self { id: id.to_owned(), secret: secret.to_owned() })
    }

    /// The successor of this token. Derived, not random: a replica that sees this token again within the
    /// reuse interval recomputes the same successor without the issuer ever storing a plaintext token, and
    /// nobody without the server key can compute it.
    pub fn successor(&self, server_key: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, server_key);
        let id = hmac::sign(&key, format!("refresh-id\0{}", self.id).as_bytes());
        let secret = hmac::sign(&key, format!("refresh-secret\0{}\0{}", self.id, self.secret).as_bytes());
        Self { id: B64.encode(&id.as_ref()[..16]), secret: B64.encode(secret.as_ref()) }
    }

    /// What storage keeps of the secret.
    pub fn secret_hash(&self) -> String {
        B64.encode(digest::digest(&digest::SHA256, self.secret.as_bytes()).as_ref())
    }

    /// The token string.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// `N` random bytes, base64url.
pub fn random_b64<const N: usize>() -> String {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    B64.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let yaml = "issuer: http://127.0.0.1:5556\nweb: {http: '127.0.0.1:5556'}\nstorage: {type: memory}\nstaticClients:\n- {id: app, secret: s}\n- {id: kubernetes, secret: s, trustedPeers: [app]}\n- {id: other, secret: s}\n";
        Config::parse("t.yaml", yaml, &|_| None).unwrap()
    }

    #[test]
    fn scope_parsing_cases() {
        let c = config();
        let cases: &[(&str, &str, Result<usize, ScopeError>)] = &[
            ("app", "openid email", Ok(2)),
            ("app", "openid openid  groups", Ok(2)),
            ("app", "email", Err(ScopeError::MissingOpenid)),
            ("app", "openid admin", Err(ScopeError::Unknown("admin".into()))),
            ("app", "openid audience:server:client_id:kubernetes", Ok(2)),
            ("app", "openid audience:server:client_id:app", Ok(2)),
            (
                "other",
                "openid audience:server:client_id:kubernetes",
                Err(ScopeError::Untrusted { peer: "kubernetes".into(), client: "other".into() }),
            ),
            (
                "app",
                "openid audience:server:client_id:ghost",
                Err(ScopeError::Untrusted { peer: "ghost".into(), client: "app".into() }),
            ),
        ];
        for (client, scope, want) in cases {
            assert_eq!(&parse_scopes(client, scope, &c.static_clients).map(|v| v.len()), want, "{client} {scope:?}");
        }
    }

    #[test]
    fn cross_client_scope_puts_the_peer_in_aud_and_the_requester_in_azp() {
        let c = config();
        let scopes =
            parse_scopes("app", "openid groups audience:server:client_id:kubernetes", &c.static_clients).unwrap();
        let identity = crate::storage::conformance::identity();
        let mint = Mint {
            config: &c,
            client_id: "app",
            scopes: &scopes,
            identity: &identity,
            nonce: None,
            auth_time: 1,
            iat: 2,
            sid: None,
            subject: None,
        };
        let claims = mint.id_token(crate::keys::Algorithm::Rs256, Some("at"), None);
        assert_eq!(claims.aud, Audience::Many(vec!["kubernetes".into(), "app".into()]), "the requester is added");
        assert_eq!(claims.azp, "app");
        assert_eq!(claims.groups, Some(vec!["developers".into()]));
        assert_eq!(claims.email, None, "no email without the email scope");
        assert_eq!(claims.exp, 2 + 600);
    }

    #[test]
    fn access_tokens_open_only_with_the_key_that_sealed_them_and_untampered() {
        let c = config();
        let scopes = vec!["openid".to_owned(), "email".to_owned()];
        let identity = crate::storage::conformance::identity();
        let mint = Mint {
            config: &c,
            client_id: "app",
            scopes: &scopes,
            identity: &identity,
            nonce: None,
            auth_time: 1,
            iat: 2,
            sid: None,
            subject: None,
        };
        let token = seal_access_token(b"key", &mint.access_token("j".into())).unwrap();
        let claims = open_access_token(b"key", &token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.scope.as_str(), claims.profile["email"].as_str()),
            (crate::connector::dex_subject("u1", "local").as_str(), "openid email", Some("jane@example.com"))
        );
        assert!(open_access_token(b"other key", &token).is_none());
        let (payload, mac) = token.split_once('.').unwrap();
        let forged = format!(
            "{}.{mac}",
            B64.encode(String::from_utf8(B64.decode(payload).unwrap()).unwrap().replace("jane@", "john@"))
        );
        assert!(open_access_token(b"key", &forged).is_none(), "changed claims are refused");
        assert!(open_access_token(b"key", "no-dot").is_none());
    }

    #[test]
    fn access_token_format_defaults_to_jwt_and_opaque_is_a_setting() {
        assert_eq!(config().oauth2.access_token_format, AccessTokenFormat::Jwt);
        let base = "issuer: http://127.0.0.1:5556\nweb: {http: '127.0.0.1:5556'}\nstorage: {type: memory}\n";
        let opaque = Config::parse("t.yaml", &format!("{base}oauth2: {{accessTokenFormat: opaque}}\n"), &|_| None);
        assert_eq!(opaque.unwrap().oauth2.access_token_format, AccessTokenFormat::Opaque);
        let bad = Config::parse("t.yaml", &format!("{base}oauth2: {{accessTokenFormat: paseto}}\n"), &|_| None);
        let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("accessTokenFormat") && message.contains("opaque"), "{message}");
    }

    #[test]
    fn access_tokens_verify_in_either_format_and_nothing_else_passes() {
        let c = config();
        let scopes = vec!["openid".to_owned(), "groups".to_owned(), "audience:server:client_id:kubernetes".to_owned()];
        let identity = crate::storage::conformance::identity();
        let mint = Mint {
            config: &c,
            client_id: "app",
            scopes: &scopes,
            identity: &identity,
            nonce: None,
            auth_time: 1,
            iat: 100,
            sid: None,
            subject: None,
        };
        let signer =
            crate::keys::Signer::from_stored(&crate::keys::generate(crate::keys::Algorithm::Es256).unwrap()).unwrap();
        let keys = [signer.public_key()];
        let iss = "http://127.0.0.1:5556";
        let claims = mint.access_token("j".into());
        let jwt = signer.sign_typed_jwt(ACCESS_TOKEN_TYP, &claims).unwrap();
        let media_type = signer.sign_typed_jwt("application/AT+JWT", &claims).unwrap();
        let opaque = seal_access_token(b"key", &claims).unwrap();
        let id_token = signer.sign_jwt(&mint.id_token(signer.alg(), Some(&jwt), None)).unwrap();
        let mut other_issuer = claims.clone();
        other_issuer.iss = "https://elsewhere".into();
        let other_issuer = signer.sign_typed_jwt(ACCESS_TOKEN_TYP, &other_issuer).unwrap();
        let stranger = crate::keys::Signer::from_stored(&crate::keys::generate(crate::keys::Algorithm::Es256).unwrap())
            .unwrap()
            .sign_typed_jwt(ACCESS_TOKEN_TYP, &claims)
            .unwrap();
        let exp = 100 + 600;
        let cases: &[(&str, &str, i64, Result<(), AccessTokenError>)] = &[
            ("jwt", &jwt, exp, Ok(())),
            ("typ application/at+jwt, any case", &media_type, exp, Ok(())),
            ("opaque", &opaque, exp, Ok(())),
            ("jwt one second late", &jwt, exp + 1, Err(AccessTokenError::Expired)),
            ("opaque one second late", &opaque, exp + 1, Err(AccessTokenError::Expired)),
            ("an ID token", &id_token, exp, Err(AccessTokenError::NotAnAccessToken)),
            ("another issuer", &other_issuer, exp, Err(AccessTokenError::WrongIssuer)),
            ("a key not in JWKS", &stranger, exp, Err(AccessTokenError::Invalid)),
            ("garbage", "a.b.c", exp, Err(AccessTokenError::Invalid)),
            ("a refresh token", &RefreshTokenString::random().encode(), exp, Err(AccessTokenError::Invalid)),
        ];
        for (what, token, now, want) in cases {
            let got = verify_access_token(iss, b"key", &keys, token, *now);
            assert_eq!(&got.as_ref().map(|_| ()).map_err(Clone::clone), want, "{what}");
        }
        let got = verify_access_token(iss, b"key", &keys, &jwt, exp).unwrap();
        assert_eq!(got.aud, Audience::Many(vec!["kubernetes".into(), "app".into()]), "the ID token's audience");
        assert_eq!(
            (got.auth_time, got.scope.as_str()),
            (Some(1), "openid groups audience:server:client_id:kubernetes")
        );
        assert_eq!(got.profile["groups"], serde_json::json!(["developers"]));
        assert!(got.profile.get("email").is_none(), "no email without the email scope");
    }

    #[test]
    fn refresh_token_successor_is_deterministic_and_keyed() {
        let t = RefreshTokenString::random();
        let parsed = RefreshTokenString::parse(&t.encode()).unwrap();
        assert_eq!(parsed.successor(b"k").encode(), t.successor(b"k").encode());
        assert_ne!(t.successor(b"k").encode(), t.successor(b"other key").encode());
        assert!(RefreshTokenString::parse("no-dot").is_none());
        assert!(RefreshTokenString::parse("a.b/c").is_none());
    }
}
