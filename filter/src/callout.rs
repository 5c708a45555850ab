//! Outgoing HTTP requests to the issuer as plain data ([`Callout`]) and their answers
//! ([`CalloutResponse`]). `host` turns them into `dispatch_http_call`; what they contain is decided by
//! `discovery` and `oauth`.

use base64::Engine as _;

use crate::config::FilterConfig;
use crate::url::{percent_encode, HttpUrl, UrlError};

/// How long the filter waits for the issuer before treating it as unreachable.
pub const TIMEOUT_MS: u64 = 5_000;

/// Bodies larger than this are not read (a JWKS or token response is a few KB).
pub const MAX_BODY: usize = 256 * 1024;

/// One request to the issuer through the configured cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// `:path`, with query.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// Regular headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Request body, for form posts.
    pub body: Option<String>,
}

/// What came back. `status` 0 means no response (connect failure, reset or timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalloutResponse {
    /// HTTP status, or 0.
    pub status: u16,
    /// The body, possibly truncated to [`MAX_BODY`].
    pub body: Vec<u8>,
}

impl CalloutResponse {
    /// Whether the issuer answered as a working server: any 2xx–4xx. No answer (0) or a 5xx means it is
    /// down or failing, which is also when oauth2-proxy keeps sessions instead of ending them.
    pub fn issuer_reachable(&self) -> bool {
        (200..500).contains(&self.status)
    }
}

// === impl Callout ===

impl Callout {
    /// A `GET` of an issuer URL.
    pub fn get(cfg: &FilterConfig, url: &str) -> Result<Callout, UrlError> {
        let url = HttpUrl::parse(url)?;
        Ok(Callout {
            method: "GET",
            path: url.path_and_query.clone(),
            authority: authority_for(cfg, &url),
            headers: vec![("accept".into(), "application/json".into())],
            body: None,
        })
    }

    /// A form `POST` to an issuer endpoint, authenticated with `client_secret_basic`.
    pub fn post_form(cfg: &FilterConfig, url: &str, body: String) -> Result<Callout, UrlError> {
        let url = HttpUrl::parse(url)?;
        Ok(Callout {
            method: "POST",
            path: url.path_and_query.clone(),
            authority: authority_for(cfg, &url),
            headers: vec![
                ("accept".into(), "application/json".into()),
                ("content-type".into(), "application/x-www-form-urlencoded".into()),
                ("authorization".into(), basic_auth(&cfg.client_id, cfg.client_secret.expose())),
            ],
            body: Some(body),
        })
    }

    /// Pseudo-headers and headers in the shape `dispatch_http_call` takes.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        let mut out =
            vec![(":method", self.method), (":path", self.path.as_str()), (":authority", self.authority.as_str())];
        out.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        out
    }
}

/// The configured authority for the issuer's own host; an endpoint elsewhere keeps its own host, since
/// the cluster decides where bytes go and `:authority` only what the server sees.
fn authority_for(cfg: &FilterConfig, url: &HttpUrl) -> String {
    if url.host == cfg.issuer_url.host && url.port == cfg.issuer_url.port {
        cfg.authority.clone()
    } else {
        url.authority()
    }
}

/// RFC 6749 §2.3.1: id and secret are form-encoded before being joined and base64-encoded.
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    let raw = format!("{}:{}", percent_encode(client_id), percent_encode(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_form_encodes_id_and_secret_first() {
        assert_eq!(
            basic_auth("a b", "p:ss"),
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("a%20b:p%3Ass"))
        );
    }
}
