//! What this gateway refuses although its signature still verifies: the sessions (`sid`), users (`sub`) and
//! groups an issuer revoked, as a [`Revocations`] set. The set is filled two ways: by polling the issuer's
//! revocation feed (`GET <revocation_feed_endpoint>?after=<cursor>`, [`Poll`]) and by back-channel
//! logouts (OpenID Connect Back-Channel Logout 1.0, verified in `token`). It lives in shared data so every
//! worker sees one copy; each worker keeps a parsed copy that it re-reads when the copy's stamp changes.
//! Deciding what a revoked session or token means for a request is `flow`'s job; scheduling polls is
//! `host`'s.
//!
//! A token matches an entry when its `sid`, `sub` or one of its `groups` is the entry's value (or the
//! entry is `all`) and it was issued (`iat`) at or before the entry's `revoked_at`, both in the issuer's
//! clock. The set is rebuilt from the start of the feed every [`REBUILD_INTERVAL`], so it holds what the
//! issuer still retains and no more (the issuer drops entries once every token they could match has
//! expired).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::callout::{basic_auth, Callout, CalloutResponse};
use crate::config::FilterConfig;
use crate::random::Random;
use crate::url::{percent_encode, HttpUrl, UrlError};

/// The set is rebuilt from the beginning of the feed this often (seconds of the gateway's clock), which
/// drops what the issuer no longer retains.
pub const REBUILD_INTERVAL: Duration = Duration::from_secs(3600);

/// A poll follows at most this many pages before it stops (and goes on from its cursor next time).
pub const MAX_PAGES: u16 = 100;

/// Entries revoked this long (seconds) before a rebuild started survive the rebuild even if its pages lack
/// them: a back-channel logout may land while the rebuild's pages are in flight.
pub const REBUILD_OVERLAP: u64 = 120;

/// What an entry revokes (the feed's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One session: tokens whose `sid` is the value.
    Sid,
    /// One user: tokens whose `sub` is the value.
    Sub,
    /// Tokens whose `groups` hold the value.
    Group,
    /// Every token issued at or before `revoked_at`.
    All,
}

impl Kind {
    /// The wire string, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sid => "sid",
            Kind::Sub => "sub",
            Kind::Group => "group",
            Kind::All => "all",
        }
    }
}

/// One entry: `(kind, value, revoked_at)`, `revoked_at` in Unix seconds of the issuer's clock.
pub type Entry = (Kind, String, u64);

/// The revocations a gateway honours, with the feed cursor they were read up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// The feed's cursor after the last page applied (empty: never polled).
    pub cursor: String,
    /// Gateway-clock Unix seconds of the last complete rebuild (0: never).
    pub rebuilt_at: u64,
    /// Changes with every write, so workers can tell their parsed copy is stale.
    pub stamp: u64,
    sids: HashMap<String, u64>,
    subs: HashMap<String, u64>,
    groups: HashMap<String, u64>,
    all: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    cursor: String,
    rebuilt_at: u64,
    stamp: u64,
    entries: Vec<Entry>,
}

// === impl Revocations ===

impl Revocations {
    /// Adds an entry; an entry already there keeps the later `revoked_at`.
    pub fn insert(&mut self, kind: Kind, value: &str, revoked_at: u64) {
        let map = match kind {
            Kind::Sid => &mut self.sids,
            Kind::Sub => &mut self.subs,
            Kind::Group => &mut self.groups,
            Kind::All => {
                self.all = Some(self.all.map_or(revoked_at, |a| a.max(revoked_at)));
                return;
            }
        };
        let at = map.entry(value.to_owned()).or_insert(revoked_at);
        *at = (*at).max(revoked_at);
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.sids.len() + self.subs.len() + self.groups.len() + usize::from(self.all.is_some())
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.sids
            .iter()
            .map(|(v, at)| (Kind::Sid, v.clone(), *at))
            .chain(self.subs.iter().map(|(v, at)| (Kind::Sub, v.clone(), *at)))
            .chain(self.groups.iter().map(|(v, at)| (Kind::Group, v.clone(), *at)))
            .chain(self.all.map(|at| (Kind::All, String::new(), at)))
    }

    /// What revokes a token with these claims, if anything: its `sid` was revoked (at any time: a session
    /// that ended never comes back, so a token refreshed in it afterwards, with a later `iat`, is refused
    /// too; Back-Channel Logout 1.0 §2.7), or its `sub`, a group or `all` was revoked at or after its `iat`
    /// (a later login is a new session). A token without `iat` (or with one that is not a NumericDate)
    /// counts as issued at the epoch, so any matching entry revokes it.
    pub fn revokes(&self, claims: &Map<String, Value>) -> Option<Kind> {
        if self.is_empty() {
            return None;
        }
        let iat = crate::token::numeric_date(claims, "iat").ok().flatten().unwrap_or(0);
        let hit = |at: Option<&u64>| at.is_some_and(|at| iat <= *at);
        if self.all.is_some_and(|at| iat <= at) {
            return Some(Kind::All);
        }
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        if text("sid").is_some_and(|sid| self.sids.contains_key(sid)) {
            return Some(Kind::Sid);
        }
        if text("sub").is_some_and(|sub| hit(self.subs.get(sub))) {
            return Some(Kind::Sub);
        }
        if !self.groups.is_empty() {
            let revoked = |g: &Value| g.as_str().is_some_and(|g| hit(self.groups.get(g)));
            let any = match claims.get("groups") {
                Some(Value::Array(groups)) => groups.iter().any(revoked),
                Some(g @ Value::String(_)) => revoked(g),
                _ => false,
            };
            if any {
                return Some(Kind::Group);
            }
        }
        None
    }

    /// The shared-data form (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = Stored {
            cursor: self.cursor.clone(),
            rebuilt_at: self.rebuilt_at,
            stamp: self.stamp,
            entries: self.entries().collect(),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Parses the shared-data form; `None` if it is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Revocations> {
        let stored: Stored = serde_json::from_slice(bytes).ok()?;
        let mut set = Revocations {
            cursor: stored.cursor,
            rebuilt_at: stored.rebuilt_at,
            stamp: stored.stamp,
            ..Revocations::default()
        };
        for (kind, value, at) in stored.entries {
            set.insert(kind, &value, at);
        }
        Some(set)
    }

    /// Applies what a poll found. The result keeps this set's stamp;
    /// [`crate::cache::Cache::update_revocations`] stamps what it writes.
    pub fn apply(&self, update: &Update) -> Revocations {
        match update {
            Update::Merge { entries, cursor } => {
                let mut next = self.clone();
                for (kind, value, at) in entries {
                    next.insert(*kind, value, *at);
                }
                next.cursor.clone_from(cursor);
                next
            }
            Update::Rebuild { entries, cursor, started, complete } => {
                let mut next = Revocations {
                    cursor: cursor.clone(),
                    rebuilt_at: *started,
                    stamp: self.stamp,
                    ..Revocations::default()
                };
                // Issuer-clock seconds: what is older than the log's oldest entry was collected by the issuer.
                let oldest_retained = entries.iter().map(|(_, _, at)| *at).min().unwrap_or(*started);
                let keep_from = match complete {
                    true => started.saturating_sub(REBUILD_OVERLAP),
                    false => oldest_retained.saturating_sub(REBUILD_OVERLAP),
                };
                for (kind, value, at) in self.entries().filter(|(_, _, at)| *at >= keep_from) {
                    next.insert(kind, &value, at);
                }
                for (kind, value, at) in entries {
                    next.insert(*kind, value, *at);
                }
                next
            }
        }
    }
}

/// When the poll after one at `now` is due (Unix seconds): `interval` jittered uniformly by ±20%, and at
/// least a second later, so that gateways started together do not poll in step. Without randomness, no
/// jitter.
pub fn next_poll(now: u64, interval: Duration, rng: &dyn Random) -> u64 {
    let mut b = [0u8; 2];
    let unit = match rng.fill(&mut b) {
        Ok(()) => f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    let secs = interval.as_secs_f64() * (0.8 + 0.4 * unit);
    now.saturating_add((secs.round() as u64).max(1))
}

// === the feed ===

/// One page of the feed, as the issuer's `GET /revocations` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// 304: nothing after the cursor.
    NotModified,
    /// 200.
    Entries {
        /// The `after` of the next poll.
        cursor: String,
        /// The entries are the start of the log, not what follows the cursor: rebuild.
        reset: bool,
        /// The entries (kinds this filter does not know are left out).
        entries: Vec<Entry>,
    },
}

/// Why a poll failed; the next poll tries again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// No answer, or a status other than 200 and 304 (401: the client's secret is wrong).
    #[error("the revocation feed answered {0} (0 = no response)")]
    Status(u16),
    /// A 200 whose body is not the feed's JSON.
    #[error("the revocation feed's answer is malformed")]
    Malformed,
}

#[derive(Deserialize)]
struct FeedBody {
    cursor: String,
    #[serde(default)]
    reset: bool,
    revocations: Vec<FeedEntry>,
}

#[derive(Deserialize)]
struct FeedEntry {
    kind: String,
    #[serde(default)]
    value: String,
    revoked_at: i64,
}

/// Parses the feed's answer.
pub fn parse_page(resp: &CalloutResponse) -> Result<Page, FeedError> {
    match resp.status {
        304 => Ok(Page::NotModified),
        200 => {
            let body: FeedBody = serde_json::from_slice(&resp.body).map_err(|_| FeedError::Malformed)?;
            if body.cursor.is_empty() || !body.cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(FeedError::Malformed);
            }
            let entries = body
                .revocations
                .into_iter()
                .filter_map(|e| {
                    let kind = match e.kind.as_str() {
                        "sid" => Kind::Sid,
                        "sub" => Kind::Sub,
                        "group" => Kind::Group,
                        "all" => Kind::All,
                        _ => return None,
                    };
                    Some((kind, e.value, u64::try_from(e.revoked_at).unwrap_or(0)))
                })
                .collect();
            Ok(Page::Entries { cursor: body.cursor, reset: body.reset, entries })
        }
        other => Err(FeedError::Status(other)),
    }
}

/// What a finished poll changes in the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Entries after the cursor: added to the set.
    Merge {
        /// New entries.
        entries: Vec<Entry>,
        /// The new cursor.
        cursor: String,
    },
    /// The retained log from its start: replaces the set. A complete rebuild keeps, of the old set, only
    /// entries from [`REBUILD_OVERLAP`] before its start (a back-channel logout may have added them
    /// meanwhile); one cut short after [`MAX_PAGES`] keeps every old entry not older than the log's oldest
    /// retained one (the issuer collected the rest) and goes on from its cursor with incremental polls.
    Rebuild {
        /// The entries read, oldest first.
        entries: Vec<Entry>,
        /// The new cursor.
        cursor: String,
        /// Gateway-clock Unix seconds when the rebuild began.
        started: u64,
        /// Whether the pages reached the end of the log.
        complete: bool,
    },
}

/// A poll in progress: the pages read so far, and whether it rebuilds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    endpoint: String,
    cursor: String,
    entries: Vec<Entry>,
    /// Gateway-clock start of a rebuild; `None` for an incremental poll.
    rebuild: Option<u64>,
    pages: u16,
}

/// What to do after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollStep {
    /// Ask for the next page.
    Next(Callout, Poll),
    /// Done: apply this (`None`: nothing changed).
    Done(Option<Update>),
    /// The poll failed.
    Failed(FeedError),
}

// === impl Poll ===

impl Poll {
    /// Starts a poll of `endpoint` (the discovery document's `revocation_feed_endpoint`) from the set's
    /// cursor, or from the beginning when the set was never built or its last rebuild is
    /// [`REBUILD_INTERVAL`] old.
    pub fn start(cfg: &FilterConfig, endpoint: &str, set: &Revocations, now: u64) -> Result<(Callout, Poll), UrlError> {
        let rebuild = set.cursor.is_empty() || now >= set.rebuilt_at.saturating_add(REBUILD_INTERVAL.as_secs());
        let poll = Poll {
            endpoint: endpoint.to_owned(),
            cursor: if rebuild { String::new() } else { set.cursor.clone() },
            entries: Vec::new(),
            rebuild: rebuild.then_some(now),
            pages: 0,
        };
        Ok((poll.request(cfg)?, poll))
    }

    /// `GET endpoint?after=cursor`, authenticated as the client (`client_secret_basic`), with the cursor as
    /// `If-None-Match` on incremental polls so an unchanged feed answers 304 with no body.
    fn request(&self, cfg: &FilterConfig) -> Result<Callout, UrlError> {
        let url = HttpUrl::parse(&self.endpoint)?;
        let after = if self.cursor.is_empty() { "0" } else { self.cursor.as_str() };
        let sep = if url.path_and_query.contains('?') { '&' } else { '?' };
        let mut callout = Callout::get(cfg, &format!("{}{sep}after={}", self.endpoint, percent_encode(after)))?;
        callout.headers.push(("authorization".into(), basic_auth(&cfg.client_id, cfg.client_secret.expose())));
        if self.conditional() {
            callout.headers.push(("if-none-match".into(), format!("\"{}\"", self.cursor)));
        }
        Ok(callout)
    }

    /// Whether the next request is conditional (`If-None-Match`): an incremental poll from a cursor.
    fn conditional(&self) -> bool {
        self.rebuild.is_none() && !self.cursor.is_empty()
    }

    /// Takes the answer to the last request.
    pub fn advance(mut self, cfg: &FilterConfig, resp: &CalloutResponse, now: u64) -> PollStep {
        let page = match parse_page(resp) {
            Ok(p) => p,
            Err(e) => return PollStep::Failed(e),
        };
        self.pages = self.pages.saturating_add(1);
        let more = match page {
            // RFC 9110 §15.4.5: a 304 answers a conditional request only; to a rebuild's (which sends no
            // `If-None-Match`) it would claim an empty log, and must not empty the set.
            Page::NotModified if !self.conditional() => return PollStep::Failed(FeedError::Status(304)),
            Page::NotModified => false,
            Page::Entries { cursor, reset, entries } => {
                if reset && (self.rebuild.is_none() || self.pages > 1) {
                    // The cursor is older than what the issuer retains (or from another log): what was read
                    // so far is part of the log this page starts again, so start the rebuild here.
                    self.rebuild = Some(self.rebuild.unwrap_or(now));
                    self.entries.clear();
                }
                let advanced = !entries.is_empty() && cursor != self.cursor;
                self.entries.extend(entries);
                self.cursor = cursor;
                advanced
            }
        };
        if more && self.pages < MAX_PAGES {
            return match self.request(cfg) {
                Ok(callout) => PollStep::Next(callout, self),
                Err(_) => PollStep::Failed(FeedError::Status(0)),
            };
        }
        let complete = !more;
        PollStep::Done(match self.rebuild {
            Some(started) => Some(Update::Rebuild { entries: self.entries, cursor: self.cursor, started, complete }),
            None if self.entries.is_empty() => None,
            // An incremental poll cut short after MAX_PAGES goes on from its cursor at the next poll.
            None => Some(Update::Merge { entries: self.entries, cursor: self.cursor }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_sid_entry_revokes_its_session_and_other_entries_tokens_issued_at_or_before_them() {
        let mut set = Revocations::default();
        set.insert(Kind::Sid, "s1", 100);
        set.insert(Kind::Sub, "alice", 200);
        set.insert(Kind::Group, "contractors", 300);
        let token = |sid: &str, sub: &str, groups: Value, iat: u64| {
            claims(json!({"sid": sid, "sub": sub, "groups": groups, "iat": iat}))
        };
        assert_eq!(set.revokes(&token("s1", "bob", json!([]), 100)), Some(Kind::Sid));
        assert_eq!(set.revokes(&token("s1", "bob", json!([]), 101)), Some(Kind::Sid), "refreshed in an ended session");
        assert_eq!(set.revokes(&token("s2", "alice", json!([]), 150)), Some(Kind::Sub));
        assert_eq!(set.revokes(&token("s2", "alice", json!([]), 201)), None, "a new login after it");
        assert_eq!(set.revokes(&token("s2", "bob", json!(["dev", "contractors"]), 300)), Some(Kind::Group));
        assert_eq!(set.revokes(&token("s2", "bob", json!("contractors"), 300)), Some(Kind::Group));
        assert_eq!(set.revokes(&token("s2", "bob", json!(["dev"]), 1)), None, "another user, another group");
        assert_eq!(set.revokes(&claims(json!({"sub": "alice"}))), Some(Kind::Sub), "no iat: issued at the epoch");
        assert_eq!(set.revokes(&claims(json!({"sub": "alice", "iat": 200.5}))), Some(Kind::Sub));
        assert_eq!(set.revokes(&claims(json!({"sub": "alice", "iat": 201.5}))), None, "a fractional iat is a date");
        set.insert(Kind::All, "", 50);
        assert_eq!(set.revokes(&token("x", "y", json!([]), 50)), Some(Kind::All));
        assert_eq!(set.revokes(&token("x", "y", json!([]), 51)), None);
    }

    #[test]
    fn the_later_revocation_of_a_value_wins_and_the_set_round_trips() {
        let mut set = Revocations { cursor: "42".into(), rebuilt_at: 7, stamp: 9, ..Revocations::default() };
        set.insert(Kind::Sub, "alice", 200);
        set.insert(Kind::Sub, "alice", 100);
        set.insert(Kind::Group, "a b\nc", 5);
        set.insert(Kind::All, "", 3);
        assert_eq!(set.len(), 3);
        let back = Revocations::from_bytes(&set.to_bytes()).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.revokes(&claims(json!({"sub": "alice", "iat": 200}))), Some(Kind::Sub));
        assert!(Revocations::from_bytes(b"not json").is_none());
    }

    fn cfg() -> FilterConfig {
        FilterConfig::parse(
            json!({
                "issuer": "https://issuer.example",
                "client_id": "gw",
                "client_secret": "s3cret",
                "cluster": "issuer",
                "cookie_secrets": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="],
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn page(cursor: &str, reset: bool, entries: &[(&str, &str, i64)]) -> CalloutResponse {
        let revocations: Vec<Value> =
            entries.iter().map(|(k, v, at)| json!({"kind": k, "value": v, "revoked_at": at})).collect();
        CalloutResponse {
            status: 200,
            body: json!({"cursor": cursor, "reset": reset, "revocations": revocations, "interval": 5})
                .to_string()
                .into_bytes(),
        }
    }

    const FEED: &str = "https://issuer.example/revocations";

    #[test]
    fn a_first_poll_rebuilds_from_the_start_and_follows_pages_until_nothing_is_new() {
        let cfg = cfg();
        let (first, poll) = Poll::start(&cfg, FEED, &Revocations::default(), 1_000).unwrap();
        assert_eq!(first.path, "/revocations?after=0");
        assert!(first.headers.iter().any(|(k, v)| k == "authorization" && v.starts_with("Basic ")));
        assert!(!first.headers.iter().any(|(k, _)| k == "if-none-match"), "a rebuild wants the body");
        let PollStep::Next(second, poll) =
            poll.advance(&cfg, &page("2", false, &[("sid", "a", 10), ("sub", "b", 11)]), 1_000)
        else {
            panic!("a page with entries asks for the next");
        };
        assert_eq!(second.path, "/revocations?after=2");
        let done = poll.advance(&cfg, &page("2", false, &[]), 1_001);
        let PollStep::Done(Some(update)) = done else { panic!("{done:?}") };
        let set = Revocations::default().apply(&update);
        assert_eq!((set.cursor.as_str(), set.rebuilt_at, set.len()), ("2", 1_000, 2));
    }

    #[test]
    fn an_incremental_poll_sends_the_cursor_as_an_etag_and_a_304_changes_nothing() {
        let cfg = cfg();
        let set = Revocations { cursor: "7".into(), rebuilt_at: 1_000, ..Revocations::default() };
        let (req, poll) = Poll::start(&cfg, FEED, &set, 1_010).unwrap();
        assert_eq!(req.path, "/revocations?after=7");
        assert!(req.headers.contains(&("if-none-match".into(), "\"7\"".into())));
        let not_modified = CalloutResponse { status: 304, body: Vec::new() };
        assert_eq!(poll.advance(&cfg, &not_modified, 1_010), PollStep::Done(None));
    }

    #[test]
    fn a_reset_or_the_rebuild_interval_replaces_the_set_keeping_recent_entries() {
        let cfg = cfg();
        let mut set = Revocations { cursor: "7".into(), rebuilt_at: 1_000, ..Revocations::default() };
        set.insert(Kind::Sid, "gone-from-the-log", 100);
        set.insert(Kind::Sid, "just-logged-out", 4_990);
        // The issuer collected entries past the cursor: the page restarts the log.
        let (_, poll) = Poll::start(&cfg, FEED, &set, 5_000).unwrap();
        let PollStep::Next(_, poll) = poll.advance(&cfg, &page("12", true, &[("group", "ops", 4_000)]), 5_000) else {
            panic!()
        };
        let PollStep::Done(Some(update)) = poll.advance(&cfg, &page("12", false, &[]), 5_000) else { panic!() };
        let next = set.apply(&update);
        let values: Vec<String> = next.entries().map(|(_, v, _)| v).collect();
        assert!(values.contains(&"ops".to_string()) && values.contains(&"just-logged-out".to_string()), "{values:?}");
        assert!(!values.contains(&"gone-from-the-log".to_string()), "what the issuer dropped goes");
        // An hour after the last rebuild, a poll starts from the beginning again.
        let (req, _) = Poll::start(&cfg, FEED, &next, 5_000 + REBUILD_INTERVAL.as_secs()).unwrap();
        assert_eq!(req.path, "/revocations?after=0");
    }

    #[test]
    fn a_rebuild_cut_short_keeps_what_the_log_still_holds_and_goes_on_from_its_cursor() {
        let cfg = cfg();
        let mut set = Revocations { cursor: "7".into(), rebuilt_at: 1_000, ..Revocations::default() };
        set.insert(Kind::Sid, "collected-by-the-issuer", 100);
        set.insert(Kind::Sid, "on-a-later-page", 2_500);
        let now = 1_000 + REBUILD_INTERVAL.as_secs();
        let (_, mut poll) = Poll::start(&cfg, FEED, &set, now).unwrap();
        let mut step = None;
        for n in 1..=MAX_PAGES {
            let seq = i64::from(n);
            let user = format!("u{seq}");
            match poll.advance(&cfg, &page(&seq.to_string(), false, &[("sub", &user, 2_000 + seq)]), now) {
                PollStep::Next(_, next) => poll = next,
                done => {
                    step = Some(done);
                    break;
                }
            }
        }
        let Some(PollStep::Done(Some(update @ Update::Rebuild { complete: false, .. }))) = step else {
            panic!("{step:?}")
        };
        let next = set.apply(&update);
        let values: Vec<String> = next.entries().map(|(_, v, _)| v).collect();
        assert!(values.contains(&"on-a-later-page".to_string()), "not read yet, still in the log: {values:?}");
        assert!(!values.contains(&"collected-by-the-issuer".to_string()), "older than the log's start");
        assert_eq!(next.len(), usize::from(MAX_PAGES) + 1);
        // The next poll goes on incrementally from where the rebuild stopped, not from the beginning again.
        let (req, _) = Poll::start(&cfg, FEED, &next, now + 5).unwrap();
        assert_eq!(req.path, format!("/revocations?after={MAX_PAGES}"));
    }

    #[test]
    fn a_304_to_a_rebuild_which_asked_unconditionally_fails_the_poll() {
        let cfg = cfg();
        let (req, poll) = Poll::start(&cfg, FEED, &Revocations::default(), 1_000).unwrap();
        assert!(!req.headers.iter().any(|(k, _)| k == "if-none-match"));
        let not_modified = CalloutResponse { status: 304, body: Vec::new() };
        assert_eq!(poll.advance(&cfg, &not_modified, 1_000), PollStep::Failed(FeedError::Status(304)));
    }

    #[test]
    fn polls_are_jittered_within_a_fifth_of_the_interval() {
        struct Fixed(u8);
        impl Random for Fixed {
            fn fill(&self, buf: &mut [u8]) -> Result<(), crate::random::RandomError> {
                buf.fill(self.0);
                Ok(())
            }
        }
        let five = Duration::from_secs(5);
        assert_eq!(next_poll(100, five, &Fixed(0)), 104);
        assert_eq!(next_poll(100, five, &Fixed(0xff)), 106);
        assert_eq!(next_poll(100, Duration::from_millis(100), &Fixed(0)), 101, "at least a second");
    }

    #[test]
    fn bad_answers_fail_the_poll_and_unknown_kinds_are_skipped() {
        let cfg = cfg();
        let (_, poll) = Poll::start(&cfg, FEED, &Revocations::default(), 1).unwrap();
        for (status, body) in
            [(401, "{}"), (0, ""), (500, ""), (200, "[]"), (200, "{\"cursor\":\"a b\",\"revocations\":[]}")]
        {
            let resp = CalloutResponse { status, body: body.as_bytes().to_vec() };
            assert!(matches!(poll.clone().advance(&cfg, &resp, 1), PollStep::Failed(_)), "{status} {body}");
        }
        let page = parse_page(&page("3", false, &[("client", "x", 1), ("sid", "s", -5)])).unwrap();
        assert_eq!(page, Page::Entries { cursor: "3".into(), reset: false, entries: vec![(Kind::Sid, "s".into(), 0)] });
    }
}
