//! The request flow: [`decide`] what to do with a request, and [`resume`] after a callout to the issuer
//! answered. Everything here is a pure function of the configuration, the request, the keys, the shared
//! caches and `now`; `host` applies the resulting [`Decision`] and is the one place that turns it into
//! ABI calls and wire responses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::cache::{token_hash, Cache, CachedBearer, CachedIdToken, ClaimsMemo};
use crate::callout::{Callout, CalloutResponse};
use crate::config::{CookieConfig, FilterConfig, PathMatch, SameSite};
use crate::discovery::Provider;
use crate::oauth::{self, TokenEndpointError};
use crate::random::{self, Random};
use crate::request::RequestParts;
use crate::revocation::{Kind, Revocations};
use crate::session::{self, LoginFlow, Session};
use crate::token::{self, constant_time_eq, Expectations, TokenError};
use crate::url::HttpUrl;

/// A cached ID token with less than this left is refreshed before use.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// How long a login flow (redirect to issuer and back) may take.
pub const LOGIN_FLOW_LIFETIME: Duration = Duration::from_secs(600);

/// What a decision may need to know about the issuer. Reading it costs the host a copy of the provider
/// snapshot out of shared data, so decisions ask only when they need it: a request with a cached ID
/// token or an already-verified bearer token never does.
pub trait IssuerState {
    /// Discovery metadata and keys, once fetched.
    fn provider(&self) -> Option<&Provider>;
    /// The last attempt to reach the issuer failed.
    fn issuer_down(&self) -> bool;
}

/// Everything outside the request that a decision depends on.
pub struct Ctx<'a> {
    /// The current time.
    pub now: SystemTime,
    /// The issuer's metadata, keys and health, read on demand.
    pub issuer: &'a dyn IssuerState,
    /// Shared ID-token and bearer caches.
    pub cache: Cache<'a>,
    /// This worker's parsed claims of recent ID tokens.
    pub claims: &'a ClaimsMemo,
    /// Randomness for session ids, state, nonce and PKCE.
    pub rng: &'a dyn Random,
    /// Where metric events go.
    pub events: &'a dyn Fn(Event),
    /// Keys were refetched for this very request: an unknown `kid` is now final.
    pub keys_refetched: bool,
    /// The sessions, users and groups revoked (this worker's copy of the shared set).
    pub revocations: &'a Revocations,
}

impl<'a> Ctx<'a> {
    fn provider(&self) -> Option<&'a Provider> {
        self.issuer.provider()
    }

    fn now_secs(&self) -> u64 {
        self.now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// Something worth counting. Metric names are defined once, in [`Event::metric_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A browser was sent to the issuer.
    LoginStarted,
    /// A callback produced a session.
    LoginSucceeded,
    /// A callback failed.
    LoginFailed,
    /// A refresh produced a new ID token.
    RefreshSucceeded,
    /// The issuer ended the session (`invalid_grant`/`invalid_client`).
    RefreshRejected,
    /// The issuer could not be reached for a refresh.
    RefreshUnavailable,
    /// A session's ID token was in the shared cache.
    SessionCacheHit,
    /// A session's ID token was missing or expiring.
    SessionCacheMiss,
    /// A bearer token was found verified in the cache.
    BearerCacheHit,
    /// A bearer token had to be verified.
    BearerCacheMiss,
    /// A token failed verification, with [`TokenError::reason`].
    VerificationFailed(&'static str),
    /// `allowed_groups`/`allowed_emails` said no.
    Forbidden,
    /// A user signed out.
    SignedOut,
    /// A login got no refresh token although `offline_access` was asked for: the session ends with the ID
    /// token (see [`Event::log_message`]).
    NoRefreshToken,
    /// A refresh answered without an ID token (OpenID Connect Core §12.2 allows it).
    RefreshWithoutIdToken,
    /// A request failed because the issuer was unreachable.
    IssuerUnreachable,
    /// A request was refused before any check: a header the filter reads is not UTF-8, or
    /// `Authorization` holds more than one credential.
    MalformedRequest,
    /// A session or bearer token was refused because the issuer revoked it (by this kind of entry).
    Revoked(Kind),
    /// A back-channel logout token was accepted.
    BackchannelLogout,
    /// A back-channel logout request was refused, with the reason.
    BackchannelLogoutRejected(&'static str),
    /// A poll of the revocation feed failed (the set known so far stays in force).
    RevocationFeedFailed,
}

impl Event {
    /// The counter's name (Envoy prefixes `wasmcustom.`).
    pub fn metric_name(&self) -> String {
        let name = match self {
            Event::LoginStarted => "logins_started",
            Event::LoginSucceeded => "logins_succeeded",
            Event::LoginFailed => "logins_failed",
            Event::RefreshSucceeded => "refreshes_succeeded",
            Event::RefreshRejected => "refreshes_rejected",
            Event::RefreshUnavailable => "refreshes_unavailable",
            Event::SessionCacheHit => "session_cache_hits",
            Event::SessionCacheMiss => "session_cache_misses",
            Event::BearerCacheHit => "bearer_cache_hits",
            Event::BearerCacheMiss => "bearer_cache_misses",
            Event::VerificationFailed(reason) => return format!("tokengate.verification_failures.{reason}"),
            Event::Revoked(kind) => return format!("tokengate.revoked.{}", kind.as_str()),
            Event::BackchannelLogoutRejected(reason) => {
                return format!("tokengate.backchannel_logouts_rejected.{reason}")
            }
            Event::BackchannelLogout => "backchannel_logouts",
            Event::RevocationFeedFailed => "revocation_feed_failures",
            Event::Forbidden => "forbidden",
            Event::SignedOut => "sign_outs",
            Event::NoRefreshToken => "sessions_without_refresh_token",
            Event::RefreshWithoutIdToken => "refreshes_without_id_token",
            Event::IssuerUnreachable => "issuer_unreachable",
            Event::MalformedRequest => "malformed_requests",
        };
        format!("tokengate.{name}")
    }
}

impl Event {
    /// A line worth logging when this happens (at warning level), with the remedy; most events are only
    /// counted.
    pub fn log_message(&self) -> Option<&'static str> {
        match self {
            Event::NoRefreshToken => Some(
                "the issuer returned no refresh token although offline_access was requested, so sessions \
                 end when the ID token expires. OpenID Connect Core §11 lets a provider require prompt=consent \
                 for offline_access (panva oidc-provider, Google with access_type=offline): set \
                 auth_request_params {\"prompt\": \"consent\"}, or allow offline access for this client at the \
                 provider (Keycloak, Okta, Entra ID)",
            ),
            _ => None,
        }
    }
}

/// What the host should do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through after removing, then setting, these request headers; add `response_cookies` as
    /// `Set-Cookie` on the upstream's response.
    Forward {
        /// Headers to set (replacing any client copy).
        set_headers: Vec<(String, String)>,
        /// Client headers to remove first.
        remove_headers: Vec<String>,
        /// `Set-Cookie` values for the response.
        response_cookies: Vec<String>,
        /// Replace every `Cookie` header with this value (bytes, as the client sent them), or remove
        /// them when it is empty; `None` leaves them as they are.
        upstream_cookie: Option<Vec<u8>>,
    },
    /// Answer 302.
    Redirect {
        /// `Location`.
        location: String,
        /// `Set-Cookie` values.
        set_cookies: Vec<String>,
    },
    /// Answer locally: an error, or the answer to a request the filter serves itself (back-channel logout).
    Deny {
        /// HTTP status.
        status: u16,
        /// Short label for logs (never a secret).
        reason: &'static str,
        /// Extra response headers (`WWW-Authenticate`, `Set-Cookie`, content type).
        headers: Vec<(String, String)>,
        /// Response body.
        body: String,
    },
    /// Pause, call the issuer, then [`resume`] with `then` and the answer.
    Call {
        /// The request to make.
        callout: Callout,
        /// What the answer is for.
        then: Pending,
    },
    /// Pause, fetch discovery and JWKS (only the JWKS when `jwks_only`), store them, and [`decide`]
    /// again; if the fetch fails, answer with [`issuer_unreachable`].
    FetchKeys {
        /// Discovery is known; only the keys are wanted (unknown `kid`).
        jwks_only: bool,
    },
    /// Read the request body (at most `limit` bytes, else answer 413), put it in
    /// [`RequestParts::body`], and [`decide`] again. proxy-wasm hands a filter the body only after it let
    /// the headers go on (ABI 0.2.1; proxy-wasm/spec#63), so Envoy may already have sent them upstream:
    /// the local answer at the end of the body resets that upstream request.
    ReadBody {
        /// The largest body accepted (bytes).
        limit: usize,
        /// Request headers to remove before the headers go on (lower-case names).
        remove_headers: Vec<String>,
    },
}

/// What a callout's answer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Authorization-code exchange for this login flow.
    CodeExchange {
        /// The opened flow cookie.
        flow: LoginFlow,
        /// Its name, to clear it.
        flow_cookie: String,
    },
    /// Refresh of this session.
    Refresh {
        /// The opened session cookie.
        session: Session,
        /// The ID token cached for it, possibly still usable (boxed: it is the largest part of a decision).
        cached: Option<Box<CachedIdToken>>,
        /// The refresh token presented.
        refresh_token: String,
        /// Its rotation generation.
        generation: u32,
        /// This request's hold on the session's refresh lease.
        lease: String,
    },
    /// A pause while another request refreshes this session; then the session is looked at again.
    AwaitRefresh {
        /// The opened session cookie.
        session: Session,
        /// How long it has waited.
        wait: Wait,
    },
    /// Revocation during sign-out; the answer does not change where the browser goes.
    SignOut {
        /// Where to send the browser.
        location: String,
        /// Cookies to clear.
        set_cookies: Vec<String>,
    },
}

/// Decides what to do with a request.
pub fn decide(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts) -> Decision {
    if let Some(name) = req.malformed_header() {
        (ctx.events)(Event::MalformedRequest);
        return malformed(name);
    }
    if req.has_ambiguous_authorization() {
        (ctx.events)(Event::MalformedRequest);
        return deny_page(
            req,
            400,
            "ambiguous_authorization",
            "Bad request: more than one Authorization credential",
            "The request carries more than one Authorization credential; RFC 9110 §11.6.2 allows one.",
            Vec::new(),
        );
    }
    if req.path_only() == cfg.backchannel_logout_path {
        return backchannel_logout(cfg, ctx, req);
    }
    if (cfg.skip_cors_preflight && req.is_cors_preflight()) || is_skipped(cfg, req) {
        return Decision::Forward {
            set_headers: Vec::new(),
            remove_headers: spoofable_headers(cfg, req),
            response_cookies: Vec::new(),
            upstream_cookie: upstream_cookie(cfg, req),
        };
    }
    let path = req.path_only();
    if path == cfg.redirect_path {
        return callback(cfg, ctx, req);
    }
    if path == cfg.sign_out_path {
        return sign_out(cfg, ctx, req);
    }
    // A valid session wins over a client-sent Authorization header, which it replaces; without one, a
    // bearer token is checked on its own.
    if let Some(session) = open_session(cfg, ctx, req) {
        return with_session(cfg, ctx, req, session, Wait::default());
    }
    if let Some(token) = req.bearer_token() {
        return bearer(cfg, ctx, req, token);
    }
    start_login(cfg, ctx, req, clear_session_cookies(cfg, req))
}

/// Continues after the issuer answered a [`Decision::Call`].
pub fn resume(
    cfg: &FilterConfig,
    ctx: &Ctx<'_>,
    req: &RequestParts,
    pending: Pending,
    resp: &CalloutResponse,
) -> Decision {
    match pending {
        Pending::CodeExchange { flow, flow_cookie } => code_exchanged(cfg, ctx, req, flow, &flow_cookie, resp),
        Pending::Refresh { session, cached, refresh_token, generation, lease } => {
            let sid = session.id.clone();
            let d = refreshed(cfg, ctx, req, session, cached.map(|c| *c), (refresh_token, generation), resp);
            // Only now: the rotated refresh token is stored, so whoever takes the lease next presents it.
            ctx.cache.release_refresh_lease(&sid, &lease);
            d
        }
        Pending::AwaitRefresh { session, wait } => with_session(cfg, ctx, req, session, wait),
        Pending::SignOut { location, set_cookies } => Decision::Redirect { location, set_cookies },
    }
}

/// The answer when the issuer is needed but unreachable: fail closed with 503.
pub fn issuer_unreachable(ctx: &Ctx<'_>, req: &RequestParts) -> Decision {
    (ctx.events)(Event::IssuerUnreachable);
    deny_page(
        req,
        503,
        "issuer_unreachable",
        "Identity provider unreachable",
        "The identity provider cannot be reached right now, so you cannot be signed in. Please try again in a moment.",
        Vec::new(),
    )
}

// === bearer tokens ===

fn bearer(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts, token: &str) -> Decision {
    let now = ctx.now_secs();
    let hash = token_hash(token);
    let mut remove = spoofable_headers(cfg, req);
    if !cfg.pass_authorization_header {
        remove.push("authorization".into());
    }
    if let Some(hit) = ctx.cache.get_bearer(&hash, now) {
        (ctx.events)(Event::BearerCacheHit);
        if let Some(kind) = ctx.revocations.revokes(&hit.claims) {
            return revoked_bearer(ctx, kind);
        }
        return identity(cfg, ctx, req, &hit.claims, None, remove, Vec::new());
    }
    (ctx.events)(Event::BearerCacheMiss);
    let Some(provider) = ctx.provider() else {
        return Decision::FetchKeys { jwks_only: false };
    };
    let want = Expectations {
        issuer: &cfg.issuer,
        client_id: &cfg.client_id,
        audiences: &cfg.audiences,
        nonce: None,
        clock_skew: cfg.clock_skew,
        now,
    };
    match token::verify(token, &provider.jwks, &want) {
        Ok(v) => {
            ctx.cache.put_bearer(
                &CachedBearer {
                    hash,
                    expires_at: v.expires_at.saturating_add(cfg.clock_skew.as_secs()),
                    claims: v.claims.clone(),
                },
                now,
            );
            if let Some(kind) = ctx.revocations.revokes(&v.claims) {
                return revoked_bearer(ctx, kind);
            }
            identity(cfg, ctx, req, &v.claims, None, remove, Vec::new())
        }
        Err(TokenError::UnknownKey) if !ctx.keys_refetched && provider.may_refetch_for_unknown_kid(now) => {
            Decision::FetchKeys { jwks_only: true }
        }
        Err(e) => {
            (ctx.events)(Event::VerificationFailed(e.reason()));
            Decision::Deny {
                status: 401,
                reason: e.reason(),
                headers: vec![
                    ("www-authenticate".into(), format!("Bearer error=\"invalid_token\", error_description=\"{e}\"")),
                    ("cache-control".into(), "no-store".into()),
                ],
                body: String::new(),
            }
        }
    }
}

/// 401 for a bearer token the issuer revoked (RFC 6750 §3.1 `invalid_token`): a client with a refresh
/// token finds the refresh refused too, and logs in again.
fn revoked_bearer(ctx: &Ctx<'_>, kind: Kind) -> Decision {
    (ctx.events)(Event::Revoked(kind));
    Decision::Deny {
        status: 401,
        reason: "revoked",
        headers: vec![
            ("www-authenticate".into(), "Bearer error=\"invalid_token\", error_description=\"token revoked\"".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: String::new(),
    }
}

// === sessions ===

fn open_session(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts) -> Option<Session> {
    let raw = session::join(|n| req.cookie(n), &cfg.cookie.name)?;
    cfg.keyring.open::<Session>(&cfg.cookie.name, &raw, ctx.now_secs()).ok()
}

fn with_session(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts, session: Session, wait: Wait) -> Decision {
    let now = ctx.now_secs();
    let cached = ctx.cache.get_session(&session.id, now);
    if cached.as_ref().is_some_and(|c| c.signed_out) {
        // Signed out (on any worker): this cookie is a leftover, its refresh token revoked.
        return start_login(cfg, ctx, req, clear_session_cookies(cfg, req));
    }
    if let Some(c) = cached.as_ref().filter(|c| c.expires_at > now + REFRESH_MARGIN.as_secs()) {
        (ctx.events)(Event::SessionCacheHit);
        return serve_cached(cfg, ctx, req, &session, c);
    }
    (ctx.events)(Event::SessionCacheMiss);
    let still_valid = cached.as_ref().filter(|c| c.expires_at > now);
    match (newest_refresh_token(&session, cached.as_ref()).0, ctx.provider()) {
        (Some(_), Some(p)) => {
            let Ok(lease) = random::hex_token(ctx.rng, 8) else {
                return internal_error(req);
            };
            let until = now.saturating_add(crate::callout::TIMEOUT_MS / 1000 + 2);
            if !ctx.cache.try_refresh_lease(&session.id, now, until, &lease) {
                // Another request is refreshing this session right now.
                if let Some(c) = still_valid {
                    return serve_cached(cfg, ctx, req, &session, c);
                }
                return wait_for_refresh(cfg, ctx, req, session, wait);
            }
            // Another request may have finished a refresh between the read above and the lease: read again,
            // and never present a refresh token older than the newest.
            let cached = ctx.cache.get_session(&session.id, now);
            if let Some(c) = cached.as_ref().filter(|c| c.expires_at > now + REFRESH_MARGIN.as_secs() && !c.signed_out)
            {
                ctx.cache.release_refresh_lease(&session.id, &lease);
                return serve_cached(cfg, ctx, req, &session, c);
            }
            let (Some(rt), generation) = newest_refresh_token(&session, cached.as_ref()) else {
                ctx.cache.release_refresh_lease(&session.id, &lease);
                return start_login(cfg, ctx, req, clear_session_cookies(cfg, req));
            };
            match oauth::refresh_request(cfg, &p.metadata, &rt) {
                Ok(callout) => Decision::Call {
                    callout,
                    then: Pending::Refresh {
                        session,
                        cached: cached.map(Box::new),
                        refresh_token: rt,
                        generation,
                        lease,
                    },
                },
                Err(_) => {
                    ctx.cache.release_refresh_lease(&session.id, &lease);
                    issuer_unreachable(ctx, req)
                }
            }
        }
        (Some(_), None) => match still_valid {
            Some(c) => use_id_token(cfg, ctx, req, &session.id, c, Vec::new()),
            None => Decision::FetchKeys { jwks_only: false },
        },
        (None, _) => match still_valid {
            Some(c) => use_id_token(cfg, ctx, req, &session.id, c, Vec::new()),
            None => start_login(cfg, ctx, req, clear_session_cookies(cfg, req)),
        },
    }
}

/// How long, and how often, a request waits for another request's refresh of the same session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wait {
    /// Unix seconds of the first wait (0: not waiting yet).
    pub since: u64,
    /// Round trips so far.
    pub rounds: u16,
}

/// At most this many round trips per waiting request (a bound on the load waiting puts on the issuer).
pub const MAX_REFRESH_WAITS: u16 = 500;

/// Waits for the refresh another request is making: proxy-wasm gives a stream no timer, so the wait is one
/// round trip to the issuer's discovery document (cheap, cacheable), after which the session is looked at
/// again. Refreshing in parallel instead would present the same refresh token twice, which a provider
/// with strict rotation takes for a replay (panva's oidc-provider then revokes the whole grant). The wait
/// ends when the other refresh lands, or after the refresh callout's own timeout has surely passed.
fn wait_for_refresh(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts, session: Session, wait: Wait) -> Decision {
    let now = ctx.now_secs();
    let since = if wait.since == 0 { now } else { wait.since };
    let deadline = since.saturating_add(crate::callout::TIMEOUT_MS / 1000 + 3);
    if wait.rounds >= MAX_REFRESH_WAITS || now > deadline {
        return issuer_unreachable(ctx, req);
    }
    match Callout::get(cfg, &cfg.discovery_url()) {
        Ok(callout) => Decision::Call {
            callout,
            then: Pending::AwaitRefresh { session, wait: Wait { since, rounds: wait.rounds.saturating_add(1) } },
        },
        Err(_) => issuer_unreachable(ctx, req),
    }
}

/// The newer of the cookie's and the cache's refresh tokens, with its generation: the higher generation
/// wins, and on a tie the cookie's (what the browser was handed last).
fn newest_refresh_token(session: &Session, cached: Option<&CachedIdToken>) -> (Option<String>, u32) {
    match cached {
        Some(c)
            if c.refresh_token.is_some() && (c.generation > session.generation || session.refresh_token.is_none()) =>
        {
            (c.refresh_token.clone(), c.generation)
        }
        _ => (session.refresh_token.clone(), session.generation),
    }
}

/// Forwards with the cached ID token, bringing the browser's cookie up to the cache's newest refresh token.
fn serve_cached(
    cfg: &FilterConfig,
    ctx: &Ctx<'_>,
    req: &RequestParts,
    session: &Session,
    c: &CachedIdToken,
) -> Decision {
    let cookies = newest_refresh_token_cookies(cfg, ctx, req, session, c);
    use_id_token(cfg, ctx, req, &session.id, c, cookies)
}

/// A `Set-Cookie` for the session when the shared cache holds a newer refresh token than the browser sent
/// (a response with it was lost, or went to a request another worker served), so the browser is never left
/// with, or handed, an older one than the newest.
fn newest_refresh_token_cookies(
    cfg: &FilterConfig,
    ctx: &Ctx<'_>,
    req: &RequestParts,
    session: &Session,
    cached: &CachedIdToken,
) -> Vec<String> {
    match &cached.refresh_token {
        Some(rt) if cached.generation > session.generation && Some(rt) != session.refresh_token.as_ref() => {
            let newer = Session { refresh_token: Some(rt.clone()), generation: cached.generation, ..session.clone() };
            session_cookies(cfg, ctx, req, &newer).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Forwards with a session's ID token, unless the issuer revoked it: then the session ends on this gateway
/// (its cached ID token is replaced by a tombstone, as at sign-out) and the browser logs in again.
fn use_id_token(
    cfg: &FilterConfig,
    ctx: &Ctx<'_>,
    req: &RequestParts,
    sid: &str,
    c: &CachedIdToken,
    cookies: Vec<String>,
) -> Decision {
    let claims = ctx.claims.claims_of_trusted(&c.id_token).unwrap_or_default();
    if let Some(kind) = ctx.revocations.revokes(&claims) {
        (ctx.events)(Event::Revoked(kind));
        ctx.cache.put_session(&CachedIdToken::signed_out(sid), ctx.now_secs());
        return start_login(cfg, ctx, req, clear_session_cookies(cfg, req));
    }
    let mut remove = spoofable_headers(cfg, req);
    if cfg.pass_authorization_header {
        remove.push("authorization".into());
    }
    identity(cfg, ctx, req, &claims, Some(&c.id_token), remove, cookies)
}

/// The session cookies a response finally carries, decided again when the upstream's response headers
/// arrive: a slow upstream (a long poll) may answer after another request rotated the refresh token, and the
/// cookies computed when this request arrived would then hand the browser an older one than the newest.
/// Cookies other than the session's pass unchanged; a session signed out meanwhile is cleared instead.
pub fn finalize_response_cookies(
    cfg: &FilterConfig,
    ctx: &Ctx<'_>,
    req: &RequestParts,
    cookies: Vec<String>,
) -> Vec<String> {
    let name_value = |c: &str| -> Option<(String, String)> {
        let pair = c.split(';').next()?;
        let (n, v) = pair.split_once('=')?;
        Some((n.trim().to_owned(), v.trim().to_owned()))
    };
    let ours: Vec<(String, String)> = cookies
        .iter()
        .filter_map(|c| name_value(c))
        .filter(|(n, v)| !v.is_empty() && session::is_own_cookie(&cfg.cookie.name, n))
        .collect();
    if ours.is_empty() {
        return cookies;
    }
    let lookup = |n: &str| ours.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let now = ctx.now_secs();
    let Some(s) = session::join(lookup, &cfg.cookie.name)
        .and_then(|raw| cfg.keyring.open::<Session>(&cfg.cookie.name, &raw, now).ok())
    else {
        return cookies;
    };
    let Some(cached) = ctx.cache.get_session(&s.id, now) else {
        return cookies;
    };
    let keep_others = |cookies: Vec<String>| -> Vec<String> {
        cookies
            .into_iter()
            .filter(|c| name_value(c).is_none_or(|(n, _)| !session::is_own_cookie(&cfg.cookie.name, &n)))
            .collect()
    };
    if cached.signed_out {
        let mut out = keep_others(cookies);
        out.extend(clear_session_cookies(cfg, req));
        return out;
    }
    let fresh = newest_refresh_token_cookies(cfg, ctx, req, &s, &cached);
    if fresh.is_empty() {
        return cookies;
    }
    let mut out = keep_others(cookies);
    out.extend(fresh);
    out
}

/// Adds `Set-Cookie` values to whatever a decision answers with.
fn with_cookies(d: Decision, cookies: Vec<String>) -> Decision {
    match d {
        Decision::Forward { set_headers, remove_headers, mut response_cookies, upstream_cookie } => {
            response_cookies.extend(cookies);
            Decision::Forward { set_headers, remove_headers, response_cookies, upstream_cookie }
        }
        Decision::Redirect { location, mut set_cookies } => {
            set_cookies.extend(cookies);
            Decision::Redirect { location, set_cookies }
        }
        Decision::Deny { status, reason, mut headers, body } => {
            headers.extend(cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
            Decision::Deny { status, reason, headers, body }
        }
        other => other,
    }
}

fn refreshed(
    cfg: &FilterConfig,
    ctx: &Ctx<'_>,
    req: &RequestParts,
    session: Session,
    cached: Option<CachedIdToken>,
    (used, used_generation): (String, u32),
    resp: &CalloutResponse,
) -> Decision {
    let now = ctx.now_secs();
    let end_session = |ctx: &Ctx<'_>| {
        ctx.cache.delete_session(&session.id);
        start_login(cfg, ctx, req, clear_session_cookies(cfg, req))
    };
    let tokens = match oauth::parse_token_response(resp) {
        Ok(t) => t,
        Err(e) if e.ends_session() => {
            (ctx.events)(Event::RefreshRejected);
            return end_session(ctx);
        }
        Err(_) => {
            (ctx.events)(Event::RefreshUnavailable);
            return match cached.as_ref().filter(|c| c.expires_at > now) {
                Some(c) => use_id_token(cfg, ctx, req, &session.id, c, Vec::new()),
                None => issuer_unreachable(ctx, req),
            };
        }
    };
    let current = ctx.cache.get_session(&session.id, now);
    if current.as_ref().is_some_and(|c| c.signed_out) {
        // The user signed out while this refresh was in flight: it must not bring the session back.
        return start_login(cfg, ctx, req, clear_session_cookies(cfg, req));
    }
    // A provider that does not rotate sends no new refresh token: the one used stays valid. A rotated one is
    // stored before anything else can fail: the one used is spent.
    let (newest, generation) = match tokens.refresh_token.clone() {
        Some(rt) if rt != used => (rt, used_generation.saturating_add(1)),
        _ => (used, used_generation),
    };
    let base = current.or(cached).unwrap_or(CachedIdToken {
        sid: session.id.clone(),
        id_token: String::new(),
        expires_at: 0,
        refresh_token: None,
        generation: 0,
        signed_out: false,
    });
    let kept = CachedIdToken { refresh_token: Some(newest.clone()), generation, ..base };
    ctx.cache.put_session(&kept, now);
    let rotated_cookies = |identity: Option<String>| {
        let newer = Session { refresh_token: Some(newest.clone()), generation, identity, ..session.clone() };
        if Some(&newest) != session.refresh_token.as_ref() || newer.identity != session.identity {
            session_cookies(cfg, ctx, req, &newer).unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    let still_valid = (kept.expires_at > now).then_some(&kept);
    let Some(id_token) = tokens.id_token else {
        // OpenID Connect Core §12.2 lets a refresh answer without an ID token: the cached one serves while it
        // is valid (with the rotated refresh token kept), and then the session is over.
        (ctx.events)(Event::RefreshWithoutIdToken);
        return match still_valid {
            Some(c) => use_id_token(cfg, ctx, req, &session.id, c, rotated_cookies(session.identity.clone())),
            None => end_session(ctx),
        };
    };
    let unavailable = |ctx: &Ctx<'_>| {
        (ctx.events)(Event::RefreshUnavailable);
        let d = match still_valid {
            Some(c) => use_id_token(cfg, ctx, req, &session.id, c, Vec::new()),
            None => issuer_unreachable(ctx, req),
        };
        with_cookies(d, rotated_cookies(session.identity.clone()))
    };
    let Some(provider) = ctx.provider() else {
        return unavailable(ctx);
    };
    let want = issuer_token_expectations(cfg, now, None);
    let verified = match token::verify(&id_token, &provider.jwks, &want) {
        Ok(v) => v,
        // The provider signs with a key published since the last fetch: fetch the keys, then decide again
        // (the next refresh presents the rotated refresh token stored above).
        Err(TokenError::UnknownKey) if !ctx.keys_refetched && provider.may_refetch_for_unknown_kid(now) => {
            return Decision::FetchKeys { jwks_only: true };
        }
        Err(e) => {
            (ctx.events)(Event::VerificationFailed(e.reason()));
            return unavailable(ctx);
        }
    };
    // OpenID Connect Core §12.2: the refreshed ID token keeps the login's `iss` (checked by `verify`),
    // `sub`, `aud` and `azp`; anything else is not this session's user any more.
    let expected = session.identity.clone().or_else(|| {
        (!kept.id_token.is_empty())
            .then(|| token::claims_of_trusted(&kept.id_token))
            .flatten()
            .map(|c| token::identity_fingerprint(&c))
    });
    let fingerprint = token::identity_fingerprint(&verified.claims);
    if expected.is_some_and(|e| e != fingerprint) {
        (ctx.events)(Event::VerificationFailed("identity_changed"));
        return end_session(ctx);
    }
    let entry = CachedIdToken { id_token, expires_at: verified.expires_at, ..kept.clone() };
    ctx.cache.put_session(&entry, now);
    (ctx.events)(Event::RefreshSucceeded);
    use_id_token(cfg, ctx, req, &session.id, &entry, rotated_cookies(Some(fingerprint)))
}

/// What a token the issuer sent this client directly must satisfy (an ID token from a code exchange, with the
/// login's `nonce`, or a refresh; a logout token): issued for this client alone, not for the extra
/// `audiences` bearer tokens may name.
fn issuer_token_expectations<'a>(cfg: &'a FilterConfig, now: u64, nonce: Option<&'a str>) -> Expectations<'a> {
    Expectations {
        issuer: &cfg.issuer,
        client_id: &cfg.client_id,
        audiences: &[],
        nonce,
        clock_skew: cfg.clock_skew,
        now,
    }
}

/// `Set-Cookie` values that store `s`, split as needed, and clear stale chunks.
fn session_cookies(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts, s: &Session) -> Option<Vec<String>> {
    let sealed = cfg.keyring.seal(&cfg.cookie.name, s, ctx.rng).ok()?;
    let remaining = Duration::from_secs(s.expires_at.saturating_sub(ctx.now_secs()));
    let parts = session::split(&cfg.cookie.name, &sealed);
    let mut out: Vec<String> = session::chunk_names(|n| req.cookie(n), &cfg.cookie.name)
        .into_iter()
        .filter(|n| !parts.iter().any(|(p, _)| p == n))
        .map(|n| session::clear_cookie(&cfg.cookie, &n))
        .collect();
    out.extend(parts.iter().map(|(n, v)| session::set_cookie(&cfg.cookie, n, v, remaining, cfg.cookie.same_site)));
    Some(out)
}

fn clear_session_cookies(cfg: &FilterConfig, req: &RequestParts) -> Vec<String> {
    session::chunk_names(|n| req.cookie(n), &cfg.cookie.name)
        .iter()
        .map(|n| session::clear_cookie(&cfg.cookie, n))
        .collect()
}

// === login ===

/// At most this many login flows are kept in cookies; more are cleared, bounding the `Cookie` header.
pub const MAX_LOGIN_FLOWS: usize = 4;

fn flow_cookie_prefix(cfg: &FilterConfig) -> String {
    format!("{}_csrf_", cfg.cookie.name)
}

fn flow_cookie_name(cfg: &FilterConfig, flow_id: &str) -> String {
    format!("{}{flow_id}", flow_cookie_prefix(cfg))
}

/// Flow cookies are scoped to the callback path, whatever `cookie.path` says, so they reach it and
/// nothing else.
fn flow_cookie_attrs(cfg: &FilterConfig) -> CookieConfig {
    CookieConfig { path: cfg.redirect_path.clone(), ..cfg.cookie.clone() }
}

fn clear_flow_cookie(cfg: &FilterConfig, name: &str) -> String {
    session::clear_cookie(&flow_cookie_attrs(cfg), name)
}

fn redirect_uri(cfg: &FilterConfig, req: &RequestParts) -> String {
    format!("{}://{}{}", req.scheme, req.authority, cfg.redirect_path)
}

fn start_login(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts, mut set_cookies: Vec<String>) -> Decision {
    if !req.is_navigation() {
        let mut headers =
            vec![("www-authenticate".to_string(), "Bearer".to_string()), ("cache-control".into(), "no-store".into())];
        headers.extend(set_cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
        return Decision::Deny { status: 401, reason: "unauthenticated", headers, body: String::new() };
    }
    if ctx.issuer.issuer_down() {
        return issuer_unreachable(ctx, req);
    }
    let Some(provider) = ctx.provider() else {
        return Decision::FetchKeys { jwks_only: false };
    };
    let now = ctx.now_secs();
    let ids = (|| {
        Some((
            random::hex_token(ctx.rng, 4).ok()?,
            random::token(ctx.rng, 16).ok()?,
            random::token(ctx.rng, 16).ok()?,
            random::token(ctx.rng, 32).ok()?,
        ))
    })();
    let Some((flow_id, state_secret, nonce, verifier)) = ids else {
        return internal_error(req);
    };
    let state = format!("{flow_id}.{state_secret}");
    let Ok(location) =
        oauth::authorization_url(cfg, &provider.metadata, &redirect_uri(cfg, req), &state, &nonce, &verifier)
    else {
        return issuer_unreachable(ctx, req);
    };
    let flow =
        LoginFlow { state, nonce, verifier, return_to: req.url(), expires_at: now + LOGIN_FLOW_LIFETIME.as_secs() };
    let name = flow_cookie_name(cfg, &flow_id);
    let Ok(sealed) = cfg.keyring.seal(&name, &flow, ctx.rng) else {
        return internal_error(req);
    };
    // The callback is a cross-site navigation from the issuer: a Strict cookie would not come back.
    let same_site = match cfg.cookie.same_site {
        SameSite::None => SameSite::None,
        _ => SameSite::Lax,
    };
    let prefix = flow_cookie_prefix(cfg);
    let open_flows: Vec<&str> = req.cookie_names_with_prefix(&prefix).collect();
    if open_flows.len() >= MAX_LOGIN_FLOWS {
        set_cookies.extend(open_flows.iter().map(|n| clear_flow_cookie(cfg, n)));
    }
    set_cookies.push(session::set_cookie(&flow_cookie_attrs(cfg), &name, &sealed, LOGIN_FLOW_LIFETIME, same_site));
    (ctx.events)(Event::LoginStarted);
    Decision::Redirect { location, set_cookies }
}

fn callback(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts) -> Decision {
    let query = req.query();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let state = param("state").unwrap_or_default();
    let flow_id = state.split('.').next().unwrap_or_default();
    let valid_id = flow_id.len() == 8 && flow_id.bytes().all(|b| b.is_ascii_hexdigit());
    let flow_cookie = flow_cookie_name(cfg, if valid_id { flow_id } else { "none" });
    let clear_flow = if valid_id && req.cookie(&flow_cookie).is_some() {
        vec![clear_flow_cookie(cfg, &flow_cookie)]
    } else {
        Vec::new()
    };
    let fail = |reason: &'static str, message: &str, cookies: Vec<String>| {
        (ctx.events)(Event::LoginFailed);
        deny_page(req, 400, reason, "Sign-in failed", message, cookies)
    };
    if let Some(error) = param("error") {
        return fail(
            "authorization_error",
            &format!("The identity provider refused the sign-in ({}). Go back and try again.", html_escape(error)),
            clear_flow,
        );
    }
    if !valid_id {
        return fail(
            "bad_state",
            "The sign-in response's state is missing or not one this gateway issued. Go back and try again.",
            clear_flow,
        );
    }
    let Some(raw) = req.cookie(&flow_cookie) else {
        return fail(
            "no_flow_cookie",
            "This sign-in has expired or cookies are disabled. Go back and try again.",
            clear_flow,
        );
    };
    let flow: LoginFlow = match cfg.keyring.open(&flow_cookie, raw, ctx.now_secs()) {
        Ok(f) => f,
        Err(_) => return fail("bad_flow_cookie", "This sign-in has expired. Go back and try again.", clear_flow),
    };
    if !constant_time_eq(flow.state.as_bytes(), state.as_bytes()) {
        return fail(
            "state_mismatch",
            "The sign-in response does not match this browser. Go back and try again.",
            clear_flow,
        );
    }
    let Some(code) = param("code").filter(|c| !c.is_empty()) else {
        return fail("no_code", "The sign-in response has no authorization code.", clear_flow);
    };
    let Some(provider) = ctx.provider() else {
        return Decision::FetchKeys { jwks_only: false };
    };
    match oauth::code_request(cfg, &provider.metadata, code, &redirect_uri(cfg, req), &flow.verifier) {
        Ok(callout) => Decision::Call { callout, then: Pending::CodeExchange { flow, flow_cookie } },
        Err(_) => issuer_unreachable(ctx, req),
    }
}

fn code_exchanged(
    cfg: &FilterConfig,
    ctx: &Ctx<'_>,
    req: &RequestParts,
    flow: LoginFlow,
    flow_cookie: &str,
    resp: &CalloutResponse,
) -> Decision {
    let mut set_cookies = vec![clear_flow_cookie(cfg, flow_cookie)];
    let fail = |reason: &'static str, message: &str, cookies: Vec<String>| {
        (ctx.events)(Event::LoginFailed);
        deny_page(req, 401, reason, "Sign-in failed", message, cookies)
    };
    let tokens = match oauth::parse_token_response(resp) {
        Ok(t) => t,
        Err(TokenEndpointError::Rejected { code }) => {
            return fail(
                "code_rejected",
                &format!(
                    "The identity provider rejected the sign-in ({}). Go back and try again.",
                    html_escape(code.as_str())
                ),
                set_cookies,
            )
        }
        Err(_) => {
            (ctx.events)(Event::LoginFailed);
            let mut d = issuer_unreachable(ctx, req);
            if let Decision::Deny { headers, .. } = &mut d {
                headers.extend(set_cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
            }
            return d;
        }
    };
    let (Some(id_token), Some(provider)) = (tokens.id_token, ctx.provider()) else {
        return fail("no_id_token", "The identity provider returned no ID token.", set_cookies);
    };
    let now = ctx.now_secs();
    let want = issuer_token_expectations(cfg, now, Some(&flow.nonce));
    let verified = match token::verify(&id_token, &provider.jwks, &want) {
        Ok(v) => v,
        Err(e) => {
            (ctx.events)(Event::VerificationFailed(e.reason()));
            return fail(e.reason(), "The identity provider's answer could not be verified.", set_cookies);
        }
    };
    if let Some(denied) = forbidden(cfg, ctx, req, &verified.claims) {
        return denied;
    }
    let Ok(sid) = random::hex_token(ctx.rng, 16) else {
        return internal_error(req);
    };
    if tokens.refresh_token.is_none() && cfg.scopes.iter().any(|s| s == "offline_access") {
        (ctx.events)(Event::NoRefreshToken);
    }
    ctx.cache.put_session(
        &CachedIdToken {
            sid: sid.clone(),
            id_token,
            expires_at: verified.expires_at,
            refresh_token: tokens.refresh_token.clone(),
            generation: 0,
            signed_out: false,
        },
        now,
    );
    let session = Session {
        id: sid,
        refresh_token: tokens.refresh_token,
        expires_at: now + cfg.cookie.lifetime.as_secs(),
        identity: Some(token::identity_fingerprint(&verified.claims)),
        generation: 0,
    };
    let Some(cookies) = session_cookies(cfg, ctx, req, &session) else {
        return internal_error(req);
    };
    set_cookies.extend(cookies);
    (ctx.events)(Event::LoginSucceeded);
    let location = if is_safe_redirect(cfg, req, &flow.return_to) { flow.return_to } else { "/".into() };
    Decision::Redirect { location, set_cookies }
}

// === sign-out ===

fn sign_out(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts) -> Decision {
    if req.header("sec-fetch-site").is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site")) {
        return sign_out_confirmation(req);
    }
    let set_cookies = clear_session_cookies(cfg, req);
    let session = open_session(cfg, ctx, req);
    let now = ctx.now_secs();
    let cached = session.as_ref().and_then(|s| ctx.cache.get_session(&s.id, now)).filter(|c| !c.signed_out);
    let newest = session.as_ref().and_then(|s| newest_refresh_token(s, cached.as_ref()).0);
    let id_token_hint = cached.map(|c| c.id_token).filter(|t| !t.is_empty());
    if let Some(s) = &session {
        // A tombstone, not a deletion: a refresh still in flight must not bring the session back, and a
        // leftover copy of the cookie must not refresh again.
        ctx.cache.put_session(&CachedIdToken::signed_out(&s.id), now);
    }
    let after = cfg.post_logout_redirect_uri.clone().or_else(|| {
        req.query_param("rd").filter(|rd| is_safe_redirect(cfg, req, rd)).map(|rd| {
            if rd.starts_with('/') {
                format!("{}://{}{rd}", req.scheme, req.authority)
            } else {
                rd
            }
        })
    });
    let end_session =
        ctx.provider().and_then(|p| p.metadata.end_session_endpoint.as_deref()).and_then(|e| HttpUrl::parse(e).ok());
    let location = match end_session {
        Some(endpoint) => {
            // OpenID Connect RP-Initiated Logout 1.0 §2.
            let mut params = vec![("client_id", cfg.client_id.as_str())];
            if let Some(hint) = &id_token_hint {
                params.push(("id_token_hint", hint));
            }
            if let Some(after) = &after {
                params.push(("post_logout_redirect_uri", after));
            }
            endpoint.with_query(&params)
        }
        None => after.unwrap_or_else(|| "/".into()),
    };
    (ctx.events)(Event::SignedOut);
    let revoke = newest
        .zip(ctx.provider().and_then(|p| p.metadata.revocation_endpoint.as_deref()))
        .and_then(|(rt, endpoint)| oauth::revocation_request(cfg, endpoint, &rt).ok());
    match revoke {
        Some(callout) => Decision::Call { callout, then: Pending::SignOut { location, set_cookies } },
        None => Decision::Redirect { location, set_cookies },
    }
}

// === back-channel logout ===

/// An `invalid_request` answer with an RFC 6749 §5.2-style JSON body, never cached: how the back-channel
/// logout endpoint refuses a request (Back-Channel Logout 1.0 §2.8).
fn invalid_request(status: u16, reason: &'static str, description: &str) -> Decision {
    let body = serde_json::json!({"error": "invalid_request", "error_description": description});
    Decision::Deny {
        status,
        reason,
        headers: vec![("content-type".into(), "application/json".into()), ("cache-control".into(), "no-store".into())],
        body: body.to_string(),
    }
}

/// 413 for a request body over `limit` bytes, with a JSON error like the endpoint's others.
pub fn body_too_large(limit: usize) -> Decision {
    invalid_request(413, "body_too_large", &format!("the request body is larger than {limit} bytes"))
}

/// The largest back-channel logout request body read: a form with one JWT of a few hundred bytes.
pub const MAX_LOGOUT_BODY: usize = 16 * 1024;

/// OpenID Connect Back-Channel Logout 1.0 §2.5–2.8 at `backchannel_logout_path`: a `POST` of
/// `logout_token=<JWT>` (form-encoded) from the issuer. The token is verified (see
/// [`token::verify_logout_token`]) and its `jti` recorded against replay; then its `sid` (or, without one,
/// its `sub`) is added to the shared revocation set as revoked at the token's `iat`, which ends every
/// session of it on every worker of this gateway (and a bearer token carrying it). Answers 200, or 400
/// with an RFC 6749-style `error` (§2.8), never cached; 503 when the keys cannot be had.
fn backchannel_logout(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts) -> Decision {
    let reject = |reason: &'static str, description: &str| {
        (ctx.events)(Event::BackchannelLogoutRejected(reason));
        invalid_request(400, reason, description)
    };
    let busy = || Decision::Deny {
        status: 503,
        reason: "busy",
        headers: vec![("cache-control".into(), "no-store".into()), ("retry-after".into(), "1".into())],
        body: String::new(),
    };
    if req.method != "POST" {
        return Decision::Deny {
            status: 405,
            reason: "method_not_allowed",
            headers: vec![("allow".into(), "POST".into()), ("cache-control".into(), "no-store".into())],
            body: String::new(),
        };
    }
    // What can be refused from the headers is refused before the body is read, so nothing goes upstream.
    let form_type = req
        .header("content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return reject("content_type", "expected an application/x-www-form-urlencoded body");
    }
    if req
        .header("content-length")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .is_some_and(|n| n > MAX_LOGOUT_BODY as u64)
    {
        return body_too_large(MAX_LOGOUT_BODY);
    }
    let Some(body) = &req.body else {
        // The headers may reach the upstream before the filter's answer (see `Decision::ReadBody`): they carry
        // no credential and no identity header.
        let mut remove_headers = spoofable_headers(cfg, req);
        remove_headers.extend(["authorization".to_owned(), "cookie".to_owned()]);
        return Decision::ReadBody { limit: MAX_LOGOUT_BODY, remove_headers };
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return reject("malformed_body", "the body is not UTF-8");
    };
    let fields = crate::url::parse_query(text);
    let mut tokens = fields.iter().filter(|(k, _)| k == "logout_token");
    let token = match (tokens.next(), tokens.next()) {
        (Some((_, t)), None) if !t.is_empty() => t,
        (Some(_), Some(_)) => return reject("repeated_parameter", "logout_token is repeated"),
        _ => return reject("no_logout_token", "the body has no logout_token"),
    };
    let Some(provider) = ctx.provider() else {
        return if ctx.issuer.issuer_down() {
            issuer_unreachable(ctx, req)
        } else {
            Decision::FetchKeys { jwks_only: false }
        };
    };
    let now = ctx.now_secs();
    let want = issuer_token_expectations(cfg, now, None);
    let logout = match token::verify_logout_token(token, &provider.jwks, &want) {
        Ok(l) => l,
        Err(TokenError::UnknownKey) if !ctx.keys_refetched => {
            if provider.may_refetch_for_unknown_kid(now) {
                return Decision::FetchKeys { jwks_only: true };
            }
            // The keys were fetched moments ago for another unknown `kid`: this one may be newer still, and
            // a 400 would end the issuer's retries (§2.8), so ask it to come back.
            return busy();
        }
        Err(e) => return reject(e.reason(), &format!("logout_token: {e}")),
    };
    if !ctx.cache.remember_logout_jti(&logout.jti, logout.refused_after, now) {
        return reject("replayed", "logout_token was already used (jti)");
    }
    let (kind, value) = match (&logout.sid, &logout.sub) {
        (Some(sid), _) => (Kind::Sid, sid.clone()),
        (None, Some(sub)) => (Kind::Sub, sub.clone()),
        (None, None) => return reject("missing_claim", "logout_token has neither sid nor sub"),
    };
    let written = ctx.cache.update_revocations(&|set| {
        let mut next = set.clone();
        next.insert(kind, &value, logout.iat);
        next
    });
    if written.is_none() {
        // The issuer retries on anything but 400 (§2.8), and a retry's `jti` is the same: forget it again.
        ctx.cache.forget_logout_jti(&logout.jti);
        return busy();
    }
    (ctx.events)(Event::BackchannelLogout);
    Decision::Deny {
        status: 200,
        reason: "backchannel_logout",
        headers: vec![("cache-control".into(), "no-store".into())],
        body: String::new(),
    }
}

// === identity, access control, pages ===

/// Checks access, then forwards with the identity headers.
fn identity(
    cfg: &FilterConfig,
    ctx: &Ctx<'_>,
    req: &RequestParts,
    claims: &Map<String, Value>,
    id_token: Option<&str>,
    remove_headers: Vec<String>,
    response_cookies: Vec<String>,
) -> Decision {
    if let Some(denied) = forbidden(cfg, ctx, req, claims) {
        return denied;
    }
    let mut set_headers = claim_headers(cfg, claims);
    if let (true, Some(t)) = (cfg.pass_authorization_header, id_token) {
        set_headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    Decision::Forward { set_headers, remove_headers, response_cookies, upstream_cookie: upstream_cookie(cfg, req) }
}

/// The 403 page when `allowed_groups`/`allowed_emails` say no.
fn forbidden(cfg: &FilterConfig, ctx: &Ctx<'_>, req: &RequestParts, claims: &Map<String, Value>) -> Option<Decision> {
    if is_allowed(cfg, claims) {
        return None;
    }
    (ctx.events)(Event::Forbidden);
    Some(deny_page(
        req,
        403,
        "forbidden",
        "Access denied",
        "You are signed in, but your account is not allowed to use this application.",
        Vec::new(),
    ))
}

/// `allowed_groups` and `allowed_emails`, each checked when configured.
pub fn is_allowed(cfg: &FilterConfig, claims: &Map<String, Value>) -> bool {
    if !cfg.allowed_groups.is_empty() {
        let groups: Vec<&str> = match claims.get("groups") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        };
        if !groups.iter().any(|g| cfg.allowed_groups.iter().any(|a| a == g)) {
            return false;
        }
    }
    if !cfg.allowed_emails.is_empty() {
        let Some(email) = claims.get("email").and_then(Value::as_str) else {
            return false;
        };
        if claims.get("email_verified") == Some(&Value::Bool(false)) {
            return false;
        }
        let email = email.to_ascii_lowercase();
        let ok =
            cfg.allowed_emails.iter().any(
                |a| {
                    if a.starts_with('@') {
                        email.ends_with(a.as_str())
                    } else {
                        email == *a
                    }
                },
            );
        if !ok {
            return false;
        }
    }
    true
}

/// The headers a client must not be able to set: every `claims_to_headers` header, and every header the
/// request carries whose name becomes one of them once `_` is read as `-` (WSGI, CGI, PHP and several
/// Node frameworks fold the two, and Envoy passes underscores by default).
fn spoofable_headers(cfg: &FilterConfig, req: &RequestParts) -> Vec<String> {
    let mut out: Vec<String> = cfg.claims_to_headers.iter().map(|(_, h)| h.clone()).collect();
    for name in req.header_names() {
        if name.contains('_') && !out.iter().any(|o| o == name) {
            let folded = name.replace('_', "-");
            if cfg.claims_to_headers.iter().any(|(_, h)| *h == folded) {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// The `Cookie` header the upstream gets: the filter's own cookies (session chunks and login flows) are
/// taken out unless `cookie.pass_to_upstream` says otherwise. The session cookie carries the refresh token.
fn upstream_cookie(cfg: &FilterConfig, req: &RequestParts) -> Option<Vec<u8>> {
    if cfg.cookie.pass_to_upstream {
        return None;
    }
    let flows = flow_cookie_prefix(cfg);
    req.cookie_header_without(|n| session::is_own_cookie(&cfg.cookie.name, n) || n.starts_with(&flows))
}

/// The answer to a request whose header `name`, one the filter reads, is not UTF-8: 401 `invalid_token`
/// for `Authorization` (RFC 6750 §3.1), 400 for anything else. Never a session, never upstream.
fn malformed(name: &str) -> Decision {
    let mut headers = vec![
        ("cache-control".to_string(), "no-store".to_string()),
        ("content-type".to_string(), "text/plain; charset=utf-8".to_string()),
    ];
    if name == "authorization" {
        headers.push((
            "www-authenticate".into(),
            "Bearer error=\"invalid_token\", error_description=\"the Authorization header is not UTF-8\"".into(),
        ));
        return Decision::Deny { status: 401, reason: "malformed_authorization", headers, body: String::new() };
    }
    let body = format!("Bad request: the {name} header is not valid UTF-8\n");
    Decision::Deny { status: 400, reason: "malformed_header", headers, body }
}

/// Claim values as header values: strings as-is, arrays comma-joined, control characters dropped.
pub fn claim_headers(cfg: &FilterConfig, claims: &Map<String, Value>) -> Vec<(String, String)> {
    cfg.claims_to_headers
        .iter()
        .filter_map(|(claim, header)| {
            let value = match claims.get(claim)? {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(","),
                Value::Null => return None,
                other => other.to_string(),
            };
            let clean: String = value.chars().filter(|c| !c.is_control()).collect();
            Some((header.clone(), clean))
        })
        .collect()
}

fn is_skipped(cfg: &FilterConfig, req: &RequestParts) -> bool {
    let path = req.path_only();
    cfg.skip.iter().any(|rule| {
        (rule.methods.is_empty() || rule.methods.contains(&req.method))
            && match &rule.path {
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
                PathMatch::Regex(re) => re.is_match(path),
            }
    })
}

/// Whether the browser may be sent to `target` after login or logout: a local path, the request's own
/// host, or an `allowed_redirect_domains` entry (`host`, or `.domain` for it and its subdomains).
pub fn is_safe_redirect(cfg: &FilterConfig, req: &RequestParts, target: &str) -> bool {
    if target.starts_with('/') {
        // `//evil` and `/\evil` are protocol-relative to browsers.
        return !target.starts_with("//")
            && !target.starts_with("/\\")
            && !target.chars().any(|c| c.is_control() || c == '\\');
    }
    let Ok(url) = HttpUrl::parse(target) else {
        return false;
    };
    url.host == req.host()
        || cfg.allowed_redirect_domains.iter().any(|d| {
            let d = d.split(':').next().unwrap_or(d);
            match d.strip_prefix('.') {
                Some(suffix) => url.host == suffix || url.host.ends_with(&format!(".{suffix}")),
                None => url.host == d,
            }
        })
}

/// A sign-out that another site started (Fetch Metadata `Sec-Fetch-Site: cross-site`: a link, form or
/// script elsewhere; the `SameSite=Lax` cookie rides along on a link) does not sign out: it gets a page of
/// this site whose button posts the same request back, same-origin. A forced logout would otherwise end
/// the issuer session too, and so every application of it. The page cannot be framed. Browsers that send
/// no Fetch Metadata (and non-browser clients) sign out at once, as before.
fn sign_out_confirmation(req: &RequestParts) -> Decision {
    let action = html_escape(&req.path);
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign out?</title></head><body>\
         <h1>Sign out?</h1><p>Another site sent you here to sign out. Close this page to stay signed in.</p>\
         <form method=\"post\" action=\"{action}\"><button type=\"submit\">Sign out</button></form></body></html>\n"
    );
    Decision::Deny {
        status: 200,
        reason: "sign_out_confirmation",
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
            ("x-frame-options".into(), "DENY".into()),
            ("content-security-policy".into(), "default-src 'none'; frame-ancestors 'none'".into()),
        ],
        body,
    }
}

fn internal_error(req: &RequestParts) -> Decision {
    deny_page(req, 500, "internal", "Internal error", "Something went wrong. Please try again.", Vec::new())
}

/// A local error: a small HTML page for browsers, plain text for everyone else.
fn deny_page(
    req: &RequestParts,
    status: u16,
    reason: &'static str,
    title: &str,
    message: &str,
    set_cookies: Vec<String>,
) -> Decision {
    let mut headers = vec![("cache-control".to_string(), "no-store".to_string())];
    let body = if req.is_navigation() {
        headers.push(("content-type".into(), "text/html; charset=utf-8".into()));
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{message}</p></body></html>\n"
        )
    } else {
        headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
        format!("{title}\n")
    };
    headers.extend(set_cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
    Decision::Deny { status, reason, headers, body }
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
