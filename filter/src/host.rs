//! proxy-wasm glue, compiled for wasm32 only: the only code that calls the ABI. It owns the plumbing the
//! pure modules leave out — shared data as a [`Store`], metrics, logging, the clock — and the per-worker
//! [`Shared`] state that the root context builds in `on_configure` and hands to every stream.
//! Decisions are made in `flow`; `root` schedules key fetches, `stream` applies decisions.
//!
//! A panic here traps the VM (and Envoy then fails that worker's requests), so the glue may not index,
//! slice or do unchecked arithmetic on anything it reads.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects, clippy::unwrap_used, clippy::expect_used)]

mod abi;
mod root;
mod stream;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::RootContext;
use proxy_wasm::types::{LogLevel, MetricType};

use crate::cache::{self, Cache, ClaimsMemo, Store};
use crate::callout::{Callout, CalloutResponse, MAX_BODY, TIMEOUT_MS};
use crate::config::FilterConfig;
use crate::discovery::{Provider, RETRY_AFTER_FAILURE};
use crate::flow::Event;
use crate::random::SystemRandom;
use crate::revocation::Revocations;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::Root::default()) });
}}

/// Logs through the host. Callers never pass tokens, secrets or cookie values.
fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, &format!("tokengate: {message}"));
}

/// proxy-wasm shared data: one copy per VM id, visible to every worker.
struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        abi::shared_data(key).map(|(v, _)| v).filter(|v| !v.is_empty())
    }

    fn set(&self, key: &str, value: &[u8]) {
        // Caches are last-writer-wins; a lost write costs a refresh or a re-verification, and so does a
        // store the host refuses to grow.
        let _ = abi::set_shared_data(key, value, 0);
    }

    fn set_if(&self, key: &str, replaceable: &dyn Fn(Option<&[u8]>) -> bool, value: &[u8]) -> bool {
        let (current, cas) = abi::shared_data(key).map_or((None, 0), |(v, cas)| (Some(v), cas));
        if !replaceable(current.as_deref().filter(|v| !v.is_empty())) {
            return false;
        }
        // With no CAS (the key never existed) Envoy stores unconditionally; two first writers may both win,
        // which costs one duplicate refresh at most.
        abi::set_shared_data(key, value, cas).is_ok()
    }

    fn create_if_absent(&self, key: &str) {
        if abi::shared_data(key).is_none() {
            let _ = abi::set_shared_data(key, b"", 0);
        }
    }
}

/// Counters, defined on first use.
#[derive(Default)]
struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
}

impl Metrics {
    fn count(&self, event: Event) {
        if let Some(message) = event.log_message() {
            log(LogLevel::Warn, message);
        }
        let name = event.metric_name();
        let known = self.ids.borrow().get(&name).copied();
        let id = known.or_else(|| {
            let id = hostcalls::define_metric(MetricType::Counter, &name).ok()?;
            self.ids.borrow_mut().insert(name, id);
            Some(id)
        });
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// Per-worker state shared by the root context and its streams.
struct Shared {
    cfg: FilterConfig,
    ns: String,
    /// The last provider snapshot parsed, with the shared-data CAS it was read at.
    provider: RefCell<Option<(u32, Rc<Provider>)>>,
    metrics: Metrics,
    rng: SystemRandom,
    claims: ClaimsMemo,
    /// This worker's copy of the shared revocation set, re-read when its stamp changes.
    revocations: RefCell<Rc<Revocations>>,
}

impl Shared {
    fn new(cfg: FilterConfig) -> Shared {
        Shared {
            ns: cache::namespace(&cfg.issuer, &cfg.client_id),
            cfg,
            provider: RefCell::new(None),
            metrics: Metrics::default(),
            rng: SystemRandom::new(),
            claims: ClaimsMemo::default(),
            revocations: RefCell::default(),
        }
    }

    fn cache(&self) -> Cache<'_> {
        Cache::with_capacity(&SharedData, &self.ns, self.cfg.cache.sessions, self.cfg.cache.bearer_tokens)
    }

    /// This worker's copy of the revocation set.
    fn revocations(&self) -> Rc<Revocations> {
        self.revocations.borrow().clone()
    }

    /// Re-reads the shared revocation set if another worker (a poll, a back-channel logout) changed it
    /// since this worker's copy: a read of the small stamp key, and of the set only when it differs.
    fn sync_revocations(&self) {
        let cache = self.cache();
        if cache.revocations_stamp() == self.revocations.borrow().stamp {
            return;
        }
        self.set_revocations(cache.revocations());
    }

    /// Replaces this worker's copy (with the set this worker just wrote).
    fn set_revocations(&self, set: Revocations) {
        *self.revocations.borrow_mut() = Rc::new(set);
    }

    /// The provider in shared data, re-parsed only when another worker replaced it.
    fn provider(&self) -> Option<Rc<Provider>> {
        let (bytes, cas) = abi::shared_data(&Cache::provider_key(&self.ns))?;
        if let Some((seen, p)) = self.provider.borrow().as_ref() {
            if *seen == cas {
                return Some(p.clone());
            }
        }
        let p = Rc::new(Provider::from_bytes(&bytes)?);
        *self.provider.borrow_mut() = Some((cas, p.clone()));
        Some(p)
    }

    fn store_provider(&self, p: &Provider) {
        SharedData.set(&Cache::provider_key(&self.ns), &p.to_bytes());
        self.set_health(true, p.fetched_at);
    }

    fn health_key(&self) -> String {
        format!("tokengate:{}:health", self.ns)
    }

    /// Records whether the last attempt to reach the issuer worked.
    fn set_health(&self, up: bool, now: u64) {
        let value = if up { format!("up:{now}") } else { format!("down:{now}") };
        SharedData.set(&self.health_key(), value.as_bytes());
    }

    /// `(issuer down, unix seconds of the last attempt)`.
    fn health(&self) -> (bool, u64) {
        let raw = SharedData.get(&self.health_key()).unwrap_or_default();
        let raw = String::from_utf8_lossy(&raw);
        match raw.split_once(':') {
            Some((state, at)) => (state == "down", at.parse().unwrap_or(0)),
            None => (false, 0),
        }
    }

    /// Whether a request needing the issuer should fail at once rather than try: it failed within the
    /// retry window and no keys are known.
    fn recently_failed(&self, now: u64) -> bool {
        let (down, at) = self.health();
        down && now < at.saturating_add(RETRY_AFTER_FAILURE.as_secs())
    }

    /// Takes the cross-worker fetch lease if it is free (compare-and-swap on shared data).
    fn try_lease(&self, now: u64) -> bool {
        let free = |current: Option<&[u8]>| {
            let held_until: u64 =
                current.and_then(|v| std::str::from_utf8(v).ok()).and_then(|s| s.parse().ok()).unwrap_or(0);
            held_until <= now
        };
        let until = now.saturating_add(2 * TIMEOUT_MS / 1000 + 1);
        SharedData.set_if(&Cache::lease_key(&self.ns), &free, until.to_string().as_bytes())
    }
}

fn dispatch(cluster: &str, callout: &Callout) -> Result<u32, proxy_wasm::types::Status> {
    hostcalls::dispatch_http_call(
        cluster,
        callout.header_pairs(),
        callout.body.as_deref().map(str::as_bytes),
        vec![],
        std::time::Duration::from_millis(TIMEOUT_MS),
    )
}

/// Reads the answer to a callout inside `on_http_call_response`, as bytes: no header, value or body byte
/// the issuer sends can trap the VM. No headers means no answer.
fn read_response(num_headers: usize, body_size: usize) -> CalloutResponse {
    if num_headers == 0 {
        return CalloutResponse::default();
    }
    let headers = abi::header_map(proxy_wasm::types::MapType::HttpCallResponseHeaders);
    let status = headers
        .iter()
        .find(|(k, _)| k == b":status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = abi::buffer(proxy_wasm::types::BufferType::HttpCallResponseBody, body_size.min(MAX_BODY));
    CalloutResponse { status, body }
}

/// The host's wall clock; the epoch if the host cannot say (never a trap).
fn now() -> std::time::SystemTime {
    hostcalls::get_current_time().unwrap_or(std::time::UNIX_EPOCH)
}

fn unix_now() -> u64 {
    now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
