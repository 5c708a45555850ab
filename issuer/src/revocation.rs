//! Administrative revocation and the revocation log (issue 12): `issuer revoke` ends refresh-token families
//! and browser sessions and appends what it revoked to the log; RP-initiated logout appends the `sid` it
//! ended. Gateways learn of both through the feed (`GET /revocations`, `http/revocations.rs`), since the
//! ID and access tokens already out stay valid until they expire. Storage GC drops log entries older than
//! [`horizon`]: by then every token they could match has expired. Sessions removed here get back-channel
//! logouts (`crate::backchannel`).

use std::time::Duration;

use crate::grant::revoke_family;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::{Identity, RefreshToken, RevocationKind, StorageError};

/// Added to the longest token lifetime so that a token minted just before a revocation, checked by a
/// gateway with a slow clock, is still covered by the log.
const MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long log entries are kept: the longest lifetime of a token a gateway checks (`expiry.idTokens`,
/// which access tokens share) plus a five-minute margin.
pub fn horizon(config: &crate::config::Config) -> Duration {
    config.expiry.id_tokens + MARGIN
}

/// Appends one entry to the log at the state's `now`; returns its `seq`.
pub async fn record(state: &AppState, kind: RevocationKind, value: &str) -> Result<i64, StorageError> {
    let seq = state.storage.create_revocation(kind, value, state.clock.now()).await?;
    tracing::info!(target: "audit", event = "revocation_logged", kind = kind.as_str(), value, seq);
    Ok(seq)
}

/// What `issuer revoke` is asked to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every login whose email is this (case-insensitively); logged as the `sub` of each.
    User(String),
    /// Every login whose `sub` (as `config.subject` computes it) is this.
    Sub(String),
    /// Every login whose groups hold this group.
    Group(String),
    /// One browser session and what was minted in it; also a browserless family (its `sid`).
    Session(String),
    /// Everything.
    All,
}

/// As the command line names it (`user=jane@example.com`, `all`): for the audit log.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::User(v) => write!(f, "user={v}"),
            Target::Sub(v) => write!(f, "sub={v}"),
            Target::Group(v) => write!(f, "group={v}"),
            Target::Session(v) => write!(f, "session={v}"),
            Target::All => f.write_str("all"),
        }
    }
}

/// What [`revoke`] did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Refresh-token families removed.
    pub families: usize,
    /// Browser sessions removed.
    pub sessions: usize,
    /// Log entries appended, as `(kind, value, seq)`.
    pub logged: Vec<(RevocationKind, String, i64)>,
    /// The back-channel logouts sent for the sessions removed, still running: a caller about to exit
    /// awaits them.
    pub deliveries: Vec<(String, tokio::task::JoinHandle<crate::backchannel::Outcome>)>,
}

/// Revokes `target`: removes the matching refresh-token families and browser sessions (a session matches
/// by its user, or as the one a matching family was minted in, or by id for [`Target::Session`]), sends
/// back-channel logouts for the sessions removed, then appends the log entries (`sub` per user matched by
/// email, the `sub`, group or `all` asked for, and `sid` per session). Errors are storage failures; what
/// was removed before one stays removed.
pub async fn revoke(state: &AppState, target: &Target) -> Result<Summary, TokenError> {
    let config = &state.config;
    let matches = |identity: &Identity| match target {
        Target::User(email) => identity.email.eq_ignore_ascii_case(email),
        Target::Sub(sub) => config.subject(identity) == *sub,
        Target::Group(g) => identity.groups.iter().any(|x| x == g),
        Target::Session(_) => false,
        Target::All => true,
    };
    let tokens = state.storage.list_refresh_tokens().await?;
    let matched: Vec<&RefreshToken> = (tokens.iter())
        .filter(|t| match target {
            Target::Session(sid) => t.session_id.as_deref() == Some(sid.as_str()) || t.family_id == *sid,
            _ => matches(&t.identity),
        })
        .collect();
    let mut families: Vec<&str> = matched.iter().map(|t| t.family_id.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    let mut summary = Summary::default();
    for f in &families {
        revoke_family(state, f, "admin").await?;
    }
    summary.families = families.len();

    // The sessions: those the families were minted in, and those (perhaps without any refresh token)
    // whose user matches.
    let all_sessions = state.storage.list_sessions().await?;
    let mut sessions: Vec<String> = matched.iter().filter_map(|t| t.session_id.clone()).collect();
    sessions.extend(all_sessions.iter().filter(|s| matches(&s.identity)).map(|s| s.id.clone()));
    if let Target::Session(sid) = target {
        sessions.push(sid.clone());
    }
    sessions.sort_unstable();
    sessions.dedup();
    let mut subjects: Vec<String> = matched.iter().map(|t| config.subject(&t.identity)).collect();
    for sid in &sessions {
        // Read first: the session names the clients to send back-channel logouts to.
        let session = match state.storage.get_session(sid).await {
            Ok(s) => s,
            Err(StorageError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        match state.storage.delete_session(sid).await {
            Ok(()) => summary.sessions += 1,
            Err(StorageError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        }
        subjects.push(config.subject(&session.identity));
        for d in crate::backchannel::notify(state, &session).await {
            summary.deliveries.push((sid.clone(), d));
        }
    }

    subjects.sort_unstable();
    subjects.dedup();
    let by_subject = subjects.into_iter().map(|s| (RevocationKind::Sub, s));
    let mut entries: Vec<(RevocationKind, String)> = match target {
        Target::User(_) => by_subject.collect(),
        Target::Sub(sub) => vec![(RevocationKind::Sub, sub.clone())],
        // A token minted without the `groups` scope carries no groups claim: the members found are named
        // by `sub` too, so their tokens are refused all the same.
        Target::Group(g) => std::iter::once((RevocationKind::Group, g.clone())).chain(by_subject).collect(),
        Target::Session(_) => vec![],
        Target::All => vec![(RevocationKind::All, String::new())],
    };
    // Every session is named too, so a gateway that keys on `sid` alone learns of it; one no longer stored
    // (a session another replica just ended) as well, since tokens naming it may still be out. So is every
    // browserless family revoked: its tokens carry the family id as their `sid`.
    let browserless = matched.iter().filter(|t| t.session_id.is_none()).map(|t| t.family_id.clone());
    let mut sids: Vec<String> = sessions.into_iter().chain(browserless).collect();
    sids.sort_unstable();
    sids.dedup();
    entries.extend(sids.into_iter().map(|s| (RevocationKind::Sid, s)));
    for (kind, value) in entries {
        let seq = record(state, kind, &value).await?;
        summary.logged.push((kind, value, seq));
    }
    Ok(summary)
}
