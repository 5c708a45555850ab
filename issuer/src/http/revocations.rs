//! The revocation feed, `GET /revocations?after=<seq>`: the revocation log (`crate::revocation`) page by
//! page, for gateways that must stop honouring tokens of a revoked session, user or group before the
//! tokens expire. Callers authenticate as a confidential client, as at the token endpoint
//! (`client_secret_basic`). What a gateway does with the entries is its business.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::{authenticate_client, Form};
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::RevocationKind;

/// Most entries in one page; a gateway that gets this many asks again from the new cursor.
pub const PAGE: u32 = 1000;

/// Most bytes of entry values in one page (with each entry's JSON around them, well under the 256 KiB a
/// gateway reads of a callout's answer); a page ends early rather than pass it. Long values (LDAP group DNs)
/// make for shorter pages, never for an answer a gateway cannot read.
pub const PAGE_BYTES: usize = 128 * 1024;

/// JSON around one entry's value: `{"kind":"group","value":,"revoked_at":1700000000},` and some.
const ENTRY_OVERHEAD: usize = 64;

/// Seconds a gateway should wait between polls (the `interval` member).
pub const POLL_INTERVAL_SECS: u64 = 5;

/// The feed's body.
#[derive(Debug, Serialize)]
pub struct Feed {
    /// The `seq` of the last entry listed, else the `after` asked for (`0` after a reset of an empty log):
    /// the `after` of the next poll. A decimal string, also sent as the `ETag`.
    pub cursor: String,
    /// Present and true when entries after `after` were already dropped by GC (the cursor is older than
    /// the retention horizon) or the cursor is not one of this log's: the page then starts at the oldest
    /// retained entry, and the gateway should rebuild its revocation set from this and the following pages
    /// rather than add to it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// The entries, oldest first.
    pub revocations: Vec<Entry>,
    /// Seconds to wait before the next poll.
    pub interval: u64,
}

/// One entry of the feed.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// `sid`, `sub`, `group` or `all`.
    pub kind: RevocationKind,
    /// The session id, subject or group; empty for `all`.
    pub value: String,
    /// Unix time (seconds) of the revocation: tokens issued (`iat`) at or before it are revoked.
    pub revoked_at: i64,
}

/// `GET /revocations`.
pub async fn revocations(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    match handle(&state, &uri, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Result<Response, TokenError> {
    let query = Form::from_query(uri.query()).map_err(TokenError::InvalidRequest)?;
    // Only the Authorization header authenticates here: a secret in a query string ends up in logs.
    let no_form = Form::from_query(None).map_err(TokenError::InvalidRequest)?;
    let client = authenticate_client(state, headers, &no_form).await?;
    if client.public {
        return Err(TokenError::InvalidClient { basic: headers.contains_key(header::AUTHORIZATION) });
    }
    let after: i64 = match query.get("after") {
        None => 0,
        Some(a) => a.parse().ok().filter(|a: &i64| *a >= 0).ok_or_else(|| {
            TokenError::InvalidRequest("after must be a cursor this feed returned (an integer from 0 to 2^63-1)".into())
        })?,
    };
    let bounds = state.storage.get_revocation_bounds().await?;
    // GC always keeps the newest entry, so `newest` is the highest `seq` ever assigned (0: none yet).
    let newest = bounds.map_or(0, |(_, max)| max);
    // Reset when entries in (after, oldest) were collected, or when the cursor is beyond anything this log
    // ever assigned (it came from another database, say one restored from a backup). Gaps in `seq` from
    // aborted inserts (PostgreSQL) can make this say reset when nothing was lost, which only costs a
    // rebuild.
    let reset = after > newest || bounds.is_some_and(|(oldest, _)| after < oldest - 1);
    if !reset && after == newest && if_none_match(headers, newest) {
        return Ok((StatusCode::NOT_MODIFIED, etag_headers(newest)).into_response());
    }
    let from = if reset { 0 } else { after };
    let mut rows = state.storage.list_revocations_after(from, PAGE).await?;
    let mut bytes = 0;
    // At least one entry, however long, so the cursor always moves.
    let fits = rows
        .iter()
        .position(|r| {
            bytes += ENTRY_OVERHEAD + serde_json::to_string(&r.value).map_or(6 * r.value.len(), |v| v.len());
            bytes > PAGE_BYTES
        })
        .map_or(rows.len(), |n| n.max(1));
    rows.truncate(fits);
    let cursor = rows.last().map_or(from, |r| r.seq);
    let feed = Feed {
        cursor: cursor.to_string(),
        reset,
        revocations: rows
            .into_iter()
            .map(|r| Entry { kind: r.kind, value: r.value, revoked_at: r.revoked_at })
            .collect(),
        interval: POLL_INTERVAL_SECS,
    };
    Ok((etag_headers(cursor), Json(feed)).into_response())
}

fn etag_headers(cursor: i64) -> [(header::HeaderName, HeaderValue); 2] {
    let etag = HeaderValue::from_str(&format!("\"{cursor}\"")).unwrap_or(HeaderValue::from_static("\"0\""));
    [(header::ETAG, etag), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}

/// Whether `If-None-Match` names the cursor (RFC 9110 §13.1.2: a list of entity tags, or `*`).
fn if_none_match(headers: &HeaderMap, cursor: i64) -> bool {
    let want = format!("\"{cursor}\"");
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').map(str::trim).any(|t| t == "*" || t == want || t.strip_prefix("W/") == Some(want.as_str()))
    })
}
