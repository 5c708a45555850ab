//! The root context: parses the configuration once, keeps discovery and JWKS fresh in shared data (at
//! start, on the refresh interval, and retrying while the issuer is down), polls the issuer's revocation
//! feed into shared data (one worker per interval), refreshes this worker's copy of the revocation set
//! every tick, and creates one stream context per request with the shared state.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use super::{dispatch, log, read_response, unix_now, Shared};
use crate::config::FilterConfig;
use crate::discovery::{self, FetchOutcome, FetchStep, KeyState, Provider, RETRY_AFTER_FAILURE};
use crate::flow::Event;
use crate::revocation::{self, Poll, PollStep};

const TICK: Duration = Duration::from_secs(1);

/// The per-worker root context.
#[derive(Default)]
pub(super) struct Root {
    shared: Option<Rc<Shared>>,
    /// The fetch this worker has in flight.
    fetching: Option<(u32, FetchStep)>,
    last_attempt: u64,
    /// The revocation-feed poll this worker has in flight.
    polling: Option<(u32, Poll)>,
    /// The last poll failed (so a failure is logged once, not every interval).
    feed_failing: bool,
}

impl Root {
    /// Starts a discovery and JWKS fetch if the keys are loading, stale, or the issuer was last seen down, and
    /// this worker holds the gateway-wide lease. `provider` is the snapshot in shared data.
    fn maybe_fetch(&mut self, shared: &Shared, provider: Option<&Provider>, now: u64) {
        if self.fetching.is_some() || now < self.last_attempt.saturating_add(RETRY_AFTER_FAILURE.as_secs()) {
            return;
        }
        let (down, _) = shared.health();
        let due = match discovery::key_state(provider, now, shared.cfg.jwks_refresh_interval) {
            KeyState::Loading | KeyState::Stale(_) => true,
            KeyState::Ready(_) => down,
        };
        if !due || !shared.try_lease(now) {
            return;
        }
        self.last_attempt = now;
        self.step(shared, discovery::start_fetch(&shared.cfg, None), now);
    }

    fn step(&mut self, shared: &Shared, outcome: FetchOutcome, now: u64) {
        match outcome {
            FetchOutcome::Next(callout, step) => match dispatch(&shared.cfg.cluster, &callout) {
                Ok(token) => self.fetching = Some((token, step)),
                Err(status) => {
                    log(LogLevel::Warn, &format!("cannot call cluster {:?}: {status:?}", shared.cfg.cluster));
                    shared.set_health(false, now);
                }
            },
            FetchOutcome::Done(provider) => {
                log(LogLevel::Info, &format!("loaded {} signing keys from the issuer", provider.jwks.keys.len()));
                shared.store_provider(&provider);
            }
            FetchOutcome::Failed(e) => {
                log(LogLevel::Warn, &format!("issuer discovery failed: {e}"));
                shared.set_health(false, now);
            }
        }
    }
}

impl Root {
    /// Polls the revocation feed if the issuer offers one (in `provider`, the snapshot in shared data),
    /// polling is on, and it is this gateway's turn.
    fn maybe_poll(&mut self, shared: &Shared, provider: Option<&Provider>, now: u64) {
        let interval = shared.cfg.revocation_poll_interval;
        if interval.is_zero() || self.polling.is_some() {
            return;
        }
        let Some(endpoint) = provider.and_then(|p| p.metadata.revocation_feed_endpoint.as_deref()) else {
            return;
        };
        let cache = shared.cache();
        if !cache.try_feed_poll(now, revocation::next_poll(now, interval, &shared.rng)) {
            return;
        }
        match Poll::start(&shared.cfg, endpoint, &shared.revocations(), now) {
            Ok((callout, poll)) => self.poll_step(shared, PollStep::Next(callout, poll)),
            Err(e) => log(LogLevel::Warn, &format!("revocation_feed_endpoint {endpoint:?}: {e}")),
        }
    }

    fn poll_step(&mut self, shared: &Shared, step: PollStep) {
        match step {
            PollStep::Next(callout, poll) => match dispatch(&shared.cfg.cluster, &callout) {
                Ok(token) => self.polling = Some((token, poll)),
                Err(status) => {
                    self.poll_failed(shared, &format!("cannot call cluster {:?}: {status:?}", shared.cfg.cluster))
                }
            },
            PollStep::Done(None) => self.feed_failing = false,
            PollStep::Done(Some(update)) => {
                self.feed_failing = false;
                match shared.cache().update_revocations(&|set| set.apply(&update)) {
                    Some(set) => {
                        log(
                            LogLevel::Info,
                            &format!(
                                "revocation feed: now {} revoked sessions, users and groups (cursor {})",
                                set.len(),
                                set.cursor
                            ),
                        );
                        shared.set_revocations(set);
                    }
                    None => log(LogLevel::Warn, "revocation feed: the shared set kept changing; the next poll retries"),
                }
            }
            PollStep::Failed(e) => self.poll_failed(shared, &e.to_string()),
        }
    }

    fn poll_failed(&mut self, shared: &Shared, why: &str) {
        shared.metrics.count(Event::RevocationFeedFailed);
        if !self.feed_failing {
            log(LogLevel::Warn, &format!("revocation feed: {why}; revocations already known stay in force"));
        }
        self.feed_failing = true;
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if self.polling.as_ref().is_some_and(|(token, _)| *token == token_id) {
            if let Some((_, poll)) = self.polling.take() {
                let resp = read_response(num_headers, body_size);
                let step = poll.advance(&shared.cfg, &resp, unix_now());
                self.poll_step(&shared, step);
            }
            return;
        }
        let Some((token, step)) = self.fetching.take() else {
            return;
        };
        if token != token_id {
            self.fetching = Some((token, step));
            return;
        }
        let resp = read_response(num_headers, body_size);
        let now = unix_now();
        let outcome = discovery::advance_fetch(&shared.cfg, step, &resp, now);
        self.step(&shared, outcome, now);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = super::abi::buffer(proxy_wasm::types::BufferType::PluginConfiguration, usize::MAX);
        match FilterConfig::parse(&raw) {
            Ok(cfg) => {
                log(LogLevel::Info, &format!("configured for issuer {} (client {})", cfg.issuer, cfg.client_id));
                let shared = Rc::new(Shared::new(cfg));
                shared.cache().prepare();
                // A worker started later (or a VM rebuilt after a trap) honours what the others know at once.
                shared.sync_revocations();
                self.shared = Some(shared.clone());
                self.last_attempt = 0;
                if let Err(status) = proxy_wasm::hostcalls::set_tick_period(TICK) {
                    log(LogLevel::Error, &format!("cannot set the tick period ({status:?}): keys will not refresh"));
                }
                self.maybe_fetch(&shared, shared.provider().as_deref(), unix_now());
                true
            }
            Err(err) => {
                for problem in &err.problems {
                    log(LogLevel::Error, &format!("invalid configuration: {problem}"));
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        shared.sync_revocations();
        // One read of the provider snapshot serves both checks.
        let provider = shared.provider();
        let now = unix_now();
        self.maybe_fetch(&shared, provider.as_deref(), now);
        self.maybe_poll(&shared, provider.as_deref(), now);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would abort the VM; an unconfigured stream fails closed instead.
        Some(Box::new(super::stream::Stream::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
