//! `bench revocation` (issue 12): what revocation costs. On the gateway, the compiled filter's per-request
//! cost for a valid session with 10,000 revoked sessions, users and groups in shared data, beside the same
//! session with none (and the same natively). On the issuer, the revocation feed (`GET /revocations`)
//! under 1,000 simulated gateways polling with their own cursors: all up to date (each answered 304 from
//! the log's bounds), and all a few entries behind (each answered 200 with its page).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use filter::cache::{namespace, Cache, Store};
use filter::revocation::{Kind, Revocations};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tests::{FilterClock, Logs, Request, Worker, WorkerOptions};

use crate::filter::native_core::NativeFilter;
use crate::filter::{filter_config, samples, session_cookie};
use crate::issuer::{self, CLIENT_ID, CLIENT_SECRET, GATEWAY_HOST};
use crate::load::{connect, Throughput, Window};
use crate::stats::Summary;

/// Revocations in shared data for the filter case.
pub(crate) const REVOKED: usize = 10_000;
/// Simulated gateways polling the feed.
pub(crate) const GATEWAYS: usize = 1_000;
/// Entries in the issuer's revocation log for the feed cases.
pub(crate) const LOG_ENTRIES: usize = 2_000;
/// Keep-alive connections the gateways' polls share.
const CONNECTIONS: usize = 16;

/// One filter case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FilterCase {
    pub(crate) name: String,
    pub(crate) wasm: Summary,
    pub(crate) native: Summary,
}

/// One feed load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FeedCase {
    pub(crate) name: String,
    pub(crate) throughput: Throughput,
    /// Answers by status.
    pub(crate) statuses: Vec<(u16, u64)>,
}

/// What `bench revocation` reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RevocationResult {
    pub(crate) filter: Vec<FilterCase>,
    pub(crate) feed: Vec<FeedCase>,
    /// Bytes of the 10,000-entry set in shared data.
    pub(crate) set_bytes: usize,
    /// Seconds to write the issuer's log.
    pub(crate) seed_seconds: f64,
    pub(crate) checks: Vec<String>,
}

/// A worker's shared data as the filter's [`Store`], so the set is written through the filter's own code.
struct HostStore<'w>(&'w Worker);

impl Store for HostStore<'_> {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.shared_data(key)
    }

    fn set(&self, key: &str, value: &[u8]) {
        let _ = self.0.set_shared_data(key, value);
    }

    fn set_if(&self, key: &str, replaceable: &dyn Fn(Option<&[u8]>) -> bool, value: &[u8]) -> bool {
        let current = self.get(key);
        replaceable(current.as_deref()) && {
            self.set(key, value);
            true
        }
    }

    fn create_if_absent(&self, key: &str) {
        if self.get(key).is_none() {
            self.set(key, b"");
        }
    }
}

/// 10,000 entries none of which matches the benchmark's user: sessions, users and groups in the
/// proportions a busy issuer's log has (mostly sign-outs).
fn revoked_set(now: u64) -> Revocations {
    let mut set = Revocations::default();
    (set.cursor, set.rebuilt_at) = ("1".into(), now);
    for i in 0..REVOKED {
        let (kind, value) = match i % 10 {
            0..=6 => (Kind::Sid, format!("{i:022x}")),
            7 | 8 => (Kind::Sub, format!("CiQ{i:032x}EgVsb2NhbA")),
            _ => (Kind::Group, format!("team-{i}")),
        };
        set.insert(kind, &value, now);
    }
    set
}

pub(crate) async fn run(wasm: &Path, issuer_bin: &Path, work: &Path, quick: bool) -> anyhow::Result<RevocationResult> {
    tests::preload(wasm).map_err(anyhow::Error::msg)?;
    let mut out = RevocationResult::default();
    let mut server = issuer::start(issuer_bin, &work.join("revocation-issuer"), "RS256", "jwt").await?;
    let result = async {
        filter_cases(&server.url, quick, &mut out).await?;
        feed_cases(&server.url, server.pid(), &work.join("revocation-issuer"), quick, &mut out).await
    }
    .await;
    server.stop().await;
    result?;
    Ok(out)
}

async fn filter_cases(issuer_url: &str, quick: bool, out: &mut RevocationResult) -> anyhow::Result<()> {
    let options = WorkerOptions {
        clusters: [("issuer".to_owned(), issuer_url.to_owned())].into(),
        clock: FilterClock::system(),
        store: tests::shared_store(),
        logs: Arc::new(Logs::default()),
        ca_certificates: vec![],
        responder: None,
    };
    // No polling: the set below is the only one (a poll would rebuild it from this issuer's empty log).
    let mut config: serde_json::Value = serde_json::from_str(&filter_config(issuer_url))?;
    config["revocation_poll_interval"] = json!("0s");
    let worker = Worker::start(&config.to_string(), options).await?;
    let cookie = session_cookie(&worker).await?;
    let page = || Request::get(GATEWAY_HOST, "/").navigation().header("cookie", &cookie);

    let native = NativeFilter::new(&config.to_string(), issuer_url).await?;
    let native_cookie = native.session_cookie().await?;
    let mut native = native;
    let n = if quick { 2_000 } else { 20_000 };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let set = revoked_set(now);
    out.set_bytes = set.to_bytes().len();

    // Alternate the two cases, three times each, so drift in the machine's speed falls on both; the first
    // round of each only warms up (a fresh worker's first requests are slower, in wasm and natively).
    let (mut none, mut many, mut none_native, mut many_native) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let ns = namespace(issuer_url, CLIENT_ID);
    let host = HostStore(&worker);
    let cache = Cache::new(&host, &ns);
    for round in 0..3 {
        let keep = round > 0;
        let empty = cache.update_revocations(&|_| Revocations::default());
        worker.tick().await?;
        native.revocations = empty.context("writing the empty set")?;
        let (wasm, local) =
            (samples(&worker, n, page).await?, native.samples(n, || NativeFilter::page(&native_cookie))?);
        if keep {
            none.extend(wasm);
            none_native.extend(local);
        }

        let written = cache.update_revocations(&|_| set.clone());
        worker.tick().await?;
        native.revocations = written.context("writing the 10,000-entry set")?;
        let revoked_before = worker.metric("tokengate.revoked.sid") + worker.metric("tokengate.revoked.sub");
        let (wasm, local) =
            (samples(&worker, n, page).await?, native.samples(n, || NativeFilter::page(&native_cookie))?);
        if keep {
            many.extend(wasm);
            many_native.extend(local);
        }
        let revoked = worker.metric("tokengate.revoked.sid") + worker.metric("tokengate.revoked.sub") - revoked_before;
        if revoked != 0 {
            bail!("round {round}: {revoked} requests were refused as revoked");
        }
    }
    let merge = |mut v: Vec<Duration>| Summary::of(&mut v);
    out.checks.push(format!(
        "{REVOKED} revocations: every request forwarded (none matched), the set synced by a tick (stamp {})",
        cache.revocations_stamp()
    ));
    out.filter.push(FilterCase {
        name: "valid session, no revocations".into(),
        wasm: merge(none),
        native: merge(none_native),
    });
    out.filter.push(FilterCase {
        name: format!("valid session, {REVOKED} revocations in shared data"),
        wasm: merge(many),
        native: merge(many_native),
    });
    Ok(())
}

async fn feed_cases(
    issuer_url: &str,
    server_pid: u32,
    dir: &Path,
    quick: bool,
    out: &mut RevocationResult,
) -> anyhow::Result<()> {
    // The log, written through the issuer's storage on the server's own SQLite file.
    let text = std::fs::read_to_string(dir.join("issuer.yaml"))?;
    let config =
        ::issuer::config::Config::parse("issuer.yaml", &text, &|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let storage = ::issuer::state::open_storage(&config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = Instant::now();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let mut last = 0;
    for i in 0..LOG_ENTRIES {
        last = storage
            .create_revocation(::issuer::storage::RevocationKind::Sid, &format!("{i:022x}"), now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    out.seed_seconds = start.elapsed().as_secs_f64();
    drop(storage);

    let window = if quick {
        Window { warmup: Duration::from_millis(500), measure: Duration::from_secs(2) }
    } else {
        Window { warmup: Duration::from_secs(2), measure: Duration::from_secs(10) }
    };
    // Up to date: every gateway holds the newest cursor and sends it as If-None-Match.
    let head: Vec<i64> = vec![last; GATEWAYS];
    out.feed.push(feed_load("1,000 gateways up to date (304)", issuer_url, server_pid, &head, window).await?);
    // Behind: gateway g is 1 + g % 10 entries behind (a page of 1–10 entries each).
    let behind: Vec<i64> = (0..GATEWAYS).map(|g| last - 1 - (g % 10) as i64).collect();
    out.feed
        .push(feed_load("1,000 gateways 1–10 entries behind (200)", issuer_url, server_pid, &behind, window).await?);
    Ok(())
}

/// `CONNECTIONS` keep-alive connections take turns polling for the gateways (round-robin over `cursors`).
async fn feed_load(
    name: &str,
    base: &str,
    server_pid: u32,
    cursors: &[i64],
    window: Window,
) -> anyhow::Result<FeedCase> {
    let addr: SocketAddr = base.trim_start_matches("http://").parse()?;
    let authorization = format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    let from = Instant::now() + window.warmup;
    let end = from + window.measure;
    let cursors = Arc::new(cursors.to_vec());
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (cursors, authorization) = (cursors.clone(), authorization.clone());
            tokio::spawn(async move { poller(addr, authorization, cursors, c, from, end).await })
        })
        .collect();
    let cpu = tokio::spawn(crate::load::cpu_in_window(server_pid, from, end));
    let mut samples = Vec::new();
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    for t in tasks {
        let (s, st) = t.await??;
        samples.extend(s);
        for (k, v) in st {
            *statuses.entry(k).or_default() += v;
        }
    }
    let seconds = window.measure.as_secs_f64();
    let t = Throughput {
        per_sec: samples.len() as f64 / seconds,
        latency: Summary::of(&mut samples),
        concurrency: CONNECTIONS,
        seconds,
        errors: statuses.iter().filter(|(s, _)| !matches!(s, 200 | 304)).map(|(_, n)| n).sum(),
        ..Throughput::default()
    };
    Ok(FeedCase { name: name.into(), throughput: t.with_cpu(cpu.await?), statuses: statuses.into_iter().collect() })
}

type PollerOutput = (Vec<Duration>, std::collections::BTreeMap<u16, u64>);

async fn poller(
    addr: SocketAddr,
    authorization: String,
    cursors: Arc<Vec<i64>>,
    first: usize,
    from: Instant,
    end: Instant,
) -> anyhow::Result<PollerOutput> {
    let mut sender = connect(addr).await?;
    let host = addr.to_string();
    let mut samples = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    let mut g = first;
    while Instant::now() < end {
        let cursor = cursors[g % cursors.len()];
        g += CONNECTIONS;
        let request = hyper::Request::get(format!("/revocations?after={cursor}"))
            .header("host", &host)
            .header("authorization", &authorization)
            .header("if-none-match", format!("\"{cursor}\""))
            .body(Full::new(Bytes::new()))?;
        let start = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        let done = Instant::now();
        if done >= from && done < end {
            samples.push(done - start);
            *statuses.entry(status).or_default() += 1;
        }
    }
    Ok((samples, statuses))
}
