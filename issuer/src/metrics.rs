//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
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

/// A label set for calls to an upstream identity provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    /// The connector's id.
    pub connector: String,
    /// `login` or `refresh`.
    pub operation: &'static str,
    /// `ok`, `unavailable`, `refused`, `upstream_error` or `invalid_callback`.
    pub result: &'static str,
}

/// A label set for upstream latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorOperation {
    /// The connector's id.
    pub connector: String,
    /// `login` or `refresh`.
    pub operation: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
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
    /// Upstream calls of connectors by connector, operation and result.
    pub connector_requests: Family<ConnectorLabels, Counter>,
    /// Upstream call latency in seconds.
    pub connector_latency: Family<ConnectorOperation, Histogram, fn() -> Histogram>,
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
        let connector_requests = Family::default();
        let connector_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("connector_requests", "Upstream calls of connectors by result", connector_requests.clone());
        registry.register("connector_latency_seconds", "Upstream call latency", connector_latency.clone());
        Self {
            registry,
            logins: m.0,
            tokens: m.1,
            refreshes: m.2,
            revocations: m.3,
            http: m.4,
            connector_requests,
            connector_latency,
        }
    }
}

impl Metrics {
    /// Counts one `result` in `family`.
    pub fn count(family: &Family<Outcome, Counter>, result: &'static str) {
        family.get_or_create(&Outcome { result }).inc();
    }

    /// Records one upstream call of `connector` and how long it took.
    pub fn observe_connector<T>(
        &self,
        connector: &str,
        operation: &'static str,
        result: &Result<T, crate::connector::ConnectorError>,
        took: std::time::Duration,
    ) {
        use crate::connector::ConnectorError as E;
        let result = match result {
            Ok(_) => "ok",
            Err(E::Unavailable(_) | E::Interrupted { .. }) => "unavailable",
            Err(E::Refused { .. }) => "refused",
            Err(E::Upstream(_)) => "upstream_error",
            Err(E::InvalidCallback(_)) => "invalid_callback",
        };
        let connector = connector.to_owned();
        self.connector_requests
            .get_or_create(&ConnectorLabels { connector: connector.clone(), operation, result })
            .inc();
        self.connector_latency.get_or_create(&ConnectorOperation { connector, operation }).observe(took.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
