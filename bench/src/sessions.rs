//! `bench sessions`: many active sessions, and many distinct bearer tokens, through the compiled filter
//! (issue 17). For each count: one warm-up round (every session refreshes once, every token is verified
//! once), then two measured rounds in another order, on two worker VMs sharing one store. Reported: cache
//! hit rate, issuer refreshes (or signature verifications) per request, filter time per request, and the
//! shared-data bytes the cache holds. Next to them, what the first direct-mapped design (4,096 session
//! slots, 1,024 bearer slots, one entry per slot) gives for the same ids: computed from where those ids
//! hash, since in round-robin traffic an id hits there exactly when no other active id shares its slot.
//!
//! Sessions need refresh tokens the issuer knows; logging in 100,000 times would measure bcrypt, so the
//! issuer runs in this process and its storage is seeded with one refresh-token family per session, each
//! cloned from one real login.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use filter::cache::{namespace, token_hash, WAYS};
use filter::random::SystemRandom;
use filter::session::{Keyring, Session};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tests::{FilterClock, Logs, Request, Response, Worker, WorkerOptions};

use crate::issuer::{CLIENT_ID, CLIENT_SECRET, GATEWAY_HOST};

const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The first design's slot counts.
const OLD_SESSION_SLOTS: u32 = 4096;
const OLD_BEARER_SLOTS: u32 = 1024;

/// One count of one kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    /// `sessions` or `bearer tokens`.
    pub(crate) kind: String,
    /// Active ids.
    pub(crate) count: usize,
    /// The cache capacity configured (2× the count, at least the default).
    pub(crate) capacity: u32,
    /// Hits / requests in the measured rounds.
    pub(crate) hit_rate: f64,
    /// Issuer refreshes (sessions) or signature verifications (bearer tokens) per measured request.
    pub(crate) misses_per_request: f64,
    /// Mean filter time per measured request, µs (both callbacks, in the wasm host).
    pub(crate) mean_us: f64,
    /// Bytes of the cache's keys and values in shared data after the rounds.
    pub(crate) shared_bytes: u64,
    /// The direct-mapped design's hit rate for the same ids.
    pub(crate) old_hit_rate: f64,
    /// The direct-mapped design's bytes (one entry per occupied slot, entries of the measured mean size).
    pub(crate) old_shared_bytes: u64,
}

/// Every count, sessions then bearer tokens.
pub(crate) async fn run(wasm: &Path, work: &Path, counts: &[usize]) -> anyhow::Result<Vec<Row>> {
    tests::preload(wasm).map_err(anyhow::Error::msg)?;
    let issuer = InProcessIssuer::start(work).await?;
    let mut rows = Vec::new();
    for &n in counts {
        eprintln!("bench: {n} sessions");
        rows.push(sessions(&issuer, n).await?);
        eprintln!("bench: {n} bearer tokens");
        rows.push(bearer_tokens(&issuer, n).await?);
    }
    Ok(rows)
}

struct InProcessIssuer {
    url: String,
    state: ::issuer::state::AppState,
    template: ::issuer::storage::RefreshToken,
}

impl InProcessIssuer {
    async fn start(work: &Path) -> anyhow::Result<Self> {
        let dir = work.join("sessions-issuer");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let url = format!("http://127.0.0.1:{port}");
        // The benchmark issuer's own configuration (the `bench` client, RS256, SQLite), as the binary runs it.
        let text = crate::issuer::config(port, &dir.join("issuer.db"), "RS256", "jwt");
        let config =
            ::issuer::config::Config::parse("issuer.yaml", &text, &|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let storage = ::issuer::state::open_storage(&config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let state = ::issuer::state::AppState::new(config, storage, ::issuer::clock::Clock::system())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let app = ::issuer::app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let first = crate::issuer::tokens(&url).await?;
        let rt = first["refresh_token"].as_str().context("no refresh token")?;
        let id = ::issuer::token::RefreshTokenString::parse(rt).context("refresh token")?.id;
        let template = state.storage.get_refresh_token(&id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { url, state, template })
    }

    /// `n` refresh tokens, each of its own family, stored concurrently (the storage commits them in groups).
    async fn refresh_tokens(&self, n: usize, tag: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        let mut batch = tokio::task::JoinSet::new();
        for i in 0..n {
            let rt = ::issuer::token::RefreshTokenString::random();
            let mut record = self.template.clone();
            record.id = rt.id.clone();
            record.secret_hash = rt.secret_hash();
            record.family_id = format!("{tag}-{i}");
            let state = self.state.clone();
            batch.spawn(async move { state.storage.create_refresh_token(record).await });
            out.push(rt.encode());
            if batch.len() >= 256 {
                while let Some(r) = batch.join_next().await {
                    r?.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
        while let Some(r) = batch.join_next().await {
            r?.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(out)
    }
}

async fn workers(issuer: &InProcessIssuer, cache: serde_json::Value) -> anyhow::Result<[Worker; 2]> {
    let store = tests::shared_store();
    let config = json!({
        "issuer": issuer.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "cluster": "issuer",
        "cookie_secrets": [SECRET], "cookie": {"secure": false}, "cache": cache,
    })
    .to_string();
    let start = || {
        Worker::start(
            &config,
            WorkerOptions {
                clusters: [("issuer".to_owned(), issuer.url.clone())].into(),
                clock: FilterClock::system(),
                store: store.clone(),
                logs: Arc::new(Logs::default()),
                ca_certificates: vec![],
                responder: None,
            },
        )
    };
    Ok([start().await?, start().await?])
}

fn upstream_ok() -> Response {
    Response { status: 200, headers: vec![], body: b"ok".to_vec() }
}

/// One request for id `i`, timed; like a browser, a `Set-Cookie` for the session replaces the cookie the
/// next request sends (after an eviction, the refresh then presents the newest refresh token).
async fn one(w: &Worker, requests: &mut [Request], i: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let resp = w.exchange(requests[i].clone(), |_| upstream_ok()).await?;
    let us = started.elapsed().as_secs_f64() * 1e6;
    anyhow::ensure!(resp.status == 200, "a request failed: {} {}", resp.status, resp.text());
    if let Some(c) = resp.headers_named("set-cookie").into_iter().find(|c| c.starts_with("_tokengate=")) {
        let pair = c.split(';').next().unwrap_or_default().to_owned();
        if let Some(h) = requests[i].headers.iter_mut().find(|(k, _)| k == b"cookie") {
            h.1 = pair.into_bytes();
        }
    }
    Ok(us)
}

/// Two rounds, the first in reverse order, on alternating workers; returns the mean µs per request.
async fn rounds(w: &[Worker; 2], requests: &mut [Request]) -> anyhow::Result<f64> {
    let n = requests.len();
    let mut total = 0.0;
    for i in (0..n).rev() {
        total += one(&w[(i + 1) % 2], requests, i).await?;
    }
    for i in 0..n {
        total += one(&w[i % 2], requests, i).await?;
    }
    Ok(total / (2 * n).max(1) as f64)
}

/// The bytes of one cache (`s` sessions, `b` bearer tokens) in the store: every set's index and ways.
fn cache_bytes(w: &Worker, ns: &str, kind: char, capacity: u32) -> u64 {
    let sets = capacity.div_ceil(WAYS);
    let mut keys = Vec::new();
    for set in 0..sets {
        keys.push(format!("tokengate:{ns}:{kind}i:{set}"));
        keys.extend((0..WAYS).map(|way| format!("tokengate:{ns}:{kind}:{set}:{way}")));
    }
    w.shared_bytes(keys.iter().map(String::as_str))
}

/// The direct-mapped design's hit rate for these slot numbers: an id hits when it is alone in its slot.
fn direct_mapped(slots_of: impl Iterator<Item = u32>) -> (f64, usize) {
    let mut per_slot = std::collections::HashMap::<u32, usize>::new();
    let mut n = 0;
    for s in slots_of {
        *per_slot.entry(s).or_default() += 1;
        n += 1;
    }
    let alone = per_slot.values().filter(|c| **c == 1).count();
    (alone as f64 / n.max(1) as f64, per_slot.len())
}

/// The first design's slot: the first 32 bits of a hex SHA-256, modulo the slot count (sessions hashed
/// their id, bearer tokens used their hash as it is).
fn old_slot(hash_hex: &str, slots: u32) -> u32 {
    u32::from_str_radix(hash_hex.get(..8).unwrap_or("0"), 16).unwrap_or(0) % slots
}

/// What one kind of cache is measured with.
struct Case<'a> {
    kind: &'static str,
    /// `s` or `b`, as in the cache's shared-data keys.
    key_kind: char,
    capacity: u32,
    /// One request per active id.
    requests: Vec<Request>,
    /// The counters of a hit and of a miss (a refresh or a verification).
    hit_metric: &'a str,
    miss_metric: &'a str,
    /// Each id's hash in hex, for the direct-mapped comparison.
    hashes: Vec<String>,
    old_slots: u32,
}

/// Warm-up round, then two measured rounds (reversed order, then in order) on alternating workers.
async fn measure(issuer: &InProcessIssuer, w: &[Worker; 2], mut case: Case<'_>) -> anyhow::Result<Row> {
    for i in 0..case.requests.len() {
        one(&w[i % 2], &mut case.requests, i).await?;
    }
    let (hits0, misses0) = (w[0].metric(case.hit_metric), w[0].metric(case.miss_metric));
    let mean_us = rounds(w, &mut case.requests).await?;
    let n = case.requests.len();
    let total = (2 * n) as f64;
    let shared_bytes = cache_bytes(&w[0], &namespace(&issuer.url, CLIENT_ID), case.key_kind, case.capacity);
    let (old_hit_rate, occupied) = direct_mapped(case.hashes.iter().map(|h| old_slot(h, case.old_slots)));
    Ok(Row {
        kind: case.kind.into(),
        count: n,
        capacity: case.capacity,
        hit_rate: (w[0].metric(case.hit_metric) - hits0) as f64 / total,
        misses_per_request: (w[0].metric(case.miss_metric) - misses0) as f64 / total,
        mean_us,
        shared_bytes,
        old_hit_rate,
        old_shared_bytes: shared_bytes / n.max(1) as u64 * occupied as u64,
    })
}

async fn sessions(issuer: &InProcessIssuer, n: usize) -> anyhow::Result<Row> {
    let capacity = (2 * n as u32).max(filter::cache::DEFAULT_SESSIONS);
    let w = workers(issuer, json!({"sessions": capacity})).await?;
    let key: [u8; 32] = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, SECRET)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("secret"))?;
    let keyring = Keyring::new(&[key]);
    let rng = SystemRandom::new();
    let mut hashes = Vec::with_capacity(n);
    let mut requests = Vec::with_capacity(n);
    for (i, rt) in issuer.refresh_tokens(n, &format!("s{n}")).await?.into_iter().enumerate() {
        let id = format!("{n:08x}{i:024x}");
        hashes.push(token_hash(&id));
        let session = Session { id, refresh_token: Some(rt), expires_at: u64::MAX / 2, identity: None, generation: 0 };
        let sealed = keyring.seal("_tokengate", &session, &rng).map_err(|e| anyhow::anyhow!("{e}"))?;
        requests.push(Request::get(GATEWAY_HOST, "/api").header("cookie", &format!("_tokengate={sealed}")));
    }
    let case = Case {
        kind: "sessions",
        key_kind: 's',
        capacity,
        requests,
        hit_metric: "tokengate.session_cache_hits",
        miss_metric: "tokengate.refreshes_succeeded",
        hashes,
        old_slots: OLD_SESSION_SLOTS,
    };
    measure(issuer, &w, case).await
}

async fn bearer_tokens(issuer: &InProcessIssuer, n: usize) -> anyhow::Result<Row> {
    let capacity = (2 * n as u32).max(filter::cache::DEFAULT_BEARER_TOKENS);
    let w = workers(issuer, json!({"bearer_tokens": capacity})).await?;
    let http = reqwest::Client::new();
    let mut hashes = Vec::with_capacity(n);
    let mut requests = Vec::with_capacity(n);
    for rt in issuer.refresh_tokens(n, &format!("b{n}")).await? {
        let t = crate::issuer::refresh(&http, &issuer.url, &rt).await?;
        let id_token = t["id_token"].as_str().context("no id token")?;
        hashes.push(token_hash(id_token));
        requests.push(Request::get(GATEWAY_HOST, "/api").header("authorization", &format!("Bearer {id_token}")));
    }
    let case = Case {
        kind: "bearer tokens",
        key_kind: 'b',
        capacity,
        requests,
        hit_metric: "tokengate.bearer_cache_hits",
        miss_metric: "tokengate.bearer_cache_misses",
        hashes,
        old_slots: OLD_BEARER_SLOTS,
    };
    measure(issuer, &w, case).await
}
