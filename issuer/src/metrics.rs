//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A label set with one `result` (or `grant`) label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// What happened.
    pub result: &'static str,
}

/// A label set for HTTP responses.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template, e.g. `/token`.
    pub handler: String,
    /// Status code.
    pub code: u16,
}

/// Every metric the issuer exports.
pub struct Metrics {
    registry: Registry,
    /// Password logins by result (`success`, `failure`, `throttled`).
    pub logins: Family<Outcome, Counter>,
    /// Tokens issued by grant (`authorization_code`, `refresh_token`, `device_code`).
    pub tokens: Family<Outcome, Counter>,
    /// Refresh attempts by result (`rotated`, `reused`, `replay_revoked`, `invalid`).
    pub refreshes: Family<Outcome, Counter>,
    /// Refresh-token families revoked (by `/revoke`, logout or replay).
    pub revocations: Family<Outcome, Counter>,
    /// HTTP responses.
    pub http: Family<HttpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("issuer");
        let m = (Family::default(), Family::default(), Family::default(), Family::default(), Family::default());
        registry.register("logins", "Password login attempts by result", m.0.clone());
        registry.register("tokens_issued", "Token responses by grant type", m.1.clone());
        registry.register("refreshes", "Refresh-token grants by result", m.2.clone());
        registry.register("revocations", "Refresh-token families revoked, by cause", m.3.clone());
        registry.register("http_responses", "HTTP responses by handler and status", m.4.clone());
        Self { registry, logins: m.0, tokens: m.1, refreshes: m.2, revocations: m.3, http: m.4 }
    }
}

impl Metrics {
    /// Counts one `result` in `family`.
    pub fn count(family: &Family<Outcome, Counter>, result: &'static str) {
        family.get_or_create(&Outcome { result }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
