//! The root context: parses the configuration once, keeps discovery and JWKS fresh in shared data (at
//! start, on the refresh interval, and retrying while the issuer is down), and creates one stream
//! context per request with the shared state.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use super::{dispatch, log, read_response, unix_now, Shared};
use crate::config::FilterConfig;
use crate::discovery::{self, FetchOutcome, FetchStep, KeyState, RETRY_AFTER_FAILURE};

const TICK: Duration = Duration::from_secs(1);

/// The per-worker root context.
#[derive(Default)]
pub(super) struct Root {
    shared: Option<Rc<Shared>>,
    /// The fetch this worker has in flight.
    fetching: Option<(u32, FetchStep)>,
    last_attempt: u64,
}

impl Root {
    fn maybe_fetch(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = unix_now();
        if self.fetching.is_some() || now < self.last_attempt.saturating_add(RETRY_AFTER_FAILURE.as_secs()) {
            return;
        }
        let provider = shared.provider();
        let (down, _) = shared.health();
        let due = match discovery::key_state(provider.as_deref(), now, shared.cfg.jwks_refresh_interval) {
            KeyState::Loading | KeyState::Stale(_) => true,
            KeyState::Ready(_) => down,
        };
        if !due || !shared.try_lease(now) {
            return;
        }
        self.last_attempt = now;
        self.step(&shared, discovery::start_fetch(&shared.cfg, None), now);
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

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
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
                self.shared = Some(shared);
                self.last_attempt = 0;
                if let Err(status) = proxy_wasm::hostcalls::set_tick_period(TICK) {
                    log(LogLevel::Error, &format!("cannot set the tick period ({status:?}): keys will not refresh"));
                }
                self.maybe_fetch();
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
        self.maybe_fetch();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would abort the VM; an unconfigured stream fails closed instead.
        Some(Box::new(super::stream::Stream::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
